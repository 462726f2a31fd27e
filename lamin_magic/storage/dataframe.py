"""pandas.DataFrame <-> .parquet through pyarrow, streamed so the bytes are hashed as written."""

from __future__ import annotations

import warnings
from typing import Any, BinaryIO

from ..errors import UnsupportedTypeError
from . import frame_fidelity as fidelity
from .formats import register_format

BUFFER_SIZE = 2 * 1024 * 1024
THREADED_CELLS = 200_000  # rows x columns from which arrow's threaded conversion pays off


def check_dataframe(df: Any) -> None:
    """Refuse what parquet would silently change, with the fix."""
    import pandas as pd

    columns = df.columns
    if len(columns) == 0 and len(df) > 0 and isinstance(df.index, pd.RangeIndex):
        raise UnsupportedTypeError(
            f"a DataFrame with {len(df)} rows and no columns would come back with no rows; "
            "add a column, or store its index as one: df.reset_index()"
        )
    if columns.has_duplicates:
        dup = columns[columns.duplicated()][0]
        raise UnsupportedTypeError(f"column {dup!r} appears twice; give each column a unique name")
    for name, dtype in df.dtypes.items():
        if isinstance(dtype, pd.SparseDtype):
            raise UnsupportedTypeError(
                f"column {name!r} is sparse, which parquet cannot store; make it dense: "
                f"df[{name!r}] = df[{name!r}].sparse.to_dense()"
            )
        if dtype.kind == "c":
            raise UnsupportedTypeError(
                f"column {name!r} holds complex numbers, which parquet cannot store; store "
                f"its parts: df[{name + '_re'!r}], df[{name + '_im'!r}] = "
                f"df[{name!r}].to_numpy().real, df[{name!r}].to_numpy().imag"
            )
    if len(df) == 0:
        for name, dtype in df.dtypes.items():
            if isinstance(dtype, pd.CategoricalDtype) and len(dtype.categories):
                raise UnsupportedTypeError(
                    f"parquet drops the categories of column {name!r} when a DataFrame has no "
                    f"rows; store at least one row, or convert it: "
                    f"df[{name!r}] = df[{name!r}].astype(str)"
                )


def write_parquet(df: Any, stream: BinaryIO) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with warnings.catch_warnings():  # labels that would change: refused below, with the fix
            warnings.filterwarnings("ignore", "The DataFrame has column names of mixed type")
            warnings.filterwarnings("ignore", "The DataFrame has non-str index name")
            # pyarrow converts columns in a pool of threads; on small frames starting them
            # costs more than the conversion (3.4 ms against 0.7 ms for 600 rows here)
            table = pa.Table.from_pandas(df, nthreads=1 if df.size < THREADED_CELLS else None)
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        pa.ArrowNotImplementedError,
        OverflowError,
        TypeError,
    ) as e:
        raise UnsupportedTypeError(unconvertible_column(df, e)) from e
    table = fidelity.readable(table)
    kept = fidelity.plan(df, table)
    extra = {
        fidelity.META_KEY: kept.metadata(),
        fidelity.ATTRS_KEY: fidelity.attrs_metadata(df.attrs),
    }
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra:
        table = table.replace_schema_metadata({**table.schema.metadata, **extra})
    strings_checked = kept.check_strings_in_background()
    # pyarrow writes many small pieces; buffering them makes few, large Python-level writes
    with pa.output_stream(stream, buffer_size=BUFFER_SIZE) as buffered:
        pq.write_table(table, buffered)
    strings_checked()


def unconvertible_column(df: Any, error: Exception) -> str:
    """What arrow could not convert, named by column, with the fix (run only on failure)."""
    import pyarrow as pa

    slots = [(f"column {name!r}", f"df[{name!r}]", df[name]) for name in df.columns]
    for level in range(df.index.nlevels):
        values = df.index.get_level_values(level)
        slots.append(
            (f"index level {level}" if df.index.nlevels > 1 else "the index", "df.index", values)
        )
    for where, code, values in slots:
        try:
            pa.array(values, from_pandas=True)
        except OverflowError:
            return (
                f"{where} holds integers beyond 64 bits, which parquet cannot store; store "
                f"them as text: {code} = {code}.astype(str)"
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
            kinds = sorted({type(v).__name__ for v in values})
            return (
                f"{where} holds values of types {', '.join(kinds)}, which parquet cannot keep "
                f"in one column; give it one type first, e.g. text: {code} = {code}.astype(str)"
            )
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"arrow cannot convert it ({reason})"


def load_parquet(path: Any) -> Any:
    import pyarrow.parquet as pq

    from .parquet_tag import footer

    # one file, so ParquetFile: read_table goes through the dataset layer (0.9 against
    # 0.65 ms on a 13 KB file here); with the footer the type mark was read from
    with pq.ParquetFile(path, metadata=footer(path)) as parquet:
        table = parquet.read()
    return fidelity.restore(table.to_pandas(), table)


PARQUET = register_format(
    "parquet",
    suffix=".parquet",
    type="pandas:DataFrame",
    write=write_parquet,
    load=load_parquet,
    stream=True,
    check=check_dataframe,
)
