"""``speech-cluster``: a light client for a running speech-cluster server.

Usage::

    speech-cluster transcribe talk.wav interviews/ -f srt,vtt -o out/ --url http://host:8000
    speech-cluster speakers add "Ana Lima" ana-1.wav ana-2.wav
    speech-cluster jobs list --status transcribing
    speech-cluster live meeting.wav --speakers "Ana Lima"     # captions as they are spoken

The sub-commands live in ``transcribe.py``, ``speakers.py`` and ``jobs.py``; this module holds
what they share (HTTP client, error mapping, exit codes, connection options) and ``main``.

Exit codes (for ``transcribe``, the worst outcome over all inputs wins):
    0    success (every job succeeded or, with --no-wait, was submitted)
    1    at least one job failed or was cancelled
    2    usage error, or the server rejected a request with a 4xx (bad file, bad parameter)
    3    server unreachable, 5xx, or --timeout expired
    130  interrupted (Ctrl-C); the running job is cancelled with DELETE

Deliberately imports neither Ray nor torch nor numpy (httpx, rich, websockets), so it starts fast
and installs on any client machine: ``pip install ./client``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FORMATS = ("json", "srt", "vtt", "txt", "rttm")
TRANSPORT: httpx.BaseTransport | None = None  # tests inject an httpx.MockTransport here

EPILOG = """exit codes:
  0    all jobs succeeded (with --no-wait: all submitted)
  1    at least one job failed or was cancelled
  2    usage error, or the server rejected an input (4xx: bad file or parameter)
  3    server unreachable, 5xx response, or --timeout expired
  130  interrupted (Ctrl-C); the running job is cancelled on the server"""


class CliError(Exception):
    """An error that ends one input (or the whole run) with a given exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def make_client(url: str, api_key: str | None) -> httpx.Client:
    """Build the HTTP client for ``url``, sending ``api_key`` as a bearer token when given."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(
        base_url=url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(60.0, connect=10.0),
        transport=TRANSPORT,
    )


def _raise_for(resp: httpx.Response) -> None:
    """Turn an error response into a CliError: 4xx → exit 2, 429/5xx → exit 3."""
    if resp.is_success:
        return
    resp.read()
    try:
        err = resp.json()["error"]
        detail = f"{err.get('code', 'error')}: {err.get('message', '')}"
    except (ValueError, KeyError, TypeError):
        detail = resp.text.strip()[:300] or resp.reason_phrase
    client_fault = 400 <= resp.status_code < 500 and resp.status_code != 429
    code = EXIT_USAGE if client_fault else EXIT_SERVER
    raise CliError(code, f"HTTP {resp.status_code} {detail}")


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` via a temp file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_action(
    args: argparse.Namespace, action: Callable[[httpx.Client, argparse.Namespace], int]
) -> int:
    """Run one request-level sub-command; any error becomes one plain line and an exit code."""
    try:
        with make_client(args.url, args.api_key) as client:
            return action(client, args)
    except CliError as exc:
        print(f"speech-cluster: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except httpx.HTTPError as exc:
        print(f"speech-cluster: server unreachable at {args.url}: {exc!r}", file=sys.stderr)
        return EXIT_SERVER
    except OSError as exc:
        print(f"speech-cluster: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("SPEECH_URL", "http://127.0.0.1:8000"),
        help="server base URL (env SPEECH_URL; default %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SPEECH_API_KEY"),
        help="bearer key (env SPEECH_API_KEY)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``speech-cluster`` argument parser."""
    from speech_cluster_client.jobs import add_jobs_parser
    from speech_cluster_client.live import add_live_parser
    from speech_cluster_client.speakers import add_speakers_parser
    from speech_cluster_client.transcribe import add_transcribe_parser

    parser = argparse.ArgumentParser(
        prog="speech-cluster",
        description="Transcribe and diarize recordings on a speech-cluster server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_transcribe_parser(sub)
    add_speakers_parser(sub)
    add_jobs_parser(sub)
    add_live_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help / usage errors; report it as a code
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
