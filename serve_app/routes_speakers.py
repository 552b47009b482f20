"""Known speakers: enroll a voice once (samples, or a speaker of a finished job), then name
that person in every transcript that asks for them (jobs `speakers`, OpenAI
`known_speaker_names[]` + `known_speaker_references[]`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile
from pydantic import BaseModel

from deployments.audio import AudioDecodeError, decode_audio
from deployments.schemas import VoiceSample
from jobs.records import JobStatus
from jobs.voiceprints import (
    MAX_KNOWN_SPEAKERS,
    EnrollmentRejected,
    KnownSpeaker,
    check_name,
    job_voice,
    new_profile,
    voiceprint,
)
from serve_app.auth import Caller
from serve_app.errors import ApiError
from serve_app.http_models import ErrorBody
from serve_app.services import Services, get_services

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422)}
router = APIRouter(tags=["speakers"], responses=ERRORS)
ServicesDep = Annotated[Services, Depends(get_services)]
SpeakerId = Annotated[str, Path(min_length=1, max_length=64)]

MAX_SAMPLE_S = 60.0  # one enrollment sample; 2-10 s of one person speaking works well
MAX_SAMPLES = 10
DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w-]+=[\w.-]+)*;base64,", re.I)


def rejected(exc: EnrollmentRejected) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def _decode_sample(data: bytes, name: str) -> object:
    try:
        return decode_audio(data, max_s=MAX_SAMPLE_S, limit_name="sample length")
    except AudioDecodeError as exc:
        if exc.code == "audio_too_long":
            raise ApiError(
                422, "sample_too_long", f"{name}: longer than {MAX_SAMPLE_S:g} s; send 2-10 s"
            ) from None
        raise ApiError(422, exc.code, f"{name}: {exc.message}") from None


async def sample_voices(services: Services, samples: list[tuple[str, bytes]]) -> list[VoiceSample]:
    """Each sample's main voice, from the Diarizer replicas (decoded off the event loop)."""
    audios = [await asyncio.to_thread(_decode_sample, data, name) for name, data in samples]
    results = await asyncio.gather(*(services.diarizer.voiceprint.remote(a) for a in audios))
    # Validated against this version's schema, as the job manager does for segments.
    return [
        VoiceSample.model_validate(r.model_dump() if isinstance(r, BaseModel) else r)
        for r in results
    ]


def data_url_bytes(url: str, name: str) -> bytes:
    match = DATA_URL.match(url.strip())
    if not match:
        raise ApiError(
            422,
            "invalid_reference",
            f"{name}: expected a base64 data URL such as data:audio/wav;base64,...",
        )
    try:
        return base64.b64decode(url.strip()[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_reference", f"{name}: the base64 data is corrupt") from None


async def reference_speakers(
    services: Services, names: list[str] | None, references: list[str] | None
) -> list[KnownSpeaker]:
    """OpenAI's known_speaker_names[] + known_speaker_references[] as voiceprints."""
    names, references = names or [], references or []
    if len(names) != len(references):
        raise ApiError(
            422,
            "invalid_parameter",
            f"known_speaker_names[] has {len(names)} entries and known_speaker_references[] "
            f"{len(references)}; give one reference per name",
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise ApiError(422, "too_many_speakers", f"at most {MAX_KNOWN_SPEAKERS} known speakers")
    try:
        names = [check_name(n) for n in names]
    except EnrollmentRejected as exc:
        raise rejected(exc) from None
    if len(set(names)) != len(names):
        raise ApiError(422, "invalid_parameter", "known_speaker_names[]: names must differ")
    labels = [f"known_speaker_references[{i}] ({n})" for i, n in enumerate(names)]
    samples = [(lab, data_url_bytes(r, lab)) for lab, r in zip(labels, references, strict=True)]
    voices = await sample_voices(services, samples)
    known = []
    for name, label, voice in zip(names, labels, voices, strict=True):
        try:
            embedding, _ = voiceprint([voice], [label])
        except EnrollmentRejected as exc:
            raise rejected(exc) from None
        known.append(KnownSpeaker(name=name, embedding=embedding))
    return known


async def enrolled_speakers(
    services: Services, owner: str | None, refs: list[str] | None
) -> list[KnownSpeaker]:
    """The jobs API's `speakers` (ids or names of the caller's enrolled speakers)."""
    if not refs:
        return []
    try:
        return await services.speakers.resolve(owner, [r for r in refs if r.strip()])
    except EnrollmentRejected as exc:
        raise rejected(exc) from None


@router.post("/v1/speakers", status_code=201, summary="Enroll a known speaker")
async def create_speaker(
    services: ServicesDep,
    owner: Caller,
    name: Annotated[str, Form(description="How transcripts will name this person")],
    file: Annotated[
        list[UploadFile] | None,
        File(description="One or more samples of the person speaking alone (2-10 s each)"),
    ] = None,
    job_id: Annotated[str | None, Form(description="Or: a finished job of yours...")] = None,
    speaker: Annotated[str | None, Form(description="...and a speaker label in it")] = None,
) -> dict:
    from serve_app.routes_jobs import load_job

    if bool(file) == bool(job_id):
        raise ApiError(
            422, "invalid_parameter", "give either audio samples (file) or job_id and speaker"
        )
    try:
        name = check_name(name)
        if file:
            if len(file) > MAX_SAMPLES:
                raise EnrollmentRejected("too_many_samples", f"at most {MAX_SAMPLES} samples")
            samples = [(f"file {f.filename or i + 1}", await f.read()) for i, f in enumerate(file)]
            voices = await sample_voices(services, samples)
            embedding, speech_s = voiceprint(voices, [n for n, _ in samples])
            source, count = "samples", len(samples)
        else:
            if not speaker:
                raise EnrollmentRejected("invalid_parameter", "speaker: the label in the job")
            record = await load_job(services, job_id, owner)
            if record.status is not JobStatus.COMPLETED:
                raise ApiError(
                    409, "job_not_completed", f"job_id: job {record.id} is {record.status.value}"
                )
            found = job_voice(await services.store.voice(record.id, speaker))
            if found is None:
                raise ApiError(
                    422, "unknown_speaker", f"speaker: job {record.id} has no speaker {speaker!r}"
                )
            embedding, speech_s = found
            source, count = f"job:{record.id}/{speaker}", 0
        profile = new_profile(name, owner, embedding, count, speech_s, source)
        return (await services.speakers.create(profile)).public()
    except EnrollmentRejected as exc:
        raise rejected(exc) from None


@router.get("/v1/speakers", summary="The caller's enrolled speakers")
async def list_speakers(services: ServicesDep, owner: Caller) -> dict:
    return {"data": [p.public() for p in await services.speakers.list(owner)]}


@router.get("/v1/speakers/{speaker_id}", summary="One enrolled speaker")
async def get_speaker(services: ServicesDep, owner: Caller, speaker_id: SpeakerId) -> dict:
    profile = await services.speakers.get(owner, speaker_id)
    if profile is None:  # another key's speaker is indistinguishable from a missing one
        raise ApiError(404, "speaker_not_found", f"speaker_id: no speaker {speaker_id}")
    return profile.public()


@router.delete("/v1/speakers/{speaker_id}", summary="Forget an enrolled speaker")
async def delete_speaker(services: ServicesDep, owner: Caller, speaker_id: SpeakerId) -> dict:
    if not await services.speakers.delete(owner, speaker_id):
        raise ApiError(404, "speaker_not_found", f"speaker_id: no speaker {speaker_id}")
    return {"id": speaker_id, "object": "speaker", "deleted": True}
