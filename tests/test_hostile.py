"""Hostile folders and registries: an instance is data from others.

Nothing outside the instance is read, written or deleted; nothing in a registry runs code,
redirects writes or reaches a terminal unescaped; dedup never stands in for bytes that are
missing or damaged.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import Payload, RegistrySQL, cli, forget_instance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lamin_magic as lm
from lamin_magic import files, instance
from lamin_magic.errors import InstanceError, IntegrityError, UnsupportedTypeError, printable
from lamin_magic.integrity import check


def frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"x": list(range(n))})


def sql(registry: Path, statement: str, params: tuple = ()) -> None:
    con = sqlite3.connect(registry)
    with con:
        con.execute(statement, params)
    con.close()


def everything_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def outside(tmp_path):
    """A folder beside the instance with the user's own files in it."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "thesis.tex").write_text("years of work")
    (docs / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return docs


# --- 1. nothing outside the instance is ever read, written or deleted ---------------------


def test_a_linked_temporary_folder_is_never_followed(tmp_path, outside):
    inst = lm.init(tmp_path / "R")
    os.symlink("../docs", inst.root / ".lamin-tmp")
    before = everything_under(outside)
    report = check(repair=True)
    assert [p.kind for p in report.problems] == ["stranger"]
    assert "symbolic link" in report.problems[0].detail and report.ok
    out = cli("--root", str(inst.root), "check", "--repair")
    assert out.returncode == 0 and "thesis" not in out.stdout, out.stdout
    with pytest.raises(InstanceError, match=r"\.lamin-tmp is a symbolic link or a file"):
        lm.add(lm.File(frame(), name="x"))
    assert everything_under(outside) == before
    assert lm.select(lm.File).all() == []


def test_repair_removes_only_what_lamin_magic_named(inst, tmp_path, outside):
    lm.add(lm.File(frame(), name="kept"))
    inst.temp_dir.mkdir(exist_ok=True)
    notes = inst.temp_dir / "notes.txt"
    notes.write_text("mine")
    lookalike = inst.temp_dir / "123-abc.parquet.partial"  # not a name lamin_magic gives
    lookalike.write_text("mine too")
    linked = inst.root / "ABCDEFGHIJ0123456789.parquet"  # a stored name, but a link
    os.symlink(outside / "thesis.tex", linked)
    linked_temp = inst.temp_dir / f"999999999-{'a' * 32}.parquet.partial"
    os.symlink(outside, linked_temp)
    report = check(repair=True)
    kinds = sorted((p.kind, Path(p.path).name) for p in report.problems)
    names = [linked.name, linked_temp.name, lookalike.name, notes.name]
    assert kinds == sorted(("stranger", name) for name in names)
    assert notes.exists() and lookalike.exists() and linked.is_symlink()
    assert linked_temp.is_symlink() and (outside / "thesis.tex").read_text() == "years of work"
    assert lm.load("kept").x.tolist() == [0, 1, 2]


BAD_KEYS = [
    "../docs/thesis.tex",
    "/etc/passwd",
    "sub/ABCDEFGHIJ0123456789.parquet",
    ".lamin-tmp/ABCDEFGHIJ0123456789.parquet",
    "R.lndb",
    "ABCDEFGHIJ0123456789.parquet/../../docs/thesis.tex",
    "",
    "ABCDEFGHIJ0123456789.parquet\x00",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_key_is_a_plain_name_inside_the_storage_root(tmp_path, outside, key):
    inst = lm.init(tmp_path / "R")
    stored = lm.add(lm.File(frame(), name="iris"))
    # the record says its bytes are the user's thesis, with the right size and hash
    from lamin_magic.storage.hashing import hash_file

    size, digest = hash_file(outside / "thesis.tex")
    sql(
        inst.registry_path,
        "UPDATE file SET key = ?, size = ?, hash = ? WHERE id = ?",
        (key, size, digest, stored.id),
    )
    with pytest.raises(IntegrityError, match=r"cannot be used: it(s key| has no key)") as raised:
        lm.load("iris")
    assert "\n" not in str(raised.value)
    report = check(repair=True)
    assert [p.kind for p in report.problems] == ["unsafe"] and not report.ok
    assert report.bytes_hashed == 0  # nothing outside was read
    # the real bytes, named after their record, are no orphan: repair leaves them
    assert (inst.root / f"{stored.id}.parquet").exists()
    assert lm.select(lm.File, name="iris").one().key == key
    assert (outside / "thesis.tex").read_text() == "years of work"


@given(key=st.text(max_size=40))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_only_names_lamin_magic_gives_are_keys(key):
    from lamin_magic.storage.keys import key_problem

    problem = key_problem(key)
    plain = (
        len(key) > 21
        and key[:20].isascii()
        and key[:20].isalnum()
        and all(
            part and part.replace("_", "").replace("-", "").isalnum()
            for part in key[21:].split(".")
        )
        and key[20] == "."
        and key.isascii()
        and not key.endswith(".partial")
    )
    assert (problem is None) == plain, (key, problem)
    if problem is None:
        assert "/" not in key and "\\" not in key and ".." not in key and "\x00" not in key


def test_a_link_inside_a_stored_folder_is_never_followed(inst, outside):
    adata = ad.AnnData(np.eye(3, dtype="float32"))
    stored = lm.add(lm.File(adata, name="cells", format="zarr"))
    os.symlink(outside / "sub", stored.path / "planted")
    with pytest.raises(IntegrityError, match="symbolic link inside a stored folder"):
        lm.load("cells")
    with pytest.raises(IntegrityError, match="symbolic link inside a stored folder"):
        lm.load("cells", verify=False)
    report = check(repair=True)
    assert [p.kind for p in report.problems] == ["mismatch"] and not report.ok
    assert (outside / "sub" / "data.csv").exists()


def test_no_instance_inside_another_instance_s_objects(inst, tmp_path):
    adata = ad.AnnData(np.eye(3, dtype="float32"))
    stored = lm.add(lm.File(adata, name="cells", format="zarr"))
    lm.add(lm.File(frame(), name="iris"))
    inst.temp_dir.mkdir(exist_ok=True)
    for inner in (stored.path, stored.path / "inner", inst.temp_dir, inst.temp_dir / "deeper"):
        with pytest.raises(InstanceError, match=r"is inside .* choose a folder outside it"):
            lm.init(inner)
        out = cli("init", str(inner))
        assert out.returncode == 2 and "choose a folder outside it" in out.stderr
    assert not (stored.path / "inner").exists() and not (inst.temp_dir / "deeper").exists()
    lm.init(inst.root, db=inst.registry if inst.team else None)
    assert check().ok
    assert lm.load("cells").shape == (3, 3)


def test_a_linked_registry_is_refused(tmp_path):
    real = lm.init(tmp_path / "real")
    instance.reset()
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(real.registry_path, other / "other.lndb")
    with pytest.raises(InstanceError, match="is a symbolic link"):
        lm.init(other)


# --- 2. a registry is data from others -----------------------------------------------------


def test_the_right_to_unpickle_comes_from_the_local_user(tmp_path):
    inst = lm.init(tmp_path / "shared")
    marker = tmp_path / "pwned"
    key = "AAAAAAAAAAAAAAAAAAAA.pkl"
    (inst.root / key).write_bytes(pickle.dumps(Payload(str(marker))))
    sql(
        inst.registry_path,
        "INSERT INTO file (id, name, version, suffix, size, key, created_at) "
        "VALUES ('AAAAAAAAAAAAAAAAAAAA', 'evil', 1, '.pkl', 1, ?, '2026-01-01T00:00:00+00:00')",
        (key,),
    )
    sql(inst.registry_path, "INSERT INTO setting VALUES ('allow_pickle', 'true')")
    instance.reset()
    for opened in (lambda: lm.init(tmp_path / "shared"), lambda: None):
        opened()
        with pytest.raises(UnsupportedTypeError, match="do not allow unpickling"):
            lm.load("evil")
        with pytest.raises(UnsupportedTypeError, match="do not allow pickle"):
            lm.File({"a": 1}, name="d", format="pickle")
    out = cli("--root", str(inst.root), "info")
    assert "pickle             off" in out.stdout
    assert not marker.exists()
    # the local user's trust is per instance: a copy of the folder elsewhere is not trusted
    lm.init(tmp_path / "shared", allow_pickle=True)
    assert instance.pickle_allowed()
    import shutil

    instance.reset()
    shutil.copytree(tmp_path / "shared", tmp_path / "copy")
    lm.init(tmp_path / "copy")
    assert not instance.pickle_allowed()
    assert not marker.exists()


@pytest.mark.parametrize(
    "planted",
    [
        "CREATE TRIGGER redirect AFTER INSERT ON file BEGIN "
        "UPDATE file SET key = '../x' WHERE id = new.id; END",
        "CREATE TRIGGER spy BEFORE UPDATE ON run BEGIN SELECT 1; END",
        "CREATE VIEW everything AS SELECT * FROM file",
    ],
)
def test_a_registry_with_triggers_or_views_is_not_opened(tmp_path, planted):
    inst = lm.init(tmp_path / "R")
    kept = lm.add(lm.File(frame(), name="kept")).path
    forget_instance()
    sql(inst.registry_path, planted)
    before = inst.registry_path.read_bytes()
    with pytest.raises(InstanceError, match=r"holds a (trigger|view) .* did not create"):
        lm.init(tmp_path / "R")
    out = cli("--root", str(inst.root), "ls")
    assert out.returncode == 2 and "did not create" in out.stderr and out.stderr[-1] == "\n"
    assert inst.registry_path.read_bytes() == before
    assert kept.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("ALTER TABLE file DROP COLUMN description", "its table 'file' lacks description"),
        ("PRAGMA user_version = -1", "schema version -1, which no lamin_magic ever wrote"),
    ],
)
def test_a_registry_edited_by_hand_is_one_line(tmp_path, edit, message):
    inst = lm.init(tmp_path / "R")
    instance.reset()
    sql(inst.registry_path, edit)
    with pytest.raises(InstanceError, match=message):
        lm.init(tmp_path / "R")


