# Helpers shared by every stage. The config is validated here, before any job is planned.
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # also when snakemake is not the project's venv

from snakemake.exceptions import WorkflowError

from sublevel import paths
from sublevel.config import ConfigError, experiment, validate

try:
    config.update(validate(config))  # JSON Schema via snakemake.utils.validate, defaults filled
except ConfigError as e:
    raise WorkflowError(str(e)) from None

# Jobs run `python -m sublevel` with the interpreter that runs snakemake first on PATH (a conda
# env from --sdm conda still comes first), so they see the same install without an activated venv.
envvars:
    "PATH",


_path = os.environ["PATH"]
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), _path])
EXPERIMENTS = sorted(config["experiments"])
GPU = 0 if config["device"] == "cpu" else 1


wildcard_constraints:
    experiment=r"[A-Za-z][A-Za-z0-9_]*",
    seed=r"\d+",
    dataset=r"[a-z0-9_]+",


def spec_for(stage):
    """A param function: the validated experiment as one stage sees it, as JSON, so editing the config reruns
    what the edit touches (Experiment.for_stage)."""
    return lambda wildcards: experiment(config, wildcards.experiment).for_stage(stage).to_json()


def dataset_of(wildcards):
    return str(paths.dataset_store(experiment(config, wildcards.experiment).dataset))


def dense_outputs():
    out = []
    for name in EXPERIMENTS:
        for seed in experiment(config, name).seeds:
            out += [str(paths.trajectory(name, seed)), str(paths.table("train", experiment=name, seed=seed))]
    return out


def imp_experiments():
    return [name for name in EXPERIMENTS if experiment(config, name).imp]


def trajectory_of(wildcards):
    return str(paths.trajectory(wildcards.experiment, wildcards.seed))


def level_of(wildcards, level):
    return str(paths.level_store(wildcards.experiment, wildcards.seed, "imp", level))


def imp_tables(name):
    """Every imp and barrier table file of one experiment, for its figures."""
    imp = experiment(config, name).imp
    imp_files, barrier_files = [], []
    for seed in imp.seeds:
        for level in range(imp.levels + 1):
            stages = ["imp"] + (["baselines"] if level and imp.baselines else [])
            imp_files += [str(paths.table("imp", experiment=name, seed=seed, stage=s, level=level)) for s in stages]
            kinds = (["instability"] if imp.instability else []) + (["imp_successive"] if level else [])
            barrier_files += [str(paths.table("barrier", experiment=name, seed=seed, kind=k, level=level))
                              for k in kinds]
    return {"imp": imp_files, "barrier": barrier_files}


def imp_outputs():
    out = []
    for name in imp_experiments():
        out += [str(paths.figure(name, "imp_accuracy")), str(paths.figure(name, "imp_barrier"))]
    return out


def schedule(name):
    from sublevel.config import Schedule
    from sublevel.datasets import train_size

    exp = experiment(config, name)
    return Schedule.resolve(exp, train_size(exp.dataset, config["data"]))


def sweep_jobs(name):
    """(kind, t) of each sweep job of an experiment."""
    return experiment(config, name).subspace.anchors(schedule(name))


def sweep_table(name, kind, t, round):
    return paths.table("subspace", experiment=name, kind=kind, burnin_step=t, round=round)


def ticket_table(name):
    """The experiment's IMP levels as axial subspaces (at the rewind step)."""
    return str(sweep_table(name, "ticket", schedule(name).rewind, 0))


def previous_plan(wildcards):
    return str(paths.refine_plan(wildcards.experiment, wildcards.kind, wildcards.burnin_step, int(wildcards.round) - 1))


def sweep_rounds(wildcards):
    return rounds_of(wildcards.experiment, wildcards.kind, wildcards.burnin_step)


def rounds_of(e, k, t):
    """Every round of one sweep, and the plans between them: round 0, then one more while the previous plan
    adds dims. Reading a plan goes through the refine_plan checkpoint, so Snakemake re-plans the DAG then."""
    tables, plans = [str(sweep_table(e, k, t, 0))], []
    if experiment(config, e).subspace.refine:
        while True:
            plans.append(checkpoints.refine_plan.get(experiment=e, kind=k, burnin_step=t, round=len(plans)).output.plan)
            with open(plans[-1]) as f:
                if not json.load(f)["dims"]:
                    break
            tables.append(str(sweep_table(e, k, t, len(plans))))
    return {"tables": tables, "plans": plans}


def subspace_tables(wildcards):
    """Every round of every sweep of one experiment, and its ticket table (checkpoint-aware)."""
    name = wildcards.experiment
    out = []
    for kind, t in sweep_jobs(name):
        out += rounds_of(name, kind, t)["tables"]
    if experiment(config, name).imp:
        out.append(ticket_table(name))
    return out


def analysis_outputs():
    out = [str(paths.table(t, experiment=name)) for name in EXPERIMENTS if experiment(config, name).subspace
           for t in ("success", "threshold")]
    for name in EXPERIMENTS:
        exp = experiment(config, name)
        if "hessian" in exp.raw:
            out += [str(paths.table("hessian", experiment=name, seed=s)) for s in exp.seeds]
    return out


def subspace_outputs():
    """Every sweep's summary (which waits for all its rounds), and the IMP tickets as axial subspaces."""
    out = []
    for name in EXPERIMENTS:
        exp = experiment(config, name)
        if exp.subspace:
            out += [str(paths.sweep_summary(name, kind, t)) for kind, t in sweep_jobs(name)]
            if exp.imp:
                out.append(ticket_table(name))
    return out


def sweep_trajectory(wildcards):
    seed = experiment(config, wildcards.experiment).subspace.dense_seed
    return str(paths.trajectory(wildcards.experiment, seed))
