"""Everything Optuna: storages, the study, samplers, pruners, claiming, heartbeats, telling, records.

No other module of inertia imports Optuna (this one imports it only when a function runs).

- Grid: every grid point is enqueued once as a WAITING trial (fixed parameters) by the
  process that creates the study; workers claim WAITING trials one by one through the
  storage's atomic state change, so two workers on one PostgreSQL study never evaluate
  the same configuration.
- Random / TPE: trials are asked (``study.ask``) until ``trials`` exist.
- A worker records a heartbeat for every trial it holds (database storages); a trial whose
  worker died goes stale after two heartbeats, and the next claim fails it and queues a copy
  (:data:`HEARTBEAT_SECONDS`).
- Pruners see what :meth:`Study.judge` is given (the mean over seeds and folds); the named ones
  decide for a whole stack at once (:mod:`.pruning`).
- Optuna-native: lr is a log-scaled float, momentum is stored as ``1-momentum`` on a log scale;
  the metric is named; every trial carries its validation metric at every evaluation point as
  intermediate values, its numbers as separate user attributes and its curves (numbers) in one
  ``curves`` attribute. A diverged configuration is PRUNED (``status``, ``diverged_step``), so
  ``study.best_trial`` is never one.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .pruning import STACKED, StackedPruner
from .selection import MEASURES, STATS, select
from .specs import METRICS, SearchSpec, grid_points

SCALARS = ("status", "best_step", "diverged_step", "pruned_step", "steps", "train_loss_final",
           *(f"{prefix}{m}_{s}" for prefix in ("", "final_") for m in MEASURES for s in STATS))
"""The user attributes of a finished trial, one per number (``val_loss_mean``: at ``best_step``)."""

CURVES = tuple(f"{m}_{s}" for m in MEASURES for s in STATS)
"""The curves kept in the trial's ``curves`` attribute (numbers at ``eval_steps``), with ``train_loss``."""

MOMENTUM_PARAM = "1-momentum"
"""Momentum's name in Optuna: ``1 - momentum`` on a log scale (sampled uniformly in log(1 - momentum))."""


HEARTBEAT_SECONDS = 60
"""A worker records a heartbeat for every trial it holds at least this often; a RUNNING trial
whose last heartbeat is older than twice this is stale (its worker died: SIGKILL, a lost
machine) and any worker fails it and queues a copy that the next claim trains
(``optuna.storages.RetryHeartbeatStaleTrialCallback``)."""


class StorageError(ValueError):
    """The storage URL could not be opened."""


