"""workflow/rules/imp.smk: IMP levels, their baselines, error barriers and the data-diet rewind point.

IMP commands work on several chains at once (their runs train together): one of each per-seed option per
--seeds, in the same order."""

from __future__ import annotations

from sublevel.commands.base import job, say, setup, write_skipped


def chains(args, network: str | None = None):
    """The spec, dataset, device and the chains (one per --seeds) an IMP-stage command works on; `network`
    names the per-seed option holding the level store each chain builds on.

    A chain with nothing to start from (its dense run diverged before the rewind point, or its level store
    upstream was skipped for that reason) gets its own outputs written as skipped and is dropped from `args`'
    per-seed options, so the other chains of the job go on; when every chain is skipped the job is."""
    from sublevel import imp, storage, trajectory
    from sublevel.config import ConfigError

    exp, device, data = setup(args)
    if exp.imp is None:
        raise ConfigError(f"experiment {exp.name} has no `imp` section")
    n = len(args.seeds)
    per_seed = [k for k in ("seeds", "trajectory", "table", "out", "diet", "dense", "b", network)
                if k and getattr(args, k, None) is not None]
    if bad := {f"--{k}": len(getattr(args, k)) for k in per_seed if len(getattr(args, k)) != n}:
        raise SystemExit(f"error: {n} --seeds but {bad}: give one of each per seed")
    found, live, reason = [], [], None
    for i in range(n):
        try:
            traj = trajectory.read(args.trajectory[i])
            net = imp.Level.read(getattr(args, network)[i]) if network and getattr(args, network) else None
            diet = args.diet[i] if args.diet else None
            imp.rewind_point(exp, data, traj, diet)  # raises Skipped when there is none
        except storage.Skipped as e:
            reason = str(e)
            write_skipped(args, reason, index=i)
            say(f"seed {args.seeds[i]}: skipped, its outputs written empty: {reason}")
            continue
        found.append(imp.Chain(args.seeds[i], traj, net, diet))
        live.append(i)
    if not found:
        raise storage.Skipped(reason)
    for k in per_seed:
        setattr(args, k, [getattr(args, k)[i] for i in live])
    return exp, data, found, device


def report(level) -> None:
    r = level.row
    say(f"{r['method']} seed {r['seed']} level {r['level']}: sparsity {r['sparsity']:.4f} ({r['remaining']} left), "
        f"test acc {r['test_accuracy']:.4f}{' DIVERGED' if r['diverged'] else ''}")


def imp_level(args) -> None:
    from sublevel import imp, storage

    if args.level > 0 and not args.previous:
        raise SystemExit(f"error: level {args.level} needs --previous (the chains' level {args.level - 1} stores)")
    exp, data, found, device = chains(args, "previous")
    levels = imp.imp_levels(exp, data, found, args.level, device, progress=not args.quiet)
    for lv, out, table in zip(levels, args.out, args.table):
        imp.write_levels(out, [lv])
        storage.write_table("imp", [lv.row], table)
        report(lv)


def imp_baselines(args) -> None:
    from sublevel import imp, storage

    exp, data, found, device = chains(args, "ticket")
    levels = imp.baselines(args.methods, exp, data, found, device, progress=not args.quiet)
    k = len(args.methods)
    for i, (out, table) in enumerate(zip(args.out, args.table)):
        mine = levels[i * k:(i + 1) * k]
        imp.write_levels(out, mine)
        storage.write_table("imp", [lv.row for lv in mine], table)
        for lv in mine:
            report(lv)


def barrier(args) -> None:
    from sublevel import imp, storage

    exp, data, found, device = chains(args, "a")
    dense = [imp.Level.read(p) for p in args.dense]
    if args.kind == "instability":
        per_chain = imp.instability(exp, data, found, dense, device, progress=not args.quiet)
    else:
        if not args.b or len(args.b) != len(found):
            raise SystemExit("error: imp_successive needs --b, one level-l store per seed")
        per_chain = [imp.successive(exp, data, c.seed, c.network, imp.Level.read(b), d, device)
                     for c, b, d in zip(found, args.b, dense)]
    for rows, table in zip(per_chain, args.table):
        storage.write_table("barrier", rows, table)
        for r in rows:
            say(f"{r['kind']} seed {r['seed']} level {r['level']} {r['split']}: barrier {r['barrier']:.4f}")


