"""Voiceprints: enrollment checks, one-to-one naming, the Redis registry (real Redis)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.core.schemas import DiarizeOptions, VoiceSample
from jobs.state.records import JobOptions
from jobs.state.speakers import NameTaken, SpeakerRegistry, new_profile
from jobs.stitching.stitch import stitch
from jobs.stitching.voiceprints import (
    MATCH_THRESHOLD,
    EnrollmentRejected,
    KnownSpeaker,
    assign,
    voiceprint,
)
from tests.test_stitch import _conversation

DIM = 256


def _unit(v):
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def people() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.stack([_unit(rng.normal(size=DIM)) for _ in range(4)])


def _sample(v, speech=4.0, other=0.0, other_sim=None) -> VoiceSample:
    return VoiceSample(
        duration=speech + other,
        speech_s=speech,
        other_speech_s=other,
        other_similarity=other_sim,
        voices=1 + bool(other),
        embedding=list(v),
    )


@pytest.mark.parametrize(
    ("samples", "code"),
    [
        ([], "no_samples"),
        (
            [VoiceSample(duration=3, speech_s=0, other_speech_s=0, voices=0, embedding=[])],
            "no_speech",
        ),
        (["a", 0.6], "sample_too_short"),
        (["a", 4.0, 3.0, 0.2], "two_voices"),
        (["a", 4.0, "b"], "samples_disagree"),
    ],
)
def test_enrollment_refuses_unusable_samples(people, samples, code):
    if samples and isinstance(samples[0], str):
        first = _sample(people[0], *[x for x in samples[1:] if not isinstance(x, str)][:3])
        samples = [first] + ([_sample(people[1])] if samples[-1] == "b" else [])
    with pytest.raises(EnrollmentRejected) as info:
        voiceprint(samples)
    assert info.value.code == code


def test_a_split_voice_of_one_person_is_not_two_voices(people):
    # The diarizer may cut one person's short sample in two similar halves.
    embedding, speech = voiceprint([_sample(people[0], 4.0, 1.2, 0.43), _sample(people[0])])
    assert speech == 8.0 and np.dot(embedding, people[0]) > 0.99


def test_assignment_is_one_to_one_and_never_forces_a_name(people):
    known = [KnownSpeaker(name=n, embedding=list(people[i])) for i, n in enumerate("ABC")]
    rng = np.random.default_rng(0)
    noisy = {f"c{i}": _unit(people[i] + rng.normal(0, 0.02, DIM)) for i in (0, 1, 3)}
    # A second cluster that resembles A less than c0 does must not take A's name too.
    noisy["c0b"] = _unit(people[0] + rng.normal(0, 0.08, DIM))
    found = assign(noisy, known)
    assert {k: v[0].name for k, v in found.items()} == {"c0": "A", "c1": "B"}
    assert all(sim >= MATCH_THRESHOLD for _, sim in found.values())
    assert assign(noisy, []) == {} and assign({}, known) == {}


def test_stitch_names_known_voices_everywhere_and_keeps_others_anonymous():
    rng = np.random.default_rng(12)
    voices = np.stack([_unit(rng.normal(size=DIM)) for _ in range(3)])
    outs, _ = _conversation(voices, rng, segments=4)
    known = [
        KnownSpeaker(id="spk_1", name="Ana", embedding=list(voices[0])),
        KnownSpeaker(id="spk_2", name="Ben", embedding=list(voices[2])),
        KnownSpeaker(id="spk_3", name="Absent", embedding=list(_unit(rng.normal(size=DIM)))),
    ]
    res = stitch(outs, 120.0, DiarizeOptions(), known=known)
    assert sorted(res.speakers) == ["Ana", "Ben", "SPEAKER_00"]
    assert {t.speaker for t in res.turns} == set(res.speakers)
    assert {w.speaker for s in res.segments for w in s.words} == set(res.speakers)
    matches = {m.speaker: m for m in res.speaker_matches}
    assert matches["Ana"].speaker_id == "spk_1" and matches["Ana"].similarity > 0.9
    assert matches["SPEAKER_00"].speaker_id is None
    assert matches["SPEAKER_00"].similarity < MATCH_THRESHOLD
    plain = stitch(outs, 120.0, DiarizeOptions())
    assert plain.speakers == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    assert plain.speaker_matches == []


def test_job_options_hide_voiceprints_and_need_diarization(people):
    known = [KnownSpeaker(id="spk_1", name="Ana", embedding=list(people[0]))]
    options = JobOptions(known_speakers=known)
    assert options.public()["known_speakers"] == [{"id": "spk_1", "name": "Ana"}]
    with pytest.raises(ValueError, match="diarize"):
        JobOptions(known_speakers=known, diarize=False)
    with pytest.raises(ValueError, match="distinct"):
        JobOptions(known_speakers=known * 2)


def test_registry_scopes_names_and_profiles_per_owner(redis_server, people):
    from jobs.state.job_store import connect

    async def scenario():
        redis = connect(redis_server.url, 3)
        registry = SpeakerRegistry(redis, "vp-test:")
        await redis.delete(*[k async for k in redis.scan_iter("vp-test:*")] or ["-"])
        ana = await registry.create(new_profile("Ana", "alice", list(people[0]), 2, 8.0, "samples"))
        with pytest.raises(NameTaken):
            await registry.create(new_profile("Ana", "alice", list(people[1]), 1, 4.0, "samples"))
        # Another key may use the same name, and never sees alice's speakers.
        other = await registry.create(new_profile("Ana", "bob", list(people[1]), 1, 4, "samples"))
        assert [p.id for p in await registry.list("alice")] == [ana.id]
        assert await registry.get("bob", ana.id) is None
        assert [k.embedding for k in await registry.resolve("bob", ["Ana"])] == [other.embedding]
        assert [k.id for k in await registry.resolve("alice", [ana.id, "Ana"])] == [ana.id]
        with pytest.raises(EnrollmentRejected, match="no enrolled speaker"):
            await registry.resolve("bob", [ana.id])
        assert not await registry.delete("bob", ana.id)
        assert await registry.delete("alice", ana.id)
        assert await registry.list("alice") == []
        # The name is free again after a delete.
        await registry.create(new_profile("Ana", "alice", list(people[2]), 1, 4.0, "samples"))
        with pytest.raises(EnrollmentRejected, match="anonymous label"):
            new_profile("SPEAKER_03", "alice", list(people[2]), 1, 4.0, "samples")
        await redis.aclose()

    asyncio.run(scenario())
