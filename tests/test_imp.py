import numpy as np
import pytest
import torch

from sublevel import connectivity, functional, imp, models, pruning, runtime, training
from sublevel.training import Start
from conftest import dense_trajectory, make_experiment

CPU = torch.device("cpu")
IMP = {"levels": 3, "rewind": 5, "alphas": 5}


@pytest.fixture(autouse=True)
def _deterministic():
    runtime.seed_everything(1)


def test_pruned_weights_are_exactly_zero_after_training(mnist1d):
    exp = make_experiment(**{"train.weight_decay": 0.01, "train.momentum": 0.9})
    model = training.build_model(exp, mnist1d, 0, CPU)
    layout = models.Layout.of(model)
    theta = models.flatten(model)
    mask = pruning.prune(theta + 0.1, pruning.full_mask(layout), layout, 0.7)
    trained, _ = training.train(exp, mnist1d, 0, 0, CPU, start=Start(0, theta), mask=mask, progress=False)
    final = models.flatten(trained)
    assert torch.all(final[~mask] == 0) and (final[mask] != 0).float().mean() > 0.99


def test_restarting_from_a_checkpoint_replays_the_dense_run(mnist1d):
    """The data order at a step depends on the step alone, so rewinding sees the dense run's batches."""
    exp = make_experiment(**{"train.momentum": 0.0})
    _, run = training.train(exp, mnist1d, 0, 0, CPU, progress=False)
    k = 5
    theta_k = torch.from_numpy(run.params[run.steps.index(k)])
    again, _ = training.train(exp, mnist1d, 0, 0, CPU, start=Start(k, theta_k), progress=False)
    assert torch.allclose(models.flatten(again), torch.from_numpy(run.params[-1]), atol=1e-6)


def test_level_zero_without_rewinding_is_the_dense_run(mnist1d, tmp_path):
    exp = make_experiment(imp={"levels": 1, "rewind": 0})
    traj = dense_trajectory(exp, mnist1d, tmp_path)
    zero = imp.imp_level(exp, mnist1d, traj, 0, 0, None, CPU, progress=False)
    # the same run, trained through the batched trainer: equal up to float rounding
    torch.testing.assert_close(zero.weights, torch.from_numpy(traj.params(int(traj.steps[-1]))), rtol=0, atol=1e-5)
    assert zero.row["sparsity"] == 0 and zero.row["rewind_step"] == 0


def test_chain_levels_baselines_and_a_resumed_chain(mnist1d, tmp_path):
    exp = make_experiment(imp=IMP)
    traj = dense_trajectory(exp, mnist1d, tmp_path)
    chain = [imp.imp_level(exp, mnist1d, traj, 0, 0, None, CPU, progress=False)]
    for level in range(1, 4):
        chain.append(imp.imp_level(exp, mnist1d, traj, 0, level, chain[-1], CPU, progress=False))
    for level, lv in enumerate(chain):
        assert lv.row["sparsity"] == pytest.approx(1 - 0.8 ** level, abs=2e-3)
        assert lv.row["rewind_step"] == 5 and torch.all(lv.weights[~lv.mask] == 0)
    assert all((b.mask <= a.mask).all() for a, b in zip(chain, chain[1:]))  # masks only shrink

    # interrupted after level 1: written to disk, read back, continued -> the same masks
    imp.write_levels(tmp_path / "level=1.zarr", [chain[1]])
    resumed = imp.Level.read(tmp_path / "level=1.zarr")
    with pytest.raises(KeyError, match="not 'oneshot'"):
        imp.Level.read(tmp_path / "level=1.zarr", "oneshot")
    for level in (2, 3):
        resumed = imp.imp_level(exp, mnist1d, traj, 0, level, resumed, CPU, progress=False)
        assert torch.equal(resumed.mask, chain[level].mask)
        assert torch.equal(resumed.weights, chain[level].weights)

    layout = models.Layout.of(training.build_model(exp, mnist1d, 0, CPU))
    ticket = chain[2]
    results = {m: imp.baseline(m, exp, mnist1d, traj, 0, ticket, CPU, progress=False) for m in imp.METHODS[1:]}
    for m, b in results.items():
        assert b.row["method"] == m and b.level == 2
        assert pruning.counts(b.mask, layout) == pruning.counts(ticket.mask, layout), m
        assert torch.all(b.weights[~b.mask] == 0)
    assert torch.equal(results["random_reinit"].mask, ticket.mask)
    assert not torch.equal(results["random_prune"].mask, ticket.mask)
    final = torch.from_numpy(traj.params(int(traj.steps[-1])))
    assert torch.equal(results["oneshot"].mask, pruning.matched(final.abs(), ticket.mask, layout))
    with pytest.raises(ValueError, match="level 3 needs level 2"):
        imp.imp_level(exp, mnist1d, traj, 0, 3, chain[0], CPU, progress=False)


