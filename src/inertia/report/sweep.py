"""The sweep report: an interactive lr × momentum heatmap and a table of the best configurations.

``write_sweep_report(path, records, metric="val_accuracy_mean", title="")``. Each record is a
dict with the swept hyperparameters (e.g. ``"lr"``, ``"momentum"``), ``"status"`` in
{"ok", "diverged", "pruned"}, ``"diverged_step"``, ``"val_loss_mean"``, ``"val_loss_std"``,
``"val_accuracy_mean"``, ``"val_accuracy_std"``, ``"train_loss_final"`` and
``"train_loss_curve"`` (list of floats). Several records in one heatmap cell (other
hyperparameters swept too) show the best of them. Colours are computed here; the page's
JavaScript only shows the stored loss curve of the cell under the pointer.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ._html import clean, esc, page, script_json

RESULT_KEYS = {"status", "diverged_step", "pruned_step", "val_loss_mean", "val_loss_std", "val_accuracy_mean",
               "val_accuracy_std", "train_loss_final", "train_loss_curve", "trial", "number", "fold", "seed", "config",
               "index", "id", "duration_s", "steps", "epochs", "worker", "state", "datetime_start", "datetime_complete",
               "eval_steps", "per_seed", "best_step"}
RESULT_PREFIXES = ("val_", "test_", "train_")
RESULT_SUFFIXES = ("_mean", "_std", "_step", "_final", "_curve", "_s", "_time")


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
    return dict(xkey=xkey, ykey=ykey, xs=[_axis_label(v) for v in xs], ys=[_axis_label(v) for v in ys], cells=cells,
                lo=lo, hi=hi, metric=metric, better="higher" if better else "lower", best=ranked[:10],
                keys=keys, records=records)


def write_sweep_report(path: str | Path, records: list[dict], metric: str = "val_accuracy_mean", title: str = "") -> Path:
    """Write the interactive sweep page (heatmap + loss curve on hover/click + table of the best configurations)."""
    data = sweep_report_data(records, metric)
    cw, ch = 52, 34
    left, top = 80, 20
    nx, ny = len(data["xs"]), len(data["ys"])
    width, height = left + cw * nx + 20, top + ch * ny + 60
    svg = [f'<svg id="heatmap" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    for c in data["cells"]:
        x = left + c["xi"] * cw
        y = top + (ny - 1 - c["yi"]) * ch  # larger y-values (momentum) at the top
        v = c["value"]
        label = f"{v:.3g}" if c["status"] == "ok" and _finite(v) else {"diverged": "×", "pruned": "p"}.get(c["status"], "")
        tcolor = "#000" if c["status"] != "ok" or _light(c["fill"]) else "#fff"
        svg.append(
            f'<g class="cell" data-record="{c["record"]}" data-status="{c["status"]}">'
            f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{c["fill"]}" stroke="#fff"/>'
            f'<text x="{x + cw / 2 - 1}" y="{y + ch / 2 + 3}" text-anchor="middle" style="fill:{tcolor};font-size:{14 if c["status"] == "diverged" else 10}px;pointer-events:none">{label}</text></g>')
    for xi, xv in enumerate(data["xs"]):
        svg.append(f'<text x="{left + xi * cw + cw / 2 - 1}" y="{top + ny * ch + 14}" text-anchor="middle">{esc(xv)}</text>')
    for yi, yv in enumerate(data["ys"]):
        svg.append(f'<text x="{left - 6}" y="{top + (ny - 1 - yi) * ch + ch / 2 + 3}" text-anchor="end">{esc(yv)}</text>')
    svg.append(f'<text x="{left + nx * cw / 2}" y="{top + ny * ch + 34}" text-anchor="middle">{esc(data["xkey"] or "")}</text>')
    svg.append(f'<text transform="translate(14,{top + ny * ch / 2}) rotate(-90)" text-anchor="middle">{esc(data["ykey"] or "")}</text>')
    svg.append("</svg>")
    # colour scale
    stops = "".join(f'<stop offset="{k / 8:.3f}" stop-color="{_viridis(k / 8 if data["better"] == "higher" else 1 - k / 8)}"/>' for k in range(9))
    scale = (f'<svg width="320" height="40" xmlns="http://www.w3.org/2000/svg"><defs><linearGradient id="scale">{stops}</linearGradient></defs>'
             f'<rect x="10" y="4" width="300" height="14" fill="url(#scale)"/>'
             f'<text x="10" y="32">{data["lo"]:.4g}</text><text x="310" y="32" text-anchor="end">{data["hi"]:.4g}</text>'
             f'<text x="160" y="32" text-anchor="middle">{esc(metric)} ({data["better"]} is better)</text></svg>')
    # table of the best configurations
    keys = data["keys"]
    cols = [k for k in ("val_accuracy_mean", "val_accuracy_std", "val_loss_mean", "val_loss_std", "train_loss_final",
                        "test_accuracy_mean")
            if any(k in r for r in records)]
    head = "".join(f"<th>{esc(k)}</th>" for k in ["rank", *keys, *cols, "status"])
    rows = []
    for rank, k in enumerate(data["best"], 1):
        r = records[k]
        vals = [f"{r.get(c):.4g}" if _finite(r.get(c)) else esc(r.get(c, "")) for c in [*keys, *cols]]
        rows.append(f'<tr class="best-row" data-record="{k}"><td>{rank}</td>' + "".join(f"<td>{v}</td>" for v in vals)
                    + f'<td>{esc(r.get("status", "ok"))}</td></tr>')
    counts = {s: sum(1 for r in records if r.get("status", "ok") == s) for s in ("ok", "diverged", "pruned")}
    body = f"""
