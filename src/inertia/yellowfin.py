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

Every quantity is a tensor with one value per member ``[M]``, in float64: one model (the optimizer,
M = 1), or the M members of a sweep's stack, each with its own estimates from its own gradients
(:class:`StackTuner`). The settings are a tuned rule's hyperparameters (:mod:`inertia.rules.tuned`);
``beta`` may differ between members.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from . import rules
from .optim import RuleOptimizer
from .rules.tuned import TUNED, TUNER_DEFAULTS, check_tuner
from .schedules import Schedule

__all__ = ["YellowFin", "YellowFinTuner", "StackTuner", "tuned_momentum", "cubic_root"]


def cubic_root(p: Any) -> Any:
    """The root x ∈ [0, 1] of p·x = (1 − x)³ for p > 0 (Vieta's substitution, module docstring); a number
    or a tensor of them."""
    w3 = (-(p * p + 4 * p ** 3 / 27) ** 0.5 - p) / 2      # < 0 for p > 0
    w = -((-w3) ** (1 / 3))
    return w - p / (3 * w) + 1


def tuned_momentum(h_min: Any, h_max: Any, variance: Any, distance: Any) -> tuple[Any, Any]:
    """YellowFin's (μ, γ) for the curvature range [h_min, h_max], gradient variance C and distance D
    (numbers, or tensors of them)."""
    x = cubic_root(distance ** 2 * h_min ** 2 / (2 * variance))
    root_kappa = (h_max / h_min) ** 0.5
    floor = ((root_kappa - 1) / (root_kappa + 1)) ** 2
    mu = torch.maximum(x * x, floor) if isinstance(x, Tensor) else max(x * x, floor)
    return mu, (1 - mu ** 0.5) ** 2 / h_min


