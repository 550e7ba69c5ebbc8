"""A subspace sweep's jobs around the training in sublevel.subspace: one job trains the runs of one (kind, t, d)
at a block of seeds and stores their coordinates; a store rebuilds its runs exactly (P regenerated); a
refinement plan brackets the P(d) = 1/2 transition for the next round; IMP levels join the sweep as axial
tickets; a summary closes each sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from sublevel import projections, storage
from sublevel.config import RefineSpec, Threshold
from sublevel.datasets import Dataset
from sublevel.functional import split_metrics
from sublevel.kinds import KINDS
from sublevel.subspace import projection_maker, train_split


def rebuild(experiment: str, kind: str, burnin_step: int, round: int, d: int, root: Path | None = None,
            device: torch.device = torch.device("cpu")) -> tuple[torch.Tensor, list[int]]:
    """(θ [R, D], seeds): the final parameters θ_t + P w of a sweep's runs at dimension d (every block of
    seeds, in seed order), from the stored coordinates w_<d>, each store's attrs and the dense trajectory each
    run was anchored on: P is regenerated, so a store written under another `projections.VERSION` is refused
    rather than rebuilt wrongly."""
    from sublevel import paths, trajectory

    root = Path() if root is None else Path(root)
    point = root / paths.sweep_store(experiment, kind, burnin_step, round, d, 0).parent
    blocks = sorted(point.glob("block=*.zarr"), key=lambda p: int(p.name[6:-5]))
    if not blocks:
        stored = sorted(int(p.name[2:]) for p in point.parent.glob("d=*") if p.name[2:].isdigit())
        raise KeyError(f"no d = {d} in {point.parent}; stored: {stored}")
    thetas, seeds = [], []
    for path in blocks:
        store = storage.open_group(path, "sweep")
        a = store.attrs.asdict()
        if a.get("projections_version") != projections.VERSION:
            raise ValueError(f"{path} was written with projections version {a.get('projections_version')}; this "
                             f"code regenerates version {projections.VERSION}: rerun the sweep (snakemake does)")
        w = torch.from_numpy(storage.read(store, f"w_{d}", what="sweep")).to(device)
        anchored = a.get("dense_seeds") or [a["dense_seed"]] * len(a["seeds"])
        for dense_seed in sorted(set(anchored)):
            where = [i for i, s in enumerate(anchored) if s == dense_seed]
            traj = trajectory.read(root / paths.trajectory(experiment, dense_seed))
            basis = KINDS[kind].basis(torch.from_numpy(traj.params()), d)
            basis = None if basis is None else basis.to(device)
            _, make = projection_maker(kind, a["projection"], a["D"], d, basis, device)
            with torch.no_grad():
                thetas.append(torch.from_numpy(traj.params(burnin_step)).to(device)
                              + make([a["seeds"][i] for i in where])(w[where]))
            seeds += [a["seeds"][i] for i in where]
    order = sorted(range(len(seeds)), key=seeds.__getitem__)
    return torch.cat(thetas)[order], [seeds[i] for i in order]


def write_sweep_store(path: str | Path, coords: dict[int, torch.Tensor], attrs: dict) -> None:
    """A sweep block's store: the trained coordinates w_<d> [R, d] and the attrs `rebuild` regenerates P from."""
    import zarr

    with storage.atomic_path(path) as tmp:
        group = zarr.open_group(tmp, mode="w", attributes=attrs)
        for d, w in coords.items():
            storage.create_array(group, f"w_{d}", data=w.numpy())


def sweep_summary(rows: list[dict], plans: list[dict]) -> dict:
    """One sweep's rounds, its dims and runs, and the plan it ended with."""
    return {"rounds": 1 + sum(bool(p["dims"]) for p in plans), "dims": sorted({r["d"] for r in rows}),
            "runs": len(rows), "final_plan": plans[-1] if plans else None}


def superseded_blocks(tables: list[str | Path]) -> list[tuple[Path, Path]]:
    """(table, store) of each sweep block on disk beside `tables` (one sweep's current blocks, paths from the
    project root) that holds a run seed one of them holds too: a block of an earlier `subspace.seeds_per_job`
    whose runs the current blocks trained again, and whose rows would count twice in the `subspace` view. A
    block with seeds of its own (from a larger `subspace.seeds`) is kept: its runs are nowhere else."""
    from sublevel import paths

    current, seeds_at = {Path(t).resolve() for t in tables}, {}  # point (d=<d> dir) -> its current blocks' seeds
    for t in tables:
        seeds_at.setdefault(Path(t).parent.parent, set()).update(r["seed"] for r in storage.read_rows([t]))
    found = []
    for point, seeds in seeds_at.items():
        for table in sorted(point.glob("block=*/subspace.parquet")):
            if table.resolve() in current:
                continue
            try:
                rows = storage.read_rows([table])
            except storage.CorruptFile:  # damage: `sublevel check-results` names it
                continue
            if rows and seeds & {r["seed"] for r in rows}:
                r = rows[0]
                found.append((table, paths.sweep_store(r["experiment"], r["kind"], r["burnin_step"], r["round"],
                                                       r["d"], table.parent.name.removeprefix("block="))))
    return found


