r"""Momentum variants without a torch.optim counterpart: QHM, AggMo, Schedule-Free SGD, Lookahead.

γ = lr, g = gradient (after ``maximize`` and coupled L2 decay g ← g + λθ).

QHM (Ma & Yarats, ICLR 2019, "Quasi-hyperbolic momentum and Adam for deep learning"),
β = momentum, ν = nu::

    b ← βb + (1 − β)g             (b starts at 0)
    θ ← θ − γ[(1 − ν)g + νb]

ν = 1 is ``ema`` momentum (``inertia.SGD(convention="ema")``), ν = 0 is plain SGD.
The paper recommends ν = 0.7, β = 0.999.

AggMo (Lucas, Sun, Zemel & Grosse, ICLR 2019, "Aggregated momentum"), K velocities
with damping vector β = betas::

    vᵢ ← βᵢvᵢ − g                 (each vᵢ starts at 0)
    θ ← θ + (γ/K) Σᵢ vᵢ

With one β this is heavy ball in the ``sutskever`` convention scaled by γ
(θ ← θ + γv), i.e. torch heavy ball at constant γ.

Schedule-Free SGD (Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky 2024,
"The road less scheduled"), β = momentum, the parameter holds y during training::

    y = (1 − β)z + βx             (the gradient g is taken at y)
    z ← z − γₜg
    x ← (1 − cₜ)x + cₜz,  cₜ = wₜ / Σᵢ≤ₜ wᵢ,  wₜ = tʳ · (maxᵢ≤ₜ γᵢ)^weight_lr_power

With r = 0 and a constant γ, cₜ = 1/t (the paper's 1/(t+1) counting from 0).
During a warm-up of ``warmup_steps`` steps γₜ = γ·t/warmup_steps and the average
is weighted by γₜ² (weight_lr_power = 2), as in the authors' implementation
(``schedulefree.SGDScheduleFree``), whose in-place form this follows:
y ← (1 − cₜ)y + cₜz + γₜ(β(1 − cₜ) − 1)g; z ← z − γₜg. Evaluate at x (the
optimizer's ``eval()``), see :class:`inertia.ScheduleFreeSGD`.

``cautious=True`` (QHM, AggMo; Lookahead through its inner rule) masks the update
(1 − ν)g + νb, or −Σᵢvᵢ, where it disagrees in sign with g (Liang et al. 2024,
:func:`inertia.rules.base.cautious`). Schedule-Free SGD has no such switch: its step moves y
toward the averages x and z, and masking it would break y = (1 − β)z + βx.

Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019), as a rule combinator
:func:`lookahead`: the inner rule updates the fast weights θ; every k steps::

    φ ← φ + α(θ − φ),  θ ← φ      (φ, the slow weights, start at θ₀)
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .adaptive import check_betas, lerp_
from .base import (
    Hyper,
    MomentumHyper,
    Rule,
    State,
    add_scaled_,
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


def _lr_ok(h: Hyper) -> None:
    require("lr", h["lr"], lambda v: 0 <= v < math.inf, "a finite number >= 0")


# ---------------------------------------------------------------- QHM

def qhm_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One QHM step (Ma & Yarats 2019): b ← βb + (1 − β)g; θ ← θ − γ[(1 − ν)g + νb]."""
    lr, beta, nu = hyper["lr"], hyper["momentum"], hyper["nu"]
    g = prepare_gradient(param, grad, hyper)
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = torch.zeros_like(param)
    buf.mul_(beta)
    add_scaled_(buf, g, 1 - beta)
    if hyper["cautious"]:
        sub_scaled_(param, cautious(add_scaled_(g * (1 - nu), buf, nu), g, hyper), lr)
        return
    if not is_zero(1 - nu):
        add_scaled_(param, g, -lr * (1 - nu))
    if not is_zero(nu):
        add_scaled_(param, buf, -lr * nu)


def validate_qhm(h: Hyper) -> None:
    """Reject bad QHM hyperparameters with a message naming the argument."""
    _lr_ok(h)
    in_unit_interval("momentum", h["momentum"])
    in_unit_interval("nu", h["nu"], closed_right=True)
    non_negative("weight_decay", h["weight_decay"])
    for flag in ("decoupled_weight_decay", "maximize", "cautious"):
        boolean(flag, h[flag])


