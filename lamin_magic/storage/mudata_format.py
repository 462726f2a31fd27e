"""mudata.MuData <-> .h5mu with mudata's own writer and reader."""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedTypeError
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


def write_h5mu(mdata: Any, path: Any) -> None:
    import mudata

    # what is stored is the object as it is: no columns pulled from the modalities, into
    # the user's object or the file
    with mudata.set_options(pull_on_update=False):
        mudata.write_h5mu(path, mdata)


def load_h5mu(path: Any) -> Any:
    mudata = require("mudata", "mudata")
    with mudata.set_options(pull_on_update=False):
        return mudata.read_h5mu(path)


H5MU = register_format(
    "h5mu",
    suffix=".h5mu",
    type="mudata:MuData",
    write=write_h5mu,
    load=load_h5mu,
    check=check_mudata,
)
