"""inertia's SGD, Adam, AdamW, NAdam and RMSprop driven through torch's own optimizer table.

``optim_db`` (``torch.testing._internal.common_optimizers``) lists, for each torch
optimizer, its constructor inputs, its learning-rate schedulers and the inputs that
must raise. For every input of each entry, with no scheduler and with each of the
entry's scheduler sets, inertia's parameters and state equal torch.optim's over 25
steps; state dicts move both ways (older ones missing group keys included); hooks,
deepcopy and complex parameters behave as torch's; error inputs raise the same type.

Deliberate differences, checked as inertia's own behaviour instead:
- a 1-D tensor lr is one lr per configuration, for parameters stacked with that many members
  (torch: "Tensor lr must be 1-element"; inertia: a ValueError on parameters not stacked so);
- torch's execution flags (``foreach``, ``fused``, ``capturable``, ``differentiable``)
  are accepted and ignored: inertia chooses its path with ``execution=`` and supports a
  tensor lr and tensor betas on every path, where torch refuses some combinations.
"""
from __future__ import annotations

import copy
import importlib.util
import sys
import types
import unittest
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

if importlib.util.find_spec("expecttest") is None:
    # torch's test utilities import expecttest (a dev-only package) for their TestCase base class;
    # optim_db itself does not use it
    sys.modules["expecttest"] = types.SimpleNamespace(TestCase=unittest.TestCase, ACCEPT=False)

from torch.testing._internal.common_optimizers import OptimizerErrorEnum, optim_db  # noqa: E402

import inertia

OURS = {"SGD": inertia.SGD, "Adam": inertia.Adam, "AdamW": inertia.AdamW, "NAdam": inertia.NAdam,
        "RMSprop": inertia.RMSprop}
INFOS = [info for info in optim_db if info.name in OURS]
STEPS = 25
DEVICE, DTYPE = "cpu", torch.float64


def cells():
    for info in INFOS:
        for index, given in enumerate(info.optim_inputs_func(DEVICE, DTYPE)):
            for s, schedulers in enumerate([[], *info.scheduler_inputs]):
                yield pytest.param(info, given.kwargs, schedulers, id=f"{info.name}-{given.desc}-sched{s}")


def make_params(dtype=DTYPE, complex_=False):
    gen = torch.Generator().manual_seed(0)
    dtype = torch.complex128 if complex_ else dtype
    shapes = [(4, 3), (4,), (1, 4)]
    return [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for shape in shapes]


def loss_of(params):
    w1, b1, w2 = params
    x = torch.linspace(-1, 1, 3, dtype=w1.dtype)
    out = w2 @ torch.tanh(w1 @ x + b1)
    return (out.abs() ** 2).sum() + sum((p.abs() ** 2).sum() for p in params) * 0.01


def train(opt, params, schedulers, steps, start=0):
    for _ in range(start, start + steps):
        opt.zero_grad()
        loss = loss_of(params)
        loss.backward()
        opt.step()
        for scheduler in schedulers:
            scheduler.step(loss.item()) if isinstance(scheduler, ReduceLROnPlateau) else scheduler.step()


def pair(info, kwargs, complex_=False):
    theirs, ours = make_params(complex_=complex_), make_params(complex_=complex_)
    return (info.optim_cls(theirs, **copy.deepcopy(kwargs)), theirs,
            OURS[info.name](ours, **copy.deepcopy(kwargs)), ours)


def assert_equal_runs(torch_opt, theirs, our_opt, ours, rtol=1e-9, loaded=False):
    """Parameters and state equal. ``loaded``: a state dict was loaded since, and load_state_dict casts
    floating state to the parameter's dtype (torch's policy, for NAdam's mu_product too)."""
    for p, q in zip(theirs, ours):
        assert torch.allclose(p, q, rtol=rtol, atol=1e-12), float((p - q).abs().max())
        state_t, state_o = torch_opt.state[p], our_opt.state[q]
        extra = set(state_o) - set(state_t)
        assert extra <= {"step"}, extra  # torch's SGD keeps no step count; inertia counts for every rule
        for key, value in state_t.items():
            if key == "step" and isinstance(torch_opt, torch.optim.SGD):
                continue  # a step count loaded from inertia, which torch's SGD neither reads nor counts
            other = state_o[key]
            assert (loaded or value.dtype == other.dtype) and value.shape == other.shape, key
            assert torch.allclose(value, other.to(value), rtol=rtol, atol=1e-12), key


