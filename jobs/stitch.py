"""Stitch per-segment transcriptions and diarizations into one result for the recording.

Segment-local times become global, local speakers are linked into global ones (see
speaker_linking: all segments' tracks are clustered jointly), each word gets the speaker of the
exclusive turn it overlaps most, and words are regrouped into sentence-level segments of
one speaker.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from deployments.diarization.clustering import ClusterParams, count_notes
from deployments.schemas import Diarization, DiarizeOptions, SpeakerTurn, Transcription
from jobs.speaker_linking import cluster_tracks
from jobs.splitter import SegmentPlan

NEAREST_TURN_S = 1.0  # a word outside every turn takes the nearest one within this
BOUNDARY_GAP_S = 0.5  # turns either side of a segment boundary closer than this are joined
TOUCH_S = 0.01  # turns this close are one turn
PAUSE_S = 1.0  # a longer pause between words starts a new sentence segment
MAX_SEGMENT_S = 30.0
MAX_SEGMENT_WORDS = 60
MIN_SENTENCE_WORDS = 3  # a sentence-final mark splits only after this many words...
MIN_SENTENCE_S = 1.0  # ...or this long (so "Mr." or "Yes." does not split on its own)
SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")


class StitchedWord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float
    end: float
    text: str
    probability: float
    speaker: str | None = None


class StitchedSegment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float
    end: float
    text: str
    speaker: str | None = None
    words: list[StitchedWord]


class JobResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: float
    language: str | None
    speakers: list[str]
    segments: list[StitchedSegment]
    turns: list[SpeakerTurn]  # global, relabelled, merged across segment boundaries (RTTM)
    notes: list[str] = []  # e.g. a speaker-count hint the audio could not satisfy

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)


@dataclass
class SegmentOutcome:
    plan: SegmentPlan
    transcription: Transcription
    diarization: Diarization | None


@dataclass
class _Turn:
    start: float
    end: float
    speaker: int  # global cluster id
    segment: int


def _global_words(outcomes: list[SegmentOutcome], sr: int) -> list[StitchedWord]:
    words: list[StitchedWord] = []
    for oc in outcomes:
        t0, t1 = oc.plan.start / sr, oc.plan.end / sr
        for seg in oc.transcription.segments:
            parts = [(w.start, w.end, w.text, w.probability) for w in seg.words]
            if not parts and seg.text.strip():
                # Without word timestamps, the segment itself stands in for its words.
                prob = float(np.clip(np.exp(seg.avg_logprob), 0.0, 1.0))
                parts = [(seg.start, seg.end, seg.text, prob)]
            for start, end, text, prob in parts:
                # Clamp into the segment so words of neighbouring segments cannot interleave.
                s = round(min(max(t0 + start, t0), t1), 3)
                e = round(min(max(t0 + end, s), t1), 3)
                words.append(StitchedWord(start=s, end=e, text=text, probability=prob))
    words.sort(key=lambda w: w.start)  # stable: equal starts keep transcript order
    for prev, cur in itertools.pairwise(words):
        if prev.end > cur.start:  # trim the earlier word's tail rather than move a start
            prev.end = max(prev.start, cur.start)
    return words


# (start, end, global cluster id), segment-relative.
_Span = tuple[float, float, int]


def _spans_by_tracks(
    outcomes: list[SegmentOutcome], options: DiarizeOptions | None, params: ClusterParams
) -> tuple[list[list[_Span]], list[list[_Span]]]:
    """Turns and exclusive turns labelled by clustering all segments' tracks jointly."""
    diarized = [oc.diarization for oc in outcomes]
    tracks = [d.tracks if d is not None else [] for d in diarized]
    speaking = [d for d in diarized if d is not None and d.speakers]
    opts = options or DiarizeOptions()
    n = len(speaking[0].speakers) if speaking else 0
    fits = (
        (opts.num_speakers or opts.min_speakers or 1)
        <= n
        <= (opts.num_speakers or opts.max_speakers or n)
    )
    if len(speaking) == 1 and fits:
        # One segment: its own clustering already saw all the context there is.
        labels = [[d.speakers.index(t.speaker) for t in d.tracks] if d else [] for d in diarized]
    else:
        labels = cluster_tracks(tracks, options, params)
    turns = [
        [(a, b, cid) for t, cid in zip(ts, ids, strict=True) for a, b in t.turns]
        for ts, ids in zip(tracks, labels, strict=True)
    ]
    exclusive = [
        [(a, b, cid) for t, cid in zip(ts, ids, strict=True) for a, b in t.exclusive_turns]
        for ts, ids in zip(tracks, labels, strict=True)
    ]
    return turns, exclusive


def _global_turns(outcomes: list[SegmentOutcome], spans: list[list[_Span]], sr: int) -> list[_Turn]:
    turns: list[_Turn] = []
    for k, (oc, local) in enumerate(zip(outcomes, spans, strict=True)):
        t0, t1 = oc.plan.start / sr, oc.plan.end / sr
        for start, end, cid in local:
            s, e = min(max(t0 + start, t0), t1), min(max(t0 + end, t0), t1)
            if e > s:
                turns.append(_Turn(s, e, cid, k))
    return turns


def _merge_turns(turns: list[_Turn], boundaries: set[float]) -> list[_Turn]:
    """Join a speaker's turns that touch, or nearly touch across a segment boundary."""
    by_speaker: dict[int, list[_Turn]] = defaultdict(list)
    for t in sorted(turns, key=lambda t: (t.start, t.end)):
        by_speaker[t.speaker].append(t)
    merged: list[_Turn] = []
    for group in by_speaker.values():
        cur = _Turn(group[0].start, group[0].end, group[0].speaker, group[0].segment)
        for t in group[1:]:
            gap = t.start - cur.end
            across = t.segment != cur.segment and any(
                cur.end - TOUCH_S <= b <= t.start + TOUCH_S for b in boundaries
            )
            if gap <= TOUCH_S or (across and gap <= BOUNDARY_GAP_S):
                cur.end, cur.segment = max(cur.end, t.end), t.segment
            else:
                merged.append(cur)
                cur = _Turn(t.start, t.end, t.speaker, t.segment)
        merged.append(cur)
    return sorted(merged, key=lambda t: (t.start, t.end, t.speaker))


