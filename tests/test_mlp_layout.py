"""The batched sweep backend runs a module only if the module's forward is the Linear/ReLU chain."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inertia import rules
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.backends import mlp_layout
from inertia.sweeps.engine import Job, Members, run_members

FEATURES, CLASSES, WIDTH = 6, 3, 8


def plain():
    return nn.Sequential(nn.Linear(FEATURES, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                         nn.Linear(WIDTH, CLASSES))


class Residual(nn.Module):
    """The same leaves as ``plain`` in the same order, with a skip connection around the middle layer."""

    def __init__(self):
        super().__init__()
        self.inp, self.act1 = nn.Linear(FEATURES, WIDTH), nn.ReLU()
        self.mid, self.act2 = nn.Linear(WIDTH, WIDTH), nn.ReLU()
        self.out = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        h = self.act1(self.inp(x))
        return self.out(h + self.act2(self.mid(h)))


class Reordered(nn.Module):
    """Registered as a chain a, relu, b, relu, c, but called b, a, c (the shapes allow it)."""

    def __init__(self):
        super().__init__()
        self.a, self.act1 = nn.Linear(FEATURES, FEATURES), nn.ReLU()
        self.b, self.act2 = nn.Linear(FEATURES, FEATURES), nn.ReLU()
        self.c = nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        return self.c(self.act2(self.a(self.act1(self.b(x)))))


class Chain(nn.Module):
    """The chain written out by hand, with named layers: the batched path may run it."""

    def __init__(self):
        super().__init__()
        self.first, self.act = nn.Linear(FEATURES, WIDTH), nn.ReLU()
        self.last = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        return self.last(self.act(self.first(x)))


def test_a_plain_sequential_mlp_and_a_hand_written_chain_run_batched():
    assert mlp_layout(plain()) == [f"{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")]
    assert mlp_layout(Chain()) == ["first.weight", "first.bias", "last.weight", "last.bias"]
    assert _job(plain, "auto").backend == "batched"


@pytest.mark.parametrize("factory", [Residual, Reordered], ids=["residual", "reordered"])
def test_a_forward_that_is_not_the_chain_runs_through_vmap(factory):
    model = factory()
    assert [type(m) for m in model.modules()][1:] == [type(m) for m in plain().modules()][1:]  # leaves pass
    assert mlp_layout(model) is None
    assert _job(factory, "auto").backend == "vmap"
    with pytest.raises(ValueError, match="batched backend"):
        _job(factory, "batched")


def test_the_check_leaves_the_global_random_state_alone():
    models = [plain(), Residual()]
    state = torch.get_rng_state()
    for model in models:
        mlp_layout(model)
    assert torch.equal(torch.get_rng_state(), state)


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, FEATURES, generator=g)
    return x, (x @ torch.randn(FEATURES, CLASSES, generator=g)).argmax(1)


def _job(factory, backend, steps=15):
    x, y = _data()
    return Job(factory, x, y, make_folds(len(y), 2, 1), rules.get("momentum"), {}, steps, 16, seed=2,
               dtype=torch.float64, backend=backend)


def test_a_sweep_of_the_residual_model_equals_separately_trained_copies():
    configs = [dict(lr=0.2, momentum=0.9), dict(lr=0.05, momentum=0.5)]
    job = _job(Residual, "auto")
    members = run_members(Members(job, configs, [0, 1]))
    records = members.results()
    for c, config in enumerate(configs):
        val = []
        for k, (train_idx, val_idx) in enumerate(job.folds):
            torch.manual_seed(job.seed)
            model = Residual().double()
            opt = torch.optim.SGD(model.parameters(), **config)
            for t in range(job.steps):
                idx = batch_at(train_idx, t, 16, job.seed, k)
                opt.zero_grad()
                F.cross_entropy(model(job.x[idx]), job.y[idx]).backward()
                opt.step()
            for p, stacked in zip(model.parameters(), members.params):
                torch.testing.assert_close(stacked[k * len(configs) + c], p.detach(), rtol=1e-10, atol=1e-12)
            with torch.no_grad():
                val.append(float(F.cross_entropy(model(job.x[val_idx]), job.y[val_idx])))
        assert records[c]["val_loss_mean"] == pytest.approx(sum(val) / len(val), rel=1e-10)
