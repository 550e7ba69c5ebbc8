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
from pathlib import Path

import pytest

from sublevel import config, stages
from sublevel.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).with_name("job_specs.json")
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
