"""Micro-benchmarks behind two implementation choices (run on the GPU, results in the bench JSON notes):
the largest Hadamard factor done as one matmul, and how the dense projection's batched mat-vec is issued."""

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
    R, n, L = 256, 17, 16384  # LeNet-300-100 at d = 10,000: 17 Fastfood blocks of 16,384
    x = torch.randn(R, n, L, device=dev, requires_grad=True)
    for f in (8, 16, 32, 64, 128):
        def step():
            y = projections.hadamard(x, f)
            y.sum().backward()
        out["hadamard"][f] = timed(step)
        print(f"hadamard fwd+bwd R={R} n={n} L={L} max_factor={f}: {1e3 * out['hadamard'][f]:.2f} ms", flush=True)
    D = 266610
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