HOSTILE_TEXT = [
    "\x1b]0;pwned\x07",  # OSC: sets the terminal title
    "\x1b[2J\x1b[H",  # clears the screen
    "line one\nfake: row",
    "\u202eevil\u202c",  # right-to-left override
    "tab\there\r",
    "\x9b31m",  # C1 control sequence introducer
]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_names_and_descriptions_never_reach_a_terminal_raw(tmp_path, text):
    inst = lm.init(tmp_path / "R")
    lm.track()
    stored = lm.add(lm.File(frame(), name="plain", description=text))
    # a name lamin_magic would refuse, put in by hand
    sql(
        inst.registry_path,
        "INSERT INTO file (id, name, version, suffix, size, hash, hash_type, key, created_at) "
        "SELECT 'BBBBBBBBBBBBBBBBBBBB', ?, 1, suffix, size, hash, hash_type, key, created_at "
        "FROM file WHERE id = ?",
        (f"n{text}", stored.id),
    )
    (inst.root / f"stranger{text}.txt").write_text("x")
    instance.reset()
    outputs = [
        cli("--root", str(inst.root), "ls").stdout,
        cli("--root", str(inst.root), "show", "plain").stdout,
        cli("--root", str(inst.root), "check").stdout,
        cli("--root", str(inst.root), "runs").stdout,
    ]
    for out in outputs:
        assert not any(c in out for c in "\x1b\x07\r\u202e\u202c\x9b\t"), out
        assert "fake: row" not in out.splitlines()
    shown = printable(text)  # escaped, as repr() shows it
    assert shown != text and shown in outputs[0] and shown in outputs[1]