class YellowFinTuner:
    """The running estimates of the module docstring for M members; :meth:`observe` takes one step's gradients.

    ``stacked``: every gradient's first axis is the member axis (a sweep's stack); otherwise the gradients
    are one model's (M = 1). ``beta``: a number, or one per member ``[M]``.
    """

    def __init__(self, beta: Any = 0.999, window: int = 20, apply: str = "smoothed", slow_start: bool = True,
                 clip: bool = True, *, stacked: bool = False):
        check_tuner(dict(beta=beta, window=window, apply=apply, slow_start=slow_start, clip=clip))
        self.beta = beta.to(torch.float64) if isinstance(beta, Tensor) else float(beta)
        self.window, self.apply, self.slow_start, self.clip, self.stacked = window, apply, slow_start, clip, stacked
        self.t = 0
        self.recent: Tensor | None = None            # [M, window] squared norms, a ring
        self.avg: dict[str, Tensor] = {}              # [M] each: the EMAs before debiasing
        self.grad_avg: list[Tensor] = []              # EMA of each gradient
        self.h_max: Tensor | None = None              # [M], the last step's (for clipping)
        self.values: dict[str, Tensor] = {}

    def _per_member(self, tensors: Iterable[Tensor]) -> Tensor:
        """Σ x² over each member's elements of all ``tensors``, in float64: ``[M]``."""
        if self.stacked:
            return sum(t.double().pow(2).flatten(1).sum(1) for t in tensors)
        return sum(t.double().pow(2).sum() for t in tensors).reshape(1)

    def _along(self, value: Any, like: Tensor) -> Any:
        """A per-member ``value`` shaped to broadcast against ``like`` (a number stays a number)."""
        if not isinstance(value, Tensor):
            return value
        value = value.to(like.device, like.dtype)
        return value.view(-1, *[1] * (like.dim() - 1)) if self.stacked else value.reshape(())

    def _ema(self, name: str, value: Tensor, debias: Any) -> Tensor:
        """Update the EMA ``name`` with ``value``; its zero-debiased value."""
        previous = self.avg.get(name, torch.zeros_like(value))
        self.avg[name] = self.beta * previous + (1 - self.beta) * value
        return self.avg[name] / debias

    @torch.no_grad()
    def observe(self, grads: Sequence[Tensor]) -> tuple[Tensor, Tensor] | None:
        """Clip ``grads`` in place (adaptive clipping), update the estimates, and return (γ, μ) to apply,
        ``[M]`` each; None (nothing updated) when one model's gradient is not finite (a stack's member
        with a non-finite gradient gets non-finite values, and the sweep drops it at its next loss)."""
        sq = self._per_member(grads)
        if not self.stacked and not bool(torch.isfinite(sq).all()):
            return None
        if self.clip and self.h_max is not None:
            over = sq > 100 * self.h_max
            if bool(over.any()):
                scale = torch.where(over, (100 * self.h_max / sq).sqrt(), torch.ones_like(sq))
                for g in grads:
                    g.mul_(self._along(scale, g))
                sq = sq * scale * scale
        sq = sq.clamp(min=1e-30)
        if not self.grad_avg:
            self.grad_avg = [torch.zeros_like(g) for g in grads]
            self.recent = sq.new_zeros(len(sq), self.window)
        debias = 1 - self.beta ** (self.t + 1)
        for avg, g in zip(self.grad_avg, grads):
            beta = self._along(self.beta, g)
            if isinstance(beta, Tensor):
                avg.mul_(beta).add_(g * (1 - beta))
            else:
                avg.mul_(beta).add_(g, alpha=1 - beta)
        self.recent[:, self.t % self.window] = sq
        seen = self.recent[:, :min(self.t + 1, self.window)]
        h_min = self._ema("log_h_min", seen.min(1).values.log(), debias).exp()
        h_max = self._ema("log_h_max", seen.max(1).values.log(), debias).exp()
        sq_avg, norm_avg = self._ema("sq", sq, debias), self._ema("norm", sq.sqrt(), debias)
        centred = self._per_member(a.double() / self._along(debias, a.double()) for a in self.grad_avg)
        variance = (sq_avg - centred).clamp(min=1e-6)
        distance = self._ema("dist", norm_avg / sq_avg, debias)
        mu, lr = tuned_momentum(h_min, h_max, variance, distance)
        mu_avg, lr_avg = self._ema("mu", mu, debias), self._ema("lr", lr, debias)
        if self.apply == "smoothed":
            mu, lr = mu_avg, lr_avg
        if self.slow_start:
            lr = lr * min(1.0, (self.t + 1) / (10 * self.window))
        self.h_max = h_max
        self.values = {"h_min": h_min, "h_max": h_max, "variance": variance, "distance": distance, "mu": mu, "lr": lr}
        self.t += 1
        return lr, mu

    def keep(self, index: Tensor) -> None:
        """Keep only the members at positions ``index`` (a stack dropped the others)."""
        def pick(t: Tensor) -> Tensor:
            return t.index_select(0, index.to(t.device))

        if isinstance(self.beta, Tensor):
            self.beta = pick(self.beta)
        if self.recent is not None:
            self.recent = pick(self.recent)
        self.avg = {k: pick(v) for k, v in self.avg.items()}
        self.grad_avg = [pick(a) for a in self.grad_avg]
        self.h_max = None if self.h_max is None else pick(self.h_max)
        self.values = {k: pick(v) for k, v in self.values.items()}

    def state_dict(self) -> dict[str, Any]:
        copy = (lambda t: None if t is None else t.clone())
        return {"t": self.t, "recent": copy(self.recent), "avg": {k: v.clone() for k, v in self.avg.items()},
                "h_max": copy(self.h_max), "grad_avg": [a.clone() for a in self.grad_avg],
                "beta": copy(self.beta) if isinstance(self.beta, Tensor) else self.beta}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        copy = (lambda t: None if t is None else t.clone())
        self.t, self.recent, self.h_max = int(state["t"]), copy(state["recent"]), copy(state["h_max"])
        self.avg = {k: v.clone() for k, v in state["avg"].items()}
        self.grad_avg = [a.clone() for a in state["grad_avg"]]
        self.beta = copy(state["beta"]) if isinstance(state["beta"], Tensor) else state["beta"]


