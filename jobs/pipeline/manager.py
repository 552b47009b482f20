"""The job manager: one Serve replica per application that drives jobs to a terminal state.

Each job is split at silences as its audio streams from storage; segments go to the
transcriber and diarizer replicas through a bounded in-flight window; every finished
segment is checkpointed in Redis; the stitched result is written last.

It is a Serve deployment of the application, not a free-standing actor: a redeploy with
new settings replaces it, each application has its own, `serve shutdown` removes it, and
Serve restarts it after a crash. The new replica resumes every non-terminal job from Redis
and redoes only segments with no checkpoint. A lease in Redis keeps one runner per job
even while an old and a new replica overlap during a rolling update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid

from ray import serve

from deployments.core.audio import AudioDecodeError
from deployments.replicas.transcriber import deployment_name
from jobs.config import JobsConfig
from jobs.integrations import metrics
from jobs.pipeline.job_pipeline import JobCancelled, JobPipeline, LeaseLost, SegmentFailed
from jobs.state.audio_files import AudioStorage
from jobs.state.job_index import trim_listing
from jobs.state.job_store import JobStore
from jobs.state.outbox import WebhookOutbox, event_for
from jobs.state.records import JobRecord, JobStatus

log = logging.getLogger(__name__)


# One per application (serve_config.yaml says so, with its CPUs); leases in Redis keep one
# runner per job even while a redeploy briefly overlaps two.
@serve.deployment(max_ongoing_requests=1000, health_check_period_s=5)
class JobManager:
    def __init__(self, config: JobsConfig, transcriber=None, diarizer=None) -> None:
        from jobs.state.redis_server import resolve_redis_url

        logging.basicConfig(level=logging.INFO)
        self.config = config
        self.redis_url = resolve_redis_url(config.redis_url, config.resolved_data_dir)
        self.store = JobStore(self.redis_url, config.redis_key_prefix, config.result_ttl_s)
        self.storage = AudioStorage(config.resolved_storage_dir)
        self.outbox = WebhookOutbox(
            self.store,
            config.webhook_max_attempts,
            config.webhook_base_delay_s,
            config.webhook_allow,
            config.webhook_timeout_s,
        )
        self.token = uuid.uuid4().hex  # this replica's lease token
        self.runners: dict[str, asyncio.Task] = {}
        self.stopping: set[str] = set()  # runners cancelled on purpose (cancel, lost lease)
        self.counted: set[str] = set()  # jobs whose run this replica counted as an attempt
        self.closing = False  # Serve is stopping this replica gracefully (see __del__)
        self.job_slots = asyncio.Semaphore(config.max_concurrent_jobs)
        self.segments = JobPipeline(self.store, config)
        if transcriber is not None and diarizer is not None:  # this application's replicas
            # One handle per served model (a plain handle: the default model alone).
            models = transcriber if isinstance(transcriber, dict) else {None: transcriber}
            handles = {deployment_name(m, config.whisper_model): h for m, h in models.items()}
            self.segments.use_handles({**handles, "Diarizer": diarizer})
        self.started_at = time.time()
        self.slots_held = 0  # jobs inside job_slots (metrics: running vs queued)
        self.loops: list[asyncio.Task] = []
        self.outbox_wake = asyncio.Event()
        # Constructed off the event loop? Then Serve's first health check starts them.
        with contextlib.suppress(RuntimeError):
            self._start_loops()

    def _start_loops(self) -> None:
        if self.closing:  # health checks go on during a graceful stop: start nothing
            return
        if not self.loops or any(t.done() for t in self.loops):
            for task in self.loops:
                task.cancel()
            loop = asyncio.get_running_loop()
            self.loops = [loop.create_task(self._watch()), loop.create_task(self._deliver())]

    # -- public API (called by the ingress) ------------------------------------------------
    async def check_health(self) -> None:
        self._start_loops()  # after a restart, jobs resume without waiting for a request

    async def ping(self) -> dict:
        self._start_loops()
        return {
            "started_at": self.started_at,
            "running": sorted(self.runners),
            "pid": os.getpid(),
            "config": self.config.fingerprint(),
            "app_name": self.config.app_name,
        }

    async def start_job(self, job_id: str) -> None:
        """Begin (or resume) a job already stored in Redis. Idempotent."""
        if self.closing:
            return  # stopping: the next manager's watchdog starts it
        self._start_loops()
        task = self.runners.get(job_id)
        if task is None or task.done():
            self.runners[job_id] = asyncio.create_task(self._run(job_id))

    async def retry(self, job_id: str) -> JobRecord | None:
        """Re-run a failed or cancelled job with a fresh time budget; checkpoints are kept."""
        record = await self.store.get(job_id)
        if record is None or record.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return record
        await self.store.clear_cancel(job_id)
        record.error_code = record.error_message = record.finished_at = None
        record.started_at, record.attempts, record.percent = None, 0, 0.0
        record.status, record.stage = JobStatus.QUEUED, "queued for retry"
        if await self.store.requeue(record):
            await self.start_job(job_id)
        return await self.store.get(job_id)

    async def cancel(self, job_id: str) -> JobRecord | None:
        await self.store.request_cancel(job_id)
        task = self.runners.get(job_id)
        if task is not None and not task.done():
            self.stopping.add(job_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        record = await self.store.get(job_id)
        if record is not None and not record.status.terminal:
            await self._finish(record, JobStatus.CANCELLED, "cancelled by request", lease=False)
        record = await self.store.get(job_id)
        if record is not None and record.status is JobStatus.CANCELLED:
            # Its audio goes now, not after audio_ttl_s: "upload, cancel" in a loop cannot
            # fill the disk (a cancelled job can no longer be retried).
            await asyncio.to_thread(self.storage.delete, job_id)
            await self.store.forget_audio(record.owner, job_id)
        return record

    # -- running a job ---------------------------------------------------------------------
    async def _run(self, job_id: str) -> None:
        held = claimed = False
        renewer: asyncio.Task | None = None
        try:
            await self._note_submitted(job_id)
            async with self.job_slots:
                held, self.slots_held = True, self.slots_held + 1
                self._publish_gauges()
                if not await self.store.claim(job_id, self.token, self.config.lease_s):
                    return  # another manager runs it; the watchdog looks again later
                claimed = True
                renewer = asyncio.create_task(self._renew(job_id, asyncio.current_task()))
                record = await self.store.get(job_id)
                if record is None or record.status.terminal:
                    return
                if await self.store.cancel_requested(job_id):
                    await self._finish(record, JobStatus.CANCELLED, "cancelled by request")
                    return
                await self._run_record(record)
        except asyncio.CancelledError:
            if job_id not in self.stopping:
                raise  # replica shutting down: the job stays active and resumes elsewhere
        finally:
            if renewer is not None:
                renewer.cancel()
            if claimed and self.closing and job_id in self.counted:
                await asyncio.shield(self._uncount(job_id))
            if claimed:
                await asyncio.shield(self._release(job_id))
            self.counted.discard(job_id)
            self.stopping.discard(job_id)
            self.runners.pop(job_id, None)
            self.slots_held -= held
            self._publish_gauges()

    async def _renew(self, job_id: str, runner: asyncio.Task) -> None:
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            try:
                held = await self.store.claim(job_id, self.token, self.config.lease_s)
            except Exception:
                log.warning("job %s: lease renewal failed; retrying", job_id, exc_info=True)
                continue
            if not held:
                log.warning("job %s: another manager took the lease; stopping here", job_id)
                self.stopping.add(job_id)
                runner.cancel()
                return

    async def _uncount(self, job_id: str) -> None:
        """A graceful stop handed the job on: its run is not an interruption."""
        try:
            record = await self.store.get(job_id)
            if record is not None and not record.status.terminal and record.attempts > 0:
                record.attempts -= 1
                record.stage = "handed to a new job manager (redeploy); resuming"
                await self.store.save(record, self.token)
        except Exception:
            log.warning("job %s: could not hand the job on cleanly", job_id, exc_info=True)

    async def __del__(self) -> None:
        """Serve's graceful stop (a redeploy, a scale-down, `serve shutdown`).

        Every running job stays active and resumes on the next manager from its
        checkpoints; the run it was in is not counted against max_job_interruptions, which
        counts only runs that ended without this (a crash, a killed process, a lost node).
        """
        self.closing = True
        for task in self.loops:
            task.cancel()
        runners = [task for task in self.runners.values() if not task.done()]
        for task in runners:
            task.cancel()
        if runners:
            await asyncio.wait(runners, timeout=10)
        log.info("graceful stop: %d running jobs handed on", len(runners))

    async def _release(self, job_id: str) -> None:
        try:
            await self.store.release(job_id, self.token)
        except Exception:
            log.warning("job %s: lease release failed (it expires)", job_id, exc_info=True)

    async def _run_record(self, record: JobRecord) -> None:
        cfg = self.config
        record.attempts += 1
        if record.attempts > cfg.max_job_interruptions + 1:
            await self._fail(
                record,
                "job_interrupted",
                f"The job was interrupted {record.attempts - 1} times while running (the "
                "job manager running it stopped without handing it on); it is not resumed "
                "again. Retry it, or split the recording.",
            )
            return
        record.started_at = record.started_at or time.time()
        record.stage = "running: reading checkpoints"
        record.error_code = record.error_message = None
        remaining = cfg.job_timeout_s - (time.time() - record.started_at)
        try:
            if remaining <= 0:
                raise TimeoutError
            if await self.store.save(record, self.token) != "ok":  # counted even if we crash
                return  # finished meanwhile (a cancel won) or another manager owns it
            self.counted.add(record.id)
            await asyncio.wait_for(
                self.segments.run(record, self.storage.path(record.id), self.token), remaining
            )
        except LeaseLost:
            return
        except JobCancelled:
            await self._finish(record, JobStatus.CANCELLED, "cancelled by request")
        except TimeoutError:
            await self._fail(
                record,
                "job_timeout",
                f"The job did not finish within {cfg.job_timeout_s:.0f} s "
                "(job_timeout_s); finished segments are kept for a retry.",
            )
        except SegmentFailed as exc:
            await self._fail(record, exc.code, exc.message)
        except AudioDecodeError as exc:  # the stored file breaks partway: the input's fault
            await self._fail(record, exc.code, f"file: {exc.message}")
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
            record.percent = 100.0
            await self._finish(record, JobStatus.COMPLETED, "completed")

    async def _fail(self, record: JobRecord, code: str, message: str) -> None:
        record.error_code, record.error_message = code, message
        await self._finish(record, JobStatus.FAILED, f"failed: {message}")

    async def _finish(
        self, record: JobRecord, status: JobStatus, stage: str, lease: bool = True
    ) -> bool:
        """The job's one terminal transition; False if another writer made it first.

        A runner finishes only while it holds the job's lease (`lease`); a cancel does not
        need it (it stops the runner first).
        """
        record.status, record.stage, record.finished_at = status, stage, time.time()
        event = event_for(record, self.config.webhook_secret_value)
        won = await self.store.finish(record, event, self.token if lease else None)
        if won:
            metrics.job_finished(record)
            self.outbox_wake.set()
        return won

    # -- supervision -----------------------------------------------------------------------
    async def _watch(self) -> None:
        """Resume orphaned jobs (after a restart, or a lost start call) and apply retention."""
        last_trim = 0.0
        while True:
            try:
                await self._supervise_redis()
                for job_id in await self.store.active_ids():
                    await self.start_job(job_id)
                self._publish_gauges()
                await self._expire_audio()
                await self._cancel_unwaited()
                if time.time() - last_trim > 3600:
                    await self._check_eviction()
                    horizon = self.config.result_ttl_s + self.config.job_timeout_s + 86400
                    await trim_listing(self.store, time.time() - horizon)
                    last_trim = time.time()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watchdog pass failed; retrying")
            await asyncio.sleep(self.config.watchdog_s)

    async def _supervise_redis(self) -> None:
        """Restart the embedded Redis if it died (an external one is the operator's)."""
        if self.config.redis_url is not None:
            return
        from jobs.state.redis_server import ensure_embedded_redis

        await asyncio.to_thread(ensure_embedded_redis, self.config.resolved_data_dir)

    async def _deliver(self) -> None:
        while True:
            try:
                await self.outbox.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook outbox pass failed; retrying")
            self.outbox_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox_wake.wait(), 1.0)

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

    async def _cancel_unwaited(self) -> None:
        """An OpenAI call's job whose callers all went away is not worth finishing."""
        cutoff = time.time() - self.config.openai_abandon_grace_s
        for job_id in await self.store.unwaited_since(cutoff):
            record = await self.store.get(job_id)
            if record is not None and not record.status.terminal:
                log.info("cancelling job %s: no caller has waited on it", job_id)
                await self.cancel(job_id)
            await self.store.forget_waited_on(job_id)

    async def _check_eviction(self) -> None:
        """Job state must never be evicted silently: say so loudly if Redis may evict."""
        try:
            reply = await self.store.redis.config_get("maxmemory-policy")
        except Exception:  # managed Redis services may refuse CONFIG
            log.info("could not read Redis maxmemory-policy; make sure it is noeviction")
            return
        policy = reply.get("maxmemory-policy")
        if policy not in (None, "noeviction"):
            log.error(
                "Redis maxmemory-policy is %r: under memory pressure it may evict job state. "
                "Set maxmemory-policy noeviction (README, 'Sizing').",
                policy,
            )

    async def _expire_audio(self) -> None:
        for job_id in await self.store.finished_before(time.time() - self.config.audio_ttl_s):
            record = await self.store.get(job_id)
            if record is None or record.status.terminal:
                await asyncio.to_thread(self.storage.delete, job_id)
                await self.store.forget_audio(record.owner if record else None, job_id)
            await self.store.forget_finished(job_id)  # a retried job re-enters when it ends
