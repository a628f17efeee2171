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
- Pruners see what :meth:`Study.report` is given (the mean over folds).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .specs import METRICS, SearchSpec, grid_points

RESULT_KEYS = ("status", "diverged_step", "pruned_step", "val_loss_mean", "val_loss_std", "val_accuracy_mean",
               "val_accuracy_std", "test_loss_mean", "test_loss_std", "test_accuracy_mean", "test_accuracy_std",
               "train_loss_final", "train_loss_curve", "steps", "eval_steps",
               *(f"{m}_{s}_curve" for m in ("val_loss", "val_accuracy", "test_loss", "test_accuracy")
                 for s in ("mean", "std")))

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
            study.set_user_attr("signature", sig)
            if self.search.sampler == "grid":
                for point in grid_points(self.space):
                    study.enqueue_trial(point)
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
        """The hyperparameters ``trial`` asks for."""
        config = {}
        for name, values in self.space.items():
            if self.search.sampler == "grid":
                config[name] = float(trial.suggest_categorical(name, sorted(set(float(v) for v in values))))
            else:
                lo, hi = float(min(values)), float(max(values))
                log = name == "lr" and lo > 0
                config[name] = float(lo) if lo == hi else float(trial.suggest_float(name, lo, hi, log=log))
        return config

    # ------------------------------------------------------------ results
    def report(self, trial: Any, metrics: Mapping[str, float], step: int) -> bool:
        """Report the sweep's metric (of the validation ``metrics`` at ``step``); should ``trial`` be pruned?"""
        trial.report(metrics[self.search.metric], step)
        return trial.should_prune()

    def tell(self, trial: Any, record: Mapping[str, Any], worker: str) -> None:
        """Store a configuration's result in its trial and finish it (unless told already)."""
        from optuna.trial import TrialState

        if self.study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            return  # told before an interruption
        key, direction = METRICS[self.search.metric]
        # one attribute (one database commit) per trial
        trial.set_user_attr("result", {**{k: record.get(k) for k in RESULT_KEYS}, "worker": worker})
        if record["status"] == "ok":
            self.study.tell(trial, record[key])
        elif record["status"] == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, math.inf if direction == "minimize" else -math.inf)

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

    def records(self) -> list[dict[str, Any]]:
        return records_from_study(self.study, list(self.space))


def records_from_study(study: Any, space_names: Sequence[str]) -> list[dict[str, Any]]:
    """One record per finished trial: its parameters and the results stored as user attributes."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rec: dict[str, Any] = {"trial": t.number}
        rec.update({name: t.params.get(name) for name in space_names})
        stored = t.user_attrs.get("result") or {}
        for name in (*RESULT_KEYS, "worker"):
            rec[name] = stored.get(name)
        if rec["status"] is None:
            rec["status"] = "pruned" if t.state == TrialState.PRUNED else "ok"
        out.append(rec)
    return out
