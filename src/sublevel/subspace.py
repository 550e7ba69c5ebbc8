"""Training in a subspace: θ(w) = θ_t + P·w, w ∈ R^d from 0, only w trained (Li et al. 2018; Larsen et al. 2022).

R runs of the same model, data and d train together in one process: θ for all runs is one [R, D] tensor,
the forward pass is vmapped over it, and one optimiser steps the [R, d] coordinates (SGD and Adam act
elementwise, so each run is optimised exactly as if alone). Run r draws its batches from its own data
seed with the dense loop's drop-last per-epoch permutations.

BatchNorm: running statistics are buffers, not trained parameters, and vmap does not carry their in-place
updates, so they stay at the anchor's values and are not used: subspace runs normalise with batch statistics,
in training (train mode, as dense training does) and in evaluation (over eval batches of eval_batch_size).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import vmap

from sublevel import projections
from sublevel.config import SubspaceTrain
from sublevel.kinds import KINDS
from sublevel.batching import EpochOrders
from sublevel.functional import functional_forward, split_metrics
from sublevel.datasets import Dataset
from sublevel.optimizers import Optimizer
from sublevel.projections import Projection
from sublevel.runtime import compiled, in_batches


CHECK_EVERY = 50  # steps between checks whether every run has diverged
# Optimiser state that moves w without a gradient. With it and the gradient zeroed, a step leaves w exactly
# where it is (Adam: m = 0 gives a zero update whatever v is; SGD: a zero momentum buffer; neither has weight
# decay here): cheaper than restoring a copy of w after every step, and no host sync.
MOMENTUM = ("exp_avg", "momentum_buffer")


@dataclass
class Result:
    w: torch.Tensor              # [R, d] final coordinates
    metrics: list[dict]          # per run: train/test loss and accuracy, diverged
    seconds: float               # training only, evaluation excluded
    batch: int = 0               # runs trained together (train_split)


def train(model: torch.nn.Module, data: Dataset, anchor: torch.Tensor, anchor_buffers: torch.Tensor,
          proj: Projection, data_seeds: list[int], spec: SubspaceTrain, evaluate: bool = True,
          label: str | None = None) -> Result:
    """R = len(data_seeds) runs θ_t + P·w trained together, θ_t `anchor` [D] for all or [R, D] one per run;
    `label`: show step progress (and throughput) under that name, as the dense and IMP loops do: at paper
    scale one d takes minutes."""
    from tqdm import tqdm

    device = anchor.device
    R, d = len(data_seeds), proj.d
    w = torch.zeros(R, d, device=device, requires_grad=True)
    opt = Optimizer.of(spec, [w])
    buffers = anchor_buffers.to(device).float().expand(R, -1).clone()  # [B] or one row per run [R, B]
    forward = vmap(functional_forward(model), in_dims=(0, 0, 0))

    def losses_of(w, x, y):  # [R] per-run losses of one step
        out = forward(anchor + proj(w), buffers, x)                        # [R, B, C]
        return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(R, -1).mean(1)

    losses_of = compiled(losses_of, spec.compile)  # one graph per (d, R): a sweep compiles once per dimension
    n, bs = len(data.y_train), spec.batch_size
    batches = EpochOrders(data_seeds, n, bs, n // bs, device)
    alive = torch.ones(R, dtype=torch.bool, device=device)
    begin = time.perf_counter()
    model.train()
    for step in tqdm(range(spec.steps), desc=label, disable=label is None, mininterval=5.0, unit="step"):
        idx = batches(step)                                                # [R, B]
        losses = losses_of(w, data.x_train[idx], data.y_train[idx])
        alive &= torch.isfinite(losses.detach())
        if step % CHECK_EVERY == CHECK_EVERY - 1 and not alive.any():  # a host sync: not every step
            break
        opt.zero_grad(set_to_none=True)
        torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
        with torch.no_grad():  # a diverged run stays where it stopped: no gradient and no momentum move it
            dead = ~alive[:, None]
            w.grad.masked_fill_(dead, 0)
            for name in MOMENTUM:
                if name in opt.state[w]:
                    opt.state[w][name].masked_fill_(dead, 0)
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - begin
    with torch.no_grad():
        theta = anchor + proj(w)
        metrics = [{"diverged": not bool(a)} for a in alive.tolist()]
        if evaluate:
            split = split_metrics(model, theta, buffers, data, spec.eval_batch_size, batch_stats=buffers.shape[-1] > 0)
            for m, s in zip(metrics, split):
                m.update(s, diverged=m["diverged"] or not (math.isfinite(s["train_loss"])
                                                           and math.isfinite(s["test_loss"])))
    return Result(w.detach(), metrics, seconds)


def projection_bytes(kind: str, D: int, d: int) -> int:
    """Memory of one run's projection: D·d floats dense; the Fastfood blocks' G (float), permutations and their
    inverses (int64), and the shared signs B; nothing for the identity."""
    if kind in ("dense", "pca"):
        return 4 * D * d
    if kind == "fastfood":
        L = 1 << max(0, math.ceil(math.log2(d)))
        return 20 * math.ceil(D / L) * L + 4 * L
    return 0


def free_bytes(device: torch.device) -> int:
    """Memory a batch may use: free GPU memory on CUDA; available RAM (the projections are built there)."""
    ram = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if device.type == "cuda":
        return min(torch.cuda.mem_get_info(device)[0], ram)
    return ram


def runs_that_fit(kind: str, D: int, d: int, device: torch.device, share: float = 0.5) -> int:
    """How many runs one batch holds, from the projections' size and ~32 D-vectors of working memory per run
    (θ, its gradient, the Fastfood intermediates); a batch that still runs out is halved (train_split)."""
    per_run = projection_bytes(kind, D, d) + 32 * 4 * D
    return max(1, int(share * free_bytes(device)) // per_run)


def train_split(model: torch.nn.Module, data: Dataset, anchor: torch.Tensor, anchor_buffers: torch.Tensor,
                kind: str, d: int, make_projection, data_seeds: list[int], spec: SubspaceTrain,
                evaluate: bool = True, max_runs: int | None = None, label: str | None = None) -> Result:
    """`train` for every seed, in batches of as many runs as fit (`runs_that_fit`, or `max_runs`): a batch that
    runs out of GPU memory anyway is halved and retried, so a sweep never fails for memory. Each run depends
    only on its own seed (and anchor), so the split changes no result. `make_projection(seeds)` builds a
    batch's P. `anchor` [D] anchors every run, or [R, D] (and `anchor_buffers` [R, B]) one row per seed."""
    fit = max_runs or runs_that_fit(kind, anchor.shape[-1], d, anchor.device)
    per_run = anchor.dim() == 2

    def run(idx: list[int]) -> list[tuple]:  # (w, metrics, share of the batch's seconds) per run
        seeds = [data_seeds[i] for i in idx]
        a, b = (anchor[idx], anchor_buffers[idx]) if per_run else (anchor, anchor_buffers)
        r = train(model, data, a, b, make_projection(seeds), seeds, spec, evaluate,
                  label=label and f"{label} ({len(seeds)} runs)")
        return [(w, m, r.seconds / len(seeds)) for w, m in zip(r.w, r.metrics)]

    done, batch = in_batches(list(range(len(data_seeds))), run, anchor.device, fit)
    return Result(torch.stack([w for w, _, _ in done]), [m for _, m, _ in done], sum(s for *_, s in done), batch)


