import base64
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sublevel import catalog, cli, paths, schema, storage
from conftest import train_row


def write(project, experiment, seed, rows):
    storage.write_table("train", rows, project / paths.table("train", experiment=experiment, seed=seed))


def test_the_python_api_reads_another_results_root_for_that_call_only(project, monkeypatch):
    import sublevel

    monkeypatch.setenv(paths.RESULTS_VARIABLE, "results")
    write(project, "default", 0, [train_row(experiment="default")])
    with paths.results_root("results/smoke"):
        write(project, "smoke", 0, [train_row(experiment="smoke")])
    experiments = lambda **kw: sublevel.query("select distinct experiment from train", project, **kw).rows()
    assert experiments(results="results/smoke") == [("smoke",)]
    assert experiments() == [("default",)] and os.environ[paths.RESULTS_VARIABLE] == "results"  # as it was
    assert sublevel.table("train", project, results="results/smoke")["experiment"].to_list() == ["smoke"]


def test_every_table_is_a_view_even_before_any_job_ran(project):
    con = catalog.connect(project)
    for name, table in schema.TABLES.items():
        rel = con.sql(f"select * from {name}")
        assert rel.columns == table.schema.names and rel.fetchall() == []


def test_jobs_view_is_empty_before_snakemake_ran_then_one_row_per_job(project):
    rel = catalog.connect(project).sql("select * from jobs")
    assert rel.columns == list(catalog.JOBS_COLUMNS) and rel.fetchall() == []
    # Snakemake's record per output file (the fields the view reads), named by its output's path in URL-safe
    # base64, cut into '@'-prefixed folders when long: two outputs of one job, one of another, a job a cluster
    # executor ran (its start is when the main process saw it finish: after its end), a job still running, a
    # record cut short, and the jobs of two other configs' results roots (one nested in this one, one around it)
    meta = project / paths.SNAKEMAKE_METADATA
    meta.mkdir(parents=True)
    root = paths.results()
    records = [("a", 7, 100.0, 104.0, "results/logs/a-1.log", False, root / "tables/a/seed=0/a.parquet"),
               ("a", 7, 100.5, 105.0, "results/logs/a-1.log", False, root / "runs/a/seed=0/trajectory.zarr"),
               ("a", 8, 110.0, 111.0, "results/logs/a-2.log", False, root / "tables/a/seed=1/a.parquet"),
               ("s", 11, 140.002, 140.0, "results/logs/s.log", False, root / "reproduction.csv"),
               ("imp_level_my_exp_block0", 14, 150.0, 152.0, "results/logs/i-0.log", False, root / "tables/i/0.parquet"),
               ("imp_level_my_exp_block1", 15, 160.0, 161.0, "results/logs/i-1.log", False, root / "tables/i/1.parquet"),
               ("b", 9, 120.0, None, "results/logs/b.log", True, root / "tables/b/b.parquet"),
               ("n", 12, 90.0, 95.0, "results/logs/n.log", False, root / "nested/tables/a/a.parquet"),
               ("o", 13, 90.0, 95.0, "results/logs/o.log", False, root.parent / "tables/a/a.parquet")]
    for rule, job, start, end, log, incomplete, output in records:
        name = base64.urlsafe_b64encode(str(output).encode()).decode()
        record = meta.joinpath(*["@" + name[i:i + 20] for i in range(0, len(name) - 20, 20)], name[-(len(name) % 20 or 20):])
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"rule": rule, "job_hash": job, "starttime": start, "endtime": end,
                                      "log": [log], "incomplete": incomplete, "input": ["x"]}))
    (meta / "being-written").write_text('{"rule": "c", "job_hash": 10, "starttime": 130.0, "endt')
    rows = catalog.query("select rule, stage, log, seconds, outputs, epoch(started) from jobs order by log",
                         project).rows()
    assert rows == [("a", "a", "results/logs/a-1.log", 5.0, 2, 100.0), ("a", "a", "results/logs/a-2.log", 1.0, 1, 110.0),
                    ("imp_level_my_exp_block0", "imp_level", "results/logs/i-0.log", 2.0, 1, 150.0),
                    ("imp_level_my_exp_block1", "imp_level", "results/logs/i-1.log", 1.0, 1, 160.0),
                    ("s", "s", "results/logs/s.log", None, 1, None)]
    assert catalog.query("select epoch(finished) from jobs where rule = 's'", project).item() == 140.0
    total = catalog.query(catalog.JOBS_TOTAL, project).select("jobs", "untimed", "job_s", "span_s").rows()
    assert total == [(5, 1, 9.0, 61.0)]
    by_stage = catalog.query(catalog.JOBS_BY_STAGE, project).select("stage", "jobs", "total_s", "untimed").rows()
    assert by_stage == [("a", 2, 6.0, 0), ("imp_level", 2, 3.0, 0), ("s", 1, None, 1)]  # block rules by stage


