"""Muon, Lion and AdEMAMix beyond the contract table: Muon's shapes and conventions, AdEMAMix's warm-ups."""
from __future__ import annotations

import math

import pytest
import torch

import inertia
from inertia.schedules import HyperScheduler, ademamix_warmups, half_life_warmup
from test_contract import EquationReference, ademamix_step, make_params, objective, rel_err, run


def _step_of(opt, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    before = param.detach().clone()
    param.grad = grad.clone()
    opt.step()
    return param.detach() - before


def test_muon_on_a_vector_without_a_fallback_is_one_line_naming_it():
    p = torch.zeros(5, requires_grad=True)
    opt = inertia.Muon([p], fallback=False)
    p.grad = torch.ones(5)
    with pytest.raises(ValueError) as error:
        opt.step()
    message = str(error.value)
    assert "\n" not in message and "(5,)" in message and "fallback=False" in message


def test_muon_sends_vectors_to_adamw_and_flattens_conv_weights():
    """A bias takes torch.optim.AdamW's step; a conv weight takes torch.optim.Muon's step on its [out, rest] matrix."""
    gen = torch.Generator().manual_seed(0)
    bias, weight = torch.randn(4, generator=gen), torch.randn(4, 3, 2, 2, generator=gen)
    ours = [bias.clone().requires_grad_(), weight.clone().requires_grad_()]
    opt = inertia.Muon(ours, lr=0.02, fallback_lr_ratio=0.5)
    b_ref = bias.clone().requires_grad_()
    w_ref = weight.clone().view(4, 12).requires_grad_()
    adamw = torch.optim.AdamW([b_ref], lr=0.01, weight_decay=0.01)
    muon = torch.optim.Muon([w_ref], lr=0.02)
    for _ in range(5):
        grads = [torch.randn(4, generator=gen), torch.randn(4, 3, 2, 2, generator=gen)]
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        b_ref.grad, w_ref.grad = grads[0], grads[1].view(4, 12)
        adamw.step()
        muon.step()
    torch.testing.assert_close(ours[0].detach(), b_ref.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours[1].detach().view(4, 12), w_ref.detach(), rtol=0, atol=0)


def test_muon_conventions_agree_at_constant_momentum_and_differ_when_it_changes():
    """NS removes the scale 1/(1 - mu) between the classical and the EMA buffer: the same steps up to the
    bfloat16 rounding of NS's input (a few percent after five iterations); rising momentum parts them."""
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(6, 4, generator=gen, dtype=torch.float64) for _ in range(30)]

    def steps(convention, momenta):
        p = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
        opt = inertia.Muon([p], lr=0.1, weight_decay=0.0, convention=convention)
        out = []
        for g, mu in zip(grads, momenta):
            opt.param_groups[0]["momentum"] = mu
            out.append(_step_of(opt, p, g))
        return out

    constant = [0.9] * 30
    for a, b in zip(steps("ema", constant), steps("torch", constant)):
        assert rel_err(a, b) < 0.1
    rising = [0.5 + 0.45 * t / 29 for t in range(30)]
    assert rel_err(steps("ema", rising)[-1], steps("torch", rising)[-1]) > 0.3


def test_half_life_warmup_is_the_papers_beta3_schedule():
    beta1, beta3, steps = 0.9, 0.9999, 100
    schedule = half_life_warmup(beta3, steps, start=beta1)
    for t in (0, 1, 17, 50, 99, 100, 250):
        s = min(t, steps) / steps
        paper = min(math.exp(math.log(beta1) * math.log(beta3) / ((1 - s) * math.log(beta3) + s * math.log(beta1))),
                    beta3)
        assert schedule(t) == pytest.approx(paper, rel=1e-12)
    per_config = half_life_warmup(torch.tensor([0.999, 0.9999]), steps)(40)
    assert per_config.shape == (2,) and per_config[1] > per_config[0]
    with pytest.raises(ValueError, match="start"):
        half_life_warmup(0.999, 10, start=1.0)


def ademamix_warmed_step(T):
    """AdEMAMix with the paper's warm-ups computed inside the step: alpha(t) = min(t alpha / T, alpha),
    beta3(t) = min(exp(ln b1 ln b3 / ((1 - t/T) ln b3 + (t/T) ln b1)), b3), t counted from 0."""

    def step(p, g, s, h):
        t = s.get("t", 0)
        b1, b2, b3 = h["betas"]
        frac = min(t, T) / T
        b3_t = min(math.exp(math.log(b1) * math.log(b3) / ((1 - frac) * math.log(b3) + frac * math.log(b1))), b3)
        ademamix_step(p, g, s, {**h, "alpha": min(t * h["alpha"] / T, h["alpha"]), "betas": (b1, b2, b3_t)})

    return step


def test_ademamix_warmups_as_schedules_give_the_papers_warmed_up_run():
    T, hyper = 30, dict(lr=0.05, betas=(0.9, 0.999, 0.999), alpha=5.0)
    ours, theirs = make_params(), make_params()
    opt = inertia.AdEMAMix(ours, **hyper)
    scheduler = HyperScheduler(opt, **ademamix_warmups(T, alpha=hyper["alpha"], betas=hyper["betas"]))
    full = inertia.rules.get("ademamix").hyper(**hyper)
    ref = EquationReference(theirs, full, ademamix_warmed_step(T))
    for t in range(60):
        for o, params in ((opt, ours), (ref, theirs)):
            o.zero_grad()
            sum(objective(p, i) for i, p in enumerate(params)).backward()
            o.step()
        scheduler.step()
    for p, q in zip(ours, theirs):
        assert rel_err(p.detach(), q.detach()) <= 1e-9
    plain = make_params()
    run(inertia.AdEMAMix(plain, **hyper), plain, 60, 1.0)
    assert rel_err(plain[0].detach(), ours[0].detach()) > 1e-3, "the warm-ups changed nothing"
