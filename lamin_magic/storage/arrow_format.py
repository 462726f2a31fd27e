"""pyarrow.Table <-> .parquet, loading back as a Table with the schema it was saved with.

Parquet has no seconds timestamps, no date64, no large_string dictionaries, and pyarrow
renames a map's entries when it reads them; pyarrow records the Table's own schema in the
file (ARROW:schema), so the loader casts what it reads back to that schema, which is exact for
every type the check lets through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import UnsupportedTypeError
from .dataframe import BUFFER_SIZE
from .formats import register_format
from .parquet_tag import TYPE_KEY, claims

TYPE = "pyarrow:Table"
DAY_MS = 86_400_000


def nested_types(type_: Any) -> Iterator[Any]:
    """`type_` and every type inside it (list items, struct fields, map entries, dictionary
    values)."""
    yield type_
    value_type = getattr(type_, "value_type", None)
    if value_type is not None and type_.num_fields == 0:  # a dictionary
        yield from nested_types(value_type)
    for i in range(type_.num_fields):
        yield from nested_types(type_.field(i).type)


def check_table(table: Any) -> None:
    """Refuse what parquet would change or pyarrow could not read back, with the fix."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_columns == 0 and table.num_rows > 0:
        raise UnsupportedTypeError(
            f"a Table with {table.num_rows} rows and no columns would come back with no rows; "
            "add a column"
        )
    if TYPE_KEY.encode() in (table.schema.metadata or {}):
        raise UnsupportedTypeError(
            f"the Table's schema metadata has the key {TYPE_KEY!r}, which lamin_magic keeps for "
            "itself; drop it: table = table.replace_schema_metadata({k: v for k, v in "
            f"table.schema.metadata.items() if k != {TYPE_KEY.encode()!r}}})"
        )
    for i, field in enumerate(table.schema):
        if pa.types.is_date64(field.type):
            values = table.column(i).cast(pa.int64())
            if pc.any(pc.not_equal(pc.multiply(pc.divide(values, DAY_MS), DAY_MS), values)).as_py():
                raise UnsupportedTypeError(
                    f"column {field.name!r} (date64) holds times within a day, which parquet "
                    f"drops; make it a timestamp: table.column({i}).cast(pa.timestamp('ms'))"
                )
        for t in nested_types(field.type):
            if t is not field.type and pa.types.is_date64(t):
                raise UnsupportedTypeError(
                    f"column {field.name!r} holds date64 values inside it, which parquet keeps "
                    "only to the day; cast them to date32 or to pa.timestamp('ms')"
                )
            if pa.types.is_dictionary(t) and not (
                pa.types.is_string(t.value_type)
                or pa.types.is_large_string(t.value_type)
                or pa.types.is_binary(t.value_type)
                or pa.types.is_large_binary(t.value_type)
            ):
                fix = (
                    f"table = table.set_column({i}, {field.name!r}, "
                    f"table.column({i}).cast(table.column({i}).type.value_type))"
                    if t is field.type
                    else "cast the dictionary inside it to its value type"
                )
                raise UnsupportedTypeError(
                    f"column {field.name!r} holds a dictionary of {t.value_type}, which parquet "
                    f"gives back decoded; decode it first: {fix}"
                )


def write_table(table: Any, stream: BinaryIO) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    marked = table.replace_schema_metadata({**(table.schema.metadata or {}), TYPE_KEY: TYPE})
    with pa.output_stream(stream, buffer_size=BUFFER_SIZE) as buffered:
        # "item" in lists, as arrow names it, not parquet's "element"
        pq.write_table(marked, buffered, use_compliant_nested_type=False)


def load_table(path: Any) -> Any:
    import base64

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    table = parquet.read()  # not pq.read_table: it refuses duplicate column names
    recorded = parquet.metadata.metadata[b"ARROW:schema"]
    saved = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(recorded)))
    if not table.schema.equals(saved, check_metadata=True):
        table = table.cast(saved)
    meta = {k: v for k, v in (saved.metadata or {}).items() if k != TYPE_KEY.encode()}
    return table.replace_schema_metadata(meta or None)


ARROW = register_format(
    "arrow-parquet",
    suffix=".parquet",
    type=TYPE,
    write=write_table,
    load=load_table,
    stream=True,
    check=check_table,
    claims=claims(TYPE),
)
