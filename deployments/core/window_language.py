"""Which language each 30 s window of speech is decoded in, when the request names none.

faster-whisper's batched pipeline detects a language per window from the encoder output it
computes anyway (no extra pass), but takes the top guess however unsure. Short windows
("OK", a cough) are often wrong: on real prompts under 1.5 s, a third of guesses were
another language. Here an unsure window takes the language of the nearest sure window of
the same request, or, with none, the request's duration-weighted consensus; the few windows
whose language changes are decoded again in it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

# A window's top language counts as sure at this probability (real speech, Whisper base:
# windows of 2 s or more scored 0.93-1.0 when right; wrong guesses stayed under 0.6).
SURE_PROBABILITY = 0.7


@dataclass
class WindowGuess:
    request: int
    start: float  # seconds, within the request
    end: float
    probabilities: dict[str, float]  # language code -> probability (the top few)

    @property
    def top(self) -> tuple[str, float]:
        code = max(self.probabilities, key=self.probabilities.__getitem__)
        return code, self.probabilities[code]


@dataclass
class RequestLanguage:
    language: str  # over most of the request's speech
    probability: float  # how sure the surest window was (>= SURE_PROBABILITY: sure)


def parse_detection(result: list[tuple[str, float]], keep: int = 5) -> dict[str, float]:
    """CTranslate2's [('<|fr|>', p), ...] (sorted) as {'fr': p} for the top `keep`."""
    return {token.strip("<|>"): float(p) for token, p in result[:keep]}


def choose(
    guesses: list[WindowGuess], threshold: float = SURE_PROBABILITY
) -> tuple[list[str], dict[int, RequestLanguage]]:
    """The language of every window (same order), and each request's overall language."""
    chosen: list[str | None] = [None] * len(guesses)
    by_request: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(guesses):
        by_request[g.request].append(i)
    overall: dict[int, RequestLanguage] = {}
    for request, members in by_request.items():
        members.sort(key=lambda i: guesses[i].start)
        sure = [i for i in members if guesses[i].top[1] >= threshold]
        consensus = _consensus([guesses[i] for i in members])
        for i in members:
            if i in sure:
                chosen[i] = guesses[i].top[0]
            elif sure:  # the nearest sure window in time
                mid = (guesses[i].start + guesses[i].end) / 2
                near = min(sure, key=lambda j: _distance(guesses[j], mid))
                chosen[i] = guesses[near].top[0]
            else:
                chosen[i] = consensus[0]
        spoken: dict[str, float] = defaultdict(float)
        for i in members:
            spoken[chosen[i]] += guesses[i].end - guesses[i].start
        language = max(spoken, key=spoken.__getitem__) if spoken else consensus[0]
        # A request of several languages is as sure as its surest window, not unsure.
        surest = max(guesses[i].top[1] for i in members)
        overall[request] = RequestLanguage(language, round(surest, 4))
    return [c or "" for c in chosen], overall


def _distance(guess: WindowGuess, t: float) -> float:
    return 0.0 if guess.start <= t <= guess.end else min(abs(guess.start - t), abs(guess.end - t))


def _consensus(guesses: list[WindowGuess]) -> tuple[str, float]:
    """The language with the most duration-weighted probability over these windows."""
    total: dict[str, float] = defaultdict(float)
    for g in guesses:
        for code, p in g.probabilities.items():
            total[code] += (g.end - g.start or 1e-3) * p
    code = max(total, key=total.__getitem__)
    return code, total[code]


# Detection on this much speech was right for 80 of 81 prompts of the tune voices, sure or
# not (bench/multilingual.py --calibrate): a segment with more is never overruled.
SHORT_SPEECH_S = 1.5


def settle(
    found: list[tuple[str | None, float, float]], threshold: float = SURE_PROBABILITY
) -> dict[int, str]:
    """Across a job's segments, in time order: (language, probability, seconds of speech)
    each, language None where nothing was said. Returns {index: language} for the short,
    unsure segments whose nearest sure neighbour (the earlier on a tie) speaks another."""
    sure = [i for i, (lang, p, _) in enumerate(found) if lang and p >= threshold]
    changes: dict[int, str] = {}
    if not sure:
        return changes
    for i, (lang, p, speech_s) in enumerate(found):
        if lang is None or p >= threshold or speech_s >= SHORT_SPEECH_S:
            continue
        near = min(sure, key=lambda j: (abs(j - i), j))
        if found[near][0] != lang:
            changes[i] = found[near][0]
    return changes


# A turn shorter than this ("yeah", "OK") cuts no window of its own: it is too short to
# detect a language on, and a window each would cost an encoder pass each.
MIN_TURN_S = 1.5
# With speakers (a diarized job), a one-word turn gets a window of its own anyway: it takes
# its speaker's language, not its detection's. Left inside a neighbour's window, "Primero."
# came out Italian (p 0.997, the window's), and alone its detection was as often wrong.
SPEAKER_TURN_S = 0.5


