"""Encode test media in many containers and codecs with PyAV (its bundled FFmpeg).

Used to build the bad-input and odd-input catalogues: MP3, OGG, 8 kHz, 48 kHz stereo,
and a video file with no audio track.
"""

from __future__ import annotations

import contextlib
import io
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deployments.core.schemas import SAMPLE_RATE


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Linear resampling from 16 kHz; enough for codec and rate tests."""
    n = int(len(audio) * rate / SAMPLE_RATE)
    return np.interp(
        np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio.astype(np.float64)
    ).astype(np.float32)


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable file: what a muxer streaming to a pipe or socket sees."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.out.write(data)


def encode_audio(
    audio: np.ndarray,
    path: Path,
    codec: str,
    rate: int = SAMPLE_RATE,
    channels: int = 1,
    streamed: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Write 16 kHz mono float audio as `codec` at `rate` Hz with `channels` channels.

    `streamed` muxes as if to a pipe: the muxer cannot seek back, so containers such as
    WebM carry no duration (PyAV reports None), as in live recordings. `options` go to
    the muxer (e.g. {"movflags": "faststart"}: an MP4's index before its audio).
    """
    import av

    samples = resample(audio, rate) if rate != SAMPLE_RATE else audio.astype(np.float32)
    planes = np.repeat(samples[None, :], channels, axis=0)  # (channels, n), planar
    layout = "mono" if channels == 1 else "stereo"
    with contextlib.ExitStack() as stack:
        if streamed:
            pipe = _Pipe(stack.enter_context(path.open("wb")))
            container = stack.enter_context(av.open(pipe, "w", format=path.suffix[1:]))
        else:
            container = stack.enter_context(av.open(str(path), "w", options=options or {}))
        stream = container.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.format.name
        frame_size = stream.codec_context.frame_size or 1024
        pts = 0
        for start in range(0, planes.shape[1], frame_size):
            chunk = planes[:, start : start + frame_size]
            if fmt.startswith(("s16", "s32")):
                bits = 16 if fmt.startswith("s16") else 32
                scaled = np.clip(chunk, -1, 1).astype(np.float64) * (2 ** (bits - 1) - 1)
                data = scaled.astype(np.int16 if bits == 16 else np.int32)
            else:
                data = chunk.astype(np.float32)
            if not fmt.endswith("p"):  # packed: interleave channels
                data = data.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
            pts += chunk.shape[1]
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def video_without_audio(path: Path, seconds: float = 2.0) -> Path:
    """A short MP4 with one MPEG-4 video stream and no audio stream."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * 10)):
            image = np.full((48, 64, 3), (i * 12) % 255, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def png_bytes() -> bytes:
    """A real 8x8 PNG image."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()
