"""Nested lottery subspaces under each subspace optimiser and step budget, on a finished default pipeline:
the final train loss per d (mean over seeds) and the distance the runs travelled, ‖w‖, beside the distance
their anchor θ_0 lies from the trained network along the subspace, ‖Vᵀ(θ_T − θ_0)‖. A budget too short to
travel it ends where the path stops, and a larger nested d can end worse; one long enough ends lower at
every larger d (docs/measurements.md).

    .venv/bin/python bench/lottery_budget.py --root . --out bench/results/<cpu>-<date>-lottery-budget.json
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import harness as bench  # bench/harness.py, beside this script
from sublevel import config, datasets, paths, sweep, trajectory
from sublevel.kinds import KINDS
from sublevel.runtime import seed_everything

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--root", required=True, help="a project whose default pipeline has run (results/)")
p.add_argument("--experiment", default="mnist1d_mlp")
p.add_argument("--dims", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
p.add_argument("--seeds", type=int, default=5)
p.add_argument("--budgets", nargs="+", default=["adam:0.01:600", "adam:0.01:2400", "adam:0.05:600",
                                                  "adam_constant_correction:0.05:600"],
               help="optimizer:lr:steps")
p.add_argument("--out", required=True)
args = p.parse_args()

root = Path(args.root)
seed_everything(1, torch.device("cpu"))
cfg = config.load(root / "config" / "config.yaml")
exp = config.experiment(cfg, args.experiment)
data = datasets.load(root / paths.dataset_store(exp.dataset))
traj = trajectory.read(root / paths.trajectory(exp.name, exp.subspace.dense_seed))
params = torch.from_numpy(traj.params()).double()
basis = KINDS["lottery"].basis(params.float(), max(args.dims)).double()
reach = {d: float((basis[:, :d].T @ (params[-1] - params[0])).norm()) for d in args.dims}
out = {**bench.header(torch.device("cpu"), suite="lottery-budget"), "experiment": exp.name,
       "distance_to_theta_T": float((params[-1] - params[0]).norm()),
       "reach_in_subspace": reach, "budgets": {}}
for budget in args.budgets:
    opt, lr, steps = budget.split(":")
    e = dataclasses.replace(exp, subspace=dataclasses.replace(exp.subspace, optimizer=opt, lr=float(lr),
                                                              steps=int(steps)))
    begin = time.perf_counter()
    rows, coords, _ = sweep.sweep(e, data, traj, "lottery", 0, args.dims, list(range(args.seeds)),
                                  torch.device("cpu"), progress=False)
    loss = {d: sum(r["train_loss"] for r in rows if r["d"] == d) / args.seeds for d in args.dims}
    out["budgets"][budget] = {"train_loss": loss, "w_norm": {d: float(coords[d].norm(dim=1).mean()) for d in args.dims},
                              "seconds": time.perf_counter() - begin}
    print(budget, " ".join(f"d={d}: {loss[d]:.3f} (|w| {out['budgets'][budget]['w_norm'][d]:.1f})"
                           for d in args.dims), flush=True)
Path(args.out).write_text(json.dumps(out, indent=1))
