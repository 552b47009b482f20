"""`stream=true` on /v1/audio/transcriptions: how soon text arrives, against the same call
without streaming.

    .venv/bin/python bench/stream_latency.py [--clip-s 90] [--runs 3] [--json PATH]

The app is deployed from serve_config.yaml, as `serve run` deploys it. A clip of real speech
(Debian's Allison prompts, bench.common.real_speech; 90 s by default) is sent, alternating
in each run, as a plain call (response_format=json; past sync_direct_max_s it runs as a
job) and as a streamed call (Server-Sent Events, timed per event as it arrives). One
untimed pair warms up first. Reported per run: the non-streamed time, the first delta's and
the done event's time, both as a share of the non-streamed time, and the WER of the
streamed text against the non-streamed text and of each against the prompts' transcripts.
The summary gives the median of the runs and their spread (min-max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    add_common_args,
    bench_settings,
    default_deploy,
    log,
    make_parser,
    ray_cpus,
    real_speech,
    table,
    workspace,
    write_json,
)
from tests.conftest import wer
from tests.synth import write_wav


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--clip-s", type=float, default=90.0, help="clip length in seconds")
    parser.add_argument("--runs", type=int, default=3, help="timed pairs of calls")
    add_common_args(parser)
    return parser.parse_args()


def plain(cluster: Cluster, body: bytes) -> tuple[float, str]:
    t0 = time.monotonic()
    r = cluster.http.post(
        "/v1/audio/transcriptions",
        files={"file": ("clip.wav", body, "audio/wav")},
        data={"model": "whisper-1", "response_format": "json"},
    )
    if r.status_code != 200:
        raise RuntimeError(f"POST /v1/audio/transcriptions: {r.status_code} {r.text}")
    return time.monotonic() - t0, r.json()["text"]


def streamed(cluster: Cluster, body: bytes) -> tuple[float, float, str, str]:
    """Seconds to the first delta and to the done event; the done text; the deltas joined."""
    t0, first, deltas = time.monotonic(), None, []
    with cluster.http.stream(
        "POST",
        "/v1/audio/transcriptions",
        files={"file": ("clip.wav", body, "audio/wav")},
        data={"model": "whisper-1", "stream": "true"},
    ) as r:
        if r.status_code != 200:
            raise RuntimeError(f"POST stream=true: {r.status_code} {r.read()!r}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "transcript.text.delta":
                first = first or time.monotonic() - t0
                deltas.append(event["delta"])
            elif event["type"] == "transcript.text.done":
                return first or 0.0, time.monotonic() - t0, event["text"], "".join(deltas)
            else:
                raise RuntimeError(f"unexpected event {event}")
    raise RuntimeError("the stream ended without transcript.text.done")


def main() -> int:
    args = parse_args()
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        rec = real_speech(args.clip_s / 60, seed=11)
        speech = rec.audio[: int(args.clip_s * 16000)]
        # The prompts heard whole within the clip (the cut may clip one at the end).
        reference = " ".join(
            t for (_, end, _), t in zip(rec.turns, rec.texts, strict=True) if end <= args.clip_s
        )
        # Each pair gets its own copy (a few ms more leading silence): an OpenAI call whose
        # twin already finished is answered from that job's result, and must not be here.
        bodies = [
            write_wav(np.pad(speech, (160 * i, 0)), tmp / f"clip{i}.wav").read_bytes()
            for i in range(args.runs + 1)
        ]
        with Cluster(settings, args.port, ray_cpus(args)) as cluster:
            cluster.deploy(**default_deploy())
            log("warm-up pair")
            plain(cluster, bodies[0])
            streamed(cluster, bodies[0])
            rows = []
            for run in range(args.runs):
                log(f"run {run + 1}")
                body = bodies[run + 1]
                order = ["plain", "stream"] if run % 2 == 0 else ["stream", "plain"]
                got = {
                    name: plain(cluster, body) if name == "plain" else streamed(cluster, body)
                    for name in order
                }
                whole, text = got["plain"]
                first, done, done_text, joined = got["stream"]
                if joined != done_text:
                    raise RuntimeError("the deltas joined differ from the done text")
                log(f"plain: {text}\nstreamed: {done_text}\nreference: {reference}")
                rows.append([run + 1, whole, first, done, first / whole, done / whole,
                             wer(text, done_text), wer(reference, text),
                             wer(reference, done_text)])  # fmt: skip
    headers = ["run", "plain s", "first delta s", "done s", "first ÷ plain", "done ÷ plain",
               "WER stream vs plain", "WER plain", "WER stream"]  # fmt: skip
    summary = []
    for col, name in ((4, "first delta ÷ plain"), (5, "done ÷ plain"), (6, "WER stream vs plain")):
        values = [r[col] for r in rows]
        summary.append([name, statistics.median(values), f"{min(values):.3f}-{max(values):.3f}"])
    seconds = len(speech) / 16000
    title = f"stream=true on a {seconds:.0f} s real-speech clip ({settings.whisper_model})"
    tabs = [
        table(title, headers, rows, digits=3),
        table(f"Median of {args.runs} runs", ["measure", "median", "spread"], summary, digits=3),
    ]
    write_json(args.json, args, tabs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
