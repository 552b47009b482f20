"""JobStore against a real Redis server: records, idempotency, checkpoints, events, TTLs."""

import uuid

import pytest

from jobs.state.job_store import JobStore, LeaseLost
from jobs.state.records import JobOptions, JobRecord, JobStatus


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
    await store.save_checkpoint(rec.id, "0:0-16000", "t", "{}")
    rec.status, rec.stage = JobStatus.COMPLETED, "completed"
    assert await store.finish(rec)
    assert rec.id not in await store.active_ids()
    assert rec.finished_at is not None
    ttl = await store.redis.ttl(store._k("job", rec.id, "ckpt"))
    assert 0 < ttl <= 60


async def test_checkpoints_and_call_counts(store):
    rec = await store.create(_record())
    await store.save_checkpoint(rec.id, "3:10-20", "t", '{"x": 1}')
    assert await store.checkpoint_keys(rec.id) == {"3:10-20:t"}
    await store.count_call(rec.id, "3:10-20", "t")
    assert await store.calls(rec.id) == {"3:10-20:t": 1}
    await store.count_call(rec.id, "3:10-20", "t")
    assert await store.calls(rec.id) == {"3:10-20:t": 2}


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


# -- issue 11: each transition is one atomic step --------------------------------------
async def test_concurrent_submissions_with_one_idempotency_key_create_one_job(store):
    import asyncio

    records = [_record(idempotency_key="same", owner="o1") for _ in range(20)]
    stored = await asyncio.gather(*(store.create(r) for r in records))
    assert len({r.id for r in stored}) == 1
    assert await store.redis.zcard(store._k("jobs", "created")) == 1
    assert len(await store.active_ids()) == 1


async def test_the_queue_cap_is_checked_in_the_same_step_as_the_write(store):
    import asyncio

    from jobs.state.job_store import QueueFull

    outcomes = await asyncio.gather(
        *(store.create(_record(), max_active=3) for _ in range(10)), return_exceptions=True
    )
    assert sum(isinstance(o, JobRecord) for o in outcomes) == 3
    assert sum(isinstance(o, QueueFull) for o in outcomes) == 7
    assert len(await store.active_ids()) == 3


async def test_a_job_finishes_once_and_queues_one_webhook_event(store):
    import asyncio

    rec = await store.create(_record())
    done, cancelled = rec.model_copy(), rec.model_copy()
    done.status, cancelled.status = JobStatus.COMPLETED, JobStatus.CANCELLED
    wins = await asyncio.gather(
        store.finish(done, webhook={"n": 1}), store.finish(cancelled, webhook={"n": 2})
    )
    assert sorted(wins) == [False, True]
    assert await store.redis.zcard(store._k("webhooks", "outbox")) == 1
    final = await store.get(rec.id)
    # A late progress write from the runner cannot revive a finished job.
    late = final.model_copy(update={"status": JobStatus.TRANSCRIBING})
    assert await store.save(late) == "terminal"
    assert (await store.get(rec.id)).status == final.status


async def test_requeue_takes_a_job_out_of_the_finished_index(store):
    rec = await store.create(_record())
    rec.status = JobStatus.FAILED
    assert await store.finish(rec)
    assert rec.id in await store.finished_before(rec.finished_at + 1)
    rec.status = JobStatus.QUEUED
    assert await store.requeue(rec)
    assert rec.id not in await store.finished_before(rec.finished_at + 1)
    assert rec.id in await store.active_ids()
    assert not await store.requeue(rec)  # only failed or cancelled jobs are retried


async def test_a_lease_has_one_holder_and_fences_progress_writes(store):
    rec = await store.create(_record())
    assert await store.claim(rec.id, "a", 5)
    assert not await store.claim(rec.id, "b", 5)
    assert await store.claim(rec.id, "a", 5)  # renewal
    rec.status = JobStatus.TRANSCRIBING
    assert await store.save(rec, lease="b") == "lease"
    assert await store.save(rec, lease="a") == "ok"
    await store.release(rec.id, "b")  # not the holder: no effect
    assert not await store.claim(rec.id, "b", 5)
    await store.release(rec.id, "a")
    assert await store.claim(rec.id, "b", 5)


