"""A sweep's results as data: a small best record, its curves apart, a DataFrame."""
from __future__ import annotations

import pytest
import torch

import inertia


@pytest.fixture(scope="module")
def results():
    return inertia.sweep("digits", "mlp", lr=[0.03, 0.3], momentum=[0.0, 0.9], steps=40, seeds=2, eval_every=10)


def test_best_is_a_small_record_that_prints_in_one_line(results):
    best = results.best
    assert not any(k.endswith("_curve") for k in best) and "eval_steps" not in best
    text = repr(best)
    assert len(text) < 300 and "\n" not in text
    assert f"lr={best['lr']:.4g}" in text and "val_accuracy_mean=" in text
    ranked = results.ranked()[0]
    assert all(best[k] == ranked[k] for k in best)


def test_curves_come_separately(results):
    curves = results.curves()
    assert curves["eval_steps"] == [10, 20, 30, 40]
    row = results.ranked()[0]
    assert curves["val_loss_mean"] == row["val_loss_mean_curve"]
    other = results.records()[0]
    assert results.curves(other)["train_loss"] == other["train_loss_curve"]


def test_dataframe_has_one_row_per_configuration(results):
    pandas = pytest.importorskip("pandas")
    frame = results.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 4
    assert list(frame.columns[:2]) == ["lr", "momentum"]
    assert not any(c.endswith("_curve") for c in frame.columns)
    best = frame.sort_values("val_accuracy_mean", ascending=False).iloc[0]
    assert best["val_accuracy_mean"] == results.best["val_accuracy_mean"]


def test_table_prints_itself_and_report_and_save_write_the_clis_files(results, tmp_path):
    text = str(results.table(top=3))
    assert "best of 4 configurations" in text and "val acc %" in text and "\n" in text and "Table object" not in text
    assert len([line for line in text.splitlines() if line.startswith("│")]) == 3
    page = results.report(tmp_path / "r.html", inertia.train_command).read_text()
    assert "inertia train --data digits --model mlp" in page      # the chosen cell's reproduce command
    names = sorted(p.name for p in results.save(tmp_path / "out"))
    assert names == ["heatmap.png", "report.html", "results.csv", "results.json"]


def test_out_writes_the_same_files_as_the_command_line(tmp_path):
    inertia.sweep("digits", "mlp", lr=[0.05, 0.1], momentum=[0.0, 0.9], steps=10, seeds=1, out=tmp_path)
    assert {"sweep.db", "results.csv", "results.json", "heatmap.png", "report.html"} <= {p.name for p in tmp_path.iterdir()}


def test_a_run_no_command_line_can_name_is_reproduced_by_a_python_snippet():
    import torch
    from torch import nn

    x, y = torch.randn(200, 5), torch.randint(0, 3, (200,))
    data = (x, y)

    def model():
        return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))

    res = inertia.sweep(data, model, lr=[0.1], momentum=[0.0, 0.9], steps=20, seeds=1, schedules={"lr": "cosine"})
    snippet = inertia.train_command(res)
    assert snippet.startswith("import inertia") and "inertia.fit(data, model," in snippet
    scope = {"data": data, "model": model}
    exec(snippet, scope)
    assert scope["result"].record()["val_loss_mean"] == pytest.approx(res.best["val_loss_mean"], rel=1e-5)


def test_a_regression_table_names_rmse_and_r2_even_when_every_configuration_diverged():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = (x.sum(1) * 100).round()   # integer-valued targets, a regression by the loss
    results = inertia.sweep((x, y), "mlp", loss="mse", lr=[1e4], momentum=[0.9], steps=5, batch_size=10, seeds=1)
    assert results.counts()["ok"] == 0
    text = str(results.table())
    assert "RMSE" in text and "R²" in text and "acc %" not in text
