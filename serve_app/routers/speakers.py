"""Known speakers: enroll a voice once (samples, or a speaker of a finished job), then name
that person in every transcript that asks for them (jobs `speakers`, OpenAI
`known_speaker_names[]` + `known_speaker_references[]`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile

from jobs.state.records import JobStatus
from jobs.state.speakers import job_voice, new_profile
from jobs.stitching.voiceprints import (
    EnrollmentRejected,
    check_name,
    voiceprint,
)
from serve_app.auth import Caller
from serve_app.errors import ApiError
from serve_app.http_models import ErrorBody
from serve_app.services.context import Services, get_services
from serve_app.services.jobs import load_job
from serve_app.services.speakers import rejected, sample_voices

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422)}
router = APIRouter(tags=["speakers"], responses=ERRORS)
ServicesDep = Annotated[Services, Depends(get_services)]
SpeakerId = Annotated[str, Path(min_length=1, max_length=64)]


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
    if bool(file) == bool(job_id):
        raise ApiError(
            422, "invalid_parameter", "give either audio samples (file) or job_id and speaker"
        )
    try:
        name = check_name(name)
        if file:
            most = services.settings.speaker_max_samples
            if len(file) > most:
                raise EnrollmentRejected("too_many_samples", f"at most {most} samples")
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
