"""Limits hold before memory is spent; the ingress loop never blocks; module boundaries hold.

In-process tests use the real FastAPI app with fake replicas (tests/api_fakes.py); those marked
`ray` and `models` repeat the point against the deployed app.
"""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from deployments.core.schemas import SAMPLE_RATE
from jobs.state.audio_files import AudioStorage
from serve_app.settings import Settings
from tests.conftest import JFK, JFK_TEXT, REPO, TEST_MAX_UPLOAD_MB, load_audio, wer
from tests.media import encode_audio
from tests.test_api_contract import WAV_JFK, _complete

ENDPOINTS = ["/v1/jobs", "/v1/audio/transcriptions"]
BOUNDARY = "limits-boundary"


def _multipart(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A one-file multipart body as a generator: httpx sends it chunked, no Content-Length."""
    yield (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=a.wav\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _zeros(n: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, n, chunk):
        yield b"\0" * min(chunk, n - start)


async def _async(chunks):
    for c in chunks:
        yield c


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


# -- uploads: a chunked body over max_upload_mb is 413, like one with a Content-Length -----
@pytest.mark.parametrize("path", ENDPOINTS)
async def test_chunked_upload_over_the_limit_gets_413(client, path):
    r = await client.post(path, content=_async(_multipart(_zeros(3_000_000))), headers=MULTIPART)
    assert "content-length" not in r.request.headers  # really chunked
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "file_too_large"
    assert "max_upload_mb" in r.json()["error"]["message"]
    assert client.services.manager.started == []
    assert not list(client.services.storage.root.glob("*/*"))


async def test_chunked_upload_within_the_limit_is_accepted(client):
    body = _async(_multipart([WAV_JFK[:100_000], WAV_JFK[100_000:]]))
    r = await client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert r.status_code == 202, r.text


# -- the direct OpenAI path decodes no further than sync_direct_max_s ----------------------
class _CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.bytes_read += len(out)
        return out

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        self.bytes_read += n
        return n


@pytest.fixture(scope="module")
def long_opus(tmp_path_factory) -> bytes:
    """Five minutes of JFK and silence as Ogg Opus: small to upload, 19 MB as float32."""
    jfk = load_audio(JFK)
    gap = np.zeros(9 * SAMPLE_RATE, np.float32)
    audio = np.concatenate([np.concatenate([jfk, gap])] * 15)
    path = tmp_path_factory.mktemp("opus") / "long.ogg"
    return encode_audio(audio, path, "libopus", 48000).read_bytes()


def test_direct_path_stops_decoding_past_its_limit(long_opus, monkeypatch):
    import av

    from serve_app.routers.openai import decode_short

    decoded = [0]
    real_resampler = av.AudioResampler

    class CountingResampler:
        def __init__(self, **kwargs) -> None:
            self.inner = real_resampler(**kwargs)

        def resample(self, frame):
            out = self.inner.resample(frame)
            decoded[0] += sum(f.samples for f in out)
            return out

    monkeypatch.setattr(av, "AudioResampler", CountingResampler)
    reader = _CountingReader(long_opus)
    assert decode_short(reader, max_s=30.0) is None
    # Decoding stopped just past 30 s of 300, and most of the input was never even read.
    assert 30 * SAMPLE_RATE < decoded[0] <= 31 * SAMPLE_RATE, decoded[0] / SAMPLE_RATE
    assert reader.bytes_read < 0.4 * len(long_opus), (reader.bytes_read, len(long_opus))
    short = decode_short(WAV_JFK, max_s=30.0)
    assert short is not None and np.array_equal(short, load_audio(JFK))


# -- blocking work runs off the ingress event loop -----------------------------------------
def _record_thread(monkeypatch, module, name: str, seen: list[int]) -> None:
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


async def test_rendering_runs_off_the_event_loop(client, monkeypatch):
    from jobs.stitching.stitch import JobResult
    from serve_app import rendering as formats

    seen: dict[str, list[int]] = {"render_job": [], "render_openai": [], "parse": []}
    _record_thread(monkeypatch, formats, "render_job", seen["render_job"])
    _record_thread(monkeypatch, formats, "render_openai", seen["render_openai"])
    parse = JobResult.model_validate_json.__func__

    def recording_parse(cls, *args, **kwargs):
        seen["parse"].append(threading.get_ident())
        return parse(cls, *args, **kwargs)

    monkeypatch.setattr(JobResult, "model_validate_json", classmethod(recording_parse))
    job_id = (await client.post("/v1/jobs", files={"file": ("a.flac", WAV_JFK)})).json()["id"]
    await _complete(client, job_id)
    r = await client.get(f"/v1/jobs/{job_id}/result", params={"format": "srt"})
    assert r.status_code == 200, r.text
    r = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.flac", WAV_JFK)},
        data={"model": "whisper-1", "response_format": "srt"},
    )
    assert r.status_code == 200, r.text
    loop_thread = threading.get_ident()
    assert all(seen.values()), seen
    assert loop_thread not in {t for ids in seen.values() for t in ids}, seen


class _RecordingStorage(AudioStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.threads: dict[str, list[int]] = {"exists": [], "delete": []}

    def exists(self, job_id: str) -> bool:
        self.threads["exists"].append(threading.get_ident())
        return super().exists(job_id)

    def delete(self, job_id: str) -> None:
        self.threads["delete"].append(threading.get_ident())
        super().delete(job_id)


async def test_storage_calls_run_off_the_event_loop(client):
    storage = client.services.storage = _RecordingStorage(client.services.storage.root)
    r = await client.post("/v1/jobs", files={"file": ("a.txt", b"not audio at all\n" * 50)})
    assert r.status_code == 400, r.text
    job_id = (await client.post("/v1/jobs", files={"file": ("a.flac", WAV_JFK)})).json()["id"]
    assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 200
    assert (await client.post(f"/v1/jobs/{job_id}/retry")).status_code == 202
    assert all(storage.threads.values()), storage.threads
    used = {t for ids in storage.threads.values() for t in ids}
    assert threading.get_ident() not in used, storage.threads


# -- settings and module boundaries ---------------------------------------------------------
def test_every_setting_is_declared_once_and_reaches_the_manager(monkeypatch):
    """One settings object: a field declared by two classes of Settings' bases (say, a
    manager config re-declaring a setting with its own default) fails here."""
    import inspect

    from pydantic import BaseModel

    from jobs.config import JobsConfig

    owners: dict[str, list[str]] = {}
    for cls in Settings.__mro__:
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            for name in inspect.get_annotations(cls):
                if name in Settings.model_fields:
                    owners.setdefault(name, []).append(cls.__qualname__)
    assert {n: c for n, c in owners.items() if len(c) > 1} == {}
    assert set(owners) == set(Settings.model_fields)
    monkeypatch.setenv("SPEECH_LEASE_S", "7")  # once settable only in code
    settings = Settings(split_max_s=90, webhook_secret="s")
    config = settings.jobs_config()
    assert type(config) is JobsConfig and config.lease_s == 7 and config.split_max_s == 90
    assert config.webhook_secret_value == "s"
    assert config.fingerprint() != Settings(webhook_secret="t").jobs_config().fingerprint()


@pytest.mark.parametrize("name", ["transcriber_batch_wait_s", "max_sync_duration_s"])
def test_removed_settings_are_rejected(name):
    with pytest.raises(ValueError, match=name):
        Settings(**{name: 1})


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["deployments", "jobs"])
def test_model_and_job_code_never_imports_the_http_layer(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    offenders = {
        str(f.relative_to(REPO)): sorted(n for n in _imports(f) if n.split(".")[0] == "serve_app")
        for f in files
    }
    assert not {f: n for f, n in offenders.items() if n}


def test_provision_cli_takes_the_models_dir_explicitly(monkeypatch, tmp_path):
    from deployments.models import model_store

    calls: list[Path] = []
    monkeypatch.setattr(model_store, "provision", lambda d: calls.append(d) or {})
    with pytest.raises(SystemExit):
        model_store.main([])
    assert model_store.main(["--models-dir", str(tmp_path)]) == 0
    assert calls == [tmp_path]


@pytest.mark.parametrize("variable", ["SPEECH_MODELS_DIR", "SPEECH_DATA_DIR"])
def test_install_script_provisions_where_settings_look(monkeypatch, tmp_path, variable):
    script = (REPO / "scripts" / "install.sh").read_text()
    assert '.venv/bin/speech-cluster-provision --models-dir "$models_dir"' in script
    (line,) = [s for s in script.splitlines() if s.startswith("models_dir=$(")]
    for name in [k for k in os.environ if k.startswith("SPEECH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(variable, str(tmp_path / "somewhere"))
    out = subprocess.run(
        ["bash", "-c", f'{line.replace(".venv/bin/python", sys.executable)}; echo "$models_dir"'],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(Settings().resolved_models_dir)
    assert str(tmp_path / "somewhere") in out.stdout


# -- the same limits through the deployed app ----------------------------------------------
@pytest.mark.ray
@pytest.mark.models
@pytest.mark.parametrize("path", ENDPOINTS)
def test_real_app_answers_413_to_a_chunked_upload_over_the_limit(http, app_settings, path):
    from tests.jobclient import jobs_created

    stored = {p for p in app_settings.resolved_storage_dir.rglob("*") if p.is_file()}
    before = jobs_created(app_settings)
    payload = int((TEST_MAX_UPLOAD_MB + 1) * 1e6)
    r = http.post(path, content=_multipart(_zeros(payload)), headers=MULTIPART)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "file_too_large"
    assert {p for p in app_settings.resolved_storage_dir.rglob("*") if p.is_file()} == stored
    assert jobs_created(app_settings) == before
    assert http.get("/healthz").status_code == 200


@pytest.mark.ray
@pytest.mark.models
def test_real_app_transcribes_long_opus_through_the_job_path(
    http, app_settings, long_opus, tmp_path
):
    from tests.jobclient import jobs_created

    before = jobs_created(app_settings)
    r = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("long.ogg", long_opus)},
        data={"model": "whisper-1", "response_format": "json"},
        timeout=900,
    )
    assert r.status_code == 200, r.text
    assert wer(" ".join([JFK_TEXT] * 15), r.json()["text"]) <= 0.1, r.json()["text"]
    assert jobs_created(app_settings) == before + 1  # longer than sync_direct_max_s

    short = encode_audio(load_audio(JFK), tmp_path / "short.ogg", "libopus")
    r = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("short.ogg", short.read_bytes())},
        data={"model": "whisper-1"},
    )
    assert r.status_code == 200, r.text
    assert wer(JFK_TEXT, r.json()["text"]) <= 0.1, r.json()["text"]
    assert jobs_created(app_settings) == before + 1  # direct: no job


# -- issue 22 item 5: a container without a duration is measured at submit ----------------
async def test_a_webm_that_declares_no_duration_is_refused_at_submit(client, tmp_path):
    """A browser MediaRecorder WebM declares no duration: its length comes from packet
    timestamps at submit, so a recording over the limit is a 413 before any model work
    (before, it passed and the limit tripped while decoding, hours of segments later)."""
    from tests.media import encode_audio

    client.services.settings.max_job_duration_s = 30
    t = np.arange(45 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    webm = encode_audio(tone, tmp_path / "rec.webm", "libopus", 48000, streamed=True)
    r = await client.post("/v1/jobs", files={"file": ("rec.webm", webm.read_bytes())})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "audio_too_long"
    assert "45 s" in r.json()["error"]["message"] or "30 s" in r.json()["error"]["message"]
    assert await client.services.store.active_ids() == []  # no job, no model work
