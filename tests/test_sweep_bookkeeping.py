"""The study's batched bookkeeping (claim, parameters, intermediate values, tell: one transaction
each per stack) leaves exactly what Optuna's own per-trial calls leave, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime
from contextlib import contextmanager

import pytest
from conftest import scratch_database

from inertia.sweeps import SweepSpec, TaskSpec, _job, _load_data
from inertia.sweeps.engine import Members, run_members
from inertia.sweeps.specs import grid_points
from inertia.sweeps.study import METRICS, Study, dimensions, normalize_url, records_from_study, stored_point
from inertia.sweeps.study.public import PublicStore

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = dict(lr=[0.003, 0.3, 50.0], momentum=[0.0, 0.9])   # lr 50 diverges (PRUNED)


@contextmanager
def _storages(kind: str, tmp_path, request):
    """Two empty storage URLs of ``kind`` (sqlite, postgresql)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    with scratch_database(server) as (a, _), scratch_database(server) as (b, _):
        yield normalize_url(a), normalize_url(b)


def _spec(pruner: str | None = None) -> SweepSpec:
    task = TaskSpec.from_values("digits", "mlp", **SPACE)
    spec = SweepSpec.from_settings(task, dict(steps=30, batch_size=32, eval_every=10, metric="val_loss", seeds=2,
                                              pruner=pruner))
    return spec.resolved(data=_load_data("digits", 0))


def _train(spec: SweepSpec, url: str, store: str = "sql"):
    """Claim, store the parameters, train with intermediate values and tell, as a worker does (through
    the ``store`` back end); the study, its trials, their records and every ``judge`` call (step, means)."""
    study = Study(dict(spec.task.space), spec.signature(), spec.search, storage_url=url).open()
    if store == "public":
        study.store = PublicStore(study.study, study._storage, study.store.study_id)
    trials = study.claim(100, lambda trial: None)
    members = Members(_job(spec, _load_data("digits", 0)), study.configs(trials), [t.number for t in trials])
    judged = []

    def judge(m, means):
        judged.append((m.step, means))
        return study.judge(trials, m.step, means)

    run_members(members, on_eval=judge)
    records = members.results()
    study.tell(trials, records, "host:1")
    return study, trials, records, judged


def _told_per_trial(spec: SweepSpec, url: str, study: Study, records, judged) -> None:
    """The same sweep told with Optuna's own calls, one trial at a time: enqueue, ask, suggest,
    intermediate values, user attributes, tell."""
    import optuna

    ref = optuna.create_study(storage=url, study_name="sweep", direction=METRICS["val_loss"][1])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        ref.set_metric_names(["val_loss"])
    for point in grid_points(dict(spec.task.space)):
        ref.enqueue_trial(stored_point(dict(spec.task.space), point))
    trials = [ref.ask() for _ in records]
    for trial in trials:
        for dim in dimensions(dict(spec.task.space)):
            trial.suggest_float(dim.param, *dim.bounds, log=dim.log)
    for step, means in judged:
        for c, metrics in means.items():
            if metrics["val_loss"] == metrics["val_loss"] and abs(metrics["val_loss"]) != float("inf"):
                ref._storage.set_trial_intermediate_value(trials[c]._trial_id, step, metrics["val_loss"])
    for trial, record in zip(trials, records):
        outcome = study.outcome(record, "host:1")
        for step, value in outcome.steps.items():
            ref._storage.set_trial_intermediate_value(trial._trial_id, step, value)
        for key, value in outcome.attrs.items():
            ref._storage.set_trial_user_attr(trial._trial_id, key, value)
        if outcome.value is None:
            ref.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            ref.tell(trial, outcome.value)


