"""The scheduler: schedules written into the ``param_groups`` of any ``torch.optim.Optimizer``."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .checks import ValueCheck
from .functions import Schedule, _show, as_schedule
from .per_configuration import PerConfiguration


def _is_schedule(value: Any) -> bool:
    return isinstance(value, Schedule) or callable(value)


class HyperScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Drive any hyperparameter of any ``torch.optim.Optimizer`` with schedules; a torch ``LRScheduler``.

    ``HyperScheduler(optimizer, lr=cosine(0.1, 1000), momentum=sutskever_ramp(0.99),
    betas=(one_cycle_momentum(1000), None))`` writes ``schedule(t)`` into every
    param group's entry, t = ``last_epoch`` (steps taken): at construction the
    values for step 0, after each :meth:`step` those for the next step. Call
    :meth:`step` after ``optimizer.step()``, as with torch's ``lr_scheduler``;
    ``get_last_lr()``, ``state_dict()`` and ``load_state_dict()`` are those of
    ``LRScheduler``, so trainers that take a torch scheduler (Lightning) take it.

    Each keyword names a param-group entry and gives

    - a schedule (any callable ``step -> value``), applied to every group;
    - a tuple with one schedule or ``None`` per component, for tuple-valued
      entries such as ``betas`` (``None`` leaves that component alone);
    - a list with one of the above (or ``None``) per param group.

    Values may be tensors of shape ``[N]`` (per-configuration values for
    inertia's optimizers); an entry holding N values keeps N values (a schedule
    giving one value gives it to all N). A name no param group has is a
    ``ValueError``. ``load_state_dict`` writes the loaded step's values into the
    optimizer, so a resumed run continues with identical values.

    Every value is checked before it is written (:mod:`~inertia.schedules.checks`: an
    inertia optimizer's rule validates it, as its constructor did; for other optimizers,
    what torch's constructors reject, and NaN or infinity anywhere): a bad value is a
    one-line ``ValueError`` naming the hyperparameter, its schedule, the step and the
    value, raised by :meth:`step` while the optimizer still holds the last good values.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, **schedules: Any):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer (it has no param_groups)")
        if not schedules:
            raise ValueError("HyperScheduler needs at least one hyperparameter schedule, e.g. lr=cosine(0.1, 1000)")
        self.schedules = {name: self._per_group(optimizer, name, given) for name, given in schedules.items()}
        self._value_check = ValueCheck(optimizer)
        super().__init__(optimizer)  # writes the values of step 0 (last_epoch = 0)

    @classmethod
    def _per_group(cls, optimizer: torch.optim.Optimizer, name: str, given: Any) -> list[Any]:
        groups = optimizer.param_groups
        missing = [i for i, g in enumerate(groups) if name not in g]
        if missing:
            known = sorted(k for k in groups[0] if k not in ("params", "param_names")) if groups else []
            raise ValueError(
                f"unknown hyperparameter {name!r} for {type(optimizer).__name__}"
                f"{' (missing in param group ' + str(missing[0]) + ')' if len(missing) < len(groups) else ''}; "
                f"its param groups have: {', '.join(known)}"
            )
        if isinstance(given, list):
            if len(given) != len(groups):
                raise ValueError(
                    f"{name}: a list gives one schedule per param group; got {len(given)} for {len(groups)} groups"
                )
            per_group = list(given)
        else:
            per_group = [given] * len(groups)
        return [cls._check_item(name, index, group[name], item)
                for index, (group, item) in enumerate(zip(groups, per_group))]

    @staticmethod
    def _check_item(name: str, index: int, current: Any, item: Any) -> Any:
        if item is None:
            return None
        if isinstance(item, tuple):
            if not isinstance(current, (tuple, list)) or len(current) != len(item):
                raise ValueError(
                    f"{name}: a tuple of {len(item)} schedules needs a tuple-valued hyperparameter of that length; "
                    f"param group {index} has {name}={current!r}"
                )
            return tuple(None if s is None else HyperScheduler._schedule(name, s) for s in item)
        return HyperScheduler._schedule(name, item)

    @staticmethod
    def _schedule(name: str, item: Any) -> Schedule:
        if not _is_schedule(item):
            raise ValueError(f"{name}: expected a schedule (a callable step -> value), got {item!r}")
        return as_schedule(item)

    @staticmethod
    def _value_like(value: Any, current: Any) -> Any:
        """A tensor hyperparameter keeps its dtype, device, number of values and guard."""
        if not isinstance(current, Tensor):
            return value
        new = torch.as_tensor(value, dtype=current.dtype, device=current.device)
        if current.dim() == 1 and new.dim() == 0:
            new = new.expand(current.shape).clone()
        if isinstance(current, PerConfiguration) and new.shape == current.shape:
            new = new.as_subclass(PerConfiguration)
            new.__dict__.update(current.__dict__)
        return new

    def _given(self, step: int) -> dict[str, list[Any]]:
        """Each name's values for ``step`` as its schedules give them, one per param group (None where a
        group is not scheduled; a tuple's unscheduled components are the group's)."""
        out: dict[str, list[Any]] = {}
        for name, per_group in self.schedules.items():
            values = []
            for group, item in zip(self.optimizer.param_groups, per_group):
                if item is None:
                    values.append(None)
                elif isinstance(item, tuple):
                    values.append(tuple(c if s is None else s(step) for s, c in zip(item, group[name])))
                else:
                    values.append(item(step))
            out[name] = values
        return out

    def _values(self, given: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The values to write: ``given`` in the form of the entries they replace (:meth:`_value_like`)."""
        out: dict[str, list[Any]] = {}
        for name, per_group in self.schedules.items():
            values = []
            for group, item, value in zip(self.optimizer.param_groups, per_group, given[name]):
                current = group[name]
                if item is None:
                    values.append(current)
                elif isinstance(item, tuple):
                    values.append(tuple(
                        c if s is None else self._value_like(v, c) for s, v, c in zip(item, value, current)
                    ))
                else:
                    values.append(self._value_like(value, current))
            out[name] = values
        return out

    def _check(self, given: dict[str, list[Any]], step: int) -> None:
        """Each group's new values, one name after another, by :class:`~inertia.schedules.checks.ValueCheck`;
        the error names the hyperparameter, the schedule, the step and the value."""
        for index, group in enumerate(self.optimizer.param_groups):
            accepted: dict[str, Any] = {}
            for name, values in given.items():
                if values[index] is None:
                    continue
                accepted[name] = values[index]
                try:
                    self._value_check(index, group, accepted, name)
                except (TypeError, ValueError) as error:
                    raise ValueError(
                        f"{name}={self.schedules[name][index]!r} at step {step} gives "
                        f"{name}={_show(values[index])} (param group {index}): {error}"
                    ) from None

    def _apply(self, step: int) -> None:
        """Write the values of ``step`` (all checked first) and make it ``last_epoch``."""
        given = self._given(step)
        self._check(given, step)
        self.last_epoch = step
        for name, values in self._values(given).items():
            for group, value in zip(self.optimizer.param_groups, values):
                group[name] = value
        self._last = {name: [g[name] for g in self.optimizer.param_groups] for name in self.schedules}
        self._last_lr = [g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"]
                         for g in self.optimizer.param_groups]

    @property
    def last_step(self) -> int:
        """Steps taken: the step whose values are in the optimizer (torch's ``last_epoch``)."""
        return self.last_epoch

    def get_lr(self) -> list[Any]:
        """The learning rates for step ``last_epoch``, one per param group."""
        if "lr" in self.schedules:
            return self._values(self._given(self.last_epoch))["lr"]
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (or go to step ``epoch``) and write its values into the param groups."""
        self._apply(self.last_epoch + 1 if epoch is None else int(epoch))
        self._step_count += 1

    def get_last(self) -> dict[str, list[Any]]:
        """The values last written: ``{name: [value per param group]}``."""
        return {name: list(values) for name, values in self._last.items()}

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: the step (schedules are pure functions of it) and the names it drives."""
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "names": sorted(self.schedules)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step (``last_epoch``, or ``last_step`` as saved before) and write its values."""
        names = state.get("names")
        if names is not None and sorted(names) != sorted(self.schedules):
            raise ValueError(
                f"this state_dict is for a scheduler of {sorted(names)}, but this one schedules "
                f"{sorted(self.schedules)}"
            )
        step = int(state["last_epoch"] if "last_epoch" in state else state["last_step"])
        if step < 0:
            raise ValueError(f"last_epoch must be >= 0, got {step}")
        self._apply(step)
        self._step_count = int(state.get("_step_count", step + 1))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={per_group[0]!r}" if all(p is per_group[0] for p in per_group) else f"{name}={per_group!r}"
            for name, per_group in self.schedules.items()
        )
        return f"HyperScheduler({type(self.optimizer).__name__}, step={self.last_epoch}, {parts})"
