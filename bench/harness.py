"""Subspace-training throughput: one run at a time in a plain loop vs the pipeline's batched sweep.

Same model (LeNet-300-100 by default, D = 266,610), same MNIST-shaped data (made in-process: only the
shape matters for speed), same batch size and optimiser. Three measurements per d:

* loop: one run, a plain PyTorch training loop (θ = θ₀ + P w, functional_call, Adam on w), one step at a time;
* batched: `subspace.train_split`, exactly what a sweep job runs, with R runs at once (at most as many as
  fit in memory: the dense projection's D·d floats per run cap R at large d);
* ceiling: R full-parameter copies trained together the same way (identity projection, d = D): a subspace
  step cannot cost less than a full-parameter step of the same model.

Throughput is model-steps/s: runs × steps / seconds of training (evaluation excluded), after a warm-up.

Two more suites measure the dense side with the pipeline's own training code:

* dense (`dense`): images/s of one ResNet-20 on CIFAR-shaped data (batch 128, SGD, crop+flip), NCHW float32
  against channels_last and bfloat16 autocast (`train.channels_last`, `train.precision`);
* IMP (`imp`): model-steps/s of R masked LeNet-300-100 runs one after another (`training.train`, as one job per
  seed would) against the same R runs trained together (`ensemble.train`, as the IMP level jobs do).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from sublevel import models, projections, subspace
from sublevel.config import SubspaceTrain
from sublevel.datasets import Dataset

SUITES = ("subspace", "dense", "imp")  # `bench/run.py run --suite`
DENSE_VARIANTS = {"fp32": {}, "channels_last": {"channels_last": True}, "bf16": {"precision": "bf16"},
                  "channels_last+bf16": {"channels_last": True, "precision": "bf16"}}

# Peak memory bandwidth by device name, for the dense projection's fraction of it (bytes/s).
PEAK_BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H200": 4.8e12,
                  "A100-SXM4-80GB": 2.04e12, "A100-SXM4-40GB": 1.56e12}


def _commit() -> str | None:
    """HEAD, with "+dirty" when tracked files differ from it (a copy of the tree whose .git is older, say)."""
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    try:
        head = git("rev-parse", "HEAD").strip()
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "") or None
    except OSError:
        return None


def synthetic_mnist(n: int, device, seed: int = 0, shape=(1, 28, 28), test: int = 1000) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("synthetic", x[:-test].to(device), y[:-test].to(device), x[-test:].to(device),
                   y[-test:].to(device), 10)


def cpu_name() -> str:
    """The CPU's model name, as a benchmark report names the machine it ran on."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def header(device, **setup) -> dict:
    """What every benchmark report opens with: when, on what device and software, at which commit, and `setup`."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": str(device), "device_name": name, "torch": torch.__version__, "host": platform.node(),
           "commit": os.environ.get("SUBLEVEL_COMMIT") or _commit(),
           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(), **setup}
    if device.type == "cpu":
        out["threads"] = torch.get_num_threads()
    return out


def _experiment(name: str, model: dict, steps: int, batch_size: int, **train):
    """A validated experiment for the synthetic data (its schedule: `steps` steps, no checkpoints between)."""
    from sublevel.config import Experiment, validate

    raw = {"experiments": {name: {"dataset": "mnist1d", "model": model, "seeds": [0],
                                  "train": {"steps": steps, "batch_size": batch_size, "eval_every": steps,
                                            "eval_batch_size": 512, **train},
                                  "checkpoints": {"log_spaced": 0}}}}
    return Experiment.from_dict(name, validate(raw)["experiments"][name])


@contextlib.contextmanager
def _peak_memory(device, runs: int = 1):
    """Yields a dict that gets `peak_memory_per_run_mb` on CUDA: the peak allocated above what was allocated
    before, per run."""
    out: dict = {}
    if device.type != "cuda":
        yield out
        return
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    yield out
    out["peak_memory_per_run_mb"] = (torch.cuda.max_memory_allocated(device) - before) / runs / 2**20


def dense(device, steps: int = 50, batch_size: int = 128, width: int = 16, variants=tuple(DENSE_VARIANTS),
          progress=print, compile: str = "none") -> dict:
    """images/s of dense ResNet-20 training (evaluation excluded) per memory layout / precision; with `compile`,
    also fp32 and channels_last+bf16 under torch.compile in that mode (compiled in the warm-up run)."""
    from sublevel import training

    data = synthetic_mnist(batch_size * (steps + 2) + 512, device, shape=(3, 32, 32), test=512)
    report = header(device, suite="dense", model=f"resnet20 width {width}", batch_size=batch_size, steps=steps,
                     rows=[])
    options = {v: DENSE_VARIANTS[v] for v in variants}
    if compile != "none":
        for v in ("fp32", "channels_last+bf16"):
            options[f"{v}+compile={compile}"] = {**DENSE_VARIANTS[v], "compile": compile}
    for variant, option in options.items():
        make = lambda n: _experiment("bench", {"name": "resnet20", "width": width}, n, batch_size, lr=0.1,
                                     momentum=0.9, weight_decay=1e-4, augment=True, **option)
        exp, warm = make(steps), make(3)
        training.train(warm, data, 0, 0, device, checkpoints=False, eval_every=False, progress=False)
        with _peak_memory(device) as peak:
            _, run = training.train(exp, data, 0, 0, device, checkpoints=False, eval_every=False, progress=False)
        seconds = run.seconds - run.eval_seconds
        row = {"variant": variant, "images_per_s": steps * batch_size / seconds, "seconds": seconds, **peak}
        report["rows"].append(row)
        progress(f"resnet20 {variant:30s}: {row['images_per_s']:9,.0f} images/s")
    base = report["rows"][0]["images_per_s"]
    for row in report["rows"]:
        row["speedup_vs_fp32"] = row["images_per_s"] / base
    return report


def imp(device, runs: int = 8, steps: int = 100, batch_size: int = 128, widths=(300, 100), progress=print) -> dict:
    """model-steps/s of `runs` masked LeNet runs one after another vs trained together (IMP's level jobs)."""
    from sublevel import ensemble, pruning, training

    data = synthetic_mnist(batch_size * (steps + 2) + 1000, device)
    exp = _experiment("bench", {"name": "mlp", "widths": list(widths)}, steps, batch_size, lr=0.1, momentum=0.9)
    model = training.build_model(exp, data, 0, device)
    layout = models.Layout.of(model)
    mask = pruning.prune(models.flatten(model).cpu(), pruning.full_mask(layout), layout, 0.8)
    jobs = [ensemble.Run(seed, seed, mask=mask) for seed in range(runs)]
    ensemble.train(exp, data, jobs[:2], device, progress=False)  # warm-up
    training.train(exp, data, 0, 0, device, mask=mask, checkpoints=False, eval_every=False, progress=False)
    alone = 0.0
    for r in jobs:
        _, run = training.train(exp, data, r.init_seed, r.data_seed, device, mask=mask, checkpoints=False,
                                eval_every=False, progress=False)
        alone += run.seconds - run.eval_seconds
    with _peak_memory(device, runs) as peak:
        together = ensemble.train(exp, data, jobs, device, progress=False)[0].seconds
    report = header(device, suite="imp", model=f"mlp {list(widths)}", D=layout.D, batch_size=batch_size,
                     steps=steps, runs=runs, sparsity=0.8, **peak)
    report["one_at_a_time_model_steps_per_s"] = runs * steps / alone
    report["together_model_steps_per_s"] = runs * steps / together
    report["speedup"] = alone / together
    progress(f"{runs} masked runs: one at a time {report['one_at_a_time_model_steps_per_s']:,.0f} model-steps/s, "
             f"together {report['together_model_steps_per_s']:,.0f} (x{report['speedup']:.1f})")
    return report


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


def _spec(steps: int, batch_size: int, compile: str) -> SubspaceTrain:
    return SubspaceTrain("adam", 0.01, 0.9, steps, batch_size, eval_batch_size=2048, compile=compile)


def batched(model, data: Dataset, anchor: torch.Tensor, kind: str, d: int, runs: int, steps: int,
            batch_size: int, compile: str = "none") -> dict:
    """model-steps/s of the pipeline's own batched training of `runs` runs at dimension d. The warm-up trains
    the same batch (so a compiled step is compiled, and the GPU libraries have picked their kernels, before
    the clock starts); its seconds are reported as `warmup_seconds`."""
    device = anchor.device
    D = len(anchor)
    runs = min(runs, subspace.runs_that_fit(kind, D, d, device))  # one batch: what a sweep job would run at once
    seeds = list(range(runs))
    buffers = torch.zeros(0, device=device)
    make = lambda s: projections.make(kind, D, d, s).to(device)
    begin = time.perf_counter()
    subspace.train_split(model, data, anchor, buffers, kind, d, make, seeds, _spec(max(2, steps // 10), batch_size,
                         compile), evaluate=False)
    warmup = time.perf_counter() - begin
    with _peak_memory(device) as peak:
        result = subspace.train_split(model, data, anchor, buffers, kind, d, make, seeds,
                                      _spec(steps, batch_size, compile), evaluate=False)
    if "peak_memory_per_run_mb" in peak:  # per run of the batch that ran (the peak is one batch's)
        peak["peak_memory_per_run_mb"] /= result.batch
    return {"model_steps_per_s": runs * steps / result.seconds, "runs": runs, "runs_per_batch": result.batch,
            "steps": steps, "seconds": result.seconds, "warmup_seconds": warmup, **peak}


def profile(model, data: Dataset, anchor: torch.Tensor, kind: str, d: int, runs: int, steps: int, batch_size: int,
            top: int = 12, compile: str = "none") -> list[dict]:
    """Where a batched step spends its time: torch.profiler over `steps` steps of `runs` runs, the `top` ops by
    self time on the device (CUDA kernels' time on a GPU, CPU time on the CPU)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    device = anchor.device
    cuda = device.type == "cuda"
    spec = _spec(steps, batch_size, compile)
    seeds = list(range(min(runs, subspace.runs_that_fit(kind, len(anchor), d, device))))
    proj = projections.make(kind, len(anchor), d, seeds).to(device)  # built once: the profile is the steps'
    # a batch's rows of it, as views (train_split passes consecutive seeds; fewer if a batch is halved)
    make = lambda s: projections.Projection(kind, proj.D, d, {k: v[s[0]:s[-1] + 1] for k, v in proj.tensors.items()})
    subspace.train_split(model, data, anchor, torch.zeros(0, device=device), kind, d, make, seeds, spec,
                         evaluate=False)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        subspace.train_split(model, data, anchor, torch.zeros(0, device=device), kind, d, make, seeds, spec,
                             evaluate=False)
    self_time = lambda e: (getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
                           if cuda else e.self_cpu_time_total)
    events = [e for e in prof.key_averages() if self_time(e) > 0]
    total = sum(self_time(e) for e in events) or 1.0
    events.sort(key=self_time, reverse=True)
    return [{"op": e.key, "calls": e.count, "self_ms_per_step": self_time(e) / 1e3 / steps,
             "share": self_time(e) / total} for e in events[:top]]


def run(device, dims=(10, 100, 1000, 10000), kinds=("fastfood", "dense"), runs: int = 256, steps: int = 100,
        loop_steps: int = 100, batch_size: int = 128, widths=(300, 100), progress=print, tf32: bool = False,
        profile_steps: int = 0, compile: str = "none") -> dict:
    """The subspace suite. `tf32`: TensorFloat-32 matmuls on CUDA (PyTorch's default is off: float32 exactly).
    `profile_steps`: also profile the ceiling and Fastfood at the largest d for this many steps. `compile`: the
    batched runs' step under torch.compile in this mode (`subspace.compile`); the one-run loop stays eager."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.manual_seed(0)
    data = synthetic_mnist(11000, device)
    model = models.build("mlp", (1, 28, 28), 10, widths=tuple(widths)).to(device)
    anchor = models.flatten(model).to(device)
    D = len(anchor)
    report = header(device, suite="subspace", model=f"mlp {list(widths)}", D=D, batch_size=batch_size, runs=runs,
                     steps=steps, tf32_matmul=tf32, compile=compile, rows=[])
    name = report["device_name"]
    ceiling = batched(model, data, anchor, "identity", D, runs, steps, batch_size, compile)
    report["ceiling"] = ceiling
    progress(f"ceiling: {runs} full-parameter copies under vmap: {ceiling['model_steps_per_s']:,.0f} model-steps/s")
    bandwidth = next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)
    for kind in kinds:
        for d in dims:
            one = loop(model, data, anchor, projections.make(kind, D, d, [0]).to(device), loop_steps, batch_size)
            many = batched(model, data, anchor, kind, d, runs, steps, batch_size, compile)
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
    if profile_steps:
        report["profile"] = {}
        for kind, d in (("identity", D), ("fastfood", max(dims))):
            top = profile(model, data, anchor, kind, d, runs, profile_steps, batch_size, compile=compile)
            report["profile"][f"{kind} d={d}"] = top
            progress(f"profile {kind} d={d}: " + "; ".join(f"{t['op']} {100 * t['share']:.0f}%" for t in top[:5]))
    return report


def markdown(report: dict) -> str:
    """The report as the README's table (a suite's rows, with what it ran on), for pasting and for the end of
    a device call's output."""
    setup = (f"{report['device_name']}, torch {report['torch']}, commit {(report.get('commit') or '?')[:7]}, "
             f"{report['date'][:10]}" + (", deterministic" if report.get("deterministic_algorithms") else "")
             + (f", compile={report['compile']}" if report.get("compile", "none") != "none" else ""))
    mb = lambda r: f"{r['peak_memory_per_run_mb']:,.1f}" if "peak_memory_per_run_mb" in r else "-"
    percent = lambda x: f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.1f}%"
    if report.get("suite", "subspace") == "subspace":  # the first GPU reports had only this suite
        c = report["ceiling"]
        lines = [f"{report['model']}, D = {report['D']:,}, batch {report['batch_size']}, {report['runs']} runs; "
                 f"{setup}; ceiling {c['model_steps_per_s']:,.0f} model-steps/s", "",
                 "| projection | d | one-run loop (steps/s) | batched (model-steps/s) | × loop | of ceiling | "
                 "peak MB/run |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["rows"]:
            bw = r.get("fraction_of_peak_bandwidth")
            lines.append(f"| {r['projection']} | {r['d']:,} | {r['loop_steps_per_s']:,.0f} | "
                         f"{r['model_steps_per_s']:,.0f}" + (f" ({100 * bw:.0f}% of bandwidth)" if bw else "")
                         + f" | {r['speedup_vs_loop']:.0f} | {percent(r['fraction_of_ceiling'])} | {mb(r)} |")
    elif report["suite"] == "dense":
        lines = [f"{report['model']}, batch {report['batch_size']}; {setup}", "",
                 "| variant | images/s | × fp32 | peak MB |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['variant']} | {r['images_per_s']:,.0f} | {r['speedup_vs_fp32']:.2f} | {mb(r)} |"
                  for r in report["rows"]]
    else:
        lines = [f"{report['runs']} masked {report['model']} runs ({100 * report['sparsity']:.0f}% sparse), batch "
                 f"{report['batch_size']}; {setup}", "",
                 "| one at a time (model-steps/s) | together (model-steps/s) | × |", "| --- | --- | --- |",
                 f"| {report['one_at_a_time_model_steps_per_s']:,.0f} | {report['together_model_steps_per_s']:,.0f} "
                 f"| {report['speedup']:.2f} |"]
    return "\n".join(lines)


def write(report: dict, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def default_path(report: dict, suite: str, compile: str = "none") -> Path:
    """bench/results/<device>-<date>[-<suite>][-compile-<mode>].json: one file per device, day and setup."""
    suffix = ("" if suite == "subspace" else f"-{suite}") + ("" if compile == "none" else f"-compile-{compile}")
    device = re.sub(r"[^A-Za-z0-9.-]+", "_", report["device_name"])
    return Path("bench/results") / f"{device}-{datetime.date.today().isoformat()}{suffix}.json"

