"""The study is Optuna-native, and stacked pruning decides for a whole stack at once."""
from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import scratch_database

import inertia
from inertia.cli import main as cli_main
from inertia.sweeps import SweepSpec, TaskSpec, _job, _load_data
from inertia.sweeps.engine import Members, run_members
from inertia.sweeps.study import MOMENTUM_PARAM, Study


def test_the_printed_url_opens_a_native_study(tmp_path, capsys):
    import optuna

    out = tmp_path / "run"
    code = cli_main(["sweep", "--data", "digits", "--steps", "60", "--batch-size", "32", "--eval-every", "20",
                     "--lr", "0.01,0.1,50", "--momentum", "0,0.9", "--out", str(out), "--quiet",
                     "--metric", "val_loss", "--seeds", "1"])
    assert code == 0
    url = re.search(r"in (sqlite:\S+) \(for optuna", capsys.readouterr().out).group(1)
    study = optuna.load_study(study_name="sweep", storage=url)
    assert study.metric_names == ["val_loss"]
    trials = study.trials
    assert len(trials) == 6
    for t in trials:
        assert t.distributions["lr"] == optuna.distributions.FloatDistribution(0.01, 50, log=True)
        assert t.distributions[MOMENTUM_PARAM] == optuna.distributions.FloatDistribution(1 - 0.9, 1.0, log=True)
        reached = {s for s in (20, 40, 60) if s < t.user_attrs.get("diverged_step", 61)}
        assert set(t.intermediate_values) == reached, "every trial reports its validation metric"
        for step, value in t.intermediate_values.items():
            assert value == t.user_attrs["curves"]["val_loss_mean"][[20, 40, 60].index(step)]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(set(t.intermediate_values) == {20, 40, 60} for t in done)
    for t in done:
        attrs = t.user_attrs
        assert attrs["status"] == "ok" and attrs["val_loss_mean"] == t.value
        assert attrs["best_step"] in (20, 40, 60) and isinstance(attrs["test_accuracy_mean"], float)
        assert all(isinstance(v, float) for v in attrs["curves"]["test_accuracy_mean"])
        assert t.value == min(attrs["curves"]["val_loss_mean"])
    # lr 50 diverges: PRUNED with its step, never the best
    diverged = [t for t in trials if t.params["lr"] == pytest.approx(50)]
    assert all(t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["status"] == "diverged"
               and t.user_attrs["diverged_step"] >= 1 for t in diverged)
    assert study.best_trial.user_attrs["status"] == "ok"
    # as optuna-dashboard sees them: μ itself; every column sortable (numbers wherever present, as the
    # dashboard's rule is), and no column the classification task does not have
    assert {t.user_attrs["momentum"] for t in trials} == {0.0, 0.9}
    for key in {k for t in trials for k in t.user_attrs} - {"status", "worker", "curves", "per_seed"}:
        present = [t.user_attrs[key] for t in trials if key in t.user_attrs]
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present), key
    assert not any(k.startswith(("val_rmse", "val_r2", "test_rmse", "test_r2")) for t in trials for k in t.user_attrs)


@pytest.mark.parametrize("metric", ["val_loss", "val_accuracy"])
def test_no_diverged_trial_is_ever_best(metric, tmp_path):
    import optuna

    res = inertia.sweep("digits", "mlp", steps=40, batch_size=32, lr=[1e-5, 1e3], momentum=[0.9], metric=metric,
                        out=tmp_path)
    assert {r["status"] for r in res.records()} == {"ok", "diverged"}
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 'sweep.db'}")
    assert study.best_trial.params["lr"] == pytest.approx(1e-5)
    assert res.best["lr"] == 1e-5


def test_momentum_is_sampled_uniformly_in_log_one_minus_momentum():
    task = TaskSpec.from_values("digits", "mlp", lr="1e-3:1:2", momentum=[0.0, 0.995])
    spec = SweepSpec.from_settings(task, dict(sampler="random", trials=400, metric="val_loss"))
    study = Study(dict(task.space), spec.signature(), spec.search).open()
    drawn = study.configs(study.claim(400, lambda trial: None))
    above = sum(c["momentum"] > 0.93 for c in drawn) / len(drawn)
    assert above == pytest.approx(math.log(0.07 / 0.005) / math.log(1 / 0.005), abs=0.08)
    logs = [math.log10(c["lr"]) for c in drawn]
    assert sum(v < -1.5 for v in logs) / len(logs) == pytest.approx(0.5, abs=0.08)


