"""JobStore against a real Redis server: records, idempotency, checkpoints, events, TTLs."""

import uuid

import pytest

from jobs.records import JobOptions, JobRecord, JobStatus
from jobs.store import JobStore


@pytest.fixture()
async def store(redis_server):
    s = JobStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", result_ttl_s=60)
    yield s
    await s.close()


def _record(**kw) -> JobRecord:
    return JobRecord(id=str(uuid.uuid4()), audio_path="/nowhere", **kw)


async def test_create_get_and_active_set(store):
    rec = await store.create(_record(options=JobOptions(num_speakers=2)))
    got = await store.get(rec.id)
    assert got == rec and got.options.num_speakers == 2
    assert rec.id in await store.active_ids()
    assert await store.get(str(uuid.uuid4())) is None


async def test_idempotency_key_returns_the_first_job(store):
    a = await store.create(_record(idempotency_key="k1"))
    b = await store.create(_record(idempotency_key="k1"))
    c = await store.create(_record(idempotency_key="k2"))
    assert a.id == b.id != c.id


async def test_terminal_jobs_leave_the_active_set_and_expire(store):
    rec = await store.create(_record())
    await store.save_checkpoint(rec.id, 0, "t", "{}")
    await store.set_status(rec, JobStatus.COMPLETED, "completed")
    assert rec.id not in await store.active_ids()
    assert rec.finished_at is not None
    ttl = await store.redis.ttl(store._k("job", rec.id, "ckpt"))
    assert 0 < ttl <= 60


async def test_checkpoints_and_call_counts(store):
    rec = await store.create(_record())
    await store.save_checkpoint(rec.id, 3, "t", '{"x": 1}')
    assert await store.checkpoint_keys(rec.id) == {"3:t"}
    assert await store.count_call(rec.id, 3, "t") == 1
    assert await store.count_call(rec.id, 3, "t") == 2
    assert await store.calls(rec.id) == {"3:t": 2}


async def test_events_replay_every_progress_change(store):
    rec = await store.create(_record())
    rec.status, rec.segments_done = JobStatus.TRANSCRIBING, 1
    await store.save(rec)
    events = [e async for _, e in store.events(rec.id, "0-0", block_ms=100)]
    assert [e["status"] for e in events] == ["queued", "transcribing"]
    assert events[-1]["segments_done"] == 1


def test_invalid_options_name_the_field():
    with pytest.raises(ValueError, match="min_speakers"):
        JobOptions(min_speakers=4, max_speakers=2)
    with pytest.raises(ValueError, match="num_speakers"):
        JobOptions(num_speakers=0)
