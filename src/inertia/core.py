"""The one place where a rule meets an engine.

A :class:`Stack` holds M *members* (configurations) of one rule: parameters whose
first dimension is the member axis ``[M, ...]``, the rule's state for each, the
step counter, and :class:`MemberHyper`, every hyperparameter as a number (the same
for all members), an ``[M]`` tensor (one value each) or a schedule of the step
giving either. The sweep engine (N configurations x K folds of a model) and the race
engine (N points on a surface) run every update through a Stack. :func:`member_hyper`
is the one place where configurations become members' hyperparameters (sweeps, races
and :func:`inertia.fit`), with one check of names (:func:`check_names`) and the rule's
``validate`` run once per distinct set of values (:func:`check_members`). The optimizer
engine, which updates a user's own parameters in place, shares the other pieces:
:func:`shape_hyper`, :func:`validate_schedules` and :func:`eval_point`.

The rule declares the layout of its state (:attr:`inertia.rules.Rule.state`), so
dropping members selects exactly the per-element and per-member entries; and its
evaluation point (Schedule-Free evaluates at x, trains at y), which
:meth:`Stack.eval_params` returns without touching the training point.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Collection, Mapping, Sequence

import torch
from torch import Tensor

from .rules import Preset, Rule
from .rules.base import FIXED_HYPER, MEMBER_AXIS, broadcast_hyper, is_schedule
from .schedules import Schedule

#: steps at which a schedule's values are validated before training (besides the first and last)
VALIDATION_POINTS = 8

shape_hyper = broadcast_hyper
"""A hyperparameter's value shaped for a parameter: :func:`inertia.rules.base.broadcast_hyper`, the one
shaping function, under the name the optimizer engine uses."""


def value_at(value: Any, step: int) -> Any:
    """A hyperparameter at ``step``: a schedule is called with it, tuples per component."""
    if isinstance(value, (tuple, list)):
        return tuple(value_at(v, step) for v in value)
    return value(step) if is_schedule(value) else value


def check_names(preset: Preset, names: Collection[str], *, numeric: Collection[str] = (),
                error: type[Exception] = ValueError) -> None:
    """The one check of hyperparameter names: each of ``names`` and ``numeric`` must be one of
    ``preset``'s, and each of ``numeric`` (swept or scheduled) a numeric one; ``error`` names them."""
    unknown = [name for name in dict.fromkeys([*names, *numeric]) if name not in preset.defaults]
    if unknown:
        raise error(f"{preset.name}: unknown hyperparameter(s) {unknown}; known: {sorted(preset.defaults)}")
    not_numeric = [name for name in numeric if name not in preset.rule.numeric]
    if not_numeric:
        raise error(f"{preset.name}: {not_numeric} cannot be swept or scheduled; "
                    f"numeric hyperparameters: {list(preset.rule.numeric)}")


