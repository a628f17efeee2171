"""The HTML reports without a browser: self-contained, data embedded, edge cases."""
from __future__ import annotations

import json
import math
import re

import pytest

import inertia
from inertia.commands.race import slider_grid
from inertia.races import race_grid
from inertia.report import write_race_report, write_sweep_report


def _embedded(html: str, element_id: str):
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def _offline(html: str) -> bool:
    stripped = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    return "http://" not in stripped and "https://" not in stripped and "<script src" not in stripped \
        and "<link" not in stripped


def test_race_report_embeds_the_precomputed_grid(tmp_path):
    result = inertia.race("marble", [dict(rule="sgd", lr=0.02), dict(rule="nesterov", lr=0.02, momentum=0.9)], steps=50)
    page = write_race_report(tmp_path / "r.html", result, slider_grid(result))
    html = page.read_text()
    assert _offline(html)
    data = _embedded(html, "race-data")
    assert data["rule"] == "nesterov" and 0.0 not in data["momenta"]  # nesterov needs momentum > 0
    assert 0.02 in data["lrs"] and 0.9 in data["momenta"]
    assert len(data["cells"]) == len(data["lrs"]) * len(data["momenta"])
    assert len(data["runs"]) == 2 and len(data["runs"][0]["path"]) == 51
    # the stored path for (0.02, 0.9) is exactly what the race engine computes
    k = data["lrs"].index(0.02) * len(data["momenta"]) + data["momenta"].index(0.9)
    assert data["cells"][k]["path"][-1] == pytest.approx(result.positions[1, -1].tolist(), rel=1e-5)


def test_race_report_quadratic_theory_and_diverged_cells(tmp_path):
    q = inertia.surfaces.quadratic(100)
    result = inertia.race(q, [dict(rule="momentum", lr=0.03, momentum=0.5)], steps=40)
    grid = race_grid(q, "momentum", [0.01, 0.05], [0.0, 0.9], steps=40)
    data = _embedded(write_race_report(tmp_path / "q.html", result, grid=grid).read_text(), "race-data")
    rates = [c["rate"] for c in data["cells"]]
    assert rates[0] == pytest.approx(q.rate(0.01, 0.0)) and data["cells"][0]["stable"] is True
    assert data["cells"][2]["stable"] is False and data["cells"][2]["diverged"] > 0
    assert data["surface"]["optimal"] == pytest.approx(list(q.optimal("momentum")), rel=1e-5)  # stored to 6 digits


def test_race_report_needs_2d(tmp_path):
    result = inertia.race(inertia.surfaces.quadratic(dim=3), [dict(rule="sgd", lr=0.01)], steps=3)
    with pytest.raises(ValueError, match="2-D"):
        write_race_report(tmp_path / "x.html", result, grid=None)


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
