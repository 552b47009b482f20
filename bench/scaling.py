"""Scaling: transcriber replicas and job segment length, on one recording.

    .venv/bin/python bench/scaling.py --minutes 20 --replicas 1 2 --segment-s 15 30 60 120

For each replica count the app is redeployed with a fixed number of transcriber replicas
(autoscaling off); for each segment length (the job form field `segment_s`, 10..120) the
same synthetic meeting is submitted to POST /v1/jobs and followed until completed. Prints
RT factors (audio seconds / wall seconds) and each one over the default configuration's
(1 replica, 30 s segments). Replicas ask Ray for 1 CPU each and use that many threads, so
on a 2-core machine 2 replicas compete with the diarizer and the job manager for cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    add_common_args,
    bench_settings,
    build_recording,
    deployment_options,
    log,
    make_parser,
    ratio,
    ray_cpus,
    table,
    workspace,
    write_json,
)
from deployments.core.schemas import SAMPLE_RATE
from tests.synth import write_wav

DEFAULT = (1, 30.0)  # the shipped configuration's replica count and segment length


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=3.0, help="recording length")
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[1, 2], help="transcriber replica counts"
    )
    parser.add_argument(
        "--segment-s",
        type=float,
        nargs="+",
        default=[15.0, 30.0, 60.0, 120.0],
        help="job segment lengths in seconds (10..120)",
    )
    parser.add_argument("--diarize", action="store_true", help="jobs also diarize")
    add_common_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    rows: list[list] = []
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        rec = build_recording(args.minutes)
        duration = len(rec.audio) / SAMPLE_RATE
        path = write_wav(rec.audio, tmp / "meeting.wav")
        log(f"recording: {duration:.0f} s, {len(rec.texts)} turns")
        # One logical CPU per transcriber replica plus one for the diarizer.
        with Cluster(settings, args.port, ray_cpus(args, max(args.replicas) + 1)) as cluster:
            for replicas in args.replicas:
                log(f"deploying {replicas} transcriber replica(s)")
                cluster.deploy(**deployment_options(args, replicas))
                cluster.warm_up(tmp)
                for segment_s in args.segment_s:
                    run = cluster.run_job(
                        path, diarize=args.diarize, language=args.language, segment_s=segment_s
                    )
                    if run.status != "completed":
                        log(f"job {run.status}: {run.snapshot.get('error')}")
                    rt = duration / run.wall_s if run.status == "completed" else None
                    total = run.snapshot.get("segments_total")
                    rows.append([replicas, f"{segment_s:g}", total, run.wall_s, rt])
    default = [r[4] for r in rows if (r[0], float(r[1])) == DEFAULT]
    base = default[0] if default else rows[0][4]
    rows = [[*r, ratio(r[4], base)] for r in rows]
    headers = ["replicas", "segment s", "segments", "wall s", "RT factor", "÷ 1 replica, 30 s"]
    title = (
        f"Scaling ({settings.whisper_model}, {duration / 60:.1f} min recording, "
        f"diarize={args.diarize})"
    )
    write_json(args.json, args, [table(title, headers, rows)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
