"""The `sublevel` command: what Snakemake rules call, and what a user queries with."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _prepare_data(args) -> None:
    from sublevel import datasets

    spec = json.loads(args.spec) if args.spec else {}
    datasets.prepare(args.dataset, args.out, root=spec.get("root", "data/raw"), download=spec.get("download", False),
                     **({"mnist1d_samples": spec["mnist1d_samples"]} if args.dataset == "mnist1d" and
                        "mnist1d_samples" in spec else {}))
    print(f"wrote {args.out}")


def _train(args) -> None:
    import torch

    from sublevel import datasets, models, storage, trajectory
    from sublevel.config import Experiment
    from sublevel.training import pick_device, seed_everything, train

    exp = Experiment.from_json(args.spec)
    seed_everything(args.threads)
    device = pick_device(args.device)
    data = datasets.load(args.data, device)
    data_seed = args.seed if args.data_seed is None else args.data_seed
    print(f"training {exp.name} seed={args.seed} data_seed={data_seed} on {device} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)", file=sys.stderr)
    model, run = train(exp, data, args.seed, data_seed, device, progress=not args.quiet)
    attrs = dict(experiment=exp.name, seed=args.seed, data_seed=data_seed, dataset=exp.dataset, model=exp.model.name,
                 D=models.Layout.of(model).D, diverged=run.diverged, seconds=run.seconds, device=str(device),
                 torch=torch.__version__, spec=json.loads(exp.to_json()), layout=models.Layout.of(model).to_attrs(),
                 buffer_names=models.buffer_names(model))
    trajectory.write(args.trajectory, steps=run.steps, params=run.params, buffers=run.buffers, attrs=attrs)
    storage.write_table("train", run.rows, args.table)
    last = {r["split"]: r for r in run.rows[-2:]}
    status = "DIVERGED" if run.diverged else "done"
    print(f"{status} in {run.seconds:.1f}s: {len(run.steps)} checkpoints, "
          + ", ".join(f"{s} loss {r['loss']:.4f} acc {r['accuracy']:.4f}" for s, r in last.items()), file=sys.stderr)


def _query(args) -> None:
    import duckdb
    import polars as pl

    from sublevel import catalog

    root = Path(args.root) if args.root else None
    try:
        df = catalog.query(args.sql, root)
    except duckdb.Error as e:
        sys.exit(f"sublevel query: {e}")
    if args.format == "csv":
        sys.stdout.write(df.write_csv())
    elif args.format == "json":
        sys.stdout.write(df.write_json() + "\n")
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                       fmt_str_lengths=120, tbl_width_chars=250, tbl_formatting="ASCII_FULL_CONDENSED"):
            print(df)


def _views(args) -> None:
    from sublevel import catalog

    print("\n".join(catalog.view_statements(Path(args.root) if args.root else None)))


def _check_config(args) -> None:
    from sublevel import config

    cfg = config.load(args.configfile)
    for name in cfg["experiments"]:
        exp = config.experiment(cfg, name)
        print(f"{name}: {exp.dataset} / {exp.model.name} {exp.model.kwargs() or ''}, seeds {list(exp.seeds)}, "
              f"steps {exp.train.steps}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sublevel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare-data", help="build a dataset's Zarr store")
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="Zarr store to write")
    s.add_argument("--spec", help="the config's `data` section as JSON")
    s.set_defaults(func=_prepare_data)

    s = sub.add_parser("train", help="dense training of one (experiment, seed) with a checkpointed trajectory")
    s.add_argument("--spec", required=True, help="the validated experiment as JSON")
    s.add_argument("--seed", type=int, required=True, help="initialisation seed")
    s.add_argument("--data-seed", type=int, help="data-order seed (default: the init seed)")
    s.add_argument("--data", required=True, help="dataset Zarr store")
    s.add_argument("--trajectory", required=True, help="Zarr group to write")
    s.add_argument("--table", required=True, help="Parquet file of the `train` table to write")
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_train)

    s = sub.add_parser("query", help="run SQL (DuckDB) over every results table")
    s.add_argument("sql")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--root", help="project root (default: found from the current directory)")
    s.set_defaults(func=_query)

    s = sub.add_parser("views", help="print the CREATE VIEW statements, e.g. for the duckdb shell")
    s.add_argument("--root", help="project root (default: found from the current directory)")
    s.set_defaults(func=_views)

    s = sub.add_parser("check-config", help="validate a config file and summarise its experiments")
    s.add_argument("configfile")
    s.set_defaults(func=_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from sublevel.config import ConfigError
    from sublevel.datasets import DataError

    try:
        args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as e:
        print(f"sublevel {args.command}: {e}", file=sys.stderr)
        return 2
    return 0
