"""Typed views of the validated config.

The JSON Schema (workflow/schemas/config.schema.yaml) is the single definition of
what a config may hold and of its defaults; :func:`validate` applies it (through
snakemake.utils.validate) and turns the first violation into one line naming the key.
The dataclasses below only give the validated dict names and types, as OpenLTH's
hyperparameter classes do.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sublevel import paths


class ConfigError(ValueError):
    """A config that the pipeline refuses before any job runs."""


def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<config>"


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Validate against the schema, fill defaults, and check what a schema cannot.

    Returns a new dict; raises ConfigError('config error at <key>: ...')."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as schema_validate

    if not isinstance(config, dict):
        raise ConfigError(f"config error at <config>: the config is a mapping of keys, not a {type(config).__name__}")
    _refuse_control_characters(config, [])
    config = copy.deepcopy(config)
    try:
        schema_validate(config, str(paths.schema_file()), set_default=True)
    except WorkflowError as e:
        cause = e.__context__  # snakemake raises WorkflowError from inside `except ValidationError`
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        raise _schema_error(cause) from None
    if strict := jsonschema.exceptions.best_match(_strict_validator().iter_errors(config)):
        raise _schema_error(strict)
    config = json.loads(json.dumps(config))  # no dict shared between experiments through schema defaults
    from sublevel.datasets import train_size

    for name in config["experiments"]:
        exp = experiment(config, name)
        exp.check(train_size(exp.dataset, config["data"]))
    return config


def _schema_error(error) -> ConfigError:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return ConfigError(f"config error at {_key_path(where + extra[:1])}: unknown key; "
                           f"{_key_path(where)} takes {sorted(error.schema.get('properties', {}))}")
    if "propertyNames" in error.schema_path:  # a key (an experiment name) that is refused: name it
        shown = error.instance if len(error.instance) <= 80 else error.instance[:40] + "…"
        why = (f"the name has {len(error.instance)} characters, at most {error.validator_value}"
               if error.validator == "maxLength" else f"the name {error.message.split(' ', 1)[1]}")
        return ConfigError(f"config error at {_key_path(where + [shown])}: {why}")
    return ConfigError(f"config error at {_key_path(where)}: {_describe(error)}")


def _strict_validator():
    """The schema with JSON's integers as Python's: 40.0 is not an integer here. (JSON Schema counts a float
    with no fraction as an integer, and Python code then fails on it at run time: range(40.0).)"""
    import jsonschema
    import yaml

    strict = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, x: isinstance(x, int) and not isinstance(x, bool))
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=strict)
    return cls(yaml.safe_load(paths.schema_file().read_text()))


def _refuse_control_characters(node, where: list) -> None:
    """No key or string holds a newline or other control character: the schema's patterns cannot refuse one
    (a regex `$` matches before a final newline), and such a value breaks file names and shell lines."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        for text, at in ((key, where + [repr(key)]), (value, where + [key])):
            if isinstance(text, str) and any(ord(c) < 32 or ord(c) == 127 for c in text):
                raise ConfigError(f"config error at {_key_path(at)}: {text!r} holds a newline or control character")
        _refuse_control_characters(value, where + [key])


def _describe(error) -> str:
    if error.validator == "oneOf" and error.context:
        # a duration: say what is allowed rather than both branches' complaints
        return f"{error.instance!r} is not valid: {error.schema.get('description', error.message)}"
    return error.message


