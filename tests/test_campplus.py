"""CAM++ speaker embeddings: the published weights load strictly and tell real voices apart."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deployments.models.diarization.embedding import EMBEDDING_DIM, CAMPPlus, SpeakerEmbedder
from deployments.models.model_store import resolve_bundled_diarization
from tests import realvoices

pytestmark = pytest.mark.models

VOICES = ["en_allison", "fr_june", "it_carlo", "ru"]
PER_VOICE = 6


@pytest.fixture(scope="module")
def weights(models_dir):
    return resolve_bundled_diarization(models_dir)[1]


def test_state_dict_loads_strictly(weights):
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert len(state) == 937
    model = CAMPPlus()
    assert model.load_state_dict(state, strict=True)  # no missing, no unexpected keys
    params = sum(p.numel() for p in model.parameters())
    assert 6.5e6 < params < 7.5e6
    # Strictness is real: one tensor short is refused.
    state.pop(next(iter(state)))
    with pytest.raises(RuntimeError, match="Missing key"):
        CAMPPlus().load_state_dict(state, strict=True)


def test_same_speaker_pairs_score_above_different_speaker_pairs(weights):
    rng = np.random.default_rng(0)
    clips, owners = [], []
    for voice in VOICES:
        prompts = [p.audio for p in realvoices.voice_prompts(voice) if len(p.audio) > 24_000]
        for i in rng.choice(len(prompts), PER_VOICE, replace=False):
            clips.append(prompts[i][: 6 * 16_000])
            owners.append(voice)
    emb = SpeakerEmbedder(weights)(clips)
    assert emb.shape == (len(clips), EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    same, diff = [], []
    for i, j in itertools.combinations(range(len(clips)), 2):
        (same if owners[i] == owners[j] else diff).append(float(emb[i] @ emb[j]))
    ordered = np.mean([s > d for s in same for d in diff])
    assert np.mean(same) - np.mean(diff) > 0.25, (np.mean(same), np.mean(diff))
    assert ordered >= 0.98


def test_batched_equals_one_at_a_time(weights):
    embedder = SpeakerEmbedder(weights)
    prompts = realvoices.voice_prompts("it_carlo")[:4]
    clips = [p.audio[: (1 + i) * 8_000] for i, p in enumerate(prompts)]
    together = embedder(clips)
    alone = np.stack([embedder([c])[0] for c in clips])
    # Each piece is padded to its own ladder length, whatever shares its pass.
    assert np.min(np.sum(together * alone, axis=1)) > 0.9999


def test_features_are_torchaudio_kaldi_fbank():
    """Issue 23 item 8: the plain-torch features (no torchaudio on a bare GPU host) are
    Kaldi's, as torchaudio computes them for CAM++."""
    import torchaudio.compliance.kaldi as kaldi

    from deployments.models.diarization.fbank import fbank

    prompt = realvoices.voice_prompts("fr_june")[0].audio
    for n in (400, 401, 8_123, len(prompt)):
        wave = torch.from_numpy(np.ascontiguousarray(prompt[:n], dtype=np.float32)) * 32768.0
        want = kaldi.fbank(wave[None], num_mel_bins=80, sample_frequency=16_000, dither=0.0)
        got = fbank(wave, 80)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_half_precision_embeddings_stay_within_cosine_0_99(weights):
    """Issue 23 item 6: serve_config.gpu.yaml runs CAM++ in float16 (diarization_half).
    Checked here in CPU float16; bench/gpu_diarizer.py checks it on the GPU itself."""
    clips = [p.audio[:48_000] for v in VOICES for p in realvoices.voice_prompts(v)[:3]]
    full = SpeakerEmbedder(weights)(clips)
    half = SpeakerEmbedder(weights, half=True)(clips)
    assert np.min(np.sum(full * half, axis=1)) > 0.99
