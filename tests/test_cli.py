"""The ``speech-cluster`` CLI against an in-process fake of the jobs API (httpx.MockTransport)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serve_app import cli

SRT = "1\n00:00:00,000 --> 00:00:01,000\n[SPEAKER_00] hello\n"
VTT = "WEBVTT\n\n00:00.000 --> 00:01.000\n<v SPEAKER_00>hello\n"


def snap(job_id: str, status: str, stage: str, done: int | None, total: int | None, pct: float):
    return {
        "id": job_id,
        "status": status,
        "stage": stage,
        "segments_done": done,
        "segments_total": total,
        "percent": pct,
        "error": None,
    }


def sse(event: str, data: dict) -> bytes:
    pct = int(data["percent"])
    return f"id: {pct}-0\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeServer:
    """Just enough of /v1/jobs: every job runs to ``final`` over SSE (or polling)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.uploads: list[bytes] = []
        self.final_status = "completed"
        self.error: dict | None = None
        self.submit_response: httpx.Response | None = None
        self.drop_stream = False  # events: two progress events, then the connection dies
        self.events_status = 200
        self.poll_snaps: list[dict] = []  # served in order by GET /v1/jobs/{id}, last repeats
        self.cancelled: list[str] = []
        self.on_events = None

    def final(self, job_id: str) -> dict:
        out = snap(job_id, self.final_status, "done", 4, 4, 100.0)
        out["error"] = self.error
        return out

    def events(self, job_id: str):
        yield b": ping\n\n"
        yield sse("progress", snap(job_id, "running", "transcribing", 0, None, 5.0))
        yield sse("progress", snap(job_id, "running", "transcribing", 2, 4, 50.0))
        if self.drop_stream:
            raise httpx.RemoteProtocolError("peer closed connection")
        yield sse("end", self.final(job_id))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if method == "POST" and path == "/v1/jobs":
            if self.submit_response is not None:
                return self.submit_response
            self.uploads.append(request.content)
            job_id = f"job{len(self.uploads)}"
            return httpx.Response(202, json=snap(job_id, "queued", "queued", 0, None, 0.0))
        job_id = path.split("/")[3]
        if method == "DELETE":
            self.cancelled.append(job_id)
            return httpx.Response(200, json=snap(job_id, "cancelled", "cancelled", 0, 4, 0.0))
        if path.endswith("/events"):
            if self.on_events:
                self.on_events()
            if self.events_status != 200:
                return httpx.Response(self.events_status, json={"error": {"code": "x"}})
            headers = {"content-type": "text/event-stream"}
            return httpx.Response(200, headers=headers, content=self.events(job_id))
        if path.endswith("/result"):
            fmt = request.url.params["format"]
            return httpx.Response(200, text={"srt": SRT, "vtt": VTT}.get(fmt, f"{fmt} body"))
        if self.poll_snaps:
            return httpx.Response(
                200, json=self.poll_snaps.pop(0) if len(self.poll_snaps) > 1 else self.poll_snaps[0]
            )
        return httpx.Response(200, json=self.final(job_id))

    def paths(self, method: str) -> list[str]:
        return [r.url.path for r in self.requests if r.method == method]


