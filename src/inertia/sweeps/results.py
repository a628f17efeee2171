"""The results of a sweep: records, the best configuration, a table, CSV/JSON (pictures: :mod:`inertia.plots.sweep`)."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .specs import METRICS


@dataclass
class SweepResults:
    """All configurations of one sweep. ``records()`` gives plain dicts (one per configuration).

    ``edge``: heavy ball's stability edge measured at initialization when a run of the sweep's study was
    asked for it (``edge=True``; :func:`inertia.sweeps.edge.stability_edge`, kept in the study's user
    attribute ``stability_edge``): ``sharpness`` (λ_max, the median over seeds), ``sharpness_per_seed``,
    ``convention``, ``nesterov``, ``dampening``; None otherwise.
    """

    rows: list[dict[str, Any]]
    swept: list[str]
    metric: str = "val_loss"
    meta: dict[str, Any] = field(default_factory=dict)
    edge: dict[str, Any] | None = None

    def records(self) -> list[dict[str, Any]]:
        """One dict per configuration: the swept hyperparameters by name, status, metrics, loss curve."""
        return [dict(r) for r in self.rows]

    @property
    def metric_key(self) -> str:
        return METRICS[self.metric][0]

    @property
    def direction(self) -> str:
        return METRICS[self.metric][1]

    def stable_lr(self, momentum: float) -> float | None:
        """The largest stable learning rate at ``momentum`` by :attr:`edge` (None without it):
        lr·λ_max < 2 + 2μ in its convention (:func:`inertia.sharpness.stable_lr`)."""
        from ..sharpness import stable_lr

        if self.edge is None or not self.edge["sharpness"] > 0:
            return None
        rule = {k: self.edge[k] for k in ("convention", "nesterov", "dampening")}
        return stable_lr(self.edge["sharpness"], momentum, **rule)

    @property
    def varied(self) -> list[str]:
        """The swept hyperparameters that take more than one value among the configurations (``--momentum
        0.9`` beside several learning rates is swept, and does not vary): what a picture has axes for."""
        return [name for name in self.swept if len({r.get(name) for r in self.rows}) > 1]

    def fixed_momentum(self) -> float | None:
        """The one momentum every configuration trained with, where it is not scheduled: a swept one that does
        not vary, the fixed one, or the rule's default (``meta``'s ``optimizer`` and ``fixed``); else None."""
        from .. import rules

        if "momentum" in (self.meta.get("schedules") or {}) or "momentum" in self.varied:
            return None
        if "momentum" in self.swept:
            return float(self.rows[0]["momentum"]) if self.rows else None
        fixed = self.meta.get("fixed") or {}
        try:
            momentum = rules.get(str(self.meta.get("optimizer"))).hyper(**fixed).get("momentum")
        except (ValueError, TypeError):
            return None
        return None if momentum is None else float(momentum)

    def ranked(self) -> list[dict[str, Any]]:
        """Finished ('ok') configurations, best first."""
        ok = [r for r in self.rows if r["status"] == "ok" and _finite(r.get(self.metric_key))]
        sign = -1.0 if self.direction == "maximize" else 1.0
        # ties (accuracy is discrete) go to the lower validation loss, then to the earlier trial
        return sorted(ok, key=lambda r: (sign * r[self.metric_key], r.get("val_loss_mean") or 0.0,
                                         r.get("trial") or 0))

    @property
    def best(self) -> "Record | None":
        """The best configuration by the validation metric, as a :class:`Record` without its curves
        (:meth:`curves` has them); None if every one diverged or was pruned."""
        ranked = self.ranked()
        return Record.of(ranked[0]) if ranked else None

    def curves(self, config: Mapping[str, Any] | None = None) -> dict[str, list[Any]]:
        """The curves of ``config`` (default: the best): ``eval_steps`` (the update counts of the
        evaluation points), each metric's mean and std at them (``val_loss_mean``, ...), and
        ``train_loss`` (subsampled over the run)."""
        config = config if config is not None else self.best
        if config is None:
            raise ValueError("no configuration finished, so there is no best to take curves from")
        row = next((r for r in self.rows if r.get("trial") == config.get("trial")
                    and all(r.get(n) == config.get(n) for n in self.swept)), None)
        if row is None:
            raise ValueError(f"no configuration of this sweep is {Record.of(config)!r}")
        return {_curve_name(k): v for k, v in row.items() if _is_curve(k) and v is not None}

    def to_dataframe(self) -> Any:
        """Every configuration as a row of a pandas DataFrame (swept values, status, metrics; no curves).

        pandas is an optional dependency: ``pip install 'inertia[pandas]'``."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install 'inertia[pandas]' (or pandas)") from None
        return pandas.DataFrame([Record.of(r) for r in self.rows], columns=_keys(
            [Record.of(r) for r in self.rows], self.swept))

    def table(self, top: int = 10) -> Any:
        """The ``top`` best configurations as ``inertia sweep`` prints them; ``print(results.table())``."""
        from ..outputs import Table

        return Table(self, top)

    def report(self, path: str | Path, command: Any = None) -> Path:
        """The interactive HTML report at ``path``, as ``inertia sweep`` writes it; ``command(results, record)``
        (``inertia.train_command``) adds each configuration's reproduce command."""
        from ..outputs import write_report

        return write_report(self, path, None if command is None else lambda record: command(self, record))

    def save(self, out: str | Path, command: Any = None) -> list[Path]:
        """Every file ``inertia sweep --out`` writes (CSV, JSON, picture, report) into ``out``; ``command``
        as for :meth:`report`."""
        from ..outputs import write_outputs

        return write_outputs(self, out, None if command is None else lambda record: command(self, record))

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "diverged": 0, "pruned": 0}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def warnings(self) -> list[str]:
        """What a person should know about the best: it lies on the edge of the range (which way to widen)."""
        best, space = self.best, self.meta.get("space") or {}
        if best is None:
            return []
        out = []
        for name in self.swept:
            values = sorted(float(v) for v in space.get(name) or [])
            if len(values) < 2:
                continue
            side = _edge(name, float(best[name]), values, self.meta.get("sampler", "grid") == "grid")
            if side:
                out.append(f"the best {name} ({best[name]:.4g}) is the {side[0]} of the range "
                           f"{values[0]:.4g}..{values[-1]:.4g}: widen {name} {side[1]}")
        return out

    def to_csv(self, path: str | Path) -> Path:
        """All configurations as CSV (the loss curve as a JSON list in one column)."""
        path = Path(path)
        keys = _keys(self.rows, self.swept)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: (json.dumps(r.get(k)) if isinstance(r.get(k), list) else r.get(k)) for k in keys})
        return path

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        payload = {"metric": self.metric, "swept": self.swept, "meta": self.meta, "edge": self.edge,
                   "best": self.best, "records": self.rows}
        path.write_text(json.dumps(payload, indent=1, default=_json_default, allow_nan=False)
                        if _no_nan(payload) else json.dumps(_clean(payload), indent=1, default=_json_default))
        return path



