"""Train one model with one optimizer on exactly the sweep's data pipeline and objective.

>>> result = inertia.fit("digits", "mlp", optimizer="momentum", hyper={"lr": 0.05, "momentum": 0.9},
...                      schedules={"lr": "cosine"}, steps=500)          # doctest: +SKIP
>>> result.record()["val_accuracy_mean"]                                  # doctest: +SKIP

A sweep member and ``fit`` with the same settings see the same data: the
dataset of :func:`inertia.data.as_dataset` with ``seed``, and :mod:`inertia.pipeline`'s
folds (``folds=1``: a 20 % holdout), splits (with ``standardize`` the inputs
standardized with each fold's training part), minibatch at every step,
initialization (``torch.manual_seed(seed)``, then one model from the factory,
copied for every fold), dropout draws and evaluation. They minimize and measure through the same
:class:`~inertia.sweeps.objective.Objective` (any loss; accuracy, or RMSE and R²), and each fold's model
trains as one member of the sweep's stack would: the sweep's backend computes its loss, gradients and
outputs, and the optimizer applies the rule elementwise (its simple path). So ``fit`` gives a sweep
member's numbers to the bit, in float32 too, where torch's own recurrent, attention and fused optimizer
kernels would round differently and an unstable configuration would amplify that. It prints nothing:
``on_step`` lets a caller draw progress or log.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from . import rules
from . import schedules as S
from .core import is_schedule, member_hyper
from .data import as_dataset
from .models import model_factory
from .optim import make_optimizer
from .pipeline import Split, batch_at, draw_stream, input_dtype, make_folds, make_splits, measure, seeded_models
from .sweeps.backends import AutogradStep, BatchedMLP
from .sweeps.engine import StackBackend, stack_backend, step_seed
from .sweeps.lanes import subnormals_flushed
from .sweeps.objective import LOSSES, Objective, check_model, data_task, make_objective
from .threads import choose_threads, step_flops, use_threads


@dataclass(frozen=True)
class FitStep:
    """What ``on_step`` gets after each update: the optimizer still holds the values used for it."""

    fold: int
    step: int            # 0-based, within the fold
    loss: Tensor         # the minibatch's mean loss before the update
    optimizer: torch.optim.Optimizer
    seed: int            # the fold's seed (``seed + s`` for a fit's seed s)


PARTS = ("val", "test", "train")
"""Where a fold's model is measured: its validation part, the test set, its whole training part."""


@dataclass(frozen=True)
class FoldResult:
    """Metrics of one fold's model after the last step: ``metrics["val_loss"]``, ``["test_rmse"]``, ..."""

    metrics: dict[str, float]   # {part}_{metric} for each part of PARTS and metric of the task
    last_loss: float            # the last minibatch's loss (the sweep's train_loss_final)

    def as_dict(self) -> dict[str, float]:
        return {**self.metrics, "last_loss": self.last_loss}


@dataclass(frozen=True)
class FitResult:
    """One :class:`FoldResult` (and trained model) per fold; :meth:`record` summarizes them as the sweep does."""

    folds: list[FoldResult]
    hyperparameters: dict[str, Any]   # the rule's full hyperparameters
    seconds: float
    device: str
    metrics: tuple[str, ...] = ("loss", "accuracy")   # the task's (Objective.metrics)
    models: list[nn.Module] = field(default_factory=list, repr=False)   # per fold (inputs as it saw them)

    def record(self) -> dict[str, float]:
        """``{val,test,train}_{metric}_{mean,std}`` over folds (std with 1/K) and ``train_loss_final``."""
        out: dict[str, float] = {}
        for prefix in PARTS:
            for metric in self.metrics:
                values = torch.tensor([f.metrics[f"{prefix}_{metric}"] for f in self.folds], dtype=torch.float64)
                out[f"{prefix}_{metric}_mean"] = float(values.mean())
                out[f"{prefix}_{metric}_std"] = float(values.std(unbiased=False))
        out["train_loss_final"] = sum(f.last_loss for f in self.folds) / len(self.folds)
        return out