@pytest.fixture
def server(monkeypatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(cli, "TRANSPORT", httpx.MockTransport(fake))
    monkeypatch.setattr(cli, "POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(cli, "MAX_RETRY_AFTER_S", 0.01)
    monkeypatch.delenv("SPEECH_URL", raising=False)
    monkeypatch.delenv("SPEECH_API_KEY", raising=False)
    return fake


@pytest.fixture
def audio(tmp_path) -> Path:
    path = tmp_path / "talk.wav"
    path.write_bytes(b"RIFF" + b"\0" * 100)
    return path


def test_success_writes_srt_and_vtt_next_to_input(server, audio, capsys):
    argv = ["transcribe", str(audio), "-f", "srt,vtt", "--api-key", "k1", "--language", "en"]
    assert cli.main(argv) == 0
    assert (audio.parent / "talk.srt").read_text() == SRT
    assert (audio.parent / "talk.vtt").read_text() == VTT
    assert not list(audio.parent.glob(".*part"))  # temp files renamed away
    post = server.requests[0]
    assert post.headers["authorization"] == "Bearer k1"
    assert post.headers["idempotency-key"]
    body = server.uploads[0]
    assert b'name="diarize"\r\n\r\ntrue' in body and b'name="language"\r\n\r\nen' in body
    assert b'filename="talk.wav"' in body and b"RIFF" in body
    out = capsys.readouterr()
    assert str(audio.parent / "talk.srt") in out.out
    assert "1 succeeded, 0 failed" in out.err
    assert server.paths("GET") == ["/v1/jobs/job1/events"] + ["/v1/jobs/job1/result"] * 2


def test_output_dir_and_repeated_format(server, audio, tmp_path):
    out_dir = tmp_path / "out" / "nested"
    argv = ["transcribe", str(audio), "-f", "vtt", "-f", "srt", "-o", str(out_dir), "-q"]
    assert cli.main(argv) == 0
    assert (out_dir / "talk.srt").read_text() == SRT
    assert (out_dir / "talk.vtt").read_text() == VTT
    assert not (audio.parent / "talk.srt").exists()
    assert b'name="diarize"\r\n\r\ntrue' in server.uploads[0]


def test_progress_updates_parsed_from_sse(server, audio, monkeypatch):
    seen: list[tuple] = []
    real_update = cli.Progress.update

    def spy(self, task_id, **kw):
        seen.append((kw.get("completed"), kw.get("segs"), kw.get("description")))
        return real_update(self, task_id, **kw)

    monkeypatch.setattr(cli.Progress, "update", spy)
    assert cli.main(["transcribe", str(audio), "--no-diarize"]) == 0
    assert seen[0] == (5.0, "", "talk.wav · transcribing")
    assert seen[1] == (50.0, "2/4 segments", "talk.wav · transcribing")
    assert seen[-1][0] == 100
    assert b'name="diarize"\r\n\r\nfalse' in server.uploads[0]


def test_dropped_stream_falls_back_to_polling(server, audio):
    server.drop_stream = True
    running = snap("job1", "running", "diarizing", 3, 4, 80.0)
    server.poll_snaps = [running, running, server.final("job1")]
    assert cli.main(["transcribe", str(audio), "-q"]) == 0
    gets = server.paths("GET")
    assert gets.count("/v1/jobs/job1/events") == cli.SSE_ATTEMPTS  # reconnected, then polled
    assert "/v1/jobs/job1" in gets
    resumed = [r.headers.get("last-event-id") for r in server.requests if "events" in r.url.path]
    assert resumed == [None, "50-0", "50-0"]  # reconnects resume after the last event seen
    assert (audio.parent / "talk.srt").read_text() == SRT


def test_events_endpoint_missing_polls(server, audio):
    server.events_status = 404
    assert cli.main(["transcribe", str(audio), "-q"]) == 0
    assert (audio.parent / "talk.srt").exists()


def test_failed_job_exits_1_with_message(server, audio, capsys):
    server.final_status = "failed"
    server.error = {"code": "decode_error", "message": "could not decode audio"}
    assert cli.main(["transcribe", str(audio)]) == 1
    err = capsys.readouterr().err
    assert "decode_error: could not decode audio" in err
    assert "0 succeeded, 1 failed" in err
    assert not (audio.parent / "talk.srt").exists()


def test_rejected_submit_exits_2_with_server_message(server, audio, capsys):
    error = {"error": {"code": "unsupported_media", "message": "not an audio file"}}
    server.submit_response = httpx.Response(415, json=error)
    assert cli.main(["transcribe", str(audio)]) == 2
    assert "unsupported_media: not an audio file" in capsys.readouterr().err


def test_429_retried_with_one_idempotency_key_then_exits_3(server, audio):
    server.submit_response = httpx.Response(429, headers={"Retry-After": "1"}, json={})
    assert cli.main(["transcribe", str(audio), "-q"]) == 3
    assert len(server.paths("POST")) == cli.SUBMIT_ATTEMPTS
    keys = {r.headers["idempotency-key"] for r in server.requests}
    assert len(keys) == 1  # retries reuse the key, so the server cannot double-submit


def test_5xx_on_submit_exits_3(server, audio, capsys):
    error = {"error": {"code": "internal", "message": "boom"}}
    server.submit_response = httpx.Response(500, json=error)
    assert cli.main(["transcribe", str(audio)]) == 3
    assert "HTTP 500 internal: boom" in capsys.readouterr().err


def test_connection_error_exits_3_and_skips_the_rest(monkeypatch, audio, tmp_path, capsys):
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(cli, "TRANSPORT", httpx.MockTransport(refuse))
    other = tmp_path / "b.mp3"
    other.write_bytes(b"x")
    assert cli.main(["transcribe", str(audio), str(other), "--url", "http://nowhere:1"]) == 3
    err = capsys.readouterr().err
    assert "server unreachable at http://nowhere:1" in err
    assert "0 succeeded, 1 failed, 1 skipped" in err


def test_timeout_exits_3(server, audio, capsys):
    server.events_status = 503
    server.poll_snaps = [snap("job1", "running", "transcribing", 1, 4, 25.0)]
    assert cli.main(["transcribe", str(audio), "--timeout", "0.2"]) == 3
    assert "timed out waiting for job job1" in capsys.readouterr().err


def test_no_wait_prints_ids(server, audio, tmp_path, capsys):
    other = tmp_path / "b.flac"
    other.write_bytes(b"x")
    assert cli.main(["transcribe", str(audio), str(other), "--no-wait"]) == 0
    assert capsys.readouterr().out.split() == ["job1", "job2"]
    assert server.paths("GET") == []


def test_folder_picks_audio_files_only(server, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.wav", "b.MP3", "c.mkv", "notes.txt", "d.srt", "sub/e.flac"):
        (folder / name).write_bytes(b"x")
    assert cli.main(["transcribe", str(folder), "--no-wait"]) == 0
    names = [u.split(b'filename="')[1].split(b'"')[0] for u in server.uploads]
    assert names == [b"a.wav", b"b.MP3", b"c.mkv"]
    capsys.readouterr()
    server.uploads.clear()
    assert cli.main(["transcribe", str(folder), "-r", "--no-wait"]) == 0
    assert len(server.uploads) == 4


def test_usage_errors_exit_2(server, tmp_path, capsys):
    assert cli.main(["transcribe", str(tmp_path / "missing.wav")]) == 2
    assert cli.main(["transcribe", str(tmp_path)]) == 2  # empty folder
    (tmp_path / "a.wav").write_bytes(b"x")
    assert cli.main(["transcribe", str(tmp_path / "a.wav"), "-f", "docx"]) == 2
    assert cli.main(["transcribe"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["transcribe", "--help"]) == 0
    assert "130" in capsys.readouterr().out  # exit codes documented in --help
    assert server.requests == []


def test_ctrl_c_cancels_running_job(server, audio):
    def interrupt():
        raise KeyboardInterrupt

    server.on_events = interrupt
    assert cli.main(["transcribe", str(audio), "-q"]) == 130
    assert server.cancelled == ["job1"]


def test_sse_parser():
    lines = ["id: 1-0", "event: progress", "data: {", "data: }", "", ": ping", "", "data: x", ""]
    assert list(cli.iter_sse(lines)) == [("progress", "{\n}", "1-0"), ("message", "x", "1-0")]


def test_cli_imports_no_ray_or_torch():
    code = "import sys, serve_app.cli; sys.exit(any(m in sys.modules for m in ('ray', 'torch')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
