"""Requests that hold the ingress for minutes: event streams and OpenAI calls waiting on a job.

The Ingress has a fixed number of slots (`max_ongoing_requests` in serve_config.yaml) and
Serve queues whatever does not fit. Left alone, followers of long jobs fill every slot and
then every request, `/healthz` included, waits behind them. So held requests are counted
here: at most `max_held_requests` at once (kept below the slots, so short requests always
find one) and `max_streams_per_key` per API key; past either, the caller gets 503 or 429
with Retry-After at once instead of a slot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from serve_app.errors import retry_later

RETRY_AFTER_S = 10  # a held request lasts minutes; a few seconds' wait rarely frees one


class HeldRequests:
    def __init__(self, total: int, per_key: int) -> None:
        self.total, self.per_key = total, per_key
        self.by_key: Counter[str | None] = Counter()

    @property
    def held(self) -> int:
        return sum(self.by_key.values())

    def acquire(self, owner: str | None) -> None:
        """Take a place for `owner` or raise 429 (this key holds its share) / 503 (full)."""
        if self.by_key[owner] >= self.per_key:
            raise retry_later(
                429,
                "too_many_streams",
                f"this API key already holds {self.per_key} open streams or waiting "
                "transcriptions (max_streams_per_key); close one or poll /v1/jobs/{id}",
                after_s=RETRY_AFTER_S,
            )
        if self.held >= self.total:
            raise retry_later(
                503,
                "busy",
                "the service holds as many open streams as it allows; retry shortly or poll "
                "/v1/jobs/{id}",
                after_s=RETRY_AFTER_S,
            )
        self.by_key[owner] += 1

    def release(self, owner: str | None) -> None:
        self.by_key[owner] -= 1
        if self.by_key[owner] <= 0:
            del self.by_key[owner]

    @contextmanager
    def hold(self, owner: str | None) -> Iterator[None]:
        self.acquire(owner)
        try:
            yield
        finally:
            self.release(owner)
