"""Race figures are written and carry what a reader needs (titles, labels, legend, colour bar, theory)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import inertia
from inertia import surfaces
from inertia.plots.race import animate, plot_contour, plot_losses, theory_curves


@pytest.fixture(scope="module")
def marble_race():
    return inertia.race("marble", [dict(rule="sgd", lr=0.02), dict(rule="momentum", lr=0.02, momentum=0.9),
                                   dict(rule="sgd", lr=5.0)], steps=80)


def test_contour_figure_has_title_labels_legend_and_colorbar(marble_race, tmp_path):
    fig = plot_contour(marble_race)
    ax = fig.axes[0]
    assert "marble" in ax.get_title() and "80 steps" in ax.get_title()
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "sgd lr=0.02" in legend and any("diverged at step" in t for t in legend)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel()  # the colour bar, labelled
    path = plot_contour(marble_race, tmp_path / "race.png")
    with Image.open(path) as im:
        assert im.size[0] > 600 and im.size[1] > 400


def test_loss_plot_is_log_scale_with_theory_lines_on_quadratics(tmp_path):
    q = surfaces.quadratic(100)
    lr, mu = q.optimal("momentum")
    result = inertia.race(q, [dict(rule="momentum", lr=lr, momentum=mu), dict(rule="sgd", lr=2 / 101)], steps=60)
    theory = theory_curves(result)
    assert theory[0][0] == pytest.approx(9 / 11) and theory[1][0] == pytest.approx(99 / 101)
    fig = plot_losses(result)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("theory" in t and "0.818" in t for t in labels)
    assert plot_losses(result, tmp_path / "loss.png").stat().st_size > 10_000
    assert theory_curves(inertia.race("marble", [dict(rule="sgd", lr=0.02)], steps=5)) == {}


def test_animation_is_a_gif_with_frames(marble_race, tmp_path):
    path = animate(marble_race, tmp_path / "race.gif", frames=6, fps=6)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames >= 6


def test_the_view_holds_every_path_and_the_legend_sits_outside_it():
    """On kappa = 100 heavy ball at the theory's best pair swings beyond the bowl's plotting bounds."""
    q = surfaces.quadratic(100)
    lr, mu = q.optimal("momentum")
    result = inertia.race(q, [dict(rule="sgd", lr=2 / 101), dict(rule="momentum", lr=lr, momentum=mu)], steps=200)
    (x0, x1), (y0, y1) = q.bounds
    p = result.positions.reshape(-1, 2).numpy()
    assert p[:, 1].max() > y1            # the path does leave the surface's own bounds
    fig = plot_contour(result)
    ax = fig.axes[0]
    (vx0, vx1), (vy0, vy1) = ax.get_xlim(), ax.get_ylim()
    assert vx0 <= p[:, 0].min() and p[:, 0].max() <= vx1 and vy0 <= p[:, 1].min() and p[:, 1].max() <= vy1
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_a_diverging_path_does_not_shrink_the_picture(marble_race):
    far = marble_race.positions[2, :, 0]
    assert float(far[torch.isfinite(far)].abs().max()) > 1e3   # sgd at lr 5 runs far away before it is stopped
    x0, x1 = plot_contour(marble_race).axes[0].get_xlim()
    assert x1 - x0 <= 3 * 9.0 * 1.1     # at most 3 widths of the marble's bounds (9), plus the margin


def test_each_configuration_has_its_own_colour_and_marker(marble_race):
    ax = plot_contour(marble_race).axes[0]
    paths = [line for line in ax.get_lines() if line.get_label() in marble_race.labels
             or "diverged" in line.get_label()]
    ends = [line for line in ax.get_lines() if line.get_marker() not in ("None", "", "*") and len(line.get_xdata()) == 1
            and line.get_label().startswith("_")]
    assert len({line.get_color() for line in paths}) == 3
    assert len({line.get_marker() for line in ends}) == 3


def _pixels_near(frame, colour, width=0.8, tolerance=40):
    """Pixels of ``colour`` in the top three quarters of the picture and its left ``width`` (the marble
    surface's start is in the left third; the legend is below, the colour bar right)."""
    rgb = np.asarray(frame.convert("RGB")).astype(int)
    rgb = rgb[: int(0.75 * rgb.shape[0]), : int(width * rgb.shape[1])]
    target = np.array([int(colour[k:k + 2], 16) for k in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(-1) < tolerance).sum())


def test_every_marble_shows_in_the_first_frame_and_leaves_a_trail(tmp_path):
    from inertia.plots import color

    result = inertia.race("marble", [dict(rule="sgd", lr=0.02), dict(rule="momentum", lr=0.02, momentum=0.9),
                                     dict(rule="nesterov", lr=0.02, momentum=0.9)], steps=120)
    path = animate(result, tmp_path / "race.gif", frames=8, fps=4)
    with Image.open(path) as im:
        first = im.copy()
        im.seek(im.n_frames - 1)
        last = im.copy()
    for i in range(3):
        at_start = _pixels_near(first, color(i), width=0.3)
        assert at_start > 20, (i, at_start)                          # its marble is visible at the start
        seen_first, seen_last = _pixels_near(first, color(i)), _pixels_near(last, color(i))
        assert seen_last > seen_first + 100, (i, seen_first, seen_last)  # and it leaves a trail
