"""Iterative magnitude pruning with rewinding, its baselines, and linear mode connectivity.

Level 0 trains the dense network from the rewind point θ_k (at k = 0 this is the dense run itself);
level ℓ ≥ 1 prunes a fraction p of the remaining weights of level ℓ−1's final network by magnitude,
rewinds the survivors to θ_k and trains again to the end, the mask enforced throughout (Frankle & Carbin
2019; Frankle et al. 2020). Each level is its own job and its own store, so an interrupted chain resumes
from the last completed level. Baselines use IMP's per-layer counts at the same level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr

from sublevel import connectivity, ensemble, models, pruning, schema, storage
from sublevel.config import Experiment
from sublevel.schedule import Schedule, parse_duration
from sublevel.datasets import Dataset
from sublevel.trajectory import Stored
from sublevel.runtime import in_batches
from sublevel.training import Start, build_model, train

OTHER_DATA_ORDER = 10_000   # copy B of instability analysis orders data by seed + this
OTHER_INIT = 1_000_000      # random reinitialisation draws its weights with seed + this


@dataclass
class Level:
    """One trained (masked) network of a chain or of a baseline."""

    method: str
    level: int
    mask: torch.Tensor      # bool [D]
    weights: torch.Tensor   # float32 [D], final
    buffers: torch.Tensor   # float32 [B], final
    row: dict               # its row of the `imp` table
    curve: np.ndarray | None = None   # [E, 5]: CURVE_COLUMNS at the eval points (imp.eval_every), or None

    @classmethod
    def read(cls, path: str | Path, method: str = "imp") -> "Level":
        """One network of a level store (see write_levels)."""
        g = storage.open_group(path, "IMP level store")
        if method not in g:
            raise KeyError(f"{path} holds {sorted(g.group_keys())}, not {method!r}")
        g = g[method]
        a = g.attrs.asdict()
        t = lambda k: torch.from_numpy(storage.read(g, k, what="IMP level store"))
        curve = storage.read(g, "curve", what="IMP level store") if "curve" in g else None
        return cls(a["method"], a["level"], t("mask"), t("weights"), t("buffers"), a["row"], curve)


def write_levels(path: str | Path, levels: list[Level]) -> None:
    """A level store: one subgroup per method (mask [D] bool, weights [D], buffers [B]), written atomically."""
    with storage.atomic_path(path) as tmp:
        root = zarr.open_group(tmp, mode="w", attributes={"methods": [lv.method for lv in levels]})
        for lv in levels:
            g = root.create_group(lv.method, attributes={"method": lv.method, "level": lv.level, "row": lv.row})
            storage.create_array(g, "mask", data=lv.mask.numpy())
            storage.create_array(g, "weights", data=lv.weights.numpy().astype(np.float32))
            storage.create_array(g, "buffers", data=lv.buffers.numpy().astype(np.float32))
            if lv.curve is not None:
                arr = storage.create_array(g, "curve", data=lv.curve.astype(np.float64))
                arr.attrs["columns"] = list(CURVE_COLUMNS)


CURVE_COLUMNS = ("step", "val_loss", "val_accuracy", "test_loss", "test_accuracy")


def early_stopping(curve: list[dict]) -> dict:
    """Frankle & Carbin 2019's early-stopping point of one run: the eval point of least validation loss (the
    earliest of equals; non-finite losses never), with the test accuracy there. All None without a curve or
    without a finite loss."""
    finite = [pt for pt in curve if math.isfinite(pt["val_loss"])]
    if not finite:
        return dict(early_stop_step=None, early_stop_val_loss=None, early_stop_test_accuracy=None)
    best = min(finite, key=lambda pt: (pt["val_loss"], pt["step"]))
    return dict(early_stop_step=int(best["step"]), early_stop_val_loss=best["val_loss"],
                early_stop_test_accuracy=best["test_accuracy"])


def curve_steps(exp: Experiment, data: Dataset, first: int) -> frozenset[int]:
    """The steps from `first` on at which a masked run records its validation curve: the multiples of
    imp.eval_every, `first` itself and (ensemble.train adds it) the last; none without imp.eval_every."""
    if exp.imp is None or exp.imp.eval_every is None:
        return frozenset()
    sched = Schedule.resolve(exp, len(data.y_train))
    every = parse_duration(exp.imp.eval_every, sched.steps_per_epoch)
    return frozenset({first} | {s for s in range(0, sched.total, every) if s > first})


def rewind_point(exp: Experiment, data: Dataset, traj: Stored, diet: str | Path | None = None) -> Start:
    """θ_k of the dense run, or with a data diet the network its pre-training on a subset left at step k."""
    if diet is not None:
        return read_start(diet)
    k = Schedule.resolve(exp, len(data.y_train)).rewind
    return Start(k, torch.from_numpy(traj.params(k)), torch.from_numpy(traj.buffers(k)))


def diet_pretrain(exp: Experiment, data: Dataset, seed: int, keep: np.ndarray, device) -> tuple[Start, bool]:
    """Paul et al. 2022: steps 0..k from the seed's initialisation on the training examples `keep` only,
    with the full run's learning-rate schedule; IMP then rewinds to this point instead of θ_k."""
    from sublevel.datasets import subset

    sched = Schedule.resolve(exp, len(data.y_train))
    model, run = train(exp, subset(data, keep), seed, seed, device, checkpoints=False, eval_every=False,
                       stop=sched.rewind, schedule=sched, progress=False)
    return Start(sched.rewind, models.flatten(model).cpu(), models.flatten_buffers(model).cpu()), run.diverged


