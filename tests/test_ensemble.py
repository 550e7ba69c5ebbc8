"""Runs trained together (sublevel.ensemble) equal the same runs trained one at a time (training.train)."""

import pytest
import torch

from sublevel import cli, datasets, ensemble, imp, models, pruning, runtime, training
from sublevel.stages import for_stage
from sublevel.training import Start
import harness  # bench/harness.py (conftest puts bench/ on the path)
from conftest import dense_trajectory, make_experiment

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _deterministic():
    runtime.seed_everything(1)


@pytest.fixture(scope="module")
def images():
    """A small MNIST-shaped set, for the convolutional models with BatchNorm."""
    full = harness.synthetic_mnist(1200, CPU)
    return datasets.Dataset("images", full.x_train[:192], full.y_train[:192], full.x_test[:96], full.y_test[:96], 10)


def alone(exp, data, run):
    model, out = training.train(exp, data, run.init_seed, run.data_seed, CPU, start=run.start, mask=run.mask,
                                checkpoints=False, eval_every=False, progress=False)
    return model, out


def assert_same(exp, data, runs, atol=1e-5):
    together = ensemble.train(exp, data, runs, CPU, progress=False)
    assert len(together) == len(runs)
    for run, t in zip(runs, together):
        model, out = alone(exp, data, run)
        torch.testing.assert_close(t.theta, models.flatten(model), rtol=0, atol=atol)
        torch.testing.assert_close(t.buffers, models.flatten_buffers(model), rtol=0, atol=atol)
        assert t.diverged == out.diverged
        for split in ("train", "test"):
            assert t.metrics[f"{split}_accuracy"] == pytest.approx(out.final(split)["accuracy"], abs=1e-6)
            assert t.metrics[f"{split}_loss"] == pytest.approx(out.final(split)["loss"], rel=1e-4, nan_ok=True)
    return together


@pytest.mark.parametrize("overrides", [
    {"train.momentum": 0.9, "train.weight_decay": 0.01, "train.nesterov": True},
    {"train.optimizer": "adam", "train.lr": 0.01},
    {"model": {"name": "mnist1d_cnn", "width": 6}},
], ids=["sgd-nesterov-wd", "adam", "cnn"])
def test_masked_runs_from_their_own_starts_equal_runs_alone(mnist1d, overrides):
    exp = make_experiment(**overrides)
    model = training.build_model(exp, mnist1d, 5, CPU)
    layout = models.Layout.of(model)
    theta = models.flatten(model)
    mask = pruning.prune(theta + 0.1, pruning.full_mask(layout), layout, 0.6)
    runs = [ensemble.Run(0, 0), ensemble.Run(1, 7, Start(0, theta * mask, models.flatten_buffers(model)), mask),
            ensemble.Run(2, 3, mask=mask)]
    together = assert_same(exp, mnist1d, runs)
    for r, t in zip(runs, together):
        if r.mask is not None:
            assert torch.all(t.theta[~r.mask] == 0)
    assert not torch.allclose(together[0].theta, together[2].theta)  # different seeds, different networks


def rounding_sensitivity(exp, data, run, trials=3):
    """How far a run alone moves when its initialisation changes at float32 rounding level (a relative 1e-7,
    about one ulp): the scale below which two computations of the same training cannot be told apart."""
    model = training.build_model(exp, data, run.init_seed, CPU)
    theta, buffers = models.flatten(model), models.flatten_buffers(model)
    reference = models.flatten(alone(exp, data, run)[0])
    worst, update = 0.0, (reference - theta).abs().max().item()
    for trial in range(trials):
        noise = torch.randn(theta.shape, generator=torch.Generator().manual_seed(trial))
        moved = ensemble.Run(run.init_seed, run.data_seed, Start(0, theta * (1 + 1e-7 * noise), buffers))
        worst = max(worst, (models.flatten(alone(exp, data, moved)[0]) - reference).abs().max().item())
    return worst, update


