"""``speech-cluster transcribe``: upload files or folders and fetch their transcripts.

Each input is uploaded (streamed) to ``POST /v1/jobs``; progress is followed over the job's
Server-Sent Events stream (with reconnects and a polling fallback) and each requested format
is fetched and written atomically as ``<input stem>.<format>``. Inputs run one after another.
The worst outcome over all inputs is the exit code (see ``cli.EPILOG``); on Ctrl-C the running
job is cancelled with DELETE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from speech_cluster_client.cli import (
    EPILOG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    FORMATS,
    CliError,
    _raise_for,
    add_connection_args,
    make_client,
    write_atomic,
)

AUDIO_EXTS = frozenset(
    {"wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "webm", "mp4", "mkv", "mov", "wma", "aiff"}
)
TERMINAL = frozenset({"completed", "failed", "cancelled"})
POLL_INTERVAL_S = 1.0  # polling cadence once the event stream is unusable
SSE_ATTEMPTS = 3  # event-stream connections per job before settling for polling
SSE_READ_TIMEOUT_S = 30.0  # the server pings, so this much silence means a dead stream
MAX_POLL_FAILURES = 10  # consecutive failed polls before the server counts as gone
SUBMIT_ATTEMPTS = 4  # submissions retried on 429/503 (safe: same Idempotency-Key)
MAX_RETRY_AFTER_S = 30.0


def collect_inputs(paths: Iterable[str], recursive: bool = False) -> list[Path]:
    """Expand the command-line paths: files as given, folders to the audio/video files inside.

    Raises:
        CliError: a path does not exist, or nothing to transcribe was found (exit 2).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            children = path.rglob("*") if recursive else path.iterdir()
            media = [
                p for p in children if p.is_file() and p.suffix.lower().lstrip(".") in AUDIO_EXTS
            ]
            found.extend(sorted(media))
        elif path.is_file():
            found.append(path)  # named explicitly: trust the user, the server validates
        else:
            raise CliError(EXIT_USAGE, f"no such file or directory: {raw}")
    if not found:
        raise CliError(EXIT_USAGE, "no audio/video files found in the given paths")
    return list(dict.fromkeys(found))


def parse_formats(values: list[str] | None) -> list[str]:
    """Flatten repeated/comma-separated ``--format`` values; default ``["srt"]``."""
    out = [v.strip().lower() for item in values or ["srt"] for v in item.split(",") if v.strip()]
    if bad := [f for f in out if f not in FORMATS]:
        raise CliError(EXIT_USAGE, f"unknown format {bad[0]!r} (choose from {', '.join(FORMATS)})")
    return list(dict.fromkeys(out))


def iter_sse(lines: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """Parse Server-Sent Events lines into ``(event, data, last_event_id)``; skip comments."""
    event, data, last_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data), last_id
            event, data = "message", []
        elif line.startswith(":"):
            continue  # keep-alive ping
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                last_id = value


