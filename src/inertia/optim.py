"""The optimizer engine: any :class:`~inertia.rules.Rule` as a ``torch.optim.Optimizer``.

Param groups, closures, ``state_dict``/``load_state_dict``, hooks and torch's own
``lr_scheduler`` classes work as with ``torch.optim``, and state dicts move both ways
between inertia's SGD, Adam, AdamW, NAdam, RMSprop and torch.optim's (missing group
keys are filled from the optimizer's defaults on load). A hyperparameter may be a
Python number, a 0-dim tensor, or a 1-D tensor of length N, one value per
configuration: then the group's parameters must be stacked ``[N, ...]`` with N members
(:func:`inertia.stack` marks them, :func:`inertia.stacked.mark` marks tensors stacked
another way) and member i uses the i-th value; on a parameter that is not stacked it is
a ``ValueError``, never a reading of its rows as configurations. Tuple hyperparameters
(``betas``) are tuples of such values. One optimizer holds stacked parameters of one
member count.

The optimizer never changes what a user's parameters are: each keeps its own storage,
and ``optimizer.state[p]`` is the state the step reads and writes (``step`` is a
per-parameter tensor, of torch.optim's dtype). Complex parameters are updated as
``torch.view_as_real`` (as torch.optim does); their state is stored complex.

Execution paths (the rule is written once; the path only changes how it is run):

- ``"simple"``: the reference. The rule is applied to each parameter in turn.
- ``"fused"``: torch's fused kernel for a rule and settings it implements
  (``torch._fused_sgd_`` for SGD in the ``torch`` convention, ``torch._fused_adam_`` and
  ``torch._fused_adamw_`` for Adam and AdamW: :data:`FUSED_KERNELS`), one call per group;
  it skips on the device when the non-finite flag is set.
- ``"compiled"``: ``torch.compile`` of the rule looped over the group's list of
  tensors (Inductor fuses each tensor's update into one pass), the non-finite skip
  included as a select; numeric hyperparameters go in as tensors, so schedules never
  recompile. Compilation time grows with the number of tensors (minutes for hundreds).

``execution="auto"`` (default) picks ``"fused"`` where it applies, else ``"simple"``.
A fast path runs a group whose parameters share dtype and device and whose state the
simple path has created (the first step of a group runs simple), with hyperparameters
that are not per configuration; anything else runs simple. Every path gives the same
numbers as ``"simple"`` to rounding (tests/test_fast_step.py).

Non-finite gradients (``nonfinite=``): every step computes, on the device, one flag
(some gradient holds NaN or inf: torch's mixed-precision check over all gradients, one
read of each, one call per device); when it is set the whole step is skipped on the
device: parameters and state are left untouched. ``"skip"`` counts such steps on the
device (``skipped_steps`` reads the count). ``"raise"`` (default) raises
:class:`NonFiniteGradientError` at the next call of ``step()`` or ``zero_grad()`` after
the flag has reached the host, naming the first parameter whose gradient is then
non-finite (``zero_grad()`` looks before it clears them): on CPU that is always the next
call; on CUDA the flag is copied asynchronously and the check waits (without blocking)
for a later call if the copy has not landed. ``check_nonfinite()`` waits for the flags and raises at once. On the fast
paths ``step()`` reads nothing from the device; the simple path reads the flag to skip.
Unstacked parameters' new values are not checked: that would be one more read of every
parameter on the fused path.

Stacked parameters are guarded per member: the rule runs out of place, and member i
takes its new parameters and state only if its gradients and new values (parameters
and state, every stacked parameter) are all finite, and no unstacked gradient is
non-finite; otherwise its parameters and state are left untouched, and the other
members step exactly as they would alone. State shared by the members (the step
counter, 0-dim entries) advances when any member steps, so after a skipped step a
rule that reads the step (Adam's bias corrections) counts it for that member too; an
entry the rule creates at a step a member skips starts at zero for that member.
``skipped_steps`` is then an ``[n]`` count, one per member, and the error of
``"raise"`` names the members and a parameter. ``step()`` reads nothing from the
device on this path.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import operator
import types
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from . import core, rules
from .rules import Rule
from .rules.adaptive import scalar_dtype
from .rules.base import MEMBER_AXIS
from .schedules import guard_per_configuration
from .stacked import mark, members

NONFINITE_POLICIES = ("raise", "skip", "off")
EXECUTIONS = ("auto", "simple", "fused", "compiled")


class NonFiniteGradientError(FloatingPointError):
    """A gradient (or a stacked member's update) held NaN or inf; that step was skipped (parameters and
    state untouched; stacked parameters: those members' step only)."""


def _per_configuration(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_per_configuration(v) for v in value)
    return isinstance(value, Tensor) and value.dim() > 0


def _widths(value: Any) -> list[int]:
    """The lengths of a hyperparameter's per-configuration tensors (tuples per component)."""
    if isinstance(value, (tuple, list)):
        return [width for v in value for width in _widths(v)]
    return [value.shape[0]] if isinstance(value, Tensor) and value.dim() == 1 else []


def _member_sums(tensors: Iterable[Tensor], n: int) -> Tensor:
    """Σ over each member's elements of every tensor ``[n, ...]``, in float64: ``[n]``, finite iff
    every element is (finite float32 values cannot overflow it: at most 2^128 per element, 2^1024 in all)."""
    return sum(t.reshape(n, -1).sum(1, dtype=torch.float64) for t in tensors)


def _per_member(skip: Tensor, old: Tensor, new: Tensor) -> Tensor:
    """``old`` for the members whose ``skip`` ``[n]`` is set, ``new`` for the others."""
    return torch.where(skip.view(-1, *[1] * (new.dim() - 1)), old, new)


def _real(t: Any) -> Any:
    """A complex tensor as its real view ``[..., 2]`` (what the rule updates); anything else as is."""
    return torch.view_as_real(t) if isinstance(t, Tensor) and t.is_complex() else t


def _as_input(value: Any, like: Tensor) -> Any:
    """A numeric hyperparameter as a tensor input of a compiled graph (tuples per component), so
    that a new value never recompiles. Shape [1]: Dynamo guards on the value of a 0-dim CPU input."""
    if isinstance(value, (tuple, list)):
        return tuple(_as_input(v, like) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((1,), value, dtype=like.dtype, device=like.device)
    return value.view(1) if isinstance(value, Tensor) and value.dim() == 0 else value


def _guarded_update(update: Callable, params: list[Tensor], grads: list[Tensor], states: list[dict],
                    hyper: dict, skip: Tensor | None) -> None:
    """``update`` over a list of tensors (the step counters already advanced); with ``skip`` (a device
    flag) set, nothing changes."""
    for p, g, s in zip(params, grads, states):
        if skip is None:
            update(p, g, s, hyper)
            continue
        new_p, new_s = p.clone(), {k: v.clone() for k, v in s.items()}
        update(new_p, g, new_s, hyper)
        p.copy_(torch.where(skip, p, new_p))
        for k, v in s.items():
            if k != "step":
                v.copy_(torch.where(skip, v, new_s[k]))


def _amp_found(tensors: list[Tensor]) -> Tensor:
    """torch's non-finite check of dense real ``tensors`` on one device, as a 0-dim float32 flag."""
    found = torch.zeros(1, dtype=torch.float32, device=tensors[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, torch.ones_like(found))
    return found.view(())


def _holds_tensor(value: Any) -> bool:
    return any(map(_holds_tensor, value)) if isinstance(value, tuple) else isinstance(value, Tensor)


@dataclasses.dataclass(frozen=True)
class FusedKernel:
    """One of torch's fused multi-tensor kernels for a rule: ``fits(group, state)`` says whether it
    computes the group's settings exactly (given its state as the simple path created it);
    ``run(group, params, grads, states, found)`` applies it, skipping on the device when ``found`` is
    set. The step counters are advanced before ``run``, as torch.optim does."""

    fits: Callable[[dict, dict], bool]
    run: Callable[[dict, list, list, list, Tensor | None], None]


def _sgd_fits(group: dict, state: dict) -> bool:
    return (group["convention"] == "torch" and not (group["decoupled_weight_decay"] and group["weight_decay"] != 0)
            and (group["momentum"] == 0 or "momentum_buffer" in state))


def _sgd_run(group: dict, params: list, grads: list, states: list, found: Tensor | None) -> None:
    torch._fused_sgd_(
        params, grads, [s["momentum_buffer"] for s in states] if group["momentum"] != 0 else [],
        weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
        dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
        is_first_step=False, found_inf=found)


def _adam_fits(group: dict, state: dict) -> bool:
    return "exp_avg" in state and "exp_avg_sq" in state and (not group["amsgrad"] or "max_exp_avg_sq" in state)


def _adam_run(group: dict, params: list, grads: list, states: list, found: Tensor | None) -> None:
    """torch's fused Adam, or AdamW (θ ← θ(1 − γλ) first) with ``decoupled_weight_decay``."""
    kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
    beta1, beta2 = group["betas"]
    kernel(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
           [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [], [s["step"] for s in states],
           lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
           amsgrad=group["amsgrad"], maximize=group["maximize"], found_inf=found)


FUSED_KERNELS = ((rules.SGD_RULE, FusedKernel(_sgd_fits, _sgd_run)),
                 (rules.ADAM_RULE, FusedKernel(_adam_fits, _adam_run)))
"""torch's fused kernels for inertia's own rules (found by identity: a user's rule of the same name is not
these): SGD in the ``torch`` convention (``torch._fused_sgd_``), Adam and AdamW (``torch._fused_adam_``,
``torch._fused_adamw_``); each gives the simple path's numbers to rounding."""


def _fused_kernel(rule: Rule) -> FusedKernel | None:
    return next((kernel for known, kernel in FUSED_KERNELS if known is rule), None)


def _rule_ref(rule: Rule) -> Any:
    """A registered rule by preset name (picklable), any other rule as itself."""
    return next((name for name, preset in rules.PRESETS.items() if preset.rule is rule), rule)


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that applies ``rule`` to every parameter.

    Args:
        params: parameters, named parameters or param-group dicts, as for torch.optim.
        rule: the update rule (subclasses set it as a class attribute).
        nonfinite: ``"raise"`` (default), ``"skip"`` or ``"off"``: see the module docstring.
        execution: ``"auto"`` (default), ``"simple"``, ``"fused"`` or ``"compiled"``;
            see the module docstring. A fast path falls back to ``"simple"`` for a
            group it cannot run.
        **hyper: the rule's hyperparameters (unknown names are a ``TypeError``).

    A rule with an evaluation point (Schedule-Free) adds ``eval()``/``train()``.
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
        self._members: int | None = None          # member count of the stacked parameters, if any
        self._reset_runtime()
        super().__init__(params, self.rule.check(hyper))

    def _reset_runtime(self) -> None:
        self._skipped: Tensor | None = None      # device count of skipped steps ([n] with stacked parameters)
        self._pending: list[tuple] = []          # (host flags, CUDA event or None, params) to check
        self._compiled: Callable | None = None
        self._step_blocks: dict[int, tuple[Tensor, tuple[Tensor, ...]]] = {}   # see _count_step

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        given = {k: v for k, v in param_group.items() if k in self.rule.defaults}
        self.rule.check({**self.defaults, **given})
        super().add_param_group(param_group)
        try:
            self._check_members(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise
        if self.rule.eval_point is not None:
            self.param_groups[-1].setdefault("train_mode", True)
        guard_per_configuration(self)   # torch's schedulers keep one value per configuration, or say so

    def _check_members(self, group: dict) -> None:
        """Stacked parameters of one member count n; a length-n hyperparameter only on parameters stacked
        with n members (:func:`inertia.stack`, :func:`inertia.stacked.mark`)."""
        widths = [(name, width) for name in self.rule.numeric for width in _widths(group[name])]
        count = self._members
        for p in group["params"]:
            n = members(p)
            if n is not None and count not in (None, n):
                raise ValueError(f"parameter {self._describe(p)} is stacked with {n} members and others with "
                                 f"{count}: use one optimizer per stack")
            count = count if n is None else n
            for name, width in widths:
                if n is None:
                    raise ValueError(f"{name} holds {width} values (one per configuration) but parameter "
                                     f"{self._describe(p)} is not stacked: build the model with "
                                     f"inertia.stack(factory, {width}), or mark tensors stacked [{width}, ...] "
                                     f"with inertia.stacked.mark(tensors, {width})")
                if n != width:
                    raise ValueError(f"{name} holds {width} values (one per configuration) but parameter "
                                     f"{self._describe(p)} is stacked with {n} members")
        self._members = count

    # ------------------------------------------------------------ pickling, state dicts

    def __getstate__(self) -> dict[str, Any]:
        marks = [[members(p) for p in group["params"]] for group in self.param_groups]
        return {**super().__getstate__(), "rule": _rule_ref(self.rule), "nonfinite": self.nonfinite,
                "execution": self.execution, "_skipped": self._skipped, "_marks": marks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        rule = state.pop("rule", None)
        super().__setstate__(state)
        if rule is not None:
            self.rule = rules.get(rule).rule if isinstance(rule, str) else rule
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("execution", "auto")
        skipped = self.__dict__.pop("_skipped", None)
        marks = self.__dict__.pop("_marks", [])
        self._reset_runtime()
        self._skipped = skipped
        for group, group_marks in zip(self.param_groups, marks):  # deepcopy makes Parameters without the mark
            for p, n in zip(group["params"], group_marks):
                if n is not None:
                    mark([p], n)
        self._members = next((n for group_marks in marks for n in group_marks if n is not None), None)
        for group in self.param_groups:  # a state dict from torch.optim or an older inertia
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            if self.rule.eval_point is not None:
                group.setdefault("train_mode", True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        guard_per_configuration(self)
        seen: set[int] = set()
        for group in self.param_groups:
            for p in group["params"]:
                s = self.state.get(p)
                if not isinstance(s, dict):
                    continue
                for key, value in list(s.items()):
                    if key == "step" and not isinstance(value, Tensor):  # older torch dicts: a number
                        value = torch.tensor(float(value), dtype=scalar_dtype())
                    if key == "step":
                        value = value.to(device=p.device)
                    if isinstance(value, Tensor) and id(value) in seen:  # shared between parameters
                        value = value.clone()
                    seen.add(id(value))
                    s[key] = value

    # ------------------------------------------------------------ non-finite gradients

    @staticmethod
    def _found_nonfinite(grads: list[Tensor]) -> Tensor:
        """A 0-dim float32 device flag: 1 if any element of ``grads`` is NaN or inf, else 0.

        One call of torch's own check for mixed precision (the kernel ``GradScaler`` runs,
        ``_amp_foreach_non_finite_check_and_unscale_`` with unit scale: one pass over every gradient,
        which it leaves bit for bit as it was); one call per device where the gradients are on
        several, complex gradients as real views, sparse ones by their values."""
        try:
            return _amp_found(grads)
        except (NotImplementedError, RuntimeError):  # complex, sparse, or on several devices
            pass
        by_device: dict[torch.device, list[Tensor]] = {}
        for g in grads:
            g = _real(g.detach().coalesce()._values() if g.is_sparse else g.detach())
            by_device.setdefault(g.device, []).append(g)
        return torch.stack([_amp_found(tensors).to(grads[0].device) for tensors in by_device.values()]).amax()

    def _count_skipped(self, skipped: Tensor) -> None:
        """Add a step's skip flag (0-dim: the whole step; ``[n]``: per member) to the device count."""
        self._skipped = skipped.long() if self._skipped is None else self._skipped + skipped.long()

    def _record(self, flags: Tensor, params: list[Tensor]) -> None:
        """Keep a step's flags (0-dim, or ``[2, P, n]`` for stacked members) for the ``"raise"`` check."""
        if self.nonfinite != "raise":
            return
        event = None
        if flags.is_cuda:
            host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            flags = host
        self._pending.append((flags, event, params))

    def check_nonfinite(self, wait: bool = True) -> None:
        """Raise :class:`NonFiniteGradientError` if a past step had a non-finite gradient (or stacked update).

        ``wait=False`` looks only at flags that have already reached the host (no sync)."""
        while self._pending:
            flags, event, params = self._pending[0]
            if event is not None and not (wait or event.query()):
                return
            if event is not None:
                event.synchronize()
            self._pending.pop(0)
            host = flags.numpy()  # host memory: no device read
            if host.any():
                self._pending.clear()
                raise NonFiniteGradientError(self._nonfinite_message(host, params))

    def _nonfinite_message(self, flags: Any, params: list[Tensor]) -> str:
        """The error for a step's host flags: 0-dim (any gradient), or ``[2, P, n]`` (gradient, update) per member."""
        if flags.ndim == 0:
            return (f"non-finite gradient (NaN or inf) in {self._first_nonfinite(params)}; that step was skipped. "
                    f"Lower the learning rate, clip gradients, or pass nonfinite='skip' to skip such steps.")
        bad = sorted(set(flags.nonzero()[2].tolist()))
        first = bad[0]
        position = flags[:, :, first].any(0).nonzero()[0][0]
        kind = "gradient" if flags[0, position, first] else "update"
        others = f" (all members with one: {', '.join(map(str, bad))})" if len(bad) > 1 else ""
        return (f"non-finite {kind} (NaN or inf) in member {first}{others} of parameter "
                f"{self._describe(params[position])}; those members' step was skipped, the others stepped. "
                f"Lower their learning rate, clip gradients, or pass nonfinite='skip' to skip such members' steps.")

    def _first_nonfinite(self, params: list[Tensor]) -> str:
        """Which of ``params`` had the non-finite gradient, read from their gradients now (the error is
        raised before the next ``zero_grad``/``step`` has replaced them), or "a parameter" if none has now."""
        for p in params:
            g = p.grad
            if g is not None and not bool(torch.isfinite(_real(g.detach().to_dense())).all()):
                return f"parameter {self._describe(p)}"
        return "a parameter (its gradient has been replaced since)"

    def _describe(self, p: Tensor) -> str:
        for index, group in enumerate(self.param_groups):
            for position, q in enumerate(group["params"]):
                if q is p:
                    if group.get("param_names") is not None:
                        return repr(group["param_names"][position])
                    return f"group {index}, parameter {position} of shape {tuple(p.shape)}"
        return f"of shape {tuple(p.shape)}"

    @property
    def skipped_steps(self) -> int | Tensor:
        """Steps skipped for a non-finite gradient (``nonfinite="skip"``; reading it syncs). With stacked
        parameters an ``[n]`` tensor: member i's skipped steps (whole skipped steps included)."""
        count = torch.zeros((), dtype=torch.long) if self._skipped is None else self._skipped.cpu()
        return int(count) if self._members is None else count.expand(self._members).clone()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.check_nonfinite(wait=False)
        super().zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------ execution paths

    def _hyper(self, group: dict, param: Tensor, stacked: bool = False) -> dict[str, Any]:
        """The group's values shaped for ``param``; ``stacked``: its first axis is the member axis."""
        return {**{name: core.shape_hyper(group[name], param) for name in self.rule.defaults}, MEMBER_AXIS: stacked}

    def _ready(self, group: dict, params: list[Tensor]) -> list[dict] | None:
        """The parameters' states if a fast path can run this group (one dtype and device, state created
        by the simple path, plain hyperparameters), else None."""
        if any(_per_configuration(group[name]) for name in self.rule.numeric) \
                or len({members(p) is None for p in params}) > 1:
            return None
        states = list(map(self.state.get, params))
        first, dtype, device = states[0], params[0].dtype, params[0].device
        if type(first) is not dict or "step" not in first:
            return None
        keys = first.keys()
        if any(type(state) is not dict or state.keys() != keys for state in states) \
                or any(p.dtype != dtype or p.device != device for p in params) \
                or not all(isinstance(value, Tensor) for state in states for value in state.values()):
            return None
        return states

    def _fusable(self, group: dict, first_state: dict, first: Tensor) -> bool:
        """Whether one of torch's fused kernels (:data:`FUSED_KERNELS`) computes this group's rule and
        settings exactly, with Python-number hyperparameters on a dense real floating-point parameter."""
        kernel = _fused_kernel(self.rule)
        if kernel is None or group.get("cautious") or any(_holds_tensor(group[name]) for name in self.rule.numeric):
            return False
        return (kernel.fits(group, first_state) and first.is_floating_point() and not first.is_sparse
                and first.device.type in _get_fused_kernels_supported_devices())

    def _path(self, group: dict, params: list[Tensor]) -> tuple[str, list[dict] | None]:
        """The group's execution path, with its parameters' states for a fast one."""
        states = None if self.execution == "simple" else self._ready(group, params)
        if states is None:
            return "simple", None
        if self.execution in ("auto", "fused") and self._fusable(group, states[0], params[0]):
            return "fused", states
        return ("compiled", states) if self.execution == "compiled" else ("simple", None)

    def _shaped_hyper(self, group: dict, param: Tensor, cache: dict[tuple, dict[str, Any]],
                      stacked: bool) -> dict[str, Any]:
        """:meth:`_hyper`, made once per shape class of a group's parameters within one step."""
        key = (param.dim(), param.shape[:1], param.device, param.dtype, stacked)
        if key not in cache:
            cache[key] = self._hyper(group, param, stacked)
        return cache[key]

    def _state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=scalar_dtype(), device=p.device)
        return state

    def _store_created(self, p: Tensor, state: dict, work: dict[str, Tensor]) -> None:
        """Keep the entries the rule created in ``work``: stored complex for a complex parameter."""
        for k, v in work.items():
            if state.get(k) is None:
                element = p.is_complex() and self.rule.state_kind(k) == "element"
                state[k] = torch.view_as_complex(v) if element else v

    def _simple_step(self, group: dict, params: list[Tensor]) -> None:
        cache: dict[tuple, dict[str, Any]] = {}
        states = [self._state(p) for p in params]
        self._count_step(group, states, 1)
        for p, state in zip(params, states):
            if p.is_complex():  # the rule updates real views; the entries it creates are kept complex
                param, work = _real(p), {k: _real(v) for k, v in state.items()}
                self.rule.update(param, _real(p.grad), work,
                                 self._shaped_hyper(group, param, cache, members(p) is not None))
                self._store_created(p, state, work)
            else:
                self.rule.update(p, p.grad, state, self._shaped_hyper(group, p, cache, members(p) is not None))

    def _member_step(self, work: list[tuple[dict, list[Tensor]]], found: Tensor | None) -> Tensor:
        """The rule on stacked parameters out of place; member i takes the new values unless its gradients or
        new values (any parameter) are non-finite, or ``found`` (an unstacked gradient) is set. Returns the
        members skipped, ``[n]``, on the device (nothing is read from it)."""
        n, staged, sums = self._members, [], []
        for group, params in work:
            cache: dict[tuple, dict[str, Any]] = {}
            for p in params:
                param, grad = _real(p).clone(), _real(p.grad)
                new = {k: _real(v).clone() for k, v in self._state(p).items()}
                new["step"] += 1
                self.rule.update(param, grad, new, self._shaped_hyper(group, param, cache, True))
                entries = [v for k, v in new.items() if k != "step" and v.dim() > 0]
                sums.append(torch.stack([_member_sums([grad], n), _member_sums([param, *entries], n)]))
                staged.append((p, param, new))
        flags = ~torch.isfinite(torch.stack(sums, dim=1))      # [gradient / update, parameter, member]
        skip = flags.any(0).any(0)
        if found is not None:
            skip |= found.to(skip.device).bool()
        self._record(flags, [p for _, params in work for p in params])
        for p, param, new in staged:
            self._commit(p, param, new, skip)
        return skip

    def _commit(self, p: Tensor, param: Tensor, new: dict[str, Tensor], skip: Tensor) -> None:
        """Members not in ``skip`` take the staged parameter and state; shared (0-dim) entries advance when
        any member steps; an entry the rule created starts at zero for the skipped members."""
        state, stepped = self.state[p], ~skip.all()
        _real(p).copy_(_per_member(skip, _real(p), param))
        state["step"].add_(stepped.to(state["step"].dtype))
        created = {}
        for k, v in new.items():
            if k == "step":
                continue
            old = state.get(k)
            if old is None:
                created[k] = v if v.dim() == 0 else _per_member(skip, torch.zeros_like(v), v)
            else:
                _real(old).copy_(torch.where(stepped, v, _real(old)) if v.dim() == 0 else
                                 _per_member(skip, _real(old), v))
        self._store_created(p, state, created)

    def _fused_step(self, group: dict, params: list[Tensor], states: list[dict], found: Tensor | None) -> None:
        self._count_step(group, states, 1 if found is None else 1 - found)
        _fused_kernel(self.rule).run(group, params, [p.grad for p in params], states, found)

    def _count_step(self, group: dict, states: list[dict[str, Tensor]], increment: Any) -> None:
        """Add ``increment`` to every per-parameter step counter of the group: one add over one tensor
        ``[P]`` whose elements they are (each ``state["step"]`` a 0-dim view of it), made again whenever a
        counter is not the view kept (a loaded state dict, a replaced entry). Counters of several dtypes
        (a state dict may bring them) or devices, or that are not tensors, are counted one by one."""
        block, views = self._step_blocks.get(id(group), (None, ()))
        steps = [state["step"] for state in states]
        if len(views) != len(steps) or not all(map(operator.is_, steps, views)):
            if not all(isinstance(step, Tensor) for step in steps) or len({(step.dtype, step.device)
                                                                          for step in steps}) > 1:
                for state in states:
                    state["step"] += increment
                return
            block = torch.stack(steps)
            views = block.unbind(0)
            for state, view in zip(states, views):
                state["step"] = view
            self._step_blocks[id(group)] = (block, views)
        block.add_(increment)

    def _compiled_step(self, group: dict, params: list[Tensor], states: list[dict], found: Tensor | None) -> None:
        if self._compiled is None:
            # a code object of its own, so that Dynamo's recompile limit counts this optimizer's graphs only
            code = _guarded_update.__code__.replace(co_name=f"{self.rule.name}_list_update")
            fn = types.FunctionType(code, _guarded_update.__globals__)
            self._compiled = torch.compile(functools.partial(fn, self.rule.update), fullgraph=True, dynamic=False)
        first = _real(params[0])
        hyper = self._hyper(group, first, members(params[0]) is not None)
        hyper.update({name: _as_input(hyper[name], first) for name in self.rule.numeric})

        def one(t: Tensor) -> Tensor:  # mutated inputs go in as [1], never 0-dim: Inductor (torch 2.13,
            t = _real(t)                  # CPU) loses in-place updates of 0-dim inputs
            return t.view(1) if t.dim() == 0 else t

        self._count_step(group, states, 1 if found is None else 1 - found)
        states = [{k: one(v) for k, v in state.items()} for state in states]
        skip = None if found is None else found.view(1).bool()
        self._compiled([one(p) for p in params], [one(p.grad) for p in params], states, hyper, skip)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the rule once to every parameter that has a gradient (skipped on a non-finite one;
        stacked parameters per member: see the module docstring)."""
        self.check_nonfinite(wait=False)
        if self.rule.eval_point is not None and not all(g["train_mode"] for g in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() in eval mode: call optimizer.train() first")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]
        work = [(group, params) for group, params in work if params]
        for group, _ in work:
            if any(_per_configuration(group[name]) for name in self.rule.numeric):
                self._check_members(group)  # also a per-configuration value set since the group was added
        guard = self.nonfinite != "off"
        stacked, work = self._split_stacked(work) if guard else ([], work)
        found = self._gradient_flags(work) if guard and work else None
        skipped = self._member_step(stacked, found) if stacked else found
        if self.nonfinite == "skip" and skipped is not None:
            self._count_skipped(skipped)
        if work:
            self._plain_step(work, found)
        return loss

    def _split_stacked(self, work: list[tuple[dict, list[Tensor]]]) -> tuple[list, list]:
        """Each group's parameters with a gradient as (stacked ones, the others), empty groups left out."""
        if self._members is None:
            return [], work
        stacked, plain = [], []
        for group, params in work:
            for part, chosen in ((stacked, [p for p in params if members(p) is not None]),
                                 (plain, [p for p in params if members(p) is None])):
                if chosen:
                    part.append((group, chosen))
        return stacked, plain

    def _gradient_flags(self, work: list[tuple[dict, list[Tensor]]]) -> Tensor:
        """Whether any gradient is non-finite, 0-dim float on the device (kept for ``"raise"``)."""
        params = [p for _, group_params in work for p in group_params]
        found = self._found_nonfinite([p.grad for p in params])
        self._record(found, params)
        return found

    def _plain_step(self, work: list[tuple[dict, list[Tensor]]], found: Tensor | None) -> None:
        """Unstacked parameters on their paths, the whole step skipped where ``found`` is set."""
        paths = [self._path(group, params) for group, params in work]
        if found is not None and any(path == "simple" for path, _ in paths) and bool(found):  # simple reads the flag
            return
        for (group, params), (path, states) in zip(work, paths):
            if path == "simple":
                self._simple_step(group, params)
            else:
                getattr(self, f"_{path}_step")(group, params, states,
                                               None if found is None else found.to(params[0].device))

    # ------------------------------------------------------------ evaluation point

    @torch.no_grad()
    def _move(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group.get("train_mode", True) == to_train:
                continue
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    hyper = self._hyper(group, p, members(p) is not None)
                    p.copy_(self.rule.train_point(p, state, hyper) if to_train
                            else core.eval_point(self.rule, p, state, hyper))
            group["train_mode"] = to_train

    def eval(self) -> "RuleOptimizer":
        """Put the rule's evaluation point in the parameters (Schedule-Free: x); a no-op for most rules."""
        if self.rule.eval_point is not None:
            self._move(False)
        return self

    def train(self, mode: bool = True) -> "RuleOptimizer":
        """Put the training point back in the parameters (Schedule-Free: y)."""
        if self.rule.eval_point is not None:
            self._move(mode)
        return self

TORCH_FLAGS = ("foreach", "fused", "capturable", "differentiable")
"""torch.optim's execution flags: the torch-named classes accept and ignore them (``execution=`` chooses)."""


def _preset_init(preset_name: str, default_lr: float | None = None, torch_flags: bool = False):
    """``__init__`` of an optimizer class for a preset; ``default_lr`` overrides the preset's (torch's
    value); with ``torch_flags``, :data:`TORCH_FLAGS` are accepted and ignored (drop-in for torch.optim)."""
    preset = rules.get(preset_name)

    def __init__(self, params: Iterable, lr: Any = default_lr, *, nonfinite: str = "raise",
                 execution: str = "auto", **hyper: Any) -> None:
        if lr is not None:
            hyper["lr"] = lr
        if torch_flags:
            for flag in TORCH_FLAGS:
                hyper.pop(flag, None)
        RuleOptimizer.__init__(self, params, preset.rule, nonfinite=nonfinite, execution=execution,
                               **{**preset.overrides, **hyper})

    return __init__


class SGD(RuleOptimizer):
    r"""SGD with optional heavy-ball or Nesterov momentum, in the ``torch``, ``sutskever`` or ``ema`` convention.

    ``inertia.SGD(params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
    weight_decay=0.0, decoupled_weight_decay=False, convention="torch", maximize=False)``.
    With ``convention="torch"`` (the default) it gives the same numbers as
    ``torch.optim.SGD``. The equations are in :mod:`inertia.rules.sgd`.
    """

    rule = rules.SGD_RULE
    __init__ = _preset_init("sgd", default_lr=1e-3, torch_flags=True)  # torch.optim.SGD's default


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
    __init__ = _preset_init("adam", torch_flags=True)


class AdamW(RuleOptimizer):
    r"""AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay (default 0.01).

    ``inertia.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False)``.
    """

    rule = rules.ADAM_RULE
    __init__ = _preset_init("adamw", torch_flags=True)


class NAdam(RuleOptimizer):
    r"""NAdam, as ``torch.optim.NAdam``.

    ``inertia.NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)``.
    """

    rule = rules.NADAM_RULE
    __init__ = _preset_init("nadam", torch_flags=True)


class RMSprop(RuleOptimizer):
    r"""RMSprop, as ``torch.optim.RMSprop``.

    ``inertia.RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
    momentum=0.0, centered=False, maximize=False)``.
    """

    rule = rules.RMSPROP_RULE
    __init__ = _preset_init("rmsprop", torch_flags=True)


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
    inference): the parameters then hold the averaged iterate x (the rule's declared
    evaluation point); call ``optimizer.train()`` before training again. ``step()`` in
    eval mode is an error. Equations: :mod:`inertia.rules.variants`.
    """

    rule = rules.SCHEDULEFREE_RULE
    __init__ = _preset_init("schedulefree")


class Muon(RuleOptimizer):
    r"""Muon (Jordan et al. 2024), as ``torch.optim.Muon`` on matrices, AdamW for the other parameters.

    ``inertia.Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
    ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn="original",
    convention="ema", cautious=False, fallback=True, fallback_lr_ratio=1.0, fallback_betas=(0.9, 0.999),
    fallback_eps=1e-8, fallback_weight_decay=0.01)``. Conv weights are orthogonalized flattened to 2-D;
    parameters with fewer than two axes go to AdamW (lr · fallback_lr_ratio). Equations: :mod:`inertia.rules.muon`.
    """

    rule = rules.MUON_RULE
    __init__ = _preset_init("muon")


class Lion(RuleOptimizer):
    r"""Lion (Chen et al. 2023): ``inertia.Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
    maximize=False, cautious=False)``. Equations: :mod:`inertia.rules.lion`."""

    rule = rules.LION_RULE
    __init__ = _preset_init("lion")


class AdEMAMix(RuleOptimizer):
    r"""AdEMAMix (Pagliardini et al. 2024): ``inertia.AdEMAMix(params, lr=1e-3, betas=(0.9, 0.999, 0.9999),
    alpha=5.0, eps=1e-8, weight_decay=0.0, maximize=False, cautious=False)``. The paper's warm-ups of α and
    β₃: ``HyperScheduler(opt, **inertia.schedules.ademamix_warmups(T))``. Equations: :mod:`inertia.rules.ademamix`."""

    rule = rules.ADEMAMIX_RULE
    __init__ = _preset_init("ademamix")


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
