import math

import numpy as np
import polars as pl
import pytest

from sublevel import analysis
from sublevel.config import Threshold

TH = [Threshold("train_accuracy", 0.5)]


def runs(p_by_d: dict[int, float], seeds: int = 10, kind: str = "random", test_acc=None, D: int = 10_000):
    """Synthetic sweep rows: at each d the first round(p * seeds) seeds succeed."""
    rows = []
    for d, p in p_by_d.items():
        for s in range(seeds):
            ok = s < round(p * seeds)
            rows.append(dict(experiment="x", kind=kind, burnin_step=0, d=d, seed=s, num_params=D,
                             train_accuracy=0.9 if ok else 0.1, train_loss=0.1 if ok else 2.0, diverged=False,
                             test_accuracy=(test_acc or {}).get(d, 0.5)))
    return pl.DataFrame(rows)


def test_success_probability_per_d_and_threshold():
    df = runs({10: 0.0, 100: 0.3, 1000: 1.0})
    got = analysis.success(df, TH + [Threshold("train_loss", 0.5)])
    acc = got.filter(pl.col("metric") == "train_accuracy")
    assert acc["d"].to_list() == [10, 100, 1000] and acc["p_success"].to_list() == [0.0, 0.3, 1.0]
    assert acc["n_runs"].to_list() == [10, 10, 10]
    loss = got.filter(pl.col("metric") == "train_loss")  # loss <= 0.5 is the same set here
    assert loss["p_success"].to_list() == [0.0, 0.3, 1.0]


def test_diverged_runs_never_succeed():
    df = runs({10: 1.0}).with_columns(diverged=pl.col("seed") < 3)
    assert analysis.success(df, TH)["p_success"].to_list() == [0.7]


def test_crossing_interpolates_in_log_d():
    assert analysis.crossing(np.array([10.0, 1000.0]), np.array([0.0, 1.0])) == pytest.approx(100.0)
    assert analysis.crossing(np.array([10.0, 100.0]), np.array([0.25, 0.75])) == pytest.approx(10 ** 1.5)
    assert analysis.crossing(np.array([10.0, 100.0]), np.array([0.6, 1.0])) == 10.0
    assert math.isnan(analysis.crossing(np.array([10.0, 100.0]), np.array([0.0, 0.4])))


def test_threshold_dimension_and_gordon_width_and_d_int90():
    df = runs({10: 0.0, 100: 0.2, 1000: 0.8, 10_000: 1.0}, test_acc={10: 0.3, 100: 0.6, 1000: 0.75, 10_000: 0.8})
    t = analysis.thresholds(df, {"x": 0.8}, TH, samples=200).row(0, named=True)
    expect = math.exp(math.log(100) + 0.5 * (math.log(1000) - math.log(100)))  # p 0.2 -> 0.8, halfway
    assert t["d_star"] == pytest.approx(expect)
    assert t["d_star_fraction"] == pytest.approx(expect / 10_000)
    assert t["gordon_width_sq"] == pytest.approx(10_000 - expect)
    assert t["d_star_lo"] <= t["d_star"] <= t["d_star_hi"]
    assert t["censored"] == "none" and t["n_seeds"] == 10
    assert t["d_int90"] == 1000  # 0.75 >= 0.9 * 0.8 = 0.72 first at d = 1000


def test_censored_threshold_dimensions():
    never = analysis.thresholds(runs({10: 0.0, 100: 0.1}), {"x": 0.8}, TH, samples=50).row(0, named=True)
    assert never["d_star"] is None and never["censored"] == "above" and never["d_star_hi"] is None
    always = analysis.thresholds(runs({10: 1.0, 100: 1.0}), {"x": 0.8}, TH, samples=50).row(0, named=True)
    assert always["d_star"] == 10 and always["censored"] == "below"


def test_an_anchor_already_in_the_sublevel_set_is_censored_not_a_small_threshold():
    """A burn-in anchor with train accuracy 0.68 meets ε = 0.6 before any subspace step: P = 1 at every d says
    nothing about d, so no d* (censored `anchor`); ε = 0.7 it does not meet, and d* is measured as usual."""
    df = runs({2: 1.0, 8: 1.0}, test_acc={2: 0.75, 8: 0.75}).with_columns(
        anchor_train_accuracy=pl.lit(0.68), anchor_test_accuracy=pl.lit(0.74),
        train_accuracy=pl.when(pl.col("seed") < 5).then(0.72).otherwise(0.69))
    ths = [Threshold("train_accuracy", 0.6), Threshold("train_accuracy", 0.7)]
    got = analysis.thresholds(df, {"x": 0.8}, ths, samples=50)
    trivial, real = got.rows(named=True)
    assert trivial["censored"] == "anchor" and trivial["d_star"] is None and trivial["d_star_lo"] is None
    assert trivial["anchor_value"] == pytest.approx(0.68) and trivial["gordon_width_sq"] is None
    assert real["censored"] == "below" and real["d_star"] == 2  # P = 1/2 at d = 2 after training
    assert trivial["d_int90"] is None  # the anchor's 0.74 is already >= 0.9 x 0.8
    # sweeps written before the anchor was evaluated: no anchor, thresholds as before
    old = analysis.thresholds(runs({10: 1.0, 100: 1.0}), {"x": 0.8}, TH, samples=50).row(0, named=True)
    assert old["censored"] == "below" and old["anchor_value"] is None


def test_bootstrap_interval_covers_the_true_threshold():
    """Seeds succeed with P(d) = logistic(2 (log d - log 300)): the true d* is 300. The 90% interval over
    20 seeds should cover it in most of 60 simulated sweeps."""
    rng = np.random.default_rng(1)
    dims = np.array([30, 60, 120, 240, 480, 960, 1920], dtype=float)
    true_p = 1 / (1 + np.exp(-2 * (np.log(dims) - np.log(300))))
    covered = 0
    for _ in range(60):
        hits = (rng.random((20, len(dims))) < true_p).astype(float)
        lo, hi = analysis.bootstrap_interval(hits, dims, samples=300, level=0.9, seed=int(rng.integers(1 << 30)))
        covered += (lo or 0) <= 300 <= (hi or math.inf)
    assert covered / 60 >= 0.75


def test_the_success_predicate_reads_accuracy_upward_and_loss_downward():
    acc, loss = Threshold("test_accuracy", 0.5), Threshold("train_loss", 0.5)
    assert acc.met(0.5) and not acc.met(0.49) and loss.met(0.5) and not loss.met(0.51)
    assert not any(t.met(x) for t in (acc, loss) for x in (None, math.nan))  # unknown is outside the set
    frame = pl.DataFrame({"test_accuracy": [0.6, 0.6, None, 0.4], "diverged": [False, True, False, False]})
    # the column form (analysis.success) agrees with `met`, a diverged run failing whatever its value
    assert frame.select(analysis._hit(acc))["test_accuracy"].to_list() == [True, False, False, False]
