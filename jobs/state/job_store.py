"""All job state in Redis (redis-py asyncio): records, segment checkpoints, events, results.

Layout (prefix `sc:`):
  job:{id}            JSON JobRecord
  job:{id}:ckpt       hash  "{plan}:t" / "{plan}:d" -> Transcription / Diarization JSON,
                      plan = "{index}:{start}-{end}" (samples), so a re-split never reuses
  job:{id}:calls      hash  "{plan}:{part}#{nonce}", one field per model call dispatched
  job:{id}:lang       hash  the language pass's progress: "{step}" -> its decisions,
                      "{plan}:{step}" -> done (jobs/pipeline/language_pass.py)
  job:{id}:lease      the runner that owns the job (token, expiring; renewed while it runs)
  job:{id}:webhook    the job's webhook delivery (jobs/state/outbox.py)
  job:{id}:events     stream of progress snapshots (SSE reads it; nothing is lost between polls)
  job:{id}:result     JSON JobResult (written as job:{id}:result:partial, then renamed)
  job:{id}:voices     hash  speaker label -> its voice, for enrolling it later
  jobs:active         set of non-terminal job ids (resumed on manager start)
  jobs:created        zset id -> created_at;  jobs:owner:{owner} the same per API key
  jobs:finished       zset id -> finished_at (retention janitor)
  idem:{owner}:{key}  job id for an Idempotency-Key
  webhooks:outbox     zset id -> when its webhook is next due
  jobs:waited         zset id -> when a caller (OpenAI routes) last waited on it
  speaker:{id}, speakers:{owner}   enrolled voices (jobs/stitching/voiceprints.py)
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.state import lua_scripts as scripts
from jobs.state.records import JobRecord

EVENTS_MAXLEN = 2000


def connect(url: str, retries: int = 30) -> aioredis.Redis:
    """A client that rides out a Redis restart (~30 s at the default `retries`).

    Retries resend a command after a lost connection, so every command JobStore sends is
    idempotent: call counts are one field per call rather than HINCRBY, and the scripts
    re-check state before they write.
    """
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        health_check_interval=15,
        socket_connect_timeout=5,
    )


class QueueFull(Exception):
    """The active-job cap was reached (the caller answers 429)."""


class KeyQuotaFull(Exception):
    """The owner's own cap on active jobs (`what` "jobs") or stored audio ("bytes")."""

    def __init__(self, what: str, used: int) -> None:
        super().__init__(what)
        self.what, self.used = what, used


class LeaseLost(Exception):
    """Another manager owns the job now; this runner stops without writing."""


