"""Writing results so that a reader never sees half a file.

Every writer writes to a hidden temporary sibling and renames it into place on
success; an interrupted job leaves only a `.<name>.tmp-<pid>` that no reader globs.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from sublevel import schema

# Every chunk is written, all-zero ones included, so that a chunk file missing on disk is damage, not zeros.
zarr.config.set({"array.write_empty_chunks": True})


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# The temporary paths of the blocks now open: what `exit_removing_temporaries` removes when a stopped job does
# not unwind by itself.
_open_temporaries: set[Path] = set()


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; move it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    remove(tmp)
    _open_temporaries.add(tmp)
    try:
        yield tmp
        remove(final)
        os.replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise
    finally:
        _open_temporaries.discard(tmp)


def exit_removing_temporaries(status: int, after: float) -> None:
    """Unless the process has exited `after` seconds from now, remove every open block's temporary path and
    exit with `status` at once. A signal handler's exception can be swallowed by whatever the main thread was
    running when it arrived (C code that clears errors, a finaliser); a stopped job must end all the same, and
    leave no temporary behind."""
    def expire():
        for tmp in list(_open_temporaries):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        os._exit(status)

    timer = threading.Timer(after, expire)
    timer.daemon = True
    timer.start()


# Checksums, so that a flipped byte is found (check-results) rather than read back as another value: every
# Zarr chunk ends in a CRC32C (zarr's crc32c codec, after zstd), every Parquet page carries a CRC32 (its
# footer says so under CHECKSUM_KEY; files written before lack the key).
COMPRESSORS = (zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec())
CHECKSUM_KEY = b"sublevel.page_checksums"


def create_array(group: zarr.Group, name: str, **kwargs) -> zarr.Array:
    """group.create_array with every chunk checksummed (COMPRESSORS)."""
    return group.create_array(name, compressors=COMPRESSORS, **kwargs)


def _write_parquet(table: pa.Table, path: str | Path) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), CHECKSUM_KEY: b"crc32"})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


def write_table(name: str, rows: list[dict], path: str | Path) -> pa.Table:
    """Write rows as table `name` (columns and types from sublevel.schema), its pages checksummed."""
    table = schema.to_arrow(name, rows)
    _write_parquet(table, path)
    return table


def shard_shape(shape: tuple[int, ...], chunks: tuple[int, ...], max_bytes: int = 128 << 20, itemsize: int = 4):
    """Shards holding whole chunks, all rows, and as many columns as fit `max_bytes`: few files for DVC."""
    rows, chunk_cols = shape[0], chunks[-1]
    per_chunk_col = max(rows, 1) * chunk_cols * itemsize
    n = max(1, min(-(-shape[-1] // chunk_cols), max_bytes // per_chunk_col))
    return (max(rows, 1), *shape[1:-1], n * chunk_cols)


def write_array(group: zarr.Group, name: str, data: np.ndarray, *, chunk_cols: int = 1 << 16,
                attributes: dict | None = None) -> zarr.Array:
    """A 2-D+ array chunked one row at a time (a checkpoint is one read) and sharded into few files."""
    data = np.ascontiguousarray(data)
    if data.ndim == 1:
        return create_array(group, name, data=data, attributes=attributes or {})
    chunks = (1, *data.shape[1:-1], max(1, min(chunk_cols, data.shape[-1])))
    return create_array(group, name, data=data, chunks=chunks,
                        shards=shard_shape(data.shape, chunks, itemsize=data.itemsize), attributes=attributes or {})


SKIPPED_KEY = "sublevel.skipped"  # Parquet key-value metadata / Zarr attribute: why a job's output holds nothing


class Skipped(Exception):
    """What a job needs was never computed: its dense run diverged before the step the job starts from, or an
    upstream job was skipped for that reason. The job writes its outputs empty, the reason recorded in them
    (write_skipped), so the rest of the workflow goes on and nothing reads as a result that is not there."""


def write_skipped_table(name: str, path: str | Path, reason: str) -> None:
    """Table `name` with no rows, the reason in the file's key-value metadata (the catalog's `skipped` view)."""
    _write_parquet(schema.to_arrow(name, []).replace_schema_metadata({SKIPPED_KEY: reason}), path)


def table_skip_reason(path: str | Path) -> str | None:
    """The reason a skipped table records (read from the file's footer alone), or None; CorruptFile when the
    footer does not parse."""
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (pa.ArrowException, OSError) as e:
        raise _corrupt("Parquet file", path, e) from e
    reason = meta.get(SKIPPED_KEY.encode())
    return reason.decode() if reason else None


def skip_reason(files: list[str | Path]) -> str | None:
    """The reason the first skipped table among `files` records, or None when none was skipped."""
    return next((reason for f in files if (reason := table_skip_reason(f))), None)


def write_skipped_store(path: str | Path, reason: str) -> None:
    """A Zarr group with no arrays, the reason in its attributes; open_group raises Skipped for it."""
    with atomic_path(path) as tmp:
        zarr.open_group(tmp, mode="w", attributes={SKIPPED_KEY: reason})


class CorruptFile(ValueError):
    """A result file exists but cannot be read: truncated, overwritten, or not what it claims to be."""


def _corrupt(what: str, path, e: Exception) -> CorruptFile:
    return CorruptFile(f"{what} {path} is corrupt or truncated ({type(e).__name__}: {e}); `sublevel check-results "
                       f"--fix` removes every damaged result, and the next snakemake run rebuilds them")


def open_group(path: str | Path, what: str = "store") -> zarr.Group:
    """Open a finished Zarr group read-only, with an error that names the path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist; run the pipeline stage that makes it "
                                f"(snakemake {path})")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as e:
        raise _corrupt(what, path, e) from e
    if reason := group.attrs.get(SKIPPED_KEY):
        raise Skipped(reason)  # the first cause, as every skipped job downstream records it
    return group


def missing_chunks(arr: zarr.Array) -> int:
    """How many of the array's chunk (or shard) files are absent. Zarr reads an absent chunk as fill values;
    every chunk is written here (write_empty_chunks), so an absent one means the store was damaged."""
    if not arr.size:
        return 0
    grid = arr.shards or arr.chunks
    expected = math.prod(-(-n // c) for n, c in zip(arr.shape, grid))
    found = arr._nshards_initialized if arr.shards else arr.nchunks_initialized  # zarr 3 lists the store
    return max(0, expected - found)


def read(group: zarr.Group, key: str, index=slice(None), what: str = "store") -> np.ndarray:
    """group[key][index] as NumPy; a codec failure or an absent chunk file reported as the store's corruption."""
    root = getattr(group.store, "root", group.store)  # a LocalStore's directory
    where = Path(str(root)) / group.path / key
    try:
        arr = group[key]
        if n := missing_chunks(arr):
            raise ValueError(f"{n} chunk file(s) missing")
        return np.asarray(arr[index])
    except Exception as e:
        raise _corrupt(what, where, e) from e


def read_parquet(path: str | Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise _corrupt("Parquet file", path, e) from e


def read_rows(files: list[str | Path]) -> list[dict]:
    """Rows of several Parquet files of one table, as dicts (pyarrow only: jobs that need no dataframe)."""
    return [row for f in files for row in read_parquet(f).to_pylist()]


def read_frame(files: list[str | Path]):
    """Several Parquet files of one table as one polars DataFrame, a bad file named in the error."""
    import polars as pl

    return pl.concat([pl.from_arrow(read_parquet(f)) for f in files], how="diagonal_relaxed")
