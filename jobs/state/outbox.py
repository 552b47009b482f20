"""The durable webhook outbox: one event per finished job, delivered from Redis with retries.

A job's terminal transition writes its event here in the same atomic step
(`JobStore.finish`), so the event exists exactly once and survives a manager restart. The
manager's loop claims due events and tries each once in a small pool of concurrent
attempts, so one slow receiver cannot delay the others, and reschedules failures with
exponential backoff until `max_attempts`.

An attempt is counted before its POST: a receiver that crashes the manager mid-attempt
still uses up its attempts instead of being retried forever. A claim lasts a little longer
than one attempt can (post_once bounds its whole time), so after a crash the event is due
again within seconds. A crash between a successful POST and its acknowledgement can repeat
that POST once; the event id lets the receiver drop it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence

from jobs.integrations.webhooks import post_once
from jobs.state import lua_scripts as scripts
from jobs.state.job_store import JobStore
from jobs.state.records import JobRecord

log = logging.getLogger(__name__)

CLAIM_MARGIN_S = 5.0  # a claim outlasts the longest attempt (timeout_s) by this
MAX_DELAY_S = 600.0
CONCURRENCY = 8  # attempts in flight at once


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def event_for(record: JobRecord, secret: str | None) -> dict | None:
    """The outbox entry for a job that just reached a terminal status (None: no webhook)."""
    if not record.options.webhook_url:
        return None
    payload = {
        "event": f"job.{record.status.value}",
        "event_id": f"{record.id}:{record.status.value}",
        **record.progress(),
        "result_url": f"/v1/jobs/{record.id}/result",
    }
    return {
        "url": record.options.webhook_url,
        "payload": payload,
        "secret": record.webhook_secret or secret,
        "attempts": 0,
        "delivered": False,
        "given_up": False,
        "last_error": None,
    }


class WebhookOutbox:
    def __init__(
        self,
        store: JobStore,
        max_attempts: int = 6,
        base_delay_s: float = 1.0,
        allow: Sequence[str] = (),
        timeout_s: float = 10.0,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.store, self.max_attempts, self.base_delay_s = store, max_attempts, base_delay_s
        self.allow, self.timeout_s, self.concurrency = tuple(allow), timeout_s, concurrency
        self.redis = store.redis
        self.key = store._k("webhooks", "outbox")
        self._claim = self.redis.register_script(scripts.CLAIM_DUE)
        self.in_flight: dict[str, asyncio.Task] = {}

    async def deliver_due(self) -> int:
        """Start an attempt for each due event, up to the pool's free places; returns how
        many were started (they finish in the background)."""
        free = self.concurrency - len(self.in_flight)
        if free <= 0:
            return 0
        now = time.time()
        due = await self.redis.zrangebyscore(
            self.key, 0, now, start=0, num=free + len(self.in_flight)
        )
        started = 0
        claim_until = now + self.timeout_s + CLAIM_MARGIN_S
        for job_id in due:
            if started == free or job_id in self.in_flight:
                continue
            if await self._claim(keys=[self.key], args=[job_id, now, claim_until]):
                task = asyncio.create_task(self._attempt(job_id))
                self.in_flight[job_id] = task
                task.add_done_callback(lambda _, j=job_id: self.in_flight.pop(j, None))
                started += 1
        return started

    async def _attempt(self, job_id: str) -> None:
        try:
            await self._try(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis trouble: the claim lapses and the event is due again
            log.exception("webhook attempt for job %s failed", job_id)

    async def _try(self, job_id: str) -> None:
        entry_key = self.store._k("job", job_id, "webhook")
        raw = await self.redis.get(entry_key)
        if not raw:
            await self.redis.zrem(self.key, job_id)
            return
        entry = json.loads(raw)
        if entry["attempts"] >= self.max_attempts:  # used up by attempts that never returned
            entry["given_up"], entry["last_error"] = True, entry["last_error"] or "no answer"
            await self._settle(job_id, entry_key, entry, done=True)
            return
        entry["attempts"] += 1  # counted before the POST, in case the POST never returns
        await self.redis.set(entry_key, json.dumps(entry), keepttl=True)
        ok, what = await post_once(
            entry["url"],
            entry["payload"],
            entry.get("secret"),
            entry["payload"]["event_id"],
            self.allow,
            self.timeout_s,
        )
        entry["last_error"] = None if ok else what
        if not ok:
            log.warning("webhook for job %s attempt %d: %s", job_id, entry["attempts"], what)
        done = ok or entry["attempts"] >= self.max_attempts or what.startswith("refused")
        entry["delivered"], entry["given_up"] = ok, done and not ok
        await self._settle(job_id, entry_key, entry, done)

    async def _settle(self, job_id: str, entry_key: str, entry: dict, done: bool) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(entry_key, json.dumps(entry))
            if done:
                pipe.zrem(self.key, job_id)
                pipe.expire(entry_key, self.store.result_ttl_s)
            else:
                delay = min(self.base_delay_s * 2 ** (entry["attempts"] - 1), MAX_DELAY_S)
                pipe.zadd(self.key, {job_id: time.time() + delay})
            await pipe.execute()
