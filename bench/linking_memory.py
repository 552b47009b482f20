"""Memory and time of cross-segment speaker linking vs recording length, up to 4 hours.

    .venv/bin/python bench/linking_memory.py --hours 0.25 1 2 4 [--json PATH]

The job manager links the speech pieces of all segments (jobs/speaker_linking.cluster_tracks)
once per diarized job. Real tracks come from diarizing a 10 min meeting of four real voices
(tests/realvoices.py) with the bundled diarizer; a longer recording is that meeting's
segments repeated, each piece's embedding jittered a little so no two are identical. Peak
Python allocations during linking are measured with tracemalloc; the quadratic step is capped
at ClusterParams.max_items pieces, so memory should grow linearly beyond that.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MIB, log, make_parser, table, traced, write_json


def segment_tracks(minutes: float = 10.0) -> list[list]:
    from deployments.core.splitter import split_stream
    from deployments.models.diarization.pipeline import SpeakerDiarizer
    from deployments.models.model_store import resolve_bundled_diarization
    from serve_app.settings import get_settings
    from tests.realvoices import TUNE_VOICES, cached_meeting

    seg, emb = resolve_bundled_diarization(get_settings().resolved_models_dir)
    diarizer = SpeakerDiarizer(seg, emb, num_threads=2)
    rec = cached_meeting(TUNE_VOICES, minutes, seed=1, overlap_prob=0.05)
    return [diarizer(audio).tracks for _, audio in split_stream([rec.audio], target_s=30.0)]


def repeated(base: list[list], segments: int, rng: np.random.Generator) -> list[list]:
    out = []
    for i in range(segments):
        tracks = base[i % len(base)]
        out.append(
            [
                t.model_copy(
                    update={
                        "embedding": (np.asarray(t.embedding) + rng.normal(0, 0.01, 192)).tolist()
                    }
                )
                for t in tracks
            ]
        )
    return out


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--hours", type=float, nargs="+", default=[0.25, 1, 2, 4])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from jobs.stitching.speaker_linking import cluster_tracks

    log("diarizing 10 min of real voices for realistic tracks")
    base = segment_tracks()
    seconds_per_segment = 600 / len(base)
    rng = np.random.default_rng(0)
    rows = []
    for hours in args.hours:
        segments = repeated(base, round(hours * 3600 / seconds_per_segment), rng)
        pieces = sum(len(s) for s in segments)
        labels, peak, elapsed = traced(partial(cluster_tracks, segments))
        found = len({x for seg in labels for x in seg})
        rows.append(
            [hours, len(segments), pieces, peak / MIB, peak / pieces / 1024, elapsed, found]
        )
        log(f"{hours} h: {pieces} pieces, peak {peak / MIB:.1f} MiB, {elapsed:.1f} s")
    headers = ["hours", "segments", "pieces", "peak MiB", "KiB per piece", "seconds", "speakers"]
    write_json(args.json, args, [table("Cross-segment linking (4 real voices)", headers, rows)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
