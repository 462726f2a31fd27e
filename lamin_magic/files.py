"""The Python API over the registry and storage: add, load, select, names and versions."""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import durability, tracking
from . import instance as inst
from . import registry as reg
from .errors import (
    IntegrityError,
    InvalidArgumentError,
    LaminMagicError,
    NotFoundError,
    UnsupportedTypeError,
    command,
)
from .ids import new_id
from .orm import pw
from .storage.backends import Storage

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
    # control characters, and invisible ones that make two names look alike (U+202E, U+00A0)
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        raise InvalidArgumentError(
            f"the name {name!r} holds a control character ({bad!r}); remove it"
        )
    if "@" in name:
        raise InvalidArgumentError(
            f"the name {name!r} holds '@', which separates a name from its version; drop it"
        )
    return name


MAX_NUMBER = 2**63 - 1  # the largest integer SQLite stores


def parse_number(text: str, what: str, example: str) -> int:
    """A positive decimal number in ASCII digits, or a one-line error saying `what` is off."""
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise InvalidArgumentError(f"{what} is not a whole number from 1 up; write {example}")
    if int(text) > MAX_NUMBER:
        raise InvalidArgumentError(f"{what} is too large; write {example}")
    return int(text)


def parse_name_version(spec: str) -> tuple[str, int | None]:
    """'iris' -> ('iris', None); 'iris@2' -> ('iris', 2)."""
    if not isinstance(spec, str):
        raise InvalidArgumentError(f"give a name as a string, not {type(spec).__name__}")
    name, sep, version = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if not sep:
        return check_name(spec), None
    check_name(name)
    what = f"version {version!r} in {spec!r}"
    return name, parse_number(version, what, f"{name}@1, {name}@2, ...")


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


def label(file: reg.File) -> str:
    return f"{file.name}@{file.version}"


def recorded(file: reg.File) -> tuple[Any, Any, Any]:
    """(size, hash, hash type): what the record says the stored bytes are."""
    return (file.size, file.hash, file.hash_type)


def stored_path(file: reg.File) -> Path:
    """Where the file's bytes are on this machine: inside the instance's folder, by a key
    lamin_magic could have given; for a bucket, the cache's verified copy."""
    from .storage.backends import Folder

    if file._object is not None and not file.key:
        raise NotFoundError(f"{file.name!r} is not stored yet; store it with lm.add(file)")
    storage = inst.current().storage
    if isinstance(storage, Folder):
        return storage.path(file.key, label(file))
    return storage.local(file.key, recorded(file), label(file), verify=True)


def versions_of(name: str) -> Any:
    """Every record of `name` with a number for a version (a row edited by hand may not),
    in the trash or not."""
    integral = pw.SQL(reg.db.integer('"version"'))
    return reg.File.select().where(reg.File.name == name, integral)


def live(query: Any) -> Any:
    """Only the records not in the trash."""
    return query.where(reg.File.trashed_at.is_null())


# The queries of every save, written out: building them with peewee cost more than running
# them (about 0.25 ms each), and a small save makes five.
LATEST = (
    "SELECT * FROM file WHERE name = ? AND {integral}"
    " AND trashed_at IS NULL ORDER BY version DESC LIMIT 1"
)
ONE_VERSION = "SELECT * FROM file WHERE name = ? AND version = ?"
TOP_VERSION = "SELECT MAX(version) FROM file WHERE name = ? AND {integral}"
TWINS = (
    "SELECT * FROM file WHERE hash = ? AND hash_type = ? AND size = ? AND suffix = ?"
    " AND purged_at IS NULL"
)


def in_engine(text: str) -> str:
    """One of the queries above in the bound engine's words."""
    return _in_engine(text, reg.engine())


@functools.lru_cache(maxsize=16)
def _in_engine(text: str, engine: str) -> str:  # the same text and engine: the same words
    return reg.sql(text.replace("{integral}", reg.db.integer("version")))


def _latest(name: str) -> reg.File | None:
    """The latest version of `name` not in the trash."""
    found = list(reg.File.raw(in_engine(LATEST), name))
    return found[0] if found else None


def _next_version(name: str) -> int:
    """One past every version `name` ever had: trashed and collected ones keep their numbers."""
    top = reg.db.execute_sql(in_engine(TOP_VERSION), (name,)).fetchone()[0]
    return int(top) + 1 if top is not None else 1


