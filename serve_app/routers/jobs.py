"""Asynchronous jobs: submit a recording, follow its progress, fetch or cancel it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from jobs.state.records import JobStatus
from serve_app.auth import Caller
from serve_app.errors import ApiError
from serve_app.http_models import ErrorBody, JobList, JobSnapshot, snapshot
from serve_app.services.context import Services, get_services
from serve_app.services.jobs import create_job, job_options, load_job
from serve_app.services.listing import MAX_OFFSET, Cursor, list_page
from serve_app.services.speakers import enrolled_speakers
from serve_app.services.streaming import event_stream

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 410, 413, 422, 429)}
router = APIRouter(tags=["jobs"], responses=ERRORS)

JobId = Annotated[str, Path(description="Job id (a UUID)", min_length=1, max_length=64)]
ServicesDep = Annotated[Services, Depends(get_services)]


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobSnapshot,
    summary="Submit a recording for transcription (and diarization)",
)
async def submit_job(
    services: ServicesDep,
    owner: Caller,
    file: Annotated[UploadFile, File(description="Audio or video in any format FFmpeg decodes")],
    diarize: Annotated[bool, Form()] = True,
    model: Annotated[
        str | None, Form(description="A served model (GET /v1/models); default: whisper-1")
    ] = None,
    language: Annotated[
        str | None, Form(description="ISO 639-1 code; unset: detected per 30 s of speech")
    ] = None,
    task: Annotated[
        Literal["transcribe", "translate"], Form(description="translate: English text")
    ] = "transcribe",
    num_speakers: Annotated[int | None, Form()] = None,
    min_speakers: Annotated[int | None, Form()] = None,
    max_speakers: Annotated[int | None, Form()] = None,
    word_timestamps: Annotated[bool, Form()] = True,
    segment_s: Annotated[float | None, Form(description="Target segment length (s)")] = None,
    webhook_url: Annotated[str | None, Form(description="POSTed the summary when done")] = None,
    speakers: Annotated[
        list[str] | None,
        Form(description="Enrolled speakers (ids or names) to name in the transcript; repeat"),
    ] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobSnapshot:
    known = await enrolled_speakers(services, owner, speakers)
    options = job_options(
        diarize=diarize,
        model=services.model_name(model),
        task=task,
        language=language,
        num_speakers=num_speakers,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        word_timestamps=word_timestamps,
        segment_s=segment_s,
        webhook_url=webhook_url,
        known_speakers=known,
    )
    record = await create_job(services, file, options, owner, idempotency_key)
    body = snapshot(record)
    body.webhook_secret = record.webhook_secret  # shown once, to the submitter
    return body


@router.get("/v1/jobs", response_model=JobList, summary="The caller's jobs, newest first")
async def list_jobs(
    services: ServicesDep,
    owner: Caller,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=400, description="next_cursor of the previous page")
    ] = None,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Matching jobs to skip (use cursor past it)")
    ] = 0,
) -> JobList:
    if cursor is not None and offset:
        raise ApiError(422, "invalid_parameter", "offset: give cursor or offset, not both")
    start = Cursor.decode(cursor) if cursor is not None else Cursor(None, offset)
    page = await list_page(services.store, owner, status, limit, start)
    return JobList(
        data=[snapshot(record, detail=False) for record in page.records],
        offset=offset,
        limit=limit,
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobSnapshot,
    summary="Status, stage, segments done/total, percent, ETA and error",
)
async def get_job(services: ServicesDep, owner: Caller, job_id: JobId) -> JobSnapshot:
    return snapshot(await load_job(services, job_id, owner))


@router.delete("/v1/jobs/{job_id}", response_model=JobSnapshot, summary="Cancel a job")
async def cancel_job(services: ServicesDep, owner: Caller, job_id: JobId) -> JobSnapshot:
    record = await load_job(services, job_id, owner)
    if record.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        raise ApiError(409, "job_finished", f"job {record.id} is already {record.status.value}")
    return snapshot(await services.manager.cancel.remote(record.id))


@router.post(
    "/v1/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobSnapshot,
    summary="Re-run a failed or cancelled job, keeping finished segments",
)
async def retry_job(services: ServicesDep, owner: Caller, job_id: JobId) -> JobSnapshot:
    record = await load_job(services, job_id, owner)
    if record.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise ApiError(
            409,
            "job_not_retryable",
            f"job {record.id} is {record.status.value}; only failed or cancelled "
            "jobs can be retried",
        )
    if not await asyncio.to_thread(services.storage.exists, record.id):
        raise ApiError(
            410,
            "audio_expired",
            f"the audio of job {record.id} is gone (kept audio_ttl_s after a job; a cancelled "
            "job's is deleted at once): submit the file again",
        )
    return snapshot(await services.manager.retry.remote(record.id))


@router.get(
    "/v1/jobs/{job_id}/result",
    summary="The stitched transcript of a completed job",
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def get_result(
    services: ServicesDep,
    owner: Caller,
    job_id: JobId,
    format: Annotated[Literal["json", "srt", "vtt", "txt", "rttm"], Query()] = "json",
) -> Response:
    from jobs.stitching.stitch import JobResult
    from serve_app.rendering import render_job

    record = await load_job(services, job_id, owner)
    if record.status is not JobStatus.COMPLETED:
        raise ApiError(
            409,
            "job_not_completed",
            f"job {record.id} is {record.status.value} ({record.stage}); "
            "the result exists once it is completed",
        )
    raw = await services.store.result(record.id)
    if raw is None:
        raise ApiError(410, "result_expired", f"the result of job {record.id} has expired")
    if format == "json":
        return Response(raw, media_type="application/json")

    def render() -> tuple[str, str]:
        return render_job(
            JobResult.model_validate_json(raw), format, uri=record.filename or record.id
        )

    # Parsing and rendering a long transcript is CPU work: off the event loop.
    body, media_type = await asyncio.to_thread(render)
    return Response(body, media_type=media_type)


async def _event_stream(services: Services, job_id: str, last_id: str) -> AsyncIterator[str]:
    while True:
        got_any = False
        async for event_id, data in services.store.events(
            job_id, last_id, block_ms=int(services.settings.sse_keepalive_s * 1000)
        ):
            got_any, last_id = True, event_id
            final = data["status"] in ("completed", "failed", "cancelled")
            yield f"id: {event_id}\nevent: progress\ndata: {json.dumps(data)}\n\n"
            if final:
                yield f"id: {event_id}\nevent: end\ndata: {json.dumps(data)}\n\n"
                return
        if not got_any:
            record = await services.store.get(job_id)
            if record is None:  # expired while watching
                return
            if record.status.terminal:  # the final event was trimmed: say it anyway
                data = json.dumps(record.progress())
                yield f"event: end\ndata: {data}\n\n"
                return
            yield ": ping\n\n"


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Live progress as Server-Sent Events",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    services: ServicesDep,
    owner: Caller,
    job_id: JobId,
    last_event_id: Annotated[str | None, Header(pattern=r"^\d+-\d+$")] = None,
) -> StreamingResponse:
    record = await load_job(services, job_id, owner)
    services.held_requests().acquire(owner)  # 429/503 now, rather than a slot held for minutes
    events = _event_stream(services, record.id, last_event_id or "0-0")
    return event_stream(services, owner, events)  # gives the place back however it ends