class Runner:
    """Runs the transcribe subcommand: submit, follow, fetch — one input at a time."""

    def __init__(self, args: argparse.Namespace, client: httpx.Client, progress: Progress):
        self.args, self.client, self.progress = args, client, progress
        self.formats = parse_formats(args.format)
        self.job_id: str | None = None  # the job to cancel on Ctrl-C
        self.last_event_id: str | None = None  # resume point when the stream reconnects

    def submit(self, path: Path) -> dict[str, Any]:
        """Upload ``path`` (streamed from disk) and return the job snapshot."""
        a = self.args
        fields: dict[str, str | list[str]] = {"diarize": "false" if a.no_diarize else "true"}
        names = ("model", "language", "num_speakers", "min_speakers", "max_speakers", "segment_s")
        for name in names:
            if (value := getattr(a, name)) is not None:
                fields[name] = str(value)
        if a.translate:
            fields["task"] = "translate"
        if a.speaker:
            fields["speakers"] = list(a.speaker)  # repeated form fields
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Idempotency-Key": uuid.uuid4().hex}  # makes the 429 retry below safe
        for attempt in range(SUBMIT_ATTEMPTS):
            with path.open("rb") as fh:  # httpx streams file objects in chunks
                resp = self.client.post(
                    "/v1/jobs", data=fields, files={"file": (path.name, fh, mime)}, headers=headers
                )
            if resp.status_code in (429, 503) and attempt + 1 < SUBMIT_ATTEMPTS:
                time.sleep(_retry_after(resp))
                continue
            _raise_for(resp)
            return resp.json()
        raise AssertionError("unreachable")

    def wait(self, job_id: str, on_update: Callable[[dict], None]) -> dict[str, Any]:
        """Follow the job to a terminal snapshot: SSE first, polling when the stream drops."""
        deadline = time.monotonic() + self.args.timeout if self.args.timeout else None
        sse_tries = poll_failures = 0
        while True:
            self._check_deadline(deadline, job_id)
            if sse_tries < SSE_ATTEMPTS:
                sse_tries += 1
                # A deadline hit inside is re-raised by the check at the top of the loop.
                with contextlib.suppress(
                    httpx.TransportError, httpx.StreamError, CliError, ValueError
                ):
                    if (final := self._stream(job_id, deadline, on_update)) is not None:
                        return final
            # The stream dropped (or never worked): poll, which also covers missed events.
            try:
                resp = self.client.get(f"/v1/jobs/{job_id}", timeout=10.0)
                if resp.status_code >= 500:
                    _raise_for(resp)
                poll_failures = 0
            except (httpx.TransportError, CliError) as exc:
                poll_failures += 1
                if poll_failures >= MAX_POLL_FAILURES:
                    raise CliError(EXIT_SERVER, f"lost contact with the server: {exc}") from exc
                time.sleep(POLL_INTERVAL_S)
                continue
            _raise_for(resp)  # 4xx, e.g. the job vanished
            snap = resp.json()
            on_update(snap)
            if snap.get("status") in TERMINAL:
                return snap
            time.sleep(POLL_INTERVAL_S)

    def _stream(self, job_id: str, deadline: float | None, on_update) -> dict[str, Any] | None:
        """Read the event stream; the final snapshot on ``end``, None if it closed early."""
        read = SSE_READ_TIMEOUT_S
        if deadline is not None:
            read = max(0.1, min(read, deadline - time.monotonic()))
        timeout = httpx.Timeout(10.0, read=read)
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        url = f"/v1/jobs/{job_id}/events"
        with self.client.stream("GET", url, timeout=timeout, headers=headers) as resp:
            _raise_for(resp)
            for event, data, self.last_event_id in iter_sse(resp.iter_lines()):
                self._check_deadline(deadline, job_id)
                if event not in ("progress", "end"):
                    continue
                snap = json.loads(data)
                on_update(snap)
                if event == "end" or snap.get("status") in TERMINAL:
                    return snap
        return None

    @staticmethod
    def _check_deadline(deadline: float | None, job_id: str) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise CliError(EXIT_SERVER, f"timed out waiting for job {job_id} (still on the server)")

    def fetch(self, job_id: str, path: Path) -> list[Path]:
        """Download each requested format of a completed job next to ``path`` or into -o."""
        out_dir = Path(self.args.output) if self.args.output else path.parent
        written = []
        for fmt in self.formats:
            target = out_dir / f"{path.stem}.{fmt}"
            url = f"/v1/jobs/{job_id}/result"
            with self.client.stream("GET", url, params={"format": fmt}) as resp:
                _raise_for(resp)
                write_atomic(target, resp.iter_bytes())
            written.append(target)
        return written

    def run_one(self, path: Path) -> int:
        """Transcribe one input; returns its exit code (errors are printed, not raised)."""
        name = escape(path.name)
        self.job_id = self.last_event_id = None
        snap = self.submit(path)
        self.job_id = job_id = snap["id"]
        if self.args.no_wait:
            print(job_id, flush=True)
            return EXIT_OK
        task = self.progress.add_task(f"{name} · submitted", total=100, segs="")

        def on_update(s: dict) -> None:
            done, total = s.get("segments_done"), s.get("segments_total")
            self.progress.update(
                task,
                completed=float(s.get("percent") or 0),
                description=f"{name} · {escape(str(s.get('stage') or s.get('status') or ''))}",
                segs=f"{done or 0}/{total} segments" if total else "",
            )

        final = self.wait(job_id, on_update)
        self.job_id = None
        status = final.get("status")
        if status != "completed":
            err = final.get("error") or {}
            self.progress.update(task, description=f"{name} · {status}")
            detail = f"{err.get('code', status)}: {err.get('message', '')}" if err else status
            print(f"{path}: job {job_id} {status}: {detail}", file=sys.stderr)
            return EXIT_FAILED
        self.progress.update(task, completed=100, description=f"{name} · done")
        for target in self.fetch(job_id, path):
            if not self.args.quiet:
                print(target, flush=True)
        return EXIT_OK

    def cancel_running(self) -> None:
        """Best-effort DELETE of the job being followed (on Ctrl-C)."""
        if self.job_id is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            self.client.delete(f"/v1/jobs/{self.job_id}", timeout=5.0)
        print(f"interrupted: cancelled job {self.job_id}", file=sys.stderr)


