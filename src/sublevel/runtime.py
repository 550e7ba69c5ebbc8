"""Where and how a job computes: the device, seeding and determinism, torch.compile, bfloat16 autocast, and
running a list of runs in slices that fit the device's memory."""

from __future__ import annotations

import os

import torch

from sublevel.config import Experiment
from sublevel.errors import DataError, out_of_memory


def pick_device(name: str = "auto") -> torch.device:
    """'auto': the first CUDA device when one is visible, else the CPU; the code path is the same."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if problem := device_problem(name):
        raise DataError(f"device {name}: {problem}")
    return torch.device(name)


def device_problem(name: str) -> str | None:
    """Why this machine's torch cannot run on the configured device `name` (cpu, mps, cuda, cuda:N), or None."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return ("this torch sees no CUDA device (a CPU-only build, or no GPU here); `device: auto` uses a GPU "
                    "where there is one")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    if name == "mps" and not torch.backends.mps.is_available():
        return "this torch has no MPS device"
    return None


def seed_everything(threads: int | None = None, device: torch.device | None = None) -> None:
    """Fixed CPU threads, and deterministic kernels on CUDA, so the same config and seeds give the same results.

    The CPU kernels used here are deterministic at a fixed thread count already (a test checks it), and
    deterministic kernels are set for CUDA only. cuBLAS is deterministic only with a fixed workspace, which it
    reads from the environment when it starts: call this before the first matmul on the device.

    torch.use_deterministic_algorithms imports torch._inductor to set its compiler's flag too (2 s of every
    job, most of the start-up of a small one); a job that compiles nothing needs only the kernels' switch, and
    `compiled` sets the compiler's flag where it is used."""
    if device is not None and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def autocast(exp: Experiment, device: torch.device):
    """The training forward pass in bfloat16 where `train.precision` asks for it (weights, optimiser and the
    loss stay float32); a no-op at float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=exp.train.precision == "bf16")


COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")  # the config schema's


def compiled(fn, mode: str):
    """`fn` (a module or function) under torch.compile in `mode`, or `fn` itself for "none". Shapes are static:
    one graph per input shape, and a job that meets many (a sweep's dimensions) may compile up to 256."""
    if mode == "none":
        return fn
    if torch.are_deterministic_algorithms_enabled():  # inductor's own flag as well (see seed_everything)
        torch.use_deterministic_algorithms(True, warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    return torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False)


def in_batches(items: list, fn, device: torch.device, batch: int | None = None) -> tuple[list, int]:
    """fn over consecutive slices of `items` (runs trained together), `batch` at a time (all by default);
    a slice that runs out of memory, the GPU's or the CPU's, halves the batch and starts over, so a job never
    fails for memory while one item fits. Each item's result depends only on the item, so the split changes
    no result. Returns (fn's results concatenated, the batch that ran)."""
    batch = max(1, min(len(items), batch or len(items)))
    while True:
        try:
            return [out for i in range(0, len(items), batch) for out in fn(items[i:i + batch])], batch
        except Exception as e:
            if batch == 1 or not out_of_memory(e):
                raise
            batch //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
