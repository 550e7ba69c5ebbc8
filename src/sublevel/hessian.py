"""Sharpness: the top eigenvalues of the training-loss Hessian, by Lanczos on Hessian-vector products.

H·v comes from forward-over-reverse differentiation (torch.func.jvp of torch.func.grad) of the mean
cross-entropy over a fixed set of examples, in float64 and eval mode, so the operator is exactly symmetric
and deterministic. Lanczos with full reorthogonalisation then gives the extreme eigenvalues in a few dozen
products (Paul et al. 2023 relate the top one to how much IMP can prune per level), and stochastic Lanczos
quadrature over several probes the whole spectral density (sublevel.theory reads the bulk from it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from sublevel import models
from sublevel.models import Layout


def mean_loss(model: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              buffers: dict[str, torch.Tensor] | None = None, dtype=torch.float64):
    """(loss, θ, x): loss(t, xb, yb) is a chunk's share of the mean cross-entropy over (x, y) at flat
    parameters t, in `dtype` and eval mode, the model's buffers fixed; θ and x converted to `dtype`."""
    model = copy.deepcopy(model).to(dtype).eval()
    layout = Layout.of(model)
    bufs = {n: b.to(dtype) if b.is_floating_point() else b for n, b in (buffers or dict(model.named_buffers())).items()}
    n = len(y)

    def loss(t, xb, yb):
        return F.cross_entropy(functional_call(model, (layout.unflatten(t), bufs), (xb,)), yb, reduction="sum") / n

    return loss, theta.to(dtype), x.to(dtype)


def hvp_operator(model: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 buffers: dict[str, torch.Tensor] | None = None, chunk: int = 1024, dtype=torch.float64,
                 mask: torch.Tensor | None = None):
    """v -> H(θ)·v for the mean loss over (x, y), evaluated in chunks of examples. With a pruning `mask`,
    v -> P H P v (P = diag(mask)): the Hessian of the sparse network in the coordinates it still trains."""
    loss, theta, x = mean_loss(model, theta, x, y, buffers, dtype)
    n = len(y)
    p = None if mask is None else mask.to(theta.device, dtype)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        v = v.to(dtype) if p is None else v.to(dtype) * p
        out = torch.zeros_like(theta)
        for i in range(0, n, chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            out += jvp(lambda t: grad(loss)(t, xb, yb), (theta,), (v,))[1]
        return out if p is None else out * p

    return hvp


def loss_and_gradient(model: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      buffers: dict[str, torch.Tensor] | None = None, chunk: int = 1024,
                      dtype=torch.float64) -> tuple[float, torch.Tensor]:
    """The mean loss over (x, y) at θ and its gradient (in `dtype`)."""
    loss, theta, x = mean_loss(model, theta, x, y, buffers, dtype)
    total, g = 0.0, torch.zeros_like(theta)
    for i in range(0, len(y), chunk):
        gi, li = torch.func.grad_and_value(loss)(theta, x[i:i + chunk], y[i:i + chunk])
        g += gi
        total += float(li)
    return total, g


def tridiagonal(hvp, q: torch.Tensor, iterations: int) -> torch.Tensor:
    """The Lanczos tridiagonal T [m, m] of the symmetric operator `hvp` from the unit start vector q, m =
    `iterations` steps with full reorthogonalisation, or fewer where the Krylov space closes (an invariant
    subspace: T's eigenvalues are then exact eigenvalues)."""
    for T in lanczos_steps(hvp, q, iterations):
        pass
    return T


def lanczos_steps(hvp, q: torch.Tensor, iterations: int):
    """T_m [m, m] after each Lanczos step m = 1, 2, ... up to `iterations` (or until the Krylov space closes),
    with full reorthogonalisation: T_m is the leading block of every later T, so a quadrature can be extended
    step by step until it has converged."""
    D, dtype, device = len(q), q.dtype, q.device
    m = min(iterations, D)
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
        yield torch.diag(alpha[:j + 1]) + torch.diag(beta[:j], 1) + torch.diag(beta[:j], -1)
        if j + 1 < m:
            if b < 1e-10:
                return
            beta[j] = b
            q = w / b


# The ridges κ (× the top node) at which a quadrature's convergence is judged: the theory's predictions are
# Σ τ λ/(λ + κ) at κ = 2ε'/R² (the bound) or at the κ* the anchor's Σ τ λκ/(λ + κ) sets (the well), for
# every ε a config may ask, so the quadrature must hold over a range, not at one ε: here 2ε'/R² down to
# 1e-4 λ_max. Below it the clip of λ ≤ 0 (a kink at the bulk of near-zero eigenvalues) keeps the quadrature
# moving by 10-30% per extension on the default experiment's Hessian, long after the predictions settled.
KAPPA_GRID = 10.0 ** -np.arange(1.0, 4.25, 0.25)


def ridge_fraction(eigenvalues: np.ndarray, kappa) -> np.ndarray:
    """λ/(λ + κ) for λ > 0, else 0: how much of an eigen-direction a ridge κ leaves. Every prediction of the
    theory is a sum of it: d(κ), the bound's share per direction (κ = 2ε/R²), the well's minimum."""
    lam = np.clip(eigenvalues, 0.0, None)
    return lam / (lam + kappa)


def ridge_profile(nodes: np.ndarray, weights: np.ndarray, top: float) -> np.ndarray:
    """Σ_k τ_k λ_k/(λ_k + κ) at κ = KAPPA_GRID · top (λ ≤ 0 counts 0). Of the density it is d(κ)/D, which both
    predictions read; of an anchor's measure, its well minimum per unit κ, whose root sets κ*."""
    return (weights[None] * ridge_fraction(nodes[None], (KAPPA_GRID * top)[:, None])).sum(-1)


def _change(now: tuple[np.ndarray, np.ndarray], before: tuple[np.ndarray, np.ndarray]) -> float:
    """The largest relative change of the ridge profile between two quadratures, at the later one's scale."""
    top = max(float(now[0].max()), 1e-300)
    a, b = ridge_profile(*now, top), ridge_profile(*before, top)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))


