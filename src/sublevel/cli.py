"""The `sublevel` command: what Snakemake rules call, and what a user queries with."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from sublevel import schema  # pyarrow only: the figure names for argparse


def _prepare_data(args) -> None:
    from sublevel import datasets

    spec = json.loads(args.spec) if args.spec else {}
    datasets.prepare(args.dataset, args.out, root=spec.get("root", "data/raw"), download=spec.get("download", False),
                     mnist1d_samples=spec.get("mnist1d_samples", 5000))
    print(f"wrote {args.out}")


def _setup(args):
    """The experiment, device and on-device dataset every training command starts from."""
    from sublevel import datasets
    from sublevel.config import Experiment
    from sublevel.training import pick_device, seed_everything

    exp = Experiment.from_json(args.spec)
    device = pick_device(args.device)
    seed_everything(args.threads, device)
    return exp, device, datasets.load(args.data, device)


def _train(args) -> None:
    import torch

    from sublevel import models, storage, trajectory
    from sublevel.training import train

    exp, device, data = _setup(args)
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


def _chains(args, network: str | None = None):
    """The spec, dataset, device and the chains (one per --seeds) an IMP-stage command works on; `network`
    names the per-seed option holding the level store each chain builds on.

    A chain with nothing to start from (its dense run diverged before the rewind point, or its level store
    upstream was skipped for that reason) gets its own outputs written as skipped and is dropped from `args`'
    per-seed options, so the other chains of the job go on; when every chain is skipped the job is."""
    from sublevel import imp, storage, trajectory
    from sublevel.config import ConfigError

    exp, device, data = _setup(args)
    if exp.imp is None:
        raise ConfigError(f"experiment {exp.name} has no `imp` section")
    n = len(args.seeds)
    per_seed = [k for k in ("seeds", "trajectory", "table", "out", "diet", "dense", "b", network)
                if k and getattr(args, k, None) is not None]
    if bad := {f"--{k}": len(getattr(args, k)) for k in per_seed if len(getattr(args, k)) != n}:
        raise SystemExit(f"error: {n} --seeds but {bad}: give one of each per seed")
    chains, live, reason = [], [], None
    for i in range(n):
        try:
            traj = trajectory.read(args.trajectory[i])
            net = imp.Level.read(getattr(args, network)[i]) if network and getattr(args, network) else None
            diet = args.diet[i] if args.diet else None
            imp.rewind_point(exp, data, traj, diet)  # raises Skipped when there is none
        except storage.Skipped as e:
            reason = str(e)
            _write_skipped(args, reason, index=i)
            print(f"seed {args.seeds[i]}: skipped, its outputs written empty: {reason}", file=sys.stderr)
            continue
        chains.append(imp.Chain(args.seeds[i], traj, net, diet))
        live.append(i)
    if not chains:
        raise storage.Skipped(reason)
    for k in per_seed:
        setattr(args, k, [getattr(args, k)[i] for i in live])
    return exp, data, chains, device


def _report(level) -> None:
    r = level.row
    print(f"{r['method']} seed {r['seed']} level {r['level']}: sparsity {r['sparsity']:.4f} ({r['remaining']} left), "
          f"test acc {r['test_accuracy']:.4f}{' DIVERGED' if r['diverged'] else ''}", file=sys.stderr)


def _imp_level(args) -> None:
    from sublevel import imp, storage

    if args.level > 0 and not args.previous:
        raise SystemExit(f"error: level {args.level} needs --previous (the chains' level {args.level - 1} stores)")
    exp, data, chains, device = _chains(args, "previous")
    levels = imp.imp_levels(exp, data, chains, args.level, device, progress=not args.quiet)
    for lv, out, table in zip(levels, args.out, args.table):
        imp.write_levels(out, [lv])
        storage.write_table("imp", [lv.row], table)
        _report(lv)


def _imp_baselines(args) -> None:
    from sublevel import imp, storage

    exp, data, chains, device = _chains(args, "ticket")
    levels = imp.baselines(args.methods, exp, data, chains, device, progress=not args.quiet)
    k = len(args.methods)
    for i, (out, table) in enumerate(zip(args.out, args.table)):
        mine = levels[i * k:(i + 1) * k]
        imp.write_levels(out, mine)
        storage.write_table("imp", [lv.row for lv in mine], table)
        for lv in mine:
            _report(lv)


def _barrier(args) -> None:
    from sublevel import imp, storage

    exp, data, chains, device = _chains(args, "a")
    dense = [imp.Level.read(p) for p in args.dense]
    if args.kind == "instability":
        per_chain = imp.instability(exp, data, chains, dense, device, progress=not args.quiet)
    else:
        if not args.b or len(args.b) != len(chains):
            raise SystemExit("error: imp_successive needs --b, one level-l store per seed")
        per_chain = [imp.successive(exp, data, c.seed, c.network, imp.Level.read(b), d, device)
                     for c, b, d in zip(chains, args.b, dense)]
    for rows, table in zip(per_chain, args.table):
        storage.write_table("barrier", rows, table)
        for r in rows:
            print(f"{r['kind']} seed {r['seed']} level {r['level']} {r['split']}: barrier {r['barrier']:.4f}",
                  file=sys.stderr)


def _subspace_sweep(args) -> None:
    import zarr

    from sublevel import storage, subspace, trajectory

    exp, device, data = _setup(args)
    rows, coords, attrs = subspace.sweep(exp, data, trajectory.read(args.trajectory), args.kind, args.burnin_step,
                                         args.dims, args.seeds, device, progress=not args.quiet, round=args.round)
    with storage.atomic_path(args.out) as tmp:
        group = zarr.open_group(tmp, mode="w", attributes=attrs)
        for d, w in coords.items():
            group.create_array(f"w_{d}", data=w.numpy())
    storage.write_table("subspace", rows, args.table)
    for d in sorted(coords):
        accs = [r["train_accuracy"] for r in rows if r["d"] == d]
        print(f"{args.kind} t={args.burnin_step} d={d}: train accuracy {min(accs):.3f}..{max(accs):.3f}",
              file=sys.stderr)


def _refine_plan(args) -> None:
    from sublevel import storage, subspace, trajectory
    from sublevel.config import Experiment

    exp = Experiment.from_json(args.spec)
    rows = storage.read_rows(args.tables)
    d_max = len(trajectory.read(args.trajectory).steps) - 1 if args.kind == "lottery" else exp.num_params()
    plan = subspace.refine_plan(rows, exp.subspace.refine, args.round, d_max)
    with storage.atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))
    print(f"round {args.round}: bracket {plan['bracket']}, next dims {plan['dims']} ({plan['reason']})",
          file=sys.stderr)


def _sweep_summary(args) -> None:
    from sublevel import storage, subspace

    # every block of the sweep is finished and no job writes a superseded one: removing it here cannot race
    for table, store in subspace.superseded_blocks(args.tables):
        storage.remove(table.parent)
        storage.remove(store)
        print(f"removed {table.parent} and {store}: runs of an earlier subspace.seeds_per_job, trained again",
              file=sys.stderr)
    rows = storage.read_rows(args.tables)
    plans = [json.loads(Path(p).read_text()) for p in args.plans]
    summary = {"rounds": 1 + sum(bool(p["dims"]) for p in plans), "dims": sorted({r["d"] for r in rows}),
               "runs": len(rows),
               "final_plan": plans[-1] if plans else None}
    with storage.atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), file=sys.stderr)


def _analyse_subspace(args) -> None:
    import polars as pl

    from sublevel import analysis, storage
    from sublevel.config import Experiment

    exp = Experiment.from_json(args.spec)
    runs = storage.read_frame(args.runs)
    if not runs.height:  # every sweep was skipped: there is no P(d) to estimate
        raise storage.Skipped(storage.skip_reason(args.runs) or "the sweeps recorded no runs")
    train = storage.read_frame(args.train)
    final = train.filter((pl.col("split") == "test") & (pl.col("step") == pl.col("step").max().over("seed")))
    dense = {exp.name: float(final["accuracy"].mean())}
    ths = list(exp.subspace.thresholds)
    storage.write_table("success", analysis.success(runs, ths).to_dicts(), args.success)
    table = analysis.thresholds(runs, dense, ths, samples=exp.subspace.bootstrap)
    storage.write_table("threshold", table.to_dicts(), args.threshold)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        print(table.select("kind", "burnin_step", "metric", "threshold", "d_star", "d_star_lo", "d_star_hi",
                           "censored", "anchor_value", "d_int90"), file=sys.stderr)


def _subspace_tickets(args) -> None:
    from sublevel import storage, subspace
    from sublevel.config import Experiment

    exp = Experiment.from_json(args.spec)
    imp_rows = storage.read_rows(args.imp)
    if not imp_rows and (reason := storage.skip_reason(args.imp)):
        raise storage.Skipped(reason)
    storage.write_table("subspace", subspace.ticket_rows(exp, imp_rows), args.table)


def _hessian(args) -> None:
    """Sharpness at the dense run's checkpoints (--trajectory) or at the end of each IMP level (--levels)."""
    import torch

    from sublevel import hessian, imp, models, storage, trajectory
    from sublevel.config import Schedule
    from sublevel.training import build_model

    exp, device, data = _setup(args)
    h = exp.raw["hessian"]
    n = min(h["examples"], len(data.y_train))
    x, y = data.x_train[:n], data.y_train[:n]
    model = build_model(exp, data, args.seed, device)  # its weights are replaced by each network's
    sched = Schedule.resolve(exp, len(data.y_train))
    points = []  # (source, level, rewind step, sparsity, step, θ, buffers, mask)
    if args.trajectory:
        traj = trajectory.read(args.trajectory)
        for step in exp.hessian_steps(sched):
            points.append(("dense", None, None, 0.0, step, traj.params(step), traj.buffers(step), None))
    for path in args.levels or []:
        lv = imp.Level.read(path)
        points.append(("imp", lv.level, lv.row["rewind_step"], lv.row["sparsity"], sched.total, lv.weights,
                       lv.buffers, lv.mask))
    rows = []
    for source, level, rewind_step, sparsity, step, theta, buffers, mask in points:
        theta = torch.as_tensor(theta).to(device)
        models.load_flat_buffers(model, torch.as_tensor(buffers).to(device))
        top = hessian.top_eigenvalues(model, theta, x, y, h["iterations"], h["top_k"], seed=args.seed,
                                      mask=None if mask is None else mask.to(device))
        rows += [dict(experiment=exp.name, seed=args.seed, source=source, level=level, rewind_step=rewind_step,
                      sparsity=sparsity, step=step, rank=i + 1, eigenvalue=float(v), examples=n,
                      iterations=h["iterations"])
                 for i, v in enumerate(top)]
        where = f"step {step}" if level is None else f"IMP level {level} (sparsity {sparsity:.3f})"
        print(f"{where}: top eigenvalue {float(top[0]):.4f}", file=sys.stderr)
    storage.write_table("hessian", rows, args.table)


