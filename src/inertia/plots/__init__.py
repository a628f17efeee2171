"""Figures (matplotlib, loaded only here): shared style helpers.

Engines return data; the modules here draw it. :mod:`inertia.plots.race` draws
races (contours with trajectories, animations, loss curves); the sweep module
draws sweeps. Every figure gets labelled axes, a legend, a colour bar where a
colour means a value, and a title saying what was run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: one colour per configuration: Okabe & Ito's colour-blind-safe palette (orange, sky blue, bluish
#: green, vermillion, reddish purple, blue, yellow, black), drawn with a dark outline on the light surfaces
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#CC79A7", "#0072B2", "#F0E442", "#000000"]
#: one marker shape per configuration, so overlapping marbles and colour-blind readers still tell them apart
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "p"]
#: line colours for plots on a white background
LINE_PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#7f7f7f", "#bcbd22", "#393b79", "#637939"]


def pyplot():
    """matplotlib.pyplot with a non-interactive backend (figures are written to files)."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def color(i: int, on_dark: bool = True) -> str:
    palette = PALETTE if on_dark else LINE_PALETTE
    return palette[i % len(palette)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def outline(width: float) -> list:
    """Path effects drawing a line over a dark stroke ``width`` points wide (any colour stays visible)."""
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=width, foreground="#1a1a1a"), patheffects.Normal()]


def style_axes(ax: Any, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    if title:
        ax.set_title(title, fontsize=11)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)


def save(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def png_data_uri(fig: Any, dpi: int = 100, **savefig: Any) -> str:
    """``fig`` as a ``data:image/png;base64,...`` URI (for self-contained HTML); closes it."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig)
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = ["PALETTE", "LINE_PALETTE", "MARKERS", "pyplot", "color", "marker", "outline", "style_axes", "save",
           "png_data_uri"]
