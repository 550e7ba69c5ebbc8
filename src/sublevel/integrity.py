"""Damage that Snakemake cannot see: every store and table under results/ read back in full.

Snakemake decides what to rerun from files' presence and times, so a truncated Zarr chunk or Parquet file
looks finished until a job reads it. :func:`check` reads every result the way its readers do (each Zarr
array chunk by chunk, with the chunk files counted; each Parquet file whole; each JSON plan and summary);
:func:`remove` deletes the damaged ones, so that the next `snakemake` run rebuilds exactly those outputs'
jobs and, their outputs being newer, everything downstream of them.
"""

from __future__ import annotations

import json
import os
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


def _walk(results: Path) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """The Zarr stores (top-level only: a store's subgroups are checked with it), the other files, the
    leftovers of interrupted jobs and the links under results/. A link is never entered: it may lead out of
    results/ (to what is not this project's to check or delete) or back into it (counted twice, or a loop)."""
    stores, files, leftovers, links = [], [], [], []
    for here, dirs, names in os.walk(results):  # followlinks=False: a linked directory is listed, not entered
        here = Path(here)
        entered = []
        for name in sorted(dirs):
            p = here / name
            if p.is_symlink():
                links.append(p)
            elif name.startswith(".") and ".tmp-" in name:
                leftovers.append(p)
            elif name.endswith(".zarr"):
                stores.append(p)
            else:
                entered.append(name)
        dirs[:] = entered
        for name in sorted(names):
            p = here / name
            if p.is_symlink():
                links.append(p)
            elif name.startswith(".") and ".tmp-" in name:
                leftovers.append(p)
            else:
                files.append(p)
    return stores, files, leftovers, links


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


@dataclass(frozen=True)
class Found:
    damaged: list[Damage]
    checked: int          # stores and table, plan and summary files read back
    links: list[Path]     # links under results/, neither followed nor checked


def check(root: Path) -> Found:
    """Every damaged result under root/results, how many results were checked, and the links left alone."""
    results = root / paths.RESULTS
    if not results.is_dir():
        return Found([], 0, [])
    stores, files, leftovers, links = _walk(results)
    damaged = [Damage(p, "temporary leftover of an interrupted job") for p in leftovers]
    for store in stores:
        if reason := _check_store(store):
            damaged.append(Damage(store, reason))
    tables = [f for f in files if f.suffix in (".parquet", ".json")]
    for f in tables:
        if reason := _check_file(f):
            damaged.append(Damage(f, reason))
    return Found(sorted(damaged, key=lambda d: d.path), len(stores) + len(tables), links)


def running(root: Path) -> bool:
    """Whether a Snakemake run holds the lock on this directory (its temporary files are then in use)."""
    locks = root / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def remove(damaged: list[Damage], root: Path) -> None:
    """Delete the damaged results, each only if it lies inside root/results and is no link (check never
    returns others; this is the last guard before a deletion)."""
    results = (root / paths.RESULTS).resolve()
    for d in damaged:
        if d.path.is_symlink() or not d.path.parent.resolve().is_relative_to(results):
            raise ValueError(f"refusing to remove {d.path}: not inside {results}")
    for d in damaged:
        storage.remove(d.path)