def _scores(args) -> None:
    """EL2N and GraNd of every training example at the configured checkpoints of every dense seed."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from sublevel import scores, storage, trajectory
    from sublevel.config import Schedule
    from sublevel.training import build_model

    exp, device, data = _setup(args)
    steps = exp.score_steps(Schedule.resolve(exp, len(data.y_train)))
    model = build_model(exp, data, 0, device)
    trajs = []
    for path in args.trajectories:  # a seed whose dense run diverged before a scored step is left out
        traj = trajectory.read(path)
        try:
            for step in steps:
                traj.index(step)
        except storage.Skipped as e:
            skipped = str(e)
            print(f"left out: {skipped}", file=sys.stderr)
            continue
        trajs.append(traj)
    if not trajs:
        raise storage.Skipped(skipped)
    seeds = [int(t.attrs["seed"]) for t in trajs]
    shape = (len(steps), len(trajs), len(data.y_train))
    el2n, grand = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for i, step in enumerate(tqdm(steps, desc="scores", unit="checkpoint", mininterval=5.0)):
        for r, traj in enumerate(trajs):
            theta = torch.from_numpy(traj.params(step)).to(device)
            buffers = torch.from_numpy(traj.buffers(step)).to(device)
            e, g = scores.per_example(model, theta, buffers, data.x_train, data.y_train, exp.raw["scores"]["chunk"])
            el2n[i, r], grand[i, r] = e.cpu().numpy(), g.cpu().numpy()
    label = data.y_train.cpu().numpy()
    scores.write_store(args.out, exp.name, steps, seeds, el2n, grand, label)
    storage.write_table("scores", scores.summary_rows(exp.name, steps, seeds, el2n, grand, label), args.table)


def _diet(args) -> None:
    """The data-diet rewind point: the first k steps from the seed's initialisation on a scored subset."""
    import numpy as np

    from sublevel import imp, scores
    from sublevel.config import Schedule

    exp, device, data = _setup(args)
    diet, sched = exp.imp.data_diet, Schedule.resolve(exp, len(data.y_train))
    step = exp.diet_score_step(sched)
    score = None if step is None else scores.read_mean(args.scores, diet["score"], step)
    keep = scores.diet_subset(len(data.y_train), diet["keep"], diet["fraction"], args.seed, score)
    print(f"data diet: the {diet['keep']} {len(keep)} of {len(data.y_train)} examples for steps 0..{sched.rewind}",
          file=sys.stderr)
    start, diverged = imp.diet_pretrain(exp, data, args.seed, keep, device)
    imp.write_start(args.out, start, {"keep": diet["keep"], "fraction": diet["fraction"], "examples": len(keep),
                                      "score": diet["score"], "score_step": step, "diverged": diverged,
                                      "mean_score": None if score is None else float(np.mean(score[keep]))})


