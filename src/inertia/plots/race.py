"""Race figures: contour + trajectories (PNG), the marbles rolling (GIF), loss against step (log scale).

    >>> from inertia.plots.race import plot_contour, plot_losses, animate
    >>> plot_contour(result, "race.png"); plot_losses(result, "loss.png"); animate(result, "race.gif")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import color, pyplot, save, style_axes


# ---------------------------------------------------------------- helpers

def _fmt_point(p) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in p) + ")"


def describe(result: Any) -> str:
    """A title saying what was run: surface, steps, start."""
    s = result.surface
    name = s.name
    if s.is_quadratic:
        name = f"quadratic (κ = {s.condition:g})"
    start = result.positions[0, 0]
    return f"{name}: {len(result.configs)} optimizer(s), {result.steps} steps from {_fmt_point(start)}"


def _surface_levels(Z: np.ndarray, fmin: float | None = None):
    """Contour levels and a transform: log-spaced over f − min when the range is wide, else linear."""
    zmin = float(np.nanmin(Z)) if fmin is None else min(float(np.nanmin(Z)), fmin)
    gap = Z - zmin
    top = float(np.nanpercentile(gap, 99))
    positive = gap[gap > 0]
    low = float(np.nanpercentile(positive, 1)) if positive.size else 1e-12
    if top > 0 and low > 0 and top / low > 300:
        import matplotlib.colors as mcolors

        levels = np.geomspace(max(low, top * 1e-6), float(np.nanmax(gap)), 30)
        return gap + 1e-300, levels, mcolors.LogNorm(vmin=levels[0], vmax=levels[-1]), f"f − f_min (log scale; f_min = {zmin:.3g})" if zmin else "f (log scale)"
    levels = np.linspace(zmin, float(np.nanmax(Z)), 30)
    return Z, levels, None, "f(x, y)"


def draw_surface(ax: Any, surface: Any, resolution: int = 200, colorbar: bool = True, fig: Any = None,
                 raster: bool = False):
    """Filled contours of a 2-D surface on its bounds, minima marked; returns the contour set.

    ``raster=True`` draws an image with banded colours instead (much faster to redraw, for animations).
    """
    X, Y, Z = surface.grid(resolution)
    X, Y, Z = X.numpy(), Y.numpy(), Z.numpy()
    values, levels, norm, label = _surface_levels(Z, surface.minimum_value if surface.minima else None)
    if raster:
        import matplotlib.colors as mcolors

        bands = mcolors.BoundaryNorm(levels, 256, extend="both")
        (x0, x1), (y0, y1) = surface.bounds
        cs = ax.imshow(values, origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", norm=bands,
                       interpolation="bilinear", aspect="auto")
    else:
        cs = ax.contourf(X, Y, values, levels=levels, norm=norm, cmap="viridis", extend="both")
        ax.contour(X, Y, values, levels=levels[::3], norm=norm, colors="white", linewidths=0.3, alpha=0.5)
    for k, m in enumerate(surface.minima):
        ax.plot(float(m[0]), float(m[1]), marker="*", markersize=15 if k == 0 else 12,
                color="white" if k == 0 else "#b0b0b0", markeredgecolor="black",
                linestyle="none", zorder=5, label="global minimum" if k == 0 else ("other minima" if k == 1 else None))
    (x0, x1), (y0, y1) = surface.bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal" if (x1 - x0) / (y1 - y0) < 3 and (y1 - y0) / (x1 - x0) < 3 else "auto")
    if colorbar and fig is not None:
        bar = fig.colorbar(cs, ax=ax, shrink=0.85)
        bar.set_label(label)
        if norm is not None:
            from matplotlib.ticker import LogLocator

            bar.locator = LogLocator()
            bar.update_ticks()
    return cs


def _path(result: Any, i: int) -> np.ndarray:
    p = result.positions[i, :, :2].numpy()
    return p[np.isfinite(p).all(-1)]


def _legend_label(result: Any, i: int) -> str:
    label = result.labels[i]
    d = int(result.diverged_step[i])
    if d >= 0:
        label += f" (diverged at step {d})"
    return label


# ---------------------------------------------------------------- figures

def plot_contour(result: Any, path: str | Path | None = None, title: str | None = None, resolution: int = 200):
    """Contour plot of the surface with every configuration's trajectory; returns the figure (or the path)."""
    if result.surface.dim != 2:
        raise ValueError(f"contour plots need a 2-D surface; {result.surface.name} is {result.surface.dim}-D")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 6.2))
    draw_surface(ax, result.surface, resolution, fig=fig)
    start = result.positions[0, 0].numpy()
    ax.plot(start[0], start[1], "o", color="white", markeredgecolor="black", markersize=9, zorder=6, label="start")
    for i in range(len(result.configs)):
        p = _path(result, i)
        c = color(i)
        ax.plot(p[:, 0], p[:, 1], "-", color=c, linewidth=1.8, alpha=0.95, zorder=4, label=_legend_label(result, i))
        ax.plot(p[:, 0], p[:, 1], ".", color=c, markersize=2.5, zorder=4)
        ax.plot(p[-1, 0], p[-1, 1], "o", color=c, markeredgecolor="black", markersize=8, zorder=7)
    style_axes(ax, title or describe(result), "x", "y")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    if path is None:
        return fig
    return save(fig, path)


def _gap(result: Any) -> np.ndarray:
    return (result.losses - result.surface.minimum_value).numpy()