def load(path: str | Path) -> dict[str, Any]:
    """A config file, validated; a file that is not YAML is one ConfigError naming where it broke."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise ConfigError(f"config error in {path}: not valid YAML at line {mark.line + 1}, column "
                          f"{mark.column + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config error in {path}: not valid YAML: {e}") from None
    return validate(raw or {})


def parse_duration(value: int | str, steps_per_epoch: int) -> int:
    """1000 or '1000it' -> 1000 steps; '20ep' -> 20 * steps_per_epoch steps."""
    if isinstance(value, int):
        return value
    if value.endswith("ep"):
        return int(value[:-2]) * steps_per_epoch
    return int(value.removesuffix("it"))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    widths: tuple[int, ...] | None = None
    width: int | None = None

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class TrainSpec:
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    betas: tuple[float, float]
    batch_size: int
    steps: int | str
    warmup: int | str
    schedule: str
    milestones: tuple[int | str, ...]
    gamma: float
    augment: bool
    eval_every: int | str
    eval_batch_size: int
    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "none"


@dataclass(frozen=True)
class CheckpointSpec:
    steps: tuple[int | str, ...]
    log_spaced: int
    every: int | str
    evaluate: bool = True


def seed_blocks(seeds: tuple[int, ...], per_job: int | None) -> list[tuple[int, ...]]:
    """`seeds` in consecutive blocks of `per_job` (all in one when None), one job each: appending seeds leaves
    every full block, and so every finished job of it, as it was. A run depends only on its own seed, so the
    blocking changes no result."""
    k = per_job or len(seeds) or 1
    return [seeds[i:i + k] for i in range(0, len(seeds), k)]


@dataclass(frozen=True)
class ImpSpec:
    fraction: float
    output_fraction: float | None
    rewind: int | str | tuple[int | str, ...]
    scope: str
    alphas: int
    matching_tolerance: float
    data_diet: dict | None = None
    # which jobs exist, not what one computes: absent (None, ()) in a job's spec (Experiment.JOB_SET_KEYS)
    levels: int | None = None
    seeds: tuple[int, ...] = ()
    baselines: tuple[str, ...] = ()
    instability: bool | None = None
    seeds_per_job: int | None = None

    def seed_blocks(self) -> list[tuple[int, ...]]:
        """`seeds` in blocks of `seeds_per_job`, one IMP job each (seed_blocks)."""
        return seed_blocks(self.seeds, self.seeds_per_job)

    def rewinds(self) -> tuple[int | str, ...]:
        """The rewind points as written (one, or a list: one chain per seed and point)."""
        return self.rewind if isinstance(self.rewind, tuple) else (self.rewind,)


@dataclass(frozen=True)
class SubspaceSpec:
    dense_seed: int
    projection: str
    optimizer: str
    lr: float
    momentum: float
    steps: int
    batch_size: int
    # kinds, burn-in steps, dims and seeds decide which sweep jobs exist (one per kind, t, d and block of
    # seeds; a refinement round's d comes from its plan): absent from the specs of jobs they do not change
    # (Experiment.for_stage); a sweep job takes its seeds as an option
    seeds: int | None = None
    seeds_per_job: int | None = None
    kinds: tuple[str, ...] = ()
    dims: tuple[int, ...] = ()
    burnin: tuple[int | str, ...] = ()
    thresholds: tuple[dict, ...] = ()
    bootstrap: int = 1000
    compile: str = "none"
    refine: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "SubspaceSpec":
        dims = d.get("dims", ())
        if isinstance(dims, dict):  # log-spaced, rounded, deduplicated
            lo, hi, num = math.log(dims["min"]), math.log(dims["max"]), dims["num"]
            dims = sorted({round(math.exp(lo + i * (hi - lo) / max(num - 1, 1))) for i in range(num)})
        return cls(**dict(d, kinds=tuple(d.get("kinds", ())), dims=tuple(sorted(dims)),
                          burnin=tuple(d.get("burnin", ())), thresholds=tuple(d.get("thresholds", ()))))

    def seed_blocks(self) -> list[tuple[int, ...]]:
        """The runs 0..seeds-1 of each point in blocks of `seeds_per_job`, one sweep job each (seed_blocks)."""
        return seed_blocks(tuple(range(self.seeds or 0)), self.seeds_per_job)

    def sweep_dims(self, kind: str, sched: "Schedule") -> list[int]:
        """The configured dims one kind trains: a lottery subspace has at most as many directions as the
        trajectory has displacements θ_s − θ_0 (T − 1 for T checkpoints), so larger d are left out."""
        T = len(sched.checkpoints)
        return [d for d in self.dims if kind != "lottery" or d < T]

    def anchors(self, sched: "Schedule") -> list[tuple[str, int]]:
        """(kind, t) of each sweep job: random and lottery at t = 0, burn-in at each t."""
        spe = sched.steps_per_epoch
        return [(k, t) for k in self.kinds for t in
                ([parse_duration(b, spe) for b in self.burnin] if k == "burnin" else [0])]


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    model: ModelSpec
    seeds: tuple[int, ...]
    train: TrainSpec
    checkpoints: CheckpointSpec
    imp: ImpSpec | None = None
    subspace: SubspaceSpec | None = None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> "Experiment":
        t = dict(d["train"], betas=tuple(d["train"]["betas"]), milestones=tuple(d["train"]["milestones"]))
        m = dict(d["model"])
        if "widths" in m:
            m["widths"] = tuple(m["widths"])
        c = dict(d["checkpoints"], steps=tuple(d["checkpoints"]["steps"]))
        imp = None
        if "imp" in d:
            rewind = d["imp"].get("rewind", 0)
            imp = ImpSpec(**dict(d["imp"], seeds=tuple(d["imp"].get("seeds", d.get("seeds", ()))),
                                 baselines=tuple(d["imp"].get("baselines", ())),
                                 rewind=tuple(rewind) if isinstance(rewind, list) else rewind))
        sub = SubspaceSpec.from_dict(d["subspace"]) if "subspace" in d else None
        return cls(name=name, dataset=d["dataset"], model=ModelSpec(**m), seeds=tuple(d.get("seeds", ())),
                   train=TrainSpec(**t), checkpoints=CheckpointSpec(**c), imp=imp, subspace=sub, raw=d)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, **self.raw}, sort_keys=True)

    # stage -> the sections its jobs read. subspace: one sweep job (one d of one kind and t, its d a wildcard);
    # refine: a refinement plan; tickets: IMP levels as axial subspaces (read from the imp tables)
    STAGE_SECTIONS = {"dense": (), "imp": ("imp",), "subspace": ("subspace",),
                      "refine": ("subspace",), "analysis": ("subspace",), "hessian": ("hessian",),
                      "hessian_imp": ("hessian", "imp"), "scores": ("scores",), "tickets": ()}
    # Keys that decide which jobs exist, or reach a job as an option or an input file of its own, not what
    # one job computes: no job's spec holds them, so growing them (more levels, seeds, baselines, burn-in
    # steps, dims) plans only the new jobs. config.stage_specs keeps them for DVC, whose stages run every job.
    JOB_SET_KEYS = {"imp": ("seeds", "levels", "baselines", "instability", "seeds_per_job"),
                    "subspace": ("kinds", "burnin", "dims", "seeds", "seeds_per_job")}
    # subspace keys each subspace stage does not read
    SUBSPACE_UNREAD = {"subspace": ("thresholds", "bootstrap", "refine"), "refine": ("thresholds", "bootstrap"),
                       "analysis": ()}

    def for_stage(self, stage: str, rewind: int | str | None = None) -> "Experiment":
        """The experiment as one stage's jobs see it: without the other stages' sections and the keys no job
        of the stage reads, the IMP rewind points explicit checkpoints. Jobs take this as their spec (a
        Snakemake param), so an edit reruns exactly the jobs whose output it changes. `rewind` (one of
        imp.rewinds(), as written) is the one rewind point of an IMP chain's jobs: their spec holds that point
        only, the spec an experiment with that single point gives them."""
        keep = self.STAGE_SECTIONS[stage]
        # jobs are per seed: the list of seeds is not part of what any one job computes
        if stage == "imp" and self.imp and self.imp.data_diet:
            keep += ("scores",)  # the diet's subset is chosen by the scores
        raw = {k: v for k, v in self.raw.items()
               if k not in ("imp", "subspace", "hessian", "scores", "seeds") or k in keep}
        for section, keys in self.JOB_SET_KEYS.items():
            if section in raw and stage != "analysis":
                raw[section] = {k: v for k, v in raw[section].items() if k not in keys}
        if "subspace" in raw:
            raw["subspace"] = {k: v for k, v in raw["subspace"].items() if k not in self.SUBSPACE_UNREAD[stage]}
        # only dense runs evaluate at checkpoints, and the default leaves every spec as it was before the key
        if stage != "dense" or raw["checkpoints"].get("evaluate", True):
            raw["checkpoints"] = {k: v for k, v in raw["checkpoints"].items() if k != "evaluate"}
        if self.imp is not None:
            points = self.imp.rewinds()
            if rewind is not None:
                if rewind not in points:
                    raise ConfigError(f"experiment {self.name} has no rewind point {rewind!r}; its points: {list(points)}")
                points = (rewind,)
                if "imp" in raw:
                    raw["imp"] = dict(raw["imp"], rewind=points[0])
            steps = list(raw["checkpoints"]["steps"])
            steps += [k for k in points if k not in steps]
            raw["checkpoints"] = dict(raw["checkpoints"], steps=steps)
        return Experiment.from_dict(self.name, raw)

    @classmethod
    def from_json(cls, text: str) -> "Experiment":
        d = json.loads(text)
        return cls.from_dict(d.pop("name"), d)

    def check(self, n_train: int) -> None:
        """Cross-field rules the schema cannot express, with the dataset's training-set size known."""
        from sublevel import models

        where = f"experiments.{self.name}"
        try:
            models.check_kwargs(self.model.name, self.model.kwargs())
        except TypeError as e:
            raise ConfigError(f"config error at {where}.model: {e}") from None
        if self.train.schedule != "step" and self.train.milestones:
            raise ConfigError(f"config error at {where}.train.milestones: only used with schedule: step")
        if (D := self.num_params()) > MAX_PARAMS:
            raise ConfigError(f"config error at {where}.model: {self.model.name} {self.model.kwargs()} has "
                              f"D = {D:,} parameters; the flat parameter vector holds at most {MAX_PARAMS:,}")
        sched = Schedule.resolve(self, n_train)
        if self.subspace:
            self._check_subspace(sched)
        for section, steps in (("hessian", self.hessian_steps(sched)), ("scores", self.score_steps(sched))):
            if missing := sorted(set(steps) - set(sched.checkpoints)):
                raise ConfigError(f"config error at {where}.{section}.steps: {missing} are not stored "
                                  f"checkpoints; stored steps: {list(sched.checkpoints)}")
        if self.imp and self.imp.data_diet:
            if len(sched.rewinds) > 1:
                raise ConfigError(f"config error at {where}.imp.rewind: a data diet pre-trains up to one rewind "
                                  f"point; {list(self.imp.rewinds())} are several")
            self.diet_score_step(sched)
        if self.imp and (missing := sorted(set(self.imp.seeds) - set(self.seeds))):
            raise ConfigError(f"config error at {where}.imp.seeds: {missing} are not dense seeds {list(self.seeds)}")


    def hessian_steps(self, sched: "Schedule") -> list[int]:
        h = self.raw.get("hessian")
        if h is None:
            return []
        if "steps" not in h:
            return list(sched.checkpoints)
        return sorted({parse_duration(s, sched.steps_per_epoch) for s in h["steps"]})

    def score_steps(self, sched: "Schedule") -> list[int]:
        s = self.raw.get("scores")
        return sorted({parse_duration(t, sched.steps_per_epoch) for t in s["steps"]}) if s else []

    def diet_score_step(self, sched: "Schedule") -> int | None:
        """The checkpoint whose scores choose the data diet's subset (None for a random subset)."""
        diet, where = self.imp.data_diet, f"config error at experiments.{self.name}.imp.data_diet"
        if diet["keep"] == "random":
            return None
        steps = self.score_steps(sched)
        if not steps:
            raise ConfigError(f"{where}: keep {diet['keep']!r} needs a scores section to rank examples by")
        if "step" not in diet:
            return steps[-1]
        step = parse_duration(diet["step"], sched.steps_per_epoch)
        if step not in steps:
            raise ConfigError(f"{where}.step: {step} is not one of scores.steps {steps}")
        return step

    def num_params(self) -> int:
        """D, counted on torch's meta device: shapes only, nothing allocated (a config may ask for 10^12)."""
        import torch

        from sublevel import datasets, models

        shape, classes = datasets.SHAPES[self.dataset]
        with torch.device("meta"):
            return models.Layout.of(models.build_spec(self.model, shape, classes)).D

    def _check_subspace(self, sched: "Schedule") -> None:
        where, sub = f"config error at experiments.{self.name}.subspace", self.subspace
        D = self.num_params()
        if sub.dims[-1] > D:
            raise ConfigError(f"{where}.dims: d = {sub.dims[-1]} exceeds D = {D}, the model's parameter count")
        if sub.dense_seed not in self.seeds:
            raise ConfigError(f"{where}.dense_seed: {sub.dense_seed} is not a dense seed {list(self.seeds)}")
        for kind, t in sub.anchors(sched):
            if t not in sched.checkpoints:
                raise ConfigError(f"{where}.burnin: step {t} is not a stored checkpoint; stored steps: "
                                  f"{list(sched.checkpoints)}")
        if "burnin" in sub.kinds and not sub.burnin:
            raise ConfigError(f"{where}.burnin: kind burnin needs at least one burn-in step")