class TunedColumn(Schedule):
    """One hyperparameter of a stack's members as the tuner last set it, in their original order:
    ``step -> [M]``. To the stack it is a schedule, so the rule keeps the history a changing value needs."""

    def __init__(self, values: Tensor):
        self.values = values

    def __call__(self, step: int) -> Tensor:
        return self.values


class StackTuner:
    """YellowFin for the M members of a sweep's stack: each member's own estimates from its own gradients,
    and the lr and μ it sets, the stack's :data:`columns` (per original member).

    ``values``: the members' hyperparameters (:attr:`inertia.core.MemberHyper.values`: the tuner's settings,
    ``beta`` a number or ``[M]``); ``device``: where the stack's parameters are.
    """

    def __init__(self, values: Mapping[str, Any], members: int, device: Any):
        settings = {name: values[name] for name in TUNER_DEFAULTS}
        if isinstance(settings["beta"], Tensor):
            settings["beta"] = settings["beta"].to(device)
        self.tuner = YellowFinTuner(**settings, stacked=True)
        self.columns = {name: TunedColumn(torch.full((members,), float(values[name]), dtype=torch.float64,
                                                      device=device)) for name in TUNED}

    def step(self, grads: Sequence[Tensor], rows: Tensor) -> tuple[Tensor, Tensor]:
        """Observe the gradients of the live members ``rows`` (original indices); set and return their (γ, μ)."""
        lr, mu = self.tuner.observe(grads)
        for name, value in zip(TUNED, (lr, mu)):
            column = self.columns[name].values
            column[rows.to(column.device)] = value.to(column.device)
        return lr, mu

    def keep(self, index: Tensor) -> None:
        self.tuner.keep(index)

    def state_dict(self) -> dict[str, Any]:
        return {"tuner": self.tuner.state_dict(), **{name: self.columns[name].values.cpu() for name in TUNED}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tuner.load_state_dict(state["tuner"])
        for name in TUNED:
            self.columns[name].values.copy_(state[name])


class YellowFin(RuleOptimizer):
    """Momentum SGD whose momentum and learning rate YellowFin tunes at every step (module docstring).

    ``inertia.YellowFin(params, rule="momentum", beta=0.999, window=20, apply="smoothed",
    slow_start=True, clip=True, **hyper)``: ``rule`` is any registered rule with a momentum
    (``momentum``, ``nesterov``, ``qhm``, ...), ``hyper`` its other hyperparameters (``lr`` and
    ``momentum`` are the tuner's). After each step every ``param_groups[i]["lr"]`` and ``["momentum"]``
    hold the values applied (the tuner is one for all groups, as in the paper); ``tuner.values`` has the
    estimates (h_min, h_max, C, D). The values are heavy ball's: exact in the ``torch`` and ``sutskever``
    conventions. ``inertia.make_optimizer("yellowfin:nesterov", params)`` builds the same.
    """

    def __init__(self, params: Iterable, *, rule: str = "momentum", beta: float = 0.999, window: int = 20,
                 apply: str = "smoothed", slow_start: bool = True, clip: bool = True, nonfinite: str = "raise",
                 execution: str = "auto", **hyper: Any):
        preset = rules.get(f"yellowfin:{rule}")
        given = [name for name in TUNED if name in hyper]
        if given:
            raise ValueError(f"YellowFin tunes {' and '.join(TUNED)} at every step; {given[0]} cannot be given")
        settings = dict(beta=beta, window=window, apply=apply, slow_start=slow_start, clip=clip)
        self.tuner = YellowFinTuner(**settings)
        super().__init__(params, preset.rule, nonfinite=nonfinite, execution=execution,
                         **{**preset.overrides, **settings, **hyper})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        tuned = self.tuner.observe(grads) if grads else None
        if tuned is not None:
            lr, mu = (float(value) for value in tuned)
            for group in self.param_groups:
                group["lr"], group["momentum"] = lr, mu
        super().step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "yellowfin": self.tuner.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.tuner.load_state_dict(state_dict.pop("yellowfin"))
        super().load_state_dict(state_dict)
