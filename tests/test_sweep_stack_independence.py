"""A configuration's numbers do not depend on its stack, on any backend, and the digits CNN benchmark's grid
equals separately trained models.

The README promises that a configuration's numbers do not depend on which others share its stack: a grid
swept alone and the same grid beside healthy and diverging neighbours give every field bit for bit equal
(float32, where a product's blocking or kernel choice shows in the last bits). Every configuration of
``benchmarks/sweep_speed.py``'s CNN workload (digits as 8 x 8 images, DigitsCNN with BatchNorm in train mode,
lr 1e-3..1 x momentum 0, 0.5, 0.9, 0.99, batch 100) equals a plain torch.optim.SGD loop in float64.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import inertia
from examples.digits_cnn import DigitsCNN, digits_images
from inertia import rules
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.engine import Job, Members, run_members

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = dict(lr=[0.01, 0.1], momentum=[0.0, 0.9])
NEIGHBOURS = dict(lr=[0.01, 0.02, 0.05, 0.1, 0.2, 1e4, 1e8], momentum=[0.0, 0.9])   # lr 1e4, 1e8 diverge
UNSHARED = {"trial", "seconds"}   # the trial's number and wall time are the study's, not the configuration's


def _digits_cnn():
    return DigitsCNN(width=4)


CASES = [("mnist1d", "mlp", "batched"), ("mnist1d", "cnn", "vmap"), ("digits", _digits_cnn, "conv"),
         ("digits", _digits_cnn, "vmap")]


@pytest.mark.parametrize("data,model,backend", CASES, ids=["mlp-batched", "cnn1d-vmap", "digits-conv", "digits-vmap"])
def test_a_configurations_every_field_is_the_same_beside_other_neighbours(tmp_path, data, model, backend):
    dataset = digits_images() if data == "digits" else data
    settings = dict(steps=30, seeds=2, eval_every=10, dtype=torch.float32, backend=backend)
    alone = inertia.sweep(dataset, model, **GRID, out=str(tmp_path / "alone"), **settings).records()
    beside = inertia.sweep(dataset, model, **NEIGHBOURS, out=str(tmp_path / "beside"), **settings).records()
    by_config = {(r["lr"], r["momentum"]): r for r in beside}
    assert sum(r["status"] == "diverged" for r in beside) == 4
    for record in alone:
        other = by_config[record["lr"], record["momentum"]]
        assert record["status"] == other["status"] == "ok"
        for name in record.keys() - UNSHARED:
            assert record[name] == other[name], (record["lr"], record["momentum"], name)


BENCHMARK_LRS = [10 ** (-3 + 3 * i / 7) for i in range(8)]
BENCHMARK_MOMENTA = [0.0, 0.5, 0.9, 0.99]
SEED, BATCH, STEPS, DIVERGE_FACTOR = 0, 100, 25, 10.0


def _loop(job: Job, lr: float, momentum: float):
    """DigitsCNN trained alone with torch.optim.SGD on the sweep's batches, in float64: the model, and the
    1-based step whose loss exceeds DIVERGE_FACTOR x the first step's (or is not finite), else None."""
    split = job.splits[0]
    torch.manual_seed(SEED)
    model = DigitsCNN().to(torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    first = None
    for t in range(STEPS):
        idx = batch_at(split.train, t, BATCH, SEED, split.fold)
        opt.zero_grad()
        loss = F.cross_entropy(model(job.x[idx]), job.y[idx])
        first = loss.item() if first is None else first
        if not abs(loss.item()) <= DIVERGE_FACTOR * first:
            return model, t + 1
        loss.backward()
        opt.step()
    return model, None


def test_every_configuration_of_the_digits_cnn_benchmark_equals_a_plain_torch_loop():
    data = digits_images(SEED)
    job = Job(DigitsCNN, data.x_train.double(), data.y_train, make_folds(len(data.y_train), 1, SEED),
              rules.get("momentum"), {}, STEPS, BATCH, seed=SEED, dtype=torch.float64, backend="conv",
              diverge_factor=DIVERGE_FACTOR)
    configs = [dict(lr=lr, momentum=mu) for lr in BENCHMARK_LRS for mu in BENCHMARK_MOMENTA]
    members = run_members(Members(job, configs, list(range(len(configs)))))
    row = 0
    for config, record in zip(configs, members.results()):
        model, diverged_step = _loop(job, **config)
        assert record["diverged_step"] == diverged_step, config
        if diverged_step is not None:
            continue
        for p, stacked in zip(model.parameters(), members.params):
            torch.testing.assert_close(stacked[row], p.detach(), rtol=1e-9, atol=1e-11, msg=str(config))
        for (name, b), stacked in zip(model.named_buffers(), members.buffers):
            torch.testing.assert_close(stacked[row], b, rtol=1e-9, atol=1e-11, msg=f"{config} {name}")
        row += 1
    assert row == len(members.params[0]) and row >= 20