def fit(
    data: Any = "mnist1d",
    model: Any = "mlp",
    *,
    optimizer: str = "momentum",
    hyper: Mapping[str, Any] | None = None,
    schedules: Mapping[str, Any] | None = None,
    steps: int = 2000,
    batch_size: int = 100,
    folds: int = 1,
    seed: int = 0,
    seeds: int = 1,
    loss: Any = "auto",
    standardize: bool = False,
    model_args: Mapping[str, Any] | None = None,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[FitStep], None] | None = None,
    threads: int | None = None,
) -> FitResult:
    """Train one model per fold (all from one initialization) and return their metrics.

    Args:
        data, model: as :func:`inertia.sweep` takes them (a name, path, Dataset or arrays;
            a model name or factory).
        optimizer: a registered rule name; ``hyper``: its hyperparameters (the rest keep
            the rule's defaults).
        schedules: hyperparameter name -> schedule, as the sweep takes them
            (:func:`inertia.core.with_schedules`): a spec (``"cosine"``, ``"sutskever_ramp(0.99)"``;
            the hyperparameter's value is its base) or a schedule; for a tuple hyperparameter
            (Adam's ``betas``) a tuple with one of those or None per component.
        folds: K models on K-fold cross-validation (1: one model on a 20 % holdout).
        seeds: the folds trained again from seeds ``seed + 1``, ... (as a sweep's ``seeds``: each its own
            initialization, batch order and folds); the metrics are over every seed and fold.
        loss: as :func:`inertia.sweep` takes it (``auto``: cross-entropy for integer labels,
            mse for float targets; a name of :data:`~inertia.sweeps.objective.LOSSES`; a callable).
        standardize: standardize the inputs with the statistics of each fold's training part.
        model_args: keyword arguments of the model factory, as :func:`inertia.sweep` takes them.
        on_step: called with a :class:`FitStep` after every update.
        threads: torch's intra-op threads while training (restored after); None: ``OMP_NUM_THREADS`` if
            set, else one for a small model and the free cores for a large one (:mod:`inertia.threads`).

    Every argument is checked before data is loaded; bad ones raise ValueError naming them.
    """
    plan = _plan(optimizer, dict(hyper or {}), dict(schedules or {}), steps, batch_size, folds, device, loss)
    choose_threads(0.0, threads)   # a bad count fails here, before the data is loaded
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    dataset = as_dataset(data, seed=seed, task=data_task(loss))
    objective = make_objective(loss, dataset.y_train)
    factory = model_factory(model, dataset, model_args)
    started = time.perf_counter()
    templates = seeded_models(factory, seed, seeds, plan.device, dtype)
    x_dtype = input_dtype(templates[0], dataset.x_train.to(plan.device), dtype, dataset.x_test)
    x, y = dataset.x_train.to(plan.device, x_dtype), objective.target(dataset.y_train, dtype).to(plan.device)
    x_test, y_test = dataset.x_test.to(plan.device, x_dtype), objective.target(dataset.y_test, dtype).to(plan.device)
    check_model(objective, templates[0], x, y, dataset.outputs if objective.name == "cross_entropy" else None)
    splits = make_splits(x, x_test, make_folds(len(y), folds, seed), seed, seeds, standardize)
    backend = stack_backend("auto", templates[0], objective, x, y, plan.batch_size)
    results, models = [], []
    previous = use_threads(choose_threads(step_flops(templates[0], x[:plan.batch_size]), threads))
    try:
        with subnormals_flushed():   # as the sweep's lanes train
            for split in splits:
                net = copy.deepcopy(templates[split.seed - seed])
                member = _Member(net, backend)
                opt, last_loss = _train_fold(member, plan, split, y, seed, on_step)
                results.append(_evaluate_fold(member, opt, objective, last_loss, split, y, y_test))
                models.append(net)
    finally:
        use_threads(previous)
    return FitResult(results, plan.full, time.perf_counter() - started, str(plan.device), objective.metrics, models)


@dataclass(frozen=True)
class _Plan:
    """The checked settings of one fit: what every fold's training needs besides data."""

    optimizer: str
    hyper: dict[str, Any]
    full: dict[str, Any]
    schedules: dict[str, Any]       # name -> Schedule (or tuple of Schedule/None)
    steps: int
    batch_size: int
    device: torch.device


def _plan(optimizer: str, hyper: dict[str, Any], schedules: dict[str, Any], steps: int, batch_size: int,
          folds: int, device: str | None, loss: Any = "auto") -> _Plan:
    """Check every setting (no data needed) and build the schedules as the sweep does."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("folds", folds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(loss, str) and loss != "auto" and loss not in LOSSES:
        raise ValueError(f"loss: unknown loss {loss!r}; known: auto, {', '.join(LOSSES)}")
    preset = rules.get(optimizer)
    if preset.tuner is not None:
        from .rules.tuned import check_tuned_names

        check_tuned_names(preset.name, given=hyper, scheduled=schedules)
    values = member_hyper(preset, [hyper], schedules=schedules, steps=steps).values
    built = {name: _driven(values[name]) for name in schedules}
    return _Plan(optimizer, hyper, preset.hyper(**hyper), built, steps, batch_size, _device(device))


def _driven(value: Any) -> Any:
    """A schedule for :class:`~inertia.schedules.HyperScheduler`: a tuple's unscheduled parts become None."""
    return tuple(v if is_schedule(v) else None for v in value) if isinstance(value, tuple) else value


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    return device