def prune_sweep(args) -> None:
    """imp.fraction_sweep at one level of each chain: the barrier per fraction pruned, magnitude and random."""
    from sublevel import imp, storage
    from sublevel.config import ConfigError

    exp, data, found, device = chains(args, "network")
    if exp.imp.fraction_sweep is None:
        raise ConfigError(f"experiment {exp.name} has no imp.fraction_sweep")
    for rows, table in zip(imp.fraction_sweep(exp, data, found, device, progress=not args.quiet), args.table):
        storage.write_table("prune_sweep", rows, table)
        for r in rows:
            if r["split"] == "test":
                say(f"seed {r['seed']} level {r['level']} {r['method']} prune {r['fraction']:g}: test barrier "
                    f"{r['barrier']:.4f} ({'connected' if r['connected'] else 'not connected'}), loss rise "
                    f"{r['loss_rise_quadratic']:.4f} to second order, top eigenvalue {r['top_eigenvalue']:.3f}")


def data_diet(args) -> None:
    """The data-diet rewind point: the first k steps from the seed's initialisation on a scored subset."""
    from sublevel import imp

    exp, device, data = setup(args)
    start, attrs = imp.diet_start(exp, data, args.seed, args.scores, device)
    say(f"data diet: the {attrs['keep']} {attrs['examples']} of {len(data.y_train)} examples for steps "
        f"0..{start.step}")
    imp.write_start(args.out, start, attrs)


def stage(sub, name: str, help: str, func, stage):
    s = job(sub, name, help, func, stage)
    s.add_argument("--seeds", type=int, nargs="+", required=True, help="dense seeds of the chains")
    s.add_argument("--trajectory", nargs="+", required=True,
                   help="each chain's dense trajectory (rewind point, θ_0, θ_T)")
    s.add_argument("--table", nargs="+", required=True, help="Parquet file to write, per seed")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--diet", nargs="+", help="data-diet rewind points (Zarr) to rewind to instead, per seed")
    return s


def register(sub) -> None:
    s = stage(sub, "imp-level", "one IMP level of each chain: prune its previous level, rewind, train", imp_level,
              "imp_level")
    s.set_defaults(outputs={"out": "zarr", "table": "imp"})
    s.add_argument("--level", type=int, required=True)
    s.add_argument("--previous", nargs="+", help="level-1 stores, per seed (required for level >= 1)")
    s.add_argument("--out", nargs="+", required=True, help="level store (Zarr) to write, per seed")

    s = stage(sub, "imp-baselines", "baselines at the per-layer sparsity of an IMP level", imp_baselines,
              "imp_baselines")
    s.set_defaults(outputs={"out": "zarr", "table": "imp"})
    s.add_argument("--methods", nargs="+", required=True, choices=["random_prune", "random_reinit", "oneshot", "init_magnitude"])
    s.add_argument("--ticket", nargs="+", required=True, help="the IMP level stores whose per-layer counts to match")
    s.add_argument("--out", nargs="+", required=True, help="store (Zarr) to write, per seed")

    s = stage(sub, "barrier", "error barrier: instability of a level, or successive IMP levels", barrier,
              lambda args: "barrier_instability" if args.kind == "instability" else "barrier_successive")
    s.set_defaults(outputs={"table": "barrier"})
    s.add_argument("--kind", required=True, choices=["instability", "imp_successive"])
    s.add_argument("--dense", nargs="+", required=True, help="level-0 stores (the dense reference for `matching`)")
    s.add_argument("--a", nargs="+", required=True, help="the level stores (instability) or level l-1 (imp_successive)")
    s.add_argument("--b", nargs="+", help="level l stores (imp_successive)")

    s = stage(sub, "prune-sweep", "how much one IMP level can prune: a barrier per fraction (imp.fraction_sweep)",
              prune_sweep, "prune_sweep")
    s.set_defaults(outputs={"table": "prune_sweep"})
    s.add_argument("--network", nargs="+", required=True, help="the IMP level stores to prune further, per seed")

    s = job(sub, "data-diet", "pre-train on an easy, hard or random subset up to the rewind step", data_diet,
            "data_diet")
    s.set_defaults(outputs={"out": "zarr"})
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--scores", help="the experiment's scores store (not needed for keep: random)")
    s.add_argument("--out", required=True, help="rewind point (Zarr) to write")
