"""The range test's figure: smoothed loss against the learning rate and against the effective
learning rate lr/(1 − μ), one curve per momentum (the seeds' mean) with the seeds' band (lowest to
highest), the suggested range shaded on the curve, the divergence point marked ×, and the stability
edge lr·λ_max < 2 + 2μ (in the rule's convention) as a dashed vertical line of the curve's colour.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import LINE_PALETTE, pyplot, save, style_axes


def finder_plot(result: Any, path: str | Path | None = None, *, title: str | None = None):
    """Draw ``result`` (a :class:`inertia.finder.FinderResult`); returns the figure, saved when ``path`` is given."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=120, sharey=True)
    lrs = result.lrs
    tops, crosses = [], []
    for i, mu in enumerate(result.momenta):
        colour = LINE_PALETTE[i % len(LINE_PALETTE)]
        mean, low, high = result.curve(i)
        if not np.isfinite(mean).any():
            continue
        tops.append(np.nanmax(high[: max(1, len(high) // 5)]))
        span, edge, diverged = result.lr_range(i), result.stable_lr(mu), result.diverged_at(i)
        for ax, scale in zip(axes, (1.0, 1.0 / (1.0 - mu))):
            x = lrs * scale
            label = f"μ = {mu:g}"
            if span is not None:
                label += f": lr {span[0]:.2g} – {span[1]:.2g}"
            ax.plot(x, mean, color=colour, lw=1.8, label=label)
            ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
            if span is not None:
                inside = (lrs >= span[0]) & (lrs <= span[1])
                ax.plot(x[inside], mean[inside], color=colour, lw=6, alpha=0.35, solid_capstyle="butt")
            if edge is not None:
                ax.axvline(edge * scale, color=colour, ls="--", lw=1.2)
            if diverged is not None:
                last = int(np.nanargmax(np.where(np.isfinite(mean), np.arange(len(mean)), -1)))
                crosses.append((ax, diverged * scale, mean[last], colour))
    finite = result.smoothed[np.isfinite(result.smoothed)]
    if len(finite) and tops:
        axes[0].set_ylim(float(finite.min()) * 0.95, max(tops) * 1.15)
    top = axes[0].get_ylim()[1]
    for ax, x, y, colour in crosses:      # a divergence above the drawn range is marked at its top
        ax.plot(x, min(y, top), marker="x", color=colour, ms=9, mew=2, clip_on=False)
    for ax, xlabel in zip(axes, ("learning rate lr", "effective learning rate lr / (1 − μ)")):
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.25)
        style_axes(ax, xlabel=xlabel)
    axes[0].set_ylabel(f"training loss (EMA β = {result.ramp.smoothing:g}, bias-corrected)")
    axes[0].legend(loc="lower left", fontsize=8, title="thick: suggested range", title_fontsize=8)
    sharp = result.sharpness
    note = (f"dashed: stable edge lr·λ_max < 2 + 2μ ({result.edge['convention']} convention), λ_max = {sharp:.3g} at init"
            if sharp is not None and result.edge is not None else "no stability edge (sharpness not measured)")
    axes[1].text(0.02, 0.02, note + "\n×: diverged", transform=axes[1].transAxes, fontsize=8, va="bottom")
    meta = result.meta
    fig.suptitle(title or f"range test: {meta.get('model', 'model')} on {meta.get('data', 'data')}, "
                          f"{meta.get('optimizer', '')}, {meta.get('seeds', 1)} seed(s), "
                          f"{result.ramp.steps} steps {result.ramp.start:g} → {result.ramp.end:g}", fontsize=11)
    if path is not None:
        save(fig, path)
    return fig


__all__ = ["finder_plot"]
