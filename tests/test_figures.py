"""Figures stay legible at the presets' sizes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sublevel import figures, schema


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


# -- every figure at a preset's size, checked for what a reader would trip over ---------------------------------
LEVELS, REWINDS, SEEDS = range(21), (0, 1000, 4000), (0, 1)  # frankle2020_resnet20: 20 levels, 3 rewind points
METHODS = list(figures.STYLE)
SETS = [("train_accuracy", 0.6), ("train_accuracy", 0.9), ("train_loss", 0.5), ("train_loss", 0.1)]
ANCHORS = [("random", 0), *[("burnin", t) for t in (100, 1000, 4000, 10000)], ("lottery", 0), ("ticket", 1000)]


def preset_tables() -> dict[str, pl.DataFrame]:
    """Every figure's tables at the size of the largest presets (20 IMP levels at three rewind points, five
    baselines, four sublevel sets over seven anchors, each kind of censoring), in the tables' own columns."""
    import numpy as np

    dims = [2 ** k for k in range(1, 13)]
    imp = [dict(experiment="e", method=m, level=lv, seed=s, rewind_step=k, remaining=int(1e5 * 0.8 ** lv),
                prunable=100_000, sparsity=1 - 0.8 ** lv, diverged=False, test_accuracy=0.9 - 0.005 * lv - 0.01 * k / 4000,
                early_stop_step=4000 - 100 * lv, early_stop_test_accuracy=0.9 - 0.004 * lv)
           for m in METHODS for lv in LEVELS for s in SEEDS for k in REWINDS if not (m != "imp" and lv == 0)]
    barrier = [dict(experiment="e", kind=kd, level=lv, seed=s, rewind_step=k, split="test", barrier=0.01 * lv)
               for kd in ("instability", "imp_successive") for lv in LEVELS for s in SEEDS for k in REWINDS]
    threshold, success, theory = [], [], []
    for j, (metric, eps) in enumerate(SETS):
        for i, (kind, t) in enumerate(ANCHORS):
            censored = {("burnin", 10000): "anchor", ("ticket", 1000): "below", ("lottery", 0): "above"}.get(
                (kind, t), "none")
            d_star = None if censored in ("anchor", "above") else (2.0 if censored == "below" else 300.0 / (1 + i + j))
            threshold.append(dict(experiment="e", kind=kind, burnin_step=t, metric=metric, threshold=eps,
                                  d_star=d_star, d_star_lo=d_star and d_star * 0.8, d_star_hi=d_star and d_star * 1.2,
                                  censored=censored, d_min=2, d_max=4096))
            success += [dict(experiment="e", kind=kind, burnin_step=t, metric=metric, threshold=eps, d=d,
                             p_success=float(1 / (1 + np.exp(-(np.log(d) - np.log(d_star or 8)))))) for d in dims]
            if metric == "train_loss" and kind in ("random", "burnin"):
                theory.append(dict(experiment="e", kind=kind, burnin_step=t, metric=metric, threshold=eps,
                                   d_star_bound=500.0 / (1 + i), d_star_bound_lo=450.0 / (1 + i),
                                   d_star_bound_hi=550.0 / (1 + i), d_star_well=200.0 / (1 + i),
                                   d_star_well_lo=180.0 / (1 + i), d_star_well_hi=220.0 / (1 + i)))
    hessian = ([dict(experiment="e", source="dense", seed=s, rewind_step=None, level=None, step=st, rank=1,
                     sparsity=0.0, eigenvalue=10.0 + st / 1000) for s in SEEDS for st in (0, 100, 1000, 10000, 60000)]
               + [dict(experiment="e", source="imp", seed=s, rewind_step=k, level=lv, step=60000, rank=1,
                       sparsity=1 - 0.8 ** lv, eigenvalue=5.0 + lv) for s in SEEDS for k in REWINDS for lv in LEVELS])
    prune = [dict(experiment="e", level=lv, method=m, fraction=f, seed=s, split="test", barrier=0.02 * f * lv,
                  sparsity_before=1 - 0.8 ** lv, top_eigenvalue=5.0 + lv, tolerance=0.02)
             for lv in (2, 5, 10, 15) for m in ("magnitude", "random") for f in (0.2, 0.4, 0.6, 0.8, 0.9) for s in SEEDS]
    rng = np.random.default_rng(0)
    scores = [dict(experiment="e", step=st, example=i, el2n=float(v), grand=float(v) * 2)
              for st in (0, 200, 1000, 4000) for i, v in enumerate(rng.gamma(2.0, 0.2, 2000))]
    train = [dict(experiment="e", seed=s, step=st, split=sp, loss=2.3 / (1 + st / 500), accuracy=0.1 + 0.8 * st / 60000,
                  diverged=False) for s in (0, 1, 2) for st in [0, *range(400, 60001, 1200)] for sp in ("train", "test")]
    spectrum = ([dict(experiment="e", vector="probe", probe=p, node=n, kind=None, burnin_step=None,
                      eigenvalue=float(x), weight=1 / 30, distance=None, num_params=270_000, previous=False)
                 for p in range(3) for n, x in enumerate(np.concatenate([-np.logspace(-4, -1, 5), np.logspace(-5, 2, 25)]))]
                + [dict(experiment="e", vector="anchor", probe=None, node=n, kind=kind, burnin_step=t,
                        eigenvalue=float(x), weight=1 / 10, distance=3.0, num_params=270_000, previous=False)
                   for kind, t in ANCHORS[:5] for n, x in enumerate(np.logspace(-4, 2, 10))])
    return {"imp": pl.DataFrame(imp), "barrier": pl.DataFrame(barrier), "threshold": pl.DataFrame(threshold),
            "success": pl.DataFrame(success), "theory": pl.DataFrame(theory), "hessian": pl.DataFrame(hessian),
            "prune_sweep": pl.DataFrame(prune), "scores": pl.DataFrame(scores), "train": pl.DataFrame(train),
            "spectrum": pl.DataFrame(spectrum)}


