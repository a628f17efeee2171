"""The sweep engine: members trained at once equal separately trained models; folds; divergence; chunking."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inertia
from inertia import rules
from inertia.models import build_model
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.engine import Job, Members, run_members
from inertia.sweeps.gemm import openblas_core
from inertia.sweeps.memory import member_bytes

FEATURES, CLASSES = 12, 4



def _data(n: int = 240, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    w = torch.randn(FEATURES, CLASSES, generator=g)
    y = (x @ w).argmax(1)
    return x, y


def _mlp():
    return build_model("mlp", FEATURES, CLASSES)


class TinyNet(nn.Module):
    """Not an MLP the batched path knows: runs through functional_call + vmap."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(FEATURES, 16)
        self.b = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _job(factory, backend, folds=2, steps=25, dtype=torch.float64, x=None, y=None, optimizer="momentum", **kw):
    if x is None:
        x, y = _data()
    return Job(factory, x, y, make_folds(len(y), folds, 0), rules.get(optimizer), kw.pop("fixed", {}), steps, 16,
               seed=3, dtype=dtype, backend=backend, **kw)


def _assert_equal_to_separately_trained_models(job, factory, configs, optimizer, rtol, atol):
    x, y = job.x, job.y
    members = run_members(Members(job, configs, list(range(len(configs)))))
    for c, cfg in enumerate(configs):
        for k, (tr, _) in enumerate(job.folds):
            torch.manual_seed(3)
            model = factory().to(job.dtype)
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                  nesterov=optimizer == "nesterov")
            losses = []
            for t in range(job.steps):
                idx = batch_at(tr, t, 16, 3, k)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                losses.append(loss.item())
                opt.zero_grad()
                loss.backward()
                opt.step()
            row = k * len(configs) + c
            for p, stacked in zip(model.parameters(), members.params):
                torch.testing.assert_close(stacked[row], p.detach(), rtol=rtol, atol=atol)
            torch.testing.assert_close(members.curves[row], torch.tensor(losses, dtype=torch.float64),
                                       rtol=rtol, atol=atol)


CONFIGS = [dict(lr=0.05, momentum=0.9), dict(lr=0.2, momentum=0.5), dict(lr=0.01, momentum=0.99)]


@pytest.mark.parametrize("backend,factory", [("batched", _mlp), ("vmap", _mlp), ("vmap", TinyNet)])
@pytest.mark.parametrize("optimizer", ["momentum", "nesterov"])
def test_members_at_once_equal_separately_trained_models(backend, factory, optimizer):
    job = _job(factory, backend, optimizer=optimizer)
    assert job.backend == backend
    _assert_equal_to_separately_trained_models(job, factory, CONFIGS, optimizer, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gemm", ["torch", pytest.param("openblas", marks=pytest.mark.skipif(
    openblas_core() is None, reason="scipy-openblas32 is not installed (pip install 'inertia[openblas]')"))])
def test_float32_members_equal_separately_trained_models_with_either_gemm(gemm, monkeypatch):
    # float32 is where the engine may hand its matrix products to OpenBLAS (inertia.sweeps.gemm)
    monkeypatch.setenv("INERTIA_GEMM", gemm)
    job = _job(_mlp, "batched", dtype=torch.float32)
    members = Members(job, CONFIGS[:1], [0])
    members.train_step()
    assert members._step._plan.gemm.backend == gemm
    _assert_equal_to_separately_trained_models(job, _mlp, CONFIGS, "momentum", rtol=1e-4, atol=1e-5)


def test_batched_and_vmap_paths_agree_in_float32():
    configs = [dict(lr=0.1, momentum=m) for m in (0.0, 0.9)]
    a = run_members(Members(_job(_mlp, "batched", dtype=torch.float32), configs, [0, 1]))
    b = run_members(Members(_job(_mlp, "vmap", dtype=torch.float32), configs, [0, 1]))
    for p, q in zip(a.params, b.params):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("folds", [1, 3, 5])
def test_folds_partition_the_data_without_leakage(folds):
    n = 103
    split = make_folds(n, folds, seed=7)
    assert len(split) == folds
    for train_idx, val_idx in split:
        assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
        assert len(train_idx) + len(val_idx) == n
        # minibatches come only from the training part
        for t in range(30):
            assert set(batch_at(train_idx, t, 16, 0, 0).tolist()) <= set(train_idx.tolist())
    if folds > 1:
        vals = torch.cat([v for _, v in split]).sort().values
        assert torch.equal(vals, torch.arange(n))  # validation parts partition the data
    assert [v.tolist() for _, v in split] == [v.tolist() for _, v in make_folds(n, folds, seed=7)]


