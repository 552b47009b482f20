"""One model, two lanes: live turns (realtime sessions) go before batch work (jobs, uploads).

A replica runs one forward pass at a time (its threads belong to one pass). Batch work holds
the gate for one pass of its window batch at a time and gives way between passes whenever a
live request waits; a live request never waits behind more than the pass in progress. While
live requests came in recently, batch passes also shrink to LIVE_BATCH windows, so that
pass stays short.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

LIVE_BATCH = 2  # windows per batch pass while live traffic is recent
RECENT_S = 10.0


class PriorityGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._live_waiting = 0
        self._last_live = float("-inf")

    @contextmanager
    def hold(self, live: bool) -> Iterator[None]:
        """Run one pass; live callers are let in before any waiting batch caller."""
        with self._cond:
            if live:
                self._live_waiting += 1
                self._last_live = time.monotonic()
            try:
                while self._busy or (not live and self._live_waiting):
                    self._cond.wait()
            finally:
                if live:
                    self._live_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def batch_size(self, wanted: int, live: bool) -> int:
        """Windows per pass: batch work takes smaller passes while live traffic is recent."""
        if live or time.monotonic() - self._last_live > RECENT_S:
            return wanted
        return min(wanted, LIVE_BATCH)


def gated(items: Iterator, gate: PriorityGate, live: bool) -> Iterator:
    """`items`, each `next()` (where a lazy pipeline runs its next pass) inside the gate."""
    while True:
        with gate.hold(live):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


class AsyncPriorityLock:
    """The same rule for a replica whose work runs one call at a time under an asyncio lock
    (the Diarizer): a live call waits only for the call in progress."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._busy = False
        self._live_waiting = 0

    @asynccontextmanager
    async def hold(self, live: bool = False) -> AsyncIterator[None]:
        async with self._cond:
            if live:
                self._live_waiting += 1
            try:
                await self._cond.wait_for(
                    lambda: not self._busy and (live or not self._live_waiting)
                )
            finally:
                if live:
                    self._live_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            async with self._cond:
                self._busy = False
                self._cond.notify_all()
