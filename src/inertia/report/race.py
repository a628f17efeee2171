"""The interactive race report: learning-rate and momentum sliders over precomputed trajectories.

Every raced optimizer that has a learning rate and a momentum gets two sliders. Each path
they can show was raced beforehand by the race engine (:func:`inertia.race_sliders.slider_grids`:
one grid per rule and settings, its ``momentum`` the one the rule declares: μ, β₁, β₂, ...); the
JavaScript only picks the stored path for the chosen pair and draws it, so the page shows the
engine's own numbers, never a re-implementation. On quadratics the page also shows the theory
for the chosen pair (predicted rate, stability), computed here in Python.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ._html import clean, esc, page, script_json

W, H = 520, 440          # contour panel, pixels
BAR_W = 96               # the contour's colour bar, beside it, pixels
LW, LH = 520, 300        # loss panel, pixels
PAD = dict(left=62, right=12, top=12, bottom=36)


class _Map:
    """Linear map from data coordinates to pixels inside a padded panel."""

    def __init__(self, x0, x1, y0, y1, w, h, log_y=False):
        self.x0, self.x1, self.y0, self.y1, self.w, self.h, self.log_y = x0, x1, y0, y1, w, h, log_y

    def x(self, v):
        return PAD["left"] + (v - self.x0) / (self.x1 - self.x0) * (self.w - PAD["left"] - PAD["right"])

    def y(self, v):
        if self.log_y:
            v = math.log10(max(v, 10 ** self.y0))
        return PAD["top"] + (1 - (v - self.y0) / (self.y1 - self.y0)) * (self.h - PAD["top"] - PAD["bottom"])

    def spec(self):
        return dict(x0=self.x0, x1=self.x1, y0=self.y0, y1=self.y1, w=self.w, h=self.h, log=self.log_y, pad=PAD)


def _polyline(points, m: _Map) -> str:
    parts, pen = [], "M"
    for x, y in points:
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            break
        parts.append(f"{pen}{m.x(x):.1f},{m.y(y):.1f}")
        pen = "L"
    return " ".join(parts)


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= n:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [round(start + k * step, 10) for k in range(int((hi - start) / step) + 1)]


def _axes_svg(m: _Map, xlabel: str, ylabel: str, log_y: bool = False) -> str:
    out = []
    left, right = PAD["left"], m.w - PAD["right"]
    top, bottom = PAD["top"], m.h - PAD["bottom"]
    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#444"/>')
    for t in _ticks(m.x0, m.x1):
        px = m.x(t)
        out.append(f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 4}" stroke="#444"/>'
                   f'<text x="{px:.1f}" y="{bottom + 15}" text-anchor="middle">{t:g}</text>')
    ys = list(range(math.ceil(m.y0), math.floor(m.y1) + 1)) if log_y else _ticks(m.y0, m.y1)
    if log_y and len(ys) > 8:
        ys = ys[:: math.ceil(len(ys) / 8)]
    for t in ys:
        py = PAD["top"] + (1 - (t - m.y0) / (m.y1 - m.y0)) * (m.h - PAD["top"] - PAD["bottom"])
        label = f"1e{int(t)}" if log_y else f"{t:g}"
        out.append(f'<line x1="{left - 4}" y1="{py:.1f}" x2="{left}" y2="{py:.1f}" stroke="#444"/>'
                   f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{m.h - 4}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text transform="translate(12,{(top + bottom) / 2:.0f}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    return "\n".join(out)


def _background(surface: Any, m: _Map) -> tuple[str, str, str]:
    """The surface's filled contours exactly covering the plot area and their colour bar, as two PNG
    data URIs, and what the colours encode (f, or f − f_min on a log scale)."""
    from ..plots import png_data_uri, pyplot
    from ..plots.race import draw_surface

    plt = pyplot()
    w_px, h_px = m.w - PAD["left"] - PAD["right"], m.h - PAD["top"] - PAD["bottom"]
    fig = plt.figure(figsize=(w_px / 100, h_px / 100), dpi=100)
    bar = plt.figure(figsize=(BAR_W / 100, h_px / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    cax = bar.add_axes((10 / BAR_W, 6 / h_px, 14 / BAR_W, 1 - 12 / h_px))
    draw_surface(ax, surface, 160, colorbar=False, view=((m.x0, m.x1), (m.y0, m.y1)), cax=cax)
    cax.tick_params(labelsize=8)
    cax.yaxis.label.set_size(9)
    ax.set_aspect("auto")
    ax.set_xlim(m.x0, m.x1)
    ax.set_ylim(m.y0, m.y1)
    ax.set_axis_off()
    for line in ax.get_lines():  # minima are drawn by the page itself
        line.remove()
    return png_data_uri(fig, dpi=100), png_data_uri(bar, dpi=200), cax.get_ylabel()


def _measured_rates(surface: Any, grid: Any) -> list[float | None]:
    """Each grid run's measured rate of the distance to the minimum (:func:`inertia.basins.measured_rate`)."""
    from ..basins import measured_rate

    if surface.minimum is None:
        return [None] * len(grid.configs)
    distance = torch.linalg.vector_norm(grid.positions - surface.minimum.to(grid.positions.dtype), dim=-1)
    return [v if math.isfinite(v) else None for v in measured_rate(distance).tolist()]


