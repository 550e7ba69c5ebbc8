import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import zarr

from sublevel import models, projections, runtime, subspace, sweep, training
from sublevel.config import ConfigError, RefineSpec, SubspaceTrain, Threshold
from sublevel.kinds import KINDS
from sublevel.stages import for_stage
from conftest import make_experiment

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _deterministic():
    runtime.seed_everything(1)


@pytest.mark.parametrize("n", [1, 2, 16, 64, 2048])
@pytest.mark.parametrize("max_factor, one_gemm", [(2, 1), (8, 1), (32, 1), (32, 128)])
def test_hadamard_matches_the_matrix(n, max_factor, one_gemm):
    x = torch.randn(3, 2, n, dtype=torch.float64)  # 2048 = 8 x 16 x 16 with factors of 32: three matmuls
    H = torch.from_numpy(scipy.linalg.hadamard(n)).double()
    factors = projections.hadamard_factors(n, max_factor, one_gemm)
    assert torch.allclose(projections.hadamard(x, factors=factors), x @ H.T)


@pytest.mark.parametrize("n", [1, 2, 16, 128, 256, 1024, 8192, 16384, 1 << 20])
def test_hadamard_factors_are_few_balanced_and_cover_n(n):
    f = projections.hadamard_factors(n)
    assert sum(f) == n.bit_length() - 1
    if n <= projections.ONE_GEMM:
        assert len(f) <= 1
    else:
        cap = projections.MAX_FACTOR.bit_length() - 1
        assert max(f) <= cap and len(f) == math.ceil(sum(f) / cap)  # as few as the cap allows
        assert max(f) - min(f) <= 1 and f == sorted(f)                # balanced, the smallest first


@pytest.mark.parametrize("kind", ["dense", "fastfood"])
@pytest.mark.parametrize("D, d", [(1024, 64), (1000, 10), (5000, 300)])
def test_columns_are_unit_norm_and_nearly_orthogonal(kind, D, d):
    P = projections.make(kind, D, d, [0, 1]).columns()          # [R, D, d]
    norms = P.norm(dim=1)
    exact = kind == "dense" or D % (1 << math.ceil(math.log2(d))) == 0
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5 if exact else 2e-2)
    gram = torch.einsum("rDi,rDj->rij", P, P)
    off = gram[:, ~torch.eye(d, dtype=torch.bool)]
    # random unit vectors in R^D: |<p_i, p_j>| ~ sqrt(2 / (pi D)) on average
    assert off.abs().mean() < 1.5 * math.sqrt(2 / (math.pi * D))
    assert off.mean().abs() < 3 / math.sqrt(D * d)


def test_the_fastfood_gradient_is_the_transposed_projection():
    """Its permutation's backward is a gather with the inverse permutation (no scatter-add): check the whole
    transform's gradient numerically, in float64, with D not a multiple of the block size."""
    proj = projections.make("fastfood", 100, 12, [0, 1])
    proj64 = projections.Projection("fastfood", 100, 12, {k: v.double() if v.is_floating_point() else v
                                                          for k, v in proj.tensors.items()})
    w = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(proj64, (w,))
    g = torch.randn(2, 100, dtype=torch.float64)
    (grad,) = torch.autograd.grad(proj64(w), w, g)
    torch.testing.assert_close(grad, torch.einsum("rDd,rD->rd", proj64.columns(), g))


@pytest.mark.parametrize("D, d", [(100, 12), (64, 16), (7, 1)])
def test_fastfood_is_h_g_pi_h_b_per_block_with_h_b_shared(D, d):
    """The transform against its definition, from dense matrices: block i of P is H G_i Π_i H B [I_d; 0],
    the blocks stacked and cut to D rows."""
    proj = projections.make("fastfood", D, d, [0, 1])
    t = proj.tensors
    L = t["B"].shape[-1]
    H = torch.from_numpy(scipy.linalg.hadamard(L)).double()
    for r in range(2):
        u = H @ torch.diag(t["B"][r].double()) @ torch.eye(L, d, dtype=torch.float64)    # [L, d]
        blocks = [H @ torch.diag(G.double()) @ u[perm] for G, perm in zip(t["G"][r], t["perm"][r])]
        torch.testing.assert_close(proj.columns()[r].double(), torch.cat(blocks)[:D], rtol=1e-5, atol=1e-6)
        assert torch.equal(t["perm"][r].sort(-1).values, torch.arange(L).expand(len(t["perm"][r]), -1))
        assert torch.equal(t["perm"][r].gather(-1, t["inverse"][r]), torch.arange(L).expand_as(t["perm"][r]))
    assert len({tuple(p.tolist()) for p in t["perm"][0]}) == len(t["perm"][0]) or L < 4  # the blocks differ
    per_run = sum(v[0].numel() * v.element_size() for v in t.values())
    assert subspace.projection_bytes("fastfood", D, d) == per_run


