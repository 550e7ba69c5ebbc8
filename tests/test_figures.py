"""Figures stay legible at the presets' sizes."""

from __future__ import annotations

import polars as pl

from sublevel import figures


def test_twenty_imp_levels_label_at_most_eight_ticks_dense_and_sparsest_included():
    pct = [100 * 0.8 ** level for level in range(21)]  # 20 levels at 20% per level: 100% ... 1.15%
    ticks = figures.level_ticks(pct)
    assert len(ticks) <= 8 and ticks[0] == 100.0 and ticks[-1] == round(pct[-1], 1)
    assert ticks == sorted(ticks, reverse=True)
    assert figures.level_ticks(pct[:5]) == [round(p, 1) for p in pct[:5]]  # few levels: every one


def test_imp_accuracy_renders_twenty_levels(tmp_path):
    rows = [dict(experiment="e", method=m, level=lv, seed=0, remaining=int(1000 * 0.8 ** lv), prunable=1000,
                 test_accuracy=0.9 - 0.01 * lv) for m in ("imp", "random_prune") for lv in range(21)
            if not (m == "random_prune" and lv == 0)]
    out = tmp_path / "imp_accuracy.png"
    figures.imp_accuracy(pl.DataFrame(rows), out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_each_rewind_step_gets_its_own_line_style_and_label():
    frame = pl.DataFrame({"rewind_step": [5, 0, 5, 0], "level": [0, 0, 1, 1]})
    parts = figures.by_rewind(frame)
    assert [(p["rewind_step"].unique().to_list(), ls, label) for p, ls, label in parts] == [
        ([0], "-", ", rewind 0"), ([5], "--", ", rewind 5")]
    one, = figures.by_rewind(frame.filter(pl.col("rewind_step") == 5))  # one point: one plain line, as before
    assert one[1:] == ("-", "") and one[0].height == 2
    assert figures.by_rewind(frame.drop("rewind_step"))[0][0].height == 4


def test_imp_figures_render_two_rewind_points(tmp_path):
    imp = pl.DataFrame([dict(experiment="e", method="imp", level=lv, seed=0, rewind_step=k, remaining=int(1000 * 0.8 ** lv),
                             prunable=1000, test_accuracy=0.9 - 0.01 * lv - 0.02 * (k == 0)) for k in (0, 5)
                        for lv in range(4)])
    barrier = pl.DataFrame([dict(experiment="e", kind=kind, level=lv, seed=0, rewind_step=k, split="test",
                                 barrier=0.1 * (k == 0)) for k in (0, 5) for kind in ("instability", "imp_successive")
                            for lv in range(4)])
    figures.imp_accuracy(imp, tmp_path / "a.png")
    figures.barrier_vs_level(barrier, tmp_path / "b.png")
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in ("a.png", "b.png"))


def test_the_spectral_density_renders_from_the_spectrum_table(tmp_path):
    """What the spectrum job writes (sublevel.theory.spectrum_rows), drawn: the density and each anchor's δ."""
    import numpy as np

    from sublevel import hessian, theory

    nodes = np.array([[-0.01, 0.0, 0.5, 4.0], [-0.02, 0.001, 0.7, 4.1]])
    weights = np.array([[0.3, 0.6, 0.08, 0.02], [0.2, 0.7, 0.09, 0.01]])
    probes = [hessian.Quadrature(x, w, x[1:], w[1:] / w[1:].sum(), 4, 0.004, True) for x, w in zip(nodes, weights)]
    anchors = {("random", 0): theory.Anchor(3.0, 2.0, np.array([0.001, 0.5]), np.array([0.9, 0.1])),
               ("burnin", 5): theory.Anchor(0.0, 0.1, np.zeros(1), np.ones(1))}  # an anchor at θ* itself
    rows = theory.spectrum_rows("e", 0, 40, probes, anchors, 0.1, 1e-3, 100, 1000)
    out = tmp_path / "spectral_density.png"
    figures.spectral_density(pl.DataFrame(rows), out)
    assert out.read_bytes()[:4] == b"\x89PNG" and b"<svg" in out.with_suffix(".svg").read_bytes()[:2000]


def test_imp_early_stop_draws_both_panels_and_leaves_out_runs_without_a_curve(tmp_path):
    rows = [dict(experiment="e", method=m, level=lv, seed=seed, rewind_step=0, remaining=int(1000 * 0.8 ** lv),
                 prunable=1000, diverged=False, early_stop_step=None if seed == 2 else 1000 - 50 * lv,
                 early_stop_test_accuracy=None if seed == 2 else 0.97 + 0.001 * lv)
            for m in ("imp", "random_reinit") for lv in range(19) for seed in (0, 1, 2)
            if not (m == "random_reinit" and lv == 0)]
    out = tmp_path / "imp_early_stop.png"
    figures.imp_early_stop(pl.DataFrame(rows), out)
    assert out.read_bytes()[:4] == b"\x89PNG" and out.with_suffix(".svg").exists()
    none = pl.DataFrame([dict(r, early_stop_step=None) for r in rows])
    figures.imp_early_stop(none, tmp_path / "none.png")   # no curves recorded: says so, draws no line
    assert b"no early-stopping points" in (tmp_path / "none.svg").read_bytes()
