"""Build the diarizer bundle for a bare GPU host (issue 23 item 8).

    .venv/bin/python bench/gpu_bundle.py [--out build/gpu-bundle] [--minutes 3] [--no-wheels]

A host that has python3, torch and numpy but no internet and no project venv runs the
bundled diarizer from it: `bash build/gpu-bundle/run.sh OUT_DIR` (bench/gpu_diarizer.py
does the measuring). The bundle holds:
- the diarizer's code (deployments/models/diarization and the model-free core it uses):
  plain torch and numpy, plus pydantic for its schemas;
- segmentation-3.0 as a plain state dict (exported here, where pyannote.audio loads the
  original checkpoint) and the CAM++ state dict;
- a real-speech clip (a meeting of four Debian prompt voices, tests/realvoices.py) and its
  reference RTTM, scored back here with pyannote.metrics (`gpu_diarizer.py --score`);
- pydantic's wheels for CPython 3.10-3.13 (pydantic_core is compiled per version).
It must stay under 64 MiB, what a device run may carry (tests/test_gpu_bundle.py checks).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, make_parser

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20
WHEELS_ALLOWANCE = 12 * 2**20  # pydantic_core for four CPythons and the pure-python rest
VOICES = ["en_allison", "it_carlo", "ru", "fr_june"]
CODE = [
    "deployments/__init__.py",
    "deployments/core/__init__.py",
    "deployments/core/clustering.py",
    "deployments/core/schemas.py",
    "deployments/models/__init__.py",
    "deployments/models/diarization/__init__.py",
    "deployments/models/diarization/embedding.py",
    "deployments/models/diarization/fbank.py",
    "deployments/models/diarization/pieces.py",
    "deployments/models/diarization/pipeline.py",
    "deployments/models/diarization/pyannet.py",
    "deployments/models/diarization/segmentation.py",
    "bench/gpu_diarizer.py",
]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def export_segmentation(dest: Path) -> None:
    import torch

    from deployments.models.diarization import pyannet
    from deployments.models.model_store import resolve_bundled_diarization
    from serve_app.settings import Settings

    segmentation, embedding = resolve_bundled_diarization(Settings().resolved_models_dir)
    torch.save(pyannet.from_pyannote(segmentation).state_dict(), dest / "segmentation-3.0.pt")
    shutil.copyfile(embedding, dest / "campplus.pt")


def write_clip(dest: Path, minutes: float) -> None:
    from tests.realvoices import cached_meeting

    rec = cached_meeting(VOICES, minutes, seed=5, overlap_prob=0.05)
    rec.write_wav(dest / "clip.wav")
    (dest / "clip.rttm").write_text(rec.rttm("clip"))


def download_wheels(dest: Path) -> None:
    """pydantic and what it needs, for each CPython the host may run."""
    import importlib.metadata as md

    pins = [
        f"{name}=={md.version(name)}"
        for name in ("pydantic", "pydantic-core", "annotated-types", "typing-extensions")
    ]
    pins.append(f"typing-inspection=={md.version('typing-inspection')}")
    for version in PYTHONS:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--only-binary=:all:", "--python-version", version]
        cmd += ["--platform", "manylinux2014_x86_64", "-d", str(dest), *pins]
        subprocess.run(cmd, check=True)


def build(out: Path, minutes: float, wheels: bool) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for rel in CODE:
        target = out / "code" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, target)
    (out / "code" / "bench" / "__init__.py").write_text("")
    export_segmentation(out)
    write_clip(out, minutes)
    if wheels:
        download_wheels(out / "wheels")
        got = sum(p.stat().st_size for p in (out / "wheels").iterdir())
        assert got <= WHEELS_ALLOWANCE, f"wheels take {got} bytes, over the allowance"
    shutil.copyfile(REPO / "bench" / "gpu_run.sh", out / "run.sh")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"bundle {out}: {size / 2**20:.1f} MiB (limit {LIMIT_BYTES / 2**20:.0f} MiB)")
    return size


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "gpu-bundle")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the clip")
    parser.add_argument("--no-wheels", action="store_true", help="skip pydantic's wheels")
    args = parser.parse_args()
    size = build(args.out, args.minutes, not args.no_wheels)
    if args.no_wheels:
        size += WHEELS_ALLOWANCE
    return 0 if size < LIMIT_BYTES else 1


if __name__ == "__main__":
    raise SystemExit(main())
