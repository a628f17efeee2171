"""Everything Optuna: storages, the study, samplers, pruners, claiming, heartbeats, telling, records.

No other module of inertia imports Optuna (this one imports it only when a function runs).

- Grid: every grid point is enqueued once as a WAITING trial (fixed parameters), in the
  transaction that checks the study's signature; workers claim WAITING trials in rounds.
- Random / TPE: a round of new trials is claimed (and sampled) only after the earlier rounds
  of this worker are told; TPE's ``constant_liar`` covers what runs elsewhere.
- Database storages claim a round in one transaction (the study's row locked), which also
  records the holder (:data:`HOLDER`) and the first heartbeat of each trial. A trial whose
  holder is a dead process of this machine is retried at once; one whose heartbeat is stale
  (:data:`HEARTBEAT_SECONDS`), e.g. of another machine, after two heartbeats.
- Database storages write a stack's intermediate values, and tell its results, in one transaction
  each: the rows Optuna's per-trial calls would write. A trial no longer RUNNING (retried after its
  worker was taken for dead) is left as it is: a late result is discarded.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from .processes import alive, me
from .pruning import STACKED, StackedPruner
from .selection import MEASURES, STATS, select
from .specs import METRICS, SearchSpec, grid_points, signature_difference

SCALARS = ("status", "best_step", "diverged_step", "pruned_step", "steps", "train_loss_final",
           *(f"{prefix}{m}_{s}" for prefix in ("", "final_") for m in MEASURES for s in STATS))
"""The user attributes of a finished trial, one per number (``val_loss_mean``: at ``best_step``)."""

CURVES = tuple(f"{m}_{s}" for m in MEASURES for s in STATS)
"""The curves kept in the trial's ``curves`` attribute (numbers at ``eval_steps``), with ``train_loss``."""

MOMENTUM_PARAM = "1-momentum"
"""Momentum's name in Optuna: ``1 - momentum`` on a log scale (sampled uniformly in log(1 - momentum))."""


HEARTBEAT_SECONDS = 60
"""A worker records a heartbeat for every trial it holds at least this often; a RUNNING trial
whose last heartbeat is older than twice this is stale (its worker died on another machine, or
the machine is lost) and any worker fails it and queues a copy (:meth:`Study.fail_stale`)."""

HOLDER = "holder"
"""The trial system attribute that names the process holding a RUNNING trial (``host:pid:start``)."""


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
                    kwargs.update(heartbeat_interval=int(heartbeat), grace_period=2 * int(heartbeat))
                storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite"):
                _write_ahead(storage.engine)
            return storage
        except Exception as error:  # sqlalchemy / driver errors of every kind
            # two workers creating the tables of a fresh database at once: one gets an
            # IntegrityError; the tables exist now, so try again
            if "Integrity" in type(error).__name__ and attempt < 3:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {redact(url)}: {type(error).__name__}: {error}") from error
    raise AssertionError("unreachable")


