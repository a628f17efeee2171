"""The sweep's Optuna study: what to train next, and where results land.

No module of inertia outside this package imports Optuna (this one imports it only when a
function runs). :class:`Study` is what the worker uses; the trials live behind a
:class:`.store.Store`, chosen when the study is opened: :mod:`.sql` (batched SQL on Optuna's
tables) for a database storage, :mod:`.public` (Optuna's public API) in memory. Only :mod:`.sql`
uses Optuna's private names.

- Grid: every grid point is enqueued once as a WAITING trial (fixed parameters), in the
  transaction that checks the study's signature; workers claim WAITING trials in rounds.
- Random: the ``trials`` points are drawn from the seed (:func:`.space.random_points`) and
  enqueued as the grid's are, so a resumed or shared random sweep trains the same points as one
  uninterrupted process, each once.
- TPE: a round of new trials is claimed only after the earlier rounds of this worker are told,
  then asked of a TPE sampler seeded by the seed and the trial's number (:func:`trial_seed`) that
  reads the study's whole history; its ``constant_liar`` covers the trials other workers hold. A
  restarted or second worker so continues the search instead of repeating its first points.
- A trial whose holder is a dead process of this machine is retried at once; one whose heartbeat
  is stale (:data:`HEARTBEAT_SECONDS`), e.g. of another machine, after two heartbeats. A trial no
  longer RUNNING (retried after its worker was taken for dead) is left as it is: a late result is
  discarded.
- Pruners see what :meth:`Study.judge` is given (the mean over seeds and folds); the named ones
  decide for a whole stack at once (:mod:`..pruning`).
- The metric is named; lr and momentum are stored as :mod:`.space` says; every trial carries its
  results as :mod:`.records` says.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..processes import alive, me
from ..pruning import STACKED, StackedPruner
from ..specs import METRICS, SearchSpec, signature_difference
from .records import CURVES, SCALARS, Finished, Outcome, outcome, records_from_study, trial_attrs
from .space import MOMENTUM_PARAM, Dimension, dimensions, grid_params, random_points, stored_point
from .storage import StorageError, describe_failure, is_storage_failure, normalize_url, open_storage, redact
from .store import HOLDER, Claimed, Store

HEARTBEAT_SECONDS = 60
"""A worker records a heartbeat for every trial it holds at least this often; a RUNNING trial
whose last heartbeat is older than twice this is stale (its worker died on another machine, or
the machine is lost) and any worker fails it and queues a copy (:meth:`Study.fail_stale`)."""


RECONNECT_SECONDS = 60
"""How long a worker goes on trying to reach a PostgreSQL server out of reach (a restart, a lost
network), with back-off, before it gives up in one line (:func:`.sql.reconnecting`)."""


def trial_seed(seed: int, number: int) -> int:
    """The seed of the sampler that asks trial ``number`` of a sweep with ``seed``: the same in
    every process, different for every trial."""
    import numpy as np

    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


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
    """One sweep's Optuna study, behind the few operations a worker needs. The worker holds
    :class:`.store.Claimed` trials (their ``number`` identifies them); nothing of Optuna leaves this class."""

    space: dict[str, list[float]]          # name -> grid values (random/TPE: the range min..max)
    signature: dict[str, Any]              # everything that defines the sweep (must match on resume)
    search: SearchSpec
    storage_url: str | None = None
    study_name: str = "sweep"
    seed: int = 0
    study: Any = field(default=None, init=False)                 # the optuna.Study
    store: Store = field(default=None, init=False, repr=False)   # its trials
    _storage: Any = field(default=None, init=False, repr=False)  # the storage Optuna's study objects open on
    _dims: list[Dimension] = field(default_factory=list, init=False, repr=False)

    # ------------------------------------------------------------ opening
    def open(self) -> "Study":
        """Create or load the study, check that it holds this sweep, and (once) enqueue its points.

        The check and the enqueue are one transaction: a process killed at any moment leaves
        either all the points or none of them, and the next one to open the study adds them.
        """
        import optuna

        from . import public, sql

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._dims = dimensions(self.space)
        storage = open_storage(self.storage_url)
        database = isinstance(storage, optuna.storages.RDBStorage)
        self._storage = sql.shared_storage(storage) if database else storage
        try:
            self.study = self._create_or_load()
            study_id = self._storage.get_study_id_from_name(self.study_name)
            if database:
                reconnect = RECONNECT_SECONDS if storage.engine.dialect.name == "postgresql" else 0
                self.store = sql.SqlStore(storage, study_id, 2 * HEARTBEAT_SECONDS, reconnect)
            else:
                self.store = public.PublicStore(self.study, storage, study_id)
            self._name_metric()
            sig = json.dumps(self.signature, sort_keys=True, default=str)
            self.store.prepare(sig, self._points(), self._check_signature)
        except Exception as error:
            if is_storage_failure(error):
                raise self.failure(error) from error
            raise
        return self

    def failure(self, error: BaseException) -> StorageError:
        """``error`` of the storage as one line naming the cause and the way out."""
        return StorageError(describe_failure(error, self.storage_url))

    def _points(self) -> list[dict[str, float]]:
        """The points enqueued when the study is made: the grid's, or the random search's."""
        if self.search.sampler == "grid":
            return grid_params(self.space)
        if self.search.sampler == "random":
            return random_points(self.space, int(self.search.trials), self.seed)
        return []

    def _name_metric(self) -> None:
        """Name the study's objective after the sweep's metric (once: Optuna's dashboard and plots show it)."""
        import optuna

        if self.study.metric_names != [self.search.metric]:
            with warnings.catch_warnings():  # "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([self.search.metric])

    def _create_or_load(self) -> Any:
        import optuna

        kwargs = dict(storage=self._storage, study_name=self.study_name,
                      sampler=make_sampler(self.search.sampler, self.seed), pruner=make_pruner(self.search.pruner))
        for attempt in range(4):
            try:
                return optuna.create_study(load_if_exists=False, direction=METRICS[self.search.metric][1], **kwargs)
            except optuna.exceptions.DuplicatedStudyError:
                return optuna.load_study(**kwargs)
            except Exception as error:
                if "Integrity" in type(error).__name__ and attempt < 3:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise
        raise AssertionError("unreachable")

    def _check_signature(self, stored: str | None, sig: str) -> None:
        if stored is not None and stored != sig:
            raise ValueError(
                f"study {self.study_name!r} holds a different sweep ({signature_difference(stored, sig)}); "
                f"it is in {redact(str(self.storage_url))}: use another --out folder or --study-name")

    # ------------------------------------------------------------ what the study keeps besides its trials
    def user_attr(self, key: str) -> Any:
        """The study's user attribute ``key`` (Optuna's, as ``optuna.load_study(...).user_attrs`` reads
        it); None when it has none."""
        return self.study.user_attrs.get(key)

    def set_user_attr(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON data) with the study as its user attribute ``key`` (optuna-dashboard shows it)."""
        self.study.set_user_attr(key, value)

    # ------------------------------------------------------------ taking trials
    def claim(self, limit: int, take: Callable[[Claimed], None]) -> list[Claimed]:
        """Up to ``limit`` trials for this worker (grid and random: WAITING ones; TPE: retried ones,
        then new ones up to the budget), held by this process; ``take(trial)`` runs for each."""
        budget = int(self.search.trials) if self.search.sampler == "tpe" else None
        batch = self.store.claim(limit, budget, me())
        for trial in batch:
            take(trial)
        return batch

    def resume(self, numbers: Sequence[int]) -> list[Claimed] | None:
        """The trials ``numbers`` (a checkpoint's), now held by this process; None when none is RUNNING."""
        return self.store.hold(numbers, me())

    def fail_stale(self) -> int:
        """Retry the trials of dead workers: a process of this machine that is gone (at once), or
        a stale heartbeat (:data:`HEARTBEAT_SECONDS`, other machines). Each is failed and a copy
        with its parameters queued, in one transaction; returns how many."""
        return self.store.retry(self.store.abandoned(alive))

    def beat(self, trials: Sequence[Claimed]) -> None:
        """Record a heartbeat for each of ``trials``, in one transaction."""
        if trials:
            self.store.beat([t.id for t in trials])

    def configs(self, trials: Sequence[Claimed]) -> list[dict[str, float]]:
        """The hyperparameters each of ``trials`` trains (grid: its point, exactly), stored as its
        parameters: those it has, its fixed ones (stored for all ``trials`` in one transaction), or
        asked of the sampler (TPE)."""
        fixed: list[tuple[int, str, float, Any]] = []
        grid = self.search.sampler == "grid"
        configs = []
        for trial in trials:
            params = self._params(trial, fixed)
            configs.append({d.name: d.values[0] if d.single else d.value(params[d.param], grid) for d in self._dims})
        if fixed:
            self.store.set_params(fixed)
        return configs

    def _params(self, trial: Claimed, fixed: list[tuple[int, str, float, Any]]) -> dict[str, float]:
        """``trial``'s parameters by Optuna's names; fixed ones not yet stored are added to ``fixed``
        (trial id, name, value, distribution)."""
        import optuna

        searched = [d for d in self._dims if not d.single]
        known = {**trial.fixed, **trial.params}
        if not all(d.param in known for d in searched):
            asked = self._ask(trial)
            return {d.param: asked.suggest_float(d.param, *d.bounds, log=d.log) for d in searched}
        fixed += [(trial.id, d.param, known[d.param], optuna.distributions.FloatDistribution(*d.bounds, log=d.log))
                  for d in searched if d.param not in trial.params]
        return known

    def _ask(self, trial: Claimed) -> Any:
        """``trial`` as an Optuna trial whose sampler is seeded for it (:func:`trial_seed`), in a study
        object of its own: it reads the trials told since (Optuna's study objects keep what they read)."""
        import optuna
        from optuna.trial import TrialState

        sampler = make_sampler(self.search.sampler, trial_seed(self.seed, trial.number))
        study = optuna.load_study(study_name=self.study_name, storage=self._storage, sampler=sampler)
        study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))   # the storage learns of trials made in SQL
        return optuna.Trial(study, trial.id)

    # ------------------------------------------------------------ results
    def judge(self, trials: Sequence[Claimed], step: int, means: Mapping[int, Mapping[str, float]]) -> list[int]:
        """Report every member of a stack at ``step`` (``means``: index into ``trials`` -> its mean validation
        metrics by name), all in one commit, then decide for them together; the indices to prune."""
        mine = {c: metrics[self.search.metric] for c, metrics in means.items()}
        finite = {c: v for c, v in mine.items() if math.isfinite(v)}
        self.store.write({trials[c].id: ({step: v}, {}) for c, v in finite.items()})
        kind = self.search.pruner
        if kind is None:
            return []
        if not (isinstance(kind, str) and kind in STACKED):   # an Optuna pruner: trial by trial, as Trial.should_prune
            return [c for c in mine if self.study.pruner.prune(self.study, self._storage.get_trial(trials[c].id))]
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

    def tell(self, trials: Sequence[Claimed], records: Sequence[Mapping[str, Any]], worker: str) -> None:
        """Store each configuration's result (:meth:`outcome`) in its trial and finish it, unless it is no
        longer RUNNING (told before an interruption, or retried after this worker was taken for dead:
        a late result is discarded); one transaction on a database."""
        self.store.tell({t.id: self.outcome(r, worker) for t, r in zip(trials, records)})

    def outcome(self, record: Mapping[str, Any], worker: str) -> Outcome:
        """What telling a configuration's ``record`` writes (:func:`.records.outcome`)."""
        return outcome(self.search, record, worker)

    def give_back(self, trials: Sequence[Claimed]) -> None:
        """Put the RUNNING ones of ``trials`` back to WAITING, for the next claim (any worker)."""
        self.store.give_back([t.id for t in trials])

    def finished(self) -> int:
        """How many trials are complete or pruned."""
        from optuna.trial import TrialState

        return self.store.count(TrialState.COMPLETE, TrialState.PRUNED)

    def running(self) -> int:
        """How many trials are RUNNING (held by this worker or others)."""
        from optuna.trial import TrialState

        return self.store.count(TrialState.RUNNING)

    def records(self) -> list[dict[str, Any]]:
        """One record per finished trial (:func:`.records.records_from_study`)."""
        return records_from_study(self.store.finished(), self.space, self.search.sampler)


__all__ = ["Study", "StorageError", "normalize_url", "open_storage", "redact", "is_storage_failure", "make_pruner",
           "make_sampler", "trial_seed", "HEARTBEAT_SECONDS", "RECONNECT_SECONDS", "HOLDER", "MOMENTUM_PARAM", "METRICS", "SCALARS",
           "CURVES", "Claimed", "Dimension", "Finished", "Outcome", "dimensions", "stored_point", "records_from_study",
           "trial_attrs"]
