"""AnnData's `uns` comes back exactly as saved, or the save is refused naming the key.

anndata's writers change some values of `uns` on their own: numpy scalars come back as Python
scalars, numpy string arrays as object arrays, lists as arrays (and a list mixing numbers and
text as an array of text). After writing, `check_written` reads each `uns` back from the file,
undoes those changes (`fixes` notes them) and compares the result with the original, value by
value and type by type. What matches is recorded on the file's root (the attribute
`RECORD_KEY`, by the path of each uns group) so that a load gives back exactly what was saved;
anything else refuses the save with the key that would change.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UnsupportedTypeError
from .frame_fidelity import same_index, same_value

RECORD_KEY = "lamin_magic"
Fix = tuple[list[str], str, str]  # (path of keys, kind, argument)


def fixes(uns: Any, path: list[str] | None = None) -> list[Fix]:
    """The values of `uns` that anndata gives back as another type, with how to undo it."""
    import numpy as np

    path = path or []
    found: list[Fix] = []
    for key, value in uns.items():
        here = [*path, key]
        if isinstance(value, dict):
            found += fixes(value, here)
        elif isinstance(value, np.generic):
            found.append((here, "scalar", value.dtype.str))
        elif isinstance(value, np.ndarray) and value.dtype.names:  # scanpy's rank_genes_groups
            layout = {"descr": value.dtype.descr, "recarray": isinstance(value, np.recarray)}
            found.append((here, "records", json.dumps(layout)))
        elif isinstance(value, np.ndarray) and value.dtype.kind in "UOS":  # zarr: StringDType
            found.append((here, "array", value.dtype.str))
        elif isinstance(value, list):
            found.append((here, "list", ""))
        if isinstance(value, np.ndarray) and fortran_ordered(value):
            found.append((here, "fortran", ""))  # anndata writes every array in C order
    return found


def fortran_ordered(array: Any) -> bool:
    """Laid out column by column (anndata writes and reads every array row by row)."""
    return bool(array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous)


def restore(uns: Any, record: list[Fix]) -> None:
    """Undo, in place, what anndata changed in `uns`, as recorded at save time."""
    import numpy as np

    for path, kind, argument in record:
        parent = uns
        for key in path[:-1]:
            parent = parent[key]
        value = parent[path[-1]]
        if kind == "scalar":
            parent[path[-1]] = np.dtype(argument).type(value)
        elif kind == "array":
            parent[path[-1]] = np.asarray(value).astype(argument)
        elif kind == "list":
            parent[path[-1]] = np.asarray(value).tolist()
        elif kind == "fortran":
            parent[path[-1]] = np.asfortranarray(value)
        elif kind == "records":
            layout = json.loads(argument)
            dtype = np.dtype([tuple(_tuples(field)) for field in layout["descr"]])
            records = np.asarray(value).astype(dtype)
            parent[path[-1]] = records.view(np.recarray) if layout["recarray"] else records


def _tuples(value: Any) -> Any:
    """JSON gave back lists where numpy's dtype description has tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


SLOTS = "#slots"  # in the record, beside the uns paths: arrays to give back as they were


def nothing_to_check(places: list[tuple[str, Any, str]], slots: dict[str, str]) -> bool:
    """Every uns empty and no array to record: the written file need not be opened again."""
    return not slots and not any(saved for _, saved, _ in places)


def check_written(
    group: Any, places: list[tuple[str, Any, str]], slots: dict[str, str] | None = None
) -> None:
    """After writing: read each `uns` back from the file (an h5py File or zarr group), undo
    what anndata changes, and refuse, naming the key, what still differs from the object
    saved. `places` are (the uns group's path in the file, the uns saved, its name in
    messages). The undoing is recorded on the file's root for `restore_from`."""
    import anndata

    records: dict[str, Any] = {SLOTS: slots} if slots else {}
    for path, saved, where in places:
        record = fixes(saved)
        written = anndata.io.read_elem(group[path]) if path in group else {}
        restore(written, record)
        problem = difference(dict(saved), dict(written), where)  # uns itself: an OrderedDict
        if problem:
            raise UnsupportedTypeError(f"{problem}; {FIX}")
        if record:
            records[path] = record
    if records:
        group.attrs[RECORD_KEY] = json.dumps(records)


def restore_from(text: Any, places: dict[str, Any]) -> dict[str, str]:
    """Undo, in the loaded object's uns dicts (by their path in the file), what was recorded;
    returns the record of array slots (anndata_formats.restore_slots applies it)."""
    if text is None:
        return {}
    records = json.loads(text)
    for path, record in records.items():
        if path in places:
            restore(places[path], [(list(p), kind, argument) for p, kind, argument in record])
    return dict(records.get(SLOTS, {}))


FIX = "change it to a type anndata keeps (text, numbers, numpy arrays, dicts of those)"


def difference(a: Any, b: Any, where: str) -> str | None:
    """Where `b` differs from `a` in value or type, in words; None when they are the same."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    if type(a) is not type(b):
        return f"{where} ({_kind(a)}) would come back as {_kind(b)}"
    if isinstance(a, dict):
        if set(a) != set(b):
            keys = sorted(map(str, a)), sorted(map(str, b))
            return f"{where} has the keys {keys[0]}, would come back with {keys[1]}"
        for key in a:
            found = difference(a[key], b[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(a, np.ndarray):
        if (
            a.dtype != b.dtype
            or a.shape != b.shape
            or a.dtype.metadata != b.dtype.metadata
            or fortran_ordered(a) != fortran_ordered(b)
        ):
            return f"{where} ({_kind(a)}) would come back as {_kind(b)}"
        if a.dtype.hasobject:  # object arrays, and records with object fields
            same = all(map(same_value, a.ravel().tolist(), b.ravel().tolist()))
        else:
            same = a.tobytes() == b.tobytes()
        return None if same else f"{where} would come back with other values"
    if isinstance(a, np.generic):
        return None if a.tobytes() == b.tobytes() else f"{where} would come back as {b!r}"
    if sp.issparse(a):
        parts = ("data", "indices", "indptr") if hasattr(a, "indptr") else ()
        same = a.format == b.format and a.dtype == b.dtype and a.shape == b.shape
        same = same and all(getattr(a, p).tobytes() == getattr(b, p).tobytes() for p in parts)
        return None if same and parts else f"{where} would come back changed"
    if isinstance(a, pd.DataFrame):
        same = same_index(a.columns, b.columns) and same_index(a.index, b.index)
        same = same and all(
            repr(a.iloc[:, i].dtype) == repr(b.iloc[:, i].dtype)
            and all(map(same_value, a.iloc[:, i].tolist(), b.iloc[:, i].tolist()))
            for i in range(a.shape[1])
        )
        return None if same else f"{where} (a DataFrame) would come back changed"
    if isinstance(a, pd.Categorical):
        same = a.ordered == b.ordered and same_index(a.categories, b.categories)
        same = same and a.codes.tobytes() == b.codes.tobytes()
        return None if same else f"{where} (a Categorical) would come back changed"
    try:
        return None if same_value(a, b) else f"{where} = {a!r:.60} would come back as {b!r:.60}"
    except Exception:
        return f"{where} ({_kind(a)}) cannot be compared after a round trip"


def _kind(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    name = type(value).__name__
    return f"a {name} of {dtype}" if dtype is not None and name == "ndarray" else f"a {name}"
