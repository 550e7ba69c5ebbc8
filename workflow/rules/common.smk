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


def dataset_of(wildcards):
    return str(paths.dataset_store(experiment(config, wildcards.experiment).dataset))


def dense_outputs():
    out = []
    for name in EXPERIMENTS:
        for seed in experiment(config, name).seeds:
            out += [str(paths.trajectory(name, seed)), str(paths.table("train", experiment=name, seed=seed))]
    return out
