"""Damage that Snakemake cannot see: every store and table under results/ read back in full.

Snakemake decides what to rerun from files' presence and times, so a truncated Zarr chunk or Parquet file
looks finished until a job reads it. :func:`check` reads every result the way its readers do (each Zarr
array chunk by chunk, with the chunk files counted; each Parquet file whole; each JSON plan and summary);
:func:`remove` deletes the damaged ones, so that the next `snakemake` run rebuilds exactly those outputs'
jobs and, their outputs being newer, everything downstream of them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import zarr

from sublevel import paths, storage


@dataclass(frozen=True)
class Damage:
    path: Path      # the output to remove: a whole Zarr store, a Parquet or JSON file, a temporary leftover
    reason: str


def _stores(results: Path) -> list[Path]:
    """Every Zarr store under results/ (top-level only: a store's subgroups are checked with it)."""
    out, stack = [], [results]
    while stack:
        for p in sorted(stack.pop().iterdir()):
            if p.is_dir() and p.name.endswith(".zarr"):
                out.append(p)
            elif p.is_dir():
                stack.append(p)
    return out


def _check_store(path: Path) -> str | None:
    try:
        group = zarr.open_group(path, mode="r")
        with warnings.catch_warnings():  # the marker Snakemake leaves in every directory() output
            warnings.filterwarnings("ignore", message=".*snakemake_timestamp", category=UserWarning)
            members = list(group.members(max_depth=None))
        for name, arr in members:
            if not isinstance(arr, zarr.Array):
                continue
            if n := storage.missing_chunks(arr):
                return f"array {name}: {n} chunk file(s) missing"
            rows = arr.shape[0] if arr.ndim >= 2 else 1
            for i in range(rows):  # one row (a checkpoint, a run) at a time: bounded memory at any size
                np.asarray(arr[i] if arr.ndim >= 2 else arr[...])
    except Exception as e:  # a codec error, a missing or garbled zarr.json: all damage to this store
        return f"{type(e).__name__}: {e}"
    return None


def _check_file(path: Path) -> str | None:
    try:
        if path.suffix == ".parquet":
            pq.read_table(path)
        else:
            json.loads(path.read_text())
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def check(root: Path) -> tuple[list[Damage], int]:
    """Every damaged result under root/results, and how many results were checked."""
    results = root / paths.RESULTS
    if not results.is_dir():
        return [], 0
    damaged, checked = [], 0
    for store in _stores(results):
        checked += 1
        if reason := _check_store(store):
            damaged.append(Damage(store, reason))
    for f in sorted(results.rglob("*")):
        if f.name.startswith(".") and ".tmp-" in f.name:
            damaged.append(Damage(f, "temporary leftover of an interrupted job"))
        elif f.is_file() and f.suffix in (".parquet", ".json") and not any(p.suffix == ".zarr" for p in f.parents):
            checked += 1
            if reason := _check_file(f):
                damaged.append(Damage(f, reason))
    return damaged, checked


def running(root: Path) -> bool:
    """Whether a Snakemake run holds the lock on this directory (its temporary files are then in use)."""
    locks = root / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def remove(damaged: list[Damage]) -> None:
    for d in damaged:
        storage.remove(d.path)
