"""Sweeps: train every learning-rate x momentum configuration (x every fold) at once.

>>> results = inertia.sweep("digits", "mlp", lr=[0.01, 0.1], momentum=[0, 0.9], steps=200)
>>> results.best, results.table(), results.heatmap("heatmap.png")

:mod:`.engine` trains stacked members, :mod:`.search` asks Optuna what to train
and stores results (SQLite in ``out`` by default, or any database URL), and
:mod:`.results` holds what came back.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .engine import Job, Members, make_folds, train
from .gemm import openblas_core
from .results import SweepResults
from .search import LANES, METRICS, Search, StorageError, grid_points, records_from_study

SAMPLERS = ("grid", "random", "tpe")


def parse_values(text: str, name: str = "value") -> list[float]:
    """``"1e-3:1:8"`` -> 8 log-spaced values from 1e-3 to 1 (linear if a bound is <= 0); ``"0,0.9"`` -> list."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 1:
                raise ValueError(f"{name}: the count in start:stop:count must be >= 1, got {count}")
            if count == 1:
                return [start]
            if start > 0 and stop > 0:
                a, b = math.log10(start), math.log10(stop)
                return [10 ** (a + (b - a) * i / (count - 1)) for i in range(count)]
            return [start + (stop - start) * i / (count - 1) for i in range(count)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        if str(error).startswith(name):
            raise
        raise ValueError(f"{name}: expected start:stop:count (log-spaced) or a comma list of numbers, got {text!r}") from None


def _values(name: str, value: Any) -> list[float]:
    if isinstance(value, str):
        return parse_values(value, name)
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.reshape(-1)]
    return [float(v) for v in value]


def _load_data(data: Any, seed: int):
    from ..data import Dataset, load_dataset

    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 4:
        return Dataset("arrays", *[torch.as_tensor(a) for a in data])
    return load_dataset(str(data), seed=seed)


