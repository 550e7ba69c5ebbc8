"""Typed views of the validated config.

The JSON Schema (workflow/schemas/config.schema.yaml) is the single definition of what a config may hold and of
its defaults; :func:`validate` applies it (through snakemake.utils.validate) and turns the first violation into
one line naming the key. The dataclasses below only give the validated dict names and types, as OpenLTH's
hyperparameter classes do; what a key means when absent is the schema's (no dataclass defaults), and a job's
view of its spec (sublevel.stages) raises on reading a key its stage does not read. It is longer than the other
modules because it is the one typed config: a dataclass per section and the cross-field checks of the experiment
they make up, declarative and in one place (the schedule is sublevel.schedule, each stage's slice of a spec
sublevel.stages).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sublevel import paths
from sublevel.errors import ConfigError
from sublevel.kinds import KINDS
from sublevel.schedule import Schedule, parse_duration


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
    _refuse_unsafe_values(config)
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
        exp.check(exp.trained_on(train_size(exp.dataset, config["data"])))
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


MAX_VALUES = 100_000  # keys and values in a config, counted with YAML aliases expanded (the presets: < 1,000)
MAX_INT = 2**63 - 1   # Parquet's int64, and torch's seeds


def _expanded_sizes(node, sizes: dict[int, int]) -> int:
    """How many keys and values `node` holds with every YAML alias expanded, each shared container counted
    once per use but walked once (a 1 KB alias bomb expands to 10^8 values)."""
    if not isinstance(node, (dict, list)):
        return 1
    if id(node) not in sizes:
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        sizes[id(node)] = 1 + sum(_expanded_sizes(c, sizes) for c in children)
    return sizes[id(node)]


def _refuse_unsafe_values(config: dict) -> None:
    """What the schema's bounds cannot refuse, each in one line naming the key: a config that expands past
    MAX_VALUES through YAML aliases (refused before anything walks the expanded tree); NaN and infinities
    (every comparison with NaN is false, so a NaN passes every bound); integers beyond int64; and a newline or
    other control character in a key or string (a regex `$` matches before a final newline, and such a value
    breaks file names and shell lines)."""
    sizes: dict[int, int] = {}
    if _expanded_sizes(config, sizes) > MAX_VALUES:
        where, node = [], config
        while big := [k for k, v in (node.items() if isinstance(node, dict) else enumerate(node))
                      if isinstance(v, (dict, list)) and sizes[id(v)] > MAX_VALUES]:
            where.append(big[0])
            node = node[big[0]]
        raise ConfigError(f"config error at {_key_path(where)}: expands to {sizes[id(node)]:,} values through YAML "
                          f"aliases; a config holds at most {MAX_VALUES:,}")
    seen: set[int] = set()
    stack: list[tuple[Any, list]] = [(config, [])]
    while stack:
        node, where = stack.pop()
        if id(node) in seen:  # a shared (aliased) container: checked once
            continue
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            at = where + [key]
            if isinstance(key, str) and _has_control(key):
                raise ConfigError(f"config error at {_key_path(where + [repr(key)])}: {key!r} holds a newline or "
                                  "control character")
            if isinstance(value, str) and _has_control(value):
                raise ConfigError(f"config error at {_key_path(at)}: {value!r} holds a newline or control character")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config error at {_key_path(at)}: {value} is not a finite number")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
                raise ConfigError(f"config error at {_key_path(at)}: {value} is beyond a 64-bit integer")
            if isinstance(value, (dict, list)):
                stack.append((value, at))


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _describe(error) -> str:
    if error.validator == "oneOf" and error.context:
        # a duration: say what is allowed rather than both branches' complaints
        return f"{error.instance!r} is not valid: {error.schema.get('description', error.message)}"
    return error.message


class _StrictLoader(yaml.SafeLoader):
    """YAML as PyYAML's safe loader reads it, except that a key given twice in one mapping is an error (PyYAML
    keeps the last silently: a second `experiments:` would drop the first)."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=True)
            if key in keys:
                mark = key_node.start_mark
                raise ConfigError(f"config error in {mark.name}: the key {key!r} is given twice in one mapping "
                                  f"(line {mark.line + 1}); YAML would keep only the last")
            keys.add(key)
        return super().construct_mapping(node, deep)