def test_barrier_of_a_network_with_itself_is_zero(mnist1d):
    exp = make_experiment()
    model = training.build_model(exp, mnist1d, 0, CPU)
    theta = models.flatten(model)
    alphas, errors, losses = connectivity.interpolation_curve(model, theta, theta, mnist1d.x_test, mnist1d.y_test)
    assert len(alphas) == 11 and np.ptp(errors) == 0 and connectivity.barrier(alphas, errors) == 0


def test_barrier_definition():
    alphas = np.linspace(0, 1, 5)
    assert connectivity.barrier(alphas, [0.1, 0.2, 0.4, 0.2, 0.3]) == pytest.approx(0.4 - 0.2)
    assert connectivity.barrier(alphas, [0.1, 0.15, 0.2, 0.25, 0.3]) == pytest.approx(0.0)


@pytest.mark.parametrize("name, shape, kwargs", [("mlp", (1, 40), {"widths": (16,)}),
                                                  ("resnet20", (3, 32, 32), {"width": 4})])
def test_batched_alpha_grid_equals_one_alpha_at_a_time(name, shape, kwargs):
    torch.manual_seed(0)
    model = models.build(name, shape, 10, **kwargs)
    model.train()
    model(torch.randn(16, *shape))  # BatchNorm statistics that are not the defaults
    x, y = torch.randn(48, *shape), torch.randint(0, 10, (48,))
    ta, ba = models.flatten(model), models.flatten_buffers(model)
    tb, bb = ta + 0.3 * torch.randn_like(ta), ba * 1.5
    alphas, errors, losses = connectivity.interpolation_curve(model, ta, tb, x, y, 5, ba, bb, batch_size=20,
                                                              max_floats=2 * ta.numel())  # two α per chunk
    for a, err, loss in zip(alphas, errors, losses):
        models.load_flat(model, (1 - a) * ta + a * tb)
        models.load_flat_buffers(model, (1 - a) * ba + a * bb)
        ref_loss, ref_acc = functional.evaluate(model, x, y, 20)
        assert err == pytest.approx(1 - ref_acc) and loss == pytest.approx(ref_loss, rel=1e-4)


def test_instability_and_successive_rows(mnist1d, tmp_path):
    exp = make_experiment(imp=IMP)
    traj = dense_trajectory(exp, mnist1d, tmp_path)
    zero = imp.imp_level(exp, mnist1d, traj, 0, 0, None, CPU, progress=False)
    one = imp.imp_level(exp, mnist1d, traj, 0, 1, zero, CPU, progress=False)
    [rows] = imp.instability(exp, mnist1d, [imp.Chain(0, traj, one)], [zero], CPU, progress=False)
    rows += imp.successive(exp, mnist1d, 0, zero, one, zero, CPU)
    assert {(r["kind"], r["split"]) for r in rows} == {(k, s) for k in ("instability", "imp_successive")
                                                      for s in ("train", "test")}
    for r in rows:
        assert r["level"] == 1 and len(r["alpha"]) == len(r["error"]) == 5 and r["barrier"] >= 0
        assert r["matching"] == (one.row["test_accuracy"] >= zero.row["test_accuracy"] - 0.01)


