"""Speech a decoded window left without words.

Whisper decodes a 30 s window in one pass, and sometimes ends it early: a window that opens
with 1.7 s of French and goes on with 23 s of English, decoded in English, came back as five
words, and the English was lost (a 6 min meeting of real voices lost 28 % of its speech time
this way in a transcription-only job). faster-whisper's sequential mode would seek past the
last timestamp and decode on; the batched pipeline does not. Here the speech VAD found in a
window but no decoded word covers is found, so that it can be decoded again on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# A word covers its own time and this much on each side (word timestamps come from
# cross-attention alignment and drift by a few hundred ms).
WORD_PAD_S = 0.3
# Less uncovered speech than this is a pause, a breath or alignment drift, not lost words.
MIN_UNHEARD_S = 1.0
# Uncovered speech this close, with no word between, is one piece of lost speech (prompts
# 0.3-1.5 s apart): decoded together, with each other's context.
JOIN_S = 2.0


def unheard(
    speech: Sequence[tuple[float, float]],
    words: Iterable[tuple[float, float]],
    min_s: float = MIN_UNHEARD_S,
    pad_s: float = WORD_PAD_S,
) -> list[tuple[float, float]]:
    """The parts of `speech` (start, end) spans that no word (start, end), padded by `pad_s`,
    covers, each at least `min_s` long; in time order. Uncovered parts less than `JOIN_S`
    apart with no word between are one."""
    covered: list[list[float]] = []
    for start, end in sorted((s - pad_s, e + pad_s) for s, e in words):
        if covered and start <= covered[-1][1]:
            covered[-1][1] = max(covered[-1][1], end)
        else:
            covered.append([start, end])
    out: list[tuple[float, float]] = []
    for start, end in sorted(speech):
        at = start
        for c0, c1 in covered:
            if c1 <= at or c0 >= end:
                continue
            if c0 > at:
                out.append((at, c0))
            at = max(at, c1)
        if at < end:
            out.append((at, end))
    merged: list[list[float]] = []
    for start, end in out:
        if (
            merged
            and start - merged[-1][1] < JOIN_S
            and not _any_between(covered, merged[-1][1], start)
        ):
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(round(s, 3), round(e, 3)) for s, e in merged if e - s >= min_s]


def _any_between(covered: list[list[float]], start: float, end: float) -> bool:
    return any(c0 < end and c1 > start for c0, c1 in covered)
