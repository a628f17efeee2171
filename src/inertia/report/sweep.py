"""The sweep report: an interactive lr × momentum heatmap and a table of the best configurations.

``write_sweep_report(path, records, metric="val_accuracy_mean", title="")``. Each record is a
dict with the swept hyperparameters (e.g. ``"lr"``, ``"momentum"``), ``"status"`` in
{"ok", "diverged", "pruned"}, ``"diverged_step"``, ``"val_loss_mean"``, ``"val_loss_std"``,
``"val_accuracy_mean"``, ``"val_accuracy_std"``, ``"train_loss_final"`` and
``"train_loss_curve"`` (list of floats). Several records in one heatmap cell (other
hyperparameters swept too) show the best of them. Colours are computed here; the page's
JavaScript only shows the stored loss curve of the cell under the pointer. ``edge`` (a sweep measured
for it): heavy ball's stability edge, drawn across the rows of an lr × momentum grid.
"""
from __future__ import annotations

import bisect
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._html import clean, esc, page, script_json

RESULT_KEYS = {"status", "diverged_step", "pruned_step", "val_loss_mean", "val_loss_std", "val_accuracy_mean",
               "val_accuracy_std", "train_loss_final", "train_loss_curve", "trial", "number", "fold", "seed", "config",
               "index", "id", "duration_s", "steps", "epochs", "worker", "state", "datetime_start", "datetime_complete",
               "eval_steps", "per_seed", "best_step"}
RESULT_PREFIXES = ("val_", "test_", "train_")
RESULT_SUFFIXES = ("_mean", "_std", "_step", "_final", "_curve", "_s", "_time")
EDGE_COLOUR = "#CC79A7"   # the stability edge, as on the heatmap picture (Okabe & Ito's reddish purple)


def _is_result(key: str) -> bool:
    return key in RESULT_KEYS or key.startswith(RESULT_PREFIXES) or key.endswith(RESULT_SUFFIXES)

# viridis at 9 stops (sRGB), interpolated linearly
_VIRIDIS = [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
            (92, 200, 99), (170, 220, 50), (253, 231, 37)]


