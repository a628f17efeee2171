"""A sweep's results as the command line writes and prints them: the files of ``--out`` and the table.

Outputs draw the data engines return: :func:`write_outputs` writes the CSV, JSON, picture and report of
a :class:`~inertia.sweeps.SweepResults`, :func:`results_table` its best configurations as a ``rich`` table
(:class:`Table` prints itself too). ``inertia sweep``, ``inertia.sweep(out=...)`` and the results'
``report()``, ``table()`` and ``save()`` all come here, so they write the same files.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Callable

from ._text import mean_std


def write_outputs(results: Any, out: str | Path, command: Callable[[dict], str | None] | None = None) -> list[Path]:
    """results.csv, results.json, heatmap.png (curve.png where one hyperparameter varies) and report.html in
    ``out``, each written whole to a temporary file and renamed (a reader, or another worker, never sees
    half a file); ``command(record)``: the command that reproduces a configuration, shown in the report.
    A study not named ``sweep`` writes ``results-NAME.csv`` and so on, beside the other studies'."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = str(results.meta.get("study_name") or "sweep")
    tag = "" if name == "sweep" else "-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    written = [_atomic(out / f"results{tag}.csv", results.to_csv),
               _atomic(out / f"results{tag}.json", results.to_json)]
    from .plots.sweep import heatmap, is_curve   # heatmap() draws the curve where one hyperparameter varies

    if results.records() and (is_curve(results) or {"lr", "momentum"} <= set(results.swept)):
        picture = "curve" if is_curve(results) else "heatmap"
        written.append(_atomic(out / f"{picture}{tag}.png", lambda path: heatmap(results, path)))
    written.append(_atomic(out / f"report{tag}.html", lambda path: write_report(results, path, command)))
    return written


def write_report(results: Any, path: str | Path, command: Callable[[dict], str | None] | None = None) -> Path:
    """The sweep's interactive report at ``path``, titled and scored as ``inertia sweep`` writes it."""
    from .report import write_sweep_report

    meta, records = results.meta, results.records()
    title = (f"inertia sweep: {meta.get('optimizer')} on {meta.get('data')} / {meta.get('model')}, "
             f"{len(results)} configurations, {meta.get('steps')} steps")
    commands = [command(r) if command is not None and r.get("status") == "ok" else None for r in records]
    momenta = {r["momentum"] for r in records if 0 <= r.get("momentum", -1) < 1}
    edge = None if results.stable_lr(0.0) is None else {
        "sharpness": results.edge["sharpness"], "convention": results.edge["convention"],
        "stable_lr": {mu: results.stable_lr(mu) for mu in momenta}}
    return write_sweep_report(path, records, metric=results.metric_key, title=title, commands=commands, edge=edge)


def results_table(results: Any, top: int = 10) -> Any:
    """A ``rich`` table of the ``top`` best configurations: at their selected step, and at the end.

    Classification shows loss and accuracy; regression loss, RMSE and R².
    """
    from rich.table import Table

    from .rules.sgd import effective_lr

    counts, rows = results.counts(), results.records()
    regression = ("rmse" in results.meta["metrics"] if "metrics" in results.meta   # the task's own metrics
                  else any(r.get("val_rmse_mean") is not None for r in rows))
    score = ("val_rmse", "RMSE", 1, "{:.4g}") if regression else ("val_accuracy", "acc %", 100, "{:.1f}")
    test = ("test_r2", "R²", 1, "{:.3f}") if regression else ("test_accuracy", "acc %", 100, "{:.1f}")
    table = Table(title=f"best of {len(rows)} configurations ({counts['ok']} finished, {counts['diverged']} "
                        f"diverged, {counts['pruned']} pruned; scored at their "
                        f"{'best' if results.meta.get('select', 'best') == 'best' else 'final'} step)")
    both = "lr" in results.swept and "momentum" in results.swept
    names = ["#", *results.swept, *(["effective lr"] if both else []), "step", "val loss", f"val {score[1]}",
             f"test {test[1]}", "final val loss", f"final test {test[1]}"]
    for name in names:
        table.add_column(name, justify="right")
    convention = str((results.meta.get("fixed") or {}).get("convention", "torch"))
    loss = ("val_loss", "", 1, "{:.4f}")
    for i, r in enumerate(results.ranked()[:top], 1):
        cells = [str(i)] + [f"{r[name]:.4g}" for name in results.swept]
        if both:
            cells.append(f"{effective_lr(r['lr'], r['momentum'], convention):.4g}")
        cells.append(str(r.get("best_step") or "-"))
        for key, _, scale, fmt in (loss, score, test):
            cells.append(mean_std(r.get(f"{key}_mean"), spread(results, r, key), fmt, scale))
        for key, _, scale, fmt in (loss, test):
            cells.append(mean_std(r.get(f"final_{key}_mean"), spread(results, r, f"final_{key}"), fmt, scale))
        table.add_row(*cells)
    return table


class Table:
    """The table of a sweep's best configurations: prints itself as text (``print(results.table())``), and
    as the ``rich`` table it holds in a ``rich`` console or notebook."""

    def __init__(self, results: Any, top: int = 10):
        self.rich = results_table(results, top)

    def __rich__(self) -> Any:
        return self.rich

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=132, record=True, file=io.StringIO(), color_system=None)
        console.print(self.rich)
        return console.export_text().rstrip("\n")

    __repr__ = __str__


def spread(results: Any, record: dict[str, Any], key: str) -> Any:
    """The std over seeds and folds of ``key`` in ``record``; None for one run (nothing to spread)."""
    runs = int(results.meta.get("seeds") or 1) * int(results.meta.get("folds") or 1)
    return record.get(f"{key}_std") if runs > 1 else None


def _atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary file next to ``path`` (same suffix), then rename it to ``path``."""
    import os

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
