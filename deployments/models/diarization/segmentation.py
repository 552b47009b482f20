"""Local speaker segmentation with pyannote/segmentation-3.0.

Weights: `pytorch_model.bin` of pyannote/segmentation-3.0 (PyanNet: SincNet + LSTM), loaded with
`pyannote.audio.Model.from_pretrained`. It takes 10 s of 16 kHz mono audio and returns, for
each of 589 frames (~17 ms hop), one of 7 powerset classes: silence, one of 3 local speakers,
or a pair of them speaking at once. pyannote's `Inference` slides the window over the input and
turns the powerset into 3 binary local-speaker activities per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployments.models.quiet import silence_torchcodec_warning

SAMPLE_RATE = 16_000


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
    """Sliding-window segmentation-3.0.

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

        silence_torchcodec_warning()
        from pyannote.audio import Inference, Model

        model = Model.from_pretrained(Path(path).expanduser())
        if model is None:
            raise FileNotFoundError(f"cannot load segmentation model {path}")
        self.duration = float(model.specifications.duration)
        self.step = step * self.duration
        self.frames = model.receptive_field
        self._inference = Inference(
            model,
            duration=self.duration,
            step=self.step,
            skip_aggregation=True,
            device=torch.device(device),
            batch_size=batch_size,
        )

    def __call__(self, audio: np.ndarray) -> LocalSegmentation:
        import torch

        waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        with torch.inference_mode():
            out = self._inference({"waveform": waveform, "sample_rate": SAMPLE_RATE})
        return LocalSegmentation(
            data=np.nan_to_num(out.data).astype(np.float32),
            chunk_step=float(out.sliding_window.step),
            frame_start=float(self.frames.start),
            frame_step=float(self.frames.step),
            frame_duration=float(self.frames.duration),
        )
