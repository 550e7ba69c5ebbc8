"""DuckDB over every results table: one view per table in sublevel.schema, `jobs` over Snakemake's records, and
`targets` and `reproduction`: the seed papers' published numbers and each measured from the views beside it
(sublevel.reproduce).

Views read results/tables/<table>/**/*.parquet with union_by_name, so files
written by different versions of a job still line up by column name. A table
no job has written yet is an empty view with the declared columns, so queries
never fail just because a stage has not run. Paths are absolute: the same SQL
works from any directory and in the interactive duckdb shell.

View `jobs` is what the job behind each output of the results root cost (the last job that wrote it, of
whichever run), from the record Snakemake keeps per output file (.snakemake/metadata: rule, start and end
time; the same record `snakemake --report` draws its runtime statistics from), one row per job: the measure for sizing cluster runtimes (from a local run: jobs a cluster
executor ran have no recorded start) and for comparing a GPU run with a CPU one. Results pulled with DVC come
without these records, so their jobs are not in it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from sublevel import paths, reproduce, schema, stages, storage
from sublevel.kinds import PREDICTED
from sublevel.sql import duck_type, in_list, matching, quote


@dataclass
class Scan:
    """What results/tables holds: per table its readable Parquet files; the damaged ones (a footer that does
    not parse: truncated, overwritten) left out of every view, each with why; the jobs that recorded a skip."""

    root: Path
    files: dict[str, list[Path]]
    damaged: list[tuple[Path, str]]
    skipped: list[tuple[str, Path, str]]  # (table, file, reason)
    stale: list[Path] = field(default_factory=list)  # an older layout's files, left out (stale_layout)
    partial: set[str] = field(default_factory=set)  # tables with a file left out (a link, stale or damaged)

    def source(self, table: str) -> str:
        """The view's Parquet source: a glob over the table's folder when it reads every file there (a short
        statement for any number of files), else the files it reads, each named."""
        if table in self.partial:
            return _parquet_source(self.files[table])
        return _parquet_source([paths.tables_dir(self.root) / table / "**" / "*.parquet"])

    def damaged_files(self, table: str) -> list[Path]:
        """The files of `table` that do not read back."""
        return [p for p, _ in self.damaged if p.relative_to(paths.tables_dir(self.root)).parts[0] == table]

    def refusal(self, table: str, damaged: list[Path]) -> str:
        """Why a read of `table` is refused: one line naming its damaged files and the fix."""
        return (f"refused: {table} would be read without its damaged file(s) {self._listed(damaged, 3)}, an "
                f"incomplete answer: `sublevel check-results --fix` removes them and the next snakemake run "
                f"rebuilds them")

    def damage_line(self) -> str | None:
        """One line for a command's output when files were left out, or None."""
        lines = []
        if self.damaged:
            lines.append(f"{len(self.damaged)} damaged table file(s) left out of every view "
                         f"({self._listed([p for p, _ in self.damaged], 3)}): `sublevel check-results --fix` "
                         f"removes them and the next snakemake run rebuilds them")
        if self.stale:
            lines.append(f"{len(self.stale)} IMP table file(s) of the layout before rewind_step=<k> left out of every "
                         f"view ({self._listed(self.stale, 2)}): the chains now live under rewind_step=<k>/; "
                         f"delete the old files")
        return "\n".join(lines) or None

    def _listed(self, files: list[Path], shown: int) -> str:
        """The first `shown` files relative to the project, and how many more."""
        more = f" and {len(files) - shown} more" if len(files) > shown else ""
        return ", ".join(str(p.relative_to(self.root)) for p in files[:shown]) + more


def stale_layout(name: str, relative: Path) -> bool:
    """Whether a table file (its path under results/tables/<name>/) is an IMP chain's from before chains had a
    rewind step (.../seed=<s>/... with no rewind_step=<k> level): the same chain is written again under the
    current layout, and its old rows would count twice beside the new."""
    keys = {part.split("=", 1)[0] for part in relative.parts if "=" in part}
    chain = name in ("imp", "barrier") or (name == "hessian" and "source=imp" in relative.parts)
    return chain and "rewind_step" not in keys


def resolve_root(root: Path | None = None) -> Path:
    """The project whose results are read: `root` (--root), else $SUBLEVEL_ROOT or the project around the
    current directory (paths.project_root); a root that is not a project is an error, not an empty result."""
    return paths.given_root(Path(root)) if root is not None else paths.project_root()


