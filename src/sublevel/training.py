"""Dense training with a checkpointed trajectory.

One loop, readable top to bottom: batches are drawn on the device from a
per-epoch permutation (drop-last) seeded by `data_seed`, while `init_seed` alone
fixes the initialisation, so two runs can share an init and differ only in SGD
noise. θ is recorded at the schedule's checkpoint steps; loss and accuracy on
the full train and test sets at its eval steps. A non-finite loss stops the run
and marks every row diverged, without failing the job.
"""

from __future__ import annotations

from collections.abc import Callable

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sublevel import models
from sublevel.batching import EpochOrders, augment
from sublevel.config import Experiment
from sublevel.datasets import Dataset
from sublevel.functional import evaluate
from sublevel.optimizers import Optimizer
from sublevel.runtime import autocast, compiled
from sublevel.schedule import Schedule


def build_model(exp: Experiment, data: Dataset, init_seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(init_seed)
    return models.build_spec(exp.model, data.in_shape, data.num_classes).to(device)


def network(exp: Experiment, data: Dataset, init_seed: int, device: torch.device, start: Start | None = None
            ) -> nn.Module:
    """The network initialised by `init_seed`, at `start`'s parameters and buffers when given (a rewind point)."""
    model = build_model(exp, data, init_seed, device)
    if start is not None:
        models.load_flat(model, start.theta)
        if start.buffers is not None:
            models.load_flat_buffers(model, start.buffers.to(device))
    return model


@dataclass
class Start:
    """Where a run starts: step k with parameters θ_k (and buffers), as IMP's rewinding needs."""

    step: int
    theta: torch.Tensor
    buffers: torch.Tensor | None = None


@dataclass
class Trajectory:
    """What a run leaves: θ and buffers at the checkpoint steps, and the eval rows."""

    steps: list[int] = field(default_factory=list)
    params: list[np.ndarray] = field(default_factory=list)
    buffers: list[np.ndarray] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    diverged: bool = False
    seconds: float = 0.0         # the whole loop
    eval_seconds: float = 0.0    # of which evaluating on the full splits

    def final(self, split: str) -> dict:
        return [r for r in self.rows if r["split"] == split][-1]


def train(exp: Experiment, data: Dataset, init_seed: int, data_seed: int, device: torch.device, *,
          start: Start | None = None, mask: torch.Tensor | None = None, checkpoints: bool = True,
          eval_every: bool = True, progress: bool = True, stop: int | None = None,
          schedule: Schedule | None = None, log: Callable[[int, dict], None] | None = None
          ) -> tuple[nn.Module, Trajectory]:
    """Train from initialisation (or from `start`) to the schedule's last step (or to step `stop`).

    `mask` (bool [D]) keeps pruned weights exactly zero: θ is masked before the first step and after every
    optimiser step. `checkpoints`/`eval_every` off: record only the final state (IMP levels, baselines).
    `schedule`: the learning-rate schedule of another data size (a data-diet subset follows the full
    dataset's schedule; its own epochs set only the data order). `log(step, scalars)` sees each evaluation as
    it is made (a live view: TensorBoard)."""
    sched = schedule or Schedule.resolve(exp, len(data.y_train))
    last = sched.total if stop is None else stop
    model = network(exp, data, init_seed, device, start)
    fmt = torch.channels_last if exp.train.channels_last and data.x_train.dim() == 4 else torch.contiguous_format
    model = model.to(memory_format=fmt)  # NHWC convolutions: faster on tensor cores
    params = list(model.parameters())
    masks = None
    if mask is not None:
        layout = models.Layout.of(model)
        masks = [m.to(device, torch.float32) for m in layout.unflatten(mask.to(torch.float32)).values()]
        apply_mask(params, masks)
    opt = Optimizer.of(exp.train, model.parameters())
    step_model = compiled(model, exp.train.compile)  # the same parameters; evaluation runs `model` eagerly
    first = start.step if start is not None else 0
    ckpt_steps = {s for s in sched.checkpoints if s <= last} | {last} if checkpoints else {last}
    eval_steps = {s for s in sched.eval_steps(exp.checkpoints.evaluate) if s <= last} | {last} if eval_every else {last}
    D = sum(p.numel() for p in params)
    out = Trajectory()
    n, bs, spe = len(data.y_train), exp.train.batch_size, sched.steps_per_epoch
    batches = EpochOrders([data_seed], n, bs, n // bs, device)  # n // bs == spe unless `schedule` is another size's
    begin = time.perf_counter()

    def record(step: int, lr: float) -> None:
        begin = time.perf_counter()
        for split in ("train", "test"):
            loss, acc = evaluate(model, *data.split(split), exp.train.eval_batch_size)
            out.diverged |= not math.isfinite(loss)
            out.rows.append(dict(experiment=exp.name, dataset=exp.dataset, model=exp.model.name, num_params=D,
                                 seed=init_seed, data_seed=data_seed, step=step, epoch=step / spe,
                                 split=split, loss=loss, accuracy=acc, lr=lr, diverged=False, device=device.type))
        out.eval_seconds += time.perf_counter() - begin  # .item() above synchronised the device
        if log:
            log(step, {f"{r['split']}/{k}": r[k] for r in out.rows[-2:] for k in ("loss", "accuracy")} | {"lr": lr})

    model.train()
    bar = tqdm(range(first, last + 1), desc=f"{exp.name} seed={init_seed}", disable=not progress,
               mininterval=5.0, unit="step")
    for step in bar:
        lr = sched.lr(step, exp.train)
        if step in ckpt_steps:
            out.steps.append(step)
            out.params.append(models.flatten(model).float().cpu().numpy())
            out.buffers.append(models.flatten_buffers(model).cpu().numpy())
        if step in eval_steps:
            record(step, lr)
            bar.set_postfix(test_acc=f"{out.rows[-1]['accuracy']:.3f}", refresh=False)
        if step == last or out.diverged:
            break
        idx = batches(step)[0]
        x = data.x_train[idx]
        if exp.train.augment:
            x = augment(x, batches.augmentation(step))
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(exp, device):
            logits = step_model(x.contiguous(memory_format=fmt))
        loss = F.cross_entropy(logits.float(), data.y_train[idx])
        if not torch.isfinite(loss):
            out.diverged = True
            if step not in eval_steps:
                record(step, lr)  # the state it stopped in
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if masks is not None:
            apply_mask(params, masks)
    bar.close()
    out.seconds = time.perf_counter() - begin
    for r in out.rows:
        r["diverged"] = out.diverged
    return model, out


def trajectory_attrs(exp: Experiment, model: nn.Module, run: Trajectory, seed: int, data_seed: int,
                     device: torch.device) -> dict:
    """What a dense trajectory's store records beside its arrays: the run, its spec and the parameter layout
    that readers unflatten θ with."""
    layout = models.Layout.of(model)
    return dict(experiment=exp.name, seed=seed, data_seed=data_seed, dataset=exp.dataset, model=exp.model.name,
                D=layout.D, diverged=run.diverged, seconds=run.seconds, device=str(device), torch=torch.__version__,
                spec=json.loads(exp.to_json()), layout=layout.to_attrs(), buffer_names=models.buffer_names(model))


@torch.no_grad()
def apply_mask(params: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    for p, m in zip(params, masks):
        p.mul_(m)
