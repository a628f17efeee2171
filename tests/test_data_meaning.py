"""Data keeps its meaning: integer inputs reach the model as integers (files, arrays, tensors, Datasets), an
explicit regression loss makes a regression, whole float targets with many values warn, and what does not fit
says so in one line (the model, the inputs' shape and dtype, the option that changes it)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import inertia
from inertia.data import as_dataset, load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


class Tokens(nn.Module):
    """An Embedding fed the inputs as they come (a float input would fail) that records their dtype."""

    seen: set = set()

    def __init__(self, classes: int = 3, vocabulary: int = 12):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocabulary, 8), nn.Linear(8, classes)

    def forward(self, x):
        Tokens.seen.add(x.dtype)
        return self.head(self.embed(x).mean(1))


def _tokens(n=120, high=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, high, (n, 6), generator=g)
    return x, (x[:, 0] % 3)


@pytest.mark.parametrize("form", ["npz", "arrays", "tensors", "torch_dataset"])
def test_integer_inputs_stay_integer_from_every_source(tmp_path, form):
    x, y = _tokens()
    if form == "npz":
        np.savez(tmp_path / "t.npz", x=x.numpy().astype(np.int16), y=y.numpy())
        data = load_dataset(str(tmp_path / "t.npz"))
    elif form == "arrays":
        data = as_dataset((x.numpy().astype(np.uint8), y.numpy()))
    elif form == "tensors":
        data = as_dataset((x.int(), y))
    else:
        data = as_dataset(torch.utils.data.TensorDataset(x, y))
    assert data.x_train.dtype == torch.int64 and data.x_test.dtype == torch.int64
    assert torch.equal(torch.sort(torch.cat([data.x_train, data.x_test]).flatten()).values, torch.sort(x.flatten()).values)


def test_an_embedding_model_sweeps_and_fits_on_integer_inputs_and_both_agree():
    x, y = _tokens()
    Tokens.seen = set()
    record = inertia.sweep((x, y), Tokens, lr=[0.1], momentum=[0.9], steps=5, batch_size=16, seeds=1).records()[0]
    fitted = inertia.fit((x, y), Tokens, hyper={"lr": 0.1, "momentum": 0.9}, steps=record["best_step"],
                         batch_size=16, device="cpu")
    assert Tokens.seen == {torch.int64}
    assert fitted.record()["val_loss_mean"] == record["val_loss_mean"]


def test_a_model_that_takes_floats_gets_integer_inputs_as_floats():
    x, y = _tokens()
    record = inertia.sweep((x, y), "mlp", lr=[0.05], momentum=[0.0], steps=3, batch_size=16, seeds=1).records()[0]
    assert record["status"] == "ok"


def test_integer_inputs_out_of_the_embeddings_range_say_so():
    x, y = _tokens(high=20)
    for run in (lambda: inertia.sweep((x, y), Tokens, lr=[0.1], momentum=[0.0], steps=2, batch_size=16),
                lambda: inertia.fit((x, y), Tokens, steps=2, batch_size=16, device="cpu")):
        with pytest.raises(ValueError, match=r"integer inputs range over 0\.\.19, outside the model's Embedding "
                                             r"\(num_embeddings 12"):
            run()


def test_standardizing_integer_inputs_a_model_takes_is_refused_in_one_line_and_floats_are_standardized(tmp_path):
    x, y = _tokens()
    for run in (lambda: inertia.sweep((x, y), Tokens, lr=[0.1], momentum=[0.0], steps=2, batch_size=16,
                                      standardize=True),
                lambda: inertia.fit((x, y), Tokens, steps=2, batch_size=16, standardize=True, device="cpu")):
        with pytest.raises(ValueError, match=r"standardize: the inputs are integers \(int64"):
            run()
    record = inertia.sweep((x, y), "mlp", lr=[0.05], momentum=[0.0], steps=3, batch_size=16, seeds=1,
                           standardize=True).records()[0]   # an MLP takes them as floats: standardized
    assert record["status"] == "ok"


def _diabetes_like(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x @ torch.tensor([40.0, -20.0, 10.0, 5.0]) + 180).round().clamp(25, 346)
    return x, y


def test_whole_float_targets_with_many_values_warn_naming_loss_mse():
    x, y = _diabetes_like()
    with pytest.warns(UserWarning, match="--loss mse") as caught:
        data = as_dataset((x, y))
    assert data.task == "classification" and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_dataset((x, (x[:, 0] > 0).float()))      # labels 0/1 as floats: no warning


def test_an_explicit_regression_loss_makes_a_regression_of_whole_float_targets():
    x, y = _diabetes_like()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = inertia.sweep((x, y), "mlp", loss="mse", lr=[1e-3], momentum=[0.0], steps=5, batch_size=16,
                                seeds=1, standardize=True)
        record = results.records()[0]
        fitted = inertia.fit((x, y), "mlp", loss="mse", hyper={"lr": 1e-3, "momentum": 0.0}, steps=record["best_step"],
                             batch_size=16, standardize=True, device="cpu")
    assert record["val_rmse_mean"] > 10 and record.get("val_accuracy_mean") is None
    assert fitted.record()["val_rmse_mean"] == record["val_rmse_mean"]
    # a Dataset already read as classes goes back to its original values
    data = as_dataset((x.numpy(), y.numpy()), task="classification")
    regression = as_dataset(data, task="regression")
    assert regression.task == "regression" and regression.y_train.is_floating_point()
    assert float(torch.cat([regression.y_train, regression.y_test]).sum()) == pytest.approx(float(y.sum()))


class PerStep(nn.Module):
    def __init__(self, features: int, classes: int):
        super().__init__()
        self.rnn, self.head = nn.GRU(features, 8, batch_first=True), nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_a_filled_features_that_does_not_fit_a_sequence_names_the_shape_and_the_option():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 20, 4, generator=g), torch.randint(0, 3, (60,), generator=g)
    with pytest.raises(ValueError) as info:
        inertia.sweep((x, y), PerStep, lr=[0.1], momentum=[0.0], steps=2, batch_size=16)
    message = str(info.value)
    assert "\n" not in message and "[2, 20, 4]" in message and "features was filled as 80" in message
    assert "--model-arg features=N" in message
    results = inertia.sweep((x, y), PerStep, lr=[0.1], momentum=[0.0], steps=2, batch_size=16, seeds=1,
                            model_args={"features": 4})
    assert results.records()[0]["status"] == "ok"


def test_a_model_that_fails_on_a_real_example_names_the_model_shape_dtype_and_first_line():
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x):
            if x[0, 0] > -100:     # real data: always; the random check inputs could not tell
                raise RuntimeError("no thanks\nmore detail")
            return self.a(x)

    x, y = _tokens()
    with pytest.raises(ValueError) as info:
        inertia.sweep((x.float(), y), lambda: Picky(), lr=[0.1], momentum=[0.0], steps=2, batch_size=16)
    message = str(info.value)
    assert "\n" not in message and "[2, 6]" in message and "float32" in message
    assert "RuntimeError: no thanks" in message and "more detail" not in message
