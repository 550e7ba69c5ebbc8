"""Damage that Snakemake cannot see: every store and table under results/ read back in full.

Snakemake decides what to rerun from files' presence and times, so a truncated Zarr chunk or Parquet file
looks finished until a job reads it. :func:`check` reads every result the way its readers do (each Zarr
array chunk by chunk, with the chunk files counted and each chunk's CRC32C verified; each Parquet file whole,
each page's CRC32 verified; each JSON plan and summary); results written before checksums are listed;
:func:`remove` deletes the damaged ones, so that the next `snakemake` run rebuilds exactly those outputs'
jobs and, their outputs being newer, everything downstream of them.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
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
        entered = []
        for name, is_dir in [(n, True) for n in sorted(dirs)] + [(n, False) for n in sorted(names)]:
            p = Path(here) / name
            if p.is_symlink():
                links.append(p)
            elif name.startswith(".") and ".tmp-" in name:
                leftovers.append(p)
            elif not is_dir:
                files.append(p)
            elif name.endswith(".zarr"):
                stores.append(p)
            else:
                entered.append(name)
        dirs[:] = entered
    return stores, files, leftovers, links


def _checksummed(arr: zarr.Array) -> bool:
    """Whether each chunk of `arr` carries a CRC32C (inside a shard's codecs, or its own)."""
    codecs = list(arr.metadata.codecs)
    for codec in list(codecs):
        codecs += getattr(codec, "codecs", ())  # a sharding codec's inner chunk codecs
    return any(isinstance(c, zarr.codecs.Crc32cCodec) for c in codecs)


def _check_store(path: Path, unverified: list[Path]) -> str | None:
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
            if not _checksummed(arr) and path not in unverified:
                unverified.append(path)
            rows = arr.shape[0] if arr.ndim >= 2 else 1
            for i in range(rows):  # one row (a checkpoint, a run) at a time: bounded memory at any size
                np.asarray(arr[i] if arr.ndim >= 2 else arr[...])
    except Exception as e:  # a codec error, a missing or garbled zarr.json: all damage to this store
        return f"{type(e).__name__}: {e}"
    return None


def _check_file(path: Path, unverified: list[Path]) -> str | None:
    try:
        if path.suffix == ".parquet":
            pq.read_table(path, page_checksum_verification=True)
            if storage.CHECKSUM_KEY not in (pq.read_schema(path).metadata or {}):
                unverified.append(path)
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
    unverified: list[Path] = field(default_factory=list)  # written without checksums: a flipped byte is unseen
    future: list[tuple[Path, float]] = field(default_factory=list)  # dated ahead of the clock (future_times)


def check(root: Path) -> Found:
    """Every damaged result under root/results, how many results were checked, and the links left alone."""
    results = root / paths.results()
    if not results.is_dir():
        return Found([], 0, [])
    stores, files, leftovers, links = _walk(results)
    future = _dated_ahead(stores, files)
    damaged, unverified = [Damage(p, "temporary leftover of an interrupted job") for p in leftovers], []
    for store in stores:
        if reason := _check_store(store, unverified):
            damaged.append(Damage(store, reason))
    tables = [f for f in files if f.suffix in (".parquet", ".json")]
    for f in tables:
        if reason := _check_file(f, unverified):
            damaged.append(Damage(f, reason))
    return Found(sorted(damaged, key=lambda d: d.path), len(stores) + len(tables), links, unverified, future)


def future_times(root: Path, slack: float = 5.0) -> list[tuple[Path, float]]:
    """The results under root/results dated more than `slack` seconds ahead of this machine's clock, with how
    far ahead: each file, each store and the files at a store's top (its zarr.json and Snakemake's marker,
    which date it for Snakemake). Snakemake would see every job downstream of one as outdated at every run,
    rerun it, then fail its clock check and delete the job's correct outputs."""
    results = root / paths.results()
    return _dated_ahead(*_walk(results)[:2], slack) if results.is_dir() else []


def _dated_ahead(stores: list[Path], files: list[Path], slack: float = 5.0) -> list[tuple[Path, float]]:
    dated = files + stores + [f for s in stores for f in s.iterdir() if f.is_file() and not f.is_symlink()]
    now = time.time()
    return sorted(((p, ahead) for p in dated if (ahead := p.stat().st_mtime - now) > slack), key=lambda x: -x[1])


def set_times_to_now(found: list[tuple[Path, float]]) -> None:
    """Date each of `found` now, and everything inside a store among them dated ahead (their content is
    unchanged; what reads them reruns once, as after an edit)."""
    now = time.time()
    for p, _ in found:
        inside = [Path(here) / n for here, dirs, files in os.walk(p) for n in dirs + files] if p.is_dir() else []
        for q in inside + [p]:
            if not q.is_symlink() and q.stat().st_mtime > now:
                os.utime(q, (now, now))


def future_line(found: list[tuple[Path, float]], root: Path) -> str:
    """One line for a command's output: how many results are dated ahead, the furthest, and the fix."""
    p, ahead = found[0]
    return (f"{len(found)} result(s) dated in the future (furthest: {p.relative_to(root)}, {ahead / 3600:.1f} h ahead "
            f"of this machine's clock): Snakemake would rerun what reads them at every run and delete the outputs; "
            f"fix the clock, or `sublevel check-results --fix` dates them now")


def running(root: Path) -> bool:
    """Whether a Snakemake run holds the lock on this directory (its temporary files are then in use)."""
    locks = root / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def remove(damaged: list[Damage], root: Path) -> None:
    """Delete the damaged results, each only if it lies inside root/results and is no link (check never
    returns others; this is the last guard before a deletion)."""
    results = (root / paths.results()).resolve()
    for d in damaged:
        if d.path.is_symlink() or not d.path.parent.resolve().is_relative_to(results):
            raise ValueError(f"refusing to remove {d.path}: not inside {results}")
    for d in damaged:
        storage.remove(d.path)