def diet_start(exp: Experiment, data: Dataset, seed: int, scores_path: str | Path | None, device
               ) -> tuple[Start, dict]:
    """The data-diet rewind point of one seed and the attrs its store records: the configured subset (by the
    seed-averaged score at the configured step, or random) pre-trained from the seed's initialisation."""
    from sublevel import scores

    diet = exp.imp.data_diet
    step = exp.diet_score_step(Schedule.resolve(exp, len(data.y_train)))
    score = None if step is None else scores.read_mean(scores_path, diet.score, step)
    keep = scores.diet_subset(len(data.y_train), diet.keep, diet.fraction, seed, score)
    start, diverged = diet_pretrain(exp, data, seed, keep, device)
    return start, {"keep": diet.keep, "fraction": diet.fraction, "examples": len(keep),
                   "score": diet.score, "score_step": step, "diverged": diverged,
                   "mean_score": None if score is None else float(np.mean(score[keep]))}


def write_start(path: str | Path, start: Start, attrs: dict) -> None:
    with storage.atomic_path(path) as tmp:
        g = zarr.open_group(tmp, mode="w", attributes=dict(attrs, step=int(start.step)))
        storage.create_array(g, "params", data=start.theta.numpy().astype(np.float32))
        storage.create_array(g, "buffers", data=start.buffers.numpy().astype(np.float32))


def read_start(path: str | Path) -> Start:
    g = storage.open_group(path, "rewind point")
    return Start(int(g.attrs["step"]), torch.from_numpy(storage.read(g, "params", what="rewind point")),
                 torch.from_numpy(storage.read(g, "buffers", what="rewind point")))


@dataclass(frozen=True)
class Chain:
    """One seed's IMP chain as a job sees it: its dense trajectory, the level the job builds on (the previous
    level for imp_level, the ticket for baselines, the level itself for instability) and its diet start."""

    seed: int
    trajectory: Stored
    network: Level | None = None
    diet: str | Path | None = None


@dataclass(frozen=True)
class _Job:
    """One masked run from a rewind point, and what its row records."""

    chain: Chain
    data_seed: int
    start: Start
    mask: torch.Tensor
    method: str
    level: int


