"""Any data: torch Datasets, tensors of any shape, regression, label mapping, image folders, standardize."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from inertia.data import Standardizer, as_dataset, load_dataset, standardize


def rows(x):
    """The examples of x as a sorted list of tuples (to compare splits as partitions)."""
    return sorted(map(tuple, np.asarray(x).reshape(len(x), -1).tolist()))


class Pairs(torch.utils.data.Dataset):
    """A map-style dataset that is not a TensorDataset."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_tensor_dataset_of_images_keeps_shape_and_is_split_by_seed():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(50, 1, 8, 8, generator=g), torch.randint(0, 4, (50,), generator=g)
    d = as_dataset(TensorDataset(x, y), seed=2)
    assert d.input_shape == (1, 8, 8) and d.x_train.shape == (40, 1, 8, 8) and d.features == 64
    assert d.task == "classification" and d.classes == 4 and d.y_train.dtype == torch.int64
    assert rows(torch.cat([d.x_train, d.x_test])) == rows(x)
    assert torch.equal(as_dataset(TensorDataset(x, y), seed=2).x_test, d.x_test)
    assert not torch.equal(as_dataset(TensorDataset(x, y), seed=3).x_test, d.x_test)
    # any map-style dataset gives the same as its tensors
    other = as_dataset(Pairs(x, y), seed=2)
    assert torch.equal(other.x_train, d.x_train) and torch.equal(other.y_test, d.y_test)


def test_arrays_of_any_shape_and_a_given_split():
    x = np.random.default_rng(0).normal(size=(30, 8, 8))
    d = as_dataset((x, np.arange(30) % 3))
    assert d.input_shape == (8, 8) and d.x_train.dtype == torch.float32
    assert "input_shape=(8, 8)" in repr(d)
    given = as_dataset((torch.tensor(x[:20]), torch.arange(20) % 3, torch.tensor(x[20:]), torch.arange(10) % 3))
    torch.testing.assert_close(given.x_test, torch.tensor(x[20:], dtype=torch.float32))
    pair = as_dataset((Pairs(torch.tensor(x[:20]), np.arange(20) % 3), Pairs(torch.tensor(x[20:]), np.arange(10) % 3)))
    assert torch.equal(pair.x_train, given.x_train) and torch.equal(pair.y_test, given.y_test)
    assert load_dataset((x, np.arange(30) % 3)).input_shape == (8, 8)  # load_dataset takes them too


def test_regression_targets_one_and_many_outputs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    one = as_dataset((x, x @ [1.0, 2.0, 3.0]))
    assert one.task == "regression" and one.outputs == 1 and one.y_train.dtype == torch.float32
    many = as_dataset((torch.tensor(x), torch.tensor(x[:, :2] * 0.5)))
    assert many.task == "regression" and many.outputs == 2 and many.y_train.shape == (32, 2)
    assert "regression, outputs=2" in repr(many)
    with pytest.raises(ValueError, match="regression"):
        many.classes
    whole = as_dataset((x, np.round(x[:, 0] * 3)), task="regression")  # whole numbers, but told
    assert whole.task == "regression"


@pytest.mark.parametrize("labels,names", [((1, 2, 3), (1, 2, 3)), ((0, 5, 9), (0, 5, 9)), ((3, 999), (3, 999))])
def test_labels_that_are_not_0_to_k_are_mapped_and_the_mapping_kept(labels, names):
    y = np.array(labels * 10)
    x = np.arange(len(y), dtype=np.float64)
    d = as_dataset((x, y))
    assert d.classes == len(names) and d.label_names == names
    for part_x, part_y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        original = np.array(labels * 10)[part_x[:, 0].long().numpy()]
        assert [names[k] for k in part_y.tolist()] == original.tolist()
    assert f"labels={{0: {names[0]!r}" in repr(d)
    assert as_dataset((x, np.arange(len(y)) % 3)).label_names is None  # 0 .. K-1: kept as they are


@pytest.mark.parametrize("labels,shown", [
    ((-1, 1), "negative class labels (-1)"),
    ((-7, -3, -2, -1, 0, 4), "negative class labels (-7, -3, -2 and 1 more)"),
    ((0, 10**12), "far beyond their 2 classes (1000000000000; labels must be below 1,000)"),
    ((0, 1, 1000), "far beyond their 3 classes (1000; labels must be below 1,000)"),
    (tuple(range(120)) + (1300, 5000), "far beyond their 122 classes (5000, 1300; labels must be below 1,220)"),
])
def test_negative_labels_and_labels_far_beyond_the_classes_are_refused_naming_them(labels, shown):
    y = np.array(labels * 10)
    x = np.arange(len(y), dtype=np.float64)
    for targets in (y, y.astype(np.float64), torch.tensor(y)):
        with pytest.raises(ValueError, match="^dataset 'arrays': the targets hold ") as error:
            as_dataset((x, targets))
        assert shown in str(error.value) and "--loss mse" in str(error.value) and "\n" not in str(error.value)
    assert as_dataset((x, y), task="regression").task == "regression"    # told: values, not labels


