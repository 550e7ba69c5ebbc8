"""workflow/rules/train.smk: dense training with a checkpointed trajectory."""

from __future__ import annotations

from sublevel.commands.base import job, say, setup
from sublevel.errors import DataError


def train(args) -> None:
    import torch

    from sublevel import storage, trajectory, training

    exp, device, data = setup(args)
    data_seed = args.seed if args.data_seed is None else args.data_seed
    say(f"training {exp.name} seed={args.seed} data_seed={data_seed} on {device} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    writer = tensorboard(args.tensorboard)

    def log(step: int, scalars: dict) -> None:
        for name, value in scalars.items():
            writer.add_scalar(name, value, step)

    model, run = training.train(exp, data, args.seed, data_seed, device, progress=not args.quiet,
                                log=log if writer else None)
    if writer:
        writer.close()
    trajectory.write(args.trajectory, steps=run.steps, params=run.params, buffers=run.buffers,
                     attrs=training.trajectory_attrs(exp, model, run, args.seed, data_seed, device))
    storage.write_table("train", run.rows, args.table)
    last = {r["split"]: r for r in run.rows[-2:]}
    say(f"{'DIVERGED' if run.diverged else 'done'} in {run.seconds:.1f}s: {len(run.steps)} checkpoints, "
        + ", ".join(f"{s} loss {r['loss']:.4f} acc {r['accuracy']:.4f}" for s, r in last.items()))


def tensorboard(folder: str | None):
    """A TensorBoard writer of event files in `folder` (the config's `tensorboard: true`), or None."""
    if not folder:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise DataError(f"tensorboard: true needs the tensorboard package (pip install -e '.[tensorboard]'): {e}")
    return SummaryWriter(folder, flush_secs=10)


def register(sub) -> None:
    s = job(sub, "train", "dense training of one (experiment, seed) with a checkpointed trajectory", train,
            "train_dense")
    s.add_argument("--seed", type=int, required=True, help="initialisation seed")
    s.add_argument("--data-seed", type=int, help="data-order seed (default: the init seed)")
    s.add_argument("--trajectory", required=True, help="Zarr group to write")
    s.add_argument("--table", required=True, help="Parquet file of the `train` table to write")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--tensorboard", help="folder for TensorBoard event files of the evaluations as they are made")
