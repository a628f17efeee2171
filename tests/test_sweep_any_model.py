"""Sweeps of any model, loss and input shape equal separately trained models (same initialization, same batches).

BatchNorm CNNs on images (the conv backend and vmap; each member's running statistics, evaluation in eval mode), regression with
mse (RMSE and R²), per-split standardization, dropout (draws of the configuration, not its place; reproducible on resume), a
member's numbers independent of who shares its stack, and the one-line errors for what does not fit.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inertia import rules
from inertia.models import build_model
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.engine import Job, Members, run_members

SEED, BATCH, STEPS = 5, 12, 10
CONFIGS = [dict(lr=0.05, momentum=0.9), dict(lr=0.2, momentum=0.0), dict(lr=0.01, momentum=0.5)]


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


class Blocks(nn.Sequential):
    """Two Conv2d + BatchNorm2d + ReLU blocks, max pooling (the conv backend pools before the ReLU), a head."""

    def __init__(self):
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))


class Unnormalized(nn.Sequential):
    """A first convolution without BatchNorm, a grouped one with bias, average pooling, a two-layer head."""

    def __init__(self):
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, groups=2),
                         nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(54, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def strided():
    """The ``cnn2d`` preset (a stride-2 convolution, global average pooling) for 1 x 6 x 6 images."""
    return build_model("cnn2d", (1, 6, 6), 3, channels=4)


CNNS = [("conv", TinyCNN), ("vmap", TinyCNN), ("conv", Blocks), ("conv", Unnormalized), ("conv", strided), ("vmap", strided), ("vmap", Blocks)]


class Regressor(nn.Module):
    def __init__(self, outputs=1):
        super().__init__()
        self.a, self.b = nn.Linear(5, 8), nn.Linear(8, outputs)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class Dropper(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 3)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.a(x))))


def _images(n=72, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    return x, (x.mean((1, 2, 3)) * 3).round().clamp(-1, 1).long() + 1


def _regression(n=80, outputs=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g) * 3 + 2
    y = torch.sin(x[:, :outputs]) + 0.1 * torch.randn(n, outputs, generator=g)
    return x, (y.squeeze(1) if outputs == 1 else y)


def _job(factory, x, y, x_test, y_test, folds=2, dtype=torch.float64, **kw):
    return Job(factory, x, y, make_folds(len(y), folds, SEED), rules.get("momentum"), {}, STEPS, BATCH, seed=SEED,
               x_test=x_test, y_test=y_test, dtype=dtype, eval_every=5, **kw)


def _separately(job, factory, cfg, fold, loss_fn, prepare=lambda x, train: (x, None)):
    """One model trained alone with torch.optim.SGD on the sweep's batches; its end state."""
    split = job.splits[fold]
    torch.manual_seed(SEED)
    model = factory().to(torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    x, scaler = prepare(job.x, split.train)
    for t in range(job.steps):
        idx = batch_at(split.train, t, BATCH, SEED, split.fold)
        opt.zero_grad()
        loss_fn(model(x[idx]), job.y[idx]).backward()
        opt.step()
    return model.eval(), x, scaler


@pytest.mark.parametrize("folds", [1, 2])
@pytest.mark.parametrize("backend,factory", CNNS, ids=[f"{b}-{f.__name__}" for b, f in CNNS])
def test_a_batchnorm_cnn_sweep_on_images_equals_separately_trained_models(backend, factory, folds):
    x, y = _images()
    x_test, y_test = _images(30, seed=1)
    job = _job(factory, x, y, x_test, y_test, folds=folds, backend=backend)
    assert job.backend == backend and job.buffer_names
    members = run_members(Members(job, CONFIGS, [0, 1, 2]))
    records = members.results()
    for c, cfg in enumerate(CONFIGS):
        val_losses, test_losses = [], []
        for k in range(folds):
            model, xx, _ = _separately(job, factory, cfg, k, F.cross_entropy)
            row = k * len(CONFIGS) + c
            for p, stacked in zip(model.parameters(), members.params):
                torch.testing.assert_close(stacked[row], p.detach(), rtol=1e-9, atol=1e-11)
            for (name, b), stacked in zip(model.named_buffers(), members.buffers):
                torch.testing.assert_close(stacked[row], b, rtol=1e-9, atol=1e-11, msg=name)
            with torch.no_grad():
                val = job.splits[k].val
                val_losses.append(F.cross_entropy(model(xx[val]), y[val]).item())
                test_losses.append(F.cross_entropy(model(x_test.double()), y_test).item())
        assert records[c]["val_loss_mean"] == pytest.approx(sum(val_losses) / folds, rel=1e-9)
        assert records[c]["test_loss_mean"] == pytest.approx(sum(test_losses) / folds, rel=1e-9)


@pytest.mark.parametrize("outputs", [1, 2])
def test_a_regression_sweep_with_mse_equals_separately_trained_models(outputs):
    x, y = _regression(outputs=outputs)
    x_test, y_test = _regression(40, outputs=outputs, seed=1)
    job = _job(lambda: Regressor(outputs), x, y, x_test, y_test, loss="mse")
    assert job.objective.task == "regression" and job.metric_names[:3] == ["val_loss", "val_rmse", "val_r2"]
    records = run_members(Members(job, CONFIGS, [0, 1, 2])).results()
    fit = (lambda out, t: F.mse_loss(out.squeeze(1), t)) if outputs == 1 else F.mse_loss
    for c, cfg in enumerate(CONFIGS):
        rmse, r2 = [], []
        for k in range(2):
            model, _, _ = _separately(job, lambda: Regressor(outputs), cfg, k, fit)
            val = job.splits[k].val
            with torch.no_grad():
                pred = model(job.x[val]).reshape(job.y[val].shape)
            err = ((pred - job.y[val]) ** 2).sum()
            rmse.append(float((err / job.y[val].numel()).sqrt()))
            r2.append(float(1 - err / ((job.y[val] - job.y[val].mean(0)) ** 2).sum()))
        assert records[c]["val_rmse_mean"] == pytest.approx(sum(rmse) / 2, rel=1e-9)
        assert records[c]["val_r2_mean"] == pytest.approx(sum(r2) / 2, rel=1e-9)
        assert records[c]["val_loss_mean"] == pytest.approx(sum(v * v for v in rmse) / 2, rel=1e-9)


def test_standardized_inputs_use_each_splits_training_part_only():
    x, y = _regression()
    x_test, y_test = _regression(40, seed=1)
    job = _job(Regressor, x, y, x_test, y_test, loss="mse", standardize=True)
    records = run_members(Members(job, CONFIGS[:1], [0])).results()

    def prepare(x_all, train):
        part = x_all[train]
        mean, std = part.mean(0), part.std(0, unbiased=False)
        return (x_all - mean) / std, (mean, std)

    fit = lambda out, t: F.mse_loss(out.squeeze(1), t)  # noqa: E731
    losses = []
    for k in range(2):
        model, xx, (mean, std) = _separately(job, Regressor, CONFIGS[0], k, fit, prepare)
        with torch.no_grad():
            losses.append(F.mse_loss(model((x_test.double() - mean) / std).squeeze(1), y_test.double()).item())
        assert not torch.allclose(xx[job.splits[k].val].mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-6)
    assert records[0]["test_loss_mean"] == pytest.approx(sum(losses) / 2, rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend,factory", CNNS, ids=[f"{b}-{f.__name__}" for b, f in CNNS])
def test_a_cnn_members_numbers_do_not_depend_on_who_shares_its_stack(backend, factory, dtype):
    x, y = _images()
    x_test, y_test = _images(30, seed=1)
    job = _job(factory, x, y, x_test, y_test, folds=1, dtype=dtype, backend=backend)
    diverging = dict(lr=1e4, momentum=0.99)
    alone = run_members(Members(job, CONFIGS[:1], [0]))
    beside = run_members(Members(job, [diverging, *CONFIGS, *CONFIGS[1:] * 7], list(range(18))))
    assert beside.results()[0]["status"] == "diverged"
    for p, q in zip(alone.params, beside.params):   # survivors in stack order: CONFIGS[0] first
        assert torch.equal(p[0], q[0])
    for p, q in zip(alone.buffers, beside.buffers):
        assert torch.equal(p[0], q[0])
    a, b = alone.results()[0], beside.results()[1]
    assert a["val_loss_mean_curve"] == b["val_loss_mean_curve"] and a["test_loss_mean"] == b["test_loss_mean"]


def test_dropout_draws_depend_on_the_configuration_not_its_place_and_repeat_on_resume():
    x, y = _regression(outputs=1)
    y = (y > y.median()).long() + (y > y.quantile(0.8)).long()
    job = _job(Dropper, x, y, None, None, folds=1)
    same = [dict(lr=0.1, momentum=0.9)] * 2
    whole = run_members(Members(job, same, [0, 1]))
    for p in whole.params:
        assert torch.equal(p[0], p[1])      # equal settings, equal draws, whatever their places
    beside = run_members(Members(job, [dict(lr=0.02, momentum=0.0), same[0]], [0, 1]))
    for p, q in zip(whole.params, beside.params):
        assert torch.equal(p[0], q[1])
    first = Members(job, same, [0, 1])
    for _ in range(4):
        first.train_step()
    saved = copy.deepcopy(first.state_dict())
    resumed = Members(job, same, [0, 1])
    resumed.load_state_dict(saved)
    run_members(resumed)
    for p, q in zip(whole.params, resumed.params):
        assert torch.equal(p, q)


@pytest.mark.parametrize("make,message", [
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 7)), r"output has shape \(2, 7\).*\[2, 3\]"),
    (lambda: nn.Linear(5, 3), r"forward fails on two examples of the data \(inputs of shape \(2, 1, 6, 6\), dtype float64\)"),
])
def test_a_model_that_does_not_fit_the_data_is_a_one_line_error(make, message):
    x, y = _images()
    with pytest.raises(ValueError, match=message) as info:
        _job(make, x, y, None, None)
    assert "\n" not in str(info.value)


