"""A sweep's results as data: a small best record, its curves apart, a DataFrame."""
from __future__ import annotations

import pytest

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
