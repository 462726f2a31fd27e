"""mudata.MuData <-> .h5mu with mudata's own writer and reader."""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedTypeError
from . import uns_fidelity as uns
from .anndata_formats import _check_mapping, check_anndata
from .formats import register_format
from .optional import require


def check_mudata(mdata: Any) -> None:
    """Refuse what the h5mu writer fails on or changes, with the fix."""
    for name, adata in mdata.mod.items():
        if "/" in name:
            raise UnsupportedTypeError(
                f"modality {name!r} has a '/' in its name, which HDF5 reads as a group; "
                "rename it: mdata.mod[new] = mdata.mod.pop(old)"
            )
        check_anndata(adata)
    _check_mapping(mdata.uns, "mdata.uns")


def uns_places(mdata: Any) -> list[tuple[str, Any, str]]:
    """Each uns of a MuData: its own and its modalities', by their path in an .h5mu file."""
    places = [("uns", mdata.uns, "mdata.uns")]
    for name, adata in mdata.mod.items():
        places.append((f"mod/{name}/uns", adata.uns, f"mdata.mod[{name!r}].uns"))
    return places


def write_h5mu(mdata: Any, path: Any) -> None:
    import h5py
    import mudata

    # what is stored is the object as it is: no columns pulled from the modalities, into
    # the user's object or the file
    with mudata.set_options(pull_on_update=False):
        mudata.write_h5mu(path, mdata)
    with h5py.File(path, "r+") as f:
        uns.check_written(f, uns_places(mdata))


def load_h5mu(path: Any) -> Any:
    import h5py

    mudata = require("mudata", "mudata")
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.read_h5mu(path)
    with h5py.File(path, "r") as f:
        record = f.attrs.get(uns.RECORD_KEY)
    uns.restore_from(record, {path: value for path, value, _ in uns_places(mdata)})
    return mdata


H5MU = register_format(
    "h5mu",
    suffix=".h5mu",
    type="mudata:MuData",
    write=write_h5mu,
    load=load_h5mu,
    check=check_mudata,
)
