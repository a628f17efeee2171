"""``inertia.fit`` and ``inertia train``: the sweep's numbers reproduced (classification and
regression), independent torch.optim loops (an MLP; a BatchNorm CNN on images), schedules of any
hyperparameter, the reproduce command, bad input."""
from __future__ import annotations

import copy
import json
import math
import shlex

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inertia
import inertia.fits
from inertia import rules
from inertia.cli import build_parser, main
from inertia.commands import train as train_face
from inertia.commands.reproduce import train_command
from inertia.data import load_dataset
from inertia.models import build_model
from inertia.sweeps import SweepResults
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.engine import Job, Members, run_members

GRID = dict(lr=[0.05, 0.2], momentum=[0.0, 0.9], steps=60, batch_size=32, seed=3)


def _assert_same_numbers(ours: dict, record: dict, n_val: int, n_test: int, folds: int) -> None:
    """The same numbers to 1e-12: fit trains each fold's model as one member of the sweep's stack, so every
    member's metrics are the sweep's to the bit, and only the mean and std over seeds and folds are summed
    in another order (the sweep reduces a [metric, member, point] table). Autograd through nn.Linear or
    torch's fused SGD would differ by 1e-7 and more."""
    for prefix in ("val", "test"):
        for key in (f"{prefix}_loss_mean", f"{prefix}_accuracy_mean", f"{prefix}_loss_std"):
            assert ours[key] == pytest.approx(record[key], rel=1e-12), key


@pytest.mark.parametrize("folds,schedules", [
    (1, {}), (2, {"lr": "cosine(end=1e-4)", "momentum": "sutskever_ramp(every=10)"})])
def test_the_printed_command_reproduces_every_sweep_record(tmp_path, folds, schedules):
    results = inertia.sweep("digits", "mlp", **GRID, folds=folds, schedules=schedules)
    data = load_dataset("digits", seed=3)
    n_val = min(len(v) for _, v in make_folds(len(data.y_train), folds, 3))
    for i, record in enumerate(results.records()):
        command = shlex.split(train_command(results, record))
        assert command[:2] == ["inertia", "train"]
        assert command[command.index("--folds") + 1] == str(folds) and command[command.index("--seeds") + 1] == "3"
        out = tmp_path / f"{i}.json"
        assert main([*command[1:], "--json", str(out), "--quiet", "--device", "cpu"]) == 0
        ours = json.loads(out.read_text())
        _assert_same_numbers(ours, record, n_val, len(data.y_test), folds)
        assert len(ours["folds"]) == 3 * folds and ours["config"]["folds"] == folds   # 3 seeds x folds
        assert ours["config"]["schedules"].keys() == schedules.keys()   # written out for the sweep's length


def test_fit_equals_the_sweep_engine_under_schedules_of_lr_and_momentum():
    data = load_dataset("digits", seed=1)
    folds = make_folds(len(data.y_train), 2, 1)
    schedules = {"lr": "cosine", "momentum": "sutskever_ramp(0.95, every=10)"}
    job = Job(lambda: build_model("mlp", data.features, data.classes), data.x_train, data.y_train, folds,
              rules.get("nesterov"), {}, 50, 32, seed=1, x_test=data.x_test, y_test=data.y_test, schedules=schedules)
    record = run_members(Members(job, [{"lr": 0.1}], [0])).results()[0]
    ours = inertia.fit(data, "mlp", optimizer="nesterov", hyper={"lr": 0.1}, schedules=schedules,
                       steps=50, batch_size=32, folds=2, seed=1, device="cpu").record()
    _assert_same_numbers(ours, record, min(len(v) for _, v in folds), len(data.y_test), 2)
    constant = inertia.fit(data, "mlp", optimizer="nesterov", hyper={"lr": 0.1}, steps=50, batch_size=32,
                           folds=2, seed=1, device="cpu").record()
    assert constant["val_loss_mean"] != pytest.approx(ours["val_loss_mean"], rel=1e-3)  # the schedules matter


def test_in_float32_fit_equals_the_sweep_over_a_long_run_to_the_bit():
    """fit computes a fold's gradients with the sweep's own backend (here its hand-written backprop) and
    applies the rule elementwise as the sweep does: autograd through nn.Linear, or torch's fused SGD
    kernel, round differently, which training amplifies (mnist1d, 2000 steps: 1e-7 until a loss spike,
    then 1e-2)."""
    kwargs = dict(steps=600, batch_size=32, folds=2, seed=7)
    record = inertia.sweep("digits", "mlp", lr=[0.05], momentum=[0.9], seeds=1, select="final", **kwargs).records()[0]
    ours = inertia.fit("digits", "mlp", hyper={"lr": 0.05, "momentum": 0.9}, device="cpu", **kwargs).record()
    for key in ("val_loss_mean", "val_loss_std", "test_loss_mean", "val_accuracy_mean", "test_accuracy_mean"):
        assert ours[key] == record[key], key


