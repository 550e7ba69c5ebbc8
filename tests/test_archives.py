"""The official dataset archives read without torchvision: tiny files in the same formats, made here."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile

import numpy as np
import pytest

from sublevel import archives, datasets
from sublevel.datasets import DataError

rng = np.random.default_rng(0)


def cifar_batch(n: int, label_key: bytes, classes: int) -> dict:
    """As the official batches are: b'data' rows of 3072 bytes (the red plane, then green, then blue)."""
    return {b"batch_label": b"testing", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, classes, n)], b"filenames": [b"x.png"] * n}


def write_cifar10(root, tar: bool = False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_batch(3, b"labels", 10) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(2, b"labels", 10)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    if tar:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as t:
            t.add(folder, arcname="cifar-10-batches-py")
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    return batches


@pytest.mark.parametrize("tar", [False, True])
def test_cifar10_from_its_python_batches_folder_or_archive(tmp_path, tar):
    batches = write_cifar10(tmp_path, tar)
    d = archives.cifar10(tmp_path)
    assert d["x_train"].shape == (15, 3, 32, 32) and d["x_test"].shape == (2, 3, 32, 32)
    assert d["x_train"].dtype == np.uint8 and d["y_train"].dtype == np.int64
    first = batches["data_batch_1"][b"data"][0]
    assert np.array_equal(d["x_train"][0, 1].ravel(), first[1024:2048])  # channel 1 is the green plane
    assert d["y_test"].tolist() == batches["test_batch"][b"labels"]


def test_cifar100_reads_the_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = cifar_batch(4, b"fine_labels", 100), cifar_batch(2, b"fine_labels", 100)
    train[b"coarse_labels"] = [0] * 4
    for name, batch in (("train", train), ("test", test)):
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    d = archives.cifar100(tmp_path)
    assert d["y_train"].tolist() == train[b"fine_labels"] and d["num_classes"] == 100


class Hostile:
    def __reduce__(self):
        return os.system, ("echo owned > /dev/null",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Hostile()}))
    with pytest.raises(DataError, match=r"cifar10: .*posix.system is not allowed|cifar10: .*os.system is not allowed"):
        datasets.prepare("cifar10", tmp_path / "c.zarr", root=tmp_path)


def idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("folder, gz", [("FashionMNIST/raw", True), ("fashion_mnist", False), ("", True)])
def test_fashion_mnist_from_its_idx_files(tmp_path, folder, gz):
    where = tmp_path / folder
    where.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": rng.integers(0, 256, (5, 28, 28)), "y_train": np.arange(5),
              "x_test": rng.integers(0, 256, (2, 28, 28)), "y_test": np.array([7, 9])}
    for key, name in archives.IDX.items():
        data = idx(arrays[key])
        (where / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    d = archives.fashion_mnist(tmp_path)
    assert d["x_train"].shape == (5, 1, 28, 28) and np.array_equal(d["x_train"][:, 0], arrays["x_train"])
    assert d["y_test"].tolist() == [7, 9]
    truncated = where / (archives.IDX["x_test"] + (".gz" if gz else ""))
    truncated.write_bytes((gzip.compress if gz else bytes)(idx(arrays["x_test"])[:-10]))
    with pytest.raises(ValueError, match="truncated"):
        archives.fashion_mnist(tmp_path)


def test_svhn_from_its_mat_files_with_label_10_as_digit_0(tmp_path):
    from scipy.io import savemat

    for split, n in (("train", 3), ("test", 2)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)  # the official layout: H, W, C, N
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": np.array([[10], [1], [5]][:n], np.uint8)})
    d = archives.svhn(tmp_path)
    assert d["x_train"].shape == (3, 3, 32, 32) and d["y_train"].tolist() == [0, 1, 5]


@pytest.mark.parametrize("name, official", [("cifar10", "cifar-10-python.tar.gz"),
                                            ("cifar100", "cifar-100-python.tar.gz"),
                                            ("fashion_mnist", "train-images-idx3-ubyte"),
                                            ("svhn", "train_32x32.mat")])
def test_a_missing_archive_names_the_path_and_the_official_file(tmp_path, name, official):
    with pytest.raises(DataError) as e:
        datasets.prepare(name, tmp_path / "d.zarr", root=tmp_path / "raw", download=False)
    message = str(e.value)
    assert message.startswith(f"{name}: ") and official in message and str(tmp_path / "raw") in message
    assert "\n" not in message


def test_prepare_writes_the_store_from_the_archive(tmp_path):
    write_cifar10(tmp_path / "raw", tar=True)
    datasets.prepare("cifar10", tmp_path / "c.zarr", root=tmp_path / "raw")
    data = datasets.load(tmp_path / "c.zarr")
    assert data.x_train.shape == (15, 3, 32, 32) and data.num_classes == 10
    assert abs(float(data.x_train.mean(dim=(0, 2, 3)).abs().max())) < 1e-5  # normalised per channel
