"""The learning rate x momentum heatmap of a sweep.

x: learning rate (log axis). y: momentum, drawn on a log axis of 1 − μ (so 0.9,
0.99, 0.999 are evenly spaced) and labelled with μ. Colour: the metric (colour
bar). Diverged cells are hatched and marked with ×, pruned ones with ·; accuracies in %
in the cells and on the colour bar; the best cell framed. Dashed lines: iso-lines
of the effective learning rate lr/(1 − μ), straight diagonals in these coordinates,
labelled where they leave the plot. A sweep measured for heavy ball's stability edge
(``edge=True``) shows it as a solid line: the largest stable lr (2 + 2μ)/λ_max for each μ
(in its convention, :meth:`~inertia.sweeps.SweepResults.stable_lr`), the lr axis widened to show it
when it lies just beyond the grid. A sweep of one hyperparameter
is a curve with a band of ± one standard deviation over seeds and folds (:func:`curve`); a sweep of lr
alone at one momentum μ measured for the edge shows it as a vertical line at lr = (2 + 2μ)/λ_max.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import color, pyplot

#: the best configuration's frame or ring (Okabe & Ito's vermillion: visible on dark and light cells)
BEST_COLOUR = "#D55E00"
#: the stability edge (Okabe & Ito's reddish purple, on a white halo)
EDGE_COLOUR = "#CC79A7"

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


def is_percent(key: str) -> bool:
    """Accuracies are drawn in % (as the terminal prints them); other metrics as they are."""
    return "accuracy" in key


def _cell_text(value: float, key: str) -> str:
    return f"{value * 100:.0f}" if is_percent(key) else f"{value:.2f}"


def _label(key: str) -> str:
    label = LABELS.get(key, key)
    return label.replace("accuracy", "accuracy, %", 1) if is_percent(key) else label


def heatmap(results: Any, path: str | Path | None = None, *, title: str | None = None, metric: str | None = None):
    """Draw the lr x momentum heatmap of ``results`` (a :class:`~inertia.sweeps.SweepResults`); a sweep of
    one hyperparameter is drawn as a curve (:func:`curve`).

    Returns the matplotlib figure; saves a PNG when ``path`` is given.
    """
    if is_curve(results):
        return curve(results, path, title=title, metric=metric)
    if "lr" not in results.swept or "momentum" not in results.swept:
        raise ValueError(f"the heatmap needs a sweep over both lr and momentum (or over one hyperparameter, "
                         f"drawn as a curve); this one swept {', '.join(results.swept)}")
    plt = pyplot()
    key = metric or results.metric_key
    records = results.records()
    cells = _best_cells(records, key)
    lrs = np.array(sorted({k[0] for k in cells}))
    one_minus = np.array(sorted({1 - k[1] for k in cells}))
    is_grid = len(cells) == len(lrs) * len(one_minus) and len(lrs) * len(one_minus) <= 4 * max(1, len(records))
    fig, ax = plt.subplots(figsize=(8.0, 6.6), dpi=120)
    cmap, norm, extend = _colour_scale(cells, key)
    if is_grid and len(lrs) > 1 and len(one_minus) > 1:
        mesh, xlim, ylim = _draw_grid(ax, cells, lrs, one_minus, key, cmap, norm)
    else:
        mesh, xlim, ylim = _draw_points(ax, cells, key, cmap, norm)
    ax.set_xlim(*xlim)   # before the log scales: a lone configuration leaves autoscaling no range
    ax.set_ylim(ylim[1], ylim[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    edge = _edge_points(results, ylim)
    xlim = _widened(xlim, None if edge is None else edge[0])
    ax.set_xlim(*xlim)
    ax.set_ylim(ylim[1], ylim[0])  # momentum grows upwards
    _effective_lr_lines(ax, xlim, ylim)
    _stability_edge(ax, results, edge, xlim)
    ticks = [t for t in one_minus if ylim[0] <= t <= ylim[1]] if is_grid else \
        [t for t in (1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001) if ylim[0] <= t <= ylim[1]]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{1 - t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks([], minor=True)
    ax.set_xlabel("learning rate γ (log scale)")
    ax.set_ylabel("momentum μ (axis: log(1 − μ))")
    _mark_best(ax, results.best, is_grid, lrs, one_minus, key)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, fontsize=8, frameon=False)
    _colour_bar(fig, ax, mesh, key, norm, extend)
    ax.set_title(_default_title(results, len(records)) if title is None else title, fontsize=9, pad=14)
    return _finish(fig, path)


def is_curve(results: Any) -> bool:
    """Whether ``results`` are drawn as a curve: one hyperparameter swept, or one that varies (lr at one momentum)."""
    return len(results.swept) == 1 or len(results.varied) == 1


def curve(results: Any, path: str | Path | None = None, *, title: str | None = None, metric: str | None = None):
    """A sweep of one hyperparameter (or of several, of which one varies): the metric (mean over seeds and
    folds) against it, a band of ± one standard deviation, diverged configurations marked × on the axis, the
    best ringed; for lr at one momentum, the stability edge where the sweep measured it (:func:`_curve_edge`)."""
    plt = pyplot()
    key = metric or results.metric_key
    name = (results.varied or results.swept)[0]
    records = sorted(results.records(), key=lambda r: float(r[name]))
    scale = 100.0 if is_percent(key) else 1.0
    ok = [r for r in records if r["status"] == "ok" and r.get(key) is not None and math.isfinite(r[key])]
    x = np.array([float(r[name]) for r in ok])
    y = np.array([r[key] * scale for r in ok])
    spread = np.array([(r.get(key.replace("_mean", "_std")) or 0.0) * scale for r in ok])
    fig, ax = plt.subplots(figsize=(8.0, 5.4), dpi=120)
    ax.fill_between(x, y - spread, y + spread, color=color(1, on_dark=False), alpha=0.25,
                    label="± 1 std over seeds and folds")
    ax.plot(x, y, "-o", color=color(1, on_dark=False), markersize=5, label=_label(key))
    bad = [float(r[name]) for r in records if r["status"] == "diverged"]
    if bad:
        ax.plot(bad, [0] * len(bad), "x", color="#b22222", markersize=9, markeredgewidth=2, clip_on=False,
                transform=ax.get_xaxis_transform(), label="diverged")
    best = results.best
    if best is not None and best.get(key) is not None:
        ax.plot([float(best[name])], [best[key] * scale], "o", markersize=15, markerfacecolor="none",
                markeredgecolor=BEST_COLOUR, markeredgewidth=2.5, label=f"best: {name} = {float(best[name]):.3g}")
    values = [float(r[name]) for r in records]
    if min(values) > 0 and max(values) / min(values) >= 20:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    if name == "lr":
        _curve_edge(ax, results)
    ax.set_xlabel(name + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(_label(key))
    ax.legend(fontsize=8, loc="best")
    ax.set_title(_default_title(results, len(records), lines=False) if title is None else title, fontsize=9)
    return _finish(fig, path)


def _finish(fig: Any, path: str | Path | None):
    """Save (the whole figure, titles and labels included) and close when ``path`` is given."""
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
        pyplot().close(fig)
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
    """The colour map (bright is good), its range and whether values fall outside it: the finite values',
    a loss's top clipped at 3× the median's distance from the best, so that a few near-diverged cells do
    not wash it out (``extend`` is then ``"max"``: the colour bar's arrow)."""
    from matplotlib.colors import Normalize

    values = [r.get(key) for r in cells.values() if r.get(key) is not None and math.isfinite(r.get(key))]
    extend = "neither"
    if values:
        lo, hi = min(values), max(values)
        if key.endswith("loss_mean") or key == "train_loss_final":
            top = lo + 3 * (np.median(values) - lo) + 1e-9 if len(values) > 2 else hi
            if top < hi:
                hi, extend = top, "max"
    else:
        lo, hi = 0.0, 1.0
    cmap = pyplot().get_cmap("viridis_r" if not key.endswith("accuracy_mean") else "viridis").with_extremes(bad="#dddddd")
    return cmap, Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9), extend


