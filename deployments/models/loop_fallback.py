"""Windows whose batched decode fell into a loop, decoded again barred from repeating.

faster-whisper's batched pipeline decodes each window once, by beam search, and keeps what
comes out: it has no compression-ratio check, and the temperature it is given does nothing
to a beam search. A decode that falls into a loop ("3, 2, 1, 2, 1, 2, 1, ..." on a French
turn of the held-out meeting, docs/BENCHMARKS.md 9k) stays in the transcript, and its words
pile up at the window's end, where they land in the next person's turn.

A loop is Whisper's own test for one: text that gzip-compresses more than 2.4 times. Such a
window alone is decoded again as before, with one change: no run of NO_REPEAT_NGRAM tokens
may occur twice, so the beam cannot go round again. Whisper's sequential path samples at
rising temperatures instead, but CTranslate2 cannot reseed its sampling threads, so that gave
other words on every run of one window; this gives the same words every time, whatever the
batch.

NO_REPEAT_NGRAM was chosen by reasoning, not on data (the first looping window found came out
loop-free at 3, 4 and 5 alike): a loop repeats every run of tokens within two turns of it,
while a shorter run (", and the") recurs in ordinary speech of one 30 s window.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import numpy as np

from deployments.models.window_decoding import decode_clips

log = logging.getLogger(__name__)

COMPRESSION_RATIO_THRESHOLD = 2.4  # Whisper's: text this repetitive is a loop
NO_REPEAT_NGRAM = 5


def compression_ratio(text: str) -> float:
    """Whisper's measure of repetition: the text's bytes over its zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def worst_ratio(segments: Sequence) -> float:
    """The highest compression ratio among a window's decoded segments (0 if none)."""
    return max((compression_ratio(s.text) for s in segments), default=0.0)


def looped(segments: Sequence) -> bool:
    return worst_ratio(segments) > COMPRESSION_RATIO_THRESHOLD


def redecode(pipeline, buffer: np.ndarray, clip: dict, language: str | None, opt) -> list:
    """Decode one window of the buffer again by the batched pipeline, as it was decoded the
    first time but barred from repeating itself."""
    extra = {"no_repeat_ngram_size": NO_REPEAT_NGRAM}
    return list(decode_clips(pipeline, buffer, [clip], opt, language or "en", 1, **extra))


def unloop(pipeline, gate, buffer: np.ndarray, state, windows: Sequence[int], opt, live) -> int:
    """Decode again each of `windows` (of a window_decoding.DecodeWindows) whose decode
    looped, in its chosen language; the new decode replaces the old where it is less
    repetitive. Returns how many windows were replaced."""
    replaced = 0
    for k in windows:
        old = state.decoded[k]
        if not looped(old):
            continue
        clip = state.clips[k]
        with gate.hold(live):  # one pass at a time on the replica's threads
            new = redecode(pipeline, buffer, clip, state.languages[k], opt)
        log.info(
            "a window of %.1f s looped (compression ratio %.1f); decoded again: %.1f",
            clip["end"] - clip["start"],
            worst_ratio(old),
            worst_ratio(new),
        )
        if worst_ratio(new) < worst_ratio(old):
            state.decoded[k] = new
            replaced += 1
    return replaced
