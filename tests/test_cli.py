"""The ``speech-cluster`` CLI against an in-process fake of the jobs API (httpx.MockTransport)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from speech_cluster_client import cli, transcribe

REPO = Path(__file__).resolve().parents[1]

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
    monkeypatch.setattr(transcribe, "POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(transcribe, "MAX_RETRY_AFTER_S", 0.01)
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
    real_update = transcribe.Progress.update

    def spy(self, task_id, **kw):
        seen.append((kw.get("completed"), kw.get("segs"), kw.get("description")))
        return real_update(self, task_id, **kw)

    monkeypatch.setattr(transcribe.Progress, "update", spy)
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
    assert gets.count("/v1/jobs/job1/events") == transcribe.SSE_ATTEMPTS  # reconnected, then polled
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
    assert len(server.paths("POST")) == transcribe.SUBMIT_ATTEMPTS
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
    assert list(transcribe.iter_sse(lines)) == [
        ("progress", "{\n}", "1-0"),
        ("message", "x", "1-0"),
    ]


class FakeJobsApi:
    """GET/DELETE /v1/jobs[/{id}[/result]] over a fixed list of jobs, newest first."""

    def __init__(self, n: int = 3) -> None:
        self.jobs = [
            dict(snap(f"j{i}", "completed", "done", 4, 4, 100.0), duration=60.0 * i)
            for i in range(n, 0, -1)
        ]
        self.jobs[0].update(status="transcribing", stage="transcribing", percent=42.4)
        self.jobs[0]["duration"] = None
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params, parts = request.url.params, request.url.path.split("/")[3:]
        if not parts:  # the listing
            status, limit = params.get("status"), int(params["limit"])
            jobs = [j for j in self.jobs if status is None or j["status"] == status]
            page = jobs[int(params["offset"]) :][: limit + 1]
            more = len(page) > limit
            body = {"data": page[:limit], "offset": 0, "limit": limit, "has_more": more}
            return httpx.Response(200, json=body)
        job = next((j for j in self.jobs if j["id"] == parts[0]), None)
        if job is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no job"}})
        if request.method == "DELETE":
            if job["status"] == "completed":
                error = {"code": "job_finished", "message": f"job {job['id']} is completed"}
                return httpx.Response(409, json={"error": error})
            return httpx.Response(200, json=dict(job, status="cancelled"))
        if parts[1:] == ["result"]:
            if job["status"] != "completed":
                return httpx.Response(409, json={"error": {"code": "job_not_completed"}})
            return httpx.Response(200, text=f"{params['format']} of {job['id']}")
        return httpx.Response(200, json=job)


@pytest.fixture
def jobs_api(monkeypatch) -> FakeJobsApi:
    fake = FakeJobsApi()
    monkeypatch.setattr(cli, "TRANSPORT", httpx.MockTransport(fake))
    monkeypatch.delenv("SPEECH_URL", raising=False)
    monkeypatch.delenv("SPEECH_API_KEY", raising=False)
    return fake


def test_jobs_list_prints_one_line_per_job_and_filters(jobs_api, capsys):
    assert cli.main(["jobs", "list", "--api-key", "k1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["j3", "transcribing", "42%"],
        ["j2", "completed", "100%"],
        ["j1", "completed", "100%"],
    ]
    assert lines[0].split("\t")[3:] == ["-", "transcribing"]
    assert lines[1].split("\t")[3:] == ["120 s", "done"]
    assert jobs_api.requests[0].headers["authorization"] == "Bearer k1"
    assert cli.main(["jobs", "list", "--status", "completed", "--limit", "1"]) == 0
    out = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.out.splitlines()] == ["j2"]
    assert "raise --limit" in out.err
    assert dict(jobs_api.requests[-1].url.params) == {
        "status": "completed",
        "limit": "1",
        "offset": "0",
    }


def test_jobs_list_pages_past_the_servers_page_size(jobs_api, capsys):
    jobs_api.jobs = jobs_api.jobs * 70  # 210 jobs
    assert cli.main(["jobs", "list", "--limit", "150"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 150
    pages = [(r.url.params["limit"], r.url.params["offset"]) for r in jobs_api.requests]
    assert pages == [("100", "0"), ("50", "100")]
    assert cli.main(["jobs", "list", "--limit", "0"]) == 2  # argparse: usage error
    assert len(jobs_api.requests) == 2


def test_jobs_show_prints_the_snapshot_as_json(jobs_api, capsys):
    assert cli.main(["jobs", "show", "j3"]) == 0
    assert json.loads(capsys.readouterr().out)["percent"] == 42.4
    assert cli.main(["jobs", "show", "nope"]) == 2
    assert capsys.readouterr().err == "speech-cluster: error: HTTP 404 not_found: no job\n"


def test_jobs_cancel_reports_each_id(jobs_api, capsys):
    assert cli.main(["jobs", "cancel", "j3"]) == 0
    assert capsys.readouterr().out == "j3\tcancelled\n"
    assert cli.main(["jobs", "cancel", "j2", "j3"]) == 2  # j2 is finished: 409
    out = capsys.readouterr()
    assert out.out == "j3\tcancelled\n"
    assert out.err == "j2: HTTP 409 job_finished: job j2 is completed\n"
    assert [r.method for r in jobs_api.requests] == ["DELETE"] * 3


def test_jobs_result_to_stdout_or_file(jobs_api, tmp_path, capsys):
    assert cli.main(["jobs", "result", "j2"]) == 0
    assert capsys.readouterr().out == "json of j2"
    target = tmp_path / "sub" / "j2.srt"
    assert cli.main(["jobs", "result", "j2", "-f", "SRT", "-o", str(target)]) == 0
    assert target.read_text() == "srt of j2"
    assert capsys.readouterr().out == ""
    assert cli.main(["jobs", "result", "j3", "-o", str(tmp_path / "x")]) == 2  # not completed
    assert not (tmp_path / "x").exists()
    assert "HTTP 409 job_not_completed" in capsys.readouterr().err
    assert cli.main(["jobs", "result", "j2", "-f", "docx"]) == 2


def test_jobs_unreachable_server_exits_3(monkeypatch, capsys):
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(cli, "TRANSPORT", httpx.MockTransport(refuse))
    for verb in (["list"], ["show", "j1"], ["cancel", "j1"], ["result", "j1"]):
        assert cli.main(["jobs", *verb, "--url", "http://nowhere:1"]) == 3
        err = capsys.readouterr().err
        assert err.startswith("speech-cluster: server unreachable at http://nowhere:1")
        assert err.count("\n") == 1


def test_client_distribution_depends_on_light_pure_python_packages_only():
    meta = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower() for dep in meta["dependencies"]}
    assert names == {"httpx", "rich", "websockets"}
    assert meta["scripts"] == {"speech-cluster": "speech_cluster_client.cli:main"}
    # The server no longer ships the command itself.
    server_scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "speech-cluster" not in server_scripts


def test_client_imports_nothing_heavy_or_of_the_server():
    code = """if True:
        import pkgutil, sys, speech_cluster_client as pkg
        names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
        for name in names:
            __import__(name)
        assert {"speech_cluster_client.cli", "speech_cluster_client.jobs"} <= set(names), names
        heavy = {"torch", "ray", "numpy", "fastapi", "serve_app", "jobs", "deployments"}
        print(sorted({m.split(".")[0] for m in sys.modules} & heavy))
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_server_does_not_import_the_client():
    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if isinstance(node, ast.ImportFrom):
            return [node.module or ""]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):  # importlib & co
            return [node.value]
        return []

    found = []
    for top in ("serve_app", "jobs", "deployments"):
        for path in (REPO / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if any(re.search(r"\bspeech_cluster_client\b", n) for n in names(node)):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, f"the server imports the CLI client: {found}"


def test_live_reads_wav_at_any_rate_as_24_khz_pcm(tmp_path):
    import array
    import wave

    from speech_cluster_client.live import read_wav

    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(array.array("h", [1000, -5] * 16000).tobytes())  # 1 s, left = 1000
    pcm = array.array("h", read_wav(path))
    assert len(pcm) == 24000 and set(pcm) == {1000}
