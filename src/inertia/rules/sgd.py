r"""Stochastic gradient descent with heavy-ball or Nesterov momentum, in three conventions.

γ = lr, μ = momentum, τ = dampening, g = gradient (after ``maximize`` and coupled
L2 decay g ← g + λθ; with ``decoupled_weight_decay`` θ ← θ(1 − γλ) instead).

``convention="torch"`` (PyTorch ``torch.optim.SGD``, TF1 ``MomentumOptimizer``, ``optax.sgd``)::

    b ← μ b + (1 − τ) g          (first step: b ← g)
    θ ← θ − γ b                  Nesterov: θ ← θ − γ (g + μ b)

``convention="sutskever"`` (Sutskever et al., ICML 2013; Keras 3 ``SGD``; the textbook form)::

    v ← μ v − γ g                (v starts at 0)
    θ ← θ + v                    Nesterov (Keras 3): θ ← θ + μ v − γ g

``convention="ema"`` (momentum as an exponential moving average, heavyball / Muon style)::

    b ← μ b + (1 − μ) g          (b starts at 0)
    θ ← θ − γ b                  Nesterov: θ ← θ − γ (μ b + (1 − μ) g)

With constant γ and τ = 0, ``torch`` and ``sutskever`` give identical iterates;
after γ changes they differ: ``torch`` rescales the whole accumulated buffer by
the new γ, ``sutskever`` keeps past steps at the γ they were taken with. ``ema``
with γ/(1 − μ) matches ``torch`` only while μ is constant. A persistent gradient
moves θ by γ/(1 − μ) per step in ``torch``/``sutskever`` (the effective
learning rate) and by γ in ``ema``.

With μ = 0 every convention is plain SGD, θ ← θ − γ g (dampening is ignored, as in torch).

``cautious=True`` masks the step where it disagrees in sign with g (Liang et al. 2024,
:func:`inertia.rules.base.cautious`); the buffers are kept unmasked.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import (
    FIXED_HYPER,
    Hyper,
    Rule,
    State,
    add_scaled_,
    boolean,
    cautious,
    in_unit_interval,
    is_tensor,
    is_zero,
    non_negative,
    one_of,
    prepare_gradient,
    require,
    sub_scaled_,
)

CONVENTIONS = ("torch", "sutskever", "ema")


def sgd_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One SGD step with optional momentum in the chosen convention (see module docstring)."""
    lr, mu = hyper["lr"], hyper["momentum"]
    g = prepare_gradient(param, grad, hyper)
    if is_zero(mu):
        sub_scaled_(param, cautious(g, g, hyper), lr)
        return
    convention = hyper["convention"]
    nesterov = hyper["nesterov"]
    if convention == "torch":
        buf = _torch_buffer(g, state, mu, hyper["dampening"], "momentum" in hyper.get(FIXED_HYPER, ()))
        direction = g + mu * buf if nesterov else buf
        sub_scaled_(param, cautious(direction, g, hyper), lr)
    elif convention == "sutskever":
        v = state.get("velocity")
        if v is None:
            v = state["velocity"] = torch.zeros_like(param)
        v.mul_(mu)
        sub_scaled_(v, g, lr)
        if hyper["cautious"]:  # the step μv − γg (Nesterov) or v, masked as the update −step
            step = add_scaled_(v * mu, g, -lr) if nesterov else v
            param.sub_(cautious(-step, g, hyper))
        elif nesterov:
            add_scaled_(param, v, mu)
            sub_scaled_(param, g, lr)
        else:
            param.add_(v)
    else:  # ema
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.zeros_like(param)
        buf.mul_(mu)
        add_scaled_(buf, g, 1 - mu)
        direction = mu * buf + (1 - mu) * g if nesterov else buf
        sub_scaled_(param, cautious(direction, g, hyper), lr)


