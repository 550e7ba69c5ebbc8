"""An experiment's durations resolved to steps: its schedule, once the dataset's size is known.

Durations in the config are steps (`1000`, `1000it`) or epochs (`20ep`); an epoch is the number of full
batches in the training set (the loops drop the last, partial batch), so the same config gives the same
steps on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sublevel.errors import ConfigError


MAX_STEPS = 100_000_000   # steps of one training run: weeks of a GPU for the smallest network here
MAX_POINTS = 100_000      # evaluations or checkpoints of one run (a checkpoint stores all D parameters)


def parse_duration(value: int | str, steps_per_epoch: int) -> int:
    """1000 or '1000it' -> 1000 steps; '20ep' -> 20 * steps_per_epoch steps."""
    if isinstance(value, int):
        return value
    if value.endswith("ep"):
        return int(value[:-2]) * steps_per_epoch
    return int(value.removesuffix("it"))


@dataclass(frozen=True)
class Schedule:
    """An experiment's durations resolved to steps, once the dataset size is known."""

    steps_per_epoch: int
    total: int
    warmup: int
    milestones: tuple[int, ...]
    eval_every: int
    checkpoints: tuple[int, ...]
    rewinds: tuple[int, ...] = (0,)  # the IMP rewind steps, in the config's order

    @property
    def rewind(self) -> int:
        """The rewind step of an experiment (or an IMP job's spec) with one rewind point."""
        if len(self.rewinds) != 1:
            raise ValueError(f"{len(self.rewinds)} rewind points {list(self.rewinds)}: ask for Schedule.rewinds")
        return self.rewinds[0]

    @classmethod
    def resolve(cls, exp, n_train: int) -> "Schedule":
        """`exp` (a sublevel.config.Experiment, or a job's view of one) trained on `n_train` examples."""
        spe = n_train // exp.train.batch_size
        if spe < 1:
            raise ConfigError(f"config error at experiments.{exp.name}.train.batch_size: "
                              f"{exp.train.batch_size} exceeds the {n_train} training examples")
        total = parse_duration(exp.train.steps, spe)
        where = f"config error at experiments.{exp.name}"
        if total > MAX_STEPS:
            raise ConfigError(f"{where}.train.steps: {exp.train.steps} is {total:,} steps; at most {MAX_STEPS:,}")
        every_keys = [("train.eval_every", exp.train.eval_every), ("checkpoints.every", exp.checkpoints.every)]
        if exp.imp and exp.imp.eval_every is not None:
            every_keys.append(("imp.eval_every", exp.imp.eval_every))
        for key, value in every_keys:
            if (every := parse_duration(value, spe)) and total // every > MAX_POINTS:
                raise ConfigError(f"{where}.{key}: {value} makes {total // every:,} points over {total:,} steps; "
                                  f"at most {MAX_POINTS:,}")
        ck = exp.checkpoints
        steps = {0, total} | {parse_duration(s, spe) for s in ck.steps}
        if ck.log_spaced:
            steps |= {round(math.exp(i * math.log(total) / max(ck.log_spaced - 1, 1))) for i in range(ck.log_spaced)}
        every = parse_duration(ck.every, spe)
        if every:
            steps |= set(range(0, total + 1, every))
        beyond = sorted(s for s in steps if s > total)
        if beyond:
            raise ConfigError(f"config error at experiments.{exp.name}.checkpoints.steps: {beyond} beyond the "
                              f"last step {total}")
        rewinds = tuple(parse_duration(k, spe) for k in exp.imp.rewinds()) if exp.imp else (0,)
        for k, written in zip(rewinds, exp.imp.rewinds() if exp.imp else ()):
            if k >= total:
                raise ConfigError(f"config error at experiments.{exp.name}.imp.rewind: step {k} "
                                  f"({written}) is not before the end of training at step {total}")
        if len(set(rewinds)) < len(rewinds):
            raise ConfigError(f"config error at experiments.{exp.name}.imp.rewind: {list(exp.imp.rewinds())} "
                              f"name the same step twice (steps {list(rewinds)})")
        steps |= set(rewinds)  # the trajectory always holds the rewind points
        return cls(steps_per_epoch=spe, total=total, warmup=parse_duration(exp.train.warmup, spe),
                   milestones=tuple(sorted(parse_duration(m, spe) for m in exp.train.milestones)),
                   eval_every=parse_duration(exp.train.eval_every, spe), checkpoints=tuple(sorted(steps)),
                   rewinds=rewinds)

    def lr_factor(self, step: int, schedule: str, gamma: float) -> float:
        """Linear warmup from 0, then constant, step decay at milestones, or cosine to 0 at the end."""
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if schedule == "step":
            return warm * gamma ** sum(step >= m for m in self.milestones)
        if schedule == "cosine":
            span = max(self.total - self.warmup, 1)
            progress = min(max(step - self.warmup, 0) / span, 1.0)
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        return warm

    def lr(self, step: int, train) -> float:
        """The learning rate at `step` of a run trained by `train` (a TrainSpec)."""
        return train.lr * self.lr_factor(step, train.schedule, train.gamma)

    def eval_steps(self, checkpoints: bool) -> set[int]:
        """The steps a dense run evaluates the full train and test sets at: every eval_every, the last, and,
        with `checkpoints` (checkpoints.evaluate, which only the dense runs read), every checkpoint."""
        return (set(range(0, self.total + 1, self.eval_every)) | {self.total}
                | (set(self.checkpoints) if checkpoints else set()))
