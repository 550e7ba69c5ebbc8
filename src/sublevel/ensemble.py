"""R networks of one architecture trained together, each exactly as `training.train` would train it alone.

IMP is sequential in its levels but not in its seeds, and a level's baselines and its instability copy are
independent runs of the same schedule: on a GPU a small network leaves the device idle between kernel
launches, so these runs share one vmapped forward/backward instead of taking turns. The parameters of all
runs are stacked ([R, *shape] per tensor) and one optimiser steps them; SGD (momentum, Nesterov, weight
decay) and Adam act elementwise and all runs share the learning-rate schedule, so run r is optimised as if
alone. The loss is the sum of the per-run mean losses, whose gradient with respect to run r's parameters is
run r's own. BatchNorm running statistics are stacked buffers that vmap updates per run.

Each run has its own initialisation seed, data seed (batch order, augmentation), start (rewind point) and
mask. A run whose loss turns non-finite stops where `train` would stop it: its parameters stay at that
step's values (its BatchNorm statistics include that step's forward pass) while the others go on.
Results equal one-run-at-a-time training up to float rounding (batched kernels sum in another order).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from tqdm import tqdm

from sublevel import models
from sublevel.batching import EpochOrders, augment
from sublevel.config import Experiment
from sublevel.datasets import Dataset
from sublevel.functional import split_metrics
from sublevel.runtime import autocast, compiled
from sublevel.schedule import Schedule
from sublevel.optimizers import Optimizer
from sublevel.training import Start, apply_mask, network


@dataclass(frozen=True)
class Run:
    init_seed: int
    data_seed: int
    start: Start | None = None
    mask: torch.Tensor | None = None    # bool [D]: pruned weights stay exactly zero


@dataclass
class Final:
    """What `train` leaves at its last step, for one run: θ, buffers and the final train/test metrics."""

    theta: torch.Tensor     # float32 [D], on the CPU
    buffers: torch.Tensor   # float32 [B], on the CPU
    metrics: dict           # {train,test}_{loss,accuracy}
    diverged: bool
    seconds: float          # the batch's training time, shared by its runs
    curve: list[dict] = field(default_factory=list)   # {step, val_loss, val_accuracy, test_loss, test_accuracy}


def train(exp: Experiment, data: Dataset, runs: list[Run], device: torch.device, progress: bool = True,
          label: str = "", curve: frozenset[int] = frozenset()) -> list[Final]:
    """Train every run from its start to the schedule's last step, all in one batch. At the steps in `curve`
    (and the last), each run's validation and test loss and accuracy are recorded: the curve that early
    stopping reads (Frankle & Carbin 2019)."""
    sched = Schedule.resolve(exp, len(data.y_train))
    starts = {r.start.step if r.start is not None else 0 for r in runs}
    if len(starts) != 1:
        raise ValueError(f"runs trained together share their first step; got {sorted(starts)}")
    first, last, R = starts.pop(), sched.total, len(runs)
    nets = [network(exp, data, r.init_seed, device, r.start) for r in runs]
    base = nets[0]
    layout = models.Layout.of(base)
    names = [n for n, _ in base.named_buffers()]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in nets]).requires_grad_()
              for n in layout.names}
    buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in nets]) for n in names}
    del nets  # the stacks hold every run now; `base` only lends functional_call its structure
    masks = None
    if any(r.mask is not None for r in runs):
        flat = torch.stack([(r.mask if r.mask is not None else torch.ones(layout.D, dtype=torch.bool))
                            .to(device, torch.float32) for r in runs])                         # [R, D]
        masks = list(layout.unflatten(flat).values())                                      # [R, *shape] each
        apply_mask(list(params.values()), masks)
    opt = Optimizer.of(exp.train, params.values())
    forward = compiled(vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, 0)),
                       exp.train.compile)
    batches = EpochOrders([r.data_seed for r in runs], len(data.y_train), exp.train.batch_size,
                          sched.steps_per_epoch, device)
    alive = torch.ones(R, dtype=torch.bool, device=device)
    frozen: dict[str, torch.Tensor] = {}   # the stopped runs' parameters and buffers, restored after each step
    curves: list[list[dict]] = [[] for _ in runs]
    evaluating = 0.0   # seconds of the curve's evaluations, which `seconds` leaves out

    def record(step: int) -> None:
        nonlocal evaluating
        begin = time.perf_counter()
        with torch.no_grad():
            thetas, bufs = _flat(params, buffers, layout, names, R, device)
            points = split_metrics(base, thetas, bufs, data, exp.train.eval_batch_size, splits=("val", "test"))
        base.train()
        for c, pt in zip(curves, points):
            c.append(dict(step=step, **pt))
        evaluating += time.perf_counter() - begin   # .tolist() above synchronised the device

    begin = time.perf_counter()
    base.train()
    for step in tqdm(range(first, last), desc=f"{exp.name} {label}".strip(), disable=not progress,
                     mininterval=5.0, unit="step"):
        if step in curve:
            record(step)
        idx = batches(step)                                                                 # [R, B]
        x = data.x_train[idx]
        if exp.train.augment:
            x = torch.stack([augment(xr, batches.augmentation(step, r)) for r, xr in enumerate(x)])
        for g in opt.param_groups:
            g["lr"] = sched.lr(step, exp.train)
        with autocast(exp, device):
            out = forward(params, buffers, x)                                               # [R, B, C]
        losses = F.cross_entropy(out.flatten(0, 1).float(), data.y_train[idx].flatten(), reduction="none")
        losses = losses.view(R, -1).mean(1)
        stopped = alive & ~torch.isfinite(losses.detach())
        if stopped.any():  # a host sync per step, as `train`'s own check
            alive &= ~stopped
            for k, v in (params | buffers).items():  # this step's state of the runs that stop now
                now = v.detach().clone()
                frozen[k] = now if k not in frozen else torch.where(_rows(stopped, v), now, frozen[k])
            if not alive.any():
                break
        opt.zero_grad(set_to_none=True)
        torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
        opt.step()
        if masks is not None:
            apply_mask(list(params.values()), masks)
        if frozen:
            with torch.no_grad():
                for k, v in (params | buffers).items():
                    v.copy_(torch.where(_rows(alive, v), v, frozen[k]))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - begin - evaluating
    if curve:
        record(last)
    with torch.no_grad():
        thetas, bufs = _flat(params, buffers, layout, names, R, device)
        metrics = split_metrics(base, thetas, bufs, data, exp.train.eval_batch_size)
    finite = lambda m: math.isfinite(m["train_loss"]) and math.isfinite(m["test_loss"])
    return [Final(t.cpu(), b.cpu(), m, not (a and finite(m)), seconds, c)
            for t, b, m, a, c in zip(thetas, bufs, metrics, alive.tolist(), curves)]


def _flat(params: dict, buffers: dict, layout: models.Layout, names: list[str], R: int, device
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The runs' parameters [R, D] and buffers [R, B] as flat vectors."""
    thetas = torch.cat([params[n].detach().flatten(1) for n in layout.names], 1)
    bufs = (torch.cat([buffers[n].reshape(R, -1).float() for n in names], 1) if names
            else torch.zeros(R, 0, device=device))
    return thetas, bufs


def _rows(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[R] flags shaped to broadcast over a stacked [R, ...] tensor."""
    return flags.view(-1, *[1] * (like.dim() - 1))


