"""A window whose batched decode looped is decoded again with Whisper's temperature fallback
(deployments/models/loop_fallback.py)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from faster_whisper.transcribe import Segment, Word

from deployments.core.schemas import SAMPLE_RATE, TranscribeOptions
from deployments.models.loop_fallback import compression_ratio, looped, unloop
from deployments.models.window_decoding import DecodeWindows, clip_at


def _segment(text: str, start: float, end: float) -> Segment:
    words = [Word(start=start, end=end, word=f" {text}", probability=0.9)]
    return Segment(0, 0, start, end, text, [1], -0.3, 1.0, 0.01, words, 0.0)


class _FakePipeline:
    """Records what it is asked to decode and answers with `text` over the clip."""

    def __init__(self, text: str) -> None:
        self.text, self.calls = text, []

    def transcribe(self, audio, **kwargs):
        self.calls.append(kwargs)
        [clip] = kwargs["clip_timestamps"]
        return iter([_segment(self.text, clip["start"] + 0.5, clip["start"] + 1.5)]), None


class _Gate:
    def __init__(self) -> None:
        self.held = 0

    @contextlib.contextmanager
    def hold(self, live: bool):
        self.held += 1
        yield


LOOP = "3, 2, 1, " + "2, 1, " * 30


def _state() -> DecodeWindows:
    # Two windows of one request, at 0 s and 4 s in the buffer, 2 s each.
    clips = [clip_at(0, 0, 2 * SAMPLE_RATE), clip_at(0, 4 * SAMPLE_RATE, 6 * SAMPLE_RATE)]
    state = DecodeWindows(clips, [(0, 0.0, 2.0), (0, 4.0, 6.0)], None)
    state.languages = ["en", "fr"]
    state.decoded = [[_segment("hello there", 0.2, 1.0)], [_segment(LOOP, 4.1, 5.9)]]
    return state


def test_whispers_own_measure_tells_a_loop_from_speech() -> None:
    assert compression_ratio(LOOP) > 2.4 and looped([_segment(LOOP, 0, 1)])
    assert compression_ratio("Conference starts when our leader joins, in a minute.") < 1.5
    assert not looped([]) and compression_ratio("") == 0.0


def test_only_the_looped_window_is_decoded_again_in_its_language_and_place() -> None:
    state, pipeline, gate = _state(), _FakePipeline("trois, deux"), _Gate()
    buffer = np.zeros(6 * SAMPLE_RATE, np.float32)
    opt = TranscribeOptions(word_timestamps=True)
    assert unloop(pipeline, gate, buffer, state, [0, 1], opt, live=False) == 1
    assert state.decoded[0][0].text == "hello there"  # untouched
    [kwargs] = pipeline.calls
    assert kwargs["clip_timestamps"] == [state.clips[1]] and kwargs["language"] == "fr"
    assert kwargs["no_repeat_ngram_size"] >= 3 and kwargs["word_timestamps"]
    assert not kwargs["multilingual"] and gate.held == 1
    assert [s.text for s in state.decoded[1]] == ["trois, deux"]


def test_a_redo_that_loops_as_much_is_not_kept() -> None:
    state = _state()
    buffer = np.zeros(6 * SAMPLE_RATE, np.float32)
    assert (
        unloop(_FakePipeline(LOOP), _Gate(), buffer, state, [0, 1], TranscribeOptions(), False) == 0
    )
    assert state.decoded[1][0].start == 4.1


def looping_turn() -> np.ndarray:
    """101.0-105.6 s of the held-out meeting (bench/multilingual.py), as 16-bit audio: the
    meeting comes back from its cache quantised, and freshly built it does not."""
    import io

    import soundfile as sf

    from tests.realvoices import cached_meeting, wav_bytes

    meeting = cached_meeting(["ru", "fr_armelle", "it_menardi"], 6.0, seed=0)
    clip = meeting.audio[int(101.0 * SAMPLE_RATE) : int(105.6 * SAMPLE_RATE)]
    return sf.read(io.BytesIO(wav_bytes(clip)), dtype="float32")[0]


@pytest.mark.models
def test_whisper_base_no_longer_loops_on_a_real_french_turn(base_core, monkeypatch) -> None:
    """A French turn of the held-out meeting (fr_armelle: the prompts digits/5 and
    queue-less-than, 101.3-104.3 s), decoded in French as its speaker's language: Whisper
    base's beam search went "3, 2, 1, 2, 1, 2, ..." to the end of the window, and a diarized
    job scored those words in the next, Russian turn."""
    import deployments.models.whisper_batch as whisper_batch

    clip = looping_turn()
    opt = TranscribeOptions(language="fr", word_timestamps=True)

    def text(result) -> str:
        return " ".join(s.text for s in result.segments)

    with monkeypatch.context() as m:  # the batched decode alone: the loop this case holds
        m.setattr(whisper_batch, "unloop", lambda *args, **kwargs: 0)
        [before] = base_core.transcribe_many([clip], [opt])
    assert compression_ratio(text(before)) > 2.4 and len(text(before).split()) > 40

    runs = [base_core.transcribe_many([clip], [opt])[0] for _ in range(2)]
    after = runs[0]
    words = [w for s in after.segments for w in s.words]
    assert 2 <= len(words) <= 15 and compression_ratio(text(after)) < 2.4
    # Where the two prompts are (0.27-3.33 s of the clip), and the same words every time.
    assert all(0.0 <= w.start <= w.end <= 3.6 for w in words)
    assert text(runs[1]) == text(after) and after.segments[0].language == "fr"
