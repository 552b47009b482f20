"""A recording transcribed window by window, its text given back as each window finishes:
what `stream=true` on the OpenAI routes sends.

The recording is decoded and cut at silences while it streams in (the job path's splitter,
so memory is bounded by the windows in flight, not the file), and its windows go to the
same Transcriber replicas jobs use, a few at a time. The first window is sent alone, a
moment before the next, so it is not batched with them: its text comes back first. Words
are regrouped into sentences by the job path's stitcher, so the deltas joined are exactly
the final text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from deployments.core.audio import Source, iter_audio_blocks
from deployments.core.schemas import SAMPLE_RATE, Transcription
from deployments.core.splitter import NEAR_TARGET_S, SegmentPlan, split_stream
from jobs.stitching.speaker_linking import TrackSet
from jobs.stitching.stitch import JobResult, StitchedSegment, Stitcher, link_speakers

log = logging.getLogger(__name__)

Transcribe = Callable[[np.ndarray], Awaitable[Transcription]]

WINDOW_S = 30.0  # Whisper's own window: a longer one costs a second decode pass
MIN_WINDOW_S = 10.0
AHEAD = 2  # windows in flight: one per replica of a 2-core default deployment
FIRST_ALONE_S = 0.2  # longer than the Transcriber's batch wait (0.05 s)
ATTEMPTS = 3


class StreamFailed(Exception):
    """A window could not be transcribed; `code` and `message` are fit for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Piece:
    """A finished sentence (`segment`, its id its index) or, last, the whole `result`."""

    segment: StitchedSegment | None = None
    index: int = 0
    result: JobResult | None = None


class WindowStream:
    """Open with `start()` (decodes the first window, so bad audio fails before any answer
    is sent), then iterate `pieces()`; `close()` in every case."""

    def __init__(
        self,
        source: Source,
        transcribe: Transcribe,
        task: str = "transcribe",
        max_s: float | None = None,
        window_s: float = WINDOW_S,
        ahead: int = AHEAD,
        owns_source: bool = False,
    ) -> None:
        self._source = source if owns_source else None  # closed with the stream
        blocks = iter_audio_blocks(source, max_s=max_s, limit_name="max_job_duration_s")
        self._windows = split_stream(
            blocks,
            target_s=window_s,
            min_s=min(MIN_WINDOW_S, window_s),
            max_s=window_s,
            near_target_s=NEAR_TARGET_S,
        )
        self._transcribe, self._ahead = transcribe, max(1, ahead)
        self._stitcher = Stitcher(link_speakers([], TrackSet()), SAMPLE_RATE, task)
        self._first: tuple[SegmentPlan, np.ndarray] | None = None
        self._pending: deque[tuple[SegmentPlan, asyncio.Task]] = deque()
        self._exhausted = False

    async def start(self) -> None:
        """Decode the first window; AudioDecodeError here means the input is not audio."""
        self._first = await self._next_window()

    async def pieces(self) -> AsyncIterator[Piece]:
        segments: list[StitchedSegment] = []
        end = 0
        while True:
            await self._fill()
            if not self._pending:
                break
            plan, task = self._pending[0]
            transcription = await task
            self._pending.popleft()
            end = max(end, plan.end)
            for segment in self._stitcher.add(plan, transcription):
                segments.append(segment)
                yield Piece(segment=segment, index=len(segments) - 1)
        for segment in self._stitcher.close():
            segments.append(segment)
            yield Piece(segment=segment, index=len(segments) - 1)
        yield Piece(result=self._stitcher.result(end / SAMPLE_RATE, segments))

    async def close(self) -> None:
        for _, task in self._pending:
            task.cancel()
        await asyncio.gather(*(t for _, t in self._pending), return_exceptions=True)
        self._pending.clear()
        # A cancelled read may still run in its thread (ValueError): it ends on its own.
        with contextlib.suppress(ValueError):
            await asyncio.to_thread(self._windows.close)  # ends FFmpeg if still decoding
        if self._source is not None and hasattr(self._source, "close"):
            self._source.close()

    async def _next_window(self) -> tuple[SegmentPlan, np.ndarray] | None:
        if self._exhausted:
            return None
        item = await asyncio.to_thread(next, self._windows, None)
        self._exhausted = item is None
        return item

    async def _fill(self) -> None:
        while len(self._pending) < self._ahead:
            if self._first is not None:
                item, self._first = self._first, None
            else:
                item = await self._next_window()
            if item is None:
                return
            plan, audio = item
            self._pending.append((plan, asyncio.create_task(self._call(plan, audio))))
            if plan.index == 0:
                await asyncio.sleep(FIRST_ALONE_S)

    async def _call(self, plan: SegmentPlan, audio: np.ndarray) -> Transcription:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._transcribe(audio)
            except StreamFailed:
                raise
            except Exception:
                # Replica errors carry actor ids and device details: the log gets them.
                log.warning("stream window %d try %d failed", plan.index, attempt, exc_info=True)
                if attempt < ATTEMPTS:
                    await asyncio.sleep(attempt)
        raise StreamFailed(
            "window_failed",
            f"audio at {plan.start / SAMPLE_RATE:.1f}-{plan.end / SAMPLE_RATE:.1f} s could "
            f"not be transcribed after {ATTEMPTS} attempts",
        )
