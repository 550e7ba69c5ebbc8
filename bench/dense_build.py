"""Cost of building one dense projection P [D, d], side by side on one machine (CPU):

- `sublevel`: projections.make("dense", ...), this checkout's version (row blocks, each by its own generator, on all of
  torch's threads, float64 column norms, no temporary);
- `sublevel v2`: projections version 2's map (one torch generator for all of P, `P / P.norm(dim=0)`, stacked);
- `peer`: jgamper/intrinsic-dimensionality's DenseWrap (`torch.randn(D, d) / d ** 0.5`, no normalisation).

Each is timed `--reps` times after one warm-up, at 1 thread and at every thread; the JSON goes to
bench/results/<cpu>-<date>-dense-build.json.

    python bench/dense_build.py [--D 266610] [--d 1000] [--reps 3]
"""

import argparse
import datetime
import time
from pathlib import Path

import torch

import harness as bench  # bench/harness.py, beside this script
from sublevel import projections


def v2(D: int, d: int, seed: int) -> torch.Tensor:
    P = torch.randn(D, d, generator=projections.generator(seed, "dense", d))
    return torch.stack([P / P.norm(dim=0, keepdim=True)])


def peer(D: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(D, d) / d ** 0.5


def sublevel(D: int, d: int, seed: int) -> torch.Tensor:
    return projections.make("dense", D, d, [seed]).tensors["P"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--D", type=int, default=266610)  # LeNet-300-100
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    all_threads = torch.get_num_threads()
    rows = []
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        for name, build in (("sublevel", sublevel), ("sublevel v2", v2), ("peer", peer)):
            build(args.D, args.d, 0)  # warm-up: page faults of the first 1 GB allocation
            seconds = []
            for rep in range(args.reps):
                t = time.perf_counter()
                P = build(args.D, args.d, rep)
                seconds.append(time.perf_counter() - t)
                del P
            rows.append(dict(variant=name, threads=threads, seconds_min=min(seconds),
                             seconds_median=sorted(seconds)[len(seconds) // 2], seconds=seconds))
            print(f"{name:12s} {threads} thread(s): {min(seconds):.2f} s (min of {args.reps})", flush=True)
    torch.set_num_threads(all_threads)
    out = {**bench.header(torch.device("cpu"), suite="dense-build", D=args.D, d=args.d,
                           projections_version=projections.VERSION), "rows": rows}
    short = "_".join(bench.cpu_name().split()[:2]).replace("/", "_")
    path = Path(__file__).parent / "results" / f"{short}-{datetime.date.today()}-dense-build.json"
    bench.write(out, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
