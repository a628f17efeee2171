"""Every execution path gives the same numbers as the simple per-tensor path (the reference),
the optimizer never changes what a user's parameters are, and the fast paths read nothing
from the device inside ``step()``.

``execution="fused"`` runs torch's fused SGD kernel where it computes the rule;
``execution="compiled"`` runs a ``torch.compile`` of the rule over the group's list of
tensors. These tests drive the same run through ``"simple"`` and through each fast path.
"""
from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import inertia
from inertia.optim import make_optimizer
from inertia.optim.guard import found_nonfinite
from inertia.stacked import mark

SHAPES = [(7,), (3, 5), (2, 3, 4), ()]

# (registered name, hyperparameters) that torch's fused SGD kernel computes
FUSED_RUNS = [
    ("sgd", dict(lr=0.05)),
    ("momentum", dict(lr=0.05, weight_decay=0.01)),
    ("nesterov", dict(lr=0.05, dampening=0.0)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3, maximize=True)),
    ("momentum", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),  # runs simple: not fusable
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("adamw", dict(lr=0.05, weight_decay=0.2)),
    ("adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
]
# every rule, for the compiled path (one compilation each)
COMPILED_RUNS = [
    ("momentum", dict(lr=0.05, weight_decay=0.01), 25),
    ("adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1), 25),
    ("adam", dict(lr=0.05), 120),
    ("adamw", dict(lr=0.05), 120),
    ("nadam", dict(lr=0.05, weight_decay=0.05), 120),
    ("rmsprop", dict(lr=0.01, momentum=0.9, centered=True), 25),
    ("qhm", dict(lr=0.1), 25),
    ("aggmo", dict(lr=0.02), 25),
    ("schedulefree", dict(lr=0.1, warmup_steps=5), 25),
    ("lookahead", dict(lr=0.05, lookahead_k=3), 25),
]


def make_params(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for shape in SHAPES]


def loss_of(params):
    return sum((torch.cos(1.3 * p) + 0.5 * (p - 0.2 * i) ** 2).sum() for i, p in enumerate(params))


def run(opt, params, steps, start=0):
    for t in range(start, start + steps):
        if t == 10:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.3
        opt.zero_grad()
        loss_of(params).backward()
        opt.step()


def assert_same(a, b, rtol):
    for p, q in zip(a, b):
        assert torch.allclose(p.detach(), q.detach(), rtol=rtol, atol=rtol * 1e-3), float((p - q).abs().max())


def assert_same_state(opt_a, params_a, opt_b, params_b, rtol):
    for p, q in zip(params_a, params_b):
        assert set(opt_a.state[p]) == set(opt_b.state[q])
        for key, value in opt_a.state[p].items():
            other = opt_b.state[q][key]
            assert value.dtype == other.dtype and value.shape == other.shape, key
            assert torch.allclose(value.double(), other.double(), rtol=rtol, atol=rtol * 1e-3), key


class Paths:
    """Which path each group took: the engine's ``_path`` answers, recorded."""

    def __init__(self, opt):
        self.taken = []
        original = opt._path

        def spy(group, params):
            path = original(group, params)
            self.taken.append(path)
            return path

        opt._path = spy


@pytest.mark.parametrize("name, hyper", FUSED_RUNS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FUSED_RUNS)])
def test_fused_path_equals_simple_path(name, hyper):
    simple, fused = make_params(), make_params()
    a = make_optimizer(name, simple, execution="simple", **hyper)
    b = make_optimizer(name, fused, execution="fused", **hyper)
    paths = Paths(b)
    run(a, simple, 25)
    run(b, fused, 25)
    expected = "simple" if name == "momentum" and hyper.get("decoupled_weight_decay") else "fused"
    assert paths.taken[0] == "simple" and set(paths.taken[1:]) == {expected}
    assert_same(fused, simple, rtol=1e-13)
    assert_same_state(b, fused, a, simple, rtol=1e-13)


def test_auto_takes_the_fused_path_for_torch_sgd_and_adam_and_simple_for_the_rest():
    for cls, expected in ((inertia.Momentum, "fused"), (inertia.Adam, "fused"), (inertia.AdamW, "fused"),
                          (inertia.NAdam, "simple"), (inertia.QHM, "simple")):
        params = make_params()
        opt = cls(params, lr=0.01)
        paths = Paths(opt)
        run(opt, params, 3)
        assert paths.taken == ["simple", expected, expected], cls


@pytest.mark.parametrize("kind", ["float16", "bfloat16", "strided view", "gradient laid out otherwise",
                                  "sparse gradient", "state of another dtype"])
