"""inertia: momentum for PyTorch.

Every update rule is written once (:mod:`inertia.rules`) and runs in three
engines: a ``torch.optim.Optimizer`` (:mod:`inertia.optim`), vectorized sweeps
that train N configurations at once (:mod:`inertia.sweeps`), and races of N
configurations on test surfaces (:mod:`inertia.races`).

Every module, torch included, loads only when one of its names is first used, so that
``import inertia`` (and the command line's start, where Ctrl-C must print one line) is instant.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# MKL picks its kernels by the operands' strides and alignment, so that a batched product under vmap
# (its input strided by the stack's size) gave a member's float32 last bits that depend on how many
# share its stack; its strict reproducible mode does not. Read by MKL at its first call (later: no effect).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use); submodules load by their own name
_LAZY = {
    "RuleOptimizer": "inertia.optim",
    "SGD": "inertia.optim",
    "Momentum": "inertia.optim",
    "NonFiniteGradientError": "inertia.optim",
    "make_optimizer": "inertia.optim",
    "optimizer_class": "inertia.optim",
    "Adam": "inertia.optim",
    "AdamW": "inertia.optim",
    "NAdam": "inertia.optim",
    "RMSprop": "inertia.optim",
    "QHM": "inertia.optim",
    "AggMo": "inertia.optim",
    "Lookahead": "inertia.optim",
    "ScheduleFreeSGD": "inertia.optim",
    "Muon": "inertia.optim",
    "Lion": "inertia.optim",
    "AdEMAMix": "inertia.optim",
    "fit": "inertia.fits",
    "train_command": "inertia.commands.reproduce",
    "sweep": "inertia.sweeps",
    "find": "inertia.finder",
    "RangeTest": "inertia.finder",
    "YellowFin": "inertia.yellowfin",
    "race": "inertia.races",
    "surfaces": "inertia.surfaces",
    "data": "inertia.data",
    "models": "inertia.models",
    "stack": "inertia.stacked",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name, f"inertia.{name}")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise AttributeError(f"module 'inertia' has no attribute {name!r}") from None
    value = loaded if module == f"inertia.{name}" else getattr(loaded, name)
    globals()[name] = value
    return value


__all__ = ["rules", "schedules", *_LAZY]
