"""polars DataFrames, pyarrow Tables, MuData and numpy arrays: each loads back as itself, exactly,
or is refused with the fix."""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import stored_objects, temporaries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from polars.testing import assert_frame_equal
from polars.testing.parametric import dataframes

import lamin_magic as lm
from lamin_magic.errors import UnsupportedTypeError
from lamin_magic.storage.parquet_tag import TYPE_KEY, recorded_type

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DIAMONDS = Path(pa.__file__).parent / "tests" / "data" / "parquet"  # shipped with pyarrow
NUMPY_DATA = Path(np.__file__).parent / "random" / "tests" / "data"  # shipped with numpy


def round_trip(obj, name="x"):
    file = lm.add(lm.File(obj, name=name))
    return file, lm.load(f"{name}@{file.version}")


def refused(obj, message):
    with pytest.raises(UnsupportedTypeError, match=message):
        lm.add(lm.File(obj, name="refused"))
    assert lm.select(lm.File, name="refused").first() is None


# numpy ---------------------------------------------------------------------------------------

ENDIAN = "?"
numpy_dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness=ENDIAN),
    hnp.unsigned_integer_dtypes(endianness=ENDIAN),
    hnp.floating_dtypes(endianness=ENDIAN, sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness=ENDIAN),
    hnp.datetime64_dtypes(endianness=ENDIAN),
    hnp.timedelta64_dtypes(endianness=ENDIAN),
    hnp.unicode_string_dtypes(endianness=ENDIAN),
    hnp.byte_string_dtypes(),
    hnp.nested_dtypes(),
    hnp.array_dtypes(),
)


@SETTINGS
@given(
    arr=hnp.arrays(numpy_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
    fortran=st.booleans(),
)
def test_numpy_round_trip(inst, arr, fortran):
    if fortran:
        arr = np.asfortranarray(arr)
    file, back = round_trip(arr)
    assert file.suffix == ".npy"
    assert type(back) is np.ndarray
    assert back.dtype == arr.dtype and back.dtype.str == arr.dtype.str
    assert back.shape == arr.shape
    assert back.tobytes(order="A") == arr.tobytes(order="A")  # NaN payloads, NaT, padding
    if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous:
        assert back.flags.f_contiguous


def test_numpy_special_arrays_round_trip(inst):
    cases = [
        np.array(3.5),  # 0-d
        np.arange(6, dtype=">i4").reshape(2, 3),  # not the native byte order
        np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]"),
        np.array([1, -2], dtype="timedelta64[D]"),
        np.array([True, False]),
        np.array([1 + 2j, np.nan], dtype=np.complex64),
        np.array([1.5, np.inf], dtype=np.float16),
        np.zeros(2, dtype=np.dtype([("a", "i1"), ("b", "<f8", (2,))], align=True)),
        np.zeros((0, 3)),
    ]
    for i, arr in enumerate(cases):
        _, back = round_trip(arr, name=f"a{i}")
        assert back.dtype == arr.dtype and back.shape == arr.shape
        np.testing.assert_array_equal(back, arr)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: np.array([1, "a"], dtype=object), r"holds Python objects \(dtype object\)"),
        (lambda tmp: np.zeros(2, dtype=[("a", "O")]), "holds Python objects"),
        (lambda tmp: np.array(["a"], dtype=np.dtypes.StringDType()), r"x\.astype\(str\)"),
        (lambda tmp: np.matrix([[1, 2]]), r"numpy\.matrix would load back as a plain ndarray"),
        (lambda tmp: np.ma.masked_array([1, 2], mask=[0, 1]), r"np\.ma\.getmaskarray"),
        (lambda tmp: np.memmap(tmp / "m.dat", mode="w+", shape=(2,)), r"np\.asarray\(x\)"),
        (lambda tmp: np.zeros(2, dtype=np.dtype(float, metadata={"unit": "m"})), "metadata"),
    ],
)
def test_numpy_arrays_npy_would_change_are_refused(inst, tmp_path, make, message):
    refused(make(tmp_path), message)
    assert stored_objects(inst.root) == [] and temporaries(inst.root) == []


def test_numpy_is_never_pickled(inst):
    file, _ = round_trip(np.arange(3))
    assert b"pickle" not in file.path.read_bytes()
    np.load(file.path, allow_pickle=False)  # a plain .npy any numpy reads


