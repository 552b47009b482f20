"""Job state as stored in Redis: the status machine, options and the progress snapshot."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.core.schemas import DiarizeOptions, TranscribeOptions
from jobs.stitching.voiceprints import MAX_KNOWN_SPEAKERS, KnownSpeaker


class JobStatus(StrEnum):
    QUEUED = "queued"
    SPLITTING = "splitting"
    TRANSCRIBING = "transcribing"
    DIARIZING = "diarizing"
    STITCHING = "stitching"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str | None = Field(None, min_length=2, max_length=8)
    # The served model, resolved at submit (None: records from before models were chosen).
    model: str | None = Field(None, max_length=500)
    task: Literal["transcribe", "translate"] = "transcribe"
    diarize: bool = True
    num_speakers: int | None = Field(None, ge=1, le=64)
    min_speakers: int | None = Field(None, ge=1, le=64)
    max_speakers: int | None = Field(None, ge=1, le=64)
    word_timestamps: bool = True
    segment_s: float = Field(30.0, ge=10.0, le=120.0, description="Target segment length.")
    initial_prompt: str | None = Field(None, max_length=2000)
    # Taken as OpenAI's API takes it, but the batched decode is a beam search, which it does
    # not change (the same words and log-probability at 0, 0.5 and 1); loops are handled by
    # deployments/models/loop_fallback.py instead.
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    webhook_url: str | None = Field(
        None, max_length=2000, pattern=r"^https?://[^\s/]+", description="http(s) URL"
    )
    # Voiceprints to name speakers after, snapshotted at submit (see jobs.stitching.voiceprints).
    known_speakers: list[KnownSpeaker] = Field([], max_length=MAX_KNOWN_SPEAKERS)

    @model_validator(mode="after")
    def _speakers(self) -> JobOptions:
        self.diarize_options()  # raises with a message naming the bad field
        names = [k.name for k in self.known_speakers]
        if len(set(names)) != len(names):
            raise ValueError("known speakers must have distinct names")
        if names and not self.diarize:
            raise ValueError("known speakers need diarize=true")
        return self

    def public(self) -> dict:
        """The options as callers see them: known speakers by id and name, no voiceprints."""
        return self.model_dump(exclude={"known_speakers": {"__all__": {"embedding"}}})

    def diarize_options(self) -> DiarizeOptions:
        return DiarizeOptions(
            num_speakers=self.num_speakers,
            min_speakers=self.min_speakers,
            max_speakers=self.max_speakers,
        )

    def segment_diarize_options(self) -> DiarizeOptions:
        """A segment may hold only some of the speakers: cap it, never force a count."""
        cap = self.num_speakers or self.max_speakers
        return DiarizeOptions(max_speakers=cap)

    def transcribe_options(self) -> TranscribeOptions:
        return TranscribeOptions(
            language=self.language,
            task=self.task,
            word_timestamps=self.word_timestamps,
            initial_prompt=self.initial_prompt,
            temperature=self.temperature,
        )


class JobRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    owner: str | None = None
    status: JobStatus = JobStatus.QUEUED
    stage: str = "queued: waiting for a worker"
    options: JobOptions = JobOptions()
    filename: str | None = None
    audio_path: str
    duration: float | None = None
    segments_total: int | None = None
    segments_done: int = 0
    percent: float = 0.0
    attempts: int = 0
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    idempotency_key: str | None = None
    webhook_secret: str | None = None  # per-job signing key when none is configured

    def touch(self) -> None:
        self.updated_at = time.time()

    def progress(self) -> dict:
        """The public snapshot sent in status responses and progress events."""
        return {
            "id": self.id,
            "status": self.status.value,
            "stage": self.stage,
            "segments_done": self.segments_done,
            "segments_total": self.segments_total,
            "percent": round(self.percent, 1),
            "duration": self.duration,
            "updated_at": self.updated_at,
            "error": (
                {"code": self.error_code, "message": self.error_message}
                if self.error_code
                else None
            ),
        }
