"""What parquet gives back for a pandas DataFrame: kept exactly, or refused before writing.

pyarrow's round trip changes some things silently: missing values in object columns come back
as None, ArrowDtype and `string[pyarrow]` indexes or columns as other dtypes, object columns of
numbers as numeric columns, lists as arrays, a RangeIndex of columns as a plain Index. Before
writing, `plan` looks at every slot (a column or an index level) and either records how to give
back exactly what was saved (in the file's schema metadata under `META_KEY`) or refuses it with
the fix. `restore` applies that record after reading. Only what can change is examined closely:
plain numeric, datetime and categorical columns cost one dtype comparison each.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from ..errors import UnsupportedTypeError

META_KEY = b"lamin_magic"
ATTRS_KEY = b"PANDAS_ATTRS"  # where pandas itself keeps df.attrs in a parquet file
NULL_VALUES: dict[str, Callable[[], Any]] = {}  # filled on first use (needs pandas)
MAX_SHOWN = 60
INLINE_SCAN = 100_000  # strings; fewer are checked before writing, more while writing
SCAN_CHUNK = 65_536  # strings typed at a time while the writer runs (about 2 ms of the GIL)
EXACT_SCAN = 2_000_000  # strings of a save typed one by one; past it, a spread of them


class Plan:
    """What to record in the file, and the check that runs while the bytes are written."""

    def __init__(self) -> None:
        self.fixes: dict[str, dict[str, Any]] = {}  # "c3" (column 3) / "i0" (index level 0)
        self.labels: dict[str, Any] | None = None  # a RangeIndex of columns
        self.freq: dict[str, str] = {}  # of a DatetimeIndex / TimedeltaIndex: "index", "columns"
        self.string_slots: list[tuple[str, str, Any]] = []  # (where, code, array): all str?
        self.flags: dict[str, bool] = {}  # df.flags other than pandas' defaults

    def metadata(self) -> bytes | None:
        if not (self.fixes or self.labels or self.freq or self.flags):
            return None
        record = {
            "version": 1,
            "slots": self.fixes,
            "columns": self.labels,
            "freq": self.freq,
            "flags": self.flags,
        }
        return json.dumps(record).encode()

    def check_strings_in_background(self) -> Callable[[], None]:
        """Start checking that string slots hold exactly `str`; the returned call waits and
        raises. The scan holds the GIL but parquet's encoder does not, so they overlap."""
        failure: list[str] = []
        if sum(len(array) for _, _, array in self.string_slots) < INLINE_SCAN:
            _scan_strings(self.string_slots, failure)  # a thread would cost more than the scan
            if failure:
                raise UnsupportedTypeError(failure[0])
            return lambda: None
        thread = threading.Thread(
            target=_scan_strings, args=(self.string_slots, failure), daemon=True
        )
        thread.start()

        def wait() -> None:
            thread.join()
            if failure:
                raise UnsupportedTypeError(failure[0])

        return wait


def readable(table: Any) -> Any:
    """The table with pandas' metadata naming `object` for ArrowDtype columns whose dtype
    name pandas cannot parse back (lists, structs, maps, dictionaries: to_pandas would fail
    on the file); `restore` gives them back from their arrow data."""
    import pandas as pd

    if b"[pyarrow]" not in table.schema.metadata[b"pandas"]:  # no ArrowDtype: nothing to do
        return table
    meta = json.loads(table.schema.metadata[b"pandas"])
    changed = False
    for column in meta["columns"]:
        name = column.get("numpy_type") or ""
        if name.endswith("[pyarrow]"):
            try:
                pd.api.types.pandas_dtype(name)
            except (TypeError, ValueError):
                column["numpy_type"] = "object"
                changed = True
    if not changed:
        return table
    return table.replace_schema_metadata(
        {**table.schema.metadata, b"pandas": json.dumps(meta).encode()}
    )


