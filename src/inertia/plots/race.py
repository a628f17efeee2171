"""Race figures: contour + trajectories (PNG), the marbles rolling (GIF), loss against step (log scale).

    >>> from inertia.plots.race import plot_contour, plot_losses, animate
    >>> plot_contour(result, "race.png"); plot_losses(result, "loss.png"); animate(result, "race.gif")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import color, marker, outline, pyplot, save, style_axes


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


def surface_cmap():
    """The surface's colours: white (low) to a light slate (high), so the coloured paths stand out on it."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(pyplot().get_cmap("bone_r")(np.linspace(0.0, 0.55, 256)), name="surface")


def view_for(result: Any, reach: float = 3.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """The area to draw: the surface's bounds grown to hold every path, with a 4 % margin where grown.

    Points farther than ``reach`` half-widths from the bounds' centre (a diverging path) do not
    grow it; such a path is clipped at the edge of the picture.
    """
    (x0, x1), (y0, y1) = result.surface.bounds[:2]
    p = result.positions[:, :, :2].reshape(-1, 2).numpy()
    p = p[np.isfinite(p).all(-1)]
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    p = p[(np.abs(p[:, 0] - cx) <= reach * hw) & (np.abs(p[:, 1] - cy) <= reach * hh)]
    if not len(p):
        return (x0, x1), (y0, y1)
    lo, hi = np.minimum(p.min(0), (x0, y0)), np.maximum(p.max(0), (x1, y1))
    grown = (lo < (x0, y0)) | (hi > (x1, y1))
    margin = 0.04 * (hi - lo)
    lo, hi = np.where(grown, lo - margin, lo), np.where(grown, hi + margin, hi)
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _values_on(surface: Any, view: tuple, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, f(X, Y))`` on a ``resolution``² grid over ``view``."""
    import torch

    (x0, x1), (y0, y1) = view
    X, Y = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    points = torch.as_tensor(np.stack([X.reshape(-1), Y.reshape(-1)], 1), dtype=torch.float64)
    with torch.no_grad():
        Z = surface.value(points).numpy().reshape(X.shape)
    return X, Y, Z


def draw_surface(ax: Any, surface: Any, resolution: int = 200, colorbar: bool = True, fig: Any = None,
                 raster: bool = False, view: tuple | None = None, cax: Any = None):
    """Filled contours of a 2-D surface over ``view`` (default: its bounds), minima marked; returns the contours.

    ``raster=True`` draws an image with banded colours instead (much faster to redraw, for animations).
    The colour bar (what the colours encode: f, or f − f_min on a log scale) goes beside ``ax`` in
    ``fig`` when ``colorbar``, or into the axes ``cax`` when given (of any figure).
    """
    view = view or tuple(surface.bounds[:2])
    X, Y, Z = _values_on(surface, view, resolution)
    values, levels, norm, label = _surface_levels(Z, surface.minimum_value if surface.minima else None)
    (x0, x1), (y0, y1) = view
    if raster:
        import matplotlib.colors as mcolors

        bands = mcolors.BoundaryNorm(levels, 256, extend="both")
        cs = ax.imshow(values, origin="lower", extent=(x0, x1, y0, y1), cmap=surface_cmap(), norm=bands,
                       interpolation="bilinear", aspect="auto")
    else:
        cs = ax.contourf(X, Y, values, levels=levels, norm=norm, cmap=surface_cmap(), extend="both")
        ax.contour(X, Y, values, levels=levels[::3], norm=norm, colors="#3a3a3a", linewidths=0.3, alpha=0.45)
    for k, m in enumerate(surface.minima):
        ax.plot(float(m[0]), float(m[1]), marker="*", markersize=16 if k == 0 else 12,
                color="white" if k == 0 else "#b0b0b0", markeredgecolor="black",
                linestyle="none", zorder=8, label="global minimum" if k == 0 else ("other minima" if k == 1 else None))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal" if (x1 - x0) / (y1 - y0) < 3 and (y1 - y0) / (x1 - x0) < 3 else "auto")
    if cax is not None or (colorbar and fig is not None):
        from matplotlib.colorbar import Colorbar

        bar = Colorbar(cax, cs) if cax is not None else fig.colorbar(cs, ax=ax, shrink=0.85)
        bar.set_label(label)
        from matplotlib.ticker import LogLocator, MaxNLocator

        locator = LogLocator() if norm is not None else MaxNLocator(7)   # round values, not the levels
        bar.set_ticks([t for t in locator.tick_values(levels[0], levels[-1]) if levels[0] <= t <= levels[-1]])
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


def _legend_below(ax: Any, fontsize: float = 9) -> None:
    """The legend under the axes (never over the surface), in as many columns as fit."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2 if len(labels) > 3 else 1,
              fontsize=fontsize, frameon=False)


def _marble(i: int, n: int) -> dict[str, Any]:
    """How configuration ``i`` of ``n`` draws its marble: its colour and shape, larger for earlier
    configurations (drawn lower), so marbles on one point show as nested rings."""
    return dict(marker=marker(i), color=color(i), markeredgecolor="black", markeredgewidth=1.2,
                markersize=min(8 + 6 * (n - 1 - i), 40), linestyle="none", zorder=9 + i)


# ---------------------------------------------------------------- figures

