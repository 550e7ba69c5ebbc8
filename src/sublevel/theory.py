"""The threshold training dimension predicted from the loss landscape (Larsen, Fort, Becker & Ganguli 2022).

Gordon's escape theorem, as Larsen et al. apply it: a random d-dimensional affine subspace through θ_t
meets the sublevel set S(ε) = {θ : L(θ) ≤ ε} with high probability once d + w²(S_t) > D, where S_t is S(ε)
projected onto the unit sphere around θ_t and w² its squared Gaussian width; so d*(ε) ≈ D − w²(S_t).

The quadratic well (their bound in terms of the Hessian spectrum and the distance to the minimum): around a
minimum θ* with Hessian eigenvalues λ_i, L ≈ L* + ½ (θ − θ*)ᵀ H (θ − θ*), S(ε) is the ellipsoid with
semi-axes r_i = √(2ε'/λ_i), ε' = ε − L*, centred R = ‖θ_t − θ*‖ from θ_t. Seen from θ_t, axis i spans the
angle whose sine is r_i / √(R² + r_i²), so S_t contains (to this order) the ellipsoid of those semi-axes on
the sphere, whose squared width is their sum of squares:

    w²(S_t) ≳ Σ_i r_i² / (R² + r_i²) = Σ_i 2ε' / (2ε' + λ_i R²)
    d*(ε)   ≲ D − w²  = Σ_{λ_i > 0} λ_i R² / (λ_i R² + 2ε')

(a direction with λ_i ≤ 0 leaves S unbounded along it: it adds 1 to w² and nothing to d*). Each direction
counts towards d* by how much its curvature over the distance, λ_i R² / 2, exceeds the loss budget ε'. The
bound is tight where every curved direction has r_i ≪ R (a sharp, distant well) and loose where r_i ≳ R: a
ball of radius r at distance R projects to a cap of angular radius arcsin(r/R), squared width D r²/R²,
against the bound's D r²/(R² + r²) (tests/test_theory.py measures both against exact subspace minima).

The bound takes θ_t's direction from θ* as generic. The quadratic model's own threshold uses the direction
it has: for a Gaussian P with d columns, P (PᵀHP)⁻¹ Pᵀ has the deterministic equivalent (H + κI)⁻¹ with κ
fixed by d = Σ_i λ_i / (λ_i + κ) (the sketched-inverse equivalent of random-projection theory), so the
well's minimum over the subspace θ_t + span(P) is

    ½ Σ_i δ_i² λ_i κ / (λ_i + κ),     δ = θ_t − θ* in H's eigenbasis,

and d*(ε) = Σ_i λ_i / (λ_i + κ*) at the κ* where that minimum equals ε' (0 where θ_t is already inside
the well's set). With δ spread evenly over the eigenbasis (δ_i² = R²/D) this gives the ball's exact D (1 −
r²/R²), and κ* = (2ε'/R²)(D/d) > 2ε'/R², the bound's κ: the bound is the upper one. A trajectory that moves
along flat directions leaves δ there, where the bound counts curvature δ never sees: d_star_well below
d_star_bound. This threshold is derived here, not in the paper; tests/test_theory.py measures both.

At a trained network the sum over D eigenvalues is a spectral-density integral, D ∫ ρ(λ) f(λ) dλ, read from
stochastic Lanczos quadrature (sublevel.hessian.slq); its error bar is the spread over probes. δ's own
spectral measure (Σ_i δ_i² f(λ_i) / R²) is one Lanczos quadrature started at δ / R.

Assumptions each prediction carries (the `theory` table's docs): θ* is the dense run's final network (the
subspace sweep's dense seed) and a minimum of the training loss (its gradient norm g is recorded; the
linear term gᵀδ, at most g·R, is left out of both predictions and of the well's loss at θ_t); the loss is
quadratic with that Hessian over the whole distance R (at initialisation it is not: the prediction is a
bound of the well's geometry, not of the path to it); the sublevel set is of the training loss, so only a
`train_loss` threshold is predicted; subspaces are uniformly random (random at θ_0 and burn-in at θ_t; the
lottery subspace and IMP tickets are not, and get no prediction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sublevel.config import Threshold
from sublevel.kinds import KINDS
from sublevel.hessian import Density, ridge_fraction

Z = 1.96  # the interval: mean ± Z standard errors over the probes


def curved_fraction(eigenvalues: np.ndarray, R: float, eps: float) -> np.ndarray:
    """f(λ) = λR² / (λR² + 2ε') = λ/(λ + 2ε'/R²) for λ > 0, else 0: each eigen-direction's share of the
    predicted d*."""
    return ridge_fraction(eigenvalues, 2.0 * eps / (R * R) if R > 0 else math.inf)


def dstar_bound(eigenvalues: np.ndarray, R: float, eps: float) -> float:
    """The quadratic well's bound on d*(ε) from an explicit spectrum (all D eigenvalues)."""
    return float(curved_fraction(np.asarray(eigenvalues, float), R, eps).sum())


