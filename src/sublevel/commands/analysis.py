"""workflow/rules/analysis.smk: P(d) and d*, sharpness, data difficulty, figures, the DVC export and the
reproduction page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sublevel import schema  # pyarrow only: the figure names for argparse
from sublevel.commands.base import (experiment, job, plain_tables, results_parent, say, say_damage, setup,
                                    spec_option)


def analyse_subspace(args) -> None:
    import polars as pl

    from sublevel import analysis, storage

    exp = experiment(args)
    runs = storage.read_frame(args.runs)
    if not runs.height:  # every sweep was skipped: there is no P(d) to estimate
        raise storage.Skipped(storage.skip_reason(args.runs) or "the sweeps recorded no runs")
    dense = {exp.name: analysis.dense_test_accuracy(storage.read_frame(args.train))}
    ths = list(exp.subspace.thresholds)
    storage.write_table("success", analysis.success(runs, ths).to_dicts(), args.success)
    table = analysis.thresholds(runs, dense, ths, samples=exp.subspace.bootstrap)
    storage.write_table("threshold", table.to_dicts(), args.threshold)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        say(str(table.select("kind", "burnin_step", "metric", "threshold", "d_star", "d_star_lo", "d_star_hi",
                             "censored", "anchor_value", "d_int90")))


def hessian(args) -> None:
    """Sharpness at the dense run's checkpoints (--trajectory) or at the end of each IMP level (--levels)."""
    from sublevel import hessian, imp, storage, trajectory
    from sublevel.schedule import Schedule
    from sublevel.training import build_model

    exp, device, data = setup(args)
    h = exp.hessian
    n = min(h.examples, len(data.y_train))
    sched = Schedule.resolve(exp, len(data.y_train))
    points = hessian.dense_points(trajectory.read(args.trajectory), exp.hessian_steps(sched)) if args.trajectory \
        else hessian.level_points([imp.Level.read(p) for p in args.levels], sched.total)
    model = build_model(exp, data, args.seed, device)  # its weights are replaced by each network's
    rows = hessian.sharpness_rows(exp.name, args.seed, model, points, data.x_train[:n], data.y_train[:n],
                                  h.iterations, h.top_k, report=say)
    storage.write_table("hessian", rows, args.table)


def spectrum(args) -> None:
    """The Hessian's spectral density at the sweep's dense run's final network θ*, and each sweep anchor's
    displacement from θ* as the well sees it: everything the d* predictions need but the thresholds."""
    import torch

    from sublevel import hessian, models, storage, theory, trajectory
    from sublevel.schedule import Schedule
    from sublevel.training import build_model

    exp, device, data = setup(args)
    sub, spec = exp.subspace, exp.theory
    sched = Schedule.resolve(exp, len(data.y_train))
    traj = trajectory.read(args.trajectory)
    final = traj.params(sched.total)  # a run that diverged before its end has no minimum: Skipped
    n = len(data.y_train) if spec.examples is None else min(spec.examples, len(data.y_train))
    x, y = data.x_train[:n], data.y_train[:n]
    model = build_model(exp, data, sub.dense_seed, device)
    models.load_flat_buffers(model, torch.as_tensor(traj.buffers(sched.total)).to(device))
    buffers = dict(model.named_buffers())
    theta = torch.as_tensor(final).to(device)
    loss_min, gradient = hessian.loss_and_gradient(model, theta, x, y, buffers)
    say(f"θ* (step {sched.total}): training loss {loss_min:.4f} over {n} examples, gradient norm "
        f"{float(gradient.norm()):.3g}")
    hvp = hessian.hvp_operator(model, theta, x, y, buffers)
    probes = hessian.converged_slq(hvp, len(theta), spec.iterations, spec.max_iterations, spec.tolerance,
                                   spec.probes, device=device)
    for j, q in enumerate(probes):
        unsettled = "" if q.converged else f" (NOT converged within {spec.max_iterations})"
        say(f"probe {j}: {q.iterations} Lanczos steps, last change {q.change:.2g}{unsettled}, "
            f"top node {q.nodes.max():.4g}")
    at_step = {}  # random and lottery sweeps share θ_0: one quadrature per anchor step
    for t in sorted({t for _, t in sub.anchors(sched)}):
        delta = torch.as_tensor(traj.params(t)).to(device, torch.float64) - theta.double()
        at_step[t] = a = theory.anchor(hvp, delta, loss_min, spec.iterations, spec.max_iterations, spec.tolerance)
        say(f"t={t}: R = {a.distance:.3f}, the well's loss there {a.quadratic_loss:.3g}, {a.iterations} Lanczos "
            f"steps, last change {a.change:.2g}")
    anchors = {(kind, t): at_step[t] for kind, t in sub.anchors(sched)}
    storage.write_table("spectrum", theory.spectrum_rows(exp.name, sub.dense_seed, sched.total, probes, anchors,
                                                        loss_min, float(gradient.norm()), n, len(theta)),
                        args.spectrum)