def sweep(exp, data: Dataset, trajs, kind: str, t: int, dims: list[int], seeds: list[int], device,
          progress: bool = True, round: int = 0, anchor_seeds: list[int] | None = None):
    """Every (d, seed) point of one (kind, t) at the given dims and run seeds (the workflow's jobs train one d
    and one block of seeds each: growing the configured dims or seeds then plans only the new jobs). Run
    seeds[i] starts from θ_t of dense run anchor_seeds[i] (default: subspace.dense_seed for all), whose
    trajectory is trajs[that seed] (a single trajectory: every run's).

    Returns (rows of the `subspace` table, {d: w [R, d]} in the order of `seeds`, attrs)."""
    from sublevel import models
    from sublevel.training import build_model

    sub = exp.subspace
    seeds = list(seeds)
    anchor_seeds = list(anchor_seeds or [sub.dense_seed] * len(seeds))
    if not isinstance(trajs, dict):
        trajs = {s: trajs for s in set(anchor_seeds)}
    model = build_model(exp, data, sub.dense_seed, device)  # its structure only: θ is each run's anchor + P w
    D = models.Layout.of(model).D
    spec = sub.training(exp.train.eval_batch_size)
    anchors = {a: _Anchor.of(model, data, trajs[a], kind, t, dims, exp.train.eval_batch_size, device)
               for a in sorted(set(anchor_seeds))}
    # The runs trained together: a random P depends on its seed alone, so runs of every anchor train as one batch
    # (θ_t per run: [R, D]); a lottery basis is its anchor's trajectory's, so those train one anchor at a time.
    if KINDS[kind].from_trajectory or len(anchors) == 1:
        batches = [([i for i, s in enumerate(anchor_seeds) if s == a], x.theta, x.buffers, x.basis)
                   for a, x in anchors.items()]
    else:
        batches = [(list(range(len(seeds))), torch.stack([anchors[s].theta for s in anchor_seeds]),
                    torch.stack([anchors[s].buffers for s in anchor_seeds]), None)]
    rows, coords = [], {d: torch.zeros(len(seeds), d) for d in dims}
    for j, d in enumerate(dims):  # one progress bar per d, its steps: at paper scale one d takes minutes
        for where, anchor, anchor_buffers, basis in batches:
            pkind, make = projection_maker(kind, sub.projection, D, d, basis, device)
            one_anchor = f" anchor={anchor_seeds[where[0]]}" if len(batches) > 1 else ""
            label = f"{exp.name} {kind} t={t} d={d}{one_anchor}" + (f" [{j + 1}/{len(dims)}]" if len(dims) > 1 else "")
            result = train_split(model, data, anchor, anchor_buffers, pkind, d, make, [seeds[i] for i in where],
                                 spec, label=label if progress else None)
            coords[d][where] = result.w.cpu()
            for i, m in zip(where, result.metrics):
                a = anchor_seeds[i]
                rows.append(dict(experiment=exp.name, dataset=exp.dataset, model=exp.model.name, num_params=D,
                                 kind=kind, burnin_step=t, d=d, seed=seeds[i], dense_seed=a, projection=pkind,
                                 steps=sub.steps, round=round, wall_seconds=result.seconds / len(where),
                                 **m, **anchors[a].metrics))
    rows.sort(key=lambda r: (dims.index(r["d"]), seeds.index(r["seed"])))
    attrs = dict(experiment=exp.name, kind=kind, burnin_step=t, dense_seed=sub.dense_seed, dense_seeds=anchor_seeds,
                 seeds=seeds, D=D, projection=sub.projection, projections_version=projections.VERSION,
                 note="P is regenerated from (seed, projection, d) by sublevel.projections at projections_version; "
                      "run seeds[i] is anchored at dense run dense_seeds[i]")
    return rows, coords, attrs


