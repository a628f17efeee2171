"""The basin map: for every (learning rate, momentum), where the marble ends (PNG).

x: learning rate (log axis when the grid is log-spaced), y: momentum. On a surface with
several minima each minimum has its own hue, shaded by the steps the marble took to
settle there (darker = slower; one colour bar per minimum); pairs that never settle are
light grey and diverged ones black. On a quadratic the colour is the measured rate per
step, and the theory's stability edge lr·λ_max = 2 + 2μ is drawn over it.

    >>> from inertia.basins import basin_map
    >>> from inertia.plots.basins import plot_basin_map
    >>> plot_basin_map(basin_map("marble", lrs, momenta), "basins.png")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..basins import DIVERGED, UNSETTLED
from . import pyplot, save, style_axes

#: one hue per minimum (colour-blind safe: blue, orange, green, purple), shaded by steps
BASIN_CMAPS = ["Blues", "Oranges", "Greens", "Purples"]
UNSETTLED_COLOUR, DIVERGED_COLOUR, GROWING_COLOUR = "#d9d9d9", "#1a1a1a", "#b2182b"


def is_geometric(values: np.ndarray) -> bool:
    return len(values) > 2 and bool((values > 0).all()) and np.allclose(np.diff(np.log(values)), np.log(values[1] / values[0]))


def cell_edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted centres, midway in log space or linear space."""
    v = np.log10(values) if log else values.astype(float)
    if len(v) == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5])
    else:
        mids = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[2 * v[0] - mids[0]], mids, [2 * v[-1] - mids[-1]]])
    return 10 ** e if log else e


def _shades(name: str):
    """A sequential colour map without its near-white end (so the lightest shade still shows its hue)."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(pyplot().get_cmap(name)(np.linspace(0.3, 1.0, 256)))


def settle_norm(bmap: Any):
    """The steps-to-settle scale of the basin colours (log, 1 .. steps)."""
    from matplotlib.colors import LogNorm

    return LogNorm(vmin=1, vmax=max(bmap.steps, 2))


def rate_scale(bmap: Any):
    """The colour map and range of measured rates on a quadratic: fastest rate .. 1, red above 1."""
    from matplotlib.colors import Normalize

    rate = bmap.rate.numpy()
    finite = rate[np.isfinite(rate) & (rate < 1)]
    cmap = pyplot().get_cmap("viridis_r").with_extremes(over=GROWING_COLOUR)
    return cmap, Normalize(vmin=float(finite.min()) if finite.size else 0.0, vmax=1.0)


def cell_colours(bmap: Any) -> list[list[str]]:
    """The colour of every pair as ``#rrggbb``, ``[len(lrs)][len(momenta)]``, as the PNG draws it."""
    from matplotlib.colors import to_hex

    outcome, steps = bmap.outcome.numpy(), np.maximum(bmap.settle_step.numpy(), 1)
    if bmap.rate is not None:
        cmap, norm = rate_scale(bmap)
        rate = bmap.rate.numpy()
    else:
        norm = settle_norm(bmap)
    out = []
    for i in range(outcome.shape[0]):
        row = []
        for j in range(outcome.shape[1]):
            k = int(outcome[i, j])
            if k == DIVERGED or (bmap.rate is not None and not np.isfinite(rate[i, j])):
                row.append(DIVERGED_COLOUR)
            elif bmap.rate is not None:
                row.append(to_hex(cmap(norm(rate[i, j]))))
            elif k == UNSETTLED:
                row.append(UNSETTLED_COLOUR)
            else:
                row.append(to_hex(_shades(BASIN_CMAPS[k % len(BASIN_CMAPS)])(norm(steps[i, j]))))
        out.append(row)
    return out


def _solid(ax: Any, xe, ye, mask: np.ndarray, colour: str) -> None:
    from matplotlib.colors import ListedColormap

    if mask.any():
        ax.pcolormesh(xe, ye, np.ma.masked_where(~mask, np.zeros(mask.shape)), cmap=ListedColormap([colour]),
                      shading="flat")


def _minimum_name(surface: Any, k: int) -> str:
    point = ", ".join(f"{float(v):.2g}" for v in surface.minima[k])
    return f"{'global' if k == 0 else 'local'} minimum ({point})"


