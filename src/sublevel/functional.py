"""Networks as functions of their flat parameter and buffer vectors, and their evaluation over whole splits:
the vmapped forward that subspace runs, ensembles, scores and interpolation paths share, and the one-model
evaluation of a dense run."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from sublevel.models import Layout


def functional_forward(model: nn.Module):
    """f(θ [D], buffers [B], x) -> logits: the model as a function of its flat vectors, ready for vmap."""
    layout = Layout.of(model)
    names = [n for n, _ in model.named_buffers()]
    shapes = [b.shape for _, b in model.named_buffers()]
    dtypes = [b.dtype for _, b in model.named_buffers()]

    def forward(theta, bufs, xb):
        buffers, off = {}, 0
        for n, s, d in zip(names, shapes, dtypes):
            k = math.prod(s)
            buffers[n] = bufs[off:off + k].view(s).to(d)
            off += k
        return functional_call(model, (layout.unflatten(theta), buffers), (xb,))

    return forward


@torch.no_grad()
def evaluate_many(model: nn.Module, thetas: torch.Tensor, buffers: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  batch_size: int = 2048, batch_stats: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(error [R], mean loss [R]) of R parameter vectors over a whole split, in one vmapped pass per batch.
    `batch_stats`: BatchNorm normalises with each evaluation batch's statistics instead of the buffers."""
    model.train(batch_stats)
    batched = vmap(functional_forward(model), in_dims=(0, 0, None))
    R = len(thetas)
    wrong = torch.zeros(R, device=thetas.device)
    loss = torch.zeros(R, device=thetas.device, dtype=torch.float64)
    for i in range(0, len(y), batch_size):
        out = batched(thetas, buffers, x[i:i + batch_size])  # [R, B, classes]
        yb = y[i:i + batch_size]
        wrong += (out.argmax(-1) != yb).sum(-1)
        loss += F.cross_entropy(out.flatten(0, 1), yb.repeat(R), reduction="none").view(R, -1).sum(-1).double()
    return wrong / len(y), loss / len(y)


def split_metrics(model: nn.Module, thetas: torch.Tensor, buffers: torch.Tensor, data, batch_size: int,
                  batch_stats: bool = False, splits: tuple[str, ...] = ("train", "test")) -> list[dict]:
    """Per run: {split}_{loss,accuracy} of R parameter vectors over each of the full `splits` (evaluate_many)."""
    metrics = [{} for _ in range(len(thetas))]
    for split in splits:
        err, loss = evaluate_many(model, thetas, buffers, *data.split(split), batch_size, batch_stats=batch_stats)
        for m, e, l in zip(metrics, err.tolist(), loss.tolist()):
            m[f"{split}_loss"], m[f"{split}_accuracy"] = l, 1 - e
    return metrics


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