def _twins(written: Any, suffix: str) -> list[reg.File]:
    """Records of other names whose bytes, by their record, equal what was just written."""
    return list(
        reg.File.raw(in_engine(TWINS), written.hash, written.hash_type, written.size, suffix)
    )


class StoredBytes:
    """Which stored objects a save may stand on instead of writing: those whose bytes are
    there and hash to their record (in a bucket: are there with their size). Each key is
    checked once per save; dedup never stands in for bytes that are missing or damaged."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.states: dict[str, str] = {}  # key -> ok, missing, damaged or unsafe

    def state(self, file: reg.File) -> str:
        key = str(file.key)
        if key not in self.states:
            self.states[key] = self.storage.state(file.key, recorded(file), label(file))
        return self.states[key]

    def first_intact(self, files: list[reg.File]) -> reg.File | None:
        return next((f for f in files if self.state(f) == "ok"), None)


@dataclass
class Saved:
    """What `add` did with one File: "new", "new version" or "unchanged", and a note."""

    file: reg.File
    status: str
    note: str = ""


def add(file: reg.File) -> reg.File:
    """Store a File's object and its record in one transaction; returns the File stored.

    Same name and content as the latest version: that record comes back, nothing is written
    (if its bytes were lost, these restore them). Same content under another name: a new
    record sharing the stored bytes, when they are intact. Same name, new content: the next
    version.
    """
    return add_many([file])[0].file


def add_many(files: list[reg.File], labels: list[str] | None = None) -> list[Saved]:
    """Store several Files all or nothing: every object is written (to temporaries) before
    any record is, and the records commit in one transaction. `labels` name the objects in
    messages (e.g. the variable names); the default is each File's name."""
    from .storage.objects import remove_path, write_temp

    for file in files:
        if not isinstance(file, reg.File):
            raise InvalidArgumentError(
                f"lm.add takes a File, not {type(file).__name__}; "
                "wrap it: lm.add(lm.File(obj, name=...))"
            )
    sync = durability.to_disk()
    instance = inst.current()
    storage = instance.storage
    results: list[Saved | None] = [
        Saved(f, "unchanged") if _already_stored(f) else None for f in files
    ]
    todo = [(i, f) for i, f in enumerate(files) if results[i] is None]
    run = tracking.ensure_run() if todo else None
    written: list[Any] = []
    placed: list[str] = []  # keys placed by this save: removed again if it fails
    try:
        for i, file in todo:
            what = labels[i] if labels else repr(file.name)
            staging = storage.staging()
            written.append(write_temp(file._object, file._format, staging, what, sync))
        trust = StoredBytes(storage)
        early: list[str | None] = []  # keys uploaded before the transaction (a bucket)
        for (_, file), w in zip(todo, written, strict=True):  # hash twins before the lock
            latest = _latest(file.name)
            same = latest is not None and _same_bytes(latest, w, file.suffix)
            # the latest version's bytes are there, or these put them back at its key
            kept = same and latest is not None and trust.state(latest) in ("ok", "missing")
            twin = trust.first_intact(_twins(w, file.suffix))
            if storage.remote and not kept and twin is None:
                # an upload takes long: never under the registry's lock, which every saver
                # of the instance waits on
                key = f"{new_id('file')}{file.suffix}"
                storage.place(w.temp_path, key, sync)
                placed.append(key)
                early.append(key)
            else:
                early.append(None)
        with reg.transaction(to_disk=sync):
            for (i, file), w, uploaded in zip(todo, written, early, strict=True):
                results[i] = _commit(file, w, run, instance, trust, placed, sync, uploaded)
    except BaseException:
        _remove_quietly(storage, placed)
        raise
    finally:
        for w, (_, file) in zip(written, todo, strict=False):
            if storage.remote:
                storage.keep(w.temp_path, (w.size, w.hash, w.hash_type), file.suffix)
            remove_path(w.temp_path)
    used = {str(r.file.key) for r in results if r is not None}
    # uploads another save of the same bytes made unnecessary by committing first; if this
    # fails, check lists them as orphans: the save itself is done
    _remove_quietly(storage, [key for key in placed if key not in used])
    done = [r for r in results if r is not None]
    for (_, file), result in zip(todo, (results[i] for i, _ in todo), strict=True):
        assert result is not None
        file.__data__ = dict(result.file.__data__)
        file._dirty.clear()
    return done


def _remove_quietly(storage: Storage, keys: list[str]) -> None:
    """Remove objects this save placed and no record uses; a failure leaves an orphan (which
    check lists and repairs), never hides what happened to the save."""
    for key in keys:
        try:
            storage.remove(key)
        except (LaminMagicError, OSError):
            continue