def test_fraction_sweep_prunes_within_the_level_and_records_a_barrier_per_fraction(mnist1d, tmp_path):
    exp = make_experiment(imp=dict(IMP, levels=1, fraction_sweep={"levels": [1], "fractions": [0.3, 0.9]}))
    traj = dense_trajectory(exp, mnist1d, tmp_path)
    level1 = imp.imp_level(exp, mnist1d, traj, 0, 1, imp.imp_level(exp, mnist1d, traj, 0, 0, None, CPU, False),
                           CPU, progress=False)
    chain = imp.Chain(0, traj, level1)
    layout = models.Layout.of(training.build_model(exp, mnist1d, 0, CPU))
    masks = imp.sweep_masks(exp, mnist1d, chain)
    assert [(m, p) for m, p, _ in masks] == [("magnitude", 0.3), ("random", 0.3), ("magnitude", 0.9), ("random", 0.9)]
    for method, p, mask in masks:
        assert (mask <= level1.mask).all()  # only the level's remaining weights are pruned
        assert pruning.counts(mask, layout) == pruning.counts(masks[0 if p == 0.3 else 2][2], layout)
        kept = sum(pruning.counts(mask, layout))
        assert kept == pytest.approx((1 - p) * sum(pruning.counts(level1.mask, layout)), abs=len(layout.shapes))
    magnitude = masks[0][2]  # magnitude keeps the largest |w| of the level's network
    removed = level1.mask & ~magnitude
    assert level1.weights[removed].abs().max() <= level1.weights[magnitude & layout.prunable_mask()].abs().min()

    (rows,) = imp.fraction_sweep(exp, mnist1d, [chain], CPU, progress=False)
    assert len(rows) == 4 * 2 and {r["split"] for r in rows} == {"train", "test"}
    by = {(r["method"], r["fraction"], r["split"]): r for r in rows}
    for r in rows:
        assert r["level"] == 1 and r["barrier"] >= 0 and r["connected"] == (r["barrier"] <= 0.02)
        assert r["sparsity"] > r["sparsity_before"] == level1.row["sparsity"]
        assert (r["loss_rise"] is None) == (r["split"] == "test")
    # pruning more costs more loss, measured and to second order, and magnitude costs less than random
    for method in ("magnitude", "random"):
        assert by[method, 0.9, "train"]["loss_rise"] > by[method, 0.3, "train"]["loss_rise"]
        assert by[method, 0.9, "train"]["loss_rise_quadratic"] > by[method, 0.3, "train"]["loss_rise_quadratic"]
    assert by["magnitude", 0.3, "train"]["loss_rise"] < by["random", 0.3, "train"]["loss_rise"]
    top = hessian_top(exp, mnist1d, level1)
    assert rows[0]["top_eigenvalue"] == pytest.approx(top, rel=1e-3)


def hessian_top(exp, data, level) -> float:
    """The level's top eigenvalue from its explicit (masked) Hessian."""
    from sublevel import hessian

    model = training.build_model(exp, data, 0, CPU)
    models.load_flat_buffers(model, level.buffers)
    loss, theta, x = hessian.mean_loss(model, level.weights, data.x_train, data.y_train)
    H = torch.autograd.functional.hessian(lambda t: loss(t, x, data.y_train), theta)
    m = level.mask.double()
    return float(torch.linalg.eigvalsh(m[:, None] * H * m[None, :]).max())


