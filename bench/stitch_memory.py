"""Memory of stitching a finished job vs recording length: in memory vs streamed.

    .venv/bin/python bench/stitch_memory.py --hours 0.25 1 4 [--json PATH]

A job's checkpoints (per 30 s segment: a transcription of ~75 words with timestamps and,
diarized, 3 speaker tracks with 192-d embeddings of 4 voices) are made up front, as JSON, as
Redis holds them. Then, with tracemalloc (peak Python allocations, the checkpoints
themselves excluded):
- "in memory": what the job manager did before: parse every checkpoint, `stitch` them all
  into one JobResult, serialise it;
- "streamed": `jobs.stitching.result_writer.stitch_to_store`, which links speakers from the tracks,
  then reads one segment's words at a time and appends finished sentences to the result
  (here a sink that counts the bytes, as Redis would receive them).
"""

from __future__ import annotations

import asyncio
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MIB, log, make_parser, table, traced, write_json

SEG_S, WORDS, DIM, VOICES = 30.0, 75, 192, 4


def checkpoints(hours: float, rng: np.random.Generator) -> tuple[list, dict[str, str]]:
    from deployments.core.schemas import (
        Diarization,
        SpeakerTrack,
        SpeakerTurn,
        Transcription,
        TranscriptSegment,
        Word,
    )
    from deployments.core.splitter import SegmentPlan

    voices = rng.normal(size=(VOICES, DIM))
    plans, ckpt = [], {}
    for i in range(round(hours * 3600 / SEG_S)):
        plan = SegmentPlan(
            index=i, start=int(i * SEG_S * 16000), end=int((i + 1) * SEG_S * 16000), forced=False
        )
        plans.append(plan)
        step = SEG_S / WORDS
        words = [
            Word(start=k * step, end=k * step + 0.3, text=f" word{k}", probability=0.9)
            for k in range(WORDS)
        ]
        segs = [
            TranscriptSegment(
                start=words[j].start,
                end=words[j + 14].end,
                text="".join(w.text for w in words[j : j + 15]),
                words=words[j : j + 15],
            )
            for j in range(0, WORDS, 15)
        ]
        ckpt[f"{plan.key}:t"] = Transcription(
            language="en", language_probability=0.99, duration=SEG_S, segments=segs
        ).model_dump_json()
        who = rng.choice(VOICES, 3, replace=False)
        names = [f"SPEAKER_{j:02d}" for j in range(3)]
        tracks = []
        for j, v in enumerate(who):
            e = voices[v] + rng.normal(0, 0.05, DIM)
            span = [(j * 10.0, j * 10.0 + 9.5)]
            tracks.append(
                SpeakerTrack(
                    id=j,
                    speaker=names[j],
                    embedding=(e / np.linalg.norm(e)).round(5).tolist(),
                    weight=9.5,
                    cannot_link=[x for x in range(3) if x != j],
                    turns=span,
                    exclusive_turns=span,
                )
            )
        turns = [
            SpeakerTurn(start=t.turns[0][0], end=t.turns[0][1], speaker=t.speaker) for t in tracks
        ]
        ckpt[f"{plan.key}:d"] = Diarization(
            duration=SEG_S,
            turns=turns,
            exclusive_turns=turns,
            speakers=names,
            embeddings={t.speaker: t.embedding for t in tracks},
            tracks=tracks,
        ).model_dump_json()
    return plans, ckpt


class _Sink:
    def __init__(self, ckpt: dict[str, str]) -> None:
        self.ckpt, self.bytes = ckpt, 0

    async def checkpoint(self, job_id, field):
        return self.ckpt.get(field)

    async def result_reset(self, job_id, lease=None):
        self.bytes = 0

    async def result_append(self, job_id, chunk, offset, lease=None):
        self.bytes += len(chunk)

    async def result_commit(self, job_id, size, lease=None):
        pass

    async def save_voices(self, job_id, voices, lease=None):
        pass


def in_memory(plans, ckpt, diarize) -> int:
    from deployments.core.schemas import Diarization, DiarizeOptions, Transcription
    from jobs.stitching.stitch import SegmentOutcome, stitch

    outcomes = [
        SegmentOutcome(
            plan=p,
            transcription=Transcription.model_validate_json(ckpt[f"{p.key}:t"]),
            diarization=Diarization.model_validate_json(ckpt[f"{p.key}:d"]) if diarize else None,
        )
        for p in plans
    ]
    result = stitch(outcomes, plans[-1].end / 16000, DiarizeOptions() if diarize else None)
    return len(result.model_dump_json())


def streamed(plans, ckpt, diarize) -> int:
    from deployments.core.schemas import DiarizeOptions
    from jobs.stitching.result_writer import stitch_to_store

    sink = _Sink(ckpt)
    options = DiarizeOptions() if diarize else None
    asyncio.run(stitch_to_store(sink, "job", plans, plans[-1].end / 16000, options))
    return sink.bytes


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--hours", type=float, nargs="+", default=[0.25, 1, 4])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for hours in args.hours:
        plans, ckpt = checkpoints(hours, np.random.default_rng(0))
        for diarize in (False, True):
            for name, fn in (("in memory", in_memory), ("streamed", streamed)):
                size, peak, elapsed = traced(partial(fn, plans, ckpt, diarize))
                rows.append([hours, len(plans), diarize, name, peak / MIB, size / MIB, elapsed])
                log(f"{hours} h diarize={diarize} {name}: peak {peak / MIB:.1f} MiB")
    headers = ["hours", "segments", "diarized", "stitching", "peak MiB", "result MiB", "seconds"]
    write_json(args.json, args, [table("Stitching memory (tracemalloc peak)", headers, rows)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
