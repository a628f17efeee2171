"""Heavy ball's stability edge on a sweep (``edge=True``): λ_max measured at initialization on the sweep's
own models and data, the line lr = (2 + 2μ)/λ_max on the heatmap and in the report, and its bad input."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inertia
from inertia.cli import main
from inertia.outputs import write_report
from inertia.plots.sweep import heatmap
from inertia.sweeps.results import SweepResults

LRS = list(np.logspace(-3, 0, 7))
MOMENTA = [0.0, 0.5, 0.9, 0.99]


def _results(sharpness: float, convention: str = "torch") -> SweepResults:
    rows = [dict(lr=float(lr), momentum=mu, status="ok", trial=i * len(MOMENTA) + j, val_accuracy_mean=0.5,
                 val_accuracy_std=0.01, val_loss_mean=1.0) for i, lr in enumerate(LRS) for j, mu in enumerate(MOMENTA)]
    edge = dict(sharpness=sharpness, sharpness_per_seed=[sharpness], convention=convention, nesterov=False,
                dampening=0.0)
    meta = dict(optimizer="momentum", data="digits", model="mlp", steps=10, space=dict(lr=LRS, momentum=MOMENTA))
    return SweepResults(rows, ["lr", "momentum"], "val_accuracy", meta, edge)


@pytest.mark.parametrize("convention, scale", [("torch", lambda mu: 1.0), ("ema", lambda mu: 1 / (1 - mu))])
def test_the_heatmap_draws_the_edge_at_2_plus_2mu_over_lambda(convention, scale):
    fig = heatmap(_results(20.0, convention))
    ax = fig.axes[0]
    [line] = [ln for ln in ax.get_lines() if "λ_max" in ln.get_label()]
    x, y = (np.asarray(v, dtype=float) for v in line.get_data())
    mu = 1 - y[y <= 1]
    np.testing.assert_allclose(x[y <= 1], [(2 + 2 * m) / 20.0 * scale(m) for m in mu], rtol=1e-12)
    assert y.min() <= 1 - MOMENTA[-1] and (y >= 1).any()                  # across every row of the grid
    np.testing.assert_allclose(x[y > 1], 2 / 20.0)                         # the μ = 0 row: lr < 2/λ
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("λ_max = 20" in t and convention in t for t in legend)


def test_an_edge_near_the_grid_widens_the_lr_axis_one_far_away_is_named_in_the_legend():
    ax = heatmap(_results(0.5)).axes[0]           # the edge at lr 4-8, beyond the grid's largest lr 1
    assert ax.get_xlim()[1] >= 1.1 * (2 + 2 * MOMENTA[-1]) / 0.5
    ax = heatmap(_results(1e-3)).axes[0]          # at lr 2000-4000: more than 1.5 decades beyond
    assert ax.get_xlim()[1] < 10
    assert any("off the plot, lr 2e+03–" in t.get_text() for t in ax.get_legend().get_texts())   # from 2/λ


def test_no_edge_no_line():
    results = _results(20.0)
    results.edge = None
    assert not [ln for ln in heatmap(results).axes[0].get_lines() if "λ_max" in ln.get_label()]


def test_the_report_draws_the_edge_in_each_rows_cells(tmp_path):
    """Each momentum's row has a vertical stroke at lr = (2 + 2μ)/λ, placed on the log-lr axis of the cells."""
    html = write_report(_results(4.0), tmp_path / "r.html").read_text()
    cells = re.findall(r'<g class="cell"[^>]*><rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"',
                       html)
    xs = sorted({float(c[0]) for c in cells})
    width, height = float(cells[0][2]), float(cells[0][3])
    centres = [x + width / 2 for x in xs]                              # columns: LRS, evenly spaced in log
    rows = sorted({float(c[1]) for c in cells})                        # top row: the largest momentum
    [edge] = re.findall(r'<g class="edge"><polyline points="([^"]+)"', html)
    points = [tuple(map(float, p.split(","))) for p in edge.split()]
    strokes = [(x0, (y0 + y1) / 2) for (x0, y0), (x1, y1) in zip(points, points[1:]) if x0 == x1 and y1 > y0]
    step = math.log10(LRS[1] / LRS[0])
    for top, mu in zip(rows, sorted(MOMENTA, reverse=True)):
        expected = centres[0] + (centres[1] - centres[0]) * math.log10((2 + 2 * mu) / 4.0 / LRS[0]) / step
        stroke = [x for x, mid in strokes if top < mid < top + height]
        assert stroke == [pytest.approx(expected, abs=0.06)], (mu, stroke, expected)
    assert "λ_max = 4 at initialization" in html and "beyond the largest lr" not in html
    far = write_report(_results(0.1), tmp_path / "far.html").read_text()     # the edge at lr 20-40: off the grid
    assert 'class="edge"' not in far and "beyond the largest lr swept for 4 of the 4 momenta" in far


