"""Early-stopping selection, seeds, edge warnings and bad input of sweeps."""
from __future__ import annotations

import math

import pytest

import inertia
from inertia.cli import main as cli_main
from inertia.commands.reproduce import train_command
from inertia.sweeps.selection import best_point, select

SMALL = dict(data="digits", model="mlp", steps=60, batch_size=32, eval_every=10)


def test_select_reads_every_metric_at_the_best_validation_point():
    record = {"status": "ok", "eval_steps": [10, 20, 30], "val_loss_mean": 0.9, "test_accuracy_mean": 0.7,
              "val_loss_mean_curve": [1.0, 0.5, 0.9], "val_loss_std_curve": [0.1, 0.2, 0.3],
              "val_accuracy_mean_curve": [0.5, 0.8, 0.8], "test_accuracy_mean_curve": [0.4, 0.6, 0.7]}
    chosen = select(record, "val_loss")
    assert chosen["best_step"] == 20 and chosen["val_loss_mean"] == 0.5 and chosen["val_loss_std"] == 0.2
    assert chosen["test_accuracy_mean"] == 0.6 and chosen["final_test_accuracy_mean"] == 0.7
    # accuracy ties at 20 and 30 go to the lower validation loss
    assert best_point(record, "val_accuracy") == 1
    final = select(record, "val_loss", "final")
    assert final["best_step"] == 30 and final["val_loss_mean"] == 0.9 and final["test_accuracy_mean"] == 0.7
    assert select({**record, "status": "diverged"})["best_step"] is None


def _argbest(curve, better):
    finite = [(v, i) for i, v in enumerate(curve) if v is not None and math.isfinite(v)]
    return (min if better == "min" else max)(finite)[1]


@pytest.mark.parametrize("metric", ["val_loss", "val_accuracy"])
def test_a_sweep_scores_each_configuration_at_its_best_point_and_reproduces_that_step(metric):
    res = inertia.sweep(**SMALL, lr=[0.03, 0.3], momentum=[0.0, 0.9], metric=metric)
    final = {(r["lr"], r["momentum"]): r for r in inertia.sweep(**SMALL, lr=[0.03, 0.3], momentum=[0.0, 0.9],
                                                                metric=metric, select="final").records()}
    for r in res.records():
        curve = r[f"{metric}_mean_curve"]
        i = _argbest(curve, "min" if metric == "val_loss" else "max")
        if metric == "val_accuracy":  # ties: the lower loss
            ties = [j for j, v in enumerate(curve) if v == curve[i]]
            i = min(ties, key=lambda j: (r["val_loss_mean_curve"][j], j))
        assert r["best_step"] == r["eval_steps"][i]
        assert r["test_accuracy_mean"] == r["test_accuracy_mean_curve"][i]
        assert r["val_loss_mean"] == r["val_loss_mean_curve"][i]
        same = final[(r["lr"], r["momentum"])]
        assert same["best_step"] == 60 and same["val_loss_mean"] == r["final_val_loss_mean"]
        assert same["test_accuracy_mean"] == r["final_test_accuracy_mean"]
    best = res.best
    key = f"{metric}_mean"
    pick = min if metric == "val_loss" else max
    assert best[key] == pick(r[key] for r in res.records() if r["status"] == "ok")
    assert f"--steps {best['best_step']} " in train_command(res)


def test_the_best_on_the_edge_of_the_grid_says_which_way_to_widen():
    res = inertia.sweep(**SMALL, lr=[1e-4, 1e-3, 0.3], momentum=[0.0, 0.5])
    assert res.best["lr"] == 0.3
    assert any("lr" in w and "upward" in w for w in res.warnings())
    inside = inertia.sweep(**SMALL, lr=[1e-3, 0.3, 30.0], momentum=[0.0, 0.5])
    assert inside.best["lr"] == 0.3 and not [w for w in inside.warnings() if "lr" in w]


@pytest.mark.parametrize("args, name", [
    (["--seeds", "0"], "seeds"), (["--eval-every", "500"], "eval_every"), (["--select", "last"], "select")])
def test_bad_selection_input_is_one_line_naming_it(args, name, tmp_path, capsys):
    code = cli_main(["sweep", "--data", "digits", "--steps", "100", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and name in err
    assert not (tmp_path / "o").exists()


def test_bad_selection_input_in_python():
    with pytest.raises(ValueError, match="select"):
        inertia.sweep(**SMALL, select="last")
    with pytest.raises(ValueError, match="seeds"):
        inertia.sweep(**SMALL, seeds=0)
    with pytest.raises(ValueError, match="eval_every"):
        inertia.sweep(**{**SMALL, "eval_every": 61})


def test_each_seed_equals_a_separate_run_with_that_seed():
    # seeds vary the initialization, the batch order and the folds; the data set (its test part) is the run's own
    data = inertia.data.load_dataset("digits", seed=4)
    grid = dict(lr=[0.05, 0.3], momentum=[0.0, 0.9])
    res = inertia.sweep(**{**SMALL, "data": data}, **grid, seeds=3, seed=4)
    for r in res.records():
        assert len(r["per_seed"]) == 3
    for s in range(3):
        alone = {(r["lr"], r["momentum"]): r
                 for r in inertia.sweep(**{**SMALL, "data": data}, **grid, seed=4 + s, seeds=1).records()}
        for r in res.records():
            mine, other = r["per_seed"][s], alone[(r["lr"], r["momentum"])]
            assert mine["val_loss_mean_curve"] == pytest.approx(other["val_loss_mean_curve"], rel=1e-5)
            assert mine["test_accuracy_mean_curve"] == pytest.approx(other["test_accuracy_mean_curve"], abs=1e-9)


def test_the_heatmap_can_show_the_spread(tmp_path):
    from inertia.plots.sweep import heatmap

    res = inertia.sweep(**SMALL, lr=[0.03, 0.3], momentum=[0.0, 0.9], folds=2)
    fig = heatmap(res, tmp_path / "std.png", metric="val_loss_std")
    assert (tmp_path / "std.png").stat().st_size > 0
    assert "std" in fig.axes[-1].get_ylabel() + fig.axes[0].get_title()
