"""What :class:`~inertia.schedules.HyperScheduler` checks before it writes a value into a param group.

For inertia's optimizers the check is the rule's own ``validate`` over the group's
hyperparameters with the new values in (the checks the optimizer ran when it was built).
For any other ``torch.optim.Optimizer``: what torch's constructors reject, by the names
they share (``lr``, ``eps``, ``weight_decay`` >= 0, ``momentum`` and each of ``betas``
in [0, 1), ``dampening`` in [0, 1]), and every other number finite. NaN never passes.

Cost: Python numbers are checked in Python (no device sync). Tensors are read on the
host: a tensor the group holds on an accelerator is copied once and kept while it is
unchanged; a schedule that gives accelerator tensors costs one copy per step (give its
base values on the CPU to avoid it).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..rules.base import Rule, require

# name -> (accepted, what the error says is accepted), for optimizers without a rule
_TORCH_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "eps": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "betas": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dampening": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}
_FINITE = (math.isfinite, "finite")


def rule_of(optimizer: torch.optim.Optimizer) -> Rule | None:
    """The update rule of an inertia optimizer, or of the one a wrapper (``Lookahead``) drives; else None."""
    while optimizer is not None:
        rule = getattr(optimizer, "rule", None)
        if isinstance(rule, Rule):
            return rule
        optimizer = getattr(optimizer, "optimizer", None)
    return None


def check_torch_value(name: str, value: Any) -> None:
    """``value`` for entry ``name`` of a torch optimizer's param group, else ``ValueError`` naming it."""
    ok, what = _TORCH_RANGES.get(name, _FINITE)
    if not isinstance(value, (tuple, list)):
        require(name, value, ok, what)
        return
    for index, part in enumerate(value):
        if part is not None:  # torch's Adafactor: eps=(None, 1e-3)
            require(f"{name}[{index}]", part, ok, what)


class ValueCheck:
    """Checks a param group's new values, for one optimizer (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.rule = rule_of(optimizer)
        self._host: dict[tuple, tuple[Tensor, int, Tensor]] = {}

    def __call__(self, index: int, group: dict[str, Any], new: dict[str, Any], name: str) -> None:
        """Raise ``ValueError`` (the rule's or torch's message) unless param group ``index`` may hold
        ``new[name]`` beside the other values in ``new`` and its own."""
        if self.rule is None:
            check_torch_value(name, self._on_host((index, name), new[name]))
            return
        hyper = {**{k: group[k] for k in self.rule.defaults}, **new}
        self.rule.validate({k: self._on_host((index, k), v) for k, v in hyper.items()})

    def _on_host(self, key: tuple, value: Any) -> Any:
        """``value`` with its accelerator tensors copied to the CPU, each copy kept while its source is unchanged."""
        if isinstance(value, (tuple, list)):
            return type(value)(self._on_host((*key, i), v) for i, v in enumerate(value))
        if not isinstance(value, Tensor) or value.device.type == "cpu":
            return value
        kept = self._host.get(key)
        if kept is None or kept[0] is not value or kept[1] != value._version:
            kept = self._host[key] = (value, value._version, value.detach().cpu())
        return kept[2]
