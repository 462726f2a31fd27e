"""anndata.AnnData <-> .h5ad (the default) or .zarr (a folder)."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import UnsupportedTypeError
from . import uns_fidelity as uns
from .formats import register_format

# anndata converts string columns to categoricals in the object it writes unless told not
# to: that would change the user's object and make what loads differ from what was saved.


def check_anndata(adata: Any) -> None:
    """Refuse what anndata's writers fail on or change, with the fix, before anything is written."""
    _check_mapping(adata.uns, "adata.uns")
    _check_text_columns(adata.obs, "adata.obs")
    _check_text_columns(adata.var, "adata.var")


def _check_text_columns(frame: Any, where: str) -> None:
    """anndata writes an object column as text: h5ad refuses anything else in it, and zarr
    writes it as text ('nan', '1'), which would change the data silently."""
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        odd = {type(v) for v in column.to_numpy()} - {str}
        if odd:
            kinds = ", ".join(sorted(t.__name__ for t in odd))
            code = f"{where}[{name!r}]"
            raise UnsupportedTypeError(
                f"{code} holds {kinds} values among its text, which anndata would store as text "
                f"or refuse; make it categorical ({code} = {code}.astype('category')) or give it "
                "one type"
            )


def _check_mapping(mapping: Any, where: str) -> None:
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise UnsupportedTypeError(
                f"{where} has the key {key!r} ({type(key).__name__}); anndata writes only "
                f"string keys: rename it, e.g. {where}[{str(key)!r}] = {where}.pop({key!r})"
            )
        inner = f"{where}[{key!r}]"
        if isinstance(value, tuple):
            raise UnsupportedTypeError(
                f"{inner} is a tuple, which anndata cannot write; make it a list: "
                f"{inner} = list({inner})"
            )
        if isinstance(value, dict):
            _check_mapping(value, inner)


def in_memory(adata: Any) -> Any:
    """What to write: a backed AnnData is copied into memory, since anndata's writers would
    point it at the file just written (our temporary, which is then renamed)."""
    return adata.to_memory() if adata.isbacked else adata


def write_h5ad(adata: Any, path: Any) -> None:
    import h5py

    in_memory(adata).write_h5ad(path, convert_strings_to_categoricals=False)
    with h5py.File(path, "r+") as f:
        uns.check_written(f, [("uns", adata.uns, "adata.uns")])


def load_h5ad(path: Any) -> Any:
    import anndata
    import h5py

    adata = anndata.read_h5ad(path)
    with h5py.File(path, "r") as f:
        uns.restore_from(f.attrs.get(uns.RECORD_KEY), {"uns": adata.uns})
    return adata


def write_zarr(adata: Any, path: Any) -> None:
    import anndata
    import zarr

    # zarr format 2, pinned: both zarr 2 and zarr 3 read it. anndata warns that its default
    # will change even when the format is set explicitly; that warning is not the user's.
    with warnings.catch_warnings(), anndata.settings.override(zarr_write_format=2):
        warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
        in_memory(adata).write_zarr(str(path), convert_strings_to_categoricals=False)
    uns.check_written(zarr.open_group(str(path), mode="r+"), [("uns", adata.uns, "adata.uns")])


def load_zarr(path: Any) -> Any:
    import anndata
    import zarr

    adata = anndata.read_zarr(str(path))
    group = zarr.open_group(str(path), mode="r")
    uns.restore_from(group.attrs.get(uns.RECORD_KEY), {"uns": adata.uns})
    return adata


H5AD = register_format(
    "h5ad",
    suffix=".h5ad",
    type="anndata:AnnData",
    write=write_h5ad,
    load=load_h5ad,
    check=check_anndata,
)
ZARR = register_format(
    "zarr",
    suffix=".zarr",
    type="anndata:AnnData",
    write=write_zarr,
    load=load_zarr,
    folder=True,
    check=check_anndata,
)
