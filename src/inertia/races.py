"""The race engine: N optimizer configurations at once on a test surface.

Configurations are grouped by rule (and structural options such as ``nesterov``);
each group moves as one positions tensor ``[n, dim]`` with its hyperparameters as
``[n]`` tensors, through the very same ``rule.update`` that the optimizer and
the sweep run (the configuration axis of :func:`inertia.rules.broadcast_hyper`).
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
from .rules import broadcast_hyper
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


def _value_at(value: Any, step: int) -> Any:
    """A hyperparameter's value at ``step`` (a callable or a schedule object is called with the step)."""
    if callable(value) and not isinstance(value, (Tensor, type)):
        return value(step)
    return value


class _Group:
    """Configurations of one rule with identical structural options."""

    def __init__(self, presets: list[rules.Preset], indices: list[int], given: list[dict[str, Any]]):
        self.rule = presets[0].rule
        self.indices = indices
        self.given = given
        numeric = set(self.rule.numeric)
        # each configuration keeps its own preset's defaults ("sgd" and "momentum" share one rule)
        merged = [{**preset.overrides, **g} for preset, g in zip(presets, given)]
        # structural options and constant numbers shared by all; per-config numbers become [n] tensors
        self.constant: dict[str, Any] = {}
        self.varying: dict[str, list[Any]] = {}
        for name in self.rule.defaults:
            values = [m.get(name, self.rule.defaults[name]) for m in merged]
            if name in numeric:
                self.varying[name] = values
            else:
                self.constant[name] = values[0]
        self.dynamic = {name for name, vals in self.varying.items()
                        if any(_value_at(v, 0) is not v or (isinstance(v, (tuple, list))
                                                          and any(_value_at(e, 0) is not e for e in v)) for v in vals)}

    def hyper(self, step: int, alive: Tensor, dtype: torch.dtype) -> dict[str, Any]:
        keep = alive.tolist()
        out = dict(self.constant)
        for name, values in self.varying.items():
            values = [_value_at(v, step) for v, k in zip(values, keep) if k]
            if values and isinstance(values[0], (tuple, list)):  # e.g. betas: a tuple of [n] tensors
                out[name] = tuple(_column([_value_at(v[e], step) for v in values], dtype) for e in range(len(values[0])))
            else:
                out[name] = _column(values, dtype)
        return out


def _column(values: list[Any], dtype: torch.dtype) -> Any:
    """One hyperparameter across configurations: a plain number if all equal, else an ``[n]`` tensor."""
    vals = [float(v) for v in values]
    if vals and all(v == vals[0] for v in vals):
        return vals[0]  # the same for every configuration: a plain number keeps the rules' fast paths
    return torch.tensor(vals, dtype=dtype)


def _broadcast(value: Any, x: Tensor) -> Any:
    if isinstance(value, tuple):
        return tuple(broadcast_hyper(v, x) for v in value)
    return broadcast_hyper(value, x)


