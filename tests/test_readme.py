"""A new user's first hour: the README's commands, as printed, in a fresh clone.

Each command below is asserted to appear in README.md verbatim before it runs, so the README and this test
cannot drift apart: editing one of its lines breaks this test until the test follows it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def clone(to: Path) -> Path:
    """The project as a clone of this tree gives it (the files git tracks, as they are now), committed in a
    repository of its own, the installed venv linked in as .venv."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, to / name)
    (to / ".venv").symlink_to(Path(sys.prefix))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(git + cmd, cwd=to, check=True, capture_output=True)
    return to


def typed(project: Path, line: str, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    """Run `line` in a shell in the project, as the README prints it (asserted to be there first)."""
    assert line in README, f"not in README.md as printed: {line}"
    run = subprocess.run(["bash", "-c", line], cwd=project, capture_output=True, text=True, timeout=1500,
                         env=env or os.environ)
    if ok:
        assert run.returncode == 0, f"{line}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def tracked_changes(project: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the default run alone is minutes on 2 cores (about 9 minutes in all)
def test_the_readme_from_a_fresh_clone(tmp_path):
    project = clone(tmp_path / "sublevel")
    venv = dict(os.environ, PATH=f"{project / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    venv.pop("SUBLEVEL_RESULTS", None)  # a user's shell: nothing set

    # the default config's plan prints one line per job and its command, none a screenful
    plan = subprocess.run([".venv/bin/snakemake", "-n", "-p"], cwd=project, capture_output=True, text=True,
                          timeout=600, env=venv)
    assert plan.returncode == 0, plan.stderr[-3000:]
    lines = (plan.stdout + plan.stderr).splitlines()
    assert max(map(len, lines)) <= 1000, max(lines, key=len)[:300]
    assert any(line.startswith("Job ") and "train_dense experiment=" in line for line in lines)

    run = typed(project, "make run", env=venv)
    assert "Subspace sweeps refine round by round" in run.stdout + run.stderr
    typed(project, ".venv/bin/sublevel summary", env=venv)
    typed(project, '.venv/bin/sublevel query "select * from train where diverged" --format csv', env=venv)
    views = typed(project, ".venv/bin/sublevel views", env=venv)
    assert "**" in views.stdout and "train.parquet" not in views.stdout  # a glob per table, not every file's path
    shell = '.venv/bin/duckdb -cmd "$(.venv/bin/sublevel views)"'  # the README's interactive shell, given a query
    answer = subprocess.run(["bash", "-c", shell + ' -c "select count(*) > 0 from train"'], cwd=project,
                            capture_output=True, text=True, timeout=300, env=venv)
    assert shell in README and answer.returncode == 0 and "true" in answer.stdout, answer.stderr

    # the smoke config beside the finished default run: its own root, the default run still finished
    typed(project, ".venv/bin/snakemake --cores all --configfile config/smoke.yaml", env=venv)
    smoke = typed(project, ".venv/bin/sublevel summary --results results/smoke", env=venv)
    assert "smoke" in smoke.stdout and "mnist1d_mlp" not in smoke.stdout
    default = typed(project, ".venv/bin/sublevel summary", env=venv)
    assert "mnist1d_mlp" in default.stdout and "| smoke" not in default.stdout
    again = subprocess.run([".venv/bin/snakemake", "-n"], cwd=project, capture_output=True, text=True, timeout=600,
                           env=venv)
    assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]

    # the reproduction page is printed; the committed docs/results.md stays as it is
    page = typed(project, ".venv/bin/sublevel reproduce --format markdown", env=venv)
    assert page.stdout.startswith("#") and "| " in page.stdout
    assert tracked_changes(project) == ""

    # DVC as the README prints it: the clone is a DVC project, and a repro after the run reruns no job
    assert all(re.search(rf"^{re.escape(line)}(\s|$)", README, re.MULTILINE)
               for line in ("source .venv/bin/activate", "dvc repro", "dvc status", "dvc metrics show"))
    repro = subprocess.run(["bash", "-c", "source .venv/bin/activate && dvc repro"], cwd=project,
                           capture_output=True, text=True, timeout=1200, env=venv)
    assert repro.returncode == 0, (repro.stdout + repro.stderr)[-3000:]
    assert not re.search(r"^Job \d+: ", repro.stdout + repro.stderr, re.MULTILINE)  # snakemake had nothing to do
    status = subprocess.run(["bash", "-c", "source .venv/bin/activate && dvc status"], cwd=project,
                            capture_output=True, text=True, timeout=600, env=venv)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout + status.stderr
    metrics = subprocess.run(["bash", "-c", "source .venv/bin/activate && dvc metrics show"], cwd=project,
                             capture_output=True, text=True, timeout=600, env=venv).stdout.splitlines()
    rows = [line.split()[0] for line in metrics[1:]]
    assert {"results/metrics/mnist1d_cnn.json", "results/metrics/mnist1d_mlp.json",
            "results/metrics/mnist1d_mlp/d_star-random@0.json"} <= set(rows)
    assert max(map(len, metrics)) < 400
    assert tracked_changes(project) == ""
