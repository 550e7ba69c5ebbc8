"""Micro-benchmarks behind two implementation choices (run on the GPU; results in bench/results/*-hadamard.json):
how the Hadamard transform is split into Kronecker factors, one matmul each, and how the dense projection's
batched mat-vec is issued (--dense)."""

import json
import sys
import time

import torch

from sublevel import projections


def timed(f, reps=20):
    f()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    dev = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "hadamard": {}, "dense": {}}
    D = 266610  # LeNet-300-100: Fastfood blocks of L at d = 10, 100, 1,000, 10,000 (256 runs)
    for L in (16, 128, 1024, 16384):
        k = L.bit_length() - 1
        x = torch.randn(256, -(-D // L), L, device=dev, requires_grad=True)
        old = ([k % 5] if k % 5 else []) + [5] * (k // 5)  # until 2026-11-23: factors of 32, the odd one first
        splits = {"max 32, odd first": old, **{f"balanced, max {1 << c}": projections.hadamard_factors(L, 1 << c, 1)
                                              for c in (5, 6, 7)}, "default": projections.hadamard_factors(L)}
        runs = [(name, factors, False) for name, factors in splits.items()]
        runs.append(("default, TF32", splits["default"], True))  # the bound of an inexact (TF32) transform
        for name, factors, tf32 in runs:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            def step():
                y = projections.hadamard(x, factors=factors)
                y.sum().backward()
            key = f"L={L} {name} {[1 << f for f in factors]}"
            out["hadamard"][key] = timed(step)
            print(f"hadamard fwd+bwd {tuple(x.shape)} {key}: {1e3 * out['hadamard'][key]:.2f} ms", flush=True)
        del x
    torch.backends.cuda.matmul.allow_tf32 = False
    for R, d in ((4, 10000), (32, 1000), (256, 10)) if "--dense" in sys.argv else ():
        P = torch.randn(R, D, d, device=dev)
        w = torch.zeros(R, d, device=dev, requires_grad=True)
        variants = {"einsum": lambda: torch.einsum("rDd,rd->rD", P, w),
                    "bmm": lambda: torch.bmm(P, w.unsqueeze(-1)).squeeze(-1),
                    "per-run mv": lambda: torch.stack([P[r] @ w[r] for r in range(R)])}
        for name, f in variants.items():
            def step():
                y = f()
                (y * 1.0).sum().backward()
            s = timed(step, 10)
            gbs = 2 * R * D * d * 4 / s / 1e9
            out["dense"][f"{name} R={R} d={d}"] = {"seconds": s, "GB/s": gbs}
            print(f"dense {name} R={R} d={d}: {1e3 * s:.2f} ms, {gbs:,.0f} GB/s", flush=True)
        del P
        torch.cuda.empty_cache()
    json.dump(out, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