def _viridis(u: float) -> str:
    u = min(max(u, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    k = min(int(u), len(_VIRIDIS) - 2)
    f = u - k
    r, g, b = (round(a + (bb - a) * f) for a, bb in zip(_VIRIDIS[k], _VIRIDIS[k + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


def _light(fill: str) -> bool:
    r, g, b = (int(fill[k:k + 2], 16) for k in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b > 140


def higher_is_better(metric: str) -> bool:
    return "acc" in metric.lower() or "score" in metric.lower()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def swept_keys(records: Sequence[dict]) -> list[str]:
    """The hyperparameters that vary across records (``lr`` and ``momentum`` first)."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k in keys or _is_result(k) or isinstance(v, (list, dict, str)):
                continue
            keys.append(k)
    varying = [k for k in keys if len({repr(r.get(k)) for r in records}) > 1]
    preferred = [k for k in ("lr", "momentum") if k in keys]
    rest = [k for k in varying if k not in preferred]
    return preferred + rest


def _axis_label(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def sweep_report_data(records: Sequence[dict], metric: str) -> dict[str, Any]:
    if not records:
        raise ValueError("write_sweep_report needs at least one record")
    keys = swept_keys(records)
    xkey = keys[0] if keys else None
    ykey = keys[1] if len(keys) > 1 else None
    xs = sorted({r.get(xkey) for r in records}, key=lambda v: (v is None, v)) if xkey else [None]
    ys = sorted({r.get(ykey) for r in records}, key=lambda v: (v is None, v)) if ykey else [None]
    better = higher_is_better(metric)

    def score(r):
        v = r.get(metric)
        if r.get("status", "ok") != "ok" or not _finite(v):
            return -math.inf
        return v if better else -v

    cells = []
    for yi, yv in enumerate(ys):
        for xi, xv in enumerate(xs):
            group = [k for k, r in enumerate(records) if (xkey is None or r.get(xkey) == xv) and (ykey is None or r.get(ykey) == yv)]
            if not group:
                continue
            best = max(group, key=lambda k: score(records[k]))
            r = records[best]
            statuses = {records[k].get("status", "ok") for k in group}
            status = r.get("status", "ok") if score(r) == -math.inf else "ok"
            if status == "ok" and not _finite(r.get(metric)):
                status = "diverged" if "diverged" in statuses else ("pruned" if "pruned" in statuses else "missing")
            cells.append(dict(xi=xi, yi=yi, record=best, status=status, value=r.get(metric), n=len(group)))
    values = [c["value"] for c in cells if c["status"] == "ok" and _finite(c["value"])]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    for c in cells:
        if c["status"] == "ok" and _finite(c["value"]):
            u = (c["value"] - lo) / (hi - lo) if hi > lo else 1.0
            c["fill"] = _viridis(u if better else 1 - u)
        else:
            c["fill"] = {"diverged": "#d9d9d9", "pruned": "#efe6d2"}.get(c["status"], "#ffffff")
    ranked = sorted(range(len(records)), key=lambda k: -score(records[k]))
    ranked = [k for k in ranked if score(records[k]) > -math.inf]
    return dict(xkey=xkey, ykey=ykey, xs=[_axis_label(v) for v in xs], ys=[_axis_label(v) for v in ys], xv=xs, yv=ys,
                cells=cells,
                lo=lo, hi=hi, metric=metric, better="higher" if better else "lower", best=ranked[:10],
                keys=keys, records=records)


UNITS = {"accuracy": ("%", 100.0, "{:.1f}"), "loss": ("", 1.0, "{:.4g}"), "rmse": ("", 1.0, "{:.4g}"),
         "r2": ("", 1.0, "{:.3f}")}


def show(key: str, value: Any) -> str:
    """A metric as the terminal prints it: accuracy in % with one decimal, the rest to 4 digits."""
    if not _finite(value):
        return "—"
    for name, (unit, scale, fmt) in UNITS.items():
        if name in key:
            return fmt.format(value * scale) + unit
    return f"{value:.4g}"


def _columns(records: Sequence[dict]) -> list[tuple[str, str]]:
    """(key, heading) of the table: classification shows accuracy, regression RMSE and R²."""
    regression = any(_finite(r.get("val_rmse_mean")) for r in records)
    score = [("val_rmse_mean", "val RMSE"), ("test_rmse_mean", "test RMSE"), ("test_r2_mean", "test R²")] \
        if regression else [("val_accuracy_mean", "val acc"), ("test_accuracy_mean", "test acc")]
    cols = [("best_step", "step"), ("val_loss_mean", "val loss"), *score, ("train_loss_final", "final train loss")]
    return [(k, h) for k, h in cols if any(k in r for r in records)]


def _with_steps(record: dict) -> dict:
    """The record with the update counts of its curves: ``train_steps`` for the (subsampled) training
    loss, ``eval_steps`` for the validation and test curves."""
    from ..sweeps.results import train_curve_steps

    out = dict(record)
    out["train_steps"] = train_curve_steps(record)
    if not out.get("eval_steps") and record.get("val_loss_mean_curve"):
        out["eval_steps"] = list(range(1, len(record["val_loss_mean_curve"]) + 1))
    return out


def _iso_lines(data: dict, cell: tuple[int, int], origin: tuple[int, int]) -> list[str]:
    """Dashed lines of constant effective learning rate lr/(1−μ) across an lr × momentum grid,
    one per decade, through the cells' centres (lr interpolated on a log scale)."""
    if data["xkey"] != "lr" or data["ykey"] != "momentum" or len(data["xv"]) < 2:
        return []
    lrs, mus = [math.log10(v) for v in data["xv"]], data["yv"]
    (cw, ch), (left, top), ny = cell, origin, len(mus)
    effective = [lr - math.log10(1 - mu) for lr in lrs for mu in mus if mu < 1]
    out = []
    for decade in range(math.floor(min(effective)), math.ceil(max(effective)) + 1):
        points = []
        for yi, mu in enumerate(mus):
            target = decade + math.log10(1 - mu) if mu < 1 else None
            if target is None or not lrs[0] <= target <= lrs[-1]:
                continue
            k = max(i for i in range(len(lrs)) if lrs[i] <= target)
            frac = k if k == len(lrs) - 1 else k + (target - lrs[k]) / (lrs[k + 1] - lrs[k])
            points.append((left + frac * cw + cw / 2 - 1, top + (ny - 1 - yi) * ch + ch / 2 - 1))
        if len(points) < 2:
            continue
        (x0, y0), (x1, y1) = points[-2], points[-1]     # extend half a cell up, to the cells' border
        x, y = x1 + (x1 - x0) * (ch / 2) / (y0 - y1), y1 - ch / 2
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in [*points, (x, y)])
        reaches_top = y <= top   # labelled above the grid only, never over a cell's number
        label = (f'<text x="{x:.1f}" y="{y - 3:.1f}" text-anchor="middle" class="iso-label">{10.0 ** decade:g}</text>'
                 if reaches_top else "")
        out.append(f'<g class="iso"><polyline points="{line}" fill="none" stroke="#000" stroke-opacity="0.35" '
                   f'stroke-width="3"/><polyline points="{line}" fill="none" stroke="#fff" stroke-width="1.2" '
                   f'stroke-dasharray="5,4"/>{label}</g>')
    return out


def _edge_line(data: dict, edge: Mapping[str, Any] | None, cell: tuple[int, int], origin: tuple[int, int]) -> list[str]:
    """Heavy ball's stability edge on an lr × momentum grid: in each momentum's row a vertical stroke at
    its largest stable lr ``edge["stable_lr"][μ]`` (lr placed on a log scale between the cells' centres,
    as the iso-lines), strokes of adjacent rows joined; a row whose edge lies outside the grid has none."""
    if not edge or data["xkey"] != "lr" or data["ykey"] != "momentum" or len(data["xv"]) < 2:
        return []
    logs, nx, ny = [math.log10(v) for v in data["xv"]], len(data["xv"]), len(data["yv"])
    (cw, ch), (left, top) = cell, origin
    runs: list[list[tuple[float, float]]] = [[]]
    for yi in range(ny - 1, -1, -1):               # top row (largest momentum) first
        lr = edge["stable_lr"].get(data["yv"][yi])
        k = None if lr is None else min(max(bisect.bisect_right(logs, math.log10(lr)) - 1, 0), nx - 2)
        frac = None if k is None else k + (math.log10(lr) - logs[k]) / (logs[k + 1] - logs[k])
        if frac is None or not -0.5 <= frac <= nx - 0.5:
            runs.append([])
            continue
        x, y = left + frac * cw + cw / 2 - 1, top + (ny - 1 - yi) * ch - 1
        runs[-1] += [(x, y), (x, y + ch)]
    out = []
    for points in (r for r in runs if r):
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        out.append(f'<g class="edge"><polyline points="{line}" fill="none" stroke="#fff" stroke-width="4.5"/>'
                   f'<polyline points="{line}" fill="none" stroke="{EDGE_COLOUR}" stroke-width="2.5"/></g>')
    return out


def _edge_legend(data: dict, edge: Mapping[str, Any] | None) -> str:
    """The edge's key below the heatmap: its line, λ_max, the convention, and how many rows it lies beyond."""
    if not edge or data["xkey"] != "lr" or data["ykey"] != "momentum":
        return ""
    beyond = [mu for mu in data["yv"] if (edge["stable_lr"].get(mu) or 0) > max(data["xv"])]
    note = (f" It lies beyond the largest lr swept for {len(beyond)} of the {len(data['yv'])} momenta."
            if beyond else "")
    return (f'<p class="edge-legend"><svg width="28" height="10"><line x1="0" y1="5" x2="28" y2="5" '
            f'stroke="{EDGE_COLOUR}" stroke-width="2.5"/></svg> stability edge lr·λ_max = 2 + 2μ '
            f'({esc(edge["convention"])} convention), λ_max = {edge["sharpness"]:.3g} at initialization: cells '
            f'right of it are predicted to diverge.{note}</p>')


def _heatmap_svg(data: dict, edge: Mapping[str, Any] | None = None) -> str:
    cw, ch, left, top = 56, 34, 80, 30
    nx, ny = len(data["xs"]), len(data["ys"])
    width, height = left + cw * nx + 40, top + ch * ny + 60
    svg = [f'<svg id="heatmap" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'xmlns="http://www.w3.org/2000/svg">']
    texts = []
    for c in data["cells"]:
        x, y = left + c["xi"] * cw, top + (ny - 1 - c["yi"]) * ch  # larger momentum at the top
        ok = c["status"] == "ok" and _finite(c["value"])
        label = show(data["metric"], c["value"]).rstrip("%") if ok else {"diverged": "×", "pruned": "p"}.get(c["status"], "")
        tcolor = "#000" if not ok or _light(c["fill"]) else "#fff"
        svg.append(f'<g class="cell" data-record="{c["record"]}" data-status="{c["status"]}">'
                   f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{c["fill"]}" stroke="#fff"/></g>')
        texts.append(f'<text x="{x + cw / 2 - 1}" y="{y + ch / 2 + 4}" text-anchor="middle" class="cell-text" '
                     f'style="fill:{tcolor};font-size:{15 if c["status"] == "diverged" else 12}px">{label}</text>')
    svg += _iso_lines(data, (cw, ch), (left, top)) + _edge_line(data, edge, (cw, ch), (left, top)) + texts
    for xi, xv in enumerate(data["xs"]):
        svg.append(f'<text x="{left + xi * cw + cw / 2 - 1}" y="{top + ny * ch + 14}" text-anchor="middle">{esc(xv)}</text>')
    if data["ykey"]:
        for yi, yv in enumerate(data["ys"]):
            svg.append(f'<text x="{left - 6}" y="{top + (ny - 1 - yi) * ch + ch / 2 + 3}" text-anchor="end">{esc(yv)}</text>')
        svg.append(f'<text transform="translate(14,{top + ny * ch / 2}) rotate(-90)" text-anchor="middle">'
                   f'{esc(data["ykey"])}</text>')
    svg.append(f'<text x="{left + nx * cw / 2}" y="{top + ny * ch + 34}" text-anchor="middle">{esc(data["xkey"] or "")}</text>')
    svg.append("</svg>")
    return "".join(svg)


def _scale_svg(data: dict) -> str:
    better = data["better"] == "higher"
    stops = "".join(f'<stop offset="{k / 8:.3f}" stop-color="{_viridis(k / 8 if better else 1 - k / 8)}"/>'
                    for k in range(9))
    name = data["metric"].replace("_mean", "").replace("_", " ")
    return (f'<svg width="340" height="40" xmlns="http://www.w3.org/2000/svg"><defs><linearGradient id="scale">'
            f'{stops}</linearGradient></defs><rect x="10" y="4" width="320" height="14" fill="url(#scale)"/>'
            f'<text x="10" y="32">{show(data["metric"], data["lo"])}</text>'
            f'<text x="330" y="32" text-anchor="end">{show(data["metric"], data["hi"])}</text>'
            f'<text x="170" y="32" text-anchor="middle">{esc(name)} ({data["better"]} is better)</text></svg>')


def _table(data: dict, records: Sequence[dict]) -> str:
    keys, cols = data["keys"], _columns(records)
    effective = "lr" in keys and "momentum" in keys
    head = "".join(f"<th>{esc(k)}</th>" for k in
                   ["rank", *keys, *(["lr/(1−μ)"] if effective else []), *(h for _, h in cols), "status"])
    rows = []
    for rank, k in enumerate(data["best"], 1):
        r = records[k]
        values = [f"{r.get(key):.4g}" if _finite(r.get(key)) else esc(r.get(key, "")) for key in keys]
        if effective:
            values.append(f"{r['lr'] / (1 - r['momentum']):.4g}" if r.get("momentum", 1) < 1 else "—")
        values += [str(r.get(key)) if key == "best_step" else show(key, r.get(key)) for key, _ in cols]
        rows.append(f'<tr class="best-row" data-record="{k}"><td>{rank}</td>'
                    + "".join(f"<td>{v}</td>" for v in values) + f'<td>{esc(r.get("status", "ok"))}</td></tr>')
    return f'<table id="best"><tr>{head}</tr>{"".join(rows)}</table>'


def write_sweep_report(path: str | Path, records: list[dict], metric: str = "val_accuracy_mean", title: str = "",
                       commands: Sequence[str | None] | None = None, edge: Mapping[str, Any] | None = None) -> Path:
    """Write the interactive sweep page: the heatmap (with the iso-lines of lr/(1−μ) on an lr ×
    momentum grid), training and validation curves at their real update counts for the cells
    clicked (several overlay; a diverged curve is cut at the panel's top with a ×), the table of
    the best configurations in the terminal's units, and ``commands[i]``, the command that
    reproduces record i, for the cell chosen. ``edge``: ``{"sharpness": λ_max, "convention": ...,
    "stable_lr": {μ: largest stable lr}}`` draws heavy ball's stability edge across the grid's rows."""
    data = sweep_report_data(records, metric)
    shown = [_with_steps(r) for r in records]
    counts = {s: sum(1 for r in records if r.get("status", "ok") == s) for s in ("ok", "diverged", "pruned")}
    axes = " and ".join(esc(k) for k in (data["xkey"], data["ykey"]) if k)
    body = f"""
<h1>{esc(title or 'Sweep: ' + ' × '.join(data['keys'][:2]))}</h1>
<p class="sub">{len(records)} configurations — {counts['ok']} finished, {counts['diverged']} diverged (×), {counts['pruned']} pruned (p).
Each cell shows {esc(data['metric'].replace('_mean', '').replace('_', ' '))} at the configuration's selected step (the best one with that {axes});
dashed lines: constant effective learning rate lr/(1−μ), one per decade, labelled above the grid. Hover a cell to preview its curves; click cells to overlay them (click again to remove).</p>
<div class="row">
 <div class="panel">{_heatmap_svg(data, edge)}<br>{_scale_svg(data)}{_edge_legend(data, edge)}</div>
 <div class="panel"><div id="detail" style="min-height:3em;max-width:520px">Hover over a cell.</div>
  <svg id="curve" width="520" height="280" viewBox="0 0 520 280" xmlns="http://www.w3.org/2000/svg">
   <rect x="60" y="10" width="440" height="220" fill="none" stroke="#444"/>
   <g id="curves"></g><g id="curve-axes"></g>
   <text x="280" y="270" text-anchor="middle">update (step)</text>
   <text transform="translate(12,120) rotate(-90)" text-anchor="middle">loss (log scale)</text>
  </svg>
  <div id="legend"></div>
  <div id="command"></div></div>
</div>
<h2>Best configurations (by {esc(metric)}, {data['better']} is better)</h2>
{_table(data, records)}
<script type="application/json" id="sweep-data">{script_json(clean(dict(
        records=shown, keys=data['keys'], metric=metric, commands=list(commands or [None] * len(records)))))}</script>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title or "inertia sweep", body, css=_CSS, script=_JS), encoding="utf-8")
    return path


_CSS = """
.cell { cursor: pointer; }
.cell:hover rect { stroke: #000; stroke-width: 2; }
.cell.selected rect { stroke: #d62728; stroke-width: 3; }
.cell-text { pointer-events: none; font-weight: 600; }
.iso { pointer-events: none; }
.edge { pointer-events: none; }
.edge-legend { font-size: 0.85em; margin: 4px 0; max-width: 540px; }
.iso-label { font-size: 10px; fill: #fff; paint-order: stroke; stroke: #000; stroke-width: 2.5px; }
tr.best-row:hover { background: #eef; cursor: pointer; }
#legend span { display: inline-block; margin-right: 12px; font-size: 0.85em; }
#command code { display: block; white-space: pre-wrap; word-break: break-all; background: #f4f4f4;
                padding: 6px; font-size: 0.8em; max-width: 500px; }
"""

_JS = r"""
(function () {
  const D = JSON.parse(document.getElementById('sweep-data').textContent);
  const COLORS = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#000000'];
  const group = document.getElementById('curves'), axes = document.getElementById('curve-axes');
  const X0 = 60, W = 440, Y0 = 10, H = 220, SVG = group.namespaceURI;
  let chosen = [], preview = null;
  function fmt(v) { return (v === null || v === undefined) ? '—' : (typeof v === 'number' ? String(Number(v.toPrecision(4))) : String(v)); }
  function unit(key, v) {
    if (v === null || v === undefined) return '—';
    return key.includes('accuracy') ? (100 * v).toFixed(1) + ' %' : fmt(v);
  }
  function series(r) {   // [label, steps, values, dashed]
    const out = [['train', r.train_steps || [], r.train_loss_curve || [], false]];
    if (r.val_loss_mean_curve) out.push(['val', r.eval_steps || [], r.val_loss_mean_curve, true]);
    return out;
  }
  function healthy(r) {   // values before a curve blows up (10x its first value)
    const out = [];
    for (const [, , values] of series(r)) {
      const first = values.find(v => v !== null && v > 0);
      for (const v of values) { if (v === null || !(v > 0) || v > 10 * first) break; out.push(v); }
    }
    return out;
  }
  function draw() {
    const shown = chosen.concat(preview !== null && !chosen.includes(preview) ? [preview] : []);
    group.innerHTML = ''; axes.innerHTML = '';
    const values = shown.flatMap(k => healthy(D.records[k]));
    const last = Math.max(1, ...shown.map(k => D.records[k].steps || 1));
    if (!values.length) return;
    let lo = Math.log10(Math.min(...values)), hi = Math.log10(Math.max(...values));
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const X = s => X0 + W * s / last, Y = v => Y0 + H * (1 - (Math.log10(v) - lo) / (hi - lo));
    shown.forEach((k, i) => {
      const r = D.records[k], color = chosen.includes(k) ? COLORS[chosen.indexOf(k) % COLORS.length] : '#888';
      for (const [label, steps, vals, dashed] of series(r)) {
        const d = []; let cut = null;
        for (let j = 0; j < vals.length; j++) {
          const v = vals[j];
          if (v === null || !(v > 0) || Math.log10(v) > hi) { cut = steps[j] !== undefined ? steps[j] : null; break; }
          d.push((d.length ? 'L' : 'M') + X(steps[j]).toFixed(1) + ',' + Y(v).toFixed(1));
        }
        const p = document.createElementNS(SVG, 'path');
        p.setAttribute('d', d.join(' ')); p.setAttribute('fill', 'none'); p.setAttribute('stroke', color);
        p.setAttribute('stroke-width', '1.8'); p.setAttribute('class', 'curve ' + label);
        p.setAttribute('data-record', k);
        if (dashed) p.setAttribute('stroke-dasharray', '6,3');
        group.appendChild(p);
        const at = r.status === 'diverged' && label === 'train' ? (r.diverged_step || cut) : null;
        if (at !== null) {
          const m = document.createElementNS(SVG, 'text');
          m.setAttribute('x', X(at).toFixed(1)); m.setAttribute('y', Y0 + 12); m.setAttribute('text-anchor', 'middle');
          m.setAttribute('class', 'diverged-marker'); m.setAttribute('style', 'fill:' + color + ';font-size:16px');
          m.textContent = '×'; group.appendChild(m);
        }
      }
    });
    const t = (x, y, a, s) => '<text x="' + x + '" y="' + y + '" text-anchor="' + a + '">' + s + '</text>';
    axes.innerHTML = t(56, 14, 'end', fmt(Math.pow(10, hi))) + t(56, 232, 'end', fmt(Math.pow(10, lo))) +
      t(X0, 246, 'middle', '0') + t(X0 + W / 2, 246, 'middle', String(Math.round(last / 2))) + t(X0 + W, 246, 'middle', String(last));
    document.getElementById('legend').innerHTML = chosen.map((k, i) => '<span style="color:' + COLORS[i % COLORS.length] +
      '">■ ' + D.keys.map(key => key + ' ' + fmt(D.records[k][key])).join(', ') + '</span>').join('') +
      (chosen.length ? '<span>solid: training loss, dashed: validation loss</span>' : '');
  }
  function describe(k) {
    const r = D.records[k];
    let html = '<b>' + D.keys.map(key => key + ' = ' + fmt(r[key])).join(', ') + '</b><br>status: ' + (r.status || 'ok');
    if (r.status === 'diverged') html += ' at step ' + fmt(r.diverged_step);
    if (r.best_step !== undefined) html += '; selected step ' + fmt(r.best_step);
    html += '<br>' + D.metric.replace('_mean', '').replace(/_/g, ' ') + ': ' + unit(D.metric, r[D.metric]);
    if (r.val_loss_mean !== undefined) html += '; val loss ' + fmt(r.val_loss_mean) + ' ± ' + fmt(r.val_loss_std);
    document.getElementById('detail').innerHTML = html;
  }
  function choose(k) {
    const i = chosen.indexOf(k);
    if (i >= 0) chosen.splice(i, 1); else chosen.push(k);
    document.querySelectorAll('.cell').forEach(c =>
      c.classList.toggle('selected', chosen.includes(Number(c.getAttribute('data-record')))));
    const command = D.commands[k];
    document.getElementById('command').innerHTML = (i < 0 && command) ? 'reproduce it with:<code>' +
      command.replace(/&/g, '&amp;').replace(/</g, '&lt;') + '</code>' : '';
    describe(k); preview = null; draw();
  }
  document.querySelectorAll('.cell').forEach(cell => {
    const k = Number(cell.getAttribute('data-record'));
    cell.addEventListener('mouseenter', () => { preview = k; describe(k); draw(); });
    cell.addEventListener('mouseleave', () => { preview = null; draw(); });
    cell.addEventListener('click', () => choose(k));
  });
  document.querySelectorAll('tr.best-row').forEach(row => row.addEventListener('click', () => choose(Number(row.getAttribute('data-record')))));
  const first = document.querySelector('tr.best-row');
  if (first) choose(Number(first.getAttribute('data-record')));
  document.body.setAttribute('data-ready', '1');
})();
"""
