# Helpers shared by every stage. The config is validated here, before any job is planned.
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # also when snakemake is not the project's venv

from snakemake.exceptions import WorkflowError

from sublevel import paths, versions
from sublevel.config import ConfigError, experiment, validate
from sublevel.schema import FIGURE_TABLES

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
    level=r"\d+",
    rewind_step=r"\d+",
    method=r"[a-z_]+",
    dataset=r"[a-z0-9_]+",
    figure="|".join(FIGURE_TABLES),


def spec_for(stage, name=None):
    """A param function: the validated experiment (`name`, else the {experiment} wildcard) as one stage sees
    it, as JSON, so editing the config reruns what the edit touches (Experiment.for_stage). A job of one IMP
    chain (a {rewind_step} wildcard) sees that rewind point only."""

    def spec(wildcards):
        e = name or wildcards.experiment
        rewind = rewind_point(e, wildcards.rewind_step) if "rewind_step" in wildcards.keys() else None
        return experiment(config, e).for_stage(stage, rewind=rewind).to_json()

    return spec


def rewind_steps(name):
    """The experiment's IMP rewind steps, resolved, in the config's order."""
    return schedule(name).rewinds


def rewind_point(name, rewind_step):
    """imp.rewind's point as written (e.g. '1ep') that resolves to `rewind_step`."""
    points = dict(zip(rewind_steps(name), experiment(config, name).imp.rewinds()))
    return points[int(rewind_step)]


def optional_flag(option, name):
    """A param function: [option, path, ...] when the named input (an optional one, [] or paths) is there, a
    list so that `{params.x:q}` quotes each word."""
    return lambda wildcards, input: [option, *getattr(input, name)] if getattr(input, name) else []


def dataset_of(wildcards):
    return dataset_of_name(wildcards.experiment)


def dense_outputs():
    """Every dense run, and the per-example scores computed from them."""
    out = []
    for name in EXPERIMENTS:
        for seed in experiment(config, name).seeds:
            out += [str(paths.trajectory(name, seed)), str(paths.table("train", experiment=name, seed=seed))]
        if experiment(config, name).scores:
            out.append(str(paths.table("scores", experiment=name)))
    return out


def imp_experiments():
    return [name for name in EXPERIMENTS if experiment(config, name).imp]


def trajectory_of(wildcards):
    return str(paths.trajectory(wildcards.experiment, wildcards.seed))


def level_of(wildcards):
    w = wildcards
    return str(paths.level_store(w.experiment, w.rewind_step, w.seed, "imp", w.level))


def dataset_of_name(name):
    return str(paths.dataset_store(experiment(config, name).dataset))


def chain_trajectories(name, seeds):
    """The dense trajectory of each IMP chain in `seeds` (one job's block of imp.seeds), in order."""
    return [str(paths.trajectory(name, s)) for s in seeds]


def chain_diets(name, seeds):
    """Each chain's data-diet rewind point at the {rewind_step} wildcard, when the experiment has a diet
    ([] otherwise)."""
    diet = experiment(config, name).imp.data_diet
    return [str(paths.diet_start(name, "{rewind_step}", s)) for s in seeds] if diet else []


def chain_stores(name, seeds, stage, method=None):
    """A level job's outputs: each chain's level store (a baseline's: of its method) at the {rewind_step} and
    {level} wildcards."""
    return [directory(str(paths.level_store(name, "{rewind_step}", s, stage, "{level}", method))) for s in seeds]


def imp_table(name, rewind_step, seed, table, kind, level, method=None):
    """One chain's table file at one level: an imp table by stage, a barrier table by kind; a baseline's by
    method too."""
    key = "stage" if table == "imp" else "kind"
    extra = {} if method is None else {"method": method}
    return str(paths.table(table, experiment=name, rewind_step=rewind_step, seed=seed, **{key: kind}, level=level,
                           **extra))


def chain_tables(name, seeds, table, kind, method=None):
    """Each chain's table file at the {rewind_step} and {level} wildcards (imp_table)."""
    return [imp_table(name, "{rewind_step}", s, table, kind, "{level}", method) for s in seeds]


def chain_levels_at(name, seeds, level=None):
    """An input function: each chain's IMP level store at `level` (default: the job's {level})."""
    return lambda w: [str(paths.level_store(name, w.rewind_step, s, "imp", w.level if level is None else level))
                      for s in seeds]