class JobStore:
    def __init__(
        self,
        url: str,
        prefix: str = "sc:",
        result_ttl_s: float = 7 * 86400,
        retries: int = 30,
    ) -> None:
        self.url = url
        self.redis = connect(url, retries)
        self.prefix = prefix
        self.result_ttl_s = int(result_ttl_s)
        self._create = self.redis.register_script(scripts.CREATE)
        self._transition = self.redis.register_script(scripts.TRANSITION)
        self._claim = self.redis.register_script(scripts.CLAIM)
        self._release = self.redis.register_script(scripts.RELEASE)
        self._hset = self.redis.register_script(scripts.FENCED_HSET)
        self._append_at = self.redis.register_script(scripts.APPEND_AT)
        self._commit = self.redis.register_script(scripts.COMMIT)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- records ---------------------------------------------------------------------------
    async def create(
        self,
        record: JobRecord,
        max_active: int = 0,
        key_active: int = 0,
        key_bytes: int = 0,
        audio_bytes: int = 0,
        waited_on: bool = False,
    ) -> JobRecord:
        """Store a new job atomically; with an idempotency key, an existing twin wins.

        Raises QueueFull when `max_active` jobs are already queued or running, and
        KeyQuotaFull when the record's owner has `key_active` active jobs or its stored
        audio plus `audio_bytes` would pass `key_bytes` (0: no such cap), all in the same
        step as the creation, so concurrent submissions cannot slip past a cap.
        `waited_on`: a caller waits on this job (or on its idempotent twin); marked in the
        same step, so however the caller goes, an unwaited job is found (mark_waited_on).
        """
        idem = (
            self._k("idem", record.owner or "-", record.idempotency_key)
            if record.idempotency_key
            else ""
        )
        owner = self._k("jobs", "owner", record.owner) if record.owner else ""
        keys = [
            self._k("job", record.id),
            self._k("jobs", "active"),
            self._k("jobs", "created"),
            owner,
            self._k("job", record.id, "events"),
            idem,
            self._k("audio", "owner", record.owner) if record.owner else "",
            self._k("jobs", "waited") if waited_on else "",
        ]
        args = [
            record.model_dump_json(),
            record.id,
            record.created_at,
            json.dumps(record.progress()),
            self.result_ttl_s,
            max_active,
            EVENTS_MAXLEN,
            self._k("job", ""),
            key_active,
            key_bytes,
            audio_bytes,
            time.time(),
        ]
        outcome, job_id = await self._create(keys=keys, args=args)
        if outcome == "full":
            raise QueueFull
        if outcome in ("key_full", "key_bytes"):
            raise KeyQuotaFull("jobs" if outcome == "key_full" else "bytes", int(job_id))
        if outcome == "existing":
            existing = await self.get(job_id)
            if existing is not None:
                return existing
        return record

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self._k("job", job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    async def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """Records of `job_ids` in one round trip (None where a job expired)."""
        if not job_ids:
            return []
        raws = await self.redis.mget([self._k("job", job_id) for job_id in job_ids])
        return [JobRecord.model_validate_json(raw) if raw else None for raw in raws]

    async def save(self, record: JobRecord, lease: str | None = None) -> str:
        """Write a live job's progress; never overwrites a finished job.

        With `lease`, only the runner holding it may write. Returns 'ok' or why not
        ('terminal', 'lease', 'missing').
        """
        return await self._apply("progress", record, lease=lease)

    async def finish(
        self, record: JobRecord, webhook: dict | None = None, lease: str | None = None
    ) -> bool:
        """The one terminal transition: True for the writer that made it, False after.

        The webhook event, if any, is queued in the outbox in the same step, so a job that
        finishes has exactly one event and a crash cannot lose it. With `lease`, only the
        runner holding it may finish the job.
        """
        assert record.status.terminal, "finish() takes a completed, failed or cancelled job"
        record.finished_at = record.finished_at or time.time()
        return await self._apply("finish", record, lease=lease, webhook=webhook) == "ok"

    async def requeue(self, record: JobRecord) -> bool:
        """Failed or cancelled -> queued (retry); False if the job was not retryable."""
        return await self._apply("requeue", record) == "ok"

    async def _apply(
        self, mode: str, record: JobRecord, lease: str | None = None, webhook: dict | None = None
    ) -> str:
        record.touch()
        keys = [
            self._k("job", record.id),
            self._k("jobs", "active"),
            self._k("jobs", "finished"),
            self._k("job", record.id, "events"),
            self._k("job", record.id, "lease"),
            self._k("webhooks", "outbox"),
            self._k("job", record.id, "webhook"),
            *self._job_keys(record.id),
        ]
        args = [
            mode,
            record.model_dump_json(),
            record.id,
            json.dumps(record.progress()),
            EVENTS_MAXLEN,
            record.finished_at or time.time(),
            self.result_ttl_s,
            lease or "",
            json.dumps(webhook) if webhook else "",
        ]
        return await self._transition(keys=keys, args=args)

    def _job_keys(self, job_id: str) -> list[str]:
        return [
            self._k("job", job_id, *s)
            for s in (
                (),
                ("ckpt",),
                ("calls",),
                ("events",),
                ("result",),
                ("result", "partial"),
                ("voices",),
                ("cancel",),
                ("lang",),
            )
        ]

    # -- leases: one runner per job, even while two managers overlap in a redeploy ---------
    async def claim(self, job_id: str, token: str, ttl_s: float) -> bool:
        keys = [self._k("job", job_id, "lease")]
        return bool(await self._claim(keys=keys, args=[token, int(ttl_s * 1000)]))

    async def release(self, job_id: str, token: str) -> None:
        await self._release(keys=[self._k("job", job_id, "lease")], args=[token])

    async def active_ids(self) -> list[str]:
        return sorted(await self.redis.smembers(self._k("jobs", "active")))

    # -- cancellation ----------------------------------------------------------------------
    async def request_cancel(self, job_id: str) -> None:
        await self.redis.set(self._k("job", job_id, "cancel"), "1", ex=self.result_ttl_s)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self._k("job", job_id, "cancel")))

    async def clear_cancel(self, job_id: str) -> None:
        await self.redis.delete(self._k("job", job_id, "cancel"))

    # -- segments --------------------------------------------------------------------------
    async def save_checkpoint(
        self, job_id: str, plan_key: str, part: str, payload: str, lease: str | None = None
    ) -> None:
        """Keyed by the segment's plan (index and sample range), not its index alone: a
        resumed job that splits differently never stitches old words onto new times."""
        await self._fenced_hset(job_id, "ckpt", lease, {f"{plan_key}:{part}": payload})

    async def _fenced_hset(
        self, job_id: str, key: str, lease: str | None, fields: dict, replace: bool = False
    ) -> None:
        """HSET (after DEL with `replace`) only while `lease` is held; raises LeaseLost."""
        args = [lease or "", "1" if replace else "0"]
        for field, value in fields.items():
            args += [field, value]
        keys = [self._k("job", job_id, "lease"), self._k("job", job_id, *key.split(":"))]
        _fenced(await self._hset(keys=keys, args=args))

    async def language_pass(self, job_id: str) -> dict[str, str]:
        """What the language pass recorded of its progress (field -> value)."""
        return await self.redis.hgetall(self._k("job", job_id, "lang"))

    async def save_language_pass(
        self, job_id: str, field: str, value: str, lease: str | None = None
    ) -> None:
        await self._fenced_hset(job_id, "lang", lease, {field: value})

    async def checkpoint_keys(self, job_id: str) -> set[str]:
        return set(await self.redis.hkeys(self._k("job", job_id, "ckpt")))

    async def count_call(
        self, job_id: str, plan_key: str, part: str, nonce: str | None = None
    ) -> None:
        """Record one model call (counted by `calls`).

        One field per call (not HINCRBY), so a command resent after a lost reply counts once.
        """
        key = self._k("job", job_id, "calls")
        await self.redis.hset(key, f"{plan_key}:{part}#{nonce or uuid.uuid4().hex}", "1")

    async def calls(self, job_id: str) -> dict[str, int]:
        fields = await self.redis.hkeys(self._k("job", job_id, "calls"))
        return dict(Counter(field.split("#", 1)[0] for field in fields))

    # -- results and events ----------------------------------------------------------------
    async def checkpoint(self, job_id: str, field: str) -> str | None:
        return await self.redis.hget(self._k("job", job_id, "ckpt"), field)

    async def result_reset(self, job_id: str, lease: str | None = None) -> None:
        await self._fenced_hset(job_id, "result:partial", lease, {}, replace=True)

    async def result_append(
        self, job_id: str, chunk: str, offset: int, lease: str | None = None
    ) -> None:
        """Append `chunk` at byte `offset` of the result being written; not visible yet.

        Sent twice (a resend after a lost reply), the chunk is written once.
        """
        keys = [self._k("job", job_id, "lease"), self._k("job", job_id, "result", "partial")]
        args = [lease or "", offset, chunk, self.result_ttl_s]
        _fenced(await self._append_at(keys=keys, args=args))

    async def result_commit(self, job_id: str, size: int, lease: str | None = None) -> None:
        """Publish the `size` bytes written by result_append, in one step (resend-safe)."""
        keys = [
            self._k("job", job_id, "lease"),
            self._k("job", job_id, "result", "partial"),
            self._k("job", job_id, "result"),
        ]
        _fenced(await self._commit(keys=keys, args=[lease or "", size]))

    async def save_voices(
        self, job_id: str, voices: dict[str, str], lease: str | None = None
    ) -> None:
        """Each speaker's voice in a finished job (label -> JSON), for naming it later."""
        await self._fenced_hset(job_id, "voices", lease, voices, replace=True)

    async def voice(self, job_id: str, label: str) -> str | None:
        return await self.redis.hget(self._k("job", job_id, "voices"), label)

    async def mark_waited_on(self, job_id: str) -> None:
        """A caller waits on the job's answer now (OpenAI routes; jobs/pipeline/manager.py
        cancels a job whose mark grows old)."""
        await self.redis.zadd(self._k("jobs", "waited"), {job_id: time.time()})

    async def forget_waited_on(self, job_id: str) -> None:
        await self.redis.zrem(self._k("jobs", "waited"), job_id)

    async def unwaited_since(self, cutoff: float) -> list[str]:
        """Jobs no caller has marked since `cutoff`."""
        return list(await self.redis.zrangebyscore(self._k("jobs", "waited"), 0, cutoff))

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

    async def finished_before(self, cutoff: float) -> list[str]:
        return list(await self.redis.zrangebyscore(self._k("jobs", "finished"), 0, cutoff))

    async def forget_audio(self, owner: str | None, job_id: str) -> None:
        """The job's audio was deleted: it no longer counts against its owner's storage."""
        if owner:
            await self.redis.hdel(self._k("audio", "owner", owner), job_id)

    async def forget_finished(self, job_id: str) -> None:
        await self.redis.zrem(self._k("jobs", "finished"), job_id)


def _fenced(outcome: str) -> None:
    if outcome == "lease":
        raise LeaseLost
    if outcome != "ok":  # only a second writer without the lease could leave a gap
        raise RuntimeError(f"result write found the partial result out of step ({outcome})")
