"""The Python API over the registry and storage: add, load, select, names and versions."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import instance as inst
from . import registry as reg
from . import tracking
from .errors import (
    IntegrityError,
    InvalidArgumentError,
    MultipleResultsError,
    NotFoundError,
)
from .ids import new_id

MAX_NAME_LENGTH = 200


def check_name(name: Any) -> str:
    """A valid file name, or a one-line error saying what is wrong with it."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a name must be a string, not {type(name).__name__}")
    if not name.strip():
        raise InvalidArgumentError("the name is empty; give one, e.g. name=iris")
    if name != name.strip():
        raise InvalidArgumentError(f"the name {name!r} starts or ends with white space; remove it")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(
            f"the name is {len(name)} characters long; keep it to {MAX_NAME_LENGTH}"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidArgumentError(f"the name {name!r} holds a control character; remove it")
    if "@" in name:
        raise InvalidArgumentError(
            f"the name {name!r} holds '@', which separates a name from its version; drop it"
        )
    return name


def parse_name_version(spec: str) -> tuple[str, int | None]:
    """'iris' -> ('iris', None); 'iris@2' -> ('iris', 2)."""
    name, sep, version = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if not sep:
        return check_name(spec), None
    check_name(name)
    if not version.isdigit() or int(version) < 1:
        raise InvalidArgumentError(
            f"version {version!r} in {spec!r} is not a number; write {name}@1, {name}@2, ..."
        )
    return name, int(version)


def prepare(data: Any, kwargs: dict[str, Any]) -> Any:
    """Check a new File's object and arguments; fills in its suffix, returns its Format."""
    from .storage.formats import format_for

    if "name" not in kwargs or kwargs["name"] is None:
        raise InvalidArgumentError("a File needs a name: lm.File(obj, name='iris')")
    check_name(kwargs["name"])
    description = kwargs.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidArgumentError("description must be a string")
    fmt = format_for(data, kwargs.pop("format", None))
    if fmt.check is not None:
        fmt.check(data)
    kwargs["suffix"] = fmt.suffix
    return fmt


def stored_path(file: reg.File) -> Path:
    if not file.key:
        raise NotFoundError(f"{file.name!r} is not stored yet; store it with lm.add(file)")
    return inst.current().path_of(file.key)


def _latest(name: str) -> reg.File | None:
    return reg.File.select().where(reg.File.name == name).order_by(reg.File.version.desc()).first()


def _stored_twin(written: Any, suffix: str, instance: inst.Instance) -> reg.File | None:
    """A record whose bytes equal what was just written, with its bytes still on disk."""
    query = reg.File.select().where(
        reg.File.hash == written.hash,
        reg.File.hash_type == written.hash_type,
        reg.File.size == written.size,
        reg.File.suffix == suffix,
    )
    for twin in query:
        if twin.key and instance.path_of(twin.key).exists():
            return twin
    return None


def add(file: reg.File) -> reg.File:
    """Store a File's object and its record in one transaction; returns the File stored.

    Same name and content as the latest version: that record comes back, nothing is written.
    Same content under another name: a new record sharing the stored bytes.
    Same name, new content: the next version.
    """
    return add_with_status(file)[0]


def add_with_status(file: reg.File) -> tuple[reg.File, str]:
    """`add`, and what happened: "new", "new version" or "unchanged"."""
    from .storage.objects import move_into_place, remove_path, write_temp

    if not isinstance(file, reg.File):
        raise InvalidArgumentError(
            f"lm.add takes a File, not {type(file).__name__}; "
            "wrap it: lm.add(lm.File(obj, name=...))"
        )
    if file._object is None:
        if file.id and reg.File.get_or_none(reg.File.id == file.id) is not None:
            return file, "unchanged"
        raise InvalidArgumentError(
            "this File holds no object; create it with lm.File(obj, name=...)"
        )
    instance = inst.current()
    run = tracking.ensure_run()
    written = write_temp(file._object, file._format, instance.temp_dir)
    placed: Path | None = None
    try:
        with reg.db.atomic():
            latest = _latest(file.name)
            if (
                latest is not None
                and latest.hash == written.hash
                and latest.hash_type == written.hash_type
                and latest.suffix == file.suffix
            ):
                stored, status = latest, "unchanged"
            else:
                status = "new" if latest is None else "new version"
                file_id = new_id("file")
                twin = _stored_twin(written, file.suffix, instance)
                if twin is not None:
                    key = twin.key
                else:
                    key = f"{file_id}{file.suffix}"
                    placed = instance.path_of(key)
                    move_into_place(written.temp_path, placed)
                stored = reg.File.create(
                    id=file_id,
                    name=file.name,
                    version=latest.version + 1 if latest is not None else 1,
                    description=file.description,
                    suffix=file.suffix,
                    size=written.size,
                    hash=written.hash,
                    hash_type=written.hash_type,
                    key=key,
                    run=run.id,
                    storage=instance.storage_id,
                    created_by=instance.user_id,
                    created_at=reg.utcnow(),
                )
    except BaseException:
        if placed is not None:
            remove_path(placed)
        raise
    finally:
        remove_path(written.temp_path)
    file.__data__ = dict(stored.__data__)
    file._dirty.clear()
    return stored, status


def get_file(name: str, version: int | None = None) -> reg.File:
    """The latest version of `name`, or the given one, with a hint when there is none."""
    query = reg.File.select().where(reg.File.name == name)
    if version is not None:
        found = query.where(reg.File.version == version).first()
    else:
        found = query.order_by(reg.File.version.desc()).first()
    if found is not None:
        return found
    versions = [f.version for f in query.select(reg.File.version).order_by(reg.File.version)]
    if versions:
        raise NotFoundError(
            f"{name!r} has no version {version}; it has versions {', '.join(map(str, versions))}"
        )
    names = [f.name for f in reg.File.select(reg.File.name).distinct()]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "%lamin ls lists what is stored"
    raise NotFoundError(f"no file named {name!r}; {hint}")


def record_input(file: reg.File) -> None:
    run = tracking.ensure_run()
    if run.id != file.run_id:
        reg.RunInput.insert(run=run.id, file=file.id).on_conflict_ignore().execute()


def existing_path(file: reg.File) -> Path:
    """Where the file's bytes are, or IntegrityError when they are gone."""
    path = stored_path(file)
    if not path.exists():
        raise IntegrityError(
            f"the bytes of {file.name}@{file.version} are missing ({path}); run lamin-magic check"
        )
    return path


def verify_file(file: reg.File) -> None:
    """Raise IntegrityError unless the stored bytes have the recorded size and hash."""
    from .storage.hashing import hash_path

    size, digest, hash_type = hash_path(existing_path(file))
    if (size, digest, hash_type) != (file.size, file.hash, file.hash_type):
        raise IntegrityError(
            f"the bytes of {file.name}@{file.version} do not match their record (hash "
            f"{digest} != {file.hash}); they were changed on disk: run lamin-magic check"
        )


def load_file(file: reg.File, verify: bool = False) -> Any:
    """The stored object; records the file as an input of the current run."""
    from .storage.formats import format_for_suffix

    if file._object is not None and not file.key:
        return file._object
    path = existing_path(file)
    if verify:
        verify_file(file)
    obj = format_for_suffix(file.suffix).load(path)
    record_input(file)
    return obj


def load(spec: str, verify: bool = False) -> Any:
    """Load 'NAME' (the latest version) or 'NAME@VERSION'."""
    name, version = parse_name_version(spec)
    return load_file(get_file(name, version), verify=verify)


PUBLIC_MODELS = (reg.File, reg.Transform, reg.Run, reg.Storage, reg.User)


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


def select(model: type[reg.Record], **filters: Any) -> Selection:
    """Records of `model` whose fields equal the given values, newest first."""
    if model not in PUBLIC_MODELS:
        names = ", ".join(f"lm.{m.__name__}" for m in PUBLIC_MODELS)
        raise InvalidArgumentError(f"select takes one of {names}, not {model!r}")
    inst.current()
    columns = {f.column_name: f for f in model._meta.sorted_fields}
    query = model.select()
    for key, value in filters.items():
        field = model._meta.fields.get(key) or columns.get(key)
        if field is None:
            raise InvalidArgumentError(
                f"{model.__name__} has no field {key!r}; it has {', '.join(columns)}"
            )
        if isinstance(value, reg.Record):
            value = value.get_id()
        query = query.where(field == value)
    if model is reg.File:
        query = query.order_by(reg.File.name, reg.File.version.desc())
    else:
        query = query.order_by(model.created_at.desc())
    return Selection(model, query, filters)
