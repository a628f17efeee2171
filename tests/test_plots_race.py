"""Race figures are written and carry what a reader needs (titles, labels, legend, colour bar, theory)."""
from __future__ import annotations

import pytest
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
