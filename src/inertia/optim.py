"""The optimizer engine: any :class:`~inertia.rules.Rule` as a ``torch.optim.Optimizer``.

Param groups, closures, ``state_dict``/``load_state_dict``, hooks and torch's own
``lr_scheduler`` classes work as with ``torch.optim``. A hyperparameter may be a
Python number, a 0-dim tensor, or a 1-D tensor of length N: then every parameter's
first dimension is the configuration axis and configuration i uses the i-th value
(this is how the sweep engine trains N models at once).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import rules
from .rules import Rule, broadcast_hyper

NONFINITE_POLICIES = ("raise", "skip", "off")


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or inf; the parameters were left untouched."""


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that applies ``rule`` to every parameter.

    Args:
        params: parameters, named parameters or param-group dicts, as for torch.optim.
        rule: the update rule (subclasses set it as a class attribute).
        nonfinite: what to do when a gradient holds NaN/inf: ``"raise"`` (default)
            raises :class:`NonFiniteGradientError` naming the parameter before any
            parameter changes; ``"skip"`` skips the whole step and counts it in
            ``skipped_steps``; ``"off"`` does not check.
        **hyper: the rule's hyperparameters (unknown names are a ``TypeError``).
    """

    rule: Rule

    def __init__(self, params: Iterable, rule: Rule | None = None, *, nonfinite: str = "raise", **hyper: Any):
        if rule is not None:
            self.rule = rule
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        super().__init__(params, self.rule.check(hyper))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        given = {k: v for k, v in param_group.items() if k in self.rule.defaults}
        self.rule.check({**self.defaults, **given})
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "nonfinite": self.nonfinite, "skipped_steps": self.skipped_steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("skipped_steps", 0)

    def _with_grads(self) -> list[tuple[dict, list[Tensor]]]:
        return [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]

    def _first_nonfinite(self, work: list[tuple[dict, list[Tensor]]]) -> str | None:
        """Name of the first parameter whose gradient holds NaN/inf, or None (one device sync)."""
        entries = [(index, group, p) for index, (group, params) in enumerate(work) for p in params]
        if not entries:
            return None
        peaks = torch._foreach_norm([p.grad.detach() for _, _, p in entries], float("inf"))
        finite = torch.isfinite(torch.stack([peak.float() for peak in peaks])).cpu()
        if bool(finite.all()):
            return None
        index, group, p = entries[int((~finite).nonzero()[0])]
        position = next(k for k, q in enumerate(group["params"]) if q is p)
        if group.get("param_names") is not None:
            return repr(group["param_names"][position])
        return f"group {index}, parameter {position} of shape {tuple(p.shape)}"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the rule once to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._with_grads()
        if self.nonfinite != "off":
            culprit = self._first_nonfinite(work)
            if culprit is not None:
                if self.nonfinite == "skip":
                    self.skipped_steps += 1
                    return loss
                raise NonFiniteGradientError(
                    f"non-finite gradient (NaN or inf) in parameter {culprit}; the step was not applied. "
                    f"Lower the learning rate, clip gradients, or pass nonfinite='skip' to skip such steps."
                )
        for group, params in work:
            hyper_cache: dict[tuple, dict[str, Any]] = {}
            for p in params:
                state = self.state[p]
                if "step" not in state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                state["step"] += 1
                key = (p.dim(), p.shape[:1], p.device, p.dtype)
                hyper = hyper_cache.get(key)
                if hyper is None:
                    hyper = hyper_cache[key] = {
                        name: broadcast_hyper(group[name], p) for name in self.rule.defaults
                    }
                self.rule.update(p, p.grad, state, hyper)
        return loss


def _preset_init(preset_name: str):
    preset = rules.get(preset_name)

    def __init__(self, params: Iterable, *, nonfinite: str = "raise", **hyper: Any) -> None:
        RuleOptimizer.__init__(self, params, preset.rule, nonfinite=nonfinite, **{**preset.overrides, **hyper})

    return __init__


class SGD(RuleOptimizer):
    r"""SGD with optional heavy-ball or Nesterov momentum, in the ``torch``, ``sutskever`` or ``ema`` convention.

    ``inertia.SGD(params, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False,
    weight_decay=0.0, decoupled_weight_decay=False, convention="torch", maximize=False)``.
    With ``convention="torch"`` (the default) it gives the same numbers as
    ``torch.optim.SGD``. The equations are in :mod:`inertia.rules.sgd`.
    """

    rule = rules.SGD_RULE
    __init__ = _preset_init("sgd")


class Momentum(RuleOptimizer):
    """Heavy-ball momentum SGD with the common starting point ``lr=0.01, momentum=0.9``.

    Same arguments as :class:`SGD`; ``nesterov=True`` gives Nesterov momentum.
    """

    rule = rules.SGD_RULE
    __init__ = _preset_init("momentum")


def make_optimizer(name: str, params: Iterable, **hyper: Any) -> RuleOptimizer:
    """Build the optimizer for a registered rule name (``"momentum"``, ``"nesterov"``, ...)."""
    preset = rules.get(name)
    nonfinite = hyper.pop("nonfinite", "raise")
    return RuleOptimizer(params, preset.rule, nonfinite=nonfinite, **{**preset.overrides, **hyper})
