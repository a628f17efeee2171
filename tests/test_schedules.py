"""Schedules against torch's lr_scheduler values and hand-computed numbers; HyperScheduler on any optimizer."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import inertia
from inertia import schedules as S
from inertia.stacked import mark


def torch_lrs(make_scheduler, steps, lr=1.0, momentum=0.0, **opt):
    """The lr (and momentum) torch's own scheduler writes for steps 0 .. steps-1."""
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=lr, momentum=momentum, **opt)
    scheduler = make_scheduler(optimizer)
    lrs, moms = [], []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        moms.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return lrs, moms


def values(schedule, steps):
    return [float(schedule(t)) for t in range(steps)]


def test_constant_and_step_decay_match_steplr():
    assert values(S.constant(0.3), 4) == [0.3] * 4
    expected, _ = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5), 40, lr=0.2)
    assert values(S.step_decay(0.2, step_size=7, gamma=0.5), 40) == pytest.approx(expected, rel=1e-12)
    # by hand
    s = S.step_decay(1.0, 3, 0.1)
    assert [s(t) for t in (0, 2, 3, 5, 6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_exponential_matches_exponentiallr():
    expected, _ = torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.97), 50, lr=0.1)
    assert values(S.exponential(0.1, 0.97), 50) == pytest.approx(expected, rel=1e-10)


def test_cosine_matches_cosineannealinglr_and_holds_end():
    expected, _ = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.01), 31, lr=0.5)
    s = S.cosine(0.5, 30, end=0.01)
    assert values(s, 31) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert s(0) == pytest.approx(0.5) and s(15) == pytest.approx(0.255) and s(30) == pytest.approx(0.01)
    assert s(100) == pytest.approx(0.01)


@pytest.mark.parametrize("t_0,t_mult", [(10, 1), (5, 2), (3, 3)])
def test_cosine_warm_restarts_match_torch(t_0, t_mult):
    expected, _ = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=t_mult, eta_min=0.001),
        80, lr=0.3,
    )
    assert values(S.cosine(0.3, t_0, end=0.001, restarts=True, mult=t_mult), 80) == pytest.approx(expected, rel=1e-9)


def test_linear_warmup_matches_linearlr():
    expected, _ = torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20), 30, lr=0.4
    )
    assert values(S.linear(0.04, 0.4, 20), 30) == pytest.approx(expected, rel=1e-9)


def test_join_warmup_then_cosine_counts_from_its_own_start():
    s = S.join(S.linear(0.0, 1.0, 10), S.cosine(1.0, 20), boundaries=[10])
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)  # cosine at its own step 0
    assert s(20) == pytest.approx(0.5)  # cosine half way: (1 + cos(pi/2))/2
    assert s(30) == pytest.approx(0.0)
    w = S.warmup_cosine(1.0, 10, 30)
    assert values(w, 40) == pytest.approx(values(s, 40))
    three = S.join(S.constant(1.0), S.constant(2.0), S.step_decay(3.0, 2, 0.5), boundaries=[2, 5])
    assert values(three, 9) == pytest.approx([1, 1, 2, 2, 2, 3, 3, 1.5, 1.5])


@pytest.mark.parametrize("total,pct,anneal,three", [(100, 0.3, "cos", False), (37, 0.25, "linear", False),
                                                     (90, 0.3, "cos", True)])
def test_one_cycle_matches_onecyclelr_lr_and_momentum(total, pct, anneal, three):
    lrs, moms = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.8, total_steps=total, pct_start=pct, anneal_strategy=anneal, three_phase=three
        ),
        total, lr=0.1, momentum=0.9,
    )
    lr = S.one_cycle(0.8, total, pct_start=pct, anneal=anneal, three_phase=three)
    mom = S.one_cycle_momentum(total, pct_start=pct, anneal=anneal, three_phase=three)
    assert values(lr, total) == pytest.approx(lrs, rel=1e-12)
    assert values(mom, total) == pytest.approx(moms, rel=1e-12)
    assert lr(total + 5) == pytest.approx(lrs[-1])  # held after the end