@pytest.mark.parametrize("store", ["sql", "public"])
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_stack_told_at_once_is_the_study_optuna_tells_trial_by_trial(kind, store, tmp_path, request):
    """Each back end of the study (:mod:`inertia.sweeps.study.sql` in batches, ``.public`` trial by trial)."""
    import optuna

    started = datetime.datetime.now()
    spec = _spec(pruner="successive_halving")   # pruned at step 10: PRUNED with a value
    with _storages(kind, tmp_path, request) as (batched_url, reference_url):
        study, _, records, judged = _train(spec, batched_url, store)
        _told_per_trial(spec, reference_url, study, records, judged)
        batched, reference = (optuna.load_study(study_name="sweep", storage=u) for u in (batched_url, reference_url))
        states = {t.state for t in batched.trials}
        assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
        assert len(batched.trials) == len(reference.trials) == 6
        for mine, theirs in zip(batched.trials, reference.trials):   # every field of a FrozenTrial
            assert {k: v for k, v in mine.system_attrs.items() if k != "holder"} == theirs.system_attrs
            assert started <= mine.datetime_start <= mine.datetime_complete <= datetime.datetime.now()
            fields = set(vars(mine)) - {"_system_attrs", "_datetime_start", "datetime_complete"}
            assert fields == set(vars(theirs)) - {"_system_attrs", "_datetime_start", "datetime_complete"}
            for name in fields:
                assert vars(mine)[name] == vars(theirs)[name], (mine.number, name)
        pruned = [t for t in batched.trials if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
        assert pruned and all(t.value == t.intermediate_values[max(t.intermediate_values)] for t in pruned)
        assert batched.best_trial.number == reference.best_trial.number
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert study.records() == records_from_study(reference.get_trials(states=finished), SPACE) != []
        assert batched.best_value == reference.best_value
        for s in (study.study, batched, reference):
            s._storage._backend.engine.dispose()


def test_a_late_result_of_a_trial_retried_elsewhere_is_discarded(tmp_path):
    """A worker taken for dead (its trials failed and queued again) that tells late changes nothing."""
    import optuna

    spec = _spec()
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = Study(dict(spec.task.space), spec.signature(), spec.search, storage_url=url).open()
    trials = study.claim(100, lambda trial: None)
    members = Members(_job(spec, _load_data("digits", 0)), study.configs(trials), [t.number for t in trials])
    run_members(members)
    lost = trials[:2]
    assert study.store.retry([t.id for t in lost]) == 2   # what fail_stale does with a dead holder's trials
    study.judge(trials, 10, {c: {"val_loss": 1.0} for c in range(len(trials))})
    study.tell(trials, members.results(), "host:1")
    after = optuna.load_study(study_name="sweep", storage=url).trials
    State = optuna.trial.TrialState
    assert [t.state for t in after[:2]] == [State.FAIL] * 2 and [t.state for t in after[6:]] == [State.WAITING] * 2
    assert all(t.state in (State.COMPLETE, State.PRUNED) and t.user_attrs for t in after[2:6])
    for t in after[:2]:
        assert t.values is None and not t.user_attrs and not t.intermediate_values
    assert [t.params for t in after[6:]] == [{}, {}]   # the copies: fixed parameters, not yet asked
    assert [t.system_attrs["fixed_params"] for t in after[6:]] == [t.system_attrs["fixed_params"] for t in after[:2]]


def test_claimed_trials_are_the_trials_optuna_holds(tmp_path):
    import optuna

    spec = _spec()
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = Study(dict(spec.task.space), spec.signature(), spec.search, storage_url=url).open()
    trials = study.claim(3, lambda trial: None)
    assert [t.number for t in trials] == [0, 1, 2]
    theirs = optuna.load_study(study_name="sweep", storage=url).trials
    for trial in trials:
        assert trial.fixed == theirs[trial.number].system_attrs["fixed_params"] == stored_point(
            SPACE, grid_points(SPACE)[trial.number])
        assert trial.params == theirs[trial.number].params == {}
        assert theirs[trial.number].state == optuna.trial.TrialState.RUNNING


@pytest.mark.parametrize("steps, where", [(1, "threads"), (99, "threads"), (100, "processes")])
def test_short_stacks_train_in_threads_long_ones_in_forked_lanes(monkeypatch, steps, where):
    """A fork per stack costs more than a 1-step stack's training (the 64 x 64 grid at 1 step)."""
    from types import SimpleNamespace

    from inertia.sweeps import lanes

    ran = []
    monkeypatch.setattr(lanes, "_run_forked", lambda parts, n, trainer: ran.append("processes") or 0)
    monkeypatch.setattr(lanes, "_run_threads", lambda parts, n, trainer: ran.append("threads") or 0)
    job = SimpleNamespace(steps=steps, device="cpu", backend="batched")
    lanes.run_parts([("a",), ("b",)], 2, "auto", job, trainer=None)
    assert ran == [where if lanes.forked_lanes_available(job) else "threads"]


@pytest.mark.parametrize("caller_flushes", [False, True])
@pytest.mark.parametrize("stacks", [1, 2])
def test_lanes_train_with_subnormals_flushed_and_leave_the_caller_as_it_was(caller_flushes, stacks):
    """One stack trains in this thread, two in threads of their own: each with subnormal floats
    flushed to zero (the CPU's slow path otherwise), the caller's own setting kept."""
    from types import SimpleNamespace

    import torch

    from inertia.sweeps import lanes

    flushed = []
    trainer = SimpleNamespace(train=lambda *part: flushed.append(lanes._flushes_subnormals()) or 1)
    torch.set_flush_denormal(caller_flushes)
    try:
        lanes.run_parts([("a",)] * stacks, stacks, "threads", SimpleNamespace(steps=1, device="cpu", backend="batched"), trainer)
        assert flushed == [True] * stacks and lanes._flushes_subnormals() == caller_flushes
    finally:
        torch.set_flush_denormal(False)


def test_stacks_of_a_shared_model_never_train_in_threads_side_by_side(monkeypatch):
    """vmap and loop stacks run one model object (its mode, its dropout draws): in threads, one after another."""
    from types import SimpleNamespace

    from inertia.sweeps import lanes

    monkeypatch.setattr(lanes, "_run_threads", lambda parts, n, trainer: pytest.fail("two threads shared one model"))
    trained = []
    trainer = SimpleNamespace(train=lambda *part: trained.append(part) or 1)
    for backend in lanes.SHARED_FORWARD:
        job = SimpleNamespace(steps=1, device="cpu", backend=backend)
        assert lanes.run_parts([("a",), ("b",)], 2, "threads", job, trainer) == 2
    assert trained == [("a",), ("b",)] * 2
