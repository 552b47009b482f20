"""``speech-cluster jobs list|show|cancel|result``: the caller's jobs on the server.

Thin wrappers over ``GET /v1/jobs``, ``GET /v1/jobs/{id}``, ``DELETE /v1/jobs/{id}`` and
``GET /v1/jobs/{id}/result``; errors print one line and exit 2 (4xx) or 3 (unreachable, 5xx).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from speech_cluster_client.cli import (
    EXIT_OK,
    FORMATS,
    CliError,
    _raise_for,
    add_connection_args,
    run_action,
    write_atomic,
)

PAGE = 100  # the server's largest page (GET /v1/jobs?limit=)


def _list(client: httpx.Client, args: argparse.Namespace) -> int:
    params: dict[str, str | int] = {"status": args.status} if args.status else {}
    shown, has_more, cursor = 0, True, None
    while has_more and shown < args.limit:  # --limit may exceed one page: follow the cursor
        params |= {"limit": min(PAGE, args.limit - shown)}
        # next_cursor: a page may end short (a status filter matched few of the jobs the
        # server read for it); offsets only for servers older than cursors.
        params |= {"cursor": cursor} if cursor else {"offset": shown}
        resp = client.get("/v1/jobs", params=params)
        _raise_for(resp)
        body = resp.json()
        for job in body["data"]:
            percent = f"{float(job.get('percent') or 0):.0f}%"
            length = f"{job['duration']:.0f} s" if job.get("duration") is not None else "-"
            print(f"{job['id']}\t{job['status']}\t{percent}\t{length}\t{job.get('stage', '')}")
        shown += len(body["data"])
        cursor = body.get("next_cursor")
        params.pop("offset", None)
        has_more = bool(body.get("has_more")) and (cursor is not None or bool(body["data"]))
    if has_more:
        print(f"(more jobs than the {shown} shown: raise --limit)", file=sys.stderr)
    return EXIT_OK


def _show(client: httpx.Client, args: argparse.Namespace) -> int:
    resp = client.get(f"/v1/jobs/{args.job_id}")
    _raise_for(resp)
    print(json.dumps(resp.json(), indent=2, ensure_ascii=False))
    return EXIT_OK


def _cancel(client: httpx.Client, args: argparse.Namespace) -> int:
    code = EXIT_OK
    for job_id in args.job_ids:
        resp = client.delete(f"/v1/jobs/{job_id}")
        try:
            _raise_for(resp)
            print(f"{job_id}\t{resp.json().get('status', 'cancelled')}")
        except CliError as exc:
            print(f"{job_id}: {exc}", file=sys.stderr)
            code = max(code, exc.exit_code)
    return code


def _result(client: httpx.Client, args: argparse.Namespace) -> int:
    url = f"/v1/jobs/{args.job_id}/result"
    with client.stream("GET", url, params={"format": args.format}) as resp:
        _raise_for(resp)
        if args.output:
            write_atomic(Path(args.output), resp.iter_bytes())
        else:
            for chunk in resp.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    return EXIT_OK


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_jobs_parser(sub) -> None:
    """Register ``jobs`` and its verbs on the ``speech-cluster`` sub-command parsers ``sub``."""
    p = sub.add_parser("jobs", help="list, inspect, cancel and fetch your jobs")
    verbs = p.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser(
        "list",
        help="your jobs, newest first",
        description="Your jobs, newest first: id, status, percent, audio length, stage "
        "(tab-separated).",
    )
    ls.add_argument("--status", help="only jobs in this status (e.g. transcribing, completed)")
    ls.add_argument("--limit", type=_positive, default=20, metavar="N", help="default %(default)s")
    ls.set_defaults(func=lambda a: run_action(a, _list))
    show = verbs.add_parser("show", help="one job's full status, as JSON")
    show.add_argument("job_id", metavar="ID")
    show.set_defaults(func=lambda a: run_action(a, _show))
    cancel = verbs.add_parser("cancel", help="cancel queued or running jobs")
    cancel.add_argument("job_ids", nargs="+", metavar="ID")
    cancel.set_defaults(func=lambda a: run_action(a, _cancel))
    result = verbs.add_parser("result", help="a completed job's transcript")
    result.add_argument("job_id", metavar="ID")
    result.add_argument(
        "-f", "--format", type=str.lower, choices=FORMATS, default="json", help="default json"
    )
    result.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    result.set_defaults(func=lambda a: run_action(a, _result))
    for parser in (ls, show, cancel, result):
        add_connection_args(parser)