def _colour_bar(fig: Any, ax: Any, mesh: Any, key: str, norm: Any, extend: str) -> None:
    """The colour bar in the cells' unit (% for accuracies); an arrow and a note when values are clipped."""
    from matplotlib.ticker import FuncFormatter

    bar = fig.colorbar(mesh, ax=ax, extend=extend, pad=0.08)
    label = _label(key)
    if extend == "max":
        label += f"\n▲ arrow: values above {norm.vmax:.3g} drawn in its colour"
    bar.set_label(label)
    if is_percent(key):
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.0f}"))
    if norm.vmax - norm.vmin <= 1e-9:   # every cell has one value: one tick, not a scale of copies of it
        bar.set_ticks([norm.vmin])


def _text_colour(rgba: Any) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell's colour, WCAG)."""
    channel = np.array(rgba[:3], dtype=float)
    linear = np.where(channel <= 0.03928, channel / 12.92, ((channel + 0.055) / 1.055) ** 2.4)
    return "black" if float(linear @ [0.2126, 0.7152, 0.0722]) > 0.18 else "white"


def _draw_grid(ax, cells: dict, lrs: np.ndarray, one_minus: np.ndarray, key: str, cmap, norm):
    """A full grid as cells: colour for finished ones (with their value where there are ≤ 100), hatched
    × for diverged, "pruned" for pruned. Returns the mesh and the axis limits."""
    import matplotlib.pyplot as plt
    from matplotlib import patheffects

    grid = np.full((len(one_minus), len(lrs)), np.nan)
    for (lr, mu), r in cells.items():
        v = r.get(key)
        i, j = int(np.searchsorted(one_minus, 1 - mu)), int(np.searchsorted(lrs, lr))
        if v is not None and math.isfinite(v) and r["status"] == "ok":
            grid[i, j] = v
    xe, ye = _edges(lrs), _edges(one_minus)
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid), cmap=cmap, norm=norm, shading="flat")
    size = 9 if grid.size <= 64 else 7
    for (lr, mu), r in cells.items():
        i, j = int(np.searchsorted(one_minus, 1 - mu)), int(np.searchsorted(lrs, lr))
        if r["status"] == "diverged":
            ax.add_patch(plt.Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=False,
                                       hatch="xx", edgecolor="#b22222", linewidth=0))
            ax.text(lr, 1 - mu, "×", ha="center", va="center", color="#b22222", fontsize=14, fontweight="bold")
        elif r["status"] == "pruned":
            ax.text(lr, 1 - mu, "pruned", ha="center", va="center", color="#555555", fontsize=size - 2)
        elif r.get(key) is not None and math.isfinite(r[key]) and grid.size <= 100:
            ink = _text_colour(cmap(norm(r[key])))
            halo = patheffects.withStroke(linewidth=1.5, foreground="black" if ink == "white" else "white")
            ax.text(lr, 1 - mu, _cell_text(r[key], key), ha="center", va="center", fontsize=size, color=ink,
                    path_effects=[halo], zorder=4)
    return mesh, (xe[0], xe[-1]), (ye[0], ye[-1])