def theory(args) -> None:
    """d*(ε) predicted for every sweep and threshold from the stored spectrum (no network is evaluated)."""
    from sublevel import storage
    from sublevel.theory import Spectrum

    exp = experiment(args)
    rows = storage.read_frame([args.spectrum]).to_dicts()
    if not rows:  # the spectrum job was skipped (its dense run diverged): nothing to predict from
        raise storage.Skipped(storage.skip_reason([args.spectrum]) or "the spectrum table holds no rows")
    predicted = Spectrum.from_rows(rows).rows(list(exp.subspace.thresholds))
    storage.write_table("theory", predicted, args.theory)
    for r in predicted:
        what = r["note"] or (f"d* bound {r['d_star_bound']:.1f} [{r['d_star_bound_lo']:.1f}, "
                             f"{r['d_star_bound_hi']:.1f}], the well's own {r['d_star_well']:.1f}")
        say(f"{r['kind']} t={r['burnin_step']} R={r['distance']:.3f} {r['metric']} {r['threshold']:g}: {what}")


def scores(args) -> None:
    """EL2N and GraNd of every training example at the configured checkpoints of every dense seed."""
    from sublevel import scores, storage, trajectory
    from sublevel.schedule import Schedule
    from sublevel.training import build_model

    exp, device, data = setup(args)
    steps = exp.score_steps(Schedule.resolve(exp, len(data.y_train)))
    trajs, reasons = scores.scored_trajectories([trajectory.read(p) for p in args.trajectories], steps)
    for reason in reasons:
        say(f"left out: {reason}")
    if not trajs:
        raise storage.Skipped(reasons[-1])
    seeds = [int(t.attrs["seed"]) for t in trajs]
    model = build_model(exp, data, 0, device)
    el2n, grand = scores.at_checkpoints(model, trajs, steps, data.x_train, data.y_train, exp.scores.chunk)
    label = data.y_train.cpu().numpy()
    scores.write_store(args.out, exp.name, steps, seeds, el2n, grand, label)
    storage.write_table("scores", scores.summary_rows(exp.name, steps, seeds, el2n, grand, label), args.table)


def figure(args) -> None:
    from sublevel import figures, storage

    tables = {name: storage.read_frame(files) for name in schema.FIGURE_TABLES[args.name]
              if (files := getattr(args, name))}
    figures.render(args.name, tables, args.out)


def export(args) -> None:
    """DVC's view of the results: metrics JSON and CSV curves (DVC reads no Parquet)."""
    from sublevel import catalog, storage

    con, found = catalog.open_catalog(args.root)
    say_damage(found)
    with storage.atomic_path(args.metrics) as tmp:  # a row each in `dvc metrics show`, a few columns
        tmp.mkdir(parents=True)
        for name, numbers in catalog.metric_files(con=con).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    with storage.atomic_path(args.summary) as tmp:  # the report's first page: `sublevel summary`, as tables
        tmp.mkdir(parents=True)
        for i, (name, frame) in enumerate(catalog.summary(con=con).items()):
            if frame.height or name not in catalog.OPTIONAL_SECTIONS:
                frame.write_csv(tmp / f"{i + 1}-{name}.csv")
    with storage.atomic_path(args.plots) as tmp:
        tmp.mkdir(parents=True)
        for name, frame in catalog.plots(con=con).items():
            frame.write_csv(tmp / f"{name}.csv")
    print(f"wrote {args.metrics}/, {args.summary}/ and {args.plots}/")


