"""The listing indexes: every job by creation time, and each owner's jobs.

  jobs:created         zset job id -> created_at (all jobs; the listing without keys)
  jobs:owner:{owner}   zset job id -> created_at (one tenant's jobs)

Listing reads them newest first from a position (a created_at and the id seen last), so a
page costs the same however deep it is, and jobs created meanwhile shift nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.state.job_store import JobStore


@dataclass(frozen=True)
class Position:
    """Just past one index entry: (created_at, id) of the last job already seen."""

    score: float
    job_id: str


def _key(store: JobStore, owner: str | None) -> str:
    return store._k("jobs", "owner", owner) if owner else store._k("jobs", "created")


async def entries_after(
    store: JobStore, owner: str | None, after: Position | None, count: int
) -> list[tuple[str, float]]:
    """Up to `count` (job id, created_at) entries older than `after`, newest first.

    Entries with equal times are ordered by id (descending), so the ones `after` already
    passed are exactly those with its time and an id not below its own.
    """
    key = _key(store, owner)
    if after is None:
        found = await store.redis.zrevrangebyscore(
            key, "+inf", "-inf", start=0, num=count, withscores=True
        )
        return [(job_id, float(score)) for job_id, score in found]
    out: list[tuple[str, float]] = []
    skip = 0
    while len(out) < count:
        found = await store.redis.zrevrangebyscore(
            key, after.score, "-inf", start=skip, num=count, withscores=True
        )
        for job_id, score in found:
            if float(score) == after.score and job_id >= after.job_id:
                continue  # a tie already listed
            out.append((job_id, float(score)))
        if len(found) < count:
            break
        skip += len(found)
    return out[:count]


async def forget_listed(store: JobStore, owner: str | None, job_ids: list[str]) -> None:
    """Drop expired jobs from the listing indexes (their records are gone)."""
    if job_ids:
        await store.redis.zrem(store._k("jobs", "created"), *job_ids)
        if owner:
            await store.redis.zrem(store._k("jobs", "owner", owner), *job_ids)


async def trim_listing(store: JobStore, created_before: float) -> int:
    """Trim the listing indexes of jobs created before `created_before` (expired)."""
    redis = store.redis
    removed = await redis.zremrangebyscore(store._k("jobs", "created"), 0, created_before)
    async for key in redis.scan_iter(match=store._k("jobs", "owner", "*"), count=500):
        removed += await redis.zremrangebyscore(key, 0, created_before)
    return int(removed)
