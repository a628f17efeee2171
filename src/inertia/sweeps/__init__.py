"""Sweeps: train every learning-rate x momentum configuration (x every fold) at once.

>>> results = inertia.sweep("digits", "mlp", lr=[0.01, 0.1], momentum=[0, 0.9], steps=200)
>>> results.best, results.records()
>>> from inertia.plots.sweep import heatmap; heatmap(results, "heatmap.png")
>>> from inertia.tensorboard import write_sweep; write_sweep(results, "runs/tb")

A sweep is four specs (:mod:`.specs`): what to train, how to train, how to search, where and
how to run. :mod:`.engine` trains stacked members; :mod:`.study` is the Optuna study (what to
train next, where results land); :mod:`.checkpoints`, :mod:`.lanes` and :mod:`.worker` resume,
place and drive the training; :mod:`.results` holds what came back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .checkpoints import Checkpoints
from ..core import check_members
from ..pipeline import make_folds
from ..threads import choose_threads, step_flops, use_threads
from .engine import Job, Members
from .gemm import openblas_core
from .results import SweepResults
from .specs import (DEFAULT_LRS, DEFAULT_MOMENTA, LANES, METRICS, SAMPLERS, RunSpec, SearchSpec, SweepSpec, TaskSpec, TrainSpec,
                    parse_values)
from .study import StorageError, Study, redact
from .worker import IncompleteSweep, Worker


def _load_data(data: Any, seed: int, loss: Any = "auto"):
    from ..data import as_dataset
    from .objective import data_task

    return as_dataset(data, seed=seed, task=data_task(loss))


def _model_factory(model: Any, dataset: Any, model_args: Mapping[str, Any] | None = None) -> Callable[[], nn.Module]:
    """A factory of fresh models for ``dataset``: a registered name, a callable, or ``"package.module:factory"``
    (:func:`inertia.models.model_factory`; a bad one fails here, before any training)."""
    from ..models import model_factory

    return model_factory(model, dataset, model_args)


def sweep(
    data: Any = "mnist1d",
    model: Any = "mlp",
    *,
    lr: Any = DEFAULT_LRS,
    momentum: Any = DEFAULT_MOMENTA,
    hyper: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
    schedules: Mapping[str, Any] | None = None,
    optimizer: str = "momentum",
    loss: Any = "auto",
    model_args: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> SweepResults:
    """Train every configuration of the grid ``lr x momentum (x hyper)`` at once and return the results.

    Args:
        data: ``"mnist1d"``, ``"digits"``, a ``.npz``/``.csv`` path, an
            :class:`inertia.data.Dataset`, or ``(x_train, y_train, x_test, y_test)``.
        model: a name from :data:`inertia.models.MODELS`, or a factory
            ``f(features, classes) -> nn.Module`` (or ``f() -> nn.Module``).
        lr, momentum: values: a list, a number, or ``"start:stop:count"`` (log-spaced); none for a tuned
            rule (``optimizer="yellowfin"``), which sets both at every step (``hyper`` may sweep its ``beta``).
        hyper: further swept hyperparameters of the rule, name -> values.
        fixed: hyperparameters shared by every configuration (e.g. ``nesterov``).
        schedules: hyperparameter name -> schedule (``"cosine"``, ``"sutskever_ramp(0.99)"``, a schedule).
        optimizer: a registered rule name (``momentum``, ``nesterov``, ``sgd``, ...), or ``yellowfin[:NAME]``.
        model_args: keyword arguments of the model factory (``inertia.models.model_factory`` fills
            ``input_shape``, ``features``, ``classes``, ``outputs``, ``in_channels`` from the data).
        loss: ``auto`` (cross-entropy for integer labels, mse for float targets), ``cross_entropy``,
            ``mse``, ``l1``, ``huber``, ``bce_with_logits``, or a callable ``loss(output, target)``.
        progress: a function ``f(done, total)``, called in configuration-steps (each stack's
            step x its configurations) of this worker.
        log: a function that shows a line of text (e.g. "resuming ...").
        settings: the fields of :class:`TrainSpec` (``steps``, ``batch_size``, ``folds``, ``seed``,
            ``dtype``, ``device``, ``backend``, ``diverge_factor``), :class:`SearchSpec` (``sampler``,
            ``trials``, ``pruner``, ``metric``, ``eval_every``) and :class:`RunSpec` (``out``,
            ``storage``, ``study_name``, ``checkpoint_every``, ``lanes``, ``parallel``,
            ``memory_budget``, ``max_batch``, ``threads``, ``edge``: λ_max at initialization for heavy
            ball's stability edge on the pictures, kept with the study, so that a rerun of it shows the edge
            without ``edge`` and does not measure it again with it); an unknown name is a TypeError naming it.

    With ``out``, the study lives in ``out/sweep.db`` (a rerun resumes) and ``out`` receives the files
    ``inertia sweep --out`` writes (:meth:`SweepResults.save`). Draw what came back with
    :func:`inertia.plots.sweep.heatmap` and :func:`inertia.tensorboard.write_sweep`, or
    ``results.report(path)`` and ``print(results.table())``; build the specs yourself with :func:`run_sweep`.
    """
    task = TaskSpec.from_values(data, model, optimizer=optimizer, lr=lr, momentum=momentum, hyper=hyper,
                                fixed=fixed, schedules=schedules, loss=loss, model_args=model_args)
    spec = SweepSpec.from_settings(task, settings)
    results = run_sweep(spec, progress=progress, log=log)
    if spec.run.out is not None:
        results.save(spec.run.out)
    return results


def run_sweep(spec: SweepSpec, *, progress: Callable[[int, int], None] | None = None,
              log: Callable[[str], None] | None = None) -> SweepResults:
    """Run the sweep ``spec``: every input is checked before anything is opened or trained.

    A restarted sweep with the same ``out`` (or storage and study name) resumes.
    """
    if progress is not None and not callable(progress):
        raise TypeError(f"progress takes a function f(done, total), got {progress!r}")
    from .edge import edge_rule, study_edge

    spec, dataset, job = prepare(spec)
    if job.fallback is not None:
        (log or _warn)(f"warning: {job.fallback}")
    check_members(job.preset, spec.task.members(), columns=list(spec.task.space), schedules=job.schedules,
                  steps=job.steps)   # every value over its schedule's run, with the rule (once: stacks skip it)
    if spec.search.metric not in job.metric_names:
        raise ValueError(f"metric {spec.search.metric}: a {job.objective.task} sweep measures "
                         f"{', '.join(n for n in job.metric_names if n.startswith('val_'))}")
    if spec.run.edge:
        edge_rule(job)   # a rule without the edge fails before the study opens
    storage = _storage_url(spec.run)
    study = Study(dict(spec.task.space), spec.signature(), spec.search, storage, spec.run.study_name,
                  spec.train.seed).open()   # unreachable storage / a different sweep here: error before training
    edge = study_edge(study, job, spec.run.edge, log or _warn)   # kept with the study: every later run shows it
    checkpoints = None if spec.run.out is None else Checkpoints(
        str(spec.run.out), spec.signature(), spec.run.study_name, redact(storage or ""))
    previous = use_threads(parent_threads(job, spec.configurations, spec.run.threads))
    try:
        Worker(job, study, spec.search, spec.run, checkpoints, progress, log or _warn, spec.configurations).run()
    finally:
        use_threads(previous)
    meta = {**spec.flat(), "storage": None if storage is None else redact(storage), "backend": job.backend,
            "matmul": job.matmul if job.matmul == "torch" else f"openblas {openblas_core()}",
            "dataset": repr(dataset), "metrics": list(job.objective.metrics), "running": study.running()}
    return SweepResults(study.records(), list(spec.task.space), spec.search.metric, meta, edge)


def parent_threads(job: Job, configurations: int, requested: int | None) -> int:
    """This process's intra-op threads while it sweeps (:func:`inertia.threads.choose_threads`): from
    the work of a step of every member of every configuration, or ``requested``."""
    flops = step_flops(job.template, job.x[:job.batch_size]) * job.members_per_config * configurations
    return choose_threads(flops, requested)


def prepare(spec: SweepSpec) -> tuple[SweepSpec, Any, Job]:
    """The data of ``spec`` loaded and checked, the spec resolved on it, and the engine's job: every
    input checked before anything trains (the sweep's, and the range test's, first step)."""
    dataset = _load_data(spec.task.data, spec.train.seed, spec.task.loss)
    spec = spec.resolved(data=dataset)
    if spec.train.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda asked for but CUDA is not available")
    _check_data(spec, dataset)
    return spec, dataset, _job(spec, dataset)


def _warn(message: str) -> None:
    if message.startswith("warning: "):
        import warnings

        warnings.warn(message[len("warning: "):], stacklevel=3)


MIN_TRAIN_ROWS = 10


def _check_data(spec: SweepSpec, dataset: Any) -> None:
    """Refuse data too small for the sweep, and a model that would not fit in memory, before building it."""
    from .memory import default_memory_budget
    from .._grid import size_text

    rows, tests = len(dataset.y_train), 0 if dataset.x_test is None else len(dataset.x_test)
    folds = make_folds(rows, spec.train.folds, spec.train.seed)   # too few for the folds: a ValueError
    train_rows = min(len(t) for t, _ in folds)
    if tests < 1 or train_rows < MIN_TRAIN_ROWS:
        raise ValueError(f"data: {rows} training and {tests} test examples are too few for a sweep (it needs a "
                         f"test set and at least {MIN_TRAIN_ROWS} training examples in each fold)")
    if spec.train.batch_size > train_rows:
        raise ValueError(f"batch_size ({spec.train.batch_size}) is larger than a fold's {train_rows} training examples")
    need = _model_bytes(spec.task.model, dataset, spec.task.model_args, spec.train.dtype)
    have = 4 * default_memory_budget(spec.train.device)
    if need is not None and need > have:
        raise ValueError(f"model {spec.task.model!r} for {dataset.features} features and {dataset.outputs:,} outputs "
                         f"needs about {size_text(need)} per configuration; {size_text(have)} of memory is available")


def _model_bytes(model: Any, dataset: Any, model_args: Mapping[str, Any], dtype: torch.dtype) -> int | None:
    """Bytes of one configuration's parameters, gradients and state (6 copies), counted on the meta
    device (nothing allocated); None for a model that cannot be built there."""
    from ..models import build_model

    try:
        with torch.device("meta"):
            module = build_model(model, dataset, **model_args) if isinstance(model, str) else None
    except (ValueError, TypeError, RuntimeError):
        return None
    if module is None:
        return None
    return 6 * sum(p.numel() for p in module.parameters()) * (torch.finfo(dtype).bits // 8)


def _job(spec: SweepSpec, dataset: Any) -> Job:
    """The engine's job for ``spec`` on ``dataset`` (unknown models fail here, before any training)."""
    from .. import rules

    task, how = spec.task, spec.train
    factory = _model_factory(task.model, dataset, task.model_args)
    fold_idx = make_folds(len(dataset.y_train), how.folds, how.seed)
    if max(len(t) for t, _ in fold_idx) < 1:
        raise ValueError("not enough training examples")
    return Job(factory, dataset.x_train, dataset.y_train, fold_idx, rules.get(task.optimizer), dict(task.fixed),
               how.steps, how.batch_size, seed=how.seed, x_test=dataset.x_test, y_test=dataset.y_test,
               device=how.device, dtype=how.dtype, backend=how.backend, diverge_factor=how.diverge_factor,
               schedules=dict(task.schedules), eval_every=spec.search.eval_every or 0, loss=task.loss,
               standardize=how.standardize, seeds=how.seeds)


def _storage_url(run: RunSpec) -> str | None:
    """``run.storage``, or the SQLite file in ``run.out`` (made here); None: in memory."""
    if run.out is not None:
        _writable(Path(run.out))
    if run.storage is None and run.out is not None:
        return f"sqlite:///{Path(run.out).resolve() / 'sweep.db'}"
    return run.storage


def _writable(folder: Path) -> None:
    """Make ``folder`` and check that files can be written into it (a ValueError naming it, if not)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ValueError(f"out: cannot write into {str(folder)!r}: {error.strerror or error}") from None


__all__ = ["sweep", "run_sweep", "prepare", "SweepSpec", "TaskSpec", "TrainSpec", "SearchSpec", "RunSpec", "SweepResults",
           "parse_values", "IncompleteSweep", "Job", "Members", "make_folds", "StorageError", "DEFAULT_MOMENTA",
           "SAMPLERS", "LANES", "METRICS"]
