"""The race engine: N configurations of any rule at once, through the rules' own update."""
from __future__ import annotations


import pytest
import torch

import inertia
from inertia import rules, surfaces
from inertia.races import race, race_grid


def _alone(surface, config, steps, dtype=torch.float64):
    return race(surface, [config], steps=steps, dtype=dtype)


CONFIGS = [
    dict(rule="sgd", lr=0.002),
    dict(rule="momentum", lr=0.001, momentum=0.9),
    dict(rule="nesterov", lr=0.001, momentum=0.8),
    dict(rule="momentum", lr=0.001, momentum=0.9, convention="sutskever"),
    dict(rule="adam", lr=0.01),
    dict(rule="adam", lr=0.02, betas=(0.8, 0.99)),
    dict(rule="adamw", lr=0.01, weight_decay=0.1),
    dict(rule="rmsprop", lr=0.001),
    dict(rule="qhm", lr=0.002),
    dict(rule="aggmo", lr=0.0005),
]


def test_n_configurations_at_once_equal_n_separate_runs():
    s = surfaces.rosenbrock()
    available = [c for c in CONFIGS if c["rule"] in rules.PRESETS]
    together = race(s, available, steps=60)
    assert together.positions.shape == (len(available), 61, 2) and together.losses.shape == (len(available), 61)
    for i, config in enumerate(available):
        alone = _alone(s, config, 60)
        torch.testing.assert_close(together.positions[i], alone.positions[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(together.losses[i], alone.losses[0], rtol=1e-12, atol=1e-12)


def test_race_matches_torch_optim_sgd_independently():
    s = surfaces.rosenbrock()
    configs = [dict(rule="momentum", lr=1e-3, momentum=0.9), dict(rule="nesterov", lr=1e-3, momentum=0.9),
               dict(rule="sgd", lr=1e-3)]
    result = race(s, configs, steps=80)
    for i, (mu, nesterov) in enumerate([(0.9, False), (0.9, True), (0.0, False)]):
        p = s.start.clone().requires_grad_(True)
        opt = torch.optim.SGD([p], lr=1e-3, momentum=mu, nesterov=nesterov)
        path = [p.detach().clone()]
        for _ in range(80):
            opt.zero_grad()
            x, y = p[0], p[1]
            ((1 - x) ** 2 + 100 * (y - x * x) ** 2).backward()
            opt.step()
            path.append(p.detach().clone())
        torch.testing.assert_close(result.positions[i], torch.stack(path), rtol=1e-10, atol=1e-12)


def test_a_schedule_drives_a_hyperparameter_like_changing_lr_in_torch_optim():
    s = surfaces.quadratic(condition=10)
    lr_at = lambda t: 0.05 * 0.97 ** t  # noqa: E731  (a step -> value schedule)
    result = race(s, [dict(rule="momentum", lr=lr_at, momentum=0.8), dict(rule="momentum", lr=0.05, momentum=0.8)],
                  steps=40)
    p = s.start.clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=lr_at(0), momentum=0.8)
    A = s.A
    for t in range(40):
        opt.param_groups[0]["lr"] = lr_at(t)
        opt.zero_grad()
        (0.5 * p @ A @ p).backward()
        opt.step()
    torch.testing.assert_close(result.positions[0, -1], p.detach(), rtol=1e-10, atol=1e-12)
    assert not torch.equal(result.positions[0, -1], result.positions[1, -1])


def test_schedules_module_objects_work_as_schedules():
    ramp = getattr(inertia.schedules, "sutskever_ramp", None)
    if ramp is None:
        pytest.skip("inertia.schedules has no sutskever_ramp")
    result = race("marble", [dict(rule="momentum", lr=0.02, momentum=ramp(0.99))], steps=30)
    assert torch.isfinite(result.positions).all()


def test_diverged_configurations_are_recorded_and_stopped():
    s = surfaces.rosenbrock()
    result = race(s, [dict(rule="sgd", lr=1e-3), dict(rule="sgd", lr=0.5), dict(rule="momentum", lr=0.1)], steps=100)
    d = result.diverged_step
    assert int(d[0]) == -1 and int(d[1]) > 0 and int(d[2]) > 0
    assert result.diverged.tolist() == [False, True, True]
    k = int(d[1])
    assert torch.isfinite(result.positions[1, :k]).all()
    assert torch.isnan(result.positions[1, k:]).all() and torch.isnan(result.losses[1, k:]).all()
    assert torch.isfinite(result.losses[0]).all()
    # the survivor is unaffected by its diverging neighbours
    torch.testing.assert_close(result.positions[0], _alone(s, dict(rule="sgd", lr=1e-3), 100).positions[0])
    assert torch.isfinite(result.final).all()


def test_float32_and_per_configuration_starts():
    s = surfaces.himmelblau()
    starts = torch.tensor([[0.0, 0.0], [-1.0, 1.0], [1.0, -3.0]])
    result = race(s, [dict(rule="momentum", lr=0.005, momentum=0.9)] * 3, steps=400, start=starts, dtype=torch.float32)
    assert result.positions.dtype == torch.float32
    torch.testing.assert_close(result.positions[:, 0], starts)
    ends = {s.nearest_minimum(p)[0] for p in result.final}
    assert len(ends) >= 2  # different starts, different minima of Himmelblau
    assert all(s.nearest_minimum(p)[1] < 1e-2 for p in result.final)


def test_default_start_is_the_surfaces_own():
    s = surfaces.marble()
    result = race(s, [dict(rule="sgd", lr=0.02)], steps=3)
    assert torch.equal(result.positions[0, 0], s.start)
    assert result.labels == ["sgd lr=0.02"]


def test_user_function_surface():
    def bowl(p):  # one point -> scalar
        return (p[0] - 1) ** 2 + 3 * (p[1] + 2) ** 2

    s = surfaces.from_function(bowl, start=(0.0, 0.0), batched=False, minima=[(1.0, -2.0)])
    result = race(s, [dict(rule="momentum", lr=0.05, momentum=0.5)], steps=200)
    torch.testing.assert_close(result.final[0], torch.tensor([1.0, -2.0], dtype=torch.float64), atol=1e-8, rtol=0)


def test_race_on_a_plain_callable_batched_or_not():
    batched = race(lambda p: ((p - 1.0) ** 2).sum(-1), [dict(rule="momentum", lr=0.1, momentum=0.5)], steps=150,
                   start=(3.0, -2.0))
    single = race(lambda p: ((p - 1.0) ** 2).sum(), [dict(rule="momentum", lr=0.1, momentum=0.5)], steps=150,
                  start=(3.0, -2.0))
    torch.testing.assert_close(batched.positions, single.positions)
    torch.testing.assert_close(batched.final[0], torch.ones(2, dtype=torch.float64), atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="start"):
        race(lambda p: (p * p).sum(-1), [dict(rule="sgd", lr=0.1)], steps=3)


def test_race_grid_order():
    g = race_grid("marble", "momentum", [0.01, 0.02], [0.0, 0.9], steps=5)
    assert [(c["lr"], c["momentum"]) for c in g.configs] == [(0.01, 0.0), (0.01, 0.9), (0.02, 0.0), (0.02, 0.9)]
    assert g.extra["lrs"] == [0.01, 0.02] and g.extra["momenta"] == [0.0, 0.9]


@pytest.mark.parametrize("config, error, words", [
    (dict(rule="no_such_rule", lr=0.1), ValueError, ["unknown optimizer", "momentum"]),
    (dict(rule="momentum", lr=0.1, bogus=1.0), TypeError, ["bogus", "configuration 0"]),
    (dict(rule="momentum", lr=0.1, momentum=1.5), ValueError, ["momentum", "1.5"]),
])
def test_bad_configurations_are_rejected_with_clear_messages(config, error, words):
    with pytest.raises(error) as info:
        race("marble", [config], steps=3)
    for word in words:
        assert word in str(info.value)


def test_bad_start_shape():
    with pytest.raises(ValueError, match="start"):
        race("marble", [dict(rule="sgd", lr=0.1)], steps=3, start=[1.0, 2.0, 3.0])
