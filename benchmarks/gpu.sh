#!/usr/bin/env bash
# The GPU checks as one short run (a lent GPU machine's time is scarce, a few minutes): the CUDA
# tests (they skip without CUDA), the optimizer-step benchmark on the device (achieved bandwidth
# against its measured copy bandwidth) and the CNN sweep benchmark (bar there: >= 20x the loop).
# Figures go to $OUT (where the device tool collects them), else to benchmarks/results/.
#   bash benchmarks/gpu.sh            # PYTHON=... to use another interpreter than .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${OUT:-benchmarks/results}
export PYTHONPATH=src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$python" -m pytest -q -p no:cacheprovider -m cuda tests
"$python" benchmarks/step_speed.py --device cuda --rules qhm --json "$out/step_speed_cuda.json"
"$python" benchmarks/sweep_speed.py --workload cnn --device cuda --repeats 1 --json "$out/sweep_speed_gpu.json"