@dataclass(frozen=True)
class Quadrature:
    """A Lanczos quadrature extended until its ridge profile settled: nodes and weights at the length used,
    and at the check before it (what the last extension changed: the predictions' quadrature error)."""
    nodes: np.ndarray
    weights: np.ndarray
    previous_nodes: np.ndarray
    previous_weights: np.ndarray
    iterations: int
    change: float        # the profile's largest relative change over the last extension (0: exact; nan: one check)
    converged: bool      # change <= tolerance, or the Krylov space closed (exact)


def converged_quadrature(hvp, v: torch.Tensor, iterations: int, max_iterations: int, tolerance: float,
                         every: int = 10) -> Quadrature:
    """Gauss quadrature of the unit vector v's spectral measure, from `iterations` Lanczos steps extended by
    `every` until the ridge profile changes by at most `tolerance` (relative, at every κ of KAPPA_GRID) over
    one extension; at `max_iterations` it stops unconverged, and where the Krylov space closes it is exact."""
    cap = min(max(max_iterations, iterations), len(v))
    checks: list[tuple[np.ndarray, np.ndarray]] = []
    change = math.nan
    for T in lanczos_steps(hvp, v, cap):
        m = len(T)
        if m < cap and (m < iterations or (m - iterations) % every):
            continue
        checks.append(_gauss(T))
        if len(checks) > 1:
            change = _change(checks[-1], checks[-2])
            if change <= tolerance:
                return Quadrature(*checks[-1], *checks[-2], m, change, True)
    if len(T) < cap or len(T) == len(v):  # the Krylov space closed (or spans R^D): the measure is exact
        x, w = _gauss(T)
        return Quadrature(x, w, x, w, len(T), 0.0, True)
    return Quadrature(*checks[-1], *checks[-2 if len(checks) > 1 else -1], len(T), change, False)


