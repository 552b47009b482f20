"""Callers that wait on a job for their answer (the OpenAI routes), made safe to retry.

The official `openai` client gives up after its timeout and sends the same request again,
twice by default, and it retries a 504 too. So a call's job is keyed by who asked, a hash of
the file and every parameter that changes the output: a retry reuses the job it already
started (or its finished result) instead of starting a second one. The job is marked as
waited on in the same Redis step that creates or reuses it, and again every second while a
caller waits (so this holds across ingress replicas and however the request ends: a
disconnect can cancel it at any await, even while the upload is still being stored);
the job manager cancels a job nobody has marked for `openai_abandon_grace_s`, so a caller
who went away does not leave hours of model work behind. A cancelled twin is not reused:
a later call starts afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from fastapi import Request, UploadFile

from jobs.state.records import JobOptions, JobRecord, JobStatus
from serve_app.errors import ApiError
from serve_app.services.context import Services
from serve_app.services.jobs import create_job

log = logging.getLogger(__name__)

POLL_S = 1.0  # how soon a wait notices its caller has gone


def _file_digest(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    upload.file.seek(0)
    while chunk := upload.file.read(1 << 20):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


async def call_key(upload: UploadFile, owner: str | None, options: JobOptions) -> str:
    """The idempotency key of one OpenAI call: the caller, the file, the options."""
    file_hash = await asyncio.to_thread(_file_digest, upload)
    params = options.model_dump_json()  # known speakers' voiceprints included
    both = hashlib.sha256(f"{owner}|{file_hash}|{params}".encode()).hexdigest()
    return f"openai:{both[:40]}"


async def create_or_reuse(
    services: Services, upload: UploadFile, options: JobOptions, owner: str | None, key: str
) -> JobRecord:
    """The call's job: the one a retry of it started, or a new one."""
    for _ in range(3):
        await upload.seek(0)
        job = await create_job(services, upload, options, owner, key, checked=True, waited_on=True)
        if job.status is not JobStatus.CANCELLED:
            return job
        key = f"{key}:{job.id}"  # its caller gave up on it: this call starts afresh
    return job


async def wait_for_job(
    services: Services, job_id: str, timeout_s: float, request: Request
) -> JobRecord | None:
    """The job once terminal (None: it expired); 504 after `timeout_s`. While it waits, the
    job is marked as waited on every POLL_S; the job manager cancels a job whose mark is
    older than openai_abandon_grace_s, however its callers went away."""
    store = services.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_id = "0-0"
    while loop.time() < deadline:
        await store.mark_waited_on(job_id)
        async for event_id, data in store.events(job_id, last_id, int(POLL_S * 1000)):
            last_id = event_id
            if data["status"] in ("completed", "failed", "cancelled"):
                break
        record = await store.get(job_id)
        if record is None or record.status.terminal:
            await store.forget_waited_on(job_id)
            return record
        if await request.is_disconnected():
            log.info("the caller waiting on job %s went away", job_id)
            raise ApiError(499, "client_closed", "the caller closed the connection")
    raise ApiError(504, "timeout", f"job {job_id} is still running; follow it at /v1/jobs/{job_id}")