def chain_levels_before(name, seeds):
    """An input function: each chain's level ℓ−1 store for a level-ℓ job ([] at level 0)."""
    return lambda w: ([str(paths.level_store(name, w.rewind_step, s, "imp", int(w.level) - 1)) for s in seeds]
                      if int(w.level) else [])


def scores_of(name):
    """The experiment's scores store, when it has a scores section ([] otherwise)."""
    return [str(paths.scores_store(name))] if experiment(config, name).scores else []


def imp_tables(name, rewind_step=None):
    """Every imp and barrier table file of one experiment (of one rewind step's chains), for its figures."""
    imp = experiment(config, name).imp
    imp_files, barrier_files = [], []
    for k in rewind_steps(name) if rewind_step is None else (int(rewind_step),):
        for seed in imp.seeds:
            for level in range(imp.levels + 1):
                imp_files.append(imp_table(name, k, seed, "imp", "imp", level))
                imp_files += [imp_table(name, k, seed, "imp", "baselines", level, m)
                              for m in (imp.baselines if level else ())]
                kinds = (["instability"] if imp.instability else []) + (["imp_successive"] if level else [])
                barrier_files += [imp_table(name, k, seed, "barrier", kind, level) for kind in kinds]
    return {"imp": imp_files, "barrier": barrier_files}


FIGURES = {  # figure -> what an experiment needs for it
    "imp_accuracy": ("imp",), "imp_barrier": ("imp",), "subspace_success": ("subspace",),
    "dstar_burnin": ("subspace",), "imp_dstar": ("imp", "subspace"), "sharpness": ("hessian",),
    "scores": ("scores",),
}


def figures_of(name, fmt="png"):
    exp = experiment(config, name)
    return [str(paths.figure(name, f, fmt)) for f, needs in FIGURES.items()
            if all(getattr(exp, k) is not None for k in needs)]


def imp_outputs():
    """Every IMP table (levels, baselines, barriers) and data-diet rewind point; the figures are analysis's."""
    out = []
    for name in imp_experiments():
        t = imp_tables(name)
        out += t["imp"] + t["barrier"]
        if experiment(config, name).imp.data_diet:
            out += [str(paths.diet_start(name, k, s)) for k in rewind_steps(name)
                    for s in experiment(config, name).imp.seeds]
    return out


def figure_tables(wildcards):
    """The table files one figure of one experiment is drawn from, by table name."""
    name = wildcards.experiment
    files = {"success": [str(paths.table("success", experiment=name))],
             "threshold": [str(paths.table("threshold", experiment=name))],
             "hessian": hessian_tables(name), "scores": [str(paths.table("scores", experiment=name))]}
    if experiment(config, name).imp:
        files.update(imp_tables(name))
    return {t: files[t] for t in FIGURE_TABLES[wildcards.figure]}


def hessian_tables(name):
    """The experiment's sharpness tables: every dense seed's checkpoints, every IMP chain's levels."""
    exp = experiment(config, name)
    if exp.hessian is None:
        return []
    out = [str(paths.table("hessian", experiment=name, seed=s, source="dense")) for s in exp.seeds]
    if exp.imp and exp.hessian.imp:  # one job per chain and level
        out += [str(paths.table("hessian", experiment=name, seed=s, source="imp", rewind_step=k, level=level))
                for k in rewind_steps(name) for s in exp.imp.seeds for level in range(exp.imp.levels + 1)]
    return out


def schedule(name):
    from sublevel.schedule import Schedule
    from sublevel.datasets import train_size

    exp = experiment(config, name)
    return Schedule.resolve(exp, train_size(exp.dataset, config["data"]))


def sweep_jobs(name):
    """(kind, t) of each sweep job of an experiment."""
    return experiment(config, name).subspace.anchors(schedule(name))


def sweep_table(name, kind, t, round, d, block):
    return paths.table("subspace", experiment=name, kind=kind, burnin_step=t, round=round, d=d, block=block)


def sweep_seeds(wildcards):
    """The run seeds of one sweep job: its block of 0..subspace.seeds-1 (subspace.seeds_per_job each)."""
    blocks = experiment(config, wildcards.experiment).subspace.seed_blocks()
    return [str(s) for s in blocks[int(wildcards.block)]]