def test_a_loss_that_is_not_one_number_and_mismatched_targets_are_one_line_errors():
    x, y = _regression()
    with pytest.raises(ValueError, match=r"loss per_sample: must return one number"):
        def per_sample(out, target):
            return (out.squeeze(1) - target) ** 2
        _job(Regressor, x, y, None, None, loss=per_sample)
    with pytest.raises(ValueError, match="cross_entropy needs integer class labels"):
        _job(Regressor, x, y, None, None, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"output has shape \(2, 2\), but the targets have shape \(2,\)"):
        _job(lambda: Regressor(2), x, y, None, None, loss="mse")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        _job(Regressor, x, y, None, None, loss="hinge")


def _frozen_first_layer():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)
    return model


@pytest.mark.parametrize("backend", ["batched", "vmap"])
def test_a_frozen_parameter_is_never_updated_as_torch_optim_skips_it(backend):
    x, _ = _regression(80)
    x_test, _ = _regression(30, seed=1)
    label = lambda v: (v[:, 0] > 2).long() + (v[:, 1] > 2).long()   # noqa: E731
    job = _job(_frozen_first_layer, x, label(x), x_test, label(x_test), folds=1, backend=backend)
    members = run_members(Members(job, CONFIGS, [0, 1, 2]))
    torch.manual_seed(SEED)
    initial = _frozen_first_layer()[0].weight.detach().double()
    for c, cfg in enumerate(CONFIGS):
        model, _, _ = _separately(job, _frozen_first_layer, cfg, 0, F.cross_entropy)
        for p, stacked in zip(model.parameters(), members.params):
            torch.testing.assert_close(stacked[c], p.detach(), rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(members.params[0][c], initial, rtol=0, atol=0)


WARNING_MODEL = r"""
import sys, warnings, torch, inertia
from torch import nn

class Warns(nn.Module):
    def __init__(self, classes=10, input_shape=(64,)):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_shape[0], 16), nn.Tanh(), nn.Linear(16, classes))
    def forward(self, x):
        warnings.warn("the model's own warning")
        return self.net(x)

inertia.sweep("digits", Warns, lr=[0.01, 0.1], momentum=[0.0, 0.9], steps=int(sys.argv[1]), seeds=1, device="cpu")
"""


def test_a_models_own_warning_is_not_repeated_at_every_step():
    """The sweep hides torch's notice of a missing batching rule without touching other warnings: a warning
    the model gives at every forward is printed as Python's default filter prints it, once per change of the
    filters while the sweep is set up (Optuna's imports make some), never once per step."""
    import subprocess
    import sys

    def printed(steps: int) -> int:
        done = subprocess.run([sys.executable, "-c", WARNING_MODEL, str(steps)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr.count("the model's own warning")

    assert 1 <= printed(6) == printed(30) <= 3
