"""Masks: magnitude pruning (global or layerwise) and masks matched to another mask's per-layer counts.

A mask is a bool vector over θ ∈ R^D; True keeps a weight. Entries outside the prunable tensors (biases,
BatchNorm) are always True. "Sparsity" is the fraction of prunable weights removed.
"""

from __future__ import annotations

import math

import torch

from sublevel.models import Layout


def _slices(layout: Layout) -> list[slice]:
    """The prunable tensors' slices of θ, in layout order; the last one is the output layer."""
    return [slice(o, o + math.prod(s)) for s, o, p in zip(layout.shapes, layout.offsets, layout.prunable) if p]


def full_mask(layout: Layout) -> torch.Tensor:
    return torch.ones(layout.D, dtype=torch.bool)


def counts(mask: torch.Tensor, layout: Layout) -> list[int]:
    """Weights kept in each prunable tensor."""
    return [int(mask[s].sum()) for s in _slices(layout)]


def sparsity(mask: torch.Tensor, layout: Layout) -> tuple[float, int]:
    """(fraction of prunable weights removed, prunable weights remaining)."""
    kept = sum(counts(mask, layout))
    total = int(layout.prunable_mask().sum())
    return 1 - kept / total, kept


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask over `scores` keeping the `keep` largest among `alive` (stable: ties go to the lower index)."""
    out = torch.zeros_like(alive)
    if keep > 0:
        s = torch.where(alive, scores, torch.tensor(-math.inf, dtype=scores.dtype))
        order = torch.sort(s, descending=True, stable=True).indices
        out[order[:keep]] = True
    return out


def prune(weights: torch.Tensor, mask: torch.Tensor, layout: Layout, fraction: float, scope: str = "global",
          output_fraction: float | None = None) -> torch.Tensor:
    """One IMP step: remove `fraction` of the remaining prunable weights with the smallest |w|.

    global: one ranking over every prunable tensor; layerwise: each tensor loses `fraction` of what it has.
    `output_fraction` prunes the output layer (the last prunable tensor) at its own rate, on its own."""
    weights, mask = weights.detach().cpu().float(), mask.cpu()
    new = mask.clone()
    slices = _slices(layout)
    groups: list[tuple[list[slice], float]]
    if scope == "layerwise":
        groups = [([s], fraction) for s in slices]
        if output_fraction is not None:
            groups[-1] = ([slices[-1]], output_fraction)
    elif output_fraction is not None:
        groups = [(slices[:-1], fraction), ([slices[-1]], output_fraction)]
    else:
        groups = [(slices, fraction)]
    for group, rate in groups:
        if not group:
            continue
        idx = torch.cat([torch.arange(s.start, s.stop) for s in group])
        alive = mask[idx]
        keep = int(alive.sum()) - round(rate * int(alive.sum()))
        new[idx] = _keep_top(weights[idx].abs(), alive, keep)
    return new


def matched(scores: torch.Tensor, like: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A mask keeping, in each prunable tensor, as many weights as `like` does: those with the largest scores.

    Random pruning passes random scores, one-shot pruning |θ_T|, pruning at initialisation |θ_0|."""
    out = full_mask(layout)
    scores = scores.detach().cpu().float()
    for s, keep in zip(_slices(layout), counts(like, layout)):
        out[s] = _keep_top(scores[s], torch.ones(s.stop - s.start, dtype=torch.bool), keep)
    return out