def _figure(args) -> None:
    from sublevel import figures, storage

    tables = {name: storage.read_frame(files) for name in schema.FIGURE_TABLES[args.name]
              if (files := getattr(args, name))}
    figures.render(args.name, tables, args.out)


def _bench(args) -> None:
    import datetime
    import re

    from sublevel import bench
    from sublevel.training import pick_device, seed_everything

    device = pick_device(args.device)
    seed_everything(device=device)  # the settings a pipeline job trains under (deterministic kernels on CUDA)
    say = lambda line: print(line, flush=True)
    if args.suite == "subspace":
        report = bench.run(device, dims=args.dims, kinds=args.projections, runs=args.runs, steps=args.steps,
                           loop_steps=args.loop_steps, batch_size=args.batch_size, widths=args.widths, progress=say,
                           tf32=args.tf32, profile_steps=args.profile_steps, compile=args.compile)
    elif args.suite == "dense":
        report = bench.dense(device, steps=args.steps, batch_size=args.batch_size, progress=say,
                             variants=list(bench.DENSE_VARIANTS) if args.compile == "none" else ["fp32"],
                             compile=args.compile)
    else:
        report = bench.imp(device, runs=args.runs, steps=args.steps, batch_size=args.batch_size, widths=args.widths,
                           progress=say)
    suffix = "" if args.suite == "subspace" else f"-{args.suite}"
    suffix += "" if args.compile == "none" else f"-compile-{args.compile}"
    out = args.out or (Path("bench/results") / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', report['device_name'])}-"
                       f"{datetime.date.today().isoformat()}{suffix}.json")
    bench.write(report, out)
    print(f"wrote {out}\n\n{bench.markdown(report)}")


