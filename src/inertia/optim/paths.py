"""The execution paths: the rule is written once, and a path only changes how it is run.

- :func:`simple_step`: the reference, the rule applied to each parameter in turn;
- :func:`fused_step`: one of torch's fused multi-tensor kernels (:data:`FUSED_KERNELS`) for a rule and
  settings it computes, one call per group, skipping on the device when the non-finite flag is set;
- :func:`compiled_step`: ``torch.compile`` of the rule looped over the group's list of tensors (Inductor
  fuses each tensor's update into one pass), the skip included as a select; numeric hyperparameters go
  in as tensors, so a new value never recompiles;
- :func:`traced_step`: while ``torch.compile`` traces a training step that calls ``step()``, the rule
  over the group's list as plain tensor code for the enclosing graph (torch's fused kernels have no
  fake implementation; the simple path would read the non-finite flag on the host), the skip a select;
- :func:`member_step`: parameters stacked ``[n, ...]`` under the non-finite guard, per member.

:func:`choose_path` picks one for a group, as torch's ``sgd()`` picks among ``_single_tensor_sgd``,
``_multi_tensor_sgd`` and ``_fused_sgd``: a fast path runs only where it gives the simple path's numbers
(which are torch.optim's for-loop's): one dtype and device, float32 or float64 (complex for the compiled
path), dense gradients, state created by the simple path in the parameter's dtype; the fused kernels also
need a parameter that is dense in memory with its gradient and state laid out alike, and a device they
support. Anything else runs simple; while ``torch.compile`` traces the step, a group of one real dtype and
device with dense gradients and plain hyperparameters runs traced. "The same numbers" is to rounding:
torch's fused SGD rounds the last bit of some elements of a short tensor otherwise than torch's own
for-loop, and so does this path. :func:`inertia.fit` takes the simple path, the sweep's, so that it
gives a sweep member's numbers to the bit.
"""
from __future__ import annotations

import dataclasses
import operator
import types
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from .. import core, rules
from ..rules import Rule
from ..rules.base import MEMBER_AXIS
from ..stacked import members
from .guard import real

EXECUTIONS = ("auto", "simple", "fused", "compiled")
FAST_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
"""Dtypes a fast path runs: in float16 and bfloat16 a fused or compiled kernel computes in float32 between
its reads and writes, where torch.optim's for-loop rounds after every operation."""
FUSED_DTYPES = (torch.float32, torch.float64)


def per_configuration(value: Any) -> bool:
    """Whether a hyperparameter holds one value per configuration (a 1-D tensor; tuples per component)."""
    if isinstance(value, (tuple, list)):
        return any(per_configuration(v) for v in value)
    return isinstance(value, Tensor) and value.dim() > 0


def group_hyper(rule: Rule, group: dict, param: Tensor, stacked: bool = False) -> dict[str, Any]:
    """The group's hyperparameters shaped for ``param``, and under ``MEMBER_AXIS`` whether its first axis
    is the member axis (``stacked``: parameters of :func:`inertia.stack` or marked stacked)."""
    return {**{name: core.shape_hyper(group[name], param, name) for name in rule.defaults}, MEMBER_AXIS: stacked}


# ---------------------------------------------------------------- choosing


@dataclasses.dataclass(frozen=True)
class FusedKernel:
    """One of torch's fused multi-tensor kernels for a rule: ``fits(group, state)`` says whether it computes
    the group's settings exactly (given its state as the simple path created it); ``run(group, params,
    grads, states, found)`` applies it, skipping on the device when ``found`` is set. The step counters are
    advanced before ``run``, as torch.optim does."""

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


def _holds_tensor(value: Any) -> bool:
    return any(map(_holds_tensor, value)) if isinstance(value, tuple) else isinstance(value, Tensor)


def _dense(t: Tensor) -> bool:
    """Whether ``t``'s elements fill its memory without gaps or overlaps, in any order of dimensions."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=operator.itemgetter(1)):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def _element_keys(rule: Rule, state: dict) -> list[str] | None:
    """The state's entries laid out as the parameter (:attr:`Rule.state`), or None for an undeclared one."""
    try:
        return [key for key in state if key != "step" and rule.state_kind(key) == "element"]
    except KeyError:
        return None


