"""Which format stores which type, and the hook to register more.

A type is named as "package:ClassName" (e.g. "pandas:DataFrame") and matched against the
object's class and its bases, so nothing is imported to tell whether a format applies.

Register a format for your own type::

    import lamin_magic as lm

    def write_netcdf(ds, path):        # write the object to `path` (a file or a folder)
        ds.to_netcdf(path)

    def load_netcdf(path):
        import xarray
        return xarray.load_dataset(path)

    lm.register_format("netcdf", suffix=".nc", type="xarray:Dataset",
                       write=write_netcdf, load=load_netcdf)

A writer may instead take a binary stream (`stream=True`): the bytes are then hashed as they
are written, with no second read. A `check(obj)` callable, if given, refuses objects the
format cannot store faithfully by raising `UnsupportedTypeError` with the fix. An
`open(engine)` callable, if given, is what `lm.open` uses: it returns a reader, path -> an
object that reads the stored bytes on demand and never writes them (lazy.py has the built-in
ones); it raises `InvalidArgumentError` for an engine it does not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidArgumentError, UnsupportedTypeError, command
from .keys import SUFFIX, TEMP_SUFFIX


@dataclass(frozen=True)
class Format:
    name: str  # what format= takes: "parquet"
    suffix: str  # the stored object's suffix: ".parquet"
    type: str  # "package:ClassName"
    write: Callable[[Any, Any], None]  # (obj, path or stream)
    load: Callable[[Any], Any]  # (path) -> obj
    stream: bool = False  # write takes a binary stream instead of a path
    folder: bool = False  # the stored object is a folder (zarr)
    check: Callable[[Any], None] | None = None
    needs_pickle: bool = False  # only where the instance allows pickle (loading runs code)
    # formats sharing a suffix: True for the stored objects this format wrote (read from them)
    claims: Callable[[Any], bool] | None = None
    implicit: bool = True  # a bare %%lamin save saves what the cell bound of this type
    open: Callable[[str | None], Callable[[Any], Any]] | None = None  # engine -> lazy reader


_formats: dict[
    str, Format
] = {}  # by name, in registration order; the first of a type is its default


def type_name(cls: type) -> str:
    return f"{cls.__module__.split('.')[0]}:{cls.__qualname__}"


def _type_key(type_: str | type) -> str:
    if isinstance(type_, str):
        if ":" not in type_:
            raise InvalidArgumentError(f"type {type_!r} must look like 'package:ClassName'")
        return type_
    return type_name(type_)


def register_format(
    name: str,
    *,
    suffix: str,
    type: str | type,
    write: Callable[[Any, Any], None],
    load: Callable[[Any], Any],
    stream: bool = False,
    folder: bool = False,
    check: Callable[[Any], None] | None = None,
    default: bool = False,
    needs_pickle: bool = False,
    claims: Callable[[Any], bool] | None = None,
    implicit: bool = True,
    open: Callable[[str | None], Callable[[Any], Any]] | None = None,
) -> Format:
    """Teach lamin_magic to store objects of `type` as `suffix` files (or folders).

    `default=True` makes it the format chosen for that type when `format=` is not given.
    Where several formats share a suffix, `claims(path)` tells a stored object this format
    wrote (e.g. by a mark in its metadata); the one format without `claims` loads the rest.
    `implicit=False` keeps a bare `%%lamin save` from saving every such object a cell binds.
    """
    if not re.fullmatch(SUFFIX, suffix) or suffix.endswith(TEMP_SUFFIX):
        raise InvalidArgumentError(
            f"suffix {suffix!r} must look like '.npy' or '.ome.zarr' (letters, digits, _ and -)"
        )
    fmt = Format(
        name,
        suffix,
        _type_key(type),
        write,
        load,
        stream,
        folder,
        check,
        needs_pickle,
        claims=claims,
        implicit=implicit,
        open=open,
    )
    if default:
        rest = {k: v for k, v in _formats.items() if k != name}
        _formats.clear()
        _formats[name] = fmt
        _formats.update(rest)
    else:
        _formats[name] = fmt
    return fmt


def _ensure_builtin() -> None:
    if "parquet" not in _formats:
        from importlib import import_module

        # each registers itself on import; this order makes the listing in errors
        for module in (
            "dataframe",
            "anndata_formats",
            "polars_format",
            "arrow_format",
            "mudata_format",
            "numpy_format",
            "pickle_format",
        ):
            import_module(f"{__package__}.{module}")
        import_module(f"{__package__}.lazy")  # gives the formats above their lazy readers


def set_open(name: str, open: Callable[[str | None], Callable[[Any], Any]]) -> Format:
    """Give the registered format `name` a lazy reader (see the module's docstring)."""
    fmt = _formats[name] = replace(_formats[name], open=open)
    return fmt


def _usable(fmt: Format, allow_pickle: bool = False) -> bool:
    if not fmt.needs_pickle or allow_pickle:
        return True
    from ..instance import pickle_allowed

    return pickle_allowed()


def pickle_hint() -> str:
    return (
        f"if you trust everyone who writes to this instance, {command('trust')} lets it "
        "pickle (loading a pickle runs code chosen by whoever wrote it)"
    )


def supported_types() -> str:
    _ensure_builtin()
    seen: dict[str, list[str]] = {}
    owner: dict[str, str] = {}  # class name -> the type that named it first
    for fmt in _formats.values():
        if fmt.needs_pickle:
            continue
        package, cls = fmt.type.split(":")
        if owner.setdefault(cls, fmt.type) != fmt.type:  # a second DataFrame: polars.DataFrame
            cls = f"{package}.{cls}"
        seen.setdefault(cls, []).append(fmt.name)
    return ", ".join(f"{t} ({' / '.join(names)})" for t, names in seen.items())


def describe(obj: Any) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _types_of(obj: Any) -> set[str]:
    """ "package:ClassName" of the object's class and of each of its bases."""
    return {type_name(c) for c in type(obj).__mro__}


def format_for(obj: Any, name: str | None = None) -> Format:
    """The format that stores `obj`: the one named, else the first registered for its type."""
    _ensure_builtin()
    types = _types_of(obj)
    if name is not None:
        fmt = _formats.get(name)
        if fmt is None:
            raise InvalidArgumentError(
                f"unknown format {name!r}; use one of: {', '.join(_formats)}"
            )
        if fmt.needs_pickle and not _usable(fmt):
            raise UnsupportedTypeError(f"you do not allow pickle in this instance; {pickle_hint()}")
        if fmt.type not in types:
            fits = [f.name for f in _formats.values() if f.type in types]
            hint = f"use one of: {', '.join(fits)}" if fits else f"it stores {fmt.type}"
            raise UnsupportedTypeError(f"format {name!r} cannot store a {describe(obj)}; {hint}")
        return fmt
    for fmt in _formats.values():
        if fmt.type in types and _usable(fmt):
            return fmt
    raise UnsupportedTypeError(
        f"cannot store a {describe(obj)}; supported types: {supported_types()} "
        "(lm.register_format adds more)"
    )


def has_own_format(obj: Any, implicit: bool = False) -> bool:
    """Whether a format other than pickle stores `obj`; with `implicit`, one that a bare
    `%%lamin save` uses (not numpy: arrays are everywhere)."""
    _ensure_builtin()
    types = _types_of(obj)
    return any(
        f.type in types and not f.needs_pickle and (f.implicit or not implicit)
        for f in _formats.values()
    )


def format_for_suffix(suffix: str, allow_pickle: bool = False, path: Any = None) -> Format:
    """The format that loads `suffix` files; pickle only where the local user allows it.
    Given the stored object's `path`, a format that claims it wins (pandas, polars and
    pyarrow share .parquet)."""
    _ensure_builtin()
    shared = [f for f in _formats.values() if f.suffix == suffix]
    if path is not None and len(shared) > 1:
        mine = [f for f in shared if f.claims is not None and f.claims(path)]
        shared = mine or [f for f in shared if f.claims is None]
    for fmt in shared:
        if not _usable(fmt, allow_pickle):
            raise UnsupportedTypeError(
                f"you do not allow unpickling {suffix} files from this instance; "
                f"{pickle_hint()}; or pass allow_pickle=True to this load"
            )
        return fmt
    raise UnsupportedTypeError(
        f"no format loads {suffix!r} files in this session; register one with lm.register_format"
    )