<h1>{esc(title or 'Sweep: ' + ' × '.join(keys[:2]))}</h1>
<p class="sub">{len(records)} configurations — {counts['ok']} finished, {counts['diverged']} diverged (×), {counts['pruned']} pruned (p).
Colour: {esc(metric)}; each cell shows the best configuration with that {esc(data['xkey'] or '')}{' and ' + esc(data['ykey']) if data['ykey'] else ''}.
Hover or click a cell to see its training loss curve.</p>
<div class="row">
 <div class="panel">{''.join(svg)}<br>{scale}</div>
 <div class="panel"><div id="detail" style="min-height:3em;max-width:440px">Hover over a cell.</div>
  <svg id="curve" width="440" height="260" viewBox="0 0 440 260" xmlns="http://www.w3.org/2000/svg">
   <rect x="50" y="10" width="380" height="210" fill="none" stroke="#444"/>
   <path id="curve-path" d="" fill="none" stroke="#1f77b4" stroke-width="1.8"/>
   <g id="curve-axes"></g>
   <text x="240" y="252" text-anchor="middle">step (as recorded)</text>
   <text transform="translate(12,115) rotate(-90)" text-anchor="middle">train loss (log scale)</text>
  </svg></div>
</div>
<h2>Best configurations (by {esc(metric)}, {data['better']} is better)</h2>
<table id="best"><tr>{head}</tr>{''.join(rows)}</table>
<script type="application/json" id="sweep-data">{script_json(clean(dict(records=records, keys=keys, metric=metric)))}</script>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title or "inertia sweep", body, css=_CSS, script=_JS), encoding="utf-8")
    return path


_CSS = """
.cell { cursor: pointer; }
.cell:hover rect, .cell.selected rect { stroke: #000; stroke-width: 2; }
tr.best-row:hover { background: #eef; cursor: pointer; }
"""

_JS = r"""
(function () {
  const D = JSON.parse(document.getElementById('sweep-data').textContent);
  const path = document.getElementById('curve-path');
  const axes = document.getElementById('curve-axes');
  function fmt(v) { return (v === null || v === undefined) ? '—' : (typeof v === 'number' ? String(Number(v.toPrecision(4))) : String(v)); }
  function show(k) {
    const r = D.records[k];
    const parts = D.keys.map(key => key + ' = ' + fmt(r[key]));
    let html = '<b>' + parts.join(', ') + '</b><br>status: ' + (r.status || 'ok');
    if (r.status === 'diverged') html += ' at step ' + fmt(r.diverged_step);
    html += '<br>' + D.metric + ': ' + fmt(r[D.metric]);
    if (r.val_loss_mean !== undefined) html += '; val loss ' + fmt(r.val_loss_mean) + ' ± ' + fmt(r.val_loss_std);
    document.getElementById('detail').innerHTML = html;
    const curve = (r.train_loss_curve || []).map(v => (v === null || !(v > 0)) ? null : v);
    const ok = curve.filter(v => v !== null);
    axes.innerHTML = '';
    if (!ok.length) { path.setAttribute('d', ''); path.setAttribute('data-record', k); return; }
    let lo = Math.log10(Math.min(...ok)), hi = Math.log10(Math.max(...ok));
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const n = Math.max(curve.length - 1, 1);
    const X = i => 50 + 380 * i / n, Y = v => 10 + 210 * (1 - (Math.log10(v) - lo) / (hi - lo));
    const out = [];
    for (let i = 0; i < curve.length; i++) {
      if (curve[i] === null) break;
      out.push((out.length ? 'L' : 'M') + X(i).toFixed(1) + ',' + Y(curve[i]).toFixed(1));
    }
    path.setAttribute('d', out.join(' '));
    path.setAttribute('data-record', k);
    axes.innerHTML = '<text x="46" y="14" text-anchor="end">' + fmt(Math.pow(10, hi)) + '</text>' +
      '<text x="46" y="222" text-anchor="end">' + fmt(Math.pow(10, lo)) + '</text>' +
      '<text x="50" y="236" text-anchor="middle">0</text><text x="430" y="236" text-anchor="middle">' + (curve.length - 1) + '</text>';
  }
  let selected = null;
  document.querySelectorAll('.cell').forEach(cell => {
    const k = Number(cell.getAttribute('data-record'));
    cell.addEventListener('mouseenter', () => show(k));
    cell.addEventListener('mouseleave', () => { if (selected !== null) show(selected); });
    cell.addEventListener('click', () => {
      document.querySelectorAll('.cell.selected').forEach(c => c.classList.remove('selected'));
      cell.classList.add('selected'); selected = k; show(k);
    });
  });
  document.querySelectorAll('tr.best-row').forEach(row => row.addEventListener('click', () => { selected = Number(row.getAttribute('data-record')); show(selected); }));
  const rows = document.querySelectorAll('tr.best-row');
  if (rows.length) { selected = Number(rows[0].getAttribute('data-record')); show(selected); }
  document.body.setAttribute('data-ready', '1');
})();
"""
