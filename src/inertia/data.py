"""Datasets for training and sweeps: MNIST-1D (generated locally), scikit-learn's digits, user data.

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
- a path to a ``.csv`` file: one example per row, the last column the target (a
  number, or a text label mapped to a class), an optional header row; split
  80/20 with ``seed``;
- a path to an image folder laid out as torchvision's ``ImageFolder``,
  ``root/class_name/*.png`` (split 80/20 with ``seed``), or ``root/train/class_name/*``
  with ``root/test/...`` (or ``root/val/...``); read with Pillow, scaled to [0, 1],
  ``[n, C, H, W]`` with C = 1 when every image is grayscale, else 3 (RGB);
- (:func:`as_dataset`) a ``torch.utils.data.Dataset`` yielding ``(x, y)`` pairs,
  stacked into tensors and split 80/20 with ``seed``, a pair ``(train, test)`` of
  them, or arrays/tensors ``(x, y)`` or ``(x_train, y_train, x_test, y_test)``.

Inputs keep their shape (``[n, 8, 8]`` stays so, images are ``[n, C, H, W]``) and
are used as given: :func:`standardize` is separate, to be fitted on a training part only.
Targets: integer labels (or whole numbers) give ``task="classification"``; other numbers give
``task="regression"`` (``[n]`` or ``[n, outputs]``). ``task=`` forces either. Integer labels are
class indices: none negative, and none far beyond the number of classes K (each below
``max(1000, 10 K)``), else a ``ValueError`` names the data and the labels. Text labels, and
integer labels that skip values ({3, 7}, {1, 2, 3}), are mapped to 0 .. K-1 in sorted order and
the originals kept in ``Dataset.label_names``.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

DATASETS: dict[str, str] = {
    "mnist1d": "MNIST-1D, generated locally: 4000 train / 1000 test, 40 features, 10 classes",
    "digits": "scikit-learn's 8x8 digits: 1797 examples, 64 features in [0, 1], 10 classes, 80/20 split by seed",
}

TEST_FRACTION = 0.2


TASKS = ("classification", "regression")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Dataset:
    """Train and test tensors: inputs ``[n, *input_shape]``, targets ``[n]`` or ``[n, outputs]``.

    Integer inputs (token ids, counts, raw pixel values) are int64, any other input float32: training
    hands integers to a model that takes them (an ``nn.Embedding``) and floats to any other
    (:func:`inertia.pipeline.input_dtype`).

    Classification targets are int64 class indices 0 .. ``classes`` − 1; class k
    stands for the original label ``label_names[k]`` when labels were mapped
    (``None``: the labels were already 0 .. K−1). Regression targets are float32.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str = "classification"
    label_names: tuple | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example's input, e.g. ``(40,)`` or ``(1, 28, 28)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def features(self) -> int:
        """The number of input values per example: the columns of 2-D data, the product of ``input_shape``
        otherwise (80 for sequences ``[n, 20, 4]``: a model that reads each step's 4 values takes
        ``--model-arg features=4``)."""
        return int(np.prod(self.input_shape))

    @property
    def classes(self) -> int:
        if self.task != "classification":
            raise ValueError(f"dataset {self.name!r} is a regression dataset: it has outputs, not classes")
        if self.label_names is not None:
            return len(self.label_names)
        return int(max(int(self.y_train.max()), int(self.y_test.max())) + 1)

    @property
    def outputs(self) -> int:
        """What a model must output per example: ``classes``, or the number of regression targets."""
        if self.task == "classification":
            return self.classes
        return 1 if self.y_train.dim() == 1 else int(self.y_train.shape[1])

    def __repr__(self) -> str:
        shape = f"features={self.features}" if len(self.input_shape) == 1 else f"input_shape={self.input_shape}"
        target = f"classes={self.classes}" if self.task == "classification" else f"regression, outputs={self.outputs}"
        text = f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, {shape}, {target}"
        if self.label_names is not None:
            shown = ", ".join(f"{k}: {v!r}" for k, v in enumerate(self.label_names[:10]))
            text += f", labels={{{shown}{', ...' if len(self.label_names) > 10 else ''}}}"
        return text + ")"


def cache_dir() -> Path:
    """Where generated datasets are cached: ``$INERTIA_CACHE`` or ``~/.cache/inertia``."""
    return Path(os.environ.get("INERTIA_CACHE") or Path.home() / ".cache" / "inertia")


def _known() -> str:
    return ", ".join(sorted(DATASETS)) + ", or a path to a .npz or .csv file or an image folder"


def _unknown(name: str, why: str) -> ValueError:
    return ValueError(f"dataset {name!r}: {why}; known datasets: {_known()}")


