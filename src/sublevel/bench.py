"""Subspace-training throughput: one run at a time in a plain loop vs the pipeline's batched sweep.

Same model (LeNet-300-100 by default, D = 266,610), same MNIST-shaped data (made in-process: only the
shape matters for speed), same batch size and optimiser. Three measurements per d:

* loop: one run, a plain PyTorch training loop (θ = θ₀ + P w, functional_call, Adam on w), one step at a time;
* batched: `subspace.train_split`, exactly what a sweep job runs, with R runs at once (at most as many as
  fit in memory: the dense projection's D·d floats per run cap R at large d);
* ceiling: R full-parameter copies trained together the same way (identity projection, d = D): a subspace
  step cannot cost less than a full-parameter step of the same model.

Throughput is model-steps/s: runs × steps / seconds of training (evaluation excluded), after a warm-up.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from sublevel import models, projections, subspace
from sublevel.datasets import Dataset

# Peak memory bandwidth by device name, for the dense projection's fraction of it (bytes/s).
PEAK_BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H200": 4.8e12,
                  "A100-SXM4-80GB": 2.04e12, "A100-SXM4-40GB": 1.56e12}


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        return None


def synthetic_mnist(n: int, device, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("synthetic_mnist", x[:-1000].to(device), y[:-1000].to(device), x[-1000:].to(device),
                   y[-1000:].to(device), 10)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop(model, data: Dataset, anchor: torch.Tensor, proj: projections.Projection, steps: int, batch_size: int,
         lr: float = 0.01) -> float:
    """Steps/s of one run in a plain loop (no vmap): the baseline a researcher's own script would be."""
    layout = models.Layout.of(model)
    w = torch.zeros(1, proj.d, device=anchor.device, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    g = torch.Generator(device="cpu").manual_seed(0)
    n = len(data.y_train)

    def step():
        idx = torch.randint(0, n, (batch_size,), generator=g).to(anchor.device)
        theta = anchor + proj(w)[0]
        loss = F.cross_entropy(functional_call(model, layout.unflatten(theta), (data.x_train[idx],)),
                               data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(2, steps // 10)):
        step()
    _sync(anchor.device)
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(anchor.device)
    return steps / (time.perf_counter() - begin)


def batched(model, data: Dataset, anchor: torch.Tensor, kind: str, d: int, runs: int, steps: int,
            batch_size: int) -> dict:
    """model-steps/s of the pipeline's own batched training of `runs` runs at dimension d."""
    device = anchor.device
    D = len(anchor)
    runs = min(runs, subspace.runs_that_fit(kind, D, d, device))  # one batch: what a sweep job would run at once
    seeds = list(range(runs))
    buffers = torch.zeros(0, device=device)
    spec = subspace.SubspaceTrain("adam", 0.01, 0.9, steps, batch_size, eval_batch_size=2048)
    warm = subspace.SubspaceTrain("adam", 0.01, 0.9, max(2, steps // 10), batch_size, eval_batch_size=2048)
    make = lambda s: projections.make(kind, D, d, s).to(device)
    subspace.train_split(model, data, anchor, buffers, kind, d, make, seeds[:1], warm, evaluate=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    result = subspace.train_split(model, data, anchor, buffers, kind, d, make, seeds, spec, evaluate=False)
    out = {"model_steps_per_s": runs * steps / result.seconds, "runs": runs, "runs_per_batch": result.batch,
           "steps": steps, "seconds": result.seconds}
    if device.type == "cuda":
        out["peak_memory_per_run_mb"] = (torch.cuda.max_memory_allocated(device) - before) / result.batch / 2**20
    return out


def run(device, dims=(10, 100, 1000, 10000), kinds=("fastfood", "dense"), runs: int = 256, steps: int = 100,
        loop_steps: int = 100, batch_size: int = 128, widths=(300, 100), progress=print) -> dict:
    torch.manual_seed(0)
    data = synthetic_mnist(11000, device)
    model = models.build("mlp", (1, 28, 28), 10, widths=tuple(widths)).to(device)
    anchor = models.flatten(model).to(device)
    D = len(anchor)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": str(device), "device_name": name, "torch": torch.__version__,
              "host": platform.node(), "commit": os.environ.get("SUBLEVEL_COMMIT") or _commit(),
              "model": f"mlp {list(widths)}", "D": D, "batch_size": batch_size,
              "runs": runs, "steps": steps, "rows": []}
    if device.type == "cpu":
        report["threads"] = torch.get_num_threads()
    ceiling = batched(model, data, anchor, "identity", D, runs, steps, batch_size)
    report["ceiling"] = ceiling
    progress(f"ceiling: {runs} full-parameter copies under vmap: {ceiling['model_steps_per_s']:,.0f} model-steps/s")
    bandwidth = next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)
    for kind in kinds:
        for d in dims:
            one = loop(model, data, anchor, projections.make(kind, D, d, [0]).to(device), loop_steps, batch_size)
            many = batched(model, data, anchor, kind, d, runs, steps, batch_size)
            row = {"projection": kind, "d": d, "loop_steps_per_s": one, **many,
                   "speedup_vs_loop": many["model_steps_per_s"] / one,
                   "fraction_of_ceiling": many["model_steps_per_s"] / ceiling["model_steps_per_s"]}
            if kind == "dense":  # P [D, d] is read twice a step per run (forward and backward)
                row["bytes_per_s"] = 2 * D * d * 4 * many["model_steps_per_s"]
                row["fraction_of_peak_bandwidth"] = row["bytes_per_s"] / bandwidth if bandwidth else None
            report["rows"].append(row)
            progress(f"{kind:8s} d={d:>6}: loop {one:9,.0f} steps/s | batched {many['model_steps_per_s']:10,.0f} "
                     f"model-steps/s ({many['runs_per_batch']} runs/batch) | x{row['speedup_vs_loop']:.1f} | "
                     f"{100 * row['fraction_of_ceiling']:.0f}% of ceiling")
    return report


def write(report: dict, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
