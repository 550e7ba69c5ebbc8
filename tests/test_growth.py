"""Growing a finished experiment plans only the new jobs: each job's params carry what its output depends on,
not what decides which other jobs exist. Counted on `snakemake -n` over the finished smoke run."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import canon, jobs_of, snakemake
from sublevel import paths, storage

# Jobs that only read tables: rerun whenever what they summarise grows
ANALYSIS = {"refine_plan", "sweep_summary", "subspace_tickets", "analyse_subspace", "theory", "figure", "export",
            "reproduction", "all"}


def planned_jobs(work, cfg: dict, tmp_path) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job `snakemake -n` plans under `cfg`."""
    path = tmp_path / "grown.yaml"
    path.write_text(yaml.safe_dump(cfg))
    dry = snakemake(work, "-n", configfile=path)
    assert dry.returncode == 0, dry.stderr[-3000:]
    return jobs_of(dry)


def grown(base: dict, change) -> dict:
    cfg = copy.deepcopy(base)
    change(cfg["experiments"]["smoke"])
    return cfg


# (kind, t, d) of the smoke sweeps' round 0 (lottery: 2 directions from 3 checkpoints)
ROUND0 = [(k, t, d) for k, t in (("random", 0), ("burnin", 5)) for d in (2, 8, 32)] + [("lottery", 0, 2)]


def sweep_job(kind: str, t: int, d: int, round: int = 0, block: int = 0) -> tuple[str, str]:
    return "subspace_sweep", f"experiment=smoke, kind={kind}, burnin_step={t}, round={round}, d={d}, block={block}"


# smoke.yaml's baselines: the schema's default, every method
BASELINES = ["random_prune", "random_reinit", "oneshot", "init_magnitude"]


def baseline_jobs(block: int, levels, methods=BASELINES) -> set[tuple[str, str]]:
    return {(f"imp_baselines_smoke_block{block}", f"rewind_step=5, level={level}, method={m}") for level in levels
            if level for m in methods}


def block_jobs(block: int, levels) -> set[tuple[str, str]]:
    """Every network job of one block of IMP chains (smoke.yaml: instability on, every baseline) at `levels`."""
    jobs = baseline_jobs(block, levels)
    for level in levels:
        rules = ["imp_level", "barrier_instability"] + (["barrier_successive"] if level else [])
        jobs |= {(f"{r}_smoke_block{block}", f"rewind_step=5, level={level}") for r in rules}
    return jobs


def prune_jobs(block: int) -> set[tuple[str, str]]:
    """The fraction sweep of one block of chains (smoke.yaml: imp.fraction_sweep.levels [1])."""
    return {(f"prune_sweep_smoke_block{block}", "rewind_step=5, level=1")}


# the spectrum job quadratures every sweep's anchor: a burn-in step reruns it; a threshold reruns only the
# predictions (the local rule theory, with the analysis)
SPECTRUM = {("spectrum", "experiment=smoke")}


def hessian_jobs(seeds, levels) -> set[tuple[str, str]]:
    return {("hessian_imp", f"experiment=smoke, seed={s}, rewind_step=5, level={level}") for s in seeds
            for level in levels}


