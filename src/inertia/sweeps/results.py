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
        """A ``rich`` table of the ``top`` best configurations."""
        from rich.table import Table

        counts = self.counts()
        table = Table(title=f"best of {len(self.rows)} configurations "
                            f"({counts['ok']} finished, {counts['diverged']} diverged, {counts['pruned']} pruned)")
        table.add_column("#", justify="right")
        for name in self.swept:
            table.add_column(name, justify="right")
        if "lr" in self.swept and "momentum" in self.swept:
            table.add_column("effective lr", justify="right")
        table.add_column("val loss", justify="right")
        table.add_column("val acc %", justify="right")
        table.add_column("test acc %", justify="right")
        for i, r in enumerate(self.ranked()[:top], 1):
            cells = [str(i)] + [f"{r[name]:.4g}" for name in self.swept]
            if "lr" in self.swept and "momentum" in self.swept:
                convention = str((self.meta.get("fixed") or {}).get("convention", "torch"))
                cells.append(f"{effective_lr(r['lr'], r['momentum'], convention):.4g}")
            cells.append(_pm(r.get("val_loss_mean"), r.get("val_loss_std"), 1, "{:.4f}"))
            cells.append(_pm(r.get("val_accuracy_mean"), r.get("val_accuracy_std"), 100, "{:.1f}"))
            cells.append(_pm(r.get("test_accuracy_mean"), None, 100, "{:.1f}"))
            table.add_row(*cells)
        return table

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
