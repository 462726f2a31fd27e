"""A DataFrame comes back exactly as saved, or its save is refused in one line: never changed.

Hypothesis builds frames from the kinds of slot that pyarrow's round trip changes on its own
(missing values in object columns, object columns of numbers or lists, ArrowDtype and
`string[pyarrow]` columns and indexes, non-string and RangeIndex column labels, a DatetimeIndex
with a frequency, attrs) mixed with ordinary ones.
"""

from __future__ import annotations

import datetime
import decimal
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lamin_magic as lm
from lamin_magic.errors import UnsupportedTypeError

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROWS = 4
texts = st.text(max_size=6)
missing = st.sampled_from([None, float("nan"), pd.NA])


def typed(value):
    """A value with its type, all the way down; floats by their bits (NaN, -0.0)."""
    if isinstance(value, float):
        return ("float", np.float64(value).tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.tobytes())
    return (type(value).__module__, type(value).__qualname__, repr(value))


def assert_same_frame(saved: pd.DataFrame, loaded: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        loaded,
        saved,
        check_exact=True,
        check_column_type=True,
        check_index_type=True,
        check_frame_type=True,
        check_freq=True,
        check_flags=True,
        check_categorical=True,
    )
    assert loaded.attrs == saved.attrs
    assert [typed(c) for c in loaded.columns] == [typed(c) for c in saved.columns]
    assert type(loaded.columns) is type(saved.columns)
    for axis in ("index", "columns"):
        a, b = getattr(saved, axis), getattr(loaded, axis)
        assert [str(d) for d in getattr(a, "dtypes", [a.dtype])] == [
            str(d) for d in getattr(b, "dtypes", [b.dtype])
        ]
        assert [typed(v) for v in a] == [typed(v) for v in b]
        assert getattr(a, "freq", None) == getattr(b, "freq", None)
    for i in range(saved.shape[1]):
        a, b = saved.iloc[:, i], loaded.iloc[:, i]
        assert type(a.dtype) is type(b.dtype) and repr(a.dtype) == repr(b.dtype)
        assert [typed(v) for v in a] == [typed(v) for v in b]


def object_column():
    def with_missing(values):
        return st.tuples(st.lists(st.booleans(), min_size=ROWS, max_size=ROWS), missing).map(
            lambda t: [t[1] if gap else v for v, gap in zip(values, t[0], strict=True)]
        )

    def of(elements):
        return st.lists(elements, min_size=ROWS, max_size=ROWS)

    plain = st.one_of(
        of(texts),
        of(st.integers(-(2**63), 2**63 - 1)),
        of(st.floats(width=64)),
        of(st.booleans()),
        of(st.binary(max_size=4)),
        of(st.lists(st.integers(-100, 100), max_size=3)),
        of(st.lists(texts, max_size=3)),
        of(st.fixed_dictionaries({"a": st.integers(0, 9), "b": texts})),
        of(st.decimals(allow_nan=False, places=2, min_value=-999, max_value=999)),
        of(st.dates()),
        # what real code makes and parquet cannot keep: must be refused, never changed
        of(st.one_of(st.integers(0, 9), st.floats(width=64))),
        of(st.tuples(st.integers(0, 9))),
        of(st.dictionaries(st.sampled_from("abc"), st.integers(0, 9), max_size=2)),
        of(st.text(max_size=3).map(np.str_)),
    )
    return plain.flatmap(lambda v: st.one_of(st.just(v), with_missing(v))).map(
        lambda v: pd.Series(v, dtype=object)
    )


def typed_column():
    def series(values, dtype):
        return pd.Series(values, dtype=dtype)

    ints = st.lists(
        st.one_of(st.none(), st.integers(-(2**31), 2**31)), min_size=ROWS, max_size=ROWS
    )
    strs = st.lists(st.one_of(st.none(), texts), min_size=ROWS, max_size=ROWS)
    floats = st.lists(st.floats(width=64), min_size=ROWS, max_size=ROWS)
    return st.one_of(
        floats.map(lambda v: series(v, "float64")),
        ints.map(lambda v: series(v, "Int64")),
        ints.map(lambda v: series(v, "int64[pyarrow]")),
        strs.map(lambda v: series(v, "string[python]")),
        strs.map(lambda v: series(v, "string[pyarrow]")),
        strs.map(lambda v: series(v, pd.ArrowDtype(__import__("pyarrow").string()))),
        st.lists(st.sampled_from(["x", "y"]), min_size=ROWS, max_size=ROWS).map(
            lambda v: series(v, "category")
        ),
    )


def labels(n):
    return st.one_of(
        st.lists(texts, min_size=n, max_size=n, unique=True),
        st.lists(st.integers(-5, 50), min_size=n, max_size=n, unique=True),
        st.lists(st.floats(allow_nan=False, width=64), min_size=n, max_size=n, unique=True),
        st.just(pd.RangeIndex(n)),
        st.just(pd.RangeIndex(3, 3 + 2 * n, 2, name="c")),
        st.just(pd.date_range("2024-01-01", periods=n, freq="D")),
        st.just(pd.MultiIndex.from_tuples([("a", i) for i in range(n)], names=["x", "y"])),
        st.lists(
            st.one_of(st.integers(0, 3), st.sampled_from("ab")), min_size=n, max_size=n, unique=True
        ),
    )