def test_numpy_real_data(inst):
    # numpy's own test vectors for its random generators: seeds and uint64 outputs
    for csv in sorted(NUMPY_DATA.glob("*.csv"))[:4]:
        arr = np.loadtxt(
            csv, delimiter=",", skiprows=1, dtype=np.uint64, converters=lambda s: int(s, 0)
        )
        _, back = round_trip(arr, name=csv.stem)
        assert back.dtype == arr.dtype
        np.testing.assert_array_equal(back, arr)


# polars --------------------------------------------------------------------------------------


@SETTINGS
@given(df=dataframes(max_cols=6, max_size=8, excluded_dtypes=[pl.Object]))
def test_polars_round_trip(inst, df):
    file, back = round_trip(df)
    assert file.suffix == ".parquet"
    assert type(back) is pl.DataFrame
    assert back.schema == df.schema
    assert_frame_equal(back, df, check_exact=True, categorical_as_str=False)


def test_polars_dtypes_round_trip(inst):
    df = pl.DataFrame(
        {
            "cat": pl.Series(["a", "b", None], dtype=pl.Categorical),
            "enum": pl.Series(["x", "y", "x"], dtype=pl.Enum(["y", "x", "z"])),
            "dec": pl.Series(
                [decimal.Decimal("1.20"), None, decimal.Decimal("-3.45")], dtype=pl.Decimal(10, 2)
            ),
            "list": [[1, 2], [], None],
            "array": pl.Series([[1, 2], [3, 4], [5, 6]], dtype=pl.Array(pl.Int16, 2)),
            "struct": [{"a": 1, "b": "x"}, {"a": None, "b": None}, None],
            "berlin": pl.Series([dt.datetime(2020, 1, 1)] * 3).dt.replace_time_zone(
                "Europe/Berlin"
            ),
            "ns": pl.Series([dt.datetime(2020, 1, 1)] * 3, dtype=pl.Datetime("ns")),
            "null": pl.Series([None] * 3, dtype=pl.Null),
            "i128": pl.Series([2**100, -1, 0], dtype=pl.Int128),  # pyarrow cannot read these
            "f32": pl.Series([1.5, float("nan"), None], dtype=pl.Float32),
            "bin": [b"a", b"", None],
            "time": [dt.time(1, 2, 3)] * 3,
            "dur": [dt.timedelta(days=1)] * 3,
        }
    )
    _, back = round_trip(df)
    assert back.schema == df.schema
    assert_frame_equal(back, df, check_exact=True, categorical_as_str=False)


def test_polars_refusals(inst):
    refused(pl.DataFrame({"o": pl.Series([object()], dtype=pl.Object)}), r"pl\.Object")


def test_polars_rows_without_columns_round_trip(inst):
    df = pl.DataFrame({"a": [1, 2]}).drop("a")  # polars' parquet keeps the height
    _, back = round_trip(df)
    assert back.shape == (2, 0)


def test_polars_real_data(inst):
    for path in sorted(DIAMONDS.glob("*.parquet")):
        df = pl.read_parquet(path)
        _, back = round_trip(df, name=path.stem)
        assert_frame_equal(back, df, check_exact=True)


# pyarrow -------------------------------------------------------------------------------------

ARROW_TYPES = [
    pa.int8(),
    pa.uint64(),
    pa.float16(),
    pa.large_string(),
    pa.large_binary(),
    pa.string_view(),
    pa.binary(3),
    pa.dictionary(pa.int8(), pa.string()),
    pa.dictionary(pa.int32(), pa.large_string()),  # parquet gives back string values
    pa.dictionary(pa.int16(), pa.string(), ordered=True),
    pa.timestamp("s"),  # parquet has no seconds
    pa.timestamp("ms", "Europe/Berlin"),
    pa.timestamp("ns", "UTC"),
    pa.date32(),
    pa.date64(),
    pa.time32("s"),
    pa.time64("ns"),
    pa.duration("s"),
    pa.decimal128(5, 2),
    pa.decimal256(40, 3),
    pa.list_(pa.int32()),
    pa.large_list(pa.string()),
    pa.list_(pa.int8(), 2),
    pa.list_(pa.field("element", pa.int32())),
    pa.struct([("a", pa.int32()), ("b", pa.list_(pa.dictionary(pa.int8(), pa.string())))]),
    pa.map_(pa.string(), pa.int32()),  # pyarrow renames the entries when it reads them
    pa.null(),
]