def test_early_stopping_is_at_the_least_validation_loss_of_a_synthetic_curve():
    """A validation loss that falls to its least at step 300 and rises again (overfitting): the early-stop
    point is step 300, with the test accuracy measured there, not the final one; equal losses pick the
    earlier point; a non-finite loss is never the least; no curve, no point."""
    steps = list(range(0, 1001, 100))
    val = [2.0 - 1.5 * min(s, 300) / 300 + 0.001 * max(s - 300, 0) for s in steps]
    test = [0.5 + s / 4000 for s in steps]
    curve = [dict(step=s, val_loss=v, val_accuracy=0.0, test_loss=0.0, test_accuracy=t)
             for s, v, t in zip(steps, val, test)]
    assert imp.early_stopping(curve) == dict(early_stop_step=300, early_stop_val_loss=0.5,
                                             early_stop_test_accuracy=test[3])
    tie = curve[:4] + [dict(curve[3], step=400, test_accuracy=0.9)]
    assert imp.early_stopping(tie)["early_stop_step"] == 300
    nan = [dict(curve[0], val_loss=float("nan"))] + curve[1:]
    assert imp.early_stopping(nan)["early_stop_step"] == 300
    assert imp.early_stopping([]) == dict(early_stop_step=None, early_stop_val_loss=None,
                                          early_stop_test_accuracy=None)


def test_imp_levels_record_a_validation_curve_from_the_held_out_split(mnist1d, tmp_path):
    """With a validation split and imp.eval_every, each level (and baseline) records validation and test
    loss and accuracy at the rewind step, every eval_every steps after it and at the end: the first point
    is the rewound network's, the last the final network's, and the row's early stop is the curve's least
    validation loss. The validation examples are the first of the training set, and none is trained on."""
    from sublevel import datasets, functional

    held = datasets.hold_out(mnist1d, 100)
    assert torch.equal(held.x_val, mnist1d.x_train[:100]) and torch.equal(held.x_train, mnist1d.x_train[100:])
    assert len(datasets.subset(held, [0, 1]).y_val) == 100
    exp = make_experiment(validation=100, imp={"levels": 1, "rewind": 5, "eval_every": 4,
                                               "baselines": ["random_reinit"]})
    traj = dense_trajectory(exp, held, tmp_path)
    dense = imp.imp_level(exp, held, traj, 0, 0, None, CPU, progress=False)
    steps = dense.curve[:, 0].astype(int).tolist()
    total = int(traj.steps[-1])
    assert steps == [5] + list(range(8, total, 4)) + [total]
    model = training.build_model(exp, held, 0, CPU)
    models.load_flat(model, torch.from_numpy(traj.params(5)))
    loss, acc = functional.evaluate(model, *held.split("val"), 1000)
    assert dense.curve[0, 1] == pytest.approx(loss, rel=1e-5) and dense.curve[0, 2] == pytest.approx(acc)
    assert dense.curve[-1, 4] == pytest.approx(dense.row["test_accuracy"])
    best = int(np.argmin(dense.curve[:, 1]))
    assert dense.row["early_stop_step"] == steps[best]
    assert dense.row["early_stop_test_accuracy"] == pytest.approx(dense.curve[best, 4])
    level1 = imp.imp_level(exp, held, traj, 0, 1, dense, CPU, progress=False)
    reinit = imp.baselines(["random_reinit"], exp, held, [imp.Chain(0, traj, level1)], CPU, progress=False)[0]
    assert reinit.row["early_stop_step"] in reinit.curve[:, 0].astype(int).tolist()
    path = tmp_path / "level.zarr"
    imp.write_levels(path, [level1])
    np.testing.assert_array_equal(imp.Level.read(path).curve, level1.curve)


def test_early_stopping_needs_a_validation_split_and_a_split_that_leaves_data_to_train_on():
    from sublevel.config import ConfigError

    with pytest.raises(ConfigError, match="validation"):
        make_experiment(imp={"levels": 1, "eval_every": 4})
    with pytest.raises(ConfigError, match="leaves"):
        make_experiment(validation=10_000_000)
