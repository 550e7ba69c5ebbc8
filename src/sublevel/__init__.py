"""sublevel: how many degrees of freedom does training a network need?

Science lives here; orchestration lives in workflow/. Every path is owned by
:mod:`sublevel.paths` and every table by :mod:`sublevel.schema`.

The results, from Python, as polars DataFrames (the same views `sublevel query` reads)::

    import sublevel
    sublevel.table("threshold")                              # a table (or view) by name
    sublevel.query("select kind, avg(d_star) from threshold group by kind")
    sublevel.query("select * from train", results="results/smoke")  # another config's results root
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def query(sql: str, root: str | Path | None = None, results: str | Path | None = None):
    """Read-only SQL (DuckDB) over every results table and view, as a polars DataFrame. `root`: the project
    (default: found from the current directory); `results`: its results root for this call (default: results)."""
    from sublevel import catalog, paths

    with paths.results_root(results):
        return catalog.query(sql, None if root is None else Path(root))


def table(name: str, root: str | Path | None = None, results: str | Path | None = None):
    """One table or view by name (sublevel.schema.TABLES, or a view such as dstar_predicted), whole, as a
    polars DataFrame; an unknown name is DuckDB's error, which names the nearest."""
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a table name")
    return query(f'select * from "{name}"', root, results)
