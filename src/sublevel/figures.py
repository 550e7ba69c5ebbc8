"""Figures from the results tables (matplotlib, Agg): what a reader checks first.

Each figure is a function of the tables it needs (polars DataFrames by table name) and is written twice,
as PNG (shown in the Snakemake report) and SVG (for papers). DRAW holds one function per figure of
schema.FIGURES, which names them for the CLI and the workflow.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker
import matplotlib.transforms
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from sublevel import schema, storage  # noqa: E402
from sublevel.kinds import KINDS  # noqa: E402

STYLE = {"imp": ("IMP (rewound ticket)", "C0", "o"), "random_prune": ("random pruning", "C1", "s"),
         "random_reinit": ("random reinit", "C2", "^"), "oneshot": ("one-shot magnitude", "C3", "v"),
         "init_magnitude": ("magnitude at init", "C4", "D")}


def _save(fig, path: str | Path) -> None:
    """PNG at `path` and SVG beside it, each written atomically."""
    path = Path(path)
    for fmt, out in (("png", path), ("svg", path.with_suffix(".svg"))):
        with storage.atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _anchor_label(kind: str, t: int) -> str:
    if kind == "ticket":
        return f"IMP tickets (axial, t={t})"
    return f"{KINDS[kind].label} t={t}" if KINDS[kind].burnin else KINDS[kind].label


def _threshold_label(metric: str, threshold: float) -> str:
    return f"{metric.replace('_', ' ')} {'≤' if metric.endswith('loss') else '≥'} {threshold:g}"


def _experiment(table: pl.DataFrame) -> str:
    return table["experiment"][0] if table.height else ""


def _mean_sd(column: str) -> list[pl.Expr]:
    """Mean and standard deviation over seeds as `m` and `sd` (0 for a single seed), for error bars."""
    return [pl.col(column).mean().alias("m"), pl.col(column).std().fill_null(0).alias("sd")]


def _entries(*axes) -> dict:
    """The legend entries of `axes`, label -> handle, each label once (panels share their series)."""
    unique = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            unique.setdefault(label, handle)
    return unique


def _legend_outside(ax) -> None:
    """The axes' legend to the right of it: outside the data, however many entries."""
    if unique := _entries(ax):
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, frameon=False)


def _legend_under(ax, ncol: int = 1) -> None:
    """The axes' legend under its x label: outside the data, in a panel that has another beside it."""
    if unique := _entries(ax):
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncol=ncol, frameon=False)


def _legend_below(fig, axes, ncol: int = 3) -> None:
    """One legend for every panel, below them."""
    if unique := _entries(*axes):
        fig.legend(unique.values(), unique.keys(), fontsize=7, loc="outside lower center",
                   ncol=min(ncol, len(unique)), frameon=False)


def _grid(panels: int, width: float = 4.6, height: float = 3.6, most: int = 2, **kw):
    """A figure of `panels` axes, at most `most` per row (a panel stays legible when the report shrinks the
    figure to its column); the axes beyond `panels` removed."""
    cols = min(panels, most)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained",
                             **kw)
    for ax in axes.flat[panels:]:
        ax.remove()
    return fig, list(axes.flat[:panels])


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes, color="0.4")


LINESTYLES = ("-", "--", ":", "-.")


def by_rewind(frame: pl.DataFrame) -> list[tuple[pl.DataFrame, str, str]]:
    """(rows, line style, label suffix) per IMP rewind step, in step order: the rewind axis of the IMP figures
    when imp.rewind lists several points; one solid, unlabelled entry when there is one."""
    if "rewind_step" not in frame.columns or frame["rewind_step"].n_unique() <= 1:
        return [(frame, "-", "")]
    steps = sorted(k for k in frame["rewind_step"].unique().to_list() if k is not None)
    return [(frame.filter(pl.col("rewind_step") == k), LINESTYLES[i % len(LINESTYLES)], f", rewind {k}")
            for i, k in enumerate(steps)]