def test_auto_leaves_to_the_simple_path_what_a_fused_kernel_would_compute_otherwise(kind):
    """The fused kernels read every tensor as one flat array in float32 arithmetic: they get these wrong."""
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(kind, torch.float32)
    p = (torch.randn(4, 6)[:, ::2] if kind == "strided view" else torch.randn(4, 3, dtype=dtype)).requires_grad_()
    opt = inertia.SGD([p], lr=0.1, momentum=0.9)
    paths = Paths(opt)
    for _ in range(2):
        p.grad = torch.ones_like(p)
        if kind == "gradient laid out otherwise":
            p.grad = p.grad.t().contiguous().t()
        if kind == "sparse gradient":
            p.grad = p.grad.to_sparse()
        if kind == "state of another dtype" and opt.state[p]:
            opt.state[p]["momentum_buffer"] = opt.state[p]["momentum_buffer"].double()
        opt.step()
    assert paths.taken == ["simple", "simple"]


def test_parameters_keep_their_storage_strides_and_sharing():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    model = torch.nn.Sequential(conv, torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.randn(5, 3, 6, 6).to(memory_format=torch.channels_last)
    model(x)
    model.share_memory()
    before = [(p, p.data_ptr(), p.stride()) for p in model.parameters()]
    for execution in ("auto", "simple", "fused"):
        opt = inertia.Momentum(model.parameters(), lr=0.01, execution=execution)
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        assert [(p, p.data_ptr(), p.stride()) for p in model.parameters()] == before
        assert all(p.is_shared() for p in model.parameters())
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        # torch.save(model[0].state_dict()) writes the layer's own storage, not a shared buffer
        assert all(p.untyped_storage().nbytes() == p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("execution", ["simple", "fused"])
def test_a_replaced_state_entry_is_the_one_the_step_uses(execution):
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = inertia.SGD([p], lr=0.1, momentum=0.5, execution=execution)
    for _ in range(2):
        p.grad = torch.ones(4, dtype=torch.float64)
        opt.step()
    opt.state[p]["momentum_buffer"] = torch.full((4,), 10.0, dtype=torch.float64)
    before = p.detach().clone()
    opt.step()
    # b = 0.5 * 10 + 1 = 6, p -= 0.1 * 6
    assert torch.allclose(p.detach(), before - 0.6) and torch.equal(opt.state[p]["momentum_buffer"],
                                                                    torch.full((4,), 6.0, dtype=torch.float64))


def test_step_is_a_tensor_per_parameter_counting_its_own_steps():
    params = make_params()
    opt = inertia.Adam(params, lr=0.05)
    for t in range(12):
        opt.zero_grad()
        loss_of(params).backward()
        if 5 <= t < 8:
            params[1].grad = None
        opt.step()
    steps = [opt.state[p]["step"] for p in params]
    assert len({id(s) for s in steps}) == len(steps)
    assert [float(s) for s in steps] == [12, 9, 12, 12] and all(s.dtype == torch.float32 for s in steps)


def test_deepcopy_and_pickle_resume_every_optimizer():
    for name in ("sgd", "momentum", "adam", "nadam", "rmsprop", "qhm", "aggmo", "schedulefree", "lookahead"):
        params = make_params()
        opt = make_optimizer(name, params, lr=0.01)
        run(opt, params, 3)
        twin = copy.deepcopy({"params": params, "opt": opt})
        thawed = pickle.loads(pickle.dumps({"params": params, "opt": opt}))
        run(opt, params, 3, start=3)
        for other in (twin, thawed):
            run(other["opt"], other["params"], 3, start=3)
            assert_same(other["params"], params, rtol=1e-15)


def test_per_configuration_hyperparameters_unguarded_use_the_simple_path():  # guarded: the member step
    p, = mark([torch.randn(3, 5, dtype=torch.float64, requires_grad=True)], 3)
    opt = inertia.SGD([p], lr=torch.tensor([0.1, 0.2, 0.3]), momentum=0.9, nonfinite="off")
    paths = Paths(opt)
    for _ in range(2):
        p.grad = torch.ones_like(p)
        opt.step()
    assert paths.taken == ["simple", "simple"]


def test_execution_is_validated():
    with pytest.raises(ValueError, match="execution"):
        inertia.SGD(make_params(), execution="flat")


# ---------------------------------------------------------------- non-finite gradients, no host reads


class HostReads:
    """Counts device-to-host reads (``Tensor.item``, ``__bool__``, ``tolist``) while active."""

    NAMES = ("item", "__bool__", "tolist")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def read(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)
        return read


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))


def _set_grads(model, bad=False):
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    if bad:
        model[1].weight.grad[0, 1] = float("-inf")


