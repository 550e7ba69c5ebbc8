"""What each stage's jobs see of an experiment: its spec, sliced so that an edit reruns exactly the jobs whose
output it changes (Snakemake compares each job's params), and the same slices per DVC stage.

Snakemake stages: dense (training), imp (IMP levels, baselines, barriers, the diet), subspace (one sweep job),
refine (a refinement plan), analysis (P(d) and d*, and the d* predicted from the spectrum), hessian and
hessian_imp (sharpness), scores, spectrum (the Hessian's spectral density and each sweep anchor's quadrature),
prune_sweep (imp.fraction_sweep), tickets (IMP levels as axial subspaces, read from the imp tables).
"""

from __future__ import annotations

import json
from typing import Any

from sublevel import config
from sublevel.config import ConfigError, Experiment

# stage -> the sections its jobs read. subspace: one sweep job (one d of one kind and t, its d a wildcard);
# refine: a refinement plan; tickets: IMP levels as axial subspaces (read from the imp tables)
STAGE_SECTIONS = {"dense": (), "imp": ("imp",), "subspace": ("subspace",),
                  "refine": ("subspace",), "analysis": ("subspace",), "hessian": ("hessian",),
                  "hessian_imp": ("hessian", "imp"), "scores": ("scores",), "spectrum": ("subspace", "theory"),
                  "prune_sweep": ("imp",),
                  "tickets": ()}
# Keys that decide which jobs exist, or reach a job as an option or an input file of its own, not what
# one job computes: no job's spec holds them, so growing them (more levels, seeds, baselines, burn-in
# steps, dims) plans only the new jobs. stage_specs keeps them for DVC, whose stages run every job.
JOB_SET_KEYS = {"imp": ("seeds", "levels", "baselines", "instability", "seeds_per_job"),
                "subspace": ("kinds", "burnin", "dims", "seeds", "seeds_per_job")}
# subspace keys each subspace stage does not read
SUBSPACE_UNREAD = {"subspace": ("thresholds", "bootstrap", "refine"), "refine": ("thresholds", "bootstrap"),
                   "analysis": (),
                   "spectrum": ("thresholds", "bootstrap", "refine", "dims", "seeds", "seeds_per_job")}
# stages whose one job covers every sweep of an experiment: they read the kinds and burn-in steps
WHOLE_SWEEP = ("analysis", "spectrum")


def for_stage(exp: Experiment, stage: str, rewind: int | str | None = None) -> Experiment:
    """The experiment as one stage's jobs see it: without the other stages' sections and the keys no job
    of the stage reads, the IMP rewind points explicit checkpoints. Jobs take this as their spec (a
    Snakemake param), so an edit reruns exactly the jobs whose output it changes. `rewind` (one of
    imp.rewinds(), as written) is the one rewind point of an IMP chain's jobs: their spec holds that point
    only, the spec an experiment with that single point gives them."""
    keep = STAGE_SECTIONS[stage]
    # jobs are per seed: the list of seeds is not part of what any one job computes
    if stage == "imp" and exp.imp and exp.imp.data_diet:
        keep += ("scores",)  # the diet's subset is chosen by the scores
    raw = {k: v for k, v in exp.raw.items()
           if k not in ("imp", "subspace", "hessian", "scores", "theory", "seeds") or k in keep}
    for section, keys in JOB_SET_KEYS.items():
        if section in raw and stage not in WHOLE_SWEEP:
            raw[section] = {k: v for k, v in raw[section].items() if k not in keys}
    if "subspace" in raw:
        raw["subspace"] = {k: v for k, v in raw["subspace"].items() if k not in SUBSPACE_UNREAD[stage]}
    if "imp" in raw and "fraction_sweep" in raw["imp"]:  # read by its own jobs only, which of them exist aside
        sweep = {k: v for k, v in raw["imp"]["fraction_sweep"].items() if k != "levels"}
        raw["imp"] = {k: v for k, v in raw["imp"].items() if k != "fraction_sweep"}
        if stage == "prune_sweep":
            raw["imp"]["fraction_sweep"] = sweep
    # only dense runs evaluate at checkpoints, and the default leaves every spec as it was before the key
    if stage != "dense" or raw["checkpoints"].get("evaluate", True):
        raw["checkpoints"] = {k: v for k, v in raw["checkpoints"].items() if k != "evaluate"}
    if exp.imp is not None:
        points = exp.imp.rewinds()
        if rewind is not None:
            if rewind not in points:
                raise ConfigError(f"experiment {exp.name} has no rewind point {rewind!r}; its points: {list(points)}")
            points = (rewind,)
            if "imp" in raw:
                raw["imp"] = dict(raw["imp"], rewind=points[0])
        steps = list(raw["checkpoints"]["steps"])
        steps += [k for k in points if k not in steps]
        raw["checkpoints"] = dict(raw["checkpoints"], steps=steps)
    return Experiment.from_dict(exp.name, raw)


# DVC stage -> the Snakemake stages whose specs decide its jobs (for_stage)
DVC_STAGES = {"train": ("dense", "scores"), "imp": ("imp", "prune_sweep"), "subspace": ("subspace", "refine"),
              "analysis": ("analysis", "hessian", "hessian_imp", "spectrum")}


def stage_specs(cfg: dict[str, Any]) -> dict[str, dict]:
    """What each DVC stage's jobs see of a validated config, so DVC reruns a stage only when that changes:
    an edit to thresholds reruns the analysis, not training. The train stage also sees device and data."""
    out = {}
    for dvc_stage, stages in DVC_STAGES.items():
        spec = {"device": cfg["device"], "data": cfg["data"]} if dvc_stage == "train" else {}
        for name in sorted(cfg["experiments"]):
            exp = config.experiment(cfg, name)
            present = {"dense": True, "scores": exp.scores is not None, "imp": exp.imp is not None,
                       "subspace": exp.subspace is not None,
                       "refine": exp.subspace is not None, "analysis": exp.subspace is not None,
                       "hessian": exp.hessian is not None, "hessian_imp": exp.hessian is not None and exp.imp is not None,
                       "spectrum": exp.theory is not None and exp.subspace is not None,
                       "prune_sweep": exp.imp is not None and exp.imp.fraction_sweep is not None}
            parts = {s: json.loads(for_stage(exp, s).to_json()) for s in stages if present[s]}
            if parts:  # for_stage leaves out what decides which jobs exist (the seed lists, JOB_SET_KEYS)
                seeds = list(exp.imp.seeds) if dvc_stage == "imp" else list(exp.seeds)
                jobs = {section: {k: exp.raw[section][k] for k in keys if k in exp.raw[section]}
                        for section, keys in JOB_SET_KEYS.items() if section in exp.raw}
                if present["prune_sweep"]:
                    jobs["imp"]["fraction_sweep_levels"] = exp.raw["imp"]["fraction_sweep"]["levels"]
                spec[name] = dict(parts, seeds=seeds, jobs=jobs)
        out[dvc_stage] = spec
    return out
