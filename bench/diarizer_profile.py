"""Where a diarizer call's time goes, per job-sized segment (issue 23 item 1).

    .venv/bin/python bench/diarizer_profile.py [--minutes 4] [--segment-s 30] [--runs 3]

In process, on real voices (a meeting of four Debian prompt voices, tests/realvoices.py), the
recording is cut into `--segment-s` segments and each is diarized by the bundled diarizer
as a replica does (analyse, then finish). The time of each stage is summed over the
segments: the two models' forward passes, the fbank features, and everything else (the
CPU-side work: sliding-window bookkeeping, tracks and pieces, clustering, conversions).
Printed: seconds per segment for each stage, median of `--runs` runs with the spread, and
the x-realtime of the whole call. `--profile` adds the top functions by own time.

`--method changes` times what a transcription-only job asks for instead (`speaker_changes`:
the segmentation model's voice changes, no embeddings or clustering).
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, make_parser, table, write_json

VOICES = ["en_allison", "it_carlo", "ru", "fr_june"]


class _Timer:
    """Wraps callables so each call's time is added to one named stage."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - t0

        return timed


def _diarizer(threads: int):
    from deployments.models.diarization.pipeline import SpeakerDiarizer
    from deployments.models.model_store import resolve_bundled_diarization
    from serve_app.settings import Settings

    seg, emb = resolve_bundled_diarization(Settings().resolved_models_dir)
    return SpeakerDiarizer(seg, emb, num_threads=threads)


def run(diarizer, segments, batch: int, method: str = "diarize") -> float:
    """Diarize the segments `batch` per call, as a replica with that batch size does (or,
    method "changes", find their voice changes one at a time)."""
    from deployments.core.schemas import DiarizeOptions

    t0 = time.perf_counter()
    if method == "changes":
        for segment in segments:
            diarizer.speaker_changes(segment)
        return time.perf_counter() - t0
    for b in range(0, len(segments), batch):
        for analysis in diarizer.analyse_many(segments[b : b + batch]):
            diarizer.finish(analysis, DiarizeOptions())
    return time.perf_counter() - t0


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--segment-s", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="segments per diarizer call")
    parser.add_argument("--method", choices=["diarize", "changes"], default="diarize")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.method == "changes" and args.batch != 1:
        parser.error("--method changes takes one segment per call: drop --batch")

    from tests.realvoices import cached_meeting

    rec = cached_meeting(VOICES, args.minutes, seed=5)
    step = int(args.segment_s * 16000)
    segments = [rec.audio[i : i + step] for i in range(0, len(rec.audio), step)]
    segments = [s for s in segments if len(s) >= 16000]
    audio_s = sum(len(s) for s in segments) / 16000
    log(f"{len(segments)} segments of {args.segment_s:g} s, {audio_s:.0f} s of real speech")

    diarizer = _diarizer(args.threads)
    timer = _Timer()
    seg_model = diarizer.segmenter.model
    seg_model.forward = timer.wrap("segmentation forward", seg_model.forward)
    emb = diarizer.embedder
    emb.model.forward = timer.wrap("CAM++ forward", emb.model.forward)
    emb.fbank = timer.wrap("fbank features", emb.fbank)

    totals, stages = [], defaultdict(list)
    run(diarizer, segments[:2], args.batch, args.method)  # warm up
    for _ in range(args.runs):
        timer.spent.clear()
        if args.profile and not totals:
            prof = cProfile.Profile()
            prof.enable()
        total = run(diarizer, segments, args.batch, args.method)
        if args.profile and not totals:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        totals.append(total)
        models = sum(timer.spent.values())
        for name, spent in timer.spent.items():
            stages[name].append(spent)
        stages["everything else (CPU-side)"].append(total - models)
    n = len(segments)
    rows = [
        [name, statistics.median(v) / n, (max(v) - min(v)) / n, statistics.median(v) / max(totals)]
        for name, v in stages.items()
    ]
    rows.append(["whole call", statistics.median(totals) / n, (max(totals) - min(totals)) / n, 1])
    rows.append(["x realtime", audio_s / statistics.median(totals), "", ""])
    tables = [
        table(
            f"diarizer {args.method}, {args.segment_s:g} s segments, {args.batch} per call, "
            f"{args.threads} threads (median of {args.runs})",
            ["stage", "s per segment", "spread", "share"],
            rows,
            digits=3,
        )
    ]
    write_json(args.json, args, tables)


if __name__ == "__main__":
    main()