DENSE_LIMIT = 1 << 18  # auto: a dense Gaussian P while D·d stays under 256k floats (1 MB) per run: reading P
# twice a step is memory-bound, and Fastfood is cheaper beyond that


def projection_kind(kind: str, setting: str, D: int, d: int) -> str:
    """The projection a sweep of `kind` trains through: its own basis (pca) when its anchor's trajectory spans it,
    else subspace.projection, `auto` resolved by size."""
    if KINDS[kind].from_trajectory:
        return "pca"
    if setting != "auto":
        return setting
    return "dense" if D * d <= DENSE_LIMIT else "fastfood"


def projection_maker(kind: str, setting: str, D: int, d: int, basis: torch.Tensor | None, device):
    """(projection kind, make(seeds) -> Projection) for dimension d of a sweep of `kind`; `basis` [D, ≥ d]: the
    directions of a kind spanned by its anchor's trajectory (kinds.Kind.basis)."""
    pkind = projection_kind(kind, setting, D, d)
    if pkind == "pca":
        shared = basis[:, :d].contiguous()  # every run's P: one [R, d] x [d, D] product, no per-run copy
        return pkind, lambda ss: projections.Projection("dense", D, d, {"P": shared})
    return pkind, lambda ss: projections.make(pkind, D, d, ss).to(device)
