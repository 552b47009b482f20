"""Stitch a finished job from its checkpoints into Redis, one segment at a time.

The job manager's memory must not grow with the recording. Pass 1 reads only the speaker
tracks (about 1 KiB each) and links speakers; pass 2 reads one segment's transcription at a
time, attributes its words (jobs.stitching.stitch.Stitcher, as `stitch` does) and appends the
sentence segments it finishes to the result, in chunks. Nothing holds every word at once,
and the result appears under its key in one step (a rename) only when complete.
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

import numpy as np

from deployments.core.schemas import Diarization, DiarizeOptions, Transcription
from deployments.core.splitter import SegmentPlan
from jobs.stitching.speaker_linking import TrackSet
from jobs.stitching.stitch import Speakers, StitchedSegment, Stitcher, link_speakers
from jobs.stitching.voiceprints import KnownSpeaker

CHUNK_CHARS = 256 * 1024  # append to Redis in pieces about this size


class ResultSink(Protocol):
    """Where results go (a JobStore); each write is fenced by the runner's `lease`."""

    async def checkpoint(self, job_id: str, field: str) -> str | None: ...
    async def result_reset(self, job_id: str, lease: str | None = None) -> None: ...
    async def result_append(
        self, job_id: str, chunk: str, offset: int, lease: str | None = None
    ) -> None: ...
    async def result_commit(self, job_id: str, size: int, lease: str | None = None) -> None: ...
    async def save_voices(
        self, job_id: str, voices: dict[str, str], lease: str | None = None
    ) -> None: ...


class _Writer:
    def __init__(self, store: ResultSink, job_id: str, lease: str | None) -> None:
        self.store, self.job_id, self.lease = store, job_id, lease
        self._buffer: list[str] = []
        self._size = 0
        self.written = 0  # bytes appended so far: where the next chunk starts

    async def write(self, text: str) -> None:
        self._buffer.append(text)
        self._size += len(text)
        if self._size >= CHUNK_CHARS:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            chunk = "".join(self._buffer)
            await self.store.result_append(self.job_id, chunk, self.written, self.lease)
            self.written += len(chunk.encode())
            self._buffer, self._size = [], 0

    async def commit(self) -> None:
        await self.flush()
        await self.store.result_commit(self.job_id, self.written, self.lease)


async def _load(store: ResultSink, job_id: str, field: str) -> str:
    raw = await store.checkpoint(job_id, field)
    if raw is None:  # the runner saw it saved; only an expired or deleted job lacks it
        raise LookupError(f"checkpoint {field} of job {job_id} is missing")
    return raw


async def _link(
    store: ResultSink,
    job_id: str,
    plans: list[SegmentPlan],
    diarize: DiarizeOptions | None,
    sample_rate: int,
    known: list[KnownSpeaker] | None,
) -> Speakers:
    """The recording's speakers from the segments' diarization checkpoints."""
    tracks = TrackSet()
    for plan in plans:
        if diarize is None:
            tracks.add(None)
            continue
        raw = await _load(store, job_id, f"{plan.key}:d")
        tracks.add(Diarization.model_validate_json(raw))  # keeps only the tracks
    return await asyncio.to_thread(link_speakers, plans, tracks, diarize, sample_rate, None, known)


async def stitch_to_store(
    store: ResultSink,
    job_id: str,
    plans: list[SegmentPlan],
    duration: float,
    diarize: DiarizeOptions | None,
    sample_rate: int = 16000,
    known: list[KnownSpeaker] | None = None,
    task: str = "transcribe",
    speakers: Speakers | None = None,
    lease: str | None = None,
) -> None:
    """Write the stitched JobResult of `plans` (this run's, in time order) under the job.

    Args:
        store: where checkpoints are read and the result is written (a JobStore).
        job_id: the job.
        plans: every segment of this run, sorted by start.
        duration: the recording's length in seconds.
        diarize: speaker-count options, or None for a transcription-only job.
        sample_rate: the rate plan offsets are counted in.
        known: enrolled voices to name speakers after.
        task: "translate" when the transcriptions are English translations.
        speakers: the speakers of `plans` already linked with `known` (the language pass
            links them), or None to link them here.
        lease: the runner's lease; every write checks it (LeaseLost when another runner
            owns the job).
    """
    if speakers is None or diarize is None:
        speakers = await _link(store, job_id, plans, diarize, sample_rate, known)
    # Each speaker's voice, so a caller can enroll a speaker of this job by its label.
    await store.save_voices(
        job_id,
        {
            name: json.dumps(
                {"embedding": np.round(v.embedding, 5).tolist(), "speech_s": round(v.speech_s, 3)}
            )
            for name, v in speakers.voices.items()
        },
        lease,
    )

    await store.result_reset(job_id, lease)  # a partial result of an interrupted run
    out = _Writer(store, job_id, lease)
    await out.write('{"segments":[')
    stitcher, first = Stitcher(speakers, sample_rate, task), True

    async def emit(segments: list[StitchedSegment]) -> None:
        nonlocal first
        for segment in segments:
            await out.write(("" if first else ",") + segment.model_dump_json())
            first = False

    for plan in plans:
        raw = await _load(store, job_id, f"{plan.key}:t")
        await emit(stitcher.add(plan, Transcription.model_validate_json(raw)))
    await emit(stitcher.close())
    rest = stitcher.result(duration, []).model_dump(mode="json", exclude={"segments"})
    await out.write("]," + json.dumps(rest, separators=(",", ":"))[1:])
    await out.commit()
