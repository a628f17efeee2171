"""A sweep as four small frozen specs: what to train, how to train, how to search, where and how to run.

:class:`TaskSpec`, :class:`TrainSpec` and :class:`SearchSpec` change the numbers, so together they
make the study's signature (a study in storage holds one signature; a different one is a different
sweep). :class:`RunSpec` (storage, lanes, checkpoints, memory) never changes a number and stays out.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

import torch

from .._grid import check_grid_size, check_trials, parse_values
from ..core import check_members, check_names
from .selection import SELECTIONS

SAMPLERS = ("grid", "random", "tpe")
LANES = ("auto", "processes", "threads")   # where side-by-side stacks run
BACKENDS = ("auto", "batched", "conv", "vmap")   # how a stack computes (inertia.sweeps.backends)
METRICS = {"val_loss": ("val_loss_mean", "minimize"), "val_accuracy": ("val_accuracy_mean", "maximize"),
           "val_rmse": ("val_rmse_mean", "minimize"), "val_r2": ("val_r2_mean", "maximize")}

DEFAULT_MOMENTA = (0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
"""The momentum grid swept when none is given (for rules that have a momentum)."""
DEFAULT_LRS = "1e-3:1:8"
"""The learning rates swept when none are given (for rules that no tuner drives)."""


def _values(name: str, value: Any) -> tuple[float, ...]:
    """``value`` as finite numbers, each once (in the order given)."""
    if isinstance(value, str):
        values = parse_values(value, name)
    elif isinstance(value, (int, float)):
        values = [float(value)]
    elif isinstance(value, torch.Tensor):
        values = [float(v) for v in value.reshape(-1)]
    else:
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected numbers, got {value!r}") from None
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name}: values must be finite numbers, got {bad[0]!r}")
    return tuple(dict.fromkeys(values))




def grid_points(space: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """The Cartesian product of ``space`` (insertion order of names, values as given)."""
    points: list[dict[str, float]] = [{}]
    for name, values in space.items():
        points = [{**p, name: float(v)} for p in points for v in values]
    return points


def _counts(spec: Any, *names: str) -> None:
    """The fields ``names`` of ``spec`` must be integers (None stays None): ``steps=1.7``, ``"10"`` or ``True``
    is an error, not 1, 10 or 1 step."""
    for name in names:
        value = getattr(spec, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value is not None:
            object.__setattr__(spec, name, int(value))


def _dtype(value: Any) -> torch.dtype:
    """A floating torch dtype, or its name (``"float32"``)."""
    dtype = getattr(torch, value, None) if isinstance(value, str) else value
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch dtype or its name (float32, float64, ...), got {value!r}")
    return dtype


def _cast(spec: Any, kind: type, *names: str) -> None:
    """Convert the fields ``names`` of a frozen ``spec`` to ``kind`` (None stays None)."""
    for name in names:
        value = getattr(spec, name)
        if value is not None:
            object.__setattr__(spec, name, kind(value))


@dataclass(frozen=True)
class TaskSpec:
    """What to train: the data, the model, the rule, its swept and fixed hyperparameters, their schedules.

    ``space``: swept name -> values (random/TPE: the range min..max). ``schedules``: hyperparameter
    name -> schedule spec, a string (``"cosine"``, ``"sutskever_ramp(0.99)"``) or a schedule object.
    ``loss``: ``auto`` (cross-entropy for integer labels, mse for float targets), a name in
    :data:`inertia.sweeps.objective.LOSSES`, or a callable ``loss(output, target)``.
    Build one from lists or ``"start:stop:count"`` texts with :meth:`from_values`.
    """

    data: Any = "mnist1d"
    model: Any = "mlp"
    optimizer: str = "momentum"
    space: Mapping[str, Any] = field(default_factory=lambda: {"lr": DEFAULT_LRS, "momentum": DEFAULT_MOMENTA})
    fixed: Mapping[str, Any] = field(default_factory=dict)
    schedules: Mapping[str, Any] = field(default_factory=dict)
    loss: Any = "auto"
    model_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .. import rules
        from .objective import LOSSES

        if isinstance(self.loss, str) and self.loss != "auto" and self.loss not in LOSSES:
            raise ValueError(f"loss: unknown loss {self.loss!r}; known: auto, {', '.join(LOSSES)}")

        object.__setattr__(self, "space", {str(n): _values(str(n), vs) for n, vs in self.space.items()})
        object.__setattr__(self, "fixed", dict(self.fixed))
        object.__setattr__(self, "schedules", dict(self.schedules))
        object.__setattr__(self, "model_args", dict(self.model_args))
        preset = rules.get(self.optimizer)
        if preset.tuner is not None:
            _tuned_space(self, preset)
        if not self.space:
            raise ValueError("the grid is empty: give lr and/or momentum values")
        both = [n for n in self.fixed if n in self.space]
        if both:
            raise ValueError(f"{both[0]} is swept; it cannot also be fixed ({both[0]}={self.fixed[both[0]]!r})")
        empty = [n for n, vs in self.space.items() if not vs]
        if empty:
            raise ValueError(f"{empty[0]}: the grid is empty (no values given)")
        check_grid_size({name: len(vs) for name, vs in self.space.items()})
        check_names(preset, [*self.space, *self.fixed], numeric=[*self.space, *self.schedules])
        check_members(preset, self.members(), columns=list(self.space))   # negative lr, momentum >= 1, ...
        if "lr" in self.space and min(self.space["lr"]) <= 0:
            raise ValueError(f"lr must be > 0 in a sweep, got {min(self.space['lr'])!r}")

    @classmethod
    def from_values(cls, data: Any = "mnist1d", model: Any = "mlp", *, optimizer: str = "momentum",
                    lr: Any = DEFAULT_LRS, momentum: Any = DEFAULT_MOMENTA, hyper: Mapping[str, Any] | None = None,
                    fixed: Mapping[str, Any] | None = None, schedules: Mapping[str, Any] | None = None,
                    loss: Any = "auto", model_args: Mapping[str, Any] | None = None) -> "TaskSpec":
        """The grid ``lr x momentum (x hyper)``; each a list, a number or ``"start:stop:count"``.

        The default momentum grid applies only to rules that have a momentum (adam sweeps lr alone); neither
        default applies to a tuned rule (``yellowfin``), which sets lr and momentum itself.
        """
        from .. import rules

        tuned = rules.get(optimizer).tuner is not None
        if momentum is DEFAULT_MOMENTA:
            momentum = None if tuned else _valid_defaults(optimizer, "momentum", DEFAULT_MOMENTA)
        if lr is DEFAULT_LRS and tuned:
            lr = None
        twice = [name for name in (hyper or {}) if name in ("lr", "momentum")]
        if twice:
            raise ValueError(f"{twice[0]}: give its values as {twice[0]}=... (--{twice[0]}), not among the other "
                             f"hyperparameters (--hyper {twice[0]}=...)")
        named = (("lr", lr), ("momentum", momentum), *(hyper or {}).items())
        space = {name: value for name, value in named if value is not None}
        return cls(data, model, optimizer, space, dict(fixed or {}), dict(schedules or {}), loss, dict(model_args or {}))

    @property
    def points(self) -> list[dict[str, float]]:
        return grid_points(self.space)

    def members(self) -> list[dict[str, Any]]:
        """Each point of the grid with the fixed hyperparameters: what :func:`inertia.core.member_hyper` takes."""
        return [{**self.fixed, **point} for point in self.points]


def _tuned_space(task: "TaskSpec", preset: Any) -> None:
    """A tuned rule's grid (:mod:`inertia.rules.tuned`): lr and momentum are the tuner's; with nothing swept,
    the one point ``beta`` (fixed or the default), so a sweep of seeds alone is one configuration."""
    from ..rules.tuned import check_tuned_names

    check_tuned_names(preset.name, swept=task.space, given=task.fixed, scheduled=task.schedules)
    if not task.space:
        fixed = dict(task.fixed)
        object.__setattr__(task, "space", {"beta": (float(fixed.pop("beta", preset.defaults["beta"])),)})
        object.__setattr__(task, "fixed", fixed)


def _valid_defaults(optimizer: str, name: str, values: Sequence[float]) -> tuple[float, ...] | None:
    """The default ``values`` of ``name`` that ``optimizer`` accepts (None: it has no such hyperparameter).

    A default must never be invalid for the rule it is applied to (Schedule-Free rejects momentum 0)."""
    from .. import rules

    preset = rules.get(optimizer)
    if name not in preset.rule.numeric:
        return None
    ok = []
    for v in values:
        try:
            preset.hyper(**{name: v})
            ok.append(v)
        except (ValueError, TypeError):
            pass
    return tuple(ok) or None


@dataclass(frozen=True)
class TrainSpec:
    """How to train: steps, minibatch, folds (1: a 20 % holdout), seed, dtype, device, backend, divergence.

    ``seeds``: every configuration is trained from this many initializations and batch orders at
    once (seed ``seed + s`` for seed ``s``: its initialization, batches and folds); 3 by default, so
    that a ranking is not one seed's luck.

    ``device``: None picks cuda when available. ``backend``: one of :data:`BACKENDS`.
    ``diverge_factor``: a loss above this x its first value counts as diverged. ``standardize``: the
    inputs standardized with the statistics of each split's training part (never its validation part).
    """

    steps: int = 2000
    batch_size: int = 100
    folds: int = 1
    seed: int = 0
    seeds: int = 3
    dtype: torch.dtype = torch.float32
    device: str | None = None
    backend: str = "auto"
    diverge_factor: float = 10.0
    standardize: bool = False

    def __post_init__(self) -> None:
        _counts(self, "steps", "batch_size", "folds", "seed", "seeds")
        object.__setattr__(self, "dtype", _dtype(self.dtype))
        _cast(self, bool, "standardize")
        _cast(self, float, "diverge_factor")
        for name in ("steps", "batch_size", "folds", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not (math.isfinite(self.diverge_factor) and self.diverge_factor > 1):
            raise ValueError(f"diverge_factor must be a finite number > 1, got {self.diverge_factor}")
        if self.device is not None:
            _check_device(str(self.device))
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")


@dataclass(frozen=True)
class SearchSpec:
    """How to search: the sampler, how many trials, the pruner, the metric that picks the best.

    ``sampler``: ``grid`` (every point once), ``random`` or ``tpe`` (``trials`` points in the ranges
    spanned by the given values; lr log-uniform). ``pruner``: None, ``"median"``, ``"hyperband"``,
    ``"successive_halving"``, ``"percentile"`` or an Optuna pruner; it sees the mean validation
    metric over folds every ``eval_every`` steps (None: a tenth of the steps).
    ``metric``: ``val_loss``, ``val_rmse`` (minimized), ``val_accuracy``, ``val_r2`` (maximized), or
    ``auto``: accuracy for classification, the loss for regression. ``select``: ``best``
    scores each configuration at its evaluation point with the best metric (early stopping),
    ``final`` at its last step (:mod:`.selection`).
    """

    sampler: str = "grid"
    trials: int | None = None
    pruner: Any = None
    metric: str = "auto"
    eval_every: int | None = None
    select: str = "best"
    round_size: int | None = None

    def __post_init__(self) -> None:
        _counts(self, "trials", "eval_every", "round_size")
        _check_pruner(self.pruner)
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.pruner is False or self.pruner == "none":
            object.__setattr__(self, "pruner", None)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.metric != "auto" and self.metric not in METRICS:
            raise ValueError(f"metric must be one of auto, {', '.join(METRICS)}, got {self.metric!r}")
        if self.sampler != "grid" and (self.trials is None or self.trials < 1):
            raise ValueError(f"the {self.sampler} sampler needs trials >= 1, got trials={self.trials!r}")
        if self.trials is not None:
            check_trials(self.trials)
        if self.sampler == "grid" and self.trials is not None:
            raise ValueError(f"trials={self.trials} is for the random and tpe samplers; the grid trains every point")
        for name in ("eval_every", "round_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def rounds(self, budget: int) -> int:
        """Configurations claimed (and, by TPE, asked) at once: ``round_size``, or by default a quarter
        of the ``budget`` for random/TPE (at least 1), so that TPE and pruners learn from earlier rounds,
        and half of a grid, so that a second worker gets a share while a round's stacks stay as large as
        the lanes train best (:data:`inertia.sweeps.lanes.CPU_STACK_MEMBERS`)."""
        return self.round_size or max(1, math.ceil(budget / (2 if self.sampler == "grid" else 4)))


def _check_pruner(pruner: Any) -> None:
    """None, False, a pruner's name (checked when it is made) or an Optuna pruner (an object with
    ``prune(study, trial)``, as ``optuna.pruners.BasePruner`` has; Optuna loads in :mod:`.study` only)."""
    if pruner is None or pruner is False or isinstance(pruner, str):
        return
    if not callable(getattr(pruner, "prune", None)):
        raise ValueError(f"pruner must be a name (median, hyperband, ...) or an optuna.pruners pruner, got {pruner!r}")


@dataclass(frozen=True)
class RunSpec:
    """Where and how to run; nothing here changes a number.

    ``out``: folder for the SQLite study and checkpoints (one folder = one sweep; a restart resumes).
    ``storage``: an Optuna storage URL instead (e.g. PostgreSQL shared by several workers).
    ``checkpoint_every``: seconds between checkpoints. ``parallel``: stacks trained side by side
    (default on CPU: one per free core; 1 on GPU). ``lanes``: where they run, ``processes``
    (forked, Linux), ``threads`` or ``auto``. ``memory_budget`` (bytes) and ``max_batch`` bound how
    many configurations are claimed at once. ``threads``: torch's intra-op threads in this process,
    and at most as many lanes (None: :func:`inertia.threads.choose_threads` from the work's size).
    ``edge``: also measure λ_max at initialization, for heavy ball's stability edge on the pictures
    (:func:`inertia.sweeps.edge.stability_edge`; it changes no trained number).
    """

    out: str | os.PathLike | None = None
    storage: str | None = None
    study_name: str = "sweep"
    checkpoint_every: float = 60.0
    lanes: str = "auto"
    parallel: int | None = None
    memory_budget: int | None = None
    max_batch: int | None = None
    wait: bool = True
    threads: int | None = None
    edge: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.edge, bool):
            raise ValueError(f"edge must be True or False, got {self.edge!r}")
        _cast(self, float, "checkpoint_every")
        _counts(self, "parallel", "max_batch", "threads")
        _cast(self, int, "memory_budget")
        if self.out is not None and not isinstance(self.out, (str, os.PathLike)):
            raise ValueError(f"out must be a folder path, got {self.out!r}")
        if self.lanes not in LANES:
            raise ValueError(f"lanes must be one of {', '.join(LANES)}, got {self.lanes!r}")
        if not (math.isfinite(self.checkpoint_every) and self.checkpoint_every > 0):
            raise ValueError(f"checkpoint_every must be a finite number of seconds > 0, got {self.checkpoint_every}")
        for name in ("parallel", "memory_budget", "max_batch", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("out", "storage", "study_name"):
            if getattr(self, name) is not None and not str(os.fspath(getattr(self, name))).strip():
                raise ValueError(f"{name} must not be empty")
        if self.out is not None and os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ValueError(f"out {os.fspath(self.out)!r} is a file, not a folder")


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: the four specs together."""

    task: TaskSpec = field(default_factory=TaskSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    run: RunSpec = field(default_factory=RunSpec)

    def __post_init__(self) -> None:
        every = self.search.eval_every
        if every is not None and every > self.train.steps:
            raise ValueError(f"eval_every ({every}) is above the step count ({self.train.steps})")
        size, budget = self.search.round_size, self.configurations
        if size is not None and size > budget:
            raise ValueError(f"round_size ({size}) is larger than the sweep's {budget} configurations")

    @classmethod
    def from_settings(cls, task: TaskSpec, settings: Mapping[str, Any]) -> "SweepSpec":
        """``task`` plus keyword ``settings``, each routed to the spec that has a field of its name."""
        owners = {f.name: spec for spec in (TrainSpec, SearchSpec, RunSpec) for f in fields(spec)}
        unknown = [name for name in settings if name not in owners]
        if unknown:
            raise TypeError(f"unknown sweep setting(s) {unknown}{_hint(unknown)}; known: {', '.join(owners)}")
        made = [spec(**{k: v for k, v in settings.items() if owners[k] is spec})
                for spec in (TrainSpec, SearchSpec, RunSpec)]
        return cls(task, *made)

    def signature(self) -> dict[str, Any]:
        """Everything that changes the numbers, as plain data (must match when a study resumes); a
        grid's values are sorted: the same grid given in another order is the same sweep."""
        task = {**as_plain(self.task), "space": {n: sorted(vs) for n, vs in self.task.space.items()}}
        return {**task, **as_plain(self.train), **as_plain(self.search)}

    def flat(self) -> dict[str, Any]:
        """Every setting of every spec, as plain data, in one dict."""
        return {**self.signature(), **as_plain(self.run)}

    @property
    def configurations(self) -> int:
        """How many configurations the search trains in all."""
        return len(self.task.points) if self.search.sampler == "grid" else int(self.search.trials)

    def resolved(self, **task: Any) -> "SweepSpec":
        """This sweep with the task's fields in ``task``, the device picked, ``eval_every`` set and an
        ``auto`` metric made the task's (``val_accuracy`` for classification, ``val_loss`` else)."""
        train = replace(self.train, device=self.train.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        search = self.search
        if search.metric == "auto" and task.get("data") is not None:   # accuracy, or the loss for regression
            from .objective import make_objective

            kind = make_objective(task.get("loss", self.task.loss), task["data"].y_train).task
            search = replace(search, metric="val_accuracy" if kind == "classification" else "val_loss")
        if search.eval_every is None:
            search = replace(search, eval_every=max(1, train.steps // 10))
        return replace(self, task=replace(self.task, **task), train=train, search=search)


_MOVED = {"tensorboard": "write the runs with inertia.tensorboard.write_sweep(results, logdir)"}


def _hint(unknown: Sequence[str]) -> str:
    hints = [_MOVED[name] for name in unknown if name in _MOVED]
    return f" ({'; '.join(hints)})" if hints else ""


def signature_difference(stored: str, asked: str) -> str:
    """What differs between two signatures (JSON texts, :meth:`SweepSpec.signature`), each setting with
    both values: ``steps: 300 stored, 500 asked``; nested settings by their path (``space.lr``)."""
    import json

    def flat(value: Any, path: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            return {path: value}
        return {k: v for name, item in value.items() for k, v in flat(item, f"{path}.{name}" if path else name).items()}

    try:
        old, new = flat(json.loads(stored)), flat(json.loads(asked))
    except ValueError:
        return f"stored {stored}, asked {asked}"
    unset = object()
    shown = [f"{key}: {'unset' if old.get(key, unset) is unset else json.dumps(old[key])} stored, "
             f"{'unset' if new.get(key, unset) is unset else json.dumps(new[key])} asked"
             for key in sorted(old.keys() | new.keys()) if old.get(key, unset) != new.get(key, unset)]
    return "; ".join(shown) or "the same settings in another form"


def as_plain(spec: Any) -> dict[str, Any]:
    """A spec's fields as JSON-ready data (:func:`plain`)."""
    return {f.name: plain(getattr(spec, f.name)) for f in fields(spec)}


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: containers kept; a dataset by its name, a function or class by its
    ``__name__``, an object with its own ``repr`` (a schedule, a dtype) by it, any other by its class."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(getattr(value, "name", None), str):
        return value.name
    if hasattr(value, "__name__"):
        return value.__name__
    if type(value).__repr__ is not object.__repr__:
        return repr(value)
    return type(value).__name__