MAX_PARAMS = 2**31 - 1  # a sanity bound, not a kernel's: θ alone is then 8 GiB of float32, and every checkpoint,
# IMP level and ensemble member holds another copy; the seed papers' networks have D < 10^6 (ResNet-20: 0.27 M)

# DVC stage -> the Snakemake stages whose specs decide its jobs (Experiment.for_stage)
DVC_STAGES = {"train": ("dense", "scores"), "imp": ("imp",), "subspace": ("subspace", "refine"),
              "analysis": ("analysis", "hessian", "hessian_imp")}


def stage_specs(config: dict[str, Any]) -> dict[str, dict]:
    """What each DVC stage's jobs see of a validated config, so DVC reruns a stage only when that changes:
    an edit to thresholds reruns the analysis, not training. The train stage also sees device and data."""
    out = {}
    for dvc_stage, stages in DVC_STAGES.items():
        spec = {"device": config["device"], "data": config["data"]} if dvc_stage == "train" else {}
        for name in sorted(config["experiments"]):
            exp = experiment(config, name)
            present = {"dense": True, "scores": "scores" in exp.raw, "imp": exp.imp is not None,
                       "subspace": exp.subspace is not None,
                       "refine": exp.subspace is not None, "analysis": exp.subspace is not None,
                       "hessian": "hessian" in exp.raw, "hessian_imp": "hessian" in exp.raw and exp.imp is not None}
            parts = {s: json.loads(exp.for_stage(s).to_json()) for s in stages if present[s]}
            if parts:  # for_stage leaves out what decides which jobs exist (the seed lists, JOB_SET_KEYS)
                seeds = list(exp.imp.seeds) if dvc_stage == "imp" else list(exp.seeds)
                jobs = {section: {k: exp.raw[section][k] for k in keys if k in exp.raw[section]}
                        for section, keys in exp.JOB_SET_KEYS.items() if section in exp.raw}
                spec[name] = dict(parts, seeds=seeds, jobs=jobs)
        out[dvc_stage] = spec
    return out


