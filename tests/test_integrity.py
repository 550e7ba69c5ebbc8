"""`sublevel check-results`: every kind of damage Snakemake cannot see is found by path, --fix removes exactly it."""

from __future__ import annotations

import numpy as np
import pytest

from sublevel import cli, integrity, paths, storage, trajectory
from conftest import train_row


@pytest.fixture
def project(tmp_path):
    """Three trajectories, two train tables and a refinement plan, all whole."""
    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "workflow").mkdir()
    for seed in (0, 1, 2):
        trajectory.write(tmp_path / paths.trajectory("e", seed), steps=[0, 1],
                         params=[np.ones(500, np.float32), np.zeros(500, np.float32)],
                         buffers=[np.zeros(0), np.zeros(0)], attrs={})
    for seed in (0, 1):
        storage.write_table("train", [train_row(seed=seed)], tmp_path / paths.table("train", experiment="e", seed=seed))
    plan = tmp_path / paths.refine_plan("e", "random", 0, 0)
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text('{"dims": []}')
    return tmp_path


def damage(project):
    """One of each: a truncated shard, a missing shard, a truncated Parquet file, a garbled plan, a leftover."""
    shard = lambda seed: next(p for p in (project / paths.trajectory("e", seed) / "params").rglob("*")
                              if p.is_file() and p.name != "zarr.json")
    shard(0).write_bytes(shard(0).read_bytes()[:20])
    shard(1).unlink()
    table = project / paths.table("train", experiment="e", seed=1)
    table.write_bytes(table.read_bytes()[:50])
    (project / paths.refine_plan("e", "random", 0, 0)).write_text('{"dims": [')
    leftover = table.parent / ".train.parquet.tmp-123"
    leftover.write_bytes(b"half")
    return [paths.trajectory("e", 0), paths.trajectory("e", 1), table.relative_to(project),
            paths.refine_plan("e", "random", 0, 0), leftover.relative_to(project)]


def test_whole_results_have_no_damage(project, capsys, recwarn):
    (project / paths.trajectory("e", 0) / ".snakemake_timestamp").write_text("")  # Snakemake's directory() marker
    assert integrity.check(project) == ([], 6)
    assert not [w for w in recwarn if "snakemake_timestamp" in str(w.message)]
    assert cli.main(["check-results", "--root", str(project)]) == 0
    assert "6 results under" in capsys.readouterr().out


def test_every_damage_is_named_and_fix_removes_exactly_it(project, capsys):
    want = damage(project)
    found, checked = integrity.check(project)
    assert sorted(d.path.relative_to(project) for d in found) == sorted(want) and checked == 6
    with pytest.raises(SystemExit) as e:
        cli.main(["check-results", "--root", str(project)])
    assert "5 of 6 results damaged" in str(e.value.code)
    assert capsys.readouterr().out.count("damaged: ") == 5
    assert cli.main(["check-results", "--root", str(project), "--fix"]) == 0
    assert not any((project / p).exists() for p in want)
    assert (project / paths.trajectory("e", 2)).is_dir()  # the whole ones stay
    assert (project / paths.table("train", experiment="e", seed=0)).is_file()
    assert integrity.check(project) == ([], 2)


def test_fix_removes_nothing_while_a_run_holds_the_lock(project):
    want = damage(project)
    (project / ".snakemake" / "locks").mkdir(parents=True)
    (project / ".snakemake" / "locks" / "0.output.lock").write_text("")
    with pytest.raises(SystemExit, match="holds this directory's lock"):
        cli.main(["check-results", "--root", str(project), "--fix"])
    assert all((project / p).exists() for p in want)
