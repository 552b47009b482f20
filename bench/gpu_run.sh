#!/usr/bin/env bash
# The diarizer bench from a bundle made by bench/gpu_bundle.py, on a bare GPU host that has
# python3, torch and numpy (no internet, no project venv needed).
#   bash run.sh OUT_DIR [gpu_diarizer.py options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: run.sh OUT_DIR [gpu_diarizer.py options]}
shift
mkdir -p "$out"
py=${PYTHON:-python3}
"$py" -c "import torch, numpy" || { echo "this host needs python3 with torch and numpy" >&2; exit 2; }
deps="$here/deps"
if ! "$py" -c "import pydantic" 2>/dev/null && [ ! -d "$deps" ]; then
  # pydantic from the bundled wheels: the pure-python ones and this CPython's pydantic_core.
  "$py" - "$here/wheels" "$deps" <<'PY'
import pathlib, sys, zipfile
wheels, deps = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
picked = [w for w in wheels.glob("*.whl") if "py3-none-any" in w.name or f"-{tag}-{tag}-" in w.name]
if not any(w.name.startswith("pydantic_core") for w in picked):
    sys.exit(f"no pydantic_core wheel for {tag} in the bundle")
for w in picked:
    zipfile.ZipFile(w).extractall(deps)
PY
fi
export PYTHONPATH="$here/code:$deps${PYTHONPATH:+:$PYTHONPATH}"
"$py" "$here/code/bench/gpu_diarizer.py" --bundle "$here" --out "$out" "$@"