@pytest.mark.parametrize("info, kwargs, schedulers", list(cells()))
def test_equals_torch_with_schedulers_and_state_dicts_both_ways(info, kwargs, schedulers):
    torch_opt, theirs, our_opt, ours = pair(info, kwargs)
    train(torch_opt, theirs, [make(torch_opt) for make in schedulers], STEPS)
    train(our_opt, ours, [make(our_opt) for make in schedulers], STEPS)
    assert_equal_runs(torch_opt, theirs, our_opt, ours)
    # torch's state into inertia and inertia's into torch: both continue as before
    into_ours, mine = OURS[info.name]([p.detach().clone().requires_grad_() for p in theirs], **kwargs), None
    into_ours.load_state_dict(copy.deepcopy(torch_opt.state_dict()))  # as torch's own tests
    mine = [p for g in into_ours.param_groups for p in g["params"]]
    into_torch = info.optim_cls([p.detach().clone().requires_grad_() for p in ours], **kwargs)
    into_torch.load_state_dict(copy.deepcopy(our_opt.state_dict()))
    torch_copy = [p for g in into_torch.param_groups for p in g["params"]]
    train(torch_opt, theirs, [], 5)
    train(into_ours, mine, [], 5)
    train(our_opt, ours, [], 5)
    train(into_torch, torch_copy, [], 5)
    assert_equal_runs(torch_opt, theirs, into_ours, mine, loaded=True)
    assert_equal_runs(into_torch, torch_copy, our_opt, ours, loaded=True)


@pytest.mark.parametrize("info", INFOS, ids=[i.name for i in INFOS])
def test_older_state_dicts_missing_group_keys_load_with_defaults(info):
    torch_opt, theirs, our_opt, ours = pair(info, {})
    train(torch_opt, theirs, [], 3)
    saved = copy.deepcopy(torch_opt.state_dict())
    for group in saved["param_groups"]:
        for key in ("maximize", "foreach", "differentiable", "fused", "decoupled_weight_decay"):
            group.pop(key, None)
    resumed = [p.detach().clone().requires_grad_() for p in theirs]
    opt = OURS[info.name](resumed)
    opt.load_state_dict(saved)
    train(torch_opt, theirs, [], 5)
    train(opt, resumed, [], 5)
    assert_equal_runs(torch_opt, theirs, opt, resumed, rtol=1e-6, loaded=True)  # mu_product: float64 after load
    assert opt.param_groups[0]["maximize"] is False


@pytest.mark.parametrize("info", INFOS, ids=[i.name for i in INFOS])
def test_default_lr_is_torchs(info):
    assert OURS[info.name](make_params()).defaults["lr"] == info.optim_cls(make_params()).defaults["lr"]


@pytest.mark.parametrize("info", INFOS, ids=[i.name for i in INFOS])
def test_hooks_behave_as_torchs(info):
    calls = {"torch": [], "inertia": []}
    torch_opt, theirs, our_opt, ours = pair(info, {})
    for who, opt in (("torch", torch_opt), ("inertia", our_opt)):
        log = calls[who]
        opt.register_step_pre_hook(lambda o, a, k, log=log: log.append("pre"))
        opt.register_step_post_hook(lambda o, a, k, log=log: log.append("post"))
        opt.register_state_dict_pre_hook(lambda o, log=log: log.append("sd-pre"))
        opt.register_state_dict_post_hook(lambda o, sd, log=log: log.append("sd-post"))
        opt.register_load_state_dict_pre_hook(lambda o, sd, log=log: log.append("load-pre"))

        def post(o, log=log):  # torch's own test pattern: a post-hook writes a non-dict into state
            o.state["ran_load_state_dict_post_hook"] = True
            log.append("load-post")

        opt.register_load_state_dict_post_hook(post)
    train(torch_opt, theirs, [], 2)
    train(our_opt, ours, [], 2)
    torch_opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    our_opt.load_state_dict(copy.deepcopy(our_opt.state_dict()))
    train(torch_opt, theirs, [], 2)
    train(our_opt, ours, [], 2)
    assert calls["torch"] == calls["inertia"] and our_opt.state["ran_load_state_dict_post_hook"] is True
    assert_equal_runs(torch_opt, theirs, our_opt, ours)


