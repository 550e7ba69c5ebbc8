"""Random projections P: R^d -> R^D with (near-)orthonormal, unit-norm columns, regenerated from a seed.

P is never stored: `make(kind, D, d, seed)` rebuilds it exactly from (seed, kind, d) under this module's
VERSION, so a subspace run is kept as its coordinates w ∈ R^d plus this metadata. Every kind is batched over
R runs of the same d.

* dense: Gaussian columns normalised to unit norm; the exact reference, D·d floats per run. Drawn in blocks of
  DENSE_BLOCK rows, block b from its own generator (seeded from seed, kind, d, b), so the blocks fill on all
  of torch's threads and P does not depend on how many there are; the column norms are summed in float64.
* fastfood: Li et al. 2018's structured transform H G Π H B (H Walsh-Hadamard, G Gaussian diagonal, Π a
  permutation, B random signs) of size L = 2^ceil(log2 d), its output stacked into blocks i = 1..ceil(D/L):
  u = H B w is computed once and block i is H G_i Π_i u, so the blocks differ in their own permutation and
  Gaussian diagonal. O(D log d) time and O(D) memory, and half the transforms of VERSION 1, whose blocks each
  had their own signs B_i and so their own first transform over all D rows, forward and backward. H B_i e_j is
  ±h_j either way (h_j a Hadamard column), so the versions differ only in per-block column signs; with Π_i
  and G_i independent across blocks, inner products of columns have the same mean (0) and variance in both.
  Every column of a block has norm sqrt(L)·|G_i|₂ exactly, so one scale per run makes columns unit norm
  (exactly when L divides D; the last block's truncation perturbs it slightly otherwise).
* identity: d = D, P = I (the dense-training check).
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from sublevel.versions import PROJECTIONS as VERSION  # the seed -> P map's version

KINDS = ("dense", "fastfood", "identity")


def generator(seed: int, kind: str, d: int, *stream: int) -> torch.Generator:
    """Run `seed`'s generator for (kind, d); `stream` names an independent sub-stream (a dense P's row block)."""
    state = np.random.SeedSequence([seed, KINDS.index(kind), d, *stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


DENSE_BLOCK = 4096  # rows of a dense P per random stream (and per thread task)


def dense_columns(seed: int, D: int, d: int, out: torch.Tensor) -> torch.Tensor:
    """Fill `out` [D, d] (float32, contiguous) with run `seed`'s dense P: Gaussian entries, unit-norm columns.

    Block b of DENSE_BLOCK rows is drawn by its own generator (seeded from seed, kind, d, b), so the blocks
    fill in parallel (torch releases the GIL) and the result does not depend on the thread count; each block's
    column sums of squares are taken while it is hot in cache and added in float64, then one in-place division
    normalises. No [D, d] temporary: the only D·d memory is `out`."""
    a = out.numpy()

    def fill(start: int) -> np.ndarray:
        torch.randn(min(DENSE_BLOCK, D - start), d, generator=generator(seed, "dense", d, start // DENSE_BLOCK),
                    out=out[start:start + DENSE_BLOCK])
        block = a[start:start + DENSE_BLOCK]
        return np.einsum("ij,ij->j", block, block, dtype=np.float64)

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        squares = sum(pool.map(fill, range(0, D, DENSE_BLOCK)))
    return out.div_(torch.from_numpy(np.sqrt(squares).astype(np.float32)))


LARGE_DENSE = 1 << 24  # floats in one run's P above which runs are multiplied one at a time
MAX_FACTOR = 32  # largest Hadamard factor applied as one matmul beyond ONE_GEMM (see hadamard_factors)
ONE_GEMM = 128  # up to this size the whole transform is one GEMM


def sylvester(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The n x n Walsh-Hadamard matrix (±1, n a power of two); cached, except while torch.compile traces (the
    graph then builds it as a constant)."""
    return _sylvester(n, device, dtype) if torch.compiler.is_compiling() else _cached_sylvester(n, device, dtype)