@pytest.mark.parametrize("kind", ["dense", "fastfood"])
def test_the_same_seed_regenerates_the_same_projection(kind):
    w = torch.randn(3, 50)
    a, b = projections.make(kind, 2000, 50, [0, 1, 2]), projections.make(kind, 2000, 50, [0, 1, 2])
    assert torch.equal(a(w), b(w))
    other = projections.make(kind, 2000, 50, [3, 4, 5])
    assert not torch.allclose(a(w), other(w))
    # run r depends on its own seed only, not on its batch-mates
    alone = projections.make(kind, 2000, 50, [1])
    assert torch.allclose(a(w)[1:2], alone(w[1:2]), atol=1e-5)


def test_a_dense_projection_is_the_same_on_any_number_of_threads_and_its_blocks_are_independent():
    D = 2 * projections.DENSE_BLOCK + 5  # two whole blocks and a short one
    threads = torch.get_num_threads()
    try:
        built = []
        for n in (1, 3):
            torch.set_num_threads(n)
            built.append(projections.make("dense", D, 6, [0]).tensors["P"][0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(*built)
    P = built[0]
    assert torch.allclose(P.norm(dim=0), torch.ones(6), atol=1e-6)
    first, second = P[:projections.DENSE_BLOCK], P[projections.DENSE_BLOCK:2 * projections.DENSE_BLOCK]
    assert not torch.allclose(first, second)  # each block its own stream, not one stream repeated
    z = (P * D ** 0.5).double().flatten()  # ~ N(0, 1): mean 0 and kurtosis 3 (a uniform draw has 1.8)
    assert abs(float(z.mean())) < 0.05 and abs(float((z ** 4).mean() / (z ** 2).mean() ** 2) - 3) < 0.15

def test_bad_dimensions_are_rejected():
    with pytest.raises(ValueError, match="d = 0"):
        projections.make("dense", 100, 0, [0])
    with pytest.raises(ValueError, match="d = 101"):
        projections.make("fastfood", 100, 101, [0])


def test_identity_subspace_matches_dense_training_step_for_step(mnist1d):
    exp = make_experiment(**{"train.momentum": 0.9, "train.weight_decay": 0.0, "train.steps": 30,
                             "checkpoints": {"every": 1, "log_spaced": 0}})
    _, dense = training.train(exp, mnist1d, 0, 0, CPU, progress=False)
    theta0 = torch.from_numpy(dense.params[0])
    D = len(theta0)
    model = training.build_model(exp, mnist1d, 0, CPU)
    for steps in (1, 7, 30):
        spec = SubspaceTrain(optimizer="sgd", lr=0.05, momentum=0.9, steps=steps, batch_size=32)
        res = subspace.train(model, mnist1d, theta0, torch.zeros(0), projections.make("identity", D, D, [0]), [0], spec)
        assert torch.allclose(theta0 + res.w[0], torch.from_numpy(dense.params[steps]), atol=1e-6), steps
    final = {r["split"]: r for r in dense.rows if r["step"] == 30}
    assert res.metrics[0]["train_accuracy"] == pytest.approx(final["train"]["accuracy"])
    assert res.metrics[0]["test_loss"] == pytest.approx(final["test"]["loss"], rel=1e-5)


@pytest.mark.parametrize("kind", ["dense", "fastfood"])
def test_batched_runs_equal_one_at_a_time(mnist1d, kind):
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta0 = models.flatten(model)
    D, d, seeds = len(theta0), 40, [0, 1, 2]
    spec = SubspaceTrain(steps=25, batch_size=32, lr=0.02)
    together = subspace.train(model, mnist1d, theta0, torch.zeros(0), projections.make(kind, D, d, seeds), seeds, spec)
    for i, seed in enumerate(seeds):
        alone = subspace.train(model, mnist1d, theta0, torch.zeros(0), projections.make(kind, D, d, [seed]), [seed], spec)
        assert torch.allclose(together.w[i], alone.w[0], atol=1e-5)
        for key in ("train_loss", "test_accuracy"):
            assert together.metrics[i][key] == pytest.approx(alone.metrics[0][key], abs=1e-5)


def test_more_dimensions_train_better(mnist1d):
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta0 = models.flatten(model)
    spec = SubspaceTrain(steps=150, batch_size=32, lr=0.02)
    acc = {}
    for d in (2, 200):
        res = subspace.train(model, mnist1d, theta0, torch.zeros(0), projections.make("dense", len(theta0), d, [0, 1]),
                             [0, 1], spec)
        acc[d] = np.mean([m["train_accuracy"] for m in res.metrics])
    assert acc[200] > acc[2] + 0.1


def test_lottery_basis_is_orthonormal_and_spans_the_trajectory():
    torch.manual_seed(0)
    params = torch.randn(6, 300)
    V = KINDS["lottery"].basis(params, 5)
    assert torch.allclose(V.T @ V, torch.eye(5), atol=1e-5)
    disp = params[1:] - params[:1]
    assert torch.allclose((disp @ V) @ V.T, disp, atol=1e-4)


def test_lottery_basis_is_the_papers_top_directions_of_the_successive_displacements():
    """Larsen et al.'s lottery_subspace.py: rows θ_{s+5} − θ_s, U from svd(rowsᵀ), M = U[:, :d]ᵀ. A trajectory
    that drifts along e_0 while oscillating with a larger step along e_1 and e_2: the successive displacements'
    top direction is the oscillation, the cumulative displacements' (the old basis) the drift."""
    import numpy as np

    D, T = 50, 41
    e = np.eye(D)
    params = np.stack([0.5 * s * e[0] + 3.0 * (-1) ** s * e[1] + 0.2 * np.cos(s) * e[2] for s in range(T)])
    steps = params[1:] - params[:-1]
    U, _, _ = np.linalg.svd(steps.T, full_matrices=False)  # the released code's call, in float64
    V = KINDS["lottery"].basis(torch.from_numpy(params).float(), 3).double().numpy()
    for k in range(3):  # each column the same direction up to sign
        assert abs(abs(V[:, k] @ U[:, k]) - 1) < 1e-5
    assert abs(V[:, 0] @ e[1]) > 0.99  # the oscillation first
    cumulative_top = np.linalg.svd(params[1:] - params[:1], full_matrices=False)[2][0]
    assert abs(cumulative_top @ e[0]) > 0.9 and abs(V[:, 0] @ e[0]) < 0.1


def test_a_lottery_projection_is_one_shared_basis_whose_columns_are_the_top_directions():
    torch.manual_seed(0)
    basis = KINDS["lottery"].basis(torch.randn(9, 300), 8)
    pkind, make = subspace.projection_maker("lottery", "auto", 300, 5, basis, torch.device("cpu"))
    proj = make([0, 1, 2])
    assert pkind == "pca" and proj.tensors["P"].shape == (300, 5)  # one P, not one copy per run
    assert torch.equal(proj.columns()[0], basis[:, :5])
    w = torch.randn(3, 5, requires_grad=True)
    out = proj(w)
    assert torch.allclose(out, torch.stack([basis[:, :5] @ w[r] for r in range(3)]), atol=1e-6)
    out.sum().backward()  # each run's gradient is its own: Pᵀ 1
    assert torch.allclose(w.grad, (basis[:, :5].sum(0)).expand(3, -1), atol=1e-5)

@pytest.mark.parametrize("sub, message", [
    ({"dims": [0]}, "dims"),
    ({"dims": [827]}, "d = 827 exceeds D = 826"),
    ({"dims": [4], "kinds": ["burnin"], "burnin": [6]}, "step 6 is not a stored checkpoint; stored steps: \\[0, 1, 3, 5, 12, 40\\]"),
    ({"dims": [4], "kinds": ["burnin"]}, "needs at least one burn-in step"),
    ({"dims": [4], "dense_seed": 9}, "dense_seed"),
])
def test_bad_sweeps_are_rejected_before_any_job(sub, message):
    with pytest.raises(ConfigError, match=f"^config error at experiments.smoke.subspace.*{message}"):
        make_experiment(subspace=sub)


def test_log_spaced_dims():
    exp = make_experiment(subspace={"dims": {"min": 4, "max": 256, "num": 4}, "kinds": ["random"]})
    assert exp.subspace.dims == (4, 16, 64, 256)


def rows(p_by_d, seeds=4, metric="train_accuracy"):
    """Synthetic sweep rows with a given success fraction at each d (threshold 0.5)."""
    out = []
    for d, p in p_by_d.items():
        hits = round(p * seeds)
        out += [{"d": d, metric: 0.9 if i < hits else 0.1, "diverged": False} for i in range(seeds)]
    return out


REFINE = RefineSpec("train_accuracy", 0.5, 1.2, 4)


def test_success_probability_counts_the_sublevel_set():
    r = rows({10: 0.0, 100: 0.25, 1000: 1.0})
    r.append({"d": 1000, "train_accuracy": 0.99, "diverged": True})  # a diverged run never succeeds
    assert sweep.success(r, Threshold("train_accuracy", 0.5)) == {10: 0.0, 100: 0.25, 1000: 0.8}
    loss = [{"d": 5, "train_loss": 0.1, "diverged": False}, {"d": 5, "train_loss": 2.0, "diverged": False}]
    assert sweep.success(loss, Threshold("train_loss", 0.5)) == {5: 0.5}


def test_refinement_bisects_in_log_d_around_one_half():
    plan = sweep.refine_plan(rows({10: 0.0, 100: 0.25, 1000: 1.0, 10000: 1.0}), REFINE, 0, 15210)
    assert plan["bracket"] == [100, 1000] and plan["dims"] == [316]
    plan = sweep.refine_plan(rows({100: 0.0, 316: 0.75, 1000: 1.0}), REFINE, 1, 15210)
    assert plan["bracket"] == [100, 316] and plan["dims"] == [178]
    done = sweep.refine_plan(rows({100: 0.0, 110: 1.0}), REFINE, 3, 15210)
    assert done["dims"] == [] and done["reason"] == "resolution reached"
    assert sweep.refine_plan(rows({100: 0.0, 1000: 1.0}), REFINE, 4, 15210)["reason"] == "max_rounds reached"
    assert sweep.refine_plan(rows({100: 0.0, 1000: 0.25}), REFINE, 0, 15210)["dims"] == []
    assert sweep.refine_plan(rows({100: 0.5, 1000: 1.0}), REFINE, 0, 15210)["dims"] == []


def test_batchnorm_subspace_runs_normalise_with_batch_statistics():
    from sublevel.datasets import Dataset

    torch.manual_seed(0)
    model = models.build("resnet20", (3, 8, 8), 10, width=2)
    data = Dataset("x", torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,)), torch.randn(32, 3, 8, 8),
                   torch.randint(0, 10, (32,)), 10)
    theta, bufs = models.flatten(model), models.flatten_buffers(model)
    res = subspace.train(model, data, theta, bufs, projections.make("dense", len(theta), 8, [0, 1]), [0, 1],
                         SubspaceTrain(steps=5, batch_size=16))
    assert all(math.isfinite(m["test_loss"]) for m in res.metrics)
    # the reported test loss is the network's in train-mode normalisation over the whole (32-example) split
    theta = theta + projections.make("dense", len(theta), 8, [0, 1])(res.w)[0]
    models.load_flat(model, theta)
    model.train()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(data.x_test), data.y_test).item()
    assert res.metrics[0]["test_loss"] == pytest.approx(loss, rel=1e-4)


