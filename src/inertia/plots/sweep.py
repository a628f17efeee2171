"""The learning rate x momentum heatmap of a sweep.

x: learning rate (log axis). y: momentum, drawn on a log axis of 1 − μ (so 0.9,
0.99, 0.999 are evenly spaced) and labelled with μ. Colour: the metric (colour
bar). Diverged cells are hatched and marked with ×, pruned ones with ·. Dashed
lines: iso-lines of the effective learning rate lr/(1 − μ), which are straight
diagonals in these coordinates.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {
    "val_loss_mean": "validation loss (mean over seeds and folds)",
    "val_accuracy_mean": "validation accuracy (mean over seeds and folds)",
    "val_rmse_mean": "validation RMSE (mean over seeds and folds)",
    "val_r2_mean": "validation R² (mean over seeds and folds)",
    "test_accuracy_mean": "test accuracy",
    "train_loss_final": "final training loss",
    "val_loss_std": "validation loss, std over seeds and folds",
    "val_accuracy_std": "validation accuracy, std over seeds and folds",
    "test_accuracy_std": "test accuracy, std over seeds",
}


def _edges(values: np.ndarray) -> np.ndarray:
    """Cell edges in log space around sorted positive centres."""
    logs = np.log10(values)
    if len(logs) == 1:
        return 10 ** np.array([logs[0] - 0.5, logs[0] + 0.5])
    mids = (logs[1:] + logs[:-1]) / 2
    first = logs[0] - (mids[0] - logs[0])
    last = logs[-1] + (logs[-1] - mids[-1])
    return 10 ** np.concatenate([[first], mids, [last]])


def heatmap(results: Any, path: str | Path | None = None, *, title: str | None = None, metric: str | None = None):
    """Draw the lr x momentum heatmap of ``results`` (a :class:`~inertia.sweeps.SweepResults`).

    Returns the matplotlib figure; saves a PNG when ``path`` is given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    key = metric or results.metric_key
    records = results.records()
    if "lr" not in results.swept or "momentum" not in results.swept:
        raise ValueError("the heatmap needs a sweep over both lr and momentum")
    cells = _best_cells(records, key)
    lrs = np.array(sorted({k[0] for k in cells}))
    one_minus = np.array(sorted({1 - k[1] for k in cells}))
    is_grid = len(cells) == len(lrs) * len(one_minus) and len(lrs) * len(one_minus) <= 4 * max(1, len(records))
    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=120)
    cmap, norm = _colour_scale(cells, key)
    if is_grid and len(lrs) > 1 and len(one_minus) > 1:
        mesh, xlim, ylim = _draw_grid(ax, cells, lrs, one_minus, key, cmap, norm)
    else:
        mesh, xlim, ylim = _draw_points(ax, cells, key, cmap, norm)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*xlim)
    ax.set_ylim(ylim[1], ylim[0])  # momentum grows upwards
    _effective_lr_lines(ax, xlim, ylim)
    ticks = [t for t in one_minus if ylim[0] <= t <= ylim[1]] if is_grid else \
        [t for t in (1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001) if ylim[0] <= t <= ylim[1]]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{1 - t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks([], minor=True)
    ax.set_xlabel("learning rate γ (log scale)")
    ax.set_ylabel("momentum μ (axis: log(1 − μ))")
    fig.colorbar(mesh, ax=ax).set_label(LABELS.get(key, key))
    ax.set_title(_default_title(results, len(records)) if title is None else title, fontsize=9)
    best = results.best
    if best is not None:
        ax.plot([best["lr"]], [1 - best["momentum"]], marker="*", color="#ff7f0e", markersize=14,
                markeredgecolor="k", linestyle="none", label="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
        plt.close(fig)
    return fig


def _best_cells(records: list[dict], key: str) -> dict[tuple[float, float], dict[str, Any]]:
    """One record per (lr, momentum): the best by ``key`` over any further swept hyperparameters."""
    better = max if key.endswith("accuracy_mean") else min
    cells: dict[tuple[float, float], dict[str, Any]] = {}
    for r in records:
        k = (float(r["lr"]), float(r["momentum"]))
        v = r.get(key)
        cur = cells.get(k)
        if cur is None or (v is not None and (cur.get(key) is None or better(v, cur[key]) == v)):
            cells[k] = r
    return cells


def _colour_scale(cells: dict, key: str):
    """The colour map (bright is good) and its range: the finite values', a loss's top clipped at
    3× the median's distance from the best, so that a few near-diverged cells do not wash it out."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    values = [r.get(key) for r in cells.values() if r.get(key) is not None and math.isfinite(r.get(key))]
    if values:
        lo, hi = min(values), max(values)
        if key.endswith("loss_mean") or key == "train_loss_final":
            hi = min(hi, lo + 3 * (np.median(values) - lo) + 1e-9) if len(values) > 2 else hi
    else:
        lo, hi = 0.0, 1.0
    cmap = plt.get_cmap("viridis_r" if not key.endswith("accuracy_mean") else "viridis").with_extremes(bad="#dddddd")
    return cmap, Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)


def _draw_grid(ax, cells: dict, lrs: np.ndarray, one_minus: np.ndarray, key: str, cmap, norm):
    """A full grid as cells: colour for finished ones (with their value where there are ≤ 100), hatched
    × for diverged, "pruned" for pruned. Returns the mesh and the axis limits."""
    import matplotlib.pyplot as plt

    grid = np.full((len(one_minus), len(lrs)), np.nan)
    for (lr, mu), r in cells.items():
        v = r.get(key)
        i, j = int(np.searchsorted(one_minus, 1 - mu)), int(np.searchsorted(lrs, lr))
        if v is not None and math.isfinite(v) and r["status"] == "ok":
            grid[i, j] = v
    xe, ye = _edges(lrs), _edges(one_minus)
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid), cmap=cmap, norm=norm, shading="flat")
    for (lr, mu), r in cells.items():
        i, j = int(np.searchsorted(one_minus, 1 - mu)), int(np.searchsorted(lrs, lr))
        if r["status"] == "diverged":
            ax.add_patch(plt.Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=False,
                                       hatch="xx", edgecolor="#b22222", linewidth=0))
            ax.text(lr, 1 - mu, "×", ha="center", va="center", color="#b22222", fontsize=12, fontweight="bold")
        elif r["status"] == "pruned":
            ax.text(lr, 1 - mu, "pruned", ha="center", va="center", color="#555555", fontsize=6)
        elif r.get(key) is not None and len(lrs) * len(one_minus) <= 100:
            v = r[key]
            ax.text(lr, 1 - mu, f"{v * 100:.0f}" if key.endswith("accuracy_mean") else f"{v:.2f}",
                    ha="center", va="center", fontsize=6,
                    color="white" if norm(v) > 0.6 and not key.endswith("accuracy_mean") else "black")
    return mesh, (xe[0], xe[-1]), (ye[0], ye[-1])


def _draw_points(ax, cells: dict, key: str, cmap, norm):
    """Scattered configurations (random or TPE search) as coloured dots, × diverged, · pruned.
    Returns the scatter and the axis limits."""
    ok = [r for r in cells.values() if r["status"] == "ok" and r.get(key) is not None]
    mesh = ax.scatter([r["lr"] for r in ok], [1 - r["momentum"] for r in ok], c=[r[key] for r in ok],
                      cmap=cmap, norm=norm, s=60, edgecolors="k", linewidths=0.3)
    bad = [r for r in cells.values() if r["status"] == "diverged"]
    ax.scatter([r["lr"] for r in bad], [1 - r["momentum"] for r in bad], marker="x", color="#b22222", s=50,
               label="diverged")
    pruned = [r for r in cells.values() if r["status"] == "pruned"]
    if pruned:
        ax.scatter([r["lr"] for r in pruned], [1 - r["momentum"] for r in pruned], marker=".", color="#555555",
                   label="pruned")
    xs = [r["lr"] for r in cells.values()]
    ys = [1 - r["momentum"] for r in cells.values()]
    if bad or pruned:
        ax.legend(loc="lower left", fontsize=8)
    return mesh, (min(xs) / 1.5, max(xs) * 1.5), (max(min(ys) / 1.5, 1e-6), min(max(ys) * 1.5, 1.5))


def _effective_lr_lines(ax, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
    """Dashed iso-lines of the effective learning rate lr / (1 − μ), one per decade."""
    gx = np.logspace(np.log10(xlim[0]), np.log10(xlim[1]), 200)
    gy = np.logspace(np.log10(ylim[0]), np.log10(ylim[1]), 200)
    X, Y = np.meshgrid(gx, gy)
    eff = np.log10(X / Y)
    levels = np.arange(math.floor(eff.min()), math.ceil(eff.max()) + 1)
    cs = ax.contour(X, Y, eff, levels=levels, colors="#444444", linewidths=0.9, linestyles="--", alpha=0.8)
    ax.clabel(cs, fmt=lambda v: f"lr/(1-μ)={10 ** v:g}", fontsize=6, inline=True)


def _default_title(results: Any, configs: int) -> str:
    """What was swept and how: rule, data, model, budget, schedules, and what did not finish."""
    meta, counts = results.meta, results.counts()
    schedules = ", ".join(f"{name} {spec}" for name, spec in (meta.get("schedules") or {}).items())
    return (f"{meta.get('optimizer', '')} on {meta.get('data', '')} / {meta.get('model', '')}: "
            f"{configs} configs, {meta.get('steps', '?')} steps, batch {meta.get('batch_size', '?')}, "
            f"{meta.get('folds', 1)} fold(s)" + (f"\nschedules: {schedules}" if schedules else "") +
            f"\n{counts.get('diverged', 0)} diverged (×), {counts.get('pruned', 0)} pruned; "
            f"dashed: effective lr γ/(1−μ)")
