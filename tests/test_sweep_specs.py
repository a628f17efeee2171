"""The sweep's specs: keyword routing, the study signature, meta, the CLI groups, and the layers of sweeps/."""
from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest
import torch

import inertia
from inertia.commands import sweep as sweep_command
from inertia.schedules import sutskever_ramp
from inertia.sweeps import RunSpec, SearchSpec, SweepSpec, TaskSpec, TrainSpec

SRC = Path(inertia.__file__).resolve().parent
SMALL = dict(data="digits", model="mlp", steps=20, batch_size=32)


def _parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser()
    return sweep_command.add_parser(root.add_subparsers())


def test_settings_go_to_the_spec_that_owns_them_and_unknown_ones_are_named():
    spec = SweepSpec.from_settings(TaskSpec(), dict(steps=7, sampler="random", trials=3, lanes="threads"))
    assert (spec.train.steps, spec.search.sampler, spec.search.trials, spec.run.lanes) == (7, "random", 3, "threads")
    with pytest.raises(TypeError, match="'stpes'"):
        inertia.sweep(**SMALL, lr=[0.1], momentum=[0.0], stpes=10)
    with pytest.raises(TypeError, match="write_sweep"):
        inertia.sweep(**SMALL, lr=[0.1], momentum=[0.0], tensorboard="tb")
    with pytest.raises(TypeError, match="progress"):
        inertia.sweep(**SMALL, lr=[0.1], momentum=[0.0], progress=True)


@pytest.mark.parametrize("spec,bad,match", [
    (TrainSpec, dict(steps=0), "steps"),
    (SearchSpec, dict(sampler="anneal"), "sampler"),
    (SearchSpec, dict(sampler="tpe"), "trials"),
    (SearchSpec, dict(metric="loss"), "metric"),
    (RunSpec, dict(lanes="fibers"), "lanes"),
    (TaskSpec, dict(schedules={"nesterov": "cosine"}), "nesterov"),
    (TaskSpec, dict(schedules={"beta1": "cosine"}), "beta1"),
])
def test_each_spec_checks_its_own_fields(spec, bad, match):
    with pytest.raises(ValueError, match=match):
        spec(**bad)


def test_the_signature_holds_what_changes_the_numbers_and_nothing_else():
    task = TaskSpec.from_values(lr=[0.1, 0.01], momentum=[0.9], schedules={"momentum": sutskever_ramp(0.99),
                                                                            "lr": "cosine"})
    base = SweepSpec(task)
    signature = base.signature()
    assert signature["schedules"] == {"momentum": "sutskever_ramp(mu_max=0.99, every=250)", "lr": "cosine"}
    assert signature["space"] == {"lr": [0.01, 0.1], "momentum": [0.9]} and signature["dtype"] == "torch.float32"  # sorted
    assert {f.name for f in fields(RunSpec)}.isdisjoint(signature)
    assert set(signature) == {f.name for spec in (TaskSpec, TrainSpec, SearchSpec) for f in fields(spec)}
    running = RunSpec(out="x", storage="sqlite:///y.db", study_name="s", checkpoint_every=1, lanes="threads",
                      parallel=3, memory_budget=10 ** 9, max_batch=2)
    assert SweepSpec(task, run=running).signature() == signature
    for changed in (SweepSpec(task, train=TrainSpec(seed=1)), SweepSpec(task, search=SearchSpec(pruner="median")),
                    SweepSpec(TaskSpec.from_values(lr=[0.1, 0.01], momentum=[0.9]))):
        assert changed.signature() != signature


def test_changing_how_it_runs_resumes_the_same_study(tmp_path):
    out = tmp_path / "run"
    grid = dict(lr=[0.05, 0.2], momentum=[0.0, 0.9])
    first = inertia.sweep(**SMALL, **grid, out=out, parallel=1, max_batch=1)
    again = inertia.sweep(**SMALL, **grid, out=out, parallel=2, lanes="threads", max_batch=3, checkpoint_every=5.0)
    assert sorted(map(str, again.records())) == sorted(map(str, first.records()))
    meta = again.meta
    assert meta["parallel"] == 2 and meta["steps"] == SMALL["steps"] and meta["data"] == "digits"
    assert meta["device"] == "cpu" and meta["eval_every"] == 2 and meta["storage"].startswith("sqlite:///")
    with pytest.raises(ValueError, match="different sweep"):
        inertia.sweep(**SMALL, **grid, out=out, diverge_factor=5.0)


def test_the_cli_groups_are_the_specs():
    parser = _parser()
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    for spec in (TrainSpec, SearchSpec, RunSpec):
        (title,) = [t for t in groups if t.endswith(f"({spec.__name__})")]
        assert groups[title] == {f.name for f in fields(spec)}, title
    args = parser.parse_args(["--data", "digits", "--lr", "0.1", "--momentum", "0,0.9", "--out", "o",
                              "--schedule", "lr=cosine", "--schedule", "momentum=sutskever_ramp(0.99)",
                              "--dtype", "float64", "--pruner", "none", "--lanes", "threads"])
    spec = sweep_command.sweep_spec(args)
    assert spec.task.schedules == {"lr": "cosine", "momentum": "sutskever_ramp(0.99)"}
    assert spec.task.space == {"lr": (0.1,), "momentum": (0.0, 0.9)}
    assert spec.train.dtype == torch.float64 and spec.search.pruner is None and spec.run.lanes == "threads"
    assert spec.signature()["schedules"] == spec.task.schedules


def _imports(path: Path) -> set[str]:
    text = path.read_text()
    return set(re.findall(r"^\s*(?:from|import)\s+([.\w]+)", text, re.M))


def test_only_the_study_package_imports_optuna():
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if any(m == "optuna" or m.startswith("optuna.") for m in _imports(p)))
    assert users and all(u.startswith("sweeps/study/") for u in users), users


def test_the_sweep_engine_imports_no_outputs_and_no_faces():
    for path in (SRC / "sweeps").glob("*.py"):
        for module in _imports(path):
            assert not re.match(r"\.\.(plots|report|tensorboard|commands|cli)\b", module), (path.name, module)
            assert not module.startswith("rich.progress"), (path.name, module)


def test_the_readme_sweep_example_runs(tmp_path, monkeypatch):
    readme = (SRC.parents[1] / "README.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", readme, re.S) if "write_sweep(" in c]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["results"].best is not None and (tmp_path / "heatmap.png").stat().st_size > 10_000
    assert len(list((tmp_path / "runs" / "tb").iterdir())) == 6


def test_the_readme_regression_sweep_example_runs_and_fits():
    readme = (SRC.parents[1] / "README.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", readme, re.S) if 'loss="mse"' in c]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    best = scope["results"].best
    assert best["test_r2_mean"] > 0.8 and best["val_rmse_mean"] < 0.5   # y = sin(x0) + x1/2 is learnable