def theory_curves(result: Any) -> dict[int, tuple[float, np.ndarray]]:
    """On quadratics: for each SGD-family configuration with constant (lr, momentum), (rate, f₀·rate^(2t))."""
    s = result.surface
    out: dict[int, tuple[float, np.ndarray]] = {}
    if not s.is_quadratic:
        return out
    from .. import rules

    t = np.arange(result.steps + 1)
    for i, config in enumerate(result.configs):
        try:
            preset = rules.get(config.get("rule", "sgd"))
            hyper = preset.hyper(**{k: v for k, v in config.items() if k not in ("rule", "label")})
        except (TypeError, ValueError):
            continue
        if preset.rule.name != "sgd" or hyper.get("convention") == "ema" or hyper.get("weight_decay", 0) != 0:
            continue
        if hyper.get("dampening", 0) != 0 or not all(isinstance(hyper[k], (int, float)) for k in ("lr", "momentum")):
            continue
        rate = s.rate(float(hyper["lr"]), float(hyper["momentum"]), nesterov=bool(hyper.get("nesterov")))
        f0 = float(_gap(result)[i, 0])
        with np.errstate(over="ignore", under="ignore"):
            out[i] = (rate, f0 * rate ** (2.0 * t))
    return out


def plot_losses(result: Any, path: str | Path | None = None, title: str | None = None):
    """Loss minus the surface's minimum against step, log scale; theory lines (dashed) on quadratics."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    gap = _gap(result)
    floor = 1e-300
    positive = gap[np.isfinite(gap) & (gap > 0)]
    lowest = max(float(positive.min()) if positive.size else 1e-16, 1e-32)
    theory = theory_curves(result)
    import matplotlib.patheffects as pe

    outline = [pe.Stroke(linewidth=3.2, foreground="#222222"), pe.Normal()]
    ax.set_facecolor("#f4f4f4")
    for i in range(len(result.configs)):
        c = color(i)  # the same colour as on the contour plot; a dark outline keeps light colours visible
        ax.plot(np.arange(gap.shape[1]), np.maximum(gap[i], floor), "-", color=c, linewidth=1.8,
                label=_legend_label(result, i), path_effects=outline)
        if i in theory:
            rate, line = theory[i]
            ax.plot(np.arange(gap.shape[1]), np.maximum(line, floor), "--", color=c, linewidth=1.2,
                    label=f"theory: f₀·ρ^2t, ρ = {rate:.3f}" + ("" if rate < 1 else " (unstable)"),
                    path_effects=[pe.Stroke(linewidth=2.4, foreground="#222222"), pe.Normal()])
    ax.set_yscale("log")
    top = float(np.nanmax(np.where(np.isfinite(gap), gap, np.nan))) if np.isfinite(gap).any() else 1.0
    ax.set_ylim(max(lowest / 3, 1e-30), max(top * 3, lowest * 10))
    ax.set_xlim(0, result.steps)
    ax.grid(True, which="major", alpha=0.3)
    fmin = result.surface.minimum_value
    style_axes(ax, title or f"Loss — {describe(result)}", "step",
               f"f(x) − f_min   (f_min = {fmin:.4g}, the lowest known minimum)")
    ax.legend(fontsize=8, loc="best")
    if path is None:
        return fig
    return save(fig, path)


def animate(result: Any, path: str | Path, frames: int = 60, fps: int = 15, tail: int = 25, dpi: int = 80,
            title: str | None = None) -> Path:
    """A GIF of the marbles rolling (matplotlib's PillowWriter); at most ``frames`` frames.

    The static picture (contours, colour bar, axes, legend, title) is rendered once; each frame
    then draws only that image and the marbles on a transparent axes at the same place.
    """
    if result.surface.dim != 2:
        raise ValueError("animations need a 2-D surface")
    plt = pyplot()
    from matplotlib.animation import PillowWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(result.configs)
    size = (6.4, 5.0)
    # 1. the static background, rendered once
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    draw_surface(ax, result.surface, 150, fig=fig)
    style_axes(ax, title or describe(result), "x", "y")
    for i in range(n):
        ax.plot([], [], "o", color=color(i), markeredgecolor="black", markersize=9, label=_legend_label(result, i))
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)
    fig.canvas.draw()
    background = np.asarray(fig.canvas.buffer_rgba()).copy()
    box = ax.get_position()
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    plt.close(fig)
    # 2. the moving marbles over that image
    fig = plt.figure(figsize=size, dpi=dpi)
    back = fig.add_axes((0, 0, 1, 1))
    back.imshow(background, interpolation="nearest")
    back.set_axis_off()
    ax = fig.add_axes((box.x0, box.y0, box.width, box.height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_axis_off()
    ax.patch.set_alpha(0)
    pos = result.positions[:, :, :2].numpy()
    dots, tails = [], []
    for i in range(n):
        c = color(i)
        (line,) = ax.plot([], [], "-", color=c, linewidth=1.5, alpha=0.9, zorder=4)
        (dot,) = ax.plot([], [], "o", color=c, markeredgecolor="black", markersize=9, zorder=6)
        dots.append(dot)
        tails.append(line)
    counter = ax.text(0.02, 0.03, "", transform=ax.transAxes, color="white", fontsize=9,
                      bbox=dict(facecolor="black", alpha=0.5, pad=2))
    steps = result.steps
    frame_steps = sorted(set(np.linspace(0, steps, min(frames, steps + 1)).round().astype(int).tolist()))
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi):
        for t in frame_steps:
            for i in range(n):
                seg = pos[i, max(0, t - tail): t + 1]
                seg = seg[np.isfinite(seg).all(-1)]
                if len(seg):
                    tails[i].set_data(seg[:, 0], seg[:, 1])
                    dots[i].set_data([seg[-1, 0]], [seg[-1, 1]])
            counter.set_text(f"step {t}")
            writer.grab_frame()
        for _ in range(max(1, fps // 3)):  # hold the last frame a moment
            writer.grab_frame()
    plt.close(fig)
    return path


__all__ = ["plot_contour", "plot_losses", "animate", "draw_surface", "describe", "theory_curves"]