def _evaluate(model, x, y):
    with torch.no_grad():
        logits = model(x)
        return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


@pytest.mark.parametrize("hyper,torch_kwargs", [
    (dict(lr=0.05, momentum=0.8), dict(lr=0.05, momentum=0.8)),
    (dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), dict(lr=0.05, momentum=0.9, nesterov=True,
                                                                          weight_decay=0.01)),
])
def test_fit_equals_a_plain_loop_with_torch_sgd_on_the_same_batches(hyper, torch_kwargs):
    steps, batch, seed = 70, 50, 5
    ours = inertia.fit("digits", "mlp", optimizer="sgd", hyper=hyper, schedules={"lr": "cosine"},
                       steps=steps, batch_size=batch, folds=2, seed=seed, device="cpu")
    data = load_dataset("digits", seed=seed)
    torch.manual_seed(seed)
    template = build_model("mlp", data.features, data.classes)
    for k, (train_idx, val_idx) in enumerate(make_folds(len(data.y_train), 2, seed)):
        model = build_model("mlp", data.features, data.classes)
        model.load_state_dict(template.state_dict())
        opt = torch.optim.SGD(model.parameters(), **torch_kwargs)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        for t in range(steps):
            idx = batch_at(train_idx, t, batch, seed, k)
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            cosine.step()
        fold = ours.folds[k]
        val_loss, val_acc = _evaluate(model, data.x_train[val_idx], data.y_train[val_idx])
        test_loss, test_acc = _evaluate(model, data.x_test, data.y_test)
        assert fold.metrics["val_loss"] == pytest.approx(val_loss, rel=1e-5) and fold.metrics["val_accuracy"] == val_acc
        assert fold.metrics["test_loss"] == pytest.approx(test_loss, rel=1e-5) and fold.metrics["test_accuracy"] == test_acc
        assert fold.last_loss == pytest.approx(float(loss.detach()), rel=1e-5)
    assert ours.record()["val_loss_mean"] == pytest.approx(sum(f.metrics["val_loss"] for f in ours.folds) / 2)


