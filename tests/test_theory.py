"""Known answers for the landscape theory: the spectral density of operators with a chosen spectrum, and the
threshold dimension of quadratic wells, measured with the project's random projections and d* estimator
(each run trained to its exact subspace minimum) against the quadratic-well bound and the well's own
threshold (sublevel.theory) and, for a ball, the exact closed form."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from sublevel import analysis, hessian, projections, theory
from sublevel.config import Threshold


def diagonal_operator(eigenvalues: np.ndarray, seed: int = 0):
    """v -> Q diag(λ) Qᵀ v for a random rotation Q: a symmetric operator with exactly these eigenvalues."""
    D = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    return (lambda v: Q @ (lam * (Q.T @ v))), Q


def test_slq_recovers_the_moments_and_mass_of_a_known_spectrum():
    rng = np.random.default_rng(1)
    lam = np.concatenate([rng.uniform(-0.05, 0.1, 540), rng.uniform(4.0, 9.0, 60)])  # a bulk and outliers
    hvp, _ = diagonal_operator(lam)
    density = hessian.slq(hvp, len(lam), iterations=30, probes=16, seed=3)
    assert np.allclose(density.weights.sum(-1), 1.0)
    for f in (lambda x: x, lambda x: x ** 2):
        per_probe = density.mean_of(f)
        se = per_probe.std(ddof=1) / math.sqrt(len(per_probe))
        assert abs(per_probe.mean() - f(lam).mean()) < 4 * se
    # the mass above 1 (the outliers' share, 10%) and the extreme eigenvalue, which Lanczos finds first
    mass = density.histogram(np.array([-1.0, 1.0, 20.0])).mean(0)
    assert mass[1] == pytest.approx(0.1, abs=0.03)
    assert density.nodes.max() == pytest.approx(lam.max(), rel=1e-6)


def test_slq_of_a_network_hessian_matches_its_explicit_eigenvalues():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    loss, t64, x64 = hessian.mean_loss(model, theta, x, y)
    H = torch.autograd.functional.hessian(lambda t: loss(t, x64, y), t64)
    lam = torch.linalg.eigvalsh(H).numpy()
    density = hessian.slq(hessian.hvp_operator(model, theta, x, y), len(theta), iterations=40, probes=24)
    R, eps = 2.0, 0.05
    exact = theory.dstar_bound(lam, R, eps)
    per_probe = theory.dstar_from_density(density, R, eps)
    se = per_probe.std(ddof=1) / math.sqrt(len(per_probe))
    assert abs(per_probe.mean() - exact) < 4 * se
    assert density.nodes.max() == pytest.approx(lam.max(), rel=1e-6)


def subspace_minimum(H: torch.Tensor, r: torch.Tensor, P: torch.Tensor) -> float:
    """min over w of ½ (r + P w)ᵀ H (r + P w): a quadratic trained to convergence in the subspace."""
    HP = H @ P
    w = torch.linalg.lstsq(P.T @ HP, -(HP.T @ r)[:, None], rcond=None).solution[:, 0]
    delta = r + P @ w
    return 0.5 * float(delta @ (H @ delta))


class Well:
    """½ δᵀHδ with H = Q diag(λ) Qᵀ, and an anchor at θ_t − θ* = R·Q·u for a unit u in H's eigenbasis: every
    random subspace of a sweep passes through the same anchor, as in a real sweep."""

    def __init__(self, eigenvalues: np.ndarray, direction: np.ndarray, R: float):
        self.lam = np.asarray(eigenvalues, float)
        self.hvp, Q = diagonal_operator(self.lam, seed=7)
        self.H = Q @ torch.diag(torch.as_tensor(self.lam)) @ Q.T
        u = torch.as_tensor(direction / np.linalg.norm(direction))
        self.R, self.r = R, R * (Q @ u)

    def measured(self, eps: float, dims: list[int], seeds: int, projection: str = "dense") -> dict:
        """The threshold row sublevel.analysis gives the sweep: each run's final loss its exact subspace
        minimum, success = loss ≤ ε."""
        D = len(self.lam)
        rows = []
        for d in dims:
            P = projections.make(projection, D, d, list(range(seeds))).columns().double()
            rows += [dict(experiment="well", kind="random", burnin_step=0, d=d, seed=s, num_params=D,
                          train_loss=subspace_minimum(self.H, self.r, P[s]), diverged=False, test_accuracy=0.0)
                     for s in range(seeds)]
        table = analysis.thresholds(pl.DataFrame(rows), {}, [Threshold("train_loss", eps)], samples=400)
        return table.row(0, named=True)

    def predicted(self, eps: float, probes: int = 64) -> dict:
        """Both predictions from an SLQ density and the anchor's quadrature, as the theory job computes them."""
        D = len(self.lam)
        density = hessian.slq(self.hvp, D, iterations=D, probes=probes)
        nodes, weights = hessian.quadrature(self.hvp, self.r / self.R, D)
        return theory.predict(density, theory.Anchor(self.R, 0.0, nodes, weights), eps)


