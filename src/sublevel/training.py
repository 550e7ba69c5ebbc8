"""Dense training with a checkpointed trajectory.

One loop, readable top to bottom: batches are drawn on the device from a
per-epoch permutation (drop-last) seeded by `data_seed`, while `init_seed` alone
fixes the initialisation, so two runs can share an init and differ only in SGD
noise. θ is recorded at the schedule's checkpoint steps; loss and accuracy on
the full train and test sets at its eval steps. A non-finite loss stops the run
and marks every row diverged, without failing the job.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sublevel import models
from sublevel.config import Experiment
from sublevel.schedule import Schedule
from sublevel.datasets import Dataset
from sublevel.optimizers import Optimizer


def pick_device(name: str = "auto") -> torch.device:
    """'auto': the first CUDA device when one is visible, else the CPU; the code path is the same."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(threads: int | None = None, device: torch.device | None = None) -> None:
    """Fixed CPU threads, and deterministic kernels on CUDA, so the same config and seeds give the same results.

    The CPU kernels used here are deterministic at a fixed thread count already (a test checks it), and
    deterministic kernels are set for CUDA only. cuBLAS is deterministic only with a fixed workspace, which it
    reads from the environment when it starts: call this before the first matmul on the device.

    torch.use_deterministic_algorithms imports torch._inductor to set its compiler's flag too (2 s of every
    job, most of the start-up of a small one); a job that compiles nothing needs only the kernels' switch, and
    `compiled` sets the compiler's flag where it is used."""
    if device is not None and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def build_model(exp: Experiment, data: Dataset, init_seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(init_seed)
    return models.build_spec(exp.model, data.in_shape, data.num_classes).to(device)


def make_optimizer(exp: Experiment, parameters) -> Optimizer:
    """The configured optimiser (sublevel.optimizers: torch's fused update without the class's start-up)."""
    t = exp.train
    return Optimizer(t.optimizer, parameters, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, betas=t.betas,
                     weight_decay=t.weight_decay)


def autocast(exp: Experiment, device: torch.device):
    """The training forward pass in bfloat16 where `train.precision` asks for it (weights, optimiser and the
    loss stay float32); a no-op at float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=exp.train.precision == "bf16")


COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")  # the config schema's


def compiled(fn, mode: str):
    """`fn` (a module or function) under torch.compile in `mode`, or `fn` itself for "none". Shapes are static:
    one graph per input shape, and a job that meets many (a sweep's dimensions) may compile up to 256."""
    if mode == "none":
        return fn
    if torch.are_deterministic_algorithms_enabled():  # inductor's own flag as well (see seed_everything)
        torch.use_deterministic_algorithms(True, warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    return torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the zero-padded (4 px) image and a random horizontal flip, per example."""
    b, _, h, w = x.shape
    pad = F.pad(x, (4, 4, 4, 4))
    dy, dx = (torch.randint(0, 9, (b,), generator=gen).to(x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = pad[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the whole split, in eval mode."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        out = model(x[i:i + batch_size])
        loss += F.cross_entropy(out, y[i:i + batch_size], reduction="sum").item()
        correct += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return loss / len(y), correct / len(y)


def data_generator(data_seed: int, *stream: int) -> torch.Generator:
    """A generator for one (data_seed, epoch) or (data_seed, step, ...) stream: the data order at any step is
    a function of the step alone, so a run restarted at a rewind point replays the dense run's batches."""
    seed = int(np.random.SeedSequence([data_seed, *stream]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


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
          schedule: Schedule | None = None) -> tuple[nn.Module, Trajectory]:
    """Train from initialisation (or from `start`) to the schedule's last step (or to step `stop`).

    `mask` (bool [D]) keeps pruned weights exactly zero: θ is masked before the first step and after every
    optimiser step. `checkpoints`/`eval_every` off: record only the final state (IMP levels, baselines).
    `schedule`: the learning-rate schedule of another data size (a data-diet subset follows the full
    dataset's schedule; its own epochs set only the data order)."""
    sched = schedule or Schedule.resolve(exp, len(data.y_train))
    last = sched.total if stop is None else stop
    model = build_model(exp, data, init_seed, device)
    if start is not None:
        models.load_flat(model, start.theta)
        if start.buffers is not None:
            models.load_flat_buffers(model, start.buffers.to(device))
    fmt = torch.channels_last if exp.train.channels_last and data.x_train.dim() == 4 else torch.contiguous_format
    model = model.to(memory_format=fmt)  # NHWC convolutions: faster on tensor cores
    params = list(model.parameters())
    masks = None
    if mask is not None:
        layout = models.Layout.of(model)
        masks = [m.to(device, torch.float32) for m in layout.unflatten(mask.to(torch.float32)).values()]
        apply_mask(params, masks)
    opt = make_optimizer(exp, model.parameters())
    step_model = compiled(model, exp.train.compile)  # the same parameters; evaluation runs `model` eagerly
    lr_at = lambda s: exp.train.lr * sched.lr_factor(s, exp.train.schedule, exp.train.gamma)
    first = start.step if start is not None else 0
    ckpt_steps = {s for s in sched.checkpoints if s <= last} | {last} if checkpoints else {last}
    eval_steps = {s for s in sched.eval_steps() if s <= last} | {last} if eval_every else {last}
    D = sum(p.numel() for p in params)
    out = Trajectory()
    n, bs, spe = len(data.y_train), exp.train.batch_size, sched.steps_per_epoch
    data_epoch = n // bs  # == spe unless `schedule` came from another data size
    order = None
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

    model.train()
    bar = tqdm(range(first, last + 1), desc=f"{exp.name} seed={init_seed}", disable=not progress,
               mininterval=5.0, unit="step")
    for step in bar:
        lr = lr_at(step)
        if step in ckpt_steps:
            out.steps.append(step)
            out.params.append(models.flatten(model).float().cpu().numpy())
            out.buffers.append(models.flatten_buffers(model).cpu().numpy())
        if step in eval_steps:
            record(step, lr)
            bar.set_postfix(test_acc=f"{out.rows[-1]['accuracy']:.3f}", refresh=False)
        if step == last or out.diverged:
            break
        epoch, within = divmod(step, data_epoch)
        if order is None or within == 0:
            order = torch.randperm(n, generator=data_generator(data_seed, epoch)).to(device)
        idx = order[within * bs:(within + 1) * bs]
        x = data.x_train[idx]
        if exp.train.augment:
            x = augment(x, data_generator(data_seed, epoch, within, 1))
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


def in_batches(items: list, fn, device: torch.device, batch: int | None = None) -> tuple[list, int]:
    """fn over consecutive slices of `items` (runs trained together), `batch` at a time (all by default);
    a slice that runs out of GPU memory halves the batch and starts over, so a job never fails for memory
    while one item fits. Each item's result depends only on the item, so the split changes no result.
    Returns (fn's results concatenated, the batch that ran)."""
    batch = max(1, min(len(items), batch or len(items)))
    while True:
        try:
            return [out for i in range(0, len(items), batch) for out in fn(items[i:i + batch])], batch
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
