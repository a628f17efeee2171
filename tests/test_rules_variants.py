"""QHM, AggMo, Schedule-Free SGD, Lookahead and Demon: the special cases that tie them to known rules.

Reference equivalence with the papers' equations (>= 100 steps, lr change) is in
tests/test_contract.py; here each variant is checked against the rule it must
reduce to, and the Schedule-Free train/eval switch and the Lookahead wrapper.
"""
from __future__ import annotations

import io
import math

import pytest
import torch

import inertia
from inertia.schedules import HyperScheduler, demon
from inertia.stacked import mark

SHAPES = [(5,), (2, 3)]
STEPS = 100


def make_params(seed=0, lead=()):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(*lead, *shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in SHAPES]
    return mark(params, lead[0]) if lead else params  # stacked: member i is p[i]


def loss_of(params):
    return sum((torch.cos(2 * p) + 0.5 * (p - 0.3) ** 2).sum() for p in params)


def train(opt, params, steps=STEPS, lr_change_at=50, scheduler=None):
    for t in range(steps):
        if t == lr_change_at:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.3
        opt.zero_grad()
        loss_of(params).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return params


def same(a, b, tol=1e-12):
    return all(torch.allclose(p.detach(), q.detach(), rtol=tol, atol=tol * 1e-3) for p, q in zip(a, b))


def moved(params, seed=0):
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(params, make_params(seed)))


# ---------------------------------------------------------------- QHM

def test_qhm_nu_one_is_ema_momentum():
    a, b = make_params(), make_params()
    train(inertia.QHM(a, lr=0.1, momentum=0.9, nu=1.0), a)
    train(inertia.SGD(b, lr=0.1, momentum=0.9, convention="ema"), b)
    assert moved(a) > 0.1 and same(a, b)


def test_qhm_nu_zero_is_plain_sgd():
    a, b = make_params(), make_params()
    train(inertia.QHM(a, lr=0.1, momentum=0.9, nu=0.0), a)
    train(torch.optim.SGD(b, lr=0.1), b)
    assert moved(a) > 0.1 and same(a, b)


def test_qhm_in_between_differs_from_both():
    a, b = make_params(), make_params()
    train(inertia.QHM(a, lr=0.1, momentum=0.9, nu=0.7), a)
    train(torch.optim.SGD(b, lr=0.1), b)
    assert not same(a, b, 1e-6)


# ---------------------------------------------------------------- AggMo

@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_aggmo_with_one_beta_is_torch_heavy_ball_even_across_an_lr_change(beta):
    """v ← βv − g, θ ← θ + γv is torch's b ← βb + g, θ ← θ − γb with v = −b (first step: v = −g = −b).

    Neither velocity holds γ, so a learning-rate change rescales the whole buffer in both:
    AggMo with one β is the ``torch`` convention (not ``sutskever``), at any γ schedule.
    """
    a, b = make_params(), make_params()
    train(inertia.AggMo(a, lr=0.05, betas=(beta,)), a)
    train(torch.optim.SGD(b, lr=0.05, momentum=beta), b)
    assert moved(a) > 0.1 and same(a, b)


def test_aggmo_with_repeated_beta_is_heavy_ball_and_beta_zero_is_sgd():
    a, b = make_params(), make_params()
    train(inertia.AggMo(a, lr=0.05, betas=(0.9, 0.9, 0.9)), a)
    train(torch.optim.SGD(b, lr=0.05, momentum=0.9), b)
    assert same(a, b)
    c, d = make_params(), make_params()
    train(inertia.AggMo(c, lr=0.05, betas=(0.0,)), c)
    train(torch.optim.SGD(d, lr=0.05), d)
    assert same(c, d)


def test_aggmo_per_configuration_betas():
    betas = (torch.tensor([0.0, 0.5]), torch.tensor([0.9, 0.99]))
    stacked = make_params(lead=(2,), seed=1)
    singles = [[p[i].detach().clone().requires_grad_() for p in stacked] for i in range(2)]
    train(inertia.AggMo(stacked, lr=0.02, betas=betas), stacked)
    for i in range(2):
        train(inertia.AggMo(singles[i], lr=0.02, betas=(float(betas[0][i]), float(betas[1][i]))), singles[i])
        assert same([p[i] for p in stacked], singles[i])


