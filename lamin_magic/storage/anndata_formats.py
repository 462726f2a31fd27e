"""anndata.AnnData <-> .h5ad (the default) or .zarr (a folder)."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import UnsupportedTypeError
from . import uns_fidelity as uns
from .formats import register_format

# anndata converts string columns to categoricals in the object it writes unless told not
# to: that would change the user's object and make what loads differ from what was saved.


def check_anndata(adata: Any, where: str = "adata") -> None:
    """Refuse what anndata's writers fail on or change, with the fix, before anything is written."""
    check_mapping(adata.uns, f"{where}.uns")
    check_frames(adata, where)
    _check_arrays(adata, where)


def check_frames(obj: Any, where: str) -> None:
    """obs, var, raw.var and the DataFrames in obsm/varm, of an AnnData or a MuData."""
    import pandas as pd

    frames = [(obj.obs, f"{where}.obs"), (obj.var, f"{where}.var")]
    raw = getattr(obj, "raw", None)
    if raw is not None:
        frames.append((raw.var, f"{where}.raw.var"))
    for slot in ("obsm", "varm"):
        for key, value in getattr(obj, slot).items():
            if isinstance(value, pd.DataFrame):
                frames.append((value, f"{where}.{slot}[{key!r}]"))
    for frame, name in frames:
        _check_frame(frame, name)


def _check_frame(frame: Any, where: str) -> None:
    """anndata writes an object column as text: h5ad refuses anything else in it, and zarr
    writes it as text ('nan', '1'), which would change the data silently. It keeps neither a
    DataFrame's attrs nor an index named '_index', nor the dtype of extension categories."""
    import numpy as np
    import pandas as pd

    if frame.attrs:
        raise UnsupportedTypeError(
            f"{where}.attrs would not be kept (anndata stores no DataFrame attrs); move it "
            f"into uns and clear it: {where}.attrs = {{}}"
        )
    if frame.index.name == "_index":
        raise UnsupportedTypeError(
            f"{where}'s index is named '_index', a name anndata reserves (it comes back "
            f"unnamed); rename it: {where}.index.name = 'index'"
        )
    for name in frame.columns:
        column = frame[name]
        code = f"{where}[{name!r}]"
        if isinstance(column.dtype, pd.CategoricalDtype):
            categories = column.dtype.categories
            if categories.dtype == object:
                fix = f"make them text: {code} = {code}.cat.rename_categories(str)"
                _only_text(categories.to_numpy(), f"the categories of {code}", fix)
            elif not isinstance(categories.dtype, np.dtype):
                raise UnsupportedTypeError(
                    f"the categories of {code} have dtype {categories.dtype}, which anndata "
                    f"gives back as a numpy dtype; convert them first: {code} = "
                    f"{code}.cat.set_categories({code}.cat.categories.to_numpy())"
                )
        elif column.dtype == object:
            fix = f"make it categorical ({code} = {code}.astype('category')) or give it one type"
            _only_text(column.to_numpy(), code, fix)


def _only_text(values: Any, what: str, fix: str) -> None:
    odd = {type(v) for v in values} - {str}
    if odd:
        kinds = ", ".join(sorted(t.__name__ for t in odd))
        raise UnsupportedTypeError(
            f"{what}: {kinds} values among text, which anndata would store as text or refuse; {fix}"
        )


def _check_arrays(adata: Any, where: str) -> None:
    """X, layers and the arrays of obsm/varm/obsp/varp (and raw.X): what anndata changes."""
    import numpy as np
    import scipy.sparse as sp

    for path, value in array_slots(adata):
        code = f"{where}.{path}" if path == "X" else f"{where}.{_slot_code(path)}"
        if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
            raise UnsupportedTypeError(
                f"{code} is a {type(value).__name__}, which anndata stores as a plain array "
                f"(a mask or a subclass would be lost); store {code} = np.asarray({code})"
            )
        if isinstance(value, np.ndarray) and value.dtype.kind in "USO":
            raise UnsupportedTypeError(
                f"{code} holds text ({value.dtype}), which anndata gives back as another "
                "kind of string array; keep text in obs, var or uns"
            )
    raw = adata.raw
    if raw is not None and (
        isinstance(raw.X, sp.sparray)
        or (isinstance(raw.X, np.ndarray) and uns.fortran_ordered(raw.X))
    ):
        raise UnsupportedTypeError(
            f"{where}.raw.X is a {type(raw.X).__name__} (or Fortran-ordered), which anndata "
            "gives back as a csr_matrix or a C-ordered array; convert it before setting raw"
        )


def _slot_code(path: str) -> str:
    slot, key = path.split("/", 1)
    return f"{slot}[{key!r}]"


def array_slots(adata: Any) -> list[tuple[str, Any]]:
    """(path in the file, value) of X and of every array in layers, obsm, varm, obsp, varp."""
    import pandas as pd

    found = [("X", adata.X)] if adata.X is not None else []
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        for key, value in getattr(adata, slot).items():
            if not isinstance(value, pd.DataFrame):
                found.append((f"{slot}/{key}", value))
    return found


def slot_record(adata: Any, prefix: str = "") -> dict[str, str]:
    """What anndata gives back as another kind of array: scipy sparse arrays come back as
    sparse matrices, Fortran-ordered arrays as C-ordered ones. Recorded, undone on load."""
    import numpy as np
    import scipy.sparse as sp

    record = {}
    for path, value in array_slots(adata):
        if isinstance(value, sp.sparray):
            record[prefix + path] = type(value).__name__
        elif isinstance(value, np.ndarray) and uns.fortran_ordered(value):
            record[prefix + path] = "fortran"
    return record


