import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from sublevel import schema, storage, trajectory
from conftest import train_row


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    final = tmp_path / "a" / "t.parquet"
    with pytest.raises(RuntimeError):
        with storage.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not final.exists() and list(final.parent.iterdir()) == []


def test_atomic_path_replaces_a_directory(tmp_path):
    final = tmp_path / "g.zarr"
    for value in (1, 2):
        with storage.atomic_path(final) as tmp:
            zarr.open_group(tmp, mode="w", attributes={"v": value})
    assert zarr.open_group(final, mode="r").attrs["v"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["g.zarr"]


def test_a_stopped_job_whose_code_swallows_the_exit_still_ends_and_leaves_no_temporary(tmp_path):
    """SIGTERM's SystemExit can be lost where it lands (here a loop that swallows every exception): the job
    still exits with 128 + SIGTERM within the grace period, and the open block's temporary is removed."""
    final = tmp_path / "traj.zarr"
    script = textwrap.dedent(f"""
        import signal, time
        from sublevel import cli, storage
        signal.signal(signal.SIGTERM, cli._stop)
        with storage.atomic_path({str(final)!r}) as tmp:
            tmp.mkdir()
            (tmp / "chunk").write_bytes(b"half")
            ready = False
            while True:
                try:  # "ready" only from inside the swallowing block, so the signal cannot land before it
                    if not ready:
                        print("ready", flush=True)
                        ready = True
                    time.sleep(0.01)
                except BaseException:
                    pass
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert rc == 128 + signal.SIGTERM
    assert 5 < time.monotonic() - sent < 30  # it did swallow the exit; the grace period ended it
    assert list(tmp_path.iterdir()) == []


def test_write_table_enforces_the_schema(tmp_path):
    path = tmp_path / "train.parquet"
    storage.write_table("train", [train_row(), train_row(step=5, split="test")], path)
    table = pq.read_table(path)
    assert table.schema.equals(schema.TRAIN.schema) and table.num_rows == 2
    with pytest.raises(ValueError, match=r"missing columns \['loss'\]"):
        storage.write_table("train", [{k: v for k, v in train_row().items() if k != "loss"}], path)
    with pytest.raises(ValueError, match=r"unknown columns \['colour'\]"):
        storage.write_table("train", [train_row(colour="red")], path)
    assert pq.read_table(path).num_rows == 2  # the failed writes left the file alone


def test_shards_hold_whole_rows_and_few_files():
    assert storage.shard_shape((30, 15_210), (1, 15_210)) == (30, 15_210)
    rows, cols = storage.shard_shape((40, 4_301_642), (1, 65_536))
    assert rows == 40 and cols % 65_536 == 0 and rows * cols * 4 <= 128 << 20


def test_trajectory_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(70_000).astype(np.float32) for _ in range(5)]
    buffers = [np.zeros(0, np.float32)] * 5
    path = tmp_path / "trajectory.zarr"
    trajectory.write(path, steps=[0, 1, 3, 10, 20], params=params, buffers=buffers, attrs={"D": 70_000})
    t = trajectory.read(path)
    assert t.steps.tolist() == [0, 1, 3, 10, 20] and t.attrs["D"] == 70_000
    assert np.array_equal(t.params(10), params[3]) and t.params().shape == (5, 70_000)
    with pytest.raises(KeyError, match=r"stored: \[0, 1, 3, 10, 20\]"):
        t.params(2)
    group = zarr.open_group(path, mode="r")
    assert group["params"].shards == (5, 131_072) and group["params"].chunks == (1, 65_536)
    files = [p for p in (path / "params").rglob("*") if p.is_file()]
    assert len(files) == 2  # zarr.json + one shard


def test_a_truncated_zarr_chunk_or_broken_metadata_is_reported_by_path(tmp_path):
    from sublevel import trajectory

    path = tmp_path / "trajectory.zarr"
    trajectory.write(path, steps=[0, 1], params=[np.ones(500, np.float32), np.zeros(500, np.float32)],
                     buffers=[np.zeros(0), np.zeros(0)], attrs={})
    shard = next(p for p in (path / "params").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(storage.CorruptFile, match=r"trajectory .*trajectory.zarr/params is corrupt or truncated"):
        trajectory.read(path).params(1)
    shard.unlink()  # a chunk file gone: zarr alone would read zeros
    with pytest.raises(storage.CorruptFile, match=r"params is corrupt or truncated \(ValueError: 1 chunk file"):
        trajectory.read(path).params(0)
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
    with pytest.raises(storage.CorruptFile, match=r"trajectory .*trajectory.zarr is corrupt"):
        trajectory.read(path)


def test_a_truncated_parquet_file_is_reported_by_path(tmp_path):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    rows = [dict(experiment="e", seed=0, source="dense", level=None, rewind_step=None, sparsity=0.0, step=0, rank=1, eigenvalue=1.0,
                 examples=10, iterations=5)]
    storage.write_table("hessian", rows, good)
    storage.write_table("hessian", rows, bad)
    bad.write_bytes(bad.read_bytes()[:40])
    assert storage.read_rows([good]) == rows
    with pytest.raises(storage.CorruptFile, match=r"Parquet file .*bad.parquet is corrupt or truncated"):
        storage.read_rows([good, bad])
    with pytest.raises(storage.CorruptFile, match="bad.parquet"):
        storage.read_frame([bad])


def test_all_zero_arrays_are_written_so_a_missing_chunk_means_damage(tmp_path):
    g = zarr.open_group(tmp_path / "z.zarr", mode="w")
    storage.write_array(g, "zeros", np.zeros((3, 1000), np.float32))  # sharded
    g.create_array("mask", data=np.zeros(10, bool))                    # one plain chunk
    for key in ("zeros", "mask"):
        assert storage.missing_chunks(g[key]) == 0
        assert not storage.read(g, key).any()