@dataclass
class _Anchor:
    """One dense run as a sweep's anchor: θ_t, its buffers, its own metrics and (lottery) its basis [D, max d]."""
    theta: torch.Tensor
    buffers: torch.Tensor
    metrics: dict[str, float]
    basis: torch.Tensor | None

    @classmethod
    def of(cls, model, data: Dataset, traj, kind: str, t: int, dims: list[int], eval_batch_size: int, device):
        theta = torch.from_numpy(traj.params(t)).to(device)
        buffers = torch.from_numpy(traj.buffers(t)).to(device)
        basis, k = None, KINDS[kind]
        if k.from_trajectory:
            all_params = torch.from_numpy(traj.params())
            if too_many := [d for d in dims if d > k.max_dim(len(all_params))]:
                why = (f"{kind} d = {too_many}: the trajectory {traj.path} holds {len(all_params)} checkpoints, "
                       f"{k.max_dim(len(all_params))} directions")
                if traj.attrs.get("diverged"):
                    raise storage.Skipped(f"{why} (its dense run diverged)")
                raise ValueError(why)
            basis = k.basis(all_params, max(dims)).to(device)
        return cls(theta, buffers, anchor_metrics(model, data, theta, buffers, eval_batch_size), basis)


@torch.no_grad()
def anchor_metrics(model: torch.nn.Module, data: Dataset, anchor: torch.Tensor, anchor_buffers: torch.Tensor,
                   eval_batch_size: int) -> dict[str, float]:
    """θ_t's own loss and accuracy on both splits (w = 0, evaluated as `train` evaluates the runs): a sweep
    whose anchor already meets ε has no threshold to measure (analysis censors it as `anchor`)."""
    buffers = anchor_buffers[None].float()
    metrics = split_metrics(model, anchor[None], buffers, data, eval_batch_size, batch_stats=buffers.shape[-1] > 0)
    return {f"anchor_{k}": v for k, v in metrics[0].items()}


def ticket_rows(exp, imp_rows: list[dict]) -> list[dict]:
    """IMP levels as axial subspaces, for the `subspace` table: a mask trains exactly its unmasked parameters,
    so d = prunable weights remaining + the never-pruned biases and BatchNorm parameters."""
    D = exp.num_params()
    return [dict(experiment=exp.name, dataset=exp.dataset, model=exp.model.name, num_params=D, kind="ticket",
                 burnin_step=r["rewind_step"], d=r["remaining"] + D - r["prunable"], seed=r["seed"],
                 projection="axial", steps=None, round=0, dense_seed=r["seed"], train_loss=r["train_loss"],
                 train_accuracy=r["train_accuracy"],
                 test_loss=r["test_loss"], test_accuracy=r["test_accuracy"], diverged=r["diverged"],
                 wall_seconds=None, anchor_train_loss=None, anchor_train_accuracy=None, anchor_test_loss=None,
                 anchor_test_accuracy=None)
            for r in imp_rows if r["method"] == "imp"]


def success(rows: list[dict], th: Threshold) -> dict[int, float]:
    """P(d): the fraction of runs at each d whose final metric reached the sublevel set (a diverged run fails)."""
    ok: dict[int, list[bool]] = {}
    for r in rows:
        ok.setdefault(r["d"], []).append(th.met(r[th.metric]) and not r["diverged"])
    return {d: sum(v) / len(v) for d, v in sorted(ok.items())}


def refine_plan(rows: list[dict], refine: RefineSpec, round: int, d_max: int) -> dict:
    """The next round's dimensions: the geometric midpoint of the bracket (lo, hi) around P(d) = 1/2, where hi
    is the smallest d with P >= 1/2 and lo the largest smaller d with P < 1/2. None once hi/lo <= ratio, the
    integers meet, there is no bracket, or max_rounds is reached."""
    p = success(rows, refine.target)
    plan = {"round": round, "success": {str(d): v for d, v in p.items()}, "dims": [], "bracket": None}
    if not rows:
        return dict(plan, reason="no runs to refine (the sweep was skipped)")
    above = [d for d, v in p.items() if v >= 0.5]
    if not above:
        return dict(plan, reason="no d reached P >= 1/2")
    hi = min(above)
    below = [d for d, v in p.items() if v < 0.5 and d < hi]
    if not below:
        return dict(plan, reason="P >= 1/2 already at the smallest d")
    lo = max(below)
    plan["bracket"] = [lo, hi]
    mid = round_half(math.sqrt(lo * hi))
    if hi / lo <= refine.ratio or mid in (lo, hi) or mid > d_max:
        return dict(plan, reason="resolution reached")
    if round >= refine.max_rounds:
        return dict(plan, reason="max_rounds reached")
    return dict(plan, dims=[mid], reason="bisect")


def round_half(x: float) -> int:
    return int(math.floor(x + 0.5))