def layout_problems(fig) -> list[str]:
    """What a reader trips over, from the drawn figure: a legend larger than an axes, a legend over a panel's
    data, and two pieces of text (titles, axis labels, tick labels, legends as a whole) printed over each other."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in axes)] if lg is not None]
    problems = []
    smallest = min(ax.get_window_extent(renderer).width * ax.get_window_extent(renderer).height for ax in axes)
    for lg in legends:
        box = lg.get_window_extent(renderer)
        if box.width * box.height > smallest:
            problems.append(f"a legend ({len(lg.get_texts())} entries) larger than an axes")
        for ax in axes:
            if Bbox.intersection(box, ax.get_window_extent(renderer)) is not None and \
                    box.overlaps(ax.get_window_extent(renderer).shrunk(0.99, 0.99)):
                problems.append(f"a legend over the data of {ax.get_title()!r}")
    drawn_ticks = lambda axis: [label for tick in axis._update_ticks() for label in (tick.label1, tick.label2)]
    texts = [(t.get_text(), t.get_window_extent(renderer)) for ax in axes
             for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *drawn_ticks(ax.xaxis), *drawn_ticks(ax.yaxis))
             if t.get_visible() and t.get_text()]
    if fig._suptitle is not None:
        texts.append((fig._suptitle.get_text(), fig._suptitle.get_window_extent(renderer)))
    texts += [(f"legend {i}", lg.get_window_extent(renderer)) for i, lg in enumerate(legends)]
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            inter = Bbox.intersection(box_a, box_b)
            if inter is not None and inter.width > 1 and inter.height > 1:
                problems.append(f"{a!r} over {b!r}")
    return problems


@pytest.mark.parametrize("name", list(figures.DRAW))
def test_every_figure_at_a_presets_size_is_legible(name, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out: drawn.append(fig))
    tables = preset_tables()
    figures.render(name, {t: tables[t] for t in schema.FIGURE_TABLES[name]}, tmp_path / f"{name}.png")
    fig, = drawn
    try:
        assert layout_problems(fig) == []
        width, height = fig.get_size_inches() * fig.dpi
        assert width <= 1400, "wider than the report shows without shrinking its text"
    finally:
        plt.close(fig)


def test_the_layout_check_sees_a_legend_over_the_data_and_overlapping_labels():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    for i in range(30):
        ax.plot([0, 1], [i, i], label=f"series {i}")
    ax.legend()  # inside the axes, and larger than it
    ax.set_xticks(np.linspace(0, 1, 60))
    try:
        problems = layout_problems(fig)
    finally:
        plt.close(fig)
    assert any("larger than an axes" in p for p in problems)
    assert any("over the data" in p for p in problems)
    assert any("over" in p and "legend" not in p for p in problems)
