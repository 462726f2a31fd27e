"""The registry: peewee models, their binding to the current instance's database (a SQLite
file, or PostgreSQL for a team: databases.py), the schema version and upgrades.

The schema is documented (README, "The registry") so that any SQLite or PostgreSQL tool can
read it. Timestamps are ISO 8601 text in UTC. The schema version is SQLite's
`PRAGMA user_version`, or the comment on PostgreSQL's `file` table.
"""

from __future__ import annotations

import datetime as dt
import html
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .databases import open_database
from .errors import InstanceError, printable
from .ids import new_id
from .orm import pw

SCHEMA_VERSION = 5


class RegistryProxy(pw.DatabaseProxy):
    """The models' binding: the current instance's database (SQLite or PostgreSQL, see
    databases.py), which the instance owns. A query before any instance is bound opens the
    current one (`on_demand`), so any public function works as the first call of a process."""

    __slots__ = ("_Model", "_callbacks", "obj", "on_demand")

    def __init__(self) -> None:
        self.on_demand: Callable[[], Any] | None = None
        super().__init__()

    def __getattr__(self, attr: str) -> Any:
        if self.obj is None and self.on_demand is not None:
            self.on_demand()
        return super().__getattr__(attr)


db = RegistryProxy()


def sql(text: str) -> str:
    """Raw SQL written in SQLite's words (`?` parameters), in the bound engine's."""
    return db.sql(text)


def engine() -> str:
    """'sqlite' or 'postgresql': the engine of the bound registry."""
    return str(db.kind)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Timestamp:
    """A datetime shown short in records: 2026-11-26 14:34:03."""

    def __init__(self, value: dt.datetime) -> None:
        self.value = value

    def __repr__(self) -> str:
        return self.value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    __str__ = __repr__


def _text(value: Any) -> Any:
    """Bytes put in a text column by another program, shown escaped: never a decoding error."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value


class TextField(pw.TextField):
    def adapt(self, value: Any) -> Any:
        return super().adapt(_text(value))


class CharField(pw.CharField):
    def adapt(self, value: Any) -> Any:
        return super().adapt(_text(value))


class UTCDateTimeField(TextField):
    """A timezone-aware datetime stored as ISO 8601 text."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).isoformat()
        return value

    def python_value(self, value: Any) -> Any:
        try:
            return dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        except ValueError:  # a registry edited by hand: shown as it is, never a crash
            return value


class NumberField(pw.IntegerField):
    """An integer; a value that is not one (a registry edited by hand) is kept as it is."""

    def python_value(self, value: Any) -> Any:
        return value  # SQLite returns an INTEGER as an int already


class Record(pw.Model):
    """Base of all records: prints like `File(id='…', name='iris', …)`, renders as HTML."""

    class Meta:
        database = db
        legacy_table_names = False

    def _shown_fields(self) -> list[tuple[str, Any]]:
        shown = []
        for field in self._meta.sorted_fields:
            value = self.__data__.get(field.name)
            if value is None:
                continue
            if isinstance(value, dt.datetime):
                value = Timestamp(value)
            shown.append((field.column_name, value))
        return shown

    def __str__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self._shown_fields())
        return f"{type(self).__name__}({inner})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
            f"<td style='text-align:left'>{html.escape(printable(str(value)))}</td></tr>"
            for name, value in self._shown_fields()
        )
        return f"<b>{type(self).__name__}</b><table>{rows}</table>"


class User(Record):
    id = CharField(primary_key=True, max_length=8)
    handle = CharField(unique=True)
    name = CharField(null=True)
    created_at = UTCDateTimeField(default=utcnow)


class Storage(Record):
    id = CharField(primary_key=True, max_length=8)
    root = TextField()
    type = CharField(default="local")
    created_at = UTCDateTimeField(default=utcnow)


class Transform(Record):
    id = CharField(primary_key=True, max_length=12)
    version = CharField(default="1")
    name = TextField()
    title = TextField(null=True)
    type = CharField()  # notebook, script or ipython
    key = TextField(null=True, index=True)  # the notebook's or script's absolute path
    created_by = pw.ForeignKeyField(User, column_name="created_by_id")
    created_at = UTCDateTimeField(default=utcnow)


class Run(Record):
    n_outputs: int  # set by queries that count them
    id = CharField(primary_key=True, max_length=20)
    transform = pw.ForeignKeyField(Transform, column_name="transform_id", backref="runs")
    created_by = pw.ForeignKeyField(User, column_name="created_by_id")
    created_at = UTCDateTimeField(default=utcnow)
    finished_at = UTCDateTimeField(null=True)
    environment = CharField(null=True)  # the hash of its environment, recorded after it starts
    # the hash of its notebook (or script) as saved on disk when it ended: a `source` row
    snapshot = CharField(null=True, index=True)


_NO_OBJECT = object()


