"""The strict comparator of tests/fidelity.py: each kind of difference is found, and the
same things (copies, or objects built twice) give []."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fidelity import differences
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

sparse = pytest.importorskip("scipy.sparse")
anndata = pytest.importorskip("anndata")


def frame() -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "f": [1.5, np.nan, -0.0],
            "i": np.array([1, 2, 3], dtype="int64"),
            "s": ["a", "b", None],
            "o": [[1, 2], {"k": 1}, np.array([1.0])],
            "c": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
            "t": pd.to_datetime(["2024-01-01", None, "2024-03-01"]).tz_localize("UTC"),
        },
        index=pd.Index(["r1", "r2", "r3"], name="row"),
    )
    df.attrs["source"] = {"name": "test", "n": 3}
    return df


def changed(df: pd.DataFrame, change) -> list[str]:
    other = copy.deepcopy(df)
    result = change(other)
    return differences(df, other if result is None else result)


def test_identical_things_give_nothing():
    df = frame()
    assert differences(df, copy.deepcopy(df)) == []
    assert differences(frame(), frame()) == []
    assert differences(df.convert_dtypes(), df.convert_dtypes()) == []
    arrow = df.drop(columns=["o"]).convert_dtypes(dtype_backend="pyarrow")
    assert differences(arrow, copy.deepcopy(arrow)) == []
    assert differences(adata(), adata()) == []
    assert (
        differences({"a": [1, np.float32(2)], "b": None}, {"a": [1, np.float32(2)], "b": None})
        == []
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.rename(columns={"f": "g"}), "df.columns[0]: 'f'"),
        (lambda d: d[["i", "f", "s", "o", "c", "t"]], "df.columns[0]"),
        (lambda d: d.set_axis(d.columns.astype(object), axis=1), None),  # same labels, same type
        (lambda d: d.rename(index={"r1": "q"}), "df.index[0]"),
        (lambda d: d.rename_axis("rows"), "df.index: names ['row'] != ['rows']"),
        (lambda d: d.reset_index(drop=True), "df.index: Index != RangeIndex"),
        (lambda d: d.astype({"i": "int32"}), "df['i']: dtype <i8 != <i4"),
        (lambda d: d.astype({"i": "Int64"}), "df['i']: dtype <i8 != Int64"),
        (
            lambda d: d.astype({"s": "string[python]"}),
            "df['s']: dtype |O != StringDtype('python', na_value=<NA>)",
        ),
        (
            lambda d: d.assign(s=d["s"].astype("string[python]")).astype({"s": "string[pyarrow]"}),
            "dtype",
        ),
        (lambda d: d.assign(c=d["c"].cat.as_unordered()), "ordered True != False"),
        (lambda d: d.assign(c=d["c"].cat.reorder_categories(["x", "y"])), "categories"),
        (lambda d: d.assign(t=d["t"].dt.tz_convert("Europe/Berlin")), "df['t']: dtype"),
        (lambda d: d.assign(t=d["t"].dt.as_unit("us")), "df['t']: dtype"),
        (lambda d: d.assign(f=[1.5, np.nan, 0.0]), "df['f'][2]: np.float64(-0.0)"),
        (lambda d: d.assign(f=[1.5, 0.0, -0.0]), "df['f'][1]: np.float64(nan)"),
        (lambda d: d.assign(f=[np.nextafter(1.5, 2), np.nan, -0.0]), "df['f'][0]"),
        (lambda d: d.assign(s=["a", "b", np.nan]), "df['s'][2]: None (builtins.NoneType) != nan"),
        (lambda d: d.assign(s=["a", "b", pd.NA]), "!= <NA> (pandas._libs.missing.NAType)"),
        (lambda d: d.assign(s=[np.str_("a"), "b", None]), "(builtins.str) != np.str_('a')"),
        (
            lambda d: d.assign(o=[np.array([1, 2]), {"k": 1}, np.array([1.0])]),
            "df['o'][0]: [1, 2] (builtins.list)",
        ),
        (lambda d: d.assign(o=[[1, 2], {"j": 1}, np.array([1.0])]), "keys lost ['k']"),
        (lambda d: d.assign(o=[[1, 2], {"k": 1}, np.array([1.0], "f4")]), "dtype <f8 != <f4"),
        (
            lambda d: d.assign(o=[[1, 2.0], {"k": 1}, np.array([1.0])]),
            "df['o'][0][1]: type builtins.int",
        ),
        (lambda d: setattr(d, "attrs", {}), "df.attrs: keys lost ['source']"),
        (lambda d: d.iloc[:2], "df: shape (3, 6) != (2, 6)"),
    ],
)
def test_each_difference_in_a_frame_is_found(change, expected):
    found = changed(frame(), change)
    if expected is None:
        assert found == []
    else:
        assert found, "no difference found"
        assert any(expected in line for line in found), found


def test_column_label_types_and_multiindex():
    df = pd.DataFrame([[1, 2]], columns=[1, 2])
    assert "df.columns: dtype <i8 != |O" in differences(df, df.set_axis(["1", "2"], axis=1))
    assert differences(df, df.set_axis([np.int64(1), 2], axis=1).astype(int)) == []
    mixed = df.set_axis(pd.Index([1, "b"], dtype=object), axis=1)
    assert "df.columns[0]: 1 (builtins.int) != '1' (builtins.str)" in differences(
        mixed, mixed.set_axis(pd.Index(["1", "b"], dtype=object), axis=1)
    )
    wide = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2)]))
    flat = wide.set_axis(["a_1", "a_2"], axis=1)
    assert differences(wide, flat) == ["df.columns: MultiIndex != Index"]
    relabeled = wide.set_axis(pd.MultiIndex.from_tuples([("a", "1"), ("a", "2")]), axis=1)
    assert any("df.columns.levels[1]" in line for line in differences(wide, relabeled))
    assert differences(wide, copy.deepcopy(wide)) == []


def test_ranges_and_index_classes():
    df = pd.DataFrame({"a": [1, 2]})
    assert differences(df, df.set_axis(pd.Index([0, 1]), axis=0)) == [
        "df.index: RangeIndex != Index"
    ]
    assert differences(df, df.set_axis(pd.RangeIndex(1, 3), axis=0)) == [
        "df.index: range (0, 2, 1) != (1, 3, 1)"
    ]


def test_extension_arrays_compare_their_values_and_missing_markers():
    a = pd.DataFrame({"x": pd.array([1, None, 3], dtype="Int64")})
    assert differences(a, a.assign(x=pd.array([1, None, 4], dtype="Int64")))[0].startswith(
        "df['x'][2]: np.int64(3)"
    )
    assert differences(a, a.assign(x=pd.array([1, 2, 3], dtype="Int64")))[0].startswith(
        "df['x'][1]"
    )
    arrow = pd.DataFrame({"x": pd.arrays.ArrowExtensionArray(pa.array([1.0, None]))})
    nan = pd.DataFrame({"x": pd.arrays.ArrowExtensionArray(pa.array([1.0, float("nan")]))})
    assert differences(arrow, nan)[0].startswith("df['x'][1]: None")
    strings = pd.DataFrame({"s": pd.array(["a", None], dtype="string[pyarrow]")})
    arrow_strings = strings.astype(pd.ArrowDtype(pa.string()))
    assert differences(strings, arrow_strings) == [
        "df['s']: dtype StringDtype('pyarrow', na_value=<NA>) != ArrowDtype(string)"
    ]


def test_numpy_values_and_scalars_keep_their_types():
    assert differences(np.float64(1.0), 1.0) == ["object: type numpy.float64 != builtins.float"]
    assert differences(np.array(["a", "bb"]), np.array(["a", "bb"], dtype=object)) == [
        "object: dtype <U2 != |O"
    ]
    assert differences([1, 2], np.array([1, 2])) == ["object: type builtins.list != numpy.ndarray"]
    assert differences(np.array([1.0, -0.0]), np.array([1.0, 0.0]))[0].startswith("object[1]")
    assert differences(np.array([np.nan]), np.array([np.nan])) == []
    assert differences(float("nan"), float("nan")) == []
    assert differences(-0.0, 0.0) == ["object: -0.0 != 0.0"]
    records = np.array([(1, "a")], dtype=[("n", "i8"), ("s", "U3")])
    assert differences(records, records.astype([("n", "i8"), ("s", "U5")])) == [
        "object: dtype of field 's' <U3 != <U5"
    ]
    assert differences(records.view(np.recarray), records)[0].startswith("object: type")


def adata():
    rng = np.random.default_rng(0)
    counts = sparse.random(20, 8, density=0.3, format="csr", dtype="float32", random_state=rng)
    obs = pd.DataFrame(
        {"cluster": pd.Categorical(list("ab") * 10)}, index=[f"c{i}" for i in range(20)]
    )
    var = pd.DataFrame({"gene": [f"g{i}" for i in range(8)]}, index=[f"g{i}" for i in range(8)])
    a = anndata.AnnData(counts, obs=obs, var=var)
    a.layers["dense"] = counts.toarray()
    a.obsm["X_pca"] = rng.normal(size=(20, 3))
    a.varm["PCs"] = rng.normal(size=(8, 3))
    a.obsp["distances"] = sparse.csr_matrix(np.eye(20))
    a.uns["pca"] = {"variance": np.arange(3.0), "params": {"zero_center": True}}
    a.uns["colors"] = np.array(["#ff0000", "#00ff00"])
    a.uns["n"] = np.int64(3)
    a.uns["list"] = ["a", "b"]
    return a


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda a: setattr(a, "X", a.X.tocsc()),
            "adata.X: type scipy.sparse._csr.csr_matrix != scipy.sparse._csc",
        ),
        (lambda a: setattr(a, "X", a.X.toarray()), "adata.X: type"),
        (lambda a: setattr(a, "X", a.X.astype("float64")), "adata.X: dtype <f4 != <f8"),
        (lambda a: a.X.data.__setitem__(0, 99.0), "adata.X.data[0]"),
        (lambda a: setattr(a, "obs", a.obs.astype({"cluster": str})), "adata.obs['cluster']"),
        (lambda a: setattr(a, "obs_names", [f"d{i}" for i in range(20)]), "adata.obs.index[0]"),
        (lambda a: a.layers["dense"].__setitem__((0, 0), -1.0), "adata.layers['dense'][0]"),
        (
            lambda a: a.obsm.__setitem__("X_pca", a.obsm["X_pca"].astype("f4")),
            "adata.obsm['X_pca']",
        ),
        (lambda a: a.varm.pop("PCs"), "adata.varm: keys lost ['PCs']"),
        (lambda a: a.obsp.__setitem__("distances", a.obsp["distances"].tocsc()), "adata.obsp"),
        (lambda a: a.uns.__setitem__("colors", a.uns["colors"].astype(object)), "dtype <U7 != |O"),
        (lambda a: a.uns.__setitem__("n", 3), "adata.uns['n']: type numpy.int64 != builtins.int"),
        (lambda a: a.uns.__setitem__("list", np.array(["a", "b"])), "adata.uns['list']: type"),
        (lambda a: a.uns["pca"]["params"].__setitem__("zero_center", np.bool_(True)), "type"),
        (lambda a: a.uns["pca"].pop("params"), "adata.uns['pca']: keys lost ['params']"),
        (lambda a: setattr(a, "raw", a), "adata.raw: NoneType != Raw"),
    ],
)
def test_each_difference_in_anndata_is_found(change, expected):
    saved = adata()
    loaded = adata()
    change(loaded)
    found = differences(saved, loaded)
    assert any(expected in line for line in found), found


@given(
    hpd.data_frames(
        [
            hpd.column("a", dtype=float),
            hpd.column("b", elements=st.one_of(st.none(), st.text(max_size=3), st.integers())),
        ],
        index=hpd.range_indexes(max_size=8),
    )
)
def test_a_copy_is_always_the_same(df):
    assert differences(df, copy.deepcopy(df)) == []


class Box:
    """An object a test format stores as JSON: what loads is up to the format's loader."""

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        return type(other) is Box and other.value == self.value

    def __repr__(self) -> str:
        return f"Box({self.value!r})"

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("load", "check", "kind", "detail"),
    [
        (lambda v: Box(v), None, "exact", None),
        (lambda v: Box(v + 1), None, "changed", "object: Box(1) != Box(2)"),
        (lambda v: v, None, "changed", "object: type"),
        (lambda v: 1 / 0, None, "crashed", "loading: "),
        (lambda v: Box(v), "refuse", "refused", "UnsupportedTypeError"),
        (lambda v: Box(v), "refuse\ntwo lines", "crashed", "(+1 more lines)"),
        (lambda v: Box(1), "mutate", "changed", "saving changed the object in memory: object"),
    ],
)
def test_the_corpus_classifies_each_outcome(inst, load, check, kind, detail):
    import json

    import corpus

    import lamin_magic as lm
    from lamin_magic.errors import UnsupportedTypeError

    def refuse(box):
        if check == "mutate":
            box.value = 2
        elif check:
            raise UnsupportedTypeError(check)

    lm.register_format(
        "box",
        suffix=".box",
        type=Box,
        write=lambda box, path: path.write_text(json.dumps(box.value)),
        load=lambda path: load(json.loads(path.read_text())),
        check=refuse,
    )
    outcome = corpus.roundtrip(corpus.Item("test/box", Box(1)))
    assert outcome.kind == kind, outcome
    if detail is None:
        assert outcome.detail == []
    else:
        assert detail in outcome.detail[0], outcome