def _bad(name: str, why: str) -> ValueError:
    return ValueError(f"dataset {name!r}: {why}")


def _inputs(name: str, key: str, value: Any) -> np.ndarray:
    """Inputs ``[n, ...]`` (1-D input becomes one feature): integers as int64, anything else as float32, finite."""
    array = np.asarray(value)
    if array.ndim == 0:
        raise _bad(name, f"{key} must have an examples axis, got a scalar")
    if array.ndim == 1:
        array = array[:, None]
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise _bad(name, f"{key} must be numeric, got dtype {array.dtype}")
    if array.dtype.kind in "iu":
        if array.dtype == np.uint64 and array.size and array.max() >= 2**63:
            raise _bad(name, f"{key} holds integers above 2**63 - 1")
        return array.astype(np.int64)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise _bad(name, f"{key} holds NaN or inf")
    return array


MANY_CLASSES = 20


def _infer_task(name: str, targets: list[np.ndarray]) -> str:
    """Classification for text or integer targets and for float targets that are all whole numbers,
    else regression. Whole float targets with more than :data:`MANY_CLASSES` distinct values that are not
    the labels 0..K-1 (prices, counts, scores) are most likely a regression: a one-line warning says so."""
    if any(t.dtype.kind in "USO" for t in targets):
        return "classification"
    if all(t.dtype.kind in "biu" for t in targets):
        return "classification"
    if any(t.ndim == 2 and t.shape[1] > 1 for t in targets):
        return "regression"
    if not all(np.isfinite(t).all() and np.all(np.mod(t, 1) == 0) for t in targets):
        return "regression"
    values = np.unique(np.concatenate([t.ravel() for t in targets]))
    _check_indices(name, values)   # labels that cannot be classes: the error alone, without the warning
    if len(values) > MANY_CLASSES and not (values[0] == 0 and values[-1] == len(values) - 1):
        warnings.warn(f"dataset {name!r}: float targets with {len(values)} distinct whole values "
                      f"({values[0]:g}..{values[-1]:g}) are read as {len(values)} classes; for a regression "
                      "give --loss mse (loss='mse', or task='regression')", stacklevel=4)
    return "classification"