def restore_slots(adata: Any, record: dict[str, str], prefix: str = "") -> None:
    import numpy as np
    import scipy.sparse as sp

    for path, kind in record.items():
        if not path.startswith(prefix):
            continue
        path = path[len(prefix) :]
        value = (
            adata.X if path == "X" else getattr(adata, path.split("/")[0])[path.split("/", 1)[1]]
        )
        if kind == "fortran":
            value = np.asfortranarray(value)
        elif kind in ("csr_array", "csc_array", "coo_array"):
            value = getattr(sp, kind)(value)
        else:
            continue
        if path == "X":
            adata.X = value
        else:
            getattr(adata, path.split("/")[0])[path.split("/", 1)[1]] = value


def check_mapping(mapping: Any, where: str) -> None:
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise UnsupportedTypeError(
                f"{where} has the key {key!r} ({type(key).__name__}); anndata writes only "
                f"string keys: rename it, e.g. {where}[{str(key)!r}] = {where}.pop({key!r})"
            )
        if key in ("", ".", "..") or "/" in key:
            raise UnsupportedTypeError(
                f"{where} has the key {key!r}, which HDF5 and zarr cannot use as a name "
                f"(empty, '.', '..' or with '/'); rename it, e.g. "
                f"{where}['key'] = {where}.pop({key!r})"
            )
        inner = f"{where}[{key!r}]"
        if isinstance(value, tuple):
            raise UnsupportedTypeError(
                f"{inner} is a tuple, which anndata cannot write; make it a list: "
                f"{inner} = list({inner})"
            )
        if isinstance(value, dict):
            check_mapping(value, inner)


def in_memory(adata: Any) -> Any:
    """What to write: a backed AnnData is copied into memory, since anndata's writers would
    point it at the file just written (our temporary, which is then renamed)."""
    return adata.to_memory() if adata.isbacked else adata


def _scratch_h5() -> Any:
    import uuid

    import h5py

    return h5py.File(f"{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False)


def _scratch_zarr() -> Any:
    import zarr

    return zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=2)


def diagnosed(write: Any, adata: Any, scratch: Any) -> None:
    """Run anndata's writer; if it fails, name the element it failed on: each part of the
    object is written on its own into a scratch group in memory (run only on failure)."""
    try:
        write()
    except (OSError, MemoryError):
        raise
    except Exception as e:
        import anndata

        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        for where, value in _parts(adata):
            group = scratch()
            try:
                anndata.io.write_elem(group, "x", value)
            except Exception as inner:
                text = str(inner).strip().splitlines()
                why = text[0] if text else type(inner).__name__
                raise UnsupportedTypeError(
                    f"anndata cannot write {where} ({type(value).__name__}: {why}); change it "
                    "to text, numbers, numpy arrays or dicts of those"
                ) from e
            finally:
                if hasattr(group, "close"):
                    group.close()
        raise UnsupportedTypeError(f"anndata cannot write it ({type(e).__name__}: {reason})") from e


def _parts(adata: Any, where: str = "adata") -> list[tuple[str, Any]]:
    """The parts of an AnnData, the innermost values of uns first named (uns[a][b])."""
    found: list[tuple[str, Any]] = []

    def walk(mapping: Any, name: str) -> None:
        for key, value in mapping.items():
            if isinstance(value, dict):
                walk(value, f"{name}[{key!r}]")
            else:
                found.append((f"{name}[{key!r}]", value))

    walk(adata.uns, f"{where}.uns")
    found += [(f"{where}.obs", adata.obs), (f"{where}.var", adata.var)]
    for slot in ("obsm", "varm", "layers", "obsp", "varp"):
        found += [(f"{where}.{slot}[{k!r}]", v) for k, v in getattr(adata, slot).items()]
    return found


def write_h5ad(adata: Any, path: Any) -> None:
    import h5py

    source = in_memory(adata)
    diagnosed(
        lambda: source.write_h5ad(path, convert_strings_to_categoricals=False), adata, _scratch_h5
    )
    places, slots = [("uns", adata.uns, "adata.uns")], slot_record(adata)
    if uns.nothing_to_check(places, slots):
        return
    with h5py.File(path, "r+") as f:
        uns.check_written(f, places, slots)


def load_h5ad(path: Any) -> Any:
    import anndata
    import h5py

    adata = anndata.read_h5ad(path)
    with h5py.File(path, "r") as f:
        slots = uns.restore_from(f.attrs.get(uns.RECORD_KEY), {"uns": adata.uns})
    restore_slots(adata, slots)
    return adata


def write_zarr(adata: Any, path: Any) -> None:
    import anndata
    import zarr

    # zarr format 2, pinned: both zarr 2 and zarr 3 read it. anndata warns that its default
    # will change even when the format is set explicitly; that warning is not the user's.
    with warnings.catch_warnings(), anndata.settings.override(zarr_write_format=2):
        warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
        source = in_memory(adata)
        diagnosed(
            lambda: source.write_zarr(str(path), convert_strings_to_categoricals=False),
            adata,
            _scratch_zarr,
        )
    places, slots = [("uns", adata.uns, "adata.uns")], slot_record(adata)
    if not uns.nothing_to_check(places, slots):
        uns.check_written(zarr.open_group(str(path), mode="r+"), places, slots)


def load_zarr(path: Any) -> Any:
    import anndata
    import zarr

    adata = anndata.read_zarr(str(path))
    group = zarr.open_group(str(path), mode="r")
    restore_slots(adata, uns.restore_from(group.attrs.get(uns.RECORD_KEY), {"uns": adata.uns}))
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