def plan(df: Any, table: Any) -> Plan:
    """Decide, per slot, how parquet's round trip is made exact; refuse what cannot be."""
    import pandas as pd

    _null_values()
    result = Plan()
    predicted = _Predicted(table)
    if not _plain_labels(df.columns):
        _distinct_as_text(df.columns)
        result.labels = _labels(df.columns, predicted.frame.columns)
    for pos, dtype in enumerate(df.dtypes):
        if _plain_dtype(dtype):
            if dtype.kind == "f" and table.column(pos).null_count:
                label = df.columns[pos]
                _check_nan_bits(
                    f"column {_shown(label)}", f"df[{label!r}]", df.iloc[:, pos].to_numpy()
                )
            continue
        label = df.columns[pos]
        fix = _slot(
            f"column {_shown(label)}",
            f"df[{label!r}]",
            df.iloc[:, pos],
            table.column(pos),
            partial(predicted.column_dtype, pos),
            result,
            multi=False,
        )
        if fix:
            result.fixes[f"c{pos}"] = fix
    index = df.index
    if not (type(index) is pd.RangeIndex and _plain_name(index.name)):
        _plan_index(index, table, predicted, result)
    for axis in ("index", "columns"):
        labels = getattr(df, axis)
        freq = getattr(labels, "freqstr", None)
        if freq is not None and not isinstance(labels, pd.PeriodIndex):
            result.freq[axis] = freq
    if not df.flags.allows_duplicate_labels:
        result.flags["allows_duplicate_labels"] = False
    _check_attrs(df.attrs)
    return result


def _plan_index(index: Any, table: Any, predicted: _Predicted, result: Plan) -> None:
    import pandas as pd

    back = predicted.frame.index
    # a CategoricalIndex of numbers comes back plain: its slot below rebuilds it
    if type(index) is not type(back) and not isinstance(index, pd.CategoricalIndex):
        raise UnsupportedTypeError(
            f"its index ({type(index).__name__}) would come back as {type(back).__name__}; "
            "store it as columns first: df = df.reset_index()"
        )
    if list(index.names) != list(back.names):
        raise UnsupportedTypeError(
            f"its index ({type(index).__name__} named {list(index.names)}) would come back as "
            f"{type(back).__name__} named {list(back.names)}; name it with text "
            "(df.index.names = [str(n) for n in df.index.names]) or store it as columns: "
            "df = df.reset_index()"
        )
    multi = isinstance(index, pd.MultiIndex)
    fields = json.loads(table.schema.metadata[b"pandas"])["index_columns"]
    for level, field in enumerate(fields):
        if not isinstance(field, str):  # a RangeIndex, kept in pandas' metadata
            continue
        fix = _slot(
            f"index level {level}" if multi else "the index",
            "df.index",
            index.get_level_values(level) if multi else index,
            table.column(field),
            partial(predicted.index_dtype, level),
            result,
            multi=multi,
        )
        if fix:
            fix["field"] = field
            result.fixes[f"i{level}"] = fix


