"""The one place where a rule meets an engine.

A :class:`Stack` holds M *members* (configurations) of one rule: parameters whose
first dimension is the member axis ``[M, ...]``, the rule's state for each, the
step counter, and :class:`MemberHyper`, every hyperparameter as a number (the same
for all members), an ``[M]`` tensor (one value each) or a schedule of the step
giving either. The sweep engine (N configurations x K folds of a model) and the race
engine (N points on a surface) run every update through a Stack; the optimizer
engine, which updates a user's own parameters in place, shares its pieces:
:func:`shape_hyper`, :func:`validate_schedules` and :func:`eval_point`.

The rule declares the layout of its state (:attr:`inertia.rules.Rule.state`), so
dropping members selects exactly the per-element and per-member entries; and its
evaluation point (Schedule-Free evaluates at x, trains at y), which
:meth:`Stack.eval_params` returns without touching the training point.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .rules import Rule, broadcast_hyper
from .rules.base import FIXED_HYPER, MEMBER_AXIS
from .schedules import Schedule

#: steps at which a schedule's values are validated before training (besides the first and last)
VALIDATION_POINTS = 8


def shape_hyper(value: Any, param: Tensor) -> Any:
    """A hyperparameter's value shaped for ``param`` (tuples per component; see
    :func:`inertia.rules.broadcast_hyper`)."""
    if isinstance(value, (tuple, list)):
        return tuple(broadcast_hyper(v, param) for v in value)
    return broadcast_hyper(value, param)


def _is_schedule(value: Any) -> bool:
    return isinstance(value, Schedule) or (callable(value) and not isinstance(value, (Tensor, type)))


def value_at(value: Any, step: int) -> Any:
    """A hyperparameter at ``step``: a schedule is called with it, tuples per component."""
    if isinstance(value, (tuple, list)):
        return tuple(value_at(v, step) for v in value)
    return value(step) if _is_schedule(value) else value


def is_scheduled(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(is_scheduled(v) for v in value)
    return _is_schedule(value)


def validate_schedules(rule: Rule, hyper: Mapping[str, Any], steps: int) -> None:
    """Check the values every schedule in ``hyper`` takes over a run of ``steps`` steps with the rule
    (at the first and last step and :data:`VALIDATION_POINTS` between): a ``ValueError`` names the
    hyperparameter, the step and the value."""
    scheduled = [name for name, value in hyper.items() if is_scheduled(value)]
    if not scheduled:
        rule.validate(dict(hyper))
        return
    points = sorted({0, max(0, steps - 1), *(round(i * (steps - 1) / VALIDATION_POINTS)
                                             for i in range(1, VALIDATION_POINTS))})
    for t in points:
        try:
            rule.validate({name: value_at(value, t) for name, value in hyper.items()})
        except ValueError as error:
            raise ValueError(f"{error} (at step {t} of the schedule of "
                             f"{', '.join(scheduled)})") from None


def eval_point(rule: Rule, param: Tensor, state: Mapping[str, Tensor], hyper: Mapping[str, Any]) -> Tensor:
    """Where ``param`` is evaluated: the rule's evaluation point (out of place), or ``param`` itself."""
    if rule.eval_point is None or not state:
        return param
    return rule.eval_point(param, state, hyper)


def with_schedules(rule: Rule, values: Mapping[str, Any], schedules: Mapping[str, Any], steps: int,
                   swept: Sequence[str] = ()) -> dict[str, Any]:
    """``values`` with each hyperparameter named in ``schedules`` replaced by its schedule.

    A spec (``"cosine"``, :class:`~inertia.schedules.ScheduleSpec`) starts from the
    hyperparameter's own value (a number or an ``[M]`` tensor) over ``steps`` steps; a finished
    schedule object is used as is. A tuple gives one spec (or None) per component (``betas``).
    A swept hyperparameter's schedule must not name its own base: each member's value is it.
    """
    from .schedules import ScheduleSpec, check_spec

    out = dict(values)
    for name, spec in schedules.items():
        if name not in rule.numeric:
            raise ValueError(f"schedule {name}=...: {rule.name} has no numeric hyperparameter {name!r}; "
                             f"its numeric hyperparameters: {', '.join(rule.numeric)}")
        base = values[name]
        specs = spec if isinstance(spec, tuple) else None
        if specs is not None and (not isinstance(base, tuple) or len(base) != len(specs)):
            raise ValueError(f"schedule {name}: a tuple of {len(specs)} schedules needs a tuple-valued "
                             f"hyperparameter of that length, {name} is {base!r}")
        built = []
        for part, value in zip(specs if specs is not None else (spec,), base if specs is not None else (base,)):
            if part is None:
                built.append(value)
                continue
            parsed = check_spec(name, part)
            if isinstance(parsed, ScheduleSpec):
                if name in swept and parsed.gives_base:
                    raise ValueError(f"schedule {name}={part}: {name} is swept, so its schedule starts from each "
                                     f"configuration's value; leave out {parsed.base_name}=")
                built.append(parsed.build(value, steps))
            elif name in swept:
                raise ValueError(f"schedule {name}: {name} is swept; give a schedule name such as 'cosine' "
                                 f"(it starts from each configuration's value), not a finished schedule")
            else:
                built.append(parsed)
        out[name] = tuple(built) if specs is not None else built[0]
    return out