def _linear(features: int, classes: int) -> nn.Module:
    return nn.Linear(features, classes)


def test_the_sweep_measures_lambda_max_of_each_seeds_initial_model_and_trains_the_same():
    """λ_max against the exact Hessian's top eigenvalue of each seed's initial model on the first 512
    training examples of its split (power iteration approaches it from below: here, where the top two
    eigenvalues lie 6 % apart, within 2 %); the trained numbers are those of the sweep without the edge."""
    from inertia.pipeline import make_folds

    settings = dict(lr=[0.05, 0.5], momentum=[0.0, 0.9], steps=15, seeds=2, seed=3, device="cpu")
    measured = inertia.sweep("digits", _linear, edge=True, **settings)
    plain = inertia.sweep("digits", _linear, **settings)
    data = inertia.data.as_dataset("digits", seed=3)
    for s, value in enumerate(measured.edge["sharpness_per_seed"]):
        torch.manual_seed(3 + s)
        model = _linear(data.features, 10)
        idx = make_folds(len(data.y_train), 1, 3 + s)[0][0][:512]
        x, y = data.x_train[idx].double(), data.y_train[idx]
        w, b = model.weight.detach().double(), model.bias.detach().double()

        def loss(flat):
            return F.cross_entropy(x @ flat[:w.numel()].view_as(w).T + flat[w.numel():], y)

        exact = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, torch.cat([w.flatten(), b])))[-1])
        assert 0.98 * exact < value <= exact * (1 + 1e-5)   # a Rayleigh quotient; the probe's 30 power steps
    assert measured.edge["sharpness"] == pytest.approx(float(np.median(measured.edge["sharpness_per_seed"])))
    assert measured.edge["convention"] == "torch" and measured.edge["nesterov"] is False
    assert measured.stable_lr(0.9) == pytest.approx(3.8 / measured.edge["sharpness"])
    assert plain.edge is None and plain.stable_lr(0.9) is None
    key = lambda r: (r["lr"], r["momentum"])
    assert [(key(r), r["val_loss_mean"]) for r in sorted(measured.records(), key=key)] == \
        [(key(r), r["val_loss_mean"]) for r in sorted(plain.records(), key=key)]


def test_cli_edge_writes_it_into_results_heatmap_and_report(tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", "--data", "digits", "--model", "linear", "--lr", "0.01,0.1", "--momentum", "0,0.9",
                 "--steps", "5", "--seeds", "1", "--out", str(out), "--edge", "--quiet", "--device", "cpu"]) == 0
    written = json.loads((out / "results.json").read_text())
    assert written["edge"]["sharpness"] > 0 and written["meta"]["edge"] is True
    assert 'class="edge-legend"' in (out / "report.html").read_text()