def _cells(s: Any, grid: Any, keep: list[int], gaps: Any) -> list[dict[str, Any]]:
    """One entry per (lr, momentum) of ``grid``: its path, loss gap, divergence, the minimum it ends
    near, and on a quadratic whose theory applies the predicted and measured rates."""
    theory = grid.extra["theory"]
    measured = _measured_rates(s, grid) if theory else None
    final = grid.final if s.minima else None
    cells = []
    for k, (lr, mu) in enumerate((lr, mu) for lr in grid.extra["lrs"] for mu in grid.extra["momenta"]):
        cell = dict(path=grid.positions[k, keep, :2].tolist(), loss=gaps(grid.losses[k]),
                    diverged=int(grid.diverged_step[k]))
        if s.minima and cell["diverged"] < 0:
            idx, dist = s.nearest_minimum(final[k])
            cell.update(minimum=idx, distance=dist)
        if theory:
            rate = s.rate(lr, mu, nesterov=theory == "nesterov")
            cell.update(rate=rate, stable=s.stable(lr, mu) if theory == "heavy_ball" else rate < 1,
                        measured=measured[k] if cell["diverged"] < 0 else None)
        cells.append(cell)
    return cells


def race_report_data(result: Any, sliders: Sequence[Any], max_points: int = 600) -> dict[str, Any]:
    """The JSON the page embeds: bounds, the raced runs, each one's slider grid or why it has none,
    theory (quadratics).

    ``sliders``: per configuration, its grid of races (shared grids are stored once) or a sentence.
    Runs longer than ``max_points`` steps keep every k-th position (a zig-zag of period 2, as heavy
    ball makes on a steep valley, then looks smooth: keep ``max_points`` above the steps to see it)."""
    from ..plots.race import view_for

    s = result.surface
    steps = result.steps
    stride = max(1, math.ceil(steps / max_points))
    keep = list(range(0, steps + 1, stride))
    if keep[-1] != steps:
        keep.append(steps)
    fmin = s.minimum_value

    def gaps(losses):
        return [(float(v) - fmin) for v in losses[keep]]

    grids: list[Any] = []
    runs = []
    for i, label in enumerate(result.labels):
        run = dict(label=label, path=result.positions[i, keep, :2].tolist(), loss=gaps(result.losses[i]),
                   diverged=int(result.diverged_step[i]))
        if isinstance(sliders[i], str):
            run["note"] = sliders[i]
        else:
            if not any(g is sliders[i] for g in grids):
                grids.append(sliders[i])
            g = next(k for k, grid in enumerate(grids) if grid is sliders[i])
            run["sliders"] = dict(grid=g, start=list(sliders[i].extra["drives"][i]))
        runs.append(run)
    grid_data = [dict(lrs=g.extra["lrs"], momenta=g.extra["momenta"], theory=g.extra["theory"], **g.extra["knob"],
                      cells=_cells(s, g, keep, gaps)) for g in grids]
    all_loss = np.array([v for r in runs + [c for g in grid_data for c in g["cells"]] for v in r["loss"]], dtype=float)
    positive = all_loss[np.isfinite(all_loss) & (all_loss > 0)]
    lo = math.floor(math.log10(max(float(positive.min()), 1e-30))) if positive.size else -16
    hi = math.ceil(math.log10(float(positive.max()))) if positive.size else 1
    hi = min(hi, lo + 40) if hi > lo else lo + 1
    (x0, x1), (y0, y1) = view_for(result)   # the surface's bounds grown to hold the raced paths
    contour = _Map(x0, x1, y0, y1, W, H)
    loss_map = _Map(0, steps, max(lo, hi - 32), hi, LW, LH, log_y=True)
    data = dict(surface=dict(name=s.name, description=s.description, minima=[m[:2].tolist() for m in s.minima],
                             quadratic=s.is_quadratic, fmin=fmin),
                steps=keep, runs=runs, grids=grid_data, contour=contour.spec(), loss=loss_map.spec())
    if s.is_quadratic:
        data["surface"].update(eigenvalues=s.eigenvalues.tolist(), optimal=list(s.optimal("momentum")),
                               optimal_gd=list(s.optimal("gd")), condition=s.condition)
    return data