# --- 3. dedup never stands in for bytes that are not there or not intact -------------------


def test_a_resave_restores_missing_bytes(inst):
    kept = lm.add(lm.File(frame(), name="keep"))
    kept.path.unlink()
    saved = files.add_many([lm.File(frame(), name="keep")])[0]
    assert saved.status == "unchanged" and "restored" in saved.note
    assert saved.file.id == kept.id and kept.path.exists()
    assert lm.load("keep").x.tolist() == [0, 1, 2]
    assert check().ok


def test_damaged_bytes_are_never_shared(inst):
    twin = lm.add(lm.File(frame(1000), name="twin"))
    data = bytearray(twin.path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    twin.path.write_bytes(bytes(data))
    fresh = lm.add(lm.File(frame(1000), name="fresh"))
    assert fresh.key != twin.key
    assert lm.load("fresh").x.tolist() == list(range(1000))
    # the same name: a damaged latest version is not "unchanged"; a new version is written
    again = files.add_many([lm.File(frame(1000), name="twin")])[0]
    assert again.status == "new version" and "damaged" in again.note
    assert again.file.version == 2 and lm.load("twin").x.tolist() == list(range(1000))
    # intact bytes are still shared
    third = lm.add(lm.File(frame(1000), name="third"))
    assert third.key == fresh.key


def test_a_damaged_zarr_twin_is_not_shared(inst):
    adata = ad.AnnData(np.arange(12, dtype="float32").reshape(3, 4))
    first = lm.add(lm.File(adata, name="a", format="zarr"))
    chunk = next(p for p in sorted(first.path.rglob("*")) if p.is_file() and p.suffix == "")
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\x00")
    second = lm.add(lm.File(adata, name="b", format="zarr"))
    assert second.key != first.key
    np.testing.assert_array_equal(lm.load("b").X, adata.X)


# --- 6. loads are what the user asked for ------------------------------------------------


def test_loads_verify_by_default(inst):
    stored = lm.add(lm.File(pd.DataFrame({"v": np.arange(100.0)}), name="v"))
    data = bytearray(stored.path.read_bytes())
    data[len(data) // 3] ^= 0x01  # same size, one bit
    stored.path.write_bytes(bytes(data))
    for load in (lambda: lm.load("v"), stored.load, lambda: lm.load("v@1")):
        with pytest.raises(IntegrityError, match="do not match their record"):
            load()


# --- 7. the Python API works from a cold start --------------------------------------------

COLD_CALLS = {
    "load": "lm.load('iris')",
    "File.load": "lm.select(lm.File, name='iris').one().load()",
    "select": "lm.select(lm.File).all()",
    "add": "lm.add(lm.File(pd.DataFrame({'a': [1]}), name='new'))",
    "File": "lm.File(pd.DataFrame({'a': [1]}), name='new')",
    "check": "lm.check()",
    "track": "lm.track()",
    "model query": "lm.File.select().count()",
    "context": "lm.context",
}


@pytest.mark.parametrize("call", sorted(COLD_CALLS))
def test_every_public_function_works_as_the_first_call(tmp_path, call):
    root = tmp_path / "inst"
    lm.init(root)
    lm.add(lm.File(frame(), name="iris"))
    instance.reset()
    # os._exit: pyarrow's thread pool now and then aborts a process at exit after a parquet
    # read ("terminate called without an active exception", apache/arrow#34314): not ours
    code = (
        f"import os, pandas as pd, lamin_magic as lm\nresult = {COLD_CALLS[call]}\n"
        "print('ok', flush=True)\nos._exit(0)"
    )
    env = {**os.environ, "LAMIN_MAGIC_ROOT": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0 and out.stdout.endswith("ok\n"), out.stderr
    # and from the working directory, with no variable naming the instance
    env.pop("LAMIN_MAGIC_ROOT")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root
    )
    assert out.returncode == 0 and out.stdout.endswith("ok\n"), out.stderr


# --- hypothesis over hostile registry rows ---------------------------------------------------

ANY_VALUE = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.binary(max_size=10),
    st.sampled_from(["", "2026-13-45T99:00:00", "nan", "ABCDEFGHIJ0123456789.parquet", ".pkl"]),
)


@given(
    row=st.fixed_dictionaries(
        {
            column: ANY_VALUE
            for column in (
                "version",
                "description",
                "suffix",
                "size",
                "hash",
                "hash_type",
                "key",
                "run_id",
                "created_at",
            )
        }
    ),
    name=st.one_of(st.text(min_size=1, max_size=20), st.just("iris")),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_row_someone_put_in_the_registry_is_shown_safely_or_refused(
    tmp_path_factory, row, name
):
    """Whatever a hostile or broken registry holds, reading it is a table of printable lines
    or a one-line LaminMagicError: never another exception, never a raw control character."""
    from lamin_magic import views
    from lamin_magic.errors import LaminMagicError

    root = tmp_path_factory.mktemp("hostile")
    inst = lm.init(root)
    lm.add(lm.File(frame(), name="iris"))
    columns = ["id", "name", *row]
    values = ["HHHHHHHHHHHHHHHHHHHH", name, *row.values()]
    con = sqlite3.connect(inst.registry_path)
    try:
        with con:
            con.execute(
                f"INSERT INTO file ({', '.join(columns)}) VALUES ({', '.join('?' * len(values))})",
                values,
            )
    except sqlite3.IntegrityError:  # NOT NULL or UNIQUE refused it: nothing to read
        return
    finally:
        con.close()
    instance.reset()
    lm.init(root)
    for read in (
        lambda: str(views.list_files()),
        lambda: str(views.show_file(name)) if "@" not in name else "",
        lambda: str(views.list_runs()),
        lambda: str(lm.load(name)) and "",
        lambda: str(check()),
        lambda: lm.select(lm.File, name=name).df().to_string() and "",
    ):
        try:
            out = read()
        except LaminMagicError as e:
            out = str(e)
            assert "\n" not in out
        assert all(c.isprintable() or c == "\n" for c in out), out


# --- found by a black-box attempt to break the above -----------------------------------------


def test_a_refused_init_leaves_the_instance_in_use_working(ip, tmp_path, capsys):
    lm.add(lm.File(frame(), name="kept"))
    bad = lm.init(tmp_path / "bad").registry_path
    sql(bad, "CREATE TRIGGER t1 BEFORE INSERT ON file BEGIN SELECT 1; END")
    instance.reset()
    with pytest.raises(Exception, match="holds a trigger"):
        ip.run_line_magic("lamin", f"init {tmp_path / 'bad'}")
    assert "kept" in str(ip.run_line_magic("lamin", "ls"))
    ip.run_line_magic("lamin", "load kept")
    assert ip.user_ns["kept"].x.tolist() == [0, 1, 2]


def test_a_new_user_reads_without_the_write_lock(tmp_path):
    root = tmp_path / "R"
    inst = lm.init(root)
    lm.add(lm.File(frame(), name="iris"))
    instance.reset()
    con = sqlite3.connect(inst.registry_path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # a colleague's save in progress
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMIN_MAGIC")} | {
            "LAMIN_MAGIC_USER": "first-time"
        }
        for args in (["ls"], ["show", "iris"], ["info"]):
            out = subprocess.run(
                [sys.executable, "-m", "lamin_magic.cli", "--root", str(root), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=8,
            )
            assert out.returncode == 0, out.stderr
        assert "first-time (no record yet)" in out.stdout
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_a_pipe_in_place_of_stored_bytes_is_never_read(inst):
    path = lm.add(lm.File(frame(), name="iris")).path
    path.unlink()
    os.mkfifo(path)
    for verify in (True, False):
        with pytest.raises(IntegrityError, match="not a file or folder"):
            lm.load("iris", verify=verify)
    assert [p.kind for p in check(repair=True).problems] == ["unsafe"]
    assert path.exists()  # listed, never removed
    cells = lm.add(lm.File(ad.AnnData(np.eye(2, dtype="float32")), name="c", format="zarr"))
    os.mkfifo(cells.path / "pipe")
    with pytest.raises(IntegrityError, match="is not a file"):
        lm.load("c", verify=False)


def test_paths_and_html_are_escaped_too(tmp_path):
    root = tmp_path / "e\x1b[31mX"
    out = cli("init", str(root))
    assert out.returncode == 0 and "\x1b" not in out.stdout and "\\x1b[31mX" in out.stdout
    lm.init(root)
    stored = lm.add(lm.File(frame(), name="plain", description="\x1b[2J\u202eevil"))
    html = stored._repr_html_()
    assert "\x1b" not in html and "\u202e" not in html and "\\u202e" in html


def test_a_mismatch_says_what_differs(inst):
    stored = lm.add(lm.File(frame(), name="iris"))
    with RegistrySQL(inst) as con:
        con.execute("UPDATE file SET hash_type = 'BLAKE3' WHERE id = ?", (stored.id,))
    with pytest.raises(IntegrityError, match="hash type 'BLAKE3' recorded, 'blake3' found"):
        lm.load("iris")
    problem = check().problems[0]
    assert problem.kind == "mismatch" and "hash type 'BLAKE3' recorded" in problem.detail