def _train_masked(exp: Experiment, data: Dataset, jobs: list[_Job], device, progress: bool,
                  curve: bool = True) -> list[Level]:
    """Every job in one batch (ensemble.train), halved if it runs out of GPU memory. `curve`: record the
    validation curve (imp.eval_every) that early stopping reads; the second copies of instability analysis and
    the fraction sweep's runs, judged by their final weights, skip it."""
    layout = _layout(exp, data)
    runs = [ensemble.Run(j.chain.seed, j.data_seed, Start(j.start.step, j.start.theta * j.mask, j.start.buffers),
                         j.mask) for j in jobs]
    label = f"{jobs[0].method} level {jobs[0].level} x{len(jobs)}"
    steps = curve_steps(exp, data, jobs[0].start.step) if curve else frozenset()
    finals, _ = in_batches(runs, lambda part: ensemble.train(exp, data, part, device, progress, label, steps),
                           device)
    out = []
    for j, f in zip(jobs, finals):
        sparsity, remaining = pruning.sparsity(j.mask, layout)
        m = f.metrics
        row = dict(experiment=exp.name, dataset=exp.dataset, model=exp.model.name, seed=j.chain.seed,
                   method=j.method, level=j.level, sparsity=sparsity, remaining=remaining,
                   prunable=int(layout.prunable_mask().sum()), train_loss=m["train_loss"],
                   train_accuracy=m["train_accuracy"], test_loss=m["test_loss"], test_accuracy=m["test_accuracy"],
                   rewind_step=j.start.step, diverged=f.diverged, **early_stopping(f.curve),
                   matching_tolerance=exp.imp.matching_tolerance)
        points = np.array([[pt[c] for c in CURVE_COLUMNS] for pt in f.curve]) if f.curve else None
        out.append(Level(j.method, j.level, j.mask.clone(), f.theta, f.buffers, row, points))
    return out


def _layout(exp: Experiment, data: Dataset) -> models.Layout:
    return models.Layout.of(models.build_spec(exp.model, data.in_shape, data.num_classes))


def imp_levels(exp: Experiment, data: Dataset, chains: list[Chain], level: int, device,
               progress: bool = True) -> list[Level]:
    """Level ℓ of every chain, trained together. Level 0: the dense network from θ_k. Level ℓ: prune the
    chain's level ℓ−1 (`chain.network`), rewind to θ_k, train."""
    layout = _layout(exp, data)
    jobs = []
    for c in chains:
        if level == 0:
            mask = pruning.full_mask(layout)
        else:
            if c.network is None or c.network.level != level - 1:
                raise ValueError(f"level {level} needs level {level - 1} of the chain")
            imp = exp.imp
            mask = pruning.prune(c.network.weights, c.network.mask, layout, imp.fraction, imp.scope,
                                 imp.output_fraction)
        jobs.append(_Job(c, c.seed, rewind_point(exp, data, c.trajectory, c.diet), mask, "imp", level))
    return _train_masked(exp, data, jobs, device, progress)


def imp_level(exp: Experiment, data: Dataset, traj: Stored, seed: int, level: int, previous: Level | None,
              device, progress: bool = True, diet: str | Path | None = None) -> Level:
    """One chain's level ℓ (imp_levels with one chain)."""
    return imp_levels(exp, data, [Chain(seed, traj, previous, diet)], level, device, progress)[0]


def _random_prune(exp, data, chain, start, layout, gen):
    """A random mask, rewound weights."""
    return pruning.matched(torch.rand(layout.D, generator=gen), chain.network.mask, layout), start


def _random_reinit(exp, data, chain, start, layout, gen):
    """The IMP mask, fresh weights."""
    fresh = build_model(exp, data, chain.seed + OTHER_INIT, torch.device("cpu"))
    return chain.network.mask, Start(start.step, models.flatten(fresh), models.flatten_buffers(fresh))


def _oneshot(exp, data, chain, start, layout, gen):
    """Magnitude of the dense network's final weights, in one shot."""
    traj = chain.trajectory
    return pruning.matched(torch.from_numpy(traj.params(int(traj.steps[-1]))).abs(), chain.network.mask, layout), start


def _init_magnitude(exp, data, chain, start, layout, gen):
    """Magnitude at initialisation."""
    return pruning.matched(torch.from_numpy(chain.trajectory.params(0)).abs(), chain.network.mask, layout), start


# method -> (mask, start) of the baseline run at a chain's ticket; the config's imp.baselines choices
BASELINE_RUNS = {"random_prune": _random_prune, "random_reinit": _random_reinit, "oneshot": _oneshot,
                 "init_magnitude": _init_magnitude}
BASELINES = tuple(BASELINE_RUNS)  # the config's imp.baselines choices
METHODS = ("imp", *BASELINES)     # the `method` column of the imp table


