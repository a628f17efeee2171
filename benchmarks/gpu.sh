#!/usr/bin/env bash
# The GPU checks as one short run (a lent GPU machine's time is scarce): the CUDA tests, then the
# CNN sweep benchmark on the GPU (its bar there: >= 20x the sequential loop). Figures go to $OUT
# (where the device tool collects them), else to benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHONPATH=src "$python" -m pytest -q -x -m cuda tests
PYTHONPATH=src "$python" benchmarks/sweep_speed.py --workload cnn --device cuda --repeats 1 \
    --json "$out/sweep_speed_gpu.json"
