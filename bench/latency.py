"""Latency of a short clip: OpenAI endpoint through HTTP vs the replica's engine in-process.

    .venv/bin/python bench/latency.py --requests 20 --runs 3 [--clip-s 10] [--json PATH]

The app is deployed from serve_config.yaml, as `serve run` deploys it, and the seconds from
`serve.run` to a healthy /healthz are reported. A ~10 s clip of real speech (Debian's
Allison prompts, bench.common.real_speech) is sent N times per run, one request after the other, to
POST /v1/audio/transcriptions (file, model=whisper-1, response_format=json), alternating
with N calls of `WhisperBatchTranscriber.transcribe_many` on the same clip in this process,
with the options that endpoint uses (no word timestamps). Alternating means a change in
machine load affects both paths alike. The in-process engine gets as many threads as one
replica (1 by default), so the ratio is the cost of HTTP, Serve routing, decoding the
upload and batching. Two untimed warm-up calls per path come first. Each of `--runs` runs
gives its own p50/p95 ratios; the summary row is their median with the spread (min-max).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    add_common_args,
    bench_settings,
    default_deploy,
    load_core,
    log,
    make_parser,
    ratio,
    ray_cpus,
    real_speech,
    table,
    timed,
    workspace,
    write_json,
)
from deployments.core.schemas import TranscribeOptions
from tests.conftest import load_audio, normalize_text
from tests.synth import write_wav

WARM_UP = 2
DIRECT, HTTP = "in-process transcribe_many", "HTTP /v1/audio/transcriptions"


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per path")
    parser.add_argument("--clip-s", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--runs", type=int, default=3, help="runs of --requests per path")
    add_common_args(parser, threads=1)
    return parser.parse_args()


def measure(core, cluster: Cluster, wav: Path, args) -> tuple[dict, dict]:
    """Latencies (s) per path, and the text each path gave last."""
    audio = load_audio(wav)  # the 16-bit file both paths see
    options = TranscribeOptions(language=args.language, word_timestamps=False)
    body = wav.read_bytes()
    form = {"model": "whisper-1", "response_format": "json", "language": args.language}

    def direct() -> str:
        return core.transcribe_many([audio], [options])[0].text

    def http() -> str:
        files = {"file": (wav.name, body, "audio/wav")}
        r = cluster.http.post("/v1/audio/transcriptions", files=files, data=form)
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/audio/transcriptions: {r.status_code} {r.text}")
        return r.json()["text"]

    times: dict[str, list[float]] = {DIRECT: [], HTTP: []}
    texts: dict[str, str] = {}
    for i in range(WARM_UP + args.requests):
        for name, fn in ((DIRECT, direct), (HTTP, http)):
            texts[name], seconds = timed(fn)
            if i >= WARM_UP:
                times[name].append(seconds)
    return times, texts


def stats(times: list[float]) -> tuple[float, float, float]:
    """p50, p95 and mean in milliseconds."""
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean())


def main() -> int:
    args = parse_args()
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        speech = real_speech(args.clip_s / 60, seed=5).audio  # whole prompts, >= clip_s
        wav = write_wav(speech, tmp / "clip.wav")
        core = load_core(settings, args.threads)
        with Cluster(settings, args.port, ray_cpus(args)) as cluster:
            ready_s = cluster.deploy(**default_deploy())
            runs = []
            for run in range(args.runs):
                log(f"run {run + 1}: {args.requests} requests per path")
                runs.append(measure(core, cluster, wav, args))
    headers = ["run", "path", "requests", "p50 ms", "p95 ms", "mean ms", "p50 ÷ direct",
               "p95 ÷ direct"]  # fmt: skip
    rows, p50s, p95s = [], [], []
    for run, (times, _) in enumerate(runs, 1):
        d50, d95, dmean = stats(times[DIRECT])
        h50, h95, hmean = stats(times[HTTP])
        p50s.append(h50 / d50)
        p95s.append(h95 / d95)
        rows += [
            [run, DIRECT, len(times[DIRECT]), d50, d95, dmean, 1.0, 1.0],
            [run, HTTP, len(times[HTTP]), h50, h95, hmean, ratio(h50, d50), ratio(h95, d95)],
        ]
    summary = [
        [
            "HTTP ÷ in-process",
            float(np.median(p50s)),
            f"{min(p50s):.2f}-{max(p50s):.2f}",
            float(np.median(p95s)),
            f"{min(p95s):.2f}-{max(p95s):.2f}",
            ready_s,
        ]
    ]
    texts = runs[-1][1]
    same = normalize_text(texts[DIRECT]) == normalize_text(texts[HTTP])
    title = f"Latency of a {len(speech) / 16000:.1f} s real-speech clip ({settings.whisper_model})"
    tabs = [
        table(title, headers, rows),
        table(
            f"Median of {args.runs} runs",
            ["ratio", "p50 median", "p50 spread", "p95 median", "p95 spread", "healthy after s"],
            summary,
        ),
    ]
    print(f"Same text on both paths: {'yes' if same else 'no'}\n")
    write_json(args.json, args, [tabs[0] | {"same_text": same, "text": texts[HTTP]}, tabs[1]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
