"""Linear mode connectivity: the error along θ(α) = (1−α)θa + αθb and its barrier.

All α of the grid are evaluated in one batched pass (torch.func.vmap over the stacked interpolants),
not one α at a time over the whole dataset. BatchNorm running statistics are interpolated with the
weights (no re-estimation), and the networks are evaluated in eval mode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sublevel.functional import evaluate_many
from sublevel.models import Layout


def barrier(alphas: np.ndarray, errors: np.ndarray) -> float:
    """max over α of err(α) − ((1−α)·err(0) + α·err(1)): how far the path rises above the straight line."""
    alphas, errors = np.asarray(alphas, float), np.asarray(errors, float)
    line = (1 - alphas) * errors[0] + alphas * errors[-1]
    return float(np.max(errors - line))


@torch.no_grad()
def interpolation_curve(model: nn.Module, theta_a: torch.Tensor, theta_b: torch.Tensor, x: torch.Tensor,
                        y: torch.Tensor, alphas: int | np.ndarray = 11, buffers_a: torch.Tensor | None = None,
                        buffers_b: torch.Tensor | None = None, batch_size: int = 2048,
                        max_floats: int = 1 << 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(α grid, error, loss) along the segment. α runs in chunks small enough that the stacked parameters
    stay under `max_floats` floats, so big models split the grid instead of running out of memory."""
    device = next(model.parameters()).device
    alphas = np.linspace(0, 1, alphas) if isinstance(alphas, int) else np.asarray(alphas, float)
    D = Layout.of(model).D
    theta_a, theta_b = theta_a.to(device, torch.float32), theta_b.to(device, torch.float32)
    chunk = max(1, min(len(alphas), max_floats // max(D, 1)))
    errors, losses = [], []
    for start in range(0, len(alphas), chunk):
        a = torch.tensor(alphas[start:start + chunk], dtype=torch.float32, device=device)[:, None]
        thetas = (1 - a) * theta_a + a * theta_b
        if buffers_a is not None and buffers_a.numel():
            ba, bb = buffers_a.to(device, torch.float32), buffers_b.to(device, torch.float32)
            bufs = (1 - a) * ba + a * bb
        else:
            bufs = torch.zeros(len(a), 0, device=device)
        err, loss = evaluate_many(model, thetas, bufs, x, y, batch_size)
        errors.append(err.cpu().numpy())
        losses.append(loss.cpu().numpy())
    return alphas, np.concatenate(errors).astype(float), np.concatenate(losses)
