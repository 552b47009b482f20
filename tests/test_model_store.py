"""Bundled weights are provisioned, verified and resolved; hub names fail clearly offline."""

import pytest

from deployments.models import model_store
from deployments.models.model_store import ModelUnavailableError


def test_provision_is_idempotent_and_verified(models_dir):
    first = model_store.provision(models_dir)
    mtimes = {k: p.stat().st_mtime_ns for k, p in first.items() if p.is_file()}
    second = model_store.provision(models_dir)
    assert first == second
    assert {k: second[k].stat().st_mtime_ns for k in mtimes} == mtimes
    seg = second["segmentation"]
    assert model_store.sha256(seg) == model_store.SEGMENTATION_SHA256


def test_bundled_names_resolve_to_local_files(models_dir):
    path = model_store.resolve_whisper("tiny.en", models_dir, allow_downloads=False)
    assert (models_dir / model_store.WHISPER_DIR / "model.bin").exists()
    assert path.endswith(model_store.WHISPER_DIR)
    seg, emb = model_store.resolve_bundled_diarization(models_dir)
    assert seg.exists() and emb.exists()


def test_hub_model_offline_fails_with_instructions(models_dir):
    with pytest.raises(ModelUnavailableError, match="SPEECH_ALLOW_DOWNLOADS"):
        model_store.resolve_whisper("large-v3", models_dir, allow_downloads=False)


def test_hub_diarization_offline_fails_with_instructions(models_dir):
    from deployments.replicas.diarizer import load_diarizer

    with pytest.raises(ModelUnavailableError, match="SPEECH_HF_TOKEN"):
        load_diarizer(
            "pyannote/speaker-diarization-community-1",
            models_dir,
            allow_downloads=False,
            hf_token=None,
            device="cpu",
            threads=1,
        )


def test_missing_models_dir_says_how_to_provision(tmp_path):
    with pytest.raises(ModelUnavailableError, match="speech-cluster-provision"):
        model_store.resolve_whisper("tiny.en", tmp_path, allow_downloads=False)