async def test_result_writes_survive_a_resent_command(store):
    """redis-py resends a command whose reply was lost: the server then sees it twice."""
    rec = await store.create(_record())
    assert await store.claim(rec.id, "tok", 30)
    await store.result_reset(rec.id, "tok")
    for _ in range(2):  # the first append and its resend
        await store.result_append(rec.id, '{"a":"é",', 0, "tok")
    await store.result_append(rec.id, '"b":1}', len('{"a":"é",'.encode()), "tok")
    size = len('{"a":"é","b":1}'.encode())
    await store.result_commit(rec.id, size, "tok")
    await store.result_commit(rec.id, size, "tok")  # the resent RENAME finds it published
    assert await store.result(rec.id) == '{"a":"é","b":1}'
    assert await store.redis.ttl(store._k("job", rec.id, "result")) == -1
    with pytest.raises(RuntimeError, match="out of step"):  # a chunk that would leave a hole
        await store.result_append(rec.id, "x", 100, "tok")


async def test_a_runner_that_lost_its_lease_writes_nothing(store):
    rec = await store.create(_record())
    assert await store.claim(rec.id, "old", 30)
    await store.save_checkpoint(rec.id, "0:0-16000", "t", '{"v": 1}', "old")
    await store.redis.delete(store._k("job", rec.id, "lease"))  # it expired while paused
    assert await store.claim(rec.id, "new", 30)  # and another manager took the job
    writes = [
        store.save_checkpoint(rec.id, "0:0-16000", "t", '{"v": 2}', "old"),
        store.save_language_pass(rec.id, "cut", "{}", "old"),
        store.result_reset(rec.id, "old"),
        store.result_append(rec.id, "{}", 0, "old"),
        store.result_commit(rec.id, 2, "old"),
        store.save_voices(rec.id, {"SPEAKER_00": "{}"}, "old"),
    ]
    for write in writes:
        with pytest.raises(LeaseLost):
            await write
    rec.status, rec.stage = JobStatus.COMPLETED, "completed"
    assert not await store.finish(rec, lease="old")
    assert await store.checkpoint(rec.id, "0:0-16000:t") == '{"v": 1}'
    assert await store.language_pass(rec.id) == {}
    assert (await store.get(rec.id)).status is JobStatus.QUEUED
    assert await store.finish(rec, lease="new")


async def test_streamed_stitching_into_redis_with_every_write_sent_twice(store):
    from deployments.core.schemas import Transcription, TranscriptSegment, Word
    from deployments.core.splitter import SegmentPlan
    from jobs.stitching import result_writer
    from jobs.stitching.stitch import JobResult

    class Resending:  # each write reaches Redis twice, as after a lost reply
        def __getattr__(self, name):
            method = getattr(store, name)
            if not name.startswith(("result_", "save_")):
                return method

            async def twice(*args, **kwargs):
                await method(*args, **kwargs)
                return await method(*args, **kwargs)

            return twice

    rec = await store.create(_record())
    assert await store.claim(rec.id, "tok", 30)
    plans, words = [], []
    for i in range(3):
        plan = SegmentPlan(i, i * 160000, (i + 1) * 160000, False)
        said = [
            Word(start=j + 0.1, end=j + 0.6, text=f" w{i}{j}ü", probability=0.9) for j in range(9)
        ]
        seg = TranscriptSegment(start=0.1, end=8.6, text="".join(w.text for w in said), words=said)
        payload = Transcription(
            language="en", language_probability=1.0, duration=10.0, segments=[seg]
        )
        await store.save_checkpoint(rec.id, plan.key, "t", payload.model_dump_json(), "tok")
        plans.append(plan)
        words += [w.text.strip() for w in said]
    original = result_writer.CHUNK_CHARS
    result_writer.CHUNK_CHARS = 100  # many appends
    try:
        await result_writer.stitch_to_store(Resending(), rec.id, plans, 30.0, None, lease="tok")
    finally:
        result_writer.CHUNK_CHARS = original
    result = JobResult.model_validate_json(await store.result(rec.id))
    assert [w.text.strip() for s in result.segments for w in s.words] == words
