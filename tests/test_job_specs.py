"""Every job's spec, for every shipped config, against a recorded digest.

A job's spec (what its stage sees of its experiment, sublevel.stages.for_stage) is the param that decides
whether Snakemake reruns a finished job: a spec that changes by accident reruns hours of GPU work, one that
stops changing when it should leaves stale results. job_specs.json records a digest of each (the digest that
also names the job's spec file under results/jobs/); a change that
means to alter specs regenerates it with `SUBLEVEL_UPDATE_JOB_SPECS=1 pytest tests/test_job_specs.py` and says
in CHANGELOG.md which jobs rerun."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from sublevel import config, stages
from sublevel.plan import Plan

from conftest import snakemake

ROOT = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).with_name("job_specs.json")
RECORDED_COMMANDS = Path(__file__).with_name("job_commands.json")
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "config").glob("*.yaml"),
                                                    *(ROOT / "config" / "repro").glob("*.yaml")])


def job_specs(path: Path) -> dict[str, str]:
    """A digest of the spec of every kind of job a config plans, by experiment, rule and rewind step: every
    stage of sublevel.stages that takes a spec and that the experiment has, per rewind point where it runs one
    chain per point."""
    plan = Plan(config.load(path))
    out = {}
    for name in plan.names:
        exp = plan.experiment(name)
        for stage in stages.spec_stages(exp):
            for k in plan.rewind_steps(name) if stage.per_rewind else (None,):
                key = f"{name} {stage.name}" + ("" if k is None else f" rewind_step={k}")
                out[key] = hashlib.sha256(plan.spec(stage.name, name, k).encode()).hexdigest()[:16]
    return out


@pytest.mark.parametrize("path", CONFIGS)
def test_every_jobs_spec_is_what_was_recorded(path):
    specs = job_specs(ROOT / path)
    recorded = json.loads(RECORDED.read_text()) if RECORDED.is_file() else {}
    if os.environ.get("SUBLEVEL_UPDATE_JOB_SPECS"):
        recorded[path] = specs
        RECORDED.write_text(json.dumps(dict(sorted(recorded.items())), indent=1, sort_keys=True) + "\n")
    changed = {job: (recorded.get(path, {}).get(job), digest) for job, digest in specs.items()
               if recorded.get(path, {}).get(job) != digest}
    gone = sorted(set(recorded.get(path, {})) - set(specs))
    assert not changed and not gone, (f"{path}: specs changed {changed}, jobs gone {gone}; if meant, regenerate "
                                      "(module docstring) and say in CHANGELOG.md which jobs rerun")


def test_every_shipped_config_is_recorded():
    assert sorted(json.loads(RECORDED.read_text())) == CONFIGS


@pytest.mark.parametrize("path", ["config/config.yaml", "config/smoke.yaml"])
def test_a_dry_run_plans_the_recorded_jobs_with_the_recorded_commands(path, tmp_path):
    """`snakemake -n -p` as a user types it: every job it plans (rule and wildcards) with a digest of its shell
    command, which Snakemake's code trigger compares (a changed command, a log path included, reruns the job)."""
    res = snakemake(tmp_path, "-n", "-p", configfile=ROOT / path)
    assert res.returncode == 0, res.stderr[-2000:]
    commands, job = {}, None
    for line in (res.stdout + res.stderr).splitlines():
        if m := re.match(r"Job \d+: (.+)$", line):
            job = m.group(1).strip()
            commands[job] = ""  # a target (all, train_all, ...) runs no command
        elif line.startswith("Shell command: ") and job is not None:
            commands[job], job = line.removeprefix("Shell command: "), None
    planned = {j: hashlib.sha256(c.encode()).hexdigest()[:16] for j, c in commands.items()}
    assert len(planned) > 50 and sum(bool(c) for c in commands.values()) > 50
    recorded = json.loads(RECORDED_COMMANDS.read_text()) if RECORDED_COMMANDS.is_file() else {}
    if os.environ.get("SUBLEVEL_UPDATE_JOB_SPECS"):
        recorded[path] = dict(sorted(planned.items()))
        RECORDED_COMMANDS.write_text(json.dumps(dict(sorted(recorded.items())), indent=1) + "\n")
    changed = sorted(j for j in planned if recorded[path].get(j) != planned[j])
    assert planned.keys() == recorded[path].keys() and not changed, (path, changed[:5])