def test_every_configuration_of_a_fold_sees_the_same_batches():
    # common random numbers: the batch depends on (seed, fold, step) only
    tr = torch.arange(50)
    assert torch.equal(batch_at(tr, 13, 8, 1, 0), batch_at(tr, 13, 8, 1, 0))
    assert not torch.equal(batch_at(tr, 13, 8, 1, 0), batch_at(tr, 13, 8, 1, 1))
    epoch = torch.cat([batch_at(tr, t, 10, 1, 0) for t in range(5)])
    assert sorted(epoch.tolist()) == list(range(50))  # one epoch visits every example once


@pytest.mark.parametrize("backend", ["batched", "vmap"])
def test_a_diverging_member_leaves_the_others_bit_for_bit_unchanged(backend):
    good = [dict(lr=0.05, momentum=0.9), dict(lr=0.1, momentum=0.0), dict(lr=0.02, momentum=0.99)]
    bad = dict(lr=50.0, momentum=0.99)
    job = _job(_mlp, backend, dtype=torch.float32, steps=40)
    with_bad = run_members(Members(job, good[:1] + [bad] + good[1:], [0, 1, 2, 3]))
    without = run_members(Members(job, good, [0, 1, 2]))
    rec_with, rec_without = with_bad.results(), without.results()
    assert rec_with[1]["status"] == "diverged" and 1 <= rec_with[1]["diverged_step"] < 40
    assert [r["status"] for r in rec_without] == ["ok"] * 3
    for r_with, r_without in zip(rec_with[:1] + rec_with[2:], rec_without):
        assert r_with == r_without  # identical numbers, not merely close
    # stacked rows of the surviving members, fold by fold
    assert len(with_bad.live) == len(without.live)
    for p, q in zip(with_bad.params, without.params):
        assert torch.equal(p, q)


def test_nan_loss_is_divergence():
    job = _job(_mlp, "batched", dtype=torch.float32, steps=10, folds=1)
    members = Members(job, [dict(lr=1e30, momentum=0.9), dict(lr=0.01, momentum=0.0)], [0, 1])
    run_members(members)
    recs = members.results()
    assert recs[0]["status"] == "diverged" and recs[0]["val_loss_mean"] is None
    assert recs[1]["status"] == "ok" and recs[1]["val_loss_mean"] is not None


def test_chunking_gives_the_same_results_as_one_chunk():
    """The worker claims as many configurations as the memory budget holds: the numbers never depend on it."""
    (x, y), (x_test, y_test) = _data(), _data(60, 1)
    job = _job(_mlp, "batched", dtype=torch.float32, steps=20, x_test=x_test, y_test=y_test)
    two = member_bytes(job) * job.members_per_config * 2   # two configurations per stack

    def records(budget):
        results = inertia.sweep((x, y, x_test, y_test), _mlp, lr=[0.01, 0.1, 30.0], momentum=[0.0, 0.9], steps=20,
                                batch_size=16, folds=2, seeds=1, memory_budget=budget, lanes="threads", parallel=1)
        keys = ("status", "diverged_step", "val_loss_mean", "test_accuracy_mean", "train_loss_curve")
        return sorted(((r["lr"], r["momentum"]), [r[k] for k in keys]) for r in results.records())

    whole = records(10**12)
    assert records(two) == whole
    assert records(1) == whole   # never below one configuration per stack
    assert any(r[1][0] == "diverged" for r in whole)


def _global_pool_cnn():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))


def test_a_convolutions_activations_are_counted_by_image_size():
    """The memory estimate counts what a convolution outputs (channels x height x width), not its
    channels alone: the same network (the same parameters) on 4x larger images needs ~4x the activations,
    and at least the values a training batch's forward keeps."""
    estimates = {}
    for side in (8, 16):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(64, 1, side, side, generator=g), torch.randint(0, 3, (64,), generator=g)
        job = _job(_global_pool_cnn, "vmap", dtype=torch.float32, x=x, y=y)
        size, params = 4, sum(p.numel() for p in job.template.parameters())
        estimates[side] = member_bytes(job) - size * 6 * params
        kept = 16 * (8 * side * side) * 2   # one batch: the convolution's output and the ReLU's
        assert estimates[side] >= size * kept
    assert 3.5 < estimates[16] / estimates[8] < 4.5


