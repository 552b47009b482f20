"""All job state in Redis (redis-py asyncio): records, segment checkpoints, events, results.

Layout (prefix `sc:`):
  job:{id}            JSON JobRecord
  job:{id}:plan       hash  index -> SegmentPlan JSON
  job:{id}:ckpt       hash  "{index}:t" / "{index}:d" -> Transcription / Diarization JSON
  job:{id}:calls      hash  "{index}:t" / "{index}:d" -> model calls dispatched
  job:{id}:events     stream of progress snapshots (SSE reads it; nothing is lost between polls)
  job:{id}:result     JSON JobResult
  jobs:active         set of non-terminal job ids (resumed on manager start)
  jobs:created        zset id -> created_at;  jobs:owner:{owner} the same per API key
  jobs:finished       zset id -> finished_at (retention janitor)
  idem:{owner}:{key}  job id for an Idempotency-Key
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.records import JobRecord, JobStatus

EVENTS_MAXLEN = 2000


def connect(url: str) -> aioredis.Redis:
    """A client that rides out a Redis restart of up to ~30 s instead of failing the job."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=30),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        health_check_interval=15,
        socket_connect_timeout=5,
    )


class JobStore:
    def __init__(self, url: str, prefix: str = "sc:", result_ttl_s: float = 7 * 86400) -> None:
        self.url = url
        self.redis = connect(url)
        self.prefix = prefix
        self.result_ttl_s = int(result_ttl_s)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- records ---------------------------------------------------------------------------
    async def create(self, record: JobRecord) -> JobRecord:
        """Store a new job; with an idempotency key, return the existing job instead."""
        if record.idempotency_key:
            idem = self._k("idem", record.owner or "-", record.idempotency_key)
            if not await self.redis.set(idem, record.id, nx=True, ex=self.result_ttl_s):
                existing = await self.get(await self.redis.get(idem) or "")
                if existing is not None:
                    return existing
                await self.redis.set(idem, record.id, ex=self.result_ttl_s)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("job", record.id), record.model_dump_json())
            pipe.sadd(self._k("jobs", "active"), record.id)
            pipe.zadd(self._k("jobs", "created"), {record.id: record.created_at})
            if record.owner:
                pipe.zadd(self._k("jobs", "owner", record.owner), {record.id: record.created_at})
            pipe.xadd(
                self._k("job", record.id, "events"),
                {"data": json.dumps(record.progress())},
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
            await pipe.execute()
        return record

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self._k("job", job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    async def save(self, record: JobRecord, event: bool = True) -> None:
        """Write the record (and a progress event); terminal jobs leave the active set."""
        record.touch()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("job", record.id), record.model_dump_json())
            if event:
                pipe.xadd(
                    self._k("job", record.id, "events"),
                    {"data": json.dumps(record.progress())},
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
            if record.status.terminal:
                pipe.srem(self._k("jobs", "active"), record.id)
                pipe.zadd(
                    self._k("jobs", "finished"), {record.id: record.finished_at or time.time()}
                )
                for key in self._job_keys(record.id):
                    pipe.expire(key, self.result_ttl_s)
            else:
                pipe.sadd(self._k("jobs", "active"), record.id)
                for key in self._job_keys(record.id):
                    pipe.persist(key)
            await pipe.execute()

    def _job_keys(self, job_id: str) -> list[str]:
        return [
            self._k("job", job_id, *s)
            for s in ((), ("plan",), ("ckpt",), ("calls",), ("events",), ("result",))
        ]

    async def active_ids(self) -> list[str]:
        return sorted(await self.redis.smembers(self._k("jobs", "active")))

    async def list_ids(self, owner: str | None, offset: int, limit: int) -> list[str]:
        key = self._k("jobs", "owner", owner) if owner else self._k("jobs", "created")
        return list(await self.redis.zrevrange(key, offset, offset + limit - 1))

    # -- cancellation ----------------------------------------------------------------------
    async def request_cancel(self, job_id: str) -> None:
        await self.redis.set(self._k("job", job_id, "cancel"), "1", ex=self.result_ttl_s)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self._k("job", job_id, "cancel")))

    async def clear_cancel(self, job_id: str) -> None:
        await self.redis.delete(self._k("job", job_id, "cancel"))

    # -- segments --------------------------------------------------------------------------
    async def save_plan(self, job_id: str, index: int, plan_json: str) -> None:
        await self.redis.hset(self._k("job", job_id, "plan"), str(index), plan_json)

    async def plans(self, job_id: str) -> dict[int, str]:
        raw = await self.redis.hgetall(self._k("job", job_id, "plan"))
        return {int(k): v for k, v in raw.items()}

    async def save_checkpoint(self, job_id: str, index: int, part: str, payload: str) -> None:
        await self.redis.hset(self._k("job", job_id, "ckpt"), f"{index}:{part}", payload)

    async def checkpoints(self, job_id: str) -> dict[str, str]:
        return await self.redis.hgetall(self._k("job", job_id, "ckpt"))

    async def checkpoint_keys(self, job_id: str) -> set[str]:
        return set(await self.redis.hkeys(self._k("job", job_id, "ckpt")))

    async def count_call(self, job_id: str, index: int, part: str) -> int:
        return int(await self.redis.hincrby(self._k("job", job_id, "calls"), f"{index}:{part}", 1))

    async def calls(self, job_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self._k("job", job_id, "calls"))
        return {k: int(v) for k, v in raw.items()}

    # -- results and events ----------------------------------------------------------------
    async def save_result(self, job_id: str, result_json: str) -> None:
        await self.redis.set(self._k("job", job_id, "result"), result_json)

    async def result(self, job_id: str) -> str | None:
        return await self.redis.get(self._k("job", job_id, "result"))

    async def events(
        self, job_id: str, last_id: str = "0-0", block_ms: int = 15000
    ) -> AsyncIterator[tuple[str, dict]]:
        """Progress events after `last_id`, waiting up to `block_ms` for new ones."""
        key = self._k("job", job_id, "events")
        reply = await self.redis.xread({key: last_id}, count=100, block=block_ms)
        for _, entries in reply or []:
            for event_id, fields in entries:
                yield event_id, json.loads(fields["data"])

    async def save_webhook_report(self, job_id: str, report: dict) -> None:
        await self.redis.set(
            self._k("job", job_id, "webhook"), json.dumps(report), ex=self.result_ttl_s
        )

    async def webhook_report(self, job_id: str) -> dict | None:
        raw = await self.redis.get(self._k("job", job_id, "webhook"))
        return json.loads(raw) if raw else None

    async def active_count(self) -> int:
        return int(await self.redis.scard(self._k("jobs", "active")))

    async def finished_before(self, cutoff: float) -> list[str]:
        return list(await self.redis.zrangebyscore(self._k("jobs", "finished"), 0, cutoff))

    async def forget_finished(self, job_id: str) -> None:
        await self.redis.zrem(self._k("jobs", "finished"), job_id)

    async def set_status(self, record: JobRecord, status: JobStatus, stage: str) -> None:
        record.status, record.stage = status, stage
        if status.terminal:
            record.finished_at = time.time()
        await self.save(record)
