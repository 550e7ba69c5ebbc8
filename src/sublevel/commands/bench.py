"""The benchmarks: throughput of the subspace sweep, dense training and IMP, as JSON under bench/results/.

The harness is bench/harness.py, beside the benchmarks and their results, not in the library: these commands
load it from the source checkout the package runs from (an editable install)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COMPILE_MODES = ["none", "default", "reduce-overhead", "max-autotune-no-cudagraphs"]


def harness():
    """bench/harness.py of the checkout this package runs from, loaded as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "bench" / "harness.py"
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark harness at {path}: `sublevel bench` runs from a source checkout "
                                "installed with pip install -e .")
    if (module := sys.modules.get("sublevel_bench_harness")) is None:
        spec = importlib.util.spec_from_file_location("sublevel_bench_harness", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def bench(args) -> None:
    bench = harness()
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
    """The reports of `sublevel bench`'s suites as markdown tables; another script's JSON (bench/*.py) is named
    and left out."""
    bench = harness()
    tables = []
    for f in args.reports:
        report = json.loads(Path(f).read_text())
        if "device_name" in report and report.get("suite", "subspace") in bench.SUITES:
            tables.append(f"`{Path(f).name}`: " + bench.markdown(report))
        else:
            print(f"{f}: not a `sublevel bench` report (suite {report.get('suite')!r}): left out", file=sys.stderr)
    print("\n\n".join(tables))


def register(sub) -> None:
    s = sub.add_parser("bench", help="throughput: subspace sweep (one run at a time vs batched), dense ResNet-20 "
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
    s.set_defaults(func=bench)

    s = sub.add_parser("bench-table", help="bench JSON reports as the README's markdown tables")
    s.add_argument("reports", nargs="+", help="bench/results/*.json")
    s.set_defaults(func=bench_table)