def test_batchnorm_statistics_and_augmentation_are_per_run(images):
    """ResNet-20 (thin): BatchNorm buffers updated per run under vmap, crops and flips drawn per data seed.
    This thin BatchNorm network amplifies rounding: six steps at lr 0.002 turn a one-ulp change of its
    initialisation into up to ~5e-4 (measured on an Intel Xeon; at lr 0.02, 1e-2 in two steps), and how close
    the batched and the single computation land depends on the CPU's kernels. So "equal" here is: no further
    apart than that measured rounding sensitivity (twice it), while a shared BatchNorm statistic or augmentation
    stream would move the runs by the size of their training updates, over five times as far (asserted)."""
    exp = make_experiment(**{"model": {"name": "resnet20", "width": 4}, "train.augment": True,
                             "train.steps": 6, "train.eval_every": 3, "train.batch_size": 32, "train.lr": 0.002})
    runs = [ensemble.Run(0, 0), ensemble.Run(1, 11)]
    measured = [rounding_sensitivity(exp, images, run) for run in runs]
    atol = max(1e-5, 2 * max(s for s, _ in measured))
    assert all(update > 5 * atol for _, update in measured), (measured, atol)  # the comparison can still fail
    together = assert_same(exp, images, runs, atol=atol)
    assert not torch.allclose(together[0].buffers, together[1].buffers)


def test_a_run_that_diverges_stops_alone(mnist1d):
    """One run starts from absurd weights and diverges at its first step; the others train on unaffected."""
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 3, CPU)
    huge = Start(0, models.flatten(model) * 1e30, models.flatten_buffers(model))
    runs = [ensemble.Run(0, 0), ensemble.Run(3, 3, huge), ensemble.Run(2, 2)]
    together = assert_same(exp, mnist1d, runs)
    assert [t.diverged for t in together] == [False, True, False]
    torch.testing.assert_close(together[1].theta, huge.theta)  # stopped where it diverged


def test_runs_trained_together_share_their_first_step(mnist1d):
    exp = make_experiment()
    theta = models.flatten(training.build_model(exp, mnist1d, 0, CPU))
    with pytest.raises(ValueError, match="share their first step"):
        ensemble.train(exp, mnist1d, [ensemble.Run(0, 0), ensemble.Run(1, 1, Start(5, theta))], CPU)


def test_imp_chains_baselines_and_copies_of_two_seeds_equal_each_chain_alone(mnist1d, tmp_path):
    exp = make_experiment(imp={"levels": 1, "rewind": 5, "alphas": 3, "baselines": ["random_prune", "oneshot"]})
    trajs = {s: dense_trajectory(exp, mnist1d, tmp_path, seed=s) for s in (0, 1)}
    zero = imp.imp_levels(exp, mnist1d, [imp.Chain(s, trajs[s]) for s in (0, 1)], 0, CPU, progress=False)
    one = imp.imp_levels(exp, mnist1d, [imp.Chain(s, trajs[s], z) for s, z in zip((0, 1), zero)], 1, CPU,
                         progress=False)
    for s, z, o in zip((0, 1), zero, one):
        z1 = imp.imp_level(exp, mnist1d, trajs[s], s, 0, None, CPU, progress=False)
        o1 = imp.imp_level(exp, mnist1d, trajs[s], s, 1, z1, CPU, progress=False)
        assert torch.equal(o.mask, o1.mask) and o.row["seed"] == s and o.row["level"] == 1
        torch.testing.assert_close(o.weights, o1.weights, rtol=0, atol=1e-5)
        assert o.row["test_accuracy"] == pytest.approx(o1.row["test_accuracy"], abs=1e-6)
    assert not torch.equal(one[0].mask, one[1].mask)

    chains = [imp.Chain(s, trajs[s], o) for s, o in zip((0, 1), one)]
    both = imp.baselines(["random_prune", "oneshot"], exp, mnist1d, chains, CPU, progress=False)
    assert [(b.row["seed"], b.method) for b in both] == [(0, "random_prune"), (0, "oneshot"),
                                                          (1, "random_prune"), (1, "oneshot")]
    single = imp.baseline("oneshot", exp, mnist1d, trajs[1], 1, one[1], CPU, progress=False)
    assert torch.equal(both[3].mask, single.mask)
    torch.testing.assert_close(both[3].weights, single.weights, rtol=0, atol=1e-5)

    rows = imp.instability(exp, mnist1d, chains, zero, CPU, progress=False)
    [alone_rows] = imp.instability(exp, mnist1d, chains[1:], zero[1:], CPU, progress=False)
    assert [r["seed"] for r in rows[1]] == [1, 1] and [r["split"] for r in rows[1]] == ["train", "test"]
    for a, b in zip(rows[1], alone_rows):
        assert a["error"] == pytest.approx(b["error"], abs=1e-6)


