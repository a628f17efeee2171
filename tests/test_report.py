"""The HTML reports without a browser: self-contained, data embedded, edge cases."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import inertia
from inertia.race_sliders import slider_grids
from inertia.report import write_race_report, write_sweep_report


def _embedded(html: str, element_id: str):
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def _offline(html: str) -> bool:
    stripped = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    return "http://" not in stripped and "https://" not in stripped and "<script src" not in stripped \
        and "<link" not in stripped


def test_race_report_embeds_one_grid_per_rule_and_settings(tmp_path):
    configs = [dict(rule="sgd", lr=0.02), dict(rule="momentum", lr=0.02, momentum=0.9),
               dict(rule="nesterov", lr=0.02, momentum=0.9), dict(rule="adam", lr=0.05), dict(rule="aggmo")]
    result = inertia.race("marble", configs, steps=50)
    page = write_race_report(tmp_path / "r.html", result, slider_grids(result))
    html = page.read_text()
    assert _offline(html)
    data = _embedded(html, "race-data")
    runs, grids = data["runs"], data["grids"]
    assert len(runs) == 5 and len(runs[0]["path"]) == 51
    assert runs[0]["sliders"]["grid"] == runs[1]["sliders"]["grid"]   # sgd and momentum: one rule, one grid
    assert len(grids) == 3 and "several momenta" in runs[4]["note"] and "sliders" not in runs[4]
    nesterov, adam = grids[runs[2]["sliders"]["grid"]], grids[runs[3]["sliders"]["grid"]]
    assert 0.0 not in nesterov["momenta"] and nesterov["symbol"] == "μ"   # nesterov needs momentum > 0
    assert adam["symbol"] == "β₁" and 0.0 in adam["momenta"]
    for g in grids:
        assert len(g["cells"]) == len(g["lrs"]) * len(g["momenta"])
    # each run's sliders start on its own pair, whose stored path is the race's own
    for i, run in enumerate(runs[:4]):
        g, (li, mj) = grids[run["sliders"]["grid"]], run["sliders"]["start"]
        stored = np.array(g["cells"][li * len(g["momenta"]) + mj]["path"])
        assert stored == pytest.approx(result.positions[i, :, :2].numpy(), rel=1e-5, abs=1e-9)
    assert 'id="colour-bar"' in html and 'aria-label="colour: f(x, y)"' in html


def test_race_report_quadratic_theory_and_diverged_cells(tmp_path):
    q = inertia.surfaces.quadratic(100)
    configs = [dict(rule="momentum", lr=0.03, momentum=0.5), dict(rule="nesterov", lr=0.01, momentum=0.5),
               dict(rule="momentum", lr=0.01, momentum=0.5, convention="ema")]
    result = inertia.race(q, configs, steps=40)
    sliders = slider_grids(result)
    html = write_race_report(tmp_path / "q.html", result, sliders).read_text()
    data = _embedded(html, "race-data")
    heavy, nesterov, ema = (data["grids"][run["sliders"]["grid"]] for run in data["runs"])
    assert (heavy["theory"], nesterov["theory"], ema["theory"]) == ("heavy_ball", "nesterov", None)
    lam_max = max(q.eigenvalues.tolist())
    for g, grid, is_nesterov in ((heavy, sliders[0], False), (nesterov, sliders[1], True)):
        for k, cell in enumerate(g["cells"]):   # the exact grid values: the stored ones have 6 digits
            lr, mu = grid.extra["lrs"][k // len(g["momenta"])], grid.extra["momenta"][k % len(g["momenta"])]
            assert cell["rate"] == pytest.approx(q.rate(lr, mu, nesterov=is_nesterov), rel=1e-5)
            if not is_nesterov:   # Polyak: heavy ball is stable iff lr·λ_max < 2 + 2μ
                assert cell["stable"] == (lr * lam_max < 2 + 2 * mu)
    diverged = [c for c in heavy["cells"] if c["diverged"] > 0]
    assert diverged and not any(c["stable"] for c in diverged)
    assert "rate" not in ema["cells"][0]
    assert data["surface"]["optimal"] == pytest.approx(list(q.optimal("momentum")), rel=1e-5)  # stored to 6 digits
    assert 'aria-label="colour: f (log scale)"' in html


def test_race_report_needs_2d_and_one_slider_entry_per_configuration(tmp_path):
    result = inertia.race(inertia.surfaces.quadratic(dim=3), [dict(rule="sgd", lr=0.01)], steps=3)
    with pytest.raises(ValueError, match="2-D"):
        write_race_report(tmp_path / "x.html", result, [])
    result = inertia.race("marble", [dict(rule="sgd", lr=0.01)], steps=3)
    with pytest.raises(ValueError, match="sliders must have one entry per raced configuration"):
        write_race_report(tmp_path / "x.html", result, [])


def _record(lr, mu, status="ok", acc=0.5):
    return dict(lr=lr, momentum=mu, status=status, diverged_step=5 if status == "diverged" else None,
                val_loss_mean=1 - acc if status == "ok" else math.nan, val_loss_std=0.0,
                val_accuracy_mean=acc if status == "ok" else math.nan, val_accuracy_std=0.0,
                train_loss_final=0.1, train_loss_curve=[1.0, 0.5, 0.1])


def test_sweep_report_table_order_and_metric_direction(tmp_path):
    records = [_record(0.1, 0.9, acc=0.7), _record(0.1, 0.0, acc=0.9), _record(1.0, 0.9, "diverged"),
               _record(0.01, 0.0, "pruned")]
    html = write_sweep_report(tmp_path / "s.html", records).read_text()
    assert _offline(html) and html.count('class="cell"') == 4
    order = re.findall(r'<tr class="best-row" data-record="(\d+)">', html)
    assert order == ["1", "0"]  # highest accuracy first; diverged and pruned are not ranked
    html_loss = write_sweep_report(tmp_path / "l.html", records, metric="val_loss_mean").read_text()
    assert re.findall(r'<tr class="best-row" data-record="(\d+)">', html_loss) == ["1", "0"]  # lower loss first
    assert 'data-status="diverged"' in html and 'data-status="pruned"' in html and "×" in html


def test_sweep_report_with_one_swept_hyperparameter_and_nan_everywhere(tmp_path):
    records = [dict(lr=lr, status="diverged", diverged_step=3, val_accuracy_mean=math.nan,
                    train_loss_curve=[1.0, math.inf]) for lr in (0.1, 1.0)]
    html = write_sweep_report(tmp_path / "one.html", records, title="only lr").read_text()
    assert "only lr" in html and html.count('class="cell"') == 2
    data = _embedded(html, "sweep-data")
    assert data["records"][0]["train_loss_curve"] == [1.0, None]
    with pytest.raises(ValueError):
        write_sweep_report(tmp_path / "none.html", [])


def test_sweep_report_ignores_result_and_bookkeeping_fields_when_finding_the_axes(tmp_path):
    records = []
    for k, (lr, mu) in enumerate([(0.1, 0.0), (0.1, 0.9), (1.0, 0.0), (1.0, 0.9)]):
        r = _record(lr, mu, acc=0.5 + 0.1 * k)
        r.update(trial=k, worker=f"host:{k}", pruned_step=None, test_accuracy_mean=0.4 + 0.1 * k, test_loss_std=0.01 * k,
                 steps=100, weight_decay=0.0)
        records.append(r)
    from inertia.report.sweep import swept_keys

    assert swept_keys(records) == ["lr", "momentum"]
    html = write_sweep_report(tmp_path / "s.html", records).read_text()
    assert html.count('class="cell"') == 4 and "<th>test acc</th>" in html and "<th>worker</th>" not in html


def test_sweep_report_speaks_the_terminal_units_and_real_steps(tmp_path):
    records = [dict(_record(lr, mu, acc=0.595 + 0.1 * lr), steps=300, best_step=240, eval_steps=[100, 200, 300],
                    val_loss_mean_curve=[1.0, 0.8, 0.7]) for lr in (0.01, 0.1, 1.0) for mu in (0.0, 0.9)]
    html = write_sweep_report(tmp_path / "s.html", records, commands=[f"inertia train --lr {r['lr']}" for r in records])
    text = html.read_text()
    assert ">59.6</text>" in text and "<td>59.6%</td>" in text   # accuracy in %, as the terminal prints it
    assert "0.596" not in text.split('<script type="application/json"')[0]
    data = _embedded(text, "sweep-data")
    assert data["records"][0]["train_steps"] == [1, 151, 300]          # 3 points over 300 updates (the engine rounds 149.5 to 150)
    assert data["records"][0]["eval_steps"] == [100, 200, 300]
    assert data["commands"][2] == "inertia train --lr 0.1"
    assert text.count('class="iso"') >= 2                               # lr/(1−μ) lines on lr × momentum


def test_one_dimensional_and_regression_sweeps(tmp_path):
    one = [dict(lr=lr, status="ok", val_loss_mean=0.5 / lr, val_rmse_mean=0.7 / lr, test_rmse_mean=0.8 / lr,
                test_r2_mean=1 - 0.1 / lr, train_loss_curve=[1.0, 0.5]) for lr in (1.0, 2.0, 4.0)]
    text = write_sweep_report(tmp_path / "r.html", one, metric="val_loss_mean").read_text()
    table = text[text.index('<table id="best">'):text.index("</table>")]
    assert "None" not in text.split('<script type="application/json"')[0]
    assert "<th>val RMSE</th>" in table and "<th>test R²</th>" in table and "acc" not in table
    assert "<td>0.975</td>" in table                                   # R² of lr 4, three decimals
    assert 'class="iso"' not in text
