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

from sublevel import config
from sublevel.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).with_name("job_specs.json")
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "config").glob("*.yaml"),
                                                    *(ROOT / "config" / "repro").glob("*.yaml")])


def job_specs(path: Path) -> dict[str, str]:
    """A digest of the spec of every kind of job a config plans, by experiment, stage and rewind step: the
    stages and rewind steps the rules pass to Plan.spec (workflow/rules/*.smk, spec_for)."""
    plan = Plan(config.load(path))
    out = {}
    for name in plan.names:
        exp = plan.experiment(name)
        rewinds = plan.rewind_steps(name) if exp.imp else ()
        jobs = [("dense", None)] + [("imp", k) for k in rewinds]  # IMP levels, baselines, barriers, the diet
        if exp.imp and exp.imp.fraction_sweep:
            jobs += [("prune_sweep", k) for k in rewinds]
        if exp.subspace:
            jobs += [("subspace", None), ("refine", None), ("analysis", None)]
            jobs += [("tickets", None)] if exp.imp else []
            jobs += [("spectrum", None)] if exp.theory else []
        if exp.hessian:
            jobs += [("hessian", None)] + ([("hessian_imp", k) for k in rewinds] if exp.hessian.imp else [])
        if exp.scores:
            jobs += [("scores", None)]
        for stage, k in jobs:
            key = f"{name} {stage}" + ("" if k is None else f" rewind_step={k}")
            out[key] = hashlib.sha256(plan.spec(stage, name, k).encode()).hexdigest()[:16]
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
