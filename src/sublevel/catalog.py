"""DuckDB over every results table: one view per table in sublevel.schema, and `jobs` over Snakemake's records.

Views read results/tables/<table>/**/*.parquet with union_by_name, so files
written by different versions of a job still line up by column name. A table
no job has written yet is an empty view with the declared columns, so queries
never fail just because a stage has not run. Paths are absolute: the same SQL
works from any directory and in the interactive duckdb shell.

View `jobs` is what each job of the last run of each output cost, from the record Snakemake keeps per output
file (.snakemake/metadata: rule, start and end time; the same record `snakemake --report` draws its runtime
statistics from), one row per job: the measure for sizing cluster runtimes (from a local run: jobs a cluster
executor ran have no recorded start) and for comparing a GPU run with a CPU one. Results pulled with DVC come
without these records, so their jobs are not in it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from sublevel import paths, schema

_DUCK_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.float32(): "FLOAT",
               pa.bool_(): "BOOLEAN", pa.int32(): "INTEGER"}


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    return _DUCK_TYPES[t]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def view_statements(root: Path | None = None) -> list[str]:
    root = (root or paths.project_root()).resolve()
    stmts = []
    for name, table in schema.TABLES.items():
        folder = paths.tables_dir(root) / name
        if any(folder.rglob("*.parquet")):
            source = (f"read_parquet({_quote(str(folder / '**' / '*.parquet'))}, union_by_name = true, "
                      f"hive_partitioning = false)")
            stmts.append(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source};")
        else:
            stmts.append(_empty_view(name, {f.name: _duck_type(f.type) for f in table.schema}))
    stmts.append(_jobs_statement(root))
    return stmts


def _empty_view(name: str, columns: dict[str, str]) -> str:
    """A view with the declared columns (name -> DuckDB type) and no rows: what nothing has written yet."""
    cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
    return f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} WHERE false;"


JOBS_COLUMNS = {"rule": "VARCHAR", "log": "VARCHAR", "started": "TIMESTAMP", "finished": "TIMESTAMP",
                "seconds": "DOUBLE", "outputs": "BIGINT"}


def _jobs_statement(root: Path) -> str:
    """One row per job: the records of a job's outputs share its hash and log (every rule here has a log per
    job), each with its own start and end times (recorded per output, microseconds to milliseconds apart), so
    a job runs from the first start to the last end. Times are UTC.

    A job run by a cluster executor (SLURM) has no start in its record: Snakemake dates the start from a marker
    that the job's own process removes, and falls back to the moment the main process saw it finish, later
    than its outputs were written (the end Snakemake records). Such a job has `started` and `seconds` null,
    not a false zero; `finished` is still when it wrote its outputs."""
    folder = root / paths.SNAKEMAKE_METADATA
    if not folder.is_dir() or not any(f.is_file() for f in folder.rglob("*")):
        return _empty_view("jobs", JOBS_COLUMNS)
    source = (f"read_json({_quote(str(folder / '**' / '*'))}, format = 'newline_delimited', columns = "
              "{rule: 'VARCHAR', job_hash: 'BIGINT', starttime: 'DOUBLE', endtime: 'DOUBLE', incomplete: 'BOOLEAN', "
              "log: 'VARCHAR[]'}, ignore_errors = true)")  # a record being written is skipped, not an error
    timed = "bool_and(starttime <= endtime)"
    return ("CREATE OR REPLACE VIEW jobs AS SELECT rule, log[1] AS log, "
            f"CASE WHEN {timed} THEN make_timestamp(CAST(min(starttime) * 1e6 AS BIGINT)) END AS started, "
            "make_timestamp(CAST(max(endtime) * 1e6 AS BIGINT)) AS finished, "
            f"CASE WHEN {timed} THEN max(endtime) - min(starttime) END AS seconds, count(*) AS outputs FROM {source} "
            "WHERE NOT incomplete AND endtime IS NOT NULL GROUP BY rule, job_hash, log[1];")


def connect(root: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the views; it never writes under results/."""
    con = duckdb.connect(":memory:")
    for stmt in view_statements(root):
        con.execute(stmt)
    return con