class MemberHyper:
    """The hyperparameters of M members: structural options, and every numeric one a number,
    an ``[M]`` tensor or a schedule ``step -> number or [M] tensor`` (tuples per component).

    ``values`` holds every hyperparameter of the rule (merged with its defaults).
    """

    def __init__(self, rule: Rule, values: Mapping[str, Any]):
        self.rule = rule
        self.values = dict(values)
        self.fixed = frozenset(name for name in rule.numeric if not is_scheduled(self.values.get(name)))
        self.dynamic = len(self.fixed) < len(rule.numeric)

    def at(self, step: int, rows: Tensor | None = None) -> dict[str, Any]:
        """Every value at ``step`` (0 for the first update) for the members ``rows`` (default all),
        under ``FIXED_HYPER`` the names of those no schedule drives, and ``MEMBER_AXIS`` (every
        parameter of a stack is stacked)."""
        values = {name: _select(value_at(value, step), rows) if name in self.rule.numeric else value
                  for name, value in self.values.items()}
        values[FIXED_HYPER] = self.fixed
        values[MEMBER_AXIS] = True
        return values


def _select(value: Any, rows: Tensor | None) -> Any:
    if isinstance(value, tuple):
        return tuple(_select(v, rows) for v in value)
    if rows is None or not isinstance(value, Tensor) or value.dim() == 0:
        return value
    return value.index_select(0, rows.to(value.device))


class Stack:
    """M members of one rule: parameters ``[M, ...]``, their state, hyperparameters, step counter.

    ``update(i, grad)`` applies the rule to parameter ``i``; call :meth:`begin_step` once
    before the updates of a step. :meth:`keep` drops members (the rest continue
    unchanged); :meth:`eval_params` gives the parameters at the rule's evaluation point.
    ``rows`` maps each current member to its index among the original M (a schedule's
    ``[M]`` values are selected by it).
    """

    def __init__(self, rule: Rule, params: Sequence[Tensor], hyper: MemberHyper):
        self.rule = rule
        self.params = list(params)
        self.hyper = hyper
        self.rows = torch.arange(self.params[0].shape[0])
        self.t = 0                                           # steps taken (a Python int: no host sync)
        self.counter = torch.zeros((), dtype=torch.float32)  # the rules' state["step"], shared by all
        self.state: list[dict[str, Tensor]] = [{"step": self.counter} for _ in self.params]
        self._values: dict[str, Any] | None = None
        self._shaped: dict[Any, dict[str, Any]] = {}   # by parameter index, and by (dim, device, dtype)

    def __len__(self) -> int:
        return len(self.rows)

    def _current(self) -> dict[str, Any]:
        """The hyperparameters of this step (recomputed each step only when a schedule drives one)."""
        if self._values is None:
            self._values = self.hyper.at(self.t, self.rows)
            self._shaped = {}
        return self._values

    def hyper_for(self, i: int) -> dict[str, Any]:
        """Parameter ``i``'s hyperparameters, shaped to broadcast along its member axis (made once per
        parameter shape and step of a schedule: this runs for every parameter of every step)."""
        shaped = self._shaped.get(i)
        if shaped is None or self._values is None:
            param, values = self.params[i], self._current()
            key = (param.dim(), param.device, param.dtype)
            shaped = self._shaped.get(key)
            if shaped is None:
                shaped = self._shaped[key] = {k: shape_hyper(v, param) if k in self.rule.numeric else v
                                              for k, v in values.items()}
            self._shaped[i] = shaped
        return shaped

    def begin_step(self) -> None:
        """Count the step about to be taken (state["step"] is 1 during the first update)."""
        self.counter += 1

    def update(self, i: int, grad: Tensor) -> None:
        self.rule.update(self.params[i], grad, self.state[i], self.hyper_for(i))

    def end_step(self) -> None:
        """The step's updates are done: the next one takes the schedules' next values."""
        self.t += 1
        if self.hyper.dynamic:
            self._values = None

    def keep(self, index: Tensor) -> None:
        """Keep only the members at positions ``index`` (a 1-D long tensor), in that order."""
        device = self.params[0].device
        idx = index.to(device)
        self.params = [p.detach().index_select(0, idx) for p in self.params]
        for st in self.state:
            for name, value in list(st.items()):
                if self.rule.state_kind(name) != "shared" and value.dim() > 0:
                    st[name] = value.index_select(0, idx.to(value.device))
        self.rows = self.rows.index_select(0, index.cpu())
        self._values = None
        self._shaped = {}

    def eval_params(self) -> list[Tensor]:
        """The parameters at the rule's evaluation point (the training parameters are left as they are)."""
        if self.rule.eval_point is None:
            return self.params
        return [eval_point(self.rule, p, st, self.hyper_for(i))
                for i, (p, st) in enumerate(zip(self.params, self.state))]

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "rows": self.rows, "params": [p.detach().cpu() for p in self.params],
                "state": [{k: v.cpu() for k, v in st.items() if k != "step"} for st in self.state],
                "counter": self.counter.clone()}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        device = self.params[0].device
        self.t, self.rows = int(sd["t"]), sd["rows"]
        self.params = [p.to(device) for p in sd["params"]]
        self.counter = sd["counter"].clone()
        self.state = []
        for saved in sd["state"]:
            st = {k: (v.to(device) if v.dim() > 0 else v) for k, v in saved.items()}
            for name in st:
                self.rule.state_kind(name)  # an undeclared entry is an error, not a guess
            st["step"] = self.counter
            self.state.append(st)
        self._values = None
        self._shaped = {}
