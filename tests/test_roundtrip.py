"""What loads equals what was saved, for generated DataFrames and AnnData objects."""

from __future__ import annotations

import uuid

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lamin_magic as lm
from lamin_magic.errors import UnsupportedTypeError

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
# NaNs with a sign or a payload are refused (test_frame_fidelity.py): here every NaN is plain
floats = st.floats(allow_nan=True, allow_infinity=True, width=64).map(
    lambda x: float("nan") if x != x else x
)
texts = st.text(max_size=12)  # any unicode, including NUL and surrogates-free text


def column(kind: str, n: int):
    if kind == "int":
        return st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype="int64")
        )
    if kind == "float":
        return st.lists(floats, min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="float64"))
    if kind == "bool":
        return st.lists(st.booleans(), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype=bool)
        )
    if kind == "string":
        return st.lists(st.one_of(st.none(), texts), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype=object)
        )
    if kind == "category":
        return st.tuples(
            st.lists(texts, min_size=1, max_size=5, unique=True), st.booleans(), st.randoms()
        ).map(
            lambda t: pd.Series(
                pd.Categorical([t[2].choice(t[0]) for _ in range(n)], categories=t[0], ordered=t[1])
            )
        )
    if kind in ("datetime", "datetime_tz"):
        tz = "Europe/Berlin" if kind == "datetime_tz" else None
        stamps = st.integers(0, 4_000_000_000_000_000_000)
        return st.lists(st.one_of(st.none(), stamps), min_size=n, max_size=n).map(
            lambda v: (
                pd.Series(pd.to_datetime(v, unit="ns", utc=tz is not None)).dt.tz_convert(tz)
                if tz
                else pd.Series(pd.to_datetime(v, unit="ns"))
            )
        )
    if kind == "nullable_int":
        return st.lists(
            st.one_of(st.none(), st.integers(-(2**31), 2**31)), min_size=n, max_size=n
        ).map(lambda v: pd.Series(v, dtype="Int64"))
    raise AssertionError(kind)


KINDS = ["int", "float", "bool", "string", "category", "datetime", "datetime_tz", "nullable_int"]


@st.composite
def frames(draw):
    """Frames parquet keeps faithfully; the refused shapes are tested below."""
    n = draw(st.integers(0, 12))
    kinds_allowed = [k for k in KINDS if n or k != "category"]
    kinds = draw(st.lists(st.sampled_from(kinds_allowed), min_size=1 if n else 0, max_size=6))
    cols = draw(st.lists(names, min_size=len(kinds), max_size=len(kinds), unique=True))
    data = {c: draw(column(k, n)).reset_index(drop=True) for c, k in zip(cols, kinds, strict=True)}
    df = pd.DataFrame(data, index=pd.RangeIndex(n))
    index = draw(st.sampled_from(["range", "range_step", "strings", "named_ints"]))
    if index == "range_step":
        df.index = pd.RangeIndex(5, 5 + 3 * n, 3)
    elif index == "strings":
        df.index = pd.Index([f"cell{i}" for i in range(n)], dtype=object)
    elif index == "named_ints":
        df.index = pd.Index(
            draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n)), name="obs"
        )
    return df


@SETTINGS
@given(df=frames())
def test_dataframe_round_trip(inst, df):
    file = lm.add(lm.File(df, name=f"df-{uuid.uuid4().hex}"))
    loaded = lm.load(file.name)
    pd.testing.assert_frame_equal(loaded, df, check_exact=True)
    assert type(loaded.index) is type(df.index)


def test_empty_frame_round_trip(inst):
    for df in (pd.DataFrame(), pd.DataFrame({"a": pd.Series([], dtype="float64")})):
        file = lm.add(lm.File(df, name=f"empty-{len(df.columns)}"))
        pd.testing.assert_frame_equal(file.load(), df)


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (pd.DataFrame({0: [1], "a": [2]}), r"column 0 \(int\) would come back as '0' \(str\)"),
        (pd.DataFrame({True: [1], False: [2]}), r"column False \(bool\) would come back as True"),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "appears twice"),
        (pd.DataFrame({"mixed": [1, "one"]}), "cannot keep in one column; give it one type first"),
        (pd.DataFrame(index=pd.RangeIndex(3)), "would come back with no rows"),
        (pd.DataFrame({"c": pd.Categorical([], categories=["x"])}), "drops the categories"),
    ],
)
def test_dataframes_parquet_would_change_are_refused(inst, df, message):
    with pytest.raises(UnsupportedTypeError, match=message):
        lm.add(lm.File(df, name="refused"))
    assert lm.select(lm.File, name="refused").first() is None


def assert_anndata_equal(a, b):
    assert a.shape == b.shape
    if sp.issparse(a.X):
        assert sp.issparse(b.X) and a.X.format == b.X.format
        assert (a.X != b.X).nnz == 0 and a.X.dtype == b.X.dtype
    else:
        np.testing.assert_array_equal(a.X, b.X)
        assert a.X.dtype == b.X.dtype
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=True)
    assert a.layers.keys() == b.layers.keys()
    for key in a.layers:
        np.testing.assert_array_equal(a.layers[key], b.layers[key])
    assert a.obsm.keys() == b.obsm.keys()
    for key in a.obsm:
        np.testing.assert_array_equal(a.obsm[key], b.obsm[key])
    assert a.uns.keys() == b.uns.keys()
    for key in a.uns:
        np.testing.assert_array_equal(a.uns[key], b.uns[key])


@st.composite
def anndatas(draw):
    n_obs, n_vars = draw(st.integers(1, 20)), draw(st.integers(1, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dense = rng.normal(size=(n_obs, n_vars)).astype(draw(st.sampled_from(["float32", "float64"])))
    dense[rng.random(size=dense.shape) < 0.7] = 0
    X = sp.csr_matrix(dense) if draw(st.booleans()) else dense
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n_obs)),
            "n_genes": rng.integers(0, 1000, n_obs),
            "label": [f"l{i}" for i in range(n_obs)],
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame(
        {"gene": [f"g{i}" for i in range(n_vars)]}, index=[f"v{i}" for i in range(n_vars)]
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = rng.integers(0, 50, (n_obs, n_vars)).astype("int32")
    adata.obsm["X_pca"] = rng.normal(size=(n_obs, 2))
    adata.uns["weights"] = rng.normal(size=3)
    return adata


@SETTINGS
@given(adata=anndatas(), fmt=st.sampled_from(["h5ad", "zarr"]))
def test_anndata_round_trip(inst, adata, fmt):
    before = adata.copy()
    file = lm.add(lm.File(adata, name=f"ad-{uuid.uuid4().hex}", format=fmt))
    assert file.suffix == f".{fmt}"
    assert_anndata_equal(before, adata)  # saving did not change the user's object
    assert_anndata_equal(adata, lm.load(file.name))
