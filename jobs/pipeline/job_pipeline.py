"""Fan a job's segments out to the model replicas, with retries, timeouts and checkpoints.

Splitting streams: the next segment is decoded only when the in-flight window has room,
so memory is bounded by the window, not by the recording's length.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ray
from pydantic import BaseModel, ValidationError

from deployments.core.audio import iter_audio_blocks
from deployments.core.schemas import (
    Diarization,
    DiarizeOptions,
    InputRejected,
    SpeakerChanges,
    Transcription,
)
from deployments.core.splitter import NEAR_TARGET_S, SegmentPlan, split_stream
from deployments.replicas.transcriber import deployment_name
from jobs.integrations import metrics
from jobs.pipeline.language_pass import settle_languages
from jobs.state.job_store import JobStore, LeaseLost
from jobs.state.records import JobRecord, JobStatus
from jobs.stitching.result_writer import stitch_to_store

if TYPE_CHECKING:
    from jobs.config import JobsConfig

log = logging.getLogger(__name__)

PARTS: dict[str, tuple[str, str, type[BaseModel]]] = {
    # part -> (deployment, method, result type)
    "t": ("Transcriber", "transcribe", Transcription),
    "d": ("Diarizer", "diarize", Diarization),
    "c": ("Diarizer", "changes", SpeakerChanges),  # voice changes only (language pass)
}


_ROLE = {"t": "transcription", "d": "diarization", "c": "diarization"}


class SegmentFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class JobCancelled(Exception):
    pass


class JobPipeline:
    def __init__(self, store: JobStore, config: JobsConfig) -> None:
        self.store, self.config = store, config
        self.inflight = asyncio.Semaphore(config.max_inflight_segments)
        self._handles: dict[str, object] = {}

    def use_handles(self, handles: dict[str, object]) -> None:
        self._handles.update(handles)

    def handle(self, deployment: str):
        if deployment not in self._handles:
            from ray import serve

            self._handles[deployment] = serve.get_deployment_handle(
                deployment, app_name=self.config.app_name
            )
        return self._handles[deployment]

    async def run(self, record: JobRecord, audio_path: Path, lease: str | None = None) -> None:
        """Transcribe (and diarize) every segment, then write the stitched result."""
        parts = ["t", "d"] if record.options.diarize else ["t"]
        done_keys = await self.store.checkpoint_keys(record.id)
        expected = max(1, math.ceil((record.duration or 0) / record.options.segment_s))
        progress = _Progress(record, self.store, parts, expected, lease)
        await progress.set_status(JobStatus.SPLITTING, "splitting audio at silences")

        # The length limit, measured while decoding: containers need not declare it.
        blocks = iter_audio_blocks(
            audio_path, max_s=self.config.max_job_duration_s, limit_name="max_job_duration_s"
        )
        segments = split_stream(
            blocks,
            target_s=record.options.segment_s,
            min_s=min(self.config.split_min_s, record.options.segment_s),
            max_s=max(self.config.split_max_s, record.options.segment_s),
            near_target_s=None if record.options.diarize else NEAR_TARGET_S,
        )
        plans: list[SegmentPlan] = []
        tasks: list[asyncio.Task] = []
        try:
            while progress.failure is None:
                await self.inflight.acquire()  # backpressure: decode only when there is room
                if progress.failure is not None:  # a segment gave up: stop decoding at once
                    self.inflight.release()
                    break
                try:
                    item = await asyncio.to_thread(next, segments, None)
                except BaseException:
                    self.inflight.release()
                    raise
                if item is None:
                    self.inflight.release()
                    break
                plan, audio = item
                plans.append(plan)
                todo = [p for p in parts if f"{plan.key}:{p}" not in done_keys]
                progress.planned(plan.index, set(parts) - set(todo))
                if not todo:
                    self.inflight.release()
                    continue
                ref = ray.put(audio)
                tasks.append(asyncio.create_task(self._segment(record, plan, ref, todo, progress)))
                await progress.report()
            if progress.failure is None:
                progress.split_finished()
                await progress.report()
                await _first_failure(tasks)
            if progress.failure is not None:
                raise progress.failure
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        speakers = None
        if "t" in parts and record.options.language is None:
            # Inside the same in-flight budget as segments (shared by every running job).
            async def transcribe(plan: SegmentPlan, ref, options) -> None:
                async with self.inflight:
                    await self._call(record, plan, "t", ref, progress, options)

            async def changes(plan: SegmentPlan, ref) -> None:
                async with self.inflight:
                    await self._call(record, plan, "c", ref, progress, DiarizeOptions())

            async def report(stage: str) -> None:
                await progress.set_status(JobStatus.TRANSCRIBING, stage)

            diarized = "d" in parts
            speakers = await settle_languages(
                self.store,
                record,
                plans,
                audio_path,
                diarized,
                transcribe,
                report,
                changes,
                limit=self.config.max_inflight_segments,
                lease=lease,
            )
        await progress.set_status(JobStatus.STITCHING, "stitching segments")
        await self._stitch(record, plans, parts, speakers, lease)

    async def _segment(
        self, record: JobRecord, plan: SegmentPlan, ref, todo: list[str], progress: _Progress
    ) -> None:
        metrics.inflight_add(1)
        calls = [
            asyncio.create_task(self._call(record, plan, part, ref, progress)) for part in todo
        ]
        try:
            await _first_failure(calls)
        except BaseException as exc:
            for call in calls:
                call.cancel()
            if isinstance(exc, Exception) and progress.failure is None:
                progress.failure = exc  # seen by the split loop before it decodes more
            raise
        finally:
            self.inflight.release()
            metrics.inflight_add(-1)
        progress.segment_done(plan.index)
        await progress.report()

    async def _call(
        self,
        record: JobRecord,
        plan: SegmentPlan,
        part: str,
        ref,
        progress: _Progress,
        options: BaseModel | None = None,
    ) -> None:
        deployment, method, result_type = PARTS[part]
        if part == "t":  # the job's model has a deployment of its own
            deployment = deployment_name(record.options.model, self.config.whisper_model)
        if options is None:
            options = (
                record.options.transcribe_options()
                if part == "t"
                else record.options.segment_diarize_options()
            )
        cfg, last_error = self.config, ""
        where = _where(plan)
        for attempt in range(1, cfg.segment_max_attempts + 1):
            failure: BaseException | None = None  # logged with its traceback, never shown
            if await self.store.cancel_requested(record.id):
                raise JobCancelled
            await self.store.count_call(record.id, plan.key, part)
            t0 = time.monotonic()
            response = getattr(self.handle(deployment), method).remote(ref, options)
            try:
                raw = await asyncio.wait_for(_resolve(response), cfg.segment_timeout_s)
                call_s = time.monotonic() - t0
                # Validate against this version's schema: drift fails here, clearly.
                data = raw.model_dump() if isinstance(raw, BaseModel) else raw
                result = result_type.model_validate(data)
                await self.store.save_checkpoint(
                    record.id, plan.key, part, result.model_dump_json(), progress.lease
                )
                progress.part_done(plan.index, part)
                audio_s = (plan.end - plan.start) / 16000
                metrics.segment_done(part, call_s, audio_s)
                return
            except TimeoutError:
                response.cancel()
                last_error = (
                    f"the {_ROLE[part]} model did not answer within {cfg.segment_timeout_s:.0f} s"
                )
            except ValidationError as exc:
                failure, last_error = exc, f"the {_ROLE[part]} model returned malformed data"
            except asyncio.CancelledError:
                response.cancel()
                raise
            except Exception as exc:
                cause = root_cause(exc)
                if isinstance(cause, InputRejected):
                    log.warning("job %s %s %s rejected", record.id, where, part, exc_info=exc)
                    raise SegmentFailed("input_rejected", f"{where}: {one_line(cause)}") from None
                # Replica errors carry actor ids and device details: the log gets them.
                failure, last_error = exc, f"the {_ROLE[part]} model failed"
            log.warning(
                "job %s segment %d %s attempt %d: %s",
                record.id,
                plan.index,
                part,
                attempt,
                last_error,
                exc_info=failure,
            )
            if attempt < cfg.segment_max_attempts:
                metrics.segment_retry(part)
                await asyncio.sleep(min(cfg.retry_base_s * 2 ** (attempt - 1), 60.0))
        raise SegmentFailed(
            "segment_failed",
            f"{where} failed {cfg.segment_max_attempts} times; last error: {last_error} "
            "(details are in the job manager's log).",
        )

    async def _stitch(
        self,
        record: JobRecord,
        plans: list[SegmentPlan],
        parts: list[str],
        speakers=None,
        lease: str | None = None,
    ) -> None:
        # This run's plans, not whatever an earlier run stored: checkpoints of another
        # split have other keys and are never used.
        plans = sorted(plans, key=lambda p: (p.start, p.index))
        duration = max((p.end for p in plans), default=0) / 16000
        diarize = record.options.diarize_options() if "d" in parts else None
        known = list(record.options.known_speakers) or None
        await stitch_to_store(
            self.store,
            record.id,
            plans,
            duration,
            diarize,
            known=known,
            task=record.options.task,
            speakers=speakers,
            lease=lease,
        )


async def _first_failure(tasks: list[asyncio.Task]) -> None:
    """Wait for all `tasks`, raising the first failure as soon as it happens."""
    if not tasks:
        return
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


def _where(plan: SegmentPlan) -> str:
    """How messages name a segment: 'Segment 3 (60.0-90.0 s)'."""
    return f"Segment {plan.index + 1} ({plan.start / 16000:.1f}-{plan.end / 16000:.1f} s)"


def root_cause(exc: BaseException) -> BaseException:
    """The exception a replica raised, unwrapped from Ray's task-error wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A user-fit message: the first line of the exception text, never a traceback."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _resolve(response):
    return await response


