"""The durable webhook outbox: one event per finished job, delivered from Redis with retries.

A job's terminal transition writes its event here in the same atomic step
(`JobStore.finish`), so the event exists exactly once and survives a manager restart. The
manager's loop claims due events, tries each once, and reschedules failures with
exponential backoff until `max_attempts`. A crash between a successful POST and its
acknowledgement can repeat that POST once; the event id lets the receiver drop it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Sequence

from jobs import store_scripts as scripts
from jobs.records import JobRecord
from jobs.store import JobStore
from jobs.webhooks import post_once

log = logging.getLogger(__name__)

CLAIM_S = 120.0  # an attempt in progress is not retried by another loop before this
MAX_DELAY_S = 600.0


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
    ) -> None:
        self.store, self.max_attempts, self.base_delay_s = store, max_attempts, base_delay_s
        self.allow, self.timeout_s = tuple(allow), timeout_s
        self.redis = store.redis
        self.key = store._k("webhooks", "outbox")
        self._claim = self.redis.register_script(scripts.CLAIM_DUE)

    async def deliver_due(self, limit: int = 50) -> int:
        """Try every due event once; returns how many were tried."""
        now = time.time()
        due = await self.redis.zrangebyscore(self.key, 0, now, start=0, num=limit)
        tried = 0
        for job_id in due:
            if await self._claim(keys=[self.key], args=[job_id, now, now + CLAIM_S]):
                tried += 1
                await self._attempt(job_id)
        return tried

    async def _attempt(self, job_id: str) -> None:
        entry_key = self.store._k("job", job_id, "webhook")
        raw = await self.redis.get(entry_key)
        if not raw:
            await self.redis.zrem(self.key, job_id)
            return
        entry = json.loads(raw)
        ok, what = await post_once(
            entry["url"],
            entry["payload"],
            entry.get("secret"),
            entry["payload"]["event_id"],
            self.allow,
            self.timeout_s,
        )
        entry["attempts"] += 1
        entry["last_error"] = None if ok else what
        if not ok:
            log.warning("webhook for job %s attempt %d: %s", job_id, entry["attempts"], what)
        done = ok or entry["attempts"] >= self.max_attempts or what.startswith("refused")
        entry["delivered"], entry["given_up"] = ok, done and not ok
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(entry_key, json.dumps(entry))
            if done:
                pipe.zrem(self.key, job_id)
                pipe.expire(entry_key, self.store.result_ttl_s)
            else:
                delay = min(self.base_delay_s * 2 ** (entry["attempts"] - 1), MAX_DELAY_S)
                pipe.zadd(self.key, {job_id: time.time() + delay})
            await pipe.execute()