def validate_schedules(rule: Rule, hyper: Mapping[str, Any], steps: int) -> None:
    """Check the values every schedule in ``hyper`` takes over a run of ``steps`` steps with the rule
    (at the first and last step and :data:`VALIDATION_POINTS` between): a ``ValueError`` names the
    hyperparameter, the step and the value."""
    scheduled = [name for name, value in hyper.items() if is_schedule(value)]
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
    Every name must be numeric (:func:`check_names`; :func:`member_hyper` checks them).
    """
    from .schedules import ScheduleSpec, check_spec

    out = dict(values)
    for name, spec in schedules.items():
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
        self.fixed = frozenset(name for name in rule.numeric if not is_schedule(self.values.get(name)))
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


class Columns(Schedule):
    """One hyperparameter of M members, some of them schedules: ``step -> [M] tensor``."""

    def __init__(self, values: Sequence[Any], dtype: torch.dtype):
        self.values, self.dtype = list(values), dtype

    def __call__(self, step: int) -> Tensor:
        return torch.tensor([float(value_at(v, step)) for v in self.values], dtype=self.dtype)


def member_hyper(presets: Preset | Sequence[Preset], given: Sequence[Mapping[str, Any]], *,
                 columns: Collection[str] = (), schedules: Mapping[str, Any] | None = None, steps: int = 0,
                 dtype: torch.dtype = torch.float64) -> MemberHyper:
    """The hyperparameters of M members, the one place configurations become them (sweeps, races, ``fit``).

    ``given[m]`` holds member m's own values over its preset's defaults (``presets``: one for all, or one
    each, all of one rule and the same structural options). A numeric hyperparameter becomes an ``[M]``
    tensor of ``dtype`` (a :class:`Columns` schedule when a member's value is a schedule) where it is named
    in ``columns`` or the members' values differ, and stays the members' one value otherwise (the rules'
    fast paths for numbers); tuples (``betas``) component by component. ``schedules`` (name -> spec) are
    built from those values over ``steps`` steps (:func:`with_schedules`). Checked with
    :func:`check_members` first.
    """
    plan = _Plan.of(presets, given, columns, schedules, steps, dtype)
    plan.check()
    return MemberHyper(plan.rule, plan.values(range(len(plan.members))))


def check_members(presets: Preset | Sequence[Preset], given: Sequence[Mapping[str, Any]], *,
                  columns: Collection[str] = (), schedules: Mapping[str, Any] | None = None, steps: int = 0,
                  dtype: torch.dtype = torch.float64) -> None:
    """Check the members' names (:func:`check_names`) and values with the rule, over every step of their
    schedules (:func:`validate_schedules`), as :func:`member_hyper` would build them.

    The rule's ``validate`` runs once per distinct set of values: a member whose values (with the same
    shared values, schedules and steps) were checked before in this process is not checked again, so the
    sweep's specs, and every stack of its configurations, cost one validation of its grid.
    """
    _Plan.of(presets, given, columns, schedules, steps, dtype).check()


_CHECKED: OrderedDict[Any, tuple[Rule, set]] = OrderedDict()
"""Members checked so far, by rule and context (their shared values, schedules and steps); the latest kept."""
_CHECKED_CONTEXTS = 64


class _Plan:
    """Members' hyperparameters before they are built: which are per member, and how to check them."""

    def __init__(self, rule: Rule, members: list[dict[str, Any]], per_member: dict[str, Any],
                 schedules: dict[str, Any], steps: int, dtype: torch.dtype):
        self.rule, self.members, self.per_member = rule, members, per_member
        self.schedules, self.steps, self.dtype = schedules, steps, dtype

    @classmethod
    def of(cls, presets: Preset | Sequence[Preset], given: Sequence[Mapping[str, Any]], columns: Collection[str],
           schedules: Mapping[str, Any] | None, steps: int, dtype: torch.dtype) -> "_Plan":
        if not given:
            raise ValueError("no configurations")
        presets = [presets] * len(given) if isinstance(presets, Preset) else list(presets)
        schedules = dict(schedules or {})
        check_names(presets[0], sorted({name for g in given for name in g}), numeric=[*columns, *schedules])
        rule = presets[0].rule
        members = [{**preset.defaults, **g} for preset, g in zip(presets, given)]
        per_member = {name: _varies([m[name] for m in members], name in columns)
                      for name in rule.numeric if name in rule.defaults}
        return cls(rule, members, per_member, schedules, steps, dtype)

    def values(self, rows: Sequence[int]) -> dict[str, Any]:
        """The hyperparameters of the members ``rows``, schedules built."""
        values = {}
        for name in self.rule.defaults:
            column = [self.members[i][name] for i in rows]
            values[name] = _column(name, column, self.per_member[name], self.dtype) \
                if name in self.per_member else column[0]
        tensors = [name for name, value in values.items() if _holds_tensor(value)]
        return with_schedules(self.rule, values, self.schedules, self.steps, tensors)

    def check(self) -> None:
        """Validate the members not checked before (all of them when a value has no fingerprint)."""
        rows = [_fingerprint({n: m[n] for n, flag in self.per_member.items() if _any(flag)}) for m in self.members]
        shared = {n: v for n, v in self.members[0].items() if not _any(self.per_member.get(n, False))}
        context = _fingerprint((id(self.rule), shared, self.per_member, self.schedules,
                                self.steps if self.schedules else None, str(self.dtype)))
        if context is None or None in rows:
            self._validate(range(len(self.members)))
            return
        rule, seen = _CHECKED.pop(context, (self.rule, set()))
        _CHECKED[context] = rule, seen
        while len(_CHECKED) > _CHECKED_CONTEXTS:
            _CHECKED.popitem(last=False)
        new = {row: i for i, row in reversed(list(enumerate(rows))) if row not in seen}
        if new:
            self._validate(sorted(new.values()))
            seen.update(new)

    def _validate(self, rows: Sequence[int]) -> None:
        validate_schedules(self.rule, self.values(rows), self.steps)


