"""Splitting real speech at silences: coverage, bounds, laziness, determinism."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deployments.core.audio import decode_audio
from deployments.core.schemas import SAMPLE_RATE as SR
from deployments.core.splitter import SegmentPlan, split_stream

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PYANNOTE_SAMPLE = (
    Path(__file__).resolve().parents[1]
    / ".venv/lib/python3.11/site-packages/pyannote/audio/sample/sample.wav"
)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    """About 2.5 minutes of real speech with pauses of various lengths between clips."""
    jfk = decode_audio(DATA / "jfk.flac")
    sample = decode_audio(PYANNOTE_SAMPLE)
    parts = [sample, _silence(0.6), jfk, _silence(0.4), sample, _silence(1.2), jfk]
    parts += [_silence(0.3), jfk, sample, _silence(0.25), jfk]
    return np.concatenate(parts)


def _blocks(audio: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, audio.size, size):
        yield audio[i : i + size]


def _split(audio: np.ndarray, size: int = SR * 5, **kw) -> list[tuple[SegmentPlan, np.ndarray]]:
    return list(split_stream(_blocks(audio, size), **kw))


def _check_cover(parts, audio: np.ndarray, min_s: float, max_s: float) -> None:
    plans = [p for p, _ in parts]
    assert [p.index for p in plans] == list(range(len(plans)))
    assert plans[0].start == 0 and plans[-1].end == audio.size
    for a, b in itertools.pairwise(plans):
        assert a.end == b.start
    for i, (p, seg) in enumerate(parts):
        assert 0 < p.end - p.start <= max_s * SR
        if i < len(parts) - 1:
            assert p.end - p.start >= min_s * SR
        np.testing.assert_array_equal(seg, audio[p.start : p.end])


def _vad_speech(audio: np.ndarray) -> list[tuple[int, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(min_silence_duration_ms=100, speech_pad_ms=0)
    return [(s["start"], s["end"]) for s in get_speech_timestamps(audio, opts)]


def test_covers_contiguously_within_bounds(recording):
    parts = _split(recording)
    _check_cover(parts, recording, min_s=10.0, max_s=60.0)
    assert len(parts) >= 4
    lengths = [(p.end - p.start) / SR for p, _ in parts[:-1]]
    assert all(abs(n - 30.0) < 15.0 for n in lengths), lengths


@pytest.mark.parametrize("near_target_s", [None, 5.0], ids=["whole-window", "near-target"])
def test_cuts_land_in_silence(recording, near_target_s):
    parts = _split(recording, target_s=20.0, min_s=5.0, max_s=40.0, near_target_s=near_target_s)
    _check_cover(parts, recording, min_s=5.0, max_s=40.0)
    speech = _vad_speech(recording)
    loud = float(np.sqrt(np.mean(np.concatenate([recording[a:b] for a, b in speech]) ** 2)))
    for plan, _ in parts[:-1]:
        assert not plan.forced
        cut = plan.end
        assert not any(a < cut < b for a, b in speech), f"cut at {cut / SR:.2f} s is in speech"
        around = recording[cut - SR // 20 : cut + SR // 20]
        assert np.sqrt(np.mean(around**2)) < 0.1 * loud


def test_lazy_consumption(recording):
    pulled = 0

    def gen() -> Iterator[np.ndarray]:
        nonlocal pulled
        for block in _blocks(recording, SR):
            pulled += 1
            yield block

    total = -(-recording.size // SR)
    it = split_stream(gen())
    first, _ = next(it)
    assert first.index == 0
    # Needs max_s + min_s (+ a block) of look-ahead, not the whole recording.
    assert pulled <= 71 < total


@pytest.mark.parametrize("near_target_s", [None, 5.0], ids=["whole-window", "near-target"])
def test_deterministic_across_runs_and_block_sizes(recording, near_target_s):
    kw = {"near_target_s": near_target_s}
    reference = [p for p, _ in _split(recording, size=SR * 30, **kw)]
    assert [p for p, _ in _split(recording, size=SR * 30, **kw)] == reference
    assert [p for p, _ in _split(recording, size=7919, **kw)] == reference
    assert [p for p, _ in split_stream([recording], **kw)] == reference


def test_continuous_speech_gets_forced_cuts_within_max(tmp_path):
    # espeak-ng reads unpunctuated text without any pause VAD would call silence.
    words = (
        "the quarterly budget review is scheduled for next tuesday afternoon and we need to "
        "finish the migration before the end of the month while everyone shares progress"
    )
    wav = tmp_path / "speech.wav"
    cmd = ["espeak-ng", "-s", "190", "-w", str(wav), " ".join([words] * 3)]
    subprocess.run(cmd, check=True, capture_output=True)
    audio = decode_audio(wav)
    assert len(_vad_speech(audio)) <= 2  # really continuous
    parts = _split(audio, size=SR, target_s=8.0, min_s=4.0, max_s=12.0)
    _check_cover(parts, audio, min_s=4.0, max_s=12.0)
    assert len(parts) >= 3
    frame = int(0.03 * SR)
    for plan, _ in parts[:-1]:
        assert plan.forced
        # The forced cut is at one of the quietest frames of its window.
        seg = audio[plan.start : plan.start + 12 * SR]
        energies = np.mean(seg[: seg.size // frame * frame].reshape(-1, frame) ** 2, axis=1)
        at_cut = np.mean(audio[plan.end - frame // 2 : plan.end + frame // 2] ** 2)
        assert at_cut <= np.quantile(energies, 0.1)


def test_silence_and_tiny_inputs():
    silent = _silence(100.0)
    parts = _split(silent)
    _check_cover(parts, silent, min_s=10.0, max_s=60.0)
    assert not any(p.forced for p, _ in parts)
    assert list(split_stream(iter([]))) == []
    short = _silence(0.5)
    [(plan, seg)] = _split(short)
    assert (plan.start, plan.end, plan.forced) == (0, short.size, False) and seg.size == short.size


def test_short_tail_is_kept_with_last_segment(recording):
    # 35 s with target 30: one segment, not 30 + a 5 s stub.
    audio = recording[: 35 * SR]
    assert len(_split(audio)) == 1


def test_plan_serialisation_and_validation():
    plan = SegmentPlan(index=3, start=16000, end=48000, forced=True)
    assert SegmentPlan.from_dict(plan.to_dict()) == plan
    assert SegmentPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ValueError):
        next(split_stream(iter([]), target_s=5.0, min_s=10.0, max_s=60.0))
