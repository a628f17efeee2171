"""Recurrent layers written as matrix products: the same outputs and gradients as torch's modules,
alone and for a stack of members under vmap (which torch's fused kernels cannot run)."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from inertia.sweeps.recurrent import BatchableRecurrent, batchable

KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("GRU", {}), ("LSTM", {})]
SHAPES = list(itertools.product([False, True], [1, 2], [False, True], [True, False]))


def make(kind, extra, batch_first, layers, bidirectional, bias, seed=0):
    torch.manual_seed(seed)
    return getattr(nn, kind)(3, 5, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional,
                             bias=bias, **extra).double()


def same(a, b) -> bool:
    """Whether ``a`` and ``b`` (tensors, or tuples of them) agree to float64 rounding; a mismatch raises
    with torch's description of it."""
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    return True


@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + str(e) for k, e in KINDS])
@pytest.mark.parametrize("batch_first,layers,bidirectional,bias", SHAPES)
def test_same_outputs_state_and_gradients_as_torch(kind, extra, batch_first, layers, bidirectional, bias):
    module = make(kind, extra, batch_first, layers, bidirectional, bias)
    ours = BatchableRecurrent(module)
    x = torch.randn(4, 7, 3, dtype=torch.float64, requires_grad=True)
    out_ref, state_ref = module(x)
    out, state = ours(x)
    assert same(out, out_ref) and same(state, state_ref)
    (g_ref,) = torch.autograd.grad(out_ref.square().sum(), module.weight_hh_l0)
    (g,) = torch.autograd.grad(out.square().sum(), ours.weight_hh_l0)
    assert same(g, g_ref)


@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + str(e) for k, e in KINDS])
def test_initial_state_and_unbatched_input(kind, extra):
    module = make(kind, extra, False, 2, True, True)
    ours = BatchableRecurrent(module)
    h0 = torch.randn(4, 6, 5, dtype=torch.float64)
    hx = (h0, torch.randn_like(h0)) if kind == "LSTM" else h0
    x = torch.randn(9, 6, 3, dtype=torch.float64)
    assert same(ours(x, hx), module(x, hx))
    single = x[:, 0]
    single_hx = tuple(h[:, 0] for h in hx) if kind == "LSTM" else hx[:, 0]
    assert same(ours(single, single_hx), module(single, single_hx))


class Classifier(nn.Module):
    """A model we did not write for the sweep: an embedding of the sequence, a GRU, a linear head."""

    def __init__(self, kind="GRU"):
        super().__init__()
        self.rnn = getattr(nn, kind)(4, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_a_stack_of_members_under_vmap_equals_each_member(kind):
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(Classifier(kind).double())
    params, buffers = stack_module_state(members)
    model = batchable(Classifier(kind).double())
    x = torch.randn(5, 6, 4, dtype=torch.float64)

    def one(p, b):
        return functional_call(model, (p, b), (x,))

    stacked = vmap(one)(params, buffers)
    for k, member in enumerate(members):
        assert same(stacked[k], member(x))
    with pytest.raises(RuntimeError):   # what this module is for: torch's own kernel cannot be batched
        vmap(lambda p, b: functional_call(Classifier(kind).double(), (p, b), (x,)))(params, buffers)


def test_models_without_recurrent_layers_are_untouched_and_projections_refused():
    plain = nn.Sequential(nn.Linear(2, 2))
    assert batchable(plain) is plain
    with pytest.raises(ValueError, match="proj_size"):
        batchable(nn.LSTM(2, 4, proj_size=2))