def _attribute(words: list[StitchedWord], turns: list[_Turn], names: dict[int, str]) -> None:
    """Give each word the speaker of the exclusive turn it overlaps most (or the nearest)."""
    clean: list[_Turn] = []
    for t in sorted(turns, key=lambda t: (t.start, t.end)):
        start = max(t.start, clean[-1].end) if clean else t.start
        if t.end > start:  # guard against (buggy) overlapping "exclusive" turns
            clean.append(_Turn(start, t.end, t.speaker, t.segment))
    starts = [t.start for t in clean]
    ends = [t.end for t in clean]
    for w in words:
        j, k = bisect.bisect_right(ends, w.start), bisect.bisect_left(starts, w.end)
        overlap: dict[int, float] = defaultdict(float)
        for t in clean[j:k]:
            overlap[t.speaker] += min(t.end, w.end) - max(t.start, w.start)
        if overlap:
            w.speaker = names[max(overlap, key=lambda s: overlap[s])]
            continue
        near = [(t.start - w.end, t) for t in clean[k : k + 1]] + [
            (w.start - t.end, t) for t in clean[max(j - 1, 0) : j]
        ]
        near = [(gap, t) for gap, t in near if gap <= NEAREST_TURN_S]
        if near:
            w.speaker = names[min(near, key=lambda p: p[0])[1].speaker]


def _sentences(words: list[StitchedWord]) -> list[StitchedSegment]:
    out: list[StitchedSegment] = []
    cur: list[StitchedWord] = []
    speaker: str | None = None

    def flush() -> None:
        if cur:
            text = "".join(w.text for w in cur).strip()
            out.append(
                StitchedSegment(
                    start=cur[0].start, end=cur[-1].end, text=text, speaker=speaker, words=cur
                )
            )

    for w in words:
        if cur:
            last = cur[-1]
            sentence_done = last.text.strip().endswith(SENTENCE_END) and (
                len(cur) >= MIN_SENTENCE_WORDS or last.end - cur[0].start >= MIN_SENTENCE_S
            )
            # A word without a speaker joins the current segment instead of splitting it.
            changed = w.speaker is not None and speaker is not None and w.speaker != speaker
            if (
                changed
                or sentence_done
                or w.start - last.end > PAUSE_S
                or w.end - cur[0].start > MAX_SEGMENT_S
                or len(cur) >= MAX_SEGMENT_WORDS
            ):
                flush()
                cur, speaker = [], None
        cur.append(w)
        speaker = speaker or w.speaker
    flush()
    return out


def _language(outcomes: list[SegmentOutcome], words_per_outcome: list[int]) -> str | None:
    votes: Counter[str] = Counter()
    for oc, n in zip(outcomes, words_per_outcome, strict=True):
        votes[oc.transcription.language] += n
    if not votes.total():  # nothing said: fall back to the longest segment's detection
        for oc in outcomes:
            votes[oc.transcription.language] += oc.plan.end - oc.plan.start
    return votes.most_common(1)[0][0] if votes else None


def stitch(
    outcomes: list[SegmentOutcome],
    duration: float,
    options: DiarizeOptions | None = None,
    sample_rate: int = 16000,
    params: ClusterParams | None = None,
) -> JobResult:
    """Combine the segments' results into one transcript with global speakers.

    Args:
        outcomes: one per segment, any order (sorted by plan start here).
        duration: length of the whole recording in seconds.
        options: speaker-count constraints for linking speakers across segments.
        sample_rate: the rate plan offsets are counted in.
        params: clustering parameters for linking speakers (default: the diarizer's).

    Returns:
        The stitched result; speakers are SPEAKER_00, SPEAKER_01, ... by first appearance.
    """
    outcomes = sorted(outcomes, key=lambda oc: (oc.plan.start, oc.plan.index))
    words = _global_words(outcomes, sample_rate)

    local, local_exclusive = _spans_by_tracks(outcomes, options, params or ClusterParams())
    boundaries = {oc.plan.start / sample_rate for oc in outcomes[1:]}
    turns = _merge_turns(_global_turns(outcomes, local, sample_rate), boundaries)
    exclusive = _merge_turns(_global_turns(outcomes, local_exclusive, sample_rate), boundaries)

    first: dict[int, float] = {}
    for t in exclusive + turns:  # order of first appearance in time
        first[t.speaker] = min(first.get(t.speaker, t.start), t.start)
    order = sorted(first, key=lambda c: (first[c], c))
    names = {cid: f"SPEAKER_{i:02d}" for i, cid in enumerate(order)}

    _attribute(words, exclusive, names)
    # Judged on the speakers the whole recording gave, after linking.
    wanted = (options.num_speakers or options.min_speakers or 0) if options else 0
    notes = count_notes(wanted, bool(options and options.num_speakers), len(order))
    counts = [
        sum(len(s.words) or bool(s.text.strip()) for s in oc.transcription.segments)
        for oc in outcomes
    ]
    return JobResult(
        duration=duration,
        language=_language(outcomes, counts),
        speakers=[names[c] for c in order],
        segments=_sentences(words),
        turns=[
            SpeakerTurn(start=round(t.start, 3), end=round(t.end, 3), speaker=names[t.speaker])
            for t in turns
        ],
        notes=notes,
    )
