"""numpy.ndarray <-> .npy, never pickled: dtype, shape, values and C or Fortran order kept.

A bare `%%lamin save` does not save every array a cell binds (arrays are everywhere); name
them: `%lamin save arr`.
"""

from __future__ import annotations

import warnings
from typing import Any, BinaryIO

from ..errors import UnsupportedTypeError
from .formats import register_format

TYPE = "numpy:ndarray"


def check_ndarray(arr: Any) -> None:
    """Refuse what .npy would change or could keep only by pickling, with the fix."""
    import numpy as np

    if type(arr) is not np.ndarray:
        kind = f"{type(arr).__module__}.{type(arr).__qualname__}"
        fix = (
            "store its data and mask: np.ma.getdata(x), np.ma.getmaskarray(x)"
            if isinstance(arr, np.ma.MaskedArray)
            else "store it as a plain array: np.asarray(x)"
        )
        raise UnsupportedTypeError(f"a {kind} would load back as a plain ndarray; {fix}")
    if arr.dtype.hasobject:
        raise UnsupportedTypeError(
            f"the array holds Python objects (dtype {arr.dtype}), which .npy keeps only by "
            "pickling; convert it to a fixed type, e.g. x.astype(str) or x.astype(float)"
        )
    if arr.dtype.kind == "T" or not type(arr.dtype).__module__.startswith("numpy"):
        raise UnsupportedTypeError(
            f"the array's dtype {arr.dtype} is kept in .npy only by pickling; convert it, "
            "e.g. to fixed-width strings: x.astype(str)"
        )
    if _has_metadata(arr.dtype):
        raise UnsupportedTypeError(
            "the array's dtype carries metadata, which .npy drops; drop it first: "
            "x = x.astype(np.dtype(x.dtype.str)) (or store the metadata separately)"
        )


def _has_metadata(dtype: Any) -> bool:
    if dtype.metadata:
        return True
    if dtype.subdtype is not None:
        return _has_metadata(dtype.subdtype[0])
    return any(_has_metadata(dtype.fields[name][0]) for name in dtype.names or ())


def write_npy(arr: Any, stream: BinaryIO) -> None:
    import numpy as np

    with warnings.catch_warnings():
        # non-latin-1 field names need .npy format 3.0 (numpy >= 1.17): numpy says so
        warnings.filterwarnings("ignore", message="Stored array in format 3.0")
        np.save(stream, arr, allow_pickle=False)


def load_npy(path: Any) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)


NPY = register_format(
    "npy",
    suffix=".npy",
    type=TYPE,
    write=write_npy,
    load=load_npy,
    stream=True,
    check=check_ndarray,
    implicit=False,
)
