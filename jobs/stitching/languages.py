"""Which language each part of a stitched transcript was spoken in.

Every word keeps the language its 30 s window was decoded in (deployments.core.window_language);
sentences split where it changes, and turns and the recording take the language of most of
their words.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from deployments.core.schemas import SpeakerTurn, Transcription
from deployments.core.splitter import SegmentPlan
from deployments.core.window_language import SURE_PROBABILITY

if TYPE_CHECKING:
    from jobs.stitching.stitch import StitchedWord


UNSURE_NOTE_S = 1.0  # less unsure speech than this (a word or two) is not worth a note


class LanguageVote:
    """The languages spoken: words counted by the language they were decoded in."""

    def __init__(self) -> None:
        self._words: Counter[str] = Counter()
        self._audio: Counter[str] = Counter()
        self._unsure_s = self._speech_s = 0.0

    def add(self, plan: SegmentPlan, transcription: Transcription, words: list[StitchedWord]):
        self._words.update(w.language for w in words if w.language)
        for w in words:
            if w.language_probability is not None:
                self._speech_s += w.end - w.start
                if w.language_probability < SURE_PROBABILITY:
                    self._unsure_s += w.end - w.start
        if transcription.language:
            self._audio[transcription.language] += plan.end - plan.start

    def notes(self) -> list[str]:
        """A note when some speech kept a language its detection was unsure of."""
        if self._unsure_s < UNSURE_NOTE_S:
            return []
        share = self._unsure_s / max(self._speech_s, 1e-9)
        return [
            f"the language of {self._unsure_s:.1f} s of speech ({share:.0%}) could not be told "
            f"with confidence: segments with language_probability under {SURE_PROBABILITY} "
            "may be in the wrong language (name the language to be sure)"
        ]

    def result(self) -> tuple[str | None, list[str]]:
        """(the main language, all of them by words); with nothing said, the detection
        over the most audio."""
        votes = self._words if self._words.total() else self._audio
        ranked = [code for code, _ in votes.most_common()]
        return (ranked[0] if ranked else None), ranked if self._words.total() else []


class TurnLanguages:
    """Each speaker turn's language: what most of its words' time was spoken in."""

    def __init__(self, turns: list[SpeakerTurn]) -> None:
        self._turns = turns
        self._spans: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        for i, t in enumerate(turns):
            self._spans[t.speaker].append((t.start, t.end, i))
        self._starts = {name: [s[0] for s in spans] for name, spans in self._spans.items()}
        self._votes: dict[int, Counter[str]] = defaultdict(Counter)

    def add(self, words: list[StitchedWord]) -> None:
        for w in words:
            spans = self._spans.get(w.speaker or "")
            if not spans or not w.language:
                continue
            mid = (w.start + w.end) / 2
            k = bisect.bisect_right(self._starts[w.speaker], mid)
            near = min(
                spans[max(k - 1, 0) : k + 1],
                key=lambda s: 0.0 if s[0] <= mid <= s[1] else min(abs(s[0] - mid), abs(s[1] - mid)),
            )
            self._votes[near[2]][w.language] += max(w.end - w.start, 0.01)

    def turns(self) -> list[SpeakerTurn]:
        return [
            t.model_copy(update={"language": self._votes[i].most_common(1)[0][0]})
            if self._votes.get(i)
            else t
            for i, t in enumerate(self._turns)
        ]