def values_of(type_):
    """Values of an arrow type, for hypothesis; nulls included."""
    if pa.types.is_dictionary(type_):
        inner = st.sampled_from(["a", "b", "ç", ""])
    elif pa.types.is_integer(type_):
        info = np.iinfo(type_.to_pandas_dtype())
        inner = st.integers(int(info.min), int(info.max))
    elif pa.types.is_floating(type_):
        inner = st.floats(width=16 if type_ == pa.float16() else 64, allow_nan=False)
    elif pa.types.is_fixed_size_binary(type_):
        inner = st.binary(min_size=3, max_size=3)
    elif pa.types.is_string(type_) or pa.types.is_large_string(type_) or type_ == pa.string_view():
        inner = st.text(max_size=5)
    elif pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        inner = st.binary(max_size=5)
    elif pa.types.is_date64(type_):
        inner = st.integers(-10_000, 10_000).map(lambda d: d * 86_400_000)
    elif pa.types.is_temporal(type_):
        inner = st.integers(0, 86_399)  # in range for every unit, time32 included
    elif pa.types.is_decimal(type_):
        inner = st.decimals(-999, 999, places=2, allow_nan=False)
    elif pa.types.is_fixed_size_list(type_):
        inner = st.lists(st.integers(-128, 127), min_size=2, max_size=2)
    elif pa.types.is_list(type_) or pa.types.is_large_list(type_):
        inner = st.lists(values_of(type_.value_type), max_size=3)
    elif pa.types.is_struct(type_):
        inner = st.fixed_dictionaries({f.name: values_of(f.type) for f in type_})
    elif pa.types.is_map(type_):
        inner = st.lists(st.tuples(st.text(max_size=3), st.integers(-5, 5)), max_size=3)
    else:
        return st.none()
    return st.one_of(st.none(), inner)


@st.composite
def tables(draw):
    n = draw(st.integers(0, 5))
    chosen = draw(st.lists(st.sampled_from(ARROW_TYPES), min_size=1, max_size=4))
    columns = {}
    for i, type_ in enumerate(chosen):
        values = draw(st.lists(values_of(type_), min_size=n, max_size=n))
        columns[f"c{i}"] = pa.array(values, type_)
    metadata = draw(st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4)))
    return pa.table(columns, metadata=metadata)


@SETTINGS
@given(table=tables())
def test_arrow_round_trip(inst, table):
    file, back = round_trip(table)
    assert file.suffix == ".parquet"
    assert type(back) is pa.Table
    assert back.schema.equals(table.schema, check_metadata=True), (back.schema, table.schema)
    assert back.equals(table)


def test_arrow_keeps_field_metadata_nullability_and_duplicate_names(inst):
    schema = pa.schema(
        [
            pa.field("a", pa.int32(), nullable=False, metadata={"unit": "m"}),
            pa.field("a", pa.string()),
        ],
        metadata={"source": "test"},
    )
    table = pa.Table.from_arrays(
        [pa.array([1, 2], pa.int32()), pa.array(["x", None])], schema=schema
    )
    _, back = round_trip(table)
    assert back.schema.equals(schema, check_metadata=True)
    assert back.equals(table)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pa.table({"a": [1, 2]}).drop_columns(["a"]), "no columns"),
        (lambda: pa.table({"d": pa.array([1, 2]).dictionary_encode()}), "dictionary of int64"),
        (lambda: pa.table({"d": pa.array([1], pa.date64())}), "times within a day"),
        (lambda: pa.table({"a": [1]}, metadata={TYPE_KEY: "x"}), "keeps for itself"),
        (
            lambda: pa.table({"i": pa.array([None], pa.month_day_nano_interval())}),
            "cannot store 'refused' as arrow-parquet: ArrowNotImplementedError",
        ),
    ],
)
def test_arrow_tables_parquet_would_change_are_refused(inst, make, message):
    refused(make(), message)
    assert stored_objects(inst.root) == [] and temporaries(inst.root) == []


def test_arrow_real_data(inst):
    # parquet files pyarrow ships: written by pandas, with its b"pandas" metadata
    for path in sorted(DIAMONDS.glob("*.parquet")):
        table = pq.read_table(path)
        _, back = round_trip(table, name=path.stem)
        assert back.schema.equals(table.schema, check_metadata=True)
        assert back.equals(table)


# three types, one suffix ----------------------------------------------------------------------