def _torch_buffer(g: Tensor, state: State, mu: Any, damp: Any, mu_fixed: bool) -> Tensor:
    """The torch-convention buffer after this step: b ← g on the first step with μ ≠ 0, then
    b ← μ b + (1 − τ) g (``torch.optim.SGD``; μ is a non-zero number here, or a tensor).

    A tensor μ (one per configuration, possibly 0 for some) that may change between steps keeps
    this per configuration with the per-member flag ``momentum_active`` a = [previous μ ≠ 0]:
    b ← (μ a) b + (1 − τ [μ a ≠ 0]) g, then a ← [μ ≠ 0]. A configuration at μ = 0 holds b = g,
    which is its step, and starts afresh (b = g) at its first μ ≠ 0, as torch does. One difference
    remains: where μ returns to 0 and then leaves it again, torch continues the buffer it left and
    this starts afresh. Where the engine knows μ fixed for the run (``mu_fixed``), μ a = μ from the
    second step on, so the flag is not kept."""
    buf = state.get("momentum_buffer")
    if not is_tensor(mu) or (mu_fixed and "momentum_active" not in state):
        if buf is None:
            return state.setdefault("momentum_buffer", g.detach().clone())
        decay = mu
    else:
        active = state.get("momentum_active")
        if active is None:  # a buffer without the flag (an optimizer state from torch) is active
            active = state["momentum_active"] = torch.full_like(mu, float(buf is not None))
        if buf is None:
            buf = state["momentum_buffer"] = torch.zeros_like(g)
        decay = mu * active
        torch.ne(mu, 0, out=active)
    buf.mul_(decay)
    if is_zero(damp):
        return buf.add_(g)
    keep = 1 - damp * (decay != 0).to(decay.dtype) if is_tensor(decay) else 1 - damp
    return add_scaled_(buf, g, keep)


def effective_lr(lr: Any, momentum: Any, convention: str = "torch") -> Any:
    """How far a persistent gradient moves θ per step, in the steady state.

    γ/(1 − μ) in the ``torch`` and ``sutskever`` conventions (the geometric sum
    γ(1 + μ + μ² + …)); γ in ``ema``, whose buffer averages instead of summing.
    """
    if convention == "ema":
        return lr
    return lr / (1 - momentum)


def validate_sgd(h: Hyper) -> None:
    """Reject bad SGD hyperparameters with a message naming the argument and value."""
    require("lr", h["lr"], lambda v: 0 <= v < math.inf, "a finite number >= 0")
    in_unit_interval("momentum", h["momentum"])
    in_unit_interval("dampening", h["dampening"], closed_right=True)
    non_negative("weight_decay", h["weight_decay"])
    one_of("convention", h["convention"], CONVENTIONS)
    for flag in ("nesterov", "decoupled_weight_decay", "maximize", "cautious"):
        boolean(flag, h[flag])
    if not is_zero(h["dampening"]) and h["convention"] != "torch":
        raise ValueError(
            f"dampening is part of the 'torch' convention only; got dampening={h['dampening']!r} "
            f"with convention={h['convention']!r}"
        )
    if h["nesterov"]:
        if is_zero(h["momentum"]) or (is_tensor(h["momentum"]) and bool((h["momentum"] == 0).any())):
            raise ValueError(f"nesterov=True requires momentum > 0, got momentum={h['momentum']!r}")
        if not is_zero(h["dampening"]):
            raise ValueError(f"nesterov=True requires dampening = 0, got dampening={h['dampening']!r}")


SGD_DEFAULTS = dict(
    lr=0.01,
    momentum=0.0,
    dampening=0.0,
    nesterov=False,
    weight_decay=0.0,
    decoupled_weight_decay=False,
    convention="torch",
    maximize=False,
    cautious=False,
)

SGD_RULE = Rule(
    name="sgd",
    state={"momentum_buffer": "element", "momentum_active": "member", "velocity": "element"},
    defaults=SGD_DEFAULTS,
    numeric=("lr", "momentum", "dampening", "weight_decay"),
    update=sgd_update,
    validate=validate_sgd,
    summary="SGD with optional heavy-ball or Nesterov momentum (torch / sutskever / ema conventions)",
)
