"""What a trial holds of its configuration's result, and the records read back from finished trials.

Every trial carries its validation metric at every evaluation point as intermediate values, its
numbers as separate user attributes (:data:`SCALARS`) and its curves (numbers) in one ``curves``
attribute. A diverged configuration is PRUNED (``status``, ``diverged_step``), so Optuna's
``study.best_trial`` is never one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from ..selection import MEASURES, STATS, select
from ..specs import METRICS, SearchSpec
from .space import dimensions

SCALARS = ("status", "best_step", "diverged_step", "pruned_step", "steps", "train_loss_final",
           *(f"{prefix}{m}_{s}" for prefix in ("", "final_") for m in MEASURES for s in STATS))
"""The user attributes of a finished trial, one per number (``val_loss_mean``: at ``best_step``)."""

CURVES = tuple(f"{m}_{s}" for m in MEASURES for s in STATS)
"""The curves kept in the trial's ``curves`` attribute (numbers at ``eval_steps``), with ``train_loss``."""
TUNED_CURVES = ("lr", "momentum")
"""The curves a tuned rule adds beside ``train_loss``, at its steps: the lr and momentum the tuner set."""


@dataclass(frozen=True)
class Outcome:
    """What telling one configuration writes into its trial (:func:`outcome`)."""

    steps: dict[int, float]          # the sweep's validation metric at each evaluation point (intermediate values)
    attrs: dict[str, Any]            # the user attributes (:func:`trial_attrs`)
    value: float | None              # the trial's value (COMPLETE), or None: PRUNED


def outcome(search: SearchSpec, record: Mapping[str, Any], worker: str) -> Outcome:
    """What telling a configuration's ``record`` writes: its numbers at the selected point
    (:func:`.selection.select`) and curves, its validation metric at every evaluation point, and
    the selected metric (COMPLETE), or none (PRUNED: diverged or pruned)."""
    record = select(record, search.metric, search.select)
    curve = record.get(f"{search.metric}_mean_curve") or []
    steps = {int(s): v for s, v in zip(record.get("eval_steps") or [], curve) if finite(v)}
    value = record.get(METRICS[search.metric][0])
    ok = record["status"] == "ok" and finite(value)
    return Outcome(steps, trial_attrs(record, worker), float(value) if ok else None)


def trial_attrs(record: Mapping[str, Any], worker: str) -> dict[str, Any]:
    """A selected record as a trial's user attributes: one per finite number (none for a metric the task
    does not have or a diverged run lacks, so that every column optuna-dashboard shows holds numbers
    alone and sorts), the momentum μ itself beside Optuna's ``1-momentum``, the curves (numbers, at
    ``eval_steps``) in ``curves``, and each seed's numbers and curves in ``per_seed`` where there are seeds."""
    attrs: dict[str, Any] = {k: record[k] for k in SCALARS if finite(record.get(k)) or k == "status"}
    if finite(record.get("momentum")):
        attrs["momentum"] = record["momentum"]
    attrs["worker"] = worker
    curves = {"eval_steps": record.get("eval_steps"), "train_loss": record.get("train_loss_curve")}
    curves.update({k: record.get(f"{k}_curve") for k in CURVES})
    curves.update({k: record[f"{k}_curve"] for k in TUNED_CURVES if f"{k}_curve" in record})
    attrs["curves"] = curves
    if record.get("per_seed") is not None:
        attrs["per_seed"] = record["per_seed"]
    return attrs


class Finished(NamedTuple):
    """What a record is made of: a finished trial's number, state, parameters and user attributes."""

    number: int
    state: Any
    params: dict[str, Any]
    user_attrs: dict[str, Any]


def records_from_study(trials: Iterable[Any], space: Mapping[str, Sequence[float]],
                       sampler: str = "grid") -> list[dict[str, Any]]:
    """One record per finished trial of a study (Optuna's frozen trials, or :class:`Finished`): its
    hyperparameters, numbers and curves (``*_curve`` keys)."""
    from optuna.trial import TrialState

    dims = dimensions(space)
    out = []
    for t in trials:
        rec: dict[str, Any] = {"trial": t.number}
        for dim in dims:
            stored = t.params.get(dim.param)
            rec[dim.name] = dim.values[0] if stored is None else dim.value(stored, sampler == "grid")
        attrs = t.user_attrs
        rec.update({k: attrs.get(k) for k in (*SCALARS, "worker")})
        curves = attrs.get("curves") or {}
        rec["eval_steps"] = curves.get("eval_steps")
        rec["train_loss_curve"] = curves.get("train_loss")
        rec.update({f"{k}_curve": curves.get(k) for k in CURVES})
        rec.update({f"{k}_curve": curves[k] for k in TUNED_CURVES if k in curves})
        if "per_seed" in attrs:
            rec["per_seed"] = attrs["per_seed"]
        if rec["status"] is None:
            rec["status"] = "pruned" if t.state == TrialState.PRUNED else "ok"
        out.append(rec)
    return out


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
