"""The results of a sweep: records, the best configuration, a table, CSV/JSON (pictures: :mod:`inertia.plots.sweep`)."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..rules.sgd import effective_lr
from .specs import METRICS


@dataclass
class SweepResults:
    """All configurations of one sweep. ``records()`` gives plain dicts (one per configuration)."""

    rows: list[dict[str, Any]]
    swept: list[str]
    metric: str = "val_loss"
    meta: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """One dict per configuration: the swept hyperparameters by name, status, metrics, loss curve."""
        return [dict(r) for r in self.rows]

    @property
    def metric_key(self) -> str:
        return METRICS[self.metric][0]

    @property
    def direction(self) -> str:
        return METRICS[self.metric][1]

    def ranked(self) -> list[dict[str, Any]]:
        """Finished ('ok') configurations, best first."""
        ok = [r for r in self.rows if r["status"] == "ok" and _finite(r.get(self.metric_key))]
        sign = -1.0 if self.direction == "maximize" else 1.0
        # ties (accuracy is discrete) go to the lower validation loss, then to the earlier trial
        return sorted(ok, key=lambda r: (sign * r[self.metric_key], r.get("val_loss_mean") or 0.0,
                                         r.get("trial") or 0))

    @property
    def best(self) -> dict[str, Any] | None:
        """The best configuration by the validation metric (None if every one diverged or was pruned)."""
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "diverged": 0, "pruned": 0}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    # ------------------------------------------------------------ outputs
    def table(self, top: int = 10):
        """A ``rich`` table of the ``top`` best configurations: at their selected step, and at the end."""
        from rich.table import Table

        counts = self.counts()
        table = Table(title=f"best of {len(self.rows)} configurations "
                            f"({counts['ok']} finished, {counts['diverged']} diverged, {counts['pruned']} pruned; "
                            f"scored at their {'best' if self.meta.get('select', 'best') == 'best' else 'final'} step)")
        table.add_column("#", justify="right")
        for name in self.swept:
            table.add_column(name, justify="right")
        both = "lr" in self.swept and "momentum" in self.swept
        if both:
            table.add_column("effective lr", justify="right")
        for name in ("step", "val loss", "val acc %", "test acc %", "final val loss", "final test acc %"):
            table.add_column(name, justify="right")
        for i, r in enumerate(self.ranked()[:top], 1):
            cells = [str(i)] + [f"{r[name]:.4g}" for name in self.swept]
            if both:
                convention = str((self.meta.get("fixed") or {}).get("convention", "torch"))
                cells.append(f"{effective_lr(r['lr'], r['momentum'], convention):.4g}")
            cells.append(str(r.get("best_step") or "-"))
            for prefix in ("", "final_"):
                cells.append(_pm(r.get(f"{prefix}val_loss_mean"), r.get(f"{prefix}val_loss_std"), 1, "{:.4f}"))
                if not prefix:
                    cells.append(_pm(r.get("val_accuracy_mean"), r.get("val_accuracy_std"), 100, "{:.1f}"))
                cells.append(_pm(r.get(f"{prefix}test_accuracy_mean"), r.get(f"{prefix}test_accuracy_std"), 100, "{:.1f}"))
            table.add_row(*cells)
        return table

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
        payload = {"metric": self.metric, "swept": self.swept, "meta": self.meta, "best": self.best,
                   "records": self.rows}
        path.write_text(json.dumps(payload, indent=1, default=_json_default, allow_nan=False)
                        if _no_nan(payload) else json.dumps(_clean(payload), indent=1, default=_json_default))
        return path



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


def _pm(mean: Any, std: Any, scale: float, fmt: str) -> str:
    if not _finite(mean):
        return "-"
    text = fmt.format(mean * scale)
    if _finite(std) and std > 0:
        text += " ± " + fmt.format(std * scale)
    return text


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
