"""The race engine: N optimizer configurations at once on a test surface.

Configurations are grouped by rule (and structural options such as ``nesterov``);
each group moves as one positions tensor ``[n, dim]`` with its hyperparameters as
``[n]`` tensors, through the very same ``rule.update`` that the optimizer and
the sweep run (their hyperparameters by :func:`inertia.core.member_hyper`).
No update maths lives here.

    >>> import inertia
    >>> r = inertia.race("marble", [dict(rule="sgd", lr=0.02), dict(rule="momentum", lr=0.02, momentum=0.9)], steps=300)
    >>> r.positions.shape, r.losses.shape   # [N, steps + 1, dim], [N, steps + 1]

A configuration that diverges (NaN/inf, or runs far away) is stopped: its
``diverged_step`` is recorded and its later positions and losses are NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from . import rules
from .core import MemberHyper, Stack, check_names, member_hyper
from .surfaces import Surface, as_surface

#: a position farther than this many plot-widths from the start counts as diverged
ESCAPE_FACTOR = 1e6


@dataclass
class RaceResult:
    """What a race returns (data only; :mod:`inertia.plots.race` draws it)."""

    surface: Surface
    configs: list[dict[str, Any]]
    labels: list[str]
    positions: Tensor          # [N, steps + 1, dim]; NaN after divergence
    losses: Tensor             # [N, steps + 1]; NaN after divergence
    diverged_step: Tensor      # [N] int64, -1 when the configuration never diverged
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged(self) -> Tensor:
        return self.diverged_step >= 0

    @property
    def final(self) -> Tensor:
        """Last finite position of each configuration, ``[N, dim]``."""
        out = []
        for i in range(len(self.configs)):
            finite = torch.isfinite(self.positions[i]).all(-1)
            idx = int(finite.nonzero().max()) if bool(finite.any()) else 0
            out.append(self.positions[i, idx])
        return torch.stack(out)

    def distance_to(self, point: Any) -> Tensor:
        """Distance of every position to ``point``, ``[N, steps + 1]``."""
        p = torch.as_tensor(point, dtype=self.positions.dtype)
        return torch.linalg.vector_norm(self.positions - p, dim=-1)

    def steps_to(self, threshold: float, gap: bool = True) -> list[int | None]:
        """First step at which loss (minus the surface's minimum if ``gap``) is ≤ ``threshold``."""
        loss = self.losses - (self.surface.minimum_value if gap else 0.0)
        out: list[int | None] = []
        for row in loss:
            hit = (row <= threshold).nonzero()
            out.append(int(hit[0]) if hit.numel() else None)
        return out

    def summary(self) -> list[dict[str, Any]]:
        """One dict per configuration: label, final loss, final point, nearest known minimum."""
        rows = []
        final = self.final
        for i, label in enumerate(self.labels):
            row: dict[str, Any] = dict(label=label, final_loss=float(self.losses[i][torch.isfinite(self.losses[i])][-1])
                                       if bool(torch.isfinite(self.losses[i]).any()) else math.nan,
                                       final=[float(v) for v in final[i]],
                                       diverged_step=int(self.diverged_step[i]))
            if self.surface.minima:
                k, dist = self.surface.nearest_minimum(final[i])
                row.update(nearest_minimum=k, distance_to_minimum=dist)
            rows.append(row)
        return rows


def label_for(config: Mapping[str, Any]) -> str:
    """``{'rule': 'momentum', 'lr': 0.02, 'momentum': 0.9}`` -> ``'momentum lr=0.02 momentum=0.9'``."""
    parts = [str(config.get("rule", "sgd"))]
    for key, value in config.items():
        if key in ("rule", "label"):
            continue
        parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={getattr(value, '__name__', value)}")
    return " ".join(parts)


def _split(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(config, Mapping):
        raise TypeError(f"a race configuration is a dict like dict(rule='momentum', lr=0.02), got {config!r}")
    given = {k: v for k, v in config.items() if k not in ("rule", "label")}
    return str(config.get("rule", "sgd")), given


def _groups(configs: list[dict[str, Any]], schedules: Mapping[str, Any]) -> dict[tuple, tuple[list, list, list]]:
    """Configurations grouped by rule and structural options, their names checked (values: :func:`_group_hyper`)."""
    groups: dict[tuple, tuple[list[rules.Preset], list[int], list[dict]]] = {}
    numeric = {n for c in configs for n in rules.get(_split(c)[0]).rule.numeric}
    unknown = [k for k in schedules if k not in numeric]
    if unknown:
        raise ValueError(f"--schedule {unknown[0]}=...: no raced optimizer has a numeric hyperparameter "
                         f"{unknown[0]!r}; theirs: {', '.join(sorted(numeric))}")
    for i, config in enumerate(configs):
        name, given = _split(config)
        preset = rules.get(name)
        if preset.tuner is not None:
            raise ValueError(f"configuration {i} ({label_for(config)}): {preset.name} is a tuner; races run rules "
                             f"at the values given (inertia.YellowFin runs in a loop of your own)")
        try:
            check_names(preset, given, error=TypeError)
        except TypeError as error:
            raise TypeError(f"configuration {i} ({label_for(config)}): {error}") from None
        full = {**preset.defaults, **given}
        structural = tuple((k, repr(full[k])) for k in sorted(full) if k not in preset.rule.numeric)
        entry = groups.setdefault((preset.rule.name, structural), ([], [], []))
        entry[0].append(preset)
        entry[1].append(i)
        entry[2].append(given)
    return groups


def _group_hyper(presets: list[rules.Preset], indices: list[int], given: list[dict[str, Any]], dtype: torch.dtype,
                 schedules: Mapping[str, Any], steps: int) -> MemberHyper:
    """The hyperparameters of configurations ``indices``, of one rule with identical structural options: a
    number where they agree, else one value each (:func:`inertia.core.member_hyper`)."""
    try:
        return member_hyper(presets, given, schedules=schedules, steps=steps, dtype=dtype)
    except ValueError as error:
        which = "configuration" if len(indices) == 1 else "configurations (in this order)"
        raise ValueError(f"{which} {', '.join(map(str, indices))} ({presets[0].rule.name}): {error}") from None


@torch.no_grad()
def _run(stack: Stack, surf: Surface, steps: int, limit: float, idx: Tensor,
         positions: Tensor, losses: Tensor, diverged_step: Tensor) -> None:
    """Move one group's points ``steps`` times, recording positions and losses at the rule's evaluation
    point; a point that diverges (NaN/inf, or beyond ``limit``) leaves the stack."""
    for t in range(steps):
        if len(stack) == 0:
            break
        grad = surf.gradient(stack.params[0])
        stack.begin_step()
        stack.update(0, grad)
        stack.end_step()
        x = stack.params[0]
        point = stack.eval_params()[0]
        value = surf.value(point)
        bad = ~torch.isfinite(value) | ~torch.isfinite(x).all(-1) | (x.abs().amax(-1) > limit)
        rows = idx[stack.rows]
        positions[rows, t + 1] = point
        losses[rows, t + 1] = value
        if bool(bad.any()):
            gone = rows[bad]
            diverged_step[gone] = t + 1
            positions[gone, t + 1] = math.nan
            losses[gone, t + 1] = math.nan
            stack.keep((~bad).nonzero().squeeze(1))


def race(surface: Any, configs: Sequence[Mapping[str, Any]], steps: int = 200, start: Any = None,
         dtype: torch.dtype = torch.float64, labels: Sequence[str] | None = None,
         schedules: Mapping[str, Any] | None = None) -> RaceResult:
    """Run every configuration for ``steps`` steps from ``start`` (default: the surface's own start).

    Args:
        surface: a :class:`~inertia.surfaces.Surface`, a registered surface name, or a
            ``Surface`` made with :func:`inertia.surfaces.from_function`.
        configs: dicts ``dict(rule=NAME, **hyperparameters)``; ``rule`` is any name known
            to :func:`inertia.rules.get` (default ``"sgd"``). A numeric hyperparameter may
            be a callable ``step -> value`` (a schedule); it is called with the step
            number (0 for the first update).
        schedules: hyperparameter name -> schedule spec (``"cosine"``, ``"sutskever_ramp"``, ...),
            applied to every configuration that has that hyperparameter, starting from its own
            value over ``steps`` steps (:func:`inertia.core.member_hyper`).
        start: one point ``[dim]`` for all, or ``[N, dim]``, one per configuration.
        dtype: float64 (default) or float32.
    """
    if callable(surface) and not isinstance(surface, (Surface, str)):
        if start is None:
            raise ValueError("racing on your own function needs start=(x, y, ...)")
        first = torch.as_tensor(start, dtype=torch.float64)
        surface = as_surface(surface, start=first if first.dim() == 1 else first[0])
    surf = as_surface(surface)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    configs = [dict(c) for c in configs]
    if not configs:
        raise ValueError("race needs at least one configuration")
    n = len(configs)
    dim = surf.dim
    if start is None:
        start_t = surf.start.to(dtype).expand(n, dim).clone()
    else:
        start_t = torch.as_tensor(start, dtype=dtype)
        if start_t.dim() == 1 and start_t.shape[0] == dim:
            start_t = start_t.expand(n, dim).clone()
        if tuple(start_t.shape) != (n, dim):
            raise ValueError(f"start must have shape [{dim}] or [{n}, {dim}], got {tuple(start_t.shape)}")

    schedules = dict(schedules or {})
    groups = _groups(configs, schedules)
    positions = torch.full((n, steps + 1, dim), math.nan, dtype=dtype)
    losses = torch.full((n, steps + 1), math.nan, dtype=dtype)
    diverged_step = torch.full((n,), -1, dtype=torch.int64)
    positions[:, 0] = start_t
    with torch.no_grad():
        losses[:, 0] = surf.value(start_t)
    scale = max(hi - lo for lo, hi in surf.bounds)
    limit = ESCAPE_FACTOR * (scale + float(start_t.abs().max()))
    for presets, indices, given in groups.values():
        idx = torch.tensor(indices)
        own = {k: v for k, v in schedules.items() if k in presets[0].rule.numeric}
        stack = Stack(presets[0].rule, [start_t[idx].clone()], _group_hyper(presets, indices, given, dtype, own, steps))
        _run(stack, surf, steps, limit, idx, positions, losses, diverged_step)
    if labels is None:
        labels = [c.get("label") or label_for(c) for c in configs]
    return RaceResult(surf, configs, list(labels), positions, losses, diverged_step, steps)


def race_grid(surface: Any, rule: str = "momentum", lrs: Sequence[float] = (), momenta: Sequence[float] = (),
              steps: int = 200, start: Any = None, dtype: torch.dtype = torch.float64,
              **fixed: Any) -> RaceResult:
    """Race every (lr, momentum) pair of a grid with one rule (for the interactive report).

    Configuration ``i * len(momenta) + j`` has ``lrs[i]`` and ``momenta[j]``.
    """
    configs = [dict(rule=rule, lr=float(lr), momentum=float(m), **fixed) for lr in lrs for m in momenta]
    result = race(surface, configs, steps=steps, start=start, dtype=dtype)
    result.extra.update(lrs=[float(v) for v in lrs], momenta=[float(v) for v in momenta], rule=rule)
    return result


__all__ = ["race", "race_grid", "RaceResult", "label_for"]