def level_ticks(percent_remaining: list[float], most: int = 8) -> list[float]:
    """The levels' weights-remaining percentages to label: every level while they fit, else every k-th (the
    dense 100% and the sparsest level always), so 20 IMP levels at 20% each do not print over each other."""
    ticks = sorted({round(float(v), 1) for v in percent_remaining}, reverse=True)
    if len(ticks) <= most:
        return ticks
    k = -(-(len(ticks) - 1) // (most - 1))
    return sorted(set(ticks[::k]) | {ticks[-1]}, reverse=True)


def imp_accuracy(imp: pl.DataFrame, out: str | Path) -> None:
    """Test accuracy vs weights remaining (log x), mean ± std over seeds, IMP and each baseline."""
    experiment = _experiment(imp)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    dense = imp.filter((pl.col("method") == "imp") & (pl.col("level") == 0))["test_accuracy"].mean()
    def per_level(rows: pl.DataFrame) -> pl.DataFrame:
        return (rows.group_by("method", "level")
                .agg(pl.col("remaining").mean(), pl.col("prunable").first(), *_mean_sd("test_accuracy"))
                .sort("method", "level"))

    stats = per_level(imp)  # over every rewind step: the tick positions
    for part, ls, suffix in by_rewind(imp):
        part = per_level(part)
        for method, (label, color, marker) in STYLE.items():
            s = part.filter(pl.col("method") == method)
            if s.height:
                pct = 100 * s["remaining"] / s["prunable"]
                ax.errorbar(pct, 100 * s["m"], yerr=100 * s["sd"], label=label + suffix, color=color, marker=marker,
                            ms=4, capsize=2, ls=ls)
    ax.axhline(100 * dense, color="k", ls=":", lw=1, label="dense")
    ax.set_xscale("log")
    ticks = level_ticks((100 * stats["remaining"] / stats["prunable"]).to_list())
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.invert_xaxis()
    ax.set_xlabel("prunable weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{experiment}: accuracy vs sparsity")
    _legend_outside(ax)
    _save(fig, out)


def imp_early_stop(imp: pl.DataFrame, out: str | Path) -> None:
    """Frankle & Carbin 2019's Fig. 4: the early-stopping iteration (least validation loss) and the test
    accuracy there vs weights remaining (log x), mean ± std over seeds, IMP and each baseline; the dense
    network's as dotted lines."""
    experiment = _experiment(imp)
    rows = imp.filter(pl.col("early_stop_step").is_not_null() & ~pl.col("diverged").fill_null(False))
    fig, axes = _grid(2, width=5.2, height=4.0)
    if not rows.height:
        for ax in axes:
            _empty(ax, "early-stopping points (imp.eval_every)")
        return _save(fig, out)
    dense = rows.filter((pl.col("method") == "imp") & (pl.col("level") == 0))
    per_level = lambda part, column: (part.group_by("method", "level")
                                      .agg(pl.col("remaining").mean(), pl.col("prunable").first(), *_mean_sd(column))
                                      .sort("method", "level"))
    panels = (("early_stop_step", "early-stopping iteration", 1.0),
              ("early_stop_test_accuracy", "test accuracy there (%)", 100.0))
    for ax, (column, label, scale) in zip(axes, panels):
        for part, ls, suffix in by_rewind(rows):
            stats = per_level(part, column)
            for method, (name, color, marker) in STYLE.items():
                s = stats.filter(pl.col("method") == method)
                if s.height:
                    ax.errorbar(100 * s["remaining"] / s["prunable"], scale * s["m"], yerr=scale * s["sd"],
                                label=name + suffix, color=color, marker=marker, ms=4, capsize=2, ls=ls)
        if dense.height:
            ax.axhline(scale * dense[column].mean(), color="k", ls=":", lw=1, label="dense")
        ax.set_xscale("log")
        pct = (100 * rows["remaining"] / rows["prunable"]).to_list()
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(level_ticks(pct)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.invert_xaxis()
        ax.set_xlabel("prunable weights remaining (%)")
        ax.set_ylabel(label)
    fig.suptitle(f"{experiment}: early stopping (least validation loss)")
    _legend_below(fig, axes[:1], ncol=3)
    _save(fig, out)


def barrier_vs_level(barrier: pl.DataFrame, out: str | Path) -> None:
    """Error barrier (test split) vs IMP level: instability of the rewind point and successive levels."""
    experiment = _experiment(barrier)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    test = barrier.filter(pl.col("split") == "test")
    labels = {"instability": "instability (two data orders)", "imp_successive": "level ℓ−1 pruned → level ℓ"}
    for part, ls, suffix in by_rewind(test):
        for i, (kind, label) in enumerate(labels.items()):
            s = (part.filter(pl.col("kind") == kind).group_by("level")
                 .agg(*_mean_sd("barrier"))
                 .sort("level"))
            if s.height:
                ax.errorbar(s["level"], 100 * s["m"], yerr=100 * s["sd"], marker="o", ms=4, capsize=2,
                            label=label + suffix, color=f"C{i}", ls=ls)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("IMP level")
    ax.set_ylabel("test error barrier (percentage points)")
    ax.set_title(f"{experiment}: linear mode connectivity")
    _legend_outside(ax)
    _save(fig, out)


def _predicted(theory: pl.DataFrame, metric: str, threshold: float) -> pl.DataFrame:
    """The theory table's predictions for one threshold (none where the table is absent or has none)."""
    if not theory.height:
        return pl.DataFrame()
    return theory.filter((pl.col("metric") == metric) & (pl.col("threshold") == threshold)
                         & pl.col("d_star_bound").is_not_null()).sort("burnin_step")


def subspace_success(success: pl.DataFrame, theory: pl.DataFrame, out: str | Path) -> None:
    """P(d) vs d (log x): one panel per threshold ε, one curve per subspace kind and burn-in step; where the
    theory table predicts d* for the curve (a train_loss ε, random and burn-in subspaces), a dashed vertical
    line at the quadratic-well bound and a dotted one at the well's own threshold from θ_t, in the curve's
    colour. Agreement: the curve crosses 1/2 at the dotted line, the dashed one at or right of it (a bound);
    a crossing far from both says the loss is not that quadratic well out to θ_t."""
    experiment = _experiment(success)
    panels = success.select("metric", "threshold").unique().sort("metric", "threshold").rows() or [("", 0.0)]
    fig, axes = _grid(len(panels), sharey=True)
    for ax, (metric, threshold) in zip(axes, panels):
        part = success.filter((pl.col("metric") == metric) & (pl.col("threshold") == threshold))
        predicted = _predicted(theory, metric, threshold)
        for (kind, t), g in part.sort("d").group_by("kind", "burnin_step", maintain_order=True):
            line, = ax.plot(g["d"], g["p_success"], marker="o", ms=3, label=_anchor_label(kind, t))
            if predicted.height:
                for r in predicted.filter((pl.col("kind") == kind) & (pl.col("burnin_step") == t)).iter_rows(named=True):
                    ax.axvline(r["d_star_bound"], color=line.get_color(), ls="--", lw=1.0)
                    if r["d_star_well"]:
                        ax.axvline(r["d_star_well"], color=line.get_color(), ls=":", lw=1.2)
        if predicted.height:
            ax.plot([], [], color="0.3", ls="--", lw=1.0, label="predicted d*, in its curve's colour: "
                                                                "quadratic-well bound (Gordon)")
            ax.plot([], [], color="0.3", ls=":", lw=1.2, label="predicted d*, in its curve's colour: "
                                                               "the well's own threshold from θ_t")
        ax.axhline(0.5, color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("subspace dimension d")
        ax.set_ylabel("success probability P(d)")
        ax.set_title(_threshold_label(metric, threshold) if metric else "", fontsize=10)
        if not part.height:
            _empty(ax, "subspace runs")
    fig.suptitle(f"{experiment}: success probability vs dimension")
    _legend_below(fig, axes, ncol=2)
    _save(fig, out)


def _offsets(n: int, width: float = 0.06) -> list[float]:
    """Relative x offsets that set n series' markers at one x side by side instead of on top of each other."""
    return [width * (i - (n - 1) / 2) for i in range(n)]


def dstar_burnin(threshold: pl.DataFrame, theory: pl.DataFrame, out: str | Path) -> None:
    """d*(ε) vs burn-in step t (random subspaces are t = 0), bootstrap intervals; the other kinds (lottery) and the
    IMP tickets as single markers; one colour per sublevel set ε, its series side by side at each t. A censored d*
    is drawn as the bound it is: an open circle at the smallest d tested (P ≥ 1/2 there: d* at most that), an open
    triangle at the largest (never reached: d* above it), a triangle on the axis floor (the anchor already in the
    set: no training needed). From the theory table, with bands of ±1.96 standard errors over the SLQ probes:
    dashed, the quadratic-well bound; dotted, the well's own threshold from θ_t. Agreement: the measured points on
    the dotted line and below the dashed one, falling with t as they do."""
    experiment = _experiment(threshold)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = list(threshold.sort("burnin_step").group_by("metric", "threshold", maintain_order=True))
    positive = [t for t in threshold["burnin_step"].to_list() if t] if threshold.height else []
    linthresh = min(positive) if positive else 1
    shift = lambda t, off: np.asarray(t, dtype=float) * (1 + off) + off * linthresh  # side by side, t = 0 too
    floor = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    # random (t = 0) and burn-in (t > 0) subspaces are one curve over t; every other kind and the IMP tickets a
    # marker of their own
    curve = ("random", "burnin")
    markers = dict(zip([k for k in KINDS if k not in curve], "*sPXh")) | {"ticket": "D"}
    used = set()
    for i, (((metric, th), g), off) in enumerate(zip(groups, _offsets(len(groups)))):
        color = f"C{i}"
        ax.plot([], [], color=color, lw=6, alpha=0.5, label=_threshold_label(metric, th))
        line = g.filter(pl.col("kind").is_in(curve))
        exact = line.filter(pl.col("censored") == "none")
        if exact.height:
            lo = (exact["d_star"] - exact["d_star_lo"].fill_null(exact["d_star"])).to_numpy()
            hi = (exact["d_star_hi"].fill_null(exact["d_star"]) - exact["d_star"]).to_numpy()
            ax.errorbar(shift(exact["burnin_step"], off), exact["d_star"], yerr=[lo, hi], color=color, marker="o",
                        ms=4, capsize=2)
            used.add("exact")
        for kind, marker in [(k, None) for k in curve] + list(markers.items()):
            k = g.filter(pl.col("kind") == kind)
            if marker and k.filter(pl.col("censored") == "none").height:
                e = k.filter(pl.col("censored") == "none")
                ax.scatter(shift(e["burnin_step"], off), e["d_star"], marker=marker, s=60, color=color, zorder=3)
                used.add(kind)
            below = k.filter(pl.col("censored") == "below")
            ax.scatter(shift(below["burnin_step"], off), below["d_min"], s=55, marker=marker or "o",
                       facecolors="none", edgecolors=color, zorder=3)
            above = k.filter(pl.col("censored") == "above")
            ax.scatter(shift(above["burnin_step"], off), above["d_max"], marker="^", s=55, facecolors="none",
                       edgecolors=color, zorder=3)
            anchor = k.filter(pl.col("censored") == "anchor")
            ax.scatter(shift(anchor["burnin_step"], off), [0.03] * anchor.height, marker="v", s=55, color=color,
                       transform=floor, clip_on=False, zorder=3)
            used |= {c for c, f in (("below", below), ("above", above), ("anchor", anchor)) if f.height}
        predicted = _predicted(theory, metric, th)
        for col, ls in (("d_star_bound", "--"), ("d_star_well", ":")):
            p = predicted.filter(pl.col(col) > 0) if predicted.height else predicted  # 0: θ_t inside the set
            if p.height:
                ax.plot(p["burnin_step"], p[col], color=color, ls=ls, lw=1.2)
                ax.fill_between(p["burnin_step"], p[f"{col}_lo"].fill_null(p[col]), p[f"{col}_hi"].fill_null(p[col]),
                                color=color, alpha=0.12)
                used.add(col)
    key = {"exact": ("o", "-", "d* measured (random t = 0, burn-in t), 95% interval"),
           **{k: (m, "", KINDS[k].label if k in KINDS else "IMP tickets (axial)") for k, m in markers.items()},
           "below": ("o", "", "open: d* ≤ the smallest d tested (P ≥ 1/2 there)"),
           "above": ("^", "", "open: d* > the largest d tested (never reached)"),
           "anchor": ("v", "", "on the floor: in the set at the anchor (no training)"),
           "d_star_bound": (None, "--", "predicted: quadratic-well bound (Gordon)"),
           "d_star_well": (None, ":", "predicted: the well's own threshold from θ_t")}
    for name, (marker, ls, label) in key.items():
        if name in used:
            open_marker = name in ("below", "above")
            ax.plot([], [], color="0.35", marker=marker, ls=ls or "none", mfc="none" if open_marker else "0.35",
                    label=label)
    if not threshold.height:
        _empty(ax, "thresholds")
        ax.set_ylim(1, 10)
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sorted(set(threshold["burnin_step"].to_list()))
                                                              if threshold.height else [0]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_yscale("log")
    ax.set_xlabel("burn-in step t (0: at initialisation)")
    ax.set_ylabel("threshold training dimension d*")
    ax.set_title(f"{experiment}: d* vs burn-in")
    _legend_outside(ax)
    _save(fig, out)


def imp_dstar(imp: pl.DataFrame, threshold: pl.DataFrame, out: str | Path) -> None:
    """IMP test accuracy vs the number of weights it trains (log x), with each subspace kind's d* on the
    same axis: how many degrees of freedom a sparse ticket keeps against how many a subspace needs."""
    experiment = _experiment(imp)
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for part, ls, suffix in by_rewind(imp.filter(pl.col("method") == "imp")):
        stats = part.group_by("level").agg(pl.col("remaining").mean(), *_mean_sd("test_accuracy")).sort("level")
        ax.errorbar(stats["remaining"], 100 * stats["m"], yerr=100 * stats["sd"], color="C0", marker="o", ms=4,
                    capsize=2, ls=ls, label=f"IMP (rewound ticket{suffix}): weights remaining")
    if threshold.height:
        # train accuracy first (the sublevel set the sweeps refine on), then the lowest ε
        first = threshold.sort(pl.col("metric") != "train_accuracy", "metric", "threshold").row(0, named=True)
        th = threshold.filter((pl.col("metric") == first["metric"]) & (pl.col("threshold") == first["threshold"])
                              ).sort("kind", "burnin_step")
        for i, r in enumerate(th.iter_rows(named=True)):
            name = f"d* {_anchor_label(r['kind'], r['burnin_step'])}"
            if r["censored"] == "anchor":
                continue  # in the set at the anchor: no dimension to draw (the summary lists it)
            at, label, style = {  # a censored d* is the bound it is, drawn dotted
                "below": (r["d_min"], f"{name} ≤ {r['d_min']:,} (the smallest d tested)", ":"),
                "above": (r["d_max"], f"{name} > {r['d_max']:,} (the largest d tested)", ":"),
            }.get(r["censored"], (r["d_star"], f"{name} = {r['d_star'] or 0:,.0f}", "--"))
            ax.axvline(at, color=f"C{i + 1}", ls=style, lw=1.2, label=label)
            if r["censored"] == "none" and r["d_star_lo"] is not None and r["d_star_hi"] is not None:
                ax.axvspan(r["d_star_lo"], r["d_star_hi"], color=f"C{i + 1}", alpha=0.12)
        ax.set_title(f"{experiment}: IMP vs subspaces (d* at {_threshold_label(first['metric'], first['threshold'])})",
                     fontsize=10)
    ax.set_xscale("log")
    ax.set_xlabel("trained degrees of freedom (weights remaining, or subspace dimension)")
    ax.set_ylabel("IMP test accuracy (%)")
    _legend_outside(ax)
    _save(fig, out)


def sharpness(hessian: pl.DataFrame, out: str | Path) -> None:
    """Top Hessian eigenvalue over dense training (mean ± std over seeds) and at the end of each IMP level."""
    experiment = _experiment(hessian)
    top = hessian.filter(pl.col("rank") == 1)
    has_imp = top.filter(pl.col("source") == "imp").height > 0
    fig, axes = plt.subplots(1, 2 if has_imp else 1, figsize=(11 if has_imp else 6.4, 4.2), squeeze=False)
    dense = (top.filter(pl.col("source") == "dense").group_by("step")
             .agg(*_mean_sd("eigenvalue"))
             .sort("step"))
    ax = axes[0][0]
    ax.errorbar(dense["step"], dense["m"], yerr=dense["sd"], marker="o", ms=4, capsize=2)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("top Hessian eigenvalue λ_max")
    ax.set_title("dense training", fontsize=10)
    if not dense.height:
        _empty(ax, "dense sharpness")
    if has_imp:
        ax = axes[0][1]
        chains = by_rewind(top.filter(pl.col("source") == "imp"))
        for part, ls, suffix in chains:
            lv = part.group_by("level").agg(pl.col("sparsity").mean(), *_mean_sd("eigenvalue")).sort("level")
            ax.errorbar(lv["level"], lv["m"], yerr=lv["sd"], marker="o", ms=4, capsize=2, color="C1", ls=ls,
                        label=suffix.removeprefix(", ") or None)
        if len(chains) > 1:
            _legend_outside(ax)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("IMP level (end of training, on the weights kept)")
        ax.set_title("IMP levels", fontsize=10)
    fig.suptitle(f"{experiment}: sharpness")
    _save(fig, out)


def prune_fraction(sweep: pl.DataFrame, out: str | Path) -> None:
    """Test-error barrier vs the fraction of a level's remaining weights pruned (mean ± std over chains), one
    colour per level with its sharpness, magnitude solid and random dashed; the tolerance dotted. Paul et al.
    2023's reading: the largest fraction still under the tolerance is what one level can prune, larger at a
    flatter level (smaller top eigenvalue), and larger by magnitude than at random."""
    experiment = _experiment(sweep)
    test = sweep.filter(pl.col("split") == "test")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, ((level,), g) in enumerate(test.sort("level").group_by("level", maintain_order=True)):
        label = (f"level {level} (sparsity {g['sparsity_before'].mean():.2f}, "
                 f"top eigenvalue {g['top_eigenvalue'].mean():.3g})")
        for method, ls in (("magnitude", "-"), ("random", "--")):
            m = g.filter(pl.col("method") == method).group_by("fraction").agg(*_mean_sd("barrier")).sort("fraction")
            if m.height:
                ax.errorbar(100 * m["fraction"], 100 * m["m"], yerr=100 * m["sd"], color=f"C{i}", ls=ls, marker="o",
                            ms=3, capsize=2, label=label if method == "magnitude" else None)
    if test.height:
        ax.axhline(100 * float(test["tolerance"][0]), color="k", ls=":", lw=0.8, label="tolerance (connected below)")
        ax.plot([], [], color="0.3", ls="--", label="random pruning among the remaining weights")
    else:
        _empty(ax, "fraction sweeps")
    ax.set_xlabel("the level's remaining weights pruned (%)")
    ax.set_ylabel("test error barrier (percentage points)\nlevel ℓ projected → pruned and retrained")
    ax.set_title(f"{experiment}: how much one level can prune")
    _legend_outside(ax)
    _save(fig, out)


def symlog_ticks(lo: float, hi: float, linthresh: float, most: int = 3) -> list[float]:
    """Ticks for a symlog axis over [lo, hi]: 0, and on each side that has values at most `most` powers of ten
    from the largest down, none inside the linear band (whose labels would print over each other)."""
    ticks = [0.0]
    for sign, end in ((1, hi), (-1, -lo)):
        if end > linthresh:
            top = math.floor(math.log10(end))
            ticks += [sign * 10.0 ** k for k in range(top, top - 2 * most, -2) if 10.0 ** k > 3 * linthresh]
    return sorted(ticks)


def spectral_density(spectrum: pl.DataFrame, out: str | Path) -> None:
    """Left: the training-loss Hessian's spectral density at θ* by stochastic Lanczos quadrature, each probe's
    nodes smoothed by a Gaussian (σ: 1% of the nodes' range), the mean over probes with a ±1 standard
    deviation band, on a log density axis (a bulk near 0 and a few outliers is the usual shape). Right: the
    cumulative spectral measure of each sweep anchor's displacement δ = θ_t − θ* (the fraction of |δ|² on
    eigenvalues up to λ) beside the density's own (a generic direction's), each with its mean curvature
    (δᵀHδ/R², the mean eigenvalue): the quadratic-well bound treats δ as generic, the well's own threshold uses
    δ's measure."""
    experiment = _experiment(spectrum)
    if "previous" in spectrum.columns:  # the quadratures one extension shorter: the error estimate, not drawn
        spectrum = spectrum.filter(~pl.col("previous").fill_null(False))
    probes = spectrum.filter(pl.col("vector") == "probe").sort("probe", "node")
    anchors = spectrum.filter(pl.col("vector") == "anchor").sort("kind", "burnin_step", "node")
    lo, hi = float(spectrum["eigenvalue"].min()), float(spectrum["eigenvalue"].max())
    sigma = max((hi - lo) / 100, 1e-12)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, 800)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.0))
    per_probe = []
    for _, g in probes.group_by("probe", maintain_order=True):
        x, w = g["eigenvalue"].to_numpy(), g["weight"].to_numpy()
        per_probe.append((w[:, None] * np.exp(-0.5 * ((grid[None] - x[:, None]) / sigma) ** 2)).sum(0)
                         / (sigma * np.sqrt(2 * np.pi)))
    density = np.array(per_probe)
    m, sd = density.mean(0), density.std(0)
    floor = m.max() * 1e-6
    left.plot(grid, np.maximum(m, floor), color="C0", label=f"mean of {len(density)} probes")
    left.fill_between(grid, np.maximum(m - sd, floor), np.maximum(m + sd, floor), color="C0", alpha=0.2,
                      label="±1 sd over probes")
    left.set_yscale("log")
    left.set_xlabel("Hessian eigenvalue λ")
    left.set_ylabel("spectral density")
    left.set_title(f"{experiment}: Hessian spectrum at θ* (D = {spectrum['num_params'][0]:,})", fontsize=10)
    _legend_under(left)
    cdf = lambda x, w: (np.sort(x), np.cumsum(w[np.argsort(x)]))
    x, w = probes["eigenvalue"].to_numpy(), probes["weight"].to_numpy() / probes["probe"].n_unique()
    right.step(*cdf(x, w), where="post", color="0.3", ls="--",
               label=f"the density (a generic direction), mean curvature {float(x @ w):.3g}")
    for i, ((kind, t), g) in enumerate(anchors.group_by("kind", "burnin_step", maintain_order=True)):
        if kind == "lottery":
            continue  # its anchor is θ_0, the random subspaces' one
        x, w = g["eigenvalue"].to_numpy(), g["weight"].to_numpy()
        right.step(*cdf(x, w), where="post", color=f"C{i + 1}",
                   label=f"δ from {_anchor_label(kind, t)}, R = {g['distance'][0]:.3g}, δᵀHδ/R² = {float(x @ w):.3g}")
    linthresh = max(abs(lo), abs(hi)) * 1e-4
    right.set_xscale("symlog", linthresh=linthresh)
    right.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(symlog_ticks(lo, hi, linthresh)))
    right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    right.set_xlabel("Hessian eigenvalue λ")
    right.set_ylabel("fraction of |δ|² on eigenvalues ≤ λ")
    right.set_title("where each anchor's displacement lies", fontsize=10)
    _legend_under(right)
    _save(fig, out)


