"""The optimizer engine: any :class:`~inertia.rules.Rule` as a ``torch.optim.Optimizer``.

Param groups, closures, ``state_dict``/``load_state_dict``, hooks and torch's own
``lr_scheduler`` classes work as with ``torch.optim``. A hyperparameter may be a
Python number, a 0-dim tensor, or a 1-D tensor of length N: then every parameter's
first dimension is the configuration axis and configuration i uses the i-th value
(this is how the sweep engine trains N models at once). Tuple hyperparameters
(``betas``) are tuples of such values.

Execution paths (the rule is written once; the path only changes how it is run):

- ``"simple"``: the reference. The rule is applied to each parameter in turn.
- ``"flat"``: the group's parameters are moved (once, values unchanged, same
  ``Parameter`` objects) into one contiguous buffer, the rule's state is kept in
  matching flat buffers whose per-parameter views are what ``optimizer.state``
  shows, and the rule runs ONCE over the whole buffer. Gradients are gathered
  into a flat gradient buffer (a copy, skipped when ``p.grad`` already lives
  there: it does after a step unless ``zero_grad()`` set it to None).
- ``"compiled"``: ``"flat"`` with the rule's update compiled by ``torch.compile``
  (numeric hyperparameters passed as 0-dim tensors, so schedules never recompile).

``execution="auto"`` (default) picks ``"flat"`` for a group whose parameters share
dtype and device, have a gradient, and whose hyperparameters are not per
configuration, ``"compiled"`` instead when such a group holds at least
``COMPILE_MIN_ELEMENTS`` elements and ``torch.compile`` works, else ``"simple"``.
All paths give the same numbers as ``"simple"`` (tests/test_fast_step.py).

What the flat path changes for the user: each parameter's ``.data`` (and, after
a step, ``.grad``) is a view into the group's flat buffer, so ``torch.save`` of a
single parameter or state tensor writes the whole buffer (saving a whole
``state_dict`` writes each buffer once). Two optimizers over the same parameters
would move them back and forth; use ``execution="simple"`` for one of them.
A rule that cannot be compiled in one graph (data-dependent Python control flow)
makes the compiled path warn once and run it on the eager flat path.

The non-finite gradient check costs one reduction: a sum over each flat gradient
buffer (NaN/inf in any element makes the sum non-finite); only when that sum is
not finite does the exact per-parameter search run, so a huge but finite
gradient whose sum overflows is never reported by mistake.
"""
from __future__ import annotations

import collections
import math
import operator
import os
import warnings
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import rules
from .rules import Rule, broadcast_hyper

