#!/usr/bin/env bash
# The GPU check, one command on a GPU machine with this repository (README, Speed):
#   bash bench/gpu_check.sh [OUT.json]
# installs what is missing (make install: .venv), then, within about 8 minutes, runs the
# CUDA tests, each dataset's train.py with the paper preset for two short epochs, bench/run.py
# --device cuda for every dataset and torchrun with one process on dSprites (bench/gpu_check.py);
# writes every figure to OUT.json (default bench/results/<gpu>.json) and prints a table.
# Without CUDA it stops at once: exit 3 and one line saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/gpu_check.sh needs CUDA: nvidia-smi finds no NVIDIA GPU on this machine; run it on a GPU machine" >&2
    exit 3
fi
make install >/dev/null
exec .venv/bin/python bench/gpu_check.py "$@"
