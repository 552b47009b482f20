"""The job manager: a named, auto-restarting Ray actor that drives jobs to a terminal state.

Each job is split at silences as its audio streams from storage; segments go to the
transcriber and diarizer replicas through a bounded in-flight window; every finished
segment is checkpointed in Redis; the stitched result is written last. After a crash the
actor restarts, resumes every non-terminal job from Redis and redoes only segments with no
checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import ray

from jobs import metrics
from jobs.records import JobRecord, JobStatus
from jobs.segment_runner import JobCancelled, SegmentFailed, SegmentRunner
from jobs.storage import AudioStorage
from jobs.store import JobStore

log = logging.getLogger(__name__)

MANAGER_NAME = "job-manager"
NAMESPACE = "speech-cluster"


@dataclass(frozen=True)
class ManagerConfig:
    redis_url: str
    storage_dir: str
    key_prefix: str = "sc:"
    app_name: str = "speech"
    max_concurrent_jobs: int = 4
    max_inflight_segments: int = 8
    segment_timeout_s: float = 300.0
    segment_max_attempts: int = 4
    retry_base_s: float = 1.0
    job_timeout_s: float = 6 * 3600.0
    split_min_s: float = 10.0
    split_max_s: float = 60.0
    result_ttl_s: float = 7 * 86400.0
    audio_ttl_s: float = 86400.0
    watchdog_s: float = 5.0
    webhook_secret: str | None = None
    webhook_max_attempts: int = 6
    webhook_base_delay_s: float = 1.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=1000)
class JobManager:
    def __init__(self, config: ManagerConfig) -> None:
        logging.basicConfig(level=logging.INFO)
        self.config = config
        self.store = JobStore(config.redis_url, config.key_prefix, config.result_ttl_s)
        self.storage = AudioStorage(__import__("pathlib").Path(config.storage_dir))
        self.runners: dict[str, asyncio.Task] = {}
        self.cancelling: set[str] = set()
        self.webhooks: set[asyncio.Task] = set()
        self.job_slots = asyncio.Semaphore(config.max_concurrent_jobs)
        self.segments = SegmentRunner(self.store, config)
        self.started_at = time.time()
        self.slots_held = 0  # jobs inside job_slots (metrics: running vs queued)
        # Async actor: the loop exists here; the watchdog resumes jobs right after a restart.
        self._watchdog = asyncio.get_event_loop().create_task(self._watch())

    # -- public API (called by the ingress) ------------------------------------------------
    async def ping(self) -> dict:
        import os

        return {"started_at": self.started_at, "running": sorted(self.runners), "pid": os.getpid()}

    async def start_job(self, job_id: str) -> None:
        """Begin (or resume) a job already stored in Redis. Idempotent."""
        task = self.runners.get(job_id)
        if task is None or task.done():
            self.runners[job_id] = asyncio.create_task(self._run(job_id))

    async def retry(self, job_id: str) -> JobRecord | None:
        """Re-run a failed or cancelled job; its checkpointed segments are kept."""
        record = await self.store.get(job_id)
        if record is None or record.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return record
        await self.store.clear_cancel(job_id)
        record.error_code = record.error_message = record.finished_at = None
        record.percent = 0.0
        await self.store.set_status(record, JobStatus.QUEUED, "queued for retry")
        await self.start_job(job_id)
        return record

    async def cancel(self, job_id: str) -> JobRecord | None:
        await self.store.request_cancel(job_id)
        task = self.runners.get(job_id)
        if task is not None and not task.done():
            self.cancelling.add(job_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        record = await self.store.get(job_id)
        if record is not None and not record.status.terminal:
            await self._finish(record, JobStatus.CANCELLED, "cancelled by request")
        return await self.store.get(job_id)

    # -- running a job ---------------------------------------------------------------------
    async def _run(self, job_id: str) -> None:
        held = False
        try:
            await self._note_submitted(job_id)
            async with self.job_slots:
                held, self.slots_held = True, self.slots_held + 1
                self._publish_gauges()
                record = await self.store.get(job_id)
                if record is None or record.status.terminal:
                    return
                if await self.store.cancel_requested(job_id):
                    await self._finish(record, JobStatus.CANCELLED, "cancelled by request")
                    return
                await self._run_record(record)
        except asyncio.CancelledError:
            if job_id not in self.cancelling:
                raise  # actor shutting down: the job stays active and resumes on restart
        finally:
            self.cancelling.discard(job_id)
            self.runners.pop(job_id, None)
            self.slots_held -= held
            self._publish_gauges()

    async def _run_record(self, record: JobRecord) -> None:
        record.attempts += 1
        record.started_at = record.started_at or time.time()
        record.error_code = record.error_message = None
        remaining = self.config.job_timeout_s - (time.time() - record.started_at)
        try:
            if remaining <= 0:
                raise TimeoutError
            result = await asyncio.wait_for(
                self.segments.run(record, self.storage.path(record.id)), remaining
            )
        except JobCancelled:
            await self._finish(record, JobStatus.CANCELLED, "cancelled by request")
        except TimeoutError:
            await self._fail(
                record,
                "job_timeout",
                f"The job did not finish within {self.config.job_timeout_s:.0f} s "
                "(job_timeout_s); finished segments are kept for a retry.",
            )
        except SegmentFailed as exc:
            await self._fail(record, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a job running forever on a bug
            log.exception("job %s crashed", record.id)
            await self._fail(
                record,
                "internal_error",
                f"The job failed on an internal error ({type(exc).__name__}); "
                "details are in the job manager's log.",
            )
        else:
            await self.store.save_result(record.id, result.model_dump_json())
            record.percent = 100.0
            await self._finish(record, JobStatus.COMPLETED, "completed")

    async def _fail(self, record: JobRecord, code: str, message: str) -> None:
        record.error_code, record.error_message = code, message
        await self._finish(record, JobStatus.FAILED, f"failed: {message}")

    async def _finish(self, record: JobRecord, status: JobStatus, stage: str) -> None:
        await self.store.set_status(record, status, stage)
        metrics.job_finished(record)
        if record.options.webhook_url:
            # Fire and forget: a slow or dead receiver must not hold the job.
            task = asyncio.create_task(self._notify(record))
            self.webhooks.add(task)
            task.add_done_callback(self.webhooks.discard)

    async def _notify(self, record: JobRecord) -> None:
        from jobs.webhooks import deliver

        payload = {
            "event": f"job.{record.status.value}",
            **record.progress(),
            "result_url": f"/v1/jobs/{record.id}/result",
        }
        report = await deliver(
            record.options.webhook_url,
            payload,
            self.config.webhook_secret,
            self.config.webhook_max_attempts,
            self.config.webhook_base_delay_s,
        )
        await self.store.save_webhook_report(record.id, report)

    # -- supervision -----------------------------------------------------------------------
    async def _watch(self) -> None:
        """Resume orphaned jobs (after a restart, or a lost start call) and apply retention."""
        while True:
            try:
                for job_id in await self.store.active_ids():
                    await self.start_job(job_id)
                self._publish_gauges()
                await self._expire_audio()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watchdog pass failed; retrying")
            await asyncio.sleep(self.config.watchdog_s)

    async def _note_submitted(self, job_id: str) -> None:
        """Count a job once, when its first runner starts (queued, never attempted)."""
        try:
            record = await self.store.get(job_id)
        except Exception:
            return
        if record is not None and record.status == JobStatus.QUEUED and record.attempts == 0:
            metrics.job_submitted()

    def _publish_gauges(self) -> None:
        live = sum(1 for task in self.runners.values() if not task.done())
        metrics.set_jobs(queued=live - self.slots_held, running=self.slots_held)

    async def _expire_audio(self) -> None:
        for job_id in await self.store.finished_before(time.time() - self.config.audio_ttl_s):
            self.storage.delete(job_id)
            await self.store.forget_finished(job_id)


def get_or_create_manager(config: ManagerConfig) -> ray.actor.ActorHandle:
    """The cluster's one job manager (detached: it outlives any single ingress replica)."""
    return JobManager.options(
        name=MANAGER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(config)
