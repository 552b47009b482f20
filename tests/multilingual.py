"""Scoring helpers for multilingual transcripts: text normalization and WER per language,
and the language of each stitched segment against a reference of (start, end, language) turns
(tests/realvoices.turn_languages for recordings of real voices).

Result segments may be dicts or objects with start, end, language and text (a stitched
transcript's segments); a missing or None language never counts as correct.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Turn = tuple[float, float, str]  # (start, end, language)

# Apostrophes and their look-alikes: kept inside English words ("don't", as
# tests/conftest.normalize_text keeps them), word separators elsewhere ("l'heure" -> "l heure").
_APOSTROPHES = "'’‘ʼ"


def normalize(text: str, language: str) -> str:
    """Lowercase, NFKC, punctuation and symbols to spaces, whitespace collapsed.

    Letters (accents kept: é, à, ё ...) and digits stay as they are; every other character,
    guillemets, dashes and apostrophes included, separates words, except an apostrophe in
    English, which stays (as "'"). For ASCII English this is tests/conftest.normalize_text.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    keep_apostrophe = language.split("-")[0].lower() == "en"
    out = []
    for ch in text:
        if ch in _APOSTROPHES:
            out.append("'" if keep_apostrophe else " ")
        elif unicodedata.category(ch)[0] in "LN" or (
            unicodedata.category(ch)[0] == "M" and out and out[-1] != " "  # on a letter
        ):
            out.append(ch)
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def wer(reference: str, hypothesis: str, language: str) -> float:
    """Word error rate of hypothesis against reference, both normalized for language."""
    import jiwer

    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if not ref:
        raise ValueError("the reference has no words: WER is undefined")
    return jiwer.wer(ref, hyp)


def _field(segment: Any, name: str) -> Any:
    if isinstance(segment, Mapping):
        return segment.get(name)
    return getattr(segment, name, None)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


def assign_languages(
    result_segments: Iterable[Any], reference_turns: Sequence[Turn]
) -> list[tuple[Any, str]]:
    """(segment, reference language) for every result segment that overlaps a reference turn:
    the language of the turn it overlaps most in time (the earliest turn on a tie).
    Segments that overlap no turn (or only touch one) are left out."""
    out = []
    for seg in result_segments:
        start, end = float(_field(seg, "start")), float(_field(seg, "end"))
        best, best_overlap = None, 0.0
        for t0, t1, lang in reference_turns:
            ov = _overlap(start, end, t0, t1)
            if ov > best_overlap:
                best, best_overlap = lang, ov
        if best is not None:
            out.append((seg, best))
    return out


def language_scores(
    result_segments: Iterable[Any], reference_turns: Sequence[Turn]
) -> tuple[float, int]:
    """(share of scored segments whose language is right, number of scored segments).

    Each segment counts once (not weighted by its duration); the share is NaN with none."""
    scored = assign_languages(result_segments, reference_turns)
    if not scored:
        return math.nan, 0
    right = sum(_field(seg, "language") == lang for seg, lang in scored)
    return right / len(scored), len(scored)


def language_time_share(
    result_segments: Iterable[Any], reference_speech: Sequence[Turn]
) -> tuple[float, float]:
    """(share of the transcribed speech time whose language is right, seconds scored).

    Each reference stretch of speech (tests/realvoices.turn_languages(rec, speech=True))
    counts by the time result segments cover it: right where the covering segment's language
    is the stretch's. Speech no segment covers is not scored (that is WER's business)."""
    spans = sorted(
        (float(_field(s, "start")), float(_field(s, "end")), _field(s, "language"))
        for s in result_segments
    )
    right = total = 0.0
    for t0, t1, lang in reference_speech:
        for s0, s1, said in spans:
            if s0 >= t1:
                break
            ov = _overlap(t0, t1, s0, s1)
            if ov > 0:
                total += ov
                right += ov if said == lang else 0.0
    return (right / total if total else math.nan), total


def speech_transcribed(result_segments: Iterable[Any], reference_speech: Sequence[Turn]) -> float:
    """The share of the reference speech time (turn_languages(rec, speech=True)) that some
    result segment covers: what is missing was lost, whatever its words."""
    spans = sorted((float(_field(s, "start")), float(_field(s, "end"))) for s in result_segments)
    covered = total = 0.0
    for t0, t1, _ in reference_speech:
        total += t1 - t0
        at = t0
        for s0, s1 in spans:
            if s0 >= t1:
                break
            if s1 > at:
                covered += max(0.0, min(s1, t1) - max(s0, at))
                at = max(at, min(s1, t1))
    return covered / total if total else math.nan


def language_accuracy(result_segments: Iterable[Any], reference_turns: Sequence[Turn]) -> float:
    """The share of result segments whose language equals that of the reference turn they
    overlap most; segments overlapping no turn are ignored. NaN if none is scored
    (language_scores also gives the count)."""
    return language_scores(result_segments, reference_turns)[0]


def words_by_language(
    result_segments: Iterable[Any], reference_turns: Sequence[Turn]
) -> dict[str, str]:
    """Reference language -> the hypothesis text of the result segments assigned to it (by most
    overlap), in the segments' order: score each against that language's reference text
    (tests/realvoices.texts_by_language) for per-language WER of a mixed recording."""
    out: dict[str, list[str]] = {}
    for seg, lang in assign_languages(result_segments, reference_turns):
        text = (_field(seg, "text") or "").strip()
        if text:
            out.setdefault(lang, []).append(text)
    return {lang: " ".join(texts) for lang, texts in out.items()}


def _word_language(start: float, end: float, reference_turns: Sequence[Turn]) -> str | None:
    """The language of the turn a word overlaps most; a word between turns (timestamps are
    approximate) takes the nearest turn within 1 s."""
    best, best_overlap = None, 0.0
    for t0, t1, lang in reference_turns:
        ov = _overlap(start, end, t0, t1)
        if ov > best_overlap:
            best, best_overlap = lang, ov
    if best is not None:
        return best
    mid = (start + end) / 2
    gaps = [(max(t0 - mid, mid - t1), lang) for t0, t1, lang in reference_turns]
    gap, lang = min(gaps, default=(math.inf, None))
    return lang if gap <= 1.0 else None


def words_by_language_timed(
    result_segments: Iterable[Any], reference_turns: Sequence[Turn]
) -> dict[str, str]:
    """As words_by_language, but each word goes to the turn its own timestamps overlap (the
    result's `words`), so a segment that spans turns of two languages is split between them
    instead of charging one language with insertions and the other with deletions.
    Segments without words fall back to the segment's assignment."""
    out: dict[str, list[str]] = {}
    for seg in result_segments:
        words = _field(seg, "words") or []
        if not words:
            for _, lang in assign_languages([seg], reference_turns):
                text = (_field(seg, "text") or "").strip()
                if text:
                    out.setdefault(lang, []).append(text)
            continue
        for word in words:
            lang = _word_language(
                float(_field(word, "start")), float(_field(word, "end")), reference_turns
            )
            text = (_field(word, "text") or _field(word, "word") or "").strip()
            if lang is not None and text:
                out.setdefault(lang, []).append(text)
    return {lang: " ".join(texts) for lang, texts in out.items()}
