"""Which evaluation point of a configuration counts: its best (early stopping) or its last.

A pure function of an engine record: the record holds every metric's mean and std (over seeds
and folds) at every evaluation point (``eval_steps``, ``val_loss_mean_curve``, ...), so picking
the point with the best validation metric and reading the test metrics there is exact, with
no copy of any weights.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

SELECTIONS = ("best", "final")
"""``best``: each configuration at its evaluation point with the best validation metric (early
stopping); ``final``: at its last step."""

MEASURES = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")
STATS = ("mean", "std")


def best_point(record: Mapping[str, Any], metric: str = "val_loss") -> int | None:
    """Index into ``record["eval_steps"]`` of the best mean validation ``metric``; ties go to the
    lower validation loss, then to the earlier step. None when no point has a finite value."""
    values = record.get(f"{metric}_mean_curve") or []
    losses = record.get("val_loss_mean_curve") or [None] * len(values)
    sign = 1.0 if metric.endswith("loss") else -1.0
    finite = [i for i, v in enumerate(values) if _finite(v)]
    if not finite:
        return None
    return min(finite, key=lambda i: (sign * values[i], losses[i] if _finite(losses[i]) else math.inf, i))


def select(record: Mapping[str, Any], metric: str = "val_loss", mode: str = "best") -> dict[str, Any]:
    """``record`` with its headline metrics (``val_loss_mean``, ..., ``test_accuracy_std``) taken at
    the selected evaluation point, that point's step as ``best_step``, and the last values kept as
    ``final_val_loss_mean``, .... A configuration that did not finish keeps its None headlines."""
    if mode not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got {mode!r}")
    out = dict(record)
    for measure in MEASURES:
        for stat in STATS:
            out[f"final_{measure}_{stat}"] = record.get(f"{measure}_{stat}")
    out["best_step"] = None
    if record.get("status") != "ok":
        return out
    steps = record.get("eval_steps") or []
    point = best_point(record, metric) if mode == "best" else len(steps) - 1
    if point is None or point < 0:
        return out
    out["best_step"] = int(steps[point])
    for measure in MEASURES:
        for stat in STATS:
            curve = record.get(f"{measure}_{stat}_curve") or []
            out[f"{measure}_{stat}"] = curve[point] if point < len(curve) else None
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
