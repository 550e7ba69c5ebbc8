"""The official archive files of CIFAR-10/100, Fashion-MNIST and SVHN, read directly (no torchvision).

Each reader takes `data.root` and returns uint8 NCHW images and int64 labels for both splits, looking where
the official archives unpack and where torchvision puts them (it downloads the same files):

* CIFAR-10: `cifar-10-batches-py/` (data_batch_1..5, test_batch) or the archive `cifar-10-python.tar.gz`;
* CIFAR-100: `cifar-100-python/` (train, test; fine labels) or `cifar-100-python.tar.gz`;
* Fashion-MNIST: the four IDX files (`train-images-idx3-ubyte` ..., gzipped or not) in `FashionMNIST/raw/`,
  `fashion_mnist/` or the root itself;
* SVHN: `train_32x32.mat` and `test_32x32.mat` (MATLAB files; label 10 is the digit 0).

The CIFAR files (and MNIST's mnist.pkl.gz) are Python pickles: they are read with an unpickler that builds
only NumPy arrays and plain containers, so a file that is not what it claims cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np


class ArchiveMissing(FileNotFoundError):
    """The dataset's files are not under data.root; the message names where they were looked for."""


class _ArraysOnly(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
               ("_codecs", "encode")}  # bytes in a protocol-2 pickle written by Python 3: str -> bytes only

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset archive")
        return super().find_class(module, name)


def unpickle_arrays(data: bytes, encoding: str = "bytes"):
    """A pickle of NumPy arrays in plain containers (the CIFAR batches, mnist.pkl.gz); anything else refused."""
    return _ArraysOnly(io.BytesIO(data), encoding=encoding).load()


def _cifar_members(root: Path, folder: str, archive: str, names: list[str]) -> list[bytes]:
    """The pickled batches `names`, from the unpacked folder or straight from the .tar.gz."""
    if all((root / folder / n).is_file() for n in names):
        return [(root / folder / n).read_bytes() for n in names]
    if (root / archive).is_file():
        with tarfile.open(root / archive, "r:gz") as tar:
            return [tar.extractfile(f"{folder}/{n}").read() for n in names]
    raise ArchiveMissing(f"no {root / folder}/ ({', '.join(names)}) and no {root / archive}: put the official "
                         f"archive {archive} there (https://www.cs.toronto.edu/~kriz/cifar.html)")


def _cifar_arrays(batches: list[bytes], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    parts = [unpickle_arrays(b) for b in batches]
    x = np.concatenate([np.asarray(p[b"data"], dtype=np.uint8) for p in parts]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(p[label_key], dtype=np.int64) for p in parts])
    return x, y


def cifar10(root: Path) -> dict:
    train = [f"data_batch_{i}" for i in range(1, 6)]
    blobs = _cifar_members(root, "cifar-10-batches-py", "cifar-10-python.tar.gz", train + ["test_batch"])
    (x_train, y_train), (x_test, y_test) = _cifar_arrays(blobs[:5], b"labels"), _cifar_arrays(blobs[5:], b"labels")
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=10,
                source=f"CIFAR-10 python batches under {root}")


def cifar100(root: Path) -> dict:
    train, test = _cifar_members(root, "cifar-100-python", "cifar-100-python.tar.gz", ["train", "test"])
    (x_train, y_train), (x_test, y_test) = _cifar_arrays([train], b"fine_labels"), _cifar_arrays([test], b"fine_labels")
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=100,
                source=f"CIFAR-100 python files under {root} (fine labels)")


IDX = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
       "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format: two zero bytes, type 0x08 = uint8, the number of dimensions, each size
    as a big-endian int32, then the data), gzipped or not."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: the header says {shape}, the file holds {data.size} values (truncated?)")
    return data.reshape(shape)


def fashion_mnist(root: Path) -> dict:
    def find(name: str) -> Path | None:
        for folder in (root / "FashionMNIST" / "raw", root / "fashion_mnist", root):
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
        return None

    found = {key: find(name) for key, name in IDX.items()}
    if missing := [IDX[k] for k, p in found.items() if p is None]:
        raise ArchiveMissing(f"Fashion-MNIST: {', '.join(missing)} (or .gz) not in {root / 'FashionMNIST' / 'raw'}, "
                             f"{root / 'fashion_mnist'} or {root} (https://github.com/zalandoresearch/fashion-mnist)")
    arrays = {key: read_idx(path) for key, path in found.items()}
    return dict(x_train=arrays["x_train"][:, None], y_train=arrays["y_train"].astype(np.int64),
                x_test=arrays["x_test"][:, None], y_test=arrays["y_test"].astype(np.int64), num_classes=10,
                source=f"Fashion-MNIST IDX files in {found['x_train'].parent}")


def svhn(root: Path) -> dict:
    from scipy.io import loadmat

    out = {}
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        if not path.is_file():
            raise ArchiveMissing(f"SVHN: no {path}: put the official {split}_32x32.mat there "
                                 "(http://ufldl.stanford.edu/housenumbers/)")
        mat = loadmat(path)
        out[f"x_{split}"] = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)  # HWCN -> NCHW
        y = mat["y"].reshape(-1).astype(np.int64)
        out[f"y_{split}"] = np.where(y == 10, 0, y)  # the digit 0 is stored as label 10
    return dict(out, num_classes=10, source=f"SVHN train_32x32.mat and test_32x32.mat in {root}")


READERS = {"cifar10": cifar10, "cifar100": cifar100, "fashion_mnist": fashion_mnist, "svhn": svhn}
