"""OpenAI-compatible audio endpoints: /v1/audio/transcriptions, /v1/audio/translations and
/v1/models."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Literal, NoReturn

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from deployments.core.audio import AudioDecodeError, Source, decode_audio
from deployments.core.schemas import TranscribeOptions
from jobs.state.records import JobRecord, JobStatus
from jobs.stitching.stitch import JobResult, single
from serve_app.auth import Caller
from serve_app.errors import ApiError
from serve_app.services.context import Services, get_services
from serve_app.services.jobs import check_language, job_options
from serve_app.services.speakers import reference_speakers
from serve_app.services.streaming import (
    event_stream,
    job_events,
    open_window_stream,
    window_events,
)
from serve_app.services.waiting import call_key, create_or_reuse, wait_for_job

router = APIRouter(tags=["openai"])


def decode_short(source: Source, max_s: float) -> np.ndarray | None:
    """The audio if it lasts at most `max_s`; None, having decoded no further, if longer."""
    try:
        return decode_audio(source, max_s=max_s, limit_name="sync_direct_max_s")
    except AudioDecodeError as exc:
        if exc.code == "audio_too_long":
            return None
        raise


async def read_audio(upload: UploadFile, max_s: float) -> np.ndarray | None:
    """Decode a direct-path upload; None when it is longer than `max_s` (job path)."""
    data = await upload.read()
    try:
        # Decoding is CPU work; keep the ingress event loop free for other requests.
        return await asyncio.to_thread(decode_short, data, max_s)
    except AudioDecodeError as exc:
        raise ApiError(400, exc.code, f"file: {exc.message}") from exc


# Job failures the input caused, answered as the caller's error (OpenAI's client retries
# 408, 409, 429 and 5xx answers, so these must not be among them).
INPUT_FAILURES = {"input_rejected": 400, "audio_too_long": 413, "corrupt_audio": 400}
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
TranslationFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
STREAM_HELP = (
    "Answer with Server-Sent Events as the text is ready (transcript.text.delta, "
    "transcript.text.segment when diarizing, transcript.text.done); response_format is "
    "then ignored, except that diarized_json diarizes"
)


@router.get("/v1/models", summary="Models served (OpenAI-compatible list)")
async def list_models(services: Annotated[Services, Depends(get_services)], _: Caller) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "owned_by": "speech-cluster"}
            for m in services.served_models
        ],
    }


@router.post(
    "/v1/audio/transcriptions",
    summary="OpenAI-compatible transcription",
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def create_transcription(
    http: Request,
    services: Annotated[Services, Depends(get_services)],
    owner: Caller,
    file: Annotated[UploadFile, File(description="Audio in any format FFmpeg decodes")],
    model: Annotated[str, Form()] = "whisper-1",
    language: Annotated[str | None, Form(min_length=2, max_length=8)] = None,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    timestamp_granularities: Annotated[
        list[Literal["word", "segment"]] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    known_speaker_names: Annotated[
        list[str] | None, Form(alias="known_speaker_names[]", description="Names, one per...")
    ] = None,
    known_speaker_references: Annotated[
        list[str] | None,
        Form(alias="known_speaker_references[]", description="...2-10 s sample (data URL)"),
    ] = None,
    stream: Annotated[bool, Form(description=STREAM_HELP)] = False,
) -> Response:
    request = _Request(model, language, prompt, temperature, response_format, "transcribe", stream)
    wants_names = bool(known_speaker_names or known_speaker_references)
    if wants_names and response_format not in ("json", "verbose_json", "diarized_json"):
        raise ApiError(
            422,
            "invalid_parameter",
            "known_speaker_names[]: speakers are named in diarized_json, json and verbose_json",
        )
    await _check(services, request)
    known = await reference_speakers(services, known_speaker_names, known_speaker_references)
    granularities = tuple(timestamp_granularities or ("segment",))
    return await _respond(services, owner, file, request, granularities, known, http)


@router.post(
    "/v1/audio/translations",
    summary="OpenAI-compatible translation: speech in any language to English text",
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def create_translation(
    http: Request,
    services: Annotated[Services, Depends(get_services)],
    owner: Caller,
    file: Annotated[UploadFile, File(description="Audio in any format FFmpeg decodes")],
    model: Annotated[str, Form()] = "whisper-1",
    prompt: Annotated[str | None, Form(max_length=2000, description="In English")] = None,
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    response_format: Annotated[TranslationFormat, Form()] = "json",
    stream: Annotated[bool, Form(description=STREAM_HELP)] = False,
) -> Response:
    request = _Request(model, None, prompt, temperature, response_format, "translate", stream)
    await _check(services, request)
    return await _respond(services, owner, file, request, ("segment",), None, http)


@dataclass
class _Request:
    model: str
    language: str | None
    prompt: str | None
    temperature: float
    response_format: str
    task: str
    stream: bool = False


async def _check(services: Services, request: _Request) -> None:
    request.model = services.model_name(request.model)
    await check_language(services, request.language, request.model, request.task)


async def _respond(
    services: Services,
    owner: str | None,
    file: UploadFile,
    request: _Request,
    granularities: tuple[str, ...],
    known: list | None,
    http: Request,
) -> Response:
    """Transcribe (or translate) `file`: short audio directly, the rest as a job."""
    from serve_app.rendering import render_openai

    diarize = request.response_format == "diarized_json" or bool(known)
    if request.stream:
        return await _stream(services, owner, file, request, diarize, known, http)
    words = request.response_format not in ("json", "text")
    audio = None
    if not diarize and (file.size or 0) <= services.settings.direct_decode_max_mb * 1e6:
        # Stops decoding past the direct-path limit: memory is bounded by it, not the file.
        audio = await read_audio(file, services.settings.sync_direct_max_s)
    if audio is not None:
        options = TranscribeOptions(
            language=request.language,
            task=request.task,
            initial_prompt=request.prompt,
            temperature=request.temperature,
            word_timestamps=words,
        )
        transcriber = services.transcriber_for(request.model)
        transcription = await transcriber.transcribe.remote(audio, options)
        result = single(transcription, request.task)
    else:
        # Long or diarized audio takes the job path: split, fanned out, stitched.
        await file.seek(0)
        options = _job_options(request, diarize, known)
        key = await call_key(file, owner, options)
        with services.held_requests().hold(owner):  # 429/503 now rather than a held slot
            submitted = await create_or_reuse(services, file, options, owner, key)
            result = await _job_result(services, submitted, http)
    # Rendering a long transcript is CPU work: off the event loop.
    body, media_type = await asyncio.to_thread(
        render_openai,
        result,
        request.response_format,
        granularities,
        uri=file.filename or "audio",
    )
    return Response(body, media_type=media_type)


async def _stream(
    services: Services,
    owner: str | None,
    file: UploadFile,
    request: _Request,
    diarize: bool,
    known: list | None,
    http: Request,
) -> Response:
    """`stream=true`: Server-Sent Events (serve_app/services/streaming.py)."""
    held = services.held_requests()
    held.acquire(owner)  # 429/503 now, rather than a slot held for minutes
    try:
        if not diarize:
            options = TranscribeOptions(
                language=request.language,
                task=request.task,
                initial_prompt=request.prompt,
                temperature=request.temperature,
                word_timestamps=True,  # the stitcher's sentences come from words
            )
            stream = await open_window_stream(services, file, options, request.model)
            events = window_events(stream)
        else:
            options = _job_options(request, True, known)
            key = await call_key(file, owner, options)
            submitted = await create_or_reuse(services, file, options, owner, key)
            events = job_events(
                lambda: _job_result(services, submitted, http), services.settings.sse_keepalive_s
            )
    except BaseException:
        held.release(owner)
        raise
    return event_stream(services, owner, events)


def _job_options(request: _Request, diarize: bool, known: list | None):
    return job_options(
        model=request.model,
        task=request.task,
        language=request.language,
        initial_prompt=request.prompt,
        temperature=request.temperature,
        diarize=diarize,
        word_timestamps=True,
        known_speakers=known,
    )


async def _job_result(services: Services, submitted: JobRecord, http: Request) -> JobResult:
    """The finished result of the call's job (waited on), or the error its caller gets."""
    timeout = max(600.0, 2 * (submitted.duration or 0))
    record = await wait_for_job(services, submitted.id, timeout, http)
    if record is None or record.status is not JobStatus.COMPLETED:
        _job_error(submitted.id, record)
    raw = await services.store.result(record.id)
    return await asyncio.to_thread(JobResult.model_validate_json, raw)


def _job_error(job_id: str, record: JobRecord | None) -> NoReturn:
    """Why the call's job has no result, as the status OpenAI's client acts on."""
    if record is None:
        raise ApiError(410, "job_expired", f"transcription job {job_id} expired; send it again")
    if record.status is JobStatus.CANCELLED:
        raise ApiError(400, "job_cancelled", f"transcription job {job_id} was cancelled")
    error = f"{record.error_code}: {record.error_message}"
    status = INPUT_FAILURES.get(record.error_code or "", 500)  # else the server's failure
    raise ApiError(status, "job_failed", f"transcription job {job_id} failed: {error}")
