"""HyperScheduler as a torch LRScheduler; torch's own schedulers on per-configuration (tensor [n]) lr.

References: n separate runs of torch.optim.SGD, each with torch's scheduler on plain numbers.
"""
from __future__ import annotations

import io
import math

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


# ---------------------------------------------------------------- every written value is checked

def _nan_from_step_2(t):
    return math.nan if t >= 2 else 0.1


BAD_SCHEDULES = [  # (hyperparameter, schedule, the first step whose value is bad, that value)
    ("lr", S.linear(0.1, -0.3, 4), 2, -0.1),
    ("lr", S.exponential(0.1, gamma=-1), 1, -0.1),
    ("momentum", S.constant(1.5), 0, 1.5),
    ("lr", _nan_from_step_2, 2, math.nan),
]


def _plain_sgd_weights(name, schedule, steps):
    """torch.optim.SGD, the schedule's values written into its group by hand, for ``steps`` steps."""
    w = torch.nn.Parameter(torch.linspace(-1, 1, 4, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.5)
    for t in range(steps):
        opt.param_groups[0][name] = schedule(t)
        opt.zero_grad()
        loss_of(w).backward()
        opt.step()
    return w.detach()


@pytest.mark.parametrize("make", [torch.optim.SGD, inertia.SGD], ids=["torch.optim.SGD", "inertia.SGD"])
@pytest.mark.parametrize("name,schedule,bad_step,bad_value", BAD_SCHEDULES,
                         ids=["lr to -0.3", "exponential(gamma=-1)", "momentum 1.5", "NaN lr"])
def test_a_bad_scheduled_value_is_an_error_before_the_weights_use_it(make, name, schedule, bad_step, bad_value):
    w = torch.nn.Parameter(torch.linspace(-1, 1, 4, dtype=torch.float64))
    opt = make([w], lr=0.1, momentum=0.5)
    with pytest.raises(ValueError) as info:
        scheduler = S.HyperScheduler(opt, **{name: schedule})
        for _ in range(5):
            opt.zero_grad()
            loss_of(w).backward()
            opt.step()
            scheduler.step()
    message = str(info.value)
    assert "\n" not in message
    assert f"{name}={S.as_schedule(schedule)!r} at step {bad_step} gives {name}={bad_value!r}" in message
    assert f"{name} must be" in message
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.detach(), _plain_sgd_weights(name, schedule, bad_step), rtol=0, atol=0)
    assert opt.param_groups[0][name] == (schedule(bad_step - 1) if bad_step else 0.5)


@pytest.mark.parametrize("make", [torch.optim.Adam, inertia.Adam], ids=["torch.optim.Adam", "inertia.Adam"])
def test_a_scheduled_beta_outside_0_1_is_an_error_naming_the_component(make):
    opt = make([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=r"betas=\(constant\(value=1\.2\), None\) at step 0 gives "
                                         r"betas=\(1\.2, 0\.999\) .*betas\[0\] must be in \[0, 1\)"):
        S.HyperScheduler(opt, betas=(S.constant(1.2), None))
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_a_rules_own_range_is_the_one_checked():
    """Schedule-Free SGD's momentum must be in (0, 1): a demon decay to 0 is refused at its end, not before."""
    opt = inertia.ScheduleFreeSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    scheduler = S.HyperScheduler(opt, momentum=S.demon(0.9, 3))
    scheduler.step()
    scheduler.step()
    with pytest.raises(ValueError, match=r"momentum=demon\(.*\) at step 3 gives momentum=0\.0 .*in \(0, 1\)"):
        scheduler.step()


def test_a_bad_value_of_one_configuration_is_an_error_naming_it():
    start = torch.linspace(-1, 1, N * 4, dtype=torch.float64).view(N, 4)
    w, = mark([torch.nn.Parameter(start.clone())], N)
    opt = inertia.SGD([w], lr=torch.tensor(LRS, dtype=torch.float64), momentum=0.5)
    ends = torch.tensor([0.05, -0.1, 0.2], dtype=torch.float64)  # configuration 1: 0.1, 0, -0.1
    scheduler = S.HyperScheduler(opt, lr=S.linear(torch.tensor(LRS, dtype=torch.float64), ends, 2))
    with pytest.raises(ValueError, match=r"at step 2 gives lr=tensor\(\[0\.05, -0\.1.*configuration 1"):
        for _ in range(3):
            opt.zero_grad()
            loss_of(w).backward()
            opt.step()
            scheduler.step()
    for i in range(N):  # two steps taken, each configuration as torch.optim.SGD alone
        alone = _plain_member(start[i], [LRS[i], (LRS[i] + float(ends[i])) / 2], momentum=0.5)
        torch.testing.assert_close(w.detach()[i], alone, rtol=1e-12, atol=1e-14)


def _plain_member(start, lrs, momentum):
    w = torch.nn.Parameter(start.clone())
    opt = torch.optim.SGD([w], lr=lrs[0], momentum=momentum)
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        loss_of(w).backward()
        opt.step()
    return w.detach()


def test_a_nan_in_one_configurations_momentum_never_reaches_the_weights():
    w, = mark([torch.nn.Parameter(torch.ones(N, 4, dtype=torch.float64))], N)
    opt = inertia.SGD([w], lr=0.1, momentum=torch.tensor(MOMENTA, dtype=torch.float64))
    scheduler = S.HyperScheduler(opt, momentum=lambda t: torch.tensor([0.5, math.nan if t else 0.5, 0.5]))
    opt.zero_grad()
    loss_of(w).backward()
    opt.step()
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got nan \(configuration 1\)"):
        scheduler.step()
    assert scheduler.last_epoch == 0  # the step whose values the optimizer holds
    for _ in range(2):  # the last good values stay in the optimizer
        opt.zero_grad()
        loss_of(w).backward()
        opt.step()
    assert torch.isfinite(w).all()
    torch.testing.assert_close(opt.param_groups[0]["momentum"], torch.full((N,), 0.5, dtype=torch.float64))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_checking_python_numbers_beside_a_cuda_tensor_does_not_synchronize():
    w, = mark([torch.nn.Parameter(torch.ones(N, 4, device="cuda"))], N)
    opt = inertia.SGD([w], lr=torch.tensor(LRS, device="cuda"), momentum=0.5)
    scheduler = S.HyperScheduler(opt, momentum=S.linear(0.5, 0.9, 10))  # copies lr to the host once
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            scheduler.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.62)