def ticket_tables(name):
    """The experiment's IMP levels as axial subspaces, one file per rewind step (the anchor) for every level."""
    return [str(paths.table("subspace", experiment=name, kind="ticket", burnin_step=k, round=0))
            for k in rewind_steps(name)]


def round_dims(e, k, t, round):
    """The dims one round of a sweep trains: the configured ones at round 0, a refinement round those of the
    previous round's plan (read through the refine_plan checkpoint)."""
    if int(round) == 0:
        return experiment(config, e).subspace.sweep_dims(k, schedule(e))
    plan = checkpoints.refine_plan.get(experiment=e, kind=k, burnin_step=t, round=int(round) - 1).output.plan
    with open(plan) as f:
        return json.load(f)["dims"]


def round_tables(e, k, t, round):
    """The tables of one round of a sweep, one per d and block of seeds."""
    blocks = range(len(experiment(config, e).subspace.seed_blocks()))
    return [str(sweep_table(e, k, t, round, d, j)) for d in round_dims(e, k, t, round) for j in blocks]


def previous_plan(wildcards):
    return str(paths.refine_plan(wildcards.experiment, wildcards.kind, wildcards.burnin_step, int(wildcards.round) - 1))


def sweep_rounds(wildcards):
    return rounds_of(wildcards.experiment, wildcards.kind, wildcards.burnin_step)


def rounds_of(e, k, t):
    """Every round of one sweep, and the plans between them: round 0, then one more while the previous plan
    adds dims. Reading a plan goes through the refine_plan checkpoint, so Snakemake re-plans the DAG then."""
    tables, plans = round_tables(e, k, t, 0), []
    if experiment(config, e).subspace.refine:
        while True:
            plans.append(checkpoints.refine_plan.get(experiment=e, kind=k, burnin_step=t, round=len(plans)).output.plan)
            if not (more := round_tables(e, k, t, len(plans))):
                break
            tables += more
    return {"tables": tables, "plans": plans}


def refine_plans(wildcards):
    """An input function for the targets: every refinement plan of every sweep. A target asks for them itself
    because Snakemake does not rebuild a checkpoint's output that is gone (deleted, or its job failed) when
    the only jobs reading it are finished: it defers those jobs' inputs until the checkpoint has run. Asked for
    by a target, a missing plan is rebuilt, and the sweep rounds, summaries and analysis that read it follow."""
    return [plan for name in EXPERIMENTS if experiment(config, name).subspace
            for kind, t in sweep_jobs(name) for plan in rounds_of(name, kind, t)["plans"]]


def subspace_tables(wildcards):
    """Every round of every sweep of one experiment, and its ticket table (checkpoint-aware)."""
    name = wildcards.experiment
    out = []
    for kind, t in sweep_jobs(name):
        out += rounds_of(name, kind, t)["tables"]
    if experiment(config, name).imp:
        out += ticket_tables(name)
    return out


def analysis_outputs():
    """Tables and figures of the analysis stage, and the DVC metrics and plots of the whole run."""
    out = []
    for name in EXPERIMENTS:
        exp = experiment(config, name)
        if exp.subspace:
            out += [str(paths.table(t, experiment=name)) for t in ("success", "threshold")]
        out += hessian_tables(name) + figures_of(name)
    return out + [str(paths.SUMMARY), str(paths.PLOTS), str(paths.REPRODUCTION)]


def result_tables():
    """Every Parquet table a run writes: what the exports and the reproduction page read."""
    return [f for f in dense_outputs() + imp_outputs() + analysis_outputs() if f.endswith(".parquet")]


def subspace_outputs():
    """Every sweep's summary (which waits for all its rounds), and the IMP tickets as axial subspaces."""
    out = []
    for name in EXPERIMENTS:
        exp = experiment(config, name)
        if exp.subspace:
            out += [str(paths.sweep_summary(name, kind, t)) for kind, t in sweep_jobs(name)]
            if exp.imp:
                out += ticket_tables(name)
    return out


def sweep_trajectory(wildcards):
    seed = experiment(config, wildcards.experiment).subspace.dense_seed
    return str(paths.trajectory(wildcards.experiment, seed))