def baselines(methods: list[str], exp: Experiment, data: Dataset, chains: list[Chain], device,
              progress: bool = True) -> list[Level]:
    """Every baseline of every chain at the per-layer sparsity of the chain's IMP mask `chain.network` (the
    ticket), all trained together; ordered chain by chain, method by method."""
    if unknown := [m for m in methods if m not in BASELINE_RUNS]:
        raise ValueError(f"unknown baseline {unknown[0]!r}; known: {BASELINES}")
    layout = _layout(exp, data)
    jobs = []
    for c in chains:
        start = rewind_point(exp, data, c.trajectory, c.diet)
        for method in methods:
            gen = torch.Generator().manual_seed(c.seed * 1009 + c.network.level)
            mask, s = BASELINE_RUNS[method](exp, data, c, start, layout, gen)
            jobs.append(_Job(c, c.seed, s, mask, method, c.network.level))
    return _train_masked(exp, data, jobs, device, progress)


def baseline(method: str, exp: Experiment, data: Dataset, traj: Stored, seed: int, ticket: Level, device,
             progress: bool = True, diet: str | Path | None = None) -> Level:
    """One baseline of one chain (baselines with one chain and one method)."""
    return baselines([method], exp, data, [Chain(seed, traj, ticket, diet)], device, progress)[0]


def barrier_rows(exp: Experiment, data: Dataset, kind: str, seed: int, level: int, a: Level, b: Level,
                 dense: Level, rewind_step: int, device, network: Level) -> list[dict]:
    """Error barrier between a and b on each split; `network` is the one whose test accuracy decides `matching`."""
    model = build_model(exp, data, seed, device)
    matching = schema.matching(network.row["test_accuracy"], dense.row["test_accuracy"], exp.imp.matching_tolerance)
    rows = []
    for split in ("train", "test"):
        x, y = data.split(split)
        alphas, errors, losses = connectivity.interpolation_curve(
            model, a.weights, b.weights, x, y, exp.imp.alphas, a.buffers, b.buffers, exp.train.eval_batch_size)
        rows.append(dict(experiment=exp.name, seed=seed, kind=kind, level=level, rewind_step=rewind_step,
                         sparsity=network.row["sparsity"], split=split, barrier=connectivity.barrier(alphas, errors),
                         alpha=alphas.tolist(), error=errors.tolist(), loss=losses.tolist(), matching=bool(matching),
                         test_accuracy=network.row["test_accuracy"]))
    return rows


def instability(exp: Experiment, data: Dataset, chains: list[Chain], dense: list[Level], device,
                progress: bool = True) -> list[list[dict]]:
    """Frankle et al. 2020: for each chain, a second copy of its level `chain.network` from θ_k with the same
    mask and another data order (the copies of all chains trained together); the barrier between copy and
    network says whether the rewind point is stable to SGD noise. Returns each chain's barrier rows."""
    jobs = [_Job(c, c.seed + OTHER_DATA_ORDER, rewind_point(exp, data, c.trajectory, c.diet), c.network.mask,
                 "imp", c.network.level) for c in chains]
    copies = _train_masked(exp, data, jobs, device, progress, curve=False)
    return [barrier_rows(exp, data, "instability", c.seed, c.network.level, c.network, copy, d, j.start.step,
                         device, c.network) for c, copy, d, j in zip(chains, copies, dense, jobs)]


def successive(exp: Experiment, data: Dataset, seed: int, a: Level, b: Level, dense: Level, device) -> list[dict]:
    """Paul et al. 2023: level ℓ's network, pruned with level ℓ+1's mask, against level ℓ+1's network.
    The row's level is ℓ+1 (the sparser network, whose accuracy decides `matching`)."""
    pruned = Level(a.method, a.level, b.mask, a.weights * b.mask, a.buffers, a.row)
    return barrier_rows(exp, data, "imp_successive", seed, b.level, pruned, b, dense, b.row["rewind_step"], device, b)