@pytest.mark.slow
@pytest.mark.parametrize("growth, change, network_jobs", [
    ("an IMP level", lambda e: e["imp"].update(levels=3),
     block_jobs(0, [3]) | hessian_jobs([0], [3])),
    # seeds_per_job 1: the finished block [0] is full, so the new seed is a block of its own (the setting itself
    # is in no job's params)
    ("an IMP seed, blocks full", lambda e: e["imp"].update(seeds=[0, 1], seeds_per_job=1),
     block_jobs(1, [0, 1, 2]) | hessian_jobs([1], [0, 1, 2]) | prune_jobs(1)),
    # the default 8: the new seed joins the unfilled block [0], whose jobs rerun with it (and rewrite seed 0's
    # levels, which its sharpness job reads)
    ("an IMP seed, block not full", lambda e: e["imp"].update(seeds=[0, 1]),
     block_jobs(0, [0, 1, 2]) | hessian_jobs([0, 1], [0, 1, 2]) | prune_jobs(0)),
    # each method has its own jobs, and the list is in no job's params: the others stay as they are (adding one:
    # test_adding_a_baseline_plans_only_its_jobs; reordering them: test_reordering_the_baselines_plans_nothing)
    ("a baseline dropped", lambda e: e["imp"].update(baselines=BASELINES[:2]), set()),
    ("a fraction-sweep level", lambda e: e["imp"]["fraction_sweep"].update(levels=[1, 2]),
     {("prune_sweep_smoke_block0", "rewind_step=5, level=2")}),
    ("a dense seed", lambda e: e.update(seeds=[0, 1, 2]),
     {("train_dense", "experiment=smoke, seed=2"), ("hessian_dense", "experiment=smoke, seed=2"),
      ("scores", "experiment=smoke")}),
    ("a burn-in step", lambda e: e["subspace"].update(burnin=[5, 12]),
     {sweep_job("burnin", 12, d) for d in (2, 8, 32)} | SPECTRUM),
    ("a sweep dimension", lambda e: e["subspace"].update(dims=[2, 8, 32, 64]),  # lottery: 64 > its directions
     {sweep_job(k, t, 64) for k, t in (("random", 0), ("burnin", 5))}),
    # smoke.yaml: 2 runs per point; seeds_per_job 2 leaves the finished block [0, 1] full
    ("seeds per point, blocks full", lambda e: e["subspace"].update(seeds=4, seeds_per_job=2),
     {sweep_job(k, t, d, block=1) for k, t, d in ROUND0}),
    ("seeds per point, block not full", lambda e: e["subspace"].update(seeds=3),
     {sweep_job(k, t, d) for k, t, d in ROUND0}),
    ("a threshold", lambda e: e["subspace"].update(thresholds=[{"metric": "train_accuracy", "value": 0.6},
                                                               {"metric": "train_accuracy", "value": 0.3}]),
     set()),
])
def test_growing_an_experiment_plans_only_the_new_jobs(smoke_run, tmp_path, growth, change, network_jobs):
    work, cfg = smoke_run
    jobs = planned_jobs(work, grown(yaml.safe_load(cfg.read_text()), change), tmp_path)
    assert {j for j in jobs if j[0] not in ANALYSIS} == {(r, canon(w)) for r, w in network_jobs}, growth
    assert len(jobs) == len(set(jobs))
    assert ("export", "") in jobs and ("all", "") in jobs


@pytest.mark.slow
def test_a_threshold_repredicts_d_star_from_the_stored_spectrum(smoke_run, tmp_path):
    """The d* predictions are redone for a new ε (a local rule); the Hessian's spectrum is not recomputed."""
    work, cfg = smoke_run
    jobs = planned_jobs(work, grown(yaml.safe_load(cfg.read_text()), lambda e: e["subspace"].update(
        thresholds=[{"metric": "train_loss", "value": 2.0}, {"metric": "train_loss", "value": 1.5}])), tmp_path)
    assert ("theory", "experiment=smoke") in jobs and ("analyse_subspace", "experiment=smoke") in jobs
    assert not [j for j in jobs if j[0] == "spectrum"]


@pytest.mark.slow
def test_reordering_the_baselines_plans_nothing(smoke_run, tmp_path):
    work, cfg = smoke_run
    assert planned_jobs(work, grown(yaml.safe_load(cfg.read_text()),
                                    lambda e: e["imp"].update(baselines=BASELINES[::-1])), tmp_path) == []


@pytest.mark.slow
def test_adding_a_baseline_plans_only_its_jobs(smoke_copy, tmp_path):
    """The finished run less one method's results is that run as it would stand with three baselines."""
    work, cfg = smoke_copy
    for level in (1, 2):
        storage.remove(work / paths.level_store("smoke", 5, 0, "baselines", level, "init_magnitude"))
        storage.remove(work / paths.table("imp", experiment="smoke", rewind_step=5, seed=0, stage="baselines",
                                          level=level, method="init_magnitude"))
    jobs = planned_jobs(work, yaml.safe_load(cfg.read_text()), tmp_path)
    assert {j for j in jobs if j[0] not in ANALYSIS} == {(r, canon(w)) for r, w in baseline_jobs(0, [1, 2],
                                                                                                ["init_magnitude"])}


@pytest.mark.slow
def test_a_change_that_alters_results_reruns_every_job_it_reaches(smoke_run, tmp_path):
    work, cfg = smoke_run
    jobs = planned_jobs(work, grown(yaml.safe_load(cfg.read_text()), lambda e: e["train"].update(lr=0.04)), tmp_path)
    rules = [r for r, _ in jobs]
    assert rules.count("train_dense") == 2 and rules.count("imp_level_smoke_block0") == 3
    assert rules.count("subspace_sweep") >= 3 and "scores" in rules and "hessian_dense" in rules
    assert not any("experiment=blowup" in w or "experiment=diet" in w for _, w in jobs)  # other experiments untouched
