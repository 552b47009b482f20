"""Boundary types reject drifted or inconsistent shapes with messages naming the field."""

import pytest
from pydantic import ValidationError

from deployments.core.schemas import Diarization, DiarizeOptions, SpeakerTurn, TranscribeOptions


def test_min_greater_than_max_is_rejected():
    with pytest.raises(ValidationError, match="min_speakers"):
        DiarizeOptions(min_speakers=3, max_speakers=2)


def test_num_speakers_zero_is_rejected():
    with pytest.raises(ValidationError, match="num_speakers"):
        DiarizeOptions(num_speakers=0)


def test_num_outside_range_is_rejected():
    with pytest.raises(ValidationError, match="outside"):
        DiarizeOptions(num_speakers=5, max_speakers=3)


def test_unknown_option_is_rejected():
    with pytest.raises(ValidationError, match="beam"):
        TranscribeOptions(beam=3)


def test_diarization_needs_an_embedding_per_speaker():
    turn = SpeakerTurn(start=0, end=1, speaker="SPEAKER_00")
    with pytest.raises(ValidationError, match="SPEAKER_00"):
        Diarization(
            duration=1, turns=[turn], exclusive_turns=[turn], speakers=["SPEAKER_00"], embeddings={}
        )


def test_options_are_hashable_for_batch_grouping():
    assert len({TranscribeOptions(), TranscribeOptions(), TranscribeOptions(beam_size=1)}) == 2