def sweep_masks(exp: Experiment, data: Dataset, chain: Chain) -> list[tuple[str, float, torch.Tensor]]:
    """(method, fraction, mask) of every run of a chain's fraction sweep at its level `chain.network`: each
    fraction of the level's remaining weights removed by magnitude, and (imp.fraction_sweep.random) at random
    among them at the magnitude mask's per-layer counts."""
    fs, layout, net = exp.imp.fraction_sweep, _layout(exp, data), chain.network
    out = []
    for i, p in enumerate(fs.fractions):
        magnitude = pruning.prune(net.weights, net.mask, layout, p, exp.imp.scope, None)
        out.append(("magnitude", p, magnitude))
        if fs.random:
            gen = torch.Generator().manual_seed(chain.seed * 1009 + net.level * 101 + i)
            scores = torch.rand(layout.D, generator=gen) + 2.0 * net.mask.float()  # the survivors first
            out.append(("random", p, pruning.matched(scores, magnitude, layout)))
    return out


def fraction_sweep(exp: Experiment, data: Dataset, chains: list[Chain], device, progress: bool = True,
                   lanczos_iterations: int = 20) -> list[list[dict]]:
    """Paul et al. 2023: how much one level can prune. For each chain's level ℓ network θ_ℓ (mask m_ℓ), every
    (method, fraction) mask m is rewound to θ_k and trained (all runs of all chains together); the row records
    the error barrier between θ_ℓ ⊙ m (θ_ℓ projected onto the new mask) and the new network on each split, the
    loss the projection costs (measured on the training split, and to second order, gᵀΔ + ½ΔᵀHΔ with
    Δ = θ_ℓ ⊙ m − θ_ℓ and H the Hessian of the sparse network at θ_ℓ), and θ_ℓ's top Hessian eigenvalue.
    Returns each chain's rows of the `prune_sweep` table."""
    from sublevel import hessian

    fs, layout = exp.imp.fraction_sweep, _layout(exp, data)
    runs = [(c, method, p, mask) for c in chains for method, p, mask in sweep_masks(exp, data, c)]
    jobs = [_Job(c, c.seed, rewind_point(exp, data, c.trajectory, c.diet), mask, "imp", c.network.level + 1)
            for c, _, _, mask in runs]
    trained = _train_masked(exp, data, jobs, device, progress, curve=False)
    model = build_model(exp, data, chains[0].seed, device)
    x, y = data.split("train")
    per_chain = {c.seed: [] for c in chains}
    curvature = {}
    for (c, method, p, mask), new in zip(runs, trained):
        net = c.network
        if c.seed not in curvature:  # θ_ℓ's loss, gradient and H·v (of the sparse network), once per chain
            models.load_flat_buffers(model, net.buffers.to(device))
            theta = net.weights.to(device)
            hvp = hessian.hvp_operator(model, theta, x, y, dict(model.named_buffers()), mask=net.mask.to(device))
            _, g = hessian.loss_and_gradient(model, theta, x, y, dict(model.named_buffers()))
            top = float(hessian.lanczos(hvp, layout.D, lanczos_iterations, 1, seed=c.seed, device=device)[0])
            curvature[c.seed] = (hvp, g * net.mask.to(device), top)
        hvp, g, top = curvature[c.seed]
        projected = net.weights * mask
        delta = (projected - net.weights).to(device, torch.float64)
        quadratic = float(g @ delta) + 0.5 * float(delta @ hvp(delta))
        sparsity, remaining = pruning.sparsity(mask, layout)
        for split in ("train", "test"):
            xs, ys = data.split(split)
            alphas, errors, losses = connectivity.interpolation_curve(
                model, projected, new.weights, xs, ys, exp.imp.alphas, net.buffers, new.buffers,
                exp.train.eval_batch_size)
            b = connectivity.barrier(alphas, errors)
            per_chain[c.seed].append(dict(
                experiment=exp.name, seed=c.seed, rewind_step=new.row["rewind_step"], level=net.level,
                method=method, fraction=float(p), sparsity_before=net.row["sparsity"], sparsity=sparsity,
                remaining=remaining, split=split, barrier=b, connected=bool(b <= fs.tolerance),
                tolerance=fs.tolerance, projected_error=float(errors[0]), new_error=float(errors[-1]),
                loss_rise=float(losses[0]) - net.row["train_loss"] if split == "train" else None,
                loss_rise_quadratic=quadratic, top_eigenvalue=top, test_accuracy=new.row["test_accuracy"],
                diverged=bool(new.row["diverged"])))
    return [per_chain[c.seed] for c in chains]