def test_diverged_runs_stop_and_are_flagged(mnist1d):
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta0 = models.flatten(model)
    res = subspace.train(model, mnist1d, theta0, torch.zeros(0), projections.make("dense", len(theta0), 20, [0, 1]),
                         [0, 1], SubspaceTrain(optimizer="sgd", lr=1e12, steps=30, batch_size=32))
    assert all(m["diverged"] for m in res.metrics)


class _PoisonedFrom:
    """A projection whose output for `run` turns NaN from its `at`-th call on: that run diverges at step `at`."""

    def __init__(self, proj, run: int, at: int):
        self.proj, self.run, self.at, self.d, self.calls = proj, run, at, proj.d, 0

    def __call__(self, w):
        out, self.calls = self.proj(w), self.calls + 1
        if self.calls > self.at:
            out = out.clone()
            out[self.run] = float("nan")
        return out


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_run_that_diverges_stays_where_it_stopped_and_the_others_go_on(mnist1d, optimizer):
    """Run 1 diverges at step 5: its coordinates stay those after 5 steps (neither its gradient nor Adam's or
    SGD's momentum moves it on), and run 0 trains as if alone."""
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta0 = models.flatten(model)
    P = projections.make("dense", len(theta0), 8, [0, 1]).tensors["P"]
    proj = lambda rows: projections.Projection("dense", len(theta0), 8, {"P": P[rows]})
    train = lambda p, seeds, steps: subspace.train(
        model, mnist1d, theta0, torch.zeros(0), p, seeds,
        SubspaceTrain(optimizer=optimizer, lr=0.01, steps=steps, batch_size=32), evaluate=False)
    both = train(_PoisonedFrom(proj([0, 1]), run=1, at=5), [0, 1], 20)
    assert [m["diverged"] for m in both.metrics] == [False, True]
    torch.testing.assert_close(both.w[0], train(proj([0]), [0], 20).w[0])
    torch.testing.assert_close(both.w[1], train(proj([1]), [1], 5).w[0])
    assert not torch.equal(both.w[1], train(proj([1]), [1], 6).w[0])  # one step more would have moved it


