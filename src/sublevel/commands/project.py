"""The config's commands: validate it, and slice it per DVC stage."""

from __future__ import annotations

import json
from pathlib import Path


def check_config(args) -> None:
    from sublevel import config

    cfg = config.load(args.configfile)
    for name in cfg["experiments"]:
        exp = config.experiment(cfg, name)
        print(f"{name}: {exp.dataset} / {exp.model.name} {exp.model.kwargs() or ''}, seeds {list(exp.seeds)}, "
              f"steps {exp.train.steps}")


def stage_specs(args) -> None:
    """One JSON per DVC stage: what its jobs see of the config (DVC's dependencies instead of raw keys)."""
    from sublevel import config, stages, storage

    for stage, spec in stages.stage_specs(config.load(args.configfile)).items():
        with storage.atomic_path(Path(args.out) / f"{stage}.json") as tmp:
            tmp.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")


def register(sub) -> None:
    s = sub.add_parser("stage-specs", description="per DVC stage, what its jobs see of the config (JSON)")
    s.add_argument("configfile")
    s.add_argument("--out", required=True, help="directory for <stage>.json")
    s.set_defaults(func=stage_specs)

    s = sub.add_parser("check-config", help="validate a config file and summarise its experiments")
    s.add_argument("configfile")
    s.set_defaults(func=check_config)
