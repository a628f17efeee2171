r"""The learning-rate range test, knowing momentum: several momenta x several seeds in one stacked run.

The learning rate rises exponentially from ``start`` to ``end`` over ``steps`` steps,
γ_t = start·(end/start)^(t/(steps − 1)) (Smith 2015, arXiv 1506.01186), for every member of one
:class:`inertia.core.Stack` at once: members = momenta x seeds, each seed with its own initialization
and batch order (the sweep's :class:`~inertia.sweeps.engine.Job` and
:class:`~inertia.sweeps.engine.Members`; the ramp is a schedule of the step, like any sweep schedule).

Each member's training loss is smoothed by a bias-corrected exponential moving average,
s_t = βs_{t−1} + (1 − β)L_t, ŝ_t = s_t/(1 − β^t) (fastai ``lr_find``: β = 0.98). A momentum stops
at the first step where one of its seeds' ŝ exceeds ``diverge`` times that seed's smallest ŝ so far, or
its loss is not finite (fastai: 4; torch-lr-finder: 5); ``diverged_at`` is the learning rate there.

Suggested range per momentum, from three documented rules on the seeds' mean ŝ over log γ:

- ``steepest``: where ŝ falls fastest per decade of γ (torch-lr-finder's rule, here over log γ,
  not over the step index, the first and last 5 % of the points left out), among the points below
  the level where the ramp started (the median of its first tenth): an early spike, whose decay is
  steep too, stays above that level;
- ``valley``: the middle of the longest decreasing run of ŝ (fastai's ``valley``);
- ``min/10``: a tenth of the γ with the smallest ŝ (fastai's ``minimum``, Smith's advice).

The range is [smallest, largest] of the three; ``agreement`` is its width in decades. The user's
models and optimizers are never touched: the stack holds copies (:func:`find`), and
:class:`RangeTest` restores the model and optimizer it was used around.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .sweeps.edge import SharpnessProbe

__all__ = ["Ramp", "FinderResult", "find", "RangeTest", "smooth", "suggestions", "RULES"]

RULES = ("steepest", "valley", "min/10")
SHARPNESS_POINTS = 4     # measurements of λ_max along the ramp (besides the one at initialization)


@dataclass(frozen=True)
class Ramp:
    """An exponential learning-rate ramp, its loss smoothing and its divergence stop (module docstring)."""

    start: float = 1e-5
    end: float = 10.0
    steps: int = 300
    smoothing: float = 0.98
    diverge: float = 4.0

    def __post_init__(self) -> None:
        for name in ("start", "end", "smoothing", "diverge"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.steps < 2:
            raise ValueError(f"steps must be >= 2 for a ramp, got {self.steps}")
        if self.start <= 0:
            raise ValueError(f"start must be > 0, got {self.start!r}")
        if self.start >= self.end:
            raise ValueError(f"start ({self.start:g}) must be below end ({self.end:g}): the ramp rises")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing!r}")
        if self.diverge <= 1:
            raise ValueError(f"diverge must be > 1, got {self.diverge!r}")

    @property
    def gamma(self) -> float:
        """The factor between consecutive learning rates."""
        return (self.end / self.start) ** (1 / (self.steps - 1))

    def lrs(self) -> np.ndarray:
        return self.start * self.gamma ** np.arange(self.steps)

    def schedule(self) -> Any:
        from .schedules import exponential

        return exponential(float(self.start), self.gamma)


def smooth(losses: np.ndarray, beta: float) -> np.ndarray:
    """The bias-corrected EMA of ``losses`` along the last axis; NaN from the first non-finite loss on."""
    losses = np.asarray(losses, dtype=np.float64)
    out = np.full_like(losses, np.nan)
    state = np.zeros(losses.shape[:-1])
    alive = np.ones(losses.shape[:-1], dtype=bool)
    for t in range(losses.shape[-1]):
        alive &= np.isfinite(losses[..., t])
        state = beta * state + (1 - beta) * np.where(alive, losses[..., t], 0.0)
        out[..., t] = np.where(alive, state / (1 - beta ** (t + 1)), np.nan)
    return out


def first_divergence(smoothed: np.ndarray, diverge: float) -> np.ndarray:
    """Per curve (last axis = steps): the first step whose smoothed loss is not finite or exceeds
    ``diverge`` x the smallest before it; −1 where there is none. A curve not yet started is all NaN."""
    smoothed = np.asarray(smoothed, dtype=np.float64)
    best = np.fmin.accumulate(np.where(np.isfinite(smoothed), smoothed, np.inf), axis=-1)
    bad = ~np.isfinite(smoothed) | (smoothed > diverge * best)
    return np.where(bad.any(-1), bad.argmax(-1), -1)


def suggestions(lrs: np.ndarray, smoothed: np.ndarray) -> dict[str, float] | None:
    """The three rules' learning rates on one smoothed curve (finite points only); None if under 5 points."""
    ok = np.isfinite(smoothed)
    lrs, s = np.asarray(lrs)[ok], np.asarray(smoothed)[ok]
    if len(s) < 5:
        return None
    cut = max(1, len(s) // 20)
    slope = np.gradient(s, np.log10(lrs))
    below = s < np.median(s[:max(1, len(s) // 10)])     # under the level where the ramp started
    below[:cut], below[len(s) - cut:] = False, False
    candidates = np.nonzero(below)[0] if below.any() else np.arange(cut, len(s) - cut)
    return {"steepest": float(lrs[candidates[np.argmin(slope[candidates])]]),
            "valley": float(lrs[_valley(s)]),
            "min/10": float(lrs[int(np.argmin(s))] / 10)}


def _valley(s: np.ndarray) -> int:
    """The middle index of the longest strictly decreasing subsequence of ``s``."""
    length = np.ones(len(s), dtype=int)
    before = np.full(len(s), -1)
    for i in range(1, len(s)):
        higher = np.nonzero(s[:i] > s[i])[0]
        if len(higher):
            j = higher[np.argmax(length[higher])]
            length[i], before[i] = length[j] + 1, j
    end = start = int(np.argmax(length))
    while before[start] >= 0:
        start = int(before[start])
    return (start + end) // 2


@dataclass
class FinderResult:
    """What a range test measured: raw losses ``[momentum, seed, step]`` (NaN where not run), the ramp,
    and the sharpness λ_max at initialization (per seed) and along the ramp.

    ``edge``: the rule's convention, nesterov and dampening (for :func:`inertia.sharpness.stable_lr`),
    or None where the stability edge of heavy ball does not apply to the rule.
    """

    ramp: Ramp
    momenta: tuple[float, ...]
    losses: np.ndarray
    sharpness_init: list[float] = field(default_factory=list)
    sharpness_along: list[dict[str, Any]] = field(default_factory=list)
    edge: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def lrs(self) -> np.ndarray:
        return self.ramp.lrs()

    @functools.cached_property
    def smoothed(self) -> np.ndarray:
        return smooth(self.losses, self.ramp.smoothing)

    def end(self, i: int) -> int:
        """The step at which momentum ``i``'s curve stops: its first seed's divergence, else ``steps``."""
        steps = first_divergence(self.smoothed[i], self.ramp.diverge)
        return int(steps[steps >= 0].min()) if (steps >= 0).any() else self.ramp.steps

    def diverged_at(self, i: int) -> float | None:
        """The learning rate at which momentum ``i`` diverged (None: it did not)."""
        end = self.end(i)
        return float(self.lrs[end]) if end < self.ramp.steps else None

    def curve(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Momentum ``i``'s smoothed loss before its stop: the seeds' mean, lowest and highest."""
        s = self.smoothed[i].copy()
        s[:, self.end(i):] = np.nan
        return s.mean(0), s.min(0), s.max(0)

    def rules(self, i: int) -> dict[str, float] | None:
        return suggestions(self.lrs, self.curve(i)[0])

    def lr_range(self, i: int) -> tuple[float, float] | None:
        found = self.rules(i)
        return None if found is None else (min(found.values()), max(found.values()))

    @property
    def sharpness(self) -> float | None:
        """λ_max at initialization (the median over seeds)."""
        return float(np.median(self.sharpness_init)) if self.sharpness_init else None

    def stable_lr(self, momentum: float) -> float | None:
        from .sharpness import stable_lr

        if self.sharpness is None or self.edge is None or not self.sharpness > 0:
            return None
        return stable_lr(self.sharpness, momentum, **self.edge)

    def to_json(self) -> dict[str, Any]:
        """``{"momenta": {"<μ>": {"lr_low", "lr_high", "diverged_at", "rules"}}, "sharpness", "stable_lr"}``."""
        momenta = {}
        for i, mu in enumerate(self.momenta):
            found, span = self.rules(i), self.lr_range(i)
            momenta[_key(mu)] = {"lr_low": span and span[0], "lr_high": span and span[1],
                                 "diverged_at": self.diverged_at(i), "rules": found}
        return {"momenta": momenta, "sharpness": self.sharpness,
                "sharpness_along": self.sharpness_along, "sharpness_per_seed": list(self.sharpness_init),
                "stable_lr": {_key(mu): self.stable_lr(mu) for mu in self.momenta},
                "ramp": {f.name: getattr(self.ramp, f.name) for f in fields(self.ramp)}, "meta": self.meta}

    def sweep_command(self, count: int = 8) -> str | None:
        """The ``inertia sweep`` command over the suggested ranges (widened by 2x on each side)."""
        spans = [s for s in (self.lr_range(i) for i in range(len(self.momenta))) if s is not None]
        if not spans:
            return None
        low, high = min(s[0] for s in spans) / 2, max(s[1] for s in spans) * 2
        meta = self.meta
        words = ["inertia sweep", f"--data {meta.get('data', 'DATA')}", f"--model {meta.get('model', 'MODEL')}",
                 f"--optimizer {meta.get('optimizer', 'momentum')}",
                 *(f"--fixed {name}={value}" for name, value in meta.get("fixed", {}).items()),
                 f"--lr {low:.3g}:{high:.3g}:{count}", "--momentum " + ",".join(_key(m) for m in self.momenta),
                 "--out runs/sweep"]
        return " ".join(words)


def _key(mu: float) -> str:
    return f"{float(mu):g}"


# ----------------------------------------------------------------- the stacked run

FIND_SETTINGS = ("batch_size", "seed", "seeds", "dtype", "device", "backend", "standardize")


def find(data: Any = "mnist1d", model: Any = "mlp", *, momentum: Any = (0.0, 0.9, 0.99), optimizer: str = "momentum",
         fixed: Mapping[str, Any] | None = None, loss: Any = "auto", model_args: Mapping[str, Any] | None = None,
         start: float = 1e-5, end: float = 10.0, steps: int = 300, smoothing: float = 0.98, diverge: float = 4.0,
         measure_sharpness: bool = True, threads: int | None = None, **settings: Any) -> FinderResult:
    """Run the range test for every momentum x seed at once, on the data and model specs of :func:`inertia.sweep`.

    ``settings``: ``batch_size``, ``seed``, ``seeds`` (3 by default), ``dtype``, ``device``, ``backend``,
    ``standardize``, as in :class:`inertia.sweeps.TrainSpec`. ``measure_sharpness``: λ_max at initialization
    and at :data:`SHARPNESS_POINTS` points along the ramp (:mod:`inertia.sharpness`). ``threads``: torch's
    intra-op threads while it runs (None: chosen from the stack's work, as the sweep chooses them,
    :func:`inertia.sweeps.parent_threads`).
    """
    from .sweeps import parent_threads
    from .sweeps.edge import SharpnessProbe, heavy_ball_edge
    from .sweeps.engine import Members
    from .threads import use_threads

    ramp = Ramp(start, end, steps, smoothing, diverge)
    job, dataset, momenta = _ramp_job(ramp, data, model, momentum, optimizer, dict(fixed or {}), loss, model_args,
                                      settings)
    members = Members(job, [{"momentum": mu} for mu in momenta], list(momenta))
    probe = SharpnessProbe(job) if measure_sharpness else None
    along = []
    points = set(np.linspace(0, ramp.steps, SHARPNESS_POINTS + 2).round().astype(int)[1:-1].tolist())
    previous = use_threads(parent_threads(job, len(momenta), threads))
    try:
        initial = probe.init() if probe else []
        while not members.done:
            members.train_step()
            _stop_diverged(members, ramp)
            if probe is not None and members.step in points and len(members.live):
                along.append(_sharpness_along(probe, members, momenta, float(ramp.lrs()[members.step - 1])))
    finally:
        use_threads(previous)
    losses = members.curves.numpy().reshape(job.members_per_config, len(momenta), ramp.steps).transpose(1, 0, 2)
    meta = {"data": data if isinstance(data, str) else dataset.name, "model": model if isinstance(model, str) else
            getattr(model, "__name__", "MODEL"), "optimizer": optimizer, "fixed": dict(fixed or {}),
            "seeds": job.seeds, "batch_size": job.batch_size, "backend": job.backend, "device": job.device,
            "dataset": repr(dataset)}
    return FinderResult(ramp, momenta, losses.copy(), initial, along, heavy_ball_edge(job), meta)


def _ramp_job(ramp: Ramp, data: Any, model: Any, momentum: Any, optimizer: str, fixed: dict[str, Any], loss: Any,
              model_args: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> tuple[Any, Any, tuple[float, ...]]:
    """The sweep's job for the ramp (its specs, data and checks), the dataset, and the momenta."""
    from . import rules
    from .sweeps import SweepSpec, TaskSpec, TrainSpec, prepare

    unknown = [name for name in settings if name not in FIND_SETTINGS]
    if unknown:
        raise TypeError(f"unknown find setting(s) {unknown}; known: {', '.join(FIND_SETTINGS)}")
    preset = rules.get(optimizer)
    if preset.tuner is not None:
        raise ValueError(f"optimizer {optimizer} tunes lr itself at every step; the range test ramps lr (run it on "
                         f"the rule it tunes, {preset.base})")
    if "momentum" not in preset.rule.numeric:
        raise ValueError(f"optimizer {optimizer} has no momentum; the range test varies it (use momentum, "
                         f"nesterov, sgd, ...)")
    task = TaskSpec.from_values(data, model, optimizer=optimizer, lr=None, momentum=momentum,
                                fixed={**fixed, "lr": ramp.start}, schedules={"lr": ramp.schedule()},
                                loss=loss, model_args=model_args)
    _, dataset, job = prepare(SweepSpec(task, TrainSpec(steps=ramp.steps, **settings)))
    job.diverge_above = math.inf     # only a non-finite loss stops a member inside the engine; the ramp stops the rest
    return job, dataset, tuple(task.space["momentum"])


def _sharpness_along(probe: SharpnessProbe, members: Any, momenta: Sequence[float], lr: float) -> dict[str, Any]:
    """λ_max of the first seed's live member of each momentum, at the ramp's current ``lr``."""
    rows = (members.live < len(momenta)).nonzero().squeeze(1).tolist()   # members of split 0: the first seed
    values = {_key(momenta[int(members.live[row])]): value for row, value in zip(rows, probe.rows(members, rows))}
    return {"step": members.step, "lr": lr, "momentum": values}


def _stop_diverged(members: Any, ramp: Ramp) -> None:
    """Remove every configuration (all its seeds) one of whose seeds has just diverged."""
    t = members.step
    live = members.live
    curves = members.curves[live, :t].numpy()
    diverged = first_divergence(smooth(curves, ramp.smoothing), ramp.diverge) >= 0
    if diverged.any():
        configs = members.config_of[live][torch.from_numpy(diverged)].unique()
        members.remove(torch.isin(members.config_of[live], configs).nonzero().squeeze(1))


# ----------------------------------------------------------------- around a user's own loop

class RangeTest:
    """The range test around your own training loop, for any ``torch.optim.Optimizer`` (inertia's or torch's).

    >>> with inertia.RangeTest(model, optimizer, start=1e-6, end=1.0, steps=200) as test:
    ...     for x, y in loader:
    ...         optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); optimizer.step()
    ...         if test.record(loss):        # sets the next lr; True once the ramp ends or the loss diverged
    ...             break
    >>> test.result().rules(0), test.result().lr_range(0)

    Entering sets every parameter group's ``lr`` to the ramp's start; leaving restores the model's and the
    optimizer's state dicts (parameters, buffers, momentum buffers, every group's ``lr``), even after an
    error. The momentum of the curve is the first group's ``momentum`` (0 when it has none).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, start: float = 1e-6,
                 end: float = 10.0, steps: int = 100, smoothing: float = 0.98, diverge: float = 4.0):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.model, self.optimizer = model, optimizer
        self.ramp = Ramp(start, end, steps, smoothing, diverge)
        self.losses: list[float] = []
        self._saved: tuple[dict, dict] | None = None

    def __enter__(self) -> "RangeTest":
        self._saved = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        self.losses = []
        self._set_lr(self.ramp.start)
        return self

    def __exit__(self, *exc: Any) -> None:
        model_state, optimizer_state = self._saved
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def record(self, loss: Any) -> bool:
        """Record the loss of the step just taken; True when the test is over (set the next lr otherwise)."""
        if self._saved is None:
            raise RuntimeError("RangeTest.record is called inside `with RangeTest(...) as test:`")
        self.losses.append(float(loss.detach() if isinstance(loss, Tensor) else loss))
        t = len(self.losses)
        smoothed = smooth(np.array(self.losses), self.ramp.smoothing)
        if t >= self.ramp.steps or first_divergence(smoothed, self.ramp.diverge) >= 0:
            return True
        self._set_lr(float(self.ramp.lrs()[t]))
        return False

    def result(self) -> FinderResult:
        losses = np.full((1, 1, self.ramp.steps), np.nan)
        losses[0, 0, :len(self.losses)] = self.losses
        momentum = float(self.optimizer.param_groups[0].get("momentum", 0.0) or 0.0)
        return FinderResult(self.ramp, (momentum,), losses, meta={"optimizer": type(self.optimizer).__name__})