def _already_stored(file: reg.File) -> bool:
    """A File read from the registry, not one holding an object to store."""
    if file._object is not None:
        return False
    if file.id and reg.File.get_or_none(reg.File.id == file.id) is not None:
        return True
    raise InvalidArgumentError("this File holds no object; create it with lm.File(obj, name=...)")


def _same_bytes(record: reg.File, written: Any, suffix: str) -> bool:
    return (record.hash, record.hash_type, record.size, record.suffix) == (
        written.hash,
        written.hash_type,
        written.size,
        suffix,
    )


def _commit(
    file: reg.File,
    written: Any,
    run: Any,
    instance: inst.Instance,
    trust: StoredBytes,
    placed: list[str],
    sync: bool,
    early: str | None,
) -> Saved:
    """One File's record, inside the caller's transaction. `early` is the key its bytes were
    uploaded to before the transaction, if they were."""
    storage = instance.storage
    latest = _latest(file.name)
    note = ""
    if latest is not None and _same_bytes(latest, written, file.suffix):
        state = trust.state(latest)
        if state == "ok":
            return Saved(latest, "unchanged")
        if state == "missing":  # the same bytes, just written: put them back where they were
            storage.place(written.temp_path, str(latest.key), sync)
            trust.states[str(latest.key)] = "ok"
            return Saved(latest, "unchanged", "its missing bytes were restored")
        note = f"the bytes of {label(latest)} are damaged ({command('check')} lists them)"
    version = _next_version(file.name)
    status = "new" if version == 1 else "new version"
    file_id = early[:20] if early else new_id("file")
    twin = trust.first_intact(_twins(written, file.suffix))
    if twin is not None:
        key = str(twin.key)
    elif early is not None:
        # uploaded before the lock: still there now that we hold it (a repair elsewhere,
        # misled by a wrong clock, may have taken it); no record goes without its bytes
        if not storage.exists(early):
            raise IntegrityError(
                f"the upload of {file.name!r} ({early}) vanished before its record was "
                f"written (a {command('repair')} elsewhere?); nothing was stored: save again"
            )
        key = early
        trust.states[key] = "ok"
    else:
        key = f"{file_id}{file.suffix}"
        storage.place(written.temp_path, key, sync)
        placed.append(key)
        trust.states[key] = "ok"
    stored = reg.File.create(
        id=file_id,
        name=file.name,
        version=version,
        description=file.description,
        suffix=file.suffix,
        size=written.size,
        hash=written.hash,
        hash_type=written.hash_type,
        key=key,
        run=run.id,
        cell=tracking.context.cell if run is tracking.context.run else None,
        storage=instance.storage_id,
        created_by=instance.user_id,
        created_at=reg.utcnow(),
    )
    return Saved(stored, status, note)


def get_file(name: str, version: int | None = None, include_trash: bool = False) -> reg.File:
    """The latest version of `name` not in the trash, or the given one, with a hint when
    there is none. `include_trash` returns trashed records too (show, restore)."""
    inst.current()
    if version is not None:
        found = next(iter(reg.File.raw(in_engine(ONE_VERSION), name, version)), None)
    else:
        found = _latest(name)
        if found is None and include_trash:
            found = versions_of(name).order_by(reg.File.version.desc()).first()
    if found is not None:
        if found.trashed_at is None or include_trash:
            return found
        raise NotFoundError(in_trash(found, f"{name}@{found.version}"))
    query = versions_of(name)  # built only to say why there is none
    if version is not None and version < _next_version(name):  # numbers are never reused
        raise NotFoundError(f"{name}@{version} was deleted for good by gc")
    versions = [f.version for f in live(query.select(reg.File.version)).order_by(reg.File.version)]
    if versions:
        raise NotFoundError(
            f"{name!r} has no version {version}; it has versions {', '.join(map(str, versions))}"
        )
    if version is not None and query.exists():
        raise NotFoundError(f"{name!r} has no version {version}; its versions are in the trash")
    if query.where(reg.File.purged_at.is_null()).exists():
        raise NotFoundError(
            f"every version of {name!r} is in the trash; {command('restore', name)} brings "
            "them back"
        )
    if query.exists():
        raise NotFoundError(f"every version of {name!r} was deleted for good by gc")
    names = [f.name for f in live(reg.File.select(reg.File.name)).distinct()]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"{command('ls')} lists what is stored"
    raise NotFoundError(f"no file named {name!r}; {hint}")