def dstar_from_density(density: Density, R: float, eps: float) -> np.ndarray:
    """The bound per SLQ probe: D · Σ_k τ_k f(θ_k), [probes]."""
    return density.D * density.mean_of(lambda x: curved_fraction(x, R, eps))


@dataclass(frozen=True)
class Anchor:
    """A sweep's anchor θ_t as the well sees it: its distance R from θ*, the well's loss at it, L* + ½ δᵀHδ
    with δ = θ_t − θ* (beside the true loss at θ_t: how far the well is quadratic out there), and the
    quadrature of δ / R's spectral measure (nodes, weights), with the quadrature one extension shorter
    (previous_*; None: the same) from which the predictions' quadrature error is read."""
    distance: float
    quadratic_loss: float
    nodes: np.ndarray
    weights: np.ndarray
    previous_nodes: np.ndarray | None = None
    previous_weights: np.ndarray | None = None
    iterations: int | None = None
    change: float | None = None
    converged: bool | None = None

    def previous(self) -> "Anchor":
        """The anchor as the quadrature one extension shorter gives it."""
        if self.previous_nodes is None:
            return self
        return Anchor(self.distance, self.quadratic_loss, self.previous_nodes, self.previous_weights)


def anchor(hvp, delta, loss_min: float, iterations: int, max_iterations: int | None = None,
           tolerance: float | None = None) -> Anchor:
    """θ_t as the well sees it, from δ = θ_t − θ* (float64) and the Hessian-vector product at θ*: its
    quadrature `iterations` Lanczos steps long, or, with a tolerance, extended until it has converged
    (hessian.converged_quadrature). An anchor at θ* itself (a burn-in at the run's last step) has R = 0 and no
    direction: a unit mass at 0, which gives both predictions d* = 0."""
    from sublevel import hessian

    R = float(delta.norm())
    if R == 0.0:
        return Anchor(0.0, loss_min, np.zeros(1), np.ones(1), iterations=0, change=0.0, converged=True)
    quadratic = loss_min + 0.5 * float(delta @ hvp(delta))
    if tolerance is None:
        nodes, weights = hessian.quadrature(hvp, delta / R, iterations)
        return Anchor(R, quadratic, nodes, weights, iterations=len(nodes))
    q = hessian.converged_quadrature(hvp, delta / R, iterations, max_iterations or iterations, tolerance)
    return Anchor(R, quadratic, q.nodes, q.weights, q.previous_nodes, q.previous_weights, q.iterations, q.change,
                  q.converged)


def dimension_at(density: Density, kappa: float) -> np.ndarray:
    """d(κ) = Σ_i λ_i / (λ_i + κ) per probe (λ ≤ 0 counts 0): the subspace dimension whose sketch has ridge κ."""
    return density.D * density.mean_of(lambda x: ridge_fraction(x, kappa))


def well_kappa(nodes: np.ndarray, weights: np.ndarray, R: float, eps: float) -> float:
    """κ* where the well's subspace minimum ½ R² Σ_k w_k θ_k κ/(θ_k + κ) (δ's measure) equals ε'; inf when θ_t
    is inside the well's set already (that minimum is at most ½ δᵀHδ, reached as κ → ∞)."""
    residual = lambda k: 0.5 * R * R * k * float((weights * ridge_fraction(nodes, k)).sum())
    if 0.5 * R * R * float((weights * np.clip(nodes, 0.0, None)).sum()) <= eps:
        return math.inf
    lo, hi = 1e-30, 1e30  # residual rises with κ from 0: bisect in log κ
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if residual(mid) > eps else (mid, hi)
    return math.sqrt(lo * hi)


