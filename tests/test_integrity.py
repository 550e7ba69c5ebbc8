"""`sublevel check-results`: every kind of damage Snakemake cannot see is found by path, --fix removes exactly it."""

from __future__ import annotations

import numpy as np
import pytest

from sublevel import cli, integrity, paths, storage, trajectory
from conftest import make_project, train_row


@pytest.fixture
def project(tmp_path):
    """Three trajectories, two train tables and a refinement plan, all whole."""
    make_project(tmp_path)
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
    (project / paths.results() / "link").symlink_to(outside, target_is_directory=True)
    (project / paths.results() / "loop").symlink_to("..", target_is_directory=True)
    (project / paths.results() / "file-link.parquet").symlink_to(outside / "nowhere.parquet")
    found = integrity.check(project)
    assert found.damaged == [] and found.checked == 6
    assert sorted(p.name for p in found.links) == ["file-link.parquet", "link", "loop"]
    assert cli.main(["check-results", "--root", str(project), "--fix"]) == 0
    out = capsys.readouterr().out
    assert out.count("not checked: ") == 3 and "6 results under" in out
    assert (precious / "zarr.json").read_text() == "{not json"
    assert (project / paths.results() / "link").is_symlink() and (project / paths.results() / "loop").is_symlink()


def test_remove_refuses_a_path_outside_results(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "precious.zarr"
    outside.mkdir()
    with pytest.raises(ValueError, match="refusing"):
        integrity.remove([integrity.Damage(outside, "planted")], project)
    assert outside.is_dir()


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_chunk_or_a_table_page_is_damage(project):
    """Zarr chunks end in a CRC32C and Parquet pages carry a CRC32: one flipped bit anywhere in a chunk's data
    or a page's is found (before, it read back as another value)."""
    import struct

    import pyarrow.parquet as pq

    shard = next(p for p in (project / paths.trajectory("e", 0) / "params").rglob("*")
                 if p.is_file() and p.name != "zarr.json")
    _flip(shard, 10)
    table = project / paths.table("train", experiment="e", seed=0)
    meta = pq.ParquetFile(table).metadata.row_group(0)
    column = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "loss")
    original = pq.read_table(table)
    start = column.dictionary_page_offset or column.data_page_offset
    chunk = table.read_bytes()[start:start + column.total_compressed_size]
    _flip(table, start + chunk.index(struct.pack("<d", original["loss"][0].as_py())))  # the value's lowest bit
    assert not pq.read_table(table).equals(original)  # read without the checksums: another value, silently
    found = integrity.check(project)
    assert sorted(d.path.relative_to(project) for d in found.damaged) == sorted(
        [paths.trajectory("e", 0), table.relative_to(project)]), found.damaged
    assert found.unverified == []


def test_results_written_without_checksums_are_listed_not_damaged(project, capsys):
    import pyarrow.parquet as pq
    import zarr

    old = project / paths.trajectory("e", 9)
    zarr.open_group(old, mode="w").create_array("params", data=np.ones((2, 5), np.float32))
    table = project / paths.table("train", experiment="e", seed=0)
    pq.write_table(pq.read_table(table).replace_schema_metadata({}), table)
    found = integrity.check(project)
    assert found.damaged == [] and sorted(found.unverified) == sorted([old, table])
    assert cli.main(["check-results", "--root", str(project)]) == 0
    assert "2 result(s) written without checksums" in capsys.readouterr().out
