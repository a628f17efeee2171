"""Pruning decisions for configurations that train stacked: made for a whole stack at one step.

Optuna's pruners decide trial by trial from the trials reported so far, so in a stack (every
configuration at the same step) the first to report is judged against nothing. Here every member
of a stack reports first, then one decision is made over all values at that step: the stack's
own and those other trials of the study have at the same step. Pruned members leave the stack;
the others go on from their state, unchanged.

- ``successive_halving``: rungs at ``min_steps * reduction**k``; at a rung, all but the best
  ``ceil(n / reduction)`` of the ``n`` values there are pruned.
- ``hyperband``: brackets of successive halving with ``min_steps * reduction**b`` as the first
  rung of bracket ``b``; a configuration's bracket is its trial number modulo the brackets.
- ``median`` / ``percentile``: pruned when worse than the median (the 25th percentile) of the
  values at that step, once at least ``startup`` values are there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

RUNG_PRUNERS = ("successive_halving", "hyperband")
PERCENTILES = {"median": 50.0, "percentile": 25.0}
STACKED = (*RUNG_PRUNERS, *PERCENTILES)


@dataclass(frozen=True)
class StackedPruner:
    """One of :data:`STACKED`, for a sweep of ``steps`` steps evaluated every ``min_steps``."""

    kind: str
    min_steps: int
    steps: int
    reduction: int = 3
    startup: int = 5

    @property
    def brackets(self) -> int:
        if self.kind != "hyperband":
            return 1
        return 1 + int(math.floor(math.log(max(1, self.steps // self.min_steps), self.reduction) + 1e-9))

    def bracket(self, number: int) -> int:
        """The bracket of trial ``number`` (0 unless hyperband)."""
        return number % self.brackets

    def is_rung(self, step: int, bracket: int = 0) -> bool:
        """Is ``step`` a rung of ``bracket`` (percentile pruners: every evaluation is)?"""
        if self.kind not in RUNG_PRUNERS:
            return True
        rung = self.min_steps * self.reduction ** bracket
        while rung < step:
            rung *= self.reduction
        return rung == step and step < self.steps

    def prune(self, mine: Mapping[int, float], others: Sequence[float], maximize: bool) -> list[int]:
        """Which keys of ``mine`` (this stack's values at a rung) to prune, given the ``others``
        (other trials' values at the same step, same bracket)."""
        if not mine:
            return []
        sign = -1.0 if maximize else 1.0
        values = sorted(sign * v for v in [*mine.values(), *others])
        if self.kind in RUNG_PRUNERS:
            keep = math.ceil(len(values) / self.reduction)
            cut = values[keep - 1]
            survivors = sorted(mine, key=lambda k: (sign * mine[k], k))
            kept = [k for k in survivors if sign * mine[k] <= cut][:keep]
            return sorted(k for k in mine if k not in kept)
        if len(values) < self.startup:
            return []
        cut = _percentile(values, PERCENTILES[self.kind])
        return sorted(k for k, v in mine.items() if sign * v > cut)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, as numpy's default) of sorted values."""
    position = (len(sorted_values) - 1) * q / 100.0
    low = int(math.floor(position))
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
