"""Adam, AdamW, NAdam, RMSprop beyond the contract suite: the classes, tuple betas, schedulers.

Equivalence with torch.optim over >= 100 steps with an lr change lives in
tests/test_contract.py; here: per-configuration betas, torch's lr_scheduler
cycling betas, HyperScheduler on betas, float32, and the classes' arguments.
"""
from __future__ import annotations

import pytest
import torch

import inertia
from inertia.optim import make_optimizer
from inertia.schedules import HyperScheduler, one_cycle_momentum
from inertia.stacked import mark

SHAPES = [(6,), (3, 4)]


def make_params(dtype=torch.float64, seed=0, lead=()):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(*lead, *shape, generator=gen, dtype=dtype).requires_grad_() for shape in SHAPES]
    return mark(params, lead[0]) if lead else params  # stacked: member i is p[i]


def loss_of(params):
    return sum((torch.cos(p) + 0.3 * (p - 0.5) ** 2).sum() for p in params)


def train(opt, params, steps, scheduler=None):
    for _ in range(steps):
        opt.zero_grad()
        loss_of(params).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("cls, torch_cls, kw", [
    (inertia.Adam, torch.optim.Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.01)),
    (inertia.AdamW, torch.optim.AdamW, dict(lr=0.05)),
    (inertia.NAdam, torch.optim.NAdam, dict(lr=0.05, momentum_decay=0.01)),
    (inertia.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
])
def test_float32_matches_torch_and_stays_float32(cls, torch_cls, kw):
    ours, theirs = make_params(torch.float32), make_params(torch.float32)
    train(cls(ours, **kw), ours, 50)
    train(torch_cls(theirs, foreach=False, **kw), theirs, 50)
    for p, q in zip(ours, theirs):
        assert p.dtype == torch.float32
        assert rel_err(p.detach(), q.detach()) < 1e-5


def test_positional_lr_and_registered_defaults():
    params = make_params()
    assert inertia.Adam(params, 0.123).param_groups[0]["lr"] == 0.123
    adamw = make_optimizer("adamw", make_params())
    assert adamw.param_groups[0]["weight_decay"] == 1e-2 and adamw.param_groups[0]["decoupled_weight_decay"]
    assert inertia.NAdam(make_params()).param_groups[0]["momentum_decay"] == 4e-3
    assert isinstance(inertia.Adam(make_params()).param_groups[0]["betas"], tuple)


@pytest.mark.parametrize("name, hyper", [
    ("adam", dict(lr=0.05, amsgrad=True)),
    ("nadam", dict(lr=0.05)),
    ("lookahead_adam", dict(lr=0.05, lookahead_k=3)),
])
def test_per_configuration_betas_equal_separate_runs(name, hyper):
    """betas as a tuple of [N] tensors: configuration i runs with (beta1[i], beta2[i])."""
    beta1 = torch.tensor([0.9, 0.8, 0.5], dtype=torch.float64)
    beta2 = torch.tensor([0.999, 0.99, 0.9], dtype=torch.float64)
    stacked = make_params(lead=(3,), seed=1)
    singles = [[p[i].detach().clone().requires_grad_() for p in stacked] for i in range(3)]
    train(make_optimizer(name, stacked, betas=(beta1, beta2), **hyper), stacked, 40)
    for i in range(3):
        train(make_optimizer(name, singles[i], betas=(float(beta1[i]), float(beta2[i])), **hyper), singles[i], 40)
        for p, q in zip(stacked, singles[i]):
            assert rel_err(p[i].detach(), q.detach()) <= 1e-12


def test_rmsprop_per_configuration_momentum_including_zero():
    mu = torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64)
    stacked = make_params(lead=(3,), seed=2)
    singles = [[p[i].detach().clone().requires_grad_() for p in stacked] for i in range(3)]
    train(inertia.RMSprop(stacked, lr=0.01, momentum=mu, centered=True), stacked, 40)
    for i in range(3):
        train(inertia.RMSprop(singles[i], lr=0.01, momentum=float(mu[i]), centered=True), singles[i], 40)
        for p, q in zip(stacked, singles[i]):
            assert rel_err(p[i].detach(), q.detach()) <= 1e-12


def test_torch_one_cycle_lr_cycles_betas_like_torch_adam():
    """torch's OneCycleLR cycles betas[0] (cycle_momentum): group['betas'] must stay a tuple."""
    ours, theirs = make_params(), make_params()
    a = inertia.Adam(ours, lr=0.01)
    b = torch.optim.Adam(theirs, lr=0.01, foreach=False)
    sa = torch.optim.lr_scheduler.OneCycleLR(a, max_lr=0.05, total_steps=120)
    sb = torch.optim.lr_scheduler.OneCycleLR(b, max_lr=0.05, total_steps=120)
    train(a, ours, 110, sa)
    train(b, theirs, 110, sb)
    assert a.param_groups[0]["betas"] == b.param_groups[0]["betas"]
    for p, q in zip(ours, theirs):
        assert rel_err(p.detach(), q.detach()) <= 1e-10


def test_hyperscheduler_drives_beta1_like_on_torch_adam():
    ours, theirs = make_params(), make_params()
    a = inertia.Adam(ours, lr=0.02)
    b = torch.optim.Adam(theirs, lr=0.02, foreach=False)
    ha = HyperScheduler(a, betas=(one_cycle_momentum(100), None))
    hb = HyperScheduler(b, betas=(one_cycle_momentum(100), None))
    train(a, ours, 100, ha)
    train(b, theirs, 100, hb)
    for p, q in zip(ours, theirs):
        assert rel_err(p.detach(), q.detach()) <= 1e-10


def test_betas_must_be_a_pair_named_in_the_message():
    with pytest.raises(ValueError, match=r"betas.*\(0\.9, 0\.99, 0\.999\)"):
        inertia.Adam(make_params(), betas=(0.9, 0.99, 0.999))
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        inertia.NAdam(make_params(), betas=(0.9, torch.tensor([0.99, 1.0])))