def test_one_cycle_default_numbers():
    lr, mom = S.one_cycle(1.0, 100), S.one_cycle_momentum(100)
    assert lr(0) == pytest.approx(1 / 25)
    assert lr(29) == pytest.approx(1.0)  # peak at pct_start * steps - 1
    assert lr(99) == pytest.approx(1 / 25 / 1e4)
    assert (mom(0), mom(29), mom(99)) == pytest.approx((0.95, 0.85, 0.95))


def test_sutskever_ramp_hand_values():
    s = S.sutskever_ramp(0.9)
    assert s(0) == 0.5 and s(249) == 0.5
    assert s(250) == pytest.approx(0.75)
    assert s(500) == pytest.approx(5 / 6)
    assert s(750) == pytest.approx(0.875)
    assert s(999) == pytest.approx(0.875)
    assert s(1000) == pytest.approx(0.9)
    assert s(10_000) == pytest.approx(0.9)
    assert S.sutskever_ramp(0.999)(10_000) == pytest.approx(1 - 1 / (2 * 41))


def test_demon_hand_values():
    s = S.demon(0.9, 100)
    assert s(0) == pytest.approx(0.9)
    # mu/(1-mu) decays linearly: 9 -> 4.5 at half way -> mu = 4.5/5.5
    assert s(50) == pytest.approx(4.5 / 5.5)
    assert s(75) == pytest.approx(2.25 / 3.25)
    assert s(100) == 0.0 and s(150) == 0.0
    assert S.demon(0.9, math.inf)(10**6) == pytest.approx(0.9)


def test_tensor_base_values_give_tensors():
    peak = torch.tensor([0.1, 0.2])
    out = S.cosine(peak=peak, steps=100)(50)
    assert isinstance(out, torch.Tensor) and out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([0.05, 0.1]))
    for schedule, scalar in [
        (S.step_decay(peak, 3, 0.5), S.step_decay(0.2, 3, 0.5)),
        (S.exponential(peak, 0.9), S.exponential(0.2, 0.9)),
        (S.linear(peak * 0, peak, 10), S.linear(0.0, 0.2, 10)),
        (S.one_cycle(peak, 50), S.one_cycle(0.2, 50)),
        (S.one_cycle_momentum(50, base=torch.tensor([0.8, 0.85])), S.one_cycle_momentum(50)),
        (S.sutskever_ramp(torch.tensor([0.6, 0.99])), S.sutskever_ramp(0.99)),
        (S.demon(torch.tensor([0.5, 0.9]), 40), S.demon(0.9, 40)),
    ]:
        for t in (0, 7, 20, 45):
            v = schedule(t)
            assert isinstance(v, torch.Tensor) and v.shape == (2,), schedule
            assert float(v[1]) == pytest.approx(float(scalar(t)), rel=1e-6), (schedule, t)
    assert float(S.sutskever_ramp(torch.tensor([0.6, 0.99]))(1000)[0]) == pytest.approx(0.6)


@pytest.mark.parametrize("make,arg", [
    (lambda: S.cosine(0.1, 0), "steps"),
    (lambda: S.cosine(0.1, -5), "steps"),
    (lambda: S.step_decay(0.1, 0), "step_size"),
    (lambda: S.linear(0, 1, 0), "steps"),
    (lambda: S.one_cycle(0.1, 0), "steps"),
    (lambda: S.one_cycle_momentum(-1), "steps"),
    (lambda: S.demon(0.9, 0), "steps"),
    (lambda: S.sutskever_ramp(0.9, every=0), "every"),
    (lambda: S.warmup_cosine(0.1, 0, 10), "warmup"),
    (lambda: S.join(S.constant(1), S.constant(2), boundaries=[0]), "boundaries"),
])
def test_non_positive_lengths_are_rejected_by_name(make, arg):
    with pytest.raises(ValueError) as info:
        make()
    assert arg in str(info.value)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="pct_start"):
        S.one_cycle(0.1, 100, pct_start=1.5)
    with pytest.raises(ValueError, match="peak"):
        S.cosine(float("nan"), 10)
    with pytest.raises(ValueError, match="momentum"):
        S.demon(1.0, 10)