class _Predicted:
    """What a load would make of the table's schema (written to parquet and read back, with
    no rows), computed only if a slot needs it."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._frame: Any = None

    @property
    def frame(self) -> Any:
        if self._frame is None:  # through parquet itself: it keeps less than arrow does
            import pyarrow as pa
            import pyarrow.parquet as pq

            sink = pa.BufferOutputStream()
            try:
                pq.write_table(self.table.schema.empty_table(), sink)
                self._frame = pq.read_table(pa.BufferReader(sink.getvalue())).to_pandas()
            except (pa.ArrowException, OSError, ValueError, TypeError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise UnsupportedTypeError(
                    f"parquet cannot give back its columns and index as they are ({reason}); "
                    "convert the unusual ones to text or numbers first"
                ) from e
        return self._frame

    def column_dtype(self, pos: int) -> Any:
        return self.frame.dtypes.iloc[pos]

    def index_dtype(self, level: int) -> Any:
        index = self.frame.index
        return index.dtypes.iloc[level] if index.nlevels > 1 else index.dtype


def _plain_dtype(dtype: Any) -> bool:
    """Numbers, booleans, datetimes below seconds and categoricals of text: parquet keeps
    their dtype as it is (datetimes in seconds come back in milliseconds, categoricals of
    numbers as numbers)."""
    import numpy as np
    import pandas as pd

    if isinstance(dtype, np.dtype):
        return dtype.kind in "biuf" or (dtype.kind in "mM" and np.datetime_data(dtype)[0] != "s")
    if isinstance(dtype, pd.CategoricalDtype):
        return dtype.categories.dtype == object and (
            pd.api.types.infer_dtype(dtype.categories, skipna=False) == "string"
        )
    return False


def _plain_name(name: Any) -> bool:
    return name is None or type(name) is str


def _plain_labels(columns: Any) -> bool:
    """Column labels that are all `str`, in a plain Index: parquet keeps them as they are."""
    import pandas as pd

    return (
        type(columns) is pd.Index
        and columns.dtype == object
        and _plain_name(columns.name)
        and all(type(label) is str for label in columns)
    )


def _slot(
    where: str,
    code: str,
    values: Any,
    arrow: Any,
    predict: Callable[[], Any],
    result: Plan,
    multi: bool,
) -> dict[str, Any] | None:
    import numpy as np
    import pandas as pd

    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        return _object_slot(where, code, values, arrow, result, multi)
    if isinstance(dtype, pd.CategoricalDtype):  # what parquet keeps is plain (_plain_dtype)
        return _categories_fix(where, code, dtype)
    if isinstance(dtype, pd.ArrowDtype) and pd.ArrowDtype(arrow.type) == dtype:
        # given back from its arrow data, whatever to_pandas makes; parquet renames the
        # fields inside lists and maps, so the exact type goes along
        return {"dtype": "arrow", "type": _arrow_type_text(arrow.type)}
    predicted = predict()
    if _same_dtype(dtype, predicted):
        return None
    if isinstance(dtype, pd.StringDtype):
        na = "nan" if _is_nan(dtype.na_value) else "NA"
        return {"dtype": "string", "storage": dtype.storage, "na_value": na}
    if dtype.kind == "M" or isinstance(dtype, pd.DatetimeTZDtype):
        return _datetime_fix(where, code, dtype, predicted)
    if isinstance(dtype, np.dtype) and dtype.kind == "m" and predicted.kind == "m":
        return {"dtype": "numpy", "name": dtype.str}
    raise UnsupportedTypeError(
        f"{where} has dtype {dtype}, which parquet would give back as {predicted}; "
        f"convert it first: {code} = {code}.astype({str(predicted)!r})"
    )


def _arrow_type_text(type_: Any) -> str:
    import base64

    import pyarrow as pa

    return base64.b64encode(pa.schema([pa.field("_", type_)]).serialize().to_pybytes()).decode()


def _arrow_type(text: str) -> Any:
    import base64

    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text))).field(0).type


def _check_nan_bits(where: str, code: str, values: Any) -> None:
    """parquet keeps a missing value, not its NaN's sign or payload: refuse other NaNs."""
    import numpy as np

    nans = values[np.isnan(values)]
    if (
        nans.size
        and (
            nans.view(np.uint64 if nans.itemsize == 8 else np.uint32)
            != (
                np.array(np.nan, dtype=nans.dtype).view(
                    np.uint64 if nans.itemsize == 8 else np.uint32
                )
            )
        ).any()
    ):
        raise UnsupportedTypeError(
            f"{where} holds a NaN with its sign bit or a payload set, which parquet would give "
            f"back as a plain NaN; replace it first: {code} = {code}.fillna(np.nan)"
        )