def scan(root: Path | None = None) -> Scan:
    root = resolve_root(root)
    files, damaged, skipped, stale, partial = {}, [], [], [], set()
    for name in schema.TABLES:
        files[name] = []
        if any(p.is_symlink() for p in (paths.tables_dir(root) / name).rglob("*")):
            partial.add(name)  # a table is a file a job wrote here; a link may lead anywhere (never read)
        for f in sorted((paths.tables_dir(root) / name).rglob("*.parquet")):
            if f.is_symlink():
                continue
            if stale_layout(name, f.relative_to(paths.tables_dir(root) / name)):
                stale.append(f)
                partial.add(name)
                continue
            try:
                reason = storage.table_skip_reason(f)
            except storage.CorruptFile as e:
                damaged.append((f, f"{type(e.__cause__).__name__}: {e.__cause__}"))
                partial.add(name)
                continue
            files[name].append(f)
            if reason:
                skipped.append((name, f, reason))
    return Scan(root, files, damaged, skipped, stale, partial)


def view_statements(root: Path | Scan | None = None, targets: Path | None = None) -> list[str]:
    """Every view's CREATE statement; `targets`: a targets CSV in place of the shipped one."""
    found = root if isinstance(root, Scan) else scan(root)
    stmts = []
    for name, table in schema.TABLES.items():
        columns = {f.name: duck_type(f.type) for f in table.schema}
        if damaged := found.damaged_files(name):
            stmts.append(_refusing_view(name, found.files[name], columns, found.refusal(name, damaged)))
        elif found.files[name]:
            stmts.append(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {found.source(name)};")
        else:
            stmts.append(_empty_view(name, columns))
    if found.skipped:
        rows = ", ".join(f"({quote(t)}, {quote(str(f.relative_to(found.root)))}, {quote(r)})"
                         for t, f, r in found.skipped)
        stmts.append(f"CREATE OR REPLACE VIEW skipped AS SELECT * FROM (VALUES {rows}) AS s({', '.join(SKIPPED_COLUMNS)});")
    else:
        stmts.append(_empty_view("skipped", SKIPPED_COLUMNS))
    stmts.append(f"CREATE OR REPLACE VIEW dstar_predicted AS {DSTAR_PREDICTED};")
    stmts.append(f"CREATE OR REPLACE VIEW prune_fraction AS {PRUNE_FRACTION};")
    stmts.append(_jobs_statement(found.root))
    stmts += reproduce.view_statements(reproduce.read_targets(targets))  # targets (shipped) and reproduction (each target measured, judged)
    return stmts


# View `dstar_predicted`: every sweep's measured d*(ε) beside the two predictions of the theory table (the
# quadratic-well bound and the well's own threshold; null with its note where there is none), on (experiment,
# kind, t, metric, ε).
DSTAR_PREDICTED = """
    select m.experiment, m.kind, m.burnin_step, m.metric, m.threshold, m.num_params,
           m.d_star, m.d_star_lo, m.d_star_hi, m.censored,
           p.d_star_bound, p.d_star_bound_lo, p.d_star_bound_hi, p.d_star_bound / m.d_star as bound_over_measured,
           p.d_star_well, p.d_star_well_lo, p.d_star_well_hi, p.d_star_well / m.d_star as well_over_measured,
           p.distance, m.anchor_value, p.quadratic_anchor_loss, p.epsilon, p.loss_min, p.grad_norm,
           p.top_eigenvalue, p.note
    from threshold m join theory p using (experiment, kind, burnin_step, metric, threshold)"""


# View `prune_fraction`: per chain and swept IMP level, the largest fraction (of the level's remaining weights)
# whose test-error barrier stays within the tolerance, by magnitude and at random, with the level's sharpness
# (Paul et al. 2023); 0 where no fraction tried is connected.
PRUNE_FRACTION = """
    select experiment, rewind_step, seed, level, method, any_value(sparsity_before) as sparsity,
           coalesce(max(fraction) filter (where connected and not diverged), 0.0) as largest_connected_fraction,
           min(fraction) as fraction_min, max(fraction) as fraction_max, count(*) as fractions,
           any_value(top_eigenvalue) as top_eigenvalue, any_value(tolerance) as tolerance
    from prune_sweep where split = 'test' group by experiment, rewind_step, seed, level, method"""


# View `skipped`: one row per output file of a job that had nothing to compute from (its dense run diverged
# before the step it starts at, or a job upstream was skipped): the file holds no rows, the reason is in its
# Parquet metadata (storage.write_skipped_table).
SKIPPED_COLUMNS = {"table_name": "VARCHAR", "file": "VARCHAR", "reason": "VARCHAR"}


def _parquet_source(files: list[Path]) -> str:
    return f"read_parquet([{', '.join(quote(str(f)) for f in files)}], union_by_name = true, hive_partitioning = false)"


def _refusing_view(name: str, files: list[Path], columns: dict[str, str], message: str) -> str:
    """A view of a table some of whose files are damaged: reading any row of it, directly or through a view
    built on it, fails with `message` instead of answering without the damaged files' rows. The whole files
    stay its source (a cross join with the failing row, which DuckDB cannot prove empty and skip; DESCRIBE
    still shows the columns); with none whole, one row whose every value fails stands in for them (a row of
    constants would let DuckDB fold a filter over it to false and answer without reading the row)."""
    refused = f"error({quote(message)})"
    failing = ", ".join(f"CAST({refused} AS {t}) AS {c}" for c, t in columns.items())
    source = _parquet_source(files) if files else f"(SELECT {failing})"
    return (f"CREATE OR REPLACE VIEW {name} AS SELECT t.* FROM (SELECT {refused} AS refused) AS r, "
            f"{source} AS t WHERE r.refused IS NULL;")


def _empty_view(name: str, columns: dict[str, str]) -> str:
    """A view with the declared columns (name -> DuckDB type) and no rows: what nothing has written yet."""
    cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
    return f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} WHERE false;"


