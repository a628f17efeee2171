"""The conv sweep backend runs a module only if the module's forward is a chain it computes; its own backward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inertia import rules
from inertia.models import build_model
from inertia.sweeps.conv import _GroupedConv, conv_layout
from inertia.pipeline import make_folds
from inertia.sweeps.engine import Job


def blocks(c=4):
    return [nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c * 9, 3)]


class Residual(nn.Module):
    """The leaves of ``blocks`` in their order, with a skip connection around the second convolution."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(blocks())

    def forward(self, x):
        conv1, bn1, relu1, conv2, bn2, relu2, pool, flat, head = self.layers
        h = relu1(bn1(conv1(x)))
        return head(flat(pool(relu2(bn2(conv2(h))) + h)))


class Scaled(nn.Module):
    """The chain with a functional op (``* 2``) between two leaves."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(*blocks())

    def forward(self, x):
        return self.layers[4:](self.layers[:4](x) * 2)


class Twice(nn.Module):
    """One convolution called twice."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(36, 3)

    def forward(self, x):
        return self.head(self.conv(self.conv(x)).flatten(1))


def _without_flatten():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def _cumulative_batchnorm():
    layers = blocks()
    layers[1] = nn.BatchNorm2d(4, momentum=None)
    return nn.Sequential(*layers)


def _reflect_padding():
    layers = blocks()
    layers[3] = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    return nn.Sequential(*layers)


def _with_dropout():
    layers = blocks()
    layers.insert(3, nn.Dropout(0.2))
    return nn.Sequential(*layers)


def test_the_chains_of_the_presets_examples_and_hand_written_forwards_qualify():
    from examples.digits_cnn import DigitsCNN

    assert conv_layout(nn.Sequential(*blocks()), (1, 6, 6)) is not None
    assert conv_layout(build_model("cnn2d", (1, 8, 8), 10), (1, 8, 8)) is not None
    assert conv_layout(build_model("cnn2d", (8, 8), 10), (8, 8)) is not None          # forward unsqueezes
    assert conv_layout(DigitsCNN(1, 10, 8), (1, 8, 8)) is not None
    assert conv_layout(DigitsCNN(1, 10, 8), (64,)) is not None                       # forward unflattens
    assert _job(lambda: nn.Sequential(*blocks()), "auto").backend == "conv"


@pytest.mark.parametrize("factory", [Residual, Scaled, Twice, _cumulative_batchnorm, _reflect_padding, _with_dropout])
def test_a_forward_that_is_not_a_chain_the_backend_computes_runs_through_vmap(factory):
    assert conv_layout(factory(), (1, 6, 6)) is None
    # cumulative BatchNorm reads float(num_batches_tracked): vmap cannot batch it, its members train one by one
    assert _job(factory, "auto").backend == ("loop" if factory is _cumulative_batchnorm else "vmap")
    with pytest.raises(ValueError, match="conv backend"):
        _job(factory, "conv")


def test_a_chain_that_does_not_end_flattened_or_whose_linear_does_not_fit_is_not_taken():
    layers = blocks()
    layers[-1] = nn.Linear(5, 3)
    assert conv_layout(nn.Sequential(*layers), (1, 6, 6)) is None
    assert conv_layout(_without_flatten(), (1, 6, 6)) is None


def test_the_check_leaves_the_global_random_state_and_the_modules_mode_alone():
    model, residual = nn.Sequential(*blocks()).eval(), Residual()
    state = torch.get_rng_state()
    before = [b.clone() for b in model.buffers()]
    conv_layout(model, (1, 6, 6))
    conv_layout(residual, (1, 6, 6))
    assert torch.equal(torch.get_rng_state(), state)
    assert not model.training and all(torch.equal(a, b) for a, b in zip(before, model.buffers()))


@pytest.mark.parametrize("padding,dilation", [(1, 1), (0, 1), (2, 2)])
def test_the_grouped_convolutions_gradients_equal_autograds(padding, dilation):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 7, 7, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(9, 2, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(9, generator=g, dtype=torch.float64)
    options = dict(stride=(1, 1), padding=(padding, padding), dilation=(dilation, dilation))
    transposed = [dilation * 2 - padding] * 2
    inputs = [t.requires_grad_() for t in (x, weight, bias)]
    ours = _GroupedConv.apply(*inputs, 3, options, transposed)
    theirs = F.conv2d(*inputs, groups=3, **options)
    up = torch.randn(theirs.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(torch.autograd.grad((ours * up).sum(), inputs), torch.autograd.grad((theirs * up).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _job(factory, backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) * 3).round().clamp(-1, 1).long() + 1
    return Job(factory, x, y, make_folds(len(y), 2, 1), rules.get("momentum"), {}, 5, 8, seed=2,
               dtype=torch.float64, backend=backend)