def test_reprs_are_readable():
    assert repr(S.cosine(0.1, 100)) == "cosine(peak=0.1, steps=100, end=0.0)"
    assert "step_size=5" in repr(S.step_decay(0.1, 5))
    assert repr(S.join(S.linear(0, 1, 10), S.constant(1), boundaries=[10])).startswith("join(linear(")


# ---------------------------------------------------------------- HyperScheduler

def test_hyperscheduler_drives_lr_and_momentum_of_torch_sgd_like_torch_schedulers():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = S.HyperScheduler(optimizer, lr=S.one_cycle(0.5, 20), momentum=S.one_cycle_momentum(20))
    lrs, moms = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=20), 20,
                          lr=0.1, momentum=0.9)
    seen_lr, seen_mom = [], []
    for _ in range(20):
        seen_lr.append(optimizer.param_groups[0]["lr"])
        seen_mom.append(sched.get_last()["momentum"][0])
        optimizer.step()
        sched.step()
    assert seen_lr == pytest.approx(lrs, rel=1e-12)
    assert seen_mom == pytest.approx(moms, rel=1e-12)


def test_hyperscheduler_drives_adam_betas_component_and_per_group():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, betas=(0.9, 0.999))
    sched = S.HyperScheduler(
        optimizer,
        betas=(S.linear(0.5, 0.9, 4), None),
        lr=[S.constant(0.01), None],
        weight_decay=S.exponential(0.1, 0.5),
    )
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    assert optimizer.param_groups[1]["betas"] == (0.5, 0.999)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[1]["lr"] == 0.5
    sched.step()
    sched.step()
    assert optimizer.param_groups[1]["betas"] == pytest.approx((0.7, 0.999))
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.025)
    assert sched.get_last()["betas"][0] == pytest.approx((0.7, 0.999))


def test_hyperscheduler_unknown_name_and_bad_shapes():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="'betas'"):
        S.HyperScheduler(optimizer, betas=(S.constant(0.9), None))
    with pytest.raises(ValueError, match="'gamma'"):
        S.HyperScheduler(optimizer, gamma=S.constant(0.9))
    with pytest.raises(ValueError, match="per param group"):
        S.HyperScheduler(optimizer, lr=[S.constant(0.1), S.constant(0.2)])
    with pytest.raises(ValueError, match="tuple"):
        S.HyperScheduler(optimizer, lr=(S.constant(0.1),))


def test_hyperscheduler_per_configuration_tensors_on_rule_optimizer():
    torch.manual_seed(0)
    n = 3
    w, = mark([torch.nn.Parameter(torch.randn(n, 4, dtype=torch.float64))], n)
    peaks = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    optimizer = inertia.SGD([w], lr=peaks.clone(), momentum=torch.full((n,), 0.5, dtype=torch.float64))
    sched = S.HyperScheduler(optimizer, lr=S.cosine(peaks, 10), momentum=S.sutskever_ramp(0.9, every=2))
    # the same thing done separately per configuration with torch.optim.SGD and plain numbers
    refs = [torch.nn.Parameter(w.detach()[i].clone()) for i in range(n)]
    ref_opts = [torch.optim.SGD([r], lr=0.1, momentum=0.5) for r in refs]
    for t in range(12):
        loss = (w ** 2).sum() + w.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        for i, (r, o) in enumerate(zip(refs, ref_opts)):
            o.param_groups[0]["lr"] = float(S.cosine(float(peaks[i]), 10)(t))
            o.param_groups[0]["momentum"] = float(S.sutskever_ramp(0.9, every=2)(t))
            ((r ** 2).sum() + r.sum()).backward()
            o.step()
            o.zero_grad()
        sched.step()
    for i in range(n):
        torch.testing.assert_close(w.detach()[i], refs[i].detach(), rtol=1e-10, atol=1e-12)
    assert sched.get_last()["lr"][0].shape == (n,)