def _bench_table(args) -> None:
    import json

    from sublevel import bench

    print("\n\n".join(bench.markdown(json.loads(Path(f).read_text())) for f in args.reports))


def _query(args) -> None:
    import duckdb

    from sublevel import catalog

    con, found = catalog.open_catalog(args.root)
    _say_damage(found)
    try:
        read = duckdb.get_table_names(args.sql)
    except duckdb.Error:
        read = set()  # the query itself reports what does not parse
    if incomplete := sorted(found.damaged_tables() & {t.lower() for t in read}):
        sys.exit(f"sublevel query: refused: {', '.join(incomplete)} would be read without its damaged files, "
                 "an incomplete answer (see the line above)")
    try:
        df = catalog.query(args.sql, con=con)
    except (duckdb.Error, catalog.QueryRefused) as e:
        sys.exit(f"sublevel query: {e}")
    if args.format == "csv":
        if nested := [c for c, t in df.schema.items() if t.is_nested()]:
            sys.exit(f"sublevel query: --format csv cannot hold the list columns {nested}: use --format json, "
                     "or select them as text (array_to_string(col, ';'))")
        sys.stdout.write(df.write_csv())
    elif args.format == "json":
        sys.stdout.write(df.write_json() + "\n")
    else:
        with _plain_tables():
            print(df)


def _say_damage(found) -> None:
    if line := found.damage_line():
        print(line, file=sys.stderr)


def _plain_tables():
    """polars printing for the terminal: every row and column, no shape or dtype lines, ASCII borders."""
    import polars as pl

    return pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                     fmt_str_lengths=120, tbl_width_chars=250, tbl_formatting="ASCII_FULL_CONDENSED")


def _jobs(args) -> None:
    from sublevel import catalog, paths

    con, found = catalog.open_catalog(args.root)
    _say_damage(found)
    total = con.sql(catalog.JOBS_TOTAL).pl()
    if not total["jobs"].item():
        print(f"no finished jobs recorded in {found.root / paths.SNAKEMAKE_METADATA}")
        return
    with _plain_tables():
        print(f"{total}\n{con.sql(catalog.JOBS_BY_RULE).pl()}")
    if untimed := total["untimed"].item():
        print(f"{untimed} jobs ran under a cluster executor, which records when a job wrote its outputs but not when"
              " it started: their time is the cluster's accounting (sacct), not here")