def query(sql: str, root: Path | None = None):
    """Run `sql` over the views; returns a polars DataFrame."""
    return connect(root).sql(sql).pl()


SUMMARY = {
    "dense": """
        select experiment, any_value(model) as model, any_value(num_params) as D, count(distinct seed) as seeds,
               round(avg(accuracy), 4) as dense_test_accuracy
        from train t where split = 'test' and not diverged
          and step = (select max(step) from train u where u.experiment = t.experiment and u.seed = t.seed)
        group by experiment order by experiment""",
    "threshold": """
        select experiment, kind, burnin_step as t, metric, threshold as eps, round(d_star, 1) as d_star,
               round(d_star_lo, 1) as lo, round(d_star_hi, 1) as hi, round(d_star_fraction, 4) as "d*/D",
               censored, d_int90
        from threshold order by experiment, metric, eps, kind, t""",
    "tickets": """
        with lvl as (select experiment, seed, level, sparsity, test_accuracy,
                            first_value(test_accuracy) over (partition by experiment, seed order by level) as dense
                     from imp where method = 'imp')
        select experiment, round(avg(best), 4) as highest_matching_sparsity, count(*) as chains from (
            select experiment, seed, max(sparsity) filter (where test_accuracy >= dense - 0.01) as best
            from lvl group by experiment, seed) group by experiment order by experiment""",
}


JOBS_BY_RULE = """
    select rule, count(*) as jobs, round(sum(seconds), 1) as total_s, round(median(seconds), 1) as median_s,
           round(max(seconds), 1) as max_s, count(*) - count(seconds) as untimed
    from jobs group by rule order by total_s desc nulls last, rule"""
JOBS_TOTAL = """
    select count(*) as jobs, count(*) - count(seconds) as untimed, round(sum(seconds), 1) as job_s,
           round(epoch(max(finished)) - epoch(min(started)), 1) as wall_s, min(started) as first_started
    from jobs"""


def summary(root: Path | None = None) -> dict:
    """The key numbers per experiment (polars frames by section): dense accuracy and D, d*(ε) per kind and
    d_int90, and the highest IMP sparsity whose test accuracy stays within 1 point of the dense network's."""
    con = connect(root)
    return {name: con.sql(sql).pl() for name, sql in SUMMARY.items()}


PLOTS = {  # DVC plots: one CSV curve file each
    "success": """select experiment, kind, burnin_step, metric, threshold, d, p_success from success
                  order by all""",
    "imp_accuracy": """select experiment, method, level, round(avg(sparsity), 6) as sparsity,
                       avg(test_accuracy) as test_accuracy, count(*) as seeds from imp group by all order by all""",
    "sharpness": """select experiment, source, level, step, avg(eigenvalue) as top_eigenvalue, count(*) as seeds
                    from hessian where rank = 1 group by all order by all""",
}


def metrics(root: Path | None = None) -> dict:
    """The summary as plain JSON for DVC metrics: per experiment D, dense accuracy, highest matching sparsity,
    and d*(ε) per sweep ("kind@t metric>=eps") where P(d) reached 1/2, with how many did."""
    parts = summary(root)
    out: dict[str, dict] = {}
    for r in parts["dense"].iter_rows(named=True):
        out[r["experiment"]] = {"D": r["D"], "seeds": r["seeds"], "dense_test_accuracy": r["dense_test_accuracy"]}
    for r in parts["tickets"].iter_rows(named=True):
        out.setdefault(r["experiment"], {})["highest_matching_sparsity"] = r["highest_matching_sparsity"]
    for r in parts["threshold"].iter_rows(named=True):
        op = "<=" if r["metric"].endswith("loss") else ">="
        key = f"{r['kind']}@{r['t']} {r['metric']}{op}{r['eps']:g}"
        e = out.setdefault(r["experiment"], {})
        e["sweeps_reaching_half"] = e.get("sweeps_reaching_half", 0) + (r["d_star"] is not None)
        if r["d_star"] is not None:  # DVC shows numbers only; a sublevel set never reached has no d*
            e.setdefault("d_star", {})[key] = r["d_star"]
    return out


def plots(root: Path | None = None) -> dict:
    con = connect(root)
    return {name: con.sql(sql).pl() for name, sql in PLOTS.items()}