def scores(table: pl.DataFrame, out: str | Path) -> None:
    """The distribution of EL2N at each scored checkpoint, and GraNd against EL2N at the last one."""
    experiment = _experiment(table)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.0))
    steps = sorted(set(table["step"].to_list()))
    for step in steps:
        left.hist(table.filter(pl.col("step") == step)["el2n"], bins=40, histtype="step", label=f"step {step}")
    left.set_xlabel("EL2N (mean over seeds)")
    left.set_ylabel("training examples")
    _legend_under(left, ncol=3)
    if steps:
        last = table.filter(pl.col("step") == steps[-1])
        right.scatter(last["el2n"], last["grand"], s=3, alpha=0.4)
        right.set_title(f"step {steps[-1]}", fontsize=10)
    right.set_xlabel("EL2N")
    right.set_ylabel("GraNd")
    fig.suptitle(f"{experiment}: data difficulty")
    _save(fig, out)


def train_curves(train: pl.DataFrame, out: str | Path) -> None:
    """The dense runs' loss and accuracy over training, train and test split, mean ± std over seeds (log
    step axis, with step 0 in its linear band): what every stage downstream starts from."""
    experiment = _experiment(train)
    rows = train.filter(~pl.col("diverged").fill_null(False))
    fig, axes = _grid(2, width=4.8)
    for ax, (column, label, scale) in zip(axes, (("loss", "loss", 1.0), ("accuracy", "accuracy (%)", 100.0))):
        for i, split in enumerate(("train", "test")):
            s = rows.filter(pl.col("split") == split).group_by("step").agg(*_mean_sd(column)).sort("step")
            if s.height:
                ax.plot(s["step"], scale * s["m"], color=f"C{i}", label=f"{split} split")
                ax.fill_between(s["step"], scale * (s["m"] - s["sd"]), scale * (s["m"] + s["sd"]), color=f"C{i}",
                                alpha=0.2)
        ax.set_xscale("symlog", linthresh=max(1, int(rows["step"].filter(rows["step"] > 0).min() or 1)))
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    if not rows.height:
        _empty(axes[0], "dense runs that finished")
    seeds = rows["seed"].n_unique()
    fig.suptitle(f"{experiment}: dense training ({seeds} seed{'s' * (seeds != 1)}; band ±1 sd)")
    _legend_below(fig, axes, ncol=2)
    _save(fig, out)


DRAW = {"train_curves": train_curves, "imp_accuracy": imp_accuracy, "imp_early_stop": imp_early_stop,
        "imp_barrier": barrier_vs_level, "prune_fraction": prune_fraction, "subspace_success": subspace_success,
        "dstar_burnin": dstar_burnin, "imp_dstar": imp_dstar, "sharpness": sharpness,
        "spectral_density": spectral_density, "scores": scores}


def render(name: str, tables: dict[str, pl.DataFrame], out: str | Path) -> None:
    """Draw figure `name` from its tables (schema.FIGURE_TABLES; a missing one is empty). With no rows in any
    of them (every job behind it skipped: a diverged dense run), a figure that says so, not a broken one."""
    frames = [tables.get(t, pl.DataFrame()) for t in schema.FIGURE_TABLES[name]]
    if not any(f.height for f in frames):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{name}: no rows to draw\n(the jobs behind it were skipped: `sublevel summary` says why)",
                ha="center", va="center", transform=ax.transAxes, color="0.4")
        return _save(fig, out)
    DRAW[name](*frames, out)