def experiment(config: dict[str, Any], name: str) -> Experiment:
    try:
        return Experiment.from_dict(name, config["experiments"][name])
    except KeyError:
        raise ConfigError(f"no experiment {name!r}; the config has {sorted(config['experiments'])}") from None


@dataclass(frozen=True)
class Schedule:
    """An experiment's durations resolved to steps, once the dataset size is known."""

    steps_per_epoch: int
    total: int
    warmup: int
    milestones: tuple[int, ...]
    eval_every: int
    checkpoints: tuple[int, ...]
    rewinds: tuple[int, ...] = (0,)  # the IMP rewind steps, in the config's order
    evaluate_checkpoints: bool = True

    @property
    def rewind(self) -> int:
        """The rewind step of an experiment (or an IMP job's spec) with one rewind point."""
        if len(self.rewinds) != 1:
            raise ValueError(f"{len(self.rewinds)} rewind points {list(self.rewinds)}: ask for Schedule.rewinds")
        return self.rewinds[0]

    @classmethod
    def resolve(cls, exp: Experiment, n_train: int) -> "Schedule":
        spe = n_train // exp.train.batch_size
        if spe < 1:
            raise ConfigError(f"config error at experiments.{exp.name}.train.batch_size: "
                              f"{exp.train.batch_size} exceeds the {n_train} training examples")
        total = parse_duration(exp.train.steps, spe)
        ck = exp.checkpoints
        steps = {0, total} | {parse_duration(s, spe) for s in ck.steps}
        if ck.log_spaced:
            steps |= {round(math.exp(i * math.log(total) / max(ck.log_spaced - 1, 1))) for i in range(ck.log_spaced)}
        every = parse_duration(ck.every, spe)
        if every:
            steps |= set(range(0, total + 1, every))
        beyond = sorted(s for s in steps if s > total)
        if beyond:
            raise ConfigError(f"config error at experiments.{exp.name}.checkpoints.steps: {beyond} beyond the "
                              f"last step {total}")
        rewinds = tuple(parse_duration(k, spe) for k in exp.imp.rewinds()) if exp.imp else (0,)
        for k, written in zip(rewinds, exp.imp.rewinds() if exp.imp else ()):
            if k >= total:
                raise ConfigError(f"config error at experiments.{exp.name}.imp.rewind: step {k} "
                                  f"({written}) is not before the end of training at step {total}")
        if len(set(rewinds)) < len(rewinds):
            raise ConfigError(f"config error at experiments.{exp.name}.imp.rewind: {list(exp.imp.rewinds())} "
                              f"name the same step twice (steps {list(rewinds)})")
        steps |= set(rewinds)  # the trajectory always holds the rewind points
        return cls(steps_per_epoch=spe, total=total, warmup=parse_duration(exp.train.warmup, spe),
                   milestones=tuple(sorted(parse_duration(m, spe) for m in exp.train.milestones)),
                   eval_every=parse_duration(exp.train.eval_every, spe), checkpoints=tuple(sorted(steps)),
                   rewinds=rewinds, evaluate_checkpoints=ck.evaluate)

    def lr_factor(self, step: int, schedule: str, gamma: float) -> float:
        """Linear warmup from 0, then constant, step decay at milestones, or cosine to 0 at the end."""
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if schedule == "step":
            return warm * gamma ** sum(step >= m for m in self.milestones)
        if schedule == "cosine":
            span = max(self.total - self.warmup, 1)
            progress = min(max(step - self.warmup, 0) / span, 1.0)
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        return warm

    def eval_steps(self) -> set[int]:
        """The steps a dense run evaluates the full train and test sets at: every eval_every, the last, and the
        checkpoints unless checkpoints.evaluate is off."""
        return (set(range(0, self.total + 1, self.eval_every)) | {self.total}
                | (set(self.checkpoints) if self.evaluate_checkpoints else set()))