def _write_ahead(engine: Any) -> None:
    """SQLite with a write-ahead log, synced at checkpoints (``synchronous=NORMAL``): a commit then
    costs no fsync of its own, so a trial's bookkeeping takes microseconds, not milliseconds. A
    killed process loses nothing committed; a power cut may lose the last commits, never consistency
    (their trials are trained again)."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def pragmas(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        except Exception:  # a read-only folder or a busy database: keep the defaults
            pass
        finally:
            cursor.close()

    engine.dispose()   # connections made while the tables were set up get the pragmas too


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


@dataclass(frozen=True)
class Outcome:
    """What telling one configuration writes into its trial (:meth:`Study.outcome`)."""

    steps: dict[int, float]          # the sweep's validation metric at each evaluation point (intermediate values)
    attrs: dict[str, Any]            # the user attributes (:func:`trial_attrs`)
    value: float | None              # the trial's value (COMPLETE), or None: PRUNED


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
    _rows: Any = field(default=None, init=False, repr=False)   # the storage's tables (database storages)

    # ------------------------------------------------------------ opening
    def open(self) -> "Study":
        """Create or load the study, check that it holds this sweep, and (once) enqueue the grid.

        The check and the enqueue are one transaction: a process killed at any moment leaves
        either the whole grid or none of it, and the next one to open the study adds it.
        """
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(self.storage_url, heartbeat=HEARTBEAT_SECONDS)
        kwargs = dict(storage=storage, study_name=self.study_name, sampler=make_sampler(self.search.sampler, self.seed),
                      pruner=make_pruner(self.search.pruner))
        self.study = self._create_or_load(kwargs)
        self._rows = _Rows.of(self.study)
        sig = json.dumps(self.signature, sort_keys=True, default=str)
        points = [stored_point(self.space, p) for p in grid_points(self.space)] if self.search.sampler == "grid" else []
        self._name_metric()
        if self._rows is not None:
            self._rows.prepare(sig, points, self._check_signature)
            return self
        self._check_signature(self.study.user_attrs.get("signature"), sig)
        if not self.study.user_attrs.get("ready"):   # in memory: this process alone
            self.study.set_user_attr("signature", sig)
            for point in points:
                self.study.enqueue_trial(point)
            self.study.set_user_attr("ready", True)
        return self

    def _name_metric(self) -> None:
        """Name the study's objective after the sweep's metric (once: Optuna's dashboard and plots show it)."""
        import optuna

        if self.study.metric_names != [self.search.metric]:
            with warnings.catch_warnings():  # "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([self.search.metric])

    def _create_or_load(self, kwargs: dict[str, Any]) -> Any:
        import optuna

        for attempt in range(4):
            try:
                return optuna.create_study(load_if_exists=False, direction=METRICS[self.search.metric][1], **kwargs)
            except optuna.exceptions.DuplicatedStudyError:
                return optuna.load_study(**kwargs)
            except Exception as error:
                if "Integrity" in type(error).__name__ and attempt < 3:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise StorageError(f"cannot use storage {redact(str(self.storage_url))}: {error}") from error
        raise AssertionError("unreachable")

    def _check_signature(self, stored: str | None, sig: str) -> None:
        if stored is not None and stored != sig:
            raise ValueError(
                f"study {self.study_name!r} holds a different sweep ({signature_difference(stored, sig)}); "
                f"it is in {redact(str(self.storage_url))}: use another --out folder or --study-name")

    # ------------------------------------------------------------ taking trials
    def claim(self, limit: int, take: Callable[[Any], None]) -> list[Any]:
        """Up to ``limit`` trials for this worker (grid: WAITING ones; random/TPE: retried ones,
        then new ones up to the budget); ``take(trial)`` runs for each once they are read.

        Database storages take them in one transaction that also records this process as their
        holder and their first heartbeat, so a trial is never RUNNING without both."""
        budget = None if self.search.sampler == "grid" else int(self.search.trials or 0)
        if self._rows is not None:
            ids = self._rows.claim(limit, budget, me())
        else:
            ids = self._claim_in_memory(limit, budget)
        batch = self._trials(ids)
        for trial in batch:
            take(trial)
        return batch

    def _claim_in_memory(self, limit: int, budget: int | None) -> list[int]:
        from optuna.trial import TrialState

        storage = self.study._storage
        ids = [t._trial_id for t in storage.get_all_trials(self.study._study_id, deepcopy=False,
                                                         states=(TrialState.WAITING,))][:limit]
        for trial_id in ids:
            storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
        if budget is not None:
            live = len(self.study.get_trials(deepcopy=False, states=_live()))
            ids += [storage.create_new_trial(self.study._study_id) for _ in range(min(limit - len(ids), budget - live))]
        return ids

    def _trials(self, ids: Sequence[int]) -> list[Any]:
        """The Optuna trials ``ids``; a database storage reads them all in one query."""
        import optuna

        if self._rows is None:
            return [optuna.Trial(self.study, i) for i in ids]
        return [_trial_of(self.study, frozen) for frozen in self._rows.read(self.study._storage, ids)]

    def resume(self, numbers: Sequence[int]) -> list[Any] | None:
        """The trials ``numbers`` (a checkpoint's), now held by this process; None when none is RUNNING."""
        from optuna.trial import TrialState

        storage, study_id = self.study._storage, self.study._study_id
        ids = [storage.get_trial_id_from_study_id_trial_number(study_id, n) for n in numbers]
        if self._rows is not None:
            running = self._rows.hold(ids, me())
        else:
            running = [i for i in ids if storage.get_trial(i).state == TrialState.RUNNING]
        return self._trials(ids) if running else None

    def fail_stale(self) -> int:
        """Retry the trials of dead workers: a process of this machine that is gone (at once), or
        a stale heartbeat (:data:`HEARTBEAT_SECONDS`, other machines). Each is failed and a copy
        with its parameters queued, in one transaction; returns how many."""
        if self._rows is None:
            return 0   # in memory: only this process has trials
        dead = [i for i, holder in self._rows.holders().items() if not alive(holder)]
        return self._rows.retry(sorted({*dead, *self.study._storage._get_stale_trial_ids(self.study._study_id)}))

    def beat(self, trials: Sequence[Any]) -> None:
        """Record a heartbeat for each of ``trials`` (database storages), in one transaction."""
        if self._rows is not None and trials:
            self._rows.beat([t._trial_id for t in trials])

    def configs(self, trials: Sequence[Any]) -> list[dict[str, float]]:
        """The hyperparameters each of ``trials`` asks for (grid: its enqueued point, exactly), stored
        as its parameters. A database storage stores the fixed ones (enqueued or retried points) of
        all ``trials`` in one transaction; the others are sampled trial by trial."""
        grid = self.search.sampler == "grid"
        fixed: list[tuple[int, str, float, Any]] = []
        configs = []
        for trial in trials:
            config = {}
            for dim in dimensions(self.space):
                low, high = dim.bounds
                config[dim.name] = dim.values[0] if low == high else dim.value(self._suggest(trial, dim, fixed), grid)
            configs.append(config)
        if fixed:
            self._rows.set_params(fixed)
        return configs

    def _suggest(self, trial: Any, dim: Dimension, fixed: list[tuple[int, str, float, Any]]) -> float:
        """``trial.suggest_float`` for ``dim``; on a database storage a fixed value not yet stored is
        only added to ``fixed`` (trial id, name, value, distribution) and to the trial, as Optuna would."""
        import optuna

        low, high = dim.bounds
        frozen, value = trial._cached_frozen_trial, trial._fixed_params.get(dim.param)
        if self._rows is None or value is None or dim.param in frozen.distributions:
            return trial.suggest_float(dim.param, low, high, log=dim.log)
        distribution = optuna.distributions.FloatDistribution(low, high, log=dim.log)
        fixed.append((trial._trial_id, dim.param, distribution.to_internal_repr(value), distribution))
        frozen.distributions[dim.param], frozen.params[dim.param] = distribution, value
        return value

    # ------------------------------------------------------------ results
    def report(self, trial: Any, metrics: Mapping[str, float], step: int) -> bool:
        """Report the sweep's metric (of the validation ``metrics`` at ``step``); should ``trial`` be pruned?"""
        return self.judge([trial], step, {0: metrics}) == [0]

    def judge(self, trials: Sequence[Any], step: int, means: Mapping[int, Mapping[str, float]]) -> list[int]:
        """Report every member of a stack at ``step`` (``means``: index into ``trials`` -> its mean validation
        metrics by name), all in one commit, then decide for them together; the indices to prune."""
        mine = {c: metrics[self.search.metric] for c, metrics in means.items()}
        finite = {c: v for c, v in mine.items() if math.isfinite(v)}
        self._write({trials[c]._trial_id: ({step: v}, {}) for c, v in finite.items()})
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

    def tell(self, trials: Sequence[Any], records: Sequence[Mapping[str, Any]], worker: str) -> None:
        """Store each configuration's result (:meth:`outcome`) in its trial and finish it, unless it is no
        longer RUNNING (told before an interruption, or retried after this worker was taken for dead:
        a late result is discarded). A database storage tells all ``trials`` in one transaction."""
        from optuna.trial import TrialState

        outcomes = {t._trial_id: self.outcome(r, worker) for t, r in zip(trials, records)}
        if self._rows is not None:
            self._rows.tell(outcomes)
            self.study._thread_local.cached_all_trials = None   # as Study.tell does: samplers read anew
            return
        storage = self.study._storage
        for trial in trials:
            if storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
                continue
            outcome = outcomes[trial._trial_id]
            self._write({trial._trial_id: (outcome.steps, outcome.attrs)})
            if outcome.value is None:
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, outcome.value)

    def outcome(self, record: Mapping[str, Any], worker: str) -> Outcome:
        """What telling a configuration's ``record`` writes: its numbers at the selected point
        (:func:`.selection.select`) and curves, its validation metric at every evaluation point, and
        the selected metric (COMPLETE), or none (PRUNED: diverged or pruned)."""
        record = select(record, self.search.metric, self.search.select)
        curve = record.get(f"{self.search.metric}_mean_curve") or []
        steps = {int(s): v for s, v in zip(record.get("eval_steps") or [], curve) if _finite(v)}
        value = record.get(METRICS[self.search.metric][0])
        ok = record["status"] == "ok" and _finite(value)
        return Outcome(steps, trial_attrs(record, worker), float(value) if ok else None)

    def _write(self, updates: Mapping[int, tuple[Mapping[int, float], Mapping[str, Any]]]) -> None:
        """Intermediate values (step -> value) and user attributes of trials (trial id -> both); a
        database storage writes them in one transaction, to the trials still RUNNING."""
        if self._rows is not None:
            self._rows.write(updates)
            return
        storage = self.study._storage
        for trial_id, (values, attrs) in updates.items():
            for step, value in values.items():
                storage.set_trial_intermediate_value(trial_id, step, value)
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)

    def give_back(self, trials: Sequence[Any]) -> None:
        """Put the RUNNING ones of ``trials`` back to WAITING, for the next claim (any worker)."""
        from optuna.trial import TrialState

        if self._rows is not None:
            self._rows.give_back([t._trial_id for t in trials])
            return
        storage = self.study._storage
        for trial in trials:
            if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)

    def finished(self) -> int:
        """How many trials are complete or pruned."""
        from optuna.trial import TrialState

        return self._count(TrialState.COMPLETE, TrialState.PRUNED)

    def running(self) -> int:
        """How many trials are RUNNING (held by this worker or others)."""
        from optuna.trial import TrialState

        return self._count(TrialState.RUNNING)

    def _count(self, *states: Any) -> int:
        """How many trials are in ``states``; a database storage counts them in SQL (Optuna would read
        every trial of the study)."""
        if self._rows is not None:
            return self._rows._count(*states)
        return len(self.study.get_trials(deepcopy=False, states=states))

    def records(self) -> list[dict[str, Any]]:
        """One record per finished trial (:func:`records_from_study`); a database storage reads them in
        three queries (Optuna would build every trial of the study, field by field)."""
        from optuna.trial import TrialState

        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        trials = (self._rows.finished(finished) if self._rows is not None
                  else self.study.get_trials(deepcopy=False, states=finished))
        return records_from_study(trials, self.space, self.search.sampler)


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