def _regression(name: str, targets: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = []
    for key, t in targets.items():
        if not np.issubdtype(t.dtype, np.number):
            raise _bad(name, f"{key} must hold numbers for regression, got dtype {t.dtype}")
        t = t.astype(np.float32)
        if not np.isfinite(t).all():
            raise _bad(name, f"{key} holds NaN or inf")
        out.append(t)
    return out


def _labels(name: str, key: str, t: np.ndarray, text: bool) -> np.ndarray:
    """One part's class labels as a 1-D int64 or str array, or a ValueError naming ``key``."""
    t = t[:, 0] if t.ndim == 2 and t.shape[1] == 1 else t
    if t.ndim != 1:
        raise _bad(name, f"{key} must be 1-D [examples] for classification, got shape {t.shape}")
    if text:
        return t.astype(str)
    if t.dtype.kind in "biu":
        return t.astype(np.int64)
    whole = np.issubdtype(t.dtype, np.floating) and np.isfinite(t).all() and np.all(np.mod(t, 1) == 0)
    if not whole or (t.size and np.abs(t).max() >= 2.0**63):
        raise _bad(name, f"{key} must hold integer class labels for task='classification'")
    return t.astype(np.int64)


def _check_classes(name: str, labels: np.ndarray) -> None:
    """Classification needs two classes at least: with one, every prediction is right and nothing is learnt."""
    if len(labels) < 2:
        raise _bad(name, f"the targets hold one class only ({labels[0].item()!r}); classification needs two or more")


LABEL_FLOOR = 1000
"""Integer class labels below this are always taken; above it, only below 10 × the number of distinct labels."""

_RELABEL = "number the classes 0 .. K-1, or for a regression give --loss mse (loss='mse', or task='regression')"


def _few(values: np.ndarray) -> str:
    """Up to three whole numbers, and how many more."""
    shown = ", ".join(str(int(v)) for v in values[:3].tolist())
    return shown + (f" and {len(values) - 3} more" if len(values) > 3 else "")


def _check_indices(name: str, labels: np.ndarray) -> None:
    """Integer class labels are class indices: never negative, and none far beyond the number of classes K
    (at most ``max(LABEL_FLOOR, 10 K) − 1``); ``labels`` sorted and distinct. A negative label or one such
    as 10**12 is most likely not a class (an id, a count, a signed regression target)."""
    negative = labels[labels < 0]
    if negative.size:
        raise _bad(name, f"the targets hold negative class labels ({_few(negative)}); class labels are indices "
                         f"0, 1, ...: {_RELABEL}")
    bound = max(LABEL_FLOOR, 10 * len(labels))
    far = labels[labels >= bound][::-1]
    if far.size:
        raise _bad(name, f"the targets hold class labels far beyond their {len(labels)} classes ({_few(far)}; "
                         f"labels must be below {bound:,}): {_RELABEL}")


def _classification(name: str, targets: dict[str, np.ndarray]) -> tuple[list[np.ndarray], tuple | None]:
    """Class indices 0 .. K−1, and the original labels (sorted) unless they were already 0 .. K−1.

    Text labels, and integer labels that skip values ({3, 7}, {1, 2, 3}), are mapped through their
    sorted unique values; integer labels must be indices (:func:`_check_indices`).
    """
    text = any(t.dtype.kind in "USO" for t in targets.values())
    checked = [_labels(name, key, t, text) for key, t in targets.items()]
    labels = np.unique(np.concatenate(checked))
    _check_classes(name, labels)
    if not text:
        _check_indices(name, labels)
    indices = [np.searchsorted(labels, t).astype(np.int64) for t in checked]
    if not text and labels[0] == 0 and labels[-1] == len(labels) - 1:
        return indices, None
    return indices, tuple(labels.tolist())


def _make(name: str, x_train, y_train, x_test, y_test, task: str | None = None) -> Dataset:
    xs = {"x_train": _inputs(name, "x_train", x_train), "x_test": _inputs(name, "x_test", x_test)}
    ys = {"y_train": np.asarray(y_train), "y_test": np.asarray(y_test)}
    for part in ("train", "test"):
        x, y = xs[f"x_{part}"], ys[f"y_{part}"]
        if y.ndim not in (1, 2):
            raise _bad(name, f"y_{part} must be [examples] or [examples, outputs], got shape {y.shape}")
        if len(x) != len(y):
            raise _bad(name, f"x_{part} has {len(x)} examples but y_{part} has {len(y)}")
        if len(y) == 0:
            raise _bad(name, f"the {part} set is empty")
    if xs["x_train"].shape[1:] != xs["x_test"].shape[1:]:
        raise _bad(name, f"x_train examples have shape {xs['x_train'].shape[1:]} but x_test examples "
                         f"have {xs['x_test'].shape[1:]}")
    task = _infer_task(name, list(ys.values())) if task is None else task
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got task={task!r}")
    label_names = None
    if task == "regression":
        targets = _regression(name, ys)
        if targets[0].shape[1:] != targets[1].shape[1:]:
            raise _bad(name, f"y_train has {targets[0].shape[1:]} outputs per example but y_test has "
                             f"{targets[1].shape[1:]}")
    else:
        targets, label_names = _classification(name, ys)
    tensors = [torch.from_numpy(np.ascontiguousarray(a))
               for a in (xs["x_train"], targets[0], xs["x_test"], targets[1])]
    return Dataset(name, *tensors, task=task, label_names=label_names)


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


def _split_pair(name: str, x: Any, y: Any, seed: int, task: str | None) -> Dataset:
    """``(x, y)`` checked, then split 80/20 with ``seed``."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise _bad(name, f"x and y must have an examples axis, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise _bad(name, f"x has {len(x)} examples but y has {len(y)}")
    if len(y) == 0:
        raise _bad(name, "the dataset is empty")
    return _make(name, *_split(x, y, seed), task=task)


def _npz(path: Path, seed: int, task: str | None) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                return _make(str(path), f["x_train"], f["y_train"], f["x_test"], f["y_test"], task=task)
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
    return _split_pair(str(path), x, y, seed, task)


def _csv_rows(path: Path) -> tuple[list[list[float]], list[str]]:
    """Feature rows and label cells; a first line whose features are not numbers is a header."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise _bad(str(path), f"cannot read it ({error})") from error
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise _bad(str(path), "the file is empty")
    delimiter = "," if "," in lines[0] else None
    rows, labels = [], []
    for number, line in enumerate(lines, start=1):
        cells = [c.strip() for c in line.split(delimiter)]
        try:
            rows.append([float(c) for c in cells[:-1]])
        except ValueError:
            if number == 1:
                continue  # a header row
            raise _bad(str(path), f"line {number} holds a value that is not a number: {line[:80]!r}")
        labels.append(cells[-1].strip("\"'"))
    return rows, labels


def _csv(path: Path, seed: int, task: str | None) -> Dataset:
    rows, labels = _csv_rows(path)
    if not rows:
        raise _bad(str(path), "no data rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise _bad(str(path), f"rows have different numbers of columns: {sorted(w + 1 for w in widths)}")
    if widths.pop() < 1:
        raise _bad(str(path), "needs at least one feature column and the label column")
    try:
        y = np.asarray([float(v) for v in labels])
    except ValueError:
        y = np.asarray(labels)  # text labels: one class per distinct text
    return _split_pair(str(path), np.asarray(rows, dtype=np.float64), y, seed, task)


def _image(img: Any, rgb: bool) -> np.ndarray:
    """A PIL image as float32 ``[C, H, W]`` in [0, 1] (C = 3 if ``rgb`` else 1)."""
    array = np.asarray(img.convert("RGB" if rgb else "L"), dtype=np.float32) / 255.0
    return array.transpose(2, 0, 1) if rgb else array[None]


def _is_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")


def _grayscale(img: Any) -> bool:
    return img.mode in ("1", "L", "LA", "I", "I;16", "F")


def _open_images(name: str, files: list[Path]) -> list[Any]:
    try:
        from PIL import Image
    except ImportError as error:
        raise _bad(name, "reading an image folder needs Pillow (pip install pillow)") from error
    images = []
    for file in files:
        with Image.open(file) as img:
            img.load()
            images.append(img.copy())
        if images[-1].size != images[0].size:
            raise _bad(name, f"{file} is {images[-1].size[0]}x{images[-1].size[1]} but {files[0]} is "
                             f"{images[0].size[0]}x{images[0].size[1]}; all images must have one size")
    return images


def _folder_files(name: str, root: Path) -> tuple[list[Path], list[str]]:
    """Image files under ``root/class_name/`` and their class names (sorted, as torchvision's ImageFolder)."""
    files, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(file)
                labels.append(folder.name)
    if not files:
        raise _bad(name, f"no images in {root}/class_name/ (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    return files, labels


def _image_folder(root: Path, seed: int, task: str | None) -> Dataset:
    """``root/class_name/*`` split by ``seed``, or ``root/train/class_name/*`` and ``root/test`` (or ``val``)."""
    name = str(root)
    parts = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    test = parts.get("test") or parts.get("val")
    roots = [parts["train"], test] if "train" in parts and test is not None else [root]
    found = [_folder_files(name, r) for r in roots]
    images = [_open_images(name, files) for files, _ in found]
    rgb = not all(_grayscale(img) for part in images for img in part)
    arrays = [np.stack([_image(img, rgb) for img in part]) for part in images]
    if len(roots) == 1:
        return _split_pair(name, arrays[0], np.asarray(found[0][1]), seed, task)
    return _make(name, arrays[0], np.asarray(found[0][1]), arrays[1], np.asarray(found[1][1]), task=task)


def load_dataset(name_or_path: Any, seed: int = 0, *, task: str | None = None) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`), from a ``.npz`` / ``.csv`` file or an image folder.

    Anything else (tensors, arrays, a ``torch.utils.data.Dataset``) goes to
    :func:`as_dataset`. ``seed`` draws the train/test split where one is drawn
    (digits, user data without a given split). ``task`` forces "classification"
    or "regression" (default: from the targets). Raises ``ValueError`` naming the
    input (and listing the known datasets for an unknown name or a missing file).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        return as_dataset(name_or_path, seed, task=task)
    name = str(name_or_path)
    key = name.lower()
    if key == "mnist1d" or key == "mnist-1d":
        return _mnist1d() if task is None else _retask(_mnist1d(), task)
    if key == "digits":
        return _digits(seed) if task is None else _retask(_digits(seed), task)
    path = Path(name).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".npz", ".csv"):
        if not path.is_file():
            raise _unknown(name, "no such file")
        return _npz(path, seed, task) if suffix == ".npz" else _csv(path, seed, task)
    if path.is_dir():
        return _image_folder(path, seed, task)
    if path.exists():
        raise _unknown(name, "unsupported file type (use .npz or .csv, or an image folder)")
    raise _unknown(name, "unknown dataset")


def _retask(data: Dataset, task: str) -> Dataset:
    """``data`` as a ``task`` dataset; mapped class labels go back to their original values first."""
    if task == data.task:
        return data
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    if data.label_names is not None:
        names = np.asarray(data.label_names)
        y_train, y_test = names[y_train], names[y_test]
    return _make(data.name, data.x_train.numpy(), y_train, data.x_test.numpy(), y_test, task=task)


def _array(value: Any) -> Any:
    """A tensor as a NumPy array (on the CPU, bfloat16/half as float32); anything else as is."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() and value.dtype != torch.float64 else value).numpy()
    return value


def _example(name: str, index: int, item: Any) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise _bad(name, f"item {index} must be an (input, target) pair, got {type(item).__name__}")
    x, y = item
    if _is_image(x):
        x = _image(x, rgb=not _grayscale(x))
    return np.asarray(_array(x)), _array(y)


def _from_torch(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """A map-style ``torch.utils.data.Dataset`` of ``(x, y)`` pairs stacked into two arrays."""
    name = type(dataset).__name__
    tensors = getattr(dataset, "tensors", None)
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(tensors) == 2:
        return _array(tensors[0]), _array(tensors[1])
    try:
        n = len(dataset)
    except TypeError as error:
        raise _bad(name, "a torch Dataset must be map-style, with __len__ and __getitem__") from error
    if n == 0:
        raise _bad(name, "the dataset is empty")
    pairs = [_example(name, i, dataset[i]) for i in range(n)]
    for i, (x, _) in enumerate(pairs):
        if x.shape != pairs[0][0].shape:
            raise _bad(name, f"item {i}'s input has shape {x.shape} but item 0's has {pairs[0][0].shape}")
    return np.stack([x for x, _ in pairs]), np.asarray([y for _, y in pairs])


def as_dataset(data: Any, seed: int = 0, *, task: str | None = None, name: str | None = None) -> Dataset:
    """A :class:`Dataset` from whatever the user has.

    - a :class:`Dataset` (returned as is, or converted to ``task``);
    - a dataset name or path (see :func:`load_dataset`);
    - a ``torch.utils.data.Dataset`` of ``(x, y)`` pairs (stacked; split 80/20 by
      ``seed``), or a pair ``(train, test)`` of them;
    - arrays or tensors of any shape: ``(x, y)`` (split 80/20 by ``seed``) or
      ``(x_train, y_train, x_test, y_test)``.
    """
    if isinstance(data, Dataset):
        return data if task is None else _retask(data, task)
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(data, seed, task=task)
    if isinstance(data, torch.utils.data.Dataset):
        return _split_pair(name or type(data).__name__, *_from_torch(data), seed, task)
    if not isinstance(data, (tuple, list)):
        raise ValueError(f"data must be a Dataset, a name or path, a torch Dataset, (x, y) or "
                         f"(x_train, y_train, x_test, y_test); got {type(data).__name__}")
    if len(data) == 2 and all(isinstance(d, torch.utils.data.Dataset) for d in data):
        label = name or type(data[0]).__name__
        return _make(label, *_from_torch(data[0]), *_from_torch(data[1]), task=task)
    if len(data) == 2:
        return _split_pair(name or "arrays", *map(_array, data), seed, task)
    if len(data) == 4:
        return _make(name or "arrays", *map(_array, data), task=task)
    raise ValueError(f"data must be (x, y) or (x_train, y_train, x_test, y_test), got {len(data)} items")


class Standardizer:
    r"""``z = (x − mean) / std`` with mean and std (population, ``ddof=0``) from one training part.

    The statistics are per index of axis 1 over all other axes: per feature for
    ``[n, features]``, per channel for images ``[n, C, H, W]`` or sequences
    ``[n, C, L]`` (as scikit-learn's ``StandardScaler`` for 2-D data). A constant
    feature keeps std 1. Fit on the training part only, never on the validation
    or test part: their statistics would leak into training.
    Applies to any tensor whose trailing axes match, e.g. a ``[members, B, ...]`` batch.
    """

    def __init__(self, mean: Tensor, std: Tensor):
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x: Tensor) -> "Standardizer":
        x = torch.as_tensor(x)
        if x.dim() < 2 or len(x) == 0:
            raise ValueError(f"x must be a non-empty [n, features, ...] tensor, got shape {tuple(x.shape)}")
        axes = [0, *range(2, x.dim())]
        wide = x.double()
        mean = wide.mean(axes, keepdim=True)[0]
        std = wide.std(axes, correction=0, keepdim=True)[0]
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(mean.to(x.dtype), std.to(x.dtype))

    def __call__(self, x: Tensor) -> Tensor:
        return (torch.as_tensor(x) - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Standardizer(shape={tuple(self.mean.shape)})"


def standardize(x_train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """``(x_train, *others)`` standardized with statistics of ``x_train`` alone (see :class:`Standardizer`).

    In a sweep, call it per fold with that fold's training part first: never fit on the validation part.
    """
    scaler = Standardizer.fit(x_train)
    return tuple(scaler(x) for x in (x_train, *others))


__all__ = ["Dataset", "DATASETS", "TASKS", "load_dataset", "as_dataset", "cache_dir", "Standardizer", "standardize"]
