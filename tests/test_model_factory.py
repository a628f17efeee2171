"""model_factory: registered names, callables and ``package.module:factory`` specs; parameters filled
from the data; model args; one-line errors; and the examples/ factories."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from inertia.cli import main
from inertia.data import as_dataset
from inertia.models import MLP, build_model, model_factory

ROOT = Path(__file__).resolve().parents[1]


def _data(input_shape=(6,), task="classification", n=20):
    x = torch.randn(n, *input_shape)
    y = torch.arange(n) % 3 if task == "classification" else torch.randn(n) + 0.5
    return as_dataset((x, y, x[:6], y[:6]), task=task)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The current directory is a fresh folder; sys.path and the imported modules are restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_a_registered_name_builds_as_build_model_with_the_data_s_shapes():
    data = _data((2, 3))
    factory = model_factory("mlp", data, {"hidden": "5,4"})
    torch.manual_seed(1)
    model = factory()
    torch.manual_seed(1)
    expected = MLP(6, 3, hidden=(5, 4))
    assert model.hidden == (5, 4) and model.features == 6 and model.outputs == 3
    for a, b in zip(model.parameters(), expected.parameters()):
        assert torch.equal(a, b)


def test_the_check_leaves_the_global_random_state_alone():
    data = _data((1, 4, 4))
    state = torch.random.get_rng_state()
    model_factory("cnn2d", data)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_callable_gets_the_data_s_shapes_and_the_model_args():
    seen = {}

    def factory(input_shape, features, classes, outputs, in_channels, depth, scale=1.0):
        seen.update(input_shape=input_shape, features=features, classes=classes, outputs=outputs,
                    in_channels=in_channels, depth=depth, scale=scale)
        return nn.Sequential(nn.Flatten(), nn.Linear(features, outputs))

    model_factory(factory, _data((2, 3, 4)), {"depth": 3})()
    assert seen == {"input_shape": (2, 3, 4), "features": 24, "classes": 3, "outputs": 3, "in_channels": 2,
                    "depth": 3, "scale": 1.0}


def test_model_args_override_what_the_data_would_fill():
    model = model_factory(lambda features, outputs: nn.Linear(features, outputs), _data(), {"outputs": 3})()
    assert model.out_features == 3
    with pytest.raises(ValueError, match=r"gives \[2, 5\] .* needs 3 output"):
        model_factory(lambda features, outputs: nn.Linear(features, outputs), _data(), {"outputs": 5})


def test_regression_data_fills_outputs_and_refuses_classes():
    data = _data(task="regression")
    assert model_factory("mlp", data)()(data.x_train).shape == (20, 1)
    with pytest.raises(ValueError, match="takes classes, but .* regression dataset"):
        model_factory(lambda features, classes: nn.Linear(features, classes), data)


def test_in_channels_needs_image_inputs_unless_it_has_a_default():
    with pytest.raises(ValueError, match=r"takes in_channels, but its inputs are not images \[C, H, W\]"):
        model_factory(lambda in_channels, classes: nn.Linear(6, classes), _data())
    with pytest.raises(ValueError, match="cnn2d needs image inputs"):
        model_factory("cnn2d", _data())


@pytest.mark.parametrize("spec, args, message", [
    ("mlp", {"width": 3}, r"model 'mlp': unknown model argument\(s\) width; it takes hidden \(input_shape, outputs"),
    ("linear", {"hidden": 3}, r"unknown model argument\(s\) hidden; it takes none"),
    ("resnet", {}, r"unknown model 'resnet'; known: cnn, cnn2d, linear, mlp, or package.module:factory"),
    ("mlp", {"hidden": "a,b"}, r"model 'mlp'\(hidden='a,b', .*\) failed: ValueError: invalid literal"),
])
def test_bad_registered_names_and_args(spec, args, message):
    with pytest.raises(ValueError, match=message):
        model_factory(spec, _data(), args)


def test_a_required_parameter_the_data_cannot_fill_must_come_from_model_args():
    def factory(features, classes, width, depth, bias=True):
        return nn.Linear(features, classes)

    with pytest.raises(ValueError, match=r"model .*factory needs width, depth: give each with --model-arg"):
        model_factory(factory, _data())
    assert model_factory(factory, _data(), {"width": 1, "depth": 2}).keywords["width"] == 1


def test_what_a_factory_returns_must_be_a_module_that_fits_the_data():
    with pytest.raises(ValueError, match="returned a dict, not an nn.Module"):
        model_factory(lambda: {}, _data())
    with pytest.raises(ValueError, match=r"fails on inputs of shape \[2, 6\], dtype float32: RuntimeError"):
        model_factory(lambda: nn.Linear(7, 3), _data())
    with pytest.raises(TypeError, match="not a built Linear"):
        model_factory(nn.Linear(6, 3), _data())


def test_a_module_colon_factory_is_imported_from_the_current_directory(in_tmp):
    _write(in_tmp, "mine/nets.py", """
        from torch import nn

        def wide(features, classes, width):
            return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, classes))
        """)
    model = model_factory("mine.nets:wide", _data(), {"width": 9})()
    assert model[0].out_features == 9 and str(in_tmp) in sys.path


@pytest.mark.parametrize("spec, message", [
    ("absent_pkg.nets:Net", r"no module named 'absent_pkg' \(looked in the current directory"),
    ("mine.broken:Net", r"importing mine.broken failed: no module named 'not_installed_dependency'"),
    ("mine.raises:Net", r"importing mine.raises failed: ZeroDivisionError: division by zero"),
    ("mine.nets:Missing", r"module mine.nets \(.*nets.py\) has no attribute 'Missing'"),
    ("mine.nets:WIDTH", r"WIDTH is a int, not callable"),
    ("mine.nets:", r"expected package.module:factory"),
])
def test_an_import_that_fails_names_what_is_missing(in_tmp, spec, message):
    _write(in_tmp, "mine/nets.py", "WIDTH = 3\n")
    _write(in_tmp, "mine/broken.py", "import not_installed_dependency\n")
    _write(in_tmp, "mine/raises.py", "1 / 0\n")
    with pytest.raises(ValueError, match=message):
        model_factory(spec, _data())


def test_build_model_takes_a_dataset_or_shapes_and_model_args():
    assert build_model("cnn2d", (3, 8, 8), 4, channels=2).head.in_features == 4
    assert build_model("mlp", _data((6,)), hidden=7).hidden == (7,)
    with pytest.raises(TypeError, match="outputs is missing"):
        build_model("mlp", 40)


def test_the_cli_prints_one_line_for_a_factory_it_cannot_import(in_tmp, capsys):
    assert main(["sweep", "--data", "digits", "--model", "absent_pkg:Net", "--steps", "1",
                 "--out", str(in_tmp / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no module named 'absent_pkg'" in err


def test_digits_cnn_example_from_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.digits_cnn import DigitsCNN, digits_images

    data = digits_images()
    assert data.input_shape == (1, 8, 8)
    factory = model_factory("examples.digits_cnn:DigitsCNN", data, {"width": 4})
    assert factory.func is DigitsCNN and factory.keywords == {"width": 4, "in_channels": 1, "classes": 10}
    model = factory()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2
    torch.testing.assert_close(model(data.x_train[:5]), model(data.x_train[:5].flatten(1)))
    assert model(data.x_train[:5]).shape == (5, 10)


def test_regression_example_writes_a_regression_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.regression import make_data
    from inertia.data import load_dataset

    data = load_dataset(make_data(str(tmp_path / "r.npz"), n=50, features=3))
    assert data.task == "regression" and data.input_shape == (3,) and data.outputs == 1
    model = model_factory("examples.regression:RegressionMLP", data, {"hidden": 4})()
    assert model(data.x_test).shape == (len(data.y_test), 1)


def test_own_loop_example_trains_a_member_per_learning_rate(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.digits_cnn import DigitsCNN
    from examples.own_loop import train

    accuracy, lrs, best = train(steps=3, batch_size=16)
    assert accuracy.shape == lrs.shape and isinstance(best, DigitsCNN) and not best.training
