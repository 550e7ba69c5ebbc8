"""The pipeline as a user runs it: snakemake on a config, then `sublevel query`."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from sublevel import catalog, config, datasets, imp, paths, sweep, training, trajectory
from sublevel.config import Experiment
from sublevel.functional import evaluate_many
from sublevel.stages import for_stage
import headless as browser
from conftest import DIET, config_file, snakemake

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_default_config_dry_run_and_lint_are_clean():
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_the_snakefiles_are_formatted_by_snakefmt():
    """The snakemake-workflows convention, at pyproject.toml's [tool.snakefmt] line length."""
    fmt = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.slow
def test_report_shows_every_figure_in_a_real_browser(smoke_run):
    """snakemake --report: one self-contained HTML file; headless Chromium decodes every figure in it."""
    work, cfg = smoke_run
    report = work / "results" / "report.html"
    res = snakemake(work, "--report", str(report), configfile=cfg)
    assert res.returncode == 0, res.stderr[-3000:]
    every = ["train_curves", "imp_accuracy", "imp_barrier", "subspace_success", "dstar_burnin", "imp_dstar",
             "sharpness", "scores"]
    # blowup's figures say that their jobs were skipped (its dense run diverged): still decoded images
    # smoke alone sweeps the fraction one IMP level prunes (imp.fraction_sweep); smoke and blowup predict d*
    figures = {"smoke": every + ["prune_fraction", "spectral_density"],
               "diet": ["train_curves", "imp_accuracy", "imp_early_stop", "imp_barrier", "scores"],
               "blowup": every + ["spectral_density"],
               "rewinds": ["train_curves", "imp_accuracy", "imp_barrier", "sharpness"]}
    for exp, names in figures.items():
        for name in names:
            assert (work / paths.figure(exp, name)).read_bytes()[:4] == b"\x89PNG"
            assert b"<svg" in (work / paths.figure(exp, name, "svg")).read_bytes()[:2000]
    seen = browser.report_figures(report)
    want = {str(paths.figure(exp, name)) for exp, names in figures.items() for name in names}
    # tables, not images: the summary's sections (the report's first page) and the reproductions page
    tables = {str(p.relative_to(work)) for p in (work / paths.summary_dir()).glob("*.csv")}
    assert {str(paths.summary_dir() / "1-dense.csv"), str(paths.summary_dir() / "2-threshold.csv")} <= tables
    assert set(seen) == want | tables | {str(paths.reproduction_file())}
    for table in tables | {str(paths.reproduction_file())}:
        assert seen.pop(table)["caption"], table
    for path, figure in seen.items():
        assert figure["width"] > 100 and figure["height"] > 100, (path, figure)  # decoded, not a broken image
        assert figure["caption"], path
    app = browser.rendered_text(report)  # the report's own React app came up: the summary, then a heading per stage
    assert "Results" in app and "degrees of freedom" in app
    assert app.index("1 Summary") < app.index("2 Dense training") < app.index("3 Lottery tickets")
    assert "Reproductions" in app


