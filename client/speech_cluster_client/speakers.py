"""`speech-cluster speakers add|list|rm`: enroll the voices transcripts should name."""

from __future__ import annotations

import argparse
import mimetypes
import sys
from pathlib import Path

import httpx

from speech_cluster_client.cli import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _raise_for,
    add_connection_args,
    run_action,
)


def _add(client: httpx.Client, args: argparse.Namespace) -> int:
    if bool(args.samples) == bool(args.job):
        raise CliError(EXIT_USAGE, "give sample files, or --job ID --label SPEAKER_xx")
    if args.job:
        data = {"name": args.name, "job_id": args.job, "speaker": args.label or ""}
        resp = client.post("/v1/speakers", data=data)
    else:
        files = []
        for sample in args.samples:
            path = Path(sample)
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files.append(("file", (path.name, path.read_bytes(), mime)))
        resp = client.post("/v1/speakers", data={"name": args.name}, files=files)
    _raise_for(resp)
    body = resp.json()
    print(f"{body['id']}\t{body['name']}\t{body['speech_s']:.1f} s of speech")
    return EXIT_OK


def _list(client: httpx.Client, args: argparse.Namespace) -> int:
    resp = client.get("/v1/speakers")
    _raise_for(resp)
    for s in resp.json()["data"]:
        print(f"{s['id']}\t{s['name']}\t{s['speech_s']:.1f} s\t{s['source']}")
    return EXIT_OK


def _rm(client: httpx.Client, args: argparse.Namespace) -> int:
    speakers = client.get("/v1/speakers")
    _raise_for(speakers)
    by_name = {s["name"]: s["id"] for s in speakers.json()["data"]}
    code = EXIT_OK
    for ref in args.speakers:
        resp = client.delete(f"/v1/speakers/{by_name.get(ref, ref)}")
        try:
            _raise_for(resp)
            print(f"removed {ref}")
        except CliError as exc:
            print(f"{ref}: {exc}", file=sys.stderr)
            code = max(code, exc.exit_code)
    return code


def add_speakers_parser(sub) -> None:
    p = sub.add_parser("speakers", help="enroll, list and remove known speakers")
    verbs = p.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="enroll NAME from samples (or a speaker of a job)")
    add.add_argument("name", help="how transcripts will name this person")
    add.add_argument("samples", nargs="*", metavar="SAMPLE", help="2-10 s of them alone, each")
    add.add_argument("--job", help="instead: a finished job of yours...")
    add.add_argument("--label", help="...and the speaker label in it (e.g. SPEAKER_01)")
    add.set_defaults(func=lambda a: run_action(a, _add))
    ls = verbs.add_parser("list", help="your enrolled speakers")
    ls.set_defaults(func=lambda a: run_action(a, _list))
    rm = verbs.add_parser("rm", help="forget speakers (names or ids)")
    rm.add_argument("speakers", nargs="+", metavar="NAME")
    rm.set_defaults(func=lambda a: run_action(a, _rm))
    for parser in (add, ls, rm):
        add_connection_args(parser)
