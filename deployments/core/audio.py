"""Decoding any FFmpeg-readable input to 16 kHz mono float32, with errors users can act on.

PyAV bundles FFmpeg, so no system codec install is needed. Decoding streams frame by frame:
memory holds the decoded samples and one frame, never a second copy of the input.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deployments.core.schemas import SAMPLE_RATE

MIN_DURATION_S = 0.25  # shorter audio cannot hold a spoken word
log = logging.getLogger(__name__)


class AudioDecodeError(ValueError):
    """The input is not usable audio. `code` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Source = str | Path | bytes | BinaryIO


def _open(source: Source):
    import av

    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError("empty_file", "The uploaded file is empty (0 bytes).")
        source = io.BytesIO(source)
    try:
        return av.open(
            source if not isinstance(source, Path) else str(source),
            mode="r",
            metadata_errors="ignore",
        )
    except av.error.FFmpegError as exc:
        log.info("cannot open %s: %s", source if isinstance(source, (str, Path)) else "", exc)
        raise AudioDecodeError(
            "unsupported_media",
            f"The file could not be read as audio or video ({_reason(exc)}). Upload a format "
            "FFmpeg decodes, such as WAV, FLAC, MP3, OGG, M4A or WebM.",
        ) from exc


def _reason(exc: Exception) -> str:
    """FFmpeg's reason without the file name: str(exc) ends with the server's storage path."""
    reason = getattr(exc, "strerror", None)
    return (
        reason.strip().rstrip(".")
        if isinstance(reason, str) and reason.strip()
        else "unreadable data"
    )


def _too_long(max_s: float, limit_name: str) -> AudioDecodeError:
    return AudioDecodeError(
        "audio_too_long", f"The audio is longer than the {max_s:g} s limit ({limit_name})."
    )


def iter_audio_blocks(
    source: Source,
    block_s: float = 30.0,
    max_s: float | None = None,
    limit_name: str = "max_s",
) -> Iterator[np.ndarray]:
    """Yield consecutive float32 mono 16 kHz blocks of about `block_s` seconds.

    Args:
        source: a path, the bytes, or a binary file of any FFmpeg-readable input.
        block_s: seconds per yielded block (the last one may be shorter).
        max_s: raise AudioDecodeError("audio_too_long") as soon as more than this much has
            been decoded. Containers need not declare a duration, so this is the only check
            that holds for every input.
        limit_name: the setting named in that error's message.
    """
    import av

    limit = None if max_s is None else max_s * SAMPLE_RATE
    container = _open(source)
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(
                "no_audio_track", "The file has no audio track (video-only or not media)."
            )
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        target = int(block_s * SAMPLE_RATE)
        pending: list[np.ndarray] = []
        size = total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))
                    size += pending[-1].size
                    total += pending[-1].size
                if limit is not None and total > limit:
                    raise _too_long(max_s, limit_name)
                if size >= target:
                    yield np.concatenate(pending)
                    pending, size = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1))
                total += pending[-1].size
        except av.error.FFmpegError as exc:
            log.info("decoding failed: %s", exc)
            raise AudioDecodeError(
                "corrupt_audio",
                f"The audio stream is corrupt and could not be decoded ({_reason(exc)}).",
            ) from exc
        if limit is not None and total > limit:
            raise _too_long(max_s, limit_name)
        if pending:
            yield np.concatenate(pending)


def read_spans(
    source: Source, spans: dict[int, tuple[int, int]]
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (key, samples) for each (start, end) sample range of `spans`, in one pass over
    the input; memory holds the audio from the earliest pending start only."""
    todo = sorted(spans.items(), key=lambda kv: kv[1][0])
    buffer, origin = np.zeros(0, np.float32), 0  # buffer[0] is sample `origin`
    for block in iter_audio_blocks(source):
        buffer = np.concatenate([buffer, block])
        while todo and todo[0][1][1] <= origin + len(buffer):
            key, (start, end) = todo.pop(0)
            yield key, buffer[start - origin : end - origin].copy()
        keep = min(todo[0][1][0], origin + len(buffer)) if todo else origin + len(buffer)
        buffer, origin = buffer[keep - origin :], keep
        if not todo:
            return
    for key, (start, end) in todo:  # past the end: what there is
        yield key, buffer[max(start - origin, 0) : max(end - origin, 0)].copy()


def decode_audio(
    source: Source, max_s: float | None = None, limit_name: str = "max_s"
) -> np.ndarray:
    """Decode the whole input; raises AudioDecodeError for anything that is not audio.

    With `max_s`, decoding stops (AudioDecodeError "audio_too_long") once past it, so
    memory stays bounded by the limit, not by the input.
    """
    blocks = list(iter_audio_blocks(source, max_s=max_s, limit_name=limit_name))
    audio = (
        np.concatenate(blocks).astype(np.float32, copy=False) if blocks else np.zeros(0, np.float32)
    )
    if audio.size < MIN_DURATION_S * SAMPLE_RATE:
        raise AudioDecodeError(
            "audio_too_short",
            f"The audio is {audio.size / SAMPLE_RATE:.3f} s long; at least "
            f"{MIN_DURATION_S} s is needed.",
        )
    return audio


def probe_audio(path: str | Path) -> float | None:
    """Check that a stored file holds decodable audio; returns its duration.

    Decodes only the first second, so large uploads are vetted cheaply. A container that
    declares no duration (a browser's MediaRecorder WebM, anything muxed to a pipe) is
    measured by its packets' timestamps, without decoding, so length limits hold at submit
    rather than hours into a job. None only when even the timestamps say nothing. Raises
    AudioDecodeError with a user-facing reason otherwise.
    """
    if Path(path).stat().st_size == 0:
        raise AudioDecodeError("empty_file", "The uploaded file is empty (0 bytes).")
    first = next(iter_audio_blocks(Path(path), block_s=1.0), None)
    if first is None or first.size < MIN_DURATION_S * SAMPLE_RATE:
        # Short files end inside the first block: measure them exactly.
        audio = decode_audio(Path(path))
        return audio.size / SAMPLE_RATE
    container = _open(Path(path))
    with container:
        if container.duration:
            return container.duration / 1_000_000
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return _demuxed_duration(container, stream)


def _demuxed_duration(container, stream) -> float | None:
    """The end of the last audio packet, from timestamps alone: nothing is decoded."""
    first = end = None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        first = packet.pts if first is None else min(first, packet.pts)
        end = max(end or 0, packet.pts + (packet.duration or 0))
    if end is None or not stream.time_base:
        return None
    return float((end - first) * stream.time_base)
