"""Stitch per-segment transcriptions and diarizations into one result for the recording.

Segment-local times become global, local speakers are linked into global ones (see
speaker_linking: all segments' tracks are clustered jointly), each word gets the speaker of the
exclusive turn it overlaps most, and words are regrouped into sentence-level segments of
one speaker.

It works in two passes so a job's words never need to be in memory at once: `link_speakers`
needs only the speaker tracks (small, linear in segments); then each segment's words are
attributed and fed, in time order, to a `Stitcher`, whose finished segments can be written
out as they come (jobs.stitching.result_writer). `stitch` runs both passes in memory.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.core.clustering import ClusterParams, count_notes
from deployments.core.schemas import Diarization, DiarizeOptions, SpeakerTurn, Transcription
from deployments.core.splitter import SegmentPlan
from jobs.stitching.languages import LanguageVote, TurnLanguages
from jobs.stitching.speaker_linking import TrackSet, Voice
from jobs.stitching.voiceprints import (
    ANONYMOUS,
    MATCH_THRESHOLD,
    KnownSpeaker,
    SpeakerMatch,
    assign,
    closest,
)

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
    # Kept while stitching (segments, sentences and turns take it), not written per word.
    language: str | None = Field(None, exclude=True)
    language_probability: float | None = Field(None, exclude=True)  # its window's detection


class StitchedSegment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float
    end: float
    text: str
    speaker: str | None = None
    language: str | None = None  # what was spoken (with task=translate too)
    # How sure the detection was of that language (the least sure of its windows; 1.0 when
    # the caller named the language). Under 0.7 the language may be wrong: see the notes.
    language_probability: float | None = None
    words: list[StitchedWord]


class JobResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: float
    language: str | None  # spoken over most of the recording
    languages: list[str] = []  # every language spoken, most words first
    task: str = "transcribe"  # translate: the text is English, `language` stays the spoken one
    speakers: list[str]
    segments: list[StitchedSegment]
    turns: list[SpeakerTurn]  # global, relabelled, merged across segment boundaries (RTTM)
    notes: list[str] = []  # e.g. a speaker-count hint the audio could not satisfy
    # With known speakers: per speaker, the enrolled voice it was named after (or the
    # closest one) and the cosine similarity.
    speaker_matches: list[SpeakerMatch] = []

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


def segment_words(plan: SegmentPlan, transcription: Transcription, sr: int) -> list[StitchedWord]:
    """One segment's words in global time, sorted, clamped into the segment.

    Clamping keeps words of neighbouring segments from interleaving, so the recording's words
    in time order are the segments' lists one after another.
    """
    t0, t1 = plan.start / sr, plan.end / sr
    words: list[StitchedWord] = []
    for seg in transcription.segments:
        language = seg.language or transcription.language
        sure = seg.language_probability
        parts = [(w.start, w.end, w.text, w.probability) for w in seg.words]
        if not parts and seg.text.strip():
            # Without word timestamps, the segment itself stands in for its words.
            prob = float(np.clip(np.exp(seg.avg_logprob), 0.0, 1.0))
            parts = [(seg.start, seg.end, seg.text, prob)]
        for start, end, text, prob in parts:
            s = round(min(max(t0 + start, t0), t1), 3)
            e = round(min(max(t0 + end, s), t1), 3)
            words.append(
                StitchedWord(
                    start=s,
                    end=e,
                    text=text,
                    probability=prob,
                    language=language,
                    language_probability=sure,
                )
            )
    words.sort(key=lambda w: w.start)  # stable: equal starts keep transcript order
    for prev, cur in itertools.pairwise(words):
        if prev.end > cur.start:  # trim the earlier word's tail rather than move a start
            prev.end = max(prev.start, cur.start)
    return words


def _global_turns(
    plans: list[SegmentPlan], spans: list[list[tuple[float, float, int]]], sr: int
) -> list[_Turn]:
    turns: list[_Turn] = []
    for k, (plan, local) in enumerate(zip(plans, spans, strict=True)):
        t0, t1 = plan.start / sr, plan.end / sr
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


@dataclass
class Speakers:
    """Global speakers of a recording and the turns words are attributed by."""

    names: list[str]  # in order of first appearance: known names, or SPEAKER_00, ...
    turns: list[SpeakerTurn]  # merged across segment boundaries (RTTM)
    notes: list[str]
    voices: dict[str, Voice] = field(default_factory=dict)  # by name
    matches: list[SpeakerMatch] = field(default_factory=list)
    _starts: list[float] = field(default_factory=list)  # clean exclusive turns, by time
    _ends: list[float] = field(default_factory=list)
    _who: list[str] = field(default_factory=list)

    def exclusive_turns(self, start: float, end: float) -> list[tuple[float, float, str]]:
        """(start, end, speaker) of the clean exclusive turns within [start, end] s of the
        recording, clipped to it, in seconds from `start`."""
        j, k = bisect.bisect_right(self._ends, start), bisect.bisect_left(self._starts, end)
        return [
            (max(a, start) - start, min(b, end) - start, who)
            for a, b, who in zip(self._starts[j:k], self._ends[j:k], self._who[j:k], strict=True)
        ]

    def attribute(self, words: list[StitchedWord]) -> None:
        """Give each word the speaker of the exclusive turn it overlaps most (or the nearest)."""
        starts, ends, who = self._starts, self._ends, self._who
        for w in words:
            j, k = bisect.bisect_right(ends, w.start), bisect.bisect_left(starts, w.end)
            overlap: dict[str, float] = defaultdict(float)
            for i in range(j, k):
                overlap[who[i]] += min(ends[i], w.end) - max(starts[i], w.start)
            if overlap:
                w.speaker = max(overlap, key=lambda s: overlap[s])
                continue
            near = [(starts[i] - w.end, who[i]) for i in range(k, min(k + 1, len(starts)))]
            near += [(w.start - ends[i], who[i]) for i in range(max(j - 1, 0), j)]
            near = [(gap, name) for gap, name in near if gap <= NEAREST_TURN_S]
            if near:
                w.speaker = min(near, key=lambda p: p[0])[1]


def _name(
    order: list[int], voices: dict[int, Voice], known: list[KnownSpeaker] | None, threshold: float
) -> tuple[dict[int, str], list[SpeakerMatch]]:
    """Known names where a voice matches an enrolled one, else SPEAKER_00, ... in order."""
    if not known:
        return {cid: ANONYMOUS.format(i) for i, cid in enumerate(order)}, []
    found = assign({str(c): voices[c].embedding for c in order if c in voices}, known, threshold)
    names: dict[int, str] = {}
    matches: list[SpeakerMatch] = []
    anonymous = 0
    for cid in order:
        hit = found.get(str(cid))
        if hit:
            names[cid] = hit[0].name
            match = SpeakerMatch(speaker=hit[0].name, speaker_id=hit[0].id, similarity=hit[1])
            matches.append(match)
            continue
        names[cid] = ANONYMOUS.format(anonymous)
        anonymous += 1
        near = closest(voices[cid].embedding, known) if cid in voices else None
        matches.append(SpeakerMatch(speaker=names[cid], similarity=near))
    return names, matches


def link_speakers(
    plans: list[SegmentPlan],
    tracks: TrackSet,
    options: DiarizeOptions | None = None,
    sample_rate: int = 16000,
    params: ClusterParams | None = None,
    known: list[KnownSpeaker] | None = None,
    threshold: float = MATCH_THRESHOLD,
) -> Speakers:
    """Cluster all segments' tracks into global speakers (plans in time order), and name
    those whose voice matches one of `known`."""
    local, local_exclusive, voices = tracks.spans(options, params or ClusterParams())
    boundaries = {p.start / sample_rate for p in plans[1:]}
    turns = _merge_turns(_global_turns(plans, local, sample_rate), boundaries)
    exclusive = _merge_turns(_global_turns(plans, local_exclusive, sample_rate), boundaries)

    first: dict[int, float] = {}
    for t in exclusive + turns:  # order of first appearance in time
        first[t.speaker] = min(first.get(t.speaker, t.start), t.start)
    order = sorted(first, key=lambda c: (first[c], c))
    names, matches = _name(order, voices, known, threshold)
    # Judged on the speakers the whole recording gave, after linking.
    wanted = (options.num_speakers or options.min_speakers or 0) if options else 0
    speakers = Speakers(
        names=[names[c] for c in order],
        turns=[
            SpeakerTurn(start=round(t.start, 3), end=round(t.end, 3), speaker=names[t.speaker])
            for t in turns
        ],
        notes=count_notes(wanted, bool(options and options.num_speakers), len(order)),
        voices={names[c]: voices[c] for c in order if c in voices},
        matches=matches,
    )
    for t in exclusive:
        start = max(t.start, speakers._ends[-1]) if speakers._ends else t.start
        if t.end > start:  # guard against (buggy) overlapping "exclusive" turns
            speakers._starts.append(start)
            speakers._ends.append(t.end)
            speakers._who.append(names[t.speaker])
    return speakers


class SentenceBuilder:
    """Regroups words, fed in time order, into sentence-level segments of one speaker."""

    def __init__(self) -> None:
        self._cur: list[StitchedWord] = []
        self._speaker: str | None = None

    def add(self, words: Iterable[StitchedWord]) -> list[StitchedSegment]:
        """Feed words; returns the segments they finished."""
        out: list[StitchedSegment] = []
        for w in words:
            cur = self._cur
            if cur:
                last = cur[-1]
                sentence_done = last.text.strip().endswith(SENTENCE_END) and (
                    len(cur) >= MIN_SENTENCE_WORDS or last.end - cur[0].start >= MIN_SENTENCE_S
                )
                # A word without a speaker joins the current segment instead of splitting it.
                changed = (
                    w.speaker is not None
                    and self._speaker is not None
                    and w.speaker != self._speaker
                ) or (w.language is not None and last.language not in (None, w.language))
                if (
                    changed
                    or sentence_done
                    or w.start - last.end > PAUSE_S
                    or w.end - cur[0].start > MAX_SEGMENT_S
                    or len(cur) >= MAX_SEGMENT_WORDS
                ):
                    out += self.close()
            self._cur.append(w)
            self._speaker = self._speaker or w.speaker
        return out

    def close(self) -> list[StitchedSegment]:
        """The segment in progress, if any (call once more after the last word)."""
        cur, speaker = self._cur, self._speaker
        self._cur, self._speaker = [], None
        if not cur:
            return []
        text = "".join(w.text for w in cur).strip()
        language = next((w.language for w in cur if w.language), None)
        sure = [w.language_probability for w in cur if w.language_probability is not None]
        segment = StitchedSegment(
            start=cur[0].start,
            end=cur[-1].end,
            text=text,
            speaker=speaker,
            language=language,
            language_probability=min(sure) if sure else None,
            words=cur,
        )
        return [segment]


class Stitcher:
    """The second pass: each segment's transcription, fed in time order, has its words put in
    global time and attributed to speakers; finished sentence segments come back at once."""

    def __init__(
        self, speakers: Speakers, sample_rate: int = 16000, task: str = "transcribe"
    ) -> None:
        self.speakers, self.sample_rate, self.task = speakers, sample_rate, task
        self._builder, self._language = SentenceBuilder(), LanguageVote()
        self._turn_languages = TurnLanguages(speakers.turns)

    def add(self, plan: SegmentPlan, transcription: Transcription) -> list[StitchedSegment]:
        words = segment_words(plan, transcription, self.sample_rate)
        self.speakers.attribute(words)
        self._language.add(plan, transcription, words)
        self._turn_languages.add(words)
        return self._builder.add(words)

    def close(self) -> list[StitchedSegment]:
        """The last segment, after the last transcription."""
        return self._builder.close()

    def result(self, duration: float, segments: list[StitchedSegment]) -> JobResult:
        s = self.speakers
        language, languages = self._language.result()
        return JobResult(
            duration=duration,
            language=language,
            languages=languages,
            task=self.task,
            speakers=s.names,
            segments=segments,
            turns=self._turn_languages.turns(),
            notes=s.notes + self._language.notes(),
            speaker_matches=s.matches,
        )


def stitch(
    outcomes: list[SegmentOutcome],
    duration: float,
    options: DiarizeOptions | None = None,
    sample_rate: int = 16000,
    params: ClusterParams | None = None,
    known: list[KnownSpeaker] | None = None,
    task: str = "transcribe",
) -> JobResult:
    """Combine the segments' results, all in memory, into one transcript with global speakers.

    Args:
        outcomes: one per segment, any order (sorted by plan start here).
        duration: length of the whole recording in seconds.
        options: speaker-count constraints for linking speakers across segments.
        sample_rate: the rate plan offsets are counted in.
        params: clustering parameters for linking speakers (default: the diarizer's).
        known: enrolled voices to name speakers after.
        task: "translate" when the transcriptions are English translations.

    Returns:
        The stitched result; speakers are SPEAKER_00, SPEAKER_01, ... by first appearance,
        or the names of known speakers their voices match.
    """
    outcomes = sorted(outcomes, key=lambda oc: (oc.plan.start, oc.plan.index))
    plans = [oc.plan for oc in outcomes]
    tracks = TrackSet()
    for oc in outcomes:
        tracks.add(oc.diarization)
    speakers = link_speakers(plans, tracks, options, sample_rate, params, known)
    stitcher = Stitcher(speakers, sample_rate, task)
    segments = [seg for oc in outcomes for seg in stitcher.add(oc.plan, oc.transcription)]
    return stitcher.result(duration, segments + stitcher.close())


def single(transcription: Transcription, task: str = "transcribe") -> JobResult:
    """One transcription of a whole recording (no segments, no speakers) as a JobResult, so
    one renderer serves the OpenAI direct path and jobs alike."""
    whole = SegmentPlan(0, 0, round(transcription.duration * 16000), forced=False)
    outcome = SegmentOutcome(plan=whole, transcription=transcription, diarization=None)
    return stitch([outcome], transcription.duration, task=task)
