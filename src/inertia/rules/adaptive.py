r"""Adaptive rules that carry momentum: Adam, AdamW, NAdam, RMSprop.

Each follows the algorithm box of its ``torch.optim`` namesake exactly (same
state names, same order of operations), so the numbers agree with torch to
rounding. γ = lr, g = gradient (after ``maximize``), λ = weight_decay, t = step.

Adam (Kingma & Ba, ICLR 2015; amsgrad: Reddi et al., ICLR 2018; torch.optim.Adam)::

    g ← g + λθ                      (coupled L2; with decoupled_weight_decay: θ ← θ(1 − γλ))
    m ← β₁m + (1 − β₁)g
    v ← β₂v + (1 − β₂)g²
    v̂ ← max(v̂, v) if amsgrad else v
    θ ← θ − γ/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)

AdamW (Loshchilov & Hutter, ICLR 2019) is Adam with decoupled_weight_decay=True
and λ = 0.01 by default.

NAdam (Dozat, ICLR 2016 workshop; torch.optim.NAdam, ψ = momentum_decay)::

    μₜ = β₁(1 − ½·0.96^(tψ)),  μₜ₊₁ = β₁(1 − ½·0.96^((t+1)ψ)),  Πₜ = Π μᵢ (i ≤ t)
    m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  d = √(v/(1 − β₂ᵗ)) + ε
    θ ← θ − γ(1 − μₜ)/(1 − Πₜ) · g/d − γμₜ₊₁/(1 − Πₜμₜ₊₁) · m/d

RMSprop (Hinton, lecture 6e; centered: Graves 2013; torch.optim.RMSprop, α = alpha)::

    g ← g + λθ
    s ← αs + (1 − α)g²
    ḡ ← αḡ + (1 − α)g, d = √(s − ḡ²) + ε   if centered, else d = √s + ε
    b ← μb + g/d, θ ← θ − γb               if momentum μ > 0, else θ ← θ − γ g/d

``cautious=True`` masks the update (the term γ·u subtracted from θ: Adam's
m̂/(√v̂ + ε), NAdam's two terms together, RMSprop's g/d or b) where it disagrees in sign
with g (Liang et al. 2024, :func:`inertia.rules.base.cautious`).

``betas`` is a pair ``(β₁, β₂)``; each entry may be a Python number or a tensor
(0-dim, or ``[N]`` per configuration), so schedules and sweeps can drive either.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import (
    Hyper,
    MomentumHyper,
    Rule,
    State,
    boolean,
    broadcast_hyper,
    cautious,
    in_unit_interval,
    is_tensor,
    is_zero,
    non_negative,
    prepare_gradient,
    require,
    sub_scaled_,
)


# ---------------------------------------------------------------- helpers shared with variants.py

def addcmul_(target: Tensor, a: Tensor, b: Tensor, scale: Any) -> Tensor:
    """``target += scale * a * b`` for a number or a broadcastable tensor ``scale``."""
    if is_tensor(scale):
        return target.add_(scale * a * b)
    return target.addcmul_(a, b, value=scale)


def addcdiv_(target: Tensor, a: Tensor, b: Tensor, scale: Any) -> Tensor:
    """``target += scale * a / b`` for a number or a broadcastable tensor ``scale``."""
    if is_tensor(scale):
        return target.add_(scale * a / b)
    return target.addcdiv_(a, b, value=scale)


def lerp_(target: Tensor, end: Tensor, weight: Any) -> Tensor:
    """``target += weight * (end - target)`` (``Tensor.lerp_``; tensor weights broadcast)."""
    if is_tensor(weight) and weight.shape != target.shape:
        weight = weight.expand_as(target)
    return target.lerp_(end, weight)


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim keeps its scalar state in (float64 only under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _step_value(state: State, *values: Any) -> Tensor:
    """The step count as a 0-dim tensor, never a Python number (no host read, nothing stale under
    ``torch.compile``): in the dtype of the first tensor among ``values``, else float64 (the
    precision torch's Python-float bias corrections have)."""
    tensors = [v for v in values if is_tensor(v)]
    return state["step"].to(tensors[0].dtype if tensors else torch.float64)


# ---------------------------------------------------------------- Adam / AdamW

def adam_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One Adam step (AdamW with ``decoupled_weight_decay``); see the module docstring."""
    lr, eps = hyper["lr"], hyper["eps"]
    beta1, beta2 = broadcast_hyper(hyper["betas"], param)
    g = prepare_gradient(param, grad, hyper)
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if hyper["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    lerp_(exp_avg, g, 1 - beta1)
    exp_avg_sq.mul_(beta2)
    addcmul_(exp_avg_sq, g, g, 1 - beta2)
    step = _step_value(state, beta1, beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    if hyper["amsgrad"]:
        second = state["max_exp_avg_sq"]
        torch.maximum(second, exp_avg_sq, out=second)
    else:
        second = exp_avg_sq
    denom = (second.sqrt() / bias_correction2_sqrt).add_(eps)
    if hyper["cautious"]:
        sub_scaled_(param, cautious(exp_avg / denom, g, hyper), step_size)
    else:
        addcdiv_(param, exp_avg, denom, -step_size)


def check_betas(betas: Any, count: int | None = None) -> None:
    """Each beta in [0, 1); the message names ``betas`` and shows the whole tuple."""
    if not isinstance(betas, (tuple, list)) or len(betas) == 0 or (count is not None and len(betas) != count):
        what = f"a tuple of {count}" if count else "a non-empty tuple"
        raise ValueError(f"betas must be {what} numbers in [0, 1), got {betas!r}")
    for i, beta in enumerate(betas):
        try:
            in_unit_interval(f"betas[{i}]", beta)
        except ValueError as error:
            raise ValueError(f"{error} (betas={betas!r})") from None


def _validate_adam_like(h: Hyper) -> None:
    require("lr", h["lr"], lambda v: 0 <= v < math.inf, "a finite number >= 0")
    non_negative("eps", h["eps"])
    check_betas(h["betas"], 2)
    non_negative("weight_decay", h["weight_decay"])
    for flag in ("decoupled_weight_decay", "maximize", "cautious"):
        boolean(flag, h[flag])


def validate_adam(h: Hyper) -> None:
    """Reject bad Adam/AdamW hyperparameters with a message naming the argument."""
    _validate_adam_like(h)
    boolean("amsgrad", h["amsgrad"])


ADAM_DEFAULTS = dict(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    amsgrad=False,
    decoupled_weight_decay=False,
    maximize=False,
    cautious=False,
)

FIRST_MOMENT_DECAY = MomentumHyper("betas", 0, "β₁", "decay of the first-moment average: the momentum")
"""The momentum of Adam's family: β₁, the decay of the average m of the gradients."""

ADAM_RULE = Rule(
    name="adam",
    state={"exp_avg": "element", "exp_avg_sq": "element", "max_exp_avg_sq": "element"},
    defaults=ADAM_DEFAULTS,
    numeric=("lr", "betas", "eps", "weight_decay"),
    update=adam_update,
    validate=validate_adam,
    summary="Adam (amsgrad optional; decoupled_weight_decay=True is AdamW), as torch.optim.Adam",
    momentum=FIRST_MOMENT_DECAY,
)


# ---------------------------------------------------------------- NAdam

def nadam_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One NAdam step exactly as torch.optim.NAdam (see the module docstring)."""
    lr, eps, psi = hyper["lr"], hyper["eps"], hyper["momentum_decay"]
    beta1, beta2 = broadcast_hyper(hyper["betas"], param)
    g = prepare_gradient(param, grad, hyper)
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        # torch keeps the product of momenta in float32 (float64 under a float64 default dtype)
        # one product per member when beta1 or the momentum decay is per member (else 0-dim)
        shape = torch.broadcast_shapes(*(v.shape for v in (beta1, psi) if is_tensor(v)))
        state["mu_product"] = torch.ones(shape, dtype=scalar_dtype(), device=param.device)
    exp_avg, exp_avg_sq, mu_product = state["exp_avg"], state["exp_avg_sq"], state["mu_product"]
    step = _step_value(state, psi)
    bias_correction2 = 1 - beta2**step
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * psi)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * psi)))
    mu_product.mul_(mu.to(mu_product.dtype).reshape(mu_product.shape))  # [1] inputs of a compiled list path
    lerp_(exp_avg, g, 1 - beta1)
    exp_avg_sq.mul_(beta2)
    addcmul_(exp_avg_sq, g, g, 1 - beta2)
    denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
    product = mu_product.to(mu.dtype)
    product_next = product * mu_next
    grad_scale, avg_scale = lr * (1.0 - mu) / (1.0 - product), lr * mu_next / (1.0 - product_next)
    if hyper["cautious"]:
        param.sub_(cautious((g * grad_scale + exp_avg * avg_scale) / denom, g, hyper))
        return
    addcdiv_(param, g, denom, -grad_scale)
    addcdiv_(param, exp_avg, denom, -avg_scale)


def validate_nadam(h: Hyper) -> None:
    """Reject bad NAdam hyperparameters with a message naming the argument."""
    _validate_adam_like(h)
    non_negative("momentum_decay", h["momentum_decay"])


NADAM_DEFAULTS = dict(
    lr=2e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    momentum_decay=4e-3,
    decoupled_weight_decay=False,
    maximize=False,
    cautious=False,
)

NADAM_RULE = Rule(
    name="nadam",
    state={"exp_avg": "element", "exp_avg_sq": "element", "mu_product": "member"},
    defaults=NADAM_DEFAULTS,
    numeric=("lr", "betas", "eps", "weight_decay", "momentum_decay"),
    update=nadam_update,
    validate=validate_nadam,
    summary="NAdam (Nesterov Adam with momentum decay psi=0.004), as torch.optim.NAdam",
    momentum=FIRST_MOMENT_DECAY,
)


# ---------------------------------------------------------------- RMSprop

def rmsprop_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One RMSprop step exactly as torch.optim.RMSprop (see the module docstring)."""
    lr, alpha, eps, mu = hyper["lr"], hyper["alpha"], hyper["eps"], hyper["momentum"]
    g = prepare_gradient(param, grad, hyper)
    if "square_avg" not in state:
        state["square_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if hyper["centered"]:
            state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    square_avg = state["square_avg"]
    square_avg.mul_(alpha)
    addcmul_(square_avg, g, g, 1 - alpha)
    if hyper["centered"]:
        grad_avg = state["grad_avg"]
        lerp_(grad_avg, g, 1 - alpha)
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
    else:
        avg = square_avg.sqrt()
    avg = avg.add_(eps)
    if is_zero(mu) and hyper["cautious"]:
        sub_scaled_(param, cautious(g / avg, g, hyper), lr)
    elif is_zero(mu):
        addcdiv_(param, g, avg, -lr)
    else:
        buf = state.get("momentum_buffer")
        if buf is None:  # created on first use, so a schedule may raise momentum from 0
            buf = state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        buf.mul_(mu).addcdiv_(g, avg)
        sub_scaled_(param, cautious(buf, g, hyper), lr)


def validate_rmsprop(h: Hyper) -> None:
    """Reject bad RMSprop hyperparameters with a message naming the argument."""
    require("lr", h["lr"], lambda v: 0 <= v < math.inf, "a finite number >= 0")
    non_negative("eps", h["eps"])
    in_unit_interval("alpha", h["alpha"], closed_right=True)
    in_unit_interval("momentum", h["momentum"])
    non_negative("weight_decay", h["weight_decay"])
    for flag in ("centered", "maximize", "cautious"):
        boolean(flag, h[flag])


RMSPROP_DEFAULTS = dict(
    lr=1e-2,
    alpha=0.99,
    eps=1e-8,
    weight_decay=0.0,
    momentum=0.0,
    centered=False,
    maximize=False,
    cautious=False,
)

RMSPROP_RULE = Rule(
    name="rmsprop",
    state={"square_avg": "element", "grad_avg": "element", "momentum_buffer": "element"},
    defaults=RMSPROP_DEFAULTS,
    numeric=("lr", "alpha", "eps", "weight_decay", "momentum"),
    update=rmsprop_update,
    validate=validate_rmsprop,
    summary="RMSprop (momentum and centered variants), as torch.optim.RMSprop",
)
