r"""Lion: the sign of an interpolated momentum (Chen et al. 2023, "Symbolic discovery of optimization algorithms").

γ = lr, (β₁, β₂) = betas, λ = weight_decay, g = gradient (after ``maximize``); the equations of
the paper's Program 1 and ``optax.lion``::

    c = β₁m + (1 − β₁)g
    θ ← θ − γ(sign(c) + λθ)           (decoupled weight decay, with the old θ)
    m ← β₂m + (1 − β₂)g               (m starts at 0)

Every component moves by exactly γ (or 0), so γ is typically 3–10× smaller than AdamW's and λ
3–10× larger. ``cautious=True`` masks sign(c) where it disagrees in sign with g (Liang et al.
2024, :func:`inertia.rules.base.cautious`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .adaptive import check_betas, lerp_
from .base import (Hyper, MomentumHyper, Rule, State, add_scaled_, boolean, broadcast_hyper, cautious, decoupled_decay_, non_negative,
                   require, sub_scaled_)


def lion_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One Lion step (the module docstring)."""
    lr = hyper["lr"]
    beta1, beta2 = (broadcast_hyper(b, param) for b in hyper["betas"])
    g = -grad if hyper["maximize"] else grad
    m = state.get("exp_avg")
    if m is None:
        m = state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    direction = add_scaled_(m * beta1, g, 1 - beta1).sign_()
    decoupled_decay_(param, lr, hyper["weight_decay"])
    sub_scaled_(param, cautious(direction, g, hyper), lr)
    lerp_(m, g, 1 - beta2)


def validate_lion(h: Hyper) -> None:
    """Reject bad Lion hyperparameters with a message naming the argument."""
    require("lr", h["lr"], lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_betas(h["betas"], 2)
    non_negative("weight_decay", h["weight_decay"])
    for flag in ("maximize", "cautious"):
        boolean(flag, h[flag])


LION_RULE = Rule(
    name="lion",
    state={"exp_avg": "element"},
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False, cautious=False),
    numeric=("lr", "betas", "weight_decay"),
    update=lion_update,
    validate=validate_lion,
    summary="Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled weight decay",
    momentum=MomentumHyper("betas", 1, "β₂", "decay of Lion's momentum m (β₁ only mixes m with the gradient "
                                             "inside the sign)"),
)
