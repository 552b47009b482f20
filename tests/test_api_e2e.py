"""The HTTP API end to end: the deployed app, real replicas, real Redis, real weights."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from jobs.integrations.webhooks import SIGNATURE_HEADER, verify
from serve_app.app import api
from tests.conftest import JFK, JFK_TEXT, pyannote_sample_dir, wer
from tests.jobclient import redis_client, submit, wait_done
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.ray, pytest.mark.models]


@pytest.fixture(scope="module")
def openai_client(serve_url):
    import openai

    return openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0)


def _create(client, path, **kw):
    with path.open("rb") as fh:
        return client.audio.transcriptions.create(model="whisper-1", file=fh, **kw)


def test_openai_client_json_and_text(openai_client):
    assert wer(JFK_TEXT, _create(openai_client, JFK).text) <= 0.05
    text = _create(openai_client, JFK, response_format="text")
    assert isinstance(text, str) and wer(JFK_TEXT, text) <= 0.05


def test_openai_client_subtitles(openai_client):
    srt = _create(openai_client, JFK, response_format="srt")
    assert srt.lstrip().startswith("1\n00:00:0") and "-->" in srt
    vtt = _create(openai_client, JFK, response_format="vtt")
    assert vtt.startswith("WEBVTT") and "-->" in vtt


def test_openai_client_verbose_json_with_words(openai_client):
    result = _create(
        openai_client,
        JFK,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "english" and result.duration == pytest.approx(11.0, abs=0.1)
    assert len(result.words) >= 20 and result.segments
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert wer(JFK_TEXT, " ".join(w.word for w in result.words)) <= 0.05


def test_openai_client_diarized_json_on_a_two_speaker_call(openai_client):
    result = _create(
        openai_client, pyannote_sample_dir() / "sample.wav", response_format="diarized_json"
    )
    speakers = {seg.speaker for seg in result.segments}
    assert len(speakers) == 2, speakers
    assert result.text and all(seg.end >= seg.start for seg in result.segments)


def _stream(client, path, **kw) -> list[tuple[float, object]]:
    """The events of a `stream=True` call through the official client, with arrival times."""
    with path.open("rb") as fh:
        stream = client.audio.transcriptions.create(model="whisper-1", file=fh, stream=True, **kw)
        return [(time.monotonic(), event) for event in stream]


def test_openai_client_streams_text_as_windows_finish(openai_client, tmp_path):
    import soundfile as sf

    from tests.realvoices import voice_prompts

    # About a minute of one real voice (distinct prompts, 0.6 s apart): three windows.
    prompts = [p for p in voice_prompts("en_allison") if p.text][:40]
    pieces, texts = [], []
    for p in prompts:
        if sum(len(a) for a in pieces) > 55 * 16000:
            break
        pieces += [p.audio, np.zeros(9600, np.float32)]
        texts.append(p.text)
    path = tmp_path / "allison.wav"
    sf.write(path, np.concatenate(pieces), 16000)
    events = _stream(openai_client, path)
    kinds = [e.type for _, e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [(t, e) for t, e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 3 and len(deltas) == len(kinds) - 1
    done = events[-1][1]
    assert "".join(e.delta for _, e in deltas) == done.text
    assert wer(" ".join(texts), done.text) <= 0.12
    # Text arrives window by window, not in one burst at the end (the third window is sent
    # only once the first has come back).
    assert events[-1][0] - deltas[0][0] > 0.2
    seconds = sum(len(a) for a in pieces) / 16000
    assert done.to_dict()["usage"]["seconds"] == pytest.approx(seconds, abs=0.05)


def test_openai_client_streams_a_diarized_call_with_speakers(openai_client):
    events = [
        e
        for _, e in _stream(
            openai_client, pyannote_sample_dir() / "sample.wav", response_format="diarized_json"
        )
    ]
    segments = [e for e in events if e.type == "transcript.text.segment"]
    assert len({s.speaker for s in segments}) == 2
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert events[-1].type == "transcript.text.done" and deltas
    assert "".join(e.delta for e in deltas) == events[-1].text


def test_webhook_is_signed_and_retried_while_the_receiver_is_down(http, app_settings, tmp_path):
    from tests.synth import meeting, write_wav

    receiver = WebhookReceiver()  # not listening yet: the first deliveries fail
    path = write_wav(meeting(4, seed=5).audio, tmp_path / "short.wav")
    job_id = submit(http, path, diarize=False, webhook_url=receiver.url)
    assert wait_done(http, job_id)["status"] == "completed"
    time.sleep(0.5)
    with receiver:
        assert receiver.wait(lambda got: got, 30), "webhook never delivered"
    headers, body = receiver.received[0]
    secret = app_settings.webhook_secret.get_secret_value()
    assert verify(secret, headers[SIGNATURE_HEADER], body)
    assert not verify("another-secret", headers[SIGNATURE_HEADER], body)
    payload = json.loads(body)
    assert payload["id"] == job_id and payload["event"] == "job.completed"
    client = redis_client(app_settings)
    deadline = time.monotonic() + 10
    while not (
        report := json.loads(client.get(f"{app_settings.redis_key_prefix}job:{job_id}:webhook"))
    )["delivered"]:
        assert time.monotonic() < deadline, report
        time.sleep(0.1)
    assert report["attempts"] > 1, report
    assert headers["X-Speech-Event-Id"] == f"{job_id}:completed"


def test_events_stream_reports_progress_then_ends(http, tmp_path):
    from tests.synth import meeting, write_wav

    path = write_wav(meeting(20, seed=9).audio, tmp_path / "m.wav")
    job_id = submit(http, path, diarize=True, segment_s=10)
    events = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=300) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    assert events[-1][0] == "end" and events[-1][1]["status"] == "completed"
    done = [e["segments_done"] for k, e in events if k == "progress"]
    assert done == sorted(done) and done[-1] == events[-1][1]["segments_total"] >= 3
    assert {e["status"] for _, e in events} >= {"queued", "transcribing", "completed"}
    assert any(e["segments_total"] for _, e in events if e["status"] != "completed")


# The spec the app serves (GET /openapi.json returns this same document).
fuzzed = schemathesis.openapi.from_dict(api.openapi())


@fuzzed.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_the_openapi_spec_finds_no_server_error(case, serve_url):
    from schemathesis.checks import not_a_server_error

    case.call_and_validate(base_url=serve_url, checks=[not_a_server_error], timeout=120)


def test_cli_transcribes_a_multi_minute_recording_to_srt(serve_url, tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    from tests.synth import meeting, write_wav

    rec = meeting(45, seed=21)
    assert rec.duration >= 150
    audio = write_wav(rec.audio, tmp_path / "standup.wav")
    out = tmp_path / "out"
    cli = Path(sys.executable).parent / "speech-cluster"
    proc = subprocess.run(
        [
            str(cli),
            "transcribe",
            str(audio),
            "--url",
            serve_url,
            "-f",
            "srt,json",
            "-o",
            str(out),
            "--num-speakers",  # espeak voices are too alike for CAM++ to count unaided
            "3",
            "--timeout",
            "600",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    srt = (out / "standup.srt").read_text()
    cues = re.findall(
        r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+?)(?:\n\n|\Z)",
        srt,
        flags=re.S,
    )
    assert len(cues) >= 20
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    assert cues[-1][2] > "00:02:00,000"  # global times, not per segment
    speakers = {m for c in cues for m in re.findall(r"\[(SPEAKER_\d\d)\]", c[3])}
    assert len(speakers) == 3, speakers
    text = " ".join(re.sub(r"\[SPEAKER_\d\d\]", "", c[3]) for c in cues)
    assert wer(rec.text, text) <= 0.25
    assert json.loads((out / "standup.json").read_text())["speakers"]
    # Exit codes mean something: a text file is rejected with 2 and the server's reason.
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    proc = subprocess.run(
        [str(cli), "transcribe", str(bad), "--url", serve_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unsupported_media" in proc.stderr
