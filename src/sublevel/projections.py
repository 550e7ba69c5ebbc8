"""Random projections P: R^d -> R^D with (near-)orthonormal, unit-norm columns, regenerated from a seed.

P is never stored: `make(kind, D, d, seed)` rebuilds it exactly from (seed, kind, d), so a subspace run is
kept as its coordinates w ∈ R^d plus this metadata. Every kind is batched over R runs of the same d.

* dense: Gaussian columns normalised to unit norm; the exact reference, D·d floats per run.
* fastfood: Li et al. 2018's structured transform, stacked blocks H G Π H B (H Walsh-Hadamard, G Gaussian
  diagonal, Π a permutation, B random signs) of size L = 2^ceil(log2 d); O(D log d) time and O(D) memory.
  Every column of a block has norm sqrt(L)·|G|₂ exactly, so one scale per run makes columns unit norm
  (exactly when L divides D; the last block's truncation perturbs it slightly otherwise).
* identity: d = D, P = I (the dense-training check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("dense", "fastfood", "identity")


def generator(seed: int, kind: str, d: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, KINDS.index(kind), d]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh-Hadamard transform over the last axis (a power of two)."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        x = x.reshape(*lead, n // (2 * h), 2, h)
        x = torch.stack((x[..., 0, :] + x[..., 1, :], x[..., 0, :] - x[..., 1, :]), dim=-2)
        h *= 2
    return x.reshape(*lead, n)


@dataclass
class Projection:
    """R projections of one kind and dimension d into R^D; `__call__` maps w [R, d] -> P w [R, D]."""

    kind: str
    D: int
    d: int
    tensors: dict[str, torch.Tensor]

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        t = self.tensors
        if self.kind == "identity":
            return w
        if self.kind == "dense":
            return torch.einsum("rDd,rd->rD", t["P"], w)
        R, L = w.shape[0], t["B"].shape[-1]
        x = torch.nn.functional.pad(w, (0, L - self.d))[:, None, :]          # [R, 1, L]
        x = hadamard(x * t["B"])                                             # [R, n, L]
        x = torch.gather(x, -1, t["perm"]) * t["G"]
        x = hadamard(x) * t["scale"][:, None, None]
        return x.reshape(R, -1)[:, :self.D]

    def to(self, device) -> "Projection":
        return Projection(self.kind, self.D, self.d, {k: v.to(device) for k, v in self.tensors.items()})

    def columns(self) -> torch.Tensor:
        """The explicit [R, D, d] matrices (tests and small d only)."""
        eye = torch.eye(self.d)
        R = next(iter(self.tensors.values())).shape[0] if self.tensors else 1
        return torch.stack([self(eye[j].expand(R, -1)) for j in range(self.d)], dim=-1)


def make(kind: str, D: int, d: int, seeds: list[int]) -> Projection:
    """Projections for runs `seeds`, each regenerated from (seed, kind, d)."""
    if kind not in KINDS:
        raise ValueError(f"unknown projection {kind!r}; known: {KINDS}")
    if not 0 < d <= D:
        raise ValueError(f"subspace dimension d = {d} must be in [1, D = {D}]")
    if kind == "identity":
        if d != D:
            raise ValueError("the identity projection needs d = D")
        return Projection(kind, D, d, {})
    if kind == "dense":
        Ps = []
        for seed in seeds:
            P = torch.randn(D, d, generator=generator(seed, kind, d))
            Ps.append(P / P.norm(dim=0, keepdim=True))
        return Projection(kind, D, d, {"P": torch.stack(Ps)})
    L = 1 << max(0, math.ceil(math.log2(d)))
    n = math.ceil(D / L)
    B, perm, G, scale = [], [], [], []
    for seed in seeds:
        g = generator(seed, kind, d)
        B.append(torch.randint(0, 2, (n, L), generator=g).float() * 2 - 1)
        perm.append(torch.stack([torch.randperm(L, generator=g) for _ in range(n)]))
        G.append(torch.randn(n, L, generator=g))
        scale.append(1 / math.sqrt(L * float((G[-1] ** 2).sum())))
    return Projection(kind, D, d, {"B": torch.stack(B)[:, :, :], "perm": torch.stack(perm), "G": torch.stack(G),
                                   "scale": torch.tensor(scale)})
