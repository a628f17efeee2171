"""Reference models: shapes, layer structure (stackable for vmap), presets and bad names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from inertia.models import CNN1D, MLP, MODELS, build_model


def test_mlp_preset_is_40_100_100_10():
    model = build_model("mlp", 40, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(40, 100), (100, 100), (100, 10)]
    assert sum(p.numel() for p in model.parameters()) == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
    assert model(torch.randn(7, 40)).shape == (7, 10)


def test_mlp_is_the_plain_composition_of_its_layers():
    torch.manual_seed(0)
    model = MLP(5, 3, hidden=(4,))
    x = torch.randn(6, 5)
    l1, l2 = [m for m in model.modules() if isinstance(m, nn.Linear)]
    expected = torch.relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    torch.testing.assert_close(model(x), expected)


def test_mlp_copies_stack_and_vmap():
    models = [MLP(6, 3, hidden=(8,)) for _ in range(4)]
    params, buffers = torch.func.stack_module_state(models)
    assert params["layers.0.weight"].shape == (4, 8, 6)
    x = torch.randn(5, 6)

    def call(p, b):
        return torch.func.functional_call(models[0], (p, b), (x,))

    out = torch.vmap(call)(params, buffers)
    for i, m in enumerate(models):
        torch.testing.assert_close(out[i], m(x))


def test_linear_and_cnn_presets():
    linear = build_model("linear", 40, 10)
    assert [type(m) for m in linear.modules() if not isinstance(m, nn.Sequential)][1:] == [nn.Linear]
    cnn = build_model("cnn", 40, 10)
    assert isinstance(cnn, CNN1D)
    assert cnn(torch.randn(3, 40)).shape == (3, 10)


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as info:
        build_model("resnet", 40, 10)
    assert "resnet" in str(info.value)
    for name in MODELS:
        assert name in str(info.value)


def test_bad_sizes():
    with pytest.raises(ValueError, match="hidden"):
        MLP(4, 2, hidden=(0,))
    with pytest.raises(ValueError, match="classes"):
        MLP(4, 1)
