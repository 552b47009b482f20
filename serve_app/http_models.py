"""Response shapes of the HTTP API, so the OpenAPI document describes every answer."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from jobs.state.records import JobRecord


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. 'unsupported_media'.")
    message: str = Field(description="What went wrong and what to change.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobSnapshot(BaseModel):
    id: str
    status: str = Field(
        description="queued, splitting, transcribing, diarizing, stitching, "
        "completed, failed or cancelled"
    )
    stage: str = Field(description="What the job is doing now, in words.")
    segments_done: int
    segments_total: int | None = Field(description="Known once splitting has finished.")
    percent: float
    eta_s: float | None = Field(None, description="Estimated seconds left (when running).")
    duration: float | None = Field(description="Audio length in seconds.")
    error: ErrorDetail | None
    filename: str | None = None
    options: dict[str, Any] | None = Field(
        None, description="The job's options; known speakers by id and name only."
    )
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    status_url: str
    result_url: str
    events_url: str
    webhook_secret: str | None = Field(
        None,
        description="Only in the submit response, when the job has a webhook and no "
        "server-wide secret is configured: the key its deliveries are signed with.",
    )


class JobList(BaseModel):
    data: list[JobSnapshot]
    offset: int
    limit: int
    has_more: bool  # true: next_cursor may list more (a page can end short, see below)
    # Where the next page starts: pass it as `cursor`. A page may hold fewer than `limit`
    # jobs while this is set, when a status filter matched few of the jobs it read.
    next_cursor: str | None = None


def eta_seconds(record: JobRecord) -> float | None:
    if record.status.terminal or not record.started_at or record.percent <= 0:
        return None
    elapsed = time.time() - record.started_at
    return round(elapsed * (100.0 - record.percent) / record.percent, 1)


def snapshot(record: JobRecord, detail: bool = True) -> JobSnapshot:
    base = f"/v1/jobs/{record.id}"
    extra = (
        {
            "filename": record.filename,
            "options": record.options.public(),
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
        }
        if detail
        else {}
    )
    return JobSnapshot(
        **{k: v for k, v in record.progress().items() if k not in ("updated_at",)},
        eta_s=eta_seconds(record),
        status_url=base,
        result_url=f"{base}/result",
        events_url=f"{base}/events",
        **extra,
    )