def normalize_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when only psycopg2 is installed (SQLAlchemy 2.1
    defaults to psycopg 3)."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def open_storage(url: str | None, heartbeat: int | None = None):
    """An Optuna storage for ``url`` (None: in memory); unreachable URLs raise :class:`StorageError`.

    ``heartbeat``: seconds between the heartbeats that its trials' workers promise to record
    (database storages only); stale trials are retried (:data:`HEARTBEAT_SECONDS`).
    """
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    url = normalize_url(url)
    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):
        kwargs = {"engine_kwargs": {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}}
    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat:
                    kwargs.update(heartbeat_interval=int(heartbeat), grace_period=2 * int(heartbeat),
                                  heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
                return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as error:  # sqlalchemy / driver errors of every kind
            # two workers creating the tables of a fresh database at once: one gets an
            # IntegrityError; the tables exist now, so try again
            if "Integrity" in type(error).__name__ and attempt < 3:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {redact(url)}: {type(error).__name__}: {error}") from error
    raise AssertionError("unreachable")


def redact(url: str) -> str:
    """``url`` without its user and password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(pruner: Any):
    import optuna

    if pruner is None or pruner is False or pruner == "none":
        return optuna.pruners.NopPruner()
    if isinstance(pruner, str):
        table = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
                 "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                 "percentile": lambda: optuna.pruners.PercentilePruner(25.0)}
        if pruner not in table:
            raise ValueError(f"unknown pruner {pruner!r}; known: none, {', '.join(table)}")
        return table[pruner]()
    return pruner


@dataclass(frozen=True)
class Dimension:
    """How one swept hyperparameter lives in Optuna: lr as a log-scaled float, momentum (in [0, 1))
    as ``1-momentum`` on a log scale, any other as a linear float, over the range of its values."""

    name: str
    values: tuple[float, ...]

    @property
    def flipped(self) -> bool:
        return self.name == "momentum" and min(self.values) >= 0 and max(self.values) < 1

    @property
    def param(self) -> str:
        return MOMENTUM_PARAM if self.flipped else self.name

    @property
    def log(self) -> bool:
        return self.flipped or (self.name == "lr" and min(self.values) > 0)

    @property
    def bounds(self) -> tuple[float, float]:
        low, high = sorted((self.stored(min(self.values)), self.stored(max(self.values))))
        return low, high

    def stored(self, value: float) -> float:
        return 1.0 - float(value) if self.flipped else float(value)

    def value(self, stored: float, grid: bool) -> float:
        """The hyperparameter's value from its stored one (``grid``: exactly the grid value)."""
        if grid:
            return float(min(self.values, key=lambda v: abs(self.stored(v) - stored)))
        return self.stored(stored) if self.flipped else float(stored)


def dimensions(space: Mapping[str, Sequence[float]]) -> list[Dimension]:
    return [Dimension(name, tuple(float(v) for v in values)) for name, values in space.items()]


def stored_point(space: Mapping[str, Sequence[float]], point: Mapping[str, float]) -> dict[str, float]:
    """A grid point as the parameters Optuna stores (momentum as ``1-momentum``)."""
    return {d.param: d.stored(point[d.name]) for d in dimensions(space)}


@dataclass
class Study:
    """One sweep's Optuna study, behind the few operations a worker needs. Trials are Optuna trials
    (their ``number`` identifies them); nothing else of Optuna leaves this class."""

    space: dict[str, list[float]]          # name -> grid values (random/TPE: the range min..max)
    signature: dict[str, Any]              # everything that defines the sweep (must match on resume)
    search: SearchSpec
    storage_url: str | None = None
    study_name: str = "sweep"
    seed: int = 0
    study: Any = field(default=None, init=False)

    # ------------------------------------------------------------ opening
    def open(self) -> "Study":
        """Create the study (grid: enqueue every point) or load it and check its signature."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(self.storage_url, heartbeat=HEARTBEAT_SECONDS)
        kwargs = dict(storage=storage, study_name=self.study_name, sampler=make_sampler(self.search.sampler, self.seed),
                      pruner=make_pruner(self.search.pruner))
        study, created = self._create_or_load(kwargs)
        sig = json.dumps(self.signature, sort_keys=True, default=str)
        if created:
            with warnings.catch_warnings():  # "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([self.search.metric])
            study.set_user_attr("signature", sig)
            if self.search.sampler == "grid":
                for point in grid_points(self.space):
                    study.enqueue_trial(stored_point(self.space, point))
            study.set_user_attr("ready", True)
        else:
            study = self._join(study, sig, kwargs)
        self.study = study
        return self

    def _create_or_load(self, kwargs: dict[str, Any]) -> tuple[Any, bool]:
        import optuna

        for attempt in range(4):
            try:
                return optuna.create_study(load_if_exists=False, direction=METRICS[self.search.metric][1], **kwargs), True
            except optuna.exceptions.DuplicatedStudyError:
                return optuna.load_study(**kwargs), False
            except Exception as error:
                if "Integrity" in type(error).__name__ and attempt < 3:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise StorageError(f"cannot use storage {redact(str(self.storage_url))}: {error}") from error
        raise AssertionError("unreachable")

    def _join(self, study: Any, sig: str, kwargs: dict[str, Any]) -> Any:
        """An existing study: wait for its creator, check it holds this sweep, finish an interrupted enqueue."""
        import optuna

        stored = study.user_attrs.get("signature")
        deadline = time.time() + 30
        while stored is None and time.time() < deadline:  # the creator is still writing
            time.sleep(0.5)
            stored = optuna.load_study(storage=kwargs["storage"], study_name=self.study_name).user_attrs.get("signature")
        if stored is not None and stored != sig:
            raise ValueError(
                f"study {self.study_name!r} in {redact(str(self.storage_url))} holds a different sweep; "
                f"use a new --out folder (or --study-name). Stored: {stored}; asked: {sig}")
        if stored is None:
            study.set_user_attr("signature", sig)
        deadline = time.time() + 30
        while not study.user_attrs.get("ready") and time.time() < deadline:
            time.sleep(0.5)
            study = optuna.load_study(**kwargs)
        if not study.user_attrs.get("ready") and self.search.sampler == "grid":
            # the creator died while enqueuing: add the missing points
            present = {json.dumps(t.system_attrs.get("fixed_params", t.params), sort_keys=True)
                       for t in study.get_trials(deepcopy=False)}
            for point in grid_points(self.space):
                point = stored_point(self.space, point)
                if json.dumps(point, sort_keys=True) not in present:
                    study.enqueue_trial(point)
            study.set_user_attr("ready", True)
        return study

    # ------------------------------------------------------------ taking trials
    def claim(self, limit: int, take: Callable[[Any], None]) -> list[Any]:
        """Up to ``limit`` trials for this worker; ``take(trial)`` runs as soon as each is taken."""
        if self.search.sampler == "grid":
            return self._claim_waiting(limit, take)
        from optuna.trial import TrialState

        existing = len(self.study.get_trials(deepcopy=False, states=(  # FAIL: stale, and retried
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))
        batch = []
        for _ in range(min(limit, max(0, int(self.search.trials or 0) - existing))):
            batch.append(self.study.ask())   # a WAITING trial (retried, given back) first
            self.beat(batch[-1:])
            take(batch[-1])
        return batch

    def _claim_waiting(self, limit: int, take: Callable[[Any], None]) -> list[Any]:
        import optuna
        from optuna.trial import TrialState

        storage = self.study._storage
        batch = []
        for frozen in storage.get_all_trials(self.study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if len(batch) >= limit:
                break
            try:
                # heartbeat first: the trial is never RUNNING without one (nor with an old one of
                # an earlier holder's), so if this process dies at any moment it goes stale
                self.beat([frozen])
                if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    batch.append(optuna.Trial(self.study, frozen._trial_id))
                    take(batch[-1])
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return batch

    def resume(self, numbers: Sequence[int]) -> list[Any] | None:
        """The trials ``numbers`` (a checkpoint's) to train on; None when none of them is RUNNING."""
        import optuna
        from optuna.trial import TrialState

        storage, study_id = self.study._storage, self.study._study_id
        frozen = [storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, n)) for n in numbers]
        if all(t.state != TrialState.RUNNING for t in frozen):
            return None
        return [optuna.Trial(self.study, t._trial_id) for t in frozen]

    def fail_stale(self) -> None:
        """Fail the trials of dead workers (stale heartbeats); Optuna queues a copy of each."""
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def beat(self, trials: Sequence[Any]) -> None:
        """Record a heartbeat for each of ``trials`` (database storages)."""
        storage = self.study._storage
        if getattr(storage, "get_heartbeat_interval", lambda: None)():
            for t in trials:
                storage.record_heartbeat(t._trial_id)

    def config(self, trial: Any) -> dict[str, float]:
        """The hyperparameters ``trial`` asks for (grid: its enqueued point, exactly)."""
        grid = self.search.sampler == "grid"
        config = {}
        for dim in dimensions(self.space):
            low, high = dim.bounds
            if low == high:
                config[dim.name] = dim.values[0]
            else:
                config[dim.name] = dim.value(trial.suggest_float(dim.param, low, high, log=dim.log), grid)
        return config

    # ------------------------------------------------------------ results
    def report(self, trial: Any, metrics: Mapping[str, float], step: int) -> bool:
        """Report the sweep's metric (of the validation ``metrics`` at ``step``); should ``trial`` be pruned?"""
        return self.judge([trial], step, {0: metrics}) == [0]

    def judge(self, trials: Sequence[Any], step: int, means: Mapping[int, Mapping[str, float]]) -> list[int]:
        """Report every member of a stack at ``step`` (``means``: index into ``trials`` -> its mean validation
        metrics by name), all in one commit, then decide for them together; the indices to prune."""
        mine = {c: metrics[self.search.metric] for c, metrics in means.items()}
        storage = self.study._storage
        finite = {c: v for c, v in mine.items() if math.isfinite(v)}
        write_trial(storage, {trials[c]._trial_id: ({step: v}, {}) for c, v in finite.items()})
        for c, v in finite.items():   # what Trial.report would cache (its pruner reads the cache)
            trials[c]._cached_frozen_trial.intermediate_values[step] = v
        kind = self.search.pruner
        if kind is None:
            return []
        if not (isinstance(kind, str) and kind in STACKED):
            return [c for c in mine if trials[c].should_prune()]
        pruner = StackedPruner(kind, int(self.search.eval_every or step), int(self.signature.get("steps") or step))
        maximize = METRICS[self.search.metric][1] == "maximize"
        numbers = {trials[c].number for c in mine}
        others = [(t.number, t.intermediate_values[step]) for t in self.study.get_trials(deepcopy=False)
                  if t.number not in numbers and step in t.intermediate_values]
        prune = []
        for bracket in range(pruner.brackets):
            if not pruner.is_rung(step, bracket):
                continue
            group = {c: v for c, v in mine.items() if pruner.bracket(trials[c].number) == bracket}
            rivals = [v for n, v in others if pruner.bracket(n) == bracket]
            prune += pruner.prune(group, rivals, maximize)
        return sorted(prune)

    def tell(self, trial: Any, record: Mapping[str, Any], worker: str) -> None:
        """Store a configuration's result in its trial and finish it (unless told already): its numbers
        at the selected point (:func:`.selection.select`), its curves, its validation metric at every
        evaluation point; COMPLETE with the selected metric, else PRUNED (diverged or pruned)."""
        from optuna.trial import TrialState

        storage = self.study._storage
        if storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            return  # told before an interruption
        record = select(record, self.search.metric, self.search.select)
        curve = record.get(f"{self.search.metric}_mean_curve") or []
        steps = {int(s): v for s, v in zip(record.get("eval_steps") or [], curve) if _finite(v)}
        write_trial(storage, {trial._trial_id: (steps, trial_attrs(record, worker))})
        value = record.get(METRICS[self.search.metric][0])
        if record["status"] == "ok" and _finite(value):
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=TrialState.PRUNED)

    def give_back(self, trial: Any) -> None:
        """Put a RUNNING ``trial`` back to WAITING, for the next claim (any worker)."""
        from optuna.trial import TrialState

        storage = self.study._storage
        if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)

    def finished(self) -> int:
        """How many trials are complete or pruned."""
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def running(self) -> int:
        """How many trials are RUNNING (in this worker or elsewhere)."""
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def records(self) -> list[dict[str, Any]]:
        return records_from_study(self.study, self.space, self.search.sampler)


