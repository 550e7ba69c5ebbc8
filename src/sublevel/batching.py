"""The training data as every loop draws it: per-epoch drop-last permutations seeded by the data seed, so the
batch at any step is a function of (data seed, step) alone and a run restarted at a rewind point replays the
dense run's batches; and the CIFAR-style augmentation, seeded per step."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def data_generator(data_seed: int, *stream: int) -> torch.Generator:
    """A generator for one (data_seed, epoch) or (data_seed, step, ...) stream: the data order at any step is
    a function of the step alone, so a run restarted at a rewind point replays the dense run's batches."""
    seed = int(np.random.SeedSequence([data_seed, *stream]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class EpochOrders:
    """The batch indices [R, B] at each step of R runs, run r drawing from its own data seed's permutation of
    the n training examples (batch_size per step, steps_per_epoch steps an epoch, the rest dropped)."""

    def __init__(self, data_seeds: list[int], n: int, batch_size: int, steps_per_epoch: int, device):
        self.seeds, self.n, self.bs, self.spe, self.device = list(data_seeds), n, batch_size, steps_per_epoch, device
        self._epoch, self._orders = None, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, within = divmod(step, self.spe)
        if epoch != self._epoch:
            self._orders = torch.stack([torch.randperm(self.n, generator=data_generator(s, epoch))
                                        for s in self.seeds]).to(self.device)
            self._epoch = epoch
        return self._orders[:, within * self.bs:(within + 1) * self.bs]

    def augmentation(self, step: int, run: int = 0) -> torch.Generator:
        """The generator of run `run`'s augmentation at `step`."""
        return data_generator(self.seeds[run], *divmod(step, self.spe), 1)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the zero-padded (4 px) image and a random horizontal flip, per example."""
    b, _, h, w = x.shape
    pad = F.pad(x, (4, 4, 4, 4))
    dy, dx = (torch.randint(0, 9, (b,), generator=gen).to(x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = pad[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
