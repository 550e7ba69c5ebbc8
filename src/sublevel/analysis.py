"""Success probability and threshold training dimension (Larsen et al. 2022; Li et al. 2018).

P(d): the fraction of runs at dimension d whose final metric reached the sublevel set (accuracy >= ε, or
loss <= ε; a diverged run never does). d*(ε): the smallest d where P >= 1/2, interpolated linearly in log d
between the last d below 1/2 and the first at or above it, with a bootstrap interval from resampling seeds.
Its Gordon escape-theorem reading: a random d-dimensional subspace through θ_t meets the sublevel set once
d exceeds D − w², w² the squared Gaussian width of the set projected onto the sphere around θ_t, so
w² ≈ D − d*. d_int90 (Li et al.): the smallest tested d whose mean test accuracy reaches 90% of the dense
network's.

A sweep whose anchor θ_t already meets ε (a long burn-in reaches the sublevel set before any subspace step)
has P = 1 at every d without training: that is no threshold, so it is censored `anchor` and gets no d*; the
same for d_int90 when θ_t's own test accuracy already reaches 90% of the dense network's.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from sublevel.config import Threshold

KEYS = ["experiment", "kind", "burnin_step"]


def _hit(th: Threshold) -> pl.Expr:
    """Threshold.met over a frame's rows: the run's final metric in the set, and the run not diverged."""
    x = pl.col(th.metric)
    reached = x <= th.value if th.lower_is_better else x >= th.value
    return (reached & ~pl.col("diverged")).fill_null(False)


def _anchor(group: pl.DataFrame, metric: str) -> float | None:
    """θ_t's own value of `metric` for one sweep, or None where it was not evaluated: with runs anchored at
    several dense runs (subspace.anchor: per_run), the median over the runs' anchors, so that an anchor value
    inside the sublevel set means at least half the runs start in it (P >= 1/2 before any training)."""
    col = f"anchor_{metric}"
    if col not in group.columns or group[col].is_null().all():
        return None
    values = group.group_by("seed").agg(pl.col(col).first())[col].drop_nulls().to_numpy()
    lower = Threshold(metric, 0).lower_is_better  # of an even count, the middle value further from the set
    return float(np.quantile(values, 0.5, method="higher" if lower else "lower"))


def success(runs: pl.DataFrame, thresholds: list[Threshold]) -> pl.DataFrame:
    """Rows of the `success` table: P(d) per (experiment, kind, burnin_step, metric, threshold, d)."""
    parts = []
    for t in thresholds:
        parts.append(runs.with_columns(hit=_hit(t))
                     .group_by(*KEYS, "d")
                     .agg(pl.col("num_params").first(), pl.col("hit").mean().alias("p_success"),
                          pl.len().cast(pl.Int64).alias("n_runs"))
                     .with_columns(metric=pl.lit(t.metric), threshold=pl.lit(float(t.value))))
    return pl.concat(parts).sort(*KEYS, "metric", "threshold", "d")


def crossing(d: np.ndarray, p: np.ndarray) -> float:
    """d where P first reaches 1/2, interpolated in log d; d[0] if P >= 1/2 there already, nan if never."""
    above = np.flatnonzero(p >= 0.5)
    if not len(above):
        return math.nan
    i = above[0]
    if i == 0:
        return float(d[0])
    lo, hi = math.log(d[i - 1]), math.log(d[i])
    frac = (0.5 - p[i - 1]) / (p[i] - p[i - 1])
    return float(math.exp(lo + frac * (hi - lo)))


def bootstrap_interval(hits: np.ndarray, d: np.ndarray, samples: int, level: float, seed: int = 0):
    """Percentile interval of d* over seeds resampled with replacement. `hits` is [seeds, dims] (nan where a
    seed has no run at that d). Replicates where P never reaches 1/2 count as beyond the largest d."""
    rng = np.random.default_rng(seed)
    n = hits.shape[0]
    reps = []
    for _ in range(samples):
        pick = hits[rng.integers(0, n, n)]
        with np.errstate(invalid="ignore"):
            p = np.nanmean(pick, axis=0)
        ok = ~np.isnan(p)
        x = crossing(d[ok], p[ok])
        reps.append(math.inf if math.isnan(x) else x)
    # order statistics, not interpolation: replicates beyond the range are infinite
    lo = np.quantile(reps, (1 - level) / 2, method="lower")
    hi = np.quantile(reps, (1 + level) / 2, method="higher")
    finite = lambda x: float(x) if math.isfinite(x) else None  # None: beyond the largest d tested
    return finite(lo), finite(hi)


def dense_test_accuracy(train: pl.DataFrame) -> float:
    """The dense runs' final test accuracy, averaged over seeds: the reference a `relative` threshold scales."""
    final = train.filter((pl.col("split") == "test") & (pl.col("step") == pl.col("step").max().over("seed")))
    return float(final["accuracy"].mean())


def thresholds(runs: pl.DataFrame, dense_test_accuracy: dict[str, float], thresholds: list[Threshold],
               samples: int = 1000, level: float = 0.95) -> pl.DataFrame:
    """Rows of the `threshold` table: d*(ε) with its interval, as a fraction of D, Gordon's w², and d_int90."""
    rows = []
    for key, group in runs.group_by(*KEYS, maintain_order=True):
        experiment, kind, t = key
        D = int(group["num_params"][0])
        dims = np.array(sorted(set(group["d"].to_list())), dtype=float)
        mean_test = group.group_by("d").agg(pl.col("test_accuracy").mean()).sort("d")
        target = 0.9 * dense_test_accuracy.get(experiment, math.nan)
        reach = mean_test.filter(pl.col("test_accuracy") >= target)["d"]
        trivial90 = Threshold("test_accuracy", target).met(_anchor(group, "test_accuracy"))
        d_int90 = int(reach.min()) if reach.len() and not trivial90 else None
        seeds = sorted(set(group["seed"].to_list()))
        for th in thresholds:
            g = group.with_columns(hit=_hit(th).cast(pl.Float64))
            hits = np.full((len(seeds), len(dims)), np.nan)
            for s, dd, h in g.select("seed", "d", "hit").iter_rows():
                hits[seeds.index(s), np.searchsorted(dims, dd)] = h
            with np.errstate(invalid="ignore"):
                p = np.nanmean(hits, axis=0)
            at_anchor = _anchor(group, th.metric)
            if th.met(at_anchor):  # in the set before any training: no threshold
                d_star, (lo, hi), censored = math.nan, (None, None), "anchor"
            else:
                d_star = crossing(dims, p)
                lo, hi = bootstrap_interval(hits, dims, samples, level)
                censored = "above" if math.isnan(d_star) else ("below" if d_star == dims[0] else "none")
            found = not math.isnan(d_star)
            rows.append(dict(experiment=experiment, kind=kind, burnin_step=int(t), metric=th.metric,
                             threshold=float(th.value), num_params=D, n_seeds=len(seeds),
                             d_star=d_star if found else None, d_star_lo=lo, d_star_hi=hi,
                             d_star_fraction=d_star / D if found else None,
                             gordon_width_sq=D - d_star if found else None, censored=censored,
                             anchor_value=at_anchor, d_min=int(dims[0]), d_max=int(dims[-1]), d_int90=d_int90))
    return pl.DataFrame(rows)