@pytest.mark.parametrize("info", INFOS, ids=[i.name for i in INFOS])
def test_deepcopy_continues_as_the_original(info):
    torch_opt, theirs, our_opt, ours = pair(info, {"lr": 0.01})
    train(torch_opt, theirs, [], 3)
    train(our_opt, ours, [], 3)
    twin = copy.deepcopy({"opt": our_opt, "params": ours})
    train(torch_opt, theirs, [], 5)
    train(twin["opt"], twin["params"], [], 5)
    assert_equal_runs(torch_opt, theirs, twin["opt"], twin["params"])


def complex_cells():
    for info in INFOS:
        if info.supports_complex:
            for given in info.optim_inputs_func(DEVICE, DTYPE):
                yield pytest.param(info, given.kwargs, id=f"{info.name}-{given.desc}")


@pytest.mark.parametrize("info, kwargs", list(complex_cells()))
def test_complex_parameters_equal_torch(info, kwargs):
    torch_opt, theirs, our_opt, ours = pair(info, kwargs, complex_=True)
    train(torch_opt, theirs, [], STEPS)
    train(our_opt, ours, [], STEPS)
    assert_equal_runs(torch_opt, theirs, our_opt, ours)


def error_cells():
    for info in INFOS:
        for error in info.optim_error_inputs_func(DEVICE, DTYPE):
            yield pytest.param(info, error, id=f"{info.name}-{error.optimizer_error_input.desc}")


def _as_floats(kwargs):
    """``kwargs`` without torch's execution flags, tensor values as Python numbers."""
    def plain(v):
        if isinstance(v, tuple):
            return tuple(plain(x) for x in v)
        return float(v) if isinstance(v, torch.Tensor) else v
    return {k: plain(v) for k, v in kwargs.items() if k not in inertia.optim.TORCH_FLAGS}


def _deliberate(kwargs):
    """torch refuses these; inertia accepts torch's execution flags, and a number or a tensor for each beta."""
    betas = kwargs.get("betas", ())
    mixed = len({isinstance(b, torch.Tensor) for b in betas}) > 1
    return mixed or any(k in kwargs for k in inertia.optim.TORCH_FLAGS)


@pytest.mark.parametrize("info, error", list(error_cells()))
def test_error_inputs_raise_the_same_type(info, error):
    given = error.optimizer_error_input
    params = given.params if given.params is not None else make_params()
    ours = OURS[info.name]
    if isinstance(given.kwargs.get("lr"), torch.Tensor) and given.kwargs["lr"].dim() == 1:
        # deliberate: one lr per configuration, for parameters stacked with that many members
        with pytest.raises(ValueError, match=r"lr holds 2 values \(one per configuration\) but .* is not stacked"):
            ours(make_params(), **given.kwargs)
        with pytest.raises(ValueError, match="lr holds 2 values .* stacked with 4 members"):
            ours(inertia.stacked.mark(make_params()[:2], 4), **given.kwargs)
        return
    if _deliberate(given.kwargs):
        # inertia runs this input and equals torch's maths with the same values as numbers
        # (torch's float32 tensors round them: rtol 1e-6)
        ref = info.optim_cls(make_params(), **_as_floats(given.kwargs))
        opt = ours(make_params(), **given.kwargs)
        ref_params, our_params = (list(o.param_groups[0]["params"]) for o in (ref, opt))
        train(ref, ref_params, [], 5)
        train(opt, our_params, [], 5)
        assert_equal_runs(ref, ref_params, opt, our_params, rtol=1e-6)
        return
    if issubclass(error.error_type, Warning):
        with pytest.warns(error.error_type):
            ours(params, **given.kwargs)
        return
    with pytest.raises(error.error_type):
        opt = ours(params, **given.kwargs)
        if error.error_on == OptimizerErrorEnum.STEP_ERROR:
            for p in opt.param_groups[0]["params"]:
                p.grad = torch.ones_like(p)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt.step()


# ---------------------------------------------------------------- every path, every kind of parameter list