def trial_attrs(record: Mapping[str, Any], worker: str) -> dict[str, Any]:
    """A selected record as a trial's user attributes: one per number, the curves (numbers, at
    ``eval_steps``) in ``curves``, and each seed's numbers and curves in ``per_seed`` where there are seeds."""
    attrs: dict[str, Any] = {k: record.get(k) for k in SCALARS}
    attrs["worker"] = worker
    curves = {"eval_steps": record.get("eval_steps"), "train_loss": record.get("train_loss_curve")}
    curves.update({k: record.get(f"{k}_curve") for k in CURVES})
    attrs["curves"] = curves
    if record.get("per_seed") is not None:
        attrs["per_seed"] = record["per_seed"]
    return attrs


def write_trial(storage: Any, updates: Mapping[int, tuple[Mapping[int, float], Mapping[str, Any]]]) -> None:
    """Intermediate values (step -> value) and user attributes of trials (trial id -> both), in one
    database commit for database storages (one commit each would take seconds per sweep)."""
    import optuna

    rdb = getattr(storage, "_backend", storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        for trial_id, (values, attrs) in updates.items():
            for step, value in values.items():
                storage.set_trial_intermediate_value(trial_id, step, value)
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session, True) as session:
        for trial_id, (values, attrs) in updates.items():
            for step, value in values.items():
                rdb._set_trial_intermediate_value_without_commit(session, trial_id, step, value)
            for key, value in attrs.items():
                rdb._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)


def records_from_study(study: Any, space: Mapping[str, Sequence[float]], sampler: str = "grid") -> list[dict[str, Any]]:
    """One record per finished trial: its hyperparameters, numbers and curves (``*_curve`` keys)."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rec: dict[str, Any] = {"trial": t.number}
        for dim in dimensions(space):
            stored = t.params.get(dim.param)
            rec[dim.name] = dim.values[0] if stored is None else dim.value(stored, sampler == "grid")
        attrs = t.user_attrs
        rec.update({k: attrs.get(k) for k in (*SCALARS, "worker")})
        curves = attrs.get("curves") or {}
        rec["eval_steps"] = curves.get("eval_steps")
        rec["train_loss_curve"] = curves.get("train_loss")
        rec.update({f"{k}_curve": curves.get(k) for k in CURVES})
        if "per_seed" in attrs:
            rec["per_seed"] = attrs["per_seed"]
        if rec["status"] is None:
            rec["status"] = "pruned" if t.state == TrialState.PRUNED else "ok"
        out.append(rec)
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