def train_curve_steps(record: Mapping[str, Any]) -> list[int]:
    """The update counts (1 ... steps) at which a record's subsampled ``train_loss_curve`` was taken."""
    points, steps = len(record.get("train_loss_curve") or []), int(record.get("steps") or 0)
    if not steps:
        return list(range(1, points + 1))
    return [round(i * (steps - 1) / max(1, points - 1)) + 1 for i in range(points)]


class Record(dict):
    """One configuration's numbers (swept values, status, metrics) without its curves: a plain dict
    that prints as one short line."""

    SHOWN = ("val_accuracy_mean", "val_loss_mean", "val_rmse_mean", "test_accuracy_mean", "test_loss_mean",
             "test_rmse_mean")

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> "Record":
        return cls({k: v for k, v in row.items() if not _is_curve(k)})

    def __repr__(self) -> str:
        keys = list(self)
        settings = keys[:keys.index("status")] if "status" in keys else []
        shown = [k for k in settings if k != "trial"] + ["status", "best_step"]
        shown += [k for k in self.SHOWN if self.get(k) is not None]
        return "Record(" + ", ".join(f"{k}={_short(self.get(k))}" for k in shown if k in self) + ")"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _is_curve(key: str) -> bool:
    return key.endswith("_curve") or key in ("eval_steps", "curves")


def _curve_name(key: str) -> str:
    return key[: -len("_curve")] if key.endswith("_curve") else key


def _edge(name: str, value: float, values: Sequence[float], grid: bool) -> tuple[str, str] | None:
    """("top"/"bottom" of the range, which way to widen) when ``value`` lies on an edge of ``values``
    (grid: is the first or last value; sampled: in the outer tenth of the range, log-scaled where
    the sampler is); None inside. Momentum 0 is no edge (below it there is nothing to try)."""
    low, high = values[0], values[-1]
    scale = {"lr": lambda v: math.log(v), "momentum": lambda v: -math.log(1 - v)}.get(name, lambda v: v)
    try:
        u = (scale(value) - scale(low)) / (scale(high) - scale(low))
    except (ValueError, ZeroDivisionError):
        return None
    near = 0.0 if grid else 0.1
    if u >= 1 - near - 1e-9:
        return ("top", "toward 1" if name == "momentum" else "upward")
    if u <= near + 1e-9 and not (name == "momentum" and low <= 0):
        return ("bottom", "downward")
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _keys(rows: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[str]:
    keys = list(swept)
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    return keys


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _no_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_no_nan(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nan(v) for v in value)
    return True


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
