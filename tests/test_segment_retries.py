"""Segment calls: timeouts are retried with backoff, then fail the job with a clear message.

The model handle is faked here (what is isolated is the retry policy); Redis is real. The
real-stack paths are in test_jobs_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest

from deployments.core.schemas import InputRejected, Transcription
from deployments.core.splitter import SegmentPlan
from jobs.config import JobsConfig
from jobs.pipeline.job_pipeline import JobPipeline, SegmentFailed
from jobs.state.job_store import JobStore
from jobs.state.records import JobRecord


class FakeResponse:
    def __init__(self, behaviour):
        self.behaviour, self.cancelled = behaviour, False

    def __await__(self):
        return self.behaviour().__await__()

    def cancel(self):
        self.cancelled = True


class FakeHandle:
    """Plays a script of behaviours, one per call: 'hang', 'boom', 'bad' or 'ok'."""

    def __init__(self, script: list[str]):
        self.script, self.responses = list(script), []
        self.transcribe = self

    def remote(self, audio, options):
        kind = self.script.pop(0)

        async def behaviour():
            if kind == "hang":
                await asyncio.sleep(3600)
            if kind == "boom":
                raise RuntimeError("replica died")
            if kind == "reject":  # as Ray delivers it: a wrapper with the cause and a traceback
                raise _RayLikeError(InputRejected("invalid num_speakers: too small"))
            if kind == "crash":
                raise _RayLikeError(RuntimeError("CUDA error: out of memory"))
            if kind == "bad":
                return {"text": "a sentence-level shape from another version"}
            return Transcription(language="en", language_probability=1.0, duration=1.0, segments=[])

        self.responses.append(FakeResponse(behaviour))
        return self.responses[-1]


class _RayLikeError(Exception):
    def __init__(self, cause: Exception):
        super().__init__(
            f"ray::Diarizer.diarize()\nTraceback (most recent call last):\n  {cause!r}"
        )
        self.cause = cause


@pytest.fixture()
async def runner(redis_server):
    store = JobStore(redis_server.url, prefix=f"r{uuid.uuid4().hex[:6]}:")
    config = JobsConfig(
        redis_url=redis_server.url,
        storage_dir="/tmp",
        segment_timeout_s=0.3,
        segment_max_attempts=3,
        retry_base_s=0.2,
    )
    yield JobPipeline(store, config), store
    await store.close()


async def _record(store: JobStore) -> JobRecord:
    return await store.create(JobRecord(id=str(uuid.uuid4()), audio_path="/nowhere"))


PLAN = SegmentPlan(index=0, start=0, end=16000, forced=False)


async def test_hang_then_success_is_retried_and_checkpointed(runner):
    seg, store = runner
    record = await _record(store)
    seg._handles["Transcriber"] = handle = FakeHandle(["hang", "boom", "ok"])
    t0 = time.monotonic()
    await seg._call(record, PLAN, "t", np.zeros(16000, np.float32), _NoProgress())
    elapsed = time.monotonic() - t0
    assert handle.responses[0].cancelled  # the hung call was cancelled, not leaked
    assert elapsed >= 0.3 + 0.2 + 0.4  # timeout, then backoff 0.2 s and 0.4 s
    assert await store.checkpoint_keys(record.id) == {"0:0-16000:t"}
    assert await store.calls(record.id) == {"0:0-16000:t": 3}


async def test_hang_every_time_fails_with_a_clear_message(runner):
    seg, store = runner
    record = await _record(store)
    seg._handles["Transcriber"] = FakeHandle(["hang"] * 3)
    with pytest.raises(SegmentFailed) as err:
        await seg._call(record, PLAN, "t", np.zeros(16000, np.float32), _NoProgress())
    assert "failed 3 times" in err.value.message
    assert "did not answer within" in err.value.message
    assert await store.checkpoint_keys(record.id) == set()


async def test_drifted_output_schema_is_caught_at_the_boundary(runner):
    seg, store = runner
    record = await _record(store)
    seg._handles["Transcriber"] = FakeHandle(["bad"] * 3)
    with pytest.raises(SegmentFailed, match="returned malformed data"):
        await seg._call(record, PLAN, "t", np.zeros(16000, np.float32), _NoProgress())


class _NoProgress:
    lease = None

    def part_done(self, index, part):
        pass


async def test_input_rejected_fails_at_once_with_one_line(runner):
    seg, store = runner
    record = await _record(store)
    seg._handles["Transcriber"] = FakeHandle(["reject", "ok", "ok"])
    with pytest.raises(SegmentFailed) as err:
        await seg._call(record, PLAN, "t", np.zeros(16000, np.float32), _NoProgress())
    assert err.value.code == "input_rejected"
    assert await store.calls(record.id) == {"0:0-16000:t": 1}  # deterministic: not retried
    assert err.value.message == "Segment 1 (0.0-1.0 s): invalid num_speakers: too small"


async def test_retried_failure_message_shows_no_replica_internals(runner):
    seg, store = runner
    record = await _record(store)
    seg._handles["Transcriber"] = FakeHandle(["crash"] * 3)
    with pytest.raises(SegmentFailed) as err:
        await seg._call(record, PLAN, "t", np.zeros(16000, np.float32), _NoProgress())
    message = err.value.message
    assert "\n" not in message and "Traceback" not in message
    # Device errors and Ray actor names are for the log, not for the job's owner.
    assert "CUDA" not in message and "ray::" not in message and "RuntimeError" not in message
    assert message == (
        "Segment 1 (0.0-1.0 s) failed 3 times; last error: the transcription model failed "
        "(details are in the job manager's log)."
    )
