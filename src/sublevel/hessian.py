"""Sharpness: the top eigenvalues of the training-loss Hessian, by Lanczos on Hessian-vector products.

H·v comes from forward-over-reverse differentiation (torch.func.jvp of torch.func.grad) of the mean
cross-entropy over a fixed set of examples, in float64 and eval mode, so the operator is exactly symmetric
and deterministic. Lanczos with full reorthogonalisation then gives the extreme eigenvalues in a few dozen
products (Paul et al. 2023 relate the top one to how much IMP can prune per level).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from sublevel.models import Layout


def hvp_operator(model: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 buffers: dict[str, torch.Tensor] | None = None, chunk: int = 1024, dtype=torch.float64,
                 mask: torch.Tensor | None = None):
    """v -> H(θ)·v for the mean loss over (x, y), evaluated in chunks of examples. With a pruning `mask`,
    v -> P H P v (P = diag(mask)): the Hessian of the sparse network in the coordinates it still trains."""
    model = copy.deepcopy(model).to(dtype).eval()
    layout = Layout.of(model)
    theta = theta.to(dtype)
    bufs = {n: b.to(dtype) if b.is_floating_point() else b for n, b in (buffers or dict(model.named_buffers())).items()}
    x = x.to(dtype)
    n = len(y)

    def loss(t, xb, yb):
        return F.cross_entropy(functional_call(model, (layout.unflatten(t), bufs), (xb,)), yb, reduction="sum") / n

    p = None if mask is None else mask.to(theta.device, dtype)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        v = v.to(dtype) if p is None else v.to(dtype) * p
        out = torch.zeros_like(theta)
        for i in range(0, n, chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            out += jvp(lambda t: grad(loss)(t, xb, yb), (theta,), (v,))[1]
        return out if p is None else out * p

    return hvp


def lanczos(hvp, D: int, iterations: int = 30, k: int = 1, seed: int = 0, dtype=torch.float64,
            device=None) -> torch.Tensor:
    """The k largest eigenvalues (descending) of the symmetric operator `hvp` on R^D."""
    m = min(iterations, D)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(D, generator=g, dtype=dtype).to(device)
    q /= q.norm()
    Q = torch.zeros(m, D, dtype=dtype, device=device)
    alpha = torch.zeros(m, dtype=dtype)
    beta = torch.zeros(m, dtype=dtype)
    for j in range(m):
        Q[j] = q
        w = hvp(q)
        alpha[j] = torch.dot(w, q)
        w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)          # full reorthogonalisation (twice is enough)
        w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        b = w.norm()
        if j + 1 < m:
            if b < 1e-10:
                m = j + 1
                break
            beta[j] = b
            q = w / b
    T = torch.diag(alpha[:m]) + torch.diag(beta[:m - 1], 1) + torch.diag(beta[:m - 1], -1)
    return torch.linalg.eigvalsh(T).flip(0)[:k]


def top_eigenvalues(model: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, iterations: int,
                    k: int, seed: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The k largest Hessian eigenvalues of the mean loss over (x, y) at θ, with the model's current buffers."""
    hvp = hvp_operator(model, theta, x, y, dict(model.named_buffers()), mask=mask)
    return lanczos(hvp, len(theta), iterations, k, seed=seed, device=theta.device)