class _Progress:
    """Segments done out of total, stage text and percent; throttled progress events."""

    def __init__(
        self,
        record: JobRecord,
        store: JobStore,
        parts: list[str],
        expected: int,
        lease: str | None = None,
    ):
        self.record, self.store, self.parts, self.lease = record, store, parts, lease
        self.expected, self.planned_count, self.split_done = expected, 0, False
        self.failure: Exception | None = None  # the first segment that gave up
        self.done: set[int] = set()
        self.transcribed: set[int] = set()
        self._last_report = 0.0

    def planned(self, index: int, done_parts: set[str]) -> None:
        self.planned_count = max(self.planned_count, index + 1)
        if "t" in done_parts:
            self.transcribed.add(index)
        if done_parts >= set(self.parts):
            self.done.add(index)

    def split_finished(self) -> None:
        self.split_done = True

    def part_done(self, index: int, part: str) -> None:
        if part == "t":
            self.transcribed.add(index)

    def segment_done(self, index: int) -> None:
        self.done.add(index)

    async def report(self) -> None:
        r = self.record
        total = self.planned_count if self.split_done else max(self.expected, self.planned_count)
        r.segments_done = len(self.done)
        r.segments_total = self.planned_count if self.split_done else None
        r.percent = min(95.0, 95.0 * len(self.done) / max(total, 1))
        all_transcribed = self.split_done and len(self.transcribed) >= self.planned_count
        if "d" in self.parts and all_transcribed:
            r.status, verb = JobStatus.DIARIZING, "diarizing"
        elif "d" in self.parts:
            r.status, verb = JobStatus.TRANSCRIBING, "transcribing and diarizing"
        else:
            r.status, verb = JobStatus.TRANSCRIBING, "transcribing"
        of = f"{total}" if self.split_done else f"~{total}"
        r.stage = f"{verb}: {len(self.done)}/{of} segments done"
        now = time.monotonic()
        if now - self._last_report > 0.2 or len(self.done) == total:
            self._last_report = now
            await self._save()

    async def set_status(self, status: JobStatus, stage: str) -> None:
        self.record.status, self.record.stage = status, stage
        await self._save()

    async def _save(self) -> None:
        outcome = await self.store.save(self.record, self.lease)
        if outcome in ("terminal", "missing"):
            raise JobCancelled  # finished elsewhere (a cancel won the race) or expired
        if outcome == "lease":
            raise LeaseLost
