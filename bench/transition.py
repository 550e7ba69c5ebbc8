"""P(d) at the random-subspace transition of a finished default pipeline, with many seeds: compares two
versions of the projections (results in bench/results/*-transition-v*.json). The version is the one the
imported `sublevel` has; an older one from a worktree:

    git worktree add /tmp/v1 bb20a3e    # projections version 1
    PYTHONPATH=/tmp/v1/src .venv/bin/python bench/transition.py --root . --out v1.json
    .venv/bin/python bench/transition.py --root . --out v2.json
"""

import argparse
import json
import time
from pathlib import Path

import torch

import harness as bench  # bench/harness.py, beside this script
from sublevel import config, datasets, paths, projections, subspace, trajectory
from sublevel.runtime import seed_everything
from sublevel.training import build_model

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--root", required=True, help="a project whose default pipeline has run (results/)")
p.add_argument("--experiment", default="mnist1d_mlp")
p.add_argument("--dims", type=int, nargs="+", default=[1218, 1448, 1722, 2048, 2435])
p.add_argument("--seeds", type=int, default=100)
p.add_argument("--threshold", type=float, default=0.6, help="success: final train accuracy >= this")
p.add_argument("--out", required=True)
args = p.parse_args()

seed_everything(2, torch.device("cpu"))
root = Path(args.root)
exp = config.experiment(config.load(root / "config" / "config.yaml"), args.experiment)
data = datasets.load(root / paths.dataset_store(exp.dataset))
sub = exp.subspace
traj = trajectory.read(root / paths.trajectory(exp.name, sub.dense_seed))
model = build_model(exp, data, sub.dense_seed, torch.device("cpu"))
anchor = torch.from_numpy(traj.params(0))
# as sweep.sweep builds it, spelled out so the script also runs on checkouts whose class lived in subspace
spec = getattr(config, "SubspaceTrain", getattr(subspace, "SubspaceTrain", None))(
    sub.optimizer, sub.lr, sub.momentum, sub.steps, sub.batch_size, exp.train.eval_batch_size, sub.compile)
seeds = list(range(args.seeds))
out = {**bench.header(torch.device("cpu"), suite="transition"), "projections_version": getattr(projections, "VERSION", 1),
       "experiment": exp.name, "threshold": args.threshold, "seeds": args.seeds, "rows": []}
for d in args.dims:
    begin = time.perf_counter()
    make = lambda ss: projections.make("fastfood", len(anchor), d, ss)
    r = subspace.train_split(model, data, anchor, torch.zeros(0), "fastfood", d, make, seeds, spec, max_runs=50)
    acc = [m["train_accuracy"] for m in r.metrics]
    row = {"d": d, "p_success": sum(a >= args.threshold for a in acc) / len(acc),
           "mean_train_accuracy": sum(acc) / len(acc), "train_accuracy": acc}
    out["rows"].append(row)
    print(f"version {out['projections_version']} d={d}: P = {row['p_success']:.2f}, mean train accuracy "
          f"{row['mean_train_accuracy']:.4f} ({time.perf_counter() - begin:.0f} s)", flush=True)
with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
