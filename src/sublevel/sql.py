"""SQL literals, types and definitions for the DuckDB views (sublevel.catalog, sublevel.reproduce)."""

from __future__ import annotations

import pyarrow as pa

from sublevel.config import schema_default

_DUCK_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.float32(): "FLOAT",
               pa.bool_(): "BOOLEAN", pa.int32(): "INTEGER"}


def duck_type(t: pa.DataType) -> str:
    """The DuckDB type of an Arrow column type (schema.TABLES')."""
    if pa.types.is_list(t):
        return duck_type(t.value_type) + "[]"
    return _DUCK_TYPES[t]


def quote(s: str) -> str:
    """A string literal."""
    return "'" + s.replace("'", "''") + "'"


def in_list(values) -> str:
    """A list of string literals, for `x in (...)`."""
    return "(" + ", ".join(quote(v) for v in values) + ")"


def matching() -> str:
    """schema.matching as an SQL condition over the imp table's columns, `dense` the chain's level-0 test accuracy;
    rows written before the table held `matching_tolerance` take the config schema's default."""
    return f"test_accuracy >= dense - coalesce(matching_tolerance, {float(schema_default('imp.matching_tolerance'))!r})"
