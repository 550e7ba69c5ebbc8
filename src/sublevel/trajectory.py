"""The dense trajectory in Zarr: θ at the checkpoint steps, the coordinate every later stage reads.

Group layout::

    trajectory.zarr/
        steps    int64 [T]       checkpoint steps (the coordinate of axis 0)
        params   float32 [T, D]  flat θ (see attrs.layout for names, shapes, offsets, prunable)
        buffers  float32 [T, B]  BatchNorm running statistics etc., not trained by gradient
        attrs: experiment, seed, data_seed, dataset, model, D, diverged, spec, layout, buffer_names
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from sublevel import storage


def write(path: str | Path, *, steps: list[int], params: list[np.ndarray], buffers: list[np.ndarray],
          attrs: dict) -> None:
    with storage.atomic_path(path) as tmp:
        group = zarr.open_group(tmp, mode="w", attributes=attrs)
        storage.create_array(group, "steps", data=np.asarray(steps, dtype=np.int64), dimension_names=["checkpoint"])
        storage.write_array(group, "params", np.stack(params).astype(np.float32))
        B = buffers[0].size if buffers else 0
        storage.write_array(group, "buffers", np.stack(buffers).astype(np.float32) if B else
                            np.zeros((len(steps), 0), np.float32))


@dataclass
class Stored:
    """A read-only handle: rows are read lazily, one checkpoint at a time."""

    path: Path
    steps: np.ndarray
    attrs: dict
    _group: object

    def params(self, step: int | None = None) -> np.ndarray:
        """θ at `step` (a stored checkpoint), or the whole [T, D] array."""
        index = slice(None) if step is None else self.index(step)
        return storage.read(self._group, "params", index, "trajectory")

    def buffers(self, step: int) -> np.ndarray:
        return storage.read(self._group, "buffers", self.index(step), "trajectory")

    def index(self, step: int) -> int:
        hits = np.flatnonzero(self.steps == step)
        if not len(hits) and self.attrs.get("diverged") and step > self.steps[-1]:
            raise storage.Skipped(f"the dense run {self.path} diverged after step {int(self.steps[-1])}, "
                                  f"before step {step}")
        if not len(hits):
            raise KeyError(f"step {step} is not a stored checkpoint of {self.path}; stored: {self.steps.tolist()}")
        return int(hits[0])


def read(path: str | Path) -> Stored:
    group = storage.open_group(path, "trajectory")
    return Stored(Path(path), storage.read(group, "steps", what="trajectory"), group.attrs.asdict(), group)