def speaker_cuts(
    turns: list[tuple[float, float, str]], min_turn_s: float = MIN_TURN_S
) -> tuple[float, ...]:
    """Where one speaker hands over to another: midpoints between the (start, end, speaker)
    exclusive turns of a piece of audio, short turns left out."""
    runs: list[list] = []
    for start, end, who in sorted(turns):
        if runs and runs[-1][2] == who:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end, who])
    kept: list[list] = []
    for run in runs:
        if run[1] - run[0] < min_turn_s:
            continue
        if kept and kept[-1][2] == run[2]:
            kept[-1][1] = run[1]
        else:
            kept.append(run)
    return tuple(round((a[1] + b[0]) / 2, 3) for a, b in itertools.pairwise(kept))


# A stretch shorter than this takes its speaker's language over its own sure detection (it
# still votes from SHORT_SPEECH_S): Whisper base called es_co's Spanish Italian at 0.87 on
# 2.2 s. Chosen on the tune short-turn meeting, 0.963 -> 0.971 (4 s gave the same).
OWN_LANGUAGE_S = 3.0
# A speaker's language is a hint when it holds this share of their sure speech: a bilingual
# person, or two voices the diarizer merged, gives none.
SPEAKER_LANGUAGE_SHARE = 0.75


@dataclass
class Spoken:
    """A stretch of a job's transcript (a transcript segment) and who said it."""

    segment: int  # the job's segment (plan) it is in
    start: float  # seconds, within that segment
    end: float
    language: str | None
    probability: float
    speaker: str | None


def speaker_hints(
    spans: list[Spoken], lengths: dict[int, float]
) -> dict[int, tuple[tuple[float, float, str], ...]]:
    """Per job segment, (start, end, language) for the stretches to decode again in their
    speaker's language: those not sure of it, their speaker keeping to one language
    elsewhere (SPEAKER_LANGUAGE_SHARE of their sure speech).

    A stretch under SHORT_SPEECH_S is never sure (nor votes): a one-word turn's detection
    said "Estensione." was Spanish at 0.92; one under OWN_LANGUAGE_S votes but still takes
    its speaker's language. Each hint reaches halfway to the stretches beside it
    (the segment's edges, `lengths`, for the first and last), so that it covers the whole
    window a short turn is decoded in, pauses and padding included: the replica takes a hint
    that covers half of a window (hinted)."""
    votes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    sure = []
    for s in spans:
        ok = s.probability >= SURE_PROBABILITY and s.end - s.start >= SHORT_SPEECH_S
        sure.append(ok and s.end - s.start >= OWN_LANGUAGE_S)
        if ok and s.speaker and s.language:
            votes[s.speaker][s.language] += s.end - s.start
    spoken = {}
    for who, seconds in votes.items():
        top = max(seconds, key=seconds.__getitem__)
        if seconds[top] >= SPEAKER_LANGUAGE_SHARE * sum(seconds.values()):
            spoken[who] = top
    hints: dict[int, list] = defaultdict(list)
    for n, s in enumerate(spans):
        wanted = spoken.get(s.speaker)
        if not wanted or sure[n] or s.language == wanted:
            continue
        before = spans[n - 1] if n and spans[n - 1].segment == s.segment else None
        after = spans[n + 1] if n + 1 < len(spans) and spans[n + 1].segment == s.segment else None
        start = (before.end + s.start) / 2 if before else 0.0
        end = (s.end + after.start) / 2 if after else max(lengths.get(s.segment, s.end), s.end)
        hints[s.segment].append((round(start, 3), round(end, 3), wanted))
    return {i: tuple(h) for i, h in hints.items()}


def hinted(hints: Sequence[tuple[float, float, str]], start: float, end: float) -> str | None:
    """The language hinted over most of [start, end], if its hints cover at least half: a
    window holding three short stretches of one speaker has three hints side by side."""
    cover: dict[str, float] = defaultdict(float)
    for h0, h1, language in hints:
        cover[language] += max(0.0, min(end, h1) - max(start, h0))
    best = max(cover, key=cover.__getitem__, default=None)
    return best if best and cover[best] >= 0.5 * (end - start) else None


def among(
    candidates: Sequence[str], guess: WindowGuess, threshold: float = SURE_PROBABILITY
) -> str | None:
    """For a window unsure of its language: the likeliest of `candidates` (the languages
    spoken with confidence elsewhere in the recording) by its own detection, if any of them
    is among its top guesses; None for a sure window or without such a candidate."""
    if guess.top[1] >= threshold:
        return None
    scored = {c: p for c, p in guess.probabilities.items() if c in candidates}
    return max(scored, key=scored.__getitem__) if scored else None
