"""The basin map: the whole (lr, momentum) grid raced at once, checked against single races and the theory."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import inertia
from inertia import surfaces
from inertia.basins import DIVERGED, UNSETTLED, basin_map
from inertia.cli import main
from inertia.plots.basins import plot_basin_map

LRS = [0.001, 0.02, 0.2, 1.0]
MOMENTA = [0.0, 0.5, 0.9]
STEPS = 300


@pytest.fixture(scope="module")
def marble_map():
    return basin_map("marble", LRS, MOMENTA, steps=STEPS)


def _single(surface, lr, mu, steps):
    """Where one separately raced marble ends: (outcome, steps to settle), computed plainly."""
    result = inertia.race(surface, [dict(rule="momentum", lr=lr, momentum=mu)], steps=steps)
    if int(result.diverged_step[0]) >= 0:
        return DIVERGED, int(result.diverged_step[0])
    path = result.positions[0]
    tol = 0.01 * max(hi - lo for lo, hi in surface.bounds)
    dists = [float(torch.linalg.vector_norm(path[-1] - m)) for m in surface.minima]
    k = int(np.argmin(dists))
    if dists[k] > tol:
        return UNSETTLED, steps
    to_k = [float(torch.linalg.vector_norm(p - surface.minima[k])) for p in path]
    settle = 0
    for t, d in enumerate(to_k):
        if d > tol:
            settle = t + 1
    return k, settle


@pytest.mark.parametrize("lr, mu", [(0.02, 0.0), (0.02, 0.9), (0.2, 0.5), (0.001, 0.0), (1.0, 0.9)])
def test_the_map_agrees_with_single_races(marble_map, lr, mu):
    expected = _single(surfaces.marble(), lr, mu, STEPS)
    cell = marble_map.cell(lr, mu)
    assert (cell["outcome"], cell["settle_step"]) == expected


def test_the_marble_story(marble_map):
    """Too little momentum stays in the shallow dip, enough rolls into the deep one."""
    assert marble_map.cell(0.02, 0.0)["outcome"] == 1     # the local minimum (minima[1])
    assert marble_map.cell(0.02, 0.9)["outcome"] == 0     # the global one
    assert marble_map.cell(0.001, 0.0)["outcome"] == UNSETTLED


KAPPA = 100.0


@pytest.fixture(scope="module")
def quadratic_map():
    q = surfaces.quadratic(KAPPA)
    momenta = [0.0, 0.5, 0.9]
    edges = [(2 + 2 * mu) / KAPPA for mu in momenta]
    lrs = sorted({round(e * f, 8) for e in edges for f in (0.9, 1.1)} | {0.005})
    return basin_map(q, lrs, momenta, steps=600)


def test_the_quadratic_edge_is_lr_lambda_max_equal_2_plus_2mu(quadratic_map):
    mus = torch.tensor([0.0, 0.3, 0.9])
    assert quadratic_map.edge_lr(mus).tolist() == pytest.approx([(2 + 2 * m) / KAPPA for m in mus.tolist()])
    for i, lr in enumerate(quadratic_map.lrs):
        for j, mu in enumerate(quadratic_map.momenta):
            beyond = lr * KAPPA > 2 + 2 * mu
            outcome = int(quadratic_map.outcome[i, j])
            assert (outcome == DIVERGED) == beyond, (lr, mu)
            if not beyond:
                assert float(quadratic_map.rate[i, j]) < 1


def test_the_measured_rate_follows_the_theory(quadratic_map):
    """Polyak's rate: the largest root modulus of z² − (1 + μ − γλ)z + μ over the eigenvalues."""
    q = quadratic_map.surface
    lr, mu = 0.005, 0.5
    roots = [abs(np.roots([1, -(1 + mu - lr * lam), mu])).max() for lam in q.eigenvalues.tolist()]
    assert quadratic_map.cell(lr, mu)["rate"] == pytest.approx(max(roots), rel=0.01)


def test_the_picture_draws_the_edge_and_the_basins(marble_map, quadratic_map, tmp_path):
    fig = plot_basin_map(quadratic_map)
    ax = fig.axes[0]
    line = next(li for li in ax.get_lines() if len(li.get_xdata()) > 10)
    assert np.allclose(line.get_xdata() * KAPPA, 2 + 2 * line.get_ydata())
    assert any("stability edge" in t.get_text() for t in ax.get_legend().get_texts())
    fig = plot_basin_map(marble_map)
    bars = [a.get_ylabel() for a in fig.axes[1:]]
    assert any("global minimum" in b for b in bars) and any("local minimum" in b for b in bars)
    assert "not settled" in " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert plot_basin_map(marble_map, tmp_path / "b.png").stat().st_size > 10_000


def test_race_map_option_writes_the_map_and_the_report_layer(tmp_path):
    out = tmp_path / "m"
    assert main(["race", "--surface", "marble", "--map", "lr=0.01:0.5:4", "--map", "momentum=0,0.9",
                 "--steps", "120", "--no-gif", "--out", str(out)]) == 0
    data = json.loads((out / "basins.json").read_text())
    assert data["momenta"] == [0.0, 0.9] and len(data["lrs"]) == 4 and len(data["outcome"]) == 4
    assert math.isclose(data["lrs"][1], 0.01 * 50 ** (1 / 3))
    assert (out / "basins.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert html.count('class="basin"') == 8 and 'id="basin-choice"' in html


@pytest.mark.parametrize("argv, words", [
    (["--map", "lr=0.01:1:4"], ["--map", "momentum is missing"]),
    (["--map", "beta=0:1:3", "--map", "lr=0.1"], ["--map", "beta=0:1:3"]),
    (["--map", "lr=x", "--map", "momentum=0"], ["--map lr"]),
    (["--optimizer", "adam:lr=0.01", "--map", "lr=0.1", "--map", "momentum=0"], ["--map", "adam has no momentum"]),
])
def test_bad_map_options_give_one_line_errors(argv, words, tmp_path, capsys):
    assert main(["race", "--steps", "5", "--no-gif", "--no-report", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