JOBS_COLUMNS = {"rule": "VARCHAR", "stage": "VARCHAR", "log": "VARCHAR", "started": "TIMESTAMP",
                "finished": "TIMESTAMP", "seconds": "DOUBLE", "outputs": "BIGINT"}


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
    source = (f"read_json({quote(str(folder / '**' / '*'))}, format = 'newline_delimited', columns = "
              "{rule: 'VARCHAR', job_hash: 'BIGINT', starttime: 'DOUBLE', endtime: 'DOUBLE', incomplete: 'BOOLEAN', "
              "log: 'VARCHAR[]'}, ignore_errors = true, filename = true)")  # a record being written is skipped
    # a record's file name is its output's path, URL-safe base64 in folders of '@'-prefixed pieces (Snakemake's
    # FilePersistence): the records of this results root's outputs only, not those of another config's root
    output = ("decode(from_base64(replace(replace(replace(replace(substr(filename, "
              f"{len(str(folder)) + 2}), '@', ''), '/', ''), '-', '+'), '_', '/')))")
    under = "^" + re.escape(str(paths.results())) + "/(" + "|".join(map(re.escape, paths.ROOT_ENTRIES)) + ")(/|$)"
    timed = "bool_and(starttime <= endtime)"
    return (f"CREATE OR REPLACE VIEW jobs AS SELECT rule, {stages.stage_sql('rule')} AS stage, log[1] AS log, "
            f"CASE WHEN {timed} THEN make_timestamp(CAST(min(starttime) * 1e6 AS BIGINT)) END AS started, "
            "make_timestamp(CAST(max(endtime) * 1e6 AS BIGINT)) AS finished, "
            f"CASE WHEN {timed} THEN max(endtime) - min(starttime) END AS seconds, count(*) AS outputs FROM {source} "
            f"WHERE NOT incomplete AND endtime IS NOT NULL AND regexp_matches({output}, {quote(under)}) "
            "GROUP BY rule, job_hash, log[1];")


