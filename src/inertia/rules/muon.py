r"""Muon: momentum orthogonalized by Newton–Schulz, for the matrices of a network.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks";
``torch.optim.Muon``, whose numbers this gives on 2-D parameters). γ = lr, μ = momentum,
λ = weight_decay, g = gradient, a member's matrix of shape A × B::

    b ← b + (1 − μ)(g − b)                    convention="ema" (torch's lerp; b starts at 0)
    b ← μb + g                                convention="torch" (classical; Jordan's first code)
    u = g + μ(b − g)  [ema],  g + μb  [torch]  with nesterov (default), else u = b
    O = NS₅(u)                                Newton–Schulz below
    θ ← θ(1 − γλ)                             decoupled weight decay, with the unadjusted γ
    θ ← θ − γ'·O,  γ' = γ·√max(1, A/B)        adjust_lr_fn="original" (Jordan)
                   γ' = 0.2·γ·√max(A, B)      adjust_lr_fn="match_rms_adamw" (Liu et al. 2025, Moonlight)

NS₅: X = u/max(‖u‖_F, ε) in bfloat16 (transposed when A > B, so X is wide), then
``ns_steps`` times X ← aX + (bG + cG²)X with G = XXᵀ and (a, b, c) = ``ns_coefficients``
(3.4445, −4.7750, 2.0315), transposed back: approximately the orthogonal factor UVᵀ of
u = USVᵀ (singular values pushed into about [0.7, 1.2]). NS₅ removes any scale of u, so
the two conventions give the same O while μ is constant (the classical buffer is the EMA
buffer times 1/(1 − μ), Nesterov's u too); they differ once μ changes (a schedule): the
classical buffer then weighs past gradients by the products of the past μ, the EMA by
(1 − μₜ) as well.

Beyond torch: a parameter with more than two axes (a convolution's weight
``[out, in, kh, kw]``) is orthogonalized as the matrix ``[out, in·kh·kw]`` (A, B of that
matrix in γ'); one with fewer (biases, norms' scales) goes to the fallback rule (AdamW by
default: :func:`muon`), or is a ``ValueError`` with ``fallback=False``. The fallback is chosen
by shape alone: an embedding or an output layer is a matrix and gets Muon unless it is given
to another optimizer. Stacked parameters ``[N, ...]`` (sweeps, races) are orthogonalized
member by member (:func:`orthogonalize`). ``cautious=True`` masks O (and the fallback's
update) where it disagrees in sign with g (:func:`inertia.rules.base.cautious`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .adaptive import lerp_
from .base import (
    FIXED_HYPER,
    MEMBER_AXIS,
    Hyper,
    Rule,
    State,
    boolean,
    cautious,
    decoupled_decay_,
    in_unit_interval,
    non_negative,
    one_of,
    require,
    sub_scaled_,
)

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_FNS = ("original", "match_rms_adamw")
MUON_CONVENTIONS = ("ema", "torch")
FALLBACK = "fallback_"


def newton_schulz(matrix: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> Tensor:
    """NS₅ of one matrix ``[A, B]`` in bfloat16, with torch.optim.Muon's operations (the module docstring)."""
    a, b, c = coefficients
    x = matrix.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def orthogonalize(update: Tensor, hyper: Hyper, rows: int, cols: int) -> Tensor:
    """NS₅ of each member's A × B matrix of ``update``, in the update's dtype and shape.

    Member by member, not as one batched product: on CPU a batched bfloat16 product of small
    matrices rounds differently from torch's 2-D one now and then, and each member must give the
    numbers it gives alone (and torch.optim.Muon's)."""
    coefficients, steps, eps = hyper["ns_coefficients"], hyper["ns_steps"], hyper["eps"]
    matrices = update.reshape(-1, rows, cols).unbind(0)
    orthogonal = torch.stack([newton_schulz(m, coefficients, steps, eps) for m in matrices])
    return orthogonal.to(update.dtype).view_as(update)


def matrix_shape(param: Tensor, hyper: Hyper) -> tuple[int, int] | None:
    """(A, B): one member's parameter as the matrix Muon orthogonalizes (trailing axes flattened), or None
    for a parameter with fewer than two axes per member."""
    shape = param.shape[1:] if hyper.get(MEMBER_AXIS, False) else param.shape
    return (shape[0], math.prod(shape[1:])) if len(shape) >= 2 else None


def adjusted_lr(lr: Any, rows: int, cols: int, adjust_lr_fn: str | None) -> Any:
    """γ' for an A × B matrix: γ√max(1, A/B) ("original", also for None as torch) or 0.2γ√max(A, B)."""
    if adjust_lr_fn == "match_rms_adamw":
        return lr * (0.2 * math.sqrt(max(rows, cols)))
    return lr * math.sqrt(max(1.0, rows / cols))


def muon_direction(grad: Tensor, state: State, hyper: Hyper) -> Tensor:
    """The momentum step u before Newton–Schulz, in the chosen convention (the module docstring)."""
    mu = hyper["momentum"]
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
    if hyper["convention"] == "ema":
        lerp_(buf, grad, 1 - mu)
        return torch.lerp(grad, buf, mu) if hyper["nesterov"] else buf
    buf.mul_(mu).add_(grad)
    return grad + mu * buf if hyper["nesterov"] else buf