def interval(per_probe: np.ndarray, D: int) -> tuple[float, float | None, float | None]:
    """Mean over probes and mean ± Z standard errors, clipped to [0, D] (no interval from one probe)."""
    m = float(per_probe.mean())
    if len(per_probe) < 2:
        return m, None, None
    se = float(per_probe.std(ddof=1) / math.sqrt(len(per_probe)))
    return m, max(0.0, m - Z * se), min(float(D), m + Z * se)


NO_PREDICTION = dict(d_star_bound=None, d_star_bound_lo=None, d_star_bound_hi=None, width_sq=None,
                     d_star_well=None, d_star_well_lo=None, d_star_well_hi=None, d_star_bound_change=None,
                     d_star_well_change=None)


def _predictions(density: Density, anchor: Anchor, eps: float):
    """(bound, well) intervals over probes: each (mean, lo, hi)."""
    D = density.D
    bound = interval(dstar_from_density(density, anchor.distance, eps), D)
    kappa = well_kappa(anchor.nodes, anchor.weights, anchor.distance, eps)
    well = interval(np.zeros(len(density.nodes)) if math.isinf(kappa) else dimension_at(density, kappa), D)
    return bound, well


def predict(density: Density, anchor: Anchor, eps: float, previous: Density | None = None) -> dict:
    """Both predictions of d*(ε) for ε' = `eps` > 0, each with its interval over probes, and w² = D − bound.
    With the quadratures one extension shorter (`previous` density, the anchor's own previous_*), each
    prediction's change over that extension is its quadrature error: recorded, and added to both ends of
    its interval, which then covers the probes' spread and the quadrature's error."""
    D = density.D
    bound, well = _predictions(density, anchor, eps)
    pb, pw = _predictions(previous if previous is not None else density, anchor.previous(), eps)
    changes = abs(bound[0] - pb[0]), abs(well[0] - pw[0])

    def widened(value, change):
        m, lo, hi = value
        return (m, None if lo is None else max(0.0, lo - change), None if hi is None else min(float(D), hi + change))

    bound, well = widened(bound, changes[0]), widened(well, changes[1])
    return dict(d_star_bound=bound[0], d_star_bound_lo=bound[1], d_star_bound_hi=bound[2], width_sq=D - bound[0],
                d_star_well=well[0], d_star_well_lo=well[1], d_star_well_hi=well[2],
                d_star_bound_change=changes[0], d_star_well_change=changes[1])


def why_not(kind: str, th: Threshold, loss_min: float) -> str | None:
    """Why a (kind, threshold) has no prediction, or None when it has one."""
    if kind not in KINDS or not KINDS[kind].predicted:
        return f"{kind} subspaces are not uniformly random: Gordon's theorem does not apply"
    if th.metric != "train_loss":
        return f"the Hessian is of the training loss: a {th.metric} sublevel set has no quadratic-well prediction"
    if th.value <= loss_min:
        return f"ε = {th.value:g} is not above the minimum's own training loss {loss_min:.4g}: the well's set is empty"
    return None


def rows(experiment: str, seed: int, step: int, density: Density, anchors: dict[tuple[str, int], Anchor],
         loss_min: float, grad_norm: float, thresholds: list[Threshold], examples: int,
         iterations: int, previous: Density | None = None, converged: bool | None = None) -> list[dict]:
    """Rows of the `theory` table: one per sweep (kind, t) and threshold, predicted or with the reason not.
    `iterations`: the longest quadrature the density's probes used; `previous`: the density one extension
    shorter; `converged`: whether every probe's quadrature converged."""
    top = float(density.nodes.max())
    out = []
    for (kind, t), anchor in anchors.items():
        R = anchor.distance
        length = max(iterations, anchor.iterations or 0)
        settled = None if converged is None else bool(converged and anchor.converged is not False)
        for th in thresholds:
            note = why_not(kind, th, loss_min)
            eps = th.value - loss_min
            pred = predict(density, anchor, eps, previous) if note is None else NO_PREDICTION
            out.append(dict(experiment=experiment, kind=kind, burnin_step=int(t), metric=th.metric,
                            threshold=float(th.value), num_params=density.D, seed=seed, minimum_step=step,
                            distance=R, quadratic_anchor_loss=anchor.quadratic_loss, loss_min=loss_min,
                            grad_norm=grad_norm,
                            epsilon=eps if note is None else None, top_eigenvalue=top, **pred,
                            probes=len(density.nodes), iterations=length, converged=settled, examples=examples,
                            note=note))
    return out


