"""A strict comparator for what was saved and what loaded back.

`differences(saved, loaded)` lists every way `loaded` is not `saved`, one string each,
`[]` when they are the same. "The same" is strict on purpose: the types of values and labels,
exact dtypes (extension dtypes and their parameters too), index classes, the bits of floats
(the sign of zero; NaN positions, though not NaN payloads, which pandas does not keep itself),
NaN vs None vs pd.NA, str vs np.str_, list vs ndarray, dict key sets. A mismatch inside an
array is reported once, at its first position, with how many others there are.

Used by tests/test_corpus.py and scripts/corpus.py; any test may use it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

MAX_SHOWN = 80  # characters of a value shown in a message


def differences(saved: Any, loaded: Any) -> list[str]:
    """Every difference between `saved` and `loaded`, each as 'where: what'; [] if none."""
    return _diff(saved, loaded, "")


def _short(value: Any) -> str:
    return _clip(repr(value))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _typed(value: Any) -> str:
    return f"{_short(value)} ({type(value).__module__}.{type(value).__qualname__})"


def _at(path: str) -> str:
    return path or "object"


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if type(a) is not type(b):
        return [f"{_at(path)}: type {_typename(a)} != {_typename(b)}"]
    kind = _kind(a)
    if kind == "anndata":
        return _anndata(a, b, path)
    if kind == "dataframe":
        return _frame(a, b, path)
    if kind == "series":
        return _series(a, b, path)
    if kind == "index":
        return _index(a, b, path)
    if kind == "ndarray":
        return _ndarray(a, b, path)
    if kind == "sparse":
        return _sparse(a, b, path)
    if isinstance(a, Mapping):
        return _mapping(a, b, path)
    if isinstance(a, list | tuple):
        return _sequence(a, b, path)
    why = _scalar(a, b)
    return [] if why is None else [f"{_at(path)}: {why}"]


def _typename(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _kind(value: Any) -> str:
    module = type(value).__module__
    if module.startswith("anndata") and type(value).__name__ == "AnnData":
        return "anndata"
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return "dataframe"
        if isinstance(value, pd.Series):
            return "series"
        if isinstance(value, pd.Index):
            return "index"
    if module.startswith("numpy") and type(value).__name__ == "ndarray":
        return "ndarray"
    if module.startswith("scipy.sparse"):
        return "sparse"
    return "other"


# ---------------------------------------------------------------- scalars


def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _scalar(a: Any, b: Any) -> str | None:
    """Why two values of the same type differ, or None."""
    import numpy as np

    if type(a) is not type(b):
        return f"{_typed(a)} != {_typed(b)}"
    if isinstance(a, np.generic):
        # np.str_ and np.bytes_ have a dtype per length: their values tell them apart
        if a.dtype.kind not in "SU" and (a.dtype != b.dtype or a.dtype.str != b.dtype.str):
            return f"dtype {a.dtype} != {b.dtype}"
        if _equal_mask(np.asarray(a).reshape(1), np.asarray(b).reshape(1))[0]:
            return None
        return f"{_typed(a)} != {_typed(b)}"
    if isinstance(a, float):
        if math.isnan(a) and math.isnan(b):
            return None
        return None if _float_bits(a) == _float_bits(b) else f"{_short(a)} != {_short(b)}"
    if isinstance(a, complex):
        same = _scalar(a.real, b.real) is None and _scalar(a.imag, b.imag) is None
        return None if same else f"{_short(a)} != {_short(b)}"
    if a is b:
        return None
    if isinstance(a, Mapping | list | tuple) or _kind(a) != "other":
        found = _diff(a, b, "")
        return None if not found else "; ".join(found[:3])
    is_timestamp = hasattr(a, "tz") and hasattr(a, "unit")
    if is_timestamp and (str(a.tz) != str(b.tz) or a.unit != b.unit):
        return f"{_short(a)} (unit {a.unit}) != {_short(b)} (unit {b.unit})"
    try:
        same = a == b
        if not isinstance(same, bool | np.bool_):
            same = repr(a) == repr(b)
    except Exception:
        same = repr(a) == repr(b)
    if same and type(a).__name__ == "Decimal":
        same = str(a) == str(b)  # Decimal('1.0') == Decimal('1.00'), yet they print apart
    return None if same else f"{_short(a)} != {_short(b)}"


# ---------------------------------------------------------------- arrays


def _equal_mask(a: Any, b: Any) -> Any:
    """Elementwise sameness of two numpy arrays of one dtype and shape (flattened)."""
    import numpy as np

    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    kind = a.dtype.kind
    if kind == "O":
        return _equal_objects(a, b)
    if kind in "fc":
        if kind == "c":
            parts = a.real.dtype
            a2, b2 = a.view(parts).reshape(-1, 2), b.view(parts).reshape(-1, 2)
            return _equal_mask(a2[:, 0], b2[:, 0]) & _equal_mask(a2[:, 1], b2[:, 1])
        ints = np.dtype(f"u{a.dtype.itemsize}")
        same_bits = np.ascontiguousarray(a).view(ints) == np.ascontiguousarray(b).view(ints)
        return same_bits | (np.isnan(a) & np.isnan(b))
    if kind in "mM":
        return a.view("i8") == b.view("i8")
    if kind == "V":
        return np.fromiter((x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True)), bool)
    return np.asarray(a == b, dtype=bool).reshape(-1)


SIMPLE_TYPES = (str, int, bool, bytes, type(None))


def _equal_objects(a: Any, b: Any) -> Any:
    """Elementwise sameness of two object arrays: of types first, then of values; vectorized
    where both hold one simple type (str, int, ...), value by value elsewhere."""
    import numpy as np

    types_a = np.fromiter(map(type, a), object, len(a))
    types_b = np.fromiter(map(type, b), object, len(b))
    same = types_a == types_b
    simple = same & np.isin(types_a, np.array(SIMPLE_TYPES, dtype=object))
    try:
        with np.errstate(all="ignore"):
            equal = np.asarray(a[simple] == b[simple], dtype=bool)
    except Exception:  # an element whose == is not a bool: compare one by one
        simple[:] = False
    else:
        same[np.flatnonzero(simple)] = equal
    for i in np.flatnonzero(same & ~simple):
        same[i] = _scalar(a[i], b[i]) is None
    return same


def _first_mismatch(same: Any, a_values: Any, b_values: Any, path: str) -> list[str]:
    import numpy as np

    bad = np.flatnonzero(~np.asarray(same, dtype=bool))
    if len(bad) == 0:
        return []
    i = int(bad[0])
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    x, y = a_values[i], b_values[i]
    container = _kind(x) != "other" or isinstance(x, Mapping | list | tuple)
    if type(x) is type(y) and container:
        inner = _diff(x, y, f"{path}[{i}]")  # a container: say where inside it
        if inner:
            return [inner[0] + more]
    return [f"{path}[{i}]: {_typed(x)} != {_typed(y)}{more}"]


def _ndarray(a: Any, b: Any, path: str) -> list[str]:
    where = _at(path)
    if not _same_numpy_dtype(a.dtype, b.dtype):
        return [f"{where}: dtype {_dtype_text(a.dtype, b.dtype)}"]
    if a.shape != b.shape:
        return [f"{where}: shape {a.shape} != {b.shape}"]
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    return _first_mismatch(_equal_mask(flat_a, flat_b), flat_a, flat_b, where)


def _sparse(a: Any, b: Any, path: str) -> list[str]:
    where = _at(path)
    for attr in ("format", "shape"):
        if getattr(a, attr) != getattr(b, attr):
            return [f"{where}: {attr} {getattr(a, attr)} != {getattr(b, attr)}"]
    if a.dtype != b.dtype:
        return [f"{where}: dtype {a.dtype.str} != {b.dtype.str}"]
    if a.format not in ("csr", "csc", "coo"):
        a, b = a.tocsr(), b.tocsr()
    parts = ("indptr", "indices", "data") if a.format in ("csr", "csc") else ("row", "col", "data")
    for part in parts:
        found = _ndarray(getattr(a, part), getattr(b, part), f"{where}.{part}")
        if found:
            return found
    return []


# ---------------------------------------------------------------- containers


def _mapping(a: Any, b: Any, path: str) -> list[str]:
    where = _at(path)
    keys_a, keys_b = list(a.keys()), list(b.keys())
    if set(keys_a) != set(keys_b):
        gone = [k for k in keys_a if k not in b]
        new = [k for k in keys_b if k not in a]
        return [f"{where}: keys lost {_short(gone)}, keys gained {_short(new)}"]
    found: list[str] = []
    for key in keys_a:
        found += _diff(a[key], b[key], f"{path}[{key!r}]")
    return found


def _sequence(a: Any, b: Any, path: str) -> list[str]:
    if len(a) != len(b):
        return [f"{_at(path)}: length {len(a)} != {len(b)}"]
    found: list[str] = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        found += _diff(x, y, f"{path}[{i}]")
    return found


# ---------------------------------------------------------------- pandas


def _dtype(a: Any, b: Any, where: str) -> list[str]:
    """Exact dtype sameness, extension dtypes with their parameters."""
    import numpy as np
    import pandas as pd

    if isinstance(a, pd.CategoricalDtype) and isinstance(b, pd.CategoricalDtype):
        if a.ordered != b.ordered:
            return [f"{where}: categorical ordered {a.ordered} != {b.ordered}"]
        return _index(a.categories, b.categories, f"{where}.categories")
    if isinstance(a, np.dtype) and isinstance(b, np.dtype):
        return [] if _same_numpy_dtype(a, b) else [f"{where}: dtype {_dtype_text(a, b)}"]
    if type(a) is not type(b) or str(a) != str(b) or repr(a) != repr(b) or a != b:
        return [f"{where}: dtype {_dtype_text(a, b)}"]
    if isinstance(a, pd.StringDtype) and (
        a.storage != b.storage or repr(a.na_value) != repr(b.na_value)
    ):
        return [f"{where}: dtype {a!r} != {b!r}"]
    if isinstance(a, pd.ArrowDtype) and not a.pyarrow_dtype.equals(b.pyarrow_dtype):
        return [f"{where}: dtype {a.pyarrow_dtype} != {b.pyarrow_dtype}"]
    return []


def _same_numpy_dtype(a: Any, b: Any) -> bool:
    """One numpy dtype: kind, size, byte order (explicit '<' and native '=' are one on a
    little-endian machine), structure and metadata."""
    return a == b and a.str == b.str and a.descr == b.descr and a.metadata == b.metadata


def _dtype_text(a: Any, b: Any) -> str:
    """'A != B' for two dtypes, naming what differs where their texts alone would not."""
    if getattr(a, "names", None) and getattr(b, "names", None):  # structured: the first field
        if a.names != b.names:
            return f"fields {_short(a.names)} != {_short(b.names)}"
        for name in a.names:
            fa, fb = a.fields[name][0], b.fields[name][0]
            if fa != fb or fa.str != fb.str:
                return f"of field {name!r} {fa.str} != {fb.str}"
    ta, tb = _dtype_name(a), _dtype_name(b)
    if ta == tb:
        ta, tb = f"{type(a).__name__} {ta}", f"{type(b).__name__} {tb}"
        if ta == tb:
            ta, tb = repr(a), repr(b)
    return f"{_clip(ta)} != {_clip(tb)}"


def _dtype_name(dtype: Any) -> str:
    if type(dtype).__name__ == "StringDtype":  # str() hides the storage or the NA marker
        return f"StringDtype({dtype.storage!r}, na_value={dtype.na_value!r})"
    if type(dtype).__name__ == "ArrowDtype":
        return f"ArrowDtype({dtype.pyarrow_dtype})"
    text = getattr(dtype, "str", None)
    numpy = isinstance(text, str) and type(dtype).__module__.startswith("numpy")
    return text if numpy else str(dtype)


def _values(a: Any, b: Any, where: str) -> list[str]:
    """The values of two pandas arrays of one dtype (already checked) and length."""
    import numpy as np
    import pandas as pd

    if len(a) != len(b):
        return [f"{where}: length {len(a)} != {len(b)}"]
    if isinstance(a, np.ndarray):
        return _ndarray(a, b, where)
    dtype = a.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _ndarray(np.asarray(a.codes), np.asarray(b.codes), f"{where}.codes")
    if isinstance(a, pd.arrays.NumpyExtensionArray):
        return _ndarray(a.to_numpy(), b.to_numpy(), where)
    if hasattr(a, "_pa_array"):  # ArrowDtype and pyarrow-backed strings
        return _arrow_values(a._pa_array.combine_chunks(), b._pa_array.combine_chunks(), where)
    if hasattr(a, "_mask") and hasattr(a, "_data"):  # Int64, Float64, boolean
        mask_a, mask_b = np.asarray(a._mask), np.asarray(b._mask)
        same = (mask_a == mask_b) & (_equal_mask(a._data, b._data) | mask_a)
        return _first_mismatch(same, a, b, where)
    if hasattr(a, "asi8"):  # datetimes with a time zone, periods
        found = _ndarray(np.asarray(a.asi8), np.asarray(b.asi8), f"{where}.asi8")
        if found:
            return found
    return _ndarray(_objects(list(a)), _objects(list(b)), where)


def _arrow_values(a: Any, b: Any, where: str) -> list[str]:
    """Two pyarrow arrays of one type: nulls, then values (floats by their bits)."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_floating(a.type):
        null_a = np.asarray(a.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        null_b = np.asarray(b.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        values_a = a.to_numpy(zero_copy_only=False)
        values_b = b.to_numpy(zero_copy_only=False)
        same = (null_a == null_b) & (_equal_mask(values_a, values_b) | null_a)
        return _first_mismatch(same, a.to_pylist(), b.to_pylist(), where)
    if not pa.types.is_nested(a.type) and a.equals(b):  # nested values may hold floats
        return []
    return _ndarray(_objects(a.to_pylist()), _objects(b.to_pylist()), where)


def _objects(values: list[Any]) -> Any:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _index(a: Any, b: Any, where: str) -> list[str]:
    import pandas as pd

    if type(a) is not type(b):
        return [f"{where}: {type(a).__name__} != {type(b).__name__}"]
    if len(a) != len(b):
        return [f"{where}: length {len(a)} != {len(b)}"]
    if a.nlevels != b.nlevels or list(a.names) != list(b.names):
        return [f"{where}: names {list(a.names)!r} != {list(b.names)!r}"]
    found = []
    for i, (x, y) in enumerate(zip(a.names, b.names, strict=True)):
        if type(x) is not type(y):
            found.append(f"{where}: name {i} is {_typed(x)} != {_typed(y)}")
    if found:
        return found
    if isinstance(a, pd.RangeIndex):
        ra, rb = (a.start, a.stop, a.step), (b.start, b.stop, b.step)
        return [] if ra == rb else [f"{where}: range {ra} != {rb}"]
    if isinstance(a, pd.MultiIndex):
        for level, (la, lb) in enumerate(zip(a.levels, b.levels, strict=True)):
            found += _index(la, lb, f"{where}.levels[{level}]")
        for level, (ca, cb) in enumerate(zip(a.codes, b.codes, strict=True)):
            found += _ndarray(ca, cb, f"{where}.codes[{level}]")
        return found
    found = _dtype(a.dtype, b.dtype, where)
    if found:
        return found
    found = _values(a.array, b.array, where)
    if not found and hasattr(a, "freq") and a.freq != b.freq:
        found = [f"{where}: freq {a.freq} != {b.freq}"]
    return found


def _series(a: Any, b: Any, path: str) -> list[str]:
    where = path or "series"
    found = []
    if a.name != b.name or type(a.name) is not type(b.name):
        found.append(f"{where}: name {_typed(a.name)} != {_typed(b.name)}")
    found += _index(a.index, b.index, f"{where}.index")
    found += _diff(dict(a.attrs), dict(b.attrs), f"{where}.attrs")
    dtype = _dtype(a.dtype, b.dtype, where)
    return found + (dtype or _values(a.array, b.array, where))


def _frame(a: Any, b: Any, path: str) -> list[str]:
    where = path or "df"
    if a.shape != b.shape:
        return [f"{where}: shape {a.shape} != {b.shape}"]
    found = _index(a.columns, b.columns, f"{where}.columns")
    found += _index(a.index, b.index, f"{where}.index")
    found += _diff(dict(a.attrs), dict(b.attrs), f"{where}.attrs")
    if a.flags.allows_duplicate_labels != b.flags.allows_duplicate_labels:
        found.append(f"{where}: flags.allows_duplicate_labels differ")
    for i in range(a.shape[1]):
        col_a, col_b = a.iloc[:, i], b.iloc[:, i]
        label = f"{where}[{a.columns[i]!r}]"
        found += _dtype(col_a.dtype, col_b.dtype, label) or _values(col_a.array, col_b.array, label)
    return found


# ---------------------------------------------------------------- anndata


def _anndata(a: Any, b: Any, path: str) -> list[str]:
    where = path or "adata"
    if a.shape != b.shape:
        return [f"{where}: shape {a.shape} != {b.shape}"]
    found = _diff(a.X, b.X, f"{where}.X")
    found += _frame(a.obs, b.obs, f"{where}.obs")
    found += _frame(a.var, b.var, f"{where}.var")
    for attr in ("obsm", "varm", "obsp", "varp", "layers"):
        found += _mapping(dict(getattr(a, attr)), dict(getattr(b, attr)), f"{where}.{attr}")
    found += _diff(dict(a.uns), dict(b.uns), f"{where}.uns")
    if (a.raw is None) != (b.raw is None):
        found.append(f"{where}.raw: {type(a.raw).__name__} != {type(b.raw).__name__}")
    elif a.raw is not None:
        found += _diff(a.raw.X, b.raw.X, f"{where}.raw.X")
        found += _frame(a.raw.var, b.raw.var, f"{where}.raw.var")
        found += _mapping(dict(a.raw.varm), dict(b.raw.varm), f"{where}.raw.varm")
    return found
