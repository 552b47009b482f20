"""Audio as realtime clients send it: base64 chunks of 16-bit PCM at 24 kHz (OpenAI's
`audio/pcm`, the beta's `pcm16`) or G.711 at 8 kHz (`audio/pcmu`, `audio/pcma`; the beta's
`g711_ulaw`, `g711_alaw`), turned into the 16 kHz float32 the models take.

Chunks are kept at their own rate and resampled per turn, in one piece, for the models; the
voice-activity stream is resampled chunk by chunk with a little of the previous chunk as
context, which is exact enough to tell speech from silence.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import resample_poly

TARGET_RATE = 16000
MAX_CHUNK_BYTES = 15 * 1024 * 1024  # OpenAI's limit per append event


class BadAudio(ValueError):
    """An append the session cannot use; the message is fit for the caller."""


@dataclass(frozen=True)
class AudioFormat:
    kind: str  # "pcm16", "pcmu" or "pcma"
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.kind == "pcm16" else 1

    def describe(self) -> dict:
        """As OpenAI's GA session shows it."""
        name = {"pcm16": "audio/pcm", "pcmu": "audio/pcmu", "pcma": "audio/pcma"}[self.kind]
        return {"type": name, "rate": self.rate} if self.kind == "pcm16" else {"type": name}


PCM24K = AudioFormat("pcm16", 24000)
_BY_NAME = {
    "audio/pcm": "pcm16",
    "pcm16": "pcm16",
    "audio/pcmu": "pcmu",
    "g711_ulaw": "pcmu",
    "audio/pcma": "pcma",
    "g711_alaw": "pcma",
}


def parse_format(value: object) -> AudioFormat:
    """OpenAI's GA `{"type": "audio/pcm", "rate": 24000}` or the beta's "pcm16" strings."""
    if isinstance(value, dict):
        name, rate = value.get("type"), value.get("rate")
    else:
        name, rate = value, None
    kind = _BY_NAME.get(name) if isinstance(name, str) else None
    if kind is None:
        raise BadAudio(f"unsupported format {name!r}; use audio/pcm, audio/pcmu or audio/pcma")
    if kind != "pcm16":
        if rate not in (None, 8000):
            raise BadAudio(f"{name} is 8000 Hz; got rate {rate!r}")
        return AudioFormat(kind, 8000)
    if rate not in (None, 24000):
        raise BadAudio(f"audio/pcm is 24000 Hz (16-bit mono little-endian); got rate {rate!r}")
    return PCM24K


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign, -magnitude, magnitude) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exponent, mantissa = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return (np.where(sign, magnitude, -magnitude) / 32768.0).astype(np.float32)


_TABLES = {"pcmu": _ulaw_table(), "pcma": _alaw_table()}


def decode_chunk(b64: object, fmt: AudioFormat) -> np.ndarray:
    """One append's audio as float32 at the format's own rate."""
    if not isinstance(b64, str):
        raise BadAudio("audio: expected a base64 string")
    if len(b64) * 3 // 4 > MAX_CHUNK_BYTES:
        raise BadAudio("audio: at most 15 MiB per append")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadAudio("audio: not valid base64") from None
    if fmt.kind == "pcm16":
        if len(raw) % 2:
            raise BadAudio("audio: 16-bit PCM needs an even number of bytes")
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    return _TABLES[fmt.kind][np.frombuffer(raw, np.uint8)]


def to_model_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """Audio at `rate` as 16 kHz float32, resampled in one piece."""
    if rate == TARGET_RATE or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    g = gcd(TARGET_RATE, rate)
    return resample_poly(audio, TARGET_RATE // g, rate // g).astype(np.float32)


class StreamResampler:
    """Chunk-by-chunk resampling to 16 kHz for voice activity, equal to resampling the whole
    stream at once: each output sample is computed only once CONTEXT input samples after it
    have arrived (so the stream lags by CONTEXT), from a window starting CONTEXT samples
    before it, aligned to the resampling phase."""

    CONTEXT = 480  # input samples; resample_poly's filter reaches far less either side

    def __init__(self, rate: int) -> None:
        g = gcd(TARGET_RATE, rate)
        self.rate, self.up, self.down = rate, TARGET_RATE // g, rate // g
        self._buf = np.zeros(0, np.float32)
        self._start = 0  # input index of _buf[0], a multiple of `down`
        self._out = 0  # output samples given so far

    def _first_needed(self) -> int:
        at = max(0, self._out * self.down // self.up - self.CONTEXT)
        return at // self.down * self.down

    def push(self, chunk: np.ndarray) -> np.ndarray:
        if self.rate == TARGET_RATE:
            return chunk
        self._buf = np.concatenate([self._buf, chunk.astype(np.float32, copy=False)])
        total = self._start + len(self._buf)
        want = max(0, (total - self.CONTEXT) * self.up // self.down)
        if want <= self._out:
            return np.zeros(0, np.float32)
        s = max(self._first_needed(), self._start)
        y = resample_poly(self._buf[s - self._start :], self.up, self.down)
        k0 = self._out - s * self.up // self.down
        out = y[k0 : k0 + want - self._out].astype(np.float32)
        self._out = want
        keep = self._first_needed()
        if keep > self._start:
            self._buf, self._start = self._buf[keep - self._start :], keep
        return out