def test_each_parquet_type_loads_as_itself_and_never_shares_bytes(inst):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    objects = {
        "pandas": frame,
        "polars": pl.from_pandas(frame),
        "arrow": pa.Table.from_pandas(frame, preserve_index=False),
        "arrow_with_pandas_metadata": pa.Table.from_pandas(frame),
    }
    files = {name: lm.add(lm.File(obj, name=name)) for name, obj in objects.items()}
    assert len({f.hash for f in files.values()}) == len(files)
    assert len({f.key for f in files.values()}) == len(files)
    for name, obj in objects.items():
        assert type(lm.load(name)) is type(obj), name
    # the same object saved again under other names: each record still loads as its type
    for name, obj in objects.items():
        twin = lm.add(lm.File(obj, name=f"{name}-again"))
        assert twin.key == files[name].key
        assert type(lm.load(f"{name}-again")) is type(obj)


def test_same_content_across_versions_loads_as_the_latest_type(inst):
    frame = pd.DataFrame({"a": [1, 2]})
    lm.add(lm.File(frame, name="t"))
    second = lm.add(lm.File(pl.from_pandas(frame), name="t"))
    assert second.version == 2
    assert type(lm.load("t")) is pl.DataFrame
    assert type(lm.load("t@1")) is pd.DataFrame


def test_a_parquet_of_an_older_lamin_magic_loads_as_pandas(inst, tmp_path):
    frame = pd.DataFrame({"a": [1.5, 2.5]})
    file = lm.add(lm.File(frame, name="old"))
    meta = pq.read_metadata(file.path).metadata
    assert TYPE_KEY.encode() not in meta and b"pandas" in meta  # as every earlier version wrote
    pd.testing.assert_frame_equal(lm.load("old"), frame)


def test_other_keys_in_the_metadata_are_tolerated(tmp_path):
    table = pa.Table.from_pandas(pd.DataFrame({"a": [1]}))
    table = table.replace_schema_metadata(
        {**table.schema.metadata, b"lamin_magic": b'{"index": "x"}', b"other": b"1"}
    )
    pq.write_table(table, tmp_path / "p.parquet")
    assert recorded_type(tmp_path / "p.parquet") is None
    marked = table.replace_schema_metadata({**table.schema.metadata, TYPE_KEY: "pyarrow:Table"})
    pq.write_table(marked, tmp_path / "t.parquet")
    assert recorded_type(tmp_path / "t.parquet") == "pyarrow:Table"


def test_a_type_this_version_does_not_know_is_refused(inst):
    file = lm.add(lm.File(pa.table({"a": [1]}), name="future"))
    table = pq.read_table(file.path)
    data = table.replace_schema_metadata({TYPE_KEY: "cudf:DataFrame"})
    file.path.chmod(0o644)
    pq.write_table(data, file.path)
    with pytest.raises(UnsupportedTypeError, match=r"holds a 'cudf:DataFrame'.*upgrade it"):
        lm.load("future", verify=False)


# MuData --------------------------------------------------------------------------------------


def make_mudata(n_obs: int, seed: int) -> md.MuData:
    rng = np.random.default_rng(seed)
    names = [f"cell{i}" for i in range(n_obs)]
    rna = ad.AnnData(
        rng.normal(size=(n_obs, 3)).astype(np.float32),
        obs=pd.DataFrame({"kind": rng.choice(["a", "b"], n_obs)}, index=names),
        var=pd.DataFrame(index=["g1", "g2", "g3"]),
    )
    rna.obsm["pca"] = rng.normal(size=(n_obs, 2))
    atac = ad.AnnData(
        rng.poisson(2, size=(n_obs - 1, 2)).astype(np.int64),
        obs=pd.DataFrame(index=names[1:]),
        var=pd.DataFrame(index=["p1", "p2"]),
    )
    atac.uns["peaks"] = {"caller": "macs2", "n": 2}
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["batch"] = rng.integers(0, 3, n_obs)
    mdata.uns["study"] = "test"
    return mdata


def assert_adata_equal(back: ad.AnnData, adata: ad.AnnData) -> None:
    assert back.X.dtype == adata.X.dtype
    np.testing.assert_array_equal(back.X, adata.X)
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    pd.testing.assert_frame_equal(back.var, adata.var)
    assert list(back.obsm) == list(adata.obsm)
    for key in adata.obsm:
        np.testing.assert_array_equal(back.obsm[key], adata.obsm[key])
    assert back.uns == adata.uns


def assert_mudata_equal(back: md.MuData, mdata: md.MuData) -> None:
    assert type(back) is md.MuData
    assert list(back.mod) == list(mdata.mod)
    for name in mdata.mod:
        assert_adata_equal(back.mod[name], mdata.mod[name])
    pd.testing.assert_frame_equal(back.obs, mdata.obs)
    pd.testing.assert_frame_equal(back.var, mdata.var)
    assert back.uns == mdata.uns
    assert back.axis == mdata.axis
    for name in mdata.mod:
        np.testing.assert_array_equal(back.obsmap[name], mdata.obsmap[name])


