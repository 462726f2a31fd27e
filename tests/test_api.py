"""The tutorial's Python API: add, versions, dedup, select, load, inputs, formats, failures."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from conftest import RegistrySQL, stored_objects, temporaries

import lamin_magic as lm
from lamin_magic import instance
from lamin_magic.errors import (
    InstanceError,
    IntegrityError,
    InvalidArgumentError,
    MultipleResultsError,
    NotFoundError,
    UnsupportedTypeError,
)


@pytest.fixture
def df():
    return pd.DataFrame({"x": np.arange(100), "y": np.linspace(0, 1, 100)})


def test_same_name_same_content_returns_the_existing_record(inst, df):
    first = lm.add(lm.File(df, name="frame"))
    again = lm.add(lm.File(df.copy(), name="frame"))
    assert again.id == first.id and again.version == 1
    assert len(lm.select(lm.File, name="frame")) == 1
    assert stored_objects(inst.root) == [first.key]
    assert temporaries(inst.root) == []


def test_same_content_other_name_stores_the_bytes_once(inst, df):
    a = lm.add(lm.File(df, name="a"))
    b = lm.add(lm.File(df, name="b"))
    assert a.id != b.id and a.key == b.key and a.hash == b.hash
    assert stored_objects(inst.root) == [a.key]
    pd.testing.assert_frame_equal(lm.load("b"), df)


def test_new_content_is_a_new_version_and_load_takes_the_latest(inst, df):
    v1 = lm.add(lm.File(df, name="frame"))
    v2 = lm.add(lm.File(df.head(10), name="frame"))
    v3 = lm.add(lm.File(df.head(5), name="frame"))
    assert [v1.version, v2.version, v3.version] == [1, 2, 3]
    assert len(lm.load("frame")) == 5
    assert len(lm.load("frame@1")) == 100
    assert len(lm.load("frame@2")) == 10
    assert lm.select(lm.File, name="frame").first().version == 3
    assert sorted(stored_objects(inst.root)) == sorted([v1.key, v2.key, v3.key])


def test_going_back_to_old_content_is_a_new_version_sharing_bytes(inst, df):
    v1 = lm.add(lm.File(df, name="frame"))
    lm.add(lm.File(df.head(3), name="frame"))
    v3 = lm.add(lm.File(df, name="frame"))
    assert v3.version == 3 and v3.key == v1.key
    assert len(lm.load("frame")) == 100


def test_changing_one_value_in_the_middle_is_a_new_version(inst):
    # lamindb hashes only the first and last 50 MiB of large files and took such a change
    # for a duplicate; this hash covers every byte.
    big = pd.DataFrame({"v": np.arange(2_000_000, dtype="int64")})
    v1 = lm.add(lm.File(big, name="big"))
    changed = big.copy()
    changed.iloc[1_000_000, 0], changed.iloc[1_000_001, 0] = 1_000_001, 1_000_000
    v2 = lm.add(lm.File(changed, name="big"))
    assert v2.version == 2 and v2.hash != v1.hash
    assert lm.load("big").iloc[1_000_000, 0] == 1_000_001


def test_the_tutorial_lines(inst, df):
    lm.track()
    file = lm.File(df, name="iris")
    stored = lm.add(file)
    assert file.id == stored.id  # the File passed in becomes the stored record
    one = lm.select(lm.File, name=file.name).one()
    assert one.id == file.id and one.run_id == lm.context.run.id
    t = lm.select(lm.Transform, id=lm.context.transform.id).one()
    assert t.id == lm.context.transform.id
    r = lm.select(lm.Run, id=lm.context.run.id).one()
    assert r.transform_id == t.id
    pd.testing.assert_frame_equal(file.load(), df)
    assert file.path == inst.root / file.key


def test_record_prints_like_the_tutorial(inst, df):
    file = lm.add(lm.File(df, name="iris"))
    text = repr(file)
    assert text.startswith(f"File(id='{file.id}', name='iris', version=1, suffix='.parquet', ")
    assert f"hash='{file.hash}'" in text and "created_at=" in text
    html = file._repr_html_()
    assert "<table>" in html and file.id in html


def test_select_one_first_all_df(inst, df):
    lm.add(lm.File(df, name="a"))
    lm.add(lm.File(df.head(1), name="a"))
    with pytest.raises(MultipleResultsError, match=r"use \.first\(\)"):
        lm.select(lm.File, name="a").one()
    assert lm.select(lm.File, name="a", version=1).one().version == 1
    assert [f.version for f in lm.select(lm.File, name="a").all()] == [2, 1]
    table = lm.select(lm.File).df()
    assert list(table["version"]) == [2, 1] and table.index.name == "id"
    with pytest.raises(NotFoundError, match="no File"):
        lm.select(lm.File, name="nothing").one()
    with pytest.raises(InvalidArgumentError, match="has no field 'colour'"):
        lm.select(lm.File, colour="red")
    with pytest.raises(InvalidArgumentError, match="select takes one of"):
        lm.select(dict)


def test_load_records_an_input_except_for_the_run_that_made_it(inst, df):
    lm.track()
    file = lm.add(lm.File(df, name="a"))
    file.load()
    con = RegistrySQL(inst)
    assert con.execute("SELECT COUNT(*) FROM run_input").fetchone()[0] == 0
    reader = lm.track(new_run=True)
    lm.load("a")
    lm.load("a")  # twice is still one input
    assert con.execute("SELECT run_id, file_id FROM run_input").fetchall() == [(reader.id, file.id)]
    con.close()


def test_track_twice_keeps_the_run_unless_asked(inst):
    run = lm.track()
    assert lm.track().id == run.id
    assert lm.track(new_run=True).id != run.id


def test_unknown_names_and_versions(inst, df):
    lm.add(lm.File(df, name="iris"))
    with pytest.raises(NotFoundError, match="no file named 'irsi'; did you mean 'iris'"):
        lm.load("irsi")
    with pytest.raises(NotFoundError, match="'iris' has no version 7; it has versions 1"):
        lm.load("iris@7")
    with pytest.raises(InvalidArgumentError, match="is not a whole number from 1 up"):
        lm.load("iris@latest")
    with pytest.raises(InvalidArgumentError, match="is not a whole number from 1 up"):
        lm.load("iris@0")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "the name is empty"),
        ("   ", "the name is empty"),
        (" iris", "white space"),
        ("a\x00b", "control character"),
        ("x" * 201, "keep it to 200"),
        ("iris@2", "separates a name from its version"),
        (3, "must be a string"),
    ],
)
def test_bad_names(inst, df, name, message):
    with pytest.raises(InvalidArgumentError, match=message):
        lm.File(df, name=name)


def test_names_may_be_unicode_and_never_choose_a_path(inst, df):
    for i, name in enumerate(("données/../../escape", "μ-cells", "a/b/c")):
        frame = df.assign(k=i)
        file = lm.add(lm.File(frame, name=name))
        assert file.path.parent == inst.root and file.key == f"{file.id}.parquet"
        pd.testing.assert_frame_equal(lm.load(name), frame)


def test_unsupported_types_name_the_supported_ones(inst):
    class Thing:
        pass

    for obj in ([1, 2], lambda: 1, Thing()):
        with pytest.raises(
            UnsupportedTypeError, match=r"cannot store a .*supported types: DataFrame"
        ):
            lm.File(obj, name="x")
    with pytest.raises(UnsupportedTypeError, match="format 'zarr' cannot store a pandas"):
        lm.File(pd.DataFrame({"a": [1]}), name="x", format="zarr")
    with pytest.raises(InvalidArgumentError, match="unknown format 'csv'"):
        lm.File(pd.DataFrame({"a": [1]}), name="x", format="csv")
    with pytest.raises(InvalidArgumentError, match="needs a name"):
        lm.File(pd.DataFrame({"a": [1]}))
    with pytest.raises(InvalidArgumentError, match=r"lm\.add takes a File"):
        lm.add(pd.DataFrame({"a": [1]}))


def test_registering_a_format(inst):
    def write_npy(arr, path):
        with open(path, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    def load_npy(path):
        return np.load(path, allow_pickle=False)

    lm.register_format("npy", suffix=".npy", type="numpy:ndarray", write=write_npy, load=load_npy)
    arr = np.arange(12).reshape(3, 4)
    file = lm.add(lm.File(arr, name="arr"))
    assert file.suffix == ".npy"
    np.testing.assert_array_equal(lm.load("arr"), arr)


def test_failure_before_commit_leaves_neither_record_nor_bytes(inst, df):
    lm.add(lm.File(df, name="kept"))
    con = RegistrySQL(inst)
    # a real failure inside the transaction, after the bytes were renamed into place
    if inst.team:
        con.execute(
            "CREATE FUNCTION fail() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected';"
            " END $$ LANGUAGE plpgsql"
        )
        con.execute("CREATE TRIGGER fail BEFORE INSERT ON file EXECUTE FUNCTION fail()")
    else:
        con.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON file BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
        con.commit()
    before = stored_objects(inst.root)
    with pytest.raises(Exception, match="injected"):
        lm.add(lm.File(df.head(3), name="lost"))
    assert stored_objects(inst.root) == before
    assert temporaries(inst.root) == []
    assert con.execute("SELECT COUNT(*) FROM file WHERE name = 'lost'").fetchone()[0] == 0
    con.execute("DROP TRIGGER fail" + (" ON file" if inst.team else ""))
    if not inst.team:
        con.commit()
    con.close()
    assert lm.add(lm.File(df.head(3), name="lost")).version == 1


def test_failure_while_writing_leaves_no_temporary(inst):
    def write_half(obj, path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    lm.register_format(
        "half", suffix=".half", type="builtins:bytearray", write=write_half, load=bytes
    )
    with pytest.raises(OSError, match="No space left"):
        lm.add(lm.File(bytearray(b"data"), name="x"))
    assert temporaries(inst.root) == [] and stored_objects(inst.root) == []
    assert lm.select(lm.File, name="x").first() is None


def test_missing_and_corrupted_bytes(inst, df):
    file = lm.add(lm.File(df, name="a"))
    data = file.path.read_bytes()
    file.path.write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(IntegrityError, match="do not match their record"):
        lm.load("a", verify=True)
    file.path.unlink()
    with pytest.raises(IntegrityError, match="are missing"):
        lm.load("a")


def test_instance_resolution_order(tmp_path, monkeypatch):
    # the default per-user instance, created on first use
    assert instance.current().root == instance.default_root()
    # the nearest instance in the working directory or a parent
    lm.init(tmp_path / "near")
    instance.reset()
    (tmp_path / "near" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "near" / "sub")
    assert instance.current().root == tmp_path / "near"
    # the traitlet beats the nearest
    instance.configure_root(tmp_path / "configured")
    assert instance.current().root == tmp_path / "configured"
    # the environment beats the traitlet
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(tmp_path / "env"))
    assert instance.current().root == tmp_path / "env"
    # init beats all
    lm.init(tmp_path / "explicit")
    assert instance.current().root == tmp_path / "explicit"
    assert instance.current().how == "chosen with init"


def test_instance_path_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InstanceError, match="is a file, not a folder"):
        lm.init(tmp_path / "afile")


def test_user_comes_from_the_os_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMIN_MAGIC_USER", "ada")
    inst = lm.init(tmp_path / "i")
    assert lm.User.get_by_id(inst.user_id).handle == "ada"


def test_a_script_is_tracked_as_a_script(tmp_path):
    script = tmp_path / "make_data.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import pandas as pd
            import lamin_magic as lm
            lm.init({str(tmp_path / "inst")!r})
            run = lm.track()
            lm.add(lm.File(pd.DataFrame({{"a": [1]}}), name="from_script"))
            print(lm.context.transform.type, lm.context.transform.name, run.id)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMIN_MAGIC", "JPY_"))}
    # started from a notebook cell, a script inherits the kernel's JPY_SESSION_NAME
    env["JPY_SESSION_NAME"] = str(tmp_path / "the notebook that started it.ipynb")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, check=True
    )
    kind, name, _run_id = out.stdout.split()
    assert (kind, name) == ("script", "make_data")
    con = sqlite3.connect(tmp_path / "inst" / "inst.lndb")
    row = con.execute(
        "SELECT t.key, r.finished_at FROM file f JOIN run r ON f.run_id = r.id "
        "JOIN transform t ON r.transform_id = t.id WHERE f.name = 'from_script'"
    ).fetchone()
    con.close()
    assert row[0] == str(script) and row[1] is not None  # finished when the script ended


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_the_same_anndata_saved_again_is_unchanged(inst, fmt):
    # HDF5 can stamp times into a file; here h5py writes none, so identical objects give
    # identical bytes and dedup holds for AnnData too (a second apart, so a stamp would show)
    import time

    import anndata as ad

    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(["T", "B"] * 5)}, index=[f"c{i}" for i in range(10)]
    )
    adata = ad.AnnData(np.eye(10, 3, dtype="float32"), obs=obs)
    first = lm.add(lm.File(adata, name="cells", format=fmt))
    time.sleep(1.1)
    again = lm.add(lm.File(adata, name="cells", format=fmt))
    assert again.id == first.id and again.version == 1