def test_a_batch_that_runs_out_of_memory_is_split_and_gives_the_same_runs(mnist1d, monkeypatch):
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta0 = models.flatten(model)
    D, d, seeds = len(theta0), 16, [0, 1, 2, 3, 4]
    spec = SubspaceTrain(steps=12, batch_size=32, lr=0.02)
    make = lambda ss: projections.make("fastfood", D, d, ss)
    whole = subspace.train_split(model, mnist1d, theta0, torch.zeros(0), "fastfood", d, make, seeds, spec)
    assert whole.batch == 5
    real_train = subspace.train
    attempts = []

    def small_memory(model, data, anchor, buffers, proj, data_seeds, spec, evaluate=True, label=None):
        attempts.append(len(data_seeds))
        if len(data_seeds) > 2:  # as a GPU with room for two runs would
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_train(model, data, anchor, buffers, proj, data_seeds, spec, evaluate, label)

    monkeypatch.setattr(subspace, "train", small_memory)
    split = subspace.train_split(model, mnist1d, theta0, torch.zeros(0), "fastfood", d, make, seeds, spec)
    assert split.batch == 2 and attempts == [5, 2, 2, 1]  # halved until it fits; the last batch is the rest
    assert torch.allclose(split.w, whole.w, atol=1e-5)
    assert [m["train_loss"] for m in split.metrics] == pytest.approx([m["train_loss"] for m in whole.metrics],
                                                                     abs=1e-5)


