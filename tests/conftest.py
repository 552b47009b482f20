"""Session fixtures: one local Ray cluster, one deployed app, real models, real audio.

The Ray cluster declares logical GPUs so GPU pinning is exercised on CPU-only machines.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
JFK = SHARED_DATA / "jfk.flac"
STEREO = SHARED_DATA / "stereo_diarization.wav"
HOTWORDS = SHARED_DATA / "hotwords.mp3"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
TEST_HTTP_PORT = int(os.environ.get("SPEECH_TEST_HTTP_PORT", "18000"))
TEST_REDIS_PORT = int(os.environ.get("SPEECH_TEST_REDIS_PORT", "16379"))
TEST_MAX_UPLOAD_MB = 40.0
WEBHOOK_HOST = "127.0.0.3"


def pyannote_sample_dir() -> Path:
    import importlib.util

    # Found without importing pyannote.audio (its import warns about torchcodec).
    return Path(importlib.util.find_spec("pyannote.audio").origin).parent / "sample"


def normalize_text(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalize_text(reference), normalize_text(hypothesis))


def load_audio(path: Path) -> np.ndarray:
    from deployments.core.audio import decode_audio

    return decode_audio(path)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    from serve_app.settings import get_settings

    return get_settings().resolved_models_dir


@pytest.fixture(scope="session")
def whisper_core(models_dir):
    """The in-process transcriber core, loaded once per session."""
    from deployments.models.model_store import resolve_whisper
    from deployments.models.whisper_batch import WhisperBatchTranscriber

    # On CPU, where a segment's words and times do not depend on its batch (window_decoding).
    return WhisperBatchTranscriber(
        resolve_whisper("tiny.en", models_dir, False), device="cpu", cpu_threads=2
    )


@pytest.fixture(scope="session")
def base_core(models_dir):
    """The multilingual in-process transcriber core (Whisper base), loaded once per session."""
    from deployments.models.model_store import resolve_whisper
    from deployments.models.whisper_batch import WhisperBatchTranscriber

    return WhisperBatchTranscriber(
        resolve_whisper("base", models_dir, False), device="cpu", cpu_threads=2
    )


@pytest.fixture(scope="session")
def diarizer(models_dir):
    """The in-process diarization pipeline, loaded once per session."""
    from deployments.models.diarization.pipeline import SpeakerDiarizer
    from deployments.models.model_store import resolve_bundled_diarization

    segmentation, embedding = resolve_bundled_diarization(models_dir)
    return SpeakerDiarizer(segmentation, embedding, device="cpu", num_threads=2)


@pytest.fixture(scope="session")
def jfk_audio() -> np.ndarray:
    return load_audio(JFK)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis with AOF that tests may restart mid-job."""
    from tests.redis_proc import RedisProcess

    server = RedisProcess(tmp_path_factory.mktemp("redis"), TEST_REDIS_PORT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app_settings(tmp_path_factory, redis_server):
    from serve_app.settings import Settings

    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        models_dir=Settings().resolved_models_dir,
        # tiny.en is the suite's default for speed (the suite stays under its time budget);
        # base, serve_config.yaml's default, is served beside it and the multilingual tests
        # ask for it by name. test_cluster_configs checks the shipped config's defaults.
        whisper_model="tiny.en",
        extra_whisper_models=["base"],
        redis_url=redis_server.url,
        max_upload_mb=TEST_MAX_UPLOAD_MB,
        segment_timeout_s=120,
        retry_base_s=0.2,
        webhook_base_delay_s=0.2,
        max_inflight_segments=6,
        webhook_secret="test-webhook-secret",
        webhook_max_attempts=8,
        # Test receivers listen on 127.0.0.3; every other private address stays refused.
        webhook_allow=[f"{WEBHOOK_HOST}/32"],
        # Held streams: few enough that a test can reach the cap; an abandoned OpenAI call's
        # job is cancelled within seconds (beyond the gap between a client's retries).
        max_held_requests=24,
        max_streams_per_key=12,
        openai_abandon_grace_s=8.0,
    )


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    # Logical CPUs/GPUs: scheduling is real, compute runs on the machine's 2 cores.
    # address="local": always a fresh cluster, never one a `ray start` left running.
    ray.init(
        address="local",
        num_cpus=6,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    from ray import serve

    # Serve's HTTP options are fixed by whichever call starts it first: start it here.
    serve.start(http_options={"host": "127.0.0.1", "port": TEST_HTTP_PORT})
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_cluster, app_settings) -> Iterator[str]:
    """The full app, deployed once per session, as a user would reach it over HTTP."""
    from ray import serve

    from serve_app.app import build_app

    settings = app_settings
    serve.run(
        build_app(
            settings,
            transcriber={"num_replicas": 2, "autoscaling_config": None},
            models={"Transcriber-base": {"num_replicas": 1, "autoscaling_config": None}},
        ),
        name="speech",
        route_prefix="/",
    )
    url = f"http://127.0.0.1:{TEST_HTTP_PORT}"
    deadline = time.monotonic() + 120
    last = None
    while True:
        try:
            last = httpx.get(f"{url}/healthz", timeout=10)
            if last.status_code == 200:
                break
        except httpx.HTTPError as exc:
            last = exc
        assert time.monotonic() < deadline, (
            f"app not healthy in 120 s: {getattr(last, 'text', last)}"
        )
        time.sleep(1)
    yield url
    serve.delete("speech")


@pytest.fixture()
def http(serve_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_url, timeout=120) as client:
        yield client


@pytest.fixture()
async def client(redis_server, tmp_path):
    """The real FastAPI app in process, with fake replicas and manager (tests/api_fakes.py)."""
    from serve_app.app import api
    from tests.api_fakes import fake_services

    api.state.services = services = fake_services(redis_server, tmp_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://api"
    ) as c:
        c.services = services
        yield c
    api.state.services = None
    await services.store.close()
