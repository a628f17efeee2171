"""``inertia train``: results (classification and regression), hyperparameter passing, schedules and bad input
(its numbers: tests/test_fit.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inertia import rules
from inertia.cli import main
from inertia.rules.base import Rule, add_scaled_

FAST = ["train", "--data", "digits", "--steps", "40", "--batch-size", "64", "--quiet"]


def _run(tmp_path, *extra):
    out = tmp_path / "r.json"
    assert main([*FAST, "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_train_digits_writes_json(tmp_path, capsys):
    result = _run(tmp_path, "--optimizer", "momentum", "--lr", "0.1", "--momentum", "0.9")
    printed = capsys.readouterr().out
    assert "validation" in printed and "test" in printed and "train" in printed
    assert result["test_accuracy_mean"] > 0.5 and result["val_accuracy_mean"] > 0.5  # chance is 0.1
    assert 0 < result["train_loss_mean"] < 2.3 and result["val_loss_std"] == 0.0
    assert len(result["folds"]) == 1 and result["folds"][0]["test_accuracy"] == result["test_accuracy_mean"]
    cfg = result["config"]
    assert cfg["data"] == "digits" and cfg["model"] == "mlp" and cfg["steps"] == 40 and cfg["folds"] == 1
    assert cfg["hyperparameters"]["lr"] == 0.1 and cfg["hyperparameters"]["momentum"] == 0.9


def test_folds_train_one_model_per_fold_and_report_mean_and_std(tmp_path, capsys):
    result = _run(tmp_path, "--folds", "3", "--tensorboard", str(tmp_path / "tb"))
    assert "±" in capsys.readouterr().out
    assert [f"_fold={k}_" in path for k, path in enumerate(result["tensorboard"])] == [True] * 3
    val = torch.tensor([f["val_loss"] for f in result["folds"]], dtype=torch.float64)
    assert len(val) == 3 and result["val_loss_mean"] == pytest.approx(float(val.mean()))
    assert result["val_loss_std"] == pytest.approx(float(val.std(unbiased=False))) and result["val_loss_std"] > 0


def test_runs_started_together_never_merge_and_their_hparams_are_numbers(tmp_path):
    """Two runs in the same second (μ 0.5 and 0.9): two runs, each named by its hyperparameters, steps
    counted as updates taken (1 ... steps), lr and momentum numbers the HParams tab can sort."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    paths = [_run(tmp_path, "--steps", "12", "--lr", "0.1", "--momentum", mu, "--tensorboard",
                  str(tmp_path / "tb"))["tensorboard"][0] for mu in ("0.5", "0.9")]
    assert len(set(paths)) == 2 and "momentum=0.5" in paths[0] and "momentum=0.9" in paths[1]
    for path, mu in zip(paths, (0.5, 0.9)):
        assert path.count("seed=") == 1
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        steps = [e.step for e in acc.Scalars("momentum")]
        assert steps[0] == 1 and steps[-1] == 12 and len(steps) == 12
        assert [e.value for e in acc.Scalars("momentum")] == pytest.approx([mu] * 12)
        start = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
        assert start["momentum"].number_value == pytest.approx(mu) and start["lr"].number_value == pytest.approx(0.1)


def test_only_given_hyperparameters_are_passed(tmp_path):
    assert _run(tmp_path, "--optimizer", "momentum")["config"]["hyperparameters"]["momentum"] == 0.9
    assert _run(tmp_path, "--optimizer", "sgd", "--lr", "0.2")["config"]["hyperparameters"]["momentum"] == 0.0
    hyper = _run(tmp_path, "--optimizer", "sgd", "--momentum", "0.5", "--hyper", "dampening=0.25")["config"][
        "hyperparameters"]
    assert hyper["dampening"] == 0.25 and hyper["momentum"] == 0.5


def test_onecycle_schedule_writes_onecyclelr_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = 20
    result = _run(tmp_path, "--steps", str(steps), "--lr", "0.4", "--schedule", "onecycle",
                  "--tensorboard", str(tmp_path / "tb"))
    acc = EventAccumulator(result["tensorboard"][0], size_guidance={"scalars": 0})
    acc.Reload()
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=steps)
    lrs, moms = [], []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx(lrs, rel=1e-6)
    assert [e.value for e in acc.Scalars("momentum")] == pytest.approx(moms, rel=1e-6)
    assert [e.value for e in acc.Scalars("effective_lr")] == pytest.approx(
        [lr / (1 - m) for lr, m in zip(lrs, moms)], rel=1e-5)
    assert acc.Scalars("test_accuracy")[0].value == pytest.approx(result["test_accuracy_mean"], rel=1e-6)


def test_momentum_for_a_rule_without_momentum_is_a_clear_error(monkeypatch, capsys):
    def plain(param, grad, state, hyper):
        add_scaled_(param, grad, -hyper["lr"])

    rule = Rule("plain", {"lr": 0.1}, ("lr",), plain, lambda h: None)
    monkeypatch.setitem(rules.PRESETS, "plain", rules.Preset("plain", rule))
    assert main([*FAST, "--optimizer", "plain", "--momentum", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "--momentum" in err and "'plain'" in err and "lr" in err


@pytest.mark.parametrize("args,needle", [
    (["--lr", "-1"], "lr"),
    (["--momentum", "1.5"], "momentum"),
    (["--optimizer", "nosuch"], "momentum"),  # the error lists the known names
    (["--data", "nosuch"], "mnist1d"),
    (["--model", "nosuch"], "mlp"),
    (["--hyper", "bogus=1"], "bogus"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nosuch"], "device"),
])
def test_bad_input_is_rejected_with_a_message(args, needle, capsys):
    assert main([*FAST, *args]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--steps", "0"], ["--batch-size", "-3"], ["--lr", "nan"], ["--steps", "x"]])
def test_argument_types_are_checked_before_training(args, capsys):
    assert main([*FAST, *args]) == 2
    assert f"argument {args[0]}:" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ["--data", "--model", "--loss", "--optimizer", "--lr", "--momentum", "--nesterov", "--convention",
                   "--standardize", "--schedule", "--weight-decay", "--steps", "--batch-size", "--folds", "--seed", "--device", "--json",
                   "--tensorboard"]:
        assert option in text


def test_a_regression_prints_rmse_and_r2_and_writes_the_tasks_metrics(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g) * 5 + 3
    y = torch.stack([x[:, 0] - x[:, 1], torch.sin(x[:, 2])], 1)
    path = tmp_path / "targets.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    out = tmp_path / "r.json"
    assert main(["train", "--data", str(path), "--model", "mlp", "--loss", "huber", "--standardize", "--folds", "2",
                 "--steps", "30", "--batch-size", "16", "--lr", "0.01", "--quiet", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RMSE" in printed and "R²" in printed and "accuracy" not in printed
    result = json.loads(out.read_text())
    assert result["metrics"] == ["loss", "rmse", "r2"] and "val_accuracy_mean" not in result
    assert result["config"]["loss"] == "huber" and result["config"]["standardize"] is True
    for part in ("val", "test", "train"):
        values = [fold[f"{part}_rmse"] for fold in result["folds"]]
        assert result[f"{part}_rmse_mean"] == pytest.approx(sum(values) / 2) and all(v > 0 for v in values)
        assert result[f"{part}_r2_mean"] <= 1
