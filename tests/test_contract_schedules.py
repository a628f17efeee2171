"""Contract, continued: a schedule can drive every numeric hyperparameter of every rule.

Runs over the same case table as test_contract.py. For each rule and each of its
numeric hyperparameters (tuple entries such as ``betas`` component by component):
``HyperScheduler`` with a linear schedule gives exactly the run in which the test
itself writes the linearly interpolated value into the param group before every
step, and that run differs from the unscheduled one (the value is really used).
Per-configuration [N] schedules equal N separate scalar-scheduled runs.
"""
from __future__ import annotations

import pytest
import torch

import inertia
from inertia.optim import make_optimizer
from inertia.schedules import HyperScheduler, linear
from test_contract import CASES, make_params, objective, rel_err

STEPS = 40


def _targets(case):
    """(case, hyper, name, component) for every numeric hyperparameter of the case's rule.

    Each name is driven in the first setting that gives it explicitly (where it matters,
    e.g. dampening only with momentum), else in the case's last setting.
    """
    preset = inertia.rules.get(case.preset)
    for name in preset.rule.numeric:
        hyper = next((h for h in case.settings if name in h), case.settings[-1])
        value = preset.hyper(**hyper)[name]
        components = range(len(value)) if isinstance(value, tuple) else [None]
        for component in components:
            yield pytest.param(case, hyper, name, component, id=f"{case.id}-{name}{'' if component is None else component}")


TARGETS = [target for case in CASES for target in _targets(case)]


def _endpoints(full: dict, name: str, component):
    start = full[name] if component is None else full[name][component]
    end = start * 0.5 if start else 0.05
    return float(start), float(end)


def _with(full: dict, name: str, component, value):
    if component is None:
        return value
    items = list(full[name])
    items[component] = value
    return tuple(items)


def _train(opt, params, before_step=None):
    for t in range(STEPS):
        if before_step:
            before_step(t)
        opt.zero_grad()
        sum(objective(p, i) for i, p in enumerate(params)).backward()
        opt.step()
        yield t


@pytest.mark.parametrize("case, hyper, name, component", TARGETS)
def test_a_schedule_drives_every_numeric_hyperparameter(case, hyper, name, component):
    preset = inertia.rules.get(case.preset)
    full = preset.hyper(**hyper)
    start, end = _endpoints(full, name, component)
    try:
        preset.rule.check({**preset.overrides, **hyper, name: _with(full, name, component, end)})
    except ValueError:
        pytest.skip(f"{name}={end} is not a valid value for this setting")

    scheduled = make_params(seed=5)
    opt = make_optimizer(case.preset, scheduled, **hyper)
    schedule = linear(start, end, STEPS)
    given = schedule if component is None else tuple(schedule if i == component else None for i in range(len(full[name])))
    sched = HyperScheduler(opt, **{name: given})
    for _ in _train(opt, scheduled):
        sched.step()

    by_hand = make_params(seed=5)
    ref = make_optimizer(case.preset, by_hand, **hyper)

    def write(t):  # the linear interpolation, written plainly
        value = start + (end - start) * min(t / STEPS, 1.0)
        for group in ref.param_groups:
            group[name] = _with(full, name, component, value)

    list(_train(ref, by_hand, write))
    for p, q in zip(scheduled, by_hand):
        assert rel_err(p.detach(), q.detach()) <= 1e-12

    fixed = make_params(seed=5)
    list(_train(make_optimizer(case.preset, fixed, **hyper), fixed))
    assert any(not torch.equal(p, q) for p, q in zip(scheduled, fixed)), f"scheduling {name} changed nothing"


PER_CONFIG = [pytest.param(case, id=case.id) for case in CASES]


@pytest.mark.parametrize("case", PER_CONFIG)
def test_per_configuration_schedules_equal_separate_runs(case):
    n, hyper = 3, case.settings[-1]
    full = inertia.rules.get(case.preset).hyper(**hyper)
    starts = torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64) * float(full["lr"])
    stacked = make_params(lead=(n,), seed=6)
    singles = [[p[i].detach().clone().requires_grad_() for p in stacked] for i in range(n)]

    opt = make_optimizer(case.preset, stacked, **hyper)
    sched = HyperScheduler(opt, lr=linear(starts, starts * 0.1, STEPS))
    for _ in _train(opt, stacked):
        sched.step()
    for i in range(n):
        single = make_optimizer(case.preset, singles[i], **hyper)
        single_sched = HyperScheduler(single, lr=linear(float(starts[i]), float(starts[i]) * 0.1, STEPS))
        for _ in _train(single, singles[i]):
            single_sched.step()
        for p, q in zip(stacked, singles[i]):
            assert rel_err(p[i].detach(), q.detach()) <= 1e-12


def test_a_momentum_schedule_may_start_at_zero():
    """Momentum scheduled up from 0 (warm-up of momentum) works for every rule that has one."""
    for name, preset in inertia.rules.PRESETS.items():
        if "momentum" not in preset.rule.numeric or preset.defaults.get("nesterov"):
            continue
        try:
            preset.hyper(momentum=0.0)
        except ValueError:
            continue  # this rule needs momentum > 0 (e.g. Schedule-Free's interpolation)
        params = make_params(seed=7)
        opt = make_optimizer(name, params, momentum=0.0)
        sched = HyperScheduler(opt, momentum=linear(0.0, 0.5, 5))
        for _ in _train(opt, params):
            sched.step()
        assert all(torch.isfinite(p).all() for p in params), name
        assert opt.param_groups[0]["momentum"] == 0.5, name