def _bad_step_reads_nothing_and_changes_nothing(opt, model, monkeypatch) -> list[torch.Tensor]:
    """A step on a non-finite gradient: no host read inside it, parameters and state untouched.
    Returns the parameters as they were."""
    before = [p.detach().clone() for p in model.parameters()]
    state_before = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    reads = HostReads(monkeypatch)
    _set_grads(model, bad=True)
    opt.step()
    assert reads.count == 0
    monkeypatch.undo()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(torch.equal(opt.state[model[0].weight][k], v) for k, v in state_before.items())
    return before


@pytest.mark.parametrize("cls", [inertia.Momentum, inertia.Adam, inertia.AdamW])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_fused_step_reads_nothing_from_the_device_and_skips_on_it(monkeypatch, nonfinite, cls):
    model = _model()
    opt = cls(model.named_parameters(), lr=0.1, nonfinite=nonfinite)
    _set_grads(model)
    opt.step()  # the first step creates the state (simple path)
    paths = Paths(opt)
    before = _bad_step_reads_nothing_and_changes_nothing(opt, model, monkeypatch)
    assert paths.taken == ["fused"]
    if nonfinite == "raise":
        with pytest.raises(inertia.NonFiniteGradientError, match=r"'1\.weight'"):
            opt.zero_grad()
        opt.zero_grad()  # reported once
    else:
        assert opt.skipped_steps == 1
    _set_grads(model)
    opt.step()
    assert not torch.equal(model[0].weight, before[0])


def test_huge_finite_gradients_are_not_reported():
    p = torch.zeros(4, dtype=torch.float32, requires_grad=True)
    q = torch.zeros(3, dtype=torch.float32, requires_grad=True)
    opt = inertia.SGD([p, q], lr=1e-40)
    for _ in range(2):
        p.grad = torch.full((4,), 3e38)
        q.grad = torch.full((3,), 3e38)
        opt.step()
        opt.zero_grad()
    assert opt.state[p]["step"] == 2 and torch.isfinite(p).all()


def test_check_nonfinite_raises_at_once():
    p = torch.zeros(3, requires_grad=True)
    opt = inertia.Momentum([p], lr=0.1)
    p.grad = torch.tensor([0.0, float("nan"), 1.0])
    opt.step()
    with pytest.raises(inertia.NonFiniteGradientError, match="group 0, parameter 0"):
        opt.check_nonfinite()


@pytest.mark.parametrize("bad, flagged", [
    (torch.tensor([1e308, 1e308, -1e308], dtype=torch.float64), False),   # finite, though its sum overflows
    (torch.tensor([0.0, -float("inf"), 1.0]), True),
    (torch.tensor([1.0, 2.0], dtype=torch.bfloat16), False),
    (torch.tensor([1.0, float("nan")], dtype=torch.float16), True),
    (torch.tensor([1 + 2j, complex(0, float("inf"))]), True),
    (torch.sparse_coo_tensor([[0, 2]], [1.0, float("inf")], (3,)), True),
    (torch.sparse_coo_tensor([[0, 2]], [1.0, 3e38], (3,)), False),
])
def test_the_check_flags_exactly_the_non_finite_elements_and_leaves_gradients_as_they_were(bad, flagged):
    """Element by element, in every dtype (no sum that could overflow), across the gradients of a step."""
    grads = [torch.randn(5), bad.clone(), torch.randn(2, 3, dtype=torch.float64)]
    before = [g.clone() for g in grads]
    found = found_nonfinite(grads)
    assert found.dim() == 0 and float(found) == float(flagged)
    for g, b in zip(grads, before):
        g, b = (g.to_dense(), b.to_dense()) if g.is_sparse else (g, b)
        bits = (lambda t: torch.view_as_real(t) if t.is_complex() else t)
        assert torch.equal(bits(g).view(torch.uint8), bits(b).view(torch.uint8))


def test_the_error_names_the_parameter_whose_gradient_is_non_finite():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = inertia.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[1].bias.grad[1] = float("inf")
    opt.step()
    with pytest.raises(inertia.NonFiniteGradientError, match=r"parameter '1\.bias'; that step was skipped"):
        opt.zero_grad()


def test_step_counters_of_several_dtypes_keep_them_on_the_fused_path():
    """A state dict may bring float64 counters beside float32 ones: each keeps its dtype and counts,
    skipped steps not counted."""
    params = [torch.randn(4, requires_grad=True) for _ in range(2)]
    opt = inertia.Adam(params, lr=0.1, nonfinite="skip")
    for p in params:
        p.grad = torch.ones(4)
    opt.step()
    opt.state[params[1]]["step"] = torch.tensor(5.0, dtype=torch.float64)
    paths = Paths(opt)
    for bad in (False, True, False):
        for p in params:
            p.grad = torch.full((4,), float("nan") if bad else 1.0)
        opt.step()
    assert paths.taken == ["fused"] * 3
    steps = [opt.state[p]["step"] for p in params]
    assert [s.dtype for s in steps] == [torch.float32, torch.float64] and [float(s) for s in steps] == [3, 7]