def open_catalog(root: Path | None = None, targets: Path | None = None) -> tuple[duckdb.DuckDBPyConnection, Scan]:
    """An in-memory DuckDB with the views, locked down before any SQL runs (its own views' included): file
    access only under the project's results/ and Snakemake's records (DuckDB's allowed_directories with
    enable_external_access off; DuckDB resolves links before it checks), no extension installed or loaded, no
    temporary directory, the configuration locked so no statement lifts that; and the scan, for its damaged
    and skipped files."""
    found = scan(root)
    con = duckdb.connect(":memory:", config=LOCKED_DOWN)
    allowed = [str((found.root / d).resolve()) + "/" for d in (paths.results(), paths.SNAKEMAKE_METADATA)]
    con.execute(f"SET allowed_directories = [{', '.join(map(quote, allowed))}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    for stmt in view_statements(found, targets):
        con.execute(stmt)
    return con, found


# Set when the connection opens, before any SQL: no extension installed or loaded behind a query's back (a
# read_csv('https://…') would fetch httpfs), no temporary directory (DuckDB's default is .tmp in the cwd).
LOCKED_DOWN = {"autoinstall_known_extensions": False, "autoload_known_extensions": False, "temp_directory": ""}


def connect(root: Path | None = None, targets: Path | None = None) -> duckdb.DuckDBPyConnection:
    return open_catalog(root, targets)[0]


class QueryRefused(ValueError):
    """SQL that `sublevel query` does not run: it only reads."""


READ_STATEMENTS = ("SELECT", "EXPLAIN SELECT")  # DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse empty SQL and any statement that is not a read (COPY, ATTACH, CREATE, INSERT, INSTALL/LOAD,
    SET, PRAGMA, ...): DuckDB's file access limits alone would still let COPY overwrite a results table."""
    statements = con.extract_statements(sql)
    if not statements:
        raise QueryRefused("empty SQL: give a SELECT statement")
    for st in statements:
        if (kind := _statement_kind(con, st)) not in READ_STATEMENTS:
            raise QueryRefused(f"{kind} statements are refused: sublevel query only reads "
                               "(SELECT, EXPLAIN SELECT, DESCRIBE, SHOW, SUMMARIZE)")


def _statement_kind(con: duckdb.DuckDBPyConnection, st) -> str:
    """The statement's type; for EXPLAIN also that of the statement explained, which EXPLAIN ANALYZE runs."""
    if st.type.name != "EXPLAIN":
        return st.type.name
    inner = con.extract_statements(re.sub(r"^\s*explain(\s+analy[sz]e)?", "", st.query, count=1, flags=re.I))
    return "EXPLAIN " + (inner[0].type.name if len(inner) == 1 else "of several statements")


