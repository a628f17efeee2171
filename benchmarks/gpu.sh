#!/usr/bin/env bash
# What to run when a GPU is lent (a few minutes): the CUDA tests (they skip without CUDA),
# then the optimizer-step benchmark on the device, which also reports the achieved bandwidth
# against the device's measured copy bandwidth.
#   bash benchmarks/gpu.sh [python]      # default: .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
export PYTHONPATH=src
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_fast_step.py
"$PY" benchmarks/step_speed.py --device cuda --rules qhm --json "${OUT:-benchmarks/results}/step_speed_cuda.json"