def write_race_report(path: str | Path, result: Any, sliders: Sequence[Any], *, title: str = "",
                      images: dict[str, str | Path] | None = None, max_points: int = 600,
                      basins: Any = None) -> Path:
    """Write the interactive race page for ``result`` (a :class:`~inertia.races.RaceResult` on a 2-D surface).

    ``sliders`` holds, for each raced configuration, the grid of races its lr and momentum sliders pick
    from, or a sentence saying why it has none (:func:`inertia.race_sliders.slider_grids` makes both;
    the page only draws them). ``images``: caption -> PNG file to embed. ``basins``: a
    :class:`~inertia.basins.BasinMap` of the first configuration's rule, drawn as a layer with its
    sliders' pair marked on it.
    """
    from ..plots.race import describe

    s = result.surface
    if s.dim != 2:
        raise ValueError(f"the race report draws 2-D surfaces; {s.name} is {s.dim}-D")
    if len(sliders) != len(result.configs):
        raise ValueError(f"sliders must have one entry per raced configuration ({len(result.configs)}), "
                         f"got {len(sliders)}")
    data = race_report_data(result, sliders, max_points)
    basin_svg, data["basins"] = _basin_layer(basins) if basins is not None else ("", None)
    if data["basins"] is not None:
        data["basins"]["run"] = 0 if "sliders" in data["runs"][0] else None
    contour = _Map(**{k: data["contour"][k] for k in ("x0", "x1", "y0", "y1", "w", "h")})
    loss_map = _Map(**{k: data["loss"][k] for k in ("x0", "x1", "y0", "y1", "w", "h")}, log_y=True)
    runs_svg, legend, loss_svg = _runs(data, contour, loss_map)
    loss_panel = (
        f'<svg id="losses" width="{LW}" height="{LH}" viewBox="0 0 {LW} {LH}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="{PAD["left"]}" y="{PAD["top"]}" width="{LW - PAD["left"] - PAD["right"]}" '
        f'height="{LH - PAD["top"] - PAD["bottom"]}" fill="#f4f4f4"/><g>{"".join(loss_svg)}</g>'
        f'{_axes_svg(loss_map, "step", "f(x) − f_min (log scale)", log_y=True)}</svg>'
    )
    n_runs = sum(len(g["cells"]) for g in data["grids"])
    body = f"""
<h1>{esc(title or 'Optimizer race — ' + describe(result))}</h1>
<p class="sub">{esc(s.description)}</p>
<div class="row">
 <div class="panel">{_contour_svg(result, data, contour, runs_svg)}
  <ul class="legend">{''.join(legend)}
  <li>solid: each optimizer at its sliders' pair; thin dashed: as raced; ○ start, ★ global minimum, ☆ other minima</li></ul>
 </div>
 <div class="panel controls">
  <p>Each optimizer with a learning rate and a momentum has two sliders. The paths they show were raced
  beforehand by the race engine ({n_runs} runs of {result.steps} steps, one grid per rule and settings):
  the page draws the engine's own numbers, it does not re-implement the optimizers.</p>
  {''.join(_racer(i, run, data["grids"]) for i, run in enumerate(data["runs"]))}
 </div>
</div>
<h2>Loss</h2>
<div class="row"><div class="panel loss">{loss_panel}
 <p class="sub">solid: each optimizer at its sliders' pair (the raced runs without sliders as raced);
 dotted: theory f₀·ρ^2t where the quadratic's theory applies</p>{_theory_intro(s)}</div></div>
{basin_svg}
{_figures(images)}
<script type="application/json" id="race-data">{script_json(clean(data))}</script>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title or f"inertia race: {s.name}", body, css=_CSS, script=_JS), encoding="utf-8")
    return path


_CSS = """
.controls { max-width: 440px; }
.racer { border-top: 1px solid #e3e3e3; padding: 6px 0 8px; }
.racer-name { font-weight: 600; }
.swatch { display: inline-block; width: 22px; height: 5px; border: 1px solid #333; vertical-align: middle; }
.note { color: #555; font-size: 0.9em; margin: 4px 0 0; }
.legend { list-style: none; padding-left: 0; font-size: 0.9em; max-width: 610px; }
.loss { max-width: 620px; }
"""


def _swatch(i: int) -> str:
    from ..plots import color

    return f'<span class="swatch" style="background:{color(i)}"></span>'


def _racer(i: int, run: dict, grids: list[dict]) -> str:
    """One raced configuration's controls: its lr and momentum sliders, or why it has none."""
    head = f'<div class="racer" id="racer-{i}"><div class="racer-name">{_swatch(i)} {esc(run["label"])}</div>'
    if "sliders" not in run:
        return f'{head}<p class="note" id="note-{i}">No sliders: {esc(run["note"])}.</p></div>'
    g = grids[run["sliders"]["grid"]]
    li, mj = run["sliders"]["start"]
    rows = (("lr", "learning rate", len(g["lrs"]), li),
            ("momentum", f'{g["symbol"]} ({g["meaning"]})', len(g["momenta"]), mj))
    return head + "".join(
        f'<label for="{name}-slider-{i}">{esc(words)}: <span id="{name}-value-{i}" class="value"></span></label>'
        f'<input type="range" id="{name}-slider-{i}" data-run="{i}" min="0" max="{size - 1}" step="1" value="{at}">'
        for name, words, size, at in rows
    ) + f'<div id="outcome-{i}"></div><div id="theory-{i}" class="note"></div></div>'


def _runs(data: dict, contour: _Map, loss_map: _Map) -> tuple[list[str], list[str], list[str]]:
    """Each raced run on the contour panel (with sliders: thin dashed as raced, and the solid path the
    page fills in), its legend entry, and its curve on the loss panel (filled in by the page for runs
    with sliders, with a dotted theory line)."""
    from ..plots import color

    runs_svg, legend, loss_svg = [], [], []
    for i, run in enumerate(data["runs"]):
        c = color(i)
        d = _polyline(run["path"], contour)
        if "sliders" in run:
            runs_svg.append(f'<path class="race-path" d="{d}" fill="none" stroke="{c}" stroke-width="1.3" '
                            f'stroke-dasharray="5,3"/>')
            loss_svg.append(f'<path id="loss-under-{i}" d="" fill="none" stroke="#222" stroke-width="3.2" opacity="0.8"/>'
                            f'<path id="loss-{i}" d="" fill="none" stroke="{c}" stroke-width="1.6"/>'
                            f'<path id="theory-loss-{i}" d="" fill="none" stroke="{c}" stroke-width="1.4" '
                            f'stroke-dasharray="2,3"/>')
        else:
            runs_svg.append(f'<path d="{d}" fill="none" stroke="#1a1a1a" stroke-width="3.6"/>'
                            f'<path class="race-path" d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
            ld = _polyline([(t, None if v is None else (v if v > 0 else 10 ** loss_map.y0))
                            for t, v in zip(data["steps"], run["loss"])], loss_map)
            loss_svg.append(f'<path d="{ld}" fill="none" stroke="#222" stroke-width="3.2" opacity="0.8"/>'
                            f'<path class="race-loss" d="{ld}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        status = f" — diverged at step {run['diverged']}" if run["diverged"] >= 0 else ""
        legend.append(f'<li>{_swatch(i)} {esc(run["label"])}{esc(status)}</li>')
    for i, run in enumerate(data["runs"]):   # the sliders' paths above every raced one
        if "sliders" in run:
            runs_svg.append(f'<path id="under-{i}" d="" fill="none" stroke="#1a1a1a" stroke-width="3.6"/>'
                            f'<path id="path-{i}" class="slider-path" d="" fill="none" stroke="{color(i)}" '
                            f'stroke-width="2"/><circle id="end-{i}" r="4.5" cx="-10" cy="-10" fill="{color(i)}" '
                            f'stroke="#1a1a1a" stroke-width="1.5"/>')
    return runs_svg, legend, loss_svg


def _contour_svg(result: Any, data: dict, contour: _Map, runs_svg: list[str]) -> str:
    """The surface's contour image and colour bar with the runs, the start and the minima."""
    left, top = PAD["left"], PAD["top"]
    pw, ph = W - PAD["left"] - PAD["right"], H - PAD["top"] - PAD["bottom"]
    start = result.positions[0, 0]
    marks = [f'<circle cx="{contour.x(float(start[0])):.1f}" cy="{contour.y(float(start[1])):.1f}" r="6" fill="white" stroke="black"/>']
    for k, m in enumerate(data["surface"]["minima"]):
        marks.append(f'<text x="{contour.x(m[0]):.1f}" y="{contour.y(m[1]) + 6:.1f}" text-anchor="middle" '
                     f'style="font-size:18px;fill:white;stroke:black;stroke-width:0.6">{"★" if k == 0 else "☆"}</text>')
    surface_png, bar_png, encodes = _background(result.surface, contour)
    return (
        f'<svg id="contour" width="{W + BAR_W}" height="{H}" viewBox="0 0 {W + BAR_W} {H}" xmlns="http://www.w3.org/2000/svg">'
        f'<image href="{surface_png}" x="{left}" y="{top}" width="{pw}" height="{ph}" preserveAspectRatio="none"/>'
        f'<image id="colour-bar" href="{bar_png}" x="{W - PAD["right"] + 6}" y="{top}" width="{BAR_W}" height="{ph}" '
        f'role="img" aria-label="colour: {esc(encodes)}"><title>colour: {esc(encodes)}</title></image>'
        f'<clipPath id="clip"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>'
        f'<g clip-path="url(#clip)">{"".join(runs_svg)}</g>'
        f'{"".join(marks)}{_axes_svg(contour, "x", "y")}</svg>'
    )


def _basin_layer(bmap: Any) -> tuple[str, dict[str, Any]]:
    """The basin map as SVG cells (colours as in basins.png, a tooltip per pair), the stability edge on
    quadratics, and a marker that follows the sliders; returns the panel and the JavaScript's map spec."""
    from ..plots.basins import cell_colours, cell_edges, describe_map, is_geometric

    lrs, mus = np.array(bmap.lrs), np.array(bmap.momenta)
    log_x = is_geometric(lrs)
    xe, ye = cell_edges(lrs, log_x), cell_edges(mus, False)
    fx = np.log10 if log_x else (lambda v: v)
    m = _Map(float(fx(xe[0])), float(fx(xe[-1])), float(ye[0]), float(ye[-1]), W, H)
    colours = cell_colours(bmap)
    names = {k: ("global minimum" if k == 0 else f"local minimum #{k}") for k in range(len(bmap.surface.minima))}
    cells = []
    for i, lr in enumerate(bmap.lrs):
        x0, x1 = m.x(float(fx(xe[i]))), m.x(float(fx(xe[i + 1])))
        for j, mu in enumerate(bmap.momenta):
            y0, y1 = m.y(float(ye[j + 1])), m.y(float(ye[j]))
            k, t = int(bmap.outcome[i, j]), int(bmap.settle_step[i, j])
            what = {-1: f"diverged at step {t}", -2: f"not settled after {bmap.steps} steps"}.get(
                k, f"{names.get(k, k)} after {t} steps")
            if bmap.rate is not None and math.isfinite(float(bmap.rate[i, j])):
                what += f"; measured rate {float(bmap.rate[i, j]):.4g}"
            cells.append(f'<rect class="basin" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0 + 0.4:.1f}" '
                         f'height="{y1 - y0 + 0.4:.1f}" fill="{colours[i][j]}"><title>lr {lr:.4g}, μ {mu:.4g}: '
                         f'{esc(what)}</title></rect>')
    edge = ""
    if bmap.surface.is_quadratic:
        mu_line = np.linspace(ye[0], ye[-1], 60)
        points = [(float(fx(lr)), float(mu)) for lr, mu in zip(bmap.edge_lr(mu_line).tolist(), mu_line)]
        edge = (f'<path id="basin-edge" d="{_polyline(points, m)}" fill="none" stroke="white" stroke-width="2.5"/>'
                f'<path d="{_polyline(points, m)}" fill="none" stroke="black" stroke-width="1" stroke-dasharray="5,3"/>')
    left, top = PAD["left"], PAD["top"]
    pw, ph = W - PAD["left"] - PAD["right"], H - PAD["top"] - PAD["bottom"]
    xlabel = "log₁₀ learning rate" if log_x else "learning rate"
    caption = ("colour: measured rate per step (red: ≥ 1, black: diverged); white line: stability edge "
               "lr·λ_max = 2 + 2μ" if bmap.rate is not None else
               "hue: the minimum the marble ends in (blue: global, orange: local), darker = more steps to settle; "
               "grey: not settled; black: diverged")
    svg = (f'<h2>Basin map</h2><div class="panel"><p class="sub">{esc(describe_map(bmap))}. {esc(caption)}; '
           f'hover a cell for its numbers; the ring is the first optimizer\'s slider pair.</p>'
           f'<svg id="basins" width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg">'
           f'<clipPath id="basin-clip"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>'
           f'<g clip-path="url(#basin-clip)">{"".join(cells)}{edge}</g>'
           f'<circle id="basin-choice" r="7" cx="-20" cy="-20" fill="none" stroke="#ff2d55" stroke-width="3"/>'
           f'{_axes_svg(m, xlabel, "momentum μ")}</svg></div>')
    return svg, dict(map=m.spec(), log_x=log_x)


def _theory_intro(s: Any) -> str:
    """On a quadratic: its eigenvalues, heavy ball's stability condition and best pair, and gradient
    descent's best rate (Polyak 1964; Goh, "Why Momentum Really Works", Distill 2017)."""
    if not s.is_quadratic:
        return ""
    lr_opt, mu_opt = s.optimal("momentum")
    lr_gd, _ = s.optimal("gd")
    return (
        f"<p>Quadratic with eigenvalues {', '.join(f'{v:g}' for v in s.eigenvalues.tolist())} (κ = {s.condition:g}). "
        f"Heavy ball is stable iff 0 &lt; lr·λ &lt; 2 + 2μ for every λ. Best pair: lr* = {lr_opt:.4g}, μ* = {mu_opt:.4g}, "
        f"rate {s.rate(lr_opt, mu_opt):.4f}; gradient descent at its best step {lr_gd:.4g}: rate {s.rate(lr_gd, 0):.4f}.</p>"
    )


def _figures(images: dict[str, str | Path] | None) -> str:
    """The PNG/GIF files ``images`` (caption -> file) embedded as figures, or nothing."""
    if not images:
        return ""
    import base64

    parts = []
    for caption, file in images.items():
        b64 = base64.b64encode(Path(file).read_bytes()).decode("ascii")
        mime = "image/gif" if str(file).lower().endswith(".gif") else "image/png"
        parts.append(f'<figure class="panel"><img class="figure" alt="{esc(caption)}" src="data:{mime};base64,{b64}">'
                     f'<figcaption>{esc(caption)}</figcaption></figure>')
    return '<h2>Figures</h2><div class="row">' + "".join(parts) + "</div>"


_JS = r"""
(function () {
  const D = JSON.parse(document.getElementById('race-data').textContent);
  const $ = id => document.getElementById(id);
  function mapper(s) {
    const pw = s.w - s.pad.left - s.pad.right, ph = s.h - s.pad.top - s.pad.bottom;
    return {
      x: v => s.pad.left + (v - s.x0) / (s.x1 - s.x0) * pw,
      y: v => {
        if (s.log) { v = Math.log10(Math.max(v, Math.pow(10, s.y0))); }
        return s.pad.top + (1 - (v - s.y0) / (s.y1 - s.y0)) * ph;
      }
    };
  }
  const C = mapper(D.contour), L = mapper(D.loss);
  function pathD(points, m) {
    const out = [];
    for (const p of points) {
      if (p[0] === null || p[1] === null) break;
      out.push((out.length ? 'L' : 'M') + m.x(p[0]).toFixed(1) + ',' + m.y(p[1]).toFixed(1));
    }
    return out.join(' ');
  }
  function fmt(v) { return v === null || v === undefined ? '—' : String(Number(Number(v).toPrecision(4))); }
  function outcome(cell) {
    if (cell.diverged >= 0) return '<span class="bad">diverged at step ' + cell.diverged + '</span>';
    if (cell.minimum === undefined) return '';
    return 'ends ' + fmt(cell.distance) + ' from the ' + (cell.minimum === 0 ? '<b class="ok">global minimum</b>' : '<b>local minimum #' + cell.minimum + '</b>') +
           '; final f − f_min = ' + fmt(cell.loss[cell.loss.length - 1]);
  }
  function theory(cell, G, lr, mu) {
    const lmax = D.surface.eigenvalues[D.surface.eigenvalues.length - 1];
    const edge = G.theory === 'heavy_ball' ? ': lr·λmax = ' + fmt(lr * lmax) + (cell.stable ? ' &lt; ' : ' ≥ ') + '2 + 2μ = ' + fmt(2 + 2 * mu) : '';
    return 'theory (' + (G.theory === 'heavy_ball' ? 'heavy ball' : 'Nesterov') + '): predicted rate ρ = <b>' + fmt(cell.rate) + '</b> per step' +
      (cell.measured !== null && cell.measured !== undefined ? ' (measured ' + fmt(cell.measured) + ')' : '') + '; ' +
      (cell.stable ? '<span class="ok">stable</span>' : '<span class="bad">unstable</span>') + edge;
  }
  function update(i) {
    const run = D.runs[i], G = D.grids[run.sliders.grid];
    const li = Number($('lr-slider-' + i).value), mj = Number($('momentum-slider-' + i).value);
    const lr = G.lrs[li], mu = G.momenta[mj];
    const cell = G.cells[li * G.momenta.length + mj];
    $('lr-value-' + i).textContent = fmt(lr);
    $('momentum-value-' + i).textContent = fmt(mu);
    const path = $('path-' + i), d = pathD(cell.path, C);
    path.setAttribute('d', d);
    $('under-' + i).setAttribute('d', d);
    path.setAttribute('data-lr', lr);
    path.setAttribute('data-momentum', mu);
    let last = null;
    for (const p of cell.path) { if (p[0] === null || p[1] === null) break; last = p; }
    $('end-' + i).setAttribute('cx', last ? C.x(last[0]).toFixed(1) : -10);
    $('end-' + i).setAttribute('cy', last ? C.y(last[1]).toFixed(1) : -10);
    const ld = pathD(D.steps.map((t, k) => [t, cell.loss[k] === null ? null : Math.max(cell.loss[k], 1e-300)]), L);
    $('loss-' + i).setAttribute('d', ld);
    $('loss-under-' + i).setAttribute('d', ld);
    $('outcome-' + i).innerHTML = outcome(cell);
    const quadratic = D.surface.quadratic && G.theory;
    $('theory-' + i).innerHTML = quadratic ? theory(cell, G, lr, mu) : '';
    const f0 = cell.loss[0];
    $('theory-loss-' + i).setAttribute('d', quadratic && cell.rate < 1.5 ? pathD(D.steps.map(t => [t, f0 * Math.pow(cell.rate, 2 * t)]), L) : '');
    if (D.basins && D.basins.run === i) {
      const B = mapper(D.basins.map), ring = $('basin-choice');
      ring.setAttribute('cx', B.x(D.basins.log_x ? Math.log10(lr) : lr).toFixed(1));
      ring.setAttribute('cy', B.y(mu).toFixed(1));
    }
  }
  D.runs.forEach((run, i) => {
    if (!run.sliders) return;
    for (const name of ['lr', 'momentum']) $(name + '-slider-' + i).addEventListener('input', () => update(i));
    update(i);
  });
  document.body.setAttribute('data-ready', '1');
})();
"""
