"""DVC round trip: repro the smoke config, push to a local remote, delete results, pull, same answers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sublevel import catalog, paths

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUERIES = {
    "imp": "select experiment, method, level, seed, sparsity, test_accuracy from imp order by all",
    "subspace": "select kind, burnin_step, d, seed, round, train_accuracy from subspace order by all",
    "threshold": "select kind, burnin_step, metric, threshold, d_star, censored from threshold order by all",
    "hessian": "select seed, source, level, step, rank, eigenvalue from hessian order by all",
}


def run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def answers(repo: Path) -> dict:
    return {name: catalog.query(sql, repo).rows() for name, sql in QUERIES.items()}


@pytest.mark.slow
def test_repro_push_pull_gives_the_same_answers_and_reruns_nothing(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("Snakefile", "workflow", "profiles", "src", "config", "dvc.yaml", "pyproject.toml", ".dvc",
                 ".dvcignore"):  # a DVC project as committed: no `dvc init`
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / item, **({"ignore": shutil.ignore_patterns(
            "cache", "tmp", "config.local")} if src.is_dir() and item == ".dvc" else {}))
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    del smoke["results"]  # the smoke run as the default config, in the root dvc.yaml's stages name
    monkeypatch.setenv(paths.RESULTS_VARIABLE, str(paths.DEFAULT_RESULTS))
    (repo / "config" / "config.yaml").write_text(yaml.safe_dump(smoke))
    (repo / ".gitignore").write_text("/results/logs/\n/results/jobs/\n.snakemake/\n/dvc_plots/\n")
    run(repo, "git", "init", "-q")
    git_commit = ("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m")
    run(repo, "git", "add", "-A")
    run(repo, *git_commit, "init")

    first = run(repo, "dvc", "repro")
    assert re.findall(r"Running stage '(\w+)'", first.stdout) == ["specs", "train", "imp", "subspace", "analysis"]
    assert "Using workflow specific profile profiles/default" in first.stdout + first.stderr
    want = answers(repo)
    assert all(want.values()), want
    metrics = run(repo, "dvc", "metrics", "show", "--json").stdout
    assert '"dense_test_accuracy"' in metrics and '"highest_matching_sparsity"' in metrics
    assert '"sweeps_reaching_half"' in metrics
    shown = run(repo, "dvc", "metrics", "show").stdout.splitlines()  # a row per experiment and sweep, a few columns
    rows = [line.split()[0] for line in shown[1:]]
    assert "results/metrics/smoke.json" in rows and "results/metrics/smoke/d_star-lottery@0.json" in rows
    assert max(map(len, shown)) < 400 and not [r for r in rows if "snakemake" in r]
    assert (repo / "results" / "plots" / "success.csv").read_text().startswith("series,experiment,kind,burnin_step")
    plots = run(repo, "dvc", "plots", "show", "--json").stdout  # drawn by the templates under .dvc/plots/
    assert '"field": "series"' in plots and '"type": "log"' in plots
    run(repo, "git", "add", "-A")
    run(repo, *git_commit, "first run")

    # nothing changed: nothing reruns; a key no job reads (threads) reruns no stage either
    assert "didn't change" in run(repo, "dvc", "repro").stdout
    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    cfg["threads"] = 2
    (repo / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    again = run(repo, "dvc", "repro")
    assert re.findall(r"Running stage '(\w+)'", again.stdout) == ["specs"]
    # a key only the analysis reads (a sublevel set): the analysis stage alone reruns, and inside it Snakemake
    # reruns the jobs that read it
    cfg["experiments"]["smoke"]["subspace"]["thresholds"] = [{"metric": "train_accuracy", "value": 0.2}]
    (repo / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    again = run(repo, "dvc", "repro")
    ran = re.findall(r"Running stage '(\w+)'", again.stdout)
    assert ran == ["specs", "analysis"] and "analyse_subspace experiment=smoke" in again.stderr
    changed = run(repo, "dvc", "params", "diff").stdout  # DVC names the config value that changed
    assert "results/specs/analysis.json" in changed and "thresholds" in changed and "train.json" not in changed
    assert catalog.query("select distinct threshold from threshold", repo).rows() == [(0.2,)]
    want["threshold"] = answers(repo)["threshold"]

    # push, delete every result and Snakemake's own records, pull: the same answers, and nothing to redo
    remote = tmp_path / "remote"
    run(repo, "dvc", "remote", "add", "-d", "local", str(remote))
    run(repo, "dvc", "push", "-q")
    shutil.rmtree(repo / "results")
    shutil.rmtree(repo / ".snakemake")
    assert catalog.query("select count(*) from imp", repo).item() == 0
    run(repo, "dvc", "pull", "-q")
    assert answers(repo) == want
    # what `make pull` does after the pull: restored files get their times in job order, nothing runs
    run(repo, sys.executable, "-m", "snakemake", "--touch", "--cores", "1")
    assert answers(repo) == want
    dry = run(repo, sys.executable, "-m", "snakemake", "-n", "--cores", "1")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout
