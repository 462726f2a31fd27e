"""lm.open and %lamin open: lazy objects over the stored bytes, which they never change."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import anndata as ad
import duckdb
import h5py
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

import lamin_magic as lm
from lamin_magic import registry as reg
from lamin_magic import tracking
from lamin_magic.errors import (
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    UnsupportedTypeError,
)
from lamin_magic.storage.hashing import hash_path

ENGINES = (None, "pyarrow", "polars", "duckdb")


def frame(rows: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "n": np.arange(rows),
            "s": [f"cell_{i}" for i in range(rows)],
        }
    )


def select(opened, engine, columns, low):
    """Rows with n >= low, the given columns, as pandas: each engine's own lazy query."""
    if engine in (None, "pyarrow"):
        table = opened.to_table(columns=columns, filter=pc.field("n") >= low)
        return table.to_pandas()
    if engine == "polars":
        return opened.filter(pl.col("n") >= low).select(columns).collect().to_pandas()
    return opened.filter(f"n >= {low}").project(", ".join(columns)).df()


def unchanged(file: reg.File) -> tuple[int, str]:
    """(size, hash) of the stored bytes as they are now."""
    return hash_path(file.path)


def assert_check_clean() -> None:
    report = lm.check()
    assert report.ok, str(report)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_opens_parquet_as_its_lazy_type_with_the_right_rows(inst, engine):
    df = frame()
    file = lm.add(lm.File(df, name="cells"))
    before = unchanged(file)
    opened = lm.open("cells", engine=engine)
    expected_type = {
        None: pads.Dataset,
        "pyarrow": pads.Dataset,
        "polars": pl.LazyFrame,
        "duckdb": duckdb.DuckDBPyRelation,
    }[engine]
    assert isinstance(opened, expected_type)
    got = select(opened, engine, ["s", "x"], 990)
    want = df.loc[df.n >= 990, ["s", "x"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    assert list(got.columns) == ["s", "x"]
    assert unchanged(file) == before
    assert_check_clean()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=50),
    texts=st.data(),
    engine=st.sampled_from(ENGINES),
)
def test_what_opens_is_what_was_saved(inst, values, texts, engine):
    words = texts.draw(st.lists(st.text(max_size=8), min_size=len(values), max_size=len(values)))
    df = pd.DataFrame({"n": np.arange(len(values)), "v": values, "w": words})
    lm.add(lm.File(df, name="random"))
    low = len(values) // 2
    got = select(lm.open("random", engine=engine), engine, ["v", "w"], low)
    want = df.loc[df.n >= low, ["v", "w"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


def test_an_open_is_an_input_of_the_run_like_a_load(inst):
    file = lm.add(lm.File(frame(), name="cells"))
    maker = lm.context.run
    lm.open("cells")  # the run that made it does not read it
    assert not reg.RunInput.select().where(reg.RunInput.file == file.id).exists()
    reader = tracking.track(new_run=True)
    assert reader.id != maker.id
    lm.open("cells", engine="duckdb")
    inputs = [(r.run_id, r.file_id) for r in reg.RunInput.select()]
    assert inputs == [(reader.id, file.id)]


def test_name_at_version_opens_that_version(inst):
    lm.add(lm.File(pd.DataFrame({"n": [1, 2]}), name="v"))
    lm.add(lm.File(pd.DataFrame({"n": [1, 2, 3]}), name="v"))
    assert lm.open("v@1").count_rows() == 2
    assert lm.open("v").count_rows() == 3
    assert lm.open("v@2", engine="polars").collect().height == 3
    with pytest.raises(NotFoundError, match="has no version 3; it has versions 1, 2"):
        lm.open("v@3")
    with pytest.raises(InvalidArgumentError, match="version"):
        lm.open("v@x")


def test_trashed_files_do_not_open_until_restored(inst):
    lm.add(lm.File(frame(10), name="cells"))
    lm.delete("cells")
    with pytest.raises(NotFoundError, match=r"in the trash; lm.restore\('cells'\)"):
        lm.open("cells")
    lm.restore("cells")
    assert lm.open("cells").count_rows() == 10


def test_unknown_engine_is_one_line_naming_the_engines(inst):
    lm.add(lm.File(frame(10), name="cells"))
    lm.add(lm.File(ad.AnnData(np.ones((2, 2), dtype="float32")), name="a"))
    with pytest.raises(InvalidArgumentError) as e:
        lm.open("cells", engine="spark")
    assert str(e.value) == (
        "parquet files have no engine 'spark'; use one of: pyarrow, polars, duckdb "
        "(default pyarrow)"
    )
    with pytest.raises(InvalidArgumentError, match="h5ad files have no engine 'polars'"):
        lm.open("a", engine="polars")
    assert not reg.RunInput.select().exists()


HIDE = """
import sys
from importlib.machinery import PathFinder

class WithoutHidden:
    # the path finder, blind to these packages: importing one fails as when not installed,
    # and importlib.util.find_spec says None
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            return None
        return PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        found = PathFinder.find_distributions(*args, **kwargs)
        return (d for d in found if d.metadata["Name"].lower() not in {hidden!r})

    @classmethod
    def invalidate_caches(cls):
        PathFinder.invalidate_caches()

sys.meta_path[:] = [WithoutHidden if f is PathFinder else f for f in sys.meta_path]
"""


def run_hidden(hidden: set[str], code: str, tmp_path) -> subprocess.CompletedProcess[str]:
    script = HIDE.format(hidden=hidden) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
    )


@pytest.mark.parametrize(
    ("engine", "package", "extra"), [("polars", "polars", "polars"), ("duckdb", "duckdb", "duckdb")]
)
def test_a_missing_engine_is_one_line_with_the_install(tmp_path, engine, package, extra):
    out = run_hidden(
        {package},
        f"""
        import pandas as pd
        import lamin_magic as lm
        from lamin_magic.errors import MissingLibraryError
        lm.init("inst")
        lm.add(lm.File(pd.DataFrame({{"a": [1]}}), name="t"))
        try:
            lm.open("t", engine={engine!r})
        except MissingLibraryError as e:
            print(e)
        print(lm.open("t").count_rows())  # the default engine still works
        print({package!r} in sys.modules)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"engine={engine!r} needs {package}, which is not installed here: pip install "
        f"{package} (or pip install 'lamin_magic[{extra}]'); or load the whole object instead",
        "1",
        "False",
    ]


def test_zarr_without_xarray_says_what_to_install(tmp_path):
    out = run_hidden(
        {"xarray"},
        """
        import warnings
        import numpy as np, anndata as ad
        import lamin_magic as lm
        warnings.simplefilter("ignore")
        lm.init("inst")
        lm.add(lm.File(ad.AnnData(np.ones((2, 2), dtype="float32")), name="z", format="zarr"))
        try:
            lm.open("z")
        except lm.errors.MissingLibraryError as e:
            print(e)
        print(lm.load("z").shape)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "opening a zarr AnnData lazily (anndata.experimental.read_lazy) needs xarray, which is "
        "not installed here: pip install xarray (or pip install 'lamin_magic[lazy]'); or load "
        "the whole object instead",
        "(2, 2)",
    ]


def test_open_imports_an_engine_only_when_asked_for(tmp_path):
    code = (
        "import sys, pandas as pd, lamin_magic as lm; lm.init('inst'); "
        "lm.add(lm.File(pd.DataFrame({'a': [1]}), name='t')); lm.open('t'); "
        "print(*(m in sys.modules for m in ('polars', 'duckdb', 'xarray', 'dask')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert out.stdout.split() == ["False"] * 4


def anndata_object(sparse: bool) -> ad.AnnData:
    rng = np.random.default_rng(1)
    x = rng.random((40, 12), dtype=np.float32)
    x[x < 0.6] = 0
    adata = ad.AnnData(sp.csr_matrix(x) if sparse else x)
    adata.obs["kind"] = pd.Categorical(["a", "b"] * 20)
    return adata


def dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@pytest.mark.parametrize("sparse", [False, True])
def test_h5ad_opens_backed_read_only_and_cannot_write_the_stored_file(inst, sparse):
    adata = anndata_object(sparse)
    file = lm.add(lm.File(adata, name="a"))
    before = unchanged(file)
    opened = lm.open("a")
    assert isinstance(opened, ad.AnnData)
    assert opened.isbacked and opened.file._filemode == "r"
    assert opened.shape == (40, 12)
    np.testing.assert_array_equal(dense(opened.X[5:9]), dense(adata.X[5:9]))
    np.testing.assert_array_equal(dense(opened[opened.obs.kind == "b"].X), dense(adata.X[1::2]))
    # every way of writing into the stored file fails, and leaves it as it was
    with pytest.raises(OSError, match="already open for read-only"):
        opened.write()
    with pytest.raises(OSError, match="already open for read-only"):
        opened[:3].write_h5ad(file.path)
    with pytest.raises(OSError, match="already open for read-only"):
        h5py.File(file.path, "a")
    if not sparse:
        opened.file.open()
        with pytest.raises(OSError, match="no write intent"):
            opened.X[0, 0] = 42.0
    assert unchanged(file) == before
    assert_check_clean()
    del opened


def test_zarr_opens_through_anndatas_lazy_reader(inst):
    adata = anndata_object(sparse=True)
    file = lm.add(lm.File(adata, name="z", format="zarr"))
    before = unchanged(file)
    opened = lm.open("z")
    assert isinstance(opened, ad.AnnData) and not opened.isbacked
    assert type(opened.X).__module__.startswith("dask")  # nothing read yet
    np.testing.assert_array_equal(dense(opened.X[:10].compute()), dense(adata.X[:10]))
    assert list(opened.obs["kind"].values[:4]) == ["a", "b", "a", "b"]
    with pytest.raises(ValueError, match="filename"):
        opened.write()  # lazy, not backed: it has no file of its own to write into
    assert unchanged(file) == before
    assert_check_clean()


@pytest.mark.parametrize("engine", ENGINES)
def test_damaged_bytes_are_refused_when_verifying(inst, engine):
    file = lm.add(lm.File(frame(), name="cells"))
    data = bytearray(file.path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a flipped bit in a column chunk: the footer stays readable
    file.path.write_bytes(data)
    with pytest.raises(IntegrityError, match="the bytes of cells@1 do not match their record"):
        lm.open("cells", engine=engine)
    assert not reg.RunInput.select().exists()


def test_missing_bytes_are_one_line(inst):
    file = lm.add(lm.File(frame(10), name="cells"))
    file.path.unlink()
    with pytest.raises(IntegrityError, match="the bytes of cells@1 are missing"):
        lm.open("cells", verify=False)


def test_unreadable_bytes_unverified_are_checked_then(inst):
    file = lm.add(lm.File(frame(10), name="cells"))
    file.path.write_bytes(b"not parquet at all")
    with pytest.raises(IntegrityError, match="do not match their record"):
        lm.open("cells", verify=False)


def test_a_root_with_glob_characters_opens_only_the_stored_file(tmp_path):
    # duckdb and polars take *, ? and [] in a path as a pattern: "in[st]*" also matches the
    # folder "ins" beside the instance, where a decoy with the same name waits
    lm.init(tmp_path / "in[st]*")
    file = lm.add(lm.File(pd.DataFrame({"n": [1, 2, 3]}), name="t"))
    decoy = tmp_path / "ins"
    decoy.mkdir()
    pd.DataFrame({"n": [666]}).to_parquet(decoy / file.path.name)
    assert sorted(lm.open("t").to_table().column("n").to_pylist()) == [1, 2, 3]
    assert sorted(lm.open("t", engine="polars").collect()["n"].to_list()) == [1, 2, 3]
    assert sorted(n for (n,) in lm.open("t", engine="duckdb").fetchall()) == [1, 2, 3]


def test_formats_without_a_lazy_reader_say_to_load(tmp_path):
    lm.init(tmp_path / "inst", allow_pickle=True)
    lm.add(lm.File({"a": 1}, name="d"))  # stored as .pkl here
    with pytest.raises(UnsupportedTypeError) as e:
        lm.open("d")
    assert str(e.value) == "d@1 (pickle) has no lazy reader; load it: lm.load('d@1')"


def test_a_lazy_reader_that_unpickles_needs_the_users_trust(tmp_path):
    import pickle

    opened = []

    def open_pickled(engine):
        def read(path):
            opened.append(path)
            return pickle.loads(path.read_bytes())

        return read

    lm.register_format(
        "pk2",
        suffix=".pk2",
        type="builtins:dict",
        write=lambda obj, path: path.write_bytes(pickle.dumps(obj)),
        load=lambda path: pickle.loads(path.read_bytes()),
        needs_pickle=True,
        open=open_pickled,
    )
    lm.init(tmp_path / "inst", allow_pickle=True)
    lm.add(lm.File({"a": 1}, name="d", format="pk2"))
    assert lm.open("d") == {"a": 1}
    lm.init(tmp_path / "inst", allow_pickle=False)
    with pytest.raises(UnsupportedTypeError, match=r"you do not allow unpickling \.pk2 files"):
        lm.open("d")
    assert len(opened) == 1


def test_a_registered_format_can_bring_its_own_lazy_reader(inst):
    # raw float64 values, opened as a read-only memory map: nothing read until indexed
    def open_f64(engine):
        if engine is not None:
            raise InvalidArgumentError("f64 files have no engines")
        return lambda path: np.memmap(path, dtype="float64", mode="r")

    lm.register_format(
        "f64",
        suffix=".f64",
        type="numpy:ndarray",
        write=lambda arr, path: arr.astype("float64").tofile(path),
        load=lambda path: np.fromfile(path, dtype="float64"),
        open=open_f64,
    )
    arr = np.arange(100.0)
    file = lm.add(lm.File(arr, name="arr", format="f64"))
    before = unchanged(file)
    opened = lm.open("arr")
    assert isinstance(opened, np.memmap) and not opened.flags.writeable
    np.testing.assert_array_equal(opened[30:40], arr[30:40])
    with pytest.raises(ValueError, match="read-only"):
        opened[0] = 1
    with pytest.raises(InvalidArgumentError, match="f64 files have no engines"):
        lm.open("arr", engine="polars")
    assert unchanged(file) == before


def test_a_record_opens_itself(inst):
    lm.add(lm.File(frame(10), name="cells"))
    record = lm.select(lm.File, name="cells").one()
    assert record.open(engine="polars").collect().height == 10


# --- the magic -----------------------------------------------------------------------------


def test_magic_open_binds_the_lazy_object(ip, capsys):
    ip.user_ns["df"] = frame(100)
    ip.run_line_magic("lamin", "save df name=cells")
    capsys.readouterr()
    ip.run_line_magic("lamin", "open cells")
    out = capsys.readouterr().out
    assert isinstance(ip.user_ns["cells"], pads.Dataset)
    assert out == "opened cells@1 into cells (FileSystemDataset, read on demand)\n"
    ip.run_line_magic("lamin", "open cells@1 as lazy engine=polars verify=no")
    assert isinstance(ip.user_ns["lazy"], pl.LazyFrame)
    assert capsys.readouterr().out.startswith("opened cells@1 into lazy (LazyFrame")
    ip.run_cell("rel = %lamin open cells engine=duckdb")
    assert isinstance(ip.user_ns["rel"], duckdb.DuckDBPyRelation)
    assert ip.user_ns["rel"].filter("n < 5").shape == (5, 3)
    assert capsys.readouterr().out == ""  # an assignment prints nothing


def test_magic_open_mistakes_are_one_line(ip):
    ip.user_ns["df"] = frame(10)
    ip.run_line_magic("lamin", "save df name=len")
    with pytest.raises(UsageError, match="parquet files have no engine 'spark'"):
        ip.run_line_magic("lamin", "open len as x engine=spark")
    with pytest.raises(UsageError) as e:
        ip.run_line_magic("lamin", "open len")
    assert str(e.value) == (
        "'len' is a Python builtin, which the kernel needs; open it under another name: "
        "%lamin open len as VAR, or x = %lamin open len"
    )
    with pytest.raises(UsageError, match="write %lamin open NAME"):
        ip.run_line_magic("lamin", "open len as")
    with pytest.raises(UsageError, match=r"%lamin load has no option engine="):
        ip.run_line_magic("lamin", "load len as x engine=polars")
    with pytest.raises(UsageError, match="no file named 'nothing'"):
        ip.run_line_magic("lamin", "open nothing")


def test_magic_help_describes_open(ip):
    doc = type(ip.find_magic("lamin").__self__).lamin.__doc__
    assert "%lamin open NAME[@VERSION] [as VAR] [engine=pyarrow|polars|duckdb]" in doc
