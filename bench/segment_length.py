"""Diarization speed and accuracy against job segment length (issue 23 item 3).

    .venv/bin/python bench/segment_length.py                 # 30, 60, 120 s and whole files
    .venv/bin/python bench/segment_length.py --lengths 30 120 --runs 3 --only voices

The job's diarization path in process (bench/inprocess.py): each recording is cut at
silences into segments of about the given length, each segment is diarized by the bundled
diarizer as a replica does, and the job's stitching links the speakers. "whole" is one call
for the whole recording. Per length and set: DER (pyannote.metrics, collar 0, overlap scored),
speakers found/true, and x realtime of the diarization (median of --runs runs, with the
spread), with --threads torch threads (the default config's Diarizer replica has 1).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import sets
from bench.common import add_common_args, bench_settings, log, make_parser, table, write_json
from bench.inprocess import InProcess
from tests.realsets import DerTally

WHOLE = 1e9  # a segment length no recording reaches: one call per file


def measure(engine: InProcess, cases, runs: int) -> list:
    import soundfile

    audio_s = sum(soundfile.info(str(c.path)).duration for c in cases)
    speeds, tally = [], DerTally()
    for run in range(runs):
        wall_s = 0.0
        for case in cases:
            turns, seconds = engine.turns(case, None)
            wall_s += seconds
            if run == 0:  # the diarizer is deterministic on CPU: one run scores it
                tally.add(case, turns)
        speeds.append(audio_s / wall_s)
    parts = tally.parts()
    counts = " ".join(f"{f}/{t}" for f, t in tally.counts) if len(cases) <= 10 else ""
    spread = max(speeds) - min(speeds)
    return [
        tally.exact_counts(),
        counts,
        parts["der"],
        parts["confusion"],
        statistics.median(speeds),
        spread,
    ]


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--lengths", nargs="+", default=["30", "60", "120", "whole"], help="seconds or 'whole'"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="run only the sets whose name contains this")
    parser.add_argument("--tune", action="store_true", help="only the tune sets")
    parser.add_argument("--long", action="store_true", help="add 60 min of held-out voices")
    add_common_args(parser, threads=1)
    args = parser.parse_args()
    headers = ["set", "segment s", "exact count", "found/true", "DER", "confusion"]
    headers += ["x realtime (median)", "spread"]
    rows = []
    from bench.common import workspace

    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        all_sets = {name: cases for name, cases in sets(args, tmp).items() if "espeak" not in name}
        for length in args.lengths:
            segment_s = WHOLE if length == "whole" else float(length)
            engine = InProcess(settings, args.threads, segment_s=segment_s)
            for name, cases in all_sets.items():
                log(f"{name}: segments of {length} s, {args.runs} runs")
                rows.append([name, length, *measure(engine, cases, args.runs)])
    title = f"Diarization against segment length (in process, {args.threads} thread(s))"
    write_json(args.json, args, [table(title, headers, rows, digits=3)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
