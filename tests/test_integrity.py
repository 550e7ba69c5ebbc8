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
    assert integrity.check(project) == integrity.Found([], 6, [])
    assert not [w for w in recwarn if "snakemake_timestamp" in str(w.message)]
    assert cli.main(["check-results", "--root", str(project)]) == 0
    assert "6 results under" in capsys.readouterr().out


def test_every_damage_is_named_and_fix_removes_exactly_it(project, capsys):
    want = damage(project)
    found = integrity.check(project)
    assert sorted(d.path.relative_to(project) for d in found.damaged) == sorted(want) and found.checked == 6
    with pytest.raises(SystemExit) as e:
        cli.main(["check-results", "--root", str(project)])
    assert "5 of 6 results damaged" in str(e.value.code)
    assert capsys.readouterr().out.count("damaged: ") == 5
    assert cli.main(["check-results", "--root", str(project), "--fix"]) == 0
    assert not any((project / p).exists() for p in want)
    assert (project / paths.trajectory("e", 2)).is_dir()  # the whole ones stay
    assert (project / paths.table("train", experiment="e", seed=0)).is_file()
    assert integrity.check(project) == integrity.Found([], 2, [])


def test_fix_removes_nothing_while_a_run_holds_the_lock(project):
    want = damage(project)
    (project / ".snakemake" / "locks").mkdir(parents=True)
    (project / ".snakemake" / "locks" / "0.output.lock").write_text("")
    with pytest.raises(SystemExit, match="holds this directory's lock"):
        cli.main(["check-results", "--root", str(project), "--fix"])
    assert all((project / p).exists() for p in want)


def test_links_under_results_are_neither_followed_nor_removed(project, tmp_path_factory, capsys):
    """A link out of results/ to a directory holding a damaged store, and a link loop back into the project:
    both are reported as links, nothing outside is read or removed, and nothing is counted twice."""
    outside = tmp_path_factory.mktemp("outside")
    precious = outside / "precious.zarr"
    precious.mkdir()
    (precious / "zarr.json").write_text("{not json")  # would be "damaged" if it were checked
    (project / paths.RESULTS / "link").symlink_to(outside, target_is_directory=True)
    (project / paths.RESULTS / "loop").symlink_to("..", target_is_directory=True)
    (project / paths.RESULTS / "file-link.parquet").symlink_to(outside / "nowhere.parquet")
    found = integrity.check(project)
    assert found.damaged == [] and found.checked == 6
    assert sorted(p.name for p in found.links) == ["file-link.parquet", "link", "loop"]
    assert cli.main(["check-results", "--root", str(project), "--fix"]) == 0
    out = capsys.readouterr().out
    assert out.count("not checked: ") == 3 and "6 results under" in out
    assert (precious / "zarr.json").read_text() == "{not json"
    assert (project / paths.RESULTS / "link").is_symlink() and (project / paths.RESULTS / "loop").is_symlink()


def test_remove_refuses_a_path_outside_results(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "precious.zarr"
    outside.mkdir()
    with pytest.raises(ValueError, match="refusing"):
        integrity.remove([integrity.Damage(outside, "planted")], project)
    assert outside.is_dir()
