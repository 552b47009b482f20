"""Speakers, as every router needs them: voices from samples (the Diarizer replicas),
OpenAI-style references as voiceprints, and a job's enrolled `speakers` resolved."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re

from pydantic import BaseModel

from deployments.core.audio import AudioDecodeError, decode_audio
from deployments.core.schemas import VoiceSample
from jobs.stitching.voiceprints import (
    MAX_KNOWN_SPEAKERS,
    EnrollmentRejected,
    KnownSpeaker,
    check_name,
    voiceprint,
)
from serve_app.errors import ApiError
from serve_app.services.context import Services

DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w-]+=[\w.-]+)*;base64,", re.I)


def rejected(exc: EnrollmentRejected) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def _decode_sample(data: bytes, name: str, max_s: float) -> object:
    try:
        return decode_audio(data, max_s=max_s, limit_name="sample length")
    except AudioDecodeError as exc:
        if exc.code == "audio_too_long":
            raise ApiError(
                422, "sample_too_long", f"{name}: longer than {max_s:g} s; send 2-10 s"
            ) from None
        raise ApiError(422, exc.code, f"{name}: {exc.message}") from None


async def sample_voices(services: Services, samples: list[tuple[str, bytes]]) -> list[VoiceSample]:
    """Each sample's main voice, from the Diarizer replicas (decoded off the event loop)."""
    max_s = services.settings.speaker_sample_max_s
    audios = [await asyncio.to_thread(_decode_sample, d, name, max_s) for name, d in samples]
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