def in_trash(file: reg.File, spec: str) -> str:
    if file.purged_at is not None:
        return f"{spec} was deleted for good by gc; its number is not given again"
    return f"{spec} is in the trash; {command('restore', spec)} brings it back"


def record_input(file: reg.File) -> None:
    """The file is an input of the current run: one statement, once per process (a notebook
    loading the same file in a loop writes it once); provenance, not data, so kept if the
    process dies, not through a power cut."""
    run = tracking.ensure_run()
    pair = (str(run.id), str(file.id))
    if run.id == file.run_id or pair in tracking.context.inputs:
        return
    reg.db.write_one(
        "INSERT INTO run_input (run_id, file_id) VALUES (?, ?) ON CONFLICT DO NOTHING", pair
    )
    tracking.context.inputs.add(pair)


def stored_bytes(file: reg.File) -> Path:
    """A path on this machine holding the file's stored bytes, or IntegrityError when they
    are gone. A bucket's are verified on the way (they come through the cache, whose entries
    are re-hashed before use); a folder's when `read_stored` reads them."""
    return inst.current().storage.local(file.key, recorded(file), label(file), verify=False)


def read_stored(file: reg.File, fmt: Any, read: Any, verify: bool, verb: str, path: Path) -> Any:
    """`read(path)` of the file's stored bytes (found by `stored_bytes`), then the file is an
    input of the current run. `verify` re-hashes them first; a library failing to read them
    is one line (and, unverified, the bytes are checked then, to say whether they were
    damaged)."""
    from .storage.backends import verify_bytes
    from .storage.objects import library_reason

    if verify and not inst.current().storage.remote:
        verify_bytes(path, recorded(file), label(file))
    try:
        obj = read(path)
    except (LaminMagicError, MemoryError):
        raise
    except Exception as e:  # the library could not read it: damaged bytes, or a missing library
        if not verify:
            verify_bytes(path, recorded(file), label(file))
        raise IntegrityError(
            f"cannot {verb} {label(file)} ({fmt.name}): {library_reason(e)}"
        ) from e
    record_input(file)
    return obj


def load_file(file: reg.File, verify: bool = True, allow_pickle: bool = False) -> Any:
    """The stored object; records the file as an input of the current run.

    `verify` re-hashes the bytes first (BLAKE3, a few percent of a parquet load), so what
    loads is what was saved; `allow_pickle=True` unpickles this one file even where you do
    not trust the instance to.
    """
    from .storage.formats import format_for_suffix

    if file._object is not None and not file.key:
        return file._object
    path = stored_bytes(file)
    fmt = format_for_suffix(file.suffix, allow_pickle, path)
    return read_stored(file, fmt, fmt.load, verify, "load", path)


def load(spec: str, verify: bool = True, allow_pickle: bool = False) -> Any:
    """Load 'NAME' (the latest version) or 'NAME@VERSION'; see `load_file`."""
    name, version = parse_name_version(spec)
    return load_file(get_file(name, version), verify=verify, allow_pickle=allow_pickle)


def open_file(file: reg.File, engine: str | None = None, verify: bool = True) -> Any:
    """The stored object opened lazily: it reads the bytes when asked, never writes them.
    Recorded as an input of the current run, like a load; `verify` re-hashes the bytes first
    (they are read later, so it vouches for them as they are now)."""
    from .storage.formats import format_for_suffix

    path = stored_bytes(file)
    fmt = format_for_suffix(file.suffix, allow_pickle=True)  # found, not yet used
    if fmt.open is None:
        how = command("load", label(file))
        raise UnsupportedTypeError(f"{label(file)} ({fmt.name}) has no lazy reader; load it: {how}")
    if fmt.needs_pickle:
        format_for_suffix(file.suffix)  # refused where the local user does not allow pickle
    inst.current().storage.pin(path)
    return read_stored(file, fmt, fmt.open(engine), verify, "open", path)


# named after the builtin on purpose, as lm.open; nothing in this module uses the builtin
def open(spec: str, engine: str | None = None, verify: bool = True) -> Any:
    """Open 'NAME' (the latest version) or 'NAME@VERSION' lazily, without reading it into
    memory: parquet as a pyarrow Dataset (engine='polars': a polars LazyFrame,
    engine='duckdb': a DuckDB relation), h5ad as a read-only backed AnnData, zarr through
    anndata's lazy reader. See `open_file`."""
    name, version = parse_name_version(spec)
    return open_file(get_file(name, version), engine=engine, verify=verify)
