"""An AnnData comes back exactly as saved (uns included, value by value and type by type), or
its save is refused in one line naming the key; saving a backed AnnData leaves it as it was."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.tests.helpers import assert_equal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lamin_magic as lm
from lamin_magic.errors import UnsupportedTypeError
from lamin_magic.storage.uns_fidelity import difference

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FORMATS = ["h5ad", "zarr"]
keys = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
words = st.text(alphabet="abcxyz ", max_size=5)


def typed(value):
    """uns as nested (type, value) pairs, so that a type change is a difference."""
    if isinstance(value, dict):
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, np.ndarray):
        return (type(value).__name__, str(value.dtype), value.shape, repr(value.tolist()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__module__, type(value).__qualname__, repr(value))


uns_values = st.recursive(
    st.one_of(
        st.integers(-(2**31), 2**31),
        st.floats(allow_nan=False, width=64),
        st.booleans(),
        words,
        st.none(),
        st.sampled_from(
            [np.int64(3), np.int32(-1), np.float32(1.5), np.bool_(False), np.str_("s")]
        ),
        st.lists(st.integers(-9, 9), max_size=3).map(lambda v: np.array(v, dtype=np.int16)),
        st.lists(words, min_size=1, max_size=3).map(np.array),  # a numpy string array
        st.lists(words, min_size=1, max_size=3).map(lambda v: np.array(v, dtype="S")),  # bytes
        st.lists(st.integers(-9, 9), max_size=3),
        st.lists(words, min_size=1, max_size=3),
        st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=3),
        # what anndata would change: must be refused, never saved changed
        st.lists(st.one_of(st.integers(0, 9), words), min_size=2, max_size=3),
    ),
    lambda inner: st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)


@SETTINGS
@given(uns=st.dictionaries(keys, uns_values, max_size=4), fmt=st.sampled_from(FORMATS))
def test_uns_comes_back_exactly_or_is_refused(inst, uns, fmt):
    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    adata.uns.update(uns)
    before = typed(dict(adata.uns))
    name = f"a{abs(hash(repr(before))) % 10**9}{fmt}"
    try:
        file = lm.add(lm.File(adata, name=name, format=fmt))
    except UnsupportedTypeError as e:
        assert "\n" not in str(e) and "adata.uns" in str(e) and str(e).endswith("stored")
        return
    assert typed(dict(adata.uns)) == before  # saving did not change the user's object
    assert typed(dict(file.load().uns)) == before


def processed(n_obs=40, n_vars=30):
    """An AnnData shaped like scanpy leaves it after normalize, log1p, pca, neighbors, ranking."""
    rng = np.random.default_rng(0)
    counts = sp.random(n_obs, n_vars, density=0.3, format="csr", random_state=1, dtype=np.float32)
    adata = ad.AnnData(
        counts,
        obs=pd.DataFrame(
            {
                "cluster": pd.Categorical(rng.choice(["0", "1"], n_obs)),
                "n": rng.integers(0, 9, n_obs),
            },
            index=[f"cell{i}" for i in range(n_obs)],
        ),
        var=pd.DataFrame(
            {"gene": [f"g{i}" for i in range(n_vars)]}, index=[f"g{i}" for i in range(n_vars)]
        ),
    )
    adata.layers["counts"] = counts.copy()
    adata.obsm["X_pca"] = rng.normal(size=(n_obs, 5)).astype(np.float32)
    adata.varm["PCs"] = rng.normal(size=(n_vars, 5))
    adata.obsp["distances"] = sp.random(n_obs, n_obs, density=0.1, format="csr", random_state=2)
    adata.uns["log1p"] = {"base": None}
    adata.uns["pca"] = {
        "params": {"zero_center": True, "use_highly_variable": False, "mask_var": None},
        "variance": rng.random(5),
        "variance_ratio": rng.random(5),
    }
    adata.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {"n_neighbors": 15, "method": "umap", "random_state": 0, "metric": "euclidean"},
    }
    adata.uns["cluster_colors"] = ["#1f77b4", "#ff7f0e"]
    adata.uns["rank_genes_groups"] = {
        "names": np.rec.fromarrays(
            [np.array(["g1", "g2"]), np.array(["g3", "g4"])], names=["0", "1"]
        ),
        "scores": np.rec.fromarrays(
            [np.array([1.5, 2.0], dtype=np.float32), np.array([3.0, 4.0], dtype=np.float32)],
            names=["0", "1"],
        ),
        "params": {"groupby": "cluster", "method": "wilcoxon", "use_raw": np.bool_(True)},
    }
    adata.uns["n_top"] = np.int64(50)
    adata.uns["labels"] = np.array(["a", "bb"])
    return adata


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_processed_object_comes_back_exactly(inst, fmt):
    adata = processed()
    loaded = lm.add(lm.File(adata, name=f"processed-{fmt}", format=fmt)).load()
    assert difference(dict(adata.uns), dict(loaded.uns), "adata.uns") is None
    assert typed(dict(loaded.uns)) == typed(dict(adata.uns))
    assert_equal(loaded, adata, exact=True)  # anndata's own comparison
    pd.testing.assert_frame_equal(loaded.obs, adata.obs, check_exact=True)
    assert (loaded.X != adata.X).nnz == 0 and loaded.X.dtype == adata.X.dtype
    np.testing.assert_array_equal(loaded.obsm["X_pca"], adata.obsm["X_pca"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_uns_anndata_would_change_is_refused_naming_the_key(inst, fmt):
    adata = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    adata.uns["params"] = {"mixed": [1, "a"]}
    with pytest.raises(
        UnsupportedTypeError, match=r"adata.uns\['params'\]\['mixed'\] = \[1, 'a'\]"
    ):
        lm.add(lm.File(adata, name="mixed", format=fmt))
    assert lm.select(lm.File, name="mixed").first() is None


def test_saving_a_backed_anndata_leaves_it_backed_by_its_own_file(inst, tmp_path):
    source = tmp_path / "source.h5ad"
    processed().write_h5ad(source)
    backed = ad.read_h5ad(source, backed="r")
    for fmt in FORMATS:
        loaded = lm.add(lm.File(backed, name=f"backed-{fmt}", format=fmt)).load()
        assert backed.isbacked and str(backed.filename) == str(source)
        assert not loaded.isbacked
        assert (loaded.X != backed.to_memory().X).nnz == 0
    assert backed.X[0].shape[1] == backed.n_vars  # still readable from its own file


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "values", [["a", np.nan, "c"], pd.Series([1, 2, 3], dtype=object), ["a", None, "c"]]
)
def test_obs_text_columns_holding_other_values_are_refused(inst, fmt, values):
    """zarr would write them as the text 'nan' / '1' without a word; h5ad would fail."""
    obs = pd.DataFrame({"label": values}, index=["x", "y", "z"])
    adata = ad.AnnData(np.zeros((3, 1), dtype=np.float32), obs=obs)
    with pytest.raises(
        UnsupportedTypeError, match=r"adata.obs\['label'\]: .* among text.*astype\('category'\)"
    ):
        lm.add(lm.File(adata, name="labels", format=fmt))
    adata.obs["label"] = adata.obs["label"].astype("category")
    loaded = lm.add(lm.File(adata, name="labels", format=fmt)).load()
    pd.testing.assert_frame_equal(loaded.obs, adata.obs, check_exact=True)


def test_mudata_uns_of_each_modality_comes_back_exactly_or_is_refused(inst):
    mudata = pytest.importorskip("mudata")
    rna = processed()
    atac = ad.AnnData(
        np.ones((rna.n_obs, 4), dtype=np.float32), obs=pd.DataFrame(index=rna.obs_names)
    )
    atac.uns["peaks"] = ["chr1:1-100", "chr2:5-50"]
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.MuData({"rna": rna, "atac": atac})
    mdata.uns["n_mods"] = np.int32(2)
    loaded = lm.add(lm.File(mdata, name="multi")).load()
    assert typed(dict(loaded.uns)) == typed(dict(mdata.uns))
    for name in ("rna", "atac"):
        assert typed(dict(loaded.mod[name].uns)) == typed(dict(mdata.mod[name].uns))
    atac.uns["mixed"] = [1, "a"]
    with pytest.raises(UnsupportedTypeError, match=r"mdata.mod\['atac'\].uns\['mixed'\]"):
        lm.add(lm.File(mdata, name="multi"))


IDX = ["0", "1", "2"]


def small(**slots):
    X = slots.pop("X", np.ones((3, 2), np.float32))
    obs = slots.pop("obs", pd.DataFrame(index=IDX))
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=["g0", "g1"]), **slots)


SLOTS_KEPT = {  # came back as other kinds of array before
    "csr_array X": lambda: small(X=sp.csr_array(np.ones((3, 2), np.float32))),
    "csc_array layer": lambda: small(layers={"l": sp.csc_array(np.ones((3, 2)))}),
    "Fortran-ordered X": lambda: small(X=np.asfortranarray(np.arange(6.0).reshape(3, 2))),
    "Fortran-ordered arrays in uns": lambda: small(
        uns={
            "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            "t": np.array([["a", "b"]] * 2).T,
        }
    ),
}
SLOTS_REFUSED = {  # were changed without a word, or failed with a library's message
    "text in an obsm DataFrame": (
        lambda: small(obsm={"d": pd.DataFrame({"s": ["a", np.nan, "b"]}, index=IDX)}),
        r"adata.obsm\['d'\]\['s'\]: float values among text",
    ),
    "mixed categories": (
        lambda: small(obs=pd.DataFrame({"c": pd.Categorical([1, "a", 1])}, index=IDX)),
        r"the categories of adata.obs\['c'\]: int values among text",
    ),
    "Int64 categories": (
        lambda: small(
            obs=pd.DataFrame({"c": pd.Categorical(pd.array([1, 2, 1], dtype="Int64"))}, index=IDX)
        ),
        r"categories of adata.obs\['c'\] have dtype Int64",
    ),
    "text X": (lambda: small(X=np.array([["a", "b"]] * 3)), r"adata.X holds text"),
    "index named _index": (
        lambda: small(obs=pd.DataFrame(index=pd.Index(IDX, name="_index"))),
        "a name anndata reserves",
    ),
    "obs attrs": (
        lambda: (lambda a: (a.obs.attrs.update(x=1), a)[1])(small()),
        "attrs would not be kept",
    ),
    "masked X": (
        lambda: small(X=np.ma.masked_array(np.ones((3, 2)), mask=[[1, 0], [0, 0], [0, 0]])),
        "adata.X is a MaskedArray",
    ),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", SLOTS_KEPT)
def test_array_kinds_anndata_would_change_come_back_as_they_were(inst, fmt, name):
    from fidelity import differences

    adata = SLOTS_KEPT[name]()
    loaded = lm.add(lm.File(adata, name="slots", format=fmt)).load()
    assert differences(adata, loaded) == []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", SLOTS_REFUSED)
def test_what_anndata_would_change_is_refused_naming_it(inst, fmt, name):
    make, message = SLOTS_REFUSED[name]
    with pytest.raises(UnsupportedTypeError, match=message) as raised:
        lm.add(lm.File(make(), name="slots", format=fmt))
    assert "\n" not in str(raised.value)


def test_saving_a_mudata_leaves_its_text_columns_text(inst):
    """mudata's writer turns text into categoricals, in the user's modalities and the file."""
    mudata = pytest.importorskip("mudata")
    rna = ad.AnnData(
        np.ones((3, 1), np.float32), obs=pd.DataFrame({"s": ["a", "b", "a"]}, index=IDX)
    )
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.MuData({"rna": rna})
    loaded = lm.add(lm.File(mdata, name="text")).load()
    assert mdata.mod["rna"].obs["s"].dtype == object
    assert loaded.mod["rna"].obs["s"].dtype == object
    assert loaded.mod["rna"].obs["s"].tolist() == ["a", "b", "a"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"ab", r"anndata cannot write adata.uns\['v'\] \(bytes"),
        ({1, 2}, r"anndata cannot write adata.uns\['v'\] \(set"),
        ([[1], [1, 2]], r"adata.uns\['v'\]"),
        (2**70, r"adata.uns\['v'\]"),
    ],
)
def test_uns_anndata_cannot_write_is_named_in_one_line(inst, fmt, value, message):
    adata = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    adata.uns["v"] = value
    with pytest.raises(UnsupportedTypeError, match=message) as raised:
        lm.add(lm.File(adata, name="unwritable", format=fmt))
    assert "\n" not in str(raised.value)
    adata.uns.pop("v")
    adata.uns[""] = 1
    with pytest.raises(UnsupportedTypeError, match=r"adata.uns has the key '', which HDF5"):
        lm.add(lm.File(adata, name="unwritable", format=fmt))
