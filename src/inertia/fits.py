"""Train one model with one optimizer on exactly the sweep's data pipeline.

>>> result = inertia.fit("digits", "mlp", optimizer="momentum", hyper={"lr": 0.05, "momentum": 0.9},
...                      schedules={"lr": "cosine"}, steps=500)          # doctest: +SKIP
>>> result.record()["val_accuracy_mean"]                                  # doctest: +SKIP

A sweep member and ``fit`` with the same settings see the same data: the
dataset of :func:`inertia.data.load_dataset` with ``seed``, the folds of
:func:`~inertia.sweeps.engine.make_folds` (``folds=1``: a 20 % holdout), the
minibatch of :func:`~inertia.sweeps.engine.batch_at` at every step, and the same
initialization (``torch.manual_seed(seed)``, then one model from the factory,
copied for every fold). So ``fit`` reproduces a sweep's record up to float
rounding. It prints nothing: ``on_step`` lets a caller draw progress or log.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rules
from . import schedules as S
from .core import is_scheduled, validate_schedules, with_schedules
from .optim import make_optimizer
from .sweeps import _load_data, _model_factory
from .sweeps.engine import batch_at, make_folds


@dataclass(frozen=True)
class FitStep:
    """What ``on_step`` gets after each update: the optimizer still holds the values used for it."""

    fold: int
    step: int            # 0-based, within the fold
    loss: Tensor         # the minibatch's mean cross-entropy before the update
    optimizer: torch.optim.Optimizer


@dataclass(frozen=True)
class FoldResult:
    """Metrics of one fold's model after the last step (mean cross-entropy, accuracy)."""

    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    train_loss: float        # on the fold's whole training part
    train_accuracy: float
    last_loss: float         # the last minibatch's loss (the sweep's train_loss_final)


@dataclass(frozen=True)
class FitResult:
    """One :class:`FoldResult` per fold; :meth:`record` summarizes them as the sweep does."""

    folds: list[FoldResult]
    hyperparameters: dict[str, Any]   # the rule's full hyperparameters
    seconds: float
    device: str

    def record(self) -> dict[str, float]:
        """``{val,test,train}_{loss,accuracy}_{mean,std}`` over folds (std with 1/K) and ``train_loss_final``."""
        out: dict[str, float] = {}
        for prefix in ("val", "test", "train"):
            for metric in ("loss", "accuracy"):
                values = torch.tensor([getattr(f, f"{prefix}_{metric}") for f in self.folds], dtype=torch.float64)
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
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[FitStep], None] | None = None,
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
        on_step: called with a :class:`FitStep` after every update.

    Every argument is checked before data is loaded; bad ones raise ValueError naming them.
    """
    plan = _plan(optimizer, dict(hyper or {}), dict(schedules or {}), steps, batch_size, folds, device)
    dataset = _load_data(data, seed)
    factory = _model_factory(model, dataset.features, dataset.classes)
    fold_idx = make_folds(len(dataset.y_train), folds, seed)
    torch.manual_seed(seed)
    template = factory().to(device=plan.device, dtype=dtype)
    x, y = dataset.x_train.to(plan.device, dtype), dataset.y_train.to(plan.device)
    x_test, y_test = dataset.x_test.to(plan.device, dtype), dataset.y_test.to(plan.device)
    started = time.perf_counter()
    results = []
    for k, (train_idx, val_idx) in enumerate(fold_idx):
        net = copy.deepcopy(template)
        opt, last_loss = _train_fold(net, plan, x, y, train_idx, seed, k, on_step)
        results.append(_evaluate_fold(net, opt, last_loss, (x, y), (train_idx, val_idx), (x_test, y_test)))
    return FitResult(results, plan.full, time.perf_counter() - started, str(plan.device))


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
          folds: int, device: str | None) -> _Plan:
    """Check every setting (no data needed) and build the schedules as the sweep does."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("folds", folds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    preset = rules.get(optimizer)
    unknown = sorted(set(hyper) - set(preset.defaults))
    if unknown:
        raise ValueError(f"{optimizer}: unknown hyperparameter(s) {unknown}; known: {sorted(preset.defaults)}")
    full = preset.hyper(**hyper)
    values = with_schedules(preset.rule, full, schedules, steps)
    validate_schedules(preset.rule, values, steps)
    built = {name: _driven(values[name]) for name in schedules}
    return _Plan(optimizer, hyper, full, built, steps, batch_size, _device(device))


def _driven(value: Any) -> Any:
    """A schedule for :class:`~inertia.schedules.HyperScheduler`: a tuple's unscheduled parts become None."""
    return tuple(v if is_scheduled(v) else None for v in value) if isinstance(value, tuple) else value


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


def _train_fold(net: nn.Module, plan: _Plan, x: Tensor, y: Tensor, train_idx: Tensor, seed: int, fold: int,
                on_step: Callable[[FitStep], None] | None) -> tuple[torch.optim.Optimizer, float]:
    """``plan.steps`` updates on fold ``fold``'s minibatches; returns the optimizer and the last loss."""
    opt = make_optimizer(plan.optimizer, net.parameters(), **plan.hyper)
    scheduler = S.HyperScheduler(opt, **plan.schedules) if plan.schedules else None
    train_idx = train_idx.cpu()
    net.train()
    loss = torch.tensor(math.nan)
    for step in range(plan.steps):
        batch = batch_at(train_idx, step, plan.batch_size, seed, fold).to(x.device)
        loss = F.cross_entropy(net(x.index_select(0, batch)), y.index_select(0, batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(FitStep(fold, step, loss.detach(), opt))
        if scheduler is not None:
            scheduler.step()
    return opt, float(loss.detach())


def _evaluate_fold(net: nn.Module, opt: torch.optim.Optimizer, last_loss: float, pool: tuple[Tensor, Tensor],
                   split: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> FoldResult:
    """Metrics at the rule's evaluation point (Schedule-Free: ``optimizer.eval()``, then back to train)."""
    x, y = pool
    train_idx, val_idx = (i.to(x.device) for i in split)
    switch = callable(getattr(opt, "eval", None))
    if switch:
        opt.eval()
    val, tst, trn = (evaluate(net, x[val_idx], y[val_idx]), evaluate(net, *test),
                     evaluate(net, x[train_idx], y[train_idx]))
    if switch:
        opt.train()
    return FoldResult(*val, *tst, *trn, last_loss)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), chunk):
        logits = model(x[start:start + chunk])
        target = y[start:start + chunk]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum").double())
        correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    return loss_sum / len(y), correct / len(y)