def _varies(column: list[Any], forced: bool) -> Any:
    """Whether a hyperparameter is per member: named in ``columns``, or its values differ or include a
    schedule; for a tuple, one flag per component."""
    if isinstance(column[0], (tuple, list)) and all(isinstance(v, (tuple, list)) and len(v) == len(column[0])
                                                    for v in column):
        return tuple(_varies([v[i] for v in column], forced) for i in range(len(column[0])))
    return forced or any(is_schedule(v) for v in column) or any(not _same(v, column[0]) for v in column)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return a is b


def _any(flag: Any) -> bool:
    return any(flag) if isinstance(flag, tuple) else bool(flag)


def _column(name: str, column: list[Any], per_member: Any, dtype: torch.dtype) -> Any:
    """One hyperparameter of the members: their one value, an ``[M]`` tensor, or a :class:`Columns` schedule."""
    if isinstance(per_member, tuple):
        return tuple(_column(name, [v[i] for v in column], flag, dtype) for i, flag in enumerate(per_member))
    if not per_member:
        return column[0]
    if any(is_schedule(v) for v in column):
        return Columns(column, dtype)
    try:
        return torch.tensor([float(v) for v in column], dtype=dtype)
    except (TypeError, ValueError):
        bad = next(v for v in column if not isinstance(v, (int, float, Tensor)) or isinstance(v, bool))
        raise ValueError(f"{name} must be a number, got {bad!r}") from None


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(isinstance(v, Tensor) for v in value)
    return isinstance(value, Tensor)


def _fingerprint(value: Any) -> Any:
    """A hashable stand-in for a hyperparameter value, equal only for equal values of the same types
    (``True`` is not ``1``); None for a value that has none (a schedule object, any callable)."""
    if isinstance(value, Mapping):
        parts = tuple((k, _fingerprint(v)) for k, v in value.items())
        return None if any(p is None for _, p in parts) else ("mapping", parts)
    if isinstance(value, (tuple, list)):
        parts = tuple(_fingerprint(v) for v in value)
        return None if None in parts else (type(value).__name__, parts)
    if isinstance(value, Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.detach().cpu().reshape(-1).tolist()))
    if callable(value):
        return None
    try:
        hash(value)
    except TypeError:
        return None
    return (type(value).__name__, value)


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
                shaped = self._shaped[key] = {k: broadcast_hyper(v, param, k) if k in self.rule.numeric else v
                                              for k, v in values.items()}
            self._shaped[i] = shaped
        return shaped

    def begin_step(self) -> None:
        """Count the step about to be taken (state["step"] is 1 during the first update)."""
        self.counter += 1

    def update(self, i: int, grad: Tensor) -> None:
        self.rule.update(self.params[i], grad, self.state[i], self.hyper_for(i))

    def refresh(self) -> None:
        """Read this step's hyperparameters again before its updates (a tuner has just set some)."""
        self._values = None

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
