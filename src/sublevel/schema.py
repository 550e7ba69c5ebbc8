"""Every Parquet table the pipeline writes: its columns, types and partition keys.

A job writes rows of exactly these columns (no more, no fewer) to its own file
under results/tables/<table>/<partition>=<value>/...; `sublevel query` exposes
each table as a DuckDB view of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Table:
    name: str
    schema: pa.Schema
    partitions: tuple[str, ...]
    doc: str


TABLES: dict[str, Table] = {}


def _table(name: str, partitions: tuple[str, ...], doc: str, *columns: tuple[str, pa.DataType]) -> Table:
    t = Table(name, pa.schema(list(columns)), partitions, doc)
    TABLES[name] = t
    return t


TRAIN = _table(
    "train", ("experiment", "seed"),
    "Dense training curves: loss and accuracy on the full train and test sets at each eval step.",
    ("experiment", pa.string()),
    ("dataset", pa.string()),
    ("model", pa.string()),
    ("num_params", pa.int64()),   # D, the length of the flat parameter vector
    ("seed", pa.int64()),         # initialisation seed
    ("data_seed", pa.int64()),    # data-order seed
    ("step", pa.int64()),
    ("epoch", pa.float64()),
    ("split", pa.string()),       # 'train' or 'test'
    ("loss", pa.float64()),
    ("accuracy", pa.float64()),
    ("lr", pa.float64()),
    ("diverged", pa.bool_()),     # the run hit a non-finite loss and stopped
    ("device", pa.string()),
)


IMP = _table(
    "imp", ("experiment", "rewind_step", "seed", "stage", "level"),   # stage: imp, or baselines (all methods of one job)
    "IMP levels and baselines at the end of each level's training.",
    ("experiment", pa.string()),
    ("dataset", pa.string()),
    ("model", pa.string()),
    ("seed", pa.int64()),
    ("method", pa.string()),      # imp, random_prune, random_reinit, oneshot, init_magnitude
    ("level", pa.int64()),        # 0 = dense
    ("sparsity", pa.float64()),   # fraction of prunable weights removed
    ("remaining", pa.int64()),    # prunable weights left
    ("prunable", pa.int64()),     # prunable weights of the dense network
    ("train_loss", pa.float64()),
    ("train_accuracy", pa.float64()),
    ("test_loss", pa.float64()),
    ("test_accuracy", pa.float64()),
    ("rewind_step", pa.int64()),
    ("diverged", pa.bool_()),
    # early stopping (imp.eval_every; null without it): the eval point of least validation loss
    ("early_stop_step", pa.int64()),
    ("early_stop_val_loss", pa.float64()),
    ("early_stop_test_accuracy", pa.float64()),
    ("matching_tolerance", pa.float64()),   # imp.matching_tolerance (null in files written before the column)
)


def matching(test_accuracy: float, dense_test_accuracy: float, tolerance: float) -> bool:
    """Whether an IMP level is matching: its test accuracy at least its chain's level 0's (the network trained
    from the same rewind point, unpruned) less imp.matching_tolerance. The one definition; sublevel.sql.matching
    is the same over the imp table."""
    return test_accuracy >= dense_test_accuracy - tolerance


BARRIER = _table(
    "barrier", ("experiment", "rewind_step", "seed", "kind", "level"),
    "Linear mode connectivity: error along (1-α)θa + αθb and its barrier.",
    ("experiment", pa.string()),
    ("seed", pa.int64()),
    ("kind", pa.string()),        # imp_successive (level ℓ-1 pruned vs level ℓ) or instability (two data orders)
    ("level", pa.int64()),
    ("rewind_step", pa.int64()),
    ("sparsity", pa.float64()),
    ("split", pa.string()),
    ("barrier", pa.float64()),    # max_α err(α) - ((1-α) err(0) + α err(1)), error as a fraction
    ("alpha", pa.list_(pa.float64())),
    ("error", pa.list_(pa.float64())),
    ("loss", pa.list_(pa.float64())),
    ("matching", pa.bool_()),     # the level's network is within the tolerance of the dense test accuracy
    ("test_accuracy", pa.float64()),
)


SUBSPACE = _table(
    "subspace", ("experiment", "kind", "burnin_step", "round", "d"),
    "Subspace training runs θ_t + P·w (final values), one file per d; IMP tickets as axial subspaces, one file.",
    ("experiment", pa.string()),
    ("dataset", pa.string()),
    ("model", pa.string()),
    ("num_params", pa.int64()),     # D
    ("kind", pa.string()),          # random, burnin, lottery, ticket
    ("burnin_step", pa.int64()),    # t of the anchor θ_t (the rewind step for tickets)
    ("d", pa.int64()),              # degrees of freedom trained
    ("seed", pa.int64()),           # projection and data-order seed (the chain seed for tickets)
    ("dense_seed", pa.int64()),     # the dense run whose θ_t anchored the run (its initialisation and burn-in)
    ("projection", pa.string()),    # dense, fastfood, pca, axial
    ("steps", pa.int64()),
    ("round", pa.int64()),          # 0: the configured dims; r > 0: added by adaptive refinement
    ("train_loss", pa.float64()),
    ("train_accuracy", pa.float64()),
    ("test_loss", pa.float64()),
    ("test_accuracy", pa.float64()),
    ("diverged", pa.bool_()),
    ("wall_seconds", pa.float64()),  # the batch's wall time divided by the runs trained in it
    ("anchor_train_loss", pa.float64()),  # θ_t itself (w = 0), evaluated as the runs are: a sublevel set the
    ("anchor_train_accuracy", pa.float64()),  # anchor is already in needs no training (null for tickets,
    ("anchor_test_loss", pa.float64()),  # whose rewind point is not evaluated)
    ("anchor_test_accuracy", pa.float64()),
)


SUCCESS = _table(
    "success", ("experiment",),
    "Success probability P(d): the fraction of runs whose final metric reached the sublevel set.",
    ("experiment", pa.string()),
    ("kind", pa.string()),
    ("burnin_step", pa.int64()),
    ("metric", pa.string()),        # train_accuracy, test_accuracy, train_loss or test_loss
    ("threshold", pa.float64()),    # ε: success is metric >= ε (accuracy) or <= ε (loss)
    ("d", pa.int64()),
    ("num_params", pa.int64()),
    ("p_success", pa.float64()),
    ("n_runs", pa.int64()),
)

THRESHOLD = _table(
    "threshold", ("experiment",),
    "Threshold training dimension d*(ε) with a bootstrap interval over seeds, and Li et al.'s d_int90.",
    ("experiment", pa.string()),
    ("kind", pa.string()),
    ("burnin_step", pa.int64()),
    ("metric", pa.string()),
    ("threshold", pa.float64()),
    ("num_params", pa.int64()),      # D
    ("n_seeds", pa.int64()),
    ("d_star", pa.float64()),        # smallest d with P >= 1/2, interpolated in log d; null: never reached
    ("d_star_lo", pa.float64()),     # bootstrap percentile interval; null hi: beyond the largest d tested
    ("d_star_hi", pa.float64()),
    ("d_star_fraction", pa.float64()),  # d* / D
    ("gordon_width_sq", pa.float64()),  # D - d*: the implied squared Gaussian width of the sublevel set
    ("censored", pa.string()),       # none, below (P >= 1/2 at the smallest d), above (never reached), anchor
    # (θ_t itself already meets ε: no d* is reported, since a success that needs no training is no threshold)
    ("anchor_value", pa.float64()),  # the metric at θ_t itself (null: not evaluated)
    ("d_min", pa.int64()),           # the tested range of d
    ("d_max", pa.int64()),
    ("d_int90", pa.int64()),         # smallest tested d with mean test accuracy >= 0.9 x dense; null: none,
    # or θ_t itself already has it
)


PRUNE_SWEEP = _table(
    "prune_sweep", ("experiment", "rewind_step", "seed", "level"),
    "How much one IMP level can prune (Paul et al. 2023): level l's network loses a fraction of its remaining "
    "weights (by magnitude or at random among them), is rewound and trained; the error barrier between l's "
    "network projected onto the new mask and the new network, and the loss the projection costs.",
    ("experiment", pa.string()),
    ("seed", pa.int64()),
    ("rewind_step", pa.int64()),
    ("level", pa.int64()),           # l: the network pruned further (0 = dense)
    ("method", pa.string()),         # magnitude, or random (among the remaining weights, magnitude's per-layer counts)
    ("fraction", pa.float64()),      # of l's remaining prunable weights removed
    ("sparsity_before", pa.float64()),
    ("sparsity", pa.float64()),      # of the new mask
    ("remaining", pa.int64()),
    ("split", pa.string()),
    ("barrier", pa.float64()),       # error barrier along θ_l ⊙ m -> the new network
    ("connected", pa.bool_()),       # barrier <= tolerance
    ("tolerance", pa.float64()),
    ("projected_error", pa.float64()),  # error of θ_l ⊙ m (the path's start)
    ("new_error", pa.float64()),     # error of the new network (its end)
    ("loss_rise", pa.float64()),     # train split: L(θ_l ⊙ m) − L(θ_l), measured; null on test
    ("loss_rise_quadratic", pa.float64()),  # gᵀΔ + ½ΔᵀHΔ at θ_l (H of the sparse network, float64 HVPs)
    ("top_eigenvalue", pa.float64()),  # θ_l's largest Hessian eigenvalue (Lanczos, sparse network)
    ("test_accuracy", pa.float64()),  # of the new network
    ("diverged", pa.bool_()),
)

HESSIAN = _table(
    "hessian", ("experiment", "seed", "source", "rewind_step", "level"),
    "Top eigenvalues of the training-loss Hessian (Lanczos on Hessian-vector products).",
    ("experiment", pa.string()),
    ("seed", pa.int64()),
    ("source", pa.string()),        # dense (a trajectory checkpoint) or imp (the end of an IMP level)
    ("level", pa.int64()),          # IMP level; null for dense checkpoints
    ("rewind_step", pa.int64()),    # the IMP chain's rewind step; null for dense checkpoints
    ("sparsity", pa.float64()),     # fraction of prunable weights pruned (0 for dense); H is restricted to the rest
    ("step", pa.int64()),
    ("rank", pa.int64()),           # 1 = the largest eigenvalue
    ("eigenvalue", pa.float64()),
    ("examples", pa.int64()),       # training examples in the loss (the first n of the training split)
    ("iterations", pa.int64()),
)

THEORY = _table(
    "theory", ("experiment",),
    "d*(ε) predicted from the Hessian's spectral density at the trained network and the anchor's displacement "
    "from it: Larsen et al. 2022's quadratic-well bound under Gordon's escape theorem, and the quadratic well's "
    "own threshold (sublevel.theory states both formulas and their assumptions): one row per sweep (kind, t) "
    "and threshold, null with a note where it does not apply.",
    ("experiment", pa.string()),
    ("kind", pa.string()),           # random or burnin (uniformly random subspaces); others get a note
    ("burnin_step", pa.int64()),     # t: the subspace's anchor θ_t
    ("metric", pa.string()),
    ("threshold", pa.float64()),     # ε, as in the threshold table
    ("num_params", pa.int64()),      # D
    ("seed", pa.int64()),            # the dense run: the sweep's dense seed
    ("minimum_step", pa.int64()),    # θ*: that run's final checkpoint, taken as the well's minimum
    ("distance", pa.float64()),      # R = ||θ_t − θ*||
    ("quadratic_anchor_loss", pa.float64()),  # the well's own loss at θ_t, L* + ½δᵀHδ (δ = θ_t − θ*):
    # far above the true loss at θ_t (the threshold table's anchor_value for train_loss) = not quadratic out there
    ("loss_min", pa.float64()),      # L*: the training loss at θ* over the examples the Hessian is of
    ("grad_norm", pa.float64()),     # ||∇L(θ*)||: how far θ* is from a critical point
    ("epsilon", pa.float64()),       # ε' = ε − L*, the well's loss budget; null: no prediction
    ("top_eigenvalue", pa.float64()),  # the largest quadrature node over the probes
    ("d_star_bound", pa.float64()),  # the well's bound Σ λR²/(λR² + 2ε') over the density, mean over probes
    ("d_star_bound_lo", pa.float64()),  # mean ± 1.96 standard errors over probes
    ("d_star_bound_hi", pa.float64()),
    ("width_sq", pa.float64()),      # D − d_star_bound: the squared Gaussian width the bound gives
    ("d_star_well", pa.float64()),   # the well's own threshold from θ_t's direction: Σ λ/(λ + κ*), ½ Σ δ²λκ*/(λ + κ*) = ε'
    ("d_star_well_lo", pa.float64()),
    ("d_star_well_hi", pa.float64()),
    ("d_star_bound_change", pa.float64()),  # how much the bound moved over the quadratures' last extension:
    ("d_star_well_change", pa.float64()),   # their error estimate, added to both ends of the interval
    ("probes", pa.int64()),
    ("iterations", pa.int64()),      # the longest quadrature used (Lanczos steps), probes and anchor
    ("converged", pa.bool_()),       # every quadrature used settled within theory.tolerance (null: fixed length)
    ("examples", pa.int64()),        # training examples in the loss (the first n of the training split)
    ("note", pa.string()),           # why a row has no prediction; null when it has one
)

SPECTRUM = _table(
    "spectrum", ("experiment",),
    "The training-loss Hessian at the trained network θ* by Lanczos quadrature, what the `theory` table's "
    "predictions are computed from: per start vector, nodes (Ritz values) and weights summing to 1, with "
    "vᵀf(H)v ≈ Σ weight·f(eigenvalue). Random probes give the spectral density (the mean of f over H's "
    "eigenvalues, averaged over probes; stochastic Lanczos quadrature); an anchor's displacement δ/R from θ* "
    "gives δ's own spectral measure. Each quadrature is extended until the predictions it gives have settled "
    "(hessian.converged_quadrature); its rows one extension shorter are kept beside it (previous = true).",
    ("experiment", pa.string()),
    ("seed", pa.int64()),            # the dense run: the sweep's dense seed
    ("step", pa.int64()),            # θ*: that run's final checkpoint
    ("vector", pa.string()),         # probe (a random unit vector) or anchor (δ/R, δ = θ_t − θ*)
    ("probe", pa.int64()),           # the probe's index; null for an anchor
    ("kind", pa.string()),           # an anchor's sweep kind (random, burnin, ...); null for a probe
    ("burnin_step", pa.int64()),     # an anchor's t; null for a probe
    ("distance", pa.float64()),      # an anchor's R = ||θ_t − θ*||; null for a probe
    ("quadratic_anchor_loss", pa.float64()),  # L* + ½δᵀHδ; null for a probe
    ("node", pa.int64()),            # 0 = the smallest
    ("eigenvalue", pa.float64()),
    ("weight", pa.float64()),
    ("num_params", pa.int64()),      # D
    ("examples", pa.int64()),        # training examples in the loss (the first n of the training split)
    ("iterations", pa.int64()),      # this quadrature's Lanczos steps (extended until it converged)
    ("change", pa.float64()),        # the ridge profile's largest relative change over its last extension
    ("converged", pa.bool_()),       # change <= theory.tolerance (or the Krylov space closed: exact)
    ("previous", pa.bool_()),        # true: the same quadrature one extension shorter (the error estimate)
    ("loss_min", pa.float64()),      # L*: the training loss at θ*
    ("grad_norm", pa.float64()),     # ||∇L(θ*)||
)

SCORES = _table(
    "scores", ("experiment",),
    "Per-example data difficulty at dense checkpoints, over the dense seeds (Paul et al. 2021).",
    ("experiment", pa.string()),
    ("step", pa.int64()),           # dense checkpoint
    ("example", pa.int64()),        # index into the training split
    ("label", pa.int64()),
    ("n_seeds", pa.int64()),
    ("el2n", pa.float64()),         # mean over seeds of ||softmax(f(x)) - onehot(y)||
    ("el2n_std", pa.float64()),
    ("grand", pa.float64()),        # mean over seeds of ||grad_theta loss(x, y)||
    ("grand_std", pa.float64()),
    ("el2n_rank", pa.int64()),      # 0 = the easiest example at this step
)

# Shipped with the package, not written by a job: the seed papers' published numbers (sublevel.reproduce reads
# targets.csv with these types; the catalog's `targets` and `reproduction` views are built from it).
TARGETS = Table("targets", pa.schema([
    ("target", pa.string()),          # unique id
    ("paper", pa.string()),
    ("source", pa.string()),          # where in the paper: table, figure, section
    ("preset", pa.string()),          # the config file that reproduces it
    ("experiment", pa.string()),      # the experiment in that preset whose rows measure it
    ("quantity", pa.string()),        # one of sublevel.reproduce.MEASURES
    ("kind", pa.string()),            # subspace kind, IMP method or barrier kind, as the quantity needs
    ("burnin_step", pa.int64()),      # a sweep's anchor t; for an IMP quantity the rewind step (empty: all)
    ("metric", pa.string()),
    ("threshold", pa.float64()),
    ("level", pa.int64()),
    ("published", pa.float64()),
    ("tolerance", pa.float64()),      # null: the paper gives no spread to judge by
    ("tolerance_type", pa.string()),  # ratio (max(m/p, p/m) <= tolerance), absolute (|m - p| <= tolerance),
    # at_least (m >= p - tolerance) or at_most (m <= p + tolerance): a claim's one-sided bound
    ("tolerance_basis", pa.string()),  # what the tolerance rests on: the paper's own spread or resolution
    ("note", pa.string()),
]), (), "The seed papers' published numbers, each with the experiment and quantity that reproduce it.")


@dataclass(frozen=True)
class Figure:
    tables: tuple[str, ...]     # the tables it is drawn from, in the order its function takes them
    sections: tuple[str, ...]   # the experiment's config sections it needs (an experiment without one has none;
    # "imp.fraction_sweep": a key inside a section)
    stage: str                  # the report's heading it goes under (REPORT_STAGES)


# The report's headings, in the order it shows them (Snakemake sorts categories by name): the summary first,
# then the figures by the stage they come from, each experiment a subheading
REPORT_STAGES = {"summary": "1 Summary", "dense": "2 Dense training", "imp": "3 Lottery tickets",
                 "subspace": "4 Subspaces and the threshold dimension", "landscape": "5 Sharpness, spectrum, data"}


# Every figure (drawn by sublevel.figures); the CLI's choices, the workflow's targets and the figure rule's
# inputs all come from here.
FIGURES: dict[str, Figure] = {
    "train_curves": Figure(("train",), (), "dense"),
    "imp_accuracy": Figure(("imp",), ("imp",), "imp"),
    "imp_early_stop": Figure(("imp",), ("imp.eval_every",), "imp"),
    "imp_barrier": Figure(("barrier",), ("imp",), "imp"),
    "prune_fraction": Figure(("prune_sweep",), ("imp.fraction_sweep",), "imp"),
    "subspace_success": Figure(("success", "theory"), ("subspace",), "subspace"),
    "dstar_burnin": Figure(("threshold", "theory"), ("subspace",), "subspace"),
    "imp_dstar": Figure(("imp", "threshold"), ("imp", "subspace"), "subspace"),
    "sharpness": Figure(("hessian",), ("hessian",), "landscape"),
    "spectral_density": Figure(("spectrum",), ("theory",), "landscape"),
    "scores": Figure(("scores",), ("scores",), "landscape"),
}
FIGURE_TABLES: dict[str, tuple[str, ...]] = {name: f.tables for name, f in FIGURES.items()}


def to_arrow(name: str, rows: list[dict]) -> pa.Table:
    """Rows -> Arrow table of `name`'s schema; a missing or unknown column is an error, not a silent null."""
    schema = TABLES[name].schema
    want = set(schema.names)
    for i, row in enumerate(rows):
        if set(row) != want:
            missing, extra = sorted(want - set(row)), sorted(set(row) - want)
            raise ValueError(f"table {name!r} row {i}: missing columns {missing}, unknown columns {extra}")
    return pa.Table.from_pylist(rows, schema=schema)
