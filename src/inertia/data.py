"""Datasets for training and sweeps: MNIST-1D (generated locally), scikit-learn's digits, user arrays.

Nothing is ever downloaded.

- ``"mnist1d"``: MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated
  with the ``mnist1d`` package's ``make_dataset(get_dataset_args())`` -- the
  canonical settings (generator seed 42): 4000 train / 1000 test examples, 40
  features, 10 classes. The package standardizes the whole set to mean 0 and
  standard deviation 1; the features are used as it gives them (the published
  MLP reference, ~68 % test accuracy, uses them the same way). The ``url`` in
  ``get_dataset_args`` is never used: only ``make_dataset`` is called, which
  generates. The arrays are cached as ``mnist1d.npz`` under ``$INERTIA_CACHE``
  (default ``~/.cache/inertia``) so later loads take milliseconds. The ``seed``
  argument does not change MNIST-1D (its split is part of the benchmark).
- ``"digits"``: scikit-learn's bundled 8x8 digits (1797 examples, 64 features,
  10 classes), pixel values scaled to [0, 1] (divided by 16), a stratified
  80/20 train/test split drawn with ``seed``.
- a path to a ``.npz`` file with arrays ``x_train, y_train, x_test, y_test``, or
  ``x, y`` (then split 80/20 with ``seed``);
- a path to a ``.csv`` file: one example per row, the last column the integer
  class label, an optional header row; split 80/20 with ``seed``.

User features are used as given (no standardization). Labels must be integers
0 .. classes-1.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DATASETS: dict[str, str] = {
    "mnist1d": "MNIST-1D, generated locally: 4000 train / 1000 test, 40 features, 10 classes",
    "digits": "scikit-learn's 8x8 digits: 1797 examples, 64 features in [0, 1], 10 classes, 80/20 split by seed",
}

TEST_FRACTION = 0.2


@dataclass
class Dataset:
    """Train and test arrays: features float32 ``[n, features]``, labels int64 ``[n]``."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def classes(self) -> int:
        return int(max(int(self.y_train.max()), int(self.y_test.max())) + 1)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"features={self.features}, classes={self.classes})"
        )


def cache_dir() -> Path:
    """Where generated datasets are cached: ``$INERTIA_CACHE`` or ``~/.cache/inertia``."""
    return Path(os.environ.get("INERTIA_CACHE") or Path.home() / ".cache" / "inertia")


def _known() -> str:
    return ", ".join(sorted(DATASETS)) + ", or a path to a .npz or .csv file"


def _bad(name: str, why: str) -> ValueError:
    return ValueError(f"dataset {name!r}: {why}; known datasets: {_known()}")


def _make(name: str, x_train, y_train, x_test, y_test) -> Dataset:
    arrays = {}
    for key, value in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
        array = np.asarray(value)
        if key.startswith("x"):
            if array.ndim == 1:
                array = array[:, None]
            if array.ndim != 2:
                raise _bad(name, f"{key} must be 2-D [examples, features], got shape {array.shape}")
            if not np.issubdtype(array.dtype, np.number):
                raise _bad(name, f"{key} must be numeric, got dtype {array.dtype}")
            array = array.astype(np.float32)
            if not np.isfinite(array).all():
                raise _bad(name, f"{key} holds NaN or inf")
        else:
            if array.ndim != 1:
                raise _bad(name, f"{key} must be 1-D [examples], got shape {array.shape}")
            if array.size and not np.issubdtype(array.dtype, np.integer):
                if not np.issubdtype(array.dtype, np.number) or not np.all(np.mod(array, 1) == 0):
                    raise _bad(name, f"{key} must hold integer class labels")
            array = array.astype(np.int64)
            if array.size and array.min() < 0:
                raise _bad(name, f"{key} holds a negative class label ({array.min()})")
        arrays[key] = array
    for part in ("train", "test"):
        if len(arrays[f"x_{part}"]) != len(arrays[f"y_{part}"]):
            raise _bad(
                name,
                f"x_{part} has {len(arrays[f'x_{part}'])} examples but y_{part} has {len(arrays[f'y_{part}'])}",
            )
        if len(arrays[f"y_{part}"]) == 0:
            raise _bad(name, f"the {part} set is empty")
    if arrays["x_train"].shape[1] != arrays["x_test"].shape[1]:
        raise _bad(
            name,
            f"x_train has {arrays['x_train'].shape[1]} features but x_test has {arrays['x_test'].shape[1]}",
        )
    return Dataset(name, *(torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in
                           ("x_train", "y_train", "x_test", "y_test")))


