import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sublevel import batching, models, runtime, training
from sublevel.schedule import Schedule
from conftest import make_experiment

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _deterministic():
    runtime.seed_everything(1)


def run(exp, data, init_seed=0, data_seed=0):
    return training.train(exp, data, init_seed, data_seed, CPU, progress=False)


def test_same_config_and_seeds_give_identical_results(mnist1d):
    exp = make_experiment()
    _, a = run(exp, mnist1d)
    _, b = run(exp, mnist1d)
    assert np.array_equal(np.stack(a.params), np.stack(b.params))
    assert [r["loss"] for r in a.rows] == [r["loss"] for r in b.rows]


def test_init_seed_and_data_seed_are_separate(mnist1d):
    exp = make_experiment()
    _, base = run(exp, mnist1d, 0, 0)
    _, noise = run(exp, mnist1d, 0, 1)   # same init, other data order
    _, other = run(exp, mnist1d, 1, 0)   # other init, same data order
    assert np.array_equal(base.params[0], noise.params[0])
    assert not np.array_equal(base.params[-1], noise.params[-1])
    assert not np.array_equal(base.params[0], other.params[0])


def test_trajectory_rows_and_learning(mnist1d):
    exp = make_experiment(**{"train.steps": 150, "train.eval_every": 50})
    model, out = run(exp, mnist1d)
    sched = Schedule.resolve(exp, len(mnist1d.y_train))
    assert out.steps == list(sched.checkpoints) and out.steps[0] == 0 and out.steps[-1] == 150
    D = models.Layout.of(model).D
    assert all(p.shape == (D,) and p.dtype == np.float32 for p in out.params)
    assert np.array_equal(out.params[-1], models.flatten(model).numpy())
    splits = {(r["step"], r["split"]) for r in out.rows}
    assert {(s, sp) for s in (0, 50, 100, 150) for sp in ("train", "test")} <= splits
    first, last = out.rows[0], [r for r in out.rows if r["step"] == 150 and r["split"] == "train"][0]
    assert last["loss"] < first["loss"] and last["accuracy"] > 0.3  # it learns (chance is 0.1)
    assert not out.diverged and not any(r["diverged"] for r in out.rows)


def test_divergence_stops_the_run_and_marks_every_row(mnist1d):
    exp = make_experiment(**{"train.lr": 1e8, "train.steps": 200})
    _, out = run(exp, mnist1d)
    assert out.diverged
    assert all(r["diverged"] for r in out.rows)
    assert max(r["step"] for r in out.rows) < 200
    assert any(not math.isfinite(r["loss"]) for r in out.rows)


def test_adam_cosine_warmup_and_momentum_options_train(mnist1d):
    exp = make_experiment(**{"train.optimizer": "adam", "train.lr": 0.01, "train.schedule": "cosine",
                             "train.warmup": 5, "train.steps": 60})
    _, out = run(exp, mnist1d)
    lrs = {r["step"]: r["lr"] for r in out.rows}
    assert lrs[0] == pytest.approx(0.01 / 5) and lrs[60] == pytest.approx(0.0, abs=1e-12)
    assert not out.diverged


def test_augment_keeps_shape_and_content():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    y = batching.augment(x, gen)
    assert y.shape == x.shape
    # every output is a shifted (and maybe flipped) window of the zero-padded input
    assert not torch.equal(x, y) and (y.abs().sum((1, 2, 3)) <= x.abs().sum((1, 2, 3)) + 1e-4).all()


def test_a_named_device_is_taken_as_named_and_auto_prefers_cuda(monkeypatch):
    from sublevel.errors import DataError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    for name in ("cpu", "cuda:1", "mps"):
        assert runtime.pick_device(name) == torch.device(name)
    with pytest.raises(DataError, match="^device cuda:2: this machine has 2 CUDA device"):
        runtime.pick_device("cuda:2")
    for visible, expected in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)
        assert runtime.pick_device("auto") == torch.device(expected)


def test_the_batch_at_a_step_depends_on_the_data_seed_and_the_step_alone():
    n, bs, spe = 50, 8, 6  # 6 full batches an epoch, 2 examples dropped
    full = batching.EpochOrders([3, 4], n, bs, spe, CPU)
    seen = [full(step) for step in range(2 * spe)]
    restarted = batching.EpochOrders([4], n, bs, spe, CPU)  # run 1 alone, from a rewind point mid-epoch
    for step in range(spe + 2, 2 * spe):
        assert torch.equal(restarted(step)[0], seen[step][1])
    epoch = torch.cat([seen[s][0] for s in range(spe)])
    assert len(set(epoch.tolist())) == spe * bs  # an epoch draws each example at most once
    assert not torch.equal(seen[0][0], seen[0][1]) and not torch.equal(seen[0][0], seen[spe][0])


def test_stopping_early_reproduces_the_full_run_up_to_that_step(mnist1d):
    exp = make_experiment()
    sched = Schedule.resolve(exp, len(mnist1d.y_train))
    _, full = run(exp, mnist1d)
    k = 5
    model, part = training.train(exp, mnist1d, 0, 0, CPU, progress=False, stop=k, checkpoints=False,
                                 eval_every=False, schedule=sched)
    assert part.steps == [k] and part.rows[-1]["step"] == k
    assert np.array_equal(part.params[0], full.params[full.steps.index(k)])


def test_a_subset_follows_the_full_schedule_with_its_own_epochs(mnist1d):
    """The data diet: steps 0..k on half the data, learning rate from the full run's schedule."""
    from sublevel.datasets import subset

    exp = make_experiment(train={"lr": 0.05, "batch_size": 32, "steps": 40, "schedule": "cosine"})
    sched = Schedule.resolve(exp, len(mnist1d.y_train))
    half = subset(mnist1d, range(0, len(mnist1d.y_train), 2))
    k = 20  # more steps than the half has batches (7): the data order wraps into a second epoch
    _, part = training.train(exp, half, 0, 0, CPU, progress=False, stop=k, eval_every=False, schedule=sched)
    assert part.steps[-1] == k and math.isfinite(part.rows[-1]["loss"])
    assert part.rows[-1]["lr"] == pytest.approx(0.05 * sched.lr_factor(k, "cosine", exp.train.gamma))
    assert len(half.y_test) == len(mnist1d.y_test)


def test_cuda_jobs_ask_for_deterministic_kernels_and_a_fixed_cublas_workspace(monkeypatch):
    """What a job on a GPU sets before its first matmul (run here without a GPU: only the settings), without
    importing the compiler unless a step is compiled, which then gets the compiler's flag too."""
    check = ("import os, sys, torch; from sublevel import runtime; "
             "runtime.seed_everything(1, torch.device('cuda')); "
             "assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled(); "
             "assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'; "
             "assert 'torch._inductor' not in sys.modules; "
             "runtime.compiled(lambda x: x + 1, 'default'); "
             "import torch._inductor.config as c; assert c.deterministic")
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    subprocess.run([sys.executable, "-c", check], check=True, env=env)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(), torch.OutOfMemoryError("CUDA out of memory"),
])
def test_a_batch_that_runs_out_of_memory_halves_on_the_cpu_too(error):
    """PyTorch's CPU allocator raises a plain RuntimeError: in_batches halves on it as on CUDA's error, with
    the same results, and re-raises anything else."""
    from sublevel import runtime

    def fn(items):
        if len(items) > 2:
            raise error
        return [i * i for i in items]

    assert runtime.in_batches(list(range(8)), fn, torch.device("cpu")) == ([i * i for i in range(8)], 2)
    with pytest.raises(RuntimeError, match="shape"):
        runtime.in_batches([1, 2, 3], lambda items: (_ for _ in ()).throw(RuntimeError("shape mismatch")),
                           torch.device("cpu"))


@pytest.mark.parametrize("error, said", [
    (OSError(28, "No space left on device", "results/runs/e/seed=0/trajectory.zarr"), "out of disk space"),
    (MemoryError(), "out of memory"),
])
def test_a_job_out_of_disk_or_memory_ends_in_one_line(monkeypatch, capsys, error, said):
    from sublevel import cli
    from sublevel.commands import project

    def fail(args):
        raise error

    monkeypatch.setattr(project, "check_config", fail)
    assert cli.main(["check-config", "config/smoke.yaml"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sublevel check-config: {said}") and "\n" not in err, err


def test_a_live_view_sees_every_evaluation_as_the_table_records_it(mnist1d):
    """`log` (what `sublevel train --tensorboard` writes event files from) gets each evaluation's scalars, the
    same numbers the `train` table keeps, in step order."""
    from conftest import make_experiment

    seen = []
    exp = make_experiment(train={"lr": 0.05, "batch_size": 32, "steps": 20, "eval_every": 5})
    _, run = training.train(exp, mnist1d, 0, 0, torch.device("cpu"), progress=False,
                            log=lambda step, scalars: seen.append((step, scalars)))
    assert [s for s, _ in seen] == sorted({r["step"] for r in run.rows}) and seen[-1][0] == 20
    for step, scalars in seen:
        rows = {r["split"]: r for r in run.rows if r["step"] == step}
        assert scalars == {"train/loss": rows["train"]["loss"], "train/accuracy": rows["train"]["accuracy"],
                           "test/loss": rows["test"]["loss"], "test/accuracy": rows["test"]["accuracy"],
                           "lr": rows["train"]["lr"]}


def test_tensorboard_without_its_package_is_one_line(monkeypatch):
    import builtins

    from sublevel.commands.train import tensorboard
    from sublevel.errors import DataError

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError("absent"))
                        if name == "torch.utils.tensorboard" else real(name, *a, **k))
    assert tensorboard(None) is None
    with pytest.raises(DataError, match=r"pip install -e '\.\[tensorboard\]'"):
        tensorboard("somewhere")