NONFINITE_POLICIES = ("raise", "skip", "off")
EXECUTIONS = ("auto", "simple", "flat", "compiled")
COMPILE_MIN_ELEMENTS = int(os.environ.get("INERTIA_COMPILE_MIN_ELEMENTS", 2**21))


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or inf; the parameters were left untouched."""


def _shape_hyper(value: Any, param: Tensor) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(broadcast_hyper(v, param) for v in value)
    return broadcast_hyper(value, param)


def _per_configuration(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_per_configuration(v) for v in value)
    return isinstance(value, Tensor) and value.dim() > 0


class _FlatGroup:
    """One param group living in flat buffers: parameters, gradients and the rule's state.

    ``optimizer.state[p]`` holds views of the flat state buffers (so ``state_dict``
    is per parameter as usual); 0-dim state shared by the group (``step``, NAdam's
    ``mu_product``, ...) is one tensor object held by every parameter's state.
    """

    def __init__(self, params: list[Tensor], states: list[dict]):
        self.params = params
        self.ids = [id(p) for p in params]
        first = params[0]
        self.numels = [p.numel() for p in params]
        self.offsets = []
        total = 0
        for n in self.numels:
            self.offsets.append(total)
            total += n
        self.flat_param = torch.empty(total, dtype=first.dtype, device=first.device)
        self.flat_grad = torch.zeros(total, dtype=first.dtype, device=first.device)
        with torch.no_grad():
            torch._foreach_copy_(self._views(self.flat_param), [p.detach() for p in params])
            for p, view in zip(params, self._views(self.flat_param)):
                p.data = view
        self.param_ptrs = [p.data_ptr() for p in params]
        self.grad_views = self._views(self.flat_grad)
        self.grad_ptrs = [g.data_ptr() for g in self.grad_views]
        self.state: dict[str, Tensor] = {}
        self.state_dicts: list[dict] = []
        if states[0]:
            self._adopt(states)
        else:
            self.state["step"] = torch.zeros((), dtype=torch.float32)

    @staticmethod
    def eligible_states(params: list[Tensor], states: list[dict]) -> bool:
        """True when the per-parameter states can be merged (all empty, or alike with equal scalars)."""
        keys = set(states[0])
        if any(set(s) != keys for s in states):
            return False
        for key in keys:
            values = [s[key] for s in states]
            if not all(isinstance(v, Tensor) for v in values):
                return False
            if all(v.shape == p.shape for v, p in zip(values, params)) and key != "step":
                continue
            if all(v.shape == values[0].shape and torch.equal(v, values[0]) for v in values):
                continue
            return False
        return True

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [flat[o:o + n].view_as(p) for o, n, p in zip(self.offsets, self.numels, self.params)]

    def _adopt(self, states: list[dict]) -> None:
        """Move existing per-parameter state into flat buffers."""
        for key in states[0]:
            values = [s[key] for s in states]
            if key != "step" and all(v.shape == p.shape for v, p in zip(values, self.params)):
                flat = torch.empty(self.flat_param.shape, dtype=values[0].dtype, device=values[0].device)
                torch._foreach_copy_(self._views(flat), values)
                self.state[key] = flat
            else:
                self.state[key] = values[0].clone()

    def split(self, optimizer_state: dict) -> None:
        """Point every parameter's state at views of the flat state (after a step created it)."""
        views = {k: self._views(v) if v.shape == self.flat_param.shape and k != "step" else None
                 for k, v in self.state.items()}
        self.state_dicts = []
        for i, p in enumerate(self.params):
            s = {k: (views[k][i] if views[k] is not None else v) for k, v in self.state.items()}
            optimizer_state[p] = s
            self.state_dicts.append(s)

    def valid(self, params: list[Tensor], optimizer_state: dict) -> bool:
        # list comparisons: this runs every step, so it is kept to a few C-level passes
        if list(map(id, params)) != self.ids or [p.data_ptr() for p in params] != self.param_ptrs:
            return False
        if self.state_dicts:
            return all(map(operator.is_, map(optimizer_state.get, params), self.state_dicts))
        return not any(map(optimizer_state.get, params))

    def gather_grads(self) -> None:
        """Make ``flat_grad`` hold the gradients; afterwards every ``p.grad`` is a view of it."""
        ptrs = [p.grad.data_ptr() for p in self.params]
        if ptrs == self.grad_ptrs:
            return
        stale = [i for i, (a, b) in enumerate(zip(ptrs, self.grad_ptrs)) if a != b]
        sources = [self.params[i].grad for i in stale]
        torch._foreach_copy_([self.grad_views[i] for i in stale], sources)
        for i in stale:
            self.params[i].grad = self.grad_views[i]

    def dissolve(self, optimizer_state: dict) -> None:
        """Give every parameter its own copy of the shared scalar state (before a simple step)."""
        for p, s in zip(self.params, self.state_dicts):
            if optimizer_state.get(p) is s:
                for key, value in s.items():
                    if value.shape != p.shape or key == "step":
                        s[key] = value.clone()


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that applies ``rule`` to every parameter.

    Args:
        params: parameters, named parameters or param-group dicts, as for torch.optim.
        rule: the update rule (subclasses set it as a class attribute).
        nonfinite: what to do when a gradient holds NaN/inf: ``"raise"`` (default)
            raises :class:`NonFiniteGradientError` naming the parameter before any
            parameter changes; ``"skip"`` skips the whole step and counts it in
            ``skipped_steps``; ``"off"`` does not check.
        execution: ``"auto"`` (default), ``"simple"``, ``"flat"`` or ``"compiled"``;
            see the module docstring. ``"flat"`` and ``"compiled"`` fall back to
            ``"simple"`` for a group they cannot run (per-configuration
            hyperparameters, mixed dtypes, a parameter without gradient).
        **hyper: the rule's hyperparameters (unknown names are a ``TypeError``).
    """

    rule: Rule

    def __init__(self, params: Iterable, rule: Rule | None = None, *, nonfinite: str = "raise",
                 execution: str = "auto", **hyper: Any):
        if rule is not None:
            self.rule = rule
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        self.nonfinite = nonfinite
        self.execution = execution
        self.skipped_steps = 0
        self._flat: dict[int, _FlatGroup] = {}
        self._compiled: Callable | None = None
        self._compile_failed = False
        super().__init__(params, self.rule.check(hyper))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        given = {k: v for k, v in param_group.items() if k in self.rule.defaults}
        self.rule.check({**self.defaults, **given})
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "nonfinite": self.nonfinite, "skipped_steps": self.skipped_steps,
                "execution": self.execution}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("execution", "auto")
        self.__dict__.setdefault("_flat", {})
        self.__dict__.setdefault("_compiled", None)
        self.__dict__.setdefault("_compile_failed", False)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._flat = {}
        # a state saved from the flat path shares scalar tensors between parameters: unshare them
        seen: set[int] = set()
        for s in self.state.values():
            for key, value in list(s.items()):
                if isinstance(value, Tensor):
                    if id(value) in seen:
                        s[key] = value.clone()
                    seen.add(id(value))

    # ------------------------------------------------------------ non-finite gradients

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

    @staticmethod
    def _maybe_nonfinite(plans: list[tuple[dict, list[Tensor], _FlatGroup | None]]) -> bool:
        """Cheap filter: False guarantees every gradient is finite (one reduction per flat buffer)."""
        sums = []
        for _, params, flat in plans:
            if flat is not None:
                sums.append(flat.flat_grad.sum())
            elif params:
                sums.extend(p.grad.detach().sum() for p in params)
        if not sums:
            return False
        total = sums[0] if len(sums) == 1 else torch.stack([s.to(sums[0].dtype) for s in sums]).sum()
        return not math.isfinite(total.item())

    # ------------------------------------------------------------ execution paths

    def _hyper(self, group: dict, param: Tensor) -> dict[str, Any]:
        return {name: _shape_hyper(group[name], param) for name in self.rule.defaults}

    def _flat_plan(self, index: int, group: dict, params: list[Tensor]) -> _FlatGroup | None:
        """The flat layout for this group if the flat path can run it, else None (and dissolve any)."""
        flat = self._flat.get(index)
        usable = (
            self.execution != "simple"
            and params
            and len(params) == len(group["params"])
            and not any(_per_configuration(group[name]) for name in self.rule.defaults)
        )
        if usable and flat is not None and flat.valid(params, self.state):
            return flat
        if flat is not None:
            flat.dissolve(self.state)
            del self._flat[index]
        if not usable:
            return None
        first = params[0]
        if not (first.is_floating_point() and first.layout == torch.strided):
            return None
        if any(p.dtype != first.dtype or p.device != first.device or p.layout != torch.strided or p.dim() == 0
               or p.grad.is_sparse or p.grad.shape != p.shape for p in params):
            return None
        if len({p.data_ptr() for p in params}) != len(params):
            return None
        states = [self.state.get(p, {}) for p in params]
        if not _FlatGroup.eligible_states(params, states):
            return None
        if sum(p.numel() for p in params) < 2:
            return None
        flat = _FlatGroup(params, [dict(s) for s in states])
        if flat.state_dicts == [] and states[0]:
            flat.split(self.state)
        self._flat[index] = flat
        return flat

    def _use_compiled(self, flat: _FlatGroup) -> bool:
        if self._compile_failed or not flat.state_dicts:
            return False
        if self.execution == "compiled":
            return True
        return self.execution == "auto" and flat.flat_param.numel() >= COMPILE_MIN_ELEMENTS

    def _flat_step(self, group: dict, flat: _FlatGroup) -> None:
        flat.state["step"] += 1
        hyper = self._hyper(group, flat.flat_param)
        if self._use_compiled(flat):
            try:
                self._compiled_update(flat, hyper)
                return
            except Exception as error:  # compilation unavailable: stay on the eager flat path
                self._compile_failed = True
                warnings.warn(f"inertia: torch.compile of {self.rule.name!r} failed ({type(error).__name__}: "
                              f"{error}); using the eager flat path", RuntimeWarning, stacklevel=3)
        created = not flat.state_dicts
        self.rule.update(flat.flat_param, flat.flat_grad, flat.state, hyper)
        if created:
            flat.split(self.state)

    def _compiled_update(self, flat: _FlatGroup, hyper: dict[str, Any]) -> None:
        if self._compiled is None:
            self._compiled = torch.compile(self.rule.update, fullgraph=True, dynamic=False)
        param = flat.flat_param

        # Scalars go in as 1-element tensors of shape [1], never 0-dim: with torch 2.13,
        # Inductor loses in-place updates of 0-dim CPU tensor inputs (and reads stale
        # values after them). A [1] view shares the 0-dim state tensor's storage.
        def as_tensor(value: Any) -> Any:
            if isinstance(value, (tuple, list)):
                return tuple(as_tensor(v) for v in value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return torch.full((1,), value, dtype=param.dtype, device=param.device)
            if isinstance(value, Tensor) and value.dim() == 0:
                return value.view(1)
            return value

        numeric = {name: as_tensor(hyper[name]) for name in self.rule.numeric}
        state = {key: as_tensor(value) for key, value in flat.state.items()}
        self._compiled(param, flat.flat_grad, state, {**hyper, **numeric})

    def _simple_step(self, group: dict, params: list[Tensor]) -> None:
        hyper_cache: dict[tuple, dict[str, Any]] = {}
        for p in params:
            state = self.state[p]
            step = state.get("step")
            # out of place, so that a step tensor shared by several parameters is never counted twice
            state["step"] = (torch.zeros((), dtype=torch.float32) if step is None else step) + 1
            key = (p.dim(), p.shape[:1], p.device, p.dtype)
            hyper = hyper_cache.get(key)
            if hyper is None:
                hyper = hyper_cache[key] = self._hyper(group, p)
            self.rule.update(p, p.grad, state, hyper)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the rule once to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._with_grads()
        plans = [(group, params, self._flat_plan(i, group, params)) for i, (group, params) in enumerate(work)]
        for _, _, flat in plans:
            if flat is not None:
                flat.gather_grads()
        if self.nonfinite != "off" and self._maybe_nonfinite(plans):
            culprit = self._first_nonfinite(work)
            if culprit is not None:
                if self.nonfinite == "skip":
                    self.skipped_steps += 1
                    return loss
                raise NonFiniteGradientError(
                    f"non-finite gradient (NaN or inf) in parameter {culprit}; the step was not applied. "
                    f"Lower the learning rate, clip gradients, or pass nonfinite='skip' to skip such steps."
                )
        for group, params, flat in plans:
            if flat is not None:
                self._flat_step(group, flat)
            elif params:
                self._simple_step(group, params)
        return loss


def _preset_init(preset_name: str):
    preset = rules.get(preset_name)

    def __init__(self, params: Iterable, lr: Any = None, *, nonfinite: str = "raise", execution: str = "auto",
                 **hyper: Any) -> None:
        if lr is not None:
            hyper["lr"] = lr
        RuleOptimizer.__init__(self, params, preset.rule, nonfinite=nonfinite, execution=execution,
                               **{**preset.overrides, **hyper})

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


class Adam(RuleOptimizer):
    r"""Adam, as ``torch.optim.Adam`` (same numbers, same state names).

    ``inertia.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    amsgrad=False, decoupled_weight_decay=False, maximize=False)``. Each beta may be a
    number or a tensor (``[N]`` per configuration). Equations: :mod:`inertia.rules.adaptive`.
    """

    rule = rules.ADAM_RULE
    __init__ = _preset_init("adam")


class AdamW(RuleOptimizer):
    r"""AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay (default 0.01).

    ``inertia.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False)``.
    """

    rule = rules.ADAM_RULE
    __init__ = _preset_init("adamw")


class NAdam(RuleOptimizer):
    r"""NAdam, as ``torch.optim.NAdam``.

    ``inertia.NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)``.
    """

    rule = rules.NADAM_RULE
    __init__ = _preset_init("nadam")


class RMSprop(RuleOptimizer):
    r"""RMSprop, as ``torch.optim.RMSprop``.

    ``inertia.RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
    momentum=0.0, centered=False, maximize=False)``.
    """

    rule = rules.RMSPROP_RULE
    __init__ = _preset_init("rmsprop")


class QHM(RuleOptimizer):
    r"""Quasi-hyperbolic momentum (Ma & Yarats, ICLR 2019).

    ``inertia.QHM(params, lr=0.01, momentum=0.999, nu=0.7, weight_decay=0.0,
    decoupled_weight_decay=False, maximize=False)``::

        b ← βb + (1 − β)g;  θ ← θ − γ[(1 − ν)g + νb]

    ν = 1 is ``inertia.SGD(convention="ema")``, ν = 0 is plain SGD.
    """

    rule = rules.QHM_RULE
    __init__ = _preset_init("qhm")


class AggMo(RuleOptimizer):
    r"""Aggregated momentum (Lucas et al., ICLR 2019).

    ``inertia.AggMo(params, lr=0.01, betas=(0.0, 0.9, 0.99), weight_decay=0.0,
    decoupled_weight_decay=False, maximize=False)``::

        vᵢ ← βᵢvᵢ − g;  θ ← θ + (γ/K)Σᵢvᵢ
    """

    rule = rules.AGGMO_RULE
    __init__ = _preset_init("aggmo")


class ScheduleFreeSGD(RuleOptimizer):
    r"""Schedule-Free SGD (Defazio et al. 2024, "The road less scheduled").

    ``inertia.ScheduleFreeSGD(params, lr=1.0, momentum=0.9, weight_decay=0.0,
    warmup_steps=0, r=0.0, weight_lr_power=2.0, maximize=False)``.

    During training the parameters hold y = (1 − β)z + βx, where gradients are
    taken. Call ``optimizer.eval()`` before evaluating (or saving a model for
    inference): the parameters then hold the averaged iterate x; call
    ``optimizer.train()`` before training again. ``step()`` in eval mode is an error.
    Equations: :mod:`inertia.rules.variants`.
    """

    rule = rules.SCHEDULEFREE_RULE
    _init = _preset_init("schedulefree")

    def __init__(self, params: Iterable, lr: Any = None, **kwargs: Any) -> None:
        self._init(params, lr, **kwargs)
        for group in self.param_groups:
            group.setdefault("train_mode", True)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.param_groups[-1].setdefault("train_mode", True)

    @torch.no_grad()
    def _swap(self, to_train: bool) -> None:
        from .rules.variants import schedulefree_x, schedulefree_y

        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            for p in group["params"]:
                z = self.state.get(p, {}).get("z")
                if z is not None:
                    beta = broadcast_hyper(group["momentum"], p)
                    (schedulefree_y if to_train else schedulefree_x)(p, z, beta)
            group["train_mode"] = to_train

    def eval(self) -> "ScheduleFreeSGD":
        """Put x (the point to evaluate) in the parameters."""
        self._swap(False)
        return self

    def train(self, mode: bool = True) -> "ScheduleFreeSGD":
        """Put y (the point where gradients are taken) back in the parameters."""
        self._swap(mode)
        return self

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError("ScheduleFreeSGD.step() in eval mode: call optimizer.train() first")
        return super().step(closure)


class Lookahead(torch.optim.Optimizer):
    r"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019) around ANY ``torch.optim.Optimizer``.

    ``inertia.Lookahead(optimizer, k=5, alpha=0.5)``: the inner optimizer updates the
    fast weights θ; every k steps the slow weights φ (starting at θ₀) move toward
    them and the fast weights restart there::

        φ ← φ + α(θ − φ),  θ ← φ

    ``param_groups`` are the inner optimizer's (so lr schedulers drive the inner
    learning rate); ``state_dict()`` holds the inner state, the slow weights and the
    step count. For sweeps and races use the rule combinator
    :func:`inertia.rules.lookahead` (registered as ``lookahead`` and ``lookahead_adam``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.optimizer = optimizer
        self.k, self.alpha = k, float(alpha)
        self.lookahead_steps = 0
        torch._C._log_api_usage_once("python.optimizer")
        self.defaults = {**optimizer.defaults, "k": k, "alpha": self.alpha}
        for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                     "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
                     "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"):
            setattr(self, name, collections.OrderedDict())
        self._patch_step_function()
        self.state = collections.defaultdict(dict)  # the slow weights: state[p]["slow"]

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, optimizer={self.optimizer!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every k-th, the slow weights take their step and the fast weights restart there."""
        params = [p for group in self.param_groups for p in group["params"]]
        for p in params:
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()
        loss = self.optimizer.step(closure)
        self.lookahead_steps += 1
        if self.lookahead_steps % self.k == 0:
            slows = [self.state[p]["slow"] for p in params]
            torch._foreach_lerp_(slows, [p.detach() for p in params], self.alpha)
            torch._foreach_copy_([p.detach() for p in params], slows)
        return loss

    def state_dict(self) -> dict[str, Any]:
        params = [p for group in self.param_groups for p in group["params"]]
        return {
            "inner": self.optimizer.state_dict(),
            "slow": {i: self.state[p]["slow"].clone() for i, p in enumerate(params) if "slow" in self.state[p]},
            "lookahead_steps": self.lookahead_steps,
            "k": self.k,
            "alpha": self.alpha,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        params = [p for group in self.param_groups for p in group["params"]]
        self.state = collections.defaultdict(dict)
        for i, slow in state_dict["slow"].items():
            p = params[int(i)]
            self.state[p]["slow"] = slow.to(dtype=p.dtype, device=p.device).clone()
        self.lookahead_steps = int(state_dict["lookahead_steps"])
        self.k, self.alpha = int(state_dict["k"]), float(state_dict["alpha"])


def make_optimizer(name: str, params: Iterable, **hyper: Any) -> RuleOptimizer:
    """Build the optimizer for a registered rule name (``"momentum"``, ``"adam"``, ``"qhm"``, ...).

    ``"schedulefree"`` gives a :class:`ScheduleFreeSGD` (with its train/eval switch).
    """
    preset = rules.get(name)
    nonfinite = hyper.pop("nonfinite", "raise")
    execution = hyper.pop("execution", "auto")
    cls = ScheduleFreeSGD if preset.rule is rules.SCHEDULEFREE_RULE else RuleOptimizer
    if cls is ScheduleFreeSGD:
        return ScheduleFreeSGD(params, nonfinite=nonfinite, execution=execution, **{**preset.overrides, **hyper})
    return RuleOptimizer(params, preset.rule, nonfinite=nonfinite, execution=execution,
                         **{**preset.overrides, **hyper})
