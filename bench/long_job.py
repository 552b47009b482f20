"""One long recording end to end through HTTP, with the job manager's peak RSS.

    .venv/bin/python bench/long_job.py --minutes 60 [--no-diarize] [--segment-s 30]

Starts a private local Ray cluster and the app (embedded Redis), synthesizes a
multi-speaker recording of the given length, submits it to /v1/jobs, follows progress,
and prints the realtime factor and the peak RSS/USS of the job manager actor sampled every
0.5 s. bench/memory.py does the same for several lengths and every replica process.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster, RssSampler
from bench.common import (
    MIB,
    add_common_args,
    bench_settings,
    build_recording,
    deployment_options,
    make_parser,
    ray_cpus,
    table,
    workspace,
    write_json,
)
from deployments.core.schemas import SAMPLE_RATE
from tests.synth import write_wav


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=60, help="recording length")
    parser.add_argument("--segment-s", type=float, default=30, help="job segment length")
    parser.add_argument("--no-diarize", action="store_true", help="transcription only")
    add_common_args(parser)
    args = parser.parse_args()

    with workspace() as tmp:
        rec = build_recording(args.minutes)
        duration = len(rec.audio) / SAMPLE_RATE
        path = write_wav(rec.audio, tmp / "long.wav")
        del rec
        settings = bench_settings(tmp / "data", args)
        with Cluster(settings, args.port, ray_cpus(args)) as cluster:
            cluster.deploy(**deployment_options(args))
            with RssSampler(prefixes=("ray::ServeReplica:speech:JobManager",)) as sampler:
                run = cluster.run_job(
                    path,
                    diarize=not args.no_diarize,
                    segment_s=args.segment_s,
                    language=args.language,
                )
    segments = run.result.get("segments", [])
    manager = next(iter(sampler.peaks.values()), None)
    row = [
        run.status,
        duration / 60,
        run.wall_s,
        duration / run.wall_s,
        run.snapshot.get("segments_total"),
        sum(len(s["words"]) for s in segments),
        len(run.result.get("speakers", [])),
        manager and manager.start_rss / MIB,
        manager and manager.peak_rss / MIB,
        manager and manager.peak_uss / MIB,
        duration * SAMPLE_RATE * 4 / MIB,
    ]
    headers = [
        "status",
        "audio min",
        "wall s",
        "RT factor",
        "segments",
        "words",
        "speakers",
        "manager start RSS MiB",
        "manager peak RSS MiB",
        "manager peak USS MiB",
        "audio MiB (f32)",
    ]
    write_json(args.json, args, [table("Long job end to end", headers, [row])])
    return 0 if run.status == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