def _uniform(rule: Rule, group: dict, params: list[Tensor]) -> bool:
    """Plain hyperparameters, one dtype and device, dense gradients."""
    dtype, device = params[0].dtype, params[0].device
    return (not any(per_configuration(group[name]) for name in rule.numeric)
            and len({members(p) is None for p in params}) == 1      # stacked and plain ones apart
            and all(p.dtype == dtype and p.device == device and p.grad.layout == torch.strided for p in params))


def _ready(rule: Rule, group: dict, params: list[Tensor], states: list[Any]) -> bool:
    """Whether a fast path can run this group: plain hyperparameters, one dtype in :data:`FAST_DTYPES` and
    one device, dense gradients, and state the simple path has created, in the parameter's dtype."""
    first, dtype = states[0], params[0].dtype
    if dtype not in FAST_DTYPES or type(first) is not dict or "step" not in first or not _uniform(rule, group, params):
        return False
    keys = first.keys()
    if not all(type(state) is dict and state.keys() == keys and all(isinstance(v, Tensor) for v in state.values())
               for state in states):
        return False
    elements = _element_keys(rule, first)
    return elements is not None and all(state[key].dtype == dtype for state in states for key in elements)


def _fusable(rule: Rule, group: dict, params: list[Tensor], states: list[dict]) -> bool:
    """Whether one of torch's fused kernels computes this group's rule and settings exactly: Python-number
    hyperparameters, float32 or float64, a supported device, each parameter dense with its gradient and
    state laid out as it is (the kernels read every tensor as one flat array)."""
    kernel = _fused_kernel(rule)
    first = params[0]
    if (kernel is None or group.get("cautious") or first.dtype not in FUSED_DTYPES or any(_holds_tensor(group[n]) for n in rule.numeric)
            or first.device.type not in _get_fused_kernels_supported_devices() or not kernel.fits(group, states[0])):
        return False
    elements = _element_keys(rule, states[0])
    return all(_dense(p) and p.grad.stride() == p.stride() and all(s[key].stride() == p.stride() for key in elements)
               for p, s in zip(params, states))


def choose_path(execution: str, rule: Rule, group: dict, params: list[Tensor], states: list[Any]) -> str:
    """The path for a group's parameters with a gradient (``states``: theirs, as stored): ``"simple"``,
    ``"fused"``, ``"compiled"`` or ``"traced"``; see the module docstring."""
    if torch.compiler.is_compiling():
        traceable = params[0].dtype in FUSED_DTYPES and _uniform(rule, group, params)
        return "traced" if traceable else "simple"
    if execution == "simple" or not _ready(rule, group, params, states):
        return "simple"
    if execution in ("auto", "fused") and _fusable(rule, group, params, states):
        return "fused"
    return "compiled" if execution == "compiled" else "simple"


# ---------------------------------------------------------------- the paths


def _shaped_hyper(rule: Rule, group: dict, param: Tensor, cache: dict[tuple, dict[str, Any]],
                  stacked: bool) -> dict[str, Any]:
    """:func:`group_hyper`, made once per shape class of a group's parameters within one step."""
    key = (param.dim(), param.shape[:1], param.device, param.dtype, stacked)
    if key not in cache:
        cache[key] = group_hyper(rule, group, param, stacked)
    return cache[key]


def store_created(rule: Rule, p: Tensor, state: dict, work: dict[str, Tensor]) -> None:
    """Keep the entries the rule created in ``work``: stored complex for a complex parameter."""
    for k, v in work.items():
        if state.get(k) is None:
            element = p.is_complex() and rule.state_kind(k) == "element"
            state[k] = torch.view_as_complex(v) if element else v