def _stack(pruner: str | None):
    """A grid of 9 configurations on digits in one stack, and the Study that judges it."""
    task = TaskSpec.from_values("digits", "mlp", lr=[0.003, 0.03, 0.3], momentum=[0.0, 0.5, 0.9])
    spec = SweepSpec.from_settings(task, dict(steps=90, batch_size=32, eval_every=10, pruner=pruner,
                                                 metric="val_loss", seeds=1))
    data = _load_data("digits", 0)
    spec = spec.resolved(data=data)
    study = Study(dict(spec.task.space), spec.signature(), spec.search).open()
    trials = study.claim(100, lambda trial: None)
    job = _job(spec, data)
    return study, trials, Members(job, study.configs(trials), [t.number for t in trials])


def test_stacked_successive_halving_equals_unpruned_training_up_to_each_rung():
    _, _, plain = _stack(None)
    run_members(plain)
    study, trials, members = _stack("successive_halving")
    run_members(members, on_eval=lambda m, means: study.judge(trials, m.step, means))
    steps = members.job.eval_steps
    loss = plain.history[0]                        # [member, point]: unpruned validation loss
    alive = list(range(9))
    for rung in (10, 30):                          # eval_every x 3**k, before the last step
        at = loss[alive, steps.index(rung)]
        keep = math.ceil(len(alive) / 3)
        survivors = [alive[i] for i in torch.argsort(at)[:keep].tolist()]
        assert sorted(c for c in alive if c not in survivors) == sorted(
            c for c, s in members.pruned.items() if s == rung)
        alive = survivors
    assert set(alive) == set(range(9)) - set(members.pruned)
    for c in range(9):
        upto = steps.index(members.pruned.get(c, 90)) + 1
        assert torch.equal(members.history[:, c, :upto], plain.history[:, c, :upto])
    assert all(torch.isnan(members.history[0, c, steps.index(s) + 1:]).all() for c, s in members.pruned.items())


def test_stacked_median_sees_the_whole_stack():
    _, _, plain = _stack(None)
    run_members(plain)
    study, trials, members = _stack("median")
    run_members(members, on_eval=lambda m, means: study.judge(trials, m.step, means))
    first = plain.history[0, :, 0]
    median = first.median()  # 9 values: the middle one
    assert {c for c, s in members.pruned.items() if s == 10} == {c for c in range(9) if first[c] > median}


def test_a_pruned_sweep_equals_the_unpruned_one_up_to_where_it_stopped():
    kw = dict(data="digits", model="mlp", steps=90, batch_size=32, eval_every=10, parallel=1, seeds=1, metric="val_loss",
              lr=[0.3, 0.03, 0.003], momentum=[0.9, 0.5, 0.0])
    plain = {(r["lr"], r["momentum"]): r for r in inertia.sweep(**kw).records()}
    pruned = inertia.sweep(**kw, pruner="successive_halving").records()
    assert any(r["status"] == "pruned" for r in pruned)
    for r in pruned:
        other = plain[(r["lr"], r["momentum"])]
        upto = r["eval_steps"].index(r.get("pruned_step") or 90) + 1
        assert r["val_loss_mean_curve"][:upto] == other["val_loss_mean_curve"][:upto]


def test_the_printed_postgresql_url_opens_the_study(tmp_path, capsys, postgres_url):
    import optuna

    with scratch_database(postgres_url) as (url, _):
        assert cli_main(["sweep", "--data", "digits", "--steps", "40", "--batch-size", "32", "--lr", "0.01,0.1",
                         "--momentum", "0,0.9", "--storage", url, "--out", str(tmp_path / "o"), "--quiet"]) == 0
        printed = re.search(r"in (\S+) \(for optuna", capsys.readouterr().out).group(1)
        study = optuna.load_study(study_name="sweep", storage=printed)
        assert study.metric_names == ["val_accuracy"] and len(study.trials) == 4   # the default metric of a classification sweep
        assert all(t.distributions["lr"].log and t.distributions[MOMENTUM_PARAM].log for t in study.trials)
        assert all(set(t.intermediate_values) == {4 * k for k in range(1, 11)} for t in study.trials)
        study._storage._backend.engine.dispose()


