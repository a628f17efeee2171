"""HyperScheduler as a torch LRScheduler; torch's own schedulers on per-configuration (tensor [n]) lr.

References: n separate runs of torch.optim.SGD, each with torch's scheduler on plain numbers.
"""
from __future__ import annotations

import io

import pytest
import torch
from torch.optim import lr_scheduler as L

import inertia
from inertia import schedules as S
from inertia.stacked import mark

N, STEPS = 3, 15
LRS, MOMENTA = [0.05, 0.1, 0.2], [0.5, 0.8, 0.9]


def loss_of(w):
    return (w ** 2).sum() + (w ** 3).sum() * 0.1


def stacked_run(make_scheduler, lr=LRS, momentum=MOMENTA, steps=STEPS):
    """Per-configuration inertia.SGD over [N, 4] driven by ``make_scheduler``; returns the weights."""
    w, = mark([torch.nn.Parameter(torch.linspace(-1, 1, N * 4, dtype=torch.float64).view(N, 4))], N)
    opt = inertia.SGD([w], lr=torch.tensor(lr, dtype=torch.float64),
                      momentum=torch.tensor(momentum, dtype=torch.float64))
    scheduler = make_scheduler(opt)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(w).backward()
        opt.step()
        scheduler.step()
    return w.detach(), opt


def separate_runs(make_scheduler, steps=STEPS):
    """Member i alone: torch.optim.SGD with plain-number lr_i, momentum_i, and the scheduler for config i."""
    start = torch.linspace(-1, 1, N * 4, dtype=torch.float64).view(N, 4)
    out = []
    for i in range(N):
        w = torch.nn.Parameter(start[i].clone())
        opt = torch.optim.SGD([w], lr=LRS[i], momentum=MOMENTA[i])
        scheduler = make_scheduler(opt, i)
        for _ in range(steps):
            opt.zero_grad()
            loss_of(w).backward()
            opt.step()
            scheduler.step()
        out.append(w.detach())
    return torch.stack(out)


def test_hyperscheduler_is_a_torch_lr_scheduler():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = S.HyperScheduler(opt, lr=S.cosine(0.1, 10), momentum=S.linear(0.5, 0.9, 10))
    assert isinstance(sched, L.LRScheduler) and sched.last_epoch == 0
    for t in range(1, 6):
        opt.step()
        sched.step()
        assert sched.last_epoch == sched.last_step == t
        assert sched.get_last_lr() == [pytest.approx(S.cosine(0.1, 10)(t))]
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.5 + 0.4 * 5 / 10)
    saved = sched.state_dict()
    fresh_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fresh = S.HyperScheduler(fresh_opt, lr=S.cosine(0.1, 10), momentum=S.linear(0.5, 0.9, 10))
    fresh.load_state_dict(saved)
    assert fresh.last_epoch == 5 and fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    fresh.load_state_dict({"last_step": 2, "names": ["lr", "momentum"]})  # the state saved before
    assert fresh.get_last_lr() == [pytest.approx(S.cosine(0.1, 10)(2))]


def test_hyperscheduler_keeps_n_values_when_a_schedule_gives_one():
    w, opt = stacked_run(lambda o: S.HyperScheduler(o, momentum=S.constant(0.7)), steps=1)
    assert opt.param_groups[0]["momentum"].shape == (N,)
    assert torch.equal(opt.param_groups[0]["momentum"], torch.full((N,), 0.7, dtype=torch.float64))


def test_cosine_annealing_on_per_configuration_lr_keeps_one_value_per_configuration():
    ours, opt = stacked_run(lambda o: L.CosineAnnealingLR(o, T_max=20, eta_min=0.001))
    reference = separate_runs(lambda o, i: L.CosineAnnealingLR(o, T_max=20, eta_min=0.001))
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-14)
    expected = [S.cosine(lr, 20, end=0.001)(STEPS) for lr in LRS]
    torch.testing.assert_close(opt.param_groups[0]["lr"], torch.tensor(expected, dtype=torch.float64))


def test_step_and_lambda_schedulers_keep_one_value_per_configuration():
    ours, _ = stacked_run(lambda o: L.StepLR(o, step_size=4, gamma=0.5))
    torch.testing.assert_close(ours, separate_runs(lambda o, i: L.StepLR(o, step_size=4, gamma=0.5)),
                               rtol=1e-12, atol=1e-14)


def test_one_cycle_with_one_max_lr_for_n_configurations_is_refused():
    with pytest.raises(ValueError, match="HyperScheduler") as info:
        stacked_run(lambda o: L.OneCycleLR(o, max_lr=0.5, total_steps=20))
    assert "one value per configuration" in str(info.value) and "\n" not in str(info.value)


def test_one_cycle_that_would_replace_per_configuration_momentum_is_refused():
    with pytest.raises(ValueError, match="momentum.*HyperScheduler") as info:
        stacked_run(lambda o: L.OneCycleLR(o, max_lr=torch.tensor(LRS, dtype=torch.float64), total_steps=20))
    assert "\n" not in str(info.value)


def test_one_cycle_with_per_configuration_values_keeps_them():
    def ours(o):
        t = lambda v: torch.tensor(v, dtype=torch.float64)
        return L.OneCycleLR(o, max_lr=t(LRS), total_steps=20, max_momentum=t(MOMENTA),
                            base_momentum=t([m - 0.1 for m in MOMENTA]))

    def theirs(o, i):
        return L.OneCycleLR(o, max_lr=LRS[i], total_steps=20, max_momentum=MOMENTA[i],
                            base_momentum=MOMENTA[i] - 0.1)

    w, _ = stacked_run(ours)
    torch.testing.assert_close(w, separate_runs(theirs), rtol=1e-12, atol=1e-14)


def test_reduce_on_plateau_on_per_configuration_lr_is_refused_in_one_line():
    w, = mark([torch.nn.Parameter(torch.zeros(N, 2))], N)
    opt = inertia.SGD([w], lr=torch.tensor(LRS), momentum=0.9)
    plateau = L.ReduceLROnPlateau(opt, patience=1)
    with pytest.raises(ValueError, match="ReduceLROnPlateau.*HyperScheduler") as info:
        for _ in range(4):
            plateau.step(1.0)  # no improvement: reduces after patience
    assert "\n" not in str(info.value)


def test_guarded_state_saves_as_plain_tensors_and_loads_guarded():
    _, opt = stacked_run(lambda o: L.StepLR(o, step_size=4), steps=2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert type(state["param_groups"][0]["lr"]) is torch.Tensor
    _, other = stacked_run(lambda o: L.StepLR(o, step_size=4), steps=0)
    other.load_state_dict(state)
    assert isinstance(other.param_groups[0]["lr"], S.PerConfiguration)
    torch.testing.assert_close(other.param_groups[0]["lr"], opt.param_groups[0]["lr"])
