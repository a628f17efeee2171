"""Every execution path gives the same numbers as the simple per-tensor path (the reference).

The rule is written once; ``execution="flat"`` runs it once over flat buffers and
``execution="compiled"`` runs a ``torch.compile`` of it. These tests drive the same
run through ``"simple"`` and through each fast path and compare.
"""
from __future__ import annotations

import io
import warnings

import pytest
import torch

import inertia
from inertia.optim import make_optimizer

SHAPES = [(7,), (3, 5), (2, 3, 4), (11,)]

# (registered name, hyperparameters) covering every rule and its structural options
RUNS = [
    ("sgd", dict(lr=0.05)),
    ("momentum", dict(lr=0.05, weight_decay=0.01)),
    ("nesterov", dict(lr=0.05, dampening=0.0)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3, maximize=True)),
    ("sgd", dict(lr=0.05, momentum=0.9, convention="sutskever", nesterov=True)),
    ("sgd", dict(lr=0.2, momentum=0.9, convention="ema", decoupled_weight_decay=True, weight_decay=0.1)),
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    ("adamw", dict(lr=0.05)),
    ("nadam", dict(lr=0.05, weight_decay=0.05)),
    ("rmsprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ("rmsprop", dict(lr=0.01)),
    ("qhm", dict(lr=0.1)),
    ("aggmo", dict(lr=0.02)),
    ("schedulefree", dict(lr=0.1, warmup_steps=5)),
    ("lookahead", dict(lr=0.05, lookahead_k=3)),
    ("lookahead_adam", dict(lr=0.05)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(RUNS)]


def make_params(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_() for shape in SHAPES]


def loss_of(params):
    return sum((torch.cos(1.3 * p) + 0.5 * (p - 0.2 * i) ** 2).sum() for i, p in enumerate(params))


def run(opt, params, steps, start=0, set_to_none=True):
    for t in range(start, start + steps):
        if t == 10:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.3
        opt.zero_grad(set_to_none=set_to_none)
        loss_of(params).backward()
        opt.step()


def assert_same(a, b, rtol):
    for p, q in zip(a, b):
        assert torch.allclose(p.detach(), q.detach(), rtol=rtol, atol=rtol * 1e-3), float((p - q).abs().max())


@pytest.mark.parametrize("name, hyper", RUNS, ids=IDS)
def test_flat_path_equals_simple_path(name, hyper):
    simple, flat = make_params(), make_params()
    a = make_optimizer(name, simple, execution="simple", **hyper)
    b = make_optimizer(name, flat, execution="flat", **hyper)
    run(a, simple, 25)
    run(b, flat, 25)
    assert b._flat and not a._flat, "the flat path was not taken"
    assert_same(flat, simple, rtol=1e-13)
    for p, q in zip(flat, simple):  # state is per parameter, with the same names and values
        assert set(b.state[p]) == set(a.state[q])
        for key in a.state[q]:
            assert torch.allclose(b.state[p][key].double(), a.state[q][key].double(), rtol=1e-13, atol=1e-16), key


@pytest.mark.parametrize("set_to_none", [True, False])
def test_flat_path_with_persistent_gradients(set_to_none):
    """zero_grad(set_to_none=False) accumulates into the flat gradient views: no copy, same numbers."""
    simple, flat = make_params(), make_params()
    a = inertia.Adam(simple, lr=0.05, execution="simple")
    b = inertia.Adam(flat, lr=0.05, execution="flat")
    run(a, simple, 15, set_to_none=set_to_none)
    run(b, flat, 15, set_to_none=set_to_none)
    assert_same(flat, simple, rtol=1e-13)
    layout = b._flat[0]
    if not set_to_none:
        assert all(p.grad.data_ptr() == q for p, q in zip(flat, layout.grad_ptrs))


def test_flat_path_keeps_parameter_objects_and_model_works():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    twin.load_state_dict(model.state_dict())
    before = list(model.parameters())
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    a = inertia.Momentum(model.parameters(), lr=0.1)
    b = inertia.Momentum(twin.parameters(), lr=0.1, execution="simple")
    for _ in range(10):
        for m, o in ((model, a), (twin, b)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    assert all(p is q for p, q in zip(model.parameters(), before))
    assert a._flat, "auto should choose the flat path here"
    assert_same(list(model.parameters()), list(twin.parameters()), rtol=1e-6)


def test_missing_gradient_falls_back_and_counts_steps_per_parameter():
    """A parameter without gradient on some steps: the group runs simple then, flat again later."""
    simple, flat = make_params(), make_params()
    a = inertia.Adam(simple, lr=0.05, execution="simple")
    b = inertia.Adam(flat, lr=0.05, execution="flat")
    for t in range(20):
        for params, opt in ((simple, a), (flat, b)):
            opt.zero_grad()
            loss_of(params).backward()
            if 5 <= t < 8:
                params[1].grad = None
            opt.step()
    assert_same(flat, simple, rtol=1e-13)
    assert float(b.state[flat[1]]["step"]) == 17 and float(b.state[flat[0]]["step"]) == 20


@pytest.mark.parametrize("name, hyper", [RUNS[1], RUNS[9], RUNS[14]], ids=["momentum", "nadam", "schedulefree"])
def test_state_dict_moves_between_paths(name, hyper):
    """A state saved from the flat path resumes exactly on the simple path and the other way round."""
    straight = make_params()
    run(make_optimizer(name, straight, execution="simple", **hyper), straight, 30)
    for first_path, second_path in (("flat", "simple"), ("simple", "flat"), ("flat", "flat")):
        params = make_params()
        opt = make_optimizer(name, params, execution=first_path, **hyper)
        run(opt, params, 15)
        buffer = io.BytesIO()
        torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer)
        resumed = [p.clone().requires_grad_() for p in saved["params"]]
        opt2 = make_optimizer(name, resumed, execution=second_path, **hyper)
        opt2.load_state_dict(saved["opt"])
        run(opt2, resumed, 15, start=15)
        assert_same(resumed, straight, rtol=1e-13)


def test_per_configuration_hyperparameters_use_the_simple_path():
    p = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    opt = inertia.SGD([p], lr=torch.tensor([0.1, 0.2, 0.3]), momentum=0.9)
    p.grad = torch.ones_like(p)
    opt.step()
    assert not opt._flat


def test_nonfinite_on_flat_path_raises_naming_parameter_and_leaves_everything_untouched():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    opt = inertia.Adam(model.named_parameters(), lr=0.1)
    for _ in range(2):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    state_before = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[1].weight.grad[0, 1] = float("-inf")
    with pytest.raises(inertia.NonFiniteGradientError, match=r"'1\.weight'"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(torch.equal(opt.state[model[0].weight][k], v) for k, v in state_before.items())


def test_huge_finite_gradients_whose_sum_overflows_are_not_reported():
    p = torch.zeros(4, dtype=torch.float32, requires_grad=True)
    q = torch.zeros(3, dtype=torch.float32, requires_grad=True)
    opt = inertia.SGD([p, q], lr=1e-40)
    p.grad = torch.full((4,), 3e38)
    q.grad = torch.full((3,), 3e38)
    opt.step()  # the cheap check's sum is inf; the exact check finds every element finite
    assert opt._flat and torch.isfinite(p).all()


def test_skip_policy_on_flat_path():
    params = make_params()
    opt = inertia.QHM(params, lr=0.1, nonfinite="skip")
    loss_of(params).backward()
    params[2].grad[0, 0, 0] = float("nan")
    before = [p.detach().clone() for p in params]
    opt.step()
    assert opt.skipped_steps == 1 and all(torch.equal(p, q) for p, q in zip(params, before))


def test_execution_is_validated():
    with pytest.raises(ValueError, match="execution"):
        inertia.SGD(make_params(), execution="fast")


# ---------------------------------------------------------------- torch.compile path


def _compile_works() -> str | None:
    try:
        f = torch.compile(lambda x: x.mul_(2.0).add_(1.0), fullgraph=True)
        f(torch.ones(3))
        return None
    except Exception as error:  # no C++ compiler, unsupported platform, ...
        return f"torch.compile unavailable: {type(error).__name__}: {str(error)[:200]}"


@pytest.fixture(scope="module")
def compiled_ok():
    reason = _compile_works()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("name, hyper", [RUNS[1], RUNS[7], RUNS[14], RUNS[15]],
                         ids=["momentum", "adam-amsgrad", "schedulefree", "lookahead"])
def test_compiled_path_equals_simple_path(compiled_ok, name, hyper):
    simple, compiled = make_params(), make_params()
    a = make_optimizer(name, simple, execution="simple", **hyper)
    b = make_optimizer(name, compiled, execution="compiled", **hyper)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compile failure would warn and fall back
        run(a, simple, 20)
        run(b, compiled, 20)  # the learning rate changes at step 10: no recompile, same numbers
    assert b._compiled is not None and not b._compile_failed
    assert_same(compiled, simple, rtol=1e-12)
