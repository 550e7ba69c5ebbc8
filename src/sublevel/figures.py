"""Figures from the results tables (matplotlib, Agg): what a reader checks first."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from sublevel import storage  # noqa: E402

STYLE = {"imp": ("IMP (rewound ticket)", "C0", "o"), "random_prune": ("random pruning", "C1", "s"),
         "random_reinit": ("random reinit", "C2", "^"), "oneshot": ("one-shot magnitude", "C3", "v"),
         "init_magnitude": ("magnitude at init", "C4", "D")}


def _save(fig, path: str | Path) -> None:
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def imp_accuracy(imp: pl.DataFrame, out: str | Path) -> None:
    """Test accuracy vs weights remaining (log x), mean ± std over seeds, IMP and each baseline."""
    experiment = imp["experiment"][0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    dense = imp.filter((pl.col("method") == "imp") & (pl.col("level") == 0))["test_accuracy"].mean()
    stats = (imp.group_by("method", "level")
             .agg(pl.col("remaining").mean(), pl.col("prunable").first(), pl.col("test_accuracy").mean().alias("acc"),
                  pl.col("test_accuracy").std().fill_null(0).alias("sd"))
             .sort("method", "level"))
    for method, (label, color, marker) in STYLE.items():
        s = stats.filter(pl.col("method") == method)
        if s.height:
            pct = 100 * s["remaining"] / s["prunable"]
            ax.errorbar(pct, s["acc"], yerr=s["sd"], label=label, color=color, marker=marker, ms=4, capsize=2)
    ax.axhline(dense, color="k", ls=":", lw=1, label="dense")
    ax.set_xscale("log")
    ticks = sorted(set((100 * stats["remaining"] / stats["prunable"]).round(1).to_list()), reverse=True)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.invert_xaxis()
    ax.set_xlabel("prunable weights remaining (%)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{experiment}: accuracy vs sparsity")
    ax.legend(fontsize=8)
    _save(fig, out)


def barrier_vs_level(barrier: pl.DataFrame, out: str | Path) -> None:
    """Error barrier (test split) vs IMP level: instability of the rewind point and successive levels."""
    experiment = barrier["experiment"][0] if barrier.height else ""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    test = barrier.filter(pl.col("split") == "test")
    labels = {"instability": "instability (two data orders)", "imp_successive": "level ℓ−1 pruned → level ℓ"}
    for kind, label in labels.items():
        s = (test.filter(pl.col("kind") == kind).group_by("level")
             .agg(pl.col("barrier").mean().alias("b"), pl.col("barrier").std().fill_null(0).alias("sd"))
             .sort("level"))
        if s.height:
            ax.errorbar(s["level"], 100 * s["b"], yerr=100 * s["sd"], marker="o", ms=4, capsize=2, label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("IMP level")
    ax.set_ylabel("test error barrier (percentage points)")
    ax.set_title(f"{experiment}: linear mode connectivity")
    ax.legend(fontsize=8)
    _save(fig, out)