def _sutskever(t: int, mu_max: float, every: int) -> float:
    """Sutskever et al. 2013: mu_t = min(1 - 2^(-1 - log2(floor(t / every) + 1)), mu_max)."""
    return min(1 - 2 ** (-1 - math.log2(t // every + 1)), mu_max)


def test_fit_hands_on_step_the_scheduled_momentum_of_every_update():
    seen = []
    inertia.fit("digits", "mlp", optimizer="momentum", hyper={"lr": 0.05}, steps=30, batch_size=32,
                schedules={"momentum": "sutskever_ramp(0.9, every=5)"}, device="cpu",
                on_step=lambda info: seen.append((info.fold, info.step, info.optimizer.param_groups[0]["momentum"])))
    assert seen == [(0, t, pytest.approx(_sutskever(t, 0.9, 5))) for t in range(30)]


def test_a_momentum_schedule_in_inertia_train_follows_the_schedule(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r.json"
    assert main(["train", "--data", "digits", "--steps", "40", "--batch-size", "32", "--lr", "0.05", "--quiet",
                 "--schedule", "lr=cosine", "--schedule", "momentum=sutskever_ramp(0.99, every=8)",
                 "--tensorboard", str(tmp_path / "tb"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["schedules"] == {"lr": "cosine", "momentum": "sutskever_ramp(0.99, every=8)"}
    acc = EventAccumulator(result["tensorboard"][0], size_guidance={"scalars": 0})
    acc.Reload()
    momentum = [_sutskever(t, 0.99, 8) for t in range(40)]
    lr = [0.05 * (1 + math.cos(math.pi * t / 40)) / 2 for t in range(40)]
    assert [e.step for e in acc.Scalars("momentum")] == list(range(1, 41))   # updates taken, as a sweep counts them
    assert [e.value for e in acc.Scalars("momentum")] == pytest.approx(momentum, rel=1e-6)
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx(lr, rel=1e-5, abs=1e-9)
    assert [e.value for e in acc.Scalars("effective_lr")] == pytest.approx(
        [a / (1 - m) for a, m in zip(lr, momentum)], rel=1e-5, abs=1e-9)


def test_the_bare_schedule_kinds_still_mean_the_learning_rate(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", "--data", "digits", "--steps", "20", "--quiet", "--schedule", "onecycle",
                 "--json", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert config["schedules"] == {"lr": "one_cycle", "momentum": "one_cycle_momentum(max=0.95)"}


def test_the_reproduce_command_carries_fixed_values_schedules_and_folds():
    record = {"lr": 0.1 / 3, "momentum": 0.9, "status": "ok"}
    meta = {"data": "digits", "model": "mlp", "optimizer": "sgd", "steps": 70, "batch_size": 20, "folds": 3,
            "seed": 4, "fixed": {"nesterov": True, "dampening": 0.0, "convention": "sutskever"},
            "schedules": {"lr": "cosine(end=1e-4)", "momentum": "sutskever_ramp(0.99)"}}
    command = shlex.split(train_command(SweepResults([record], ["lr", "momentum"], meta=meta), record))
    args = build_parser().parse_args(command[1:])
    kwargs = train_face.fit_arguments(args)
    assert kwargs["hyper"] == {"lr": 0.1 / 3, "momentum": 0.9, "nesterov": True, "convention": "sutskever",
                               "dampening": 0.0}   # the swept lr read back to the last bit
    assert kwargs["schedules"] == {"lr": "cosine(steps=70, end=0.0001)", "momentum": "sutskever_ramp(0.99)"}
    assert {k: kwargs[k] for k in ("data", "model", "optimizer", "steps", "batch_size", "folds", "seed")} == {
        k: meta[k] for k in ("data", "model", "optimizer", "steps", "batch_size", "folds", "seed")}
    assert train_command(SweepResults([{**record, "status": "diverged"}], ["lr", "momentum"], meta=meta)) is None


def test_a_float64_sweeps_printed_command_trains_in_float64_and_gives_its_numbers(tmp_path):
    results = inertia.sweep("digits", "mlp", lr=[0.3], momentum=[0.9], steps=40, batch_size=32, seeds=1,
                            dtype=torch.float64)
    command = shlex.split(train_command(results))
    assert command[command.index("--dtype") + 1] == "float64"
    runs = {}
    for name, args in (("float64", command[1:]), ("float32", command[1:command.index("--dtype")])):
        out = tmp_path / f"{name}.json"
        assert main([*args, "--json", str(out), "--quiet", "--device", "cpu"]) == 0
        runs[name] = json.loads(out.read_text())["val_loss_mean"]
    assert runs["float64"] == results.best["val_loss_mean"]
    assert runs["float32"] != pytest.approx(runs["float64"], rel=1e-9)   # the dtype is what made the difference


def test_a_float64_sweeps_snippet_fits_in_float64():
    x, y = _regression(80)
    results = inertia.sweep((x, y), Regressor, loss="mse", lr=[0.05], momentum=[0.9], steps=20, batch_size=16,
                            seeds=1, dtype=torch.float64)
    snippet = train_command(results)
    assert "import torch" in snippet and "dtype=torch.float64" in snippet
    scope = {"data": (x, y), "model": Regressor}
    exec(snippet, scope)
    assert scope["result"].record()["val_loss_mean"] == results.best["val_loss_mean"]


@pytest.mark.parametrize("args,needle", [
    (["--schedule", "lr=nosuch"], "schedule lr=nosuch"),
    (["--schedule", "foo=cosine"], "foo"),
    (["--schedule", "nesterov=cosine"], "nesterov"),
    (["--schedule", "cosine(end=1)"], "NAME=SPEC"),
    (["--schedule", "lr=cosine", "--schedule", "cosine"], "lr has a schedule already"),
    (["--schedule", "momentum=linear(start=0.5, end=1.5)"], "momentum"),
    (["--folds", "0"], "--folds"),
    (["--loss", "nosuch"], "argument --loss: invalid choice: 'nosuch'"),
    (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_data_is_loaded(args, needle, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded")

    monkeypatch.setattr(inertia.fits, "as_dataset", no_data)
    assert main(["train", "--data", "digits", "--steps", "20", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fit_checks_its_arguments_before_loading_data(monkeypatch):
    monkeypatch.setattr(inertia.fits, "as_dataset", lambda *a, **k: pytest.fail("data loaded"))
    for bad, match in [(dict(folds=0), "folds"), (dict(steps=0), "steps"), (dict(hyper={"bogus": 1}), "bogus"),
                       (dict(hyper={"lr": -1.0}), "lr"), (dict(schedules={"lr": "nosuch"}), "nosuch"),
                       (dict(loss="nosuch"), "loss")]:
        with pytest.raises(ValueError, match=match):
            inertia.fit("digits", **bad)


# ---------------------------------------------------------------- any loss, task and input shape


class Regressor(nn.Module):
    def __init__(self, features=5, outputs=1):
        super().__init__()
        self.a, self.b = nn.Linear(features, 16), nn.Linear(16, outputs)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class BatchNormCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


def _regression(n, outputs=1, seed=0):
    """Inputs far from mean 0 / std 1 (so standardization matters) and a smooth target."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g) * torch.tensor([3.0, 0.5, 1.0, 8.0, 2.0]) + 4
    y = torch.stack([torch.sin(x[:, 0]) + 0.3 * x[:, 1], 0.1 * x[:, 3] - x[:, 2]], 1)[:, :outputs]
    return x, (y.squeeze(1) if outputs == 1 else y)


def _engine_records(data, model, configs, **settings):
    """The records of the sweep engine itself for ``configs``, on the Job that ``inertia.sweep`` builds."""
    from inertia.sweeps import SweepSpec, TaskSpec, _job, _load_data

    task = TaskSpec.from_values(data, model, lr=[0.1], momentum=[0.0], loss=settings.pop("loss"))
    spec = SweepSpec.from_settings(task, {"seeds": 1, **settings})
    dataset = _load_data(data, spec.train.seed)
    return run_members(Members(_job(spec.resolved(data=dataset), dataset), configs, list(range(len(configs))))).results()


REGRESSION = dict(lr=[0.02, 0.05], momentum=[0.0, 0.8], steps=40, batch_size=16, folds=2, seed=2, standardize=True)


def test_a_regression_sweeps_printed_command_reproduces_its_loss_rmse_and_r2(tmp_path):
    x, y = _regression(150)
    x_test, y_test = _regression(60, seed=1)
    path = tmp_path / "regression.npz"
    np.savez(path, x_train=x.numpy(), y_train=y.numpy(), x_test=x_test.numpy(), y_test=y_test.numpy())
    results = inertia.sweep(str(path), Regressor, loss="mse", **REGRESSION)
    for record in results.records():
        snippet = train_command(results, record)   # a factory no command line can name: an inertia.fit snippet
        assert f"inertia.fit({str(path)!r}, model," in snippet
        assert "loss='mse'" in snippet and "standardize=True" in snippet
        scope = {"model": Regressor}
        exec(snippet, scope)
        ours = scope["result"].record()
        for part in ("val", "test"):
            for metric in ("loss", "rmse", "r2"):
                key = f"{part}_{metric}_mean"
                assert ours[key] == pytest.approx(record[key], rel=1e-12), key   # summed in another order
        assert ours["val_loss_std"] == pytest.approx(record["val_loss_std"], rel=1e-12)
        assert ours["val_loss_mean"] == pytest.approx(ours["val_rmse_mean"] ** 2, rel=0.05)  # mse is rmse² per fold
        assert "val_accuracy_mean" not in ours


def test_a_regression_sweeps_records_carry_rmse_and_r2():
    x, y = _regression(60)
    record = inertia.sweep((x, y), Regressor, loss="mse", lr=[0.05], momentum=[0.0], steps=5, batch_size=16).records()[0]
    assert record["val_rmse_mean"] is not None and record["val_r2_mean"] is not None


def test_in_float64_a_standardized_multi_output_huber_fit_equals_the_sweep_engine():
    x, y = _regression(120, outputs=2)
    x_test, y_test = _regression(50, outputs=2, seed=1)
    data = (x, y, x_test, y_test)
    settings = dict(steps=50, batch_size=16, folds=3, seed=4, standardize=True, dtype=torch.float64)
    reference = _engine_records(data, Regressor, [{"lr": 0.05, "momentum": 0.9}], loss="huber", **settings)[0]
    ours = inertia.fit(data, Regressor, hyper={"lr": 0.05, "momentum": 0.9}, loss="huber", device="cpu", **settings)
    record = ours.record()
    assert ours.metrics == ("loss", "rmse", "r2")
    for part in ("val", "test"):
        for key in (f"{part}_{m}_{s}" for m in ours.metrics for s in ("mean", "std")):
            assert record[key] == pytest.approx(reference[key], rel=1e-9), key
    assert record["train_loss_final"] == pytest.approx(reference["train_loss_final"], rel=1e-9)
    unscaled = inertia.fit(data, Regressor, hyper={"lr": 0.05, "momentum": 0.9}, loss="huber", device="cpu",
                           **{**settings, "standardize": False}).record()
    assert unscaled["val_loss_mean"] != pytest.approx(record["val_loss_mean"], rel=1e-3)  # standardizing matters


def test_a_batchnorm_cnn_on_images_equals_a_plain_torch_sgd_loop_on_the_same_batches():
    """Per-channel standardization from each fold's training part, train mode for every step (BatchNorm's
    running statistics updated), eval mode for the metrics: written plainly here."""
    g = torch.Generator().manual_seed(0)
    x, x_test = torch.rand(90, 1, 8, 8, generator=g) * 4 + 1, torch.rand(30, 1, 8, 8, generator=g) * 4 + 1
    y, y_test = (((i[:, 0, :4].mean((1, 2)) - i[:, 0, 4:].mean((1, 2))) * 6).round().clamp(-1, 1).long() + 1
                 for i in (x, x_test))   # 3 classes: top half brighter, alike, darker
    steps, batch, seed, folds = 25, 16, 6, 2
    ours = inertia.fit((x, y, x_test, y_test), BatchNormCNN, optimizer="sgd", hyper=dict(lr=0.1, momentum=0.9),
                       steps=steps, batch_size=batch, folds=folds, seed=seed, standardize=True, device="cpu")
    torch.manual_seed(seed)
    template = BatchNormCNN()
    for k, (train_idx, val_idx) in enumerate(make_folds(len(y), folds, seed)):
        mean = x[train_idx].double().mean((0, 2, 3), keepdim=True)
        std = x[train_idx].double().std((0, 2, 3), correction=0, keepdim=True)
        z, z_test = ((x - mean) / std).float(), ((x_test - mean) / std).float()
        model = copy.deepcopy(template)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model.train()
        for t in range(steps):
            idx = batch_at(train_idx, t, batch, seed, k)
            loss = F.cross_entropy(model(z[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        theirs = model.state_dict()
        assert theirs["bn.num_batches_tracked"] == steps
        for name, value in ours.models[k].state_dict().items():
            torch.testing.assert_close(value, theirs[name], rtol=1e-5, atol=1e-6, msg=name)
        model.eval()
        for part, (inputs, targets) in {"val": (z[val_idx], y[val_idx]), "test": (z_test, y_test)}.items():
            val_loss, val_acc = _evaluate(model, inputs, targets)
            assert ours.folds[k].metrics[f"{part}_loss"] == pytest.approx(val_loss, rel=1e-5)
            assert ours.folds[k].metrics[f"{part}_accuracy"] == val_acc
        assert ours.folds[k].last_loss == pytest.approx(float(loss.detach()), rel=1e-5)
    assert ours.metrics == ("loss", "accuracy")


def test_the_reproduce_command_carries_the_loss_and_standardize_unless_defaults():
    record = {"lr": 0.1, "momentum": 0.9, "status": "ok"}
    meta = {"data": "targets.npz", "model": "mlp", "optimizer": "momentum", "loss": "huber", "standardize": True}
    command = train_command(SweepResults([record], ["lr", "momentum"], meta=meta), record)
    kwargs = train_face.fit_arguments(build_parser().parse_args(shlex.split(command)[1:]))
    assert kwargs["loss"] == "huber" and kwargs["standardize"] is True
    defaults = {**meta, "loss": "auto", "standardize": False}
    plain = train_command(SweepResults([record], ["lr", "momentum"], meta=defaults), record)
    assert "--loss" not in plain and "--standardize" not in plain
    kwargs = train_face.fit_arguments(build_parser().parse_args(shlex.split(plain)[1:]))
    assert kwargs["loss"] == "auto" and kwargs["standardize"] is False


def test_cross_entropy_on_float_targets_and_an_unknown_loss_are_one_line_errors(tmp_path, capsys):
    x, y = _regression(40, outputs=2)
    path = tmp_path / "regression.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    assert main(["train", "--data", str(path), "--loss", "cross_entropy", "--steps", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cross_entropy needs integer class labels" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="unknown loss 'nosuch'"):
        inertia.fit(str(path), loss="nosuch")


@pytest.mark.parametrize("caller_flushes", [False, True])
def test_fit_trains_with_subnormals_flushed_as_the_sweeps_lanes_and_leaves_the_caller_as_it_was(caller_flushes):
    from inertia.sweeps import lanes

    seen = []
    torch.set_flush_denormal(caller_flushes)
    try:
        inertia.fit("digits", "mlp", steps=3, batch_size=16, device="cpu",
                    on_step=lambda info: seen.append(lanes._flushes_subnormals()))
        assert seen == [True] * 3 and lanes._flushes_subnormals() == caller_flushes
    finally:
        torch.set_flush_denormal(False)