class File(Record):
    """A stored object. `File(df, name="iris")` prepares one; `lm.add(file)` stores it."""

    run_id: str | None  # peewee's column attribute for `run`
    _dirty: set[str]

    id = CharField(primary_key=True, max_length=20)
    name = TextField()
    version = NumberField()
    description = TextField(null=True)
    suffix = CharField()
    size = NumberField(null=True)
    hash = CharField(null=True, index=True)
    hash_type = CharField(null=True)
    key = TextField(null=True)  # the stored object's path relative to the storage root
    run = pw.ForeignKeyField(Run, column_name="run_id", null=True, backref="outputs")
    storage = pw.ForeignKeyField(Storage, column_name="storage_id", null=True)
    created_by = pw.ForeignKeyField(User, column_name="created_by_id", null=True)
    created_at = UTCDateTimeField(default=utcnow)
    trashed_at = UTCDateTimeField(null=True)  # in the trash since; hidden from ls, load, select
    purged_at = UTCDateTimeField(null=True)  # gc removed its bytes; the record stays a tombstone
    cell = NumberField(null=True)  # the execution count of the cell that saved it, in its run

    class Meta:
        table_name = "file"
        indexes = ((("name", "version"), True),)

    def __init__(self, data: Any = _NO_OBJECT, *args: Any, **kwargs: Any) -> None:
        if data is _NO_OBJECT:  # peewee building a record from a row
            super().__init__(*args, **kwargs)
            self._object: Any = None
            self._format: Any = None
            return
        from .files import prepare

        fmt = prepare(data, kwargs)
        super().__init__(*args, **kwargs)
        self._object, self._format = data, fmt

    def load(self, verify: bool = True, allow_pickle: bool = False) -> Any:
        """The stored object; records this file as an input of the current run.

        `verify` re-hashes the bytes first; `allow_pickle=True` unpickles this one file."""
        from .files import load_file

        return load_file(self, verify=verify, allow_pickle=allow_pickle)

    def open(self, engine: str | None = None, verify: bool = True) -> Any:
        """The stored object opened lazily (see `lm.open`); an input of the current run."""
        from .files import open_file

        return open_file(self, engine=engine, verify=verify)

    @property
    def path(self) -> Path:
        """Where the stored object is on disk."""
        from .files import stored_path

        return stored_path(self)


class RunInput(pw.Model):
    run = pw.ForeignKeyField(Run, column_name="run_id", on_delete="CASCADE")
    file = pw.ForeignKeyField(File, column_name="file_id", on_delete="CASCADE")

    class Meta:
        database = db
        table_name = "run_input"
        primary_key = pw.CompositeKey("run", "file")


class Cell(pw.Model):
    """A cell a run executed, as it ran: recorded before it runs, finished after."""

    run = pw.ForeignKeyField(Run, column_name="run_id", on_delete="CASCADE")
    execution_count = NumberField()
    source = TextField()
    started_at = UTCDateTimeField()
    finished_at = UTCDateTimeField(null=True)

    class Meta:
        database = db
        table_name = "cell"
        primary_key = pw.CompositeKey("run", "execution_count")


class Environment(pw.Model):
    """A Python environment, stored once per distinct content: its version and packages."""

    hash = CharField(primary_key=True)
    python = TextField()
    packages = TextField()  # name==version lines, sorted
    created_at = UTCDateTimeField(default=utcnow)

    class Meta:
        database = db
        table_name = "environment"


class Source(pw.Model):
    """A notebook (outputs stripped) or script as saved on disk, stored once per content."""

    hash = CharField(primary_key=True)
    kind = CharField()  # notebook or script
    content = TextField()
    created_at = UTCDateTimeField(default=utcnow)

    class Meta:
        database = db
        table_name = "source"


class TransformPath(pw.Model):
    """A path a Transform had until its notebook was renamed (the Transform follows the file)."""

    transform = pw.ForeignKeyField(Transform, column_name="transform_id", on_delete="CASCADE")
    path = TextField()
    until = UTCDateTimeField()

    class Meta:
        database = db
        table_name = "transform_path"
        primary_key = pw.CompositeKey("transform", "until")


class Setting(pw.Model):
    """Per-instance settings, e.g. allow_pickle."""

    key = CharField(primary_key=True)
    value = TextField()

    class Meta:
        database = db
        table_name = "setting"


MODELS: list[type[pw.Model]] = [
    *(User, Storage, Transform, Run, File, RunInput, Cell, Environment, Source, TransformPath),
    Setting,
]

# peewee's metaclass gives every model a '<Name: str>' repr; records print like the tutorial's
for _model in (User, Storage, Transform, Run, File):
    _model.__repr__ = Record.__str__  # type: ignore[method-assign,assignment]


def _add_settings(database: pw.Database) -> None:
    database.create_tables([Setting])