def _split(x: np.ndarray, y: np.ndarray, seed: int, stratify: bool = False):
    """A reproducible 80/20 train/test split (stratified by label when asked)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    if n < 2:
        raise ValueError(f"need at least 2 examples to split into train and test, got {n}")
    if stratify:
        test = []
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            test.extend(members[: int(round(len(members) * TEST_FRACTION))])
        test_mask = np.zeros(n, dtype=bool)
        test_mask[np.asarray(test, dtype=np.int64)] = True
        train_idx = rng.permutation(np.flatnonzero(~test_mask))
        test_idx = rng.permutation(np.flatnonzero(test_mask))
    else:
        order = rng.permutation(n)
        n_test = min(max(1, int(round(n * TEST_FRACTION))), n - 1)
        test_idx, train_idx = order[:n_test], order[n_test:]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def _mnist1d() -> Dataset:
    path = cache_dir() / "mnist1d.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return _make("mnist1d", f["x_train"], f["y_train"], f["x_test"], f["y_test"])
        except Exception:  # a damaged cache is rebuilt
            pass
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds numpy's and Python's global generators; put them back afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(get_dataset_args())  # generates; never touches args.url
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = dict(x_train=raw["x"], y_train=raw["y"], x_test=raw["x_test"], y_test=raw["y_test"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs time
    return _make("mnist1d", **arrays)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (``load_digits``): read its data file directly when it is there.

    Importing ``sklearn.datasets`` takes seconds; the file it reads
    (``sklearn/datasets/data/digits.csv.gz``, 64 pixel columns then the label)
    takes milliseconds. Falls back to ``load_digits()``.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root) / "datasets" / "data" / "digits.csv.gz"
            if path.is_file():
                table = np.loadtxt(path, delimiter=",")
                if table.shape == (1797, 65):
                    return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target.astype(np.int64)


def _digits(seed: int) -> Dataset:
    data, target = _digits_arrays()
    x = data.astype(np.float32) / 16.0
    return _make("digits", *_split(x, target, seed, stratify=True))


def _npz(path: Path, seed: int) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                return _make(str(path), f["x_train"], f["y_train"], f["x_test"], f["y_test"])
            if {"x", "y"} <= keys:
                x, y = np.asarray(f["x"]), np.asarray(f["y"])
            else:
                raise _bad(
                    str(path),
                    f"a .npz file needs arrays x_train, y_train, x_test, y_test (or x, y); it has {sorted(keys)}",
                )
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError) and str(error).startswith("dataset "):
            raise
        raise _bad(str(path), f"cannot read it as .npz ({error})") from error
    if x.ndim == 1:
        x = x[:, None]
    if len(x) != len(y):
        raise _bad(str(path), f"x has {len(x)} examples but y has {len(y)}")
    return _make(str(path), *_split(x, y, seed))


def _csv(path: Path, seed: int) -> Dataset:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise _bad(str(path), f"cannot read it ({error})") from error
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise _bad(str(path), "the file is empty")
    delimiter = "," if "," in lines[0] else None
    rows = []
    for number, line in enumerate(lines, start=1):
        cells = line.split(delimiter)
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            if number == 1:
                continue  # a header row
            raise _bad(str(path), f"line {number} holds a value that is not a number: {line[:80]!r}")
    if not rows:
        raise _bad(str(path), "no numeric rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise _bad(str(path), f"rows have different numbers of columns: {sorted(widths)}")
    if widths.pop() < 2:
        raise _bad(str(path), "needs at least one feature column and the label column")
    table = np.asarray(rows, dtype=np.float64)
    return _make(str(path), *_split(table[:, :-1], table[:, -1], seed))


def load_dataset(name_or_path: str, seed: int = 0) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`) or from a ``.npz`` / ``.csv`` file.

    ``seed`` draws the train/test split where one is drawn (digits, user files
    without a given split). Raises ``ValueError`` naming the input and listing
    the known datasets for an unknown name, a missing file or bad arrays.
    """
    name = str(name_or_path)
    key = name.lower()
    if key == "mnist1d" or key == "mnist-1d":
        return _mnist1d()
    if key == "digits":
        return _digits(seed)
    path = Path(name).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".npz", ".csv"):
        if not path.is_file():
            raise _bad(name, "no such file")
        return _npz(path, seed) if suffix == ".npz" else _csv(path, seed)
    if path.exists():
        raise _bad(name, "unsupported file type (use .npz or .csv)")
    raise _bad(name, "unknown dataset")


__all__ = ["Dataset", "DATASETS", "load_dataset", "cache_dir"]
