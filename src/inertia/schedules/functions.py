r"""Schedule functions: ``schedule(t) -> value`` for t = 0, 1, 2, ... (steps already taken).

Base values may be Python numbers or tensors of shape ``[N]`` (one value per
configuration); the step-dependent factor is scalar, so
``cosine(torch.tensor([0.1, 0.2]), 100)(t)`` is a tensor of shape ``[2]``.
``schedule(0)`` is the value for the first update, as torch's ``lr_scheduler``
``last_epoch``; past the end of a finite schedule the final value is held.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

Value = Any  # a Python float or a tensor (shape [] or [N])


# ---------------------------------------------------------------- helpers

def _show(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor({value.detach().cpu().tolist()})"
    return repr(value)


def _length(name: str, value: Any, allow_inf: bool = False) -> Any:
    """A positive length (steps, step_size, period): else ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive number of steps, got {name}={value!r}")
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a positive number of steps, got {name}={value!r}")
    if not math.isinf(value) and value != int(value):
        raise ValueError(f"{name} must be a whole number of steps, got {name}={value!r}")
    return value if math.isinf(value) else int(value)


def _number(name: str, value: Any) -> Any:
    """A finite number or a tensor of finite numbers."""
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            value = value.to(torch.get_default_dtype())
        if value.dim() > 1:
            raise ValueError(f"{name} must be a number or a 1-D tensor, got shape {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got {name}={_show(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number or a tensor, got {name}={value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {name}={value!r}")
    return float(value)


def _step(t: Any) -> int:
    t = int(t)
    if t < 0:
        raise ValueError(f"a schedule's step must be >= 0, got {t}")
    return t


def _minimum(a: Value, b: Value) -> Value:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        a_t = a if isinstance(a, Tensor) else torch.tensor(a, dtype=b.dtype, device=b.device)
        b_t = b if isinstance(b, Tensor) else torch.tensor(b, dtype=a_t.dtype, device=a_t.device)
        return torch.minimum(a_t, b_t)
    return min(a, b)


def _log(value: Value) -> Value:
    return torch.log(value) if isinstance(value, Tensor) else math.log(value)


def _exp(value: Value) -> Value:
    return torch.exp(value) if isinstance(value, Tensor) else math.exp(value)


