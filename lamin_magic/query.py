"""`lm.select`: records by field lookups, with ordering and a limit.

    lm.select(lm.File, name__startswith="iris", size__gt=10**6, created_at__gte="2026-11-01")

A filter is FIELD (equality) or FIELD__LOOKUP with one of LOOKUPS. Files in the trash are
left out unless `trashed=True` (only those) or `trashed=None` (both); records whose bytes gc
removed (tombstones kept for lineage) come only with `trashed=None`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from . import instance as inst
from . import registry as reg
from .errors import InvalidArgumentError, MultipleResultsError, NotFoundError

PUBLIC_MODELS = (reg.File, reg.Transform, reg.Run, reg.Storage, reg.User)
LOOKUPS = ("exact", "in", "startswith", "contains", "gt", "gte", "lt", "lte", "isnull")


class Selection:
    """The records that match: `.one()`, `.first()`, `.all()`, `.df()`, or iterate."""

    def __init__(self, model: type[reg.Record], query: Any, filters: dict[str, Any]):
        self.model, self.query, self.filters = model, query, filters

    def _what(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.filters.items())
        return f"{self.model.__name__}({args})"

    def one(self) -> Any:
        found = list(self.query.limit(2))
        if not found:
            raise NotFoundError(f"no {self._what()} is registered")
        if len(found) > 1:
            raise MultipleResultsError(
                f"more than one {self._what()}; use .first() for the newest or .all()"
            )
        return found[0]

    def first(self) -> Any:
        return self.query.first()

    def all(self) -> list[Any]:
        return list(self.query)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.query)

    def __len__(self) -> int:
        return int(self.query.count())

    def df(self) -> Any:
        import pandas as pd

        columns = [f.column_name for f in self.model._meta.sorted_fields]
        rows = list(self.query.tuples())
        frame = pd.DataFrame(rows, columns=columns)
        return frame.set_index("id") if "id" in columns else frame

    def __repr__(self) -> str:
        return f"<Selection of {self._what()}: {len(self)} records>"


def select(
    model: type[reg.Record],
    *,
    order_by: str | None = None,
    limit: int | None = None,
    trashed: bool | None = False,
    **filters: Any,
) -> Selection:
    """Records of `model` matching every filter, newest first (files: by name, then newest
    version), or by `order_by` ("size", "-created_at"); at most `limit` of them."""
    if model not in PUBLIC_MODELS:
        names = ", ".join(f"lm.{m.__name__}" for m in PUBLIC_MODELS)
        raise InvalidArgumentError(f"select takes one of {names}, not {model!r}")
    inst.current()
    query = model.select()
    for key, value in filters.items():
        query = query.where(condition(model, key, value))
    if trashed not in (False, True, None):
        raise InvalidArgumentError(f"trashed takes True, False or None, not {trashed!r}")
    if trashed and model is not reg.File:
        raise InvalidArgumentError(f"only files go to the trash; {model.__name__} has none")
    if model is reg.File and trashed is not None:
        if trashed:
            query = query.where(reg.File.trashed_at.is_null(False), reg.File.purged_at.is_null())
        else:
            query = query.where(reg.File.trashed_at.is_null())
    if order_by is not None:
        if not isinstance(order_by, str):
            raise InvalidArgumentError(f"order_by takes a field name, not {order_by!r}")
        name = order_by.removeprefix("-")
        ordered = field_of(model, name, "order_by")
        query = query.order_by(ordered.desc() if order_by.startswith("-") else ordered.asc())
    elif model is reg.File:
        query = query.order_by(reg.File.name, reg.File.version.desc())
    else:
        query = query.order_by(model.created_at.desc())
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise InvalidArgumentError(f"limit must be a whole number from 0 up, not {limit!r}")
        query = query.limit(limit)
    return Selection(model, query, filters)


def field_of(model: type[reg.Record], name: str, what: str) -> Any:
    """A model's field by attribute or column name, or a one-line error naming them all."""
    columns = {f.column_name: f for f in model._meta.sorted_fields}
    field = model._meta.fields.get(name) or columns.get(name)
    if field is None:
        raise InvalidArgumentError(
            f"{model.__name__} has no field {name!r} (in {what}); it has {', '.join(columns)}"
        )
    return field


def condition(model: type[reg.Record], key: str, value: Any) -> Any:
    """The SQL condition for one filter, FIELD or FIELD__LOOKUP."""
    name, _, lookup = key.partition("__")
    lookup = lookup or "exact"
    field = field_of(model, name, key)
    if lookup not in LOOKUPS:
        raise InvalidArgumentError(
            f"unknown lookup {lookup!r} in {key}=; use one of {', '.join(LOOKUPS)}"
        )
    if lookup == "isnull":
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"{key}= takes True or False, not {value!r}")
        return field.is_null(value)
    if lookup == "in":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise InvalidArgumentError(f"{key}= takes a list of values, not {value!r}")
        return field.in_([db_value(field, v, key) for v in value])
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        raise InvalidArgumentError(f"{key}= takes one value, not {value!r}; {name}__in= a list")
    value = db_value(field, value, key)
    if lookup in ("startswith", "contains"):
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{key}= takes a string, not {value!r}")
        if lookup == "startswith":  # case-sensitive, and uses the index on names
            return reg.db.startswith(field, value)
        return reg.db.contains(field, value)  # case-sensitive, unlike LIKE
    ops = {"exact": "__eq__", "gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
    return getattr(field, ops[lookup])(value)


def db_value(field: Any, value: Any, key: str) -> Any:
    """A filter's value as the registry stores it: records by id, times as UTC ISO text."""
    if isinstance(value, reg.Record):
        return value.get_id()
    if isinstance(field, reg.UTCDateTimeField):
        return as_utc(value, key)
    return value


def as_utc(value: Any, key: str) -> dt.datetime:
    """A datetime, a date (midnight UTC) or ISO text, as an aware UTC datetime."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidArgumentError(
                f"{key}={value!r} is not a date or time; write e.g. 2026-11-01 or 2026-11-01T14:30"
            ) from None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    raise InvalidArgumentError(f"{key}= takes a date or time, not {value!r}")