@pytest.mark.slow
def test_smoke_run_end_to_end_with_a_diverging_experiment(smoke_run):
    work, cfg = smoke_run

    # every declared output, and a log per job
    for exp, seeds in (("smoke", (0, 1)), ("blowup", (0,))):
        for seed in seeds:
            assert (work / paths.trajectory(exp, seed) / "zarr.json").is_file()
            assert (work / paths.table("train", experiment=exp, seed=seed)).is_file()
            assert (work / paths.log("train", exp, seed)).is_file()
    smoke = config.experiment(config.load(cfg), "smoke")
    t = trajectory.read(work / paths.trajectory("smoke", 0))
    assert t.steps[0] == 0 and t.steps[-1] == smoke.train.steps and t.params().shape == (len(t.steps), t.attrs["D"])
    assert t.attrs["D"] == smoke.num_params() and t.attrs["diverged"] is False

    con = catalog.connect(work)
    n, = con.execute("select count(*) from train where experiment = 'smoke'").fetchall()[0]
    assert n > 0
    flags = con.execute("select experiment, bool_and(diverged), bool_or(diverged) from train group by 1 "
                        "order by 1").fetchall()
    assert flags == [("blowup", True, True), ("diet", False, False), ("rewinds", False, False), ("smoke", False, False)]
    assert trajectory.read(work / paths.trajectory("blowup", 0)).attrs["diverged"] is True

    # IMP: levels 0..L and every baseline per pruned level, barriers, figures, for each chain of smoke.yaml
    rows = con.execute("select method, level, round(sparsity, 4) from imp where experiment = 'smoke' "
                       "order by 1, 2").fetchall()
    spec = smoke.imp
    assert [r for r in rows if r[0] == "imp"] == [("imp", lv, round(1 - (1 - spec.fraction) ** lv, 4))
                                                  for lv in range(spec.levels + 1)]
    assert len(rows) == len(spec.seeds) * (spec.levels + 1 + len(spec.baselines) * spec.levels)
    assert con.execute("select count(distinct sparsity) from imp where level = 2").fetchall() == [(1,)]
    kinds = con.execute("select kind, list(distinct level order by level) from barrier where experiment = 'smoke' "
                        "group by 1 order by 1").fetchall()
    assert kinds == [("imp_successive", [1, 2]), ("instability", [0, 1, 2])]
    for name in ("imp_accuracy", "imp_barrier"):
        assert (work / paths.figure("smoke", name)).read_bytes()[:4] == b"\x89PNG"

    # subspace sweeps: one job per (kind, t, d), every seed of smoke.yaml's sweep at that d in it
    got = con.execute("select kind, burnin_step, list(distinct d order by d), count(*) from subspace "
                      "where round = 0 group by all order by all").fetchall()
    assert got == [("burnin", 5, [2, 8, 32], 6), ("lottery", 0, [2], 2), ("random", 0, [2, 8, 32], 6),
                   ("ticket", 5, [538, 666, 826], 3)]  # IMP masks: 800, 640, 512 weights + 26 biases
    assert con.execute("select count(*) from subspace where train_accuracy is null").fetchall() == [(0,)]
    sweep_log = (work / paths.log("subspace", "smoke", "random", 0, 0, 32, "block0")).read_text()
    assert re.search(r"smoke random t=0 d=32 \(2 runs\): 100%.*20/20 .*step/s", sweep_log)
    # a run is its coordinates + (seed, projection, d): rebuilt, it scores what the sweep recorded (dense P and
    # the lottery's basis here; Fastfood and another version's store: test_subspace)
    spec = Experiment.from_json(json.dumps(trajectory.read(work / paths.trajectory("smoke", 0)).attrs["spec"]))
    data = datasets.load(work / paths.dataset_store(spec.dataset))
    model = training.build_model(spec, data, 0, torch.device("cpu"))
    for kind, t, d in (("random", 0, 32), ("burnin", 5, 8), ("lottery", 0, 2)):
        theta, seeds = sweep.rebuild("smoke", kind, t, 0, d, root=work)
        err, _ = evaluate_many(model, theta, torch.zeros(len(theta), 0), *data.split("train"), batch_stats=False)
        want = con.execute(f"select seed, train_accuracy from subspace where kind = '{kind}' and burnin_step = {t} "
                           f"and d = {d} and round = 0 order by seed").fetchall()
        assert [(s, pytest.approx(1 - e, abs=1e-6)) for s, e in zip(seeds, err.tolist())] == want, kind
    # adaptive refinement (smoke.yaml: threshold 0.15, ratio 1.5, at most 2 rounds): added dims bisect the
    # round-0 bracket, and each sweep stops with a reason
    for kind, t in (("random", 0), ("burnin", 5), ("lottery", 0)):
        summary = json.loads((work / paths.sweep_summary("smoke", kind, t)).read_text())
        plan = summary["final_plan"]
        assert plan["dims"] == [] and plan["reason"] in ("resolution reached", "max_rounds reached",
                                                         "no d reached P >= 1/2", "P >= 1/2 already at the smallest d")
        added = con.execute(f"select distinct d from subspace where kind = '{kind}' and round > 0").fetchall()
        assert summary["rounds"] == 1 + len(added) <= 3
        if added:
            lo, hi = plan["bracket"]
            p = {int(d): v for d, v in plan["success"].items()}
            assert p[lo] < 0.5 <= p[hi] and all(2 < d < 32 for (d,) in added)

    # analysis: P(d) for every tested point and threshold, d* per sweep and threshold (smoke.yaml: train accuracy
    # 0.6 and train loss 2.3)
    n_points = con.execute("select count(*) from (select distinct kind, burnin_step, d from subspace)").fetchall()
    assert con.execute("select count(*) / 2 from success").fetchall() == n_points
    kinds = con.execute("select kind, metric, censored from threshold order by kind, metric").fetchall()
    assert [(k, m) for k, m, _ in kinds] == [(k, m) for k in ("burnin", "lottery", "random", "ticket")
                                             for m in ("train_accuracy", "train_loss")]
    assert all(c in ("none", "below", "above", "anchor") for _, _, c in kinds)
    # every sweep row carries its anchor θ_t's own metrics; smoke.yaml anchors run r at dense run r (per_run),
    # so each sweep has two anchors, one per dense seed, the same for all rows of that seed
    anchors = con.execute("select kind, burnin_step, dense_seed, count(distinct anchor_train_accuracy), "
                          "bool_and(anchor_train_accuracy between 0 and 1), bool_and(anchor_test_loss > 0), "
                          "bool_and(seed = dense_seed) from subspace where experiment = 'smoke' and kind != 'ticket' "
                          "group by all order by all").fetchall()
    assert anchors == [(k, t, s, 1, True, True, True) for k, t in (("burnin", 5), ("lottery", 0), ("random", 0))
                       for s in (0, 1)]
    # ... θ_0 as the anchor of the random and lottery subspaces: one value per dense run, where it starts
    at0 = con.execute("select dense_seed, count(distinct anchor_train_accuracy) from subspace where "
                      "experiment = 'smoke' and burnin_step = 0 and kind != 'ticket' group by all").fetchall()
    assert sorted(at0) == [(0, 1), (1, 1)]

    # sharpness at every stored dense checkpoint (smoke.yaml: top 2)
    eig = con.execute("select seed, step, rank, eigenvalue from hessian where source = 'dense' "
                      "and experiment = 'smoke' order by all").fetchall()
    stored = trajectory.read(work / paths.trajectory("smoke", 0)).steps.tolist()
    assert [(s, t, r) for s, t, r, _ in eig] == [(s, t, r) for s in (0, 1) for t in stored for r in (1, 2)]
    assert all(e1 >= e2 for (_, _, _, e1), (_, _, _, e2) in zip(eig[::2], eig[1::2]))

    # ... and at the end of every IMP level, restricted to the weights the level keeps
    eig = con.execute("select level, sparsity, rank, eigenvalue from hessian where source = 'imp' "
                      "and experiment = 'smoke' order by all").fetchall()
    assert [(lv, round(sp, 2), r) for lv, sp, r, _ in eig] == [(lv, sp, r) for lv, sp in ((0, 0.0), (1, 0.2), (2, 0.36))
                                                              for r in (1, 2)]
    assert all(e > 0 for *_, e in eig)

    # d* predicted (smoke.yaml's theory: 3 probes of 8 Lanczos steps at seed 0's final network): the spectrum
    # holds each probe's and each sweep anchor's quadrature, weights summing to 1; the theory table a row per
    # sweep and threshold, predicted for the random and burn-in subspaces' train-loss set only
    quads = con.execute("select vector, kind, burnin_step, probe, count(*), sum(weight), max(iterations), "
                        "bool_and(converged), max(distance) from spectrum where experiment = 'smoke' "
                        "and not previous group by all order by all").fetchall()
    assert [q[:4] for q in quads] == [("anchor", "burnin", 5, None), ("anchor", "lottery", 0, None),
                                      ("anchor", "random", 0, None)] + [("probe", None, None, p) for p in range(3)]
    # each extended from 8 Lanczos steps until it settled (or the Krylov space closed): its nodes, its length
    assert all(n == steps and w == pytest.approx(1.0) and ok for *_, n, w, steps, ok, _ in quads)
    assert all(steps >= 8 for *_, steps, _, _ in quads) and any(steps > 8 for *_, steps, _, _ in quads)
    shorter = con.execute("select count(distinct (vector, kind, burnin_step, probe)), sum(weight) "
                          "from spectrum where experiment = 'smoke' and previous").fetchone()
    assert shorter[0] == 6 and shorter[1] == pytest.approx(6.0)  # one extension shorter, beside each
    dense0 = trajectory.read(work / paths.trajectory("smoke", 0))
    theta0, theta5, final = (dense0.params(s) for s in (0, 5, smoke.train.steps))
    assert [q[-1] for q in quads[:3]] == pytest.approx([float(np.linalg.norm(a - final)) for a in (theta5, theta0, theta0)])
    rows = con.execute("select kind, metric, note is null, d_star_bound, d_star_well, d_star_bound_lo, "
                       "d_star_bound_hi, num_params from theory where experiment = 'smoke' order by all").fetchall()
    assert [r[:3] for r in rows] == [(k, m, k != "lottery" and m == "train_loss")
                                     for k in ("burnin", "lottery", "random") for m in ("train_accuracy", "train_loss")]
    for _, _, predicted, bound, well, lo, hi, D in rows:
        assert (bound is not None) == predicted == (well is not None)
        if predicted:
            assert 0 <= lo <= bound <= hi <= D and 0 <= well <= D
    # how much one level can prune (smoke.yaml: level 1, fractions 0.3 and 0.6, by magnitude and at random)
    sweep_rows = con.execute("select method, fraction, count(*), bool_and(sparsity > sparsity_before), "
                             "bool_and(barrier >= 0) from prune_sweep where experiment = 'smoke' and level = 1 "
                             "group by all order by all").fetchall()
    assert sweep_rows == [(m, f, 2, True, True) for m in ("magnitude", "random") for f in (0.3, 0.6)]  # test, train

    # EL2N / GraNd per training example at each scored checkpoint, and the Zarr store behind them
    got = con.execute("select experiment, step, count(*), count(distinct el2n_rank), min(n_seeds), "
                      "bool_and(el2n between 0 and sqrt(2)), bool_and(grand >= 0) from scores group by all "
                      "order by all").fetchall()
    n_train = 480  # smoke.yaml's 600 MNIST-1D samples, 80% for training
    assert got == [("diet", 5, n_train - 80, n_train - 80, 2, True, True),  # diet holds 80 out for validation
                   ("smoke", 0, n_train, n_train, 2, True, True), ("smoke", 5, n_train, n_train, 2, True, True)]
    from sublevel import scores as scores_mod
    el2n5 = scores_mod.read_mean(work / paths.scores_store("diet"), "el2n", 5)
    n_train -= 80
    assert el2n5.shape == (n_train,)

    # the data diet: IMP rewinds to a point pre-trained on the hardest half by EL2N
    start = zarr.open_group(str(work / paths.diet_start("diet", 5, 0)), mode="r")
    attrs = start.attrs.asdict()
    assert attrs["keep"] == "hardest" and attrs["examples"] == n_train // 2 and attrs["step"] == 5
    assert attrs["mean_score"] > float(el2n5.mean())  # the hardest half is harder than average
    assert abs(attrs["mean_score"] - float(np.sort(el2n5)[n_train // 2:].mean())) < 1e-5
    rows = con.execute("select seed, level, rewind_step from imp where experiment = 'diet' order by all").fetchall()
    assert rows == [(0, 0, 5), (0, 1, 5), (1, 0, 5), (1, 1, 5)]
    # early stopping (diet: imp.eval_every 10 from the rewind step 5): each level's least validation loss, at
    # an eval point of its curve, with the test accuracy there
    for seed, level, step, acc in con.execute("select seed, level, early_stop_step, early_stop_test_accuracy "
                                              "from imp where experiment = 'diet'").fetchall():
        curve = imp.Level.read(work / paths.level_store("diet", 5, seed, "imp", level)).curve
        assert curve[:, 0].tolist() == [5, 10, 20, 30, 40]
        best = int(np.argmin(curve[:, 1]))
        assert step == curve[best, 0] and acc == curve[best, 4]
    for seed in (0, 1):
        diet_level0 = imp.Level.read(work / paths.level_store("diet", 5, seed, "imp", 0))
        dense = trajectory.read(work / paths.trajectory("diet", seed))
        assert not np.allclose(diet_level0.weights.numpy(), dense.params(40))  # another rewind point than θ_T
    one_job = (work / paths.log("imp", "diet", "rewind5", "block0", "imp", 1)).read_text()  # one job trained both chains' level 1
    assert "imp seed 0 level 1" in one_job and "imp seed 1 level 1" in one_job
    one_job = (work / paths.log("barrier", "diet", "rewind5", "block0", "imp_successive", 1)).read_text()  # both chains' barriers
    assert "imp_successive seed 0 level 1" in one_job and "imp_successive seed 1 level 1" in one_job

    summary = catalog.summary(work)
    assert summary["dense"]["experiment"].to_list() == ["diet", "rewinds", "smoke"]  # diverged runs are left out
    assert summary["threshold"].height == 8 and summary["tickets"]["chains"].to_list() == [2, 1, 1, 1]
    assert summary["theory"].select("kind", "t", "metric").rows() == [
        (k, t, m) for m in ("train_accuracy", "train_loss") for k, t in (("burnin", 5), ("random", 0))]
    assert summary["prune_fraction"].select("level", "method").rows() == [(1, "magnitude"), (1, "random")]
    assert summary["tickets"].select("experiment", "rewind_step").rows() == [("diet", 5), ("rewinds", 0),
                                                                             ("rewinds", 5), ("smoke", 5)]

    # an interrupted chain resumes from its last finished level and gives the same masks
    level2 = work / paths.level_store("smoke", 5, 0, "imp", 2)
    before = imp.Level.read(level2)
    shutil.rmtree(level2)  # as a chain killed during level 2 leaves it: no level-2 outputs, no figures
    (work / paths.table("imp", experiment="smoke", rewind_step=5, seed=0, stage="imp", level=2)).unlink()
    for name in ("imp_accuracy", "imp_barrier"):
        (work / paths.figure("smoke", name)).unlink()
    resumed = snakemake(work, configfile=cfg)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "imp_level_smoke_block0 level=" in log and "train_dense experiment=" not in log
    assert str(paths.log("imp", "smoke", "rewind5", "block0", "imp", 2)) in log
    assert str(paths.log("imp", "smoke", "rewind5", "block0", "imp", 1)) not in log  # finished levels are not redone
    after = imp.Level.read(level2)
    assert torch.equal(before.mask, after.mask) and torch.equal(before.weights, after.weights)

    # nothing left to do; the CLI finds the results from inside the project
    rerun = snakemake(work, "-n", configfile=cfg)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    q = subprocess.run([str(BIN / "sublevel"), "query", "select count(*) as n from train", "--root", str(work),
                        "--format", "csv"], capture_output=True, text=True)
    assert q.returncode == 0 and int(q.stdout.splitlines()[1]) > 0


def test_a_rewind_list_is_one_chain_per_rewind_point_equal_to_its_own_experiment(smoke_run):
    """conftest.REWINDS: smoke's dense run and seed-0 chain with imp.rewind [0, 5]. Its rewind-5 chain is smoke's
    own chain (rewind 5) row for row, its rewind-0 chain another one from the same dense run."""
    work, _ = smoke_run
    con = catalog.connect(work)

    def rows(table, experiment, rewind_step, where=""):
        cols = [c for c in con.sql(f"select * from {table} limit 0").columns if c != "experiment"]
        return con.execute(f"select {', '.join(cols)} from {table} where experiment = '{experiment}' "
                           f"and rewind_step = {rewind_step} {where} order by all").fetchall()

    reinit = "and method in ('imp', 'random_reinit')"  # REWINDS runs one of smoke's four baselines
    assert rows("imp", "rewinds", 5, reinit) == rows("imp", "smoke", 5, reinit)
    assert rows("barrier", "rewinds", 5) == rows("barrier", "smoke", 5)
    assert rows("hessian", "rewinds", 5) == rows("hessian", "smoke", 5)
    assert [len(rows(t, "smoke", 5, w)) for t, w in (("imp", reinit), ("barrier", ""), ("hessian", ""))] == [5, 10, 6]
    for name, only in (("imp", ""), ("barrier", ""), ("hessian", "and source = 'imp'")):  # every row: its step
        got = con.execute(f"select rewind_step, count(*) from {name} where experiment = 'rewinds' {only} "
                          "group by 1 order by 1").fetchall()
        assert [k for k, _ in got] == [0, 5] and got[0][1] == got[1][1], name
    # one dense run per seed for both chains, which rewind to different points of it
    assert [p.name for p in (work / paths.results() / "runs" / "rewinds").iterdir()] == ["seed=0"]
    at0 = imp.Level.read(work / paths.level_store("rewinds", 0, 0, "imp", 1))
    at5 = imp.Level.read(work / paths.level_store("rewinds", 5, 0, "imp", 1))
    assert at0.row["rewind_step"] == 0 and at5.row["rewind_step"] == 5
    assert not torch.equal(at0.weights, at5.weights)
    # the summary's tickets and the DVC metrics (a file per experiment) are per rewind step
    metrics = json.loads((work / paths.metrics_dir() / "rewinds.json").read_text())
    assert {"highest_matching_sparsity@rewind=0", "highest_matching_sparsity@rewind=5"} <= set(metrics)
    assert "highest_matching_sparsity" in json.loads((work / paths.metrics_dir() / "smoke.json").read_text())
    assert sorted(p.name for p in (work / paths.summary_dir()).glob("*.csv"))[:2] == ["1-dense.csv", "2-threshold.csv"]
    curves = {p.stem: p for p in (work / paths.plots_dir()).iterdir()}
    imp_curve = con.execute(f"select distinct rewind_step from read_csv('{curves['imp_accuracy']}') "
                            "where experiment = 'rewinds' order by 1").fetchall()
    assert imp_curve == [(0,), (5,)]
    for name in ("imp_accuracy", "imp_barrier", "sharpness"):
        assert (work / paths.figure("rewinds", name)).read_bytes()[:4] == b"\x89PNG"


def test_jobs_view_has_one_row_per_job_of_the_smoke_run(smoke_run):
    """View `jobs`, from Snakemake's records of the run: every job (each has its own log) once, with the time
    from its start to its last output; `sublevel jobs` sums them per rule."""
    work, _ = smoke_run
    jobs = catalog.query("select rule, log, seconds, outputs, started, finished from jobs", work)
    logs = {str(p.relative_to(work)) for p in (work / paths.results() / "logs").rglob("*.log")}
    assert jobs["log"].n_unique() == jobs.height and set(jobs["log"]) == logs
    assert (jobs["seconds"] > 0).all() and (jobs["finished"] > jobs["started"]).all()
    assert {"train_dense", "subspace_sweep", "imp_level_smoke_block0", "figure"} <= set(jobs["rule"])
    one = jobs.filter(jobs["log"] == str(paths.log("imp", "smoke", "rewind5", "block0", "imp", 1))).row(0, named=True)
    assert one["rule"] == "imp_level_smoke_block0" and one["outputs"] == 2  # the level's store and its table
    out = subprocess.run([str(BIN / "sublevel"), "jobs", "--root", str(work)], capture_output=True, text=True)
    assert out.returncode == 0 and f"| {jobs.height} " in out.stdout  # per stage: the IMP block rules as one
    assert "| imp_level " in out.stdout and "imp_level_smoke_block0" not in out.stdout


def test_every_planned_command_parses_with_the_command_it_calls(tmp_path, monkeypatch):
    """The rules (workflow/rules), their argument files (common.smk's files_arg) and the commands' parsers agree
    on every option name and on the stage each job's spec is read as: each shell command of a dry run parses with
    `sublevel`'s own parser and its spec reads as its stage's, before any job runs."""
    from sublevel import cli
    from sublevel.commands.base import experiment

    work = tmp_path / "work"
    work.mkdir()
    res = snakemake(work, "-n", "-p", configfile=config_file(tmp_path, diet=DIET))
    assert res.returncode == 0, res.stderr[-2000:]
    commands = re.findall(r"^Shell command: python -m sublevel (.+?) > \S+ 2>&1$", res.stdout + res.stderr, re.M)
    monkeypatch.chdir(work)  # the argument files lie under the results root, named relative to it
    seen = set()
    for line in commands:
        args = cli.parser().parse_args(shlex.split(line))
        seen.add(args.command)
        if getattr(args, "stage", None):
            assert experiment(args).name in ("smoke", "diet")
    assert seen == {"prepare-data", "train", "scores", "imp-level", "imp-baselines", "barrier", "prune-sweep",
                    "data-diet", "subspace-sweep", "refine-plan", "subspace-tickets", "sweep-summary", "hessian",
                    "spectrum", "analyse-subspace", "theory", "figure", "export", "reproduce"}


def test_unknown_model_fails_before_any_job(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    bad = {"dataset": "mnist1d", "model": {"name": "nosuchnet"}}
    res = snakemake(work, configfile=config_file(tmp_path, bad=bad))
    assert res.returncode != 0
    assert "config error at experiments.bad.model.name: 'nosuchnet' is not one of" in res.stderr + res.stdout
    assert not (work / "results").exists()


@pytest.mark.parametrize("edit, said", [
    (("lr: 0.05", "lr: .nan"), "config error at experiments.smoke.train.lr: nan is not a finite number"),
    (("experiments:\n", "experiments:\n  other: {dataset: mnist1d, model: {name: mlp}}\nexperiments:\n"),
     "the key 'experiments' is given twice"),
    (("device: cpu", "device: cuda:0"), "config error at device: cuda:0: this torch sees no CUDA device"),
])
def test_plain_snakemake_refuses_what_check_config_refuses_before_any_job(tmp_path, edit, said):
    """The same one line from `snakemake` itself: a NaN, a key given twice (Snakemake's YAML keeps the last),
    a CUDA device on a machine whose torch has none."""
    import torch

    if edit[1] == "device: cuda:0" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = tmp_path / "c.yaml"
    config.write_text((ROOT / "config" / "smoke.yaml").read_text().replace(*edit, 1))
    work = tmp_path / "work"
    work.mkdir()
    res = snakemake(work, "-n", configfile=config)
    assert res.returncode != 0 and said in res.stderr + res.stdout, (res.stdout + res.stderr)[-2000:]
    assert "Traceback" not in res.stderr and not (work / "results").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_training_job_leaves_nothing_that_looks_complete(tmp_path, mnist1d_store, sig):
    """Killed mid-run: neither the trajectory nor the table exists, so Snakemake reruns and readers see nothing;
    SIGTERM (scancel) also removes the temporary files; the rerun completes."""
    from sublevel import config

    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    short = config.experiment(config.validate(cfg), "smoke")
    cfg["experiments"]["smoke"]["train"].update(steps=10_000_000, eval_every=1_000_000)
    exp = config.experiment(config.validate(cfg), "smoke")
    out_traj, out_table = tmp_path / "trajectory.zarr", tmp_path / "t" / "train.parquet"
    log = tmp_path / "train.log"
    cmd = lambda spec: [sys.executable, "-m", "sublevel", "train", "--spec", for_stage(spec, "train_dense").to_json(), "--seed", "0",
                        "--data", str(mnist1d_store), "--trajectory", str(out_traj), "--table", str(out_table)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd(exp), stderr=f)
    deadline = time.time() + 60
    while "step/s" not in log.read_text() and time.time() < deadline:  # the progress bar is running
        time.sleep(0.2)
    assert proc.poll() is None, log.read_text()
    os.kill(proc.pid, sig)
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        proc.kill()
    assert not out_traj.exists() and not out_table.exists()
    if sig == signal.SIGTERM:
        assert not [p for p in tmp_path.rglob(".*tmp-*")], "SIGTERM left temporary files"
    rerun = subprocess.run(cmd(short), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert trajectory.read(out_traj).steps[-1] == 40
    from sublevel import storage

    assert {r["step"] for r in storage.read_rows([out_table])} >= {0, 40}


def test_query_never_writes_and_reports_bad_sql_and_files(project):
    """`sublevel query` opens DuckDB in memory: results/ is byte-for-byte unchanged; bad SQL gives DuckDB's message
    and a non-zero exit; a query reading a table with a damaged file is refused (naming the file), while the
    other tables still answer, with the damage in one line on stderr."""
    table = project / paths.table("hessian", experiment="e", seed=0, source="dense")
    rows = [dict(experiment="e", seed=0, source="dense", level=None, rewind_step=None, sparsity=0.0, step=0, rank=1, eigenvalue=2.5,
                 examples=10, iterations=5)]
    from sublevel import storage

    storage.write_table("hessian", rows, table)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (project / "results").rglob("*") if p.is_file()}
    q = lambda sql: subprocess.run([str(BIN / "sublevel"), "query", sql, "--root", str(project), "--format", "csv"],
                                   capture_output=True, text=True)
    ok = q("select eigenvalue from hessian")
    assert ok.returncode == 0 and ok.stdout.split() == ["eigenvalue", "2.5"]
    bad = q("selec eigenvalue from hessian")
    assert bad.returncode != 0 and "Parser Error" in bad.stderr
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (project / "results").rglob("*") if p.is_file()}
    assert after == before
    storage.write_table("hessian", [dict(rows[0], seed=1)], project / paths.table("hessian", experiment="e", seed=1,
                                                                                     source="dense"))
    table.write_bytes(table.read_bytes()[:30])
    corrupt = q("select * from hessian")
    assert corrupt.returncode != 0 and "seed=0" in corrupt.stderr and "Traceback" not in corrupt.stderr
    assert "refused" in corrupt.stderr and not corrupt.stdout  # never an answer missing rows
    other = q("select count(*) as n from train")
    assert other.returncode == 0 and other.stdout.split() == ["n", "0"] and "check-results --fix" in other.stderr


def test_documented_duckdb_shell_line_works(project):
    """README: duckdb -cmd "$(sublevel views)" opens the interactive shell over the same views."""
    duck = BIN / "duckdb"
    if not duck.exists():
        pytest.skip("duckdb-cli not installed (pip install duckdb-cli)")
    views = subprocess.run([str(BIN / "sublevel"), "views", "--root", str(project)], capture_output=True,
                           text=True, check=True).stdout
    out = subprocess.run([str(duck), "-csv", "-cmd", views], input="select count(*) as n from train;\n",
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["n", "0"], out.stderr
