"""polars.DataFrame <-> .parquet with polars' own writer, loading back as a polars frame."""

from __future__ import annotations

from typing import Any, BinaryIO

from ..errors import UnsupportedTypeError
from .formats import register_format
from .optional import require
from .parquet_tag import TYPE_KEY, claims

TYPE = "polars:DataFrame"


def check_polars(df: Any) -> None:
    """Refuse what parquet would change or cannot store, with the fix."""
    import polars as pl

    for name, dtype in df.schema.items():
        if dtype == pl.Object or any(d == pl.Object for d in _inner(dtype)):
            raise UnsupportedTypeError(
                f"column {name!r} holds Python objects (pl.Object), which parquet cannot "
                f"store; convert it: df = df.with_columns(pl.col({name!r}).cast(pl.String))"
            )


def _inner(dtype: Any) -> list[Any]:
    """The dtypes nested in a List, Array or Struct dtype."""
    inner = getattr(dtype, "inner", None)
    if inner is not None:
        return [inner, *_inner(inner)]
    fields = getattr(dtype, "fields", None) or []
    return [d for f in fields for d in (f.dtype, *_inner(f.dtype))]


def write_polars(df: Any, stream: BinaryIO) -> None:
    df.write_parquet(stream, metadata={TYPE_KEY: TYPE})


def load_polars(path: Any) -> Any:
    pl = require("polars", "polars")
    return pl.read_parquet(path)


POLARS = register_format(
    "polars-parquet",
    suffix=".parquet",
    type=TYPE,
    write=write_polars,
    load=load_polars,
    stream=True,
    check=check_polars,
    claims=claims(TYPE),
)
