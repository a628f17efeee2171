"""inertia's torch-named optimizers as drop-in replacements, each against torch.optim on the same inputs:
a dtype change after some steps, sparse gradients, many compiled optimizers in one process, the keys of
a state dict's groups."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import inertia

PAIRS = [(inertia.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
         (inertia.Adam, torch.optim.Adam, dict(lr=0.05)),
         (inertia.AdamW, torch.optim.AdamW, dict(lr=0.05)),
         (inertia.NAdam, torch.optim.NAdam, dict(lr=0.05)),
         (inertia.RMSprop, torch.optim.RMSprop, dict(lr=0.05, momentum=0.5))]
IDS = [ours.__name__ for ours, _, _ in PAIRS]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))


def _train(model, opt, steps, convert=None):
    """``steps`` steps; ``convert`` (``"half"``, ``"double"``) applied to the model after the third."""
    x = torch.linspace(-1, 1, 32).view(8, 4)
    for t in range(steps):
        if t == 3 and convert:
            getattr(model, convert)()
        opt.zero_grad()
        model(x.to(model[0].weight.dtype)).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("convert", ["half", "double", "bfloat16"])
@pytest.mark.parametrize("ours, theirs, hyper", PAIRS, ids=IDS)
def test_a_dtype_change_after_some_steps_does_what_torch_does(ours, theirs, hyper, convert):
    """torch keeps the state in its dtype: SGD and RMSprop go on with it, Adam's and NAdam's lerp refuses
    it; inertia the same, on every path (float32 rounding: the first steps may take the fused kernel)."""
    reference = _model()
    torch_opt = theirs(reference.parameters(), **hyper)
    try:
        _train(reference, torch_opt, 6, convert)
        refused = None
    except RuntimeError as error:
        refused = error
    for execution in ("auto", "simple", "fused"):
        model = _model()
        opt = ours(model.parameters(), execution=execution, **hyper)
        if refused is not None:
            with pytest.raises(RuntimeError):
                _train(model, opt, 6, convert)
            continue
        _train(model, opt, 6, convert)
        for p, q in zip(reference.parameters(), model.parameters()):
            assert q.dtype == p.dtype
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
            for key, value in torch_opt.state[p].items():
                assert opt.state[q][key].dtype == value.dtype, key
                torch.testing.assert_close(opt.state[q][key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("execution", ["auto", "fused", "simple"])
def test_sparse_gradients_step_as_torch_sgd(execution):
    """torch's fused SGD kernel has no sparse implementation: the fused path is not taken for them."""
    runs = []
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                 lambda ps: inertia.SGD(ps, lr=0.1, momentum=0.9, execution=execution)):
        torch.manual_seed(0)
        embedding = nn.Embedding(10, 3, sparse=True)
        opt = make(embedding.parameters())
        for rows in ([1, 2], [2, 5, 5], [0, 1]):
            opt.zero_grad()
            embedding(torch.tensor(rows)).sin().sum().backward()
            opt.step()
        runs.append(embedding.weight.detach())
    assert torch.equal(*runs)


def test_any_number_of_compiled_optimizers_in_one_process():
    """Each compiled optimizer counts its own recompiles (Dynamo stops a function at 8)."""
    torch._dynamo.reset()
    for i in range(10):
        p, q = (torch.linspace(-1, 1, 3 + i).requires_grad_() for _ in range(2))
        compiled = inertia.SGD([p], lr=0.1, momentum=0.9, execution="compiled")
        reference = torch.optim.SGD([q], lr=0.1, momentum=0.9, foreach=False)
        for _ in range(3):
            for t, o in ((p, compiled), (q, reference)):
                t.grad = torch.cos(t.detach())
                o.step()
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("ours, theirs, hyper", PAIRS, ids=IDS)
def test_state_dicts_keep_their_keys_as_torchs_do(ours, theirs, hyper):
    """Loading a state dict adds no group key torch would not have (torch's own reload keeps its keys)."""
    model = _model()
    opt, torch_opt = ours(model.parameters(), **hyper), theirs(_model().parameters(), **hyper)
    _train(model, opt, 2)
    own = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(own)
    assert [set(g) for g in opt.state_dict()["param_groups"]] == [set(g) for g in own["param_groups"]]
    torch_keys = set(torch_opt.state_dict()["param_groups"][0])
    torch_opt.load_state_dict(torch_opt.state_dict())
    assert set(torch_opt.state_dict()["param_groups"][0]) == torch_keys
    into_ours = ours(_model().parameters(), **hyper)
    into_ours.load_state_dict(torch_opt.state_dict())
    assert set(into_ours.state_dict()["param_groups"][0]) == torch_keys | set(into_ours.rule.defaults)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("execution", ["auto", "fused", "compiled"])
def test_low_precision_parameters_get_torchs_numbers_on_every_path(dtype, execution):
    """torch's fused kernels and Inductor compute float16 and bfloat16 in float32 between reads and
    writes; torch.optim's for-loop rounds after each operation: the fast paths leave such groups to it."""
    runs = []
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=False),
                 lambda ps: inertia.SGD(ps, lr=0.05, momentum=0.9, execution=execution)):
        params = [torch.linspace(-2, 2, 64, dtype=dtype).requires_grad_()]
        opt = make(params)
        for _ in range(5):
            opt.zero_grad()
            torch.cos(1.3 * params[0].float()).sum().backward()
            opt.step()
        runs.append(params[0].detach())
    assert torch.equal(*runs)