def even(D: int, seed: int = 0) -> np.ndarray:
    """A random direction: spread evenly over the eigenbasis, as the bound assumes."""
    return np.random.default_rng(seed).standard_normal(D)


def test_a_sharp_distant_well_meets_both_predictions_to_within_one_dimension():
    """k stiff directions with r = √(2ε/λ) ≪ R and flat ones: the bound is tight, d* ≈ k."""
    k, D, R, eps = 24, 96, 1.0, 1e-3
    lam = np.r_[np.full(k, 10.0), np.zeros(D - k)]
    bound = theory.dstar_bound(lam, R, eps)
    assert k - 1 < bound < k
    well = Well(lam, even(D), R)
    row = well.measured(eps, dims=[16, 20, 22, 23, 24, 25, 26, 28, 32], seeds=40)
    assert row["censored"] == "none"
    assert abs(row["d_star"] - bound) < 1.0  # d is an integer: one dimension is the resolution
    assert abs(row["d_star"] - well.predicted(eps)["d_star_well"]) < 1.0


@pytest.mark.parametrize("projection", ["dense", "fastfood"])
def test_a_ball_gives_its_closed_form_and_the_bound_lies_above_it(projection):
    """A ball of radius r at distance R: the projected cap has w² = D r²/R², so d* = D (1 − r²/R²); the well's
    own threshold is that closed form, the bound D/(1 + r²/R²) the looser. Fastfood subspaces behave as
    uniform ones."""
    D, R, r = 128, 1.0, 0.5
    lam = np.full(D, 1.0)
    eps = 0.5 * r * r  # r² = 2ε/λ
    exact = D * (1 - r * r / (R * R))   # 96
    bound = theory.dstar_bound(lam, R, eps)  # 102.4
    assert bound == pytest.approx(D / (1 + r * r / (R * R)))
    well = Well(lam, even(D), R)
    assert well.predicted(eps)["d_star_well"] == pytest.approx(exact, rel=1e-6)
    row = well.measured(eps, dims=[80, 86, 90, 93, 96, 99, 102, 106, 112], seeds=40, projection=projection)
    # the transition's own width is O(1) here, and the crossing's interval covers the sampling error
    assert row["d_star_lo"] - 1.5 <= exact <= row["d_star_hi"] + 1.5
    assert row["d_star_hi"] < bound


def test_a_spread_spectrum_meets_the_well_and_stays_below_the_bound():
    """Curvatures log-uniform over four decades: the flattest curved directions have r_i ≳ R, where the bound
    overcounts; the well's own threshold is within the measured interval."""
    rng = np.random.default_rng(2)
    D, R, eps = 128, 1.0, 0.05
    lam = np.exp(rng.uniform(math.log(1e-3), math.log(10.0), D))
    well = Well(lam, even(D), R)
    row = well.measured(eps, dims=[16, 24, 32, 40, 44, 48, 52, 56, 64, 80], seeds=24)
    predicted = well.predicted(eps)
    assert row["d_star_lo"] <= predicted["d_star_well"] <= row["d_star_hi"]
    assert row["d_star_hi"] < theory.dstar_bound(lam, R, eps)


