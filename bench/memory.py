"""Memory vs recording length: peak RSS of the job manager and of every replica process.

    .venv/bin/python bench/memory.py --minutes 5 60 239 [--no-diarize] [--json PATH]

For each length a fresh private cluster is started (so peaks of one size do not carry
into the next), real speech (bench.common.real_speech, repeated past ~1 h) is sent as
Ogg/Opus, as long recordings usually are, to POST /v1/jobs, and while it runs the
`ray::ServeReplica:...` processes (the job manager is one) of this cluster are sampled with
psutil every 0.5 s. RSS includes object-store pages a process touched (shared memory that
Ray reclaims); USS is the process's private memory, which still counts object-store pages
only it touched; anon is its heap and stacks alone (bench.cluster.RssSampler). The manager
streams audio from disk and stitches segment by segment, so its peak should not grow with
the recording; compare with the float32 size of the audio, shown per size. The last column
is each anon peak over the same process's at the first length. (`max_job_duration_s` is
4 h, hence 239 min.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster, RssSampler
from bench.common import (
    MIB,
    add_common_args,
    bench_settings,
    build_recording,
    default_deploy,
    log,
    make_parser,
    ray_cpus,
    real_speech,
    table,
    workspace,
    write_json,
)
from deployments.core.schemas import SAMPLE_RATE
from tests.media import encode_audio
from tests.synth import write_wav


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--minutes", type=float, nargs="+", default=[5.0], help="recording lengths (minutes)"
    )
    parser.add_argument("--no-diarize", action="store_true", help="transcription only")
    parser.add_argument("--interval-s", type=float, default=0.5, help="sampling period")
    parser.add_argument(
        "--synthetic", action="store_true", help="espeak meetings (WAV) instead of real speech"
    )
    add_common_args(parser)
    return parser.parse_args()


def measure(minutes: float, tmp: Path, args: argparse.Namespace) -> list[list]:
    """Rows (one per sampled process) for one recording length, on a fresh cluster."""
    if args.synthetic:
        rec = build_recording(minutes)
        path = write_wav(rec.audio, tmp / f"meeting-{minutes:g}.wav")
    else:
        rec = real_speech(minutes)
        path = encode_audio(rec.audio, tmp / f"speech-{minutes:g}.ogg", "libopus")
    duration = len(rec.audio) / SAMPLE_RATE
    del rec
    settings = bench_settings(tmp / f"data-{minutes:g}", args)
    with Cluster(settings, args.port, ray_cpus(args)) as cluster:
        cluster.deploy(**default_deploy())
        with RssSampler(interval_s=args.interval_s) as sampler:
            run = cluster.run_job(path, diarize=not args.no_diarize, language=args.language)
    if run.status != "completed":
        log(f"job {run.status}: {run.snapshot.get('error')}")
    log(f"{minutes:g} min: {run.status} in {run.wall_s:.0f} s")
    audio_mib = duration * SAMPLE_RATE * 4 / MIB
    return [
        [
            f"{minutes:g}",
            audio_mib,
            peak.title,
            pid,
            peak.start_rss / MIB,
            peak.peak_rss / MIB,
            peak.peak_uss / MIB,
            peak.peak_anon / MIB,
            run.status,
        ]
        for pid, peak in sorted(sampler.peaks.items(), key=lambda kv: (kv[1].title, kv[0]))
    ]


def main() -> int:
    args = parse_args()
    rows: list[list] = []
    with workspace() as tmp:
        for minutes in args.minutes:
            rows += measure(minutes, tmp, args)
    first: dict[str, float] = {}
    for row in rows:  # peak anonymous memory over the first length's, per process kind
        first.setdefault(row[2], row[7])
        row.append(row[7] / first[row[2]])
    headers = [
        "audio min",
        "audio MiB (f32)",
        "process",
        "pid",
        "start RSS MiB",
        "peak RSS MiB",
        "peak USS MiB",
        "peak anon MiB",
        "job",
        "anon vs first length",
    ]
    title = (
        f"Peak memory per process (diarize={not args.no_diarize}, "
        f"sampled every {args.interval_s:g} s)"
    )
    write_json(args.json, args, [table(title, headers, rows)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
