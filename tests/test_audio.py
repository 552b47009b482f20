"""Decoding real files of several formats, and clear errors for everything else."""

import io
import wave

import numpy as np
import pytest

from deployments.core.audio import AudioDecodeError, decode_audio, iter_audio_blocks
from deployments.core.schemas import SAMPLE_RATE
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


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_max_s_stops_a_stream_that_declares_no_duration(tmp_path):
    from deployments.core.audio import probe_audio
    from tests.media import encode_audio

    webm = encode_audio(_tone(60), tmp_path / "live.webm", "libopus", 48000, streamed=True)
    # No duration in the container: measured from packet timestamps at submit.
    assert probe_audio(webm) == pytest.approx(60, abs=0.1)
    # Decoding still enforces the limit on its own (a file could lie in its timestamps).
    decoded = 0
    with pytest.raises(AudioDecodeError) as err:
        for block in iter_audio_blocks(webm, 1.0, max_s=10, limit_name="max_job_duration_s"):
            decoded += block.size
    assert err.value.code == "audio_too_long"
    assert "10 s" in err.value.message and "max_job_duration_s" in err.value.message
    # Raised as soon as decoding passed the limit, not at the end of the 60 s.
    assert 9 * SAMPLE_RATE <= decoded <= 11 * SAMPLE_RATE


def test_max_s_keeps_audio_within_the_limit_whole():
    whole = decode_audio(JFK)
    assert np.array_equal(decode_audio(JFK, max_s=len(whole) / SAMPLE_RATE), whole)
    with pytest.raises(AudioDecodeError, match=r"5 s limit \(sync_direct_max_s\)") as err:
        decode_audio(JFK, max_s=5, limit_name="sync_direct_max_s")
    assert err.value.code == "audio_too_long"
