"""``inertia race`` and ``inertia surfaces`` from the command line."""
from __future__ import annotations

import json

import pytest

from inertia.cli import main
from inertia.surfaces import SURFACES


def test_race_command_writes_every_picture_and_the_report(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["race", "--surface", "marble", "--optimizer", "sgd:lr=0.02",
                 "--optimizer", "momentum:lr=0.02,momentum=0.9", "--optimizer", "nesterov:lr=0.02,momentum=0.9",
                 "--steps", "150", "--frames", "5", "--out", str(out)])
    assert code == 0
    for name in ("race.png", "race.gif", "loss.png", "report.html", "race.json"):
        assert (out / name).stat().st_size > 500, name
    printed = capsys.readouterr().out
    assert "local minimum" in printed and "global minimum" in printed
    data = json.loads((out / "race.json").read_text())
    assert [c["rule"] for c in data["configs"]] == ["sgd", "momentum", "nesterov"]
    html = (out / "report.html").read_text()
    assert all(f'id="momentum-slider-{i}"' in html for i in range(3))
    assert "data:image/png;base64," in html and "<script src" not in html


def test_race_report_says_which_configurations_have_no_sliders(tmp_path):
    out = tmp_path / "out"
    assert main(["race", "--surface", "marble", "--optimizer", "adam:lr=0.05", "--optimizer", "aggmo:lr=0.02",
                 "--optimizer", "momentum:lr=0.02,momentum=sutskever_ramp(0.99,every=10)", "--steps", "30",
                 "--no-gif", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert 'id="lr-slider-0"' in html and 'id="lr-slider-1"' not in html and 'id="lr-slider-2"' not in html
    assert "no single momentum to slide" in html and "its momentum follows a schedule" in html


def test_race_on_a_quadratic_with_options(tmp_path):
    out = tmp_path / "q"
    assert main(["race", "--surface", "quadratic:condition=50,rotate=0.3", "--optimizer", "momentum:lr=0.03",
                 "--steps", "40", "--no-gif", "--no-report", "--start", "1,1", "--out", str(out)]) == 0
    assert (out / "race.png").exists() and not (out / "race.gif").exists()


@pytest.mark.parametrize("argv, words", [
    (["--surface", "nope"], ["unknown surface", "marble"]),
    (["--optimizer", "momentum:lr"], ["malformed", "momentum:lr"]),
    (["--optimizer", "momentum:lr=0.1,colour=3"], ["colour"]),
    (["--optimizer", "warp:lr=0.1"], ["unknown optimizer", "nesterov"]),
    (["--optimizer", "momentum:lr=0.1,momentum=2"], ["momentum", "2"]),
    (["--start", "1,2,3"], ["--start"]),
    (["--optimizer", "momentum:lr=0.02,momentum=warp(3)"], ["unknown schedule", "cosine"]),
    (["--optimizer", "momentum:lr=0.02,momentum=__import__('os')"], ["unknown schedule"]),
    (["--optimizer", "momentum:lr=0.02,momentum=cosine(x)"], ["is not a schedule like"]),
])
def test_bad_input_gives_a_clear_error(argv, words, tmp_path, capsys):
    code = main(["race", "--steps", "5", "--no-gif", "--no-report", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert "inertia race: error:" in err
    for word in words:
        assert word in err


def test_surfaces_command_lists_every_surface_and_its_parameters(capsys):
    assert main(["surfaces"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 * len(SURFACES)
    assert [line.split()[0] for line in lines[::2]] == list(SURFACES)
    listed = dict(zip(SURFACES, (line.split("parameters: ")[1] for line in lines[1::2])))
    assert listed["quadratic"].startswith("condition=100.0, dim=2, rotate=False, seed=0")
    assert listed["rosenbrock"] == "a=1.0, b=100.0" and listed["marble"] == "none"


def test_a_schedule_in_an_optimizer_spec(tmp_path):
    out = tmp_path / "s"
    assert main(["race", "--optimizer", "momentum:lr=cosine(0.03,40),momentum=sutskever_ramp(0.99,every=10)",
                 "--optimizer", "momentum:lr=0.03", "--steps", "40", "--no-gif", "--no-report", "--out", str(out)]) == 0
    data = json.loads((out / "race.json").read_text())
    assert "cosine" in data["labels"][0]
    assert data["summary"][0]["final"] != data["summary"][1]["final"]


def test_optimal_specs_take_the_quadratic_theory_exactly(tmp_path):
    """sgd:optimal / momentum:optimal on kappa=100 (eigenvalues 1..100) converge at 0.980 / 0.818."""
    import math

    from inertia.commands.race import parse_optimizer
    from inertia.surfaces import quadratic

    q = quadratic(condition=100)
    gd = parse_optimizer("sgd:optimal", q)
    hb = parse_optimizer("momentum:optimal", q)
    assert gd == {"rule": "sgd", "lr": pytest.approx(2 / (1 + 100))}
    assert hb["lr"] == pytest.approx((2 / (1 + 10)) ** 2) and hb["momentum"] == pytest.approx((9 / 11) ** 2)
    out = tmp_path / "q"
    assert main(["race", "--surface", "quadratic:condition=100", "--optimizer", "sgd:optimal",
                 "--optimizer", "momentum:optimal", "--steps", "150", "--out", str(out), "--no-gif", "--no-report"]) == 0
    assert (out / "loss.png").exists()
    with pytest.raises(ValueError, match="quadratic"):
        parse_optimizer("momentum:optimal", SURFACES["marble"]())
    with pytest.raises(ValueError, match="sgd, momentum"):
        parse_optimizer("adam:optimal", q)
    # the rate the race measures at the exact optimum (error ~ t * rho^t at the double root)
    from inertia.races import race

    result = race(q, [hb], steps=400)
    dist = result.positions[0, :, :].norm(dim=1)
    measured = float((dist[400] / dist[200]) ** (1 / 200))
    assert math.isclose(measured, 9 / 11, rel_tol=0.02)