@pytest.mark.parametrize("backend", ["batched", "vmap"])
def test_metrics_at_every_evaluation_point_equal_separately_trained_models(backend):
    x, y = _data()
    x_test, y_test = _data(60, seed=1)
    job = _job(_mlp, backend, steps=12, eval_every=5, x=x, y=y, x_test=x_test, y_test=y_test)
    assert job.eval_steps == [5, 10, 12]
    configs = CONFIGS[:2]
    records = run_members(Members(job, configs, [0, 1])).results()
    x, x_test = job.x, job.x_test
    for c, cfg in enumerate(configs):
        seen = {"val_loss": [], "val_accuracy": [], "test_loss": [], "test_accuracy": []}
        for k, (tr, val) in enumerate(job.folds):
            torch.manual_seed(3)
            model = _mlp().to(torch.float64)
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
            points = {}
            for t in range(job.steps):
                idx = batch_at(tr, t, 16, 3, k)
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                if t + 1 in job.eval_steps:
                    with torch.no_grad():
                        points[t + 1] = [F.cross_entropy(model(x[val]), y[val]).item(),
                                         (model(x[val]).argmax(1) == y[val]).double().mean().item(),
                                         F.cross_entropy(model(x_test), y_test).item(),
                                         (model(x_test).argmax(1) == y_test).double().mean().item()]
            for i, name in enumerate(seen):
                seen[name].append([points[s][i] for s in job.eval_steps])
        record = records[c]
        assert record["eval_steps"] == [5, 10, 12]
        for name, per_fold in seen.items():
            expected = torch.tensor(per_fold, dtype=torch.float64)
            torch.testing.assert_close(torch.tensor(record[f"{name}_mean_curve"], dtype=torch.float64), expected.mean(0), rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(torch.tensor(record[f"{name}_std_curve"], dtype=torch.float64),
                                       expected.std(0, unbiased=False),
                                       rtol=1e-7, atol=1e-12)
            assert record[f"{name}_mean"] == pytest.approx(float(expected.mean(0)[-1]), rel=1e-9)


def test_each_seed_of_a_several_seed_sweep_equals_a_separate_run_with_that_seed():
    x, y = _data()
    x_test, y_test = _data(60, seed=1)

    def job(seed, seeds):
        return Job(_mlp, x, y, make_folds(len(y), 2, seed), rules.get("momentum"), {}, 10, 16, seed=seed,
                   dtype=torch.float64, x_test=x_test, y_test=y_test, eval_every=5, seeds=seeds)

    together = run_members(Members(job(3, 3), CONFIGS, [0, 1, 2])).results()
    for s in range(3):
        alone = run_members(Members(job(3 + s, 1), CONFIGS, [0, 1, 2])).results()
        for c in range(len(CONFIGS)):
            mine = together[c]["per_seed"][s]
            assert mine["seed"] == 3 + s
            for key in ("val_loss_mean", "val_accuracy_std", "test_loss_mean", "test_accuracy_mean"):
                assert mine[key] == pytest.approx(alone[c][key], rel=1e-10, abs=1e-12), (s, c, key)
            assert mine["val_loss_mean_curve"] == pytest.approx(alone[c]["val_loss_mean_curve"], rel=1e-10)
    # the overall figures are over every seed and fold: 6 members per configuration
    losses = [m["val_loss_mean"] for m in together[0]["per_seed"]]
    assert together[0]["val_loss_mean"] == pytest.approx(sum(losses) / 3, rel=1e-10)
    with pytest.raises(ValueError, match="seeds must be an integer >= 1, got 0"):
        job(3, 0)


def test_a_sutskever_stack_drops_diverged_members_by_the_declared_layout_of_its_velocity():
    job = _job(_mlp, "batched", fixed={"convention": "sutskever"}, diverge_above=50.0)
    members = run_members(Members(job, [dict(lr=0.05, momentum=0.9), dict(lr=50.0, momentum=0.99)], [0, 1]))
    assert members.results()[1]["status"] == "diverged" and members.results()[0]["status"] == "ok"
    assert all(st["velocity"].shape[0] == len(members.live) for st in members.stack.state)
