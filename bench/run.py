"""The benchmarks: throughput of the subspace sweep, dense training and IMP (`run`, JSON under bench/results/),
and their reports as markdown tables (`table`). A script of the source checkout, beside its harness:
    .venv/bin/python bench/run.py run --suite dense          # --help for the options
    .venv/bin/python bench/run.py table bench/results/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import harness as bench  # bench/harness.py, beside this script
from sublevel.runtime import COMPILE_MODES


def bench_run(args) -> None:
    from sublevel.runtime import pick_device, seed_everything

    device = pick_device(args.device)
    seed_everything(device=device)  # the settings a pipeline job trains under (deterministic kernels on CUDA)
    say = lambda line: print(line, flush=True)
    if args.suite == "subspace":
        report = bench.run(device, dims=args.dims, kinds=args.projections, runs=args.runs, steps=args.steps,
                           loop_steps=args.loop_steps, batch_size=args.batch_size, widths=args.widths, progress=say,
                           tf32=args.tf32, profile_steps=args.profile_steps, compile=args.compile)
    elif args.suite == "dense":
        report = bench.dense(device, steps=args.steps, batch_size=args.batch_size, progress=say,
                             variants=list(bench.DENSE_VARIANTS) if args.compile == "none" else ["fp32"],
                             compile=args.compile)
    else:
        report = bench.imp(device, runs=args.runs, steps=args.steps, batch_size=args.batch_size, widths=args.widths,
                           progress=say)
    out = args.out or bench.default_path(report, args.suite, args.compile)
    bench.write(report, out)
    print(f"wrote {out}\n\n{bench.markdown(report)}")


def bench_table(args) -> None:
    """The reports of the suites (`run`) as markdown tables; another script's JSON (bench/*.py) is named
    and left out."""
    tables = []
    for f in args.reports:
        report = json.loads(Path(f).read_text())
        if "device_name" in report and report.get("suite", "subspace") in bench.SUITES:
            tables.append(f"`{Path(f).name}`: " + bench.markdown(report))
        else:
            print(f"{f}: not a `bench/run.py run` report (suite {report.get('suite')!r}): left out", file=sys.stderr)
    print("\n\n".join(tables))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("run", help="throughput: subspace sweep (one run at a time vs batched), dense ResNet-20 "
                                     "images/s (fp32, channels_last, bf16), IMP runs alone vs together")
    s.add_argument("--suite", choices=["subspace", "dense", "imp"], default="subspace")
    s.add_argument("--device", default="auto")
    s.add_argument("--dims", type=int, nargs="+", default=[10, 100, 1000, 10000])
    s.add_argument("--projections", nargs="+", default=["fastfood", "dense"], choices=["fastfood", "dense"])
    s.add_argument("--runs", type=int, default=256,
                   help="runs trained together (split if they do not fit); imp suite: try 8")
    s.add_argument("--steps", type=int, default=100, help="timed steps of the batched runs")
    s.add_argument("--loop-steps", type=int, default=100, help="timed steps of the one-run loop")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--widths", type=int, nargs="+", default=[300, 100], help="MLP widths (LeNet-300-100)")
    s.add_argument("--tf32", action="store_true", help="subspace suite: TensorFloat-32 matmuls on CUDA")
    s.add_argument("--compile", default="none", choices=COMPILE_MODES,
                   help="torch.compile mode: subspace suite, the batched step (the config's subspace.compile); "
                        "dense suite, fp32 and channels_last+bf16 compiled beside eager fp32 (train.compile)")
    s.add_argument("--profile-steps", type=int, default=0,
                   help="subspace suite: profile the ceiling and Fastfood at the largest d for this many steps")
    s.add_argument("--out", help="JSON to write (default bench/results/<device>-<date>.json)")
    s.set_defaults(func=bench_run)

    s = sub.add_parser("table", help="`run` JSON reports as docs/benchmark-tables.md's markdown tables")
    s.add_argument("reports", nargs="+", help="bench/results/*.json")
    s.set_defaults(func=bench_table)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