QHM_RULE = Rule(
    name="qhm",
    state={"momentum_buffer": "element"},
    defaults=dict(lr=0.01, momentum=0.999, nu=0.7, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
                  cautious=False),
    numeric=("lr", "momentum", "nu", "weight_decay"),
    update=qhm_update,
    validate=validate_qhm,
    summary="quasi-hyperbolic momentum (Ma & Yarats 2019): nu*ema momentum + (1-nu)*gradient",
)


# ---------------------------------------------------------------- AggMo

def aggmo_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One AggMo step (Lucas et al. 2019): vᵢ ← βᵢvᵢ − g; θ ← θ + (γ/K)Σᵢvᵢ."""
    lr, betas = hyper["lr"], hyper["betas"]
    k = len(betas)
    g = prepare_gradient(param, grad, hyper)
    scale = lr / k
    velocities = []
    for i, beta in enumerate(betas):
        v = state.get(f"velocity_{i}")
        if v is None:
            v = state[f"velocity_{i}"] = torch.zeros_like(param)
        v.mul_(broadcast_hyper(beta, param)).sub_(g)
        velocities.append(v)
        if not hyper["cautious"]:
            add_scaled_(param, v, scale)
    if hyper["cautious"]:
        sub_scaled_(param, cautious(-sum(velocities), g, hyper), scale)


def validate_aggmo(h: Hyper) -> None:
    """Reject bad AggMo hyperparameters with a message naming the argument."""
    _lr_ok(h)
    check_betas(h["betas"])
    non_negative("weight_decay", h["weight_decay"])
    for flag in ("decoupled_weight_decay", "maximize", "cautious"):
        boolean(flag, h[flag])


AGGMO_RULE = Rule(
    name="aggmo",
    state={"velocity_*": "element"},
    defaults=dict(lr=0.01, betas=(0.0, 0.9, 0.99), weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
                  cautious=False),
    numeric=("lr", "betas", "weight_decay"),
    update=aggmo_update,
    validate=validate_aggmo,
    summary="aggregated momentum (Lucas et al. 2019): the average of K heavy-ball velocities",
    momentum="AggMo averages several momenta (betas) at once: there is no single momentum to slide",
)


# ---------------------------------------------------------------- Schedule-Free SGD

def schedulefree_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
    """One Schedule-Free SGD step (Defazio et al. 2024); ``param`` holds y (see the module docstring)."""
    lr, beta = hyper["lr"], hyper["momentum"]
    warmup, r, power = hyper["warmup_steps"], hyper["r"], hyper["weight_lr_power"]
    step = state["step"]
    if "z" not in state:
        state["z"] = param.detach().clone()
        like = lr if is_tensor(lr) else torch.zeros((), dtype=param.dtype, device=param.device)
        state["lr_max"] = torch.zeros_like(like)
        state["weight_sum"] = torch.zeros_like(like)
    z, lr_max, weight_sum = state["z"], state["lr_max"], state["weight_sum"]
    if warmup > 0:  # the authors' sched = min(1, step / warmup_steps), steps counted from 1
        if is_tensor(lr):
            lr = lr * torch.clamp(step.to(lr.dtype) / warmup, max=1.0)
        elif float(step) < warmup + 1:
            lr = lr * (float(step) / warmup)
    if is_tensor(lr):
        lr_max.copy_(torch.maximum(lr_max, lr))
    else:
        lr_max.clamp_(min=lr)
    weight = lr_max**power if is_zero(r) else (step.to(lr_max.dtype) ** r) * lr_max**power
    weight_sum.add_(weight)
    ckp1 = torch.where(weight_sum > 0, weight / weight_sum, torch.zeros_like(weight_sum))
    if not is_tensor(lr) and not is_tensor(beta):
        ckp1 = float(ckp1)
    wd = hyper["weight_decay"]
    g = -grad if hyper["maximize"] else grad
    if not is_zero(wd):
        g = g + wd * param if is_tensor(wd) else g.add(param, alpha=wd)
    lerp_(param, z, ckp1)
    add_scaled_(param, g, lr * (beta * (1 - ckp1) - 1))
    sub_scaled_(z, g, lr)


def validate_schedulefree(h: Hyper) -> None:
    """Reject bad Schedule-Free SGD hyperparameters with a message naming the argument."""
    _lr_ok(h)
    require("momentum", h["momentum"], lambda v: 0 < v < 1, "in (0, 1)")
    non_negative("weight_decay", h["weight_decay"])
    warmup = h["warmup_steps"]
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup!r}")
    non_negative("r", h["r"])
    non_negative("weight_lr_power", h["weight_lr_power"])
    boolean("maximize", h["maximize"])


SCHEDULEFREE_RULE = Rule(
    name="schedulefree",
    state={"z": "element", "lr_max": "member", "weight_sum": "member"},
    eval_point=lambda y, state, hyper: schedulefree_x(y.clone(), state["z"], hyper["momentum"]),  # x from y
    train_point=lambda x, state, hyper: schedulefree_y(x.clone(), state["z"], hyper["momentum"]),  # y from x
    defaults=dict(lr=1.0, momentum=0.9, weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0, maximize=False),
    numeric=("lr", "momentum", "weight_decay"),
    update=schedulefree_update,
    validate=validate_schedulefree,
    summary="Schedule-Free SGD (Defazio et al. 2024): no LR schedule, gradients at y, evaluate at x",
    momentum=MomentumHyper(symbol="β", meaning="interpolation momentum of Schedule-Free"),
)


def schedulefree_x(param: Tensor, z: Tensor, beta: Any) -> Tensor:
    """x from y (``param``) and z: x = (y − (1 − β)z)/β (the train→eval swap, in place)."""
    return lerp_(param, z, 1 - 1 / beta)


def schedulefree_y(param: Tensor, z: Tensor, beta: Any) -> Tensor:
    """y from x (``param``) and z: y = (1 − β)z + βx (the eval→train swap, in place)."""
    return lerp_(param, z, 1 - beta)


# ---------------------------------------------------------------- Lookahead as a rule combinator

def lookahead(rule: Rule, k: int = 5, alpha: float = 0.5) -> Rule:
    """``rule`` wrapped in Lookahead (Zhang et al. 2019): every k steps φ ← φ + α(θ − φ), θ ← φ.

    The result is an ordinary rule (usable in the optimizer, sweeps and races) with
    two more hyperparameters, ``lookahead_k`` (structural) and ``lookahead_alpha``
    (numeric, may be per configuration). Its state adds ``slow`` (φ).
    """

    def update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
        slow = state.get("slow")
        if slow is None:
            slow = state["slow"] = param.detach().clone()
        rule.update(param, grad, state, hyper)
        alpha = hyper["lookahead_alpha"]
        if is_tensor(alpha):
            # no host sync (so the compiled path can run it): off the k-th steps the weight is
            # exactly 0 and slow + 0·(θ − slow) = slow, θ is kept
            sync = state["step"] % hyper["lookahead_k"] == 0
            lerp_(slow, param, alpha * sync.to(alpha.dtype))
            param.copy_(torch.where(sync, slow, param))
        elif int(state["step"]) % hyper["lookahead_k"] == 0:
            lerp_(slow, param, alpha)
            param.copy_(slow)

    def validate(h: Hyper) -> None:
        rule.validate(h)
        kk = h["lookahead_k"]
        if isinstance(kk, bool) or not isinstance(kk, int) or kk < 1:
            raise ValueError(f"lookahead_k must be an integer >= 1, got {kk!r}")
        in_unit_interval("lookahead_alpha", h["lookahead_alpha"], closed_right=True)

    return Rule(
        name=f"lookahead_{rule.name}",
        defaults={**rule.defaults, "lookahead_k": k, "lookahead_alpha": alpha},
        numeric=(*rule.numeric, "lookahead_alpha"),
        update=update,
        validate=validate,
        summary=f"Lookahead (Zhang et al. 2019) around {rule.name}",
        state={**rule.state, "slow": "element"},
        eval_point=rule.eval_point,
        train_point=rule.train_point,
        momentum=rule.momentum,
    )