def _summary(args) -> None:
    from sublevel import catalog

    titles = {"dense": "Dense networks", "threshold": "Threshold training dimension d*(eps) (P(d) >= 1/2)",
              "tickets": "Lottery tickets: highest sparsity within 1 point of dense test accuracy",
              "skipped": "Skipped jobs (nothing to compute from; their outputs hold no rows)"}
    con, found = catalog.open_catalog(args.root)
    _say_damage(found)
    with _plain_tables():
        for name, frame in catalog.summary(con=con).items():
            if name != "skipped" or frame.height:
                print(f"{titles[name]}\n{frame if frame.height else '(no rows yet)'}\n")


def _reproduce(args) -> None:
    """Every target beside what results/ measures (view `reproduction`); markdown: docs/results.md."""
    from sublevel import catalog, paths, reproduce, storage

    con, found = catalog.open_catalog(args.root, args.targets)
    _say_damage(found)
    frame = con.sql("select * from reproduction order by paper, target").pl()
    if args.format == "table":
        with _plain_tables():
            print(frame.select("target", "experiment", "quantity", "published", "measured", "measured_lo",
                               "measured_hi", "n_runs", "ratio", "status", "note"))
        return
    if args.format == "markdown":
        text = reproduce.markdown(frame, reproduce.header(found.root, con))
    elif args.format == "csv":
        text = frame.write_csv()
    else:
        text = frame.write_json() + "\n"
    out = Path(args.out) if args.out else found.root / paths.RESULTS_PAGE if args.format == "markdown" else None
    if out is None:
        sys.stdout.write(text)
        return
    with storage.atomic_path(out) as tmp:
        tmp.write_text(text)
    print(f"wrote {out}: {len(frame)} targets, " + ", ".join(
        f"{n} {status}" for status, n in frame["status"].value_counts(sort=True).iter_rows()))


def _export(args) -> None:
    """DVC's view of the results: metrics JSON and CSV curves (DVC reads no Parquet)."""
    from sublevel import catalog, storage

    con, found = catalog.open_catalog(args.root)
    _say_damage(found)
    with storage.atomic_path(args.summary) as tmp:
        tmp.write_text(json.dumps(catalog.metrics(con=con), indent=1, sort_keys=True) + "\n")
    with storage.atomic_path(args.plots) as tmp:
        tmp.mkdir(parents=True)
        for name, frame in catalog.plots(con=con).items():
            frame.write_csv(tmp / f"{name}.csv")
    print(f"wrote {args.summary} and {args.plots}/")


def _check_results(args) -> None:
    from sublevel import catalog, integrity

    root = catalog.resolve_root(args.root)
    damaged, checked = integrity.check(root)
    for d in damaged:
        print(f"damaged: {d.path.relative_to(root)}: {d.reason}")
    if not damaged:
        print(f"{checked} results under {root / 'results'} read back whole: no damage")
        return
    if not args.fix:
        sys.exit(f"{len(damaged)} of {checked} results damaged: `sublevel check-results --fix` removes them, and "
                 "the next snakemake run rebuilds them and what depends on them")
    if integrity.running(root):
        sys.exit("a snakemake run holds this directory's lock (.snakemake/locks): nothing removed; rerun "
                 "--fix once it has ended")
    integrity.remove(damaged)
    print(f"removed {len(damaged)} damaged results: `snakemake` rebuilds them and what depends on them")


def _views(args) -> None:
    from sublevel import catalog

    print("\n".join(catalog.view_statements(args.root)))


def _check_config(args) -> None:
    from sublevel import config

    cfg = config.load(args.configfile)
    for name in cfg["experiments"]:
        exp = config.experiment(cfg, name)
        print(f"{name}: {exp.dataset} / {exp.model.name} {exp.model.kwargs() or ''}, seeds {list(exp.seeds)}, "
              f"steps {exp.train.steps}")