def reproduce(args) -> None:
    """Every target beside what results/ measures (view `reproduction`), printed or written to --out; a
    tracked file (docs/results.md) changes only when it is named."""
    from sublevel import catalog, reproduce, storage

    con, found = catalog.open_catalog(args.root, args.targets)
    say_damage(found)
    frame = con.sql("select * from reproduction order by paper, target").pl()
    if args.format == "table":
        with plain_tables():
            print(frame.select("target", "experiment", "quantity", "published", "measured", "measured_lo",
                               "measured_hi", "n_runs", "ratio", "status", "note"))
        return
    if args.format == "markdown":
        text = reproduce.markdown(frame, reproduce.header(found.root, con))
    elif args.format == "csv":
        text = frame.write_csv()
    else:
        text = frame.write_json() + "\n"
    out = Path(args.out) if args.out else None
    if out is None:
        sys.stdout.write(text)
        return
    with storage.atomic_path(out) as tmp:
        tmp.write_text(text)
    print(f"wrote {out}: {len(frame)} targets, " + ", ".join(
        f"{n} {status}" for status, n in frame["status"].value_counts(sort=True).iter_rows()))


def register(sub) -> None:
    s = sub.add_parser("analyse-subspace", description="success probability P(d) and threshold dimension d*(ε)")
    spec_option(s, "analyse_subspace")
    s.add_argument("--runs", nargs="+", required=True, help="subspace table files (all rounds, tickets)")
    s.add_argument("--train", nargs="+", required=True, help="train table files of the dense runs")
    s.add_argument("--success", required=True, help="Parquet file of the `success` table")
    s.add_argument("--threshold", required=True, help="Parquet file of the `threshold` table")
    s.set_defaults(func=analyse_subspace, outputs={"success": "success", "threshold": "threshold"})

    s = job(sub, "hessian", "top Hessian eigenvalues at dense checkpoints or at the end of IMP levels", hessian,
            lambda args: "hessian_imp" if args.levels else "hessian_dense")
    s.set_defaults(outputs={"table": "hessian"})
    s.add_argument("--seed", type=int, required=True)
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--trajectory", help="the dense run: every configured hessian step")
    where.add_argument("--levels", nargs="+", help="IMP level stores: each level's final, masked network")
    s.add_argument("--table", required=True)

    s = job(sub, "spectrum", "the Hessian's spectral density at the sweep's trained network, and each anchor's "
            "displacement from it (what the d* predictions are computed from)", spectrum, "spectrum")
    s.set_defaults(outputs={"spectrum": "spectrum"})
    s.add_argument("--trajectory", required=True, help="the subspace sweeps' dense run")
    s.add_argument("--spectrum", required=True, help="Parquet file of the `spectrum` table")

    s = sub.add_parser("theory", description="d*(ε) predicted from the stored spectrum (Gordon's escape theorem)")
    spec_option(s, "theory")
    s.add_argument("--spectrum", required=True, help="the experiment's `spectrum` table file")
    s.add_argument("--theory", required=True, help="Parquet file of the `theory` table")
    s.set_defaults(func=theory, outputs={"theory": "theory"})

    s = job(sub, "scores", "EL2N and GraNd per training example at dense checkpoints", scores, "scores")
    s.set_defaults(outputs={"out": "zarr", "table": "scores"})
    s.add_argument("--trajectories", nargs="+", required=True, help="the dense runs to average over")
    s.add_argument("--out", required=True, help="Zarr store of the per-example scores")
    s.add_argument("--table", required=True, help="Parquet file of the `scores` table")

    s = sub.add_parser("figure", description="one figure (PNG, and SVG beside it) from results tables")
    s.add_argument("name", choices=list(schema.FIGURE_TABLES))
    s.add_argument("--out", required=True, help="PNG to write; the SVG goes beside it")
    for table in sorted({t for ts in schema.FIGURE_TABLES.values() for t in ts}):
        s.add_argument(f"--{table.replace('_', '-')}", dest=table, nargs="*", default=[], help=f"`{table}` table files")
    s.set_defaults(func=figure)

    s = sub.add_parser("export", parents=[results_parent()],
                       description="DVC metrics (JSON per experiment and per sweep), the summary's sections and "
                                   "plots (CSV) from every results table")
    s.add_argument("--metrics", required=True, help="directory of the metrics files to write (catalog.metric_files)")
    s.add_argument("--summary", required=True, help="directory of the summary's sections as CSV files to write")
    s.add_argument("--plots", required=True, help="directory of CSV files to write")
    s.set_defaults(func=export)

    s = sub.add_parser("reproduce", parents=[results_parent()],
                       help="the seed papers' published numbers beside what results/ measures (view reproduction)")
    s.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table",
                   help="markdown: the page docs/results.md holds, with the commit and machine in its header")
    s.add_argument("--out", help="the file to write (atomically) instead of printing, e.g. docs/results.md")
    s.add_argument("--targets", type=Path, help="a targets CSV in place of the shipped one (same columns)")
    s.set_defaults(func=reproduce)