def muon_matrix_update(param: Tensor, grad: Tensor, state: State, hyper: Hyper, rows: int, cols: int) -> None:
    """One Muon step of a parameter whose members are A × B matrices (``rows``, ``cols``)."""
    lr = hyper["lr"]
    orthogonal = orthogonalize(muon_direction(grad, state, hyper), hyper, rows, cols)
    decoupled_decay_(param, lr, hyper["weight_decay"])
    sub_scaled_(param, cautious(orthogonal, grad, hyper), adjusted_lr(lr, rows, cols, hyper["adjust_lr_fn"]))


def muon(fallback: Rule, **settings: Any) -> Rule:
    """The Muon rule, with ``fallback`` (and its ``settings``) for parameters that are not matrices.

    The fallback's numeric hyperparameters appear as ``fallback_<name>`` (AdamW's: ``fallback_betas``,
    ``fallback_eps``, ``fallback_weight_decay``), its learning rate as ``lr · fallback_lr_ratio`` (so a
    schedule or a sweep of ``lr`` moves both); its other options are ``settings`` over its defaults, and
    ``cautious`` is Muon's. ``fallback=False`` (a hyperparameter) makes a non-matrix parameter an error.
    """
    own = {name: value for name, value in {**fallback.defaults, **settings}.items()
           if name in fallback.numeric and name != "lr"}
    structural = {name: value for name, value in {**fallback.defaults, **settings}.items()
                  if name not in fallback.numeric and name != "cautious"}

    def fallback_hyper(hyper: Hyper) -> dict[str, Any]:
        values = {**structural, **{name: hyper[FALLBACK + name] for name in own},
                  "lr": hyper["lr"] * hyper["fallback_lr_ratio"], "cautious": hyper["cautious"],
                  MEMBER_AXIS: hyper.get(MEMBER_AXIS, False)}
        if FIXED_HYPER in hyper:
            fixed = hyper[FIXED_HYPER]
            values[FIXED_HYPER] = frozenset({name for name in own if FALLBACK + name in fixed}
                                            | ({"lr"} if {"lr", "fallback_lr_ratio"} <= fixed else set()))
        return values

    def update(param: Tensor, grad: Tensor, state: State, hyper: Hyper) -> None:
        shape = matrix_shape(param, hyper)
        if shape is not None:
            muon_matrix_update(param, grad, state, hyper, *shape)
        elif hyper["fallback"]:
            fallback.update(param, grad, state, fallback_hyper(hyper))
        else:
            member = tuple(param.shape[1:] if hyper.get(MEMBER_AXIS, False) else param.shape)
            raise ValueError(f"muon orthogonalizes matrices, got a parameter of shape {member} with fallback=False: "
                             "pass fallback=True (the fallback rule then updates it) or give it to another optimizer")

    def validate(h: Hyper) -> None:
        require("lr", h["lr"], lambda v: 0 <= v < math.inf, "a finite number >= 0")
        in_unit_interval("momentum", h["momentum"])
        non_negative("weight_decay", h["weight_decay"])
        non_negative("eps", h["eps"])
        non_negative("fallback_lr_ratio", h["fallback_lr_ratio"])
        steps = h["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < 100:
            raise ValueError(f"ns_steps must be an integer in [1, 100), got {steps!r}")
        coefficients = h["ns_coefficients"]
        if not (isinstance(coefficients, (tuple, list)) and len(coefficients) == 3
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                        for c in coefficients)):
            raise ValueError(f"ns_coefficients must be 3 finite numbers (a, b, c), got {coefficients!r}")
        if h["adjust_lr_fn"] is not None:
            one_of("adjust_lr_fn", h["adjust_lr_fn"], ADJUST_LR_FNS)
        one_of("convention", h["convention"], MUON_CONVENTIONS)
        for flag in ("nesterov", "cautious", "fallback"):
            boolean(flag, h[flag])
        try:
            fallback.validate(fallback_hyper(h))
        except ValueError as error:
            raise ValueError(f"{FALLBACK}{error}") from None

    return Rule(
        name="muon",
        defaults=dict(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=NS_COEFFICIENTS,
                      eps=1e-7, ns_steps=5, adjust_lr_fn="original", convention="ema", cautious=False,
                      fallback=True, fallback_lr_ratio=1.0, **{FALLBACK + name: value for name, value in own.items()}),
        numeric=("lr", "momentum", "weight_decay", "fallback_lr_ratio", *(FALLBACK + name for name in own)),
        update=update,
        validate=validate,
        summary=f"Muon (Jordan et al. 2024): Newton-Schulz-orthogonalized momentum; {fallback.name} for non-matrices",
        state={"momentum_buffer": "element", **fallback.state},
        momentum=(f"Muon's momentum moves matrices only; any other parameter (a point on a surface is a vector) "
                  f"moves by its {fallback.name} fallback, with that rule's momentum: there is no single momentum"),
    )