def _stage_specs(args) -> None:
    """One JSON per DVC stage: what its jobs see of the config (DVC's dependencies instead of raw keys)."""
    from sublevel import config, storage

    for stage, spec in config.stage_specs(config.load(args.configfile)).items():
        with storage.atomic_path(Path(args.out) / f"{stage}.json") as tmp:
            tmp.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sublevel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    results = argparse.ArgumentParser(add_help=False)  # the commands that read the results tables
    results.add_argument("--root", type=Path, help="project root (default: found from the current directory)")

    s = sub.add_parser("prepare-data", help="build a dataset's Zarr store")
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="Zarr store to write")
    s.add_argument("--spec", help="the config's `data` section as JSON")
    s.set_defaults(func=_prepare_data)

    def job(name: str, help: str, func) -> argparse.ArgumentParser:
        """A command that trains or evaluates on a device: what `_setup` reads."""
        s = sub.add_parser(name, help=help)
        s.add_argument("--spec", required=True, help="the validated experiment as JSON")
        s.add_argument("--data", required=True, help="dataset Zarr store")
        s.add_argument("--device", default="auto")
        s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        s.set_defaults(func=func)
        return s

    s = job("train", "dense training of one (experiment, seed) with a checkpointed trajectory", _train)
    s.add_argument("--seed", type=int, required=True, help="initialisation seed")
    s.add_argument("--data-seed", type=int, help="data-order seed (default: the init seed)")
    s.add_argument("--trajectory", required=True, help="Zarr group to write")
    s.add_argument("--table", required=True, help="Parquet file of the `train` table to write")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    def imp_stage(name: str, help: str, func) -> argparse.ArgumentParser:
        """IMP commands work on several chains at once (their runs train together): one of each per-seed
        option per --seeds, in the same order."""
        s = job(name, help, func)
        s.add_argument("--seeds", type=int, nargs="+", required=True, help="dense seeds of the chains")
        s.add_argument("--trajectory", nargs="+", required=True,
                       help="each chain's dense trajectory (rewind point, θ_0, θ_T)")
        s.add_argument("--table", nargs="+", required=True, help="Parquet file to write, per seed")
        s.add_argument("--quiet", action="store_true")
        s.add_argument("--diet", nargs="+", help="data-diet rewind points (Zarr) to rewind to instead, per seed")
        return s

    s = imp_stage("imp-level", "one IMP level of each chain: prune its previous level, rewind, train", _imp_level)
    s.set_defaults(outputs={"out": "zarr", "table": "imp"})
    s.add_argument("--level", type=int, required=True)
    s.add_argument("--previous", nargs="+", help="level-1 stores, per seed (required for level >= 1)")
    s.add_argument("--out", nargs="+", required=True, help="level store (Zarr) to write, per seed")

    s = imp_stage("imp-baselines", "baselines at the per-layer sparsity of an IMP level", _imp_baselines)
    s.set_defaults(outputs={"out": "zarr", "table": "imp"})
    s.add_argument("--methods", nargs="+", required=True,
                   choices=["random_prune", "random_reinit", "oneshot", "init_magnitude"])
    s.add_argument("--ticket", nargs="+", required=True, help="the IMP level stores whose per-layer counts to match")
    s.add_argument("--out", nargs="+", required=True, help="store (Zarr) to write, per seed")

    s = imp_stage("barrier", "error barrier: instability of a level, or successive IMP levels", _barrier)
    s.set_defaults(outputs={"table": "barrier"})
    s.add_argument("--kind", required=True, choices=["instability", "imp_successive"])
    s.add_argument("--dense", nargs="+", required=True, help="level-0 stores (the dense reference for `matching`)")
    s.add_argument("--a", nargs="+", required=True, help="the level stores (instability) or level l-1 (imp_successive)")
    s.add_argument("--b", nargs="+", help="level l stores (imp_successive)")

    s = job("subspace-sweep", "train the given run seeds of one subspace kind and burn-in step at the given dims",
            _subspace_sweep)
    s.set_defaults(outputs={"out": "zarr", "table": "subspace"})
    s.add_argument("--kind", required=True, choices=["random", "burnin", "lottery"])
    s.add_argument("--burnin-step", type=int, required=True, help="t of the anchor θ_t (0 for random, lottery)")
    s.add_argument("--trajectory", required=True, help="the dense run's trajectory")
    s.add_argument("--out", required=True, help="Zarr store of the trained coordinates")
    s.add_argument("--table", required=True, help="Parquet file of the `subspace` table")
    s.add_argument("--dims", type=int, nargs="+", required=True, help="the dimensions d to train")
    s.add_argument("--seeds", type=int, nargs="+", required=True,
                   help="run seeds (projection and data order) to train at each d")
    s.add_argument("--round", type=int, default=0, help="refinement round (0: the configured dims)")
    s.add_argument("--quiet", action="store_true")

    s = sub.add_parser("refine-plan", help="where the success rate crosses 1/2, and the dims to add next")
    s.set_defaults(outputs={"out": "plan"})
    s.add_argument("--spec", required=True, help="the validated experiment as JSON")
    s.add_argument("--kind", required=True, choices=["random", "burnin", "lottery"])
    s.add_argument("--trajectory", required=True, help="the dense run's trajectory (bounds the lottery d)")
    s.add_argument("--round", type=int, required=True)
    s.add_argument("--tables", nargs="+", required=True, help="subspace table files of rounds 0..round")
    s.add_argument("--out", required=True, help="plan JSON to write")
    s.set_defaults(func=_refine_plan)

    s = sub.add_parser("sweep-summary", help="the rounds of one sweep and where its transition ended up (removing blocks of runs an earlier subspace.seeds_per_job left, which it trained again)")
    s.add_argument("--tables", nargs="+", required=True)
    s.add_argument("--plans", nargs="*", default=[])
    s.add_argument("--out", required=True)
    s.set_defaults(func=_sweep_summary)

    s = sub.add_parser("analyse-subspace", help="success probability P(d) and threshold dimension d*(ε)")
    s.add_argument("--spec", required=True, help="the validated experiment as JSON")
    s.add_argument("--runs", nargs="+", required=True, help="subspace table files (all rounds, tickets)")
    s.add_argument("--train", nargs="+", required=True, help="train table files of the dense runs")
    s.add_argument("--success", required=True, help="Parquet file of the `success` table")
    s.add_argument("--threshold", required=True, help="Parquet file of the `threshold` table")
    s.set_defaults(func=_analyse_subspace, outputs={"success": "success", "threshold": "threshold"})

    s = sub.add_parser("subspace-tickets", help="IMP levels as axial subspaces in the `subspace` table")
    s.add_argument("--spec", required=True, help="the validated experiment as JSON")
    s.add_argument("--imp", nargs="+", required=True, help="imp table files of the chains")
    s.add_argument("--table", required=True, help="Parquet file of the `subspace` table")
    s.set_defaults(func=_subspace_tickets, outputs={"table": "subspace"})

    s = job("hessian", "top Hessian eigenvalues at dense checkpoints or at the end of IMP levels", _hessian)
    s.set_defaults(outputs={"table": "hessian"})
    s.add_argument("--seed", type=int, required=True)
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--trajectory", help="the dense run: every configured hessian step")
    where.add_argument("--levels", nargs="+", help="IMP level stores: each level's final, masked network")
    s.add_argument("--table", required=True)

    s = job("scores", "EL2N and GraNd per training example at dense checkpoints", _scores)
    s.set_defaults(outputs={"out": "zarr", "table": "scores"})
    s.add_argument("--trajectories", nargs="+", required=True, help="the dense runs to average over")
    s.add_argument("--out", required=True, help="Zarr store of the per-example scores")
    s.add_argument("--table", required=True, help="Parquet file of the `scores` table")

    s = job("data-diet", "pre-train on an easy, hard or random subset up to the rewind step", _diet)
    s.set_defaults(outputs={"out": "zarr"})
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--scores", help="the experiment's scores store (not needed for keep: random)")
    s.add_argument("--out", required=True, help="rewind point (Zarr) to write")

    s = sub.add_parser("figure", help="one figure (PNG, and SVG beside it) from results tables")
    s.add_argument("name", choices=list(schema.FIGURE_TABLES))
    s.add_argument("--out", required=True, help="PNG to write; the SVG goes beside it")
    for table in sorted({t for ts in schema.FIGURE_TABLES.values() for t in ts}):
        s.add_argument(f"--{table}", nargs="*", default=[], help=f"`{table}` table files")
    s.set_defaults(func=_figure)

    s = sub.add_parser("bench", help="throughput: subspace sweep (one run at a time vs batched), dense ResNet-20 "
                                     "images/s (fp32, channels_last, bf16), IMP runs alone vs together")
    s.add_argument("--suite", choices=["subspace", "dense", "imp"], default="subspace")
    s.add_argument("--device", default="auto")
    s.add_argument("--dims", type=int, nargs="+", default=[10, 100, 1000, 10000])
    s.add_argument("--projections", nargs="+", default=["fastfood", "dense"], choices=["fastfood", "dense"])
    s.add_argument("--runs", type=int, default=256,
                   help="runs trained together (split if they do not fit); imp suite: try 8")
    s.add_argument("--steps", type=int, default=100, help="timed steps of the batched runs")
    s.add_argument("--loop-steps", type=int, default=100, help="timed steps of the one-run loop")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--widths", type=int, nargs="+", default=[300, 100], help="MLP widths (LeNet-300-100)")
    s.add_argument("--tf32", action="store_true", help="subspace suite: TensorFloat-32 matmuls on CUDA")
    s.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead",
                                                         "max-autotune-no-cudagraphs"],
                   help="torch.compile mode: subspace suite, the batched step (the config's subspace.compile); "
                        "dense suite, fp32 and channels_last+bf16 compiled beside eager fp32 (train.compile)")
    s.add_argument("--profile-steps", type=int, default=0,
                   help="subspace suite: profile the ceiling and Fastfood at the largest d for this many steps")
    s.add_argument("--out", help="JSON to write (default bench/results/<device>-<date>.json)")
    s.set_defaults(func=_bench)

    s = sub.add_parser("bench-table", help="bench JSON reports as the README's markdown tables")
    s.add_argument("reports", nargs="+", help="bench/results/*.json")
    s.set_defaults(func=_bench_table)

    s = sub.add_parser("stage-specs", help="per DVC stage, what its jobs see of the config (JSON)")
    s.add_argument("configfile")
    s.add_argument("--out", required=True, help="directory for <stage>.json")
    s.set_defaults(func=_stage_specs)

    s = sub.add_parser("export", parents=[results],
                       help="DVC metrics (summary JSON) and plots (CSV) from every results table")
    s.add_argument("--summary", required=True, help="JSON to write")
    s.add_argument("--plots", required=True, help="directory of CSV files to write")
    s.set_defaults(func=_export)

    s = sub.add_parser("query", help="run SQL (DuckDB) over every results table", parents=[results])
    s.add_argument("sql")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(func=_query)

    s = sub.add_parser("reproduce", parents=[results],
                       help="the seed papers' published numbers beside what results/ measures (view reproduction)")
    s.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table",
                   help="markdown: write docs/results.md (or --out), commit and machine in its header")
    s.add_argument("--out", help="the file to write (markdown's default: docs/results.md under the project; the "
                                 "other formats print unless given one)")
    s.add_argument("--targets", type=Path, help="a targets CSV in place of the shipped one (same columns)")
    s.set_defaults(func=_reproduce)

    s = sub.add_parser("summary", help="the key numbers per experiment", parents=[results])
    s.set_defaults(func=_summary)

    s = sub.add_parser("jobs", parents=[results],
                       help="what the last run's jobs took, per rule (view `jobs`, from Snakemake's records)")
    s.set_defaults(func=_jobs)

    s = sub.add_parser("views", help="print the CREATE VIEW statements, e.g. for the duckdb shell", parents=[results])
    s.set_defaults(func=_views)

    s = sub.add_parser("check-results", parents=[results],
                       help="read every store and table under results/ back in full; --fix removes the damaged")
    s.add_argument("--fix", action="store_true", help="remove the damaged results so the next run rebuilds them")
    s.set_defaults(func=_check_results)

    s = sub.add_parser("check-config", help="validate a config file and summarise its experiments")
    s.add_argument("configfile")
    s.set_defaults(func=_check_config)
    return p


