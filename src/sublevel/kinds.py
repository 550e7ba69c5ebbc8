"""Subspace kinds: where a sweep's subspace is anchored and what spans it, one class each (Larsen et al. 2022).

A new kind is one class here, registered in KINDS, and its name in the config schema's subspace.kinds enum;
the sweeps, the refinement plans, the plan's anchors, the theory and the SQL views ask it. The IMP tickets
(`ticket` rows of the subspace table, axial subspaces read from the IMP levels) are not a sweep kind.
"""

from __future__ import annotations

from typing import ClassVar


class Kind:
    """A random subspace: θ_t + P·w with P drawn per run seed by subspace.projection, anchored at θ_0."""
    name: ClassVar[str]
    label: ClassVar[str]                  # how figures name it
    burnin: ClassVar[bool] = False        # anchored at each subspace.burnin step θ_t (else at θ_0)
    from_trajectory: ClassVar[bool] = False  # spanned by its anchor's trajectory, not drawn per run seed
    predicted: ClassVar[bool] = True      # Gordon's escape theorem predicts its d*: a uniformly random subspace

    def anchor_steps(self, burnin_steps: list[int]) -> list[int]:
        """The anchors θ_t one sweep each: the burn-in steps, or θ_0."""
        return list(burnin_steps) if self.burnin else [0]

    def max_dim(self, checkpoints: int) -> int | None:
        """The largest d the kind has below D, for a trajectory of `checkpoints` stored steps (None: up to D)."""
        return None

    def basis(self, params, d: int):
        """The subspace's directions [D, d] from the anchor's trajectory params [T, D]; None: drawn per run."""
        return None


class Random(Kind):
    name, label = "random", "random (at init)"


class Burnin(Kind):
    name, label, burnin = "burnin", "burn-in", True


class Lottery(Kind):
    """The top principal directions of the dense run's own trajectory, anchored at θ_0."""
    name, label, from_trajectory, predicted = "lottery", "lottery (trajectory PCA)", True, False

    def max_dim(self, checkpoints: int) -> int:
        """As many directions as the trajectory has displacements between checkpoints (T − 1 for T)."""
        return checkpoints - 1

    def basis(self, params, d: int):
        """The top-d right singular vectors [D, d] (orthonormal columns) of the successive displacements
        θ_{s_i+1} − θ_{s_i} between the trajectory's checkpoints [T, D], as Larsen et al.'s released code takes
        them (lottery_subspace.py: a displacement every 5 steps, the top singular vectors of their matrix). The
        cumulative displacements θ_s − θ_0 span the same space, but their top direction is nearly θ_T − θ_0
        itself, a d = 1 subspace that holds the trained network."""
        import torch

        M = (params[1:] - params[:-1]).double()
        _, _, Vh = torch.linalg.svd(M, full_matrices=False)
        return Vh[:d].T.float()


KINDS: dict[str, Kind] = {k.name: k() for k in (Random, Burnin, Lottery)}
PREDICTED = tuple(name for name, k in KINDS.items() if k.predicted)

