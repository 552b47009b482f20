"""Windows cut where the language changes (deployments/models/language_probe.py): the rule
alone, and Whisper base on a real minute of three voices where an Italian turn shares a
window with French."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.core.schemas import SAMPLE_RATE, TranscribeOptions
from deployments.models.language_probe import PROBE_BATCH, language_cuts, region_languages
from deployments.models.priority_gate import LIVE_BATCH, PriorityGate

S = SAMPLE_RATE


def test_a_cut_goes_in_the_pause_before_the_first_region_sure_of_another_language() -> None:
    regions = [(0, 2 * S), (3 * S, 5 * S), (6 * S, 8 * S)]
    found = [{"it": 0.98}, {"it": 0.9}, {"fr": 0.99}]
    assert language_cuts(regions, found) == (5.5,)
    # Two changes: two cuts; the same language again after another: no cut between.
    found = [{"it": 0.98}, {"fr": 0.9}, {"it": 0.99}]
    assert language_cuts(regions, found) == (2.5, 5.5)
    assert language_cuts(regions, [{"fr": 0.9}, {"fr": 0.95}, {"fr": 0.99}]) == ()


def test_unsure_and_unprobed_regions_stay_with_what_precedes_them() -> None:
    regions = [(0, 2 * S), (3 * S, 4 * S), (5 * S, 5 * S + S // 2), (6 * S, 8 * S)]
    found = [{"it": 0.98}, {"fr": 0.5, "it": 0.4}, None, {"fr": 0.99}]
    assert language_cuts(regions, found) == (5.75,)
    # Nothing sure before the first sure region: no cut at the start.
    assert language_cuts(regions, [None, {"fr": 0.4}, None, {"fr": 0.99}]) == ()


def test_a_stray_language_outside_the_recordings_languages_cuts_nothing() -> None:
    regions = [(0, 2 * S), (3 * S, 5 * S), (6 * S, 8 * S)]
    found = [{"it": 0.98}, {"te": 0.77}, {"it": 0.99}]
    assert language_cuts(regions, found) == (2.5, 5.5)
    assert language_cuts(regions, found, candidates=("it", "fr", "en")) == ()


class _Model:
    """What region_languages uses of a WhisperModel: every region detected as Italian."""

    def __init__(self) -> None:
        self.passes: list[int] = []
        self.feature_extractor = self
        self.hop_length = 160
        self.model = self

    def __call__(self, audio):
        return np.zeros((80, len(audio) // self.hop_length), dtype=np.float32)

    def encode(self, features):
        return features

    def detect_language(self, encoded):
        self.passes.append(len(encoded))
        return [[("<|it|>", 0.9), ("<|fr|>", 0.05)] for _ in encoded]


class _CountingGate(PriorityGate):
    def __init__(self) -> None:
        super().__init__()
        self.holds = 0

    def hold(self, live):
        self.holds += 1
        return super().hold(live)


def test_the_probe_holds_the_gate_one_batch_at_a_time_and_shrinks_for_live_traffic() -> None:
    regions = [(k * 2 * S, k * 2 * S + S + S // 2) for k in range(20)] + [(41 * S, 41 * S + 10)]
    audio = np.zeros(42 * S, dtype=np.float32)
    model, gate = _Model(), _CountingGate()
    found = region_languages(model, audio, regions, gate)
    assert found[-1] is None  # shorter than a second: not probed
    assert all(f == {"it": 0.9, "fr": 0.05} for f in found[:-1])
    assert model.passes == [PROBE_BATCH, PROBE_BATCH, 20 - 2 * PROBE_BATCH]
    assert gate.holds == 3  # a live request waits for one batch, not the whole probe
    with gate.hold(live=True):  # live traffic now: batch work takes smaller passes
        pass
    model.passes.clear()
    region_languages(model, audio, regions, gate)
    assert model.passes == [LIVE_BATCH] * (20 // LIVE_BATCH)


@pytest.mark.models
def test_a_turn_sharing_a_window_with_another_language_is_decoded_in_its_own(base_core) -> None:
    """A minute of the tune voices' meeting: 6 s of Italian, then French with one English
    word. Decoded as windows of up to 30 s, the first window can be sure it is French and the
    Italian come out as French words; with the probe, each turn is in its own language."""
    from tests.multilingual import language_time_share
    from tests.realvoices import cached_meeting, turn_languages

    rec = cached_meeting(["en_allison", "fr_june", "it_carlo"], 2.5, seed=3)
    audio = rec.audio[60 * S : 120 * S]
    speech = [
        (s - 60, e - 60, lang)
        for s, e, lang in turn_languages(rec, speech=True)
        if e > 60 and s < 120
    ]
    italian = [(s, e, lang) for s, e, lang in speech if lang == "it"]
    candidates = ("en", "fr", "it")

    def shares(split: bool) -> tuple[float, float]:
        opts = TranscribeOptions(split_languages=split, languages=candidates)
        (result,) = base_core.transcribe_many([audio], [opts])
        return language_time_share(result.segments, speech)[0], language_time_share(
            result.segments, italian
        )[0]

    before_all, before_it = shares(False)
    after_all, after_it = shares(True)
    # Whether the unsplit decode fails depends on the machine: the Italian came out French
    # (0.0) on the machine this was written on, and right (1.0, all speech 0.988) on another
    # "AMD EPYC" VM with the same packages. So this asserts what the probe gives, and that it
    # is never worse than without it.
    assert after_it >= 0.9, (before_it, after_it)
    assert after_all >= 0.95 and after_all >= before_all, (before_all, after_all)
