"""One declaration per job type (a Snakemake rule): what its jobs read of an experiment, when an experiment has
such jobs, what they write, whether they run a network, the DVC stage that runs them and the resources a
cluster job asks for.

From it follow each job's spec (`for_stage`: the validated experiment projected onto the stage's `reads`, the
Snakemake param that decides reruns, so an edit reruns exactly the jobs that read what it changed), the job's
typed view of that spec (a key the stage does not read raises, naming the stage and the key), the rules'
resources and names, the plan's presence checks and aggregate targets, and DVC's per-stage params
(`stage_specs`). docs/methods.md shows adding one.

A key that decides which jobs exist rather than what one job computes (more seeds, levels, baselines, dims,
burn-in steps: `JOB_SET_KEYS`) is read by the plan, not by a job: no job's spec holds it, so growing it plans
only the new jobs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sublevel import paths
from sublevel.config import ConfigError, Experiment, experiment

# what every job of an experiment reads: the data, network and dense training it derives from
EXPERIMENT = ("dataset", "inputs", "validation", "model", "train",
              "checkpoints.steps", "checkpoints.log_spaced", "checkpoints.every")
# an IMP chain's pruning, rewinding and matching (imp.rewind: one point per chain, see `for_stage`)
IMP = ("imp.fraction", "imp.output_fraction", "imp.rewind", "imp.scope", "imp.alphas", "imp.matching_tolerance",
       "imp.data_diet", "imp.eval_every")
# how one subspace run trains, and from which dense run
SWEEP = ("subspace.dense_seed", "subspace.anchor", "subspace.projection", "subspace.optimizer", "subspace.lr",
         "subspace.momentum", "subspace.betas", "subspace.steps", "subspace.batch_size", "subspace.compile")
# read by the plan alone: which jobs exist (and, for DVC's stages, which run)
JOB_SET_KEYS = ("seeds", "imp.seeds", "imp.levels", "imp.baselines", "imp.instability", "imp.seeds_per_job",
                "imp.fraction_sweep.levels", "subspace.kinds", "subspace.burnin", "subspace.dims", "subspace.seeds",
                "subspace.seeds_per_job")
# keys a spec leaves out at this value, so that the specs of jobs that ran before the key existed are unchanged
OMITTED_AT = {"checkpoints.evaluate": True}


def _imp(exp: Experiment) -> bool:
    return exp.imp is not None


def _sweep(exp: Experiment) -> bool:
    return exp.subspace is not None


def _diet(exp: Experiment) -> bool:
    return exp.imp is not None and exp.imp.data_diet is not None


@dataclass(frozen=True)
class Stage:
    """A job type. `reads`: the config keys (dotted; a section names all of it) its jobs read, None for a job
    that takes no experiment spec; `reads_if`: more keys, read when the experiment has what the predicate asks."""
    name: str                                # the rule's; a per_block stage's rules are <name>_<experiment>_block<j>
    reads: tuple[str, ...] | None
    has: Callable[[Experiment], bool]        # whether an experiment has jobs of this type
    dvc: str                                 # the dvc.yaml stage whose Snakemake target runs them
    per_rewind: bool = False                 # one chain per IMP rewind point: a job's spec holds its point only
    per_block: bool = False                  # a rule per block of IMP chains (`rule`)
    network: bool = True                     # trains or evaluates a network; else a local rule (tables, seconds)
    runtime: int = 30                        # minutes and MB a cluster job asks for (profiles/slurm)
    mem_mb: int = 4000
    reads_if: tuple[tuple[str, Callable[[Experiment], bool]], ...] = ()
    # the outputs of its jobs for one experiment, from the plan (a sublevel.plan.Plan) and the experiment's
    # name: what the aggregate targets (train_all, imp_all, ..., all) ask for; None where a checkpoint decides
    writes: Callable[[Any, str], list[str]] | None = None

    def rule(self, experiment: str | None = None, block: int | None = None) -> str:
        """The rule's name. The IMP chains of a block (imp.seeds_per_job) train as one vmapped job whose outputs
        stay per seed, and a rule's outputs cannot vary with a wildcard: so a per_block stage has one rule per
        experiment and block, named after it."""
        return f"{self.name}_{experiment}_block{block}" if self.per_block else self.name

    def resources(self, gpu: int) -> dict[str, int]:
        """A rule's resources: the device (gpu 0 on a CPU config) and, for a cluster job, its time and memory."""
        return {"gpu": gpu, "runtime": self.runtime, "mem_mb": self.mem_mb} if self.network else {}

    def declares(self, key: str) -> bool:
        """Whether the stage's jobs read `key` (dotted) or a section holding it."""
        parts = key.split(".")
        return any(".".join(parts[:i]) in self.reads for i in range(1, len(parts) + 1))


