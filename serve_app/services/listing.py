"""`GET /v1/jobs`: the caller's jobs, newest first, a page at a time with bounded work.

A page reads the owner's index from a position (jobs.state.job_index) and fetches records
in batches (one MGET each), and no request reads more than SCAN_BUDGET index entries: a
status filter that matches few jobs answers a short page with `next_cursor`, not a scan of
every job. `next_cursor` carries the position and any matches still to skip, so the next
page starts where this one stopped; `offset` (at most MAX_OFFSET) is the same as a cursor
that skips that many matches from the newest job.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from jobs.state.job_index import Position, entries_after, forget_listed
from jobs.state.job_store import JobStore
from jobs.state.records import JobRecord, JobStatus
from serve_app.errors import ApiError

BATCH = 200  # index entries per round trip
SCAN_BUDGET = 2000  # index entries one request reads at most
MAX_OFFSET = 1000


@dataclass
class Cursor:
    after: Position | None  # None: from the newest job
    skip: int = 0  # matching jobs still to pass over before the page starts

    def encode(self) -> str:
        raw = [self.after.score, self.after.job_id, self.skip] if self.after else [None, "", 0]
        text = json.dumps(raw, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            score, job_id, skip = json.loads(text)
            after = None if score is None else Position(float(score), str(job_id))
            if int(skip) < 0:
                raise ValueError
            return cls(after, int(skip))
        except (ValueError, TypeError):
            raise ApiError(
                422, "invalid_parameter", "cursor: not a next_cursor this API returned"
            ) from None


@dataclass
class Page:
    records: list[JobRecord]
    next_cursor: str | None  # None: nothing older matches


async def list_page(
    store: JobStore,
    owner: str | None,
    status: JobStatus | None,
    limit: int,
    cursor: Cursor,
) -> Page:
    found: list[JobRecord] = []
    at, skip, scanned = cursor.after, cursor.skip, 0
    page_end: Position | None = None  # where the next page starts once `limit` are found
    while scanned < SCAN_BUDGET:
        want = min(BATCH, SCAN_BUDGET - scanned)
        entries = await entries_after(store, owner, at, want)
        records = await store.get_many([job_id for job_id, _ in entries])
        gone = []
        for (job_id, score), record in zip(entries, records, strict=True):
            scanned += 1
            at = Position(score, job_id)
            if record is None:
                gone.append(job_id)  # expired: trim the index as we go
                continue
            if record.owner != owner or (status is not None and record.status != status):
                continue
            if skip:
                skip -= 1
            elif len(found) < limit:
                found.append(record)
                page_end = at
            else:  # one match past the page: there is more
                await forget_listed(store, owner, gone)
                return Page(found, Cursor(page_end).encode())
        await forget_listed(store, owner, gone)
        if len(entries) < want:
            return Page(found, None)  # the index ends here
    # Out of budget: the next page goes on from the last entry read.
    if len(found) == limit:
        return Page(found, Cursor(page_end).encode())
    return Page(found, Cursor(at, skip).encode())
