"""Every path the pipeline reads or writes, in one place.

Paths are relative to the project root (the directory holding the Snakefile);
Snakemake runs jobs from there, and readers resolve them with :func:`project_root`.
Arguments may be Snakemake wildcard placeholders such as ``"{seed}"``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

RESULTS_VARIABLE = "SUBLEVEL_RESULTS"  # the results root, which the Snakefile sets from the config for every job
DEFAULT_RESULTS = Path("results")
TARGETS = Path(__file__).with_name("targets.csv")  # the seed papers' numbers, shipped (sublevel.reproduce)
SCHEMA = Path("workflow/schemas/config.schema.yaml")
SNAKEMAKE_METADATA = Path(".snakemake/metadata")  # Snakemake's record per output file: rule, start and end time


def results() -> Path:
    """The results root every path below lies under: the config's `results` key (default results/), which the
    Snakefile exports to its jobs as $SUBLEVEL_RESULTS and the results commands take as --results. A config
    whose data or experiments differ from another's names its own root (config/smoke.yaml: results/smoke), so
    running one never rewrites, and never mixes into, the other's results."""
    return Path(os.environ.get(RESULTS_VARIABLE) or DEFAULT_RESULTS)


def use_results(root: str | Path) -> None:
    """Make `root` the results root of this process and of the processes it starts: results/ or a folder under
    it, relative to the project (what the config schema allows), so that what reads results never reads
    outside it."""
    parts = Path(root).parts
    if not parts or parts[0] != DEFAULT_RESULTS.name or Path(root).is_absolute() or ".." in parts:
        raise ValueError(f"{root}: give results or a folder under it, relative to the project (e.g. results/smoke)")
    if len(parts) > 1 and parts[1] in ROOT_ENTRIES:
        raise ValueError(f"{root}: results/{parts[1]} holds the default root's own results: name another folder")
    os.environ[RESULTS_VARIABLE] = str(root)


@contextlib.contextmanager
def results_root(root: str | Path | None):
    """`use_results(root)` for the block only (None: the root as it is), then the root as it was."""
    before = os.environ.get(RESULTS_VARIABLE)
    try:
        if root is not None:
            use_results(root)
        yield
    finally:
        if before is None:
            os.environ.pop(RESULTS_VARIABLE, None)
        else:
            os.environ[RESULTS_VARIABLE] = before


# What a results root holds at its top (every path below starts with one): the jobs view tells a root's records
# from those of a root nested in it (results/smoke under results) by them.
ROOT_ENTRIES = ("data", "runs", "imp", "subspace", "scores", "tables", "figures", "logs", "metrics", "plots", "jobs",
                "specs", "summary", "tensorboard", "reproduction.csv")


def metrics_dir() -> Path:
    return results() / "metrics"  # DVC metrics: per experiment and per sweep a file, a row each in `dvc metrics show`


def summary_dir() -> Path:
    return results() / "summary"  # `sublevel summary`'s sections as CSV: the report's results list them first


def plots_dir() -> Path:
    return results() / "plots"  # DVC plots: CSV curves


def reproduction_file() -> Path:
    return results() / "reproduction.csv"  # every published target beside its measurement (the report's page)


def project_root(start: Path | None = None) -> Path:
    """The project root: $SUBLEVEL_ROOT, else the nearest ancestor of `start` (cwd) holding a Snakefile and
    workflow/. Never the checkout this package was installed from: results are read where the user is."""
    if env := os.environ.get("SUBLEVEL_ROOT"):
        return given_root(Path(env), "SUBLEVEL_ROOT=")
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if is_project(d):
            return d
    raise FileNotFoundError(f"no sublevel project (Snakefile + workflow/) at or above {here}: run from inside one, "
                            "or give --root or SUBLEVEL_ROOT")


def is_project(d: Path) -> bool:
    return (d / "Snakefile").is_file() and (d / "workflow").is_dir()


def given_root(root: Path, how: str = "--root ") -> Path:
    """A project root the user named, resolved: a project, or the working directory of a run
    (`snakemake --directory`), which holds results/. Any other directory (a project's results/, or /) would
    answer empty tables as if nothing had run: an error."""
    if not root.is_dir():
        raise FileNotFoundError(f"{how}{root}: no such directory")
    if not (is_project(root) or (root / results()).is_dir()):
        raise FileNotFoundError(f"{how}{root}: not a sublevel project (no Snakefile and workflow/, no results/ "
                                "there): give the directory that holds them")
    return root.resolve()


