"""Split a long recording into segments at silences, streaming, with bounded memory.

Each cut is chosen from a window [min_s, max_s] after the current segment's start: Silero
VAD (bundled with faster-whisper) runs on that window, and the cut goes in the silence gap
that best matches `target_s` (longer gaps preferred). With `near_target_s`, VAD first runs
on `target_s` ± that many seconds only, and on the whole window only if that holds no
silence. Only when the window holds no silence at all is the cut forced to the quietest
short frame.

Determinism: every decision depends only on the samples from the segment start onwards
(the window is anchored there, VAD runs single-threaded), never on how the samples were
chunked into blocks, so the same audio gives the same plans for any block size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deployments.core.schemas import SAMPLE_RATE

VAD_CONTEXT_S = 1.0  # audio before a search window given to VAD so its state is warm
VAD_AFTER_S = 0.5  # audio after it, so a word starting just past the window is not missed
# VAD is the splitter's main cost (py-spy: ~70 % of the job manager's CPU when it searches
# all of [min_s, max_s]). Transcription-only jobs first look this close to the target. Jobs
# that diarize search the whole window: cutting in the longest pauses keeps turns whole,
# and the nearer cuts gave a 4th speaker for 3 voices (tests/test_speaker_consistency.py).
NEAR_TARGET_S = 5.0
MIN_GAP_S = 0.1  # shorter (clipped) gaps are not trusted as silence
GAP_MARGIN_S = 1.0  # in long silences cut near target, keeping this much silence each side
LONG_GAP_BONUS = 3.0  # seconds of distance from target that 1 s of extra gap is worth
LONG_GAP_CAP_S = 1.0  # gaps longer than this are not preferred further
# Overshooting target costs more than undershooting: Whisper decodes 30 s windows, so a
# segment a little over 30 s costs a whole extra window.
OVERSHOOT_WEIGHT = 2.0
FRAME_S = 0.03  # frame for the forced cut (quietest point)


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of a recording, in samples of the whole recording (16 kHz)."""

    index: int
    start: int
    end: int  # exclusive
    forced: bool  # no silence found: cut at the quietest frame instead

    @property
    def key(self) -> str:
        """Names this plan in checkpoints: the same index over other samples is another key."""
        return f"{self.index}:{self.start}-{self.end}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentPlan:
        return cls(
            index=int(data["index"]),
            start=int(data["start"]),
            end=int(data["end"]),
            forced=bool(data["forced"]),
        )


def _speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if audio.size == 0:
        return []
    opts = VadOptions(
        threshold=0.5,
        min_speech_duration_ms=0,  # conservative: even a click is kept as "speech"
        min_silence_duration_ms=200,
        speech_pad_ms=40,
    )
    return [(s["start"], s["end"]) for s in get_speech_timestamps(audio, opts, SAMPLE_RATE)]


