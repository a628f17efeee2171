"""The sweep's pictures: readable numbers on any cell, one unit, the best cell framed, iso-line labels clear
of the numbers, an honest colour bar, and a curve for a sweep of one hyperparameter."""
from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle

from inertia.outputs import write_outputs
from inertia.plots.sweep import heatmap
from inertia.sweeps.results import SweepResults

LRS = list(np.logspace(-3, 0, 8))
MOMENTA = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
META = dict(optimizer="momentum", data="digits_images.npz", model="examples.digits_cnn:DigitsCNN", steps=300,
            batch_size=100, folds=1, seeds=3)


def _accuracy(lr, mu):
    return 0.1 + 0.55 * math.exp(-math.log10(lr / (1 - mu)) ** 2)


def _grid(metric="val_accuracy", extra=None):
    rows = []
    for lr in LRS:
        for mu in MOMENTA:
            for value in (extra or [None]):
                diverged = lr / (1 - mu) > 80
                acc = _accuracy(lr, mu) - (0.01 if value else 0.0)
                loss = 2.5 - 2 * acc + (30.0 if lr / (1 - mu) > 20 else 0.0)
                row = dict(lr=float(lr), momentum=mu, status="diverged" if diverged else "ok", trial=len(rows),
                           val_accuracy_mean=math.nan if diverged else acc, val_accuracy_std=0.01,
                           val_loss_mean=math.nan if diverged else loss, val_loss_std=0.01)
                if extra:
                    row["weight_decay"] = value
                rows.append(row)
    swept = ["lr", "momentum"] + (["weight_decay"] if extra else [])
    space = dict(lr=LRS, momentum=MOMENTA, **({"weight_decay": extra} if extra else {}))
    return SweepResults(rows, swept, metric, dict(META, space=space))


def _luminance(colour):
    c = np.array(to_rgb(colour))
    linear = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def _contrast(a, b):
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _cell_texts(ax):
    from matplotlib.text import Annotation

    return [t for t in ax.texts if not isinstance(t, Annotation) and t.get_text().replace(".", "").isdigit()]


def test_every_cell_number_contrasts_with_its_cell_and_is_in_percent():
    results = _grid()
    fig = heatmap(results)
    ax = fig.axes[0]
    mesh = ax.collections[0]
    texts = _cell_texts(ax)
    ok = [r for r in results.records() if r["status"] == "ok"]
    assert len(texts) == len(ok)
    for r in ok:
        text = next(t for t in texts if t.get_position() == pytest.approx((r["lr"], 1 - r["momentum"])))
        assert text.get_text() == f"{r['val_accuracy_mean'] * 100:.0f}"
        cell = mesh.cmap(mesh.norm(r["val_accuracy_mean"]))
        assert _contrast(text.get_color(), cell) >= 4.5, (text.get_text(), text.get_color())
        assert text.get_fontsize() >= 8
    bar = fig.axes[-1]
    assert "%" in bar.get_ylabel()
    fig.canvas.draw()
    ticks = [float(t.get_text()) for t in bar.get_yticklabels() if t.get_text()]
    assert ticks and all(10 <= v <= 70 for v in ticks)   # the bar in % like the cells, not fractions


def test_the_best_cell_is_framed_and_keeps_its_number():
    results = _grid()
    best = results.best
    fig = heatmap(results)
    ax = fig.axes[0]
    frames = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_label().startswith("best")]
    assert len(frames) == 1 and not frames[0].get_fill()
    x, y = frames[0].get_xy()
    assert x < best["lr"] < x + frames[0].get_width() and y < 1 - best["momentum"] < y + frames[0].get_height()
    assert any(t.get_text() == f"{best['val_accuracy_mean'] * 100:.0f}" and
               t.get_position() == pytest.approx((best["lr"], 1 - best["momentum"])) for t in ax.texts)