class _Member:
    """A fold's model trained as one member of a sweep's stack: the sweep's backend (:class:`StackBackend`)
    computes its loss and gradients on a stack of one (padded as the sweep pads it) and its outputs, and the
    optimizer applies the rule on its simple path, elementwise, as the sweep applies it to its members. So
    ``fit`` gives a sweep member's numbers to the bit: torch's fused recurrent and attention kernels, and
    its fused optimizer kernels, round differently, and an unstable configuration amplifies a last-bit
    difference over hundreds of steps into percents."""

    def __init__(self, net: nn.Module, backend: StackBackend):
        self.net = net
        self._train: BatchedMLP | AutogradStep = backend.make_step()
        self._eval: BatchedMLP | AutogradStep = backend.make_step()

    def _stacked(self) -> tuple[list[Tensor], list[Tensor]]:
        """The parameters (detached) and buffers (views: the backend updates running statistics in place)."""
        return ([p.detach().unsqueeze(0) for p in self.net.parameters()],
                [b.unsqueeze(0) for b in self.net.buffers()])

    def loss(self, x: Tensor, y: Tensor, stream: int, seed: int) -> Tensor:
        """The minibatch's mean loss (dropout drawn from ``stream``, any other draw seeded with ``seed``);
        the parameters' ``.grad`` set to its gradient."""
        params, buffers = self._stacked()
        streams = torch.tensor([stream], dtype=torch.int64, device=x.device)
        loss = self._train.loss(params, buffers, [(x, 0, 1)], y.unsqueeze(0), seed=seed, streams=streams)
        owners = list(self.net.parameters())

        def keep(i: int, grad: Tensor) -> None:
            if owners[i].requires_grad:   # a frozen parameter stays as it is
                owners[i].grad = grad[0].clone()   # (the batched MLP reuses its gradient buffers)

        self._train.backward(keep)
        return loss[0]

    @torch.no_grad()
    def outputs(self, x: Tensor) -> Tensor:
        """Outputs ``[1, B, ...]`` in eval mode."""
        params, buffers = self._stacked()
        return self._eval.outputs(params, buffers, [(x, 0, 1)])


def _train_fold(member: _Member, plan: _Plan, split: Split, y: Tensor, seed: int,
                on_step: Callable[[FitStep], None] | None) -> tuple[torch.optim.Optimizer, float]:
    """``plan.steps`` updates on the split's minibatches (train mode); returns the optimizer and the last loss.

    A non-finite gradient at any step, the last included, raises :class:`~inertia.NonFiniteGradientError`."""
    opt = make_optimizer(plan.optimizer, member.net.parameters(), execution="simple", **plan.hyper)
    scheduler = S.HyperScheduler(opt, **plan.schedules) if plan.schedules else None
    loss = torch.tensor(math.nan)
    for step in range(plan.steps):
        batch = batch_at(split.cpu_train, step, plan.batch_size, split.seed, split.fold).to(split.x.device)
        loss = member.loss(split.x.index_select(0, batch), y.index_select(0, batch),
                           draw_stream(split.seed, split.fold, step), step_seed(seed, step))
        opt.step()
        if on_step is not None:
            on_step(FitStep(split.fold, step, loss.detach(), opt, split.seed))
        if scheduler is not None:
            scheduler.step()
    opt.check_nonfinite()  # a non-finite gradient of the last step is reported too
    return opt, float(loss.detach())


def _evaluate_fold(member: _Member, opt: torch.optim.Optimizer, objective: Objective, last_loss: float,
                   split: Split, y: Tensor, y_test: Tensor) -> FoldResult:
    """Metrics at the rule's evaluation point (Schedule-Free: ``optimizer.eval()``, then back to train)."""
    switch = callable(getattr(opt, "eval", None))
    if switch:
        opt.eval()
    parts = {"val": (split.x[split.val], y[split.val]), "test": (split.x_test, y_test),
             "train": (split.x[split.train], y[split.train])}
    metrics = {f"{part}_{name}": float(value) for part in PARTS
               for name, value in zip(objective.metrics, evaluate(member, objective, *parts[part]))}
    if switch:
        opt.train()
    return FoldResult(metrics, last_loss)


def evaluate(member: _Member, objective: Objective, x: Tensor, y: Tensor, chunk: int = 512) -> Tensor:
    """The metrics ``[len(objective.metrics)]`` of a member on ``(x, y)`` in eval mode, as the sweep measures them."""
    return measure(member.outputs, objective, x, y, 1, chunk)[0]