indexes = st.one_of(
    st.just(None),
    st.lists(st.one_of(texts, st.just(float("nan"))), min_size=ROWS, max_size=ROWS).map(
        lambda v: pd.Index(v, dtype=object, name="key")
    ),
    st.just(pd.Index([10, 11, 12, 13], dtype="int64[pyarrow]")),
    st.just(pd.Index(["a", "b", None, "d"], dtype="string[pyarrow]")),
    st.just(pd.date_range("2020-01-01", periods=ROWS, freq="h", name="t")),
    st.just(pd.MultiIndex.from_arrays([["a", "a", "b", "b"], [1, 2, 1, 2]], names=["k", "n"])),
)


@st.composite
def frames(draw):
    n = draw(st.integers(1, 4))
    columns = [draw(st.one_of(object_column(), typed_column())) for _ in range(n)]
    df = pd.concat(columns, axis=1, ignore_index=True)
    df.columns = draw(labels(n))
    index = draw(indexes)
    if index is not None:
        df.index = index
    if draw(st.booleans()):
        df.attrs = draw(st.dictionaries(texts, st.one_of(st.integers(0, 9), texts), max_size=2))
    return df


@SETTINGS
@given(df=frames())
def test_frames_come_back_exactly_or_are_refused(inst, df):
    name = f"f{abs(hash(repr(df))) % 10**9}"
    try:
        file = lm.add(lm.File(df, name=name))
    except UnsupportedTypeError as e:
        assert "\n" not in str(e) and str(e).endswith("nothing was stored")
        event("refused")
        return
    event("kept")
    assert_same_frame(df, file.load())


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (
            pd.DataFrame({"s": ["a", pd.NA, None]}),
            r"column 's' holds both NA and None as missing values; .*df\['s'\]",
        ),
        (pd.DataFrame({"n": pd.Series([1, 2.5], dtype=object)}), r"give it one type first"),
        (pd.DataFrame({"d": [{"a": 1}, {"b": 2}]}), r"store it as JSON text first"),
        (pd.DataFrame({"t": [(1, 2), (3,)]}), r"\(tuple\) at row 0"),
        (pd.DataFrame({"s": [np.str_("a"), "b"]}, dtype=object), r"type numpy.str_"),
        (pd.DataFrame({"s": [np.float64("nan"), "b"]}), r"as a missing value"),
        (pd.DataFrame({1: [1], "1": [2]}), r"columns 1 and .1. would both be stored as .1."),
        (pd.DataFrame({"a": [1]}).set_flags(), None),
    ],
)
def test_what_would_change_is_refused_naming_the_column(inst, df, message):
    if message is None:
        df.attrs = {"when": datetime.date(2024, 1, 1).isoformat(), 1: "one"}
        message = r"df.attrs .* would come back as"
    with pytest.raises(UnsupportedTypeError, match=message) as raised:
        lm.add(lm.File(df, name="refused"))
    assert "\n" not in str(raised.value)
    assert lm.select(lm.File, name="refused").first() is None


def test_real_values_that_parquet_rewrites_come_back_as_saved(inst):
    df = pd.DataFrame(
        {
            "text_nan": ["a", np.nan, "c"],
            "text_na": pd.Series(["a", pd.NA, "c"], dtype=object),
            "ints": pd.Series([1, 2**62, None], dtype=object),
            "bools": pd.Series([True, False, True], dtype=object),
            "lists": [[1, 2], [], [3]],
            "money": [decimal.Decimal("1.50"), decimal.Decimal("-2.25"), None],
            "day": [datetime.date(2020, 1, 1), None, datetime.date(1999, 12, 31)],
            "neg_zero": [-0.0, 0.0, math.inf],
            "arrow": pd.Series([1, None, 3], dtype="int64[pyarrow]"),
            "pyarrow_str": pd.Series(["x", None, "z"], dtype="string[pyarrow]"),
        },
        index=pd.Index(["r1", np.nan, "r3"], name="row"),
    )
    df.attrs = {"source": "hand-made", "n": 3}
    assert_same_frame(df, lm.add(lm.File(df, name="rewritten")).load())
    wide = pd.DataFrame(np.arange(6).reshape(2, 3))  # RangeIndex columns, as numpy makes
    assert_same_frame(wide, lm.add(lm.File(wide, name="wide")).load())


def test_parquet_written_before_the_record_of_fixes_loads_as_before(inst, tmp_path):
    """A file without lamin_magic's metadata (an older save) loads as pandas reads it."""
    df = pd.DataFrame({"a": [1, 2], "s": ["x", None]})
    path = tmp_path / "old.parquet"
    df.to_parquet(path)
    from lamin_magic.storage.dataframe import load_parquet

    assert_same_frame(pd.read_parquet(path), load_parquet(path))