def test_csv_text_labels_are_classes_in_sorted_order(tmp_path):
    path = tmp_path / "pets.csv"
    kinds = ["dog", "cat", "fish"]
    path.write_text("w,h,kind\n" + "".join(f"{i},{i % 7},{kinds[i % 3]}\n" for i in range(30)))
    d = load_dataset(str(path))
    assert d.label_names == ("cat", "dog", "fish") and d.classes == 3
    x, y = torch.cat([d.x_train, d.x_test]), torch.cat([d.y_train, d.y_test])
    assert [d.label_names[k] for k in y.tolist()] == [kinds[int(i) % 3] for i in x[:, 0].tolist()]
    assert "labels={0: 'cat', 1: 'dog', 2: 'fish'}" in repr(d)


def write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_reads_classes_as_torchvision_imagefolder(tmp_path):
    rng = np.random.default_rng(3)
    pixels = {}
    for c in ("zebra", "ant"):
        for i in range(5):
            pixels[(c, i)] = rng.integers(0, 256, (6, 4), dtype=np.uint8)
            write_png(tmp_path / "imgs" / c / f"{i}.png", pixels[(c, i)])
    (tmp_path / "imgs" / "ant" / "notes.txt").write_text("not an image")
    d = load_dataset(str(tmp_path / "imgs"), seed=0)
    assert d.input_shape == (1, 6, 4) and d.label_names == ("ant", "zebra")
    assert len(d.y_train) == 8 and len(d.y_test) == 2
    x, y = torch.cat([d.x_train, d.x_test]), torch.cat([d.y_train, d.y_test])
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    expected = sorted((d.label_names.index(c), p.ravel().tolist()) for (c, _), p in pixels.items())
    got = sorted((int(k), (img * 255).round().int().ravel().tolist()) for k, img in zip(y, x))
    assert got == expected


def test_image_folder_with_train_and_test_and_colour(tmp_path):
    rgb = np.zeros((5, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    write_png(tmp_path / "train" / "red" / "a.png", rgb)
    write_png(tmp_path / "train" / "grey" / "b.png", np.full((5, 5), 128, dtype=np.uint8))
    write_png(tmp_path / "test" / "red" / "c.png", rgb)
    d = load_dataset(tmp_path)
    assert d.x_train.shape == (2, 3, 5, 5) and d.x_test.shape == (1, 3, 5, 5)
    assert d.label_names == ("grey", "red")
    red = d.x_test[0]
    assert torch.equal(red[0], torch.ones(5, 5)) and torch.equal(red[1], torch.zeros(5, 5))
    assert int(d.y_test[0]) == 1


@pytest.mark.parametrize("data,message", [
    ((np.zeros((5, 2)), np.zeros(4, dtype=int)), "x has 5 examples but y has 4"),
    ((np.zeros((5, 2)), np.linspace(0, 1, 5)), "y_train must hold integer class labels"),
    ((np.array([[0.0], [np.nan], [1.0], [2.0]]), np.arange(4)), "holds NaN"),
    ((np.zeros((0, 2)), np.zeros(0)), "empty"),
    ((TensorDataset(torch.zeros(0, 2), torch.zeros(0)),), "empty"),
    ((np.zeros((4, 2)), np.arange(4), np.zeros((2, 3)), np.arange(2)), "x_test examples have"),
])
def test_bad_input_is_a_one_line_error_naming_the_argument(data, message):
    task = "classification" if "integer" in message else None
    with pytest.raises(ValueError, match=message) as info:
        as_dataset(data[0] if len(data) == 1 else data, task=task)
    assert "\n" not in str(info.value)


def test_a_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_dataset(tmp_path / "empty")


def test_standardize_matches_sklearn_and_uses_the_training_part_only():
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    train, valid = rng.normal(3, 2, size=(50, 4)), rng.normal(0, 1, size=(10, 4))
    train[:, 2] = 7.0  # constant feature
    scaler = StandardScaler().fit(train)
    z_train, z_valid = standardize(torch.tensor(train), torch.tensor(valid))
    np.testing.assert_allclose(z_train.numpy(), scaler.transform(train), atol=1e-12)
    np.testing.assert_allclose(z_valid.numpy(), scaler.transform(valid), atol=1e-12)


def test_standardizer_is_per_channel_for_images():
    rng = np.random.default_rng(5)
    images = rng.normal(size=(20, 3, 4, 4)) * np.array([1.0, 5.0, 0.1])[None, :, None, None]
    s = Standardizer.fit(torch.tensor(images))
    mean = images.mean(axis=(0, 2, 3))
    std = images.std(axis=(0, 2, 3))
    other = rng.normal(size=(2, 6, 3, 4, 4))  # e.g. a [members, batch, ...] batch
    expected = (other - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(s(torch.tensor(other)).numpy(), expected, atol=1e-12)


def test_a_torch_dataset_of_pil_images_reads_like_the_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(6)
    arrays = [rng.integers(0, 256, (3, 5), dtype=np.uint8) for _ in range(10)]
    images = [Image.fromarray(a) for a in arrays]  # what a torchvision dataset without transform yields
    d = as_dataset(Pairs(images, np.arange(10) % 2), seed=1)
    assert d.input_shape == (1, 3, 5)
    got = sorted((d.x_train * 255).round().to(torch.uint8).reshape(-1, 15).tolist()
                 + (d.x_test * 255).round().to(torch.uint8).reshape(-1, 15).tolist())
    assert got == sorted(a.ravel().tolist() for a in arrays)
