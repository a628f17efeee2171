"""``inertia.fit`` and ``inertia train``: the sweep's numbers reproduced, an independent
torch.optim loop, schedules of any hyperparameter, the reproduce command, bad input."""
from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
import torch.nn.functional as F

import inertia
import inertia.fits
from inertia import rules
from inertia.cli import build_parser, main
from inertia.commands import train as train_face
from inertia.commands.reproduce import train_command
from inertia.data import load_dataset
from inertia.models import build_model
from inertia.sweeps import SweepResults
from inertia.sweeps.engine import Job, batch_at, make_folds
from inertia.sweeps.engine import train as train_stack

GRID = dict(lr=[0.05, 0.2], momentum=[0.0, 0.9], steps=60, batch_size=32, seed=3)


def _assert_same_numbers(ours: dict, record: dict, n_val: int, n_test: int, folds: int) -> None:
    """Losses to rel 1e-4; accuracies within one example (of a fold's validation part, or the test set)."""
    for prefix, n in (("val", n_val), ("test", n_test)):
        assert ours[f"{prefix}_loss_mean"] == pytest.approx(record[f"{prefix}_loss_mean"], rel=1e-4)
        assert ours[f"{prefix}_accuracy_mean"] == pytest.approx(record[f"{prefix}_accuracy_mean"], abs=1 / n / folds + 1e-12)
        assert ours[f"{prefix}_loss_std"] == pytest.approx(record[f"{prefix}_loss_std"], rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("folds,schedules", [
    (1, {}), (2, {}), (2, {"lr": "cosine(end=1e-4)", "momentum": "sutskever_ramp(every=10)"})])
def test_the_printed_command_reproduces_every_sweep_record(tmp_path, folds, schedules):
    results = inertia.sweep("digits", "mlp", **GRID, folds=folds, schedules=schedules)
    data = load_dataset("digits", seed=3)
    n_val = min(len(v) for _, v in make_folds(len(data.y_train), folds, 3))
    for i, record in enumerate(results.records()):
        command = shlex.split(train_command(results, record))
        assert command[:2] == ["inertia", "train"] and ["--folds", str(folds)] == command[-4:-2]
        out = tmp_path / f"{i}.json"
        assert main([*command[1:], "--json", str(out), "--quiet", "--device", "cpu"]) == 0
        ours = json.loads(out.read_text())
        _assert_same_numbers(ours, record, n_val, len(data.y_test), folds)
        assert len(ours["folds"]) == folds and ours["config"]["folds"] == folds
        assert ours["config"]["schedules"] == schedules


def test_fit_equals_the_sweep_engine_under_schedules_of_lr_and_momentum():
    data = load_dataset("digits", seed=1)
    folds = make_folds(len(data.y_train), 2, 1)
    schedules = {"lr": "cosine", "momentum": "sutskever_ramp(0.95, every=10)"}
    job = Job(lambda: build_model("mlp", data.features, data.classes), data.x_train, data.y_train, folds,
              rules.get("nesterov"), {}, 50, 32, seed=1, x_test=data.x_test, y_test=data.y_test, schedules=schedules)
    record = train_stack(job, [{"lr": 0.1}])[0]
    ours = inertia.fit(data, "mlp", optimizer="nesterov", hyper={"lr": 0.1}, schedules=schedules,
                       steps=50, batch_size=32, folds=2, seed=1, device="cpu").record()
    _assert_same_numbers(ours, record, min(len(v) for _, v in folds), len(data.y_test), 2)
    constant = inertia.fit(data, "mlp", optimizer="nesterov", hyper={"lr": 0.1}, steps=50, batch_size=32,
                           folds=2, seed=1, device="cpu").record()
    assert constant["val_loss_mean"] != pytest.approx(ours["val_loss_mean"], rel=1e-3)  # the schedules matter


def test_in_float64_fit_equals_the_sweep_over_a_long_run_to_rounding():
    """The sweep's hand-written backprop and autograd differ by rounding, which training amplifies
    (float32, mnist1d, 2000 steps: 1e-7 until a loss spike, then 1e-2); in float64 the two runs agree
    to 1e-9 here, so data, folds, batches, initialization and update are the same."""
    kwargs = dict(steps=600, batch_size=32, folds=2, seed=7, dtype=torch.float64)
    record = inertia.sweep("digits", "mlp", lr=[0.05], momentum=[0.9], **kwargs).records()[0]
    ours = inertia.fit("digits", "mlp", hyper={"lr": 0.05, "momentum": 0.9}, device="cpu", **kwargs).record()
    for key in ("val_loss_mean", "val_loss_std", "test_loss_mean", "val_accuracy_mean", "test_accuracy_mean"):
        assert ours[key] == pytest.approx(record[key], rel=1e-9), key


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
    assert [e.step for e in acc.Scalars("momentum")] == list(range(40))
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
    assert kwargs["schedules"] == meta["schedules"]
    assert {k: kwargs[k] for k in ("data", "model", "optimizer", "steps", "batch_size", "folds", "seed")} == {
        k: meta[k] for k in ("data", "model", "optimizer", "steps", "batch_size", "folds", "seed")}
    assert train_command(SweepResults([{**record, "status": "diverged"}], ["lr", "momentum"], meta=meta)) is None


@pytest.mark.parametrize("args,needle", [
    (["--schedule", "lr=nosuch"], "--schedule lr=nosuch"),
    (["--schedule", "foo=cosine"], "foo"),
    (["--schedule", "nesterov=cosine"], "nesterov"),
    (["--schedule", "cosine(end=1)"], "NAME=SPEC"),
    (["--schedule", "lr=cosine", "--schedule", "cosine"], "lr has a schedule already"),
    (["--schedule", "momentum=linear(start=0.5, end=1.5)"], "momentum"),
    (["--folds", "0"], "--folds"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_data_is_loaded(args, needle, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded")

    monkeypatch.setattr(inertia.fits, "_load_data", no_data)
    assert main(["train", "--data", "digits", "--steps", "20", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fit_checks_its_arguments_before_loading_data(monkeypatch):
    monkeypatch.setattr(inertia.fits, "_load_data", lambda *a: pytest.fail("data loaded"))
    for bad, match in [(dict(folds=0), "folds"), (dict(steps=0), "steps"), (dict(hyper={"bogus": 1}), "bogus"),
                       (dict(hyper={"lr": -1.0}), "lr"), (dict(schedules={"lr": "nosuch"}), "nosuch")]:
        with pytest.raises(ValueError, match=match):
            inertia.fit("digits", **bad)
