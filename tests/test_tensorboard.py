"""TensorBoard writer: read the event files back and check the values and hyperparameters."""
from __future__ import annotations

import pytest
import torch

from inertia.tensorboard import RunWriter, effective_lr, flat_hparams, run_name, safe_run_name, write_run, write_sweep


def _load(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _series(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _hparams(acc):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    out = {}
    for name, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[name] = getattr(value, kind)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = [m.name.tag for m in experiment.experiment.metric_infos]
    return out, metrics


def test_write_run_round_trip(tmp_path):
    lrs = [0.1, 0.05, 0.025]
    path = write_run(
        tmp_path, "lr=0.1/mu=0.9",
        hparams={"lr": 0.1, "momentum": 0.9, "optimizer": "momentum", "nesterov": False, "betas": (0.9, 0.99)},
        scalars={
            "loss": [(0, 2.5), (10, 1.25), (20, 0.5)],
            "lr": lrs,
            "effective_lr": torch.tensor([effective_lr(v, 0.9) for v in lrs]),
        },
        final_metrics={"test_accuracy": 0.6875, "train_loss": torch.tensor(0.5)},
    )
    assert path == tmp_path / "lr=0.1_mu=0.9" and path.is_dir()
    acc = _load(path)
    assert _series(acc, "loss") == [(0, 2.5), (10, 1.25), (20, 0.5)]
    assert [s for s, _ in _series(acc, "lr")] == [0, 1, 2]
    assert [v for _, v in _series(acc, "lr")] == pytest.approx(lrs)
    assert [v for _, v in _series(acc, "effective_lr")] == pytest.approx([1.0, 0.5, 0.25], rel=1e-6)
    assert _series(acc, "test_accuracy") == [(20, 0.6875)]
    hp, metrics = _hparams(acc)
    assert hp["lr"] == pytest.approx(0.1) and hp["momentum"] == pytest.approx(0.9)
    assert hp["optimizer"] == "momentum" and hp["nesterov"] == "False"
    assert hp["betas"] == "(0.9, 0.99)"
    assert set(metrics) == {"test_accuracy", "train_loss"}


def test_run_writer_step_by_step(tmp_path):
    with RunWriter(tmp_path, "a", {"lr": 0.5}) as w:
        for step in range(5):
            w.log(step, loss=1.0 / (step + 1), momentum=0.9)
        w.finish({"test_accuracy": 0.5})
    acc = _load(tmp_path / "a")
    assert [v for _, v in _series(acc, "loss")] == pytest.approx([1, 0.5, 1 / 3, 0.25, 0.2])
    assert _series(acc, "test_accuracy") == [(4, 0.5)]
    assert list(tmp_path.iterdir()) == [tmp_path / "a"]  # no timestamped sub-run


def test_effective_lr_and_names():
    assert effective_lr(0.01, 0.9) == pytest.approx(0.1)
    assert effective_lr(0.01, 0.9, "ema") == 0.01
    torch.testing.assert_close(effective_lr(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.0])),
                               torch.tensor([0.2, 0.2]))
    assert safe_run_name("../x y") == "x_y"


def test_flat_hparams_are_typed_and_sortable():
    flat = flat_hparams({"optimizer": "momentum", "hyperparameters": {"lr": torch.tensor(0.1), "momentum": 0.9,
                                                                     "betas": (0.9, 0.999), "nesterov": False},
                         "seed": 3, "schedules": {"lr": "cosine"}})
    assert flat == {"optimizer": "momentum", "lr": pytest.approx(0.1), "momentum": 0.9, "betas.0": 0.9,
                    "betas.1": 0.999, "nesterov": "False", "seed": 3, "schedules.lr": "cosine"}
    assert isinstance(flat["lr"], float) and isinstance(flat["seed"], int | float)


def test_run_name_never_repeats_a_part():
    assert run_name({"optimizer": "momentum", "lr": 0.1, "momentum": 0.9, "seed": 0}) == \
        "optimizer=momentum_lr=0.1_momentum=0.9_seed=0"


def test_unique_runs_never_merge(tmp_path):
    """Two runs of one name (two `inertia train` started in the same second) get two directories."""
    first = RunWriter(tmp_path, "momentum_lr=0.1", {"momentum": 0.5}, unique=True)
    second = RunWriter(tmp_path, "momentum_lr=0.1", {"momentum": 0.9}, unique=True)
    for w, mu in ((first, 0.5), (second, 0.9)):
        w.log(1, momentum=mu)
        w.finish()
    assert first.path != second.path
    assert _series(_load(first.path), "momentum") == [(1, 0.5)]
    assert [v for _, v in _series(_load(second.path), "momentum")] == pytest.approx([0.9])


def test_sweep_runs_log_the_scheduled_values_actually_used(tmp_path):
    """A cosine lr schedule from each configuration's own value, read back with TensorBoard's reader
    and compared with the cosine formula written here; a rerun into the same directory writes nothing."""
    import math

    import inertia

    steps = 30
    res = inertia.sweep("digits", "mlp", lr=[0.05, 0.2], momentum=[0.0, 0.9], steps=steps, seeds=1,
                        schedules={"lr": "cosine"}, eval_every=10)
    assert write_sweep(res, tmp_path) == 4
    runs = sorted(p for p in tmp_path.iterdir())
    assert [p.name for p in runs][0].startswith("trial=")
    for run in runs:
        acc = _load(run)
        hp, _ = _hparams(acc)
        assert isinstance(hp["lr"], float) and isinstance(hp["momentum"], float)
        assert hp["schedule.lr"] == "cosine"
        lr = hp["lr"]
        logged = _series(acc, "lr")
        assert logged[0][0] == 1 and logged[-1][0] == steps
        for step, value in logged:   # the update numbered `step` used the cosine at t = step - 1
            expected = lr * (1 + math.cos(math.pi * (step - 1) / steps)) / 2
            assert value == pytest.approx(expected, rel=1e-5, abs=1e-9)
        assert [s for s, _ in _series(acc, "val_loss")] == [10, 20, 30]
        assert [s for s, _ in _series(acc, "momentum")] == [s for s, _ in logged]
    assert write_sweep(res, tmp_path) == 0
    assert sum(1 for _ in tmp_path.rglob("events.out.tfevents*")) == 4