def _model_factory(model: Any, features: int, classes: int) -> tuple[Callable[[], nn.Module], str]:
    from ..models import build_model

    if isinstance(model, str):
        build_model(model, features, classes)  # unknown names fail here, before any training
        return (lambda: build_model(model, features, classes)), model
    if callable(model):
        try:
            probe = model(features, classes)
            return (lambda: model(features, classes)), getattr(model, "__name__", "custom")
        except TypeError:
            probe = model()
            if not isinstance(probe, nn.Module):
                raise TypeError("model must be a name, or a callable returning an nn.Module")
            return model, getattr(model, "__name__", "custom")
    raise TypeError(f"model must be a registered name or a callable returning an nn.Module, got {model!r}")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DEFAULT_MOMENTA = (0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
"""The momentum grid swept when none is given (for rules that have a momentum)."""


def sweep(
    data: Any = "mnist1d",
    model: Any = "mlp",
    *,
    lr: Any = "1e-3:1:8",
    momentum: Any = DEFAULT_MOMENTA,
    hyper: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
    optimizer: str = "momentum",
    steps: int = 2000,
    batch_size: int = 100,
    folds: int = 1,
    seed: int = 0,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    out: str | os.PathLike | None = None,
    storage: str | None = None,
    study_name: str = "sweep",
    sampler: str = "grid",
    trials: int | None = None,
    pruner: Any = None,
    eval_every: int | None = None,
    metric: str = "val_loss",
    checkpoint_every: float = 60.0,
    memory_budget: int | None = None,
    max_batch: int | None = None,
    parallel: int | None = None,
    lanes: str = "auto",
    backend: str = "auto",
    diverge_factor: float = 10.0,
    progress: bool | Callable[[int, int], None] = False,
    tensorboard: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResults:
    """Train every configuration of the grid ``lr x momentum (x hyper)`` at once and return the results.

    Args:
        data: ``"mnist1d"``, ``"digits"``, a ``.npz``/``.csv`` path, an
            :class:`inertia.data.Dataset`, or ``(x_train, y_train, x_test, y_test)``.
        model: a name from :data:`inertia.models.MODELS`, or a factory
            ``f(features, classes) -> nn.Module`` (or ``f() -> nn.Module``).
        lr, momentum: values: a list, a number, or ``"start:stop:count"`` (log-spaced).
        hyper: further swept hyperparameters of the rule, name -> values.
        fixed: hyperparameters shared by every configuration (e.g. ``nesterov``).
        optimizer: a registered rule name (``momentum``, ``nesterov``, ``sgd``, ...).
        folds: K-fold cross-validation on the training set (1: a 20 % holdout).
        out: folder for the SQLite study, checkpoints and outputs (one folder = one sweep);
            a restarted sweep with the same ``out`` resumes.
        storage: an Optuna storage URL instead of ``out``'s SQLite file (e.g. PostgreSQL
            shared by several workers).
        sampler: ``grid`` (every point once), ``random`` or ``tpe`` (``trials`` points in the
            ranges spanned by the given values; lr log-uniform).
        pruner: None, ``"median"``, ``"hyperband"``, ``"successive_halving"``, ``"percentile"``
            or an Optuna pruner; sees the mean validation loss over folds every ``eval_every`` steps.
        metric: ``val_loss`` (minimized) or ``val_accuracy`` (maximized) picks the best.
        parallel: stacks trained side by side (default on CPU: one per torch thread, each
            single-threaded; 1 on GPU). The numbers do not depend on it.
        lanes: where those stacks run: ``processes`` (forked children: no GIL between them;
            Linux), ``threads``, or ``auto`` (processes on Linux). The numbers do not depend on it.
        max_batch: at most this many configurations claimed at once (default: what fits in memory).
        progress: True draws a progress bar; a function ``f(done, total)`` is called instead, in
            configuration-steps (each stack's step x its configurations) of this worker.
    """
    from .. import rules

    log = log or (lambda message: None)
    # ---- validate everything before anything is opened or trained
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if lanes not in LANES:
        raise ValueError(f"lanes must be one of {', '.join(LANES)}, got {lanes!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if sampler != "grid" and (trials is None or int(trials) < 1):
        raise ValueError(f"the {sampler} sampler needs trials >= 1, got trials={trials!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    preset = rules.get(optimizer)
    if momentum is DEFAULT_MOMENTA and "momentum" not in preset.rule.numeric:
        momentum = None  # e.g. adam: sweep lr (and any --hyper) only
    space: dict[str, list[float]] = {}
    for name, value in (("lr", lr), ("momentum", momentum), *((hyper or {}).items())):
        if value is None:
            continue
        values = _values(name, value)
        if not values:
            raise ValueError(f"{name}: the grid is empty (no values given)")
        space[name] = values
    if not space:
        raise ValueError("the grid is empty: give lr and/or momentum values")
    fixed = dict(fixed or {})
    unknown = [n for n in [*space, *fixed] if n not in preset.defaults]
    if unknown:
        raise ValueError(f"{optimizer}: unknown hyperparameter(s) {unknown}; known: {sorted(preset.defaults)}")
    not_numeric = [n for n in space if n not in preset.rule.numeric]
    if not_numeric:
        raise ValueError(f"{optimizer}: {not_numeric} cannot be swept; numeric hyperparameters: {list(preset.rule.numeric)}")
    points = grid_points(space)
    probe = {n: torch.tensor([p[n] for p in points], dtype=torch.float64) for n in space}
    preset.hyper(**{**fixed, **probe})  # negative lr, momentum >= 1, ... -> ValueError naming it
    if "lr" in space and min(space["lr"]) <= 0:
        raise ValueError(f"lr must be > 0 in a sweep, got {min(space['lr'])!r}")
    device = device or default_device()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda asked for but CUDA is not available")
    dataset = _load_data(data, seed)
    factory, model_name = _model_factory(model, dataset.features, dataset.classes)
    fold_idx = make_folds(len(dataset.y_train), int(folds), seed)
    if max(len(t) for t, _ in fold_idx) < 1:
        raise ValueError("not enough training examples")

    if storage is None and out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{Path(out).resolve() / 'sweep.db'}"
    elif out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)

    if eval_every is None:
        eval_every = max(1, int(steps) // 10)
    job = Job(factory, dataset.x_train, dataset.y_train, fold_idx, preset, fixed, int(steps), int(batch_size),
              seed=int(seed), x_test=dataset.x_test, y_test=dataset.y_test, device=str(device), dtype=dtype,
              backend=backend, diverge_factor=float(diverge_factor), eval_every=int(eval_every))
    signature = {
        "data": getattr(dataset, "name", str(data)), "model": model_name, "optimizer": optimizer,
        "space": space, "fixed": {k: v for k, v in fixed.items()}, "steps": int(steps),
        "batch_size": int(batch_size), "folds": int(folds), "seed": int(seed), "sampler": sampler,
        "trials": trials, "metric": metric, "dtype": str(dtype), "diverge_factor": float(diverge_factor),
        "eval_every": int(eval_every),
    }
    search = Search(job, space, signature, storage_url=storage, study_name=study_name, sampler=sampler,
                    trials=trials, pruner=pruner, metric=metric, out=None if out is None else str(out),
                    checkpoint_every=float(checkpoint_every), eval_every=int(eval_every),
                    memory_budget=memory_budget, max_batch=max_batch, seed=int(seed), parallel=parallel, lanes=lanes, log=log)
    search.open()   # unreachable storage / a different sweep in this folder: error before training
    if callable(progress):
        search.on_progress = progress
        search.run()
    elif progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]sweep[/] {task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(f"{len(points) if sampler == 'grid' else trials} configurations x {folds} fold(s)",
                                total=None)

            def on_progress(done: int, total: int) -> None:   # rich redraws 10 times a second
                bar.update(task, completed=done, total=total)

            search.on_progress = on_progress
            search.run()
    else:
        search.run()
    matmul = job.matmul
    meta = {**signature, "device": str(device), "backend": job.backend,
            "matmul": matmul if matmul == "torch" else f"openblas {openblas_core()}",
            "dataset": repr(dataset), "storage": storage, "study_name": study_name}
    results = SweepResults(records_from_study(search.study, list(space)), list(space), metric, meta)
    if tensorboard is not None:
        write_tensorboard(results, tensorboard)
    return results


def write_tensorboard(results: SweepResults, logdir: Any) -> int:
    """One TensorBoard run per configuration through :func:`inertia.tensorboard.write_run`."""
    from .. import tensorboard as tb

    count = 0
    for r in results.records():
        hparams = {name: r[name] for name in results.swept}
        name = "_".join(f"{k}={v:.4g}" for k, v in hparams.items())
        curve = [v for v in (r.get("train_loss_curve") or [])]
        steps = r.get("steps") or len(curve)
        n = len(curve)
        at = [round(i * (steps - 1) / max(1, n - 1)) + 1 for i in range(n)]
        scalars = {"loss": [(s, v) for s, v in zip(at, curve) if v is not None]}
        if "lr" in hparams:
            scalars["lr"] = [(s, hparams["lr"]) for s in (1, steps)]
        if "momentum" in hparams:
            scalars["momentum"] = [(s, hparams["momentum"]) for s in (1, steps)]
            if "lr" in hparams:
                eff = tb.effective_lr(hparams["lr"], hparams["momentum"],
                                      str((results.meta.get("fixed") or {}).get("convention", "torch")))
                scalars["effective_lr"] = [(s, float(eff)) for s in (1, steps)]
        final = {k: r[k] for k in ("val_loss_mean", "val_accuracy_mean", "test_accuracy_mean") if r.get(k) is not None}
        final["diverged"] = 1.0 if r["status"] == "diverged" else 0.0
        tb.write_run(str(logdir), f"trial{r.get('trial', count):04d}_{name}", hparams, scalars, final)
        count += 1
    return count


__all__ = ["sweep", "SweepResults", "parse_values", "Job", "Members", "train", "make_folds", "StorageError"]