def read_file(path: str | Path) -> dict[str, Any]:
    """A config file as YAML, unvalidated; a file that is not UTF-8 or not YAML, or that gives a key twice,
    is one ConfigError naming where it broke."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"config error in {path}: not UTF-8 text (byte {e.start}, line {line}: "
                          f"{data[e.start:e.start + 1]!r})") from None
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            raw = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise ConfigError(f"config error in {path}: not valid YAML at line {mark.line + 1}, column "
                          f"{mark.column + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config error in {path}: not valid YAML: {e}") from None
    return raw or {}


def typed(value: Any) -> Any:
    """A `--config key={...}` value with its leaves read as YAML: Snakemake's parser reads a mapping with YAML's
    BaseLoader, which leaves every leaf a string ("0.1", "true"), so that a nested override such as
    `--config 'experiments={smoke: {train: {lr: 0.1}}}'` would fail validation as not a number."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return yaml.safe_load(value) if isinstance(value, str) else value


def load(path: str | Path) -> dict[str, Any]:
    """A config file, read (read_file) and validated."""
    return validate(read_file(path))


class Undeclared:
    """A key a job's spec does not hold because its stage does not read it (sublevel.stages): reading it is an
    error that names the stage and the key, never a default standing in for the config's value."""
    __slots__ = ("why",)

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return "<undeclared>"


class Section:
    """A typed config section. A field holding `Undeclared` raises ConfigError when read."""

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if type(value) is Undeclared:
            raise ConfigError(value.why)
        return value


@functools.cache
def schema_keys() -> dict[str, tuple[dict, bool]]:
    """Every experiment key of the config schema, sections too, dotted: its schema (a $ref resolved) and
    whether the section holding it requires it."""
    schema = yaml.safe_load(paths.schema_file().read_text())
    defs, out = schema.get("$defs", {}), {}
    resolve = lambda node: defs[node["$ref"].split("/")[-1]] if "$ref" in node else node  # noqa: E731

    def walk(node, prefix):
        node = resolve(node)
        for key, sub in node.get("properties", {}).items():
            # a default beside the $ref counts first
            out[prefix + key] = ({**resolve(sub), **{k: v for k, v in sub.items() if k != "$ref"}},
                                 key in node.get("required", ()))
            walk(sub, prefix + key + ".")

    walk(schema["properties"]["experiments"]["additionalProperties"], "")
    return out


@functools.cache
def _absent_values() -> dict[str, Any]:
    """What each experiment key means when a config leaves it out, by the schema: its default, where the
    validation has not filled it in (Snakemake's validator fills no default behind a $ref), else None; a
    required key has no such meaning."""
    return {key: _tuples(node.get("default")) for key, (node, required) in schema_keys().items() if not required}


def schema_default(key: str) -> Any:
    """The schema's default of an experiment key (dotted), None where it has none."""
    return _absent_values().get(key)


# What an absent key means where the schema gives it no default: keys that older specs (and configs) do not
# hold, so that the specs of finished jobs stay as they were
WHEN_ABSENT = {"subspace.anchor": "dense_seed", "subspace.betas": (0.9, 0.999)}


def _tuples(value):
    """A YAML list as a tuple (the dataclasses are frozen and hashable), recursively; anything else as it is."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class _Reader:
    """Builds the typed sections from a validated config's experiment (stage None) or a job's spec (the stage
    whose spec it is): a key the mapping lacks means what the schema says of its absence (WHEN_ABSENT where it
    says nothing), or is `Undeclared` when the stage does not read it."""
    def __init__(self, name: str, stage=None):
        self.name, self.stage = name, stage

    def absent(self, key: str):
        if self.stage is not None and not self.stage.declares(key):
            return Undeclared(f"experiment {self.name}: stage {self.stage.name} does not read {key}; a job reads "
                              f"only what its stage declares (sublevel.stages)")
        if key in WHEN_ABSENT:
            return WHEN_ABSENT[key]
        if key in _absent_values():
            return _absent_values()[key]
        return Undeclared(f"experiment {self.name}: the spec holds no {key}")

    def value(self, d: dict, key: str, prefix: str = "", convert=_tuples):
        """`key`'s value in the mapping `d` (at `prefix`) through `convert`, or `absent`."""
        return convert(d[key]) if key in d else self.absent(f"{prefix}.{key}" if prefix else key)

    def section(self, cls, d: dict, prefix: str, **convert):
        """`cls` from the mapping `d` at `prefix`: each field its key's `value`."""
        return cls(**{f.name: self.value(d, f.name, prefix, convert.get(f.name, _tuples)) for f in fields(cls)})

    def optional(self, cls, d: dict | None, prefix: str, **convert):
        """An optional section: None where the config has none, else `section`."""
        return None if d is None else self.section(cls, d, prefix, **convert)


