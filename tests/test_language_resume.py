"""Issue 22 item 6: the language pass resumes where it stopped, within the in-flight budget.

Real Redis and a real audio file; the transcriber is a fake that records its calls (and
can die mid-pass, as a killed manager does). The pass runs in the real stack in every
multilingual job (tests/test_multilingual.py)."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from deployments.core.schemas import SAMPLE_RATE, TranscribeOptions, Transcription
from deployments.core.splitter import SegmentPlan
from jobs.pipeline import language_pass
from jobs.state.job_store import JobStore
from jobs.state.records import JobOptions, JobRecord
from tests.synth import write_wav

SEG = 2 * SAMPLE_RATE
# (language, probability, seconds of speech): two short unsure segments between sure ones.
FOUND = [("en", 0.95, 1.8), ("fr", 0.3, 1.0), ("it", 0.3, 1.0), ("de", 0.2, 1.0), ("en", 0.9, 1.8)]


@pytest.fixture()
async def store(redis_server):
    s = JobStore(redis_server.url, prefix=f"lp{uuid.uuid4().hex[:6]}:")
    yield s
    await s.close()


def _transcription(language: str, p: float, speech_s: float) -> str:
    seg = {"start": 0.0, "end": speech_s, "text": "x", "language": language}
    return Transcription(
        language=language, language_probability=p, duration=2.0, segments=[seg]
    ).model_dump_json()


class _Transcriber:
    """Saves what a real call saves (a sure transcription in the asked language)."""

    def __init__(self, store: JobStore, job_id: str, die_after: int | None = None) -> None:
        self.store, self.job_id, self.die_after = store, job_id, die_after
        self.calls: list[int] = []
        self.in_flight = self.most_in_flight = 0

    async def __call__(self, plan: SegmentPlan, ref, options: TranscribeOptions) -> None:
        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise RuntimeError("the manager died")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.05)
        self.in_flight -= 1
        self.calls.append(plan.index)
        done = _transcription(options.language, 1.0, 1.0)
        await self.store.save_checkpoint(self.job_id, plan.key, "t", done)


async def _setup(store: JobStore, tmp_path):
    record = await store.create(
        JobRecord(id=str(uuid.uuid4()), audio_path="-", options=JobOptions(diarize=False))
    )
    plans = [SegmentPlan(i, i * SEG, (i + 1) * SEG, False) for i in range(len(FOUND))]
    for plan, found in zip(plans, FOUND, strict=True):
        await store.save_checkpoint(record.id, plan.key, "t", _transcription(*found))
    audio = write_wav(np.zeros(len(plans) * SEG, np.float32), tmp_path / "a.wav")
    return record, plans, audio


async def _settle(store, record, plans, audio, transcribe, limit):
    async def report(stage: str) -> None:
        pass

    await language_pass.settle_languages(
        store, record, plans, audio, False, transcribe, report, None, limit=limit
    )


async def test_a_resumed_pass_redoes_no_segment_it_finished(store, tmp_path, monkeypatch):
    monkeypatch.setattr(language_pass.ray, "put", lambda audio: audio)  # no cluster needed
    record, plans, audio = await _setup(store, tmp_path)
    dying = _Transcriber(store, record.id, die_after=1)
    with pytest.raises(RuntimeError, match="died"):
        await _settle(store, record, plans, audio, dying, limit=1)
    assert dying.calls == [1]  # segment 1 settled to English, then the manager died

    # The resumed pass keeps the decision it made (1, 2 and 3 to English), although
    # segment 1 now looks sure, and redoes only what it had not finished.
    resumed = _Transcriber(store, record.id)
    await _settle(store, record, plans, audio, resumed, limit=1)
    assert resumed.calls == [2, 3]

    again = _Transcriber(store, record.id)  # a third run: nothing left to do
    await _settle(store, record, plans, audio, again, limit=1)
    assert again.calls == []


async def test_a_resumed_pass_does_not_cut_a_segment_twice(store, tmp_path, monkeypatch):
    """Two sure languages: every segment where the voice changes is transcribed again, cut
    there. The resumed pass redoes only the segments it had not finished (before, it redid
    them all on every resume)."""
    from deployments.core.schemas import SpeakerChanges, SpeakerTurn

    monkeypatch.setattr(language_pass.ray, "put", lambda audio: audio)
    record = await store.create(
        JobRecord(id=str(uuid.uuid4()), audio_path="-", options=JobOptions(diarize=False))
    )
    plans = [SegmentPlan(i, i * 2 * SEG, (i + 1) * 2 * SEG, False) for i in range(3)]
    changes = SpeakerChanges(
        duration=4.0,
        turns=[
            SpeakerTurn(start=0, end=2, speaker="T0"),
            SpeakerTurn(start=2, end=4, speaker="T1"),
        ],
    ).model_dump_json()
    for plan, lang in zip(plans, ["en", "fr", "en"], strict=True):
        await store.save_checkpoint(record.id, plan.key, "t", _transcription(lang, 0.95, 3.5))
        await store.save_checkpoint(record.id, plan.key, "c", changes)
    audio = write_wav(np.zeros(6 * SEG, np.float32), tmp_path / "b.wav")

    async def report(stage: str) -> None:
        pass

    async def no_changes(plan, ref) -> None:
        raise AssertionError("the voice changes are checkpointed already")

    async def settle(transcribe) -> None:
        await language_pass.settle_languages(
            store, record, plans, audio, False, transcribe, report, no_changes, limit=1
        )

    dying = _Transcriber(store, record.id, die_after=1)
    with pytest.raises(RuntimeError, match="died"):
        await settle(dying)
    assert dying.calls == [0]
    resumed = _Transcriber(store, record.id)
    await settle(resumed)
    assert resumed.calls == [1, 2]


async def test_the_pass_keeps_to_its_in_flight_limit(store, tmp_path, monkeypatch):
    monkeypatch.setattr(language_pass.ray, "put", lambda audio: audio)
    record, plans, audio = await _setup(store, tmp_path)
    for limit in (1, 2):
        for part in ("ckpt", "lang"):  # a job run afresh
            await store.redis.delete(store._k("job", record.id, part))
        for plan, found in zip(plans, FOUND, strict=True):
            await store.save_checkpoint(record.id, plan.key, "t", _transcription(*found))
        transcriber = _Transcriber(store, record.id)
        await _settle(store, record, plans, audio, transcriber, limit=limit)
        assert sorted(transcriber.calls) == [1, 2, 3]
        assert transcriber.most_in_flight == limit
