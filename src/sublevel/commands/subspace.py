"""workflow/rules/subspace.smk: the sweeps, their refinement plans, the tickets as subspaces, the summary."""

from __future__ import annotations

import json
from pathlib import Path

from sublevel.commands.base import experiment, job, say, setup, spec_option

from sublevel.kinds import KINDS


def subspace_sweep(args) -> None:
    from sublevel import storage, sweep, trajectory

    exp, device, data = setup(args)
    anchor_seeds = args.anchor_seeds or [exp.subspace.dense_seed] * len(args.seeds)
    if len(anchor_seeds) != len(args.seeds) or len(args.trajectory) != len(set(anchor_seeds)):
        raise SystemExit(f"subspace-sweep: {len(args.seeds)} seeds need as many --anchor-seeds ({len(anchor_seeds)}), "
                         f"and one --trajectory per distinct anchor seed in ascending order ({len(args.trajectory)})")
    trajs = {s: trajectory.read(t) for s, t in zip(sorted(set(anchor_seeds)), args.trajectory)}
    rows, coords, attrs = sweep.sweep(exp, data, trajs, args.kind, args.burnin_step, args.dims, args.seeds,
                                      device, progress=not args.quiet, round=args.round, anchor_seeds=anchor_seeds)
    sweep.write_sweep_store(args.out, coords, attrs)
    storage.write_table("subspace", rows, args.table)
    for d in sorted(coords):
        accs = [r["train_accuracy"] for r in rows if r["d"] == d]
        say(f"{args.kind} t={args.burnin_step} d={d}: train accuracy {min(accs):.3f}..{max(accs):.3f}")


def refine_plan(args) -> None:
    from sublevel import storage, sweep, trajectory

    exp = experiment(args)
    rows = storage.read_rows(args.tables)
    cap = KINDS[args.kind].max_dim(len(trajectory.read(args.trajectory).steps))
    d_max = exp.num_params() if cap is None else cap
    plan = sweep.refine_plan(rows, exp.subspace.refine, args.round, d_max)
    with storage.atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))
    say(f"round {args.round}: bracket {plan['bracket']}, next dims {plan['dims']} ({plan['reason']})")


def sweep_summary(args) -> None:
    from sublevel import storage, sweep

    # every block of the sweep is finished and no job writes a superseded one: removing it here cannot race
    for table, store in sweep.superseded_blocks(args.tables):
        storage.remove(table.parent)
        storage.remove(store)
        say(f"removed {table.parent} and {store}: runs of an earlier subspace.seeds_per_job, trained again")
    summary = sweep.sweep_summary(storage.read_rows(args.tables),
                                     [json.loads(Path(p).read_text()) for p in args.plans])
    with storage.atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    say(json.dumps(summary))


def subspace_tickets(args) -> None:
    from sublevel import storage, sweep

    exp = experiment(args)
    imp_rows = storage.read_rows(args.imp)
    if not imp_rows and (reason := storage.skip_reason(args.imp)):
        raise storage.Skipped(reason)
    storage.write_table("subspace", sweep.ticket_rows(exp, imp_rows), args.table)


def register(sub) -> None:
    s = job(sub, "subspace-sweep", "train the given run seeds of one subspace kind and burn-in step at the given "
            "dims", subspace_sweep, "subspace_sweep")
    s.set_defaults(outputs={"out": "zarr", "table": "subspace"})
    s.add_argument("--kind", required=True, choices=list(KINDS))
    s.add_argument("--burnin-step", type=int, required=True, help="t of the anchor θ_t (0 for random, lottery)")
    s.add_argument("--trajectory", nargs="+", required=True,
                   help="the anchoring dense runs' trajectories, one per distinct --anchor-seeds value, ascending")
    s.add_argument("--anchor-seeds", type=int, nargs="+",
                   help="the dense seed anchoring each run seed (default: subspace.dense_seed for all)")
    s.add_argument("--out", required=True, help="Zarr store of the trained coordinates")
    s.add_argument("--table", required=True, help="Parquet file of the `subspace` table")
    s.add_argument("--dims", type=int, nargs="+", required=True, help="the dimensions d to train")
    s.add_argument("--seeds", type=int, nargs="+", required=True,
                   help="run seeds (projection and data order) to train at each d")
    s.add_argument("--round", type=int, default=0, help="refinement round (0: the configured dims)")
    s.add_argument("--quiet", action="store_true")

    s = sub.add_parser("refine-plan", description="where the success rate crosses 1/2, and the dims to add next")
    s.set_defaults(func=refine_plan, outputs={"out": "plan"})
    spec_option(s, "refine_plan")
    s.add_argument("--kind", required=True, choices=list(KINDS))
    s.add_argument("--trajectory", required=True, help="the dense run's trajectory (bounds the lottery d)")
    s.add_argument("--round", type=int, required=True)
    s.add_argument("--tables", nargs="+", required=True, help="subspace table files of rounds 0..round")
    s.add_argument("--out", required=True, help="plan JSON to write")

    s = sub.add_parser("sweep-summary", description="the rounds of one sweep and where its transition ended up (removing "
                       "blocks of runs an earlier subspace.seeds_per_job left, which it trained again)")
    s.add_argument("--tables", nargs="+", required=True)
    s.add_argument("--plans", nargs="*", default=[])
    s.add_argument("--out", required=True)
    s.set_defaults(func=sweep_summary)

    s = sub.add_parser("subspace-tickets", description="IMP levels as axial subspaces in the `subspace` table")
    spec_option(s, "subspace_tickets")
    s.add_argument("--imp", nargs="+", required=True, help="imp table files of the chains")
    s.add_argument("--table", required=True, help="Parquet file of the `subspace` table")
    s.set_defaults(func=subspace_tickets, outputs={"table": "subspace"})
