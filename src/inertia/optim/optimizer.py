"""``RuleOptimizer``: any :class:`~inertia.rules.Rule` as a ``torch.optim.Optimizer`` (orchestration:
groups, state dicts, the guard and the paths; see :mod:`inertia.optim`)."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .. import core, rules
from ..rules import Rule
from ..rules.adaptive import scalar_dtype
from ..schedules import guard_per_configuration
from ..stacked import mark, members
from . import paths
from .guard import NonFiniteGuard
from .paths import EXECUTIONS, per_configuration


def _widths(value: Any) -> list[int]:
    """The lengths of a hyperparameter's per-configuration tensors (tuples per component)."""
    if isinstance(value, (tuple, list)):
        return [width for v in value for width in _widths(v)]
    return [value.shape[0]] if isinstance(value, Tensor) and value.dim() == 1 else []


def _rule_ref(rule: Rule) -> Any:
    """A registered rule by preset name (picklable), any other rule as itself."""
    return next((name for name, preset in rules.PRESETS.items() if preset.rule is rule), rule)


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that applies ``rule`` to every parameter.

    Args:
        params: parameters, named parameters or param-group dicts, as for torch.optim.
        rule: the update rule (the classes of :mod:`inertia.optim` set it).
        nonfinite: ``"raise"`` (default), ``"skip"`` or ``"off"``: see :mod:`inertia.optim`.
        execution: ``"auto"`` (default), ``"simple"``, ``"fused"`` or ``"compiled"``; see
            :mod:`inertia.optim.paths`. A fast path falls back to ``"simple"`` for a group it cannot run.
        **hyper: the rule's hyperparameters (unknown names are a ``TypeError``).

    A rule with an evaluation point (Schedule-Free) uses ``eval()``/``train()``.
    """

    rule: Rule

    def __init__(self, params: Iterable, rule: Rule | None = None, *, nonfinite: str = "raise",
                 execution: str = "auto", **hyper: Any):
        if rule is not None:
            self.rule = rule
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        self._guard = NonFiniteGuard(nonfinite)
        self.execution = execution
        self._members: int | None = None          # member count of the stacked parameters, if any
        self._reset_runtime()
        super().__init__(params, self.rule.check(hyper))

    def _reset_runtime(self) -> None:
        self._compiled: Callable | None = None
        self._steps = paths.StepCounter()

    @property
    def nonfinite(self) -> str:
        return self._guard.policy

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

    def _describe(self, p: Tensor) -> str:
        for index, group in enumerate(self.param_groups):
            for position, q in enumerate(group["params"]):
                if q is p:
                    if group.get("param_names") is not None:
                        return repr(group["param_names"][position])
                    return f"group {index}, parameter {position} of shape {tuple(p.shape)}"
        return f"of shape {tuple(p.shape)}"

    # ------------------------------------------------------------ pickling, state dicts

    def __getstate__(self) -> dict[str, Any]:
        marks = [[members(p) for p in group["params"]] for group in self.param_groups]
        return {**super().__getstate__(), "rule": _rule_ref(self.rule), "_guard": self._guard,
                "execution": self.execution, "_marks": marks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling, and ``load_state_dict`` (torch's calls it with the new state and groups only)."""
        rule, marks = state.pop("rule", None), state.pop("_marks", None)
        super().__setstate__(state)
        if rule is not None:
            self.rule = rules.get(rule).rule if isinstance(rule, str) else rule
        self._reset_runtime()
        if marks is not None:  # deepcopy and pickling make Parameters without the mark
            for group, group_marks in zip(self.param_groups, marks):
                for p, n in zip(group["params"], group_marks):
                    if n is not None:
                        mark([p], n)
            self._members = next((n for group_marks in marks for n in group_marks if n is not None), None)
        for group in self.param_groups:  # a state dict from torch.optim or an older inertia
            for key in self.rule.defaults:
                group.setdefault(key, self.defaults[key])
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

    def check_nonfinite(self, wait: bool = True) -> None:
        """Raise :class:`NonFiniteGradientError` if a past step had a non-finite gradient (or stacked update).

        ``wait=False`` looks only at flags that have already reached the host (no sync)."""
        self._guard.check(self._describe, wait)

    @property
    def skipped_steps(self) -> int | Tensor:
        """Steps skipped for a non-finite gradient (``nonfinite="skip"``; reading it syncs). With stacked
        parameters an ``[n]`` tensor: member i's skipped steps (whole skipped steps included)."""
        return self._guard.skipped_steps(self._members)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.check_nonfinite(wait=False)
        super().zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------ the step

    def _states(self, params: list[Tensor]) -> list[dict[str, Tensor]]:
        """The parameters' states, each with its step counter."""
        for p in params:
            if "step" not in self.state[p]:
                self.state[p]["step"] = torch.zeros((), dtype=scalar_dtype(), device=p.device)
        return [self.state[p] for p in params]

    def _path(self, group: dict, params: list[Tensor]) -> str:
        return paths.choose_path(self.execution, self.rule, group, params, list(map(self.state.get, params)))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the rule once to every parameter that has a gradient (skipped on a non-finite one;
        stacked parameters per member: see :mod:`inertia.optim`).

        While ``torch.compile`` traces it, a step that creates state runs eagerly (one graph break, so
        that later steps trace one graph, as torch.optim's ``_init_group`` does), and the non-finite check
        is left to ``zero_grad()``, which runs eagerly."""
        if torch.compiler.is_compiling():
            if any("step" not in self.state.get(p, ()) for g in self.param_groups for p in g["params"]
                   if p.grad is not None):
                return _eager_step(self, closure)
        else:
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
            if any(per_configuration(group[name]) for name in self.rule.numeric):
                self._check_members(group)  # also a per-configuration value set since the group was added
        stacked, work = self._split_stacked(work) if self._guard.active else ([], work)
        found = self._guard.gradient_flag([p for _, ps in work for p in ps]) if self._guard.active and work else None
        if stacked:
            flags, skipped = paths.member_step(self.rule, [(g, ps, self._states(ps)) for g, ps in stacked],
                                               self._members, found)
            self._guard.record(flags, [p for _, ps in stacked for p in ps])
        else:
            skipped = found
        self._guard.count(skipped)
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

    def _plain_step(self, work: list[tuple[dict, list[Tensor]]], found: Tensor | None) -> None:
        """Unstacked parameters on their paths, the whole step skipped where ``found`` is set (the simple
        path reads the flag; the fast paths skip on the device)."""
        chosen = [self._path(group, params) for group, params in work]
        if found is not None and "simple" in chosen and bool(found):
            return
        for (group, params), path in zip(work, chosen):
            states = self._states(params)
            flag = None if found is None or path == "simple" else found.to(params[0].device)
            self._steps.advance(group, states, 1 if flag is None else 1 - flag)
            if path == "simple":
                paths.simple_step(self.rule, group, params, states)
            elif path == "fused":
                paths.fused_step(self.rule, group, params, states, flag)
            elif path == "traced":
                paths.traced_step(self.rule, group, params, states, flag)
            else:
                if self._compiled is None:
                    self._compiled = paths.compile_update(self.rule)
                paths.compiled_step(self._compiled, self.rule, group, params, states, flag)

    # ------------------------------------------------------------ evaluation point

    @torch.no_grad()
    def _move(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group.get("train_mode", True) == to_train:
                continue
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    hyper = paths.group_hyper(self.rule, group, p, members(p) is not None)
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


_eager_step = torch.compiler.disable(RuleOptimizer.step)