def _silence_cut(window: np.ndarray, w0: int, lo: int, hi: int, target: int) -> int | None:
    """Best cut in a silence gap within [lo, hi] (offsets from segment start), or None.

    `window` is the segment's audio from offset `w0`.
    """
    sr = SAMPLE_RATE
    gaps: list[tuple[int, int]] = []
    prev_end = 0
    for start, end in _speech_regions(window):
        gaps.append((prev_end, start))
        prev_end = end
    gaps.append((prev_end, len(window)))
    best: tuple[float, int] | None = None
    for g0, g1 in gaps:
        a, b = max(g0 + w0, lo), min(g1 + w0, hi)
        if b - a < MIN_GAP_S * sr:
            continue
        margin = min((b - a) // 2, int(GAP_MARGIN_S * sr))
        cut = min(max(target, a + margin), b - margin)
        dist = (cut - target) * OVERSHOOT_WEIGHT if cut > target else target - cut
        score = dist / sr - LONG_GAP_BONUS * min((b - a) / sr, LONG_GAP_CAP_S)
        if best is None or score < best[0]:  # strict: ties keep the earliest gap
            best = (score, cut)
    return None if best is None else best[1]


def _quietest_cut(audio: np.ndarray, lo: int, hi: int, target: int) -> int:
    """Centre of the lowest-energy frame in [lo, hi]; near-ties go to the one nearest target."""
    frame = int(FRAME_S * SAMPLE_RATE)
    n = (hi - lo) // frame
    if n < 1:
        return hi
    frames = audio[lo : lo + n * frame].astype(np.float64).reshape(n, frame)
    energy = np.mean(frames**2, axis=1)
    centres = lo + np.arange(n) * frame + frame // 2
    quiet = np.flatnonzero(energy <= energy.min() * 1.25 + 1e-12)
    return int(centres[quiet[np.argmin(np.abs(centres[quiet] - target))]])


def _search(audio: np.ndarray, lo: int, hi: int, target: int) -> int | None:
    """Best silence cut in [lo, hi], with VAD run on that window plus a little context."""
    w0 = max(0, lo - int(VAD_CONTEXT_S * SAMPLE_RATE))
    w1 = min(len(audio), hi + int(VAD_AFTER_S * SAMPLE_RATE))
    return _silence_cut(audio[w0:w1], w0, lo, hi, target)


class _Buffer:
    """Audio from the current segment start onwards, kept as blocks to avoid re-copying."""

    def __init__(self, blocks: Iterable[np.ndarray]) -> None:
        self._source = iter(blocks)
        self._blocks: list[np.ndarray] = []
        self.size = 0
        self.exhausted = False

    def fill(self, want: int) -> None:
        while self.size < want and not self.exhausted:
            block = next(self._source, None)
            if block is None:
                self.exhausted = True
                break
            block = np.asarray(block, dtype=np.float32).reshape(-1)
            if block.size:
                self._blocks.append(block)
                self.size += block.size

    def view(self) -> np.ndarray:
        if len(self._blocks) != 1:
            merged = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.float32)
            self._blocks = [merged]
        return self._blocks[0]

    def take(self, n: int) -> np.ndarray:
        audio = self.view()
        head, rest = audio[:n].copy(), audio[n:]
        self._blocks = [rest] if rest.size else []
        self.size = rest.size
        return head


def split_stream(
    blocks: Iterable[np.ndarray],
    target_s: float = 30.0,
    min_s: float = 10.0,
    max_s: float = 60.0,
    near_target_s: float | None = None,
) -> Iterator[tuple[SegmentPlan, np.ndarray]]:
    """Split streamed 16 kHz mono audio into contiguous segments cut at silences.

    Blocks are pulled lazily: at most max_s + min_s of audio (plus one block) is held, so
    a segment is yielded long before the recording has been read to the end.

    Args:
        blocks: float32 mono 16 kHz blocks of any sizes (e.g. from `iter_audio_blocks`).
        target_s: preferred segment length.
        min_s: no cut earlier than this after the segment start (the last segment may be
            shorter).
        max_s: no segment is longer than this.
        near_target_s: if set, first look for a cut within this many seconds of the
            target (cheaper VAD; cuts may land in shorter pauses).

    Yields:
        (plan, audio) pairs in order; plans cover the recording exactly and contiguously.

    Raises:
        ValueError: if not 0 < min_s <= target_s <= max_s.
    """
    if not 0 < min_s <= target_s <= max_s:
        raise ValueError(f"need 0 < min_s <= target_s <= max_s, got {min_s}, {target_s}, {max_s}")
    sr = SAMPLE_RATE
    lo, target, hi_max = int(min_s * sr), int(target_s * sr), int(max_s * sr)
    # Looking min_s past max_s tells whether a cut would leave a too-short remainder.
    lookahead = hi_max + lo
    buf = _Buffer(blocks)
    index, offset = 0, 0
    while True:
        buf.fill(lookahead)
        n = buf.size
        if n == 0:
            return
        if buf.exhausted and n <= hi_max and n <= target + lo:
            # What is left fits in one segment and splitting it would leave a stub.
            yield SegmentPlan(index, offset, offset + n, False), buf.take(n)
            return
        audio = buf.view()
        hi = min(hi_max, n - lo)  # keep >= min_s for the remainder when we can
        if hi <= lo:
            hi = min(hi_max, n - 1)
        cut = None
        if near_target_s is not None:
            near = int(near_target_s * sr)
            near_lo, near_hi = max(lo, target - near), min(hi, target + near)
            if near_lo < near_hi and (near_lo, near_hi) != (lo, hi):
                cut = _search(audio, near_lo, near_hi, target)
        if cut is None:
            cut = _search(audio, lo, hi, target)
        forced = cut is None
        if cut is None:
            cut = _quietest_cut(audio, lo, hi, target)
        cut = max(1, min(cut, hi_max, n))
        yield SegmentPlan(index, offset, offset + cut, forced), buf.take(cut)
        index, offset = index + 1, offset + cut
