"""Reference models: shapes, layer structure (stackable for vmap), presets and bad names."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inertia.models import CNN1D, CNN2D, MLP, MODELS, build_model


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
    with pytest.raises(ValueError, match="outputs"):
        MLP(4, 0)
    with pytest.raises(ValueError, match="channels"):
        CNN2D(1, 10, channels=0)


def test_one_output_for_regression():
    assert build_model("mlp", 5, 1)(torch.randn(3, 5)).shape == (3, 1)


def test_registered_models_take_image_inputs():
    x = torch.randn(4, 1, 8, 8)
    for name in ("mlp", "linear", "cnn"):
        torch.manual_seed(0)
        model = build_model(name, (1, 8, 8), 10)
        torch.manual_seed(0)
        flat = build_model(name, 64, 10)
        torch.testing.assert_close(model(x), flat(x.flatten(1)))  # they read an image as its 64 pixels


def test_cnn2d_is_its_two_batchnorm_blocks_then_pooling():
    torch.manual_seed(0)
    model = build_model("cnn2d", (3, 8, 6), 5, channels=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(3, 4, (1, 1)), (4, 8, (2, 2))]
    assert [n.num_features for n in norms] == [4, 8]
    x = torch.randn(7, 3, 8, 6)
    h = torch.relu(F.batch_norm(convs[0](x), None, None, norms[0].weight, norms[0].bias, training=True))
    h = torch.relu(F.batch_norm(convs[1](h), None, None, norms[1].weight, norms[1].bias, training=True))
    torch.testing.assert_close(model(x), model.head(h.mean((2, 3))))


def test_cnn2d_reads_h_w_inputs_as_one_channel():
    torch.manual_seed(0)
    model = build_model("cnn2d", (8, 8), 10)
    x = torch.randn(4, 8, 8)
    torch.testing.assert_close(model(x), model(x[:, None]))
    assert model.body[0].in_channels == 1