@dataclass(frozen=True)
class ModelSpec(Section):
    name: str
    widths: tuple[int, ...] | None
    width: int | None
    init: str | None   # models.INITS; None: PyTorch's default (a spec without the key is unchanged)

    def kwargs(self) -> dict[str, Any]:
        """The builder's options: everything but the name and the initialisation (models.initialise)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("name", "init") and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class TrainSpec(Section):
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
    precision: str
    channels_last: bool
    compile: str


@dataclass(frozen=True)
class CheckpointSpec(Section):
    steps: tuple[int | str, ...]
    log_spaced: int
    every: int | str
    evaluate: bool


def seed_blocks(seeds: tuple[int, ...], per_job: int | None) -> list[tuple[int, ...]]:
    """`seeds` in consecutive blocks of `per_job` (all in one when None), one job each: appending seeds leaves
    every full block, and so every finished job of it, as it was. A run depends only on its own seed, so the
    blocking changes no result."""
    k = per_job or len(seeds) or 1
    return [seeds[i:i + k] for i in range(0, len(seeds), k)]


@dataclass(frozen=True)
class DataDietSpec(Section):
    """Paul et al. 2022: pre-train to the rewind step on the `fraction` of examples to `keep` by `score`."""
    keep: str                 # easiest, hardest or random
    fraction: float
    score: str
    step: int | str | None    # the scored checkpoint (None: the last scored step)


@dataclass(frozen=True)
class FractionSweepSpec(Section):
    """Paul et al. 2023's largest prune per level: `fractions` of level ℓ's remaining weights, at each ℓ in
    `levels`, by magnitude (and at random among them, `random`); connected when the test-error barrier is at
    most `tolerance`."""
    fractions: tuple[float, ...]
    random: bool
    tolerance: float
    levels: tuple[int, ...]   # which jobs exist: the plan's, absent from a job's spec

    def methods(self) -> tuple[str, ...]:
        return ("magnitude", "random") if self.random else ("magnitude",)


@dataclass(frozen=True)
class ImpSpec(Section):
    fraction: float
    output_fraction: float | None
    rewind: int | str | tuple[int | str, ...]
    scope: str
    alphas: int
    matching_tolerance: float
    data_diet: DataDietSpec | None
    fraction_sweep: FractionSweepSpec | None
    eval_every: int | str | None   # the validation curve early stopping reads (None: final values only)
    # which jobs exist, not what one computes: the plan's, absent from a job's spec (stages.JOB_SET_KEYS)
    levels: int
    seeds: tuple[int, ...]        # absent from the config: the experiment's dense seeds
    baselines: tuple[str, ...]
    instability: bool
    seeds_per_job: int

    def seed_blocks(self) -> list[tuple[int, ...]]:
        """`seeds` in blocks of `seeds_per_job`, one IMP job each (seed_blocks)."""
        return seed_blocks(self.seeds, self.seeds_per_job)

    def rewinds(self) -> tuple[int | str, ...]:
        """The rewind points as written (one, or a list: one chain per seed and point)."""
        return self.rewind if isinstance(self.rewind, tuple) else (self.rewind,)


@dataclass(frozen=True)
class Threshold:
    """A sublevel set: success is a final `metric` >= value (accuracy) or <= value (loss). The one success
    predicate: `met` for one value, `lower_is_better` for the same comparison over a column (analysis)."""
    metric: str
    value: float

    @property
    def lower_is_better(self) -> bool:
        return self.metric.endswith("loss")

    def met(self, x: float | None) -> bool:
        """Whether `x` is in the sublevel set; an unknown value (None, NaN) is not."""
        if x is None or math.isnan(x):
            return False
        return x <= self.value if self.lower_is_better else x >= self.value


@dataclass(frozen=True)
class RefineSpec(Section):
    """Adaptive refinement of a sweep's dims around P(d) = 1/2 (sweep.refine_plan)."""
    metric: str
    threshold: float
    ratio: float
    max_rounds: int

    @property
    def target(self) -> Threshold:
        """The sublevel set whose P(d) = 1/2 crossing the rounds bracket."""
        return Threshold(self.metric, self.threshold)


