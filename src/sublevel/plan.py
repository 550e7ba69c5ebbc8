"""The workflow's planning: which outputs a config asks for, and which files each job reads.

workflow/rules/common.smk builds one `Plan` from the validated config and the rules ask it; nothing here
imports Snakemake, so planning is unit-tested. Each experiment is parsed once. A path with "{name}" in it is
a pattern (a rule's output, or an input that Snakemake fills from the job's wildcards); every other path is
a concrete file. Sweep rounds after the first depend on refinement plans that exist only once their
checkpoint job ran: those methods take `plan_of(experiment, kind, t, round)`, which returns the finished
plan's path (common.smk passes Snakemake's checkpoint lookup; a test passes files it wrote).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sublevel import paths, stages
from sublevel.config import Experiment, experiment
from sublevel.schedule import Schedule
from sublevel.schema import FIGURES

PlanOf = Callable[[str, str, int | str, int], str]


def section_of(exp: Experiment, path: str):
    """The experiment's config section at a dotted path ("imp.fraction_sweep"), None where absent."""
    node = exp
    for key in path.split("."):
        node = getattr(node, key, None)
        if node is None:
            return None
    return node


class Plan:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.names = sorted(config["experiments"])
        self._experiments = {name: experiment(config, name) for name in self.names}
        self._schedules: dict[str, Schedule] = {}
        self._specs: dict[tuple, str] = {}  # Snakemake asks once per job; many jobs share a spec

    # -- the experiments ---------------------------------------------------------------------------------------
    def experiment(self, name: str) -> Experiment:
        return self._experiments[name]

    def schedule(self, name: str) -> Schedule:
        if name not in self._schedules:
            from sublevel.datasets import train_size

            exp = self.experiment(name)
            self._schedules[name] = Schedule.resolve(exp, exp.trained_on(train_size(exp.dataset, self.config["data"])))
        return self._schedules[name]

    def has(self, name: str, stage: str) -> bool:
        """Whether the experiment has jobs of `stage` (its declaration's `has`, sublevel.stages)."""
        return stages.STAGES[stage].has(self.experiment(name))

    def having(self, stage: str) -> list[str]:
        """The experiments that have jobs of `stage`."""
        return [n for n in self.names if self.has(n, stage)]

    def spec(self, stage: str, name: str, rewind_step: int | str | None = None) -> str:
        """The experiment as one stage's jobs see it (sublevel.stages.for_stage), as JSON; a job of one IMP
        chain sees its rewind point only."""
        key = (stage, name, None if rewind_step is None else int(rewind_step))
        if key not in self._specs:
            rewind = None if rewind_step is None else self.rewind_point(name, rewind_step)
            self._specs[key] = stages.for_stage(self.experiment(name), stage, rewind=rewind).to_json()
        return self._specs[key]

    def rewind_steps(self, name: str) -> tuple[int, ...]:
        """The experiment's IMP rewind steps, resolved, in the config's order."""
        return self.schedule(name).rewinds

    def rewind_point(self, name: str, rewind_step: int | str) -> int | str:
        """imp.rewind's point as written (e.g. '1ep') that resolves to `rewind_step`."""
        return dict(zip(self.rewind_steps(name), self.experiment(name).imp.rewinds()))[int(rewind_step)]

    # -- dense runs --------------------------------------------------------------------------------------------
    def dataset_store(self, name: str) -> str:
        return str(paths.dataset_store(self.experiment(name).dataset))

    def trajectories(self, name: str, seeds=None) -> list[str]:
        """The dense trajectories of `seeds` (default: every dense seed), in order."""
        return [str(paths.trajectory(name, s)) for s in (self.experiment(name).seeds if seeds is None else seeds)]

    def train_tables(self, name: str) -> list[str]:
        return [str(paths.table("train", experiment=name, seed=s)) for s in self.experiment(name).seeds]

    def scores_store(self, name: str) -> list[str]:
        """The experiment's scores store, when it has a scores section ([] otherwise)."""
        return [str(paths.scores_store(name))] if self.has(name, "scores") else []

    def outputs(self, dvc_stage: str, network_only: bool = False) -> list[str]:
        """Every output of the jobs of one DVC stage's Snakemake stages (sublevel.stages: each Stage's `writes`,
        for each experiment that has it), in order, each once; `network_only`: of the stages that run a network."""
        out = {}
        for name in self.names:
            for s in stages.STAGES.values():
                if s.dvc == dvc_stage and s.writes and self.has(name, s.name) and (s.network or not network_only):
                    out.update(dict.fromkeys(s.writes(self, name)))
        return list(out)

    def dense_outputs(self) -> list[str]:
        """Every dataset store, dense run, and the per-example scores computed from them (table and store)."""
        return self.outputs("train")

    # -- IMP ---------------------------------------------------------------------------------------------------
    def imp_blocks(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """(experiment, block, seeds) of every block of IMP chains that train together (imp.seeds_per_job)."""
        return [(n, j, seeds) for n in self.having("imp_level")
                for j, seeds in enumerate(self.experiment(n).imp.seed_blocks())]

    def chain_diets(self, name: str, seeds) -> list[str]:
        """Each chain's data-diet rewind point at the {rewind_step} wildcard ([] without a diet)."""
        return [str(paths.diet_start(name, "{rewind_step}", s)) for s in seeds] if self.has(name, "data_diet") else []

    @staticmethod
    def chain_stores(name: str, seeds, stage: str, method: str | None = None) -> list[str]:
        """A level job's outputs: each chain's level store (a baseline's: of its method) at {rewind_step}, {level}."""
        return [str(paths.level_store(name, "{rewind_step}", s, stage, "{level}", method)) for s in seeds]

    @staticmethod
    def chain_levels_at(name: str, seeds, level: int | None = None) -> Callable:
        """An input function of a job's wildcards: each chain's IMP level store at `level` (default: the job's
        {level}), at the job's {rewind_step}."""
        return lambda w: [str(paths.level_store(name, w.rewind_step, s, "imp", w.level if level is None else level))
                          for s in seeds]

    @staticmethod
    def chain_levels_before(name: str, seeds) -> Callable:
        """An input function of a job's wildcards: each chain's level ℓ−1 store for a level-ℓ job ([] at 0)."""
        return lambda w: ([str(paths.level_store(name, w.rewind_step, s, "imp", int(w.level) - 1)) for s in seeds]
                          if int(w.level) else [])

    @staticmethod
    def imp_table(name: str, rewind_step, seed, table: str, kind: str, level, method: str | None = None) -> str:
        """One chain's table file at one level: an imp table by stage, a barrier table by kind; a baseline's by
        method too."""
        key = "stage" if table == "imp" else "kind"
        extra = {} if method is None else {"method": method}
        return str(paths.table(table, experiment=name, rewind_step=rewind_step, seed=seed, **{key: kind},
                               level=level, **extra))

    def chain_tables(self, name: str, seeds, table: str, kind: str, method: str | None = None) -> list[str]:
        """Each chain's table file at the {rewind_step} and {level} wildcards (imp_table)."""
        return [self.imp_table(name, "{rewind_step}", s, table, kind, "{level}", method) for s in seeds]

    def chain_outputs(self, name: str, rewind_step: int | str | None = None) -> list[tuple[str, str]]:
        """(stage, file) of every output of one experiment's IMP chains (of one rewind step's), in chain and
        level order: each level's table and store, its baselines', its barriers'."""
        imp = self.experiment(name).imp
        out = []
        for k in self.rewind_steps(name) if rewind_step is None else (int(rewind_step),):
            for seed in imp.seeds:
                for level in range(imp.levels + 1):
                    out += [("imp_level", self.imp_table(name, k, seed, "imp", "imp", level)),
                            ("imp_level", str(paths.level_store(name, k, seed, "imp", level)))]
                    for m in imp.baselines if level else ():
                        out += [("imp_baselines", self.imp_table(name, k, seed, "imp", "baselines", level, m)),
                                ("imp_baselines", str(paths.level_store(name, k, seed, "baselines", level, m)))]
                    if imp.instability:
                        out.append(("barrier_instability", self.imp_table(name, k, seed, "barrier", "instability",
                                                                          level)))
                    if level:
                        out.append(("barrier_successive", self.imp_table(name, k, seed, "barrier", "imp_successive",
                                                                         level)))
        return out

    def imp_tables(self, name: str, rewind_step: int | str | None = None) -> dict[str, list[str]]:
        """Every imp and barrier table file of one experiment (of one rewind step's chains)."""
        files = [(stage, f) for stage, f in self.chain_outputs(name, rewind_step) if f.endswith(".parquet")]
        return {"imp": [f for stage, f in files if stage.startswith("imp_")],
                "barrier": [f for stage, f in files if stage.startswith("barrier_")]}

    @staticmethod
    def prune_sweep_table(name: str, rewind_step, seed, level) -> str:
        return str(paths.table("prune_sweep", experiment=name, rewind_step=rewind_step, seed=seed, level=level))

    def prune_sweep_tables(self, name: str) -> list[str]:
        """Every chain's fraction-sweep table at every swept level (none without imp.fraction_sweep)."""
        if not self.has(name, "prune_sweep"):
            return []
        imp = self.experiment(name).imp
        return [self.prune_sweep_table(name, k, s, level) for k in self.rewind_steps(name) for s in imp.seeds
                for level in imp.fraction_sweep.levels]

    def diet_starts(self, name: str) -> list[str]:
        """Every chain's data-diet rewind point."""
        return [str(paths.diet_start(name, k, s)) for k in self.rewind_steps(name)
                for s in self.experiment(name).imp.seeds]

    def imp_outputs(self) -> list[str]:
        """Every IMP table (levels, baselines, barriers, fraction sweeps), level store and data-diet rewind point."""
        return self.outputs("imp")

    # -- subspace sweeps ---------------------------------------------------------------------------------------
    def sweep_jobs(self, name: str) -> list[tuple[str, int]]:
        """(kind, t) of each sweep of an experiment."""
        return self.experiment(name).subspace.anchors(self.schedule(name))

    def sweep_trajectory(self, name: str) -> str:
        """subspace.dense_seed's trajectory: the spectrum's θ*, and the checkpoint count a lottery plan reads."""
        return str(paths.trajectory(name, self.experiment(name).subspace.dense_seed))

    def sweep_anchor_seeds(self, name: str, block: int | str) -> list[str]:
        """The dense seed anchoring each run of one sweep job (subspace.anchor), in the order of its seeds."""
        exp = self.experiment(name)
        return [str(s) for s in exp.subspace.anchor_seeds(self.sweep_seeds(name, block), list(exp.seeds))]

    def sweep_trajectories(self, name: str, block: int | str) -> list[str]:
        """The trajectories one sweep job's runs are anchored on, one per dense seed in ascending order."""
        return [str(paths.trajectory(name, s)) for s in sorted({int(s) for s in self.sweep_anchor_seeds(name, block)})]

    def sweep_seeds(self, name: str, block: int | str) -> list[str]:
        """The run seeds of one sweep job: its block of 0..subspace.seeds-1 (subspace.seeds_per_job each)."""
        return [str(s) for s in self.experiment(name).subspace.seed_blocks()[int(block)]]

    def ticket_tables(self, name: str) -> list[str]:
        """The IMP levels as axial subspaces, one file per rewind step (the anchor), every level in it."""
        return [str(paths.table("subspace", experiment=name, kind="ticket", burnin_step=k, round=0))
                for k in self.rewind_steps(name)]

    def round_dims(self, name: str, kind: str, t, round: int | str, plan_of: PlanOf) -> list[int]:
        """The dims one round of a sweep trains: the configured ones at round 0, a refinement round those of
        the previous round's plan."""
        if int(round) == 0:
            return self.experiment(name).subspace.sweep_dims(kind, self.schedule(name))
        with open(plan_of(name, kind, t, int(round) - 1)) as f:
            return json.load(f)["dims"]

    def round_tables(self, name: str, kind: str, t, round: int | str, plan_of: PlanOf) -> list[str]:
        """The tables of one round of a sweep, one per d and block of seeds."""
        return self._round_files(name, kind, t, round, self.round_dims(name, kind, t, round, plan_of))["tables"]

    def _round_files(self, name: str, kind: str, t, round: int | str, dims: list[int]) -> dict[str, list[str]]:
        """One round's table and store files at `dims`, one per d and block of seeds."""
        jobs = [(d, j) for d in dims for j in range(len(self.experiment(name).subspace.seed_blocks()))]
        return {"tables": [str(paths.table("subspace", experiment=name, kind=kind, burnin_step=t, round=round, d=d,
                                           block=j)) for d, j in jobs],
                "stores": [str(paths.sweep_store(name, kind, t, round, d, j)) for d, j in jobs]}

    def rounds(self, name: str, kind: str, t, plan_of: PlanOf) -> dict[str, list[str]]:
        """Every round's tables and stores of one sweep, and the plans between them: round 0, then one more
        while the previous plan adds dims."""
        files = self._round_files(name, kind, t, 0, self.round_dims(name, kind, t, 0, plan_of))
        plans = []
        if self.has(name, "refine_plan"):
            while True:
                plans.append(plan_of(name, kind, t, len(plans)))
                if not (dims := self.round_dims(name, kind, t, len(plans), plan_of)):
                    break
                for key, more in self._round_files(name, kind, t, len(plans), dims).items():
                    files[key] += more
        return {**files, "plans": plans}

    def sweep_files(self, plan_of: PlanOf) -> list[str]:
        """Every sweep job's table and store, of every round (a target asks for them, as for the plans:
        Snakemake does not rebuild a missing input of a job whose outputs are up to date)."""
        rounds = [self.rounds(name, kind, t, plan_of) for name in self.having("subspace_sweep")
                  for kind, t in self.sweep_jobs(name)]
        return [f for r in rounds for f in r["tables"] + r["stores"]]

    def refine_plans(self, plan_of: PlanOf) -> list[str]:
        """Every refinement plan of every sweep (a target asks for them: see common.smk)."""
        return [plan for name in self.having("subspace_sweep") for kind, t in self.sweep_jobs(name)
                for plan in self.rounds(name, kind, t, plan_of)["plans"]]

    def subspace_tables(self, name: str, plan_of: PlanOf) -> list[str]:
        """Every round of every sweep of one experiment, and its ticket tables."""
        out = [f for kind, t in self.sweep_jobs(name) for f in self.rounds(name, kind, t, plan_of)["tables"]]
        return out + (self.ticket_tables(name) if self.has(name, "subspace_tickets") else [])

    def subspace_outputs(self) -> list[str]:
        """Every sweep's summary (which waits for all its rounds), and the IMP tickets as axial subspaces (the
        rounds' own files come through the refinement checkpoints: sweep_files)."""
        return self.outputs("subspace")

    # -- analysis ----------------------------------------------------------------------------------------------
    def hessian_tables(self, name: str, source: str | None = None) -> list[str]:
        """The experiment's sharpness tables: every dense seed's checkpoints, every IMP chain's levels (`source`:
        dense or imp alone)."""
        exp, out = self.experiment(name), []
        if source != "imp" and self.has(name, "hessian_dense"):
            out += [str(paths.table("hessian", experiment=name, seed=s, source="dense")) for s in exp.seeds]
        if source != "dense" and self.has(name, "hessian_imp"):  # one job per chain and level
            out += [str(paths.table("hessian", experiment=name, seed=s, source="imp", rewind_step=k, level=level))
                    for k in self.rewind_steps(name) for s in exp.imp.seeds for level in range(exp.imp.levels + 1)]
        return out

    def theory_tables(self, name: str) -> dict[str, list[str]]:
        """The predicted d* (table theory, an analysis rule's) and the spectrum it is read from (a job that
        evaluates the network): an experiment with theory and subspace sections has both."""
        return {t: [str(paths.table(t, experiment=name))] if self.has(name, t) else [] for t in ("theory", "spectrum")}

    def figures(self, name: str) -> list[str]:
        """The figures an experiment has the sections for (schema.FIGURES)."""
        exp = self.experiment(name)
        return [f for f, fig in FIGURES.items() if all(section_of(exp, s) is not None for s in fig.sections)]

    def figure_files(self, name: str, fmt: str = "png") -> list[str]:
        return [str(paths.figure(name, f, fmt)) for f in self.figures(name)]

    def figure_tables(self, name: str, figure: str) -> dict[str, list[str]]:
        """The table files one figure of one experiment is drawn from, by table name."""
        files = {"train": self.train_tables(name), "success": [str(paths.table("success", experiment=name))],
                 "threshold": [str(paths.table("threshold", experiment=name))],
                 "hessian": self.hessian_tables(name), "scores": [str(paths.table("scores", experiment=name))],
                 "prune_sweep": self.prune_sweep_tables(name), **self.theory_tables(name)}
        if self.has(name, "imp_level"):
            files.update(self.imp_tables(name))
        return {t: files[t] for t in FIGURES[figure].tables}

    def analysis_outputs(self) -> list[str]:
        """Tables and figures of the analysis stage, and the DVC metrics and plots of the whole run."""
        return self.outputs("analysis")

    def result_tables(self) -> list[str]:
        """Every Parquet table a run writes: what the exports and the reproduction page read."""
        return [f for f in self.dense_outputs() + self.imp_outputs() + self.analysis_outputs()
                if f.endswith(".parquet")]

    def compute_outputs(self) -> list[str]:
        """Every output of a job that runs a network, without the analysis tables, figures and exports."""
        return (self.dense_outputs() + self.imp_outputs() + self.subspace_outputs()
                + self.outputs("analysis", network_only=True))