def test_views_union_all_jobs_files(project):
    write(project, "a", 0, [train_row(experiment="a"), train_row(experiment="a", step=10)])
    write(project, "b", 1, [train_row(experiment="b", seed=1)])
    df = catalog.query("select experiment, count(*) n from train group by 1 order by 1", project)
    assert df.rows() == [("a", 2), ("b", 1)]


def test_union_by_name_tolerates_an_older_file_without_a_column(project):
    write(project, "a", 0, [train_row(experiment="a")])
    old = pa.Table.from_pylist([{k: v for k, v in train_row(experiment="old").items() if k != "device"}])
    path = project / paths.table("train", experiment="old", seed=0)
    path.parent.mkdir(parents=True)
    pq.write_table(old, path)
    df = catalog.query("select experiment, device from train order by 1", project)
    assert df.rows() == [("a", "cpu"), ("old", None)]


def test_half_written_files_are_not_read(project):
    write(project, "a", 0, [train_row(experiment="a")])
    tmp = project / paths.table("train", experiment="b", seed=0)
    tmp = tmp.with_name(f".{tmp.name}.tmp-123")
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"PAR1 half a file")
    assert catalog.query("select count(*) from train", project).item() == 1


def test_cli_query_formats(project, capsys, monkeypatch):
    write(project, "a", 0, [train_row(experiment="a", accuracy=0.25), train_row(experiment="a", step=3, accuracy=0.75)])
    monkeypatch.chdir(project / "workflow")  # the root is found from a subdirectory
    assert cli.main(["query", "select step, accuracy from train order by step", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["step,accuracy", "0,0.25", "3,0.75"]
    assert cli.main(["query", "select step from train order by step", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"step": 0}, {"step": 3}]
    assert cli.main(["query", "select experiment, step from train order by step"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("experiment" in l and "step" in l for l in lines) and len({len(l) for l in lines}) == 1  # aligned


def test_cli_query_bad_sql_exits_non_zero_with_duckdbs_message(project):
    with pytest.raises(SystemExit) as e:
        cli.main(["query", "selec 1", "--root", str(project)])
    assert "syntax error" in str(e.value.code)


def test_views_sql_runs_in_a_plain_duckdb(project, capsys):
    import duckdb

    write(project, "a", 0, [train_row(experiment="a")])
    cli.main(["views", "--root", str(project)])
    con = duckdb.connect()
    con.execute(capsys.readouterr().out)
    assert con.execute("select count(*) from train").fetchall() == [(1,)]


def test_summary_on_a_project_with_no_results(project, capsys):
    assert all(frame.height == 0 for frame in catalog.summary(project).values())
    assert cli.main(["summary", "--root", str(project)]) == 0
    assert capsys.readouterr().out.count("(no rows yet)") == 3


@pytest.mark.parametrize("sql", [
    "copy (select * from train) to 'results/tables/train/experiment=a/seed=0/train.parquet'",
    "attach 'results/x.duckdb' as x", "create table t as select 1", "insert into train select * from train",
    "install httpfs", "load httpfs", "set enable_external_access = true", "pragma enable_profiling",
    "select 1; copy (select 1) to 'results/y.csv'", "explain analyze copy (select 1) to 'results/y.csv'",
    "explain analyze create table t as select 1", "call pragma_version()",
])
def test_query_refuses_every_statement_that_is_not_a_read_and_changes_nothing(project, sql):
    write(project, "a", 0, [train_row(experiment="a")])
    before = {p: p.read_bytes() for p in (project / "results").rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as e:
        cli.main(["query", sql, "--root", str(project)])
    assert str(e.value.code).startswith("sublevel query: ") and "refused" in str(e.value.code)
    assert "\n" not in str(e.value.code)
    assert {p: p.read_bytes() for p in (project / "results").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("sql", ["describe train", "summarize train", "show tables", "from train",
                                 "explain analyze select count(*) from train", "with a as (select 1) select * from a"])
def test_query_runs_every_kind_of_read(project, sql):
    write(project, "a", 0, [train_row(experiment="a")])
    assert catalog.query(sql, project).height > 0


def test_query_reads_only_the_projects_results(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "t.csv"
    outside.write_text("a\n1\n")
    for sql in ("select * from read_csv('/etc/passwd')", f"select * from read_csv('{outside}')",
                f"select * from read_csv('{project}/results/../../{outside.parent.name}/t.csv')"):
        with pytest.raises(SystemExit) as e:
            cli.main(["query", sql, "--root", str(project)])
        assert "Permission Error" in str(e.value.code)


@pytest.mark.parametrize("args, env, message", [
    (["query", "", "--root", "{project}"], {}, "empty SQL"),
    (["query", "  ;  ", "--root", "{project}"], {}, "empty SQL"),
    (["query", "select 1", "--root", "/no/such/dir"], {}, "--root /no/such/dir: no such directory"),
    (["query", "select 1"], {"SUBLEVEL_ROOT": "/no/such/dir"}, "SUBLEVEL_ROOT=/no/such/dir: no such directory"),
    (["query", "select 1"], {}, "no sublevel project (Snakefile + workflow/) at or above"),
])
def test_query_without_a_question_or_a_project_says_so_in_one_line(project, tmp_path_factory, monkeypatch, capsys,
                                                                    args, env, message):
    """Run from a directory outside any project: never the checkout the package was installed from."""
    monkeypatch.chdir(tmp_path_factory.mktemp("not-a-project"))
    monkeypatch.delenv("SUBLEVEL_ROOT", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        code = cli.main([a.format(project=project) for a in args])
    except SystemExit as e:
        code = e.code
    said = f"{code if isinstance(code, str) else ''}{capsys.readouterr().err}".strip()
    assert code not in (0, None) and message in said and "\n" not in said, said


def test_csv_over_list_columns_is_refused_with_the_way_out(project):
    storage.write_table("barrier", [dict(experiment="a", seed=0, kind="instability", level=0, rewind_step=0,
                                         sparsity=0.0, split="test", barrier=0.0, alpha=[0.0, 1.0],
                                         error=[0.1, 0.2], loss=[0.3, 0.4], matching=True, test_accuracy=0.9)],
                        project / paths.table("barrier", experiment="a", rewind_step=0, seed=0, kind="instability",
                                              level=0))
    with pytest.raises(SystemExit) as e:
        cli.main(["query", "select alpha from barrier", "--root", str(project), "--format", "csv"])
    assert "--format csv cannot hold the list columns ['alpha']" in str(e.value.code)


def test_imp_files_of_the_layout_before_rewind_steps_are_left_out_and_named(project, capsys):
    """An IMP chain written before chains had a rewind step (.../seed=<s>/...) is the same chain the current
    layout writes again under rewind_step=<k>/: read both and every row would count twice."""
    rows = [{c: None for c in schema.IMP.schema.names} | dict(experiment="a", seed=0, method="imp", level=0,
                                                              rewind_step=0, test_accuracy=0.9)]
    storage.write_table("imp", rows, project / paths.table("imp", experiment="a", seed=0, stage="imp", level=0))
    storage.write_table("imp", rows, project / paths.table("imp", experiment="a", rewind_step=0, seed=0, stage="imp",
                                                           level=0))
    hessian = [{c: None for c in schema.HESSIAN.schema.names} | dict(experiment="a", seed=0, source=s, rank=1)
               for s in ("dense", "imp")]
    storage.write_table("hessian", hessian[:1], project / paths.table("hessian", experiment="a", seed=0, source="dense"))
    storage.write_table("hessian", hessian[1:], project / paths.table("hessian", experiment="a", seed=0, source="imp",
                                                                      level=0))
    found = catalog.scan(project)
    assert sorted(p.relative_to(project) for p in found.stale) == [
        paths.table("hessian", experiment="a", seed=0, source="imp", level=0),
        paths.table("imp", experiment="a", seed=0, stage="imp", level=0)]
    assert catalog.query("select count(*) as n from imp", project)["n"].to_list() == [1]
    assert catalog.query("select source from hessian", project)["source"].to_list() == ["dense"]
    assert "2 IMP table file(s) of the layout before rewind_step=<k> left out" in found.damage_line()
    cli.main(["query", "select count(*) from imp", "--root", str(project)])
    assert "left out of every view" in capsys.readouterr().err


def test_a_reader_that_stops_reading_ends_the_command_without_a_traceback(project):
    """`sublevel views | head -1`: the closed pipe is the reader's choice, not an error to report."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.Popen([str(Path(sys.executable).parent / "sublevel"), "views", "--root", str(project)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command has written a line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE and "Traceback" not in err, err


def _sublevel(*args, home):
    """The installed command in a fresh process, with its own HOME (where DuckDB would install extensions)."""
    import subprocess
    import sys

    return subprocess.run([str(Path(sys.executable).parent / "sublevel"), *args], capture_output=True, text=True,
                          env=dict(os.environ, HOME=str(home)), timeout=120)


def test_the_query_is_locked_down_before_any_of_its_sql_is_parsed(project, tmp_path_factory):
    """Nothing of the user's SQL runs on an unrestricted connection: no directory made outside the project, no
    extension fetched or installed, no file outside results/ read, no link under results/ followed, no
    temporary directory."""
    home, outside = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("outside")
    (outside / "secret-name.csv").write_text("a\n1\n")
    (project / "results").mkdir()
    (project / "results" / "link").symlink_to(outside, target_is_directory=True)
    write(project, "a", 0, [train_row(experiment="a")])
    export = outside / "exported"
    for sql in (f"export database '{export}'", "select * from read_csv('https://example.invalid/x.csv')",
                "select * from sqlite_scan('x.db', 't')", "select * from read_csv('/etc/shadow')",
                f"select * from read_csv('{project}/results/link/secret-name.csv')",
                f"select * from glob('{project}/results/link/*')", f"select * from glob('{project}/results/**')"):
        run = _sublevel("query", sql, "--root", str(project), "--format", "csv", home=home)
        assert "secret-name" not in run.stdout and "Traceback" not in run.stderr, (sql, run.stderr)
        assert run.returncode != 0 or "glob" in sql, (sql, run.stdout)
    assert not export.exists() and not list(home.iterdir())  # nothing written in HOME: no ~/.duckdb/extensions
    elsewhere = outside / "train.parquet"  # a table linked in from outside is not one of the project's
    storage.write_table("train", [train_row(experiment="outside")], elsewhere)
    linked = project / paths.table("train", experiment="outside", seed=0)
    linked.parent.mkdir(parents=True)
    linked.symlink_to(elsewhere)
    assert catalog.query("select experiment from train", project)["experiment"].to_list() == ["a"]
    con = catalog.connect(project)
    assert con.sql("select current_setting('temp_directory'), current_setting('autoinstall_known_extensions'), "
                   "current_setting('autoload_known_extensions')").fetchall() == [("", False, False)]


@pytest.mark.parametrize("root", ["/", "/etc", "{project}/results", "{project}/workflow"])
def test_a_root_that_is_not_a_project_is_an_error_not_empty_tables(project, root, capsys):
    """A project, or a run's working directory (holding results/), is a root; nothing else is."""
    (project / "results" / "tables").mkdir(parents=True)
    assert cli.main(["query", "select count(*) from train", "--root", root.format(project=project)]) == 2
    err = capsys.readouterr().err
    assert "not a sublevel project" in err and err.count("\n") == 1


def test_a_damaged_table_refuses_every_read_direct_or_through_a_view(project, capsys):
    """One train file truncated: a query reading train refuses, also as the second statement and through
    the views built on it; the only theory file truncated: dstar_predicted refuses (a threshold row joins it),
    the only prune_sweep file: prune_fraction refuses, the only imp file: reproduction refuses. Tables with no
    damage still answer."""
    for seed in (0, 1):
        write(project, "a", seed, [train_row(experiment="a", seed=seed)])
    damaged = project / paths.table("train", experiment="a", seed=1)
    damaged.write_bytes(damaged.read_bytes()[:40])
    keys = dict(experiment="a", kind="random", burnin_step=0, metric="train_loss", threshold=1.0)
    storage.write_table("threshold", [{c: None for c in schema.THRESHOLD.schema.names} | keys],
                        project / paths.table("threshold", experiment="a"))
    for name, row, where in (("theory", keys, {}), ("prune_sweep", {}, {}),
                             ("imp", dict(experiment="frankle2019_lenet300_short", method="imp"),
                              dict(rewind_step=0, seed=0, stage="imp", level=0))):
        f = project / paths.table(name, experiment="a", **where)
        storage.write_table(name, [{c: None for c in schema.TABLES[name].schema.names} | row], f)
        f.write_bytes(f.read_bytes()[:40])
    for sql in ("select count(*) as n from train", "select 1 as one; select count(*) as n from train",
                "select * from query_table('train')", "select * from reproduction",
                "select count(*) from dstar_predicted", "select count(*) from prune_fraction",
                "select max(step) from train where step > 10^9"):
        with pytest.raises(SystemExit) as e:
            cli.main(["query", sql, "--root", str(project)])
        message = str(e.value.code)
        assert message.startswith("sublevel query: refused: ") and "check-results --fix" in message, (sql, message)
        assert "\n" not in message
    assert "seed=1" in message or "prune_sweep" in message
    assert catalog.query("select count(*) as n from hessian", project)["n"].to_list() == [0]
    assert catalog.query("describe train", project).height > 0  # the columns, without reading a row
    assert cli.main(["summary", "--root", str(project)]) == 1  # the other commands refuse in the same line
    assert capsys.readouterr().err.splitlines()[-1].startswith("sublevel summary: refused: train would be read")


def test_views_name_a_glob_per_table_whatever_its_file_count_and_files_when_one_is_left_out(project):
    for seed in range(40):
        write(project, "a", seed, [train_row(experiment="a", seed=seed)])
    statement = next(s for s in catalog.view_statements(project) if s.startswith("CREATE OR REPLACE VIEW train "))
    assert "**" in statement and len(statement) < 300
    assert catalog.query("select count(*) from train", project).item() == 40
    (project / paths.tables_dir() / "train" / "link.parquet").symlink_to(project / paths.table("train", experiment="a",
                                                                                               seed=0))
    statement = next(s for s in catalog.view_statements(project) if s.startswith("CREATE OR REPLACE VIEW train "))
    assert "**" not in statement and statement.count(".parquet") == 40  # the link is no table file: left out


def test_a_results_root_outside_results_is_refused_in_one_line(project, capsys):
    for bad in ("/tmp", "results/../..", "elsewhere"):
        assert cli.main(["summary", "--root", str(project), "--results", bad]) == 2
        assert "give results or a folder under it" in capsys.readouterr().err
    assert cli.main(["summary", "--root", str(project), "--results", "results/tables"]) == 2
    assert "holds the default root's own results" in capsys.readouterr().err


def test_every_path_of_a_results_root_starts_with_one_of_its_entries():
    """The jobs view tells a root's records from a nested root's by paths.ROOT_ENTRIES: every path the
    pipeline writes must start with one of them."""
    made = [paths.dataset_store("d"), paths.trajectory("e", 0), paths.tensorboard("e", 0), paths.job_file("x.json"),
            paths.table("train", experiment="e"), paths.log("train", "e", 0), paths.level_store("e", 0, 0, "imp", 1),
            paths.diet_start("e", 0, 0), paths.scores_store("e"), paths.figure("e", "f"),
            paths.sweep_store("e", "random", 0, 0, 2, 0), paths.refine_plan("e", "random", 0, 0),
            paths.sweep_summary("e", "random", 0), paths.metrics_dir(), paths.summary_dir(), paths.plots_dir(),
            paths.reproduction_file()]
    assert {p.relative_to(paths.results()).parts[0] for p in made} <= set(paths.ROOT_ENTRIES)