def _categories_fix(where: str, code: str, dtype: Any) -> dict[str, Any]:
    """Categoricals of numbers or booleans come back as plain columns: their categories are
    recorded (exactly, as JSON) and the categorical is rebuilt on load."""
    import pandas as pd

    categories = dtype.categories
    if categories.dtype.kind in "biuf" or (
        categories.dtype == object and pd.api.types.infer_dtype(categories) == "string"
    ):
        listed = json.loads(json.dumps(categories.tolist()))
        if same_index(pd.Index(listed, dtype=categories.dtype), categories):
            return {
                "dtype": "category",
                "categories": listed,
                "of": categories.dtype.str,
                "ordered": bool(dtype.ordered),
            }
    if code.startswith("df.index"):
        fix = "store the index as columns first: df = df.reset_index()"
    elif isinstance(categories.dtype, pd.StringDtype):
        fix = (
            "make them numpy text first: "
            f"{code} = {code}.cat.set_categories({code}.cat.categories.astype(object))"
        )
    else:
        fix = f"make them text first: {code} = {code}.cat.rename_categories(str)"
    raise UnsupportedTypeError(
        f"{where} is categorical with {categories.dtype} categories, which parquet would give "
        f"back otherwise; {fix}"
    )


def _datetime_fix(where: str, code: str, dtype: Any, predicted: Any) -> dict[str, Any]:
    """Datetimes come back in milliseconds where they were in seconds, and with pytz's zone
    where they had a zoneinfo or datetime.timezone one: recorded, converted back on load."""
    import numpy as np

    tz = getattr(dtype, "tz", None)
    unit = dtype.unit if tz is not None else np.datetime_data(dtype)[0]
    fix = {"dtype": "datetime", "unit": unit, "tz": _zone(tz)}
    if (tz is None or fix["tz"] is not None) and _datetime_dtype(fix) == dtype:
        return fix
    raise UnsupportedTypeError(
        f"{where} has dtype {dtype}, which parquet would give back as {predicted}; convert it "
        f"first, e.g. {code} = {code}.dt.tz_convert('UTC')"
    )


def _zone(tz: Any) -> list[Any] | None:
    """A time zone as JSON: a zoneinfo key, or a fixed offset in seconds with its name."""
    import datetime as dt
    import zoneinfo

    if isinstance(tz, zoneinfo.ZoneInfo) and tz.key:
        return ["zoneinfo", tz.key]
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        return ["fixed", offset.total_seconds(), tz.tzname(None)]
    if tz is not None and getattr(tz, "zone", None):  # pytz
        return ["pytz", tz.zone]
    return None


def _datetime_dtype(fix: dict[str, Any]) -> Any:
    import datetime as dt
    import zoneinfo

    import numpy as np
    import pandas as pd

    zone = fix["tz"]
    if zone is None:
        return np.dtype(f"datetime64[{fix['unit']}]")
    if zone[0] == "zoneinfo":
        tz: Any = zoneinfo.ZoneInfo(zone[1])
    elif zone[0] == "fixed" and zone[1:] == [0, "UTC"]:
        tz = dt.UTC
    elif zone[0] == "fixed":
        tz = dt.timezone(dt.timedelta(seconds=zone[1]), zone[2])
    else:
        tz = zone[1]
    return pd.DatetimeTZDtype(unit=fix["unit"], tz=tz)


def _object_slot(
    where: str, code: str, values: Any, arrow: Any, result: Plan, multi: bool
) -> dict[str, Any] | None:
    """Object slots: strings are checked while writing; anything else must survive Python."""
    import pyarrow as pa

    array = values.to_numpy(dtype=object)
    null = None if multi else _null_kind(where, code, array, arrow)
    if pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type):
        result.string_slots.append((where, code, array))
        fix: dict[str, Any] = {}
    else:
        _check_pylist(where, code, array, arrow, null)
        fix = {"values": "pylist"}
    if null is not None:
        fix["null"] = null
    return fix or None


def _null_values() -> dict[str, Callable[[], Any]]:
    if not NULL_VALUES:
        import pandas as pd

        NULL_VALUES.update({"nan": lambda: float("nan"), "NA": lambda: pd.NA})
    return NULL_VALUES