def query(sql: str, root: Path | None = None, con: duckdb.DuckDBPyConnection | None = None):
    """Run read-only `sql` over the views; returns a polars DataFrame."""
    con = con or connect(root)
    check_read_only(con, sql)
    return con.sql(sql).pl()


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
               censored, round(anchor_value, 3) as at_anchor, d_int90
        from threshold order by experiment, metric, eps, kind, t""",
    "theory": """
        select experiment, kind, burnin_step as t, metric, threshold as eps,
               round(d_star, 1) as d_star, round(d_star_lo, 1) as lo, round(d_star_hi, 1) as hi,
               round(d_star_bound, 1) as bound, round(bound_over_measured, 2) as "bound/d*",
               round(d_star_well, 1) as well, round(d_star_well_lo, 1) as well_lo, round(d_star_well_hi, 1) as well_hi,
               round(well_over_measured, 2) as "well/d*",
               round(distance, 2) as R, round(anchor_value, 3) as at_anchor,
               round(quadratic_anchor_loss, 3) as well_loss_at_anchor, coalesce(note, '') as note
        from dstar_predicted where kind in """ + in_list(PREDICTED) + """
        order by experiment, metric, eps, kind, t""",
    "prune_fraction": """
        select experiment, rewind_step, level, method, round(avg(sparsity), 4) as sparsity,
               round(avg(largest_connected_fraction), 3) as largest_connected_fraction,
               round(min(largest_connected_fraction), 3) as lo, round(max(largest_connected_fraction), 3) as hi,
               round(avg(top_eigenvalue), 4) as top_eigenvalue, count(*) as chains, any_value(fraction_max) as tried_up_to
        from prune_fraction group by experiment, rewind_step, level, method
        order by experiment, rewind_step, level, method""",
    "tickets": """
        with lvl as (select experiment, rewind_step, seed, level, sparsity, test_accuracy, matching_tolerance,
                            first_value(test_accuracy) over (partition by experiment, rewind_step, seed
                                                             order by level) as dense
                     from imp where method = 'imp')
        select experiment, rewind_step, round(avg(best), 4) as highest_matching_sparsity, count(*) as chains from (
            select experiment, rewind_step, seed, max(sparsity) filter (where """ + matching() + """) as best
            from lvl group by experiment, rewind_step, seed)
        group by experiment, rewind_step order by experiment, rewind_step""",
    "skipped": "select table_name as \"table\", file, reason from skipped order by file",
}


OPTIONAL_SECTIONS = ("theory", "prune_fraction", "skipped")  # shown only when they have rows


JOBS_BY_STAGE = """
    select stage, count(*) as jobs, round(sum(seconds), 1) as total_s, round(median(seconds), 1) as median_s,
           round(max(seconds), 1) as max_s, count(*) - count(seconds) as untimed
    from jobs group by stage order by total_s desc nulls last, stage"""
JOBS_TOTAL = """
    select count(*) as jobs, count(*) - count(seconds) as untimed, round(sum(seconds), 1) as job_s,
           round(epoch(max(finished)) - epoch(min(started)), 1) as span_s, min(started) as first_started
    from jobs"""


def summary(root: Path | None = None, con: duckdb.DuckDBPyConnection | None = None) -> dict:
    """The key numbers per experiment (polars frames by section): dense accuracy and D, d*(ε) per kind and
    d_int90, the highest IMP sparsity whose test accuracy stays within 1 point of the dense network's, and
    the outputs of jobs that were skipped."""
    con = con or connect(root)
    return {name: con.sql(sql).pl() for name, sql in SUMMARY.items()}


# DVC plots: one CSV file each, drawn by the template of the same name under .dvc/plots/, which colours by
# `series` (one curve each: what would otherwise collapse into one line per revision)
PLOTS = {
    "success": """select experiment || ' ' || kind || '@' || burnin_step || ' ' || metric
                         || case when metric like '%loss' then '<=' else '>=' end || threshold as series,
                         experiment, kind, burnin_step, metric, threshold, d, p_success from success
                  order by all""",
    "imp_accuracy": """select experiment || ' ' || method || coalesce(' rewind ' || rewind_step, '') as series, *
                       from (select experiment, rewind_step, method, level, round(avg(sparsity), 6) as sparsity,
                                    avg(test_accuracy) as test_accuracy, count(*) as seeds
                             from imp group by all) order by all""",
    "sharpness": """select experiment || ' ' || source || coalesce(' rewind ' || rewind_step || ' level ' || level, '')
                           as series, *
                    from (select experiment, source, rewind_step, level, step, avg(eigenvalue) as top_eigenvalue,
                                 count(*) as seeds
                          from hessian where rank = 1 group by all) order by all""",
}


def metrics(root: Path | None = None, con: duckdb.DuckDBPyConnection | None = None) -> dict:
    """The summary as plain JSON for DVC metrics: per experiment D, dense accuracy, highest matching sparsity
    ("highest_matching_sparsity@rewind=k" per rewind step when imp.rewind lists several), and d*(ε) per sweep
    ("kind@t metric>=eps") where P(d) reached 1/2, with how many did."""
    parts = summary(root, con)
    out: dict[str, dict] = {}
    for r in parts["dense"].iter_rows(named=True):
        out[r["experiment"]] = {"D": r["D"], "seeds": r["seeds"], "dense_test_accuracy": r["dense_test_accuracy"]}
    tickets = parts["tickets"]
    points = Counter(tickets["experiment"].to_list())  # rewind steps per experiment
    for r in tickets.iter_rows(named=True):
        several = points[r["experiment"]] > 1
        key = f"highest_matching_sparsity@rewind={r['rewind_step']}" if several else "highest_matching_sparsity"
        out.setdefault(r["experiment"], {})[key] = r["highest_matching_sparsity"]
    for r in parts["threshold"].iter_rows(named=True):
        op = "<=" if r["metric"].endswith("loss") else ">="
        key = f"{r['kind']}@{r['t']} {r['metric']}{op}{r['eps']:g}"
        e = out.setdefault(r["experiment"], {})
        e["sweeps_reaching_half"] = e.get("sweeps_reaching_half", 0) + (r["d_star"] is not None)
        if r["d_star"] is not None:  # DVC shows numbers only; a sublevel set never reached has no d*
            e.setdefault("d_star", {})[key] = r["d_star"]
    return out


def metric_files(root: Path | None = None, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, dict]:
    """metrics() as DVC's metrics files, so that `dvc metrics show` (a row per file, a column per key) stays a
    few columns wide: <experiment>.json with the experiment's numbers, and <experiment>/d_star-<kind>@<t>.json
    per sweep with its d* per sublevel set ("train_accuracy>=0.6")."""
    files = {}
    for experiment, numbers in metrics(root, con).items():
        files[f"{experiment}.json"] = {k: v for k, v in numbers.items() if k != "d_star"}
        for key, d_star in numbers.get("d_star", {}).items():
            sweep, level_set = key.split(" ", 1)
            files.setdefault(f"{experiment}/d_star-{sweep}.json", {})[level_set] = d_star
    return files


def plots(root: Path | None = None, con: duckdb.DuckDBPyConnection | None = None) -> dict:
    con = con or connect(root)
    return {name: con.sql(sql).pl() for name, sql in PLOTS.items()}
