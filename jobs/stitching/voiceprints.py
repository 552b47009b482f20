"""Known speakers, the maths: voiceprints made from samples, then matched to a job's speakers.

A voiceprint is the speech-weighted centroid of the CAM++ embeddings of a person's samples
(or of a speaker of a finished job). After a job's speakers are linked, each global speaker's
centroid is compared with the enrolled voiceprints the job asked for; an optimal one-to-one
assignment (Hungarian) names at most one speaker per person and each person at most once,
and only pairs at least MATCH_THRESHOLD similar count. An unmatched voice keeps an anonymous
label and an absent person's name never appears.

Enrolled profiles live in Redis (jobs/state/speakers.py).
"""

from __future__ import annotations

import re

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.optimize import linear_sum_assignment

from deployments.core.schemas import VoiceSample

# Cosine similarity between a voiceprint and a job speaker's centroid above which they are
# one person. Calibrated on real voices (docs/BENCHMARKS.md, "Known speakers").
MATCH_THRESHOLD = 0.66
# Samples of one enrollment must be at least this similar to each other. Short samples vary:
# on real voices (2 samples of 4-10 s) one person's pairs gave 0.36-0.87 (median 0.76) and
# two people's 0.02-0.70 (median 0.33), so this only catches clearly different voices.
SAMPLES_AGREE = 0.3
MIN_SAMPLE_SPEECH_S = 1.0  # per sample
MIN_TOTAL_SPEECH_S = 1.5  # over all samples of one enrollment
# A second voice this long, this large a share of the main voice's speech and less similar
# than this makes a sample "two voices". The diarizer can split one person's short sample:
# on real voices such a split gave 1.2 s (28 %) at similarity 0.43, while 13 samples of two
# people gave 0.18-0.46; only the main voice's embedding is used, so a small second voice
# is tolerated rather than a clean sample refused.
SECOND_VOICE_S = 1.5
SECOND_VOICE_SHARE = 0.3
SECOND_VOICE_SIM = 0.5
MAX_KNOWN_SPEAKERS = 10
NAME_RE = re.compile(r"^(?!SPEAKER_\d+$)[^\x00-\x1f/]{1,64}$")
ANONYMOUS = "SPEAKER_{:02d}"


class EnrollmentRejected(ValueError):
    """A sample or name that cannot make a voiceprint; `code` and one plain line."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class KnownSpeaker(BaseModel):
    """A voiceprint a job matches against (a snapshot taken at submit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = None  # None: a reference sent with the request, not enrolled
    name: str = Field(min_length=1, max_length=64)
    embedding: list[float] = Field(min_length=16, max_length=4096)


class SpeakerMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker: str  # the label used in the transcript: the person's name, or SPEAKER_xx
    speaker_id: str | None = None  # the enrolled speaker's id when matched to one
    similarity: float | None = None  # to the matched voiceprint, else to the closest one

    @field_validator("similarity")
    @classmethod
    def _round(cls, v: float | None) -> float | None:
        return None if v is None else round(v, 4)


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_RE.match(name):
        raise EnrollmentRejected(
            "invalid_name",
            "name: 1-64 printable characters without '/', and not an anonymous label "
            "such as SPEAKER_00",
        )
    return name


def _units(vectors) -> np.ndarray:
    """Rows of unit length (float64), one per vector."""
    return np.stack([_unit(np.asarray(v, dtype=np.float64)) for v in vectors])


def _similarity(vectors, known: list[KnownSpeaker]) -> np.ndarray:
    """Cosine similarity of each vector (rows) to each known voiceprint (columns)."""
    return _units(vectors) @ _units([k.embedding for k in known]).T


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def voiceprint(
    samples: list[VoiceSample], names: list[str] | None = None
) -> tuple[list[float], float]:
    """The voiceprint of one person's samples, and its seconds of speech.

    Raises EnrollmentRejected naming the sample at fault: no speech, too little speech, a
    second voice, or a sample that does not sound like the others.
    """
    names = names or [f"sample {i + 1}" for i in range(len(samples))]
    if not samples:
        raise EnrollmentRejected("no_samples", "give at least one audio sample")
    for name, s in zip(names, samples, strict=True):
        if s.speech_s <= 0 or not s.embedding:
            raise EnrollmentRejected("no_speech", f"{name}: no speech was found in it")
        if s.speech_s < MIN_SAMPLE_SPEECH_S:
            raise EnrollmentRejected(
                "sample_too_short",
                f"{name}: {s.speech_s:.1f} s of speech; each sample needs at least "
                f"{MIN_SAMPLE_SPEECH_S:g} s",
            )
        similar = s.other_similarity is not None and s.other_similarity >= SECOND_VOICE_SIM
        if s.other_speech_s >= max(SECOND_VOICE_S, SECOND_VOICE_SHARE * s.speech_s) and not similar:
            raise EnrollmentRejected(
                "two_voices",
                f"{name}: holds two voices ({s.speech_s:.1f} s and {s.other_speech_s:.1f} s); "
                "give samples of one person speaking alone",
            )
    total = sum(s.speech_s for s in samples)
    if total < MIN_TOTAL_SPEECH_S:
        raise EnrollmentRejected(
            "too_short",
            f"the samples hold {total:.1f} s of speech; give at least {MIN_TOTAL_SPEECH_S:g} s "
            "in all (2-10 s per sample works well)",
        )
    vectors = _units([s.embedding for s in samples])
    weights = np.asarray([s.speech_s for s in samples])
    if len(samples) > 1:
        for i, name in enumerate(names):
            others = np.delete(np.arange(len(samples)), i)
            rest = _unit((vectors[others] * weights[others, None]).sum(axis=0))
            if float(vectors[i] @ rest) < SAMPLES_AGREE:
                raise EnrollmentRejected(
                    "samples_disagree",
                    f"{name}: does not sound like the other samples; give samples of one person",
                )
    centroid = _unit((vectors * weights[:, None]).sum(axis=0))
    return np.round(centroid, 5).tolist(), round(total, 3)


def assign(
    centroids: dict[str, np.ndarray], known: list[KnownSpeaker], threshold: float = MATCH_THRESHOLD
) -> dict[str, tuple[KnownSpeaker, float]]:
    """Job speaker label -> (known speaker, similarity), one to one, similarity >= threshold."""
    labels = list(centroids)
    if not labels or not known:
        return {}
    sim = _similarity([centroids[k] for k in labels], known)
    # Pairs under the threshold may not be chosen at all, so they cannot crowd out good ones.
    cost = np.where(sim >= threshold, -sim, 1e3)
    rows, cols = linear_sum_assignment(cost)
    return {
        labels[r]: (known[c], float(sim[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if sim[r, c] >= threshold
    }


def closest(centroid: np.ndarray, known: list[KnownSpeaker]) -> float | None:
    if not known:
        return None
    return float(_similarity([centroid], known).max())