_ALWAYS = lambda exp: True  # noqa: E731
STAGES = {s.name: s for s in (
    Stage("prepare_data", None, _ALWAYS, "train", network=False, writes=lambda plan, n: [plan.dataset_store(n)]),
    Stage("train_dense", EXPERIMENT + ("checkpoints.evaluate",), _ALWAYS, "train", runtime=240, mem_mb=8000,
          writes=lambda plan, n: [f for run in zip(plan.trajectories(n), plan.train_tables(n)) for f in run]),
    Stage("scores", EXPERIMENT + ("scores",), lambda e: e.scores is not None, "train", runtime=120, mem_mb=16000,
          writes=lambda plan, n: [str(paths.table("scores", experiment=n)), *plan.scores_store(n)]),
    # the IMP chains (imp.smk): one job per block of chains and level; the diet's subset is chosen by the scores
    *(Stage(name, EXPERIMENT + IMP, has, "imp", per_rewind=True, per_block=name != "data_diet", runtime=runtime,
            mem_mb=mem, reads_if=(("scores", _diet),),
            writes=(lambda plan, n: plan.diet_starts(n)) if name == "data_diet" else
            (lambda plan, n, stage=name: [f for s, f in plan.chain_outputs(n) if s == stage]))
      for name, has, runtime, mem in (
          ("imp_level", _imp, 240, 8000), ("imp_baselines", _imp, 480, 8000),
          ("barrier_instability", lambda e: _imp(e) and bool(e.imp.instability), 240, 8000),
          ("barrier_successive", _imp, 30, 4000), ("data_diet", _diet, 120, 8000))),
    Stage("prune_sweep", EXPERIMENT + IMP + ("imp.fraction_sweep.fractions", "imp.fraction_sweep.random",
                                             "imp.fraction_sweep.tolerance"),
          lambda e: _imp(e) and e.imp.fraction_sweep is not None, "imp", per_rewind=True, per_block=True, runtime=480,
          mem_mb=8000, reads_if=(("scores", _diet),), writes=lambda plan, n: plan.prune_sweep_tables(n)),
    # a sweep's rounds are planned round by round (refine_plan is a checkpoint): their files are Plan.sweep_files
    Stage("subspace_sweep", EXPERIMENT + SWEEP, _sweep, "subspace", runtime=720, mem_mb=16000),
    Stage("refine_plan", EXPERIMENT + SWEEP + ("subspace.refine",),
          lambda e: _sweep(e) and e.subspace.refine is not None, "subspace", network=False),
    Stage("subspace_tickets", EXPERIMENT, lambda e: _sweep(e) and _imp(e), "subspace", network=False,
          writes=lambda plan, n: plan.ticket_tables(n)),
    Stage("sweep_summary", None, _sweep, "subspace", network=False,
          writes=lambda plan, n: [str(paths.sweep_summary(n, kind, t)) for kind, t in plan.sweep_jobs(n)]),
    # the analysis reads every sweep: its kinds, burn-in steps, dims and seeds too
    Stage("analyse_subspace", EXPERIMENT + ("subspace",), _sweep, "analysis", network=False,
          writes=lambda plan, n: [str(paths.table(t, experiment=n)) for t in ("success", "threshold")]),
    Stage("spectrum", EXPERIMENT + SWEEP + ("subspace.kinds", "subspace.burnin", "theory"),
          lambda e: _sweep(e) and e.theory is not None, "analysis", runtime=240, mem_mb=16000,
          writes=lambda plan, n: [str(paths.table("spectrum", experiment=n))]),
    Stage("theory", EXPERIMENT + ("subspace",), lambda e: _sweep(e) and e.theory is not None, "analysis",
          network=False, writes=lambda plan, n: [str(paths.table("theory", experiment=n))]),
    Stage("hessian_dense", EXPERIMENT + ("hessian",), lambda e: e.hessian is not None, "analysis", runtime=120,
          mem_mb=8000, writes=lambda plan, n: plan.hessian_tables(n, "dense")),
    Stage("hessian_imp", EXPERIMENT + ("hessian",) + IMP,
          lambda e: e.hessian is not None and e.hessian.imp and _imp(e), "analysis", per_rewind=True, runtime=120,
          mem_mb=8000, writes=lambda plan, n: plan.hessian_tables(n, "imp")),
    Stage("figure", None, _ALWAYS, "analysis", network=False,
          writes=lambda plan, n: plan.figure_files(n) + plan.figure_files(n, "svg")),
    Stage("export", None, _ALWAYS, "analysis", network=False,
          writes=lambda plan, n: [str(paths.metrics_dir()), str(paths.summary_dir()), str(paths.plots_dir())]),
    Stage("reproduction", None, _ALWAYS, "analysis", network=False,
          writes=lambda plan, n: [str(paths.reproduction_file())]),
)}