def test_bad_edge_input_is_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="edge must be True or False, got 'yes'"):
        inertia.sweep("digits", "linear", lr=[0.1], momentum=[0.9], steps=2, edge="yes")
    out = tmp_path / "adam"
    assert main(["sweep", "--data", "digits", "--model", "linear", "--optimizer", "adam", "--lr", "0.01",
                 "--steps", "2", "--out", str(out), "--edge", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "edge:" in error and "adam" in error
    assert not (out / "sweep.db").exists()                     # refused before the study was made


def _edge_line(fig) -> tuple[np.ndarray, np.ndarray]:
    [line] = [ln for ln in fig.axes[0].get_lines() if "λ_max" in ln.get_label()]
    x, y = (np.asarray(v, dtype=float) for v in line.get_data())
    return x, y


KEPT = dict(lr=[0.03, 0.3], momentum=[0.0, 0.9], steps=6, batch_size=32, seeds=2, seed=1, device="cpu")


def test_a_study_keeps_its_edge_for_every_later_run(tmp_path, monkeypatch, capsys):
    """Measured by a run that was interrupted, the edge is the study's (its user attribute, as plain Optuna
    reads it): the resumed run without edge trains the rest and draws it, and a rerun with --edge shows it
    without measuring it again, saying so in one line."""
    import optuna

    from inertia.sweeps.edge import SharpnessProbe

    measured = inertia.sweep("digits", "mlp", edge=True, **KEPT).edge      # the same sweep, in memory
    out = tmp_path / "sweep"

    def interrupt(done, total):
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        inertia.sweep("digits", "mlp", edge=True, out=out, progress=interrupt, **KEPT)
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'sweep.db'}")
    assert not study.trials or all(t.state != optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.user_attrs["stability_edge"] == measured

    def measure_again(self):
        raise AssertionError("λ_max measured again")

    monkeypatch.setattr(SharpnessProbe, "init", measure_again)
    resumed = inertia.sweep("digits", "mlp", out=out, **KEPT)              # edge=False: trains the rest
    assert len(resumed) == 4 and resumed.edge == measured
    x, y = _edge_line(heatmap(resumed))
    np.testing.assert_allclose(x[y <= 1], (2 + 2 * (1 - y[y <= 1])) / measured["sharpness"], rtol=1e-6)
    assert json.loads((out / "results.json").read_text())["edge"] == measured
    assert 'class="edge-legend"' in (out / "report.html").read_text()

    assert main(["sweep", "--data", "digits", "--model", "mlp", "--lr", "0.03,0.3", "--momentum", "0,0.9",
                 "--steps", "6", "--batch-size", "32", "--seeds", "2", "--seed", "1", "--device", "cpu",
                 "--out", str(out), "--edge", "--quiet"]) == 0                # nothing left to train: a re-read
    said = [line for line in capsys.readouterr().out.splitlines() if "λ_max" in line]
    assert len(said) == 1 and "not measured again" in said[0]
    assert json.loads((out / "results.json").read_text())["edge"] == measured


def _lr_sweep(sharpness: float, convention: str = "torch", **meta) -> SweepResults:
    rows = [dict(lr=float(lr), status="ok", trial=i, val_accuracy_mean=0.5 + 0.01 * i, val_accuracy_std=0.01,
                 val_loss_mean=1.0) for i, lr in enumerate(LRS)]
    edge = dict(sharpness=sharpness, sharpness_per_seed=[sharpness], convention=convention, nesterov=False,
                dampening=0.0)
    meta = {**dict(optimizer="momentum", data="digits", model="mlp", steps=10, space=dict(lr=LRS)), **meta}
    return SweepResults(rows, ["lr"], "val_accuracy", meta, edge)


@pytest.mark.parametrize("meta, momentum, scale", [
    (dict(fixed=dict(momentum=0.8)), 0.8, lambda mu: 1.0),
    (dict(fixed=dict(momentum=0.8, convention="ema")), 0.8, lambda mu: 1 / (1 - mu)),
    (dict(), 0.9, lambda mu: 1.0),                                        # the rule's default momentum
    (dict(optimizer="sgd"), 0.0, lambda mu: 1.0)])                         # no momentum: lr < 2/λ
def test_the_curve_of_an_lr_sweep_at_one_momentum_draws_the_edge_at_2_plus_2mu_over_lambda(meta, momentum, scale):
    convention = (meta.get("fixed") or {}).get("convention", "torch")
    ax = heatmap(_lr_sweep(4.0, convention, **meta)).axes[0]             # one swept hyperparameter: the curve
    x, _ = _edge_line(ax.figure)
    np.testing.assert_allclose(x, (2 + 2 * momentum) / 4.0 * scale(momentum), rtol=1e-12)
    assert ax.get_xlim()[0] <= x[0] <= ax.get_xlim()[1]                   # the axis widened to it (lr ≤ 1 swept)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("λ_max = 4 " in t and f"μ = {momentum:g}" in t for t in legend)


def test_the_curve_has_no_edge_where_momentum_is_scheduled_or_unmeasured_and_names_one_far_away():
    lines = lambda results: [ln for ln in heatmap(results).axes[0].get_lines() if "λ_max" in ln.get_label()]
    assert not lines(_lr_sweep(4.0, fixed=dict(momentum=0.9), schedules=dict(momentum="sutskever_ramp(0.99)")))
    unmeasured = _lr_sweep(4.0)
    unmeasured.edge = None
    assert not lines(unmeasured)
    ax = heatmap(_lr_sweep(1e-4, fixed=dict(momentum=0.5))).axes[0]      # lr 3e4: four decades beyond 1
    assert ax.get_xlim()[1] < 10 and any("(off the plot)" in t.get_text() for t in ax.get_legend().get_texts())


def test_a_sweep_of_lr_at_a_fixed_momentum_draws_its_measured_edge_on_the_curve(tmp_path):
    results = inertia.sweep("digits", "mlp", lr=[0.01, 0.1, 1.0], momentum=None, fixed=dict(momentum=0.5),
                            steps=5, batch_size=32, seeds=1, device="cpu", edge=True, out=tmp_path / "lr")
    x, _ = _edge_line(heatmap(results))
    np.testing.assert_allclose(x, 3.0 / results.edge["sharpness"], rtol=1e-12)
    assert (tmp_path / "lr" / "curve.png").exists()


def test_the_command_line_sweeps_lr_at_one_momentum_as_a_curve_with_its_edge(tmp_path, capsys):
    """``--momentum 0.8`` beside several learning rates: the grid's momentum does not vary, so the picture is
    the curve over lr, its title names the momentum, the edge is drawn at lr = (2 + 2·0.8)/λ_max, and the
    printed command carries the momentum."""
    out = tmp_path / "lr"
    args = ["sweep", "--data", "digits", "--lr", "0.01,0.1", "--momentum", "0.8", "--steps", "5", "--batch-size", "32",
            "--seeds", "1", "--out", str(out), "--edge", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (out / "curve.png").exists() and not (out / "heatmap.png").exists()
    assert "--momentum 0.8 " in printed
    results = inertia.sweep("digits", "mlp", lr=[0.01, 0.1], momentum=0.8, steps=5, batch_size=32, seeds=1,
                            device="cpu", out=out)                          # the same study, read again
    assert results.swept == ["lr", "momentum"] and results.varied == ["lr"] and results.fixed_momentum() == 0.8
    figure = heatmap(results)
    assert "momentum = 0.8" in figure.axes[0].get_title().splitlines()[0]
    x, _ = _edge_line(figure)
    np.testing.assert_allclose(x, 3.6 / results.edge["sharpness"], rtol=1e-12)


def test_one_learning_rate_and_several_momenta_draw_the_curve_over_momentum():
    rows = [dict(lr=0.1, momentum=m, status="ok", trial=i, val_accuracy_mean=0.5 + 0.1 * i, val_accuracy_std=0.0,
                 val_loss_mean=1.0) for i, m in enumerate([0.0, 0.5, 0.9])]
    results = SweepResults(rows, ["lr", "momentum"], "val_accuracy", dict(optimizer="momentum", data="digits",
                                                                          model="mlp", steps=10))
    ax = heatmap(results).axes[0]
    assert ax.get_xlabel() == "momentum" and "lr = 0.1" in ax.get_title().splitlines()[0]
    assert results.fixed_momentum() is None
