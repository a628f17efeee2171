r"""Schedules: a schedule is a function of the step, ``schedule(t) -> value`` for t = 0, 1, 2, ...

As in optax, a schedule is a pure function of the step count, so it can drive
any hyperparameter (learning rate, momentum, Adam's betas, weight decay) and its
only state is the step. Base values may be Python numbers or tensors of shape
``[N]`` (one value per configuration, as the sweep engine uses): the shape of
the step-dependent factor is scalar, so ``cosine(torch.tensor([0.1, 0.2]), 100)(t)``
is a tensor of shape ``[2]``.

Step t counts optimizer steps already taken: ``schedule(0)`` is the value used
for the first update. This matches torch's ``lr_scheduler`` classes, whose
``last_epoch`` is t (``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR``,
``CosineAnnealingWarmRestarts``, ``LinearLR``, ``OneCycleLR`` are reproduced
exactly, see tests/test_schedules.py). Past the end of a finite schedule the
final value is held.

:class:`HyperScheduler` applies schedules to the ``param_groups`` of any
``torch.optim.Optimizer``.

Schedules: :func:`constant`, :func:`step_decay`, :func:`exponential`,
:func:`cosine` (optional warm restarts), :func:`linear` (warm-up), :func:`join`
and :func:`warmup_cosine` (composition), :func:`one_cycle` and
:func:`one_cycle_momentum` (Smith 2018), :func:`sutskever_ramp` (Sutskever et
al. 2013), :func:`demon` (Chen et al.), :func:`half_life_warmup` and
:func:`ademamix_warmups` (AdEMAMix's warm-ups, Pagliardini et al. 2024).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

Value = Any  # a Python float or a tensor (shape [] or [N])

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "exponential",
    "cosine",
    "linear",
    "join",
    "warmup_cosine",
    "one_cycle",
    "one_cycle_momentum",
    "sutskever_ramp",
    "demon",
    "half_life_warmup",
    "ademamix_warmups",
    "HyperScheduler",
    "as_schedule",
    "ScheduleSpec",
    "parse_spec",
    "from_spec",
    "check_spec",
]


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


# ---------------------------------------------------------------- scheduler

def _is_schedule(value: Any) -> bool:
    return isinstance(value, Schedule) or callable(value)


def _width(value: Any) -> Any:
    """n for a per-configuration tensor ``[n]``, None for one value (per component for tuples)."""
    if isinstance(value, (tuple, list)):
        return tuple(_width(v) for v in value)
    return value.numel() if isinstance(value, Tensor) and value.dim() > 0 else None


def _per_configuration(width: Any) -> bool:
    return any(map(_per_configuration, width)) if isinstance(width, tuple) else width is not None


_USE_HYPERSCHEDULER = "drive it with inertia.schedules.HyperScheduler, whose schedules take tensors [n]"


class PerConfiguration(Tensor):
    """A per-configuration hyperparameter ``[n]`` as torch's ``lr_scheduler`` classes meet it.

    torch's schedulers write a param group's tensor ``lr`` with ``fill_``. Here
    ``fill_`` with n values keeps them (``CosineAnnealingLR``, ``StepLR``, ``LambdaLR``
    ... then schedule each configuration from its own base value); one value for n,
    reading it as one number (``float``, as ``ReduceLROnPlateau`` does), or a
    write while another entry of the group that held n values was replaced by
    one (``OneCycleLR`` with ``cycle_momentum=True``) is a ``ValueError`` saying
    to use :class:`HyperScheduler`. Arithmetic gives plain tensors; pickling
    writes a plain tensor.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl

    def _where(self) -> str:
        return f"param group {self._index}'s {self._name}"

    def fill_(self, value: Any) -> Tensor:
        value = torch.as_tensor(value)
        if value.numel() != self.numel():
            raise ValueError(f"{self._where()} holds one value per configuration ({self.numel()}), and a torch "
                             f"lr_scheduler would write {value.numel()} for all of them: {_USE_HYPERSCHEDULER}")
        lost = [k for k, w in self._widths.items() if k in self._group and _width(self._group[k]) != w]
        if lost:
            raise ValueError(f"param group {self._index}'s {lost[0]} held one value per configuration and a torch "
                             f"lr_scheduler replaced them with one (OneCycleLR: pass max_momentum and "
                             f"base_momentum as tensors, or cycle_momentum=False): {_USE_HYPERSCHEDULER}")
        return Tensor.copy_(self, value.reshape(self.shape))

    def __float__(self) -> float:
        if self.numel() == 1:
            return float(self.as_subclass(Tensor))
        raise ValueError(f"{self._where()} holds one value per configuration ({self.numel()}) and cannot be read "
                         f"as one number (ReduceLROnPlateau does): {_USE_HYPERSCHEDULER}")

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.as_subclass(Tensor).__reduce_ex__(protocol)

    def __deepcopy__(self, memo: dict) -> Tensor:
        return self.as_subclass(Tensor).__deepcopy__(memo)  # a plain copy: it would copy the group