def spectrum_rows(experiment: str, seed: int, step: int, probes: list, anchors: dict[tuple[str, int], Anchor],
                  loss_min: float, grad_norm: float, examples: int, D: int) -> list[dict]:
    """Rows of the `spectrum` table: every quadrature's nodes and weights (the density's probes, each a
    hessian.Quadrature, and each anchor's displacement), with its length, its last extension's change and
    whether it converged, the quadrature one extension shorter beside it (previous = true), and what the
    predictions need."""
    common = dict(experiment=experiment, seed=seed, step=step, num_params=D, examples=examples,
                  loss_min=loss_min, grad_norm=grad_norm)
    quadratures = []
    for p, q in enumerate(probes):
        which = dict(vector="probe", probe=p, kind=None, burnin_step=None, distance=None, quadratic_anchor_loss=None,
                     iterations=q.iterations, change=q.change, converged=q.converged)
        quadratures += [(dict(which, previous=False), q.nodes, q.weights),
                        (dict(which, previous=True), q.previous_nodes, q.previous_weights)]
    for (kind, t), a in anchors.items():
        which = dict(vector="anchor", probe=None, kind=kind, burnin_step=int(t), distance=a.distance,
                     quadratic_anchor_loss=a.quadratic_loss, iterations=a.iterations, change=a.change,
                     converged=a.converged)
        before = a.previous()
        quadratures += [(dict(which, previous=False), a.nodes, a.weights),
                        (dict(which, previous=True), before.nodes, before.weights)]
    return [dict(common, **which, node=k, eigenvalue=float(x), weight=float(w))
            for which, nodes, weights in quadratures for k, (x, w) in enumerate(zip(nodes, weights))]


@dataclass(frozen=True)
class Spectrum:
    """A `spectrum` table read back: the density, the anchors and the minimum they were measured at, and the
    density one extension shorter (the predictions' quadrature error)."""
    experiment: str
    seed: int
    step: int
    density: Density
    anchors: dict[tuple[str, int], Anchor]
    loss_min: float
    grad_norm: float
    examples: int
    iterations: int            # the longest probe quadrature
    previous: Density | None = None
    converged: bool | None = None

    @classmethod
    def from_rows(cls, rows: list[dict]) -> "Spectrum":
        """The inverse of spectrum_rows."""
        first = rows[0]
        per: dict[tuple, list[dict]] = {}
        for r in rows:
            key = ("probe", r["probe"]) if r["vector"] == "probe" else ("anchor", r["kind"], r["burnin_step"])
            per.setdefault((bool(r.get("previous")),) + key, []).append(r)
        for quad in per.values():
            quad.sort(key=lambda r: r["node"])
        column = lambda q, c: np.array([r[c] for r in q])
        D = first["num_params"]

        def density(previous: bool) -> Density | None:
            probes = [per[k] for k in sorted(k for k in per if k[:2] == (previous, "probe"))]
            if not probes:
                return None
            return Density.stack([(column(q, "eigenvalue"), column(q, "weight")) for q in probes], D)

        anchors = {}
        for k, q in per.items():
            if k[:2] != (False, "anchor"):
                continue
            before = per.get((True,) + k[1:])
            a = q[0]
            anchors[(k[2], int(k[3]))] = Anchor(
                a["distance"], a["quadratic_anchor_loss"], column(q, "eigenvalue"), column(q, "weight"),
                None if before is None else column(before, "eigenvalue"),
                None if before is None else column(before, "weight"),
                a["iterations"], a.get("change"), a.get("converged"))
        probes = [per[k][0] for k in per if k[:2] == (False, "probe")]
        converged = None if any(r.get("converged") is None for r in probes) else all(r["converged"] for r in probes)
        return cls(first["experiment"], first["seed"], first["step"], density(False), anchors, first["loss_min"],
                   first["grad_norm"], first["examples"], max(r["iterations"] for r in probes), density(True),
                   converged)

    def rows(self, thresholds: list[Threshold]) -> list[dict]:
        """The `theory` table's rows for these thresholds."""
        return rows(self.experiment, self.seed, self.step, self.density, self.anchors, self.loss_min,
                    self.grad_norm, thresholds, self.examples, self.iterations, self.previous, self.converged)
