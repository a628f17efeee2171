"""The :class:`.store.Store` of a database storage (SQLite, PostgreSQL): batched SQL on Optuna's tables.

Each operation is one transaction, whatever the number of trials (a 64 x 64 grid is claimed,
parametrized and told in a few dozen), and writes the rows Optuna's own per-trial calls would
(``tests/test_sweep_bookkeeping.py`` compares them field by field). A transaction that changes
trials first locks the study's row, so that the claims, enqueues, retries and results of concurrent
workers never interleave (a result told late, after a retry, finds its trial FAIL and is discarded).
A claim records the holder (:data:`.store.HOLDER`) and the first heartbeat of each trial it takes,
so a trial is never RUNNING without both.

This is the one module of inertia that uses Optuna's private names: :data:`OPTUNA_PRIVATE` lists
them, and ``tests/test_sweep_optuna.py`` fails, naming this module, when an Optuna release drops one.
"""
from __future__ import annotations

import collections
import functools
import json
import math
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping, Sequence

from .records import Finished, Outcome
from .store import HOLDER, Claimed, Store, Updates

OPTUNA_PRIVATE = (
    "optuna.storages._CachedStorage",
    "optuna.storages._rdb.models.StudyModel",
    "optuna.storages._rdb.models.StudyUserAttributeModel",
    "optuna.storages._rdb.models.TrialModel",
    "optuna.storages._rdb.models.TrialSystemAttributeModel",
    "optuna.storages._rdb.models.TrialHeartbeatModel",
    "optuna.storages._rdb.models.TrialParamModel",
    "optuna.storages._rdb.models.TrialUserAttributeModel",
    "optuna.storages._rdb.models.TrialValueModel.value_to_stored_repr",
    "optuna.storages._rdb.models.TrialIntermediateValueModel.intermediate_value_to_stored_repr",
    "optuna.storages._rdb.models.TrialIntermediateValueModel.stored_repr_to_intermediate_value",
)
"""The private names of Optuna this module uses (its tables, how it stores infinite values, its cache)."""


def missing_private() -> list[str]:
    """The names of :data:`OPTUNA_PRIVATE` that the installed Optuna does not have."""
    import importlib

    missing = []
    for name in OPTUNA_PRIVATE:
        parts = name.split(".")
        found: Any = importlib.import_module(parts[0])
        for depth, attr in enumerate(parts[1:], 2):
            try:
                found = getattr(found, attr) if hasattr(found, attr) else importlib.import_module(".".join(parts[:depth]))
            except ImportError:
                missing.append(name)
                break
    return missing


def check_optuna() -> None:
    """Refuse an Optuna without the private names this module uses, in one line naming them."""
    missing = missing_private()
    if missing:
        import optuna

        raise RuntimeError(f"{__name__} uses Optuna's private {', '.join(missing)}, which optuna {optuna.__version__} "
                           "does not have; install the versions pyproject.toml names")


def shared_storage(backend: Any) -> Any:
    """The storage Optuna's study objects are opened on: ``backend`` behind the cache Optuna puts
    in front of every database storage, made once so that every study object shares it."""
    from optuna.storages import _CachedStorage

    return _CachedStorage(backend)


def reconnecting(operation: Callable) -> Callable:
    """``operation`` of a :class:`SqlStore`, run again while its database server is out of reach (a
    restart, a lost network), with back-off (0.5 s, doubling up to 8 s), for at most the store's
    ``reconnect`` seconds; then the error is raised. Every operation can run again after a commit
    whose answer was lost: each writes only what is not written yet (a claim first takes back the
    trials its holder holds: a worker claims only when it holds none)."""

    @functools.wraps(operation)
    def run(self: "SqlStore", *args: Any, **kwargs: Any) -> Any:
        from .storage import is_disconnect

        deadline, delay = time.monotonic() + self.reconnect, 0.5
        while True:
            try:
                return operation(self, *args, **kwargs)
            except Exception as error:
                if not is_disconnect(error) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 8.0)

    return run


