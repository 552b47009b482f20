#!/usr/bin/env bash
# Installs everything the service and its tests need, idempotently:
#   Debian packages (espeak-ng/sox for exact-timing test speech, redis-server for restart tests,
#   Asterisk's studio prompts: real voices with transcripts for diarization tests and bench/),
#   a virtual environment at .venv with the pinned Python dependency set,
#   and the bundled offline models (provisioned into SPEECH_MODELS_DIR or ~/.cache/speech-cluster/models).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  espeak-ng sox redis-server
  # One voice each (tests/realvoices.py). Not asterisk-core-sounds-es/-fr: they replace the
  # es/ and fr/ folders of asterisk-prompt-es-co and -fr-armelle.
  asterisk-core-sounds-en-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav
  asterisk-core-sounds-es-wav asterisk-core-sounds-ru-wav asterisk-prompt-es-co
  asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav
  asterisk-core-sounds-en asterisk-core-sounds-it asterisk-core-sounds-ru  # transcripts
  chromium  # headless browser for the /live page's test (real-speech file as the microphone)
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "==> apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "WARNING: missing Debian packages ${missing[*]} (needed by some tests); install them as root." >&2
  fi
fi

# French transcripts (fr_june in tests/realvoices.py): asterisk-core-sounds-fr conflicts with
# asterisk-prompt-fr-armelle, so take only its transcript file out of the .deb, uninstalled.
FR_TRANSCRIPTS=/usr/share/speech-cluster/transcripts/core-sounds-fr.txt.gz
if [[ ! -s $FR_TRANSCRIPTS ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    echo "==> extracting $FR_TRANSCRIPTS from asterisk-core-sounds-fr"
    deb_dir=$(mktemp -d)
    member=./usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz
    chown _apt "$deb_dir" 2>/dev/null || true  # lets apt download as _apt, sandboxed
    if (cd "$deb_dir" && apt-get download -qq asterisk-core-sounds-fr >/dev/null 2>&1 ||
          { apt-get update -qq && apt-get download -qq asterisk-core-sounds-fr >/dev/null; }) &&
       dpkg-deb --fsys-tarfile "$deb_dir"/asterisk-core-sounds-fr_*.deb |
         tar -xO "$member" >"$deb_dir/fr.txt.gz" && [[ -s $deb_dir/fr.txt.gz ]]; then
      install -D -m 644 "$deb_dir/fr.txt.gz" "$FR_TRANSCRIPTS"
    else
      echo "WARNING: could not extract $FR_TRANSCRIPTS (French transcripts for some tests)." >&2
    fi
    rm -rf "$deb_dir"
  else
    echo "WARNING: missing $FR_TRANSCRIPTS (French transcripts for some tests); rerun as root." >&2
  fi
fi

PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[[ -n $PYTHON ]] || { echo "ERROR: Python 3.11 or 3.12 is required" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
echo "==> installing Python packages (first run downloads ~3 GB of torch/CUDA wheels)"
# A machine whose pip config names local package indexes that lack a package prints one
# "Location ... is ignored" line per package (dozens); they say nothing about this install.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ./client -e '.[test]' \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
.venv/bin/python -c 'import deployments.models.quiet, faster_whisper, pyannote.audio, ray.serve, torchaudio' \
  || { echo "ERROR: the Python environment is broken; delete .venv and rerun" >&2; exit 1; }

# The models directory the service will read (Settings().resolved_models_dir: SPEECH_MODELS_DIR,
# else SPEECH_DATA_DIR/models, else ~/.cache/speech-cluster/models).
models_dir=$(.venv/bin/python -c 'from serve_app.settings import Settings; print(Settings().resolved_models_dir)')
echo "==> provisioning bundled models into $models_dir"
.venv/bin/speech-cluster-provision --models-dir "$models_dir"
