"""Issue 23 item 8: the diarizer bundle for a bare GPU host fits a device run, and its bench
runs from it with torch, numpy and pydantic alone (pyannote, torchaudio, scipy, Ray blocked),
here on CPU. The GPU figures come from running it on a GPU host (the closing notes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_bundle import LIMIT_BYTES, WHEELS_ALLOWANCE, build

pytestmark = pytest.mark.models

BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(name + " is not on a bare GPU host")
sys.meta_path.insert(0, _Block())
"""
BLOCKED = ("pyannote", "torchaudio", "scipy", "ray", "fastapi", "faster_whisper", "sklearn")


def test_bundle_fits_and_its_bench_runs_without_the_server_install(tmp_path):
    # The shipped size: the default 3 min clip; pydantic's wheels counted at their allowance.
    size = build(tmp_path / "full", minutes=3.0, wheels=False)
    assert size + WHEELS_ALLOWANCE < LIMIT_BYTES, size

    bundle = tmp_path / "small"
    build(bundle, minutes=1.0, wheels=False)
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER.format(blocked=BLOCKED))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(block)}
    cmd = ["bash", str(bundle / "run.sh"), str(out), "--device", "cpu", "--threads", "1"]
    cmd += ["--processes", "1", "--rounds", "1", "--batch", "2"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert Path(report["code"]).is_relative_to(bundle)  # the bundle's code, not the checkout's
    assert report["whole_clip_speakers"] >= 2
    for key in ("models_whole_clip_x", "one_process_batch_1", "one_process_batch_2"):
        assert key in report
    assert report["processes"][0]["aggregate_x"] > 0
    assert report["half"]["min_cosine"] > 0.99, report["half"]

    scored = subprocess.run(
        [sys.executable, "bench/gpu_diarizer.py", "--bundle", str(bundle), "--score", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    der = float(scored.stdout.split("DER ")[1].split(",")[0])
    assert der < 0.2, scored.stdout