def _private_optuna_names() -> dict[str, set[str]]:
    """Module (path under inertia) -> the private Optuna names it imports or spells out."""
    from pathlib import Path

    src = Path(inertia.__file__).parent
    found: dict[str, set[str]] = {}
    for path in src.rglob("*.py"):
        text = path.read_text()
        names = {f"{m}.{n.strip()}" for m, ns in re.findall(r"^\s*from\s+(optuna[\w.]*)\s+import\s+([\w, ]+)", text, re.M)
                 for n in ns.split(",")}
        names |= set(re.findall(r"\boptuna(?:\.\w+)+", text))
        private = {n for n in names if any(p.startswith("_") and not p.endswith("__") for p in n.split("."))}
        if private:
            found[str(path.relative_to(src))] = private
    return found


def test_optunas_private_names_are_the_sql_stores_alone_and_all_there():
    """Pinned to the Optuna versions tested; one that drops a private name the SQL store uses fails
    here, naming the module and the name."""
    import optuna

    from inertia.sweeps.study import sql

    found = _private_optuna_names()
    assert list(found) == ["sweeps/study/sql.py"], found
    unlisted = {n for n in found["sweeps/study/sql.py"]
                if not any(p == n or p.startswith(n + ".") for p in sql.OPTUNA_PRIVATE)}
    assert not unlisted, f"{sql.__name__} uses private names its OPTUNA_PRIVATE does not list: {unlisted}"
    assert not sql.missing_private(), (f"{sql.__name__} uses Optuna's private {sql.missing_private()}, "
                                       f"gone in optuna {optuna.__version__}")


def test_an_optuna_without_a_private_name_is_refused_in_one_line(tmp_path, monkeypatch):
    from inertia.sweeps.study import sql

    monkeypatch.setattr(sql, "OPTUNA_PRIVATE", (*sql.OPTUNA_PRIVATE, "optuna.storages._rdb.models.Gone"))
    task = TaskSpec.from_values("digits", "mlp", lr=[0.1], momentum=[0.0])
    spec = SweepSpec.from_settings(task, dict(metric="val_loss"))
    with pytest.raises(RuntimeError, match=r"^inertia\.sweeps\.study\.sql uses Optuna's private "
                                           r"optuna\.storages\._rdb\.models\.Gone, which optuna [\d.]+ does not have"):
        Study(dict(task.space), spec.signature(), spec.search, f"sqlite:///{tmp_path / 's.db'}").open()


def test_opening_a_grid_study_reads_its_values_once_not_once_per_point(monkeypatch):
    """Opening is linear in the grid: a point's stored parameters, and a stored value's grid value,
    are looked up, never searched for among all values (which made opening quadratic)."""
    import inertia.sweeps.study as package
    from inertia.sweeps.study import records, space

    made, dimensions = [], space.dimensions
    for module in (package, records, space):
        monkeypatch.setattr(module, "dimensions", lambda values: made.append(1) or dimensions(values))
    task = TaskSpec.from_values("digits", "mlp", lr="1e-3:1:500", momentum=[0.0, 0.5, 0.9, 0.99])
    spec = SweepSpec.from_settings(task, dict(metric="val_loss"))
    study = Study(dict(task.space), spec.signature(), spec.search).open()
    configs = study.configs(study.claim(2000, lambda trial: None))
    assert configs == [dict(lr=lr, momentum=m) for lr in task.space["lr"] for m in task.space["momentum"]]
    assert study.records() == [] and len(made) == 3   # the study's, the grid's, the records'
    lr = dimensions(task.space)[0]
    assert lr.value(lr.stored(lr.values[3]) * (1 + 1e-12), grid=True) == lr.values[3]   # not stored exactly: nearest
