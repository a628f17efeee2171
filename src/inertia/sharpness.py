r"""Sharpness: the top eigenvalue λ_max of the loss's Hessian, and the largest stable learning rate it implies.

λ_max comes from Hessian-vector products (double backward: Hv = ∂(∇L·v)/∂θ, Pearlmutter 1994)
and power iteration on a few fixed batches, with the model in eval mode (no dropout draws, BatchNorm
on its running statistics), as PyHessian does. Power iteration converges to the eigenvalue of
largest magnitude; when that one is negative, a second run on H − λI finds the top one.

Heavy ball on a quadratic with curvature λ is stable iff 0 < γλ < 2 + 2μ (Polyak 1964; Goh 2017),
so with λ = λ_max the largest stable learning rate is, in each convention of :mod:`inertia.rules.sgd`:

- ``torch`` and ``sutskever`` (identical iterates at constant γ): γ < (2 + 2μ) / λ_max, and with
  dampening τ the torch buffer takes (1 − τ)g, so γ(1 − τ) < (2 + 2μ) / λ_max;
- ``ema`` (b ← μb + (1 − μ)g, θ ← θ − γb): b is (1 − μ) times the torch buffer, so it is the torch
  form at γ(1 − μ): γ < (2 + 2μ) / ((1 − μ)λ_max);
- Nesterov (torch form): on λ the iterates obey θ⁺ = (1 − h(1 + μ))θ + μ(1 − h)(θ − θ⁻) with h = γλ,
  whose roots stay inside the unit circle iff h < (2 + 2μ)/(1 + 2μ) (Jury's test at z = −1:
  2 − h(1 + μ) + 2μ(1 − h) > 0); ``ema`` Nesterov again at γ(1 − μ).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["sharpness", "hessian_top_eigenvalue", "stable_lr"]


def stable_lr(sharpness: float, momentum: float, *, convention: str = "torch", nesterov: bool = False,
              dampening: float = 0.0) -> float:
    """The largest learning rate at which momentum SGD is stable on curvature ``sharpness`` (module docstring)."""
    if not (isinstance(sharpness, (int, float)) and math.isfinite(sharpness) and sharpness > 0):
        raise ValueError(f"sharpness must be a finite number > 0, got {sharpness!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if convention not in ("torch", "sutskever", "ema"):
        raise ValueError(f"convention must be torch, sutskever or ema, got {convention!r}")
    mu = float(momentum)
    edge = (2 + 2 * mu) / ((1 + 2 * mu) if nesterov else 1.0) / sharpness
    if mu == 0:
        return edge
    if convention == "ema":
        return edge / (1 - mu)
    return edge / (1 - dampening) if convention == "torch" else edge


def hessian_top_eigenvalue(hvp: Callable[[list[Tensor]], list[Tensor]], like: Sequence[Tensor], *,
                           iters: int = 50, tol: float = 1e-4, seed: int = 0) -> float:
    """The largest eigenvalue of the symmetric operator ``hvp`` (vectors are lists shaped like ``like``)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    g = torch.Generator().manual_seed(seed)
    start = [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) for p in like]
    top = _power(hvp, start, 0.0, iters, tol)
    if top < 0:   # the dominant eigenvalue is negative: shift it to 0 and find the top one
        top += _power(hvp, start, -top, iters, tol)
    return top


def _power(hvp: Callable[[list[Tensor]], list[Tensor]], v: list[Tensor], shift: float, iters: int,
           tol: float) -> float:
    """Power iteration on H + shift·I: its dominant eigenvalue (a Rayleigh quotient)."""
    v = _unit(v)
    value = math.nan
    for _ in range(iters):
        w = [hv + shift * x for hv, x in zip(hvp(v), v)]
        new = float(sum((a * b).sum() for a, b in zip(v, w)))
        norm = math.sqrt(float(sum((x * x).sum() for x in w)))
        if not math.isfinite(new) or norm == 0:
            return new if math.isfinite(new) else math.nan
        v = [x / norm for x in w]
        if abs(new - value) <= tol * abs(new):
            return new
        value = new
    return value


def _unit(v: list[Tensor]) -> list[Tensor]:
    norm = math.sqrt(float(sum((x * x).sum() for x in v)))
    return [x / norm for x in v]


def sharpness(model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]],
              *, params: Mapping[str, Tensor] | None = None, iters: int = 50, tol: float = 1e-4,
              seed: int = 0) -> float:
    """λ_max of the mean of ``loss(model(x), y)`` over ``batches``, with respect to the model's parameters
    (or to ``params``, name -> tensor, evaluated in ``model`` by ``torch.func.functional_call``).

    The model is left as it was (its training mode is restored; its parameters are not touched).
    """
    from torch.func import functional_call

    batches = list(batches)
    if not batches:
        raise ValueError("sharpness: no batches to measure the loss on")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    source = dict(model.named_parameters()) if params is None else params
    theta = [source[n].detach().clone().requires_grad_(True) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            total = sum(loss(functional_call(model, dict(zip(names, theta)), (x,)), y) for x, y in batches)
            grads = torch.autograd.grad(total / len(batches), theta, create_graph=True)
        if not any(g.requires_grad for g in grads):
            raise ValueError(f"sharpness: the loss of {type(model).__name__} has no second derivative with respect "
                             "to its parameters (autograd's gradient does not depend on them: a once-differentiable "
                             "function, or a loss linear in them)")

        def hvp(v: list[Tensor]) -> list[Tensor]:
            try:
                out = torch.autograd.grad(grads, theta, grad_outputs=v, retain_graph=True, allow_unused=True)
            except RuntimeError as error:
                raise ValueError(f"sharpness: the loss of {type(model).__name__} has no second derivative "
                                 f"({str(error).splitlines()[0]})") from None
            if all(h is None for h in out):
                raise ValueError(f"sharpness: the loss of {type(model).__name__} has no second derivative "
                                 "(its gradient's graph does not lead back to the parameters)")
            return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(out, theta)]

        return hessian_top_eigenvalue(hvp, theta, iters=iters, tol=tol, seed=seed)
    finally:
        model.train(was_training)
