"""Schedule specs: a schedule named before its base value and the run's length are known.

``"cosine"``, ``"cosine(end=1e-4)"``, ``"sutskever_ramp(0.99, every=100)"``: parsed with
``ast`` (literals only, never evaluated), built by :meth:`ScheduleSpec.build` once the
hyperparameter's value and the step count are known (the command line, sweeps, races, ``fit``).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .functions import (
    Schedule,
    Value,
    as_schedule,
    constant,
    cosine,
    demon,
    half_life_warmup,
    exponential,
    linear,
    one_cycle,
    one_cycle_momentum,
    step_decay,
    sutskever_ramp,
    warmup_cosine,
)


# schedule name -> (factory, the argument that takes the hyperparameter's value, the argument that
# takes the run's step count or None, defaults computed from the step count)
_TEMPLATES: dict[str, tuple[Callable[..., Schedule], str, str | None, Callable[[int], dict[str, Any]]]] = {
    "constant": (constant, "value", None, lambda steps: {}),
    "step_decay": (step_decay, "value", None, lambda steps: {"step_size": max(1, math.ceil(steps / 3))}),
    "exponential": (exponential, "value", None, lambda steps: {"gamma": 0.01 ** (1 / max(1, steps))}),
    "cosine": (cosine, "peak", "steps", lambda steps: {}),
    "linear": (linear, "end", "steps", lambda steps: {"start": 0.0}),
    "warmup_cosine": (warmup_cosine, "peak", "steps", lambda steps: {"warmup": max(1, round(0.05 * steps))}),
    "one_cycle": (one_cycle, "max_lr", "steps", lambda steps: {}),
    "one_cycle_momentum": (one_cycle_momentum, "max", "steps", lambda steps: {}),
    "sutskever_ramp": (sutskever_ramp, "mu_max", None, lambda steps: {}),
    "demon": (demon, "momentum", "steps", lambda steps: {}),
    "half_life_warmup": (half_life_warmup, "end", "steps", lambda steps: {}),
}


class ScheduleSpec:
    """A schedule waiting for its base value and the run's length: ``cosine``, ``cosine(end=1e-4)``,
    ``sutskever_ramp``, ``warmup_cosine(warmup=100)``, ...

    :meth:`build` fills the argument that takes the hyperparameter's own value (``peak`` of
    ``cosine``, ``mu_max`` of ``sutskever_ramp``, ...: a swept lr of 0.01 under ``cosine``
    starts at 0.01) and the run's step count, unless the spec gives them. ``base`` may be a
    tensor ``[N]`` (one value per configuration). Arguments are literals (parsed with ``ast``,
    never evaluated); the first positional argument is the base, as in the schedule's signature.
    """

    def __init__(self, name: str, *args: Any, **kwargs: Any):
        import inspect

        if name not in _TEMPLATES:
            raise ValueError(f"unknown schedule {name!r}; known: {', '.join(sorted(_TEMPLATES))}")
        factory = _TEMPLATES[name][0]
        try:
            self.given = dict(inspect.signature(factory).bind_partial(*args, **kwargs).arguments)
        except TypeError as error:
            raise ValueError(f"schedule {name}: {error}") from None
        self.name = name

    @property
    def base_name(self) -> str:
        return _TEMPLATES[self.name][1]

    @property
    def gives_base(self) -> bool:
        """True when the spec names the base itself (e.g. ``sutskever_ramp(0.99)``)."""
        return self.base_name in self.given

    def build(self, base: Value = None, steps: int | None = None) -> Schedule:
        """The schedule for a hyperparameter whose value is ``base`` in a run of ``steps`` steps."""
        import inspect

        factory, base_name, steps_name, defaults = _TEMPLATES[self.name]
        kwargs = {**defaults(int(steps or 1)), **self.given}
        if base_name not in kwargs and base is not None:
            kwargs[base_name] = base
        elif base_name not in kwargs and inspect.signature(factory).parameters[base_name].default is inspect._empty:
            raise ValueError(f"schedule {self}: needs {base_name}= (no value to start from)")
        if steps_name is not None and steps_name not in kwargs:
            if steps is None:
                raise ValueError(f"schedule {self}: needs {steps_name}=")
            kwargs[steps_name] = int(steps)
        try:
            return factory(**kwargs)
        except TypeError as error:
            raise ValueError(f"schedule {self}: {error}") from None

    def with_length(self, steps: int) -> "ScheduleSpec":
        """This spec with every argument the run's length decides written out for a run of ``steps``
        steps (``cosine`` -> ``cosine(steps=300)``, ``step_decay`` -> ``step_decay(step_size=100)``):
        the same schedule in a run of any length, as a run stopped at an earlier step needs."""
        _, _, steps_name, defaults = _TEMPLATES[self.name]
        length = {**defaults(int(steps)), **({steps_name: int(steps)} if steps_name else {})}
        return ScheduleSpec(self.name, **self.given, **{k: v for k, v in length.items() if k not in self.given})

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ScheduleSpec) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        if not self.given:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.given.items())})"

    __str__ = __repr__


def parse_spec(text: str) -> ScheduleSpec:
    """``"cosine"`` or ``"cosine(end=1e-4)"`` or ``"sutskever_ramp(0.99, every=100)"`` -> a :class:`ScheduleSpec`."""
    import ast

    raw = str(text).strip()
    try:
        node = ast.parse(raw, mode="eval").body
        if isinstance(node, ast.Name):
            name, args, kwargs = node.id, [], {}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        else:
            raise ValueError
    except (SyntaxError, ValueError):
        raise ValueError(f"{raw!r} is not a schedule like cosine or cosine(end=1e-4); "
                         f"known: {', '.join(sorted(_TEMPLATES))}") from None
    return ScheduleSpec(name, *args, **kwargs)


def as_spec(spec: Any) -> ScheduleSpec | Schedule:
    """A :class:`ScheduleSpec` from a string, a spec as is, or a finished schedule (any callable)."""
    if isinstance(spec, str):
        return parse_spec(spec)
    if isinstance(spec, (ScheduleSpec, Schedule)) or callable(spec):
        return spec if isinstance(spec, (ScheduleSpec, Schedule)) else as_schedule(spec)
    raise ValueError(f"expected a schedule name such as 'cosine', a ScheduleSpec or a schedule, got {spec!r}")


def from_spec(spec: Any, *, base: Value = None, steps: int | None = None) -> Schedule:
    """The schedule of a hyperparameter whose value is ``base`` over ``steps`` steps.

    ``spec``: a string (:func:`parse_spec`), a :class:`ScheduleSpec`, or a finished schedule
    (returned as is: its values are the hyperparameter's values).
    """
    spec = as_spec(spec)
    return spec.build(base, steps) if isinstance(spec, ScheduleSpec) else spec


def check_spec(name: str, spec: Any) -> ScheduleSpec | Schedule:
    """Parse ``spec`` for hyperparameter ``name``; a ``ValueError`` naming ``name`` if it is not a schedule."""
    try:
        return as_spec(spec)
    except ValueError as error:
        raise ValueError(f"schedule {name}={spec}: {error}") from None
