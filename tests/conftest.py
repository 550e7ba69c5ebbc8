"""Shared fixtures: small data made in-process, the smoke experiment, the project root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sublevel import config, datasets, paths

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the benchmark scripts and their harness, as `python bench/run.py` sees them
BIN = Path(sys.executable).parent
# The tests' configs derive from smoke.yaml, which names its own results root: the paths the tests read, and the
# `sublevel` commands they start, resolve under it as a smoke run's do
paths.use_results(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())["results"])


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def make_project(path: Path) -> Path:
    """An empty sublevel project at `path`: the Snakefile and workflow/ that mark one."""
    (path / "Snakefile").write_text("")
    (path / "workflow").mkdir()
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path)


@pytest.fixture(scope="session")
def smoke_config() -> dict:
    return config.load(ROOT / "config" / "smoke.yaml")


@pytest.fixture(scope="session")
def mnist1d_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "mnist1d.zarr"
    datasets.prepare("mnist1d", out, mnist1d_samples=600)
    return out


@pytest.fixture(scope="session")
def mnist1d(mnist1d_store):
    return datasets.load(mnist1d_store)


def train_row(**over):
    """One row of the `train` table, with `over` replacing columns."""
    base = dict(experiment="e", dataset="mnist1d", model="mlp", num_params=10, seed=0, data_seed=0, step=0,
                epoch=0.0, split="train", loss=1.0, accuracy=0.5, lr=0.1, diverged=False, device="cpu")
    return {**base, **over}


def dense_trajectory(exp, data, tmp_path, seed=0):
    """A dense run of `exp` on the CPU, stored and read back as a trajectory."""
    from sublevel import training, trajectory

    _, run = training.train(exp, data, seed, seed, torch.device("cpu"), progress=False)
    path = tmp_path / f"traj{seed}.zarr"
    trajectory.write(path, steps=run.steps, params=run.params, buffers=run.buffers, attrs={})
    return trajectory.read(path)


def make_experiment(**overrides):
    """The smoke experiment with overrides, validated through the real schema."""
    with open(ROOT / "config" / "smoke.yaml") as f:
        raw = yaml.safe_load(f)
    exp = raw["experiments"]["smoke"]
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        if leaf:
            exp.setdefault(section, {})[leaf] = value
        elif value is None:  # drop a section
            exp.pop(section, None)
        else:
            exp[section] = value
    return config.experiment(config.validate(raw), "smoke")


def snakemake(workdir: Path, *args: str, configfile: Path | None = None,
              env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


JOB_LINE = re.compile(r"^Job \d+: (\w+) (.*)$", re.MULTILINE)  # every rule's message (common.smk's JOB_LINE)


def canon(wildcards: str) -> str:
    """Wildcards as "a=1, b=2", sorted by name: how a job line prints them, however they are written."""
    return ", ".join(sorted(w.strip() for w in wildcards.split(",") if w.strip()))


def jobs_of(run: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(rule, wildcards as canon() writes them) of every job a snakemake run ran (or with -n would run), in the
    order printed."""
    return [(m.group(1), canon(m.group(2))) for m in JOB_LINE.finditer(run.stdout + run.stderr)]


def rules_of(run: subprocess.CompletedProcess) -> list[str]:
    """The rule of every job a snakemake run ran (or with -n would run), one entry per job."""
    return [rule for rule, _ in jobs_of(run)]


def config_file(tmp_path: Path, **extra_experiments) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["experiments"].update(extra_experiments)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# Diverges within its first steps, before the step-5 checkpoint that its IMP rewind, burn-in sweep, sharpness
# and scores start from: each of those jobs records a skip (view `skipped`), and the run goes on
DIVERGING = {"dataset": "mnist1d", "model": {"name": "mlp", "widths": [16]}, "seeds": [0],
             "train": {"lr": 1.0e8, "batch_size": 32, "steps": 40}, "checkpoints": {"steps": [5]},
             "imp": {"levels": 1, "rewind": 5, "baselines": [], "instability": False, "alphas": 3},
             "subspace": {"kinds": ["burnin"], "dims": [2], "burnin": [5], "seeds": 1, "steps": 5, "batch_size": 32},
             "hessian": {"examples": 50, "iterations": 3, "top_k": 1}, "scores": {"steps": [5]},
             "theory": {"probes": 2, "iterations": 3}}
# Paul et al. 2022's data diet: steps 0..5 on the hardest half (by EL2N at step 5), then IMP from there;
# two chains, so each level job trains both seeds together from their own diet starts. 80 training examples
# held out for validation, whose loss every 10 steps gives each level its early-stopping point
DIET = {"dataset": "mnist1d", "model": {"name": "mlp", "widths": [16]}, "seeds": [0, 1], "validation": 80,
        "train": {"lr": 0.05, "batch_size": 32, "steps": 40}, "checkpoints": {"steps": [5]},
        "imp": {"levels": 1, "rewind": 5, "baselines": [], "instability": False, "alphas": 3, "eval_every": 10,
                "data_diet": {"keep": "hardest", "fraction": 0.5}},
        "scores": {"steps": [5]}}

# smoke's dense runs and its seed-0 chain, rewound to two points: the rewind-5 chain is smoke's own, row for row
# (test_workflow), and the rewind-0 chain the other point of one sweep over rewind steps
REWINDS = {"dataset": "mnist1d", "model": {"name": "mlp", "widths": [16]}, "seeds": [0],
           "train": {"lr": 0.05, "batch_size": 32, "steps": 40, "eval_every": 10},
           "checkpoints": {"log_spaced": 4, "steps": [5]},
           "imp": {"levels": 2, "rewind": [0, 5], "baselines": ["random_reinit"], "alphas": 5},
           "hessian": {"examples": 200, "iterations": 10, "top_k": 2, "steps": [5]}}


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """smoke.yaml plus a diverging experiment, a data-diet one and one with two rewind points, run once for the
    tests below. In two steps,
    as on a GPU machine without polars and duckdb: `compute_all` there (made unimportable here), then the rest.
    Tests that change results work on a copy (smoke_copy)."""
    tmp = tmp_path_factory.mktemp("smoke")
    work = tmp / "work"
    work.mkdir()
    cfg = config_file(tmp, blowup=DIVERGING, diet=DIET, rewinds=REWINDS)
    stubs = tmp / "no-analysis-packages"
    stubs.mkdir()
    for name in ("polars", "duckdb"):
        (stubs / f"{name}.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(stubs), os.environ.get("PYTHONPATH")])))
    compute = snakemake(work, "compute_all", configfile=cfg, env=env)
    assert compute.returncode == 0, compute.stderr[-3000:]
    assert all((work / paths.sweep_summary("smoke", kind, t)).is_file()  # every refinement round ran
               for kind, t in (("random", 0), ("burnin", 5), ("lottery", 0)))
    assert not (work / paths.table("threshold", experiment="smoke")).exists()
    done = snakemake(work, configfile=cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = set(rules_of(done))
    # compute_all left no network job undone: what remains only reads tables
    assert ran == {"analyse_subspace", "theory", "figure", "export", "reproduction", "all"}
    return work, cfg


@pytest.fixture
def smoke_copy(smoke_run, tmp_path):
    """A copy of the finished smoke run (results and Snakemake's records, times kept) to change freely."""
    work, cfg = smoke_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    return copy, cfg


def pytest_collection_modifyitems(items):
    """A test that needs the whole pipeline run (the smoke_run fixture, or a copy of it) is slow, marked or not."""
    for item in items:
        if {"smoke_run", "smoke_copy"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
