"""The multilingual scoring helpers (tests/multilingual.py) on hand-made inputs: no models."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import normalize_text
from tests.conftest import wer as english_wer
from tests.multilingual import (
    language_accuracy,
    language_scores,
    language_time_share,
    normalize,
    speech_transcribed,
    wer,
    words_by_language,
    words_by_language_timed,
)
from tests.realvoices import LANGUAGE, VOICES, RealRecording, texts_by_language, turn_languages


def test_normalize_french_and_italian():
    assert normalize("« Quelle heure est-il ? » — L’heure, c'est l'heure !", "fr") == (
        "quelle heure est il l heure c est l heure"
    )
    assert normalize("Un po' d’acqua: perché NO?", "it") == "un po d acqua perché no"
    # Accents and digits stay; NFKC folds compatibility forms.
    assert normalize("À 10 h 30, ÉTÉ…  ﬁn", "fr") == "à 10 h 30 été fin"
    assert normalize("Ещё раз, пожалуйста.", "ru") == "ещё раз пожалуйста"


def test_normalize_english_matches_conftest():
    for text in (
        "And so my fellow Americans, ask not what your country can do for you.",
        "Don't stop -- it's 10:30 a.m.! (twenty-one)",
    ):
        assert normalize(text, "en") == normalize_text(text)
    assert normalize("It’s", "en") == "it's"  # a typographic apostrophe is an apostrophe


def test_wer():
    assert wer("Bonjour, l'heure est venue.", "bonjour l heure est venue", "fr") == 0.0
    assert wer("Bonjour, l'heure est venue.", "Bonjour l'heure est venu", "fr") == pytest.approx(
        1 / 5
    )
    ref, hyp = "Ask not what your country can do for you.", "ask what your country can do for me"
    assert wer(ref, hyp, "en") == pytest.approx(english_wer(ref, hyp)) == pytest.approx(2 / 9)
    with pytest.raises(ValueError):
        wer(" ... ", "anything", "fr")


REFERENCE = [(0.0, 10.0, "en"), (9.0, 20.0, "fr"), (25.0, 30.0, "it")]


def test_language_accuracy_by_most_overlap():
    segments = [
        {"start": 0.0, "end": 5.0, "language": "en", "text": "hello"},
        {"start": 8.0, "end": 15.0, "language": "fr", "text": "bonjour"},  # mostly fr
        SimpleNamespace(start=8.0, end=10.5, language="fr", text="salut"),  # mostly en
        {"start": 21.0, "end": 24.0, "language": "de", "text": "hallo"},  # overlaps nothing
        SimpleNamespace(start=26.0, end=27.0, language=None, text="ciao"),  # no language
    ]
    assert language_scores(segments, REFERENCE) == (0.5, 4)
    assert language_accuracy(segments, REFERENCE) == 0.5
    assert math.isnan(language_accuracy([], REFERENCE))
    assert language_scores([{"start": 20.0, "end": 25.0, "language": "fr"}], REFERENCE)[1] == 0


def test_language_time_share():
    speech = [(0.0, 4.0, "en"), (10.0, 12.0, "fr"), (30.0, 31.0, "it")]  # it: not transcribed
    segments = [
        {"start": 0.5, "end": 3.0, "language": "en"},  # 2.5 s right
        {"start": 3.0, "end": 5.0, "language": "fr"},  # 1 s of en speech, wrong
        SimpleNamespace(start=9.0, end=11.0, language="fr"),  # 1 s right
        {"start": 11.0, "end": 12.0, "language": None},  # 1 s, no language: wrong
    ]
    share, seconds = language_time_share(segments, speech)
    assert seconds == pytest.approx(5.5)
    assert share == pytest.approx(3.5 / 5.5)
    assert math.isnan(language_time_share([], speech)[0])


def test_speech_transcribed_counts_each_second_once():
    speech = [(0.0, 4.0, "en"), (10.0, 12.0, "fr"), (30.0, 31.0, "it")]  # 7 s
    segments = [
        {"start": 0.5, "end": 3.0},
        {"start": 2.0, "end": 5.0},  # overlaps the one before: 2-3 s counts once
        {"start": 11.5, "end": 20.0},
    ]
    assert speech_transcribed(segments, speech) == pytest.approx((3.5 + 0.5) / 7.0)
    assert speech_transcribed([], speech) == 0.0


def test_words_by_language():
    segments = [
        {"start": 0.0, "end": 5.0, "language": "en", "text": " hello there "},
        {"start": 8.0, "end": 15.0, "language": "en", "text": "bonjour"},
        {"start": 15.0, "end": 19.0, "language": "fr", "text": "à tous"},
        {"start": 21.0, "end": 24.0, "language": "de", "text": "hallo"},
        {"start": 25.0, "end": 26.0, "language": "it", "text": ""},
    ]
    assert words_by_language(segments, REFERENCE) == {"en": "hello there", "fr": "bonjour à tous"}


def test_words_by_language_timed_splits_a_segment_across_turns():
    def word(start, end, text):
        return {"start": start, "end": end, "text": text}

    spanning = [word(7.0, 8.0, "good"), word(8.2, 8.8, "bye"), word(11.0, 12.0, "salut")]
    segments = [
        {"start": 7.0, "end": 12.0, "text": "good bye salut", "words": spanning},
        {"start": 20.2, "end": 20.8, "text": "x", "words": [word(20.2, 20.8, "tous")]},
        {"start": 22.0, "end": 23.0, "text": "y", "words": [word(22.0, 23.0, "lost")]},
        {"start": 25.0, "end": 26.0, "text": "ciao"},  # no words: the segment's turn
    ]
    assert words_by_language_timed(segments, REFERENCE) == {
        "en": "good bye",
        "fr": "salut tous",  # 0.2 s after its turn: the nearest within 1 s
        "it": "ciao",
    }


def test_turn_languages_and_texts():
    assert set(LANGUAGE) == set(VOICES)
    spans = [(0.0, 2.0, "en_allison"), (2.5, 4.0, "fr_june"), (3.5, 6.0, "es_co")]
    rec = RealRecording(np.zeros(16_000 * 6, np.float32), spans, spans, ["hi", "salut", ""])
    assert turn_languages(rec) == [(0.0, 2.0, "en"), (2.5, 4.0, "fr"), (3.5, 6.0, "es")]
    assert turn_languages(rec, speech=True) == turn_languages(rec)
    assert texts_by_language(rec) == {"en": "hi", "fr": "salut"}
