"""Decoding real files of several formats, and clear errors for everything else."""

import io
import wave

import numpy as np
import pytest

from deployments.audio import AudioDecodeError, decode_audio, iter_audio_blocks
from deployments.schemas import SAMPLE_RATE
from tests.conftest import HOTWORDS, JFK, STEREO


@pytest.mark.parametrize(("path", "seconds"), [(JFK, 11.0), (STEREO, 5.0), (HOTWORDS, 4.0)])
def test_real_files_decode_to_16k_mono(path, seconds):
    audio = decode_audio(path.read_bytes())
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - seconds) < 0.5
    assert 0.05 < float(np.abs(audio).max()) <= 1.5


def test_blocks_concatenate_to_the_whole():
    blocks = list(iter_audio_blocks(JFK, block_s=2.0))
    assert len(blocks) >= 5
    assert np.array_equal(np.concatenate(blocks), decode_audio(JFK))


def _wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def test_8khz_wav_is_resampled():
    tone = np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000).astype(np.float32) * 0.5
    audio = decode_audio(_wav_bytes(tone, 8000))
    assert abs(len(audio) - SAMPLE_RATE) < 200


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"hello, this is a text file\n" * 20, "unsupported_media"),
        (np.random.default_rng(0).bytes(4096), "unsupported_media"),
        (_wav_bytes(np.zeros(160, np.float32), 16000), "audio_too_short"),
    ],
    ids=["empty", "text", "random", "10ms"],
)
def test_bad_inputs_raise_clear_errors(data, code):
    with pytest.raises(AudioDecodeError) as err:
        decode_audio(data)
    assert err.value.code == code
    assert err.value.message
