"""Copies of a recording that sound the same: gain, resamplers, telephone codecs.

A speaker count or a DER that moves between them depends on differences nobody can hear
(tests/test_real_diarization.py, bench/speaker_stability.py). Telephone audio reaches a service
at 8 kHz through every kind of resampler, so the copies go down to 8 kHz and back by several.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

SR = 16_000


def _sox_codec(audio: np.ndarray, suffix: str, *encode: str) -> np.ndarray:
    """Audio encoded by sox at 8 kHz (`encode` options, into a .suffix file), decoded back to
    16 kHz by sox."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        src, mid, dst = (Path(tmp) / name for name in ("in.wav", f"mid.{suffix}", "out.wav"))
        sf.write(src, audio, SR, subtype="PCM_16")
        subprocess.run(["sox", str(src), "-r", "8000", *encode, str(mid)], check=True)
        subprocess.run(
            ["sox", str(mid), "-r", str(SR), "-e", "signed", "-b", "16", str(dst)], check=True
        )
        return sf.read(dst, dtype="float32")[0]


def _torchaudio(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    import torch
    import torchaudio

    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
    return torchaudio.functional.resample(x, src, dst)[0].numpy()


def _scipy(audio: np.ndarray, up: int, down: int) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(audio, up, down).astype(np.float32)


def _sox_down_torchaudio_up(audio: np.ndarray) -> np.ndarray:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "8k.wav"
        sf.write(src, audio, SR, subtype="PCM_16")
        subprocess.run(["sox", str(src), "-r", "8000", str(dst)], check=True)
        down, rate = sf.read(dst, dtype="float32")
    return _torchaudio(down, rate, SR)


# name -> transform of 16 kHz float32 audio; each sounds like the recording.
COPIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as recorded": lambda a: a,
    "-6 dB": lambda a: a * np.float32(0.5),
    "8 kHz mu-law and back (sox)": lambda a: _sox_codec(a, "wav", "-e", "mu-law", "-b", "8"),
    "16k -> 8k (sox) -> 16k (torchaudio)": _sox_down_torchaudio_up,
    "16k -> 8k -> 16k (torchaudio)": lambda a: _torchaudio(_torchaudio(a, SR, 8000), 8000, SR),
    "16k -> 8k -> 16k (scipy polyphase)": lambda a: _scipy(_scipy(a, 1, 2), 2, 1),
    "GSM 06.10 telephone codec (sox)": lambda a: _sox_codec(a, "gsm"),
}


def copies(
    voices: list[str], minutes: float, seed: int, folder: Path, names: list[str] | None = None
) -> list:
    """A meeting of real voices (5 % of turns overlapped) in each of COPIES (or `names`), as
    tests.realsets.RealCase with the meeting's reference, written to `folder`."""
    from pyannote.core import Segment, Timeline

    from tests.realsets import RealCase
    from tests.realvoices import RealRecording, cached_meeting

    rec: RealRecording = cached_meeting(voices, minutes, seed=seed, overlap_prob=0.05)
    uem = Timeline([Segment(0, rec.duration)])
    out = []
    for i, name in enumerate(names or COPIES):
        transform = COPIES[name]
        audio = np.clip(transform(rec.audio)[: len(rec.audio)], -1, 1)
        path = RealRecording(audio, [], [], []).write_wav(folder / f"copy{i}-{seed}.wav")
        out.append(RealCase(name, path, rec.annotation(), uem))
    return out
