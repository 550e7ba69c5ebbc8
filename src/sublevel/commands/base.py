"""What several commands share: the training jobs' options and setup, the results commands' `--root`, the
terminal's table format, and the empty outputs of a skipped job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def job(sub, name: str, help: str, func, stage) -> argparse.ArgumentParser:
    """A command that trains or evaluates on a device, for the jobs of `stage`: the options `setup` reads."""
    s = sub.add_parser(name, description=help)  # a job step: listed apart from the user's commands (cli)
    spec_option(s, stage)
    s.add_argument("--data", required=True, help="dataset Zarr store")
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    s.set_defaults(func=func)
    return s


def spec_option(s: argparse.ArgumentParser, stage) -> None:
    """--spec, read as the jobs of `stage` (a sublevel.stages name, or a function of the parsed options giving
    it) see it: `experiment`."""
    s.add_argument("--spec", required=True, type=spec_text,
                   help="the experiment as the job's stage sees it (sublevel.stages): a JSON file (as the rules "
                        "pass it), or the JSON itself")
    s.set_defaults(stage=stage)


def experiment(args):
    """The job's spec, typed as its stage's jobs see it: reading a key the stage does not declare raises."""
    from sublevel.config import Experiment
    from sublevel.stages import STAGES

    return Experiment.from_json(args.spec, STAGES[args.stage(args) if callable(args.stage) else args.stage])


def spec_text(value: str) -> str:
    """--spec: the JSON text, read from the file `value` names unless `value` is JSON already."""
    return value if value.lstrip().startswith("{") else Path(value).read_text()


def setup(args):
    """The experiment, device and on-device dataset every training command starts from."""
    from sublevel import datasets
    from sublevel.runtime import pick_device, seed_everything

    exp = experiment(args)
    device = pick_device(args.device)
    seed_everything(args.threads, device)
    data = datasets.load(args.data, device, exp.inputs or "standardise")
    return exp, device, datasets.hold_out(data, exp.validation) if exp.validation else data


def results_parent() -> argparse.ArgumentParser:
    """The option of every command that reads the results tables."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--root", type=Path, help="project root (default: found from the current directory)")
    p.add_argument("--results", metavar="DIR",
                   help="the results root under the project, as a config's `results` key names it "
                        "(default: results; config/smoke.yaml writes results/smoke)")
    return p


def say(line: str) -> None:
    print(line, file=sys.stderr)


def say_damage(found) -> None:
    if line := found.damage_line():
        say(line)


def plain_tables():
    """polars printing for the terminal: every row and column, column names never cut (a wide table is wide),
    no shape or dtype lines, ASCII borders."""
    import polars as pl

    return pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                     fmt_str_lengths=120, tbl_width_chars=-1, tbl_formatting="ASCII_FULL_CONDENSED")


def write_skipped(args, reason: str, index: int | None = None) -> None:
    """Every output of a job that has nothing to compute from (a diverged dense run upstream), or with `index`
    the outputs of that one seed of a per-seed job: tables with no rows and stores with no arrays, each carrying
    the reason, so that Snakemake sees the job done, the `skipped` view lists it, and every reader downstream
    skips in turn. `args.outputs` maps each output option to what it holds (zarr, plan or a table's name)."""
    from sublevel import storage

    for arg, kind in args.outputs.items():
        files = (lambda v: v if isinstance(v, list) else [v])(getattr(args, arg))
        for path in files if index is None else [files[index]]:
            if kind == "zarr":
                storage.write_skipped_store(path, reason)
            elif kind == "plan":  # a refinement plan that adds nothing: the sweep stops here
                with storage.atomic_path(path) as tmp:
                    tmp.write_text(json.dumps({"dims": [], "bracket": None, "success": {}, "reason": reason,
                                               storage.SKIPPED_KEY: reason}, indent=1))
            else:
                storage.write_skipped_table(kind, path, reason)