def _trial_of(study: Any, frozen: Any) -> Any:
    """``optuna.Trial(study, frozen._trial_id)`` made from ``frozen`` (read with its round) instead of
    reading it again; ``tests/test_sweep_bookkeeping.py`` checks that both are the same."""
    import optuna
    from optuna import pruners

    trial = optuna.Trial.__new__(optuna.Trial)
    trial.study, trial._trial_id, trial.storage = study, frozen._trial_id, study._storage
    trial._cached_frozen_trial = frozen
    study.sampler.before_trial(pruners._filter_study(study, frozen), frozen)
    trial.relative_search_space, trial._relative_params = None, None
    trial._fixed_params = frozen.system_attrs.get("fixed_params", {})
    return trial


class Finished(NamedTuple):
    """What a record is made of: a finished trial's number, state, parameters and user attributes."""

    number: int
    state: Any
    params: dict[str, Any]
    user_attrs: dict[str, Any]


def records_from_study(trials: Iterable[Any], space: Mapping[str, Sequence[float]],
                       sampler: str = "grid") -> list[dict[str, Any]]:
    """One record per finished trial of a study (Optuna's frozen trials, or :class:`Finished`): its
    hyperparameters, numbers and curves (``*_curve`` keys)."""
    from optuna.trial import TrialState

    out = []
    for t in trials:
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
def _live() -> tuple[Any, ...]:
    """The trial states that count against a random/TPE budget (all but FAIL)."""
    from optuna.trial import TrialState

    return TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING


class _Rows:
    """A database storage's tables of one study, for the operations that must be one transaction
    (and cost one, whatever the number of trials): enqueue, claim, hold, heartbeats, parameters,
    intermediate values, tell, retry, give back. They write the rows Optuna's own calls would."""

    def __init__(self, study: Any):
        from optuna.storages._rdb import models

        self.backend = study._storage._backend
        self.study_id = study._study_id
        self.t, self.sys = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
        self.beats, self.params = models.TrialHeartbeatModel.__table__, models.TrialParamModel.__table__
        self.studies, self.attrs = models.StudyModel.__table__, models.StudyUserAttributeModel.__table__
        self.steps, self.user = models.TrialIntermediateValueModel.__table__, models.TrialUserAttributeModel.__table__
        self.values = models.TrialValueModel.__table__

    @staticmethod
    def of(study: Any) -> "_Rows | None":
        return _Rows(study) if hasattr(study._storage, "_backend") else None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A session whose transaction holds the study's row (so claims and enqueues never interleave)."""
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.backend.scoped_session) as session:
            s = self.studies
            session.execute(sa.update(s).where(s.c.study_id == self.study_id).values(study_name=s.c.study_name))
            yield session

    def prepare(self, sig: str, points: list[dict[str, float]], check: Callable[[Any, str], None]) -> None:
        """Check the signature; unless done before, store it and enqueue ``points`` (one transaction)."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        a = self.attrs
        if self.backend.get_study_user_attrs(self.study_id).get("ready"):   # the usual case: nothing to write
            check(self.backend.get_study_user_attrs(self.study_id).get("signature"), sig)
            return
        with self.transaction() as session:
            stored = {k: json.loads(v) for k, v in session.execute(
                sa.select(a.c.key, a.c.value_json).where(a.c.study_id == self.study_id)).all()}
            check(stored.get("signature"), sig)
            if stored.get("ready"):
                return
            self._add(session, points, TrialState.WAITING)
            session.execute(sa.delete(a).where(a.c.study_id == self.study_id, a.c.key.in_(["signature", "ready"])))
            session.execute(sa.insert(a), [{"study_id": self.study_id, "key": "signature", "value_json": json.dumps(sig)},
                                           {"study_id": self.study_id, "key": "ready", "value_json": "true"}])

    def _add(self, session: Any, fixed: Sequence[dict[str, float] | None], state: Any) -> list[int]:
        """New trials in ``state``, one per entry of ``fixed`` (its fixed parameters, or None); their ids."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        if not fixed:
            return []
        t = self.t
        base = session.execute(sa.select(sa.func.count()).where(t.c.study_id == self.study_id)).scalar()
        start = _utcnow() if state == TrialState.RUNNING else None
        session.execute(sa.insert(t), [{"study_id": self.study_id, "number": base + i, "state": state,
                                        "datetime_start": start} for i in range(len(fixed))])
        ids = session.execute(sa.select(t.c.trial_id).where(t.c.study_id == self.study_id, t.c.number >= base)
                              .order_by(t.c.number)).scalars().all()
        attrs = [{"trial_id": i, "key": "fixed_params", "value_json": json.dumps(f)} for i, f in zip(ids, fixed) if f]
        if attrs:
            session.execute(sa.insert(self.sys), attrs)
        return list(ids)

    def claim(self, limit: int, budget: int | None, holder: str) -> list[int]:
        """Up to ``limit`` WAITING trials, then new ones up to ``budget`` (None: none), made RUNNING
        and held by ``holder``, in one transaction; their ids."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        if budget is None and not self._count(TrialState.WAITING):
            return []   # nothing to claim: no write (a finished study's files stay as they are)
        with self.transaction() as session:
            ids = list(session.execute(sa.select(t.c.trial_id).where(
                t.c.study_id == self.study_id, t.c.state == TrialState.WAITING).order_by(t.c.number).limit(limit))
                .scalars().all())
            for chunk in _chunks(ids):
                session.execute(sa.update(t).where(t.c.trial_id.in_(chunk)).values(
                    state=TrialState.RUNNING, datetime_start=_utcnow()))
            if budget is not None:
                live = session.execute(sa.select(sa.func.count()).where(
                    t.c.study_id == self.study_id, t.c.state.in_(_live()))).scalar()
                ids += self._add(session, [None] * max(0, min(limit - len(ids), budget - live)), TrialState.RUNNING)
            self._hold(session, ids, holder)
        return ids

    def read(self, storage: Any, ids: Sequence[int]) -> list[Any]:
        """The trials ``ids`` (frozen, in that order), read in one query and shown to Optuna's storage
        cache (which would otherwise reread every unfinished trial of the study to find them)."""
        from optuna.storages._cached_storage import _StudyInfo

        trials = self.backend._get_trials(self.study_id, states=None, included_trial_ids=set(ids),
                                          trial_id_greater_than=2 ** 62)
        with storage._lock:
            info = storage._studies.setdefault(self.study_id, _StudyInfo())
            storage._add_trials_to_cache(self.study_id, trials)
            info.unfinished_trial_ids.update(t._trial_id for t in trials if not t.state.is_finished())
        by_id = {t._trial_id: t for t in trials}
        return [by_id[i] for i in ids]

    def _count(self, *states: Any) -> int:
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        t = self.t
        with _create_scoped_session(self.backend.scoped_session) as session:
            return session.execute(sa.select(sa.func.count()).where(
                t.c.study_id == self.study_id, t.c.state.in_(states))).scalar()

    def finished(self, states: Sequence[Any]) -> list[Finished]:
        """The study's trials in ``states``, by number, with their parameters (as Optuna gives them)
        and user attributes: three queries in one session."""
        import collections

        import sqlalchemy as sa
        from optuna.distributions import json_to_distribution
        from optuna.storages._rdb.storage import _create_scoped_session

        t, p, u = self.t, self.params, self.user
        mine = sa.and_(t.c.study_id == self.study_id, t.c.state.in_(states))
        params: dict[int, dict[str, Any]] = collections.defaultdict(dict)
        attrs: dict[int, dict[str, Any]] = collections.defaultdict(dict)
        distributions: dict[str, Any] = {}
        with _create_scoped_session(self.backend.scoped_session) as session:
            trials = session.execute(sa.select(t.c.trial_id, t.c.number, t.c.state).where(mine)
                                     .order_by(t.c.number)).all()
            for i, name, value, dist in session.execute(sa.select(
                    p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json).join(t).where(mine)):
                if dist not in distributions:
                    distributions[dist] = json_to_distribution(dist)
                params[i][name] = distributions[dist].to_external_repr(value)
            for i, key, value in session.execute(sa.select(u.c.trial_id, u.c.key, u.c.value_json).join(t).where(mine)):
                attrs[i][key] = json.loads(value)
        return [Finished(number, state, params[i], attrs[i]) for i, number, state in trials]

    def _hold(self, session: Any, ids: Sequence[int], holder: str) -> None:
        import sqlalchemy as sa

        for chunk in _chunks(ids):
            session.execute(sa.delete(self.sys).where(self.sys.c.trial_id.in_(chunk), self.sys.c.key == HOLDER))
            session.execute(sa.delete(self.beats).where(self.beats.c.trial_id.in_(chunk)))
            session.execute(sa.insert(self.sys), [{"trial_id": i, "key": HOLDER, "value_json": json.dumps(holder)}
                                                  for i in chunk])
            session.execute(sa.insert(self.beats).values(
                [{"trial_id": i, "heartbeat": sa.func.current_timestamp()} for i in chunk]))

    def hold(self, ids: Sequence[int], holder: str) -> list[int]:
        """``holder`` takes over the RUNNING ones of ``ids``; their ids."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        with self.transaction() as session:
            running = session.execute(sa.select(t.c.trial_id).where(
                t.c.trial_id.in_(list(ids)), t.c.state == TrialState.RUNNING)).scalars().all()
            self._hold(session, running, holder)
        return list(running)

    def beat(self, ids: Sequence[int]) -> None:
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.backend.scoped_session) as session:
            for chunk in _chunks(ids):
                session.execute(sa.update(self.beats).where(self.beats.c.trial_id.in_(chunk)).values(
                    heartbeat=sa.func.current_timestamp()))

    def holders(self) -> dict[int, str]:
        """RUNNING trial id -> the process holding it."""
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        t, a = self.t, self.sys
        with _create_scoped_session(self.backend.scoped_session) as session:
            rows = session.execute(sa.select(t.c.trial_id, a.c.value_json).join(a, a.c.trial_id == t.c.trial_id).where(
                t.c.study_id == self.study_id, t.c.state == TrialState.RUNNING, a.c.key == HOLDER)).all()
        return {i: json.loads(v) for i, v in rows}

    def retry(self, ids: Sequence[int]) -> int:
        """Fail the RUNNING ones of ``ids`` and queue a copy of each with its parameters (one
        transaction; a trial never sampled is only failed: its budget is free again)."""
        import optuna
        import sqlalchemy as sa
        from optuna.trial import TrialState

        if not ids:
            return 0
        t, a, p = self.t, self.sys, self.params
        with self.transaction() as session:
            running = list(session.execute(sa.select(t.c.trial_id).where(
                t.c.trial_id.in_(list(ids)), t.c.state == TrialState.RUNNING).order_by(t.c.number)).scalars().all())
            if not running:
                return 0
            fixed = {i: {} for i in running}
            for i, name, value, dist in session.execute(sa.select(
                    p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json).where(p.c.trial_id.in_(running))):
                fixed[i][name] = optuna.distributions.json_to_distribution(dist).to_external_repr(value)
            for i, value in session.execute(sa.select(a.c.trial_id, a.c.value_json).where(
                    a.c.trial_id.in_(running), a.c.key == "fixed_params")):
                fixed[i] = {**json.loads(value), **fixed[i]}
            session.execute(sa.update(t).where(t.c.trial_id.in_(running)).values(
                state=TrialState.FAIL, datetime_complete=_utcnow()))
            self._add(session, [fixed[i] for i in running if fixed[i]], TrialState.WAITING)
        return len(running)

    def _running(self, session: Any, ids: Iterable[int]) -> list[int]:
        """The RUNNING ones of ``ids``."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        return [i for chunk in _chunks(list(ids)) for i in session.execute(sa.select(t.c.trial_id).where(
            t.c.trial_id.in_(chunk), t.c.state == TrialState.RUNNING)).scalars()]

    def set_params(self, params: Sequence[tuple[int, str, float, Any]]) -> None:
        """Store (trial id, name, internal value, distribution) as parameters of the RUNNING trials."""
        import sqlalchemy as sa
        from optuna.distributions import distribution_to_json

        with self.transaction() as session:
            running = set(self._running(session, {i for i, *_ in params}))
            rows = [{"trial_id": i, "param_name": name, "param_value": value,
                     "distribution_json": distribution_to_json(dist)} for i, name, value, dist in params if i in running]
            if rows:
                session.execute(sa.insert(self.params), rows)

    def write(self, updates: Mapping[int, tuple[Mapping[int, float], Mapping[str, Any]]]) -> None:
        """Intermediate values (step -> value) and user attributes of trials (trial id -> both), to the
        RUNNING ones, in one transaction."""
        with self.transaction() as session:
            self._write(session, {i: updates[i] for i in self._running(session, updates)})

    def _write(self, session: Any, updates: Mapping[int, tuple[Mapping[int, float], Mapping[str, Any]]]) -> None:
        from optuna.storages._rdb import models

        stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        steps = [{"trial_id": i, "step": step, **dict(zip(("intermediate_value", "intermediate_value_type"),
                                                          stored(value)))}
                 for i, (values, _) in updates.items() for step, value in values.items()]
        attrs = [{"trial_id": i, "key": key, "value_json": json.dumps(value)}
                 for i, (_, user) in updates.items() for key, value in user.items()]
        _replace(session, self.steps, ("trial_id", "step"), steps)
        _replace(session, self.user, ("trial_id", "key"), attrs)

    def tell(self, outcomes: Mapping[int, Outcome]) -> list[int]:
        """Finish the RUNNING ones of the trials ``outcomes`` (trial id -> outcome) in one transaction,
        with the rows ``Study.tell`` of Optuna writes: intermediate values, user attributes, the value
        (a PRUNED trial's: its last intermediate value, if any), the state and ``datetime_complete``.
        Random and TPE samplers do nothing after a trial, so no sampler is called. The ids told."""
        import sqlalchemy as sa
        from optuna.storages._rdb import models
        from optuna.trial import TrialState

        t = self.t
        with self.transaction() as session:
            live = self._running(session, outcomes)
            self._write(session, {i: (outcomes[i].steps, outcomes[i].attrs) for i in live})
            values = {i: outcomes[i].value for i in live}
            values.update(self._last_steps(session, [i for i in live if values[i] is None]))
            rows = [{"trial_id": i, "objective": 0, **dict(zip(("value", "value_type"),
                                                              models.TrialValueModel.value_to_stored_repr(v)))}
                    for i, v in values.items() if v is not None]
            if rows:
                session.execute(sa.insert(self.values), rows)
            now = _utcnow()
            for state, ids in ((TrialState.COMPLETE, [i for i in live if outcomes[i].value is not None]),
                               (TrialState.PRUNED, [i for i in live if outcomes[i].value is None])):
                for chunk in _chunks(ids):
                    session.execute(sa.update(t).where(t.c.trial_id.in_(chunk)).values(
                        state=state, datetime_complete=now))
        return live

    def _last_steps(self, session: Any, ids: Sequence[int]) -> dict[int, float]:
        """Each trial's intermediate value at its last step, where it has one that is not NaN (what
        Optuna gives a PRUNED trial as its value)."""
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        s, last = self.steps, {}
        for chunk in _chunks(ids):
            for i, step, value, kind in session.execute(sa.select(
                    s.c.trial_id, s.c.step, s.c.intermediate_value, s.c.intermediate_value_type).where(
                    s.c.trial_id.in_(chunk))):
                if i not in last or step > last[i][0]:
                    last[i] = (step, models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind))
        return {i: v for i, (_, v) in last.items() if not math.isnan(v)}

    def give_back(self, ids: Sequence[int]) -> None:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        with self.transaction() as session:
            for chunk in _chunks(ids):
                session.execute(sa.update(t).where(t.c.trial_id.in_(chunk), t.c.state == TrialState.RUNNING)
                                .values(state=TrialState.WAITING))


def _utcnow() -> Any:
    """Now, as the naive UTC datetime Optuna's tables hold."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _replace(session: Any, table: Any, key: tuple[str, str], rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table``, replacing the rows of the same ``key`` (the trial id's column, then
    another): the trials' rows are read by their indexed id, and only those of a key in ``rows`` deleted."""
    import sqlalchemy as sa

    (row_id,), trial, other = table.primary_key.columns, table.c[key[0]], table.c[key[1]]
    for chunk in _chunks(rows):
        new = {(r[key[0]], r[key[1]]) for r in chunk}
        old = [i for i, *pair in session.execute(sa.select(row_id, trial, other).where(
            trial.in_({t for t, _ in new}))) if tuple(pair) in new]
        if old:
            session.execute(sa.delete(table).where(row_id.in_(old)))
        session.execute(sa.insert(table), chunk)


def is_storage_failure(error: BaseException) -> bool:
    """Is ``error`` the storage failing (a lost connection, a read-only or full database)?"""
    import optuna

    return isinstance(error, optuna.exceptions.StorageInternalError) or type(error).__module__.startswith("sqlalchemy")