def simple_step(rule: Rule, group: dict, params: list[Tensor], states: list[dict]) -> None:
    """The rule on each parameter in turn (the step counters already advanced)."""
    cache: dict[tuple, dict[str, Any]] = {}
    for p, state in zip(params, states):
        if p.is_complex():  # the rule updates real views; the entries it creates are kept complex
            param, work = real(p), {k: real(v) for k, v in state.items()}
            rule.update(param, real(p.grad), work, _shaped_hyper(rule, group, param, cache, members(p) is not None))
            store_created(rule, p, state, work)
        else:
            rule.update(p, p.grad, state, _shaped_hyper(rule, group, p, cache, members(p) is not None))


def fused_step(rule: Rule, group: dict, params: list[Tensor], states: list[dict], found: Tensor | None) -> None:
    """torch's fused kernel for the rule over the group, skipped on the device where ``found`` is set."""
    _fused_kernel(rule).run(group, params, [p.grad for p in params], states, found)


def _guarded_update(update: Callable, params: list[Tensor], grads: list[Tensor], states: list[dict],
                    hyper: dict, skip: Tensor | None) -> None:
    """``update`` over a list of tensors (the step counters already advanced); with ``skip`` (a device
    flag) set, nothing changes, and an entry the rule creates starts at zero."""
    for p, g, s in zip(params, grads, states):
        if skip is None:
            update(p, g, s, hyper)
            continue
        new_p, new_s = p.clone(), {k: v.clone() for k, v in s.items()}
        update(new_p, g, new_s, hyper)
        p.copy_(torch.where(skip, p, new_p))
        for k, v in new_s.items():
            if k not in s:
                s[k] = torch.where(skip, torch.zeros_like(v), v)
            elif k != "step":
                s[k].copy_(torch.where(skip, s[k], v))


def compile_update(rule: Rule) -> Callable:
    """``torch.compile`` of the rule over lists of tensors, under a code object of its own (named after the
    rule), so that Dynamo's recompile limit counts the graphs of one optimizer only."""
    code = _guarded_update.__code__.replace(co_name=f"{rule.name}_list_update")
    return torch.compile(types.FunctionType(code, _guarded_update.__globals__), fullgraph=True, dynamic=False)


