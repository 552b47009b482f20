"""faster-whisper tiny.en (real weights) through the batching transcriber, in process."""

import itertools

import numpy as np
import pytest

from deployments.core.schemas import SAMPLE_RATE, TranscribeOptions
from deployments.models.whisper_batch import speech_windows
from tests.conftest import JFK_TEXT, load_audio, pyannote_sample_dir, wer

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def core(whisper_core):
    return whisper_core


def test_jfk_matches_reference_with_word_timestamps(core, jfk_audio):
    (result,) = core.transcribe_many([jfk_audio], [TranscribeOptions()])
    assert wer(JFK_TEXT, result.text) <= 0.05, result.text
    assert result.language == "en" and result.duration == pytest.approx(11.0, abs=0.1)
    words = result.words
    assert len(words) >= 20
    for seg in result.segments:
        for w in seg.words:
            assert seg.start <= w.start <= w.end <= seg.end
    starts = [w.start for w in words]
    assert starts == sorted(starts)


def test_batched_requests_match_single_requests(core, jfk_audio):
    sample = load_audio(pyannote_sample_dir() / "sample.wav")
    opts = TranscribeOptions()
    singles = [core.transcribe_many([a], [opts])[0] for a in (jfk_audio, sample)]
    batch = core.transcribe_many([jfk_audio, sample, jfk_audio], [opts, opts, opts])
    assert [r.text for r in batch] == [singles[0].text, singles[1].text, singles[0].text]
    # Times stay relative to each request, not to the shared buffer, and do not depend on
    # the batch: the same words at the same times, to the millisecond (they moved by up to
    # 0.2 s with faster-whisper's batched alignment; window_decoding.py).
    timed = [[(w.text, w.start, w.end) for w in r.words] for r in (*singles, *batch)]
    assert timed[2:] == [timed[0], timed[1], timed[0]]
    assert batch[1].segments[-1].end <= sample.size / SAMPLE_RATE + 1e-3


def test_a_request_gets_the_same_times_wherever_it_sits_in_the_buffer(core, jfk_audio):
    """JFK starts with speech, so its first window starts at its first sample. Behind 0.29 s
    of silence that start is buffer sample 4640, which float error once put at 10 ms frame 28
    instead of 29: every word came back 10 ms early."""
    assert speech_windows(jfk_audio, vad_filter=True)[0][0] == 0
    opts = TranscribeOptions(language="en")
    (alone,) = core.transcribe_many([jfk_audio], [opts])
    _, behind = core.transcribe_many([np.zeros(4640, np.float32), jfk_audio], [opts, opts])
    assert [(w.text, w.start, w.end) for w in behind.words] == [
        (w.text, w.start, w.end) for w in alone.words
    ]


def test_batched_request_starting_with_speech_keeps_its_own_text(core, jfk_audio):
    """A request whose first window starts at its first sample, behind a request whose
    length is not a whole millisecond, once leaked its text into the request before it."""
    head = jfk_audio[: 5 * SAMPLE_RATE + 7]  # 5.0004375 s: the next start rounds down
    assert speech_windows(jfk_audio, vad_filter=True)[0][0] == 0
    opts = TranscribeOptions(language="en")
    first, second = core.transcribe_many([head, jfk_audio], [opts, opts])
    assert wer(JFK_TEXT, second.text) <= 0.05, second.text
    assert "country" not in first.text, first.text


def test_windows_cut_in_silence_and_fit_the_model(jfk_audio):
    sample = load_audio(pyannote_sample_dir() / "sample.wav")
    long_audio = np.concatenate([sample, jfk_audio, sample])
    windows = speech_windows(long_audio, vad_filter=True)
    assert len(windows) >= 3
    assert all(0 < (e - s) <= 30 * SAMPLE_RATE for s, e in windows)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows))


def test_silence_gives_no_segments(core):
    (result,) = core.transcribe_many([np.zeros(5 * SAMPLE_RATE, np.float32)], [TranscribeOptions()])
    assert result.segments == [] and result.text == ""