def test_a_long_string_column_is_checked_while_it_is_written(inst):
    """Past INLINE_SCAN strings the type check runs beside the writer; its refusal still holds."""
    from lamin_magic.storage.frame_fidelity import INLINE_SCAN

    values = [f"v{i}" for i in range(INLINE_SCAN + 10)]
    values[-1] = np.str_("last")
    df = pd.DataFrame({"s": pd.Series(values, dtype=object)})
    with pytest.raises(UnsupportedTypeError, match=r"column 's' holds values of type numpy.str_"):
        lm.add(lm.File(df, name="long"))
    assert lm.select(lm.File, name="long").first() is None
    assert not list((inst.root / ".lamin-tmp").iterdir())
    values[-1] = "last"
    kept = pd.DataFrame({"s": pd.Series(values, dtype=object)})
    assert_same_frame(kept, lm.add(lm.File(kept, name="long")).load())


KEPT = {  # found by a black-box search: each came back changed before
    "int categories": pd.DataFrame(
        {"c": pd.Categorical([1, None, 1], categories=[1, 2, 3], ordered=True)}
    ),
    "bool categories": pd.DataFrame({"c": pd.Categorical([True, False])}),
    "float categories": pd.DataFrame({"c": pd.Categorical([1.5, 2.5])}),
    "CategoricalIndex of ints": pd.DataFrame({"a": [1, 2]}, index=pd.CategoricalIndex([1, 2])),
    "seconds": pd.DataFrame({"t": np.array(["1500-01-01", "2020-01-01"], "datetime64[s]")}),
    "seconds, UTC": pd.DataFrame({"t": pd.to_datetime(["2020-01-01"], utc=True).as_unit("s")}),
    "seconds index": pd.DataFrame({"a": [1]}, index=pd.to_datetime(["2020"]).as_unit("s")),
    "fixed offset": pd.DataFrame(
        {"t": pd.date_range("2020", periods=2, tz=datetime.timezone(datetime.timedelta(hours=5)))}
    ),
    "zoneinfo": pd.DataFrame(
        {"t": pd.date_range("2020", periods=2, tz=__import__("zoneinfo").ZoneInfo("Europe/Berlin"))}
    ),
    "no duplicate labels": pd.DataFrame({"a": [1]}).set_flags(allows_duplicate_labels=False),
    "object datetimes": pd.DataFrame(
        {"a": pd.Series([datetime.datetime(2020, 1, 1), None], dtype=object)}
    ),
    "object timedeltas": pd.DataFrame(
        {"a": pd.Series([datetime.timedelta(1), None], dtype=object)}
    ),
    "Int64 labels": pd.DataFrame([[1, 2]], columns=pd.Index([1, 2], dtype="Int64")),
    "arrow lists": pd.DataFrame(
        {"l": pd.Series([[1, 2], None], dtype=pd.ArrowDtype(pa.list_(pa.int64())))}
    ),
    "arrow maps": pd.DataFrame(
        {"m": pd.Series([[("a", 1)]], dtype=pd.ArrowDtype(pa.map_(pa.string(), pa.int64())))}
    ),
    "arrow dictionaries": pd.DataFrame(
        {"d": pd.Series(["a", "b"], dtype=pd.ArrowDtype(pa.dictionary(pa.int8(), pa.string())))}
    ),
}


@pytest.mark.parametrize("name", KEPT)
def test_what_parquet_alone_would_change_comes_back_exactly(inst, name):
    from fidelity import differences

    df = KEPT[name]
    loaded = lm.add(lm.File(df, name="kept")).load()
    assert differences(df, loaded) == []
    assert loaded.flags.allows_duplicate_labels == df.flags.allows_duplicate_labels


REFUSED = {
    "datetime categories": (
        pd.DataFrame({"c": pd.Categorical(pd.to_datetime(["2020", "2021"]))}),
        r"column 'c' is categorical with datetime64\[ns\] categories",
    ),
    "interval categories": (pd.DataFrame({"c": pd.cut([1, 5, 9], 3)}), "interval"),
    "a negative NaN": (pd.DataFrame({"f": np.array([1.0, -np.nan])}), "NaN with its sign bit"),
    "labels 1 and '1'": (pd.DataFrame({1: [1], "1": [2]}), "would both be stored as '1'"),
    "an index of ints beyond 64 bits": (
        pd.DataFrame({"a": [1, 2]}, index=pd.Index([2**70, 1], dtype=object)),
        r"the index holds integers beyond 64 bits, .*df.index = df.index.astype\(str\)",
    ),
    "an int beyond 64 bits": (
        pd.DataFrame({"b": pd.Series([2**70, 1], dtype=object)}),
        "integers beyond 64 bits",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_what_cannot_be_kept_is_refused_in_one_line(inst, name):
    df, message = REFUSED[name]
    with pytest.raises(UnsupportedTypeError, match=message) as raised:
        lm.add(lm.File(df, name="refused"))
    assert "\n" not in str(raised.value)