# ---------------------------------------------------------------- Schedule-Free SGD

def test_schedulefree_eval_gives_the_average_of_z_and_train_restores_y():
    """Constant γ, no warm-up: c_t = 1/t, so x_t is the plain average of z_1..z_t (Defazio et al. 2024)."""
    params = make_params()
    opt = inertia.ScheduleFreeSGD(params, lr=0.1, momentum=0.9)
    zs = []
    for _ in range(30):
        opt.zero_grad()
        loss_of(params).backward()
        opt.step()
        zs.append([opt.state[p]["z"].clone() for p in params])
    y = [p.detach().clone() for p in params]
    opt.eval()
    for i, p in enumerate(params):
        x = torch.stack([z[i] for z in zs]).mean(0)
        assert torch.allclose(p.detach(), x, rtol=1e-10, atol=1e-12)
        assert torch.allclose(y[i], 0.1 * opt.state[p]["z"] + 0.9 * x, rtol=1e-10)
    with pytest.raises(RuntimeError, match="train"):
        opt.step()
    opt.eval()  # idempotent
    opt.train()
    assert all(torch.allclose(p.detach(), q, rtol=1e-12, atol=1e-14) for p, q in zip(params, y))
    opt.step()


def test_schedulefree_by_name_has_the_switch_and_momentum_per_configuration():
    stacked = make_params(lead=(2,), seed=3)
    opt = inertia.make_optimizer("schedulefree", stacked, lr=0.1, momentum=torch.tensor([0.9, 0.5]))
    assert isinstance(opt, inertia.ScheduleFreeSGD)
    train(opt, stacked, steps=20)
    single = [p[1].detach().clone().requires_grad_() for p in make_params(lead=(2,), seed=3)]
    one = inertia.ScheduleFreeSGD(single, lr=0.1, momentum=0.5)
    train(one, single, steps=20)
    opt.eval()
    one.eval()
    assert same([p[1] for p in stacked], single)


# ---------------------------------------------------------------- Lookahead

def lookahead_by_hand(params, inner, k, alpha, steps):
    slow = [p.detach().clone() for p in params]
    for t in range(1, steps + 1):
        inner.zero_grad()
        loss_of(params).backward()
        inner.step()
        if t % k == 0:
            with torch.no_grad():
                for s, p in zip(slow, params):
                    s += alpha * (p - s)
                    p.copy_(s)
    return params