def test_hyperscheduler_state_dict_resumes_with_identical_values():
    def make():
        torch.manual_seed(1)
        model = torch.nn.Linear(4, 1)
        opt = inertia.Momentum(model.parameters(), lr=0.1)
        sched = S.HyperScheduler(opt, lr=S.warmup_cosine(0.2, 5, 30), momentum=S.demon(0.9, 30))
        return model, opt, sched

    x = torch.randn(16, 4)

    def train(model, opt, sched, steps):
        seen = []
        for _ in range(steps):
            seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        return seen

    model, opt, sched = make()
    straight = train(model, opt, sched, 20)
    final = copy.deepcopy(model.state_dict())

    model, opt, sched = make()
    first = train(model, opt, sched, 8)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
    model2, opt2, sched2 = make()  # fresh: its scheduler wrote step-0 values
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    with pytest.raises(ValueError, match="momentum"):
        S.HyperScheduler(make()[1], lr=S.constant(0.1)).load_state_dict(saved[2])
    rest = train(model2, opt2, sched2, 12)
    assert first + rest == straight
    for key, value in model2.state_dict().items():
        assert torch.equal(value, final[key])


@pytest.mark.parametrize("cls", [inertia.SGD, inertia.Momentum])
def test_torch_lr_schedulers_work_on_inertia_optimizers(cls):
    """StepLR and OneCycleLR (cycling momentum) give the same training as on torch.optim.SGD."""
    def run(make_opt, make_sched):
        torch.manual_seed(2)
        model = torch.nn.Linear(5, 3).double()
        opt = make_opt(model.parameters())
        scheds = make_sched(opt)
        x = torch.randn(20, 5, dtype=torch.float64)
        moms = []
        for _ in range(30):
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            for s in scheds:
                s.step()
            moms.append(opt.param_groups[0]["momentum"])
        return model.state_dict(), moms

    make_scheds = lambda o: [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.3, total_steps=40),
                             torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)]
    ours, our_moms = run(lambda p: cls(p, lr=0.1, momentum=0.9), make_scheds)
    ref, ref_moms = run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), make_scheds)
    assert our_moms == ref_moms and len(set(our_moms)) > 5
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- schedule specs

def test_a_spec_takes_the_hyperparameters_value_as_its_base_and_the_runs_length():
    from inertia.schedules import cosine, from_spec, sutskever_ramp, warmup_cosine

    base = torch.tensor([0.01, 0.1])
    built = from_spec("cosine", base=base, steps=100)
    for t in (0, 37, 100):
        assert torch.equal(built(t), cosine(base, 100)(t))
    assert from_spec("cosine(end=1e-3)", base=0.5, steps=10)(10) == pytest.approx(1e-3)
    assert from_spec("sutskever_ramp(every=10)", base=0.95)(1000) == sutskever_ramp(0.95, every=10)(1000)
    assert from_spec("warmup_cosine(warmup=4)", base=1.0, steps=40)(2) == warmup_cosine(1.0, 4, 40)(2)
    ready = cosine(0.3, 5)
    assert from_spec(ready, base=99.0, steps=7) is ready  # a finished schedule is used as is


@pytest.mark.parametrize("text,message", [
    ("nosuch", "unknown schedule 'nosuch'"),
    ("cosine(x=1)", "unexpected keyword argument 'x'"),
    ("cosine(", "is not a schedule like cosine"),
    ("__import__('os')", "unknown schedule '__import__'"),
    ("cosine(print(1))", "is not a schedule like cosine"),
])
def test_bad_specs_are_one_line_errors_naming_the_hyperparameter(text, message):
    from inertia.schedules import check_spec

    with pytest.raises(ValueError, match=message) as info:
        check_spec("lr", text)
    assert str(info.value).startswith(f"schedule lr={text}:") and "\n" not in str(info.value)
