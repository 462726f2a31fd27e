"""mudata.MuData <-> .h5mu with mudata's own writer and reader."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import UnsupportedTypeError
from . import uns_fidelity as uns
from .anndata_formats import (
    check_anndata,
    check_frames,
    check_mapping,
    restore_slots,
    slot_record,
)
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
        check_anndata(adata, f"mdata.mod[{name!r}]")
    check_mapping(mdata.uns, "mdata.uns")
    check_frames(mdata, "mdata")


def uns_places(mdata: Any) -> list[tuple[str, Any, str]]:
    """Each uns of a MuData: its own and its modalities', by their path in an .h5mu file."""
    places = [("uns", mdata.uns, "mdata.uns")]
    for name, adata in mdata.mod.items():
        places.append((f"mod/{name}/uns", adata.uns, f"mdata.mod[{name!r}].uns"))
    return places


@contextlib.contextmanager
def strings_kept() -> Iterator[None]:
    """mudata's writer turns text columns into categoricals, in the user's modalities (in
    place) and in the file; anndata's own writers take a flag against it, mudata's does not.
    For the write, the conversion does nothing: text is written as text."""
    import anndata
    import mudata

    def keep(self: Any, df: Any = None) -> Any:
        return df

    saved = anndata.AnnData.strings_to_categoricals, mudata.MuData.strings_to_categoricals
    anndata.AnnData.strings_to_categoricals = keep
    mudata.MuData.strings_to_categoricals = keep
    try:
        yield
    finally:
        anndata.AnnData.strings_to_categoricals, mudata.MuData.strings_to_categoricals = saved


def write_h5mu(mdata: Any, path: Any) -> None:
    import h5py
    import mudata

    # what is stored is the object as it is: no columns pulled from the modalities, into
    # the user's object or the file, and text stays text
    with mudata.set_options(pull_on_update=False), strings_kept():
        mudata.write_h5mu(path, mdata)
    slots: dict[str, str] = {}
    for name, adata in mdata.mod.items():
        slots.update(slot_record(adata, prefix=f"mod/{name}/"))
    places = uns_places(mdata)
    if uns.nothing_to_check(places, slots):
        return
    with h5py.File(path, "r+") as f:
        uns.check_written(f, places, slots)


def load_h5mu(path: Any) -> Any:
    import h5py

    mudata = require("mudata", "mudata")
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.read_h5mu(path)
    with h5py.File(path, "r") as f:
        record = f.attrs.get(uns.RECORD_KEY)
    slots = uns.restore_from(record, {path: value for path, value, _ in uns_places(mdata)})
    for name, adata in mdata.mod.items():
        restore_slots(adata, slots, prefix=f"mod/{name}/")
    return mdata


H5MU = register_format(
    "h5mu",
    suffix=".h5mu",
    type="mudata:MuData",
    write=write_h5mu,
    load=load_h5mu,
    check=check_mudata,
)
