"""Which type a stored .parquet file holds: pandas, polars and pyarrow tables share the suffix.

The writers of polars frames and pyarrow tables put the type ("polars:DataFrame") under the
key `lamin_magic.type` in the file's key-value metadata; a file without it is a pandas frame
(the only parquet lamin_magic wrote before). The mark is part of the hashed bytes, so two
objects of different types never share stored bytes, and the file tells its type anywhere.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from ..errors import UnsupportedTypeError

TYPE_KEY = "lamin_magic.type"
KNOWN = ("pandas:DataFrame", "polars:DataFrame", "pyarrow:Table")  # pandas: in case it is marked


def recorded_type(path: Any) -> str | None:
    """The type a parquet file's metadata names; None where it names none or is unreadable
    (the default loader then reports what is wrong with it). Read once per file: each format
    sharing the suffix asks, and a stored file never changes under its name."""
    key = _identity(path)
    return None if key is None else _recorded_type(*key)


def footer(path: Any) -> Any:
    """The parquet footer (pyarrow's FileMetaData) of a stored file, parsed once: the type
    mark is read from it, and the loader reads the file with it (its footer is not parsed a
    second time, 0.1 ms of a 1 ms small load). None where pyarrow cannot read it."""
    key = _identity(path)
    return None if key is None else _footer(*key)


def _identity(path: Any) -> tuple[str, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return str(path), st.st_ino, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _footer(path: str, inode: int, size: int, mtime_ns: int) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except (pa.ArrowException, OSError):
        return None


@functools.lru_cache(maxsize=64)
def _recorded_type(path: str, inode: int, size: int, mtime_ns: int) -> str | None:
    parsed = _footer(path, inode, size, mtime_ns)
    # pyarrow cannot read some types polars writes (Int128): polars reads their metadata
    meta = (parsed.metadata or {}) if parsed is not None else polars_metadata(path)
    value = meta.get(TYPE_KEY.encode())
    if value is None:
        return None
    found = value.decode("utf-8", errors="backslashreplace")
    if found not in KNOWN:
        raise UnsupportedTypeError(
            f"this parquet file holds a {found!r}, which this lamin_magic cannot load; "
            "upgrade it: pip install -U lamin_magic"
        )
    return found


def polars_metadata(path: Any) -> dict[bytes, bytes]:
    try:
        import polars as pl

        meta = pl.read_parquet_metadata(path)
    except Exception:  # no polars, or not a parquet file: nothing is recorded
        return {}
    return {k.encode(): v.encode() for k, v in meta.items()}


def claims(type_: str) -> Callable[[Any], bool]:
    """For `register_format(claims=...)`: whether a stored parquet file holds a `type_`."""

    def holds(path: Any) -> bool:
        return recorded_type(path) == type_

    return holds