def _mark_best(ax, best: dict | None, is_grid: bool, lrs: np.ndarray, one_minus: np.ndarray, key: str) -> None:
    """A frame around the best cell (its value stays readable), or a ring around the best point."""
    import matplotlib.pyplot as plt

    if best is None:
        return
    label = f"best: lr {best['lr']:.3g}, μ {best['momentum']:g}"
    if is_grid and len(lrs) > 1 and len(one_minus) > 1:
        xe, ye = _edges(lrs), _edges(one_minus)
        j, i = int(np.searchsorted(lrs, best["lr"])), int(np.searchsorted(one_minus, 1 - best["momentum"]))
        ax.add_patch(plt.Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=False,
                                   edgecolor=BEST_COLOUR, linewidth=3, zorder=5, label=label))
    else:
        ax.plot([best["lr"]], [1 - best["momentum"]], "o", markersize=16, markerfacecolor="none",
                markeredgecolor=BEST_COLOUR, markeredgewidth=2.5, linestyle="none", label=label)


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
    return mesh, (min(xs) / 1.5, max(xs) * 1.5), (max(min(ys) / 1.5, 1e-6), min(max(ys) * 1.5, 1.5))


def _effective_lr_lines(ax, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
    """Dashed iso-lines of the effective learning rate lr / (1 − μ), one per decade, each labelled at an
    end, clear of the cells' numbers: above the plot where it leaves through the top (highest momentum),
    else right of it, else just inside the bottom edge."""
    (x0, x1), (y0, y1) = xlim, ylim      # y: 1 − μ, small at the top of the plot
    style = dict(fontsize=8, color="#333333", annotation_clip=False)
    for level in range(math.floor(math.log10(x0 / y1)), math.ceil(math.log10(x1 / y0)) + 1):
        eff = 10.0 ** level               # the line lr = eff · (1 − μ)
        top, bottom = max(y0, x0 / eff), min(y1, x1 / eff)
        if top >= bottom:
            continue
        ax.plot([eff * top, eff * bottom], [top, bottom], "--", color="#333333", linewidth=1.0, alpha=0.85,
                zorder=3)
        text = f"{eff:g}"
        if top == y0:
            ax.annotate(text, (eff * y0, y0), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", **style)
        elif bottom < y1:
            ax.annotate(text, (x1, bottom), xytext=(3, 0), textcoords="offset points", ha="left", va="center",
                        **style)
        else:
            ax.annotate(text, (eff * y1, y1), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", bbox=dict(boxstyle="round,pad=0.1", facecolor="white", alpha=0.8,
                                               linewidth=0), **style)


EDGE_REACH = 1.5
"""Decades beyond the grid the lr axis is widened to show the stability edge (farther: the legend says so)."""


def _edge_points(results: Any, ylim: tuple[float, float]) -> tuple[list[float], np.ndarray] | None:
    """Heavy ball's stability edge where the sweep measured λ_max, as (lr, 1 − μ) points: lr = stable_lr(μ)
    for μ ≥ 0 across the plot's height (above 1 − μ = 1, the momentum-0 row, at its μ = 0 value)."""
    if results.stable_lr(0.0) is None:
        return None
    top, bottom = ylim[0], min(ylim[1], 1.0)          # 1 − μ, small at the top of the plot
    one_minus = np.geomspace(top, bottom, 200) if top < bottom else np.array([bottom])
    if ylim[1] > 1.0:
        one_minus = np.append(one_minus, ylim[1])
    return [results.stable_lr(max(0.0, 1.0 - y)) for y in one_minus], one_minus


def _widened(xlim: tuple[float, float], edge_lrs: list[float] | None) -> tuple[float, float]:
    """The lr axis widened to show the whole edge (its learning rates ``edge_lrs``), where it lies within
    :data:`EDGE_REACH` decades of it."""
    if edge_lrs is None:
        return xlim
    low, high = min(edge_lrs) / 1.15, max(edge_lrs) * 1.15
    if low < xlim[0] and math.log10(xlim[0] / low) <= EDGE_REACH:
        xlim = (low, xlim[1])
    if high > xlim[1] and math.log10(high / xlim[1]) <= EDGE_REACH:
        xlim = (xlim[0], high)
    return xlim


def _stability_edge(ax, results: Any, edge: tuple[list[float], np.ndarray] | None, xlim: tuple[float, float]) -> None:
    """The edge's line, on a white halo, its legend entry naming λ_max (and saying so when it lies off the plot)."""
    from matplotlib import patheffects

    if edge is None:
        return
    rule = results.edge
    label = (f"stability edge lr·λ_max = 2 + 2μ ({rule['convention']}{', Nesterov' if rule['nesterov'] else ''}), "
             f"λ_max = {rule['sharpness']:.3g} at init")
    if min(edge[0]) > xlim[1] or max(edge[0]) < xlim[0]:
        label += f": off the plot, lr {min(edge[0]):.3g}–{max(edge[0]):.3g}"
    ax.plot(*edge, "-", color=EDGE_COLOUR, linewidth=2.2, zorder=3.5, label=label,
            path_effects=[patheffects.withStroke(linewidth=4.2, foreground="white")])


def _curve_edge(ax, results: Any) -> None:
    """A sweep of lr alone at one momentum μ, measured for the edge: a vertical line at its largest stable
    lr (2 + 2μ)/λ_max (in its convention, :meth:`~inertia.sweeps.SweepResults.stable_lr`), the axis widened
    to it as the heatmap's (:func:`_widened`), its legend entry naming λ_max."""
    from matplotlib import patheffects

    momentum = results.fixed_momentum()
    lr = None if momentum is None else results.stable_lr(momentum)
    if lr is None:
        return
    xlim = _widened(ax.get_xlim(), [lr])
    ax.set_xlim(*xlim)
    rule = results.edge
    label = (f"stability edge lr·λ_max = 2 + 2μ ({rule['convention']}{', Nesterov' if rule['nesterov'] else ''}) "
             f"at μ = {momentum:g}: lr {lr:.3g}, λ_max = {rule['sharpness']:.3g} at init")
    if not xlim[0] <= lr <= xlim[1]:
        label += " (off the plot)"
    ax.axvline(lr, color=EDGE_COLOUR, linewidth=2.2, zorder=3.5, label=label,
               path_effects=[patheffects.withStroke(linewidth=4.2, foreground="white")])


def _default_title(results: Any, configs: int, lines: bool = True) -> str:
    """What was swept and how: rule, data, model, budget, schedules, any further swept hyperparameter,
    and what did not finish; one short line each, so that none is cut off."""
    meta, counts = results.meta, results.counts()
    schedules = ", ".join(f"{name} {spec}" for name, spec in (meta.get("schedules") or {}).items())
    space = meta.get("space") or {}
    further = [n for n in results.swept if n not in ("lr", "momentum")] if lines else []
    fixed = {k: v for k, v in (meta.get("fixed") or {}).items() if k not in results.swept}
    if results.rows and is_curve(results):   # the swept hyperparameters that do not vary are held too
        fixed.update({k: results.rows[0][k] for k in results.swept if k not in results.varied})
    at = ", ".join(f"{k} = {v:g}" if isinstance(v, (int, float)) else f"{k} = {v}" for k, v in fixed.items())
    what = f"{meta.get('optimizer', '')} on {meta.get('data', '')} / {meta.get('model', '')}"
    parts = [what + (f", {at}" if at else ""),
             f"{configs} config{'' if configs == 1 else 's'}, {meta.get('steps', '?')} steps, batch {meta.get('batch_size', '?')}, "
             f"{meta.get('folds', 1)} fold(s), {meta.get('seeds', 1)} seed(s)"]
    if schedules:
        parts.append(f"schedules: {schedules}")
    for name in further:
        values = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in space.get(name) or [])
        parts.append(f"each cell: the best over {name}" + (f" ∈ {{{values}}}" if values else ""))
    parts.append(f"{counts.get('diverged', 0)} diverged (×), {counts.get('pruned', 0)} pruned"
                 + ("; dashed: effective lr γ/(1−μ), its value at the edge" if lines else ""))
    return "\n".join(parts)