def test_step_counters_stay_per_parameter_on_the_fused_path():
    """The fused path counts all of a group's steps with one add (the counters are views of one tensor);
    each parameter's counter is still its own: replaced, loaded or copied, it counts from its value."""
    import copy

    params = [torch.randn(4, requires_grad=True) for _ in range(3)]
    opt = inertia.SGD(params, lr=0.1, momentum=0.9)
    for _ in range(3):
        for p in params:
            p.grad = torch.ones(4)
        opt.step()
    assert [float(opt.state[p]["step"]) for p in params] == [3, 3, 3]
    opt.state[params[1]]["step"] = torch.tensor(10.0)
    twin = copy.deepcopy(opt)
    opt.step()
    assert [float(opt.state[p]["step"]) for p in params] == [4, 11, 4]
    twin.step()
    twin.step()
    assert [float(s["step"]) for s in twin.state.values()] == [5, 12, 5]
    assert [float(opt.state[p]["step"]) for p in params] == [4, 11, 4]   # the copy counts its own
    saved = opt.state_dict()
    opt.load_state_dict({**saved, "state": {0: {**saved["state"][0], "step": torch.tensor(7.0)},
                                            1: saved["state"][1], 2: saved["state"][2]}})
    opt.step()
    assert [float(opt.state[p]["step"]) for p in params] == [8, 12, 5]


# ---------------------------------------------------------------- torch.compile path


def _compile_works() -> str | None:
    try:
        f = torch.compile(lambda x: x.mul_(2.0).add_(1.0), fullgraph=True)
        f(torch.ones(3))
        return None
    except Exception as error:  # no C++ compiler, unsupported platform, ...
        return f"torch.compile unavailable: {type(error).__name__}: {str(error)[:200]}"


@pytest.fixture(scope="module")
def compile_available():
    reason = _compile_works()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def compiled_ok(compile_available):
    """Each test starts from an empty Dynamo cache (its recompile limit is counted across optimizers)."""
    torch._dynamo.reset()


@pytest.mark.parametrize("name, hyper, steps", COMPILED_RUNS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(COMPILED_RUNS)])
def test_compiled_path_equals_simple_path(compiled_ok, name, hyper, steps):
    """Compiled Adam, AdamW and NAdam stay equal to eager over 120 steps (the step count stays a tensor)."""
    simple, compiled = make_params(), make_params()
    a = make_optimizer(name, simple, execution="simple", **hyper)
    b = make_optimizer(name, compiled, execution="compiled", **hyper)
    paths = Paths(b)
    run(a, simple, steps)
    run(b, compiled, steps)  # the learning rate changes at step 10: no recompile, same numbers
    assert set(paths.taken[1:]) == {"compiled"}
    assert_same(compiled, simple, rtol=1e-12)
    assert_same_state(b, compiled, a, simple, rtol=1e-12)


def test_compiled_step_skips_on_the_device_without_host_reads(compiled_ok, monkeypatch):
    model = _model().double()
    opt = inertia.Adam(model.named_parameters(), lr=0.1, execution="compiled", nonfinite="skip")
    for _ in range(2):
        _set_grads(model)
        opt.step()
    _bad_step_reads_nothing_and_changes_nothing(opt, model, monkeypatch)
    assert opt.skipped_steps == 1


# ---------------------------------------------------------------- CUDA (skipped without a GPU)

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls, execution", [(inertia.Momentum, "fused"), (inertia.Momentum, "compiled"),
                                            (inertia.Adam, "fused")])
def test_cuda_fast_paths_never_synchronize_in_step(cls, execution):
    model = _model().cuda()
    opt = cls(model.named_parameters(), lr=0.1, execution=execution)
    reference = copy.deepcopy(model).cpu()
    ref_opt = cls(reference.parameters(), lr=0.1, execution="simple")
    for m, o in ((model, opt), (reference, ref_opt)):
        for _ in range(2):
            _set_grads(m)
            o.step()
    with warnings.catch_warnings():
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                _set_grads(model)
                opt.step()
            _set_grads(model, bad=True)
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    for _ in range(3):
        _set_grads(reference)
        ref_opt.step()
    assert_same(list(model.parameters()), [p.cuda() for p in reference.parameters()], rtol=1e-6)
    with pytest.raises(inertia.NonFiniteGradientError, match=r"'1\.weight'"):
        opt.check_nonfinite()