@dataclass(frozen=True)
class SubspaceTrain:
    """How one subspace run trains: the section's optimiser and steps with the dense eval batch size."""
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9
    steps: int = 500
    batch_size: int = 100
    eval_batch_size: int = 2048
    compile: str = "none"        # a torch.compile mode for the step's forward and backward, or "none"
    betas: tuple[float, float] = (0.9, 0.999)   # Adam's; Li et al.'s released code uses (0.9, 0.99)


def log_spaced_dims(dims: list[int] | dict) -> tuple[int, ...]:
    """subspace.dims as sorted dims: a list as written, or {min, max, num} log-spaced, rounded, deduplicated."""
    if isinstance(dims, dict):
        lo, hi, num = math.log(dims["min"]), math.log(dims["max"]), dims["num"]
        dims = {round(math.exp(lo + i * (hi - lo) / max(num - 1, 1))) for i in range(num)}
    return tuple(sorted(dims))


@dataclass(frozen=True)
class SubspaceSpec(Section):
    dense_seed: int
    projection: str
    optimizer: str
    lr: float
    momentum: float
    steps: int
    batch_size: int
    compile: str
    anchor: str    # dense_seed: every run at dense_seed's θ_t; per_run: run r at the r-th dense seed
    betas: tuple[float, float]   # Adam's
    # kinds, burn-in steps, dims and seeds decide which sweep jobs exist (one per kind, t, d and block of
    # seeds; a refinement round's d comes from its plan): absent from the specs of jobs they do not change;
    # a sweep job takes its seeds as an option
    seeds: int
    seeds_per_job: int
    kinds: tuple[str, ...]
    dims: tuple[int, ...]
    burnin: tuple[int | str, ...]
    thresholds: tuple[Threshold, ...]
    bootstrap: int
    refine: RefineSpec | None

    def training(self, eval_batch_size: int) -> SubspaceTrain:
        return SubspaceTrain(self.optimizer, self.lr, self.momentum, self.steps, self.batch_size, eval_batch_size,
                             self.compile, self.betas)

    def seed_blocks(self) -> list[tuple[int, ...]]:
        """The runs 0..seeds-1 of each point in blocks of `seeds_per_job`, one sweep job each (seed_blocks)."""
        return seed_blocks(tuple(range(self.seeds or 0)), self.seeds_per_job)

    def anchor_seeds(self, runs, dense_seeds) -> list[int]:
        """The dense seed whose run anchors each run seed: `dense_seed` for all (anchor: dense_seed), or run r
        at dense_seeds[r mod n] (anchor: per_run), so runs 0..n-1 each start from their own initialisation and
        burn-in, as every run of Larsen et al.'s code does."""
        if self.anchor == "per_run":
            return [dense_seeds[int(r) % len(dense_seeds)] for r in runs]
        return [self.dense_seed] * len(runs)

    def sweep_dims(self, kind: str, sched: Schedule) -> list[int]:
        """The configured dims one kind trains: those the kind has (kinds.Kind.max_dim; a lottery subspace
        has as many directions as the trajectory has displacements between checkpoints), larger d left out."""
        cap = KINDS[kind].max_dim(len(sched.checkpoints))
        return [d for d in self.dims if cap is None or d <= cap]

    def anchors(self, sched: Schedule) -> list[tuple[str, int]]:
        """(kind, t) of each sweep job: random and lottery at t = 0, burn-in at each t."""
        steps = [parse_duration(b, sched.steps_per_epoch) for b in self.burnin]
        return [(k, t) for k in self.kinds for t in KINDS[k].anchor_steps(steps)]