def stage_sql(rule: str) -> str:
    """An SQL expression of a rule-name column giving its stage's name (a block rule's prefix)."""
    blocks = "|".join(s.name for s in STAGES.values() if s.per_block)
    return f"regexp_replace({rule}, '^({blocks})_.+_block[0-9]+$', '\\1')"


def _get(raw: dict, key: str):
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None, False
        node = node[part]
    return node, True


def _put(raw: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(value)


def projection(exp: Experiment, stage: Stage) -> dict[str, Any]:
    """The stage's keys of the experiment's validated config: `reads`, the `reads_if` that hold, nothing else."""
    keys = stage.reads + tuple(k for k, when in stage.reads_if if when(exp))
    raw: dict[str, Any] = {}
    for key in keys:
        value, present = _get(exp.raw, key)
        if present and OMITTED_AT.get(key, object()) != value:
            _put(raw, key, value)
    return raw


def for_stage(exp: Experiment, stage: str, rewind: int | str | None = None) -> Experiment:
    """The experiment as one stage's jobs see it: `projection`, with every IMP rewind point an explicit
    checkpoint. Jobs take this as their spec (a Snakemake param), so an edit reruns exactly the jobs whose
    output it changes. `rewind` (one of imp.rewinds(), as written) is the one rewind point of an IMP chain's
    jobs (a `per_rewind` stage): their spec holds that point only, the spec an experiment with that single
    point gives them. The view raises on reading a key the stage does not declare."""
    st = STAGES[stage]
    if st.reads is None:
        raise ConfigError(f"stage {stage} takes no experiment spec")
    raw = projection(exp, st)
    if exp.imp is not None:
        points = exp.imp.rewinds()
        if rewind is not None:
            if rewind not in points:
                raise ConfigError(f"experiment {exp.name} has no rewind point {rewind!r}; its points: {list(points)}")
            points = (rewind,)
            if "imp" in raw:
                raw["imp"]["rewind"] = rewind
        steps = list(raw["checkpoints"]["steps"])
        raw["checkpoints"]["steps"] = steps + [k for k in points if k not in steps]
    return Experiment.from_dict(exp.name, raw, stage=st)


def spec_stages(exp: Experiment) -> list[Stage]:
    """The stages whose jobs an experiment has that take its spec, in declaration order."""
    return [s for s in STAGES.values() if s.reads is not None and s.has(exp)]


def stage_specs(cfg: dict[str, Any]) -> dict[str, dict]:
    """What each DVC stage's jobs see of a validated config, so DVC reruns a stage only when that changes:
    an edit to thresholds reruns the analysis, not training. Per experiment, each job type's spec (every rewind
    point's), and the keys that decide which jobs exist (`JOB_SET_KEYS`), since a DVC stage runs them all; the
    train stage also sees device and data."""
    out: dict[str, dict] = {s.dvc: {} for s in STAGES.values()}
    out["train"] = {"device": cfg["device"], "data": cfg["data"]}
    for name in sorted(cfg["experiments"]):
        exp = experiment(cfg, name)
        for dvc_stage in out:
            parts = {s.name: json.loads(for_stage(exp, s.name).to_json())
                     for s in spec_stages(exp) if s.dvc == dvc_stage}
            if parts:
                jobs = {}
                for key in JOB_SET_KEYS:
                    value, present = _get(exp.raw, key)
                    if present:
                        jobs[key] = value
                out[dvc_stage][name] = dict(parts, jobs=jobs)
    return out
