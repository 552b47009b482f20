"""Typed results that cross process boundaries (replica -> ingress -> job manager).

Every stage validates what it receives against these models, so a drifted shape fails
loudly at the boundary with a clear message instead of surfacing later as a 500.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

SAMPLE_RATE = 16_000


class InputRejected(ValueError):
    """A request a model cannot take (bad options, unusable audio). Deterministic: retrying
    the same request gives the same answer, so callers fail at once. The message is one plain
    line fit for the user."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Word(_Frozen):
    start: float
    end: float
    text: str
    probability: float = Field(ge=0.0, le=1.0)


class TranscriptSegment(_Frozen):
    start: float
    end: float
    text: str
    words: list[Word] = []
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    language: str | None = None  # the language its window was decoded in
    # The window's detected probability of that language (1.0 when the caller gave it).
    language_probability: float | None = None


class TranscribeOptions(_Frozen):
    """Per-request decoding options. Requests with equal options can share a batch."""

    language: str | None = Field(
        None, description="ISO 639-1 code; None detects it per 30 s window of speech."
    )
    task: Literal["transcribe", "translate"] = "transcribe"  # translate: to English text
    # Seconds into the audio where one speaker hands over to another: no 30 s window spans
    # one, so each window holds one voice and is decoded in its language (mixed languages).
    cuts: tuple[float, ...] = Field((), max_length=1000)
    # (start, end, language) in seconds: a window mostly inside one is decoded in that
    # language whatever its own detection says (the job's speakers' languages).
    hints: tuple[tuple[float, float, str], ...] = Field((), max_length=1000)
    # Languages spoken with confidence elsewhere in the recording: a window unsure of its
    # language takes the likeliest of these by its own detection, if any is among its top
    # guesses (not the nearest sure window's, which in a meeting is often another voice's).
    languages: tuple[str, ...] = Field((), max_length=100)
    # Probe the language of each region of speech between pauses on its own and cut windows
    # where sure regions disagree (deployments/models/language_probe.py): a recording in
    # several languages, where a short turn would be decoded in its neighbour's language.
    split_languages: bool = False
    word_timestamps: bool = True
    vad_filter: bool = True
    beam_size: int = Field(5, ge=1, le=10)
    initial_prompt: str | None = Field(None, max_length=2000)
    temperature: float = Field(0.0, ge=0.0, le=1.0)


class ServedBy(_Frozen):
    """Which replica on which node produced a result (spread and placement checks)."""

    node_id: str
    replica_id: str | None = None


class Transcription(_Frozen):
    served_by: ServedBy | None = None
    language: str | None  # over most of the speech; None: no speech to tell
    # How sure the surest 30 s window was of its language; 1.0 when the language was given.
    language_probability: float
    duration: float
    segments: list[TranscriptSegment]

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


class DiarizeOptions(_Frozen):
    num_speakers: int | None = Field(None, ge=1, le=64)
    min_speakers: int | None = Field(None, ge=1, le=64)
    max_speakers: int | None = Field(None, ge=1, le=64)

    @model_validator(mode="after")
    def _consistent(self) -> DiarizeOptions:
        lo, hi, n = self.min_speakers, self.max_speakers, self.num_speakers
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_speakers ({lo}) is greater than max_speakers ({hi})")
        if n is not None and ((lo is not None and n < lo) or (hi is not None and n > hi)):
            raise ValueError(f"num_speakers ({n}) is outside [min_speakers, max_speakers]")
        return self


class SpeakerTurn(_Frozen):
    start: float
    end: float
    speaker: str
    language: str | None = None  # set on a stitched transcript's turns: what was spoken


class SpeakerChanges(_Frozen):
    """Where the voice changes in a piece of audio, without telling who is who: turns of one
    voice at a time, labelled per piece (T0, T1, ...; one person may come back under another
    label). What a transcription-only job needs to keep each language window to one voice."""

    served_by: ServedBy | None = None
    duration: float
    turns: list[SpeakerTurn]


class SpeakerTrack(_Frozen):
    """One voice heard continuously across overlapping chunks of one segment.

    Tracks are what the diarizer clusters into speakers; shipping them lets the job manager
    re-cluster all tracks of all segments jointly instead of linking per-segment speakers
    whose clustering saw only that segment. Times are segment-relative; `turns` and
    `exclusive_turns` are the parts of the segment's turns (same speaker) this track owns.
    """

    id: int = Field(ge=0)
    speaker: str  # the segment-level speaker this track was clustered into
    embedding: list[float]  # L2-normalised CAM++
    weight: float = Field(ge=0.0)  # seconds of exclusive speech (its clustering weight)
    cannot_link: list[int] = []  # tracks of this segment heard in the same chunk
    turns: list[tuple[float, float]] = []
    exclusive_turns: list[tuple[float, float]] = []


class Diarization(_Frozen):
    """Who spoke when, plus one L2-normalised embedding per speaker.

    `exclusive_turns` never overlap, so each word can be given exactly one speaker. The
    embeddings let the job manager link speakers of different segments of one recording.
    """

    served_by: ServedBy | None = None
    duration: float
    turns: list[SpeakerTurn]
    exclusive_turns: list[SpeakerTurn]
    speakers: list[str]
    embeddings: dict[str, list[float]]
    # Empty from diarizers (or checkpoints) that predate tracks.
    tracks: list[SpeakerTrack] = []
    # Plain-language remarks for the user, e.g. a speaker-count hint that could not be met.
    notes: list[str] = []

    @model_validator(mode="after")
    def _embedding_per_speaker(self) -> Diarization:
        missing = set(self.speakers) - set(self.embeddings)
        if missing:
            raise ValueError(f"no embedding for speakers {sorted(missing)}")
        return self

    @model_validator(mode="after")
    def _tracks_consistent(self) -> Diarization:
        ids = [t.id for t in self.tracks]
        if len(set(ids)) != len(ids):
            raise ValueError("track ids are not unique")
        for t in self.tracks:
            if t.speaker not in self.speakers:
                raise ValueError(f"track {t.id} has unknown speaker {t.speaker!r}")
            if not set(t.cannot_link) <= set(ids):
                raise ValueError(f"track {t.id} cannot-links unknown tracks")
        return self


class VoiceSample(_Frozen):
    """What a short enrollment sample holds: its main voice's embedding and how much speech
    of it, and of any other voice, it contains (judged by jobs.stitching.voiceprints)."""

    duration: float
    speech_s: float  # exclusive speech of the main (most heard) voice
    other_speech_s: float  # exclusive speech of the next most heard voice, if any
    other_similarity: float | None = None  # cosine of the two voices' embeddings
    voices: int
    embedding: list[float]  # L2-normalised; empty without speech


def voice_sample(diarization: Diarization) -> VoiceSample:
    """The main voice of a diarized sample."""
    heard: dict[str, float] = {}
    for t in diarization.exclusive_turns:
        heard[t.speaker] = heard.get(t.speaker, 0.0) + t.end - t.start
    ranked = sorted(heard, key=lambda name: -heard[name])
    main = ranked[0] if ranked else None
    similarity = None
    if len(ranked) > 1:
        a, b = (np.asarray(diarization.embeddings[n], dtype=np.float64) for n in ranked[:2])
        similarity = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
    return VoiceSample(
        duration=diarization.duration,
        speech_s=round(heard.get(main, 0.0), 3) if main else 0.0,
        other_speech_s=round(heard[ranked[1]], 3) if len(ranked) > 1 else 0.0,
        other_similarity=None if similarity is None else round(similarity, 4),
        voices=len(ranked),
        embedding=diarization.embeddings.get(main, []) if main else [],
    )
