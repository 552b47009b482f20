"""Per-segment diarization + joint track clustering on synthetic 3-speaker meetings.

The job route splits a recording into ~30 s segments and diarizes each alone; stitching
must still keep each person's label across segments. espeak-ng voices give exact turns, but
to CAM++ they are closer to each other (mean cosine 0.52 between voices) than real people
are, so the count is given here, as a user would; counting voices unaided is tested on real
speech (test_real_diarization.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from deployments.core.schemas import (
    SAMPLE_RATE,
    DiarizeOptions,
    Transcription,
    TranscriptSegment,
    Word,
)
from deployments.core.splitter import split_stream
from jobs.stitching.stitch import JobResult, SegmentOutcome, stitch
from tests.synth import Recording, meeting

pytestmark = pytest.mark.models

# Bounds from the GE2E diarizer (seed: DER, consistency; 7: 0.034, 1.000; 11: 0.049, 1.000). Before
# joint track clustering: 7: 0.227 (5 speakers), 0.806; 11: 0.101, 0.944.
MAX_DER = 0.08
MIN_CONSISTENCY = 0.95


def _outcomes(diarizer, rec: Recording) -> list[SegmentOutcome]:
    """Diarize each ~30 s segment alone; one synthetic word per true turn, at its middle."""
    outcomes = []
    for plan, audio in split_stream([rec.audio], target_s=30):
        t0, t1 = plan.start / SAMPLE_RATE, plan.end / SAMPLE_RATE
        words = [
            Word(start=m - t0 - 0.1, end=m - t0 + 0.1, text=f" {who}", probability=0.9)
            for m, who in (((s + e) / 2, who) for s, e, who in rec.turns)
            if t0 <= m < t1
        ]
        segments = [
            TranscriptSegment(start=w.start, end=w.end, text=w.text, words=[w]) for w in words
        ]
        transcription = Transcription(
            language="en", language_probability=1.0, duration=t1 - t0, segments=segments
        )
        capped = DiarizeOptions(max_speakers=3)  # what the job passes to each segment
        outcomes.append(SegmentOutcome(plan, transcription, diarizer(audio, capped)))
    return outcomes


def _consistency(result: JobResult) -> float:
    """Share of words carrying their true speaker's majority global label."""
    labels: dict[str, Counter[str | None]] = defaultdict(Counter)
    for word in (w for s in result.segments for w in s.words):
        labels[word.text.strip()][word.speaker] += 1
    majority = sum(c.most_common(1)[0][1] for c in labels.values())
    return majority / sum(c.total() for c in labels.values())


def _der(rec: Recording, result: JobResult) -> float:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    hypothesis = Annotation()
    for i, turn in enumerate(result.turns):
        hypothesis[Segment(turn.start, turn.end), i] = turn.speaker
    return DiarizationErrorRate(collar=0.25)(rec.annotation(), hypothesis, uem=None)


@pytest.mark.parametrize("seed", [7, 11])
def test_segments_clustered_jointly(diarizer, seed):
    rec = meeting(36, seed=seed)
    outcomes = _outcomes(diarizer, rec)
    assert len(outcomes) >= 4
    for oc in outcomes:
        d = oc.diarization
        assert d.tracks and len(d.tracks) <= 30  # modest payload
        # Every exclusive turn is tiled by pieces of its own speaker's tracks.
        for turn in d.exclusive_turns:
            pieces = [
                (a, b)
                for t in d.tracks
                for a, b in t.exclusive_turns
                if t.speaker == turn.speaker and turn.start <= a < b <= turn.end
            ]
            assert sum(b - a for a, b in pieces) == pytest.approx(turn.end - turn.start)

    result = stitch(outcomes, rec.duration, DiarizeOptions(num_speakers=3))
    assert len(result.speakers) == 3
    assert _der(rec, result) <= MAX_DER
    assert _consistency(result) >= MIN_CONSISTENCY