def _split(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(config, Mapping):
        raise TypeError(f"a race configuration is a dict like dict(rule='momentum', lr=0.02), got {config!r}")
    given = {k: v for k, v in config.items() if k not in ("rule", "label")}
    return str(config.get("rule", "sgd")), given


def race(surface: Any, configs: Sequence[Mapping[str, Any]], steps: int = 200, start: Any = None,
         dtype: torch.dtype = torch.float64, labels: Sequence[str] | None = None) -> RaceResult:
    """Run every configuration for ``steps`` steps from ``start`` (default: the surface's own start).

    Args:
        surface: a :class:`~inertia.surfaces.Surface`, a registered surface name, or a
            ``Surface`` made with :func:`inertia.surfaces.from_function`.
        configs: dicts ``dict(rule=NAME, **hyperparameters)``; ``rule`` is any name known
            to :func:`inertia.rules.get` (default ``"sgd"``). A numeric hyperparameter may
            be a callable ``step -> value`` (a schedule); it is called with the step
            number (0 for the first update).
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

    # group by rule and structural options; validate every configuration with its rule
    groups: dict[tuple, tuple[list[rules.Preset], list[int], list[dict]]] = {}
    for i, config in enumerate(configs):
        name, given = _split(config)
        preset = rules.get(name)
        at0 = {k: (type(v)(_value_at(e, 0) for e in v) if isinstance(v, (tuple, list)) else _value_at(v, 0))
               for k, v in given.items()}
        try:
            full = preset.hyper(**at0)
        except (TypeError, ValueError) as error:
            raise type(error)(f"configuration {i} ({label_for(config)}): {error}") from None
        structural = tuple((k, repr(full[k])) for k in sorted(full) if k not in preset.rule.numeric)
        key = (preset.rule.name, structural)
        groups.setdefault(key, ([], [], []))
        groups[key][0].append(preset)
        groups[key][1].append(i)
        groups[key][2].append(given)

    positions = torch.full((n, steps + 1, dim), math.nan, dtype=dtype)
    losses = torch.full((n, steps + 1), math.nan, dtype=dtype)
    diverged_step = torch.full((n,), -1, dtype=torch.int64)
    positions[:, 0] = start_t
    with torch.no_grad():
        losses[:, 0] = surf.value(start_t)
    scale = max(hi - lo for lo, hi in surf.bounds)
    limit = ESCAPE_FACTOR * (scale + float(start_t.abs().max()))

    for presets, indices, given in groups.values():
        group = _Group(presets, indices, given)
        idx = torch.tensor(indices)
        x = start_t[idx].clone()
        alive = torch.ones(len(indices), dtype=torch.bool)
        state: dict[str, Tensor] = {"step": torch.zeros((), dtype=torch.float32)}
        hyper_static = None if group.dynamic else group.hyper(0, alive, dtype)
        rows = idx.clone()  # which configurations the rows of x belong to
        for t in range(steps):
            if x.shape[0] == 0:
                break
            hyper = hyper_static if hyper_static is not None else group.hyper(t, alive, dtype)
            hyper = {k: _broadcast(v, x) for k, v in hyper.items()}
            state["step"] += 1
            grad = surf.gradient(x)
            with torch.no_grad():
                group.rule.update(x, grad, state, hyper)
                value = surf.value(x)
            bad = ~torch.isfinite(value) | ~torch.isfinite(x).all(-1) | (x.abs().amax(-1) > limit)
            positions[rows, t + 1] = x
            losses[rows, t + 1] = value
            if bool(bad.any()):
                gone = rows[bad]
                diverged_step[gone] = t + 1
                positions[gone, t + 1] = math.nan
                losses[gone, t + 1] = math.nan
                keep = ~bad
                # compact: drop the diverged rows from the positions, the state and the hyperparameters
                old = x.shape[0]
                x = x[keep].clone()
                for key_, value_ in list(state.items()):
                    if value_.dim() > 0 and value_.shape[0] == old:
                        state[key_] = value_[keep].clone()
                rows = rows[keep]
                alive_idx = alive.nonzero().squeeze(1)
                alive[alive_idx[bad]] = False
                if hyper_static is not None:
                    hyper_static = group.hyper(0, alive, dtype)
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


def slider_grid(result: RaceResult, rule: str | None = None) -> RaceResult:
    """The (lr, momentum) grid behind the report's sliders, raced around ``result``'s own settings.

    ``rule`` defaults to the race's first heavy-ball or Nesterov configuration
    (else ``"momentum"``). Learning rates: the base lr × 2^(k/2), k = −6..6, plus every lr
    the race used; the base is the quadratic's optimal lr, or the race's own lr for
    ``rule``. Momenta: 0, 0.1, …, 0.9, 0.95, 0.99 plus the race's own (and the optimum).
    """
    configs = result.configs
    rule = rule or next((c["rule"] for c in configs if c.get("rule") in ("momentum", "nesterov")), "momentum")
    s = result.surface
    lrs_given = [float(c["lr"]) for c in configs if isinstance(c.get("lr"), (int, float))]
    mus_given = [float(c["momentum"]) for c in configs
                 if isinstance(c.get("momentum"), (int, float)) and 0 <= c["momentum"] < 1]
    if s.is_quadratic:
        base, mu0 = s.optimal("momentum")
    else:
        same = [float(c["lr"]) for c in configs if c.get("rule") == rule and isinstance(c.get("lr"), (int, float))]
        base = same[0] if same else (sorted(lrs_given)[len(lrs_given) // 2] if lrs_given else 0.01)
        mu0 = 0.9
    lrs = sorted(set([base] + [float(f"{base * 2 ** (k / 2):.6g}") for k in range(-6, 7) if k] + lrs_given))
    momenta = sorted(set([round(0.1 * k, 2) for k in range(10)] + [0.95, 0.99, mu0] + mus_given))
    if rule == "nesterov":
        momenta = [m for m in momenta if m > 0]
    return race_grid(s, rule, lrs, momenta, steps=result.steps, start=result.positions[0, 0])


__all__ = ["race", "race_grid", "slider_grid", "RaceResult", "label_for"]