def test_a_batch_plans_within_its_share_of_free_memory_and_never_below_one_run(monkeypatch):
    cpu, D, gib = torch.device("cpu"), 266_610, 1 << 30
    assert subspace.projection_bytes("dense", D, 10_000) == 4 * D * 10_000
    for free in (2 * gib, 16 * gib):
        monkeypatch.setattr(subspace, "free_bytes", lambda device, free=free: free)
        for kind, d in (("fastfood", 10), ("fastfood", 10_000), ("dense", 100)):
            runs = subspace.runs_that_fit(kind, D, d, cpu, share=0.5)
            per_run = subspace.projection_bytes(kind, D, d)
            assert runs >= 2 and runs * per_run <= 0.5 * free  # the projections alone stay within the share
        # one dense P at d = 10,000 (10.7 GB) exceeds either share: the batch still trains one run
        assert subspace.runs_that_fit("dense", D, 10_000, cpu) == 1
    monkeypatch.setattr(subspace, "free_bytes", lambda device: 2 * gib)
    small = subspace.runs_that_fit("fastfood", D, 10, cpu)
    monkeypatch.setattr(subspace, "free_bytes", lambda device: 16 * gib)
    assert subspace.runs_that_fit("fastfood", D, 10, cpu) >= 7 * small  # eight times the memory, ~eight times the runs


def test_huge_dense_projections_multiply_run_by_run_with_the_same_result(monkeypatch):
    P = projections.make("dense", 500, 7, [0, 1, 2])
    w = torch.randn(3, 7, requires_grad=True)
    batched = P(w)
    g1, = torch.autograd.grad(batched.square().sum(), w)
    monkeypatch.setattr(projections, "LARGE_DENSE", 1)
    looped = P(w)
    g2, = torch.autograd.grad(looped.square().sum(), w)
    assert torch.allclose(batched, looped, atol=1e-6) and torch.allclose(g1, g2, atol=1e-5)


