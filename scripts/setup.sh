#!/usr/bin/env bash
# All set-up on a fresh machine: a virtual environment in .venv, the CPU build of
# PyTorch first (so nothing pulls the multi-GB CUDA build), then inertia itself.
# Safe to run again: it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
# OpenBLAS's AVX-512 products (the openblas extra) help only on AVX-512 CPUs that are not Intel's,
# where torch's MKL runs AVX2 code (src/inertia/sweeps/gemm.py decides at run time)
extras=dev
if grep -qw avx512f /proc/cpuinfo 2>/dev/null && grep -qw avx512bw /proc/cpuinfo \
   && ! grep -qw GenuineIntel /proc/cpuinfo; then
  extras=dev,openblas
fi
stamp=.venv/.inertia-installed
want=$( (cat pyproject.toml; echo "$extras") | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"
  echo "$want" > "$stamp"
fi