def _null_kind(where: str, code: str, array: Any, arrow: Any) -> str | None:
    """Which missing value an object slot holds: None (what parquet gives back), NaN or pd.NA."""
    import numpy as np
    import pandas as pd

    if not arrow.null_count:
        return None
    missing = array[np.asarray(arrow.is_null().to_numpy(zero_copy_only=False), dtype=bool)]
    kinds = set()
    for value in missing:
        if value is None:
            kinds.add("none")
        elif value is pd.NA:
            kinds.add("NA")
        elif type(value) is float and value != value and math.copysign(1.0, value) > 0:
            kinds.add("nan")  # a negative NaN would come back positive: refused below
        else:
            raise UnsupportedTypeError(
                f"{where} holds {_shown(value)} as a missing value, which parquet would give "
                f"back as None; replace it first: {code} = {code}.where({code}.notna(), None)"
            )
    if len(kinds) > 1:
        shown = " and ".join(sorted(kinds)).replace("none", "None").replace("nan", "NaN")
        raise UnsupportedTypeError(
            f"{where} holds both {shown} as missing values; parquet keeps one kind: "
            f"{code} = {code}.where({code}.notna(), None)"
        )
    kind = kinds.pop()
    return None if kind == "none" else kind


def _check_pylist(where: str, code: str, array: Any, arrow: Any, null: str | None) -> None:
    """An object slot that is not strings comes back through Python objects: it must be exact."""
    back = from_pylist(arrow.to_pylist(), null)
    for row, (saved, loaded) in enumerate(zip(array, back, strict=True)):
        if not same_value(saved, loaded):
            if isinstance(saved, (dict, list, tuple)):
                fix = f"store it as JSON text first: {code} = {code}.map(json.dumps)"
            elif type(loaded) in (int, float, str, bool, bytes):
                fix = (
                    f"give it one type first, e.g. {code} = {code}.astype({type(loaded).__name__})"
                )
            else:
                fix = (
                    f"give it a typed column first (pd.to_datetime({code}), "
                    f"pd.to_numeric({code}), ...) or text: {code} = {code}.astype(str)"
                )
            raise UnsupportedTypeError(
                f"{where} holds {_shown(saved)} ({type(saved).__name__}) at row {row}, which "
                f"parquet would give back as {_shown(loaded)} ({type(loaded).__name__}); {fix}"
            )


def from_pylist(values: list[Any], null: str | None) -> Any:
    """An object array of `values`, missing values as `null` (one element at a time, so lists
    stay lists instead of becoming a second dimension)."""
    import numpy as np

    out = np.empty(len(values), dtype=object)
    fill = NULL_VALUES[null] if null else None
    for i, value in enumerate(values):
        out[i] = fill() if value is None and fill is not None else value
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equal, of the same type, with the same representation, all the way down."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if a != a:
            return b != b
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    try:
        equal = a == b
    except Exception:
        return False
    if type(equal).__module__ == "numpy" and getattr(equal, "shape", None) == ():
        equal = bool(equal)  # numpy scalars compare to a numpy boolean
    return equal is True and repr(a) == repr(b)