def _gauss(T: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (T's eigenvalues) and weights (the squared first components of its eigenvectors)."""
    evals, evecs = torch.linalg.eigh(T)
    return evals.numpy(), (evecs[0] ** 2).numpy()


def start_vector(D: int, seed: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """A unit Gaussian vector, the same for a seed on every device (drawn on the CPU)."""
    q = torch.randn(D, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)
    return q / q.norm()


def lanczos(hvp, D: int, iterations: int = 30, k: int = 1, seed: int = 0, dtype=torch.float64,
            device=None) -> torch.Tensor:
    """The k largest eigenvalues (descending) of the symmetric operator `hvp` on R^D."""
    T = tridiagonal(hvp, start_vector(D, seed, dtype, device), iterations)
    return torch.linalg.eigvalsh(T).flip(0)[:k]


@dataclass(frozen=True)
class Density:
    """The spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; for network Hessians
    Ghorbani, Krishnan & Xiao 2019): for each probe v (a unit Gaussian vector), m Lanczos steps from v give
    nodes θ_k (T's eigenvalues) and weights τ_k (the squared first components of T's eigenvectors), and
    vᵀ f(H) v ≈ Σ_k τ_k f(θ_k). A random unit v has E[vᵀ f(H) v] = tr f(H) / D, so each probe's quadrature
    is an unbiased-in-the-probe estimate of the mean of f over H's D eigenvalues; the spread over probes is
    its error bar. The nodes resolve the extremes (outliers converge first) and represent the bulk by a few
    heavily weighted nodes, which is what smooth f need."""
    nodes: np.ndarray     # [probes, m] (a probe whose Krylov space closed early pads with weight 0)
    weights: np.ndarray   # [probes, m], each row sums to 1
    D: int

    @classmethod
    def stack(cls, quadratures: list[tuple[np.ndarray, np.ndarray]], D: int, length: int = 0) -> "Density":
        """Probes' (nodes, weights) of any lengths as one density of at least `length` nodes per probe, a
        shorter probe padded with weight 0 at its last node."""
        m = max(length, *(len(x) for x, _ in quadratures))
        nodes, weights = np.zeros((len(quadratures), m)), np.zeros((len(quadratures), m))
        for j, (x, w) in enumerate(quadratures):
            nodes[j, :len(x)], weights[j, :len(x)] = x, w
            nodes[j, len(x):] = x[-1]
        return cls(nodes, weights, D)

    def mean_of(self, f) -> np.ndarray:
        """Per probe, the quadrature estimate of (1/D) Σ_i f(λ_i): [probes]."""
        return (self.weights * f(self.nodes)).sum(-1)

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """The density's mass per bin [probes, bins]: the fraction of the D eigenvalues in each bin."""
        idx = np.clip(np.searchsorted(edges, self.nodes, side="right") - 1, 0, len(edges) - 2)
        out = np.zeros((len(self.nodes), len(edges) - 1))
        for p in range(len(self.nodes)):
            np.add.at(out[p], idx[p], self.weights[p])
        return out


def quadrature(hvp, v: torch.Tensor, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature of the spectral measure of the unit vector v: nodes θ_k and weights τ_k (summing to 1)
    with vᵀ f(H) v ≈ Σ_k τ_k f(θ_k), from `iterations` Lanczos steps started at v."""
    return _gauss(tridiagonal(hvp, v, iterations))


def slq(hvp, D: int, iterations: int, probes: int, seed: int = 0, dtype=torch.float64, device=None) -> Density:
    """The spectral density of the symmetric operator `hvp` on R^D from `probes` Lanczos runs of `iterations`
    steps, probe j started from seed + j."""
    return Density.stack([quadrature(hvp, start_vector(D, seed + j, dtype, device), iterations)
                          for j in range(probes)], D, min(iterations, D))


def converged_slq(hvp, D: int, iterations: int, max_iterations: int, tolerance: float, probes: int,
                  seed: int = 0, dtype=torch.float64, device=None) -> list[Quadrature]:
    """`slq`'s probes, each extended until its quadrature has converged (converged_quadrature)."""
    return [converged_quadrature(hvp, start_vector(D, seed + j, dtype, device), iterations, max_iterations,
                                 tolerance) for j in range(probes)]


def top_eigenvalues(model: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, iterations: int,
                    k: int, seed: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The k largest Hessian eigenvalues of the mean loss over (x, y) at θ, with the model's current buffers."""
    hvp = hvp_operator(model, theta, x, y, dict(model.named_buffers()), mask=mask)
    return lanczos(hvp, len(theta), iterations, k, seed=seed, device=theta.device)


@dataclass(frozen=True)
class Point:
    """A network whose sharpness the `hessian` table records: a dense checkpoint or an IMP level's end."""
    source: str                    # "dense" or "imp"
    step: int
    theta: np.ndarray
    buffers: np.ndarray
    level: int | None = None
    rewind_step: int | None = None
    sparsity: float = 0.0
    mask: torch.Tensor | None = None


def dense_points(traj, steps: list[int]) -> list[Point]:
    """The dense run's checkpoints at `steps` (the config's hessian steps)."""
    return [Point("dense", step, traj.params(step), traj.buffers(step)) for step in steps]


def level_points(levels, step: int) -> list[Point]:
    """Each IMP level's final, masked network, trained to `step` (the schedule's total)."""
    return [Point("imp", step, lv.weights, lv.buffers, lv.level, lv.row["rewind_step"], lv.row["sparsity"], lv.mask)
            for lv in levels]


def sharpness_rows(experiment: str, seed: int, model: nn.Module, points: list[Point], x: torch.Tensor,
                   y: torch.Tensor, iterations: int, top_k: int, report=print) -> list[dict]:
    """Rows of the `hessian` table: the top_k eigenvalues at every point, the network loaded into `model`
    (whose device is used), Lanczos started from `seed`."""
    device = next(model.parameters()).device
    rows = []
    for p in points:
        models.load_flat_buffers(model, torch.as_tensor(p.buffers).to(device))
        top = top_eigenvalues(model, torch.as_tensor(p.theta).to(device), x, y, iterations, top_k, seed=seed,
                              mask=None if p.mask is None else p.mask.to(device))
        rows += [dict(experiment=experiment, seed=seed, source=p.source, level=p.level, rewind_step=p.rewind_step,
                      sparsity=p.sparsity, step=p.step, rank=i + 1, eigenvalue=float(v), examples=len(y),
                      iterations=iterations)
                 for i, v in enumerate(top)]
        where = f"step {p.step}" if p.level is None else f"IMP level {p.level} (sparsity {p.sparsity:.3f})"
        report(f"{where}: top eigenvalue {float(top[0]):.4f}")
    return rows