class SqlStore(Store):
    """The trials of the study ``study_id`` in ``backend`` (an ``optuna.storages.RDBStorage``); a
    RUNNING trial whose heartbeat is older than ``grace`` seconds is abandoned; an operation goes on
    trying to reach a database server out of reach for ``reconnect`` seconds (:func:`reconnecting`)."""

    def __init__(self, backend: Any, study_id: int, grace: float, reconnect: float = 0.0):
        check_optuna()
        from optuna.storages._rdb import models

        self.backend, self.engine, self.study_id, self.grace = backend, backend.engine, study_id, grace
        self.reconnect = reconnect
        self.t, self.sys = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
        self.beats, self.params = models.TrialHeartbeatModel.__table__, models.TrialParamModel.__table__
        self.studies, self.attrs = models.StudyModel.__table__, models.StudyUserAttributeModel.__table__
        self.steps, self.user = models.TrialIntermediateValueModel.__table__, models.TrialUserAttributeModel.__table__
        self.values = models.TrialValueModel.__table__
        self.value_repr = models.TrialValueModel.value_to_stored_repr
        self.step_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        self.step_value = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value

    # ------------------------------------------------------------ sessions
    @contextmanager
    def session(self) -> Iterator[Any]:
        """One transaction: committed at the end, rolled back on an error."""
        from sqlalchemy.orm import Session

        with Session(self.engine) as session, session.begin():
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction that holds the study's row (claims and enqueues never interleave)."""
        import sqlalchemy as sa

        with self.session() as session:
            s = self.studies
            session.execute(sa.update(s).where(s.c.study_id == self.study_id).values(study_name=s.c.study_name))
            yield session

    # ------------------------------------------------------------ trials in, trials out
    @reconnecting
    def prepare(self, signature: str, points: Sequence[Mapping[str, float]],
                check: Callable[[str | None, str], None]) -> None:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        a = self.attrs
        stored = self.backend.get_study_user_attrs(self.study_id)
        if stored.get("ready"):   # the usual case: nothing to write
            check(stored.get("signature"), signature)
            return
        with self.transaction() as session:
            stored = {k: json.loads(v) for k, v in session.execute(
                sa.select(a.c.key, a.c.value_json).where(a.c.study_id == self.study_id)).all()}
            check(stored.get("signature"), signature)
            if stored.get("ready"):
                return
            self._add(session, points, TrialState.WAITING)
            session.execute(sa.delete(a).where(a.c.study_id == self.study_id, a.c.key.in_(["signature", "ready"])))
            session.execute(sa.insert(a), [
                {"study_id": self.study_id, "key": "signature", "value_json": json.dumps(signature)},
                {"study_id": self.study_id, "key": "ready", "value_json": "true"}])

    def _add(self, session: Any, fixed: Sequence[Mapping[str, float] | None], state: Any) -> list[int]:
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
        attrs = [{"trial_id": i, "key": "fixed_params", "value_json": json.dumps(dict(f))}
                 for i, f in zip(ids, fixed) if f]
        if attrs:
            session.execute(sa.insert(self.sys), attrs)
        return list(ids)

    @reconnecting
    def claim(self, limit: int, budget: int | None, holder: str) -> list[Claimed]:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        if budget is None and not self.count(TrialState.WAITING):
            with self.session() as session:
                if not self._held(session, holder):
                    return []   # nothing to claim: no write (a finished study's files stay as they are)
        with self.transaction() as session:
            held = self._held(session, holder)
            ids = list(session.execute(sa.select(t.c.trial_id).where(
                t.c.study_id == self.study_id, t.c.state == TrialState.WAITING).order_by(t.c.number)
                .limit(max(0, limit - len(held)))).scalars().all())
            for chunk in _chunks(ids):
                session.execute(sa.update(t).where(t.c.trial_id.in_(chunk)).values(
                    state=TrialState.RUNNING, datetime_start=_utcnow()))
            if budget is not None:
                live = session.execute(sa.select(sa.func.count()).where(
                    t.c.study_id == self.study_id, t.c.state != TrialState.FAIL)).scalar()
                ids += self._add(session, [None] * max(0, min(limit - len(held) - len(ids), budget - live)),
                                 TrialState.RUNNING)
            self._hold(session, ids, holder)
            return self._claimed(session, held + ids)

    def _held(self, session: Any, holder: str) -> list[int]:
        """The RUNNING trials ``holder`` holds, by number."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t, a = self.t, self.sys
        return list(session.execute(sa.select(t.c.trial_id).join(a, a.c.trial_id == t.c.trial_id).where(
            t.c.study_id == self.study_id, t.c.state == TrialState.RUNNING, a.c.key == HOLDER,
            a.c.value_json == json.dumps(holder)).order_by(t.c.number)).scalars().all())

    def _claimed(self, session: Any, ids: Sequence[int]) -> list[Claimed]:
        """The trials ``ids`` (in that order) with their numbers, stored and fixed parameters."""
        import sqlalchemy as sa

        t, a, p = self.t, self.sys, self.params
        numbers, params, fixed = {}, collections.defaultdict(dict), collections.defaultdict(dict)
        for chunk in _chunks(ids):
            numbers.update(session.execute(sa.select(t.c.trial_id, t.c.number).where(t.c.trial_id.in_(chunk))).all())
            for i, value in session.execute(sa.select(a.c.trial_id, a.c.value_json).where(
                    a.c.trial_id.in_(chunk), a.c.key == "fixed_params")):
                fixed[i] = json.loads(value)
            for i, name, value, dist in session.execute(sa.select(
                    p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json).where(p.c.trial_id.in_(chunk))):
                params[i][name] = _external(dist, value)
        return [Claimed(i, numbers[i], params[i], fixed[i]) for i in ids]

    @reconnecting
    def hold(self, numbers: Sequence[int], holder: str) -> list[Claimed] | None:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        with self.transaction() as session:
            rows = dict(session.execute(sa.select(t.c.number, t.c.trial_id).where(
                t.c.study_id == self.study_id, t.c.number.in_(list(numbers)))).all())
            ids = [rows[n] for n in numbers]
            running = self._running(session, ids)
            if not running:
                return None
            self._hold(session, running, holder)
            return self._claimed(session, ids)

    def _hold(self, session: Any, ids: Sequence[int], holder: str) -> None:
        import sqlalchemy as sa

        for chunk in _chunks(ids):
            session.execute(sa.delete(self.sys).where(self.sys.c.trial_id.in_(chunk), self.sys.c.key == HOLDER))
            session.execute(sa.delete(self.beats).where(self.beats.c.trial_id.in_(chunk)))
            session.execute(sa.insert(self.sys), [{"trial_id": i, "key": HOLDER, "value_json": json.dumps(holder)}
                                                  for i in chunk])
            session.execute(sa.insert(self.beats).values(
                [{"trial_id": i, "heartbeat": sa.func.current_timestamp()} for i in chunk]))

    @reconnecting
    def beat(self, ids: Sequence[int]) -> None:
        import sqlalchemy as sa

        with self.session() as session:
            for chunk in _chunks(ids):
                session.execute(sa.update(self.beats).where(self.beats.c.trial_id.in_(chunk)).values(
                    heartbeat=sa.func.current_timestamp()))

    @reconnecting
    def abandoned(self, alive: Callable[[str], bool]) -> list[int]:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t, a, b = self.t, self.sys, self.beats
        with self.session() as session:
            now = session.execute(sa.select(sa.func.now())).scalar().replace(tzinfo=None)
            rows = session.execute(sa.select(t.c.trial_id, a.c.value_json, b.c.heartbeat)
                                   .outerjoin(a, sa.and_(a.c.trial_id == t.c.trial_id, a.c.key == HOLDER))
                                   .outerjoin(b, b.c.trial_id == t.c.trial_id)
                                   .where(t.c.study_id == self.study_id, t.c.state == TrialState.RUNNING)).all()
        stale = timedelta(seconds=self.grace)
        return sorted(i for i, holder, beat in rows if (holder is not None and not alive(json.loads(holder)))
                      or (beat is not None and now - beat > stale))

    @reconnecting
    def retry(self, ids: Sequence[int]) -> int:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        if not ids:
            return 0
        t = self.t
        with self.transaction() as session:
            running = list(session.execute(sa.select(t.c.trial_id).where(
                t.c.trial_id.in_(list(ids)), t.c.state == TrialState.RUNNING).order_by(t.c.number)).scalars().all())
            if not running:
                return 0
            fixed = {c.id: {**c.fixed, **c.params} for c in self._claimed(session, running)}
            session.execute(sa.update(t).where(t.c.trial_id.in_(running)).values(
                state=TrialState.FAIL, datetime_complete=_utcnow()))
            self._add(session, [fixed[i] for i in running if fixed[i]], TrialState.WAITING)
        return len(running)

    def _running(self, session: Any, ids: Sequence[int]) -> list[int]:
        """The RUNNING ones of ``ids``."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        return [i for chunk in _chunks(list(ids)) for i in session.execute(sa.select(t.c.trial_id).where(
            t.c.trial_id.in_(chunk), t.c.state == TrialState.RUNNING)).scalars()]

    # ------------------------------------------------------------ results
    @reconnecting
    def set_params(self, params: Sequence[tuple[int, str, float, Any]]) -> None:
        import sqlalchemy as sa
        from optuna.distributions import distribution_to_json

        p = self.params
        with self.transaction() as session:
            running = set(self._running(session, {i for i, *_ in params}))
            stored = {tuple(row) for chunk in _chunks(sorted(running)) for row in session.execute(
                sa.select(p.c.trial_id, p.c.param_name).where(p.c.trial_id.in_(chunk)))}
            rows = [{"trial_id": i, "param_name": name, "param_value": dist.to_internal_repr(value),
                     "distribution_json": distribution_to_json(dist)} for i, name, value, dist in params
                    if i in running and (i, name) not in stored]
            if rows:
                session.execute(sa.insert(self.params), rows)

    @reconnecting
    def write(self, updates: Updates) -> None:
        with self.transaction() as session:
            self._write(session, {i: updates[i] for i in self._running(session, list(updates))})

    def _write(self, session: Any, updates: Updates) -> None:
        steps = [{"trial_id": i, "step": step, **dict(zip(("intermediate_value", "intermediate_value_type"),
                                                          self.step_repr(value)))}
                 for i, (values, _) in updates.items() for step, value in values.items()]
        attrs = [{"trial_id": i, "key": key, "value_json": json.dumps(value)}
                 for i, (_, user) in updates.items() for key, value in user.items()]
        _replace(session, self.steps, ("trial_id", "step"), steps)
        _replace(session, self.user, ("trial_id", "key"), attrs)

    @reconnecting
    def tell(self, outcomes: Mapping[int, Outcome]) -> list[int]:
        """(See :meth:`.store.Store.tell`.) Random and TPE samplers do nothing after a trial, so no
        sampler is called."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        with self.transaction() as session:
            live = self._running(session, list(outcomes))
            self._write(session, {i: (outcomes[i].steps, outcomes[i].attrs) for i in live})
            values = {i: outcomes[i].value for i in live}
            values.update(self._last_steps(session, [i for i in live if values[i] is None]))
            rows = [{"trial_id": i, "objective": 0, **dict(zip(("value", "value_type"), self.value_repr(v)))}
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

        s, last = self.steps, {}
        for chunk in _chunks(ids):
            for i, step, value, kind in session.execute(sa.select(
                    s.c.trial_id, s.c.step, s.c.intermediate_value, s.c.intermediate_value_type).where(
                    s.c.trial_id.in_(chunk))):
                if i not in last or step > last[i][0]:
                    last[i] = (step, self.step_value(value, kind))
        return {i: v for i, (_, v) in last.items() if not math.isnan(v)}

    @reconnecting
    def give_back(self, ids: Sequence[int]) -> None:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t = self.t
        with self.transaction() as session:
            for chunk in _chunks(ids):
                session.execute(sa.update(t).where(t.c.trial_id.in_(chunk), t.c.state == TrialState.RUNNING)
                                .values(state=TrialState.WAITING))

    @reconnecting
    def count(self, *states: Any) -> int:
        import sqlalchemy as sa

        t = self.t
        with self.session() as session:
            return session.execute(sa.select(sa.func.count()).where(
                t.c.study_id == self.study_id, t.c.state.in_(states))).scalar()

    @reconnecting
    def finished(self) -> list[Finished]:
        """(See :meth:`.store.Store.finished`.) Three queries in one session."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        t, p, u = self.t, self.params, self.user
        mine = sa.and_(t.c.study_id == self.study_id, t.c.state.in_((TrialState.COMPLETE, TrialState.PRUNED)))
        params: dict[int, dict[str, Any]] = collections.defaultdict(dict)
        attrs: dict[int, dict[str, Any]] = collections.defaultdict(dict)
        with self.session() as session:
            trials = session.execute(sa.select(t.c.trial_id, t.c.number, t.c.state).where(mine)
                                     .order_by(t.c.number)).all()
            for i, name, value, dist in session.execute(sa.select(
                    p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json).join(t).where(mine)):
                params[i][name] = _external(dist, value)
            for i, key, value in session.execute(sa.select(u.c.trial_id, u.c.key, u.c.value_json).join(t).where(mine)):
                attrs[i][key] = json.loads(value)
        return [Finished(number, state, params[i], attrs[i]) for i, number, state in trials]


_DISTRIBUTIONS: dict[str, Any] = {}


def _external(distribution_json: str, value: float) -> Any:
    """A stored parameter as Optuna gives it (its distribution read once per JSON text)."""
    from optuna.distributions import json_to_distribution

    if distribution_json not in _DISTRIBUTIONS:
        _DISTRIBUTIONS[distribution_json] = json_to_distribution(distribution_json)
    return _DISTRIBUTIONS[distribution_json].to_external_repr(value)


def _utcnow() -> datetime:
    """Now, as the naive UTC datetime Optuna's tables hold."""
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