def test_an_anchor_displaced_along_flat_directions_needs_the_wells_own_threshold():
    """θ_t − θ* mostly along the flattest directions (as a trajectory's late steps are): the bound, blind to
    the direction, overshoots by a factor; the well's own threshold from θ_t's direction meets d*."""
    rng = np.random.default_rng(3)
    D, R, eps = 128, 2.0, 0.05
    lam = np.sort(np.exp(rng.uniform(math.log(1e-3), math.log(10.0), D)))
    direction = np.where(np.arange(D) < D // 2, 1.0, 0.1) * rng.standard_normal(D)  # the flat half dominates
    well = Well(lam, direction, R)
    row = well.measured(eps, dims=[8, 12, 16, 20, 24, 28, 32, 40, 48, 64], seeds=24)
    predicted = well.predicted(eps)
    assert row["d_star_lo"] <= predicted["d_star_well"] <= row["d_star_hi"]
    assert predicted["d_star_bound_lo"] > 1.4 * row["d_star_hi"]


def test_rows_predict_random_and_burnin_train_loss_thresholds_only():
    lam = np.r_[np.full(8, 5.0), np.zeros(24)]
    hvp, _ = diagonal_operator(lam)
    density = hessian.slq(hvp, len(lam), iterations=32, probes=4)
    x, w = hessian.quadrature(hvp, torch.ones(len(lam), dtype=torch.float64) / math.sqrt(len(lam)), 32)
    distances = {("random", 0): theory.Anchor(3.0, 22.6, x, w), ("burnin", 10): theory.Anchor(1.0, 2.6, x, w),
                 ("lottery", 0): theory.Anchor(3.0, 22.6, x, w)}
    ths = [Threshold("train_loss", 0.5), Threshold("train_accuracy", 0.9), Threshold("train_loss", 0.05)]
    rows = {(r["kind"], r["burnin_step"], r["metric"], r["threshold"]): r
            for r in theory.rows("e", 0, 100, density, distances, loss_min=0.1, grad_norm=1e-3, thresholds=ths,
                                 examples=50, iterations=32)}
    assert len(rows) == 9
    at_init, burnt = rows["random", 0, "train_loss", 0.5], rows["burnin", 10, "train_loss", 0.5]
    assert at_init["note"] is None and at_init["epsilon"] == pytest.approx(0.4)
    assert at_init["distance"] == 3.0 and at_init["quadratic_anchor_loss"] == 22.6
    # 8 directions of λR²/(λR² + 2ε') each, estimated over 4 probes: within the row's interval's error
    se = (at_init["d_star_bound_hi"] - at_init["d_star_bound_lo"]) / (2 * theory.Z)
    assert abs(at_init["d_star_bound"] - 8 * 45 / (45 + 0.8)) < 3 * se
    assert burnt["d_star_bound"] < at_init["d_star_bound"]  # closer to the minimum: fewer dimensions
    assert burnt["d_star_well"] < at_init["d_star_well"] <= at_init["d_star_bound_hi"]
    assert at_init["width_sq"] == pytest.approx(32 - at_init["d_star_bound"])
    assert "not uniformly random" in rows["lottery", 0, "train_loss", 0.5]["note"]
    assert "train_accuracy sublevel set" in rows["random", 0, "train_accuracy", 0.9]["note"]
    assert "not above the minimum's own training loss" in rows["random", 0, "train_loss", 0.05]["note"]
    assert all(r["d_star_bound"] is None and r["d_star_well"] is None for r in rows.values() if r["note"])


def test_predictions_from_the_stored_spectrum_equal_those_from_the_quadratures(tmp_path):
    """The spectrum job stores every quadrature (and each one extension shorter); the theory rule predicts from
    the table alone, the same rows, each interval widened by its prediction's change over the last extension."""
    from sublevel import storage

    rng = np.random.default_rng(2)
    lam = np.r_[10 ** rng.uniform(-4, 0.8, 300), np.zeros(100)]
    hvp, _ = diagonal_operator(lam)
    probes = hessian.converged_slq(hvp, len(lam), iterations=10, max_iterations=200, tolerance=0.01, probes=3)
    assert all(q.converged and q.iterations > 10 for q in probes)
    density = hessian.Density.stack([(q.nodes, q.weights) for q in probes], len(lam))
    previous = hessian.Density.stack([(q.previous_nodes, q.previous_weights) for q in probes], len(lam))
    delta = torch.ones(len(lam), dtype=torch.float64)
    a = theory.anchor(hvp, 3.0 * delta / delta.norm(), 0.1, 10, 200, 0.01)
    anchors = {("random", 0): a, ("burnin", 10): theory.anchor(hvp, delta / delta.norm(), 0.1, 10, 200, 0.01)}
    ths = [Threshold("train_loss", 0.5), Threshold("train_loss", 1.5), Threshold("test_accuracy", 0.5)]
    longest = max(q.iterations for q in probes)
    direct = theory.rows("e", 1, 100, density, anchors, 0.1, 1e-3, ths, examples=50, iterations=longest,
                         previous=previous, converged=True)
    path = tmp_path / "spectrum.parquet"
    storage.write_table("spectrum", theory.spectrum_rows("e", 1, 100, probes, anchors, 0.1, 1e-3, 50, len(lam)), path)
    stored = theory.Spectrum.from_rows(storage.read_frame([path]).to_dicts())
    assert stored.density.D == len(lam) and set(stored.anchors) == set(anchors) and stored.iterations == longest
    assert stored.rows(ths) == direct
    predicted = [r for r in direct if r["d_star_bound"] is not None]
    assert len(predicted) == 4 and all(r["converged"] for r in predicted)
    for r in predicted:  # the interval covers the probes' spread and the quadrature's change
        assert r["d_star_bound_change"] >= 0 and r["d_star_well_change"] >= 0
        plain = theory.interval(theory.dstar_from_density(density, r["distance"], r["epsilon"]), len(lam))
        assert r["d_star_bound_lo"] == pytest.approx(max(0.0, plain[1] - r["d_star_bound_change"]))
        assert r["d_star_bound_hi"] == pytest.approx(min(len(lam), plain[2] + r["d_star_bound_change"]))
    assert any(r["d_star_bound_change"] > 0 for r in predicted)


def test_an_anchor_at_the_minimum_itself_needs_no_dimension():
    """A burn-in at the dense run's last step: R = 0, and both predictions say d* = 0 (no NaN from δ/R)."""
    lam = np.r_[np.full(6, 2.0), np.zeros(10)]
    hvp, _ = diagonal_operator(lam)
    density = hessian.slq(hvp, len(lam), iterations=16, probes=3)
    at_min = theory.anchor(hvp, torch.zeros(len(lam), dtype=torch.float64), loss_min=0.1, iterations=16)
    delta = torch.ones(len(lam), dtype=torch.float64)
    away = theory.anchor(hvp, delta, loss_min=0.1, iterations=16)
    assert at_min.distance == 0.0 and at_min.quadratic_loss == 0.1
    assert away.distance == pytest.approx(4.0) and away.quadratic_loss == pytest.approx(0.1 + 0.5 * float(delta @ hvp(delta)))
    assert away.weights.sum() == pytest.approx(1.0)
    got = theory.predict(density, at_min, eps=0.2)
    assert got["d_star_bound"] == 0.0 and got["d_star_well"] == 0.0
    assert theory.predict(density, away, eps=0.2)["d_star_well"] > 0


def test_a_quadrature_is_extended_until_its_predictions_settle_on_a_known_spectrum():
    """A spectrum like a network Hessian's (zeros, a few negative, a bulk over six decades, outliers), whose
    exact spectral measure per probe is known: Σ_i (Qᵀv)_i² f(λ_i). At 20 and 40 Lanczos steps the ridge
    profile Σ λ/(λ + κ) the predictions read is >10% and >2% off somewhere on the κ grid; extended until one
    extension changes it by < 1%, it is within 1% everywhere, and it records its length and last change. A cap too short stops
    unconverged; a spectrum of few distinct values closes the Krylov space and is exact."""
    rng = np.random.default_rng(0)
    D = 1500
    lam = np.concatenate([np.zeros(300), np.full(100, -1e-3), 10 ** rng.uniform(-6, 0, D - 420),
                          rng.uniform(5, 20, 20)])
    hvp, Q = diagonal_operator(lam)
    for probe in range(2):
        v = hessian.start_vector(D, probe)
        measure = (Q.T @ v).numpy() ** 2

        def error(x, w):
            top = float(x.max())
            exact = hessian.ridge_profile(lam, measure, top)
            return float(np.max(np.abs(hessian.ridge_profile(x, w, top) - exact) / exact))

        assert error(*hessian.quadrature(hvp, v, 20)) > 0.1 and error(*hessian.quadrature(hvp, v, 40)) > 0.02
        q = hessian.converged_quadrature(hvp, v, iterations=40, max_iterations=400, tolerance=0.01)
        assert q.converged and 40 < q.iterations < 400 and (q.iterations - 40) % 10 == 0
        assert q.change <= 0.01 and error(q.nodes, q.weights) < 0.01
        assert len(q.previous_nodes) == q.iterations - 10 and error(q.previous_nodes, q.previous_weights) > q.change / 2
        capped = hessian.converged_quadrature(hvp, v, iterations=40, max_iterations=60, tolerance=0.01)
        assert not capped.converged and capped.iterations == 60 and capped.change > 0.01
    few = np.repeat([0.0, 1.0, 3.0, 7.0], 25)
    hvp_few, _ = diagonal_operator(few)
    exact = hessian.converged_quadrature(hvp_few, hessian.start_vector(100, 0), iterations=40, max_iterations=400,
                                         tolerance=1e-9)
    assert exact.converged and exact.change == 0.0 and exact.iterations == 4
    assert np.allclose(np.sort(exact.nodes), [0.0, 1.0, 3.0, 7.0], atol=1e-8)


def test_a_quadrature_as_long_as_the_dimension_is_exact():
    """D Lanczos steps span R^D: the quadrature is the exact measure, converged, whatever the tolerance."""
    lam = np.linspace(0.1, 5.0, 12)
    hvp, Q = diagonal_operator(lam)
    v = hessian.start_vector(12, 3)
    q = hessian.converged_quadrature(hvp, v, iterations=4, max_iterations=40, tolerance=1e-12, every=4)
    assert q.iterations == 12 and q.converged and q.change == 0.0
    assert np.allclose(np.sort(q.nodes), lam, atol=1e-8)
    assert np.allclose(q.weights[np.argsort(q.nodes)], (Q.T @ v).numpy() ** 2, atol=1e-8)
