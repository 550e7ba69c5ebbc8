"""Every Parquet table the pipeline writes: its columns, types and partition keys.

A job writes rows of exactly these columns (no more, no fewer) to its own file
under results/tables/<table>/<partition>=<value>/...; `sublevel query` exposes
each table as a DuckDB view of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Table:
    name: str
    schema: pa.Schema
    partitions: tuple[str, ...]
    doc: str


TABLES: dict[str, Table] = {}


def _table(name: str, partitions: tuple[str, ...], doc: str, *columns: tuple[str, pa.DataType]) -> Table:
    t = Table(name, pa.schema(list(columns)), partitions, doc)
    TABLES[name] = t
    return t


TRAIN = _table(
    "train", ("experiment", "seed"),
    "Dense training curves: loss and accuracy on the full train and test sets at each eval step.",
    ("experiment", pa.string()),
    ("dataset", pa.string()),
    ("model", pa.string()),
    ("num_params", pa.int64()),   # D, the length of the flat parameter vector
    ("seed", pa.int64()),         # initialisation seed
    ("data_seed", pa.int64()),    # data-order seed
    ("step", pa.int64()),
    ("epoch", pa.float64()),
    ("split", pa.string()),       # 'train' or 'test'
    ("loss", pa.float64()),
    ("accuracy", pa.float64()),
    ("lr", pa.float64()),
    ("diverged", pa.bool_()),     # the run hit a non-finite loss and stopped
    ("device", pa.string()),
)


def to_arrow(name: str, rows: list[dict]) -> pa.Table:
    """Rows -> Arrow table of `name`'s schema; a missing or unknown column is an error, not a silent null."""
    schema = TABLES[name].schema
    want = set(schema.names)
    for i, row in enumerate(rows):
        if set(row) != want:
            missing, extra = sorted(want - set(row)), sorted(set(row) - want)
            raise ValueError(f"table {name!r} row {i}: missing columns {missing}, unknown columns {extra}")
    return pa.Table.from_pylist(rows, schema=schema)
