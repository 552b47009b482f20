"""Jobs, as every router needs them: look one up for its owner, vet options, create one."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import UploadFile
from pydantic import ValidationError

from deployments.core.audio import AudioDecodeError, probe_audio
from jobs.integrations.webhooks import WebhookRefused, check_url
from jobs.state.job_store import KeyQuotaFull, QueueFull
from jobs.state.outbox import new_secret
from jobs.state.records import JobOptions, JobRecord
from serve_app.errors import ApiError, retry_later
from serve_app.services.context import Services

QUEUE_RETRY_AFTER_S = 15  # a full queue drains at the pace of jobs, not of restarts


def parse_job_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id, version=4))
    except ValueError:
        raise ApiError(404, "job_not_found", f"job_id: {job_id!r} is not a job id") from None


async def load_job(services: Services, job_id: str, owner: str | None) -> JobRecord:
    record = await services.store.get(parse_job_id(job_id))
    # Another key's job is indistinguishable from a missing one.
    if record is None or record.owner != owner:
        raise ApiError(404, "job_not_found", f"job_id: no job {job_id}")
    return record


async def check_job_options(services: Services, options: JobOptions) -> None:
    """Checks that need the running service: the model's languages, the webhook target."""
    await check_language(services, options.language, options.model, options.task)
    if options.webhook_url:
        try:
            check_url(options.webhook_url, services.settings.webhook_allow)
        except WebhookRefused as exc:
            raise ApiError(422, "invalid_parameter", str(exc)) from None


async def check_language(
    services: Services, language: str | None, model: str | None, task: str = "transcribe"
) -> None:
    """`language` and `task` against what `model` (a served model's name) can do."""
    model = services.model_name(model)
    info = await services.model_info(model)
    allowed = list(info.get("languages") or [])
    if language is not None and allowed and language not in allowed:
        shown = ", ".join(allowed)
        raise ApiError(
            422,
            "invalid_parameter",
            f"language: {language!r} is not supported by model {model!r}; use one of: {shown}",
        )
    if task == "translate" and not info.get("multilingual", True):
        multilingual = [m for m in services.settings.whisper_models if m != model]
        raise ApiError(
            422,
            "invalid_parameter",
            f"task: model {model!r} is English-only and cannot translate; "
            f"use a multilingual model (served: {', '.join(multilingual) or 'none'})",
        )


def job_options(**fields) -> JobOptions:
    try:
        return JobOptions(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "options"
        raise ApiError(422, "invalid_parameter", f"{name}: {first['msg']}") from None


async def create_job(
    services: Services,
    upload: UploadFile,
    options: JobOptions,
    owner: str | None,
    idempotency_key: str | None = None,
    checked: bool = False,
    waited_on: bool = False,
) -> JobRecord:
    """Store the upload durably, vet it, record the job, wake the manager. `checked`: the
    caller already ran check_job_options (the OpenAI routes check before reading audio)."""
    settings = services.settings
    if not checked:
        await check_job_options(services, options)
    job_id = str(uuid.uuid4())
    storage = services.storage
    path = await asyncio.to_thread(storage.save, job_id, upload.file)
    try:
        duration = await asyncio.to_thread(probe_audio, path)
        if duration is not None and duration > settings.max_job_duration_s:
            raise ApiError(
                413,
                "audio_too_long",
                f"file: {duration:.0f} s of audio exceeds the "
                f"{settings.max_job_duration_s:.0f} s limit (max_job_duration_s)",
            )
        record = JobRecord(
            id=job_id,
            owner=owner,
            options=options,
            filename=upload.filename,
            audio_path=str(path),
            duration=duration,
            idempotency_key=idempotency_key,
            webhook_secret=(
                new_secret() if options.webhook_url and not settings.webhook_secret else None
            ),
        )
        stored = await services.store.create(
            record,
            max_active=settings.max_active_jobs,
            key_active=settings.max_active_jobs_per_key,
            key_bytes=int(settings.max_stored_mb_per_key * 1e6),
            audio_bytes=await asyncio.to_thread(lambda: path.stat().st_size),
            waited_on=waited_on,
        )
    except KeyQuotaFull as exc:
        await asyncio.to_thread(storage.delete, job_id)
        if exc.what == "jobs":
            raise retry_later(
                429,
                "too_many_jobs_for_key",
                f"this API key has {exc.used} jobs queued or running, its limit "
                "(max_active_jobs_per_key); retry when one finishes",
                after_s=QUEUE_RETRY_AFTER_S,
            ) from None
        raise retry_later(
            429,
            "storage_full_for_key",
            f"this API key's stored audio ({exc.used / 1e6:.0f} MB) and this upload pass its "
            f"{settings.max_stored_mb_per_key:g} MB (max_stored_mb_per_key); delete or wait "
            f"for jobs to finish (audio is kept {settings.audio_ttl_s / 3600:g} h after a job)",
            after_s=QUEUE_RETRY_AFTER_S,
        ) from None
    except QueueFull:
        await asyncio.to_thread(storage.delete, job_id)
        raise retry_later(
            429,
            "too_many_jobs",
            f"{settings.max_active_jobs} jobs are queued or running; retry later",
            after_s=QUEUE_RETRY_AFTER_S,
        ) from None
    except AudioDecodeError as exc:
        await asyncio.to_thread(storage.delete, job_id)
        raise ApiError(400, exc.code, f"file: {exc.message}") from exc
    except BaseException:
        await asyncio.to_thread(storage.delete, job_id)  # nothing half-written is left behind
        raise
    if stored.id != job_id:  # same Idempotency-Key: the earlier job stands
        await asyncio.to_thread(storage.delete, job_id)
    else:
        services.manager.start_job.remote(job_id)
    return stored