def _draw_basins(fig: Any, ax: Any, bmap: Any, xe, ye) -> list:
    """Each minimum's cells in its hue shaded by steps to settle (log scale); returns legend handles."""
    from matplotlib.patches import Patch
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    outcome = bmap.outcome.numpy().T          # rows: momenta, columns: lrs
    steps = bmap.settle_step.numpy().T.astype(float)
    norm = settle_norm(bmap)
    side = make_axes_locatable(ax)   # the colour bars side by side, each with room for its label
    handles = []
    for n, k in enumerate(sorted({int(v) for v in outcome.flat if v >= 0})):
        mesh = ax.pcolormesh(xe, ye, np.ma.masked_where(outcome != k, np.maximum(steps, 1)),
                             cmap=_shades(BASIN_CMAPS[k % len(BASIN_CMAPS)]), norm=norm, shading="flat")
        bar = fig.colorbar(mesh, cax=side.append_axes("right", size="3%", pad=0.15 if n == 0 else 0.8))
        bar.set_label(f"steps to settle in the {_minimum_name(bmap.surface, k)}", fontsize=9)
    for code, colour, label in ((UNSETTLED, UNSETTLED_COLOUR, f"not settled after {bmap.steps} steps"),
                                (DIVERGED, DIVERGED_COLOUR, "diverged")):
        if (outcome == code).any():
            _solid(ax, xe, ye, outcome == code, colour)
            handles.append(Patch(facecolor=colour, edgecolor="#555555", label=label))
    return handles


def _draw_rates(fig: Any, ax: Any, bmap: Any, xe, ye) -> list:
    """The measured rate per step (≥ 1: growing, red; diverged: black), the stability edge and the
    theory's best pair."""
    from matplotlib import patheffects
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rate = bmap.rate.numpy().T
    cmap, norm = rate_scale(bmap)
    diverged = (bmap.outcome.numpy().T == DIVERGED) | ~np.isfinite(rate)
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_where(diverged, rate), cmap=cmap, norm=norm, shading="flat")
    _solid(ax, xe, ye, diverged, DIVERGED_COLOUR)
    bar = fig.colorbar(mesh, ax=ax, extend="max", pad=0.02)
    bar.set_label("measured rate per step (distance to the minimum); arrow: ≥ 1, growing", fontsize=9)
    mus = np.linspace(ye[0], ye[-1], 200)
    edge = bmap.edge_lr(mus).numpy()
    outline = [patheffects.Stroke(linewidth=3.5, foreground="black"), patheffects.Normal()]
    ax.plot(edge, mus, "-", color="white", linewidth=2, path_effects=outline)
    lam = float(bmap.surface.eigenvalues[-1])
    handles = [Line2D([], [], color="white", linewidth=2, path_effects=outline,
                      label=f"stability edge lr·λ_max = 2 + 2μ (λ_max = {lam:g})")]
    if diverged.any():
        handles.append(Patch(facecolor=DIVERGED_COLOUR, edgecolor="#555555", label="diverged"))
    lr_best, mu_best = bmap.surface.optimal("momentum")
    if xe[0] <= lr_best <= xe[-1] and ye[0] <= mu_best <= ye[-1]:
        ax.plot([lr_best], [mu_best], "*", color="#ff2d55", markeredgecolor="black", markersize=14)
        handles.append(Line2D([], [], marker="*", color="#ff2d55", markeredgecolor="black", markersize=12,
                              linestyle="none", label=f"theory's best: lr* = {lr_best:.3g}, μ* = {mu_best:.3g}"))
    return handles


def describe_map(bmap: Any) -> str:
    """A title saying what was raced: rule, surface, grid, steps, start."""
    s = bmap.surface
    name = f"quadratic (κ = {s.condition:g})" if s.is_quadratic else s.name
    start = ", ".join(f"{float(v):.3g}" for v in s.start)
    return (f"{bmap.rule} on {name}: {len(bmap.lrs)} × {len(bmap.momenta)} (lr, μ) pairs raced at once, "
            f"{bmap.steps} steps from ({start})")


def plot_basin_map(bmap: Any, path: str | Path | None = None, title: str | None = None):
    """Draw a :class:`~inertia.basins.BasinMap`; returns the figure, or the path when ``path`` is given."""
    plt = pyplot()
    lrs, mus = np.array(bmap.lrs), np.array(bmap.momenta)
    log_x = is_geometric(lrs)
    xe, ye = cell_edges(lrs, log_x), cell_edges(mus, is_geometric(mus))
    fig, ax = plt.subplots(figsize=(9.0, 6.4))
    draw = _draw_rates if bmap.rate is not None else _draw_basins
    handles = draw(fig, ax, bmap, xe, ye)
    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if is_geometric(mus) else "linear")
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    style_axes(ax, title or describe_map(bmap), "learning rate γ" + (" (log scale)" if log_x else ""), "momentum μ")
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=min(len(handles), 3),
                  fontsize=9, frameon=False)
    if path is None:
        return fig
    return save(fig, path)


__all__ = ["plot_basin_map", "describe_map", "cell_colours", "cell_edges", "is_geometric", "BASIN_CMAPS"]