@settings(SETTINGS, max_examples=10)
@given(n_obs=st.integers(2, 20), seed=st.integers(0, 2**32 - 1))
def test_mudata_round_trip(inst, n_obs, seed):
    mdata = make_mudata(n_obs, seed)
    columns = list(mdata.obs.columns)
    file, back = round_trip(mdata)
    assert file.suffix == ".h5mu"
    assert list(mdata.obs.columns) == columns  # saving pulled nothing into the user's object
    assert_mudata_equal(back, mdata)


def test_mudata_refusals(inst):
    mdata = make_mudata(4, 0)
    mdata.mod["rna"].uns[1] = "x"
    refused(mdata, r"mdata\.mod\[.rna.\]\.uns has the key 1")
    mdata = make_mudata(4, 0)
    mdata.uns["pair"] = (1, 2)
    refused(mdata, r"mdata\.uns\['pair'\] is a tuple")


def test_mudata_real_data(inst):
    # pyarrow's shipped diamonds sample as two modalities: measurements and prices
    frame = pq.read_table(DIAMONDS / "v0.7.1.parquet").to_pandas()
    frame.index = frame.index.astype(str)
    sizes = ad.AnnData(frame[["carat", "depth", "table", "x", "y", "z"]].to_numpy())
    sizes.obs_names = frame.index
    sizes.var_names = ["carat", "depth", "table", "x", "y", "z"]
    sizes.obs["cut"] = frame["cut"].to_numpy()
    prices = ad.AnnData(frame[["price"]].to_numpy().astype(np.float64))
    prices.obs_names = frame.index
    prices.var_names = ["price"]
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"sizes": sizes, "prices": prices})
    _, back = round_trip(mdata, name="diamonds")
    assert_mudata_equal(back, mdata)


# optional libraries, lazily ------------------------------------------------------------------

HIDE = textwrap.dedent(
    """
    import importlib.abc, sys

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {hidden!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    """
)


def run(code: str, hidden: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE.format(hidden=hidden) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_missing_library_is_one_line_saying_what_to_install(inst):
    lm.add(lm.File(pl.DataFrame({"a": [1]}), name="p"))
    lm.add(lm.File(make_mudata(3, 0), name="m"))
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="d"))
    out = run(
        f"""
        import sys, lamin_magic as lm
        from lamin_magic.errors import UnsupportedTypeError
        lm.init({str(inst.root)!r})
        print(type(lm.load("d")).__name__)
        for name in ("p", "m"):
            try:
                lm.load(name)
            except UnsupportedTypeError as e:
                print(e)
        """,
        hidden=("polars", "mudata"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "DataFrame",
        "this needs polars, which is not installed here; install it: "
        "pip install 'lamin_magic[polars]'",
        "this needs mudata, which is not installed here; install it: "
        "pip install 'lamin_magic[mudata]'",
    ]


def test_saving_and_loading_pandas_imports_no_polars_or_mudata(tmp_path):
    out = run(
        f"""
        import sys, pandas as pd, lamin_magic as lm
        lm.init({str(tmp_path / "inst")!r})
        lm.add(lm.File(pd.DataFrame({{"a": [1]}}), name="d"))
        lm.load("d")
        print(sorted(m for m in ("polars", "mudata") if m in sys.modules))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# the magics ----------------------------------------------------------------------------------


def test_magic_saves_and_loads_an_array(ip, capsys):
    ip.user_ns["arr"] = np.arange(6, dtype=">f4").reshape(2, 3)
    ip.run_line_magic("lamin", "save arr")
    assert capsys.readouterr().out.startswith("saved arr as arr@1")
    ip.run_line_magic("lamin", "load arr as back")
    back = ip.user_ns["back"]
    assert back.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(back, ip.user_ns["arr"])


def test_bare_cell_save_takes_frames_tables_and_mudata_but_not_arrays(ip, capsys):
    ip.run_cell_magic(
        "lamin",
        "save",
        "import numpy as np, polars as pl, pyarrow as pa\n"
        "frame = pl.DataFrame({'a': [1]})\n"
        "table = pa.table({'a': [1]})\n"
        "arr = np.arange(3)\n",
    )
    capsys.readouterr()
    names = {f.name for f in lm.select(lm.File).all()}
    assert names == {"frame", "table"}
