"""Each rule declares which hyperparameter is its momentum (Rule.momentum), and the race report's sliders
move the declared one: a rule registered by a user included."""
from __future__ import annotations

import pytest
import torch

import inertia
from inertia import rules
from inertia.race_sliders import SLIDER_MOMENTA, slider_grids
from inertia.report import write_race_report
from inertia.rules import MomentumHyper, Rule
from inertia.rules.base import in_unit_interval

# rule name -> (hyperparameter, tuple component, symbol), or words of why it has no single momentum:
# the table the race command kept before the rules declared it
EXPECTED = {
    "sgd": ("momentum", None, "μ"),
    "lookahead_sgd": ("momentum", None, "μ"),
    "qhm": ("momentum", None, "μ"),
    "rmsprop": ("momentum", None, "μ"),
    "schedulefree": ("momentum", None, "β"),
    "adam": ("betas", 0, "β₁"),
    "nadam": ("betas", 0, "β₁"),
    "lookahead_adam": ("betas", 0, "β₁"),
    "ademamix": ("betas", 0, "β₁"),
    "lion": ("betas", 1, "β₂"),
    "aggmo": "several momenta",
    "muon": "fallback",
}


def test_every_built_in_rule_declares_the_momentum_of_the_table():
    declared = {p.rule.name: p.rule.momentum for p in rules.PRESETS.values()}
    assert set(declared) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        momentum = declared[name]
        if isinstance(expected, str):
            assert isinstance(momentum, str) and expected in momentum, name
        else:
            assert isinstance(momentum, MomentumHyper), name
            assert (momentum.key, momentum.index, momentum.symbol) == expected, name
    assert "inside the sign" in declared["lion"].meaning   # Lion's β₁ only mixes m with the gradient


def heavy_ball_rho(param, grad, state, hyper):
    """v ← ρv + g, θ ← θ − γv (the torch form of heavy ball, its momentum named rho)."""
    buf = state.get("velocity")
    if buf is None:
        buf = state["velocity"] = torch.zeros_like(param)
    buf.mul_(hyper["rho"]).add_(grad)
    param.sub_(buf * hyper["lr"])


def check_rho(hyper):
    in_unit_interval("rho", hyper["rho"])


@pytest.fixture
def rho_rule():
    rule = Rule("rho_ball", {"lr": 0.01, "rho": 0.5}, ("lr", "rho"), heavy_ball_rho, check_rho,
                state={"velocity": "element"}, momentum=MomentumHyper("rho", symbol="ρ", meaning="velocity decay"))
    rules.register("rho_ball", rule, "heavy ball, its momentum named rho")
    try:
        yield rule
    finally:
        del rules.PRESETS["rho_ball"]


def plain_heavy_ball(surface, lr, rho, steps):
    """The points of v ← ρv + ∇f(θ), θ ← θ − γv from the surface's start, written out."""
    theta, v, points = surface.start.double().clone(), torch.zeros(surface.dim, dtype=torch.float64), []
    points.append(theta.clone())
    for _ in range(steps):
        v = rho * v + surface.gradient(theta[None])[0]
        theta = theta - lr * v
        points.append(theta.clone())
    return torch.stack(points)


def test_a_users_rule_gets_sliders_on_its_declared_momentum(rho_rule, tmp_path):
    result = inertia.race("marble", [dict(rule="rho_ball", lr=0.02, rho=0.85), dict(rule="rho_ball", lr=0.01)],
                          steps=40)
    grids = slider_grids(result)
    grid = grids[0]
    assert grids[1] is grid   # one rule, the same other settings: one grid
    assert grid.extra["knob"] == {"symbol": "ρ", "meaning": "velocity decay"}
    assert set(SLIDER_MOMENTA) | {0.85, 0.5} == set(grid.extra["momenta"])
    assert {c["rho"] for c in grid.configs} == set(grid.extra["momenta"])
    lrs, momenta = grid.extra["lrs"], grid.extra["momenta"]
    assert grid.extra["drives"] == {0: (lrs.index(0.02), momenta.index(0.85)), 1: (lrs.index(0.01), momenta.index(0.5))}
    for lr, rho in ((0.02, 0.85), (lrs[0], 0.3), (lrs[-1], 0.99)):
        cell = lrs.index(lr) * len(momenta) + momenta.index(rho)
        expected = plain_heavy_ball(result.surface, lr, rho, 40)
        finite = torch.isfinite(grid.positions[cell]).all(-1)
        assert torch.allclose(grid.positions[cell][finite], expected[finite], rtol=1e-9, atol=1e-12), (lr, rho)
    html = write_race_report(tmp_path / "r.html", result, grids).read_text()
    assert 'id="momentum-slider-0"' in html and "ρ (velocity decay)" in html


def test_a_rule_without_a_declaration_slides_its_numeric_momentum_or_says_it_has_none():
    with_momentum = Rule("plain_ball", {"lr": 0.01, "momentum": 0.5}, ("lr", "momentum"), heavy_ball_rho, check_rho)
    assert with_momentum.momentum == MomentumHyper("momentum", None, "μ", "momentum")
    rule = Rule("plain", {"lr": 0.1}, ("lr",), lambda p, g, s, h: p.sub_(g * h["lr"]), lambda h: None)
    assert rule.momentum is None
    rules.register("plain_descent", rule, "gradient descent")
    try:
        result = inertia.race("marble", [dict(rule="plain_descent", lr=0.02)], steps=5)
        assert slider_grids(result) == ["plain has no momentum hyperparameter to slide"]
    finally:
        del rules.PRESETS["plain_descent"]


@pytest.mark.parametrize("momentum, words", [
    (MomentumHyper("beta"), "names 'beta', which is not one of its numeric hyperparameters"),
    (MomentumHyper("rho", 0), "index 0 of 'rho', whose default 0.5 is not a tuple"),
    (MomentumHyper("betas"), "index None of 'betas', whose default (0.9, 0.99) is a tuple of 2"),
    (MomentumHyper("betas", 2), "index 2 of 'betas'"),
    ("", "must be a MomentumHyper, a sentence"),
])
def test_a_declared_momentum_that_is_not_a_numeric_hyperparameter_is_refused(momentum, words):
    defaults = {"lr": 0.01, "rho": 0.5, "betas": (0.9, 0.99), "beta": 0.9}
    with pytest.raises(ValueError, match="^mine: momentum") as error:
        Rule("mine", defaults, ("lr", "rho", "betas"), heavy_ball_rho, check_rho, momentum=momentum)
    assert words in str(error.value)
