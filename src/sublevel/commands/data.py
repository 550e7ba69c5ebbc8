"""workflow/rules/data.smk: the dataset stores."""

from __future__ import annotations

import json


def prepare_data(args) -> None:
    from sublevel import datasets

    spec = json.loads(args.spec) if args.spec else {}
    datasets.prepare(args.dataset, args.out, root=spec.get("root", "data/raw"), download=spec.get("download", False),
                     mnist1d_samples=spec.get("mnist1d_samples", 5000))
    print(f"wrote {args.out}")


def register(sub) -> None:
    s = sub.add_parser("prepare-data", description="build a dataset's Zarr store")
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="Zarr store to write")
    s.add_argument("--spec", help="the config's `data` section as JSON")
    s.set_defaults(func=prepare_data)
