"""Data difficulty per training example (Paul, Ganguli & Dziugaite 2021).

EL2N is ‖softmax(f(x)) − onehot(y)‖₂, GraNd the norm of the loss gradient ‖∇_θ ℓ(f(x), y)‖₂; both are
computed at chosen dense checkpoints of every dense seed and averaged over the seeds, which is what makes
them a property of the example rather than of one run. Networks are evaluated in eval mode (BatchNorm
with its running statistics), so an example's score does not depend on which others share its batch.

Store layout::

    scores.zarr/
        el2n    float32 [S, R, N]   per checkpoint step, dense seed and training example
        grand   float32 [S, R, N]
        label   int64   [N]
        attrs: experiment, steps [S], seeds [R]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import zarr
from torch import nn
from torch.func import grad, vmap
from tqdm import tqdm

from sublevel import storage
from sublevel.functional import functional_forward

SCORES = ("el2n", "grand")


def per_example(model: nn.Module, theta: torch.Tensor, buffers: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(EL2N [N], GraNd [N]) of one network; per-example gradients by vmap(grad), `chunk` examples at a time."""
    model.eval()
    forward = functional_forward(model)

    def loss(t, xb, yb):
        return F.cross_entropy(forward(t, buffers, xb[None]), yb[None])

    per_grad = vmap(grad(loss), in_dims=(None, 0, 0))
    el2n, grand_norm = [], []
    for i in range(0, len(y), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        with torch.no_grad():
            p = forward(theta, buffers, xb).softmax(-1)
            el2n.append((p - F.one_hot(yb, p.shape[-1])).norm(dim=-1))
        grand_norm.append(per_grad(theta, xb, yb).norm(dim=-1).detach())
    return torch.cat(el2n), torch.cat(grand_norm)


def scored_trajectories(trajs: list, steps: list[int]) -> tuple[list, list[str]]:
    """The dense runs that stored every scored step, and why each other one was left out (a run that diverged
    before a scored step has no network there)."""
    kept, reasons = [], []
    for traj in trajs:
        try:
            for step in steps:
                traj.index(step)
        except storage.Skipped as e:
            reasons.append(str(e))
            continue
        kept.append(traj)
    return kept, reasons


def at_checkpoints(model: nn.Module, trajs: list, steps: list[int], x: torch.Tensor, y: torch.Tensor,
                   chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(EL2N, GraNd), each float32 [S, R, N]: every example at every step of every trajectory, the network
    loaded into `model` (whose device is used)."""
    device = next(model.parameters()).device
    shape = (len(steps), len(trajs), len(y))
    el2n, grand = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for i, step in enumerate(tqdm(steps, desc="scores", unit="checkpoint", mininterval=5.0)):
        for r, traj in enumerate(trajs):
            theta = torch.from_numpy(traj.params(step)).to(device)
            buffers = torch.from_numpy(traj.buffers(step)).to(device)
            e, g = per_example(model, theta, buffers, x, y, chunk)
            el2n[i, r], grand[i, r] = e.cpu().numpy(), g.cpu().numpy()
    return el2n, grand


def write_store(path: str | Path, experiment: str, steps: list[int], seeds: list[int], el2n: np.ndarray,
                grand: np.ndarray, label: np.ndarray) -> None:
    with storage.atomic_path(path) as tmp:
        g = zarr.open_group(tmp, mode="w", attributes={"experiment": experiment, "steps": list(map(int, steps)),
                                                       "seeds": list(map(int, seeds))})
        for name, a in (("el2n", el2n), ("grand", grand)):
            storage.create_array(g, name, data=a.astype(np.float32), dimension_names=["step", "seed", "example"])
        storage.create_array(g, "label", data=label.astype(np.int64), dimension_names=["example"])


def read_mean(path: str | Path, score: str, step: int) -> np.ndarray:
    """One score at one step, averaged over the seeds: [N]."""
    g = storage.open_group(path, "scores store")
    steps = g.attrs["steps"]
    if step not in steps:
        raise KeyError(f"{path} has scores at steps {steps}, not {step}")
    return storage.read(g, score, steps.index(step), "scores store").mean(0)


def summary_rows(experiment: str, steps: list[int], seeds: list[int], el2n: np.ndarray, grand: np.ndarray,
                 label: np.ndarray) -> list[dict]:
    """One row per (step, example): seed means and standard deviations, and the EL2N rank (0 = easiest)."""
    rows = []
    for i, step in enumerate(steps):
        e, g = el2n[i].astype(np.float64), grand[i].astype(np.float64)
        rank = np.empty(e.shape[1], np.int64)
        rank[np.argsort(e.mean(0), kind="stable")] = np.arange(e.shape[1])
        for n in range(e.shape[1]):
            rows.append(dict(experiment=experiment, step=int(step), example=n, label=int(label[n]),
                             n_seeds=len(seeds), el2n=float(e[:, n].mean()), el2n_std=float(e[:, n].std()),
                             grand=float(g[:, n].mean()), grand_std=float(g[:, n].std()), el2n_rank=int(rank[n])))
    return rows


def diet_subset(n: int, keep: str, fraction: float, seed: int, score: np.ndarray | None = None) -> np.ndarray:
    """Indices (sorted) of the training examples a data-diet pre-training sees: the `fraction` with the lowest
    score (easiest), the highest (hardest), or a random one drawn with `seed`."""
    k = max(1, round(fraction * n))
    if keep == "random":
        chosen = np.random.default_rng(seed).permutation(n)[:k]
    else:
        if score is None or len(score) != n:
            raise ValueError(f"keep={keep!r} needs one score per training example ({n})")
        order = np.argsort(score, kind="stable")
        chosen = order[:k] if keep == "easiest" else order[::-1][:k]
    return np.sort(chosen)