def _cos_anneal(start: Value, end: Value, pct: float) -> Value:
    """``end + (start − end)(1 + cos(π pct))/2``, as torch's OneCycleLR writes it."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _linear_anneal(start: Value, end: Value, pct: float) -> Value:
    return (end - start) * pct + start


class Schedule:
    """Base class: a callable ``step -> value`` with a readable ``repr``."""

    def __call__(self, step: int) -> Value:  # pragma: no cover - abstract
        raise NotImplementedError

    def _args(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.__dict__.items() if not k.startswith("_"))

    def __repr__(self) -> str:
        return f"{type(self).__name__.lstrip('_')}({self._args()})"


class _Function(Schedule):
    """Wraps a plain callable ``step -> value`` (so any function is a schedule)."""

    def __init__(self, fn: Callable[[int], Value]):
        self.fn = fn

    def __call__(self, step: int) -> Value:
        return self.fn(step)

    def __repr__(self) -> str:
        return f"schedule({getattr(self.fn, '__name__', repr(self.fn))})"


def as_schedule(value: Any) -> Schedule:
    """A schedule from a schedule, a callable ``step -> value``, or a constant value."""
    if isinstance(value, Schedule):
        return value
    if callable(value):
        return _Function(value)
    return constant(value)


# ---------------------------------------------------------------- schedules

class constant(Schedule):
    """``value`` at every step."""

    def __init__(self, value: Value):
        self.value = _number("value", value)

    def __call__(self, step: int) -> Value:
        _step(step)
        return self.value


class step_decay(Schedule):
    """Step decay: ``value · gamma^⌊t / step_size⌋`` (torch ``StepLR``; optax ``exponential_decay(staircase=True)``)."""

    def __init__(self, value: Value, step_size: int, gamma: float = 0.1):
        self.value = _number("value", value)
        self.step_size = _length("step_size", step_size)
        self.gamma = _number("gamma", gamma)

    def __call__(self, step: int) -> Value:
        return self.value * self.gamma ** (_step(step) // self.step_size)


class exponential(Schedule):
    """Exponential decay: ``value · gamma^t`` (torch ``ExponentialLR``)."""

    def __init__(self, value: Value, gamma: float):
        self.value = _number("value", value)
        self.gamma = _number("gamma", gamma)

    def __call__(self, step: int) -> Value:
        return self.value * self.gamma ** _step(step)


class cosine(Schedule):
    r"""Cosine annealing from ``peak`` to ``end`` over ``steps`` (Loshchilov & Hutter 2017, SGDR).

    ``end + (peak − end)(1 + cos(π t_cur / T_i))/2``. Without restarts t_cur = t
    and T_i = ``steps`` (torch ``CosineAnnealingLR`` with ``T_max=steps,
    eta_min=end``), and ``end`` is held after ``steps``. With ``restarts=True``
    the cosine restarts at ``peak`` after each period: the first period is
    ``steps``, each next one ``mult`` times longer (torch
    ``CosineAnnealingWarmRestarts`` with ``T_0=steps, T_mult=mult, eta_min=end``).
    """

    def __init__(self, peak: Value, steps: int, end: Value = 0.0, *, restarts: bool = False, mult: int = 1):
        self.peak = _number("peak", peak)
        self.steps = _length("steps", steps)
        self.end = _number("end", end)
        self.restarts = bool(restarts)
        if isinstance(mult, bool) or not isinstance(mult, int) or mult < 1:
            raise ValueError(f"mult must be an integer >= 1, got mult={mult!r}")
        self.mult = mult

    def _position(self, t: int) -> tuple[int, int]:
        if not self.restarts:
            return min(t, self.steps), self.steps
        period = self.steps
        while t >= period:
            t -= period
            period *= self.mult
        return t, period

    def __call__(self, step: int) -> Value:
        t_cur, period = self._position(_step(step))
        return self.end + (self.peak - self.end) * (1 + math.cos(math.pi * t_cur / period)) / 2

    def __repr__(self) -> str:
        text = f"cosine(peak={_show(self.peak)}, steps={self.steps}, end={_show(self.end)}"
        if self.restarts:
            text += f", restarts=True, mult={self.mult}"
        return text + ")"


class linear(Schedule):
    """Linear ramp (warm-up) from ``start`` to ``end`` over ``steps``, then ``end`` is held.

    ``start + (end − start) · min(t / steps, 1)`` (torch ``LinearLR``; optax ``linear_schedule``).
    """

    def __init__(self, start: Value, end: Value, steps: int):
        self.start = _number("start", start)
        self.end = _number("end", end)
        self.steps = _length("steps", steps)

    def __call__(self, step: int) -> Value:
        return self.start + (self.end - self.start) * (min(_step(step), self.steps) / self.steps)


class join(Schedule):
    """Run schedules one after another (optax ``join_schedules``).

    ``join(first, second, ..., boundaries=[b1, b2, ...])``: ``first`` runs for
    steps t < b1, ``second`` from b1 on, and so on. Each later schedule sees the
    step counted from its own start: at step t ≥ b1, ``second(t − b1)``.
    Boundaries must be positive and increasing; there is one fewer boundary than schedules.
    """

    def __init__(self, *schedules: Any, boundaries: Sequence[int]):
        if not schedules:
            raise ValueError("join needs at least one schedule")
        boundaries = [_length(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                f"join needs one boundary fewer than schedules: got {len(schedules)} schedules and "
                f"boundaries={boundaries!r}"
            )
        for i in range(1, len(boundaries)):
            if boundaries[i] <= boundaries[i - 1]:
                raise ValueError(f"boundaries must increase, got boundaries={boundaries!r}")
        self.schedules = [as_schedule(s) for s in schedules]
        self.boundaries = boundaries

    def __call__(self, step: int) -> Value:
        t = _step(step)
        start = 0
        for schedule, boundary in zip(self.schedules, self.boundaries):
            if t < boundary:
                return schedule(t - start)
            start = boundary
        return self.schedules[-1](t - start)

    def __repr__(self) -> str:
        return f"join({', '.join(map(repr, self.schedules))}, boundaries={self.boundaries})"


def warmup_cosine(peak: Value, warmup: int, steps: int, start: Value = 0.0, end: Value = 0.0) -> join:
    """Linear warm-up from ``start`` to ``peak`` over ``warmup`` steps, then cosine to ``end``.

    ``steps`` is the total length: the cosine part lasts ``steps − warmup``
    (optax ``warmup_cosine_decay_schedule``).
    """
    warmup = _length("warmup", warmup)
    steps = _length("steps", steps)
    if steps <= warmup:
        raise ValueError(f"steps must exceed warmup, got steps={steps} and warmup={warmup}")
    return join(linear(start, peak, warmup), cosine(peak, steps - warmup, end), boundaries=[warmup])


def _one_cycle_phases(steps: int, pct_start: float, three_phase: bool) -> list[float]:
    if three_phase:
        return [float(pct_start * steps) - 1, float(2 * pct_start * steps) - 2, steps - 1]
    return [float(pct_start * steps) - 1, steps - 1]


def _check_pct(pct_start: Any) -> float:
    if isinstance(pct_start, bool) or not isinstance(pct_start, (int, float)) or not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1), got pct_start={pct_start!r}")
    return float(pct_start)


class _OneCycle(Schedule):
    def _run(self, step: int, values: list[tuple[Value, Value]]) -> Value:
        t = min(_step(step), self.steps - 1)
        anneal = _cos_anneal if self.anneal == "cos" else _linear_anneal
        start_step = 0.0
        ends = _one_cycle_phases(self.steps, self.pct_start, self.three_phase)
        for i, (end_step, (first, last)) in enumerate(zip(ends, values)):
            if t <= end_step or i == len(ends) - 1:
                pct = (t - start_step) / (end_step - start_step)
                return anneal(first, last, pct)
            start_step = end_step
        raise AssertionError("unreachable")

    def _check(self, steps: int, pct_start: float, anneal: str) -> None:
        self.steps = _length("steps", steps)
        self.pct_start = _check_pct(pct_start)
        if anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got anneal={anneal!r}")
        self.anneal = anneal
        ends = _one_cycle_phases(self.steps, self.pct_start, self.three_phase)
        starts = [0.0, *ends[:-1]]
        if any(e <= s for s, e in zip(starts, ends)):
            raise ValueError(
                f"steps={self.steps} is too short for pct_start={self.pct_start}: a phase would be empty"
            )


class one_cycle(_OneCycle):
    r"""The 1cycle learning rate (Smith 2018, arXiv 1803.09820), exactly as torch ``OneCycleLR``.

    Starts at ``max_lr / div_factor``, rises to ``max_lr`` at step
    ``pct_start·steps − 1``, then anneals to ``max_lr / (div_factor ·
    final_div_factor)`` at step ``steps − 1`` (cosine ``end + (start −
    end)(1 + cos(π pct))/2``, or linear). ``three_phase=True``: up, back down to
    the initial value at ``2·pct_start·steps − 2``, then to the minimum. The
    minimum is held after ``steps − 1`` (torch raises instead).
    """

    def __init__(
        self,
        max_lr: Value,
        steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: str = "cos",
        three_phase: bool = False,
    ):
        self.max_lr = _number("max_lr", max_lr)
        self.div_factor = float(_number("div_factor", div_factor))
        self.final_div_factor = float(_number("final_div_factor", final_div_factor))
        if self.div_factor <= 0 or self.final_div_factor <= 0:
            raise ValueError(
                f"div_factor and final_div_factor must be > 0, got {div_factor!r} and {final_div_factor!r}"
            )
        self.three_phase = bool(three_phase)
        self._check(steps, pct_start, anneal)

    def __call__(self, step: int) -> Value:
        initial = self.max_lr / self.div_factor
        minimum = initial / self.final_div_factor
        if self.three_phase:
            values = [(initial, self.max_lr), (self.max_lr, initial), (initial, minimum)]
        else:
            values = [(initial, self.max_lr), (self.max_lr, minimum)]
        return self._run(step, values)


class one_cycle_momentum(_OneCycle):
    r"""The 1cycle momentum (Smith 2018): the inverse of :class:`one_cycle`, ``max → base → max``.

    0.95 → 0.85 at step ``pct_start·steps − 1`` → 0.95 at ``steps − 1`` with the
    defaults: the momentum values torch ``OneCycleLR(cycle_momentum=True)``
    writes into the optimizer (``base_momentum=0.85, max_momentum=0.95``).
    Also usable for Adam's β₁.
    """

    def __init__(
        self,
        steps: int,
        base: Value = 0.85,
        max: Value = 0.95,  # noqa: A002 - the name torch uses (max_momentum)
        pct_start: float = 0.3,
        anneal: str = "cos",
        three_phase: bool = False,
    ):
        self.base = _number("base", base)
        self.max = _number("max", max)
        self.three_phase = bool(three_phase)
        self._check(steps, pct_start, anneal)

    def __call__(self, step: int) -> Value:
        if self.three_phase:
            values = [(self.max, self.base), (self.base, self.max), (self.max, self.max)]
        else:
            values = [(self.max, self.base), (self.base, self.max)]
        return self._run(step, values)


class sutskever_ramp(Schedule):
    r"""Sutskever et al. (ICML 2013) momentum ramp: ``μ_t = min(1 − 2^(−1 − log₂(⌊t/every⌋ + 1)), μ_max)``.

    ``1 − 2^(−1−log₂(k+1)) = 1 − 1/(2(k+1))``: 0.5, 0.75, 0.8333…, 0.875, 0.9, …
    for k = ⌊t/250⌋ = 0, 1, 2, 3, 4, … (``every=250`` as in the paper), capped at ``mu_max``.
    """

    def __init__(self, mu_max: Value = 0.99, every: int = 250):
        self.mu_max = _number("mu_max", mu_max)
        self.every = _length("every", every)

    def __call__(self, step: int) -> Value:
        k = _step(step) // self.every
        return _minimum(1.0 - 2.0 ** (-1.0 - math.log2(k + 1)), self.mu_max)


class demon(Schedule):
    r"""Demon momentum decay (Chen, Wolfe, Kyrillidis et al., "Demon: improved neural network training with momentum decay").

    ``μ_t = μ₀(1 − t/T) / ((1 − μ₀) + μ₀(1 − t/T))`` with T = ``steps``: the
    ratio μ_t/(1 − μ_t) decays linearly from μ₀/(1 − μ₀) to 0 at t = T (and
    stays 0 after). ``steps=math.inf`` gives the constant μ₀.
    """

    def __init__(self, momentum: Value, steps: float):
        self.momentum = _number("momentum", momentum)
        low = float(self.momentum.min()) if isinstance(self.momentum, Tensor) else self.momentum
        high = float(self.momentum.max()) if isinstance(self.momentum, Tensor) else self.momentum
        if not (0 <= low and high < 1):
            raise ValueError(f"momentum must be in [0, 1), got momentum={_show(self.momentum)}")
        self.steps = _length("steps", steps, allow_inf=True)

    def __call__(self, step: int) -> Value:
        frac = max(0.0, 1.0 - _step(step) / self.steps)
        mu = self.momentum
        return mu * frac / ((1 - mu) + mu * frac)


class half_life_warmup(Schedule):
    r"""An EMA coefficient warmed up from ``start`` to ``end`` with its half-life growing linearly.

    ``β(t) = min(exp(ln β_s · ln β_e / ((1 − t/T)·ln β_e + (t/T)·ln β_s)), β_e)`` with T = ``steps``:
    1/ln β(t) = (1 − t/T)/ln β_s + (t/T)/ln β_e, so the half-life ln ½/ln β moves linearly from ``start``'s to ``end``'s,
    and ``end`` is held after T. With ``start`` = β₁ it is AdEMAMix's β₃ scheduler (Pagliardini,
    Ablin & Grangier 2024, Algorithm 1); ``start`` and ``end`` in (0, 1).
    """

    def __init__(self, end: Value, steps: int, start: Value = 0.9):
        self.end = _number("end", end)
        self.start = _number("start", start)
        for name, value in (("start", self.start), ("end", self.end)):
            values = value.reshape(-1).tolist() if isinstance(value, Tensor) else [value]
            if not all(0 < v < 1 for v in values):
                raise ValueError(f"{name} must be in (0, 1), got {name}={_show(value)}")
        self.steps = _length("steps", steps)

    def __call__(self, step: int) -> Value:
        frac = min(_step(step), self.steps) / self.steps
        inverse_log = (1 - frac) / _log(self.start) + frac / _log(self.end)
        return _minimum(_exp(1 / inverse_log), self.end)


def ademamix_warmups(T_alpha_beta3: int, alpha: Value = 5.0, betas: tuple = (0.9, 0.999, 0.9999)) -> dict[str, Any]:
    """AdEMAMix's warm-ups over ``T_alpha_beta3`` steps (Pagliardini et al. 2024) as schedules of its
    hyperparameters: ``alpha`` from 0 (``linear``), ``betas[2]`` from β₁ (:class:`half_life_warmup`).

    ``HyperScheduler(optimizer, **ademamix_warmups(T, alpha, betas))``, or a race's or sweep's
    ``schedules=`` (with ``alpha`` and ``betas`` the configurations' values)."""
    return {"alpha": linear(0.0, alpha, T_alpha_beta3),
            "betas": (None, None, half_life_warmup(betas[2], T_alpha_beta3, start=betas[0]))}
