"""Basin maps: where a marble ends for every (learning rate, momentum) of a grid.

The whole grid is one race (:func:`inertia.races.race_grid`: every pair a member of one
``Stack``). For each pair the map records

- ``outcome``: the index (into ``surface.minima``, 0 = the global minimum) of the minimum
  the marble settles in, :data:`DIVERGED` when the race engine stopped it (NaN/inf or ran
  away), or :data:`UNSETTLED` when it ends farther than ``tolerance`` from every minimum;
- ``settle_step``: the first step from which it stays within ``tolerance`` of that minimum
  (the diverged step for diverged pairs, ``steps`` for unsettled ones);
- ``rate`` (quadratics): the measured linear rate of the distance to the minimum,
  (d_b / d_a)^(1/(b − a)) over the second half of its finite record.

On a quadratic ½wᵀAw heavy ball is stable iff γλ_max < 2 + 2μ (Polyak 1964; Goh,
Distill 2017): :meth:`BasinMap.edge_lr` is that edge, γ = (2 + 2μ)/λ_max.

    >>> import inertia
    >>> m = inertia.basins.basin_map("marble", lrs=[0.01, 0.1], momenta=[0.0, 0.9], steps=300)
    >>> m.outcome            # [len(lrs), len(momenta)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from .races import race_grid
from .surfaces import Surface, as_surface

#: outcome of a pair that the race engine stopped (non-finite or escaped)
DIVERGED = -1
#: outcome of a pair that ends farther than the tolerance from every known minimum
UNSETTLED = -2
#: distances below this count as reached (float64 underflow would make a rate meaningless)
_RATE_FLOOR = 1e-200


@dataclass
class BasinMap:
    """What :func:`basin_map` returns (data only; :mod:`inertia.plots.basins` draws it)."""

    surface: Surface
    rule: str
    lrs: list[float]
    momenta: list[float]
    steps: int
    tolerance: float
    outcome: Tensor        # [len(lrs), len(momenta)] int64: minimum index, DIVERGED or UNSETTLED
    settle_step: Tensor    # [len(lrs), len(momenta)] int64
    rate: Tensor | None    # [len(lrs), len(momenta)] float64 on quadratics, else None

    def edge_lr(self, momentum: Any) -> Tensor:
        """Heavy ball's stability edge on a quadratic: γ = (2 + 2μ)/λ_max for each μ given."""
        if not self.surface.is_quadratic:
            raise ValueError(f"the stability edge is known on quadratics; {self.surface.name} is not one")
        lam_max = float(self.surface.eigenvalues[-1])
        return (2 + 2 * torch.as_tensor(momentum, dtype=torch.float64)) / lam_max

    def cell(self, lr: float, momentum: float) -> dict[str, Any]:
        """The map's entries at a grid point (``lr`` and ``momentum`` must be values of the grid)."""
        i, j = self.lrs.index(lr), self.momenta.index(momentum)
        out = dict(outcome=int(self.outcome[i, j]), settle_step=int(self.settle_step[i, j]))
        if self.rate is not None:
            out["rate"] = float(self.rate[i, j])
        return out


def measured_rate(distance: Tensor) -> Tensor:
    """Linear rate of each row of ``distance`` ``[N, T + 1]``, from its envelope: with b the last step
    whose distance is finite and above 1e-200, a = b // 2 and w = a // 2, the rate is
    (max d[b−w..b] / max d[a−w..a])^(1/(b − a)); the window maxima follow the peaks of an oscillating
    (underdamped) path. NaN where b − a < 1."""
    ok = torch.isfinite(distance) & (distance > _RATE_FLOOR)
    steps = torch.arange(distance.shape[1])
    b = torch.where(ok, steps, -1).amax(dim=1)
    a = torch.div(b, 2, rounding_mode="floor")
    w = torch.div(a, 2, rounding_mode="floor")
    clean = torch.where(ok, distance, torch.zeros_like(distance))

    def peak(end: Tensor) -> Tensor:
        inside = (steps >= (end - w)[:, None]) & (steps <= end[:, None])
        return torch.where(inside, clean, torch.zeros_like(clean)).amax(dim=1)

    rate = (peak(b) / peak(a)) ** (1 / (b - a).clamp(min=1).to(distance.dtype))
    return torch.where(b - a >= 1, rate, torch.full_like(rate, float("nan")))


def _settling(distance: Tensor, tolerance: float) -> Tensor:
    """First step from which each row of ``distance`` ``[N, T + 1]`` stays within ``tolerance``."""
    outside = ~(distance <= tolerance)
    steps = torch.arange(distance.shape[1])
    return torch.where(outside, steps + 1, 0).amax(dim=1)


def basin_map(surface: Any, lrs: Sequence[float], momenta: Sequence[float], steps: int = 300,
              rule: str = "momentum", start: Any = None, tolerance: float | None = None,
              dtype: torch.dtype = torch.float64, **fixed: Any) -> BasinMap:
    """Race every (lr, momentum) pair of the grid with ``rule`` and classify where each one ends.

    ``tolerance``: how close to a minimum counts as settled in it (default 1 % of the surface's
    widest plotting range). ``fixed``: further hyperparameters of ``rule`` for every pair.
    """
    surf = as_surface(surface)
    if not surf.minima:
        raise ValueError(f"a basin map needs a surface with known minima; {surf.name} has none")
    lrs, momenta = [float(v) for v in lrs], [float(v) for v in momenta]
    if not lrs or not momenta:
        raise ValueError("a basin map needs at least one lr and one momentum")
    if tolerance is None:
        tolerance = 0.01 * max(hi - lo for lo, hi in surf.bounds)
    result = race_grid(surf, rule, lrs, momenta, steps=steps, start=start, dtype=dtype, **fixed)
    minima = torch.stack(surf.minima).to(dtype)                                   # [K, dim]
    final = result.final                                                          # [N, dim]
    nearest = torch.cdist(final, minima).argmin(dim=1)                            # [N]
    distance = torch.linalg.vector_norm(result.positions - minima[nearest][:, None], dim=-1)  # [N, T + 1]
    settle = _settling(distance, tolerance)
    outcome = torch.where(distance[:, -1] <= tolerance, nearest, UNSETTLED)
    diverged = result.diverged
    outcome = torch.where(diverged, DIVERGED, outcome)
    settle = torch.where(diverged, result.diverged_step, torch.where(outcome == UNSETTLED, steps, settle))
    shape = (len(lrs), len(momenta))
    rate = measured_rate(distance).reshape(shape) if surf.is_quadratic else None
    return BasinMap(surf, rule, lrs, momenta, steps, float(tolerance), outcome.reshape(shape),
                    settle.reshape(shape), rate)


__all__ = ["BasinMap", "basin_map", "measured_rate", "DIVERGED", "UNSETTLED"]
