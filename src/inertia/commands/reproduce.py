"""The ``inertia train`` command that reproduces one configuration of a sweep.

Flags come from ``inertia train``'s own parser (:func:`.train.actions`), so the
command and the parser cannot drift; numbers are written with ``repr`` (the
shortest text that reads back as the same float).
"""
from __future__ import annotations

import shlex
from typing import Any

from . import train

RUN = ("steps", "batch_size", "folds", "seed", "seeds")
"""Settings of the sweep's ``meta`` that ``inertia train`` takes as options of the same name."""


def train_command(results: Any, config: dict[str, Any] | None = None) -> str | None:
    """The command that trains ``config`` (default: the best) of ``results`` as the sweep did.

    It carries what changes the numbers: data, model, optimizer, swept and fixed
    hyperparameters, schedules (with the sweep's length written out), batch size, folds, seed and
    dtype, and as steps the selected point's (``best_step``: the model there is the one whose
    metrics the sweep reports).
    None when no configuration finished.
    """
    config = config or results.best
    if config is None:
        return None
    meta = results.meta
    if not (_named_on_command_line(meta.get("data"), _data_names()) and _named_on_command_line(meta.get("model"),
                                                                                                 _model_names())):
        return python_snippet(results, config)
    parts = ["inertia", "train"]
    for key in ("data", "model", "optimizer"):
        if meta.get(key) is not None:
            parts += [train.flag(key), str(meta[key])]
    if meta.get("loss") not in (None, "auto"):
        parts += [train.flag("loss"), str(meta["loss"])]
    if meta.get("standardize"):
        parts += [train.flag("standardize")]
    for name, value in (meta.get("model_args") or {}).items():
        parts += [train.flag("model_arg"), f"{name}={_text(value)}"]
    fixed = {k: v for k, v in (meta.get("fixed") or {}).items() if k not in results.swept}
    for name, value in {**{n: config[n] for n in results.swept}, **fixed}.items():
        parts += _hyperparameter(name, value)
    for name, spec in (meta.get("schedules") or {}).items():
        parts += [train.flag("schedule"), f"{name}={schedule_text(spec, meta.get('steps'))}"]
    run = {**meta, "steps": config.get("best_step") or meta.get("steps")}   # the selected point
    for key in RUN:
        if run.get(key) is not None:
            parts += [train.flag(key), str(run[key])]
    if _dtype_name(meta) != "float32":
        parts += [train.flag("dtype"), _dtype_name(meta)]
    return shlex.join(parts)


def _dtype_name(meta: dict[str, Any]) -> str:
    """The sweep's parameter dtype as ``inertia train --dtype`` names it (``meta`` holds ``"torch.float64"``)."""
    return str(meta.get("dtype") or "float32").removeprefix("torch.")


def python_snippet(results: Any, config: dict[str, Any]) -> str:
    """For data or a model no command line can name (arrays, a Dataset, a callable): the
    :func:`inertia.fit` call that trains ``config`` as the sweep did, on the user's own ``data`` and
    ``model`` (the objects the sweep was given), runnable where they are defined."""
    meta = results.meta
    hyper = {**{k: v for k, v in (meta.get("fixed") or {}).items()}, **{n: config[n] for n in results.swept}}
    schedules = {name: schedule_text(spec, meta.get("steps")) for name, spec in (meta.get("schedules") or {}).items()}
    data = repr(meta["data"]) if _named_on_command_line(meta.get("data"), _data_names()) else "data"
    model = repr(meta["model"]) if _named_on_command_line(meta.get("model"), _model_names()) else "model"
    settings = {"optimizer": meta.get("optimizer"), "hyper": hyper, "schedules": schedules or None,
                "steps": config.get("best_step") or meta.get("steps"),
                **{k: meta.get(k) for k in RUN if k != "steps"}, "loss": meta.get("loss"),
                "standardize": meta.get("standardize") or None, "model_args": meta.get("model_args") or None}
    arguments = ", ".join(f"{k}={v!r}" for k, v in settings.items() if v is not None and v != "auto")
    imports = "import inertia"
    if _dtype_name(meta) != "float32":
        imports, arguments = f"{imports}\nimport torch", f"{arguments}, dtype=torch.{_dtype_name(meta)}"
    return (f"{imports}\n\n# {data}, {model}: the data and model the sweep was given\n"
            f"result = inertia.fit({data}, {model}, {arguments})\nprint(result.record())")


def _named_on_command_line(value: Any, names: Any) -> bool:
    """Whether ``inertia train`` can name ``value``: a registered name, a data file (``.npz``, ``.csv``) or
    an existing folder, or ``package.module:factory``."""
    import re
    from pathlib import Path

    if not isinstance(value, str):
        return False
    return (value in names or Path(value).suffix.lower() in (".npz", ".csv") or Path(value).exists()
            or re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value) is not None)


def _data_names() -> Any:
    from ..data import DATASETS

    return DATASETS


def _model_names() -> Any:
    from ..models import MODELS

    return MODELS


def schedule_text(spec: Any, steps: int | None) -> str:
    """``spec`` as the sweep ran it over ``steps`` steps, for a run that may stop earlier: ``cosine`` ->
    ``cosine(steps=300)`` (:meth:`~inertia.schedules.ScheduleSpec.with_length`), so ``--steps 180``
    takes the sweep's first 180 values, not a schedule annealed over 180 steps."""
    from ..schedules import ScheduleSpec, parse_spec

    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if not isinstance(parsed, ScheduleSpec) or steps is None:
        return str(spec)
    pinned = parsed.with_length(int(steps))
    return str(spec) if pinned == parsed else str(pinned)


def _hyperparameter(name: str, value: Any) -> list[str]:
    """``--lr 0.05``, ``--nesterov``, or ``--hyper name=value`` where the rule's name has no option."""
    action = train.actions().get(name) if name in train.HYPER_OPTIONS else None
    if action is None:
        return [train.flag("hyper"), f"{name}={_text(value)}"]
    if action.nargs == 0:  # a switch such as --nesterov
        return [action.option_strings[0]] if value == action.const else [train.flag("hyper"), f"{name}={_text(value)}"]
    return [action.option_strings[0], _text(value)]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


__all__ = ["train_command"]
