"""Local speaker segmentation with pyannote/segmentation-3.0.

Weights: `pytorch_model.bin` of pyannote/segmentation-3.0 (PyanNet: SincNet + LSTM), run as
plain torch (pyannet.py). It takes 10 s of 16 kHz mono audio and returns, for
each of 589 frames (~17 ms hop), one of 7 powerset classes: silence, one of 3 local speakers,
or a pair of them speaking at once. The window slides over the input as pyannote's `Inference`
slides it, and the powerset becomes 3 binary local-speaker activities per frame.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployments.models.diarization import pyannet

SAMPLE_RATE = 16_000
WINDOW_S = 10.0  # the window segmentation-3.0 was trained on


@dataclass(frozen=True)
class LocalSegmentation:
    """Binary local-speaker activity of each sliding window.

    `data` is (chunks, frames, 3); chunk c starts at `c * chunk_step` seconds. A frame's time
    on the global timeline is `frame_start + g * frame_step` (centre: + frame_duration / 2)
    for global frame index g = round(c * chunk_step / frame_step) + f.
    """

    data: np.ndarray
    chunk_step: float
    frame_start: float
    frame_step: float
    frame_duration: float

    @property
    def chunk_shift(self) -> float:
        """Hop between chunks in frames."""
        return self.chunk_step / self.frame_step

    @property
    def num_global_frames(self) -> int:
        chunks, frames, _ = self.data.shape
        return int(np.ceil((chunks - 1) * self.chunk_shift)) + frames

    def first_frame(self, chunk: int) -> int:
        return round(chunk * self.chunk_shift)

    def edge_time(self, g: int | np.ndarray) -> float | np.ndarray:
        """Seconds at the start of global frame g: halfway between its centre and the last's,
        so runs of frames tile the timeline."""
        return self.frame_start + 0.5 * self.frame_duration + (g - 0.5) * self.frame_step

    def overlap_average(self, values: np.ndarray) -> np.ndarray:
        """Per-window values (chunks, frames, ...) placed on the global timeline and averaged
        over the windows that cover each frame: (global frames, ...), in values' dtype."""
        chunks, frames = values.shape[:2]
        total = np.zeros((self.num_global_frames, *values.shape[2:]), dtype=values.dtype)
        cover = np.zeros(self.num_global_frames, dtype=values.dtype)
        for c in range(chunks):
            first = self.first_frame(c)
            total[first : first + frames] += values[c]
            cover[first : first + frames] += 1
        return total / np.maximum(cover, 1).reshape(-1, *[1] * (values.ndim - 2))

    def speaker_count(self, onset: float = 0.5) -> np.ndarray:
        """(global frames,) number of speakers at each frame, from the mean over the windows
        that cover it of how many local speakers are active: pyannote rounds it (onset 0.5);
        a lower onset counts a speaker that fewer windows heard."""
        mean = self.overlap_average(self.data.sum(axis=2).astype(np.float64))
        return np.floor(mean + 1.0 - onset).astype(np.int8)


class Segmenter:
    """Sliding-window segmentation-3.0, over one audio or many in shared forward passes.

    The windows are cut as pyannote's `Inference` cuts them (10 s, hop `step`, the last one
    zero-padded) and each frame's powerset class becomes binary local-speaker activities as
    it does (argmax); the windows of several audios go through the model together, so a
    GPU sees full batches however short each segment is.

    Args:
        path: the segmentation-3.0 checkpoint.
        device: torch device.
        step: window hop as a fraction of the 10 s window (pyannote 3.1 uses 0.1).
        batch_size: windows per forward pass.
    """

    def __init__(
        self, path: str | Path, device: str = "cpu", step: float = 0.1, batch_size: int = 16
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.model = pyannet.load(path).to(self.device)
        self.duration = WINDOW_S
        self.step = step * self.duration
        self.window = round(self.duration * SAMPLE_RATE)
        self.hop = round(self.step * SAMPLE_RATE)
        self.frame_start, self.frame_step, self.frame_duration = pyannet.frame_geometry()
        # (powerset classes, local speakers): which speakers each class means.
        self.mapping = pyannet.powerset_mapping().to(self.device)
        self.batch_size = batch_size

    def windows(self, audio: np.ndarray):
        """(chunks, 1, window) tensor of the audio's sliding windows."""
        import torch
        import torch.nn.functional as F

        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        n = len(wave)
        full = (n - self.window) // self.hop + 1 if n >= self.window else 0
        parts = [wave.unfold(0, self.window, self.hop)] if full else []
        if n < self.window or (n - self.window) % self.hop > 0:
            last = wave[full * self.hop :]
            parts.append(F.pad(last, (0, self.window - len(last)))[None])
        return torch.cat(parts)[:, None]

    def many(self, audios: list[np.ndarray]) -> list[LocalSegmentation]:
        """Segment each audio; all their windows share forward passes."""
        import torch
        import torch.nn.functional as F

        if not audios:
            return []
        chunks = [self.windows(a) for a in audios]
        stacked = torch.cat(chunks)
        out = []
        with torch.inference_mode():
            for b in range(0, len(stacked), self.batch_size):
                powerset = self.model(stacked[b : b + self.batch_size].to(self.device))
                one_hot = F.one_hot(powerset.argmax(dim=-1), powerset.shape[-1])
                out.append((one_hot.to(self.mapping.dtype) @ self.mapping).cpu().numpy())
        data = np.concatenate(out).astype(np.float32)  # every audio has at least one window
        bounds = np.cumsum([0, *(len(c) for c in chunks)])
        return [
            LocalSegmentation(
                data=data[a:b],
                chunk_step=self.step,
                frame_start=self.frame_start,
                frame_step=self.frame_step,
                frame_duration=self.frame_duration,
            )
            for a, b in itertools.pairwise(bounds)
        ]

    def __call__(self, audio: np.ndarray) -> LocalSegmentation:
        return self.many([audio])[0]
