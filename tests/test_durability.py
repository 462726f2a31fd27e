"""LAMIN_MAGIC_DURABILITY: every save flushed to the disk by default, or left to the OS."""

from __future__ import annotations

import os
import sqlite3

import pandas as pd
import pytest

import lamin_magic as lm
from lamin_magic.errors import InvalidArgumentError


def count_flushes(monkeypatch, save) -> int:
    """How many times the save asked the disk to flush its files (os.fsync, counted while it
    still runs); SQLite's own flushes follow its synchronous setting, checked below."""
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    save()
    return len(calls)


def test_saves_flush_to_disk_by_default_and_not_when_told(inst, monkeypatch):
    df = pd.DataFrame({"a": [1, 2, 3]})
    monkeypatch.delenv("LAMIN_MAGIC_DURABILITY", raising=False)
    flushed = count_flushes(monkeypatch, lambda: lm.add(lm.File(df, name="disk")))
    assert flushed >= 2  # the bytes, and the folder holding their new name
    monkeypatch.setenv("LAMIN_MAGIC_DURABILITY", "os")
    df2 = df.assign(b=1)
    assert count_flushes(monkeypatch, lambda: lm.add(lm.File(df2, name="os"))) == 0
    pd.testing.assert_frame_equal(lm.load("os"), df2)
    # the registry's commits are back to waiting for the disk after an "os" save
    level = lm.registry.db.execute_sql("PRAGMA synchronous").fetchone()[0]
    assert level == 2  # FULL


def test_a_save_left_to_the_os_survives_the_process_dying(inst, tmp_path):
    """SIGKILL right after an "os" save returns: the record and its bytes are both there."""
    import subprocess
    import sys

    code = (
        "import os, signal, pandas as pd, lamin_magic as lm\n"
        f"lm.init({str(inst.root)!r})\n"
        "lm.add(lm.File(pd.DataFrame({'x': range(1000)}), name='killed'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "LAMIN_MAGIC_DURABILITY": "os"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr
    with sqlite3.connect(inst.registry_path) as db:
        assert db.execute("SELECT count(*) FROM file WHERE name = 'killed'").fetchone()[0] == 1
    assert lm.load("killed")["x"].tolist() == list(range(1000))  # verified against its hash
    assert lm.check().ok


def test_an_unknown_durability_is_one_line_and_nothing_is_written(inst, monkeypatch):
    monkeypatch.setenv("LAMIN_MAGIC_DURABILITY", "sometimes")
    with pytest.raises(InvalidArgumentError, match=r"^LAMIN_MAGIC_DURABILITY='sometimes' is not"):
        lm.add(lm.File(pd.DataFrame({"a": [1]}), name="never"))
    monkeypatch.delenv("LAMIN_MAGIC_DURABILITY")
    assert lm.select(lm.File, name="never").first() is None
    assert not list(inst.root.glob("**/*.parquet*"))


def test_write_back_starts_while_a_writer_still_runs(tmp_path, monkeypatch):
    """What a path-taking writer (h5ad, zarr) has written is sent to the disk as it grows, so
    that the fsync at the end has little left (Linux; elsewhere nothing starts early)."""
    import time

    from lamin_magic.storage import writeback

    if writeback._sync_file_range() is None:
        pytest.skip("no sync_file_range on this system")
    import threading

    died: list[object] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    folder = tmp_path / "store.zarr"
    folder.mkdir()
    with writeback.Watch(folder) as watch:
        for i in range(3):
            (folder / f"chunk{i}").write_bytes(os.urandom(1 << 20))
            time.sleep(5 * writeback.POLL_SECONDS)
        # as a zarr writer does: a nested folder, a file that grows, one renamed and one
        # removed while the thread looks
        (folder / "X" / "data").mkdir(parents=True)
        with open(folder / "X" / "data" / "0", "wb") as grows:
            grows.write(os.urandom(1 << 20))
            grows.flush()
            time.sleep(5 * writeback.POLL_SECONDS)
            grows.write(os.urandom(1 << 20))
            grows.flush()
            time.sleep(5 * writeback.POLL_SECONDS)
        for i in range(50):
            partial = folder / f"meta.{i}.partial"
            partial.write_bytes(b"{}")
            partial.replace(folder / "meta") if i % 2 else partial.unlink()
        time.sleep(5 * writeback.POLL_SECONDS)
        seen_while_writing = dict(watch._started)
    expected = {str(folder / f"chunk{i}"): 1 << 20 for i in range(3)}
    expected[str(folder / "X" / "data" / "0")] = 2 << 20
    assert {k: v for k, v in seen_while_writing.items() if "meta" not in k} == expected
    assert died == []  # the thread never died of a vanished file


def test_a_folder_is_flushed_once_and_hashes_the_same(tmp_path, monkeypatch):
    """A zarr-like folder: one flush of its file system (where the OS has syncfs) in place
    of an fsync per file; the hash does not depend on how it was flushed."""
    from lamin_magic.storage import hashing, writeback

    folder = tmp_path / "store.zarr"
    (folder / "x").mkdir(parents=True)
    for i in range(20):
        (folder / "x" / str(i)).write_bytes(os.urandom(4096))
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    flushed = hashing.hash_folder(folder, fsync=True)
    assert flushed == hashing.hash_folder(folder, fsync=False)
    # a folder just written is hashed in this thread, one read from the disk in a pool: the
    # same hash either way
    assert hashing.hash_folder(folder, fresh=True) == flushed
    if writeback.can_flush_file_system():
        assert calls == []  # one syncfs, no fsync per file
    else:
        assert len(calls) == 20