@pytest.mark.parametrize("inner_cls, kw", [(torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
                                           (torch.optim.Adam, dict(lr=0.05)),
                                           (inertia.Adam, dict(lr=0.05))])
def test_lookahead_wraps_any_optimizer(inner_cls, kw):
    a, b = make_params(), make_params()
    train(inertia.Lookahead(inner_cls(a, **kw), k=5, alpha=0.5), a, lr_change_at=-1)
    lookahead_by_hand(b, inner_cls(b, **kw), 5, 0.5, STEPS)
    assert moved(a) > 0.1 and same(a, b)


def test_lookahead_k1_alpha1_is_the_inner_optimizer():
    a, b = make_params(), make_params()
    train(inertia.Lookahead(torch.optim.SGD(a, lr=0.05, momentum=0.9), k=1, alpha=1.0), a)
    train(torch.optim.SGD(b, lr=0.05, momentum=0.9), b)
    assert same(a, b)


def test_lookahead_rule_combinator_equals_the_wrapper():
    a, b = make_params(), make_params()
    train(inertia.make_optimizer("lookahead", a, lr=0.05, lookahead_k=4, lookahead_alpha=0.6), a)
    train(inertia.Lookahead(inertia.Momentum(b, lr=0.05), k=4, alpha=0.6), b)
    assert same(a, b)


def test_lookahead_rule_with_per_configuration_alpha():
    alpha = torch.tensor([0.2, 0.8], dtype=torch.float64)
    stacked = make_params(lead=(2,), seed=4)
    singles = [[p[i].detach().clone().requires_grad_() for p in stacked] for i in range(2)]
    train(inertia.make_optimizer("lookahead", stacked, lr=0.05, lookahead_k=3, lookahead_alpha=alpha), stacked)
    for i in range(2):
        train(inertia.make_optimizer("lookahead", singles[i], lr=0.05, lookahead_k=3, lookahead_alpha=float(alpha[i])),
              singles[i])
        assert same([p[i] for p in stacked], singles[i])


def test_lookahead_state_dict_round_trip_and_lr_scheduler():
    straight = make_params()
    opt = inertia.Lookahead(torch.optim.SGD(straight, lr=0.05, momentum=0.9), k=3)
    train(opt, straight, steps=40, scheduler=torch.optim.lr_scheduler.StepLR(opt, 10, 0.5))
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**4)

    first = make_params()
    opt1 = inertia.Lookahead(torch.optim.SGD(first, lr=0.05, momentum=0.9), k=3)
    sched1 = torch.optim.lr_scheduler.StepLR(opt1, 10, 0.5)
    train(opt1, first, steps=20, scheduler=sched1)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "opt": opt1.state_dict(), "sched": sched1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    opt2 = inertia.Lookahead(torch.optim.SGD(resumed, lr=0.05, momentum=0.9), k=3)
    opt2.load_state_dict(saved["opt"])
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 10, 0.5)
    sched2.load_state_dict(saved["sched"])
    train(opt2, resumed, steps=20, scheduler=sched2)
    assert all(torch.equal(p, q) for p, q in zip(resumed, straight))


def test_lookahead_arguments_are_validated():
    with pytest.raises(ValueError, match="k"):
        inertia.Lookahead(torch.optim.SGD(make_params(), lr=0.1), k=0)
    with pytest.raises(ValueError, match="alpha"):
        inertia.Lookahead(torch.optim.SGD(make_params(), lr=0.1), alpha=1.5)


# ---------------------------------------------------------------- Demon (a momentum schedule)

def test_demon_with_an_infinite_horizon_is_constant_momentum():
    a, b = make_params(), make_params()
    opt = inertia.Momentum(a, lr=0.05, momentum=0.9)
    train(opt, a, scheduler=HyperScheduler(opt, momentum=demon(0.9, math.inf)))
    train(inertia.Momentum(b, lr=0.05, momentum=0.9), b)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("convention", ["torch", "sutskever"])
def test_demon_driving_momentum_matches_the_paper(convention):
    """Chen et al.: μ_t = μ₀(1 − t/T) / ((1 − μ₀) + μ₀(1 − t/T)); Demon SGDM, written plainly."""
    mu0, horizon, lr = 0.9, 80, 0.05
    a = make_params()
    opt = inertia.Momentum(a, lr=lr, momentum=mu0, convention=convention)
    train(opt, a, lr_change_at=-1, scheduler=HyperScheduler(opt, momentum=demon(mu0, horizon)))

    b = make_params()
    bufs = [torch.zeros_like(p) for p in b]
    for t in range(STEPS):
        frac = max(0.0, 1 - t / horizon)
        mu = mu0 * frac / ((1 - mu0) + mu0 * frac)
        grads = torch.autograd.grad(loss_of(b), b)
        with torch.no_grad():
            for p, g, v in zip(b, grads, bufs):
                if convention == "sutskever":  # v ← μv − γg; θ ← θ + v
                    v.mul_(mu).sub_(lr * g)
                    p += v
                else:  # b ← μb + g (b₁ = g); θ ← θ − γb
                    v.copy_(g if t == 0 else mu * v + g)
                    p -= lr * v
    assert same(a, b, 1e-10)
    assert opt.param_groups[0]["momentum"] == 0.0  # past T the momentum is 0