def _as_input(value: Any, like: Tensor) -> Any:
    """A numeric hyperparameter as a tensor input of a compiled graph (tuples per component), so
    that a new value never recompiles. Shape [1]: Dynamo guards on the value of a 0-dim CPU input."""
    if isinstance(value, (tuple, list)):
        return tuple(_as_input(v, like) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((1,), value, dtype=like.dtype, device=like.device)
    return value.view(1) if isinstance(value, Tensor) and value.dim() == 0 else value


def _one(t: Tensor) -> Tensor:
    """A mutated input of a compiled graph: real, and [1] for a 0-dim tensor (Inductor on CPU loses
    in-place updates of 0-dim inputs)."""
    t = real(t)
    return t.view(1) if t.dim() == 0 else t


def compiled_step(compiled: Callable, rule: Rule, group: dict, params: list[Tensor], states: list[dict],
                  found: Tensor | None) -> None:
    """``compiled`` (from :func:`compile_update`) over the group, a no-op on the device where ``found`` is set."""
    first = real(params[0])
    hyper = group_hyper(rule, group, first, members(params[0]) is not None)
    hyper.update({name: _as_input(hyper[name], first) for name in rule.numeric})
    states = [{k: _one(v) for k, v in state.items()} for state in states]
    skip = None if found is None else found.view(1).bool()
    compiled(rule.update, [_one(p) for p in params], [_one(p.grad) for p in params], states, hyper, skip)


def traced_step(rule: Rule, group: dict, params: list[Tensor], states: list[dict], found: Tensor | None) -> None:
    """The rule over the group as plain tensor code, for the graph ``torch.compile`` is tracing: the
    compiled path's inputs (numeric hyperparameters as tensors: no rule reads a number from a tensor),
    :func:`_guarded_update` itself in place of its compilation."""
    compiled_step(_guarded_update, rule, group, params, states, found)


def _member_sums(tensors: list[Tensor], n: int) -> Tensor:
    """Σ over each member's elements of every tensor ``[n, ...]``, in float64: ``[n]``, finite iff
    every element is (finite float32 values cannot overflow it: at most 2^128 per element, 2^1024 in all)."""
    return sum(t.reshape(n, -1).sum(1, dtype=torch.float64) for t in tensors)


def _per_member(skip: Tensor, old: Tensor, new: Tensor) -> Tensor:
    """``old`` for the members whose ``skip`` ``[n]`` is set, ``new`` for the others."""
    return torch.where(skip.view(-1, *[1] * (new.dim() - 1)), old, new)


def member_step(rule: Rule, work: list[tuple[dict, list[Tensor], list[dict]]], n: int,
                found: Tensor | None) -> tuple[Tensor, Tensor]:
    """The rule on stacked parameters out of place; member i takes the new values unless its gradients or
    new values (any parameter) are non-finite, or ``found`` (an unstacked gradient) is set. Returns the
    flags ``[2, P, n]`` (gradient / update, parameter, member) and the members skipped ``[n]``, on the
    device (nothing is read from it)."""
    staged, sums = [], []
    for group, params, states in work:
        cache: dict[tuple, dict[str, Any]] = {}
        for p, state in zip(params, states):
            param, grad = real(p).clone(), real(p.grad)
            new = {k: real(v).clone() for k, v in state.items()}
            new["step"] += 1
            rule.update(param, grad, new, _shaped_hyper(rule, group, param, cache, True))
            entries = [v for k, v in new.items() if k != "step" and v.dim() > 0]
            sums.append(torch.stack([_member_sums([grad], n), _member_sums([param, *entries], n)]))
            staged.append((p, state, param, new))
    flags = ~torch.isfinite(torch.stack(sums, dim=1))
    skip = flags.any(0).any(0)
    if found is not None:
        skip |= found.to(skip.device).bool()
    for p, state, param, new in staged:
        _commit(rule, p, state, param, new, skip)
    return flags, skip


def _commit(rule: Rule, p: Tensor, state: dict, param: Tensor, new: dict[str, Tensor], skip: Tensor) -> None:
    """Members not in ``skip`` take the staged parameter and state; shared (0-dim) entries advance when
    any member steps; an entry the rule created starts at zero for the skipped members."""
    stepped = ~skip.all()
    real(p).copy_(_per_member(skip, real(p), param))
    state["step"].add_(stepped.to(state["step"].dtype))
    created = {}
    for k, v in new.items():
        if k == "step":
            continue
        old = state.get(k)
        if old is None:
            created[k] = v if v.dim() == 0 else _per_member(skip, torch.zeros_like(v), v)
        else:
            real(old).copy_(torch.where(stepped, v, real(old)) if v.dim() == 0 else _per_member(skip, real(old), v))
    store_created(rule, p, state, created)


class StepCounter:
    """Advances a group's per-parameter step counters with one add over one tensor ``[P]`` whose elements
    they are (each ``state["step"]`` a 0-dim view of it), made again whenever a counter is not the view
    kept (a loaded state dict, a replaced entry). Counters of several dtypes (a state dict may bring them)
    or devices, or that are not tensors, are counted one by one."""

    def __init__(self) -> None:
        self._blocks: dict[int, tuple[Tensor, tuple[Tensor, ...]]] = {}

    def advance(self, group: dict, states: list[dict[str, Tensor]], increment: Any) -> None:
        block, views = self._blocks.get(id(group), (None, ()))
        steps = [state["step"] for state in states]
        if len(views) != len(steps) or not all(map(operator.is_, steps, views)):
            if torch.compiler.is_compiling() or not all(isinstance(step, Tensor) for step in steps) or len(
                    {(step.dtype, step.device) for step in steps}) > 1:
                for state in states:
                    state["step"] += increment
                return
            block = torch.stack(steps)
            views = block.unbind(0)
            for state, view in zip(states, views):
                state["step"] = view
            self._blocks[id(group)] = (block, views)
        block.add_(increment)