@dataclass(frozen=True)
class HessianSpec(Section):
    """Sharpness: the top_k Hessian eigenvalues by `iterations` Lanczos steps on `examples` training examples."""
    steps: tuple[int | str, ...] | None   # dense checkpoints (None: every stored one)
    examples: int
    iterations: int
    top_k: int
    imp: bool                             # also at the end of each IMP level


@dataclass(frozen=True)
class ScoresSpec(Section):
    """EL2N and GraNd at the dense checkpoints `steps`, `chunk` examples per per-example-gradient batch."""
    steps: tuple[int | str, ...]
    chunk: int


@dataclass(frozen=True)
class TheorySpec(Section):
    """The threshold dimension predicted from the landscape (sublevel.theory): the Hessian's spectral density
    at the sweep's dense run's final network, by `probes` stochastic Lanczos quadratures from `iterations`
    steps extended until they converge (or `max_iterations`), on the first `examples` training examples
    (None: all of them, the loss the sweeps' train_loss is of)."""
    probes: int
    iterations: int              # the first length; then extended by 10 steps until converged
    examples: int | None
    max_iterations: int          # the cap
    tolerance: float             # converged: one extension moves Σ τ λ/(λ + κ) by at most this, relative


@dataclass(frozen=True)
class Experiment(Section):
    """One experiment of a validated config, or of a job's spec: a section the spec does not hold is None (the
    stage's jobs see an experiment without it), a key it does not hold raises when read (Undeclared)."""
    name: str
    dataset: str
    model: ModelSpec
    seeds: tuple[int, ...]
    train: TrainSpec
    checkpoints: CheckpointSpec
    imp: ImpSpec | None
    subspace: SubspaceSpec | None
    hessian: HessianSpec | None
    scores: ScoresSpec | None
    theory: TheorySpec | None
    inputs: str | None       # datasets.INPUTS; None: standardised (a spec without the key is unchanged)
    validation: int | None   # training examples held out as a validation split (datasets.hold_out)
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any], stage=None) -> "Experiment":
        """The typed view of a validated experiment (`stage` None) or of a job's spec (a sublevel.stages.Stage)."""
        r = _Reader(name, stage)
        imp = None
        if d.get("imp") is not None:
            seeds = d["imp"].get("seeds", d["seeds"]) if "seeds" in d else None  # a spec holds neither
            imp = r.section(ImpSpec, {**d["imp"], **({} if seeds is None else {"seeds": seeds})}, "imp",
                            data_diet=lambda v: r.optional(DataDietSpec, v, "imp.data_diet"),
                            fraction_sweep=lambda v: r.optional(FractionSweepSpec, v, "imp.fraction_sweep"))
        subspace = r.optional(SubspaceSpec, d.get("subspace"), "subspace", dims=log_spaced_dims,
                              thresholds=lambda v: tuple(Threshold(**t) for t in v),
                              refine=lambda v: r.optional(RefineSpec, v, "subspace.refine"))
        sections = {key: r.optional(cls_, d.get(key), key)
                    for key, cls_ in (("hessian", HessianSpec), ("scores", ScoresSpec), ("theory", TheorySpec))}
        own = {key: r.value(d, key) for key in ("dataset", "seeds", "inputs", "validation")}
        return cls(name=name, **own, model=r.section(ModelSpec, d["model"], "model"),
                   train=r.section(TrainSpec, d["train"], "train"),
                   checkpoints=r.section(CheckpointSpec, d["checkpoints"], "checkpoints"), imp=imp,
                   subspace=subspace, **sections, raw=d)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, **self.raw}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, stage=None) -> "Experiment":
        """A job's spec (sublevel.stages.for_stage) as the stage's jobs see it."""
        d = json.loads(text)
        return cls.from_dict(d.pop("name"), d, stage)

    def trained_on(self, n_train: int) -> int:
        """How many of the dataset's `n_train` training examples the experiment trains on: all but its
        validation split. Its schedule's epochs are of these."""
        return n_train - (self.validation or 0)

    def check(self, n_train: int) -> None:
        """Cross-field rules the schema cannot express, with the dataset's training-set size known."""
        from sublevel import models

        where = f"experiments.{self.name}"
        if self.validation and n_train < self.train.batch_size:
            raise ConfigError(f"config error at {where}.validation: holding {self.validation:,} examples out "
                              f"leaves {max(n_train, 0):,} to train on, fewer than one batch of "
                              f"{self.train.batch_size}")
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
        elif self.theory:
            raise ConfigError(f"config error at {where}.theory: predicts the subspace sweeps' d*; the experiment "
                              f"has no subspace section")
        for section, steps in (("hessian", self.hessian_steps(sched)), ("scores", self.score_steps(sched))):
            if missing := sorted(set(steps) - set(sched.checkpoints)):
                raise ConfigError(f"config error at {where}.{section}.steps: {missing} are not stored "
                                  f"checkpoints; stored steps: {list(sched.checkpoints)}")
        if self.imp and self.imp.eval_every is not None and not self.validation:
            raise ConfigError(f"config error at {where}.imp.eval_every: early stopping reads the validation loss; "
                              f"hold a validation split out with {where}.validation")
        if self.imp and (fs := self.imp.fraction_sweep) and fs.levels is not None:
            if too_deep := [lv for lv in fs.levels if lv > self.imp.levels]:
                raise ConfigError(f"config error at {where}.imp.fraction_sweep.levels: {too_deep} beyond imp.levels "
                                  f"= {self.imp.levels}")
        if self.subspace and self.subspace.batch_size > n_train:
            raise ConfigError(f"config error at {where}.subspace.batch_size: {self.subspace.batch_size} exceeds the "
                              f"{n_train} training examples")
        if self.hessian and self.hessian.top_k > self.hessian.iterations:
            raise ConfigError(f"config error at {where}.hessian.top_k: {self.hessian.top_k} eigenvalues need at least "
                              f"as many Lanczos iterations; iterations is {self.hessian.iterations}")
        if self.imp and self.imp.data_diet:
            if (kept := round(self.imp.data_diet.fraction * n_train)) < self.train.batch_size:
                raise ConfigError(f"config error at {where}.imp.data_diet.fraction: {self.imp.data_diet.fraction} of "
                                  f"{n_train} examples keeps {kept}, fewer than one batch of {self.train.batch_size}")
            if len(sched.rewinds) > 1:
                raise ConfigError(f"config error at {where}.imp.rewind: a data diet pre-trains up to one rewind "
                                  f"point; {list(self.imp.rewinds())} are several")
            self.diet_score_step(sched)
        if self.imp and (missing := sorted(set(self.imp.seeds) - set(self.seeds))):
            raise ConfigError(f"config error at {where}.imp.seeds: {missing} are not dense seeds {list(self.seeds)}")


    def hessian_steps(self, sched: Schedule) -> list[int]:
        if self.hessian is None:
            return []
        if self.hessian.steps is None:
            return list(sched.checkpoints)
        return sorted({parse_duration(s, sched.steps_per_epoch) for s in self.hessian.steps})

    def score_steps(self, sched: Schedule) -> list[int]:
        s = self.scores
        return sorted({parse_duration(t, sched.steps_per_epoch) for t in s.steps}) if s else []

    def diet_score_step(self, sched: Schedule) -> int | None:
        """The checkpoint whose scores choose the data diet's subset (None for a random subset)."""
        diet, where = self.imp.data_diet, f"config error at experiments.{self.name}.imp.data_diet"
        if diet.keep == "random":
            return None
        steps = self.score_steps(sched)
        if not steps:
            raise ConfigError(f"{where}: keep {diet.keep!r} needs a scores section to rank examples by")
        if diet.step is None:
            return steps[-1]
        step = parse_duration(diet.step, sched.steps_per_epoch)
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

    def _check_subspace(self, sched: Schedule) -> None:
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
        if any(KINDS[k].burnin for k in sub.kinds) and not sub.burnin:
            raise ConfigError(f"{where}.burnin: kind burnin needs at least one burn-in step")


MAX_PARAMS = 2**31 - 1  # a sanity bound, not a kernel's: θ alone is then 8 GiB of float32, and every checkpoint,
# IMP level and ensemble member holds another copy; the seed papers' networks have D < 10^6 (ResNet-20: 0.27 M)

def experiment(config: dict[str, Any], name: str) -> Experiment:
    try:
        return Experiment.from_dict(name, config["experiments"][name])
    except KeyError:
        raise ConfigError(f"no experiment {name!r}; the config has {sorted(config['experiments'])}") from None