def _retry_after(resp: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(resp.headers.get("Retry-After", "1"))))
    except ValueError:  # an HTTP-date: not worth parsing here
        return 1.0


def transcribe(args: argparse.Namespace) -> int:
    """Run ``transcribe`` over all inputs; returns the process exit code."""
    try:
        parse_formats(args.format)
        inputs = collect_inputs(args.paths, args.recursive)
    except CliError as exc:
        print(f"speech-cluster: error: {exc}", file=sys.stderr)
        return exc.exit_code
    console = Console(stderr=True)
    progress = Progress(
        *(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()),
        *(TextColumn("{task.fields[segs]}"), TimeElapsedColumn()),
        console=console,
        disable=args.quiet or args.no_wait,
    )
    codes: list[int] = []
    with make_client(args.url, args.api_key) as client, progress:
        runner = Runner(args, client, progress)
        for path in inputs:
            try:
                codes.append(runner.run_one(path))
            except KeyboardInterrupt:
                runner.cancel_running()
                return EXIT_INTERRUPTED
            except CliError as exc:
                print(f"{path}: {exc}", file=sys.stderr)
                codes.append(exc.exit_code)
            except httpx.HTTPError as exc:
                print(f"{path}: server unreachable at {args.url}: {exc!r}", file=sys.stderr)
                codes.append(EXIT_SERVER)
                if isinstance(exc, httpx.ConnectError):
                    break  # every remaining input would fail the same way
            except OSError as exc:  # unreadable input or unwritable output
                print(f"{path}: {exc}", file=sys.stderr)
                codes.append(EXIT_USAGE)
    ok, skipped = codes.count(EXIT_OK), len(inputs) - len(codes)
    if not args.quiet:
        verb = "submitted" if args.no_wait else "succeeded"
        line = f"{ok} {verb}, {len(codes) - ok} failed" + (
            f", {skipped} skipped" if skipped else ""
        )
        print(line, file=sys.stderr)
    return max(codes, default=EXIT_OK)


def add_transcribe_parser(sub) -> None:
    """Register ``transcribe`` on the ``speech-cluster`` sub-command parsers ``sub``."""
    fmt = argparse.RawDescriptionHelpFormatter
    t = sub.add_parser(
        "transcribe", help="transcribe files or folders", epilog=EPILOG, formatter_class=fmt
    )
    t.add_argument("paths", nargs="+", metavar="PATH", help="audio/video file or folder")
    add_connection_args(t)
    t.add_argument(
        "-f", "--format", action="append", help=f"{'|'.join(FORMATS)}; repeat or comma list"
    )
    t.add_argument("-o", "--output", help="output directory (default: next to each input)")
    t.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    t.add_argument("--no-diarize", action="store_true", help="transcribe only")
    t.add_argument("--model", help="a served model, e.g. base or tiny.en (default: the server's)")
    t.add_argument("--language", help="language code (default: detected for every 30 s of speech)")
    t.add_argument("--translate", action="store_true", help="English text, whatever is spoken")
    for opt in ("--num-speakers", "--min-speakers", "--max-speakers"):
        t.add_argument(opt, type=int, metavar="N", help="speaker count hint for diarization")
    t.add_argument("--segment-s", type=float, help="segment length in seconds")
    t.add_argument(
        "--speaker",
        action="append",
        metavar="NAME",
        help="an enrolled speaker (name or id) to name in the transcript; repeatable",
    )
    t.add_argument("--no-wait", action="store_true", help="submit and print job ids")
    t.add_argument("--timeout", type=float, help="seconds to wait for each job (default: none)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    t.set_defaults(func=transcribe)
