#!/usr/bin/env bash
# The benchmarks of docs/BENCHMARKS.md on a GPU machine, at full size.
#
#   bash bench/gpu.sh [RESULTS_DIR]      (default: /tmp/speech-bench-gpu-<date>)
#
# Whisper large-v3 from the Hugging Face hub (downloaded once into the models dir, so the
# machine needs internet access), float16 on CUDA. As in serve_config.gpu.yaml, each
# transcriber replica asks Ray for 1 CPU and half a GPU, each diarizer replica for a
# quarter of one; the in-process baselines use the GPU too. Tables go to stdout and to
# RESULTS_DIR/tables.md, JSON to RESULTS_DIR/<benchmark>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

export SPEECH_WHISPER_MODEL=large-v3 SPEECH_ALLOW_DOWNLOADS=true
out=${1:-/tmp/speech-bench-gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
gpu=(--whisper-model large-v3 --num-gpus 0.5 --diarizer-num-gpus 0.25)

bench() {  # bench NAME JSON_NAME ARGS...: one benchmark, tables appended to tables.md
    local name=$1 json=$2
    shift 2
    echo "== bench/$name.py $*" >&2
    .venv/bin/python "bench/$name.py" "$@" "${gpu[@]}" --json "$out/$json.json" |
        tee -a "$out/tables.md"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
bench throughput throughput --minutes 5 20 60
bench throughput throughput-diarize --minutes 5 20 60 --diarize
bench scaling scaling --minutes 20 --replicas 1 2 --segment-s 15 30 60 120
bench latency latency --requests 50
bench accuracy accuracy --long
bench transcript_accuracy transcript-accuracy --minutes 10
bench memory memory --minutes 5 20 60
echo "results in $out" >&2
