r"""YellowFin: momentum and learning rate tuned on the fly (Zhang & Mitliagkas 2017, "YellowFin and the
art of momentum tuning", arXiv 1706.03471; details from the reference code JianGoForIt/YellowFin_Pytorch).

At every step t (0-based), from the whole model's gradient g (β = 0.999, every average zero-debiased by
dividing by 1 − β^(t+1)):

- curvature range: h_t = ‖g‖², h_min/h_max = the extremes of the last ``window`` (20) h_t, smoothed in
  log space: exp(EMA[log h_min]), exp(EMA[log h_max]);
- gradient variance C = EMA[‖g‖²] − ‖EMA[g]‖² (at least 1e-6);
- distance to the optimum D = EMA[EMA[‖g‖] / EMA[‖g‖²]];
- the one-step problem min_x x²D² + (1 − x)⁴C/h_min² in x = √μ: its stationary point solves
  p·x = (1 − x)³ with p = D²h_min²/(2C), i.e. y³ + py + p = 0 for y = x − 1, solved by Vieta's
  substitution y = w − p/(3w), w³ = (−p − √(p² + 4p³/27))/2;
- μ = max(x², ((√κ̂ − 1)/(√κ̂ + 1))²) with κ̂ = h_max/h_min, and γ = (1 − √μ)²/h_min
  (on a quadratic with the exact range [λ₁, λₙ] and no noise this is heavy ball's optimum
  μ* = ((√κ − 1)/(√κ + 1))², γ* = (2/(√λ₁ + √λₙ))²);
- applied: the β-smoothed, zero-debiased μ and γ (the paper's Algorithm 1 and the TensorFlow reference;
  ``apply="raw"`` gives this step's values, as the PyTorch reference does);
- slow start: γ ← min(γ, γ·(t + 1)/(10·window)); adaptive clipping (from the second step on): the
  gradient is scaled to norm at most √(100·h_max) of the previous step, before the statistics.

The statistics are host-side floats (one host sync per step).
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from . import rules
from .optim import RuleOptimizer

__all__ = ["YellowFin", "YellowFinTuner", "tuned_momentum", "cubic_root"]

APPLY = ("smoothed", "raw")


def cubic_root(p: float) -> float:
    """The root x ∈ [0, 1] of p·x = (1 − x)³ for p > 0 (Vieta's substitution, module docstring)."""
    w3 = (-math.sqrt(p * p + 4 * p ** 3 / 27) - p) / 2
    w = math.copysign(abs(w3) ** (1 / 3), w3)
    return w - p / (3 * w) + 1


def tuned_momentum(h_min: float, h_max: float, variance: float, distance: float) -> tuple[float, float]:
    """YellowFin's (μ, γ) for the curvature range [h_min, h_max], gradient variance C and distance D."""
    x = cubic_root(distance ** 2 * h_min ** 2 / (2 * variance))
    root_kappa = math.sqrt(h_max / h_min)
    mu = max(x * x, ((root_kappa - 1) / (root_kappa + 1)) ** 2)
    return mu, (1 - math.sqrt(mu)) ** 2 / h_min


class YellowFinTuner:
    """The running estimates of the module docstring; :meth:`observe` takes one step's gradients."""

    def __init__(self, beta: float = 0.999, window: int = 20, apply: str = "smoothed", slow_start: bool = True,
                 clip: bool = True):
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1), got {beta!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        if apply not in APPLY:
            raise ValueError(f"apply must be one of {', '.join(APPLY)}, got {apply!r}")
        self.beta, self.window, self.apply, self.slow_start, self.clip = beta, window, apply, slow_start, clip
        self.t = 0
        self.recent: deque[float] = deque(maxlen=window)
        self.avg = dict.fromkeys(("log_h_min", "log_h_max", "sq", "norm", "dist", "mu", "lr"), 0.0)
        self.grad_avg: list[Tensor] = []
        self.h_max: float | None = None
        self.values: dict[str, float] = {}

    def _ema(self, name: str, value: float) -> float:
        """Update the EMA ``name`` with ``value``; its zero-debiased value."""
        self.avg[name] = self.beta * self.avg[name] + (1 - self.beta) * value
        return self.avg[name] / (1 - self.beta ** (self.t + 1))

    @torch.no_grad()
    def observe(self, grads: Sequence[Tensor]) -> tuple[float, float] | None:
        """Clip ``grads`` in place (adaptive clipping), update the estimates, and return (γ, μ) to apply;
        None (nothing updated) when the gradient is not finite."""
        sq = float(sum(g.double().pow(2).sum() for g in grads))
        if not math.isfinite(sq):
            return None
        if self.clip and self.h_max is not None and sq > 100 * self.h_max:
            scale = math.sqrt(100 * self.h_max / sq)
            for g in grads:
                g.mul_(scale)
            sq *= scale * scale
        sq = max(sq, 1e-30)
        if not self.grad_avg:
            self.grad_avg = [torch.zeros_like(g) for g in grads]
        debias = 1 - self.beta ** (self.t + 1)
        for avg, g in zip(self.grad_avg, grads):
            avg.mul_(self.beta).add_(g, alpha=1 - self.beta)
        self.recent.append(sq)
        h_min = math.exp(self._ema("log_h_min", math.log(min(self.recent))))
        h_max = math.exp(self._ema("log_h_max", math.log(max(self.recent))))
        sq_avg, norm_avg = self._ema("sq", sq), self._ema("norm", math.sqrt(sq))
        variance = max(sq_avg - float(sum((a.double() / debias).pow(2).sum() for a in self.grad_avg)), 1e-6)
        distance = self._ema("dist", norm_avg / sq_avg)
        mu, lr = tuned_momentum(h_min, h_max, variance, distance)
        mu_avg, lr_avg = self._ema("mu", mu), self._ema("lr", lr)
        if self.apply == "smoothed":
            mu, lr = mu_avg, lr_avg
        if self.slow_start:
            lr = min(lr, lr * (self.t + 1) / (10 * self.window))
        self.h_max = h_max
        self.values = {"h_min": h_min, "h_max": h_max, "variance": variance, "distance": distance, "mu": mu, "lr": lr}
        self.t += 1
        return lr, mu

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "recent": list(self.recent), "avg": dict(self.avg), "h_max": self.h_max,
                "grad_avg": [a.clone() for a in self.grad_avg]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t, self.h_max, self.avg = int(state["t"]), state["h_max"], dict(state["avg"])
        self.recent = deque(state["recent"], maxlen=self.window)
        self.grad_avg = [a.clone() for a in state["grad_avg"]]


class YellowFin(RuleOptimizer):
    """Momentum SGD whose momentum and learning rate YellowFin tunes at every step (module docstring).

    ``inertia.YellowFin(params, rule="momentum", beta=0.999, window=20, apply="smoothed",
    slow_start=True, clip=True, **hyper)``: ``rule`` is any registered rule with a momentum
    (``momentum``, ``nesterov``, ``qhm``, ...), ``hyper`` its other hyperparameters. After each
    step every ``param_groups[i]["lr"]`` and ``["momentum"]`` hold the values applied (the tuner is
    one for all groups, as in the paper); ``tuner.values`` has the estimates (h_min, h_max, C, D).
    The values are heavy ball's: exact in the ``torch`` and ``sutskever`` conventions.
    """

    def __init__(self, params: Iterable, *, rule: str = "momentum", beta: float = 0.999, window: int = 20,
                 apply: str = "smoothed", slow_start: bool = True, clip: bool = True, nonfinite: str = "raise",
                 execution: str = "auto", **hyper: Any):
        preset = rules.get(rule)
        if "momentum" not in preset.rule.numeric:
            raise ValueError(f"YellowFin: rule {rule!r} has no momentum to tune; use one that has "
                             f"(momentum, nesterov, sgd, qhm, ...)")
        self.tuner = YellowFinTuner(beta, window, apply, slow_start, clip)
        super().__init__(params, preset.rule, nonfinite=nonfinite, execution=execution,
                         **{**preset.overrides, "lr": 1e-3, **hyper})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        tuned = self.tuner.observe(grads) if grads else None
        if tuned is not None:
            for group in self.param_groups:
                group["lr"], group["momentum"] = tuned
        super().step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "yellowfin": self.tuner.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.tuner.load_state_dict(state_dict.pop("yellowfin"))
        super().load_state_dict(state_dict)
