"""Server-side turn detection (OpenAI's `server_vad`): where speech starts and stops in a live
stream of 16 kHz audio, from Silero VAD's speech probability per 32 ms frame.

A turn starts at the first frame at or above `threshold`, reported `prefix_padding_ms`
earlier; it stops once `silence_duration_ms` of frames have stayed below the threshold (less
a hysteresis margin, as Silero's own segmenter does), reported at the end of that silence,
as OpenAI reports it. A turn that runs past `max_turn_ms` is stopped there, so no turn
outgrows what the transcriber decodes in one window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FRAME = 512  # samples at 16 kHz: Silero's frame
FRAME_MS = 32
HYSTERESIS = 0.15
MAX_TURN_MS = 30_000


@dataclass(frozen=True)
class ServerVad:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def describe(self) -> dict:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True)
class TurnEdge:
    started: bool  # True: speech started at `ms`; False: it stopped at `ms`
    ms: int
    start_ms: int  # where the turn began (on both edges)


Probabilities = Callable[[np.ndarray], np.ndarray]


def silero_probabilities() -> Probabilities:
    """Speech probability per 512-sample frame (faster-whisper's bundled Silero VAD; each
    frame sees the 64 samples before it, so frames may be scored in any grouping)."""
    from faster_whisper.vad import get_vad_model

    model = get_vad_model()

    def probs(audio: np.ndarray) -> np.ndarray:
        return np.asarray(model(audio), np.float32).reshape(-1)

    return probs


class TurnDetector:
    """Feed 16 kHz audio as it arrives; get the turn edges it completes."""

    def __init__(
        self,
        vad: ServerVad,
        probs: Probabilities,
        floor_ms: int = 0,
        max_turn_ms: int = MAX_TURN_MS,
    ) -> None:
        self.vad, self._probs, self.max_turn_ms = vad, probs, max_turn_ms
        self._pending = np.zeros(0, np.float32)
        self._prev = np.zeros(FRAME, np.float32)  # context for the first frame of a push
        self._frames = floor_ms // FRAME_MS  # frames seen since the session began
        self.floor_ms = floor_ms  # no turn starts before this (the last commit or clear)
        self.speaking = False
        self.start_ms = 0
        self._silence_ms = 0

    def push(self, audio: np.ndarray) -> list[TurnEdge]:
        joined = np.concatenate([self._pending, audio])
        n = len(joined) // FRAME * FRAME
        self._pending = joined[n:]
        if n == 0:
            return []
        frames = joined[:n]
        # One frame of context first, its score dropped: scores do not depend on grouping.
        probs = self._probs(np.concatenate([self._prev, frames]))[1:]
        self._prev = frames[-FRAME:]
        edges: list[TurnEdge] = []
        for p in probs:
            edges += self._step(float(p))
        return edges

    def _step(self, p: float) -> list[TurnEdge]:
        t0 = self._frames * FRAME_MS
        self._frames += 1
        t1 = t0 + FRAME_MS
        if not self.speaking:
            if p >= self.vad.threshold:
                self.speaking, self._silence_ms = True, 0
                self.start_ms = max(self.floor_ms, t0 - self.vad.prefix_padding_ms)
                return [TurnEdge(True, self.start_ms, self.start_ms)]
            return []
        if p < self.vad.threshold - HYSTERESIS:
            self._silence_ms += FRAME_MS
        else:
            self._silence_ms = 0
        too_long = t1 - self.start_ms >= self.max_turn_ms
        if self._silence_ms >= self.vad.silence_duration_ms or too_long:
            self.speaking = False
            self.floor_ms = t1
            return [TurnEdge(False, t1, self.start_ms)]
        return []

    def reset(self, floor_ms: int) -> None:
        """After a commit or clear: any turn in progress ends; none starts before floor_ms."""
        self.speaking, self._silence_ms = False, 0
        self.floor_ms = max(self.floor_ms, floor_ms)

    @property
    def now_ms(self) -> int:
        return self._frames * FRAME_MS
