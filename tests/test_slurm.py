"""The smoke config through a real SLURM cluster (one node on this machine: .ci/slurm-up.sh) gives the same
results as a local run, with only the jobs that run a network queued."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sublevel import catalog

ROOT = Path(__file__).resolve().parents[1]
# Jobs that run no network and take seconds: they run where Snakemake runs instead of waiting in the queue.
LOCAL_RULES = {"prepare_data", "refine_plan", "subspace_tickets", "sweep_summary", "analyse_subspace", "theory",
               "figure", "export", "reproduction"}
# of experiment smoke: the local run is the session's smoke run (conftest.smoke_run), whose config is
# smoke.yaml's with more experiments beside it; a job's result depends on its own experiment alone
QUERIES = {
    "train": "select experiment, seed, step, split, loss, accuracy from train",
    "imp": "select method, level, seed, sparsity, test_accuracy from imp",
    "subspace": "select kind, burnin_step, d, seed, round, train_loss from subspace",
    "threshold": "select kind, metric, d_star, censored from threshold",
    "theory": "select kind, burnin_step, metric, threshold, d_star_bound, d_star_well from theory",
}


def slurm_up() -> None:
    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("no SLURM on this machine; .ci/run installs slurm-wlm and munge")
        pytest.skip("no SLURM (apt install slurm-wlm munge; then .ci/slurm-up.sh as root)")
    up = subprocess.run(["bash", str(ROOT / ".ci" / "slurm-up.sh")], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    """Fails, with the queue's and the run's own account, before pytest's timeout would end it unexplained."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    try:
        return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                               str(work), "--configfile", str(ROOT / "config" / "smoke.yaml"), *args],
                              capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired as e:
        queue = subprocess.run(["squeue", "-o", "%i %j %T %r %M %C %m"], capture_output=True, text=True)
        nodes = subprocess.run(["sinfo", "-N", "-o", "%N %T %E %C %m"], capture_output=True, text=True)
        # the output so far comes as bytes even with text=True
        out, err = ((b or b"").decode(errors="replace") if not isinstance(b, str) else b for b in (e.stdout, e.stderr))
        pytest.fail(f"snakemake ran past {e.timeout} s\nsqueue:\n{queue.stdout}\nsinfo:\n{nodes.stdout}\n"
                    f"snakemake's output (last 3000 characters):\n{(out + err)[-3000:]}")


@pytest.mark.slow
def test_smoke_config_on_slurm_equals_a_local_run(tmp_path, smoke_run):
    slurm_up()
    local, _ = smoke_run
    cluster = tmp_path / "slurm"
    cluster.mkdir()
    # this one-node cluster keeps no accounting (no slurmdbd), so job states come from squeue, not sacct
    res = snakemake(cluster, "--workflow-profile", str(ROOT / "profiles" / "slurm"), "--jobs", "4",
                    "--slurm-status-command", "squeue", "--seconds-between-status-checks", "3",
                    "--slurm-init-seconds-before-status-checks", "1",
                    "--slurm-logdir", str(tmp_path / "slurm-logs"), "--slurm-keep-successful-logs")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "sbatch" in log.lower() or "slurm" in log.lower()
    # the plugin logs each submitted job under <logdir>/rule_<rule>/<wildcards>/<jobid>.log
    logs = (tmp_path / "slurm-logs").rglob("*.log")
    submitted = {p.relative_to(tmp_path / "slurm-logs").parts[0].removeprefix("rule_") for p in logs}
    ran = set(catalog.query("select distinct rule from jobs", cluster)["rule"])
    assert submitted == ran - LOCAL_RULES, "a job that runs a network went local, or a light one was queued"
    assert {"train_dense", "subspace_sweep", "imp_level_smoke_block0"} <= submitted
    assert LOCAL_RULES <= ran
    # Snakemake records no start for a submitted job: the view says so (null) instead of a zero
    timed = catalog.query("select rule, bool_and(seconds > 0) as timed, bool_and(seconds is null) as untimed "
                          "from jobs group by rule", cluster).rows()
    assert {rule for rule, t, _ in timed if t} == LOCAL_RULES
    assert {rule for rule, _, u in timed if u} == submitted
    for name, select in QUERIES.items():
        sql = f"{select} where experiment = 'smoke' order by all"
        a, b = catalog.query(sql, local).rows(), catalog.query(sql, cluster).rows()
        assert a and a == b, name