def test_bench_reports_both_paths_side_by_side_on_cpu(tmp_path, capsys):
    import harness as bench
    import run

    report = bench.run(torch.device("cpu"), dims=(4,), kinds=("fastfood", "dense"), runs=3, steps=3, loop_steps=3,
                       batch_size=16, widths=(8,), progress=lambda line: None)
    out = tmp_path / "bench.json"
    bench.write(report, out)
    saved = json.loads(out.read_text())
    assert saved["D"] == 784 * 8 + 8 + 8 * 10 + 10 and saved["torch"] == torch.__version__
    assert [(r["projection"], r["d"]) for r in saved["rows"]] == [("fastfood", 4), ("dense", 4)]
    for r in saved["rows"]:
        assert r["loop_steps_per_s"] > 0 and r["model_steps_per_s"] > 0 and r["runs"] == 3
        assert r["speedup_vs_loop"] == pytest.approx(r["model_steps_per_s"] / r["loop_steps_per_s"])
    assert saved["ceiling"]["model_steps_per_s"] > 0 and saved["ceiling"]["warmup_seconds"] > 0
    assert saved["compile"] == "none" and saved["deterministic_algorithms"] is False  # as a CPU job trains
    table = bench.markdown(saved).splitlines()
    assert table[2].startswith("| projection | d |") and len(table) == 4 + 2
    assert table[4].startswith("| fastfood | 4 |") and "of bandwidth" not in table[4]  # no peak known for a CPU
    other = tmp_path / "transition.json"  # another script's JSON beside it is named and left out
    other.write_text(json.dumps({"suite": "transition", "device_name": "cpu", "rows": []}))
    assert run.main(["table", str(out), str(other)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == "`bench.json`: " + "\n".join(table)
    assert "transition.json: not a `bench/run.py run` report" in printed.err


def test_bench_profile_uses_one_projection_and_survives_a_halved_batch(monkeypatch):
    """The profile builds P once, outside the profiled steps; a batch halved for memory gets its own rows of it."""
    import harness as bench

    train, sizes = subspace.train, []

    def tight(model, data, anchor, buffers, proj, seeds, *args, **kwargs):  # as if only 2 runs fit in memory
        assert proj.tensors["B"].shape[0] == len(seeds)
        sizes.append(len(seeds))
        if len(seeds) > 2:
            raise torch.OutOfMemoryError("test")
        return train(model, data, anchor, buffers, proj, seeds, *args, **kwargs)

    monkeypatch.setattr(subspace, "train", tight)
    built = []
    monkeypatch.setattr(projections, "make", lambda *a, make=projections.make: built.append(a) or make(*a))
    data = bench.synthetic_mnist(300, CPU, test=100)
    model = models.build("mlp", (1, 28, 28), 10, widths=(8,))
    top = bench.profile(model, data, models.flatten(model), "fastfood", 20, runs=4, steps=2, batch_size=16, top=5)
    assert len(built) == 1 and sizes == [4, 2, 2] * 2  # warm-up and profiled run: 4 runs out, then 2 and 2
    assert len(top) == 5 and all(t["self_ms_per_step"] > 0 and 0 < t["share"] <= 1 for t in top)


def test_a_compiled_step_trains_the_same_runs(mnist1d):
    """torch.compile (spec.compile, bench --compile) changes how the step runs, not what it computes."""
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta0 = models.flatten(model)
    proj = projections.make("fastfood", len(theta0), 24, [0, 1, 2])
    train = lambda mode: subspace.train(model, mnist1d, theta0, torch.zeros(0), proj, [0, 1, 2],
                                        SubspaceTrain(steps=6, batch_size=32, compile=mode))
    eager, compiled = train("none"), train("default")
    assert eager.w.abs().sum() > 0
    torch.testing.assert_close(compiled.w, eager.w, rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled.metrics, eager.metrics):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_a_stored_fastfood_sweep_rebuilds_to_its_recorded_accuracy(tmp_path, mnist1d_store, mnist1d):
    """The pipeline's two jobs in-process (dense training, a Fastfood sweep); `rebuild` regenerates P from the
    store and θ_0 + P w scores exactly what the sweep recorded; another projections version is refused."""
    from sublevel import cli, paths, storage, trajectory
    from sublevel.functional import evaluate_many

    exp = make_experiment(**{"subspace.projection": "fastfood", "subspace.dims": [40, 64]})
    spec, traj = for_stage(exp, "subspace_sweep").to_json(), tmp_path / paths.trajectory("smoke", 0)
    job = ["--spec", spec, "--data", str(mnist1d_store), "--device", "cpu"]
    assert cli.main(["train", *job, "--seed", "0", "--trajectory", str(traj), "--quiet",
                     "--table", str(tmp_path / "train.parquet")]) == 0
    for d, block, seeds in ((40, 0, ["0", "1"]), (64, 0, ["1"]), (64, 1, ["0"])):  # jobs as the workflow runs them
        assert cli.main(["subspace-sweep", *job, "--kind", "random", "--burnin-step", "0", "--round", "0", "--quiet",
                         "--dims", str(d), "--seeds", *seeds, "--trajectory", str(traj),
                         "--table", str(tmp_path / f"sub-{d}-{block}.parquet"),
                         "--out", str(tmp_path / paths.sweep_store("smoke", "random", 0, 0, d, block))]) == 0
    rows = storage.read_rows(sorted(tmp_path.glob("sub-*.parquet")))
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta0 = torch.from_numpy(trajectory.read(traj).params(0))
    for d in (40, 64):  # d = 64's two blocks rebuild in seed order
        theta, seeds = sweep.rebuild("smoke", "random", 0, 0, d, root=tmp_path)
        assert theta.shape == (2, len(theta0)) and seeds == [0, 1]
        assert not torch.allclose(theta[0], theta0) and not torch.allclose(theta[0], theta[1])
        err, loss = evaluate_many(model, theta, torch.zeros(2, 0), *mnist1d.split("train"))
        recorded = sorted((r["seed"], r["projection"], r["train_accuracy"], r["train_loss"]) for r in rows if r["d"] == d)
        assert recorded == [(s, "fastfood", pytest.approx(1 - e, abs=1e-6), pytest.approx(l, rel=1e-5))
                            for s, e, l in zip(seeds, err.tolist(), loss.tolist())]
    (tmp_path / paths.sweep_store("smoke", "random", 0, 0, 7, 0)).parent.with_name("d=7.zarr").mkdir()  # old layout
    with pytest.raises(KeyError, match="stored: \\[40, 64\\]"):
        sweep.rebuild("smoke", "random", 0, 0, 50, root=tmp_path)
    store = tmp_path / paths.sweep_store("smoke", "random", 0, 0, 40, 0)
    zarr.open_group(str(store), mode="r+").attrs["projections_version"] = projections.VERSION - 1
    with pytest.raises(ValueError, match="rerun the sweep"):
        sweep.rebuild("smoke", "random", 0, 0, 40, root=tmp_path)


def test_the_sweep_summary_removes_the_blocks_an_earlier_seeds_per_job_left_and_keeps_runs_found_nowhere_else(
        tmp_path, monkeypatch):
    """seeds_per_job 2 -> 8 over 5 runs rewrites block 0 with seeds 0..4: the old blocks 1 (2, 3) and 2 (4)
    would count those runs twice in the `subspace` view. A block with seeds of its own (d = 16's block 1, from
    when subspace.seeds was 4) stays."""
    from sublevel import cli, paths, schema, storage

    monkeypatch.chdir(tmp_path)

    def block(d, j, seeds):
        rows = [{c: dict(experiment="e", kind="random", burnin_step=0, round=0, d=d, seed=s).get(c)
                 for c in schema.TABLES["subspace"].schema.names} for s in seeds]
        table = paths.table("subspace", experiment="e", kind="random", burnin_step=0, round=0, d=d, block=j)
        storage.write_table("subspace", rows, table)
        paths.sweep_store("e", "random", 0, 0, d, j).mkdir(parents=True)
        return table

    current = [block(8, 0, range(5)), block(16, 0, [0, 1])]
    stale = [block(8, 1, [2, 3]), block(8, 2, [4])]
    own = block(16, 1, [2, 3])
    assert cli.main(["sweep-summary", "--tables", *map(str, current), "--out", "summary.json"]) == 0
    assert not any(t.exists() or t.parent.exists() for t in stale)
    assert not paths.sweep_store("e", "random", 0, 0, 8, 1).exists()
    assert not paths.sweep_store("e", "random", 0, 0, 8, 2).exists()
    assert all(t.exists() for t in current + [own]) and paths.sweep_store("e", "random", 0, 0, 16, 1).exists()
    assert paths.sweep_store("e", "random", 0, 0, 8, 0).exists()
    assert json.loads(Path("summary.json").read_text())["runs"] == 7


def test_the_benchmarks_are_a_script_of_the_checkout_not_a_command_of_the_library(root):
    """The installed `sublevel` loads nothing from a checkout: the benchmarks run as bench/run.py, beside their
    harness."""
    from sublevel import cli

    assert "bench" not in cli.parser()._subparsers._group_actions[0].choices
    assert not list((root / "src" / "sublevel").rglob("*bench*"))
    done = subprocess.run([sys.executable, "bench/run.py", "run", "--help"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0 and "--suite" in done.stdout, done.stderr


def test_nested_lottery_subspaces_never_end_worse_at_larger_d_once_the_runs_can_reach_their_minimum(mnist1d, tmp_path):
    """The lottery subspaces are nested (the top 1, 2, 4, ... directions), so a run that reaches its subspace's
    minimum ends no higher at a larger d. The runs start at θ_0 and the trajectory's θ_T lies mostly along the
    top direction, far from θ_0; Adam moves each coordinate about lr per step, so a run whose lr·steps is
    short of that distance stops on the way, and where it stops depends on the path, not on d: the same
    sweep at PyTorch Adam's lr 0.01 for 400 steps ends worse at d = 2, 4 than at d = 1. With the paper's
    optimiser at its lr (0.05) the runs arrive, and the final loss falls with d for every run."""
    from conftest import dense_trajectory

    dims = [1, 2, 4, 8, 16, 32]

    def final_losses(optimizer, lr, steps):
        exp = make_experiment(train={"lr": 0.05, "batch_size": 32, "steps": 200, "eval_every": 100},
                              checkpoints={"every": 5, "log_spaced": 0},
                              subspace={"kinds": ["lottery"], "dims": dims, "seeds": 2, "optimizer": optimizer,
                                        "lr": lr, "steps": steps, "batch_size": 32})
        traj = dense_trajectory(exp, mnist1d, tmp_path / optimizer)
        rows, coords, _ = sweep.sweep(exp, mnist1d, traj, "lottery", 0, dims, [0, 1], CPU, progress=False)
        return {s: [next(r["train_loss"] for r in rows if r["d"] == d and r["seed"] == s) for d in dims] for s in (0, 1)}

    for seed, losses in final_losses("adam_constant_correction", 0.05, 400).items():
        assert all(b <= a + 1e-3 for a, b in zip(losses, losses[1:])), (seed, losses)
        assert losses[-1] < losses[0] - 0.2
    short = final_losses("adam", 0.01, 400)
    assert any(b > a + 0.02 for losses in short.values() for a, b in zip(losses, losses[1:])), short


def test_per_run_anchors_equal_separate_sweeps_one_per_dense_run(mnist1d, tmp_path):
    """subspace.anchor: per_run anchors run r at dense seed r mod n: one sweep of runs 0..3 over dense runs 0 and 1
    gives, run for run, the rows and coordinates of two sweeps each anchored at one dense run (runs 0, 2 and 1, 3),
    records the anchoring seed, and `rebuild` regenerates each run's θ from its own anchor. Burn-in runs of both
    anchors train in one batch (θ_t one row per run); lottery runs one anchor at a time (each its own basis)."""
    from conftest import dense_trajectory
    from sublevel import paths

    exp = make_experiment(seeds=[0, 1], subspace={"kinds": ["burnin", "lottery"], "burnin": [5], "dims": [2, 4],
                                                  "seeds": 4, "anchor": "per_run", "steps": 15, "batch_size": 32})
    assert exp.subspace.anchor_seeds([0, 1, 2, 3], list(exp.seeds)) == [0, 1, 0, 1]
    trajs = {s: dense_trajectory(exp, mnist1d, tmp_path, seed=s) for s in (0, 1)}
    for kind, t in (("burnin", 5), ("lottery", 0)):
        rows, coords, attrs = sweep.sweep(exp, mnist1d, trajs, kind, t, [2, 4], [0, 1, 2, 3], CPU, progress=False,
                                          anchor_seeds=[0, 1, 0, 1])
        assert [r["dense_seed"] for r in rows] == [0, 1, 0, 1] * 2 and attrs["dense_seeds"] == [0, 1, 0, 1]
        assert len({r["anchor_train_loss"] for r in rows}) == 2  # each dense run's θ_t evaluated
        for dense in (0, 1):
            alone = make_experiment(seeds=[0, 1], subspace={"kinds": [kind], "burnin": [5], "dims": [2, 4],
                                                            "seeds": 4, "dense_seed": dense, "steps": 15,
                                                            "batch_size": 32})
            runs = [dense, dense + 2]
            rows1, coords1, _ = sweep.sweep(alone, mnist1d, trajs[dense], kind, t, [2, 4], runs, CPU, progress=False)
            for r1 in rows1:  # a random P's runs of both anchors train as one batch: equal to float rounding
                r = next(r for r in rows if r["d"] == r1["d"] and r["seed"] == r1["seed"])
                for k in ("train_loss", "train_accuracy", "test_loss", "anchor_train_loss", "dense_seed"):
                    assert r[k] == pytest.approx(r1[k], abs=1e-5), (kind, k, r1["seed"])
            for d in (2, 4):
                assert torch.allclose(coords[d][runs], coords1[d], atol=1e-5)
        store = tmp_path / "results" / "subspace" / f"{kind}.zarr"
        sweep.write_sweep_store(store, coords, attrs)
        for s in (0, 1):
            target = tmp_path / paths.trajectory(exp.name, s)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(trajs[s].path)
        point = tmp_path / paths.sweep_store(exp.name, kind, t, 0, 4, 0)
        point.parent.mkdir(parents=True, exist_ok=True)
        store.rename(point)
        theta, seeds = sweep.rebuild(exp.name, kind, t, 0, 4, root=tmp_path)
        assert seeds == [0, 1, 2, 3]
        for i, s in enumerate(seeds):
            dense = s % 2
            basis = KINDS["lottery"].basis(torch.from_numpy(trajs[dense].params()), 4) if kind == "lottery" else None
            _, make = subspace.projection_maker(kind, "auto", len(theta[i]), 4, basis, CPU)
            expected = torch.from_numpy(trajs[dense].params(t)) + make([s])(coords[4][i:i + 1])[0]
            assert torch.allclose(theta[i], expected, atol=1e-6)


def test_a_subspace_sections_betas_reach_adam_and_an_absent_key_leaves_the_spec_as_it_was():
    """Li et al.'s released code trains with Adam's beta2 = 0.99: the section's `betas` (schema-checked) is what
    the run's optimiser uses; a config without the key keeps (0.9, 0.999) and the same job spec, so no finished
    sweep reruns."""
    from sublevel.optimizers import Optimizer

    w = [torch.zeros(3, requires_grad=True)]
    plain = make_experiment()
    assert Optimizer.of(plain.subspace.training(64), w).betas == (0.9, 0.999)
    assert "betas" not in json.loads(for_stage(plain, "subspace_sweep").to_json())["subspace"]
    li = make_experiment(**{"subspace.betas": [0.9, 0.99]})
    assert Optimizer.of(li.subspace.training(64), w).betas == (0.9, 0.99)
    with pytest.raises(ConfigError):
        make_experiment(**{"subspace.betas": [0.9, 1.0]})