def test_iso_line_labels_do_not_overlap_cell_numbers():
    fig = heatmap(_grid())
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    numbers = [t.get_window_extent(renderer) for t in _cell_texts(ax)]
    labels = [a for a in ax.texts if a not in _cell_texts(ax) and a.get_text() not in ("×", "pruned")]
    assert {a.get_text() for a in labels} >= {"0.01", "0.1", "1", "10", "100"}
    for label in labels:
        box = label.get_window_extent(renderer)
        assert not any(box.overlaps(n) for n in numbers), label.get_text()


def test_the_title_is_whole_and_a_third_swept_hyperparameter_is_named(tmp_path):
    fig = heatmap(_grid(extra=[0.0, 1e-4]))
    title = fig.axes[0].get_title()
    assert title.startswith("momentum on digits_images.npz / examples.digits_cnn:DigitsCNN")
    assert "best over weight_decay ∈ {0, 0.0001}" in title
    assert all(len(line) <= 80 for line in title.splitlines())
    heatmap(_grid(), tmp_path / "h.png")
    from PIL import Image

    with Image.open(tmp_path / "h.png") as im:      # saved with the whole title: its top rows are not blank
        top = np.asarray(im.convert("L"))[:40]
    assert (top < 128).any()


def test_a_clipped_colour_scale_says_so():
    fig = heatmap(_grid(metric="val_loss"))
    bar = fig.axes[-1]
    mesh = fig.axes[0].collections[0]
    finite = [r["val_loss_mean"] for r in _grid().records() if r["status"] == "ok"]
    assert max(finite) > mesh.norm.vmax                  # some cells are beyond the scale ...
    assert mesh.colorbar.extend == "max" and "above" in bar.get_ylabel()   # ... and the bar says so
    assert heatmap(_grid()).axes[0].collections[0].colorbar.extend == "neither"


def _one_dimensional():
    rows = []
    for i, lr in enumerate(LRS):
        diverged = lr > 0.5
        rows.append(dict(lr=float(lr), status="diverged" if diverged else "ok", trial=i,
                         val_accuracy_mean=math.nan if diverged else 0.3 + 0.3 * math.exp(-(math.log10(lr) + 1.5) ** 2),
                         val_accuracy_std=0.02 + 0.05 * lr, val_loss_mean=1.0, val_loss_std=0.1))
    return SweepResults(rows, ["lr"], "val_accuracy", dict(META, optimizer="adam", space=dict(lr=LRS)))


def test_a_sweep_of_lr_alone_is_a_curve_with_a_band_over_seeds(tmp_path):
    results = _one_dimensional()
    fig = heatmap(results)
    ax = fig.axes[0]
    ok = [r for r in results.records() if r["status"] == "ok"]
    line = next(li for li in ax.get_lines() if len(li.get_xdata()) == len(ok))
    assert list(line.get_xdata()) == pytest.approx([r["lr"] for r in ok])
    assert list(line.get_ydata()) == pytest.approx([100 * r["val_accuracy_mean"] for r in ok])
    band = ax.collections[0].get_paths()[0].vertices
    top = max(100 * (r["val_accuracy_mean"] + r["val_accuracy_std"]) for r in ok)
    bottom = min(100 * (r["val_accuracy_mean"] - r["val_accuracy_std"]) for r in ok)
    assert band[:, 1].max() == pytest.approx(top) and band[:, 1].min() == pytest.approx(bottom)
    assert ax.get_xscale() == "log" and "%" in ax.get_ylabel()
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "diverged" in legend and "std over seeds" in legend and "best" in legend
    written = write_outputs(results, tmp_path)
    assert tmp_path / "curve.png" in written and (tmp_path / "curve.png").stat().st_size > 10_000


def test_a_lone_configuration_draws_without_warnings_and_its_colour_bar_has_one_tick(recwarn):
    record = {"lr": 0.01, "momentum": 0.9, "status": "ok", "val_accuracy_mean": 0.14, "best_step": 5}
    fig = heatmap(SweepResults([record], ["lr", "momentum"], metric="val_accuracy", meta={"steps": 5}))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    bar = fig.axes[-1]
    assert [t.get_text() for t in bar.get_yticklabels()] == ["14"]
    assert "1 config," in fig.axes[0].get_title()