def _guarded(value: Any, name: str, index: int, group: dict, widths: dict) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_guarded(v, name, index, group, widths) for v in value)
    if not isinstance(value, Tensor) or value.dim() != 1:
        return value
    guarded = value if isinstance(value, PerConfiguration) else value.as_subclass(PerConfiguration)
    guarded._name, guarded._index, guarded._group, guarded._widths = name, index, group, widths
    return guarded


def guard_per_configuration(optimizer: torch.optim.Optimizer) -> None:
    """Make every per-configuration hyperparameter of ``optimizer`` a :class:`PerConfiguration`.

    For inertia's optimizers: call it after each ``add_param_group`` (idempotent);
    it also re-guards the values a ``load_state_dict`` brings.
    """
    for index, group in enumerate(optimizer.param_groups):
        widths = {k: _width(v) for k, v in group.items() if k != "params"}
        widths = {k: w for k, w in widths.items() if _per_configuration(w)}
        for name in widths:
            group[name] = _guarded(group[name], name, index, group, widths)
    if not getattr(optimizer, "_inertia_guarded", False):
        optimizer.register_load_state_dict_post_hook(guard_per_configuration)
        optimizer._inertia_guarded = True


class HyperScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Drive any hyperparameter of any ``torch.optim.Optimizer`` with schedules; a torch ``LRScheduler``.

    ``HyperScheduler(optimizer, lr=cosine(0.1, 1000), momentum=sutskever_ramp(0.99),
    betas=(one_cycle_momentum(1000), None))`` writes ``schedule(t)`` into every
    param group's entry, t = ``last_epoch`` (steps taken): at construction the
    values for step 0, after each :meth:`step` those for the next step. Call
    :meth:`step` after ``optimizer.step()``, as with torch's ``lr_scheduler``;
    ``get_last_lr()``, ``state_dict()`` and ``load_state_dict()`` are those of
    ``LRScheduler``, so trainers that take a torch scheduler (Lightning) take it.

    Each keyword names a param-group entry and gives

    - a schedule (any callable ``step -> value``), applied to every group;
    - a tuple with one schedule or ``None`` per component, for tuple-valued
      entries such as ``betas`` (``None`` leaves that component alone);
    - a list with one of the above (or ``None``) per param group.

    Values may be tensors of shape ``[N]`` (per-configuration values for
    inertia's optimizers); an entry holding N values keeps N values (a schedule
    giving one value gives it to all N). A name no param group has is a
    ``ValueError``. ``load_state_dict`` writes the loaded step's values into the
    optimizer, so a resumed run continues with identical values.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, **schedules: Any):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer (it has no param_groups)")
        if not schedules:
            raise ValueError("HyperScheduler needs at least one hyperparameter schedule, e.g. lr=cosine(0.1, 1000)")
        self.schedules = {name: self._per_group(optimizer, name, given) for name, given in schedules.items()}
        super().__init__(optimizer)  # writes the values of step 0 (last_epoch = 0)

    @classmethod
    def _per_group(cls, optimizer: torch.optim.Optimizer, name: str, given: Any) -> list[Any]:
        groups = optimizer.param_groups
        missing = [i for i, g in enumerate(groups) if name not in g]
        if missing:
            known = sorted(k for k in groups[0] if k not in ("params", "param_names")) if groups else []
            raise ValueError(
                f"unknown hyperparameter {name!r} for {type(optimizer).__name__}"
                f"{' (missing in param group ' + str(missing[0]) + ')' if len(missing) < len(groups) else ''}; "
                f"its param groups have: {', '.join(known)}"
            )
        if isinstance(given, list):
            if len(given) != len(groups):
                raise ValueError(
                    f"{name}: a list gives one schedule per param group; got {len(given)} for {len(groups)} groups"
                )
            per_group = list(given)
        else:
            per_group = [given] * len(groups)
        return [cls._check_item(name, index, group[name], item)
                for index, (group, item) in enumerate(zip(groups, per_group))]

    @staticmethod
    def _check_item(name: str, index: int, current: Any, item: Any) -> Any:
        if item is None:
            return None
        if isinstance(item, tuple):
            if not isinstance(current, (tuple, list)) or len(current) != len(item):
                raise ValueError(
                    f"{name}: a tuple of {len(item)} schedules needs a tuple-valued hyperparameter of that length; "
                    f"param group {index} has {name}={current!r}"
                )
            return tuple(None if s is None else HyperScheduler._schedule(name, s) for s in item)
        return HyperScheduler._schedule(name, item)

    @staticmethod
    def _schedule(name: str, item: Any) -> Schedule:
        if not _is_schedule(item):
            raise ValueError(f"{name}: expected a schedule (a callable step -> value), got {item!r}")
        return as_schedule(item)

    @staticmethod
    def _value_like(value: Any, current: Any) -> Any:
        """A tensor hyperparameter keeps its dtype, device, number of values and guard."""
        if not isinstance(current, Tensor):
            return value
        new = torch.as_tensor(value, dtype=current.dtype, device=current.device)
        if current.dim() == 1 and new.dim() == 0:
            new = new.expand(current.shape).clone()
        if isinstance(current, PerConfiguration) and new.shape == current.shape:
            new = new.as_subclass(PerConfiguration)
            new.__dict__.update(current.__dict__)
        return new

    def _values(self, step: int) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for name, per_group in self.schedules.items():
            values = []
            for group, item in zip(self.optimizer.param_groups, per_group):
                current = group[name]
                if item is None:
                    values.append(current)
                elif isinstance(item, tuple):
                    values.append(tuple(
                        c if s is None else self._value_like(s(step), c) for s, c in zip(item, current)
                    ))
                else:
                    values.append(self._value_like(item(step), current))
            out[name] = values
        return out

    def _apply(self) -> None:
        for name, values in self._values(self.last_epoch).items():
            for group, value in zip(self.optimizer.param_groups, values):
                group[name] = value
        self._last = {name: [g[name] for g in self.optimizer.param_groups] for name in self.schedules}
        self._last_lr = [g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"]
                         for g in self.optimizer.param_groups]

    @property
    def last_step(self) -> int:
        """Steps taken: the step whose values are in the optimizer (torch's ``last_epoch``)."""
        return self.last_epoch

    def get_lr(self) -> list[Any]:
        """The learning rates for step ``last_epoch``, one per param group."""
        if "lr" in self.schedules:
            return self._values(self.last_epoch)["lr"]
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (or go to step ``epoch``) and write its values into the param groups."""
        self._step_count += 1
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self._apply()

    def get_last(self) -> dict[str, list[Any]]:
        """The values last written: ``{name: [value per param group]}``."""
        return {name: list(values) for name, values in self._last.items()}

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: the step (schedules are pure functions of it) and the names it drives."""
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "names": sorted(self.schedules)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step (``last_epoch``, or ``last_step`` as saved before) and write its values."""
        names = state.get("names")
        if names is not None and sorted(names) != sorted(self.schedules):
            raise ValueError(
                f"this state_dict is for a scheduler of {sorted(names)}, but this one schedules "
                f"{sorted(self.schedules)}"
            )
        step = int(state["last_epoch"] if "last_epoch" in state else state["last_step"])
        if step < 0:
            raise ValueError(f"last_epoch must be >= 0, got {step}")
        self.last_epoch = step
        self._step_count = int(state.get("_step_count", step + 1))
        self._apply()

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={per_group[0]!r}" if all(p is per_group[0] for p in per_group) else f"{name}={per_group!r}"
            for name, per_group in self.schedules.items()
        )
        return f"HyperScheduler({type(self.optimizer).__name__}, step={self.last_epoch}, {parts})"


# ---------------------------------------------------------------- schedule specs

# schedule name -> (factory, the argument that takes the hyperparameter's value, the argument that
# takes the run's step count or None, defaults computed from the step count)
_TEMPLATES: dict[str, tuple[Callable[..., Schedule], str, str | None, Callable[[int], dict[str, Any]]]] = {
    "constant": (constant, "value", None, lambda steps: {}),
    "step_decay": (step_decay, "value", None, lambda steps: {"step_size": max(1, math.ceil(steps / 3))}),
    "exponential": (exponential, "value", None, lambda steps: {"gamma": 0.01 ** (1 / max(1, steps))}),
    "cosine": (cosine, "peak", "steps", lambda steps: {}),
    "linear": (linear, "end", "steps", lambda steps: {"start": 0.0}),
    "warmup_cosine": (warmup_cosine, "peak", "steps", lambda steps: {"warmup": max(1, round(0.05 * steps))}),
    "one_cycle": (one_cycle, "max_lr", "steps", lambda steps: {}),
    "one_cycle_momentum": (one_cycle_momentum, "max", "steps", lambda steps: {}),
    "sutskever_ramp": (sutskever_ramp, "mu_max", None, lambda steps: {}),
    "demon": (demon, "momentum", "steps", lambda steps: {}),
    "half_life_warmup": (half_life_warmup, "end", "steps", lambda steps: {}),
}


class ScheduleSpec:
    """A schedule waiting for its base value and the run's length: ``cosine``, ``cosine(end=1e-4)``,
    ``sutskever_ramp``, ``warmup_cosine(warmup=100)``, ...

    :meth:`build` fills the argument that takes the hyperparameter's own value (``peak`` of
    ``cosine``, ``mu_max`` of ``sutskever_ramp``, ...: a swept lr of 0.01 under ``cosine``
    starts at 0.01) and the run's step count, unless the spec gives them. ``base`` may be a
    tensor ``[N]`` (one value per configuration). Arguments are literals (parsed with ``ast``,
    never evaluated); the first positional argument is the base, as in the schedule's signature.
    """

    def __init__(self, name: str, *args: Any, **kwargs: Any):
        import inspect

        if name not in _TEMPLATES:
            raise ValueError(f"unknown schedule {name!r}; known: {', '.join(sorted(_TEMPLATES))}")
        factory = _TEMPLATES[name][0]
        try:
            self.given = dict(inspect.signature(factory).bind_partial(*args, **kwargs).arguments)
        except TypeError as error:
            raise ValueError(f"schedule {name}: {error}") from None
        self.name = name

    @property
    def base_name(self) -> str:
        return _TEMPLATES[self.name][1]

    @property
    def gives_base(self) -> bool:
        """True when the spec names the base itself (e.g. ``sutskever_ramp(0.99)``)."""
        return self.base_name in self.given

    def build(self, base: Value = None, steps: int | None = None) -> Schedule:
        """The schedule for a hyperparameter whose value is ``base`` in a run of ``steps`` steps."""
        import inspect

        factory, base_name, steps_name, defaults = _TEMPLATES[self.name]
        kwargs = {**defaults(int(steps or 1)), **self.given}
        if base_name not in kwargs and base is not None:
            kwargs[base_name] = base
        elif base_name not in kwargs and inspect.signature(factory).parameters[base_name].default is inspect._empty:
            raise ValueError(f"schedule {self}: needs {base_name}= (no value to start from)")
        if steps_name is not None and steps_name not in kwargs:
            if steps is None:
                raise ValueError(f"schedule {self}: needs {steps_name}=")
            kwargs[steps_name] = int(steps)
        try:
            return factory(**kwargs)
        except TypeError as error:
            raise ValueError(f"schedule {self}: {error}") from None

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ScheduleSpec) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        if not self.given:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.given.items())})"

    __str__ = __repr__


def parse_spec(text: str) -> ScheduleSpec:
    """``"cosine"`` or ``"cosine(end=1e-4)"`` or ``"sutskever_ramp(0.99, every=100)"`` -> a :class:`ScheduleSpec`."""
    import ast

    raw = str(text).strip()
    try:
        node = ast.parse(raw, mode="eval").body
        if isinstance(node, ast.Name):
            name, args, kwargs = node.id, [], {}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        else:
            raise ValueError
    except (SyntaxError, ValueError):
        raise ValueError(f"{raw!r} is not a schedule like cosine or cosine(end=1e-4); "
                         f"known: {', '.join(sorted(_TEMPLATES))}") from None
    return ScheduleSpec(name, *args, **kwargs)


def as_spec(spec: Any) -> ScheduleSpec | Schedule:
    """A :class:`ScheduleSpec` from a string, a spec as is, or a finished schedule (any callable)."""
    if isinstance(spec, str):
        return parse_spec(spec)
    if isinstance(spec, (ScheduleSpec, Schedule)) or callable(spec):
        return spec if isinstance(spec, (ScheduleSpec, Schedule)) else as_schedule(spec)
    raise ValueError(f"expected a schedule name such as 'cosine', a ScheduleSpec or a schedule, got {spec!r}")


def from_spec(spec: Any, *, base: Value = None, steps: int | None = None) -> Schedule:
    """The schedule of a hyperparameter whose value is ``base`` over ``steps`` steps.

    ``spec``: a string (:func:`parse_spec`), a :class:`ScheduleSpec`, or a finished schedule
    (returned as is: its values are the hyperparameter's values).
    """
    spec = as_spec(spec)
    return spec.build(base, steps) if isinstance(spec, ScheduleSpec) else spec


def check_spec(name: str, spec: Any) -> ScheduleSpec | Schedule:
    """Parse ``spec`` for hyperparameter ``name``; a ``ValueError`` naming ``name`` if it is not a schedule."""
    try:
        return as_spec(spec)
    except ValueError as error:
        raise ValueError(f"schedule {name}={spec}: {error}") from None
