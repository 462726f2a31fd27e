"""The registry on disk, read with nothing but the stdlib sqlite3 and the documented schema."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from conftest import RegistrySQL

import lamin_magic as lm
from lamin_magic import instance, registry
from lamin_magic.errors import InstanceError

DOCUMENTED = {
    "user": ["id", "handle", "name", "created_at"],
    "storage": ["id", "root", "type", "created_at"],
    "transform": ["id", "version", "name", "title", "type", "key", "created_by_id", "created_at"],
    "run": [
        "id",
        "transform_id",
        "created_by_id",
        "created_at",
        "finished_at",
        "environment",
        "snapshot",
    ],
    "file": [
        "id",
        "name",
        "version",
        "description",
        "suffix",
        "size",
        "hash",
        "hash_type",
        "key",
        "run_id",
        "storage_id",
        "created_by_id",
        "created_at",
        "trashed_at",
        "purged_at",
        "cell",
    ],
    "run_input": ["run_id", "file_id"],
    "cell": ["run_id", "execution_count", "source", "started_at", "finished_at"],
    "environment": ["hash", "python", "packages", "created_at"],
    "source": ["hash", "kind", "content", "created_at"],
    "transform_path": ["transform_id", "path", "until"],
}


def connect(inst) -> RegistrySQL:
    return RegistrySQL(inst)


COLUMNS = {
    "sqlite": "SELECT name FROM pragma_table_info(?)",
    "postgresql": "SELECT column_name FROM information_schema.columns"
    " WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position",
}
VERSION = {
    "sqlite": "PRAGMA user_version",
    "postgresql": "SELECT substr(obj_description('file'::regclass, 'pg_class'), 20)",
}


def test_tables_and_columns_are_the_documented_ones(inst, engine):
    with connect(inst) as con:
        for table, columns in DOCUMENTED.items():
            found = [row[0] for row in con.execute(COLUMNS[engine], (table,))]
            assert found == columns, table
        version = con.execute(VERSION[engine]).fetchone()[0]
        assert int(version) == registry.SCHEMA_VERSION


def test_pragmas_wal_and_foreign_keys(inst, engine):
    if engine == "postgresql":  # foreign keys are constraints; a write holds the lock
        from lamin_magic.databases import WRITE_LOCK

        keys = registry.db.execute_sql(
            "SELECT count(*) FROM information_schema.table_constraints"
            " WHERE constraint_type = 'FOREIGN KEY' AND table_schema = current_schema()"
        ).fetchone()[0]
        assert keys >= 8
        held = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = pg_backend_pid() AND classid = %s AND objid = %s"
        )
        lock = (WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF)
        assert registry.db.execute_sql(held, lock).fetchone()[0] == 0
        with registry.db.atomic():
            assert registry.db.execute_sql(held, lock).fetchone()[0] == 1
        assert registry.db.execute_sql(held, lock).fetchone()[0] == 0
        return
    assert registry.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert registry.db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert registry.db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_what_the_api_wrote_reads_back_with_sqlite3(inst):
    lm.track()
    df = pd.DataFrame({"a": [1, 2, 3]})
    file = lm.add(lm.File(df, name="frame", description="three rows"))
    file.load()  # loaded by the run that made it: not an input of that run
    lm.track(new_run=True)
    lm.load("frame")  # another run reads it: an input
    con = connect(inst)
    row = con.execute(
        "SELECT f.name, f.version, f.description, f.suffix, f.size, f.hash_type, f.key, "
        "t.name, t.type, u.handle, s.root FROM file f JOIN run r ON f.run_id = r.id "
        'JOIN transform t ON r.transform_id = t.id JOIN "user" u ON f.created_by_id = u.id '
        "JOIN storage s ON f.storage_id = s.id WHERE f.id = ?",
        (file.id,),
    ).fetchone()
    assert row[:6] == ("frame", 1, "three rows", ".parquet", file.size, "blake3")
    assert (inst.root / row[6]).stat().st_size == file.size
    # the transform that made it: pytest's script, or the test shell's IPython session
    assert (row[7], row[8]) == (lm.context.transform.name, lm.context.transform.type)
    assert row[9] == instance.current_user_handle()
    assert row[10] == str(inst.root)
    inputs = con.execute("SELECT run_id, file_id FROM run_input").fetchall()
    assert inputs == [(lm.context.run.id, file.id)]
    finished = con.execute("SELECT finished_at FROM run WHERE id = ?", (file.run_id,)).fetchone()
    assert finished[0] is not None  # the first run ended when the second began
    con.close()


def test_lengths_of_ids(inst):
    lm.track()
    file = lm.add(lm.File(pd.DataFrame({"a": [1]}), name="x"))
    con = connect(inst)
    lengths = {
        t: {len(r[0]) for r in con.execute(f'SELECT id FROM "{t}"')}
        for t in ("user", "storage", "transform", "run", "file")
    }
    con.close()
    assert lengths == {"user": {8}, "storage": {8}, "transform": {12}, "run": {20}, "file": {20}}
    assert len(file.hash) == 22


def test_newer_schema_is_refused_with_the_fix(tmp_path):
    inst = lm.init(tmp_path / "inst")
    path = inst.registry_path
    instance.reset()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {registry.SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(InstanceError, match=r"newer than this lamin_magic.*pip install -U"):
        lm.init(tmp_path / "inst")


def test_older_schema_is_upgraded_in_place(tmp_path, monkeypatch):
    inst = lm.init(tmp_path / "inst")
    path = inst.registry_path
    instance.reset()
    ran = []
    monkeypatch.setattr(registry, "SCHEMA_VERSION", registry.SCHEMA_VERSION + 1)
    monkeypatch.setitem(
        registry.UPGRADES,
        registry.SCHEMA_VERSION - 1,
        lambda db: ran.append(db.execute_sql("ALTER TABLE file ADD COLUMN extra TEXT")),
    )
    lm.init(tmp_path / "inst")
    assert len(ran) == 1
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == registry.SCHEMA_VERSION
    assert "extra" in [r[1] for r in con.execute("PRAGMA table_info(file)")]
    con.close()


def test_corrupt_registry_is_an_instance_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken.lndb").write_bytes(b"this is not a database" * 100)
    with pytest.raises(InstanceError, match="cannot open the registry"):
        lm.init(folder)