def _add_trash(database: pw.Database) -> None:
    database.execute_sql("ALTER TABLE file ADD COLUMN trashed_at TEXT")
    database.execute_sql("ALTER TABLE file ADD COLUMN purged_at TEXT")
    _trash_index(database)


def _trash_index(database: pw.Database) -> None:
    """gc and `ls trash` find the trash without reading every record."""
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS file_trashed_at ON file (trashed_at) "
        "WHERE trashed_at IS NOT NULL"
    )


# Upgrades from schema version N to N + 1, run in order in one transaction.
def _add_provenance(database: pw.Database) -> None:
    database.create_tables([Cell, Environment])
    database.execute_sql("ALTER TABLE file ADD COLUMN cell INTEGER")
    database.execute_sql("ALTER TABLE run ADD COLUMN environment VARCHAR(255)")


def _add_snapshots(database: pw.Database) -> None:
    database.create_tables([Source, TransformPath])
    database.execute_sql("ALTER TABLE run ADD COLUMN snapshot VARCHAR(255)")
    database.execute_sql('CREATE INDEX "run_snapshot" ON "run" ("snapshot")')


UPGRADES: dict[int, Callable[[pw.Database], None]] = {
    1: _add_settings,
    2: _add_trash,
    3: _add_provenance,
    4: _add_snapshots,
}


_expected_columns: dict[str, set[str]] | None = None


def expected_columns() -> dict[str, set[str]]:
    """table -> the columns lamin_magic reads and writes, from the models."""
    global _expected_columns
    if _expected_columns is None:
        _expected_columns = {
            m._meta.table_name: {f.column_name for f in m._meta.sorted_fields} for m in MODELS
        }
    return _expected_columns


def open_registry(location: Path | str, create: bool = True) -> Any:
    """Bind the models to the registry at `location` (a SQLite file's path, or a PostgreSQL
    URL), creating (unless `create` is false) or upgrading its schema; returns the database.

    Only a new or older registry takes the write lock: opening one that is up to date reads,
    so it never waits on a process that is saving.
    """
    close_registry()
    database = open_database(location)
    db.initialize(database)
    where = database.location
    try:
        database.connect()
        if database.schema_version() != SCHEMA_VERSION:
            with db.atomic():  # another process may be creating it: read again under the lock
                version = database.schema_version()
                if version < 0:
                    raise InstanceError(
                        f"the registry {where} has schema version {version}, which no "
                        "lamin_magic ever wrote; it was edited by hand or by another program"
                    )
                if version > SCHEMA_VERSION:
                    raise InstanceError(
                        f"the registry {where} has schema version {version}, newer than this "
                        f"lamin_magic understands ({SCHEMA_VERSION}); upgrade: "
                        "pip install -U lamin_magic"
                    )
                if version == 0 and not create:
                    raise InstanceError(
                        f"the database {where} holds no lamin_magic registry; create an "
                        f"instance in it: lamin-magic init PATH --db {where}"
                    )
                if version == 0:
                    database.create_tables(MODELS)
                    _trash_index(database)
                for step in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                    UPGRADES[step](database)
                if version != SCHEMA_VERSION:
                    database.set_schema_version(SCHEMA_VERSION)
        database.audit(expected_columns())
    except (pw.DatabaseError, sqlite3.DatabaseError) as e:
        close_registry()
        raise InstanceError(f"cannot open the registry {where}: {e}") from e
    except BaseException:
        close_registry()
        raise
    return database


def close_registry() -> None:
    """Close and unbind: the next query opens the current instance again."""
    database = db.obj
    if database is not None and not database.is_closed():
        database.close()
    db.initialize(None)


def rows_in(sql: str, values: list[Any], before: tuple[Any, ...] = (), chunk: int = 500) -> list:
    """The rows of `sql`, whose `{}` is an IN list, for many values: a chunk at a time, as
    SQLite caps the parameters of one statement. `before` are the parameters ahead of it."""
    found: list[Any] = []
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        marks = ", ".join("?" * len(part))
        cursor = db.execute_sql(db.sql(sql.format(marks)), [*before, *part])
        if cursor.description is not None:  # a statement that returns rows
            found += cursor.fetchall()
    return found


@contextmanager
def transaction(to_disk: bool = True) -> Iterator[None]:
    """A write transaction whose commit waits for the disk, or only for the OS (kept if the
    process dies, not through a power cut)."""
    with db.write_transaction(to_disk):
        yield


def write_quickly(sql: str, params: Any) -> bool:
    """One small write that must not hold up the user's cell: it waits at most 0.2 s for
    another writer (else it is skipped, and False returned), and commits without waiting
    for the disk (kept if the process dies, not through a power cut)."""
    return bool(db.write_quickly(sql, params))


def new_user(handle: str) -> User:
    return User.create(id=new_id("user"), handle=handle, name=handle)