def plot_contour(result: Any, path: str | Path | None = None, title: str | None = None, resolution: int = 200):
    """Contour plot of the surface with every configuration's trajectory; returns the figure (or the path)."""
    if result.surface.dim != 2:
        raise ValueError(f"contour plots need a 2-D surface; {result.surface.name} is {result.surface.dim}-D")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 6.6))
    draw_surface(ax, result.surface, resolution, fig=fig, view=view_for(result))
    start = result.positions[0, 0].numpy()
    ax.plot(start[0], start[1], "o", color="white", markeredgecolor="black", markersize=10, zorder=6, label="start")
    n = len(result.configs)
    for i in range(n):
        p = _path(result, i)
        width = 1.6 + 1.6 * (n - 1 - i)  # earlier paths wider and lower: a path on top of another shows both
        ax.plot(p[:, 0], p[:, 1], "-", color=color(i), linewidth=width, zorder=4 + i / n,
                path_effects=outline(width + 1.2), label=_legend_label(result, i))
        end = _marble(i, n)
        end["markersize"] = 9
        ax.plot(p[-1, 0], p[-1, 1], **end)
    style_axes(ax, title or describe(result), "x", "y")
    _legend_below(ax)
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


def _background(result: Any, size: tuple[float, float], dpi: int, title: str | None):
    """The animation's still parts (contours, colour bar, axes, title, legend below) rendered once:
    the RGBA image, the axes' box in figure coordinates and its limits."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size, dpi=dpi, layout="constrained")
    draw_surface(ax, result.surface, 150, fig=fig, view=view_for(result))
    style_axes(ax, title or describe(result), "x", "y")
    n = len(result.configs)
    for i in range(n):
        ax.plot([], [], "-", linewidth=2.2, path_effects=outline(3.4), markersize=9, label=_legend_label(result, i),
                **{k: v for k, v in _marble(i, n).items() if k not in ("linestyle", "markersize", "zorder")})
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2 if len(labels) > 3 else 1, fontsize=10,
               frameon=False)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    box, limits = ax.get_position(), (ax.get_xlim(), ax.get_ylim())
    plt.close(fig)
    return image, box, limits


def animate(result: Any, path: str | Path, frames: int = 60, fps: int = 15, tail: int = 25, dpi: int = 100,
            title: str | None = None) -> Path:
    """A GIF of the marbles rolling (written with Pillow); at most ``frames`` frames.

    Each marble leaves a thin trail of its whole path and a bold one of its last ``tail`` steps;
    marbles have their own colour and shape, earlier ones larger, so marbles on one point (all of
    them at the start) show as nested rings. The still picture is rendered once; each frame draws
    only that image and the marbles on a transparent axes at the same place.
    """
    if result.surface.dim != 2:
        raise ValueError("animations need a 2-D surface")
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(result.configs)
    size = (7.2, 6.6)
    background, box, (xlim, ylim) = _background(result, size, dpi, title)
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
    trails, tails, dots = [], [], []
    for i in range(n):
        width = 1.4 + 1.4 * (n - 1 - i)   # nested like the still picture's paths: shared stretches show all
        trails.append(ax.plot([], [], "-", color=color(i), linewidth=width, zorder=3 + i / n,
                              path_effects=outline(width + 1.0))[0])
        tails.append(ax.plot([], [], "-", color=color(i), linewidth=3.0, zorder=4 + i / n,
                             path_effects=outline(4.4))[0])
        dots.append(ax.plot([], [], **_marble(i, n))[0])
    counter = ax.text(0.02, 0.03, "", transform=ax.transAxes, color="white", fontsize=12,
                      bbox=dict(facecolor="black", alpha=0.6, pad=3))
    palette = _gif_palette(background, [color(i) for i in range(n)])
    steps = sorted(set(np.linspace(0, result.steps, min(frames, result.steps + 1)).round().astype(int).tolist()))
    images = []
    for t in steps:
        for i in range(n):
            seen = pos[i, : t + 1]
            seen = seen[np.isfinite(seen).all(-1)]
            if len(seen):
                trails[i].set_data(seen[:, 0], seen[:, 1])
                tails[i].set_data(seen[-tail - 1:, 0], seen[-tail - 1:, 1])
                dots[i].set_data([seen[-1, 0]], [seen[-1, 1]])
        counter.set_text(f"step {t}")
        images.append(_frame(fig, palette))
    plt.close(fig)
    hold = max(1, fps // 3)   # the last frame stays a moment
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:] + [images[-1]] * hold,
                   duration=round(1000 / fps), loop=0)
    return path


def _gif_palette(background: np.ndarray, colours: list[str]):
    """A GIF palette holding the marbles' exact colours, black and white, and the rest of its 256 entries
    quantized from the still picture (an adaptive palette alone would shift the marbles' colours)."""
    from PIL import Image

    fixed = [tuple(int(c[k:k + 2], 16) for k in (1, 3, 5)) for c in colours] + [(0, 0, 0), (255, 255, 255), (26, 26, 26)]
    rest = Image.fromarray(background[..., :3]).quantize(colors=256 - len(fixed), dither=Image.Dither.NONE)
    entries = [v for rgb in fixed for v in rgb] + rest.getpalette()[: 3 * (256 - len(fixed))]
    palette = Image.new("P", (1, 1))
    palette.putpalette(entries + [0] * (768 - len(entries)))
    return palette


def _frame(fig: Any, palette: Any):
    """The figure as it is now, as a GIF frame on ``palette``."""
    from PIL import Image

    fig.canvas.draw()
    rgb = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
    return rgb.quantize(palette=palette, dither=Image.Dither.NONE)


__all__ = ["plot_contour", "plot_losses", "animate", "draw_surface", "view_for", "describe", "theory_curves"]
