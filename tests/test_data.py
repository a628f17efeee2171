"""Datasets: shapes and dtypes, the MNIST-1D cache, splits, user files and bad input (more in test_data_any.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inertia.data import DATASETS, Dataset, load_dataset


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INERTIA_CACHE", str(cache))
        np.random.seed(123)
        expected = np.random.rand()
        np.random.seed(123)
        first = load_dataset("mnist1d")  # generates
        # mnist1d seeds numpy's global generator; load_dataset puts it back
        assert np.random.rand() == expected
        yield cache, first


def test_mnist1d_matches_the_package_and_is_cached(mnist1d_cache, monkeypatch):
    cache, data = mnist1d_cache
    assert (cache / "mnist1d.npz").is_file()
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.y_train.shape == (4000,) and data.y_test.shape == (1000,)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.features == 40 and data.classes == 10
    # the cached copy equals what the mnist1d package generates with its canonical arguments
    from mnist1d.data import get_dataset_args, make_dataset

    raw = make_dataset(get_dataset_args())
    np.testing.assert_allclose(data.x_train.numpy(), raw["x"].astype(np.float32))
    np.testing.assert_array_equal(data.y_test.numpy(), raw["y_test"])
    monkeypatch.setenv("INERTIA_CACHE", str(cache))
    again = load_dataset("mnist1d")
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)


def test_digits_is_scaled_and_split_by_seed():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert a.features == 64 and a.classes == 10
    assert len(a.y_train) + len(a.y_test) == 1797
    assert abs(len(a.y_test) - 0.2 * 1797) <= 10
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    assert torch.equal(a.x_train, b.x_train)
    # the same examples as scikit-learn's load_digits, scaled by 1/16
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ours = torch.cat([a.x_train, a.x_test]) * 16
    ours_y = torch.cat([a.y_train, a.y_test])
    theirs = torch.from_numpy(bunch.data).float()
    key = lambda x, y: sorted(map(tuple, torch.cat([x, y[:, None].float()], 1).tolist()))
    assert key(ours, ours_y) == key(theirs, torch.from_numpy(bunch.target))
    assert not torch.equal(a.y_test, c.y_test)
    # stratified: every class appears in the test set in ~20 % proportion
    counts = torch.bincount(a.y_test, minlength=10)
    assert int(counts.min()) >= 33


def test_npz_with_split_and_without(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "given.npz"
    np.savez(path, x_train=rng.normal(size=(30, 3)), y_train=rng.integers(0, 3, 30),
             x_test=rng.normal(size=(10, 3)), y_test=np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2]))
    d = load_dataset(str(path))
    assert isinstance(d, Dataset) and d.x_train.shape == (30, 3) and d.classes == 3
    assert d.x_train.dtype == torch.float32 and d.y_test.dtype == torch.int64

    path = tmp_path / "xy.npz"
    x = np.arange(100 * 2, dtype=np.float64).reshape(100, 2)
    np.savez(path, x=x, y=np.arange(100) % 4)
    d = load_dataset(str(path), seed=3)
    assert len(d.y_train) == 80 and len(d.y_test) == 20
    # the split is a partition of the examples
    rows = sorted(d.x_train[:, 0].tolist() + d.x_test[:, 0].tolist())
    assert rows == x[:, 0].tolist()


def test_csv_with_header(tmp_path):
    path = tmp_path / "data.csv"
    lines = ["a,b,label"] + [f"{i},{i * 0.5},{i % 2}" for i in range(50)]
    path.write_text("\n".join(lines) + "\n")
    d = load_dataset(str(path))
    assert d.features == 2 and d.classes == 2
    assert len(d.y_train) == 40 and len(d.y_test) == 10
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert torch.equal(y, (x[:, 0].long() % 2))


@pytest.mark.parametrize("bad", ["nosuchset", "missing.npz", "missing.csv"])
def test_unknown_name_or_missing_file_lists_known_names(bad, tmp_path):
    with pytest.raises(ValueError) as info:
        load_dataset(str(tmp_path / bad) if "." in bad else bad)
    message = str(info.value)
    assert bad in message
    for name in DATASETS:
        assert name in message


def test_bad_arrays_are_rejected(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="x_train"):
        load_dataset(str(path))
    path = tmp_path / "mismatch.npz"
    np.savez(path, x_train=np.zeros((4, 2)), y_train=np.zeros(3, dtype=int),
             x_test=np.zeros((2, 2)), y_test=np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="y_train has 3"):
        load_dataset(str(path))
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((10, 2)), y=np.linspace(0, 1, 10))
    assert load_dataset(str(path)).task == "regression"  # float targets: regression unless told
    with pytest.raises(ValueError, match="integer"):
        load_dataset(str(path), task="classification")
    path = tmp_path / "text.csv"
    path.write_text("1,2,0\n3,x,1\n")
    with pytest.raises(ValueError, match="line 2"):
        load_dataset(str(path))
