"""Language per window and per segment: unsure guesses take their sure neighbours' language."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from deployments.core.audio import read_spans
from deployments.core.window_language import (
    SURE_PROBABILITY,
    WindowGuess,
    choose,
    parse_detection,
    settle,
)


def guess(request: int, start: float, end: float, **probabilities: float) -> WindowGuess:
    return WindowGuess(request, start, end, probabilities)


def test_detections_parse_from_ctranslate2_tokens() -> None:
    found = parse_detection([("<|fr|>", 0.9), ("<|it|>", 0.05), ("<|en|>", 0.01)], keep=2)
    assert found == {"fr": 0.9, "it": 0.05}


def test_sure_windows_keep_their_own_language() -> None:
    chosen, overall = choose([guess(0, 0, 10, fr=0.95), guess(0, 11, 20, it=0.9, fr=0.1)])
    assert chosen == ["fr", "it"]
    assert overall[0].language == "fr" and overall[0].probability == 0.95


def test_an_unsure_window_takes_the_nearest_sure_one() -> None:
    guesses = [
        guess(0, 0, 12, it=0.99),
        guess(0, 13, 14, en=0.4, it=0.3),  # a short "OK": nearer the Italian window
        guess(0, 20, 29, fr=0.97),
        guess(0, 29.5, 30, pl=0.2, fr=0.1),  # nearer the French one
    ]
    chosen, _ = choose(guesses)
    assert chosen == ["it", "it", "fr", "fr"]


def test_requests_are_settled_apart() -> None:
    # Request 1 has no sure window: its own consensus, not request 0's language.
    guesses = [guess(0, 0, 10, en=0.99), guess(1, 0, 3, fr=0.5, en=0.2), guess(1, 4, 6, fr=0.4)]
    chosen, overall = choose(guesses)
    assert chosen == ["en", "fr", "fr"]
    assert overall[1].language == "fr" and overall[1].probability == 0.5
    assert overall[1].probability < SURE_PROBABILITY


def test_consensus_weighs_by_duration() -> None:
    chosen, _ = choose([guess(0, 0, 1, en=0.6), guess(0, 2, 8, de=0.5, en=0.1)])
    assert chosen == ["de", "de"]  # 6 s of 0.5 outweigh 1 s of 0.6 + 6 s of 0.1


def test_segments_settle_to_their_nearest_sure_neighbour() -> None:
    found = [
        ("fr", 0.99, 20.0),
        ("en", 0.4, 0.8),  # unsure and short, between two French segments: French
        ("fr", 0.95, 25.0),
        (None, 0.0, 0.0),  # silence: left alone
        ("it", 0.6, 1.0),  # ties between fr (2 back) and it (2 ahead): the earlier
        ("pt", 0.3, 0.5),  # next to a sure Italian one
        ("it", 0.97, 12.0),
        ("it", 0.5, 0.6),  # unsure but agrees: nothing to redo
        ("en", 0.6, 22.0),  # unsure but long: its own detection stands
    ]
    assert settle(found) == {1: "fr", 4: "fr", 5: "it"}


def test_nothing_sure_changes_nothing() -> None:
    assert settle([("en", 0.5, 1.0), ("fr", 0.4, 1.0)]) == {}


def test_read_spans_cuts_ranges_in_one_pass(tmp_path) -> None:
    sr = 16000
    audio = (np.arange(95 * sr) % 1000 / 1000.0).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, audio, sr, subtype="FLOAT")
    spans = {
        3: (70 * sr, 80 * sr),
        1: (5 * sr, 7 * sr),
        2: (40 * sr + 17, 61 * sr),
        9: (94 * sr, 99 * sr),
    }
    got = dict(read_spans(path, spans))
    assert set(got) == set(spans)
    for key, (start, end) in spans.items():
        np.testing.assert_array_equal(got[key], audio[start:end])


def test_cuts_fall_between_speakers_and_skip_short_turns() -> None:
    from deployments.core.window_language import speaker_cuts

    turns = [
        (0.0, 4.0, "A"),
        (4.5, 6.0, "A"),  # same speaker: one run 0-6
        (6.4, 6.9, "B"),  # a short "yeah": no cut of its own
        (7.0, 12.0, "A"),
        (13.0, 20.0, "C"),
    ]
    assert speaker_cuts(turns) == (12.5,)
    assert speaker_cuts([(0.0, 5.0, "A")]) == ()
    # With speakers, the "yeah" gets a window of its own (it takes B's language).
    assert speaker_cuts(turns, 0.5) == (6.2, 6.95, 12.5)


def test_short_or_unsure_stretches_take_their_speakers_language() -> None:
    from deployments.core.window_language import Spoken, speaker_hints

    spans = [
        Spoken(0, 0.0, 8.0, "it", 0.99, "A"),
        Spoken(0, 9.0, 9.6, "es", 0.92, "A"),  # one word, sure of the wrong language
        Spoken(0, 10.0, 16.0, "fr", 0.98, "B"),
        Spoken(0, 17.0, 20.0, "en", 0.40, "B"),  # unsure: B speaks French
        Spoken(1, 0.5, 4.0, "it", 0.97, "A"),
        Spoken(1, 5.0, 5.8, "it", 0.99, "A"),  # short, but already A's language
        Spoken(1, 6.0, 9.0, "es", 0.50, "C"),  # C speaks nothing with confidence
    ]
    hints = speaker_hints(spans, {0: 21.0, 1: 10.0})
    # Each reaches halfway to its neighbours, the last to the segment's end.
    assert hints == {0: ((8.5, 9.8, "it"), (16.5, 21.0, "fr"))}
    # A speaker with two languages (bilingual, or two voices merged) gives no hint.
    both = [*spans, Spoken(1, 10.0, 16.0, "es", 0.99, "A")]
    assert speaker_hints(both, {0: 21.0, 1: 17.0}) == {0: ((16.5, 21.0, "fr"),)}


def test_a_turn_under_three_seconds_takes_its_speakers_language_however_sure() -> None:
    from deployments.core.window_language import Spoken, speaker_hints

    spans = [
        Spoken(0, 0.0, 20.0, "es", 0.99, "A"),
        Spoken(0, 21.0, 23.2, "it", 0.87, "A"),  # 2.2 s, sure of the wrong language
        Spoken(0, 24.0, 27.5, "it", 0.95, "A"),  # 3.5 s: its own detection stands
    ]
    assert speaker_hints(spans, {0: 28.0}) == {0: ((20.5, 23.6, "es"),)}


def test_hints_of_one_language_side_by_side_add_up() -> None:
    from deployments.core.window_language import hinted

    # Three short stretches of one speaker in one 6 s window: each hint alone covers a third.
    thirds = [(0.0, 2.0, "ru"), (2.0, 4.0, "ru"), (4.0, 6.0, "ru")]
    assert hinted(thirds, 0.0, 6.0) == "ru"
    assert hinted([(0.0, 2.0, "ru"), (2.0, 4.0, "it")], 0.0, 6.0) is None  # a third each
    assert hinted([(0.0, 2.0, "ru"), (2.0, 5.0, "it")], 0.0, 6.0) == "it"
    assert hinted([], 0.0, 6.0) is None


def test_windows_never_span_a_cut() -> None:
    from deployments.models.whisper_batch import speech_windows

    sr = 16000
    rng = np.random.default_rng(0)
    audio = np.zeros(40 * sr, np.float32)
    audio[: 30 * sr] = rng.normal(0, 0.1, 30 * sr).astype(np.float32)
    plain = speech_windows(audio, vad_filter=False)
    assert plain == [(0, 30 * sr), (30 * sr, 40 * sr)]
    cut = speech_windows(audio, vad_filter=False, cuts=(10.0, 18.5))
    assert cut == [
        (0, 10 * sr),
        (10 * sr, int(18.5 * sr)),
        (int(18.5 * sr), 40 * sr),  # after the last cut, pieces merge again (21.5 s <= 30 s)
    ]


def test_an_unsure_window_chooses_among_the_recordings_languages():
    from deployments.core.window_language import among

    unsure = WindowGuess(0, 0.0, 2.0, {"pt": 0.4, "es": 0.3, "it": 0.2, "en": 0.05})
    assert among(("es", "it", "ru"), unsure) == "es"  # pt is spoken nowhere else
    assert among(("ru", "fr"), unsure) is None  # none of its guesses: left to the rest
    assert among((), unsure) is None
    sure = WindowGuess(0, 0.0, 9.0, {"pt": 0.9, "es": 0.05})
    assert among(("es",), sure) is None  # a sure window keeps its own language
