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


def spec(wildcards):
    """The validated experiment as JSON: a param, so editing the config reruns what it touches."""
    return experiment(config, wildcards.experiment).to_json()


def dense_spec(wildcards):
    """What dense training depends on: the experiment without its `imp` section."""
    return experiment(config, wildcards.experiment).dense().to_json()


def dataset_of(wildcards):
    return str(paths.dataset_store(experiment(config, wildcards.experiment).dataset))


def dense_outputs():
    out = []
    for name in EXPERIMENTS:
        for seed in experiment(config, name).seeds:
            out += [str(paths.trajectory(name, seed)), str(paths.table("train", experiment=name, seed=seed))]
    return out


BASELINES = ["random_prune", "random_reinit", "oneshot", "init_magnitude"]


def imp_experiments():
    return [name for name in EXPERIMENTS if experiment(config, name).imp]


def trajectory_of(wildcards):
    return str(paths.trajectory(wildcards.experiment, wildcards.seed))


def level_of(wildcards, level, method="imp"):
    return str(paths.level_store(wildcards.experiment, wildcards.seed, method, level))


def imp_tables(name):
    """Every imp and barrier table file of one experiment, for its figures."""
    imp = experiment(config, name).imp
    imp_files, barrier_files = [], []
    for seed in imp.seeds:
        for level in range(imp.levels + 1):
            methods = ["imp"] + (list(imp.baselines) if level else [])
            imp_files += [str(paths.table("imp", experiment=name, seed=seed, method=m, level=level)) for m in methods]
            kinds = (["instability"] if imp.instability else []) + (["imp_successive"] if level else [])
            barrier_files += [str(paths.table("barrier", experiment=name, seed=seed, kind=k, level=level))
                              for k in kinds]
    return {"imp": imp_files, "barrier": barrier_files}


def imp_outputs():
    out = []
    for name in imp_experiments():
        out += [str(paths.figure(name, "imp_accuracy")), str(paths.figure(name, "imp_barrier"))]
    return out