def schema_file() -> Path:
    """The config JSON Schema; found beside the package source so the CLI works from anywhere."""
    source = Path(__file__).resolve().parents[2] / SCHEMA
    return source if source.is_file() else project_root() / SCHEMA


def dataset_store(dataset: str) -> Path:
    return results() / "data" / f"{dataset}.zarr"


def run_dir(experiment: str, seed: str | int) -> Path:
    return results() / "runs" / str(experiment) / f"seed={seed}"


def trajectory(experiment: str, seed: str | int) -> Path:
    """Zarr group: dense parameters [T, D] at the checkpoint steps, and buffers [T, B]."""
    return run_dir(experiment, seed) / "trajectory.zarr"


def tensorboard(experiment: str, seed: str | int) -> Path:
    """TensorBoard event files of one dense run (config key `tensorboard`): `tensorboard --logdir` shows them."""
    return results() / "tensorboard" / str(experiment) / f"seed={seed}"


def job_file(name: str) -> Path:
    """What a job reads in place of long command-line words: its spec (JSON; what its stage sees of its
    experiment) or an argument file (lists of tables), named by a digest of the content, which every job with
    that content shares. Written while Snakemake plans, a dry run included."""
    return results() / "jobs" / name


def tables_dir(root: Path | None = None) -> Path:
    return (root or Path()) / results() / "tables"


def table(name: str, **partitions: str | int) -> Path:
    """One job's Parquet file: results/tables/<name>/<key=value>/.../<name>.parquet."""
    parts = [f"{k}={v}" for k, v in partitions.items()]
    return tables_dir().joinpath(name, *parts, f"{name}.parquet")


def log(stage: str, *keys: str | int) -> Path:
    return results() / "logs" / stage / ("-".join(str(k) for k in keys) + ".log")


def chain_dir(experiment: str, rewind_step: str | int, seed: str | int) -> Path:
    """One IMP chain: a dense seed's run pruned and rewound to one rewind step (imp.rewind may list several)."""
    return results() / "imp" / str(experiment) / f"rewind_step={rewind_step}" / f"seed={seed}"


def level_store(experiment: str, rewind_step: str | int, seed: str | int, stage: str, level: str | int,
                method: str | None = None) -> Path:
    """Zarr group of one IMP level (stage 'imp') or of one baseline method at it (stage 'baselines', and the
    method): per method a subgroup with mask [D] bool, weights [D], buffers [B]."""
    stage_dir = chain_dir(experiment, rewind_step, seed) / str(stage)
    return (stage_dir if method is None else stage_dir / f"method={method}") / f"level={level}.zarr"


def diet_start(experiment: str, rewind_step: str | int, seed: str | int) -> Path:
    """Zarr group: the data-diet rewind point (step, params [D], buffers [B]) that IMP rewinds to."""
    return chain_dir(experiment, rewind_step, seed) / "diet.zarr"


def scores_store(experiment: str) -> Path:
    """Zarr group: EL2N and GraNd per (checkpoint step, dense seed, training example); see sublevel.scores."""
    return results() / "scores" / f"{experiment}.zarr"


def figure(experiment: str, name: str, fmt: str = "png") -> Path:
    """Every figure is written as PNG (the report shows it) and SVG (for papers)."""
    return results() / "figures" / str(experiment) / f"{name}.{fmt}"


def sweep_dir(experiment: str, kind: str, burnin_step: str | int) -> Path:
    return results() / "subspace" / str(experiment) / f"kind={kind}" / f"burnin_step={burnin_step}"


def sweep_store(experiment: str, kind: str, burnin_step: str | int, round: str | int, d: str | int,
                block: str | int) -> Path:
    """Zarr group of one sweep job (one d of one round, one block of its run seeds): w_<d> [R, d], with the
    seeds and projection in attrs."""
    return sweep_dir(experiment, kind, burnin_step) / f"round={round}" / f"d={d}" / f"block={block}.zarr"


def refine_plan(experiment: str, kind: str, burnin_step: str | int, round: str | int) -> Path:
    """JSON: the dimensions round+1 adds around the success transition (none: refinement is done)."""
    return sweep_dir(experiment, kind, burnin_step) / f"plan-round={round}.json"


def sweep_summary(experiment: str, kind: str, burnin_step: str | int) -> Path:
    """JSON: the rounds a sweep ran, P(d) over all of them, and the final bracket around P = 1/2."""
    return sweep_dir(experiment, kind, burnin_step) / "summary.json"
