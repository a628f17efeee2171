"""inertia: momentum for PyTorch.

Every update rule is written once (:mod:`inertia.rules`) and runs in three
engines: a ``torch.optim.Optimizer`` (:mod:`inertia.optim`), vectorized sweeps
that train N configurations at once (:mod:`inertia.sweeps`), and races of N
configurations on test surfaces (:mod:`inertia.races`).

Heavy modules (Optuna, matplotlib) load only when their names are first used.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import rules, schedules
from .optim import Momentum, NonFiniteGradientError, RuleOptimizer, SGD, make_optimizer

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY = {
    "Adam": "inertia.optim",
    "AdamW": "inertia.optim",
    "NAdam": "inertia.optim",
    "RMSprop": "inertia.optim",
    "QHM": "inertia.optim",
    "AggMo": "inertia.optim",
    "Lookahead": "inertia.optim",
    "ScheduleFreeSGD": "inertia.optim",
    "fit": "inertia.fits",
    "sweep": "inertia.sweeps",
    "race": "inertia.races",
    "surfaces": "inertia.surfaces",
    "data": "inertia.data",
    "models": "inertia.models",
    "stack": "inertia.stacked",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inertia' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module == f"inertia.{name}" else getattr(loaded, name)
    globals()[name] = value
    return value


__all__ = [
    "rules",
    "schedules",
    "RuleOptimizer",
    "SGD",
    "Momentum",
    "NonFiniteGradientError",
    "make_optimizer",
    *_LAZY,
]