def test_imp_commands_want_one_of_each_per_seed_option_per_seed(mnist1d_store, tmp_path, capsys):
    exp = make_experiment(imp={"levels": 1})
    with pytest.raises(SystemExit, match="2 --seeds but .*--trajectory.: 1"):
        cli.main(["imp-level", "--spec", for_stage(exp, "imp_level").to_json(), "--data", str(mnist1d_store), "--seeds", "0", "1",
                  "--level", "0", "--trajectory", str(tmp_path / "t.zarr"), "--out", "a", "b", "--table", "a", "b",
                  "--device", "cpu"])
    with pytest.raises(SystemExit, match="level 1 needs --previous"):
        cli.main(["imp-level", "--spec", for_stage(exp, "imp_level").to_json(), "--data", str(mnist1d_store), "--seeds", "0", "--level",
                  "1", "--trajectory", "t", "--out", "a", "--table", "a", "--device", "cpu"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_channels_last_and_bf16_autocast_train_the_same_network(images, precision):
    """NHWC layout computes the same network (other convolution kernels: equal to NCHW up to rounding, which
    six steps of this thin network amplify to ~1e-4; reading NHWC memory in NCHW order would be off by the
    weights' own scale, ~0.1); bfloat16 autocast keeps float32
    weights and a loss close to float32's, and the flat view reads channels_last weights correctly."""
    base = make_experiment(**{"model": {"name": "resnet20", "width": 4}, "train.steps": 6, "train.eval_every": 3,
                              "train.batch_size": 32, "train.lr": 0.002})
    fast = make_experiment(**{"model": {"name": "resnet20", "width": 4}, "train.steps": 6, "train.eval_every": 3,
                              "train.batch_size": 32, "train.lr": 0.002, "train.channels_last": True,
                              "train.precision": precision})
    ref, ref_run = training.train(base, images, 0, 0, CPU, checkpoints=False, eval_every=False, progress=False)
    model, run = training.train(fast, images, 0, 0, CPU, checkpoints=False, eval_every=False, progress=False)
    conv = model.conv.weight
    assert conv.dtype == torch.float32 and conv.is_contiguous(memory_format=torch.channels_last)
    theta = models.flatten(model)
    assert theta.shape == models.flatten(ref).shape
    if precision == "fp32":
        torch.testing.assert_close(theta, models.flatten(ref), rtol=0, atol=1e-3)
    else:
        assert not torch.equal(theta, models.flatten(ref))  # autocast did act
        assert run.final("train")["loss"] == pytest.approx(ref_run.final("train")["loss"], rel=0.05)


def test_bench_suites_for_dense_precision_and_imp_runs_on_cpu():
    bench = harness

    dense = bench.dense(CPU, steps=2, batch_size=8, width=2, variants=("fp32", "channels_last+bf16"),
                        progress=lambda line: None)
    assert [r["variant"] for r in dense["rows"]] == ["fp32", "channels_last+bf16"]
    assert all(r["images_per_s"] > 0 for r in dense["rows"]) and dense["rows"][0]["speedup_vs_fp32"] == 1
    assert dense["torch"] == torch.__version__ and dense["suite"] == "dense"
    runs = bench.imp(CPU, runs=2, steps=3, batch_size=8, widths=(8,), progress=lambda line: None)
    assert runs["runs"] == 2 and runs["together_model_steps_per_s"] > 0 and runs["one_at_a_time_model_steps_per_s"] > 0
    assert runs["speedup"] == pytest.approx(runs["together_model_steps_per_s"] / runs["one_at_a_time_model_steps_per_s"])
    assert [line.split(" |")[0] for line in bench.markdown(dense).splitlines()[4:]] == ["| fp32",
                                                                                      "| channels_last+bf16"]
    assert bench.markdown(runs).splitlines()[-1].startswith(f"| {runs['one_at_a_time_model_steps_per_s']:,.0f} |")


def test_imp_runs_that_run_out_of_memory_together_are_split(mnist1d, tmp_path, monkeypatch):
    exp = make_experiment(imp={"levels": 1, "rewind": 5, "baselines": ["random_prune", "oneshot"]})
    traj = dense_trajectory(exp, mnist1d, tmp_path)
    ticket = imp.imp_level(exp, mnist1d, traj, 0, 0, None, CPU, progress=False)
    chains = [imp.Chain(0, traj, ticket)]
    whole = imp.baselines(["random_prune", "oneshot"], exp, mnist1d, chains, CPU, progress=False)
    real, sizes = ensemble.train, []

    def one_fits(exp, data, runs, device, progress=True, label="", curve=frozenset()):
        sizes.append(len(runs))
        if len(runs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(exp, data, runs, device, progress, label, curve)

    monkeypatch.setattr(ensemble, "train", one_fits)
    split = imp.baselines(["random_prune", "oneshot"], exp, mnist1d, chains, CPU, progress=False)
    assert sizes == [2, 1, 1]
    for a, b in zip(whole, split):
        assert a.method == b.method and torch.equal(a.mask, b.mask)
        torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=1e-5)


def test_bf16_autocast_under_vmap_trains_each_run_as_alone(images):
    """IMP levels of a bf16 experiment train through the ensemble: autocast applies under vmap too."""
    exp = make_experiment(**{"model": {"name": "resnet20", "width": 4}, "train.steps": 6, "train.eval_every": 3,
                             "train.batch_size": 32, "train.lr": 0.002, "train.precision": "bf16"})
    fp32 = make_experiment(**{"model": {"name": "resnet20", "width": 4}, "train.steps": 6, "train.eval_every": 3,
                              "train.batch_size": 32, "train.lr": 0.002})
    runs = [ensemble.Run(0, 0), ensemble.Run(1, 11)]
    together = ensemble.train(exp, images, runs, CPU, progress=False)
    exact = ensemble.train(fp32, images, runs, CPU, progress=False)
    for run, t, e in zip(runs, together, exact):
        model, out = alone(exp, images, run)
        assert t.theta.dtype == torch.float32 and not torch.equal(t.theta, e.theta)  # autocast did act
        torch.testing.assert_close(t.theta, models.flatten(model), rtol=0, atol=1e-2)  # bf16 rounding, batched
        assert t.metrics["train_loss"] == pytest.approx(out.final("train")["loss"], rel=1e-3)


def test_compiled_training_trains_the_same_networks(mnist1d):
    """train.compile puts the step of dense training and of the ensemble under torch.compile: same networks."""
    eager = make_experiment(**{"train.steps": 8, "train.momentum": 0.9})
    fast = make_experiment(**{"train.steps": 8, "train.momentum": 0.9, "train.compile": "default"})
    runs = [ensemble.Run(0, 0), ensemble.Run(1, 3)]
    want = [models.flatten(alone(eager, mnist1d, r)[0]) for r in runs]
    assert not torch.equal(want[0], models.flatten(training.build_model(eager, mnist1d, 0, CPU)))  # it trained
    for r, w in zip(runs, want):
        torch.testing.assert_close(models.flatten(alone(fast, mnist1d, r)[0]), w, rtol=0, atol=1e-5)
    for t, w in zip(ensemble.train(fast, mnist1d, runs, CPU, progress=False), want):
        torch.testing.assert_close(t.theta, w, rtol=0, atol=1e-5)


def test_a_chain_whose_dense_run_diverged_is_skipped_alone(mnist1d_store, tmp_path):
    """Two chains in one IMP job, seed 1's dense run diverged before the rewind point (step 5): seed 1's
    outputs record the skip, seed 0 trains as it would alone; the scores job leaves seed 1 out."""
    from sublevel import storage, trajectory

    exp = make_experiment(imp={"levels": 1, "rewind": 5})
    job = lambda stage: ["--spec", for_stage(exp, stage).to_json(), "--data", str(mnist1d_store), "--device", "cpu"]
    t0, t1 = tmp_path / "t0.zarr", tmp_path / "t1.zarr"
    assert cli.main(["train", *job("train_dense"), "--seed", "0", "--trajectory", str(t0), "--table", str(tmp_path / "train.parquet"),
                     "--quiet"]) == 0
    healthy = trajectory.read(t0)
    trajectory.write(t1, steps=[0, 1], params=[healthy.params(0), healthy.params(1)],
                     buffers=[healthy.buffers(0), healthy.buffers(1)], attrs=dict(healthy.attrs, seed=1, diverged=True))
    out = lambda level: [str(tmp_path / f"s{s}-l{level}.zarr") for s in (0, 1)]
    table = lambda level: [str(tmp_path / f"s{s}-l{level}.parquet") for s in (0, 1)]
    chains = ["--seeds", "0", "1", "--trajectory", str(t0), str(t1), "--quiet"]
    assert cli.main(["imp-level", *job("imp_level"), *chains, "--level", "0", "--out", *out(0), "--table", *table(0)]) == 0
    assert cli.main(["imp-level", *job("imp_level"), *chains, "--level", "1", "--previous", *out(0), "--out", *out(1),
                     "--table", *table(1)]) == 0
    assert cli.main(["barrier", *job("barrier_successive"), *chains, "--kind", "imp_successive", "--dense", *out(0), "--a", *out(0),
                     "--b", *out(1), "--table", *table("b")]) == 0
    for level in (0, 1, "b"):
        assert storage.skip_reason([table(level)[0]]) is None and len(storage.read_rows([table(level)[0]])) > 0
        assert "diverged after step 1, before step 5" in storage.skip_reason([table(level)[1]])
        assert storage.read_rows([table(level)[1]]) == []
    alone = tmp_path / "alone.zarr"
    assert cli.main(["imp-level", *job("imp_level"), "--seeds", "0", "--trajectory", str(t0), "--quiet", "--level", "0",
                     "--out", str(alone), "--table", str(tmp_path / "alone.parquet")]) == 0
    assert torch.equal(imp.Level.read(alone).weights, imp.Level.read(out(0)[0]).weights)
    with pytest.raises(storage.Skipped):
        imp.Level.read(out(1)[1])

    scores = make_experiment(scores={"steps": [0, 5]})
    assert cli.main(["scores", "--spec", for_stage(scores, "scores").to_json(), "--data", str(mnist1d_store), "--device", "cpu",
                     "--trajectories", str(t0), str(t1), "--out", str(tmp_path / "scores.zarr"),
                     "--table", str(tmp_path / "scores.parquet")]) == 0
    assert {r["n_seeds"] for r in storage.read_rows([tmp_path / "scores.parquet"])} == {1}
