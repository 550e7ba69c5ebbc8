# What every stage shares: the validated config, the plan of outputs and inputs (sublevel.plan), and the
# adapters from a job's wildcards to it.
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # also when snakemake is not the project's venv

from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from sublevel import integrity, paths, storage, versions
from sublevel.config import ConfigError, read_file, typed, validate
from sublevel.plan import Plan
from sublevel.schema import FIGURES, REPORT_STAGES
from sublevel.stages import STAGES

for _key, _value in workflow.config_settings.config.items():  # --config: a nested value's leaves typed by YAML
    if isinstance(_value, dict):
        update_config(config, {_key: typed(_value)})
try:
    for _file in workflow.configfiles:  # Snakemake's YAML reading keeps the last of a key given twice: refuse it
        read_file(_file)
    config.update(validate(config))  # JSON Schema via snakemake.utils.validate, defaults filled
except ConfigError as e:
    raise WorkflowError(str(e)) from None
try:  # every path below, here and in every job, lies under the config's root
    paths.use_results(config["results"])
except ValueError as e:
    raise WorkflowError(f"config error at results: {e}") from None
if config["tensorboard"] and importlib.util.find_spec("tensorboard") is None:
    raise WorkflowError(
        "config error at tensorboard: true needs the tensorboard package: "
        "pip install -e '.[tensorboard]' (into the environment snakemake runs in)"
    )

if workflow.is_main_process and (future := integrity.future_times(Path.cwd())):
    raise WorkflowError(integrity.future_line(future, Path.cwd()))

# Jobs run here: a device this machine's torch cannot use fails now, not in every job (a cluster's nodes may
# have what the submitting machine lacks).
if workflow.is_main_process and workflow.local_exec and config["device"] not in ("auto", "cpu"):
    from sublevel.runtime import device_problem

    if _problem := device_problem(config["device"]):
        raise WorkflowError(f"config error at device: {config['device']}: {_problem}")


# Jobs run `python -m sublevel` with the interpreter that runs snakemake first on PATH (a conda
# env from --sdm conda still comes first), so they see the same install without an activated venv.
envvars:
    "PATH",


_path = os.environ["PATH"]
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), _path])
PLAN = Plan(config)
GPU = 0 if config["device"] == "cpu" else 1


# What the terminal shows of each job (every rule's message:): its rule and wildcards on one line, in place of
# its inputs, which run to hundreds of table paths for the jobs that read a whole stage
JOB_LINE = "{rule} {wildcards}"


wildcard_constraints:
    experiment=r"[A-Za-z][A-Za-z0-9_]*",
    seed=r"\d+",
    level=r"\d+",
    rewind_step=r"\d+",
    method=r"[a-z_]+",
    dataset=r"[a-z0-9_]+",
    figure="|".join(FIGURES),


def plan_of(e, kind, t, round):
    """A finished refinement plan's path. Reading it goes through the refine_plan checkpoint, so Snakemake
    re-plans the DAG once the plan exists."""
    return checkpoints.refine_plan.get(experiment=e, kind=kind, burnin_step=t, round=int(round)).output.plan


def resources_of(stage):
    """The resources of the jobs of `stage`, as sublevel.stages declares them (the device, and the minutes and MB a
    cluster job asks for, profiles/slurm); --set-resources on the command line overrides them."""
    return STAGES[stage].resources(GPU)


def block_rule(stage, experiment, block):
    """The name of the rule of one experiment's block of IMP chains, as sublevel.stages names it (Stage.rule)."""
    return STAGES[stage].rule(experiment, block)


def runs_locally(stage):
    """Whether the jobs of `stage` run where Snakemake runs (localrule), as sublevel.stages declares: they only
    read tables, for seconds, so a cluster executor does not queue them."""
    return not STAGES[stage].network


def spec_for(stage, name=None):
    """A param function: the experiment (`name`, else the {experiment} wildcard) as one stage sees it, as
    JSON, so editing the config reruns what the edit touches; a job of one IMP chain sees its rewind point."""
    return lambda w: PLAN.spec(stage, name or w.experiment, w.get("rewind_step"))


def job_file(text, suffix):
    """A file under the results root holding `text`, named by a digest of it and written once: what a job
    reads instead of long command-line words, so that its printed command stays short."""
    path = paths.job_file(hashlib.sha256(text.encode()).hexdigest()[:16] + suffix)
    if not path.is_file():
        with storage.atomic_path(path) as tmp:
            tmp.write_text(text)
    return str(path)


def spec_file_for(stage, name=None):
    """A param function: the file holding the job's spec (spec_for's JSON), which the job reads with --spec.
    The content still decides reruns through the `spec` param; this one derives from the outputs, and
    Snakemake records no derived param."""
    return lambda wildcards, output: job_file(
        PLAN.spec(stage, name or wildcards.experiment, wildcards.get("rewind_step")), ".json"
    )


def files_arg(*names, **options):
    """A param function: an argument file (`@file`, one word per line, argparse's fromfile) holding
    `--<name> path ...` for each input named (every named input when nothing is named) and `--<option> path ...`
    for each option="input.<name>" or "output.<name>", leaving out an option whose files are none (an optional
    input). It stands in for lists of tables and per-seed files that would run a printed command to thousands of
    characters; the files themselves decide reruns."""

    def arg(wildcards, input, output):
        where = {"input": input, "output": output}
        named = {n: f"input.{n}" for n in names or ([] if options else input.keys())}
        words = []
        for option, source in {**named, **options}.items():
            side, name = source.split(".")
            if files := getattr(where[side], name):
                words += [f"--{option.replace('_', '-')}", *([files] if isinstance(files, str) else files)]
        text = "\n".join(words) + "\n"
        return f"@{job_file(text, '.args')}"

    return arg


def optional_flag(option, name):
    """A param function: [option, path, ...] when the named input (an optional one, [] or paths) is there, a
    list so that `{params.x:q}` quotes each word."""
    return lambda wildcards, input: [option, *getattr(input, name)] if getattr(input, name) else []


def dataset_of(w):
    return PLAN.dataset_store(w.experiment)


def trajectory_of(w):
    return str(paths.trajectory(w.experiment, w.seed))


def sweep_trajectory(w):
    return PLAN.sweep_trajectory(w.experiment)


def sweep_rounds(w):
    return PLAN.rounds(w.experiment, w.kind, w.burnin_step, plan_of)


def refine_plans(w):
    """An input function for the targets: every refinement plan of every sweep. A target asks for them itself
    because Snakemake does not rebuild a checkpoint's output that is gone (deleted, or its job failed) when
    the only jobs reading it are finished: it defers those jobs' inputs until the checkpoint has run. Asked for
    by a target, a missing plan is rebuilt, and the sweep rounds, summaries and analysis that read it follow."""
    return PLAN.refine_plans(plan_of)


def sweep_files(w):
    """An input function for the targets: every sweep job's table and store, of every round, for the same
    reason: Snakemake does not rebuild a missing input of a job whose outputs are up to date."""
    return PLAN.sweep_files(plan_of)