def _scan_strings(slots: list[tuple[str, str, Any]], failure: list[str]) -> None:
    """Every string is of type `str`, or the first other type found. Typing a string costs
    about 26 ns, 13 % of writing it to parquet: past EXACT_SCAN strings in one save, evenly
    spaced ones (and the first and last SCAN_CHUNK of each column) are typed instead."""
    import numpy as np
    import pandas as pd

    allowed = {str, type(None), float, type(pd.NA)}  # missing values were checked before
    budget = EXACT_SCAN
    for where, code, array in slots:
        types: set[type] = set()
        if len(array) > budget:  # past the budget, evenly spaced strings and both ends
            step = -(-len(array) // max(budget, SCAN_CHUNK))
            array = np.concatenate([array[:SCAN_CHUNK], array[::step], array[-SCAN_CHUNK:]])
        budget = max(0, budget - len(array))
        for start in range(0, len(array), SCAN_CHUNK):  # lets the writer's callbacks in between
            types.update(map(type, array[start : start + SCAN_CHUNK]))
        if types <= allowed:
            continue
        odd = next(t for t in types if t not in allowed)
        failure.append(
            f"{where} holds values of type {odd.__module__}.{odd.__qualname__} among its "
            f"strings, which parquet would give back as str; convert them first: "
            f"{code} = {code}.map(lambda v: str(v) if isinstance(v, str) else v)"
        )
        return


def _distinct_as_text(columns: Any) -> None:
    """parquet names columns by their labels as text: two labels with one text cannot both be."""
    seen: dict[str, Any] = {}
    for label in columns:
        text = str(label)
        if text in seen and not same_value(seen[text], label):
            raise UnsupportedTypeError(
                f"columns {_shown(seen[text])} and {_shown(label)} would both be stored as "
                f"{text!r}; rename the columns to strings first: df.columns = "
                "df.columns.astype(str), then make them unique"
            )
        seen[text] = label


def _labels(columns: Any, predicted: Any) -> dict[str, Any] | None:
    """Column labels come back exactly, or as a RangeIndex we record; else refuse."""
    import pandas as pd

    if isinstance(columns, pd.RangeIndex):
        if list(predicted) == list(columns):
            return {
                "start": columns.start,
                "stop": columns.stop,
                "step": columns.step,
                "name": columns.name,
            }
        raise UnsupportedTypeError(
            f"its column labels {list(columns)[:5]} would come back changed; "
            "rename them to strings first: df.columns = df.columns.astype(str)"
        )
    if same_index(columns, predicted):
        return None
    if not isinstance(columns, pd.MultiIndex) and not _same_dtype(columns.dtype, predicted.dtype):
        return_type = str(predicted.dtype)
        raise UnsupportedTypeError(
            f"its column labels have dtype {columns.dtype}, which parquet would give back as "
            f"{return_type}; convert them first: df.columns = df.columns.astype({return_type!r})"
        )
    for saved, loaded in zip(columns, predicted, strict=False):
        if not same_value(saved, loaded):
            raise UnsupportedTypeError(
                f"column {_shown(saved)} ({type(saved).__name__}) would come back as "
                f"{_shown(loaded)} ({type(loaded).__name__}); rename the columns to strings "
                f"first: df.columns = df.columns.astype(str)"
            )
    raise UnsupportedTypeError(
        f"its column labels ({type(columns).__name__} of {columns.dtype}, named "
        f"{list(columns.names)}) would come back as a {type(predicted).__name__} of "
        f"{predicted.dtype} named {list(predicted.names)}; rename the columns to strings "
        f"first: df.columns = df.columns.astype(str)"
    )


def same_index(a: Any, b: Any) -> bool:
    """The same index: class, dtype(s), names, labels and the types of its labels."""
    import pandas as pd

    if type(a) is not type(b) or list(a.names) != list(b.names) or not a.equals(b):
        return False
    if isinstance(a, pd.MultiIndex):
        return all(same_index(a.levels[i], b.levels[i]) for i in range(a.nlevels)) and all(
            map(same_value, a, b)
        )
    return _same_dtype(a.dtype, b.dtype) and all(map(same_value, a, b))


def _same_dtype(a: Any, b: Any) -> bool:
    import pandas as pd

    if type(a) is not type(b):
        return False
    if isinstance(a, pd.CategoricalDtype):  # categories are data, compared with the values
        return a.ordered == b.ordered
    if isinstance(a, pd.StringDtype):
        return a.storage == b.storage and _is_nan(a.na_value) == _is_nan(b.na_value)
    return bool(a == b)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _check_attrs(attrs: dict[Any, Any]) -> None:
    if not attrs:
        return
    try:
        back = json.loads(json.dumps(attrs))
    except (TypeError, ValueError) as e:
        raise UnsupportedTypeError(
            f"df.attrs cannot be stored as JSON ({e}); keep only text, numbers, lists and "
            "dicts with text keys in it"
        ) from e
    if not same_value(attrs, back):
        raise UnsupportedTypeError(
            f"df.attrs {_shown(attrs)} would come back as {_shown(back)} (parquet keeps it as "
            "JSON); keep only text, numbers, lists and dicts with text keys in it"
        )


def attrs_metadata(attrs: dict[Any, Any]) -> bytes | None:
    return json.dumps(attrs).encode() if attrs else None


def restore(df: Any, table: Any) -> Any:
    """Undo what pyarrow's to_pandas changed, as recorded at save time; attrs as pandas does."""
    metadata = table.schema.metadata or {}
    if ATTRS_KEY in metadata:
        df.attrs = json.loads(metadata[ATTRS_KEY])
    if META_KEY not in metadata:
        return df
    import numpy as np
    import pandas as pd

    _null_values()
    record = json.loads(metadata[META_KEY])
    levels: dict[int, Any] = {}
    for key, fix in record.get("slots", {}).items():
        kind, pos = key[0], int(key[1:])
        arrow = table.column(fix["field"] if kind == "i" else pos)
        if kind == "c":
            values = _restored(df.iloc[:, pos], arrow, fix)
            if isinstance(values, np.ndarray) and values.dtype == object:
                # a bare object array of datetimes would be turned into datetime64
                values = pd.Series(values, dtype=object, index=df.index)
            df.isetitem(pos, values)
        else:
            current = (
                df.index.get_level_values(pos) if isinstance(df.index, pd.MultiIndex) else df.index
            )
            levels[pos] = _restored(current, arrow, fix)
    if levels:
        _replace_index_levels(df, levels)
    labels = record.get("columns")
    if labels:
        df.columns = pd.RangeIndex(
            labels["start"], labels["stop"], labels["step"], name=labels["name"]
        )
    if record.get("flags"):
        df = df.set_flags(**record["flags"])
    for axis, freq in (record.get("freq") or {}).items():
        labels = getattr(df, axis)
        setattr(df, axis, type(labels)(labels, freq=freq))
    return df


def _restored(current: Any, arrow: Any, fix: dict[str, Any]) -> Any:
    import numpy as np
    import pandas as pd

    dtype = fix.get("dtype")
    if dtype == "arrow":
        if "type" in fix:
            arrow = arrow.cast(_arrow_type(fix["type"]))
        return pd.arrays.ArrowExtensionArray(arrow)
    if dtype == "string":
        na_value = np.nan if fix["na_value"] == "nan" else pd.NA
        return pd.StringDtype(fix["storage"], na_value=na_value).__from_arrow__(arrow)
    if dtype == "category":
        categories = pd.Index(fix["categories"], dtype=np.dtype(fix["of"]))
        return pd.Categorical(current, categories=categories, ordered=fix["ordered"])
    if dtype == "datetime":
        return pd.Series(current).astype(_datetime_dtype(fix)).array
    if dtype == "numpy":
        return np.asarray(current).astype(fix["name"])
    if fix.get("values") == "pylist":
        return from_pylist(arrow.to_pylist(), fix.get("null"))
    values = np.array(current, dtype=object)
    if fix.get("null"):
        missing = np.asarray(arrow.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        values[missing] = NULL_VALUES[fix["null"]]()
    return values


def _replace_index_levels(df: Any, levels: dict[int, Any]) -> None:
    import pandas as pd

    index = df.index
    if isinstance(index, pd.MultiIndex):
        arrays = [levels.get(i, index.get_level_values(i)) for i in range(index.nlevels)]
        df.index = pd.MultiIndex.from_arrays(arrays, names=index.names)
    else:
        values = levels[0]
        df.index = pd.Index(values, dtype=values.dtype, name=index.name)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."
