"""Enrolled speakers in Redis, scoped to the API key that enrolled them; no audio is kept.

The matching maths lives in jobs/stitching/voiceprints.py.
"""

from __future__ import annotations

import json
import time
import uuid

from pydantic import BaseModel, ConfigDict, Field

from jobs.stitching.voiceprints import (
    MAX_KNOWN_SPEAKERS,
    EnrollmentRejected,
    KnownSpeaker,
    check_name,
)


class SpeakerProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    owner: str | None = None
    embedding: list[float]
    samples: int
    speech_s: float
    source: str  # "samples" or "job:{id}/{label}"
    created_at: float = Field(default_factory=time.time)

    def public(self) -> dict:
        """What callers see: no embedding, no owner."""
        fields = {"id", "name", "samples", "speech_s", "source", "created_at"}
        return self.model_dump(include=fields)

    def known(self) -> KnownSpeaker:
        return KnownSpeaker(id=self.id, name=self.name, embedding=self.embedding)


class NameTaken(EnrollmentRejected):
    def __init__(self, name: str) -> None:
        super().__init__("name_taken", f"name: a speaker named {name!r} already exists", 409)


_CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""


class SpeakerRegistry:
    """Enrolled speakers in Redis: `speaker:{id}` (JSON profile) and, per owner,
    `speakers:{owner}` (name -> id), so names are unique per API key."""

    def __init__(self, redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self._create = redis.register_script(_CREATE)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _names(self, owner: str | None) -> str:
        return self._k("speakers", owner or "-")

    async def create(self, profile: SpeakerProfile) -> SpeakerProfile:
        keys = [self._names(profile.owner), self._k("speaker", profile.id)]
        args = [profile.name, profile.id, profile.model_dump_json()]
        if not await self._create(keys=keys, args=args):
            raise NameTaken(profile.name)
        return profile

    async def get(self, owner: str | None, speaker_id: str) -> SpeakerProfile | None:
        raw = await self.redis.get(self._k("speaker", speaker_id))
        profile = SpeakerProfile.model_validate_json(raw) if raw else None
        return profile if profile and profile.owner == owner else None

    async def list(self, owner: str | None) -> list[SpeakerProfile]:
        ids = await self.redis.hvals(self._names(owner))
        raws = await self.redis.mget([self._k("speaker", i) for i in ids]) if ids else []
        profiles = [SpeakerProfile.model_validate_json(r) for r in raws if r]
        return sorted(profiles, key=lambda p: p.name.lower())

    async def delete(self, owner: str | None, speaker_id: str) -> bool:
        profile = await self.get(owner, speaker_id)
        if profile is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._k("speaker", speaker_id))
            pipe.hdel(self._names(owner), profile.name)
            await pipe.execute()
        return True

    async def resolve(self, owner: str | None, refs: list[str]) -> list[KnownSpeaker]:
        """Enrolled speakers by id or name (the caller's own); unknown ones are a 422."""
        out: dict[str, KnownSpeaker] = {}
        for ref in refs:
            ref = ref.strip()
            speaker_id = await self.redis.hget(self._names(owner), ref)
            profile = await self.get(owner, speaker_id or ref)
            if profile is None:
                raise EnrollmentRejected(
                    "unknown_speaker", f"speakers: no enrolled speaker {ref!r} (id or name)"
                )
            out[profile.id] = profile.known()
        if len(out) > MAX_KNOWN_SPEAKERS:
            raise EnrollmentRejected(
                "too_many_speakers", f"speakers: at most {MAX_KNOWN_SPEAKERS} per request"
            )
        return list(out.values())


def new_profile(
    name: str,
    owner: str | None,
    embedding: list[float],
    samples: int,
    speech_s: float,
    source: str,
) -> SpeakerProfile:
    return SpeakerProfile(
        id=f"spk_{uuid.uuid4().hex[:20]}",
        name=check_name(name),
        owner=owner,
        embedding=embedding,
        samples=samples,
        speech_s=speech_s,
        source=source,
    )


def job_voice(raw: str | None) -> tuple[list[float], float] | None:
    """A stored voice of a finished job (jobs/stitching/result_writer.py): (embedding,
    seconds of speech)."""
    if not raw:
        return None
    data = json.loads(raw)
    return data["embedding"], float(data["speech_s"])
