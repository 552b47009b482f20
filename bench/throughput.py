"""Throughput on long recordings: the cluster end to end vs faster-whisper in-process.

    .venv/bin/python bench/throughput.py --minutes 5 20 60 [--diarize] [--json PATH]

For each length, a synthetic three-voice meeting (tests.synth) is transcribed by
- faster-whisper `WhisperModel.transcribe(vad_filter=True)`, sequential, in this process;
- faster-whisper `BatchedInferencePipeline.transcribe(batch_size=8)` (VAD on), in process;
- the cluster through HTTP: POST /v1/jobs, GET /v1/jobs/{id} until completed.
Same model, same machine, same run; word timestamps on everywhere (the job default). The
baselines run before Ray starts so an idle cluster does not share their cores. RT factor =
audio seconds / wall seconds; the last column is the cluster's RT factor over each row's.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    add_common_args,
    bench_settings,
    build_recording,
    clip,
    deployment_options,
    load_whisper,
    log,
    make_parser,
    ratio,
    ray_cpus,
    table,
    timed,
    workspace,
    write_json,
)
from deployments.schemas import SAMPLE_RATE
from tests.conftest import load_audio
from tests.synth import write_wav


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--minutes", type=float, nargs="+", default=[5.0], help="recording lengths (minutes)"
    )
    parser.add_argument("--diarize", action="store_true", help="cluster jobs also diarize")
    parser.add_argument("--segment-s", type=float, default=30.0, help="job segment length")
    parser.add_argument("--batch-size", type=int, default=8, help="batched baseline's batch")
    parser.add_argument(
        "--transcribers",
        type=int,
        default=2,
        help="Transcriber replicas (1 thread each); serve_config.yaml scales to 2 on CPU",
    )
    add_common_args(parser)
    return parser.parse_args()


def run_baselines(model, audios: list, args: argparse.Namespace) -> list[list]:
    """Per recording: (system, wall seconds, words) of both in-process baselines."""
    from faster_whisper import BatchedInferencePipeline

    batched = BatchedInferencePipeline(model)
    opts = {"language": args.language, "word_timestamps": True, "vad_filter": True}

    def sequential(x):
        segments, _ = model.transcribe(x, **opts)
        return sum(len(s.words or []) for s in segments)  # decoding happens while iterating

    def pipeline(x):
        segments, _ = batched.transcribe(x, batch_size=args.batch_size, **opts)
        return sum(len(s.words or []) for s in segments)

    systems = (
        ("faster-whisper sequential", sequential),
        (f"faster-whisper batched (bs={args.batch_size})", pipeline),
    )
    for _, fn in systems:
        fn(clip(10))  # warm-up
    out = []
    for audio in audios:
        out.append([])
        for name, fn in systems:
            words, wall = timed(lambda fn=fn, audio=audio: fn(audio))
            log(f"{len(audio) / SAMPLE_RATE:.0f} s, {name}: {wall:.1f} s, {words} words")
            out[-1].append((name, wall, words))
    return out


def main() -> int:
    args = parse_args()
    rows: list[list] = []
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        paths = [
            write_wav(build_recording(m).audio, tmp / f"meeting-{m:g}.wav") for m in args.minutes
        ]
        audios = [load_audio(path) for path in paths]  # what the cluster will decode too
        durations = [len(audio) / SAMPLE_RATE for audio in audios]
        baselines = run_baselines(load_whisper(settings, args.threads), audios, args)
        del audios
        gc.collect()  # the baseline model and audio go before the cluster starts
        recordings = zip(args.minutes, paths, durations, baselines, strict=True)
        cluster_name = "cluster HTTP" + (" + diarization" if args.diarize else "")
        with Cluster(settings, args.port, ray_cpus(args, args.transcribers + 1)) as cluster:
            cluster.deploy(**deployment_options(args, args.transcribers))
            cluster.warm_up(tmp)
            for minutes, path, duration, base in recordings:
                run = cluster.run_job(
                    path, diarize=args.diarize, language=args.language, segment_s=args.segment_s
                )
                if run.status != "completed":
                    log(f"job {run.status}: {run.snapshot.get('error')}")
                words = sum(len(s["words"]) for s in run.result.get("segments", []))
                rt_cluster = duration / run.wall_s if run.status == "completed" else None
                for name, wall, n in [*base, (cluster_name, run.wall_s, words)]:
                    rt = duration / wall
                    cells = [name, wall, n, rt, ratio(rt_cluster, rt)]
                    rows.append([f"{minutes:g}", round(duration), *cells])
    headers = ["audio min", "audio s", "system", "wall s", "words", "RT factor", "cluster ÷ this"]
    title = (
        f"Throughput ({settings.whisper_model}, {args.threads} baseline threads, "
        f"{args.transcribers} transcriber replicas)"
    )
    write_json(args.json, args, [table(title, headers, rows)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
