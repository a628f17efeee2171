"""Per-configuration hyperparameters ``[n]`` as torch's ``lr_scheduler`` classes meet them.

inertia's optimizers accept a tensor of n values for a numeric hyperparameter (one per
configuration of a stacked model). torch's schedulers assume one number per group:
:class:`PerConfiguration` keeps n values where they write n, and says to use
:class:`~inertia.schedules.HyperScheduler` where they would silently write one.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _width(value: Any) -> Any:
    """n for a per-configuration tensor ``[n]``, None for one value (per component for tuples)."""
    if isinstance(value, (tuple, list)):
        return tuple(_width(v) for v in value)
    return value.numel() if isinstance(value, Tensor) and value.dim() > 0 else None


def _per_configuration(width: Any) -> bool:
    return any(map(_per_configuration, width)) if isinstance(width, tuple) else width is not None


_USE_HYPERSCHEDULER = "drive it with inertia.schedules.HyperScheduler, whose schedules take tensors [n]"


class PerConfiguration(Tensor):
    """A per-configuration hyperparameter ``[n]`` as torch's ``lr_scheduler`` classes meet it.

    torch's schedulers write a param group's tensor ``lr`` with ``fill_``. Here
    ``fill_`` with n values keeps them (``CosineAnnealingLR``, ``StepLR``, ``LambdaLR``
    ... then schedule each configuration from its own base value); one value for n,
    reading it as one number (``float``, as ``ReduceLROnPlateau`` does), or a
    write while another entry of the group that held n values was replaced by
    one (``OneCycleLR`` with ``cycle_momentum=True``) is a ``ValueError`` saying
    to use :class:`HyperScheduler`. Arithmetic gives plain tensors; pickling
    writes a plain tensor.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl

    def _where(self) -> str:
        return f"param group {self._index}'s {self._name}"

    def fill_(self, value: Any) -> Tensor:
        value = torch.as_tensor(value)
        if value.numel() != self.numel():
            raise ValueError(f"{self._where()} holds one value per configuration ({self.numel()}), and a torch "
                             f"lr_scheduler would write {value.numel()} for all of them: {_USE_HYPERSCHEDULER}")
        lost = [k for k, w in self._widths.items() if k in self._group and _width(self._group[k]) != w]
        if lost:
            raise ValueError(f"param group {self._index}'s {lost[0]} held one value per configuration and a torch "
                             f"lr_scheduler replaced them with one (OneCycleLR: pass max_momentum and "
                             f"base_momentum as tensors, or cycle_momentum=False): {_USE_HYPERSCHEDULER}")
        return Tensor.copy_(self, value.reshape(self.shape))

    def __float__(self) -> float:
        if self.numel() == 1:
            return float(self.as_subclass(Tensor))
        raise ValueError(f"{self._where()} holds one value per configuration ({self.numel()}) and cannot be read "
                         f"as one number (ReduceLROnPlateau does): {_USE_HYPERSCHEDULER}")

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.as_subclass(Tensor).__reduce_ex__(protocol)

    def __deepcopy__(self, memo: dict) -> Tensor:
        return self.as_subclass(Tensor).__deepcopy__(memo)  # a plain copy: it would copy the group


def _guarded(value: Any, name: str, index: int, group: dict, widths: dict) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_guarded(v, name, index, group, widths) for v in value)
    if not isinstance(value, Tensor) or value.dim() != 1:
        return value
    guarded = value if isinstance(value, PerConfiguration) else value.as_subclass(PerConfiguration)
    guarded._name, guarded._index, guarded._group, guarded._widths = name, index, group, widths
    return guarded


def guard_per_configuration(optimizer: torch.optim.Optimizer) -> None:
    """Make every per-configuration hyperparameter of ``optimizer`` a :class:`PerConfiguration`.

    For inertia's optimizers: call it after each ``add_param_group`` (idempotent);
    it also re-guards the values a ``load_state_dict`` brings.
    """
    for index, group in enumerate(optimizer.param_groups):
        widths = {k: _width(v) for k, v in group.items() if k != "params"}
        widths = {k: w for k, w in widths.items() if _per_configuration(w)}
        for name in widths:
            group[name] = _guarded(group[name], name, index, group, widths)
    if not getattr(optimizer, "_inertia_guarded", False):
        optimizer.register_load_state_dict_post_hook(guard_per_configuration)
        optimizer._inertia_guarded = True
