r"""AdEMAMix: Adam with a second, slow momentum (Pagliardini, Ablin & Grangier 2024,
"The AdEMAMix optimizer: better, faster, older").

γ = lr, (β₁, β₂, β₃) = betas, α = alpha, λ = weight_decay, g = gradient (after ``maximize``),
t = step; the paper's Algorithm 1 and ``optax.contrib.ademamix``::

    m₁ ← β₁m₁ + (1 − β₁)g             fast EMA, bias-corrected: m̂₁ = m₁/(1 − β₁ᵗ)
    m₂ ← β₃m₂ + (1 − β₃)g             slow EMA, NOT bias-corrected (as the paper and optax;
                                      pytorch-optimizer divides m₁ + αm₂ by 1 − β₁ᵗ)
    v  ← β₂v + (1 − β₂)g²             v̂ = v/(1 − β₂ᵗ)
    θ ← θ(1 − γλ)                     decoupled weight decay
    θ ← θ − γ(m̂₁ + αm₂)/(√v̂ + ε)

The paper warms α up from 0 and β₃ up from β₁ over T_{α,β₃} steps:
α(t) = min(tα/T, α) and β₃(t) = min(exp(ln β₁·ln β₃/((1 − t/T)·ln β₃ + (t/T)·ln β₁)), β₃).
Here they are schedules of the hyperparameters ``alpha`` and ``betas[2]``, like any other:
:func:`inertia.schedules.ademamix_warmups` builds both from T (``linear`` and
``half_life_warmup``), for ``HyperScheduler`` or a sweep's or race's ``schedules``; without them
α and β₃ are constant (optax's and pytorch-optimizer's default, T = None). ``cautious=True``
masks the update (m̂₁ + αm₂)/(√v̂ + ε) where it disagrees in sign with g (Liang et al. 2024,
:func:`inertia.rules.base.cautious`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .adaptive import FIRST_MOMENT_DECAY, _step_value, addcdiv_, addcmul_, check_betas, lerp_
from .base import (Hyper, Rule, State, add_scaled_, boolean, broadcast_hyper, cautious, decoupled_decay_, non_negative,
                   require, sub_scaled_)


def ademamix_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One AdEMAMix step (the module docstring)."""
    lr, alpha, eps = hyper["lr"], hyper["alpha"], hyper["eps"]
    beta1, beta2, beta3 = (broadcast_hyper(b, param) for b in hyper["betas"])
    g = -grad if hyper["maximize"] else grad
    if "exp_avg" not in state:
        for name in ("exp_avg", "exp_avg_slow", "exp_avg_sq"):
            state[name] = torch.zeros_like(param, memory_format=torch.preserve_format)
    fast, slow, second = state["exp_avg"], state["exp_avg_slow"], state["exp_avg_sq"]
    lerp_(fast, g, 1 - beta1)
    lerp_(slow, g, 1 - beta3)
    second.mul_(beta2)
    addcmul_(second, g, g, 1 - beta2)
    step = _step_value(state, beta1, beta2)
    denom = (second.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
    mixed = add_scaled_(fast / (1 - beta1**step), slow, alpha)
    decoupled_decay_(param, lr, hyper["weight_decay"])
    if hyper["cautious"]:
        sub_scaled_(param, cautious(mixed / denom, g, hyper), lr)
    else:
        addcdiv_(param, mixed, denom, -lr)


def validate_ademamix(h: Hyper) -> None:
    """Reject bad AdEMAMix hyperparameters with a message naming the argument."""
    require("lr", h["lr"], lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_betas(h["betas"], 3)
    non_negative("alpha", h["alpha"])
    non_negative("eps", h["eps"])
    non_negative("weight_decay", h["weight_decay"])
    for flag in ("maximize", "cautious"):
        boolean(flag, h[flag])


ADEMAMIX_RULE = Rule(
    name="ademamix",
    state={"exp_avg": "element", "exp_avg_slow": "element", "exp_avg_sq": "element"},
    defaults=dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, eps=1e-8, weight_decay=0.0, maximize=False,
                  cautious=False),
    numeric=("lr", "betas", "alpha", "eps", "weight_decay"),
    update=ademamix_update,
    validate=validate_ademamix,
    summary="AdEMAMix (Pagliardini et al. 2024): Adam plus a slow EMA weighted by alpha",
    momentum=FIRST_MOMENT_DECAY,
)