PATHS = ("auto", "simple", "fused", "compiled")
TABLE_STEPS = 5


def _float(dtype):
    return lambda gen: [torch.randn(shape, generator=gen, dtype=dtype) for shape in [(4, 3), (4,), (1, 4)]]


def _non_contiguous(gen):
    """A column slice and a transposed view: strided leaves whose gradients autograd makes contiguous."""
    return [torch.randn(4, 6, generator=gen)[:, ::2], torch.randn(3, 5, generator=gen).t(), torch.randn(4, generator=gen)]


def _channels_last(gen):
    return [torch.randn(2, 3, 3, 3, generator=gen).to(memory_format=torch.channels_last), torch.randn(5, generator=gen)]


def _mixed(gen):
    return [torch.randn(4, 3, generator=gen), torch.randn(4, generator=gen, dtype=torch.float64),
            torch.randn(1, 4, generator=gen, dtype=torch.float16)]


KINDS = {  # name -> (leaves, whether the loss reads the first as a sparse embedding, a change to the gradients)
    "float16": (_float(torch.float16), False, None),
    "bfloat16": (_float(torch.bfloat16), False, None),
    "float64": (_float(torch.float64), False, None),
    "non-contiguous": (_non_contiguous, False, None),
    "channels-last": (_channels_last, False, None),
    "channels-last, contiguous gradients": (_channels_last, False, lambda g: g.contiguous()),
    "sparse": (_float(torch.float64), True, None),
    "mixed-dtype": (_mixed, False, None),
}
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-9}
"""Rounding between torch's for-loop and the rule (the same operations, in another order in places), 5 steps."""


def _leaves(kind):
    return [t.requires_grad_() for t in KINDS[kind][0](torch.Generator().manual_seed(0))]


def _table_loss(params, sparse):
    rows = torch.tensor([0, 2, 2, 3])
    first = torch.nn.functional.embedding(rows, params[0], sparse=True) if sparse else params[0]
    return sum((torch.cos(1.3 * p) + 0.5 * p * p).sum() for p in [first, *params[1:]])


def _table_run(opt, params, kind):
    _, sparse, change = KINDS[kind]
    for _ in range(TABLE_STEPS):
        opt.zero_grad()
        _table_loss(params, sparse).backward()
        for p in params:
            p.grad = p.grad if change is None else change(p.grad)
        opt.step()


def table_cells():
    for info in INFOS:
        for given in info.optim_inputs_func(DEVICE, DTYPE):
            for kind in KINDS:
                for path in PATHS:
                    if path != "compiled" or given.desc == "default":
                        yield pytest.param(info, given.kwargs, kind, path,
                                           id=f"{info.name}-{given.desc}-{kind}-{path}")


@pytest.mark.parametrize("info, kwargs, kind, path", list(table_cells()))
def test_every_path_equals_torchs_for_loop_on_every_kind_of_parameter(info, kwargs, kind, path):
    """Each path gives torch.optim's for-loop's numbers (or its error: sparse gradients outside SGD),
    NaN where torch's are (float16 Adam: ε = 1e-8 rounds to 0). The compiled path (a compilation per
    cell) runs the default input of each optimizer."""
    theirs, ours = _leaves(kind), _leaves(kind)
    reference = info.optim_cls(theirs, foreach=False, **kwargs)
    opt = OURS[info.name](ours, execution=path, nonfinite="off", **kwargs)
    if path == "compiled":
        torch._dynamo.reset()
    try:
        _table_run(reference, theirs, kind)
    except RuntimeError as error:  # torch's Adam, NAdam, RMSprop refuse sparse gradients
        with pytest.raises(RuntimeError):
            _table_run(opt, ours, kind)
        assert KINDS[kind][1], error
        return
    _table_run(opt, ours, kind)
    for p, q in zip(theirs, ours):
        assert q.dtype == p.dtype and q.stride() == p.stride()
        tolerance = TOLERANCE[p.dtype]
        torch.testing.assert_close(q, p, rtol=tolerance, atol=tolerance, equal_nan=True)
        for key, value in reference.state[p].items():
            if key != "step":
                torch.testing.assert_close(opt.state[q][key], value, rtol=tolerance, atol=tolerance, equal_nan=True)