def _stop(signum, frame) -> None:
    from sublevel import storage

    storage.exit_removing_temporaries(128 + signum, after=10.0)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from sublevel.config import ConfigError
    from sublevel.datasets import DataError
    from sublevel.storage import CorruptFile, Skipped

    # SIGTERM (scancel, snakemake stopping jobs) unwinds like Ctrl-C, so half-written outputs are removed; within
    # 10 s, well inside SLURM's default 30 s before SIGKILL, even if the exception never reaches the top
    signal.signal(signal.SIGTERM, _stop)
    try:
        args.func(args)
    except Skipped as e:
        if not getattr(args, "outputs", None):
            print(f"sublevel {args.command}: {e}", file=sys.stderr)
            return 2
        _write_skipped(args, str(e))
        print(f"sublevel {args.command}: skipped, its outputs written empty: {e}", file=sys.stderr)
    except (ConfigError, DataError, FileNotFoundError, CorruptFile) as e:
        print(f"sublevel {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


def _write_skipped(args, reason: str, index: int | None = None) -> None:
    """Every output of a job that has nothing to compute from (a diverged dense run upstream), or with `index`
    the outputs of that one seed of a per-seed job: tables with no rows and stores with no arrays, each carrying
    the reason, so that Snakemake sees the job done, the `skipped` view lists it, and every reader downstream
    skips in turn."""
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
