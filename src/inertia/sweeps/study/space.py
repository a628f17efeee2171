"""How the swept hyperparameters live in Optuna, and the points a grid or a random search trains.

- lr is a log-scaled float, momentum (in [0, 1)) is stored as ``1-momentum`` on a log scale
  (:data:`MOMENTUM_PARAM`), any other hyperparameter as a linear float, over the range of its values.
- A random search's points are drawn once, from the seed, before any is trained
  (:func:`random_points`): point ``k`` is the same whichever process, run or worker trains it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping, Sequence

import numpy as np

from ..specs import grid_points

MOMENTUM_PARAM = "1-momentum"
"""Momentum's name in Optuna: ``1 - momentum`` on a log scale (sampled uniformly in log(1 - momentum))."""


@dataclass(frozen=True)
class Dimension:
    """One swept hyperparameter in Optuna: its name there, scale and bounds, over the range of its values."""

    name: str
    values: tuple[float, ...]

    @cached_property
    def flipped(self) -> bool:
        return self.name == "momentum" and min(self.values) >= 0 and max(self.values) < 1

    @property
    def param(self) -> str:
        return MOMENTUM_PARAM if self.flipped else self.name

    @cached_property
    def log(self) -> bool:
        return self.flipped or (self.name == "lr" and min(self.values) > 0)

    @cached_property
    def bounds(self) -> tuple[float, float]:
        low, high = sorted((self.stored(min(self.values)), self.stored(max(self.values))))
        return low, high

    @property
    def single(self) -> bool:
        """One value only: nothing to search, never an Optuna parameter."""
        return self.bounds[0] == self.bounds[1]

    def stored(self, value: float) -> float:
        return 1.0 - float(value) if self.flipped else float(value)

    @cached_property
    def _grid(self) -> dict[float, float]:
        """Stored value -> grid value (a grid point's parameters are stored exactly)."""
        return {self.stored(v): v for v in self.values}

    def value(self, stored: float, grid: bool) -> float:
        """The hyperparameter's value from its stored one (``grid``: exactly the grid value)."""
        if grid:
            exact = self._grid.get(stored)
            return exact if exact is not None else float(min(self.values, key=lambda v: abs(self.stored(v) - stored)))
        return self.stored(stored) if self.flipped else float(stored)

    def draw(self, rng: np.random.Generator, count: int) -> list[float]:
        """``count`` stored values, uniform on the stored scale (log-uniform where :attr:`log`)."""
        low, high = self.bounds
        if self.log:
            drawn = np.exp(rng.uniform(math.log(low), math.log(high), count))
        else:
            drawn = rng.uniform(low, high, count)
        return np.clip(drawn, low, high).tolist()


def dimensions(space: Mapping[str, Sequence[float]]) -> list[Dimension]:
    return [Dimension(name, tuple(float(v) for v in values)) for name, values in space.items()]


def stored_point(space: Mapping[str, Sequence[float]], point: Mapping[str, float]) -> dict[str, float]:
    """A grid point as the parameters Optuna stores (momentum as ``1-momentum``)."""
    return {d.param: d.stored(point[d.name]) for d in dimensions(space)}


def grid_params(space: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every grid point as the parameters Optuna stores (in :func:`.specs.grid_points`' order)."""
    dims = dimensions(space)
    return [{d.param: d.stored(p[d.name]) for d in dims} for p in grid_points(space)]


def random_points(space: Mapping[str, Sequence[float]], trials: int, seed: int) -> list[dict[str, float]]:
    """The ``trials`` points of a random search with ``seed``, as the parameters Optuna stores: each
    searched hyperparameter uniform on its scale (lr log-uniform, ``1-momentum`` log-uniform)."""
    rng = np.random.default_rng(seed)
    columns = {d.param: d.draw(rng, trials) for d in dimensions(space) if not d.single}
    return [{name: column[k] for name, column in columns.items()} for k in range(trials)]