def _sylvester(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    H = torch.ones(1, 1, dtype=dtype)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H.to(device)


_cached_sylvester = functools.lru_cache(maxsize=None)(_sylvester)


def hadamard_factors(n: int, max_factor: int = MAX_FACTOR, one_gemm: int = ONE_GEMM) -> list[int]:
    """log2 of the Kronecker factors H_n = H_a ⊗ H_b ⊗ …: one GEMM up to `one_gemm`, beyond it as few factors
    of at most `max_factor` as can be, as equal as possible, smallest first. Measured on the H100 (fwd+bwd,
    256 runs of LeNet-300-100's blocks, bench/micro.py): L = 128 took 1.47 ms as one GEMM against 3.14 ms as
    4·32; L = 16,384 took 2.36 ms as 16·32·32 against 2.52 ms as 128·128."""
    k = n.bit_length() - 1
    if n <= one_gemm:
        return [k] if k else []
    cap = max_factor.bit_length() - 1
    parts = -(-k // cap)
    return [k // parts + (i >= parts - k % parts) for i in range(parts)]


def hadamard(x: torch.Tensor, factors: list[int] | None = None) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform over the last axis (a power of two). H_n = H_a ⊗ H_b ⊗ …, so
    it is a few matmuls, one per factor (`hadamard_factors`, or log2 sizes given as `factors`), instead of
    log2(n) butterfly passes over memory: fewer passes, and the arithmetic runs on the matmul units."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    factors = hadamard_factors(n) if factors is None else factors
    assert sum(factors) == n.bit_length() - 1, (factors, n)
    right = n
    for b in factors[:-1]:  # leading factors: H_a applied to [M, a, right], right the product of the later ones
        a = 1 << b
        right //= a
        x = torch.matmul(sylvester(a, x.device, x.dtype), x.reshape(-1, a, right))
    if factors:  # the last factor is one GEMM over the trailing axis (H is symmetric)
        a = 1 << factors[-1]
        x = x.reshape(-1, a) @ sylvester(a, x.device, x.dtype)
    return x.reshape(*lead, n)


class _Spread(torch.autograd.Function):
    """u [R, L] -> x [R, n, L], x[:, i] = u[:, perm[:, i]]: one permutation per block. Its backward gathers with
    the inverse permutations and sums over blocks: autograd's gather backward is a scatter-add (atomics on a GPU,
    and a slower sort-based kernel under torch.use_deterministic_algorithms, as the pipeline's CUDA jobs run)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return torch.gather(u, -1, perm.flatten(1)).view(perm.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return torch.gather(grad, -1, inverse).sum(1), None, None


@dataclass
class Projection:
    """R projections of one kind and dimension d into R^D; `__call__` maps w [R, d] -> P w [R, D]. A dense P
    is [R, D, d], or [D, d] when every run shares it (a lottery subspace's basis): one GEMM for all runs."""

    kind: str
    D: int
    d: int
    tensors: dict[str, torch.Tensor]

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        t = self.tensors
        if self.kind == "identity":
            return w
        if self.kind == "dense":
            P = t["P"]
            if P.dim() == 2:
                return w @ P.T
            if P[0].numel() >= LARGE_DENSE:  # one mat-vec per run: batched GEMV on huge P copies it transposed
                return torch.stack([P[r] @ w[r] for r in range(len(P))])
            return torch.einsum("rDd,rd->rD", P, w)
        R, L = w.shape[0], t["G"].shape[-1]
        u = hadamard(torch.nn.functional.pad(w, (0, L - self.d)) * t["B"])  # [R, L]: H B w, shared by the blocks
        x = _Spread.apply(u, t["perm"], t["inverse"]) * t["G"]               # [R, n, L]; G carries the run's scale
        return hadamard(x).reshape(R, -1)[:, :self.D]

    def to(self, device) -> "Projection":
        return Projection(self.kind, self.D, self.d, {k: v.to(device) for k, v in self.tensors.items()})

    def columns(self) -> torch.Tensor:
        """The explicit [R, D, d] matrices (tests and small d only)."""
        eye = torch.eye(self.d)
        shared = self.kind == "dense" and self.tensors["P"].dim() == 2
        R = next(iter(self.tensors.values())).shape[0] if self.tensors and not shared else 1
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
        P = torch.empty(len(seeds), D, d)
        for r, seed in enumerate(seeds):
            dense_columns(seed, D, d, P[r])
        return Projection(kind, D, d, {"P": P})
    L = 1 << max(0, math.ceil(math.log2(d)))
    n = math.ceil(D / L)
    B, perm, G = [], [], []
    for seed in seeds:
        g = generator(seed, kind, d)
        B.append(torch.randint(0, 2, (L,), generator=g).float() * 2 - 1)
        perm.append(torch.rand(n, L, generator=g, dtype=torch.float64).argsort(-1))  # n uniform permutations
        gauss = torch.randn(n, L, generator=g)
        G.append(gauss / math.sqrt(L * float((gauss ** 2).sum())))  # the unit-norm scale folded into G
    perm = torch.stack(perm)
    inverse = torch.empty_like(perm).scatter_(-1, perm, torch.arange(L).expand_as(perm))  # O(n L), no sort
    return Projection(kind, D, d, {"B": torch.stack(B), "perm": perm, "inverse": inverse, "G": torch.stack(G)})
