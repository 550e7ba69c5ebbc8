"""Faults in a finished smoke run (smoke.yaml + a diverging and a data-diet experiment): a diverged dense run,
a deleted refinement plan, damaged tables and stores. Each ends in a recorded outcome or one command's fix,
never a traceback, and the next run rebuilds exactly what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sublevel import catalog, config, imp, paths, storage
from sublevel.plan import Plan
from conftest import ROOT, jobs_of, rules_of, snakemake

BIN = Path(sys.executable).parent
SKIPPED = {"imp", "barrier", "subspace", "hessian", "scores", "success", "threshold", "spectrum", "theory"}


def sublevel(*args: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sublevel"), *args, "--root", str(root)], capture_output=True, text=True)


@pytest.mark.slow
def test_a_diverged_dense_run_gives_every_dependent_a_recorded_skip(smoke_run):
    work, _ = smoke_run
    skipped = catalog.query("select table_name, file, reason from skipped", work)
    assert all("/experiment=blowup/" in f or "/blowup/" in f for f in skipped["file"])  # none for the others
    assert set(skipped["table_name"]) == SKIPPED
    assert all("diverged" in r for r in skipped["reason"]), skipped["reason"].to_list()
    assert catalog.query("select count(*) from imp where experiment = 'blowup'", work).item() == 0
    for log in (work / paths.results() / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(), log
    with pytest.raises(storage.Skipped, match="diverged"):  # a reader of a skipped store is told why
        imp.Level.read(work / paths.level_store("blowup", 5, 0, "imp", 0))
    summary = sublevel("summary", root=work)
    assert summary.returncode == 0 and "Skipped jobs" in summary.stdout and "blowup" in summary.stdout


@pytest.mark.slow
def test_a_deleted_refinement_plan_is_rebuilt_and_then_nothing_is_left(smoke_copy):
    work, cfg = smoke_copy
    plan = work / paths.refine_plan("smoke", "random", 0, 0)
    want = plan.read_text()
    plan.unlink()
    run = snakemake(work, configfile=cfg)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "refine_plan" in rules_of(run) and plan.read_text() == want
    assert "Nothing to be done" in snakemake(work, "-n", configfile=cfg).stdout


@pytest.mark.slow
def test_check_results_names_the_damage_and_fix_makes_the_next_run_rebuild_it(smoke_copy):
    work, cfg = smoke_copy
    table = work / paths.table("subspace", experiment="smoke", kind="random", burnin_step=0, round=0, d=8, block=0)
    table.write_bytes(table.read_bytes()[:100])

    # the other tables still answer; every reading command reports the damage in one line
    q = sublevel("query", "select count(*) as n from train", "--format", "csv", root=work)
    assert q.returncode == 0 and int(q.stdout.split()[1]) > 0
    for command in (["query", "select count(*) as n from train"], ["summary"], ["jobs"]):
        err = sublevel(*command, root=work).stderr
        assert err.count("check-results --fix") == 1 and str(table.relative_to(work)) in err, (command, err)

    # the job that reads it fails, naming the file and the fix
    failed = snakemake(work, configfile=cfg)
    assert failed.returncode != 0 and "check-results --fix" in failed.stdout + failed.stderr

    found = sublevel("check-results", root=work)
    assert found.returncode != 0 and f"damaged: {table.relative_to(work)}" in found.stdout
    assert found.stdout.count("damaged: ") == 1
    fixed = sublevel("check-results", "--fix", root=work)
    assert fixed.returncode == 0 and not table.exists()

    rebuilt = snakemake(work, configfile=cfg)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "subspace_sweep" in rules_of(rebuilt) and "train_dense" not in rules_of(rebuilt)
    assert "Nothing to be done" in snakemake(work, "-n", configfile=cfg).stdout
    assert "no damage" in sublevel("check-results", root=work).stdout

    # a truncated chunk of a trajectory, which Snakemake cannot see: --fix, and the run retrains that seed
    chunks = [p for p in (work / paths.trajectory("smoke", 1) / "params" / "c").rglob("*") if p.is_file()]
    chunk = max(chunks, key=lambda p: p.stat().st_size)
    chunk.write_bytes(chunk.read_bytes()[:10])
    assert str(paths.trajectory("smoke", 1)) in sublevel("check-results", root=work).stdout
    assert sublevel("check-results", "--fix", root=work).returncode == 0
    plan = snakemake(work, "-n", configfile=cfg)
    assert [j for j in jobs_of(plan) if j[0] == "train_dense"] == [("train_dense", "experiment=smoke, seed=1")]


@pytest.mark.slow
def test_a_second_run_is_refused_and_kill_9_then_rerun_gives_the_same_tables(smoke_copy, tmp_path):
    """A second run while one is mid-job is refused; then the whole Snakemake process group killed mid-job (as
    a lost login session does): `snakemake --unlock`, then a plain rerun rebuilds what the kill touched, and the tables equal the clean run's."""
    work, cfg = smoke_copy
    tables = {"imp": "select * from imp order by all",
              "barrier": "select experiment, seed, kind, level, barrier, error from barrier order by all"}
    want = {name: catalog.query(sql, work).rows() for name, sql in tables.items()}
    out = tmp_path / "killed.log"
    with open(out, "w") as f:
        first = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                                  str(work), "--cores", "2", "--configfile", str(cfg), "--forcerun", "imp_level_smoke_block0"],
                                 stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    # Frozen mid-job (SIGSTOP on the group while a job's outputs are marked incomplete), so that the second
    # run meets the first one's lock at a known point instead of racing its jobs.
    incomplete = work / ".snakemake" / "incomplete"
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if incomplete.is_dir() and any(incomplete.iterdir()):
            os.killpg(first.pid, signal.SIGSTOP)
            if any(incomplete.iterdir()):
                break
            os.killpg(first.pid, signal.SIGCONT)
        time.sleep(0.05)
    assert first.poll() is None and any(incomplete.iterdir()), out.read_text()[-3000:]
    second = snakemake(work, configfile=cfg)
    assert second.returncode != 0 and "cannot be locked" in second.stderr, second.stderr[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    assert snakemake(work, "--unlock", configfile=cfg).returncode == 0
    rerun = snakemake(work, configfile=cfg)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "imp_level_smoke_block0" in rules_of(rerun) and "train_dense" not in rules_of(rerun)
    assert {name: catalog.query(sql, work).rows() for name, sql in tables.items()} == want
    assert "Nothing to be done" in snakemake(work, "-n", configfile=cfg).stdout


@pytest.mark.slow
def test_a_deleted_store_of_any_kind_is_rebuilt_with_exactly_what_reads_it(smoke_copy, tmp_path, monkeypatch):
    """Every output is reachable from the default target: with one store gone (a dataset, an IMP level, a
    baseline level, a sweep job's runs, the scores, a figure's SVG) a plain run plans the job that writes it
    and what depends on it: the same jobs as when the table written beside it is gone."""
    import shutil

    work, cfg = smoke_copy
    monkeypatch.chdir(work)  # the plans are read where the run's paths are relative to
    plan = Plan(config.load(cfg))
    plan_of = lambda e, kind, t, round: str(paths.refine_plan(e, kind, t, round))
    targets = set(plan.dense_outputs() + plan.imp_outputs() + plan.subspace_outputs() + plan.analysis_outputs()
                  + plan.refine_plans(plan_of) + plan.sweep_files(plan_of))
    made = set()  # every file the run made, a store (or an export's folder) as one; not its logs and job files
    folders = (paths.plots_dir(), paths.metrics_dir(), paths.summary_dir())
    for here, dirs, files in os.walk(work / paths.results()):
        here = Path(here).relative_to(work)
        if here.relative_to(paths.results()).parts[:1] not in (("logs",), ("jobs",)):
            whole = [d for d in dirs if d.endswith(".zarr") or here / d in folders]
            made |= {str(here / name) for name in whole + files}
            dirs[:] = [d for d in dirs if d not in whole]
    assert made == targets  # all asks for each (Snakemake rebuilds a missing input only for a job that reruns)

    method = "random_reinit"
    level = lambda stage, m=None: paths.level_store("smoke", 5, 0, stage, 1, m)
    cases = {  # a store, and its job's table (None: the dataset, whose job writes no table)
        paths.dataset_store("mnist1d"): None,
        level("imp"): paths.table("imp", experiment="smoke", rewind_step=5, seed=0, stage="imp", level=1),
        level("baselines", method): paths.table("imp", experiment="smoke", rewind_step=5, seed=0,
                                                stage="baselines", level=1, method=method),
        paths.sweep_store("smoke", "random", 0, 0, 8, 0): paths.table(
            "subspace", experiment="smoke", kind="random", burnin_step=0, round=0, d=8, block=0),
        paths.scores_store("smoke"): paths.table("scores", experiment="smoke"),
        paths.figure("smoke", "subspace_success", "svg"): paths.figure("smoke", "subspace_success", "png"),
    }

    def planned_without(path: Path) -> set[tuple[str, str]]:
        aside = tmp_path / "aside"
        shutil.move(work / path, aside)  # a move keeps its times: put back, the run is finished again
        try:
            run = snakemake(work, "-n", configfile=cfg)
            assert run.returncode == 0, run.stderr[-3000:]
            return set(jobs_of(run))
        finally:
            shutil.move(aside, work / path)

    for store, table in cases.items():
        assert (work / store).exists(), store
        jobs = planned_without(store)
        if table is None:
            assert {("prepare_data", "dataset=mnist1d"), ("train_dense", "experiment=smoke, seed=0")} <= jobs
        else:
            assert jobs and jobs == planned_without(table), store
    assert "Nothing to be done" in snakemake(work, "-n", configfile=cfg).stdout

    # the issue as found: one chunk of a level store damaged, --fix removes it, the next run rebuilds it
    chunk = next(p for p in sorted((work / level("imp")).rglob("c/*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:3])
    assert sublevel("check-results", "--fix", root=work).returncode == 0 and not (work / level("imp")).exists()
    rebuilt = snakemake(work, configfile=cfg)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert (work / level("imp")).is_dir() and "no damage" in sublevel("check-results", root=work).stdout
    assert "Nothing to be done" in snakemake(work, "-n", configfile=cfg).stdout


@pytest.mark.slow
def test_a_result_dated_in_the_future_is_named_and_nothing_is_lost(smoke_copy):
    """A trajectory touched a day ahead (a skewed clock, an archive's times): each run refuses in one line
    before any job instead of rerunning what reads it and then deleting those outputs; check-results names it
    and --fix dates it now, after which the run reruns what reads it, once."""
    work, cfg = smoke_copy
    trajectory = work / paths.trajectory("smoke", 1)
    ahead = time.time() + 86400
    for p in [trajectory, *trajectory.rglob("*")]:
        os.utime(p, (ahead, ahead))
    tables = lambda: {p: p.read_bytes() for p in (work / paths.results()).rglob("*") if p.is_file()
                      and "logs" not in p.parts}
    before = tables()
    for _ in range(2):
        run = snakemake(work, configfile=cfg)
        said = run.stdout + run.stderr
        assert run.returncode != 0 and "dated in the future" in said and not rules_of(run), said[-2000:]
    assert tables() == before
    found = sublevel("check-results", root=work)
    assert found.returncode != 0 and "24.0 h ahead" in found.stderr
    assert sublevel("check-results", "--fix", root=work).returncode == 0
    assert max(p.stat().st_mtime for p in [trajectory, *trajectory.rglob("*")]) <= time.time()
    plan = snakemake(work, "-n", configfile=cfg)
    assert plan.returncode == 0 and "scores" in rules_of(plan) and "train_dense" not in rules_of(plan)


@pytest.mark.slow
def test_no_job_records_an_absolute_path_so_a_moved_project_reruns_nothing(smoke_run):
    """Snakemake reruns a job whose recorded inputs or params changed: an absolute path among them (the
    shipped targets.csv was one) would rerun it in every copied or moved project."""
    import base64
    import json

    work, _ = smoke_run
    records = list((work / paths.SNAKEMAKE_METADATA).iterdir())
    assert len(records) > 50
    for record in records:
        job = json.loads(record.read_text())
        for key in ("input", "params"):
            assert '"/' not in json.dumps(job.get(key)), (base64.b64decode(record.name).decode(), key)
