"""The registry's two engines behind one peewee binding: SQLite (a file in the instance, the
embedded default) and PostgreSQL (a team's server), and the few places their SQL differs.

Every write transaction is serialised, on both: SQLite begins it IMMEDIATE, PostgreSQL takes
one advisory lock per instance (`pg_advisory_xact_lock`) as it begins. Choosing the next
version is read-then-insert, so two savers must not interleave (FACTS.md); a transaction
holds the lock for a few statements, as bytes are written (or uploaded) before it begins.

Raw SQL is written once, in SQLite's words with `?` parameters; `Registry.sql` gives the
engine's own text (cached). Where the words differ, a method says it per engine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import InstanceError, InvalidArgumentError, RegistryBusyError, printable, redact
from .orm import load_psycopg, pw

BUSY_TIMEOUT_MS = 10_000  # concurrent writers wait this long instead of failing
PRAGMAS: dict[str, object] = {
    "journal_mode": "wal",
    "busy_timeout": BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
    "synchronous": "full",  # a committed record survives a power cut
    "trusted_schema": 0,  # a registry from elsewhere: its schema may call no risky function
}
QUICK_WAIT_MS = 200  # a write that must not hold up a cell waits at most this long
LOCK_TIMEOUT_MS = 60_000  # a row lock inside a write transaction: never forever
CONNECT_TIMEOUT_S = 5  # a server that does not answer is an error within seconds
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# the key of PostgreSQL's advisory lock that serialises writes to the registry (any 64-bit
# number; this one spells "laminmag")
WRITE_LOCK = 0x6C616D696E6D6167


def is_database_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def shown_url(url: str) -> str:
    """The URL with its password (in it, or as `?password=`) replaced by `***`: what
    messages, `info` and reprs print."""
    return printable(redact(url))


class Registry:
    """What both engines offer beyond peewee's Database (a mixin: `kind` names the engine)."""

    kind = ""

    @property
    def location(self) -> str:
        """The registry as messages name it: a path, or a URL without its password."""
        raise NotImplementedError

    def sql(self, text: str) -> str:
        """`text` (SQLite's words, `?` parameters) in this engine's words."""
        return text

    def integer(self, column: str) -> str:
        """SQL that is true where `column` holds an integer (not a hand-edited text)."""
        return "1=1"

    def glob(self, pattern: str) -> tuple[str, str]:
        """(operator, value) matching a name against a glob (`iris*`, `a?[0-9]`)."""
        return "GLOB", pattern

    def contains(self, column: Any, value: Any) -> Any:
        """A peewee expression: `column` holds `value`, case-sensitively."""
        return pw.fn.instr(column, value) > 0

    def startswith(self, column: Any, value: str) -> Any:
        """A peewee expression: `column` starts with `value`, case-sensitively, on the index
        (SQLite compares text byte by byte)."""
        return (column >= value) & (column < value + "\U0010ffff")

    def schema_version(self) -> int:
        raise NotImplementedError

    def set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    def audit(self, expected: dict[str, set[str]]) -> None:
        """Refuse a registry whose schema lacks what lamin_magic reads and writes."""
        for table, columns in expected.items():
            missing = sorted(columns - self.columns_of(table))
            if missing:
                raise InstanceError(
                    f"the registry {self.location} is not one lamin_magic can use: its table "
                    f"{table!r} lacks {', '.join(missing)}; it was edited by hand or by "
                    "another program"
                )

    def columns_of(self, table: str) -> set[str]:
        raise NotImplementedError

    def write_transaction(self, to_disk: bool) -> Any:
        """A write transaction whose commit waits for the disk, or (`to_disk` false) only
        for the OS: kept if the process dies, not through a power cut."""
        raise NotImplementedError

    def write_quickly(self, sql: str, params: Any) -> bool:
        """One small write that waits at most QUICK_WAIT_MS for another writer; False when
        it did not happen."""
        raise NotImplementedError

    def write_one(self, sql: str, params: Any) -> None:
        """One statement (SQLite's words), committed on its own without waiting for the
        disk: provenance, kept if the process dies."""
        raise NotImplementedError


def open_database(location: Any) -> Any:
    """The database of a registry: a PostgreSQL URL, or the path of a SQLite file."""
    if is_database_url(location):
        return PostgresRegistry(location)
    return SqliteRegistry(str(location), pragmas=PRAGMAS, lock_type="IMMEDIATE")


# ---------------------------------------------------------------------------------------------
# SQLite


class SqliteRegistry(Registry, pw.SqliteDatabase):
    """peewee's SQLite database, turning SQLite's errors into one-line `InstanceError`s: a
    registry held by another writer, damaged, or unreadable."""

    kind = "sqlite"

    @property
    def location(self) -> str:
        return str(self.database)

    def integer(self, column: str) -> str:
        return f"typeof({column}) = 'integer'"

    def _connect(self) -> Any:
        connection = super()._connect()  # type: ignore[misc]
        connection.text_factory = decode_text
        return connection

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        try:
            return super().execute_sql(sql, params)
        except (pw.OperationalError, pw.DatabaseError) as e:
            raise sqlite_error(e, self.database) from e
        except OverflowError as e:  # sqlite3 refuses Python ints past 64 bits
            raise InvalidArgumentError(
                "a number is too large for the registry (at most 2**63 - 1)"
            ) from e

    def begin(self, lock_type: str | None = None) -> None:
        try:
            super().begin(lock_type)
        except (pw.OperationalError, pw.DatabaseError) as e:
            raise sqlite_error(e, self.database) from e

    def schema_version(self) -> int:
        return int(self.execute_sql("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self.execute_sql(f"PRAGMA user_version = {int(version)}")

    def columns_of(self, table: str) -> set[str]:
        return {r[1] for r in self.execute_sql(f'PRAGMA table_info("{table}")').fetchall()}

    def audit(self, expected: dict[str, set[str]]) -> None:
        """A registry travels with its instance, so whoever wrote it is not necessarily you.
        A trigger fires on every insert (one could rewrite a new record's key) and a view could
        stand where a table should: neither is opened. With `trusted_schema` off, defaults,
        checks and indexes can call no function with side effects, so a changed table can at
        most refuse a write; extra tables, columns and indexes are left alone."""
        path = self.location
        for kind, name in self.execute_sql("SELECT type, name FROM sqlite_master").fetchall():
            if kind in ("trigger", "view"):
                raise InstanceError(
                    f"the registry {path} holds a {kind} {name!r} that lamin_magic did not "
                    f"create; it could act on every save. Look at it (sqlite3 {path} .schema) "
                    f'and drop it (DROP {kind.upper()} "{name}") if you trust the rest'
                )
        super().audit(expected)

    @contextmanager
    def commits_to_os(self) -> Iterator[None]:
        """Outside a transaction only: SQLite keeps its safety level during one."""
        self.execute_sql("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self.execute_sql("PRAGMA synchronous = FULL")

    @contextmanager
    def write_transaction(self, to_disk: bool) -> Iterator[None]:
        if to_disk:
            with self.atomic():
                yield
        else:
            with self.commits_to_os(), self.atomic():
                yield

    def write_one(self, sql: str, params: Any) -> None:
        with self.commits_to_os():
            self.execute_sql(sql, params)

    def write_quickly(self, sql: str, params: Any) -> bool:
        self.execute_sql(f"PRAGMA busy_timeout = {QUICK_WAIT_MS}")
        try:
            with self.commits_to_os():
                self.execute_sql(sql, params)
            return True
        except RegistryBusyError:
            return False
        finally:
            self.execute_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def decode_text(raw: bytes) -> str:
    """TEXT as str; text that is not UTF-8 (put there by another program) shown escaped."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="backslashreplace")


def sqlite_error(error: Exception, path: Any) -> Exception:
    """The one-line error for a failure of SQLite itself; constraint errors pass unchanged."""
    if isinstance(error, (pw.IntegrityError, pw.DataError, pw.NotSupportedError)):
        return error
    text = str(error)
    if "locked" in text or "busy" in text:
        who = lock_holders(str(path))
        return RegistryBusyError(
            f"the registry {path} is busy: another process has held its write lock for "
            f"{BUSY_TIMEOUT_MS // 1000} s{who}; wait for it to finish, or stop it "
            "(ls, show and runs do not wait on writers)"
        )
    return InstanceError(f"the registry {path} cannot be used: {text}")


def lock_holders(path: str) -> str:
    """', held by pid 123 (python ...)': the other processes that have the registry open."""
    targets = {os.path.realpath(path + end) for end in ("", "-wal", "-shm", "-journal")}
    found = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:  # not Linux
        return ""
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in fds):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(f"pid {pid} ({printable(cmd[:60])})")
        except OSError:  # gone, or not ours to look at
            continue
    return f"; open in {', '.join(found[:3])}" if found else ""


def write_alone_sqlite(path: str, statements: list[tuple[str, Any]], timeout: float) -> None:
    con = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        con.execute("PRAGMA trusted_schema = 0")
        con.execute("BEGIN IMMEDIATE")
        for sql, params in statements:
            con.execute(sql, params)
        con.execute("COMMIT")
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL

# `+column` keeps SQLite on an index it would otherwise leave (views.py); PostgreSQL's planner
# needs no such hint, and has no unary plus on text
_INDEX_HINT = re.compile(r"(?<=[\s(])\+(?=[A-Za-z_])")


@functools.lru_cache(maxsize=256)
def postgres_sql(text: str) -> str:
    """SQLite's words in PostgreSQL's: `%s` parameters, no index hints."""
    return _INDEX_HINT.sub("", text.replace("%", "%%")).replace("?", "%s")


class PostgresRegistry(Registry, pw.PostgresqlDatabase):
    """peewee's PostgreSQL database (psycopg 3), with the same schema as the SQLite one
    (integers 64-bit, times as ISO 8601 text), the write lock as an advisory lock, and
    one-line errors for a server that cannot be used."""

    kind = "postgresql"
    field_types = {  # noqa: RUF012  every integer 64-bit, as SQLite's are
        **pw.PostgresqlDatabase.field_types,
        "INT": "BIGINT",
    }

    def __init__(self, url: str) -> None:
        # who holds the write lock, as other members' busy messages name it
        load_psycopg()
        who = f"lamin_magic pid {os.getpid()} on {socket.gethostname()}"[:63]
        super().__init__(
            url, connect_timeout=CONNECT_TIMEOUT_S, prefer_psycopg3=True, application_name=who
        )

    @property
    def location(self) -> str:
        return shown_url(str(self.database))

    def sql(self, text: str) -> str:
        return postgres_sql(text)

    def glob(self, pattern: str) -> tuple[str, str]:
        return "~", glob_regex(pattern)

    def contains(self, column: Any, value: Any) -> Any:
        return pw.fn.strpos(column, value) > 0

    def startswith(self, column: Any, value: str) -> Any:
        # a range would depend on the database's collation; starts_with does not
        return pw.fn.starts_with(column, value)

    def _connect(self) -> Any:
        try:
            return super()._connect()  # type: ignore[misc]
        except Exception as e:
            raise postgres_error(e, self.location) from e

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        for attempt in (1, 2):
            try:
                return super().execute_sql(sql, params)
            except (pw.IntegrityError, pw.DataError, pw.NotSupportedError):
                raise
            except (pw.OperationalError, pw.DatabaseError, pw.InterfaceError) as e:
                if attempt == 1 and self._reconnected():
                    continue
                raise postgres_error(e, self.location) from e
            except OverflowError as e:
                raise InvalidArgumentError(
                    "a number is too large for the registry (at most 2**63 - 1)"
                ) from e
        raise AssertionError("unreachable")

    def _reconnected(self) -> bool:
        """After the server closed our connection (a restart, an idle timeout, a failover),
        outside a transaction: forget it, so the next statement connects again. A kernel
        keeps working across a server restart; inside a transaction the error stands."""
        state = self._state  # type: ignore[attr-defined]
        conn = state.conn
        if conn is None or not getattr(conn, "closed", False) or self.in_transaction():
            return False
        with contextlib.suppress(Exception):
            conn.close()
        state.reset()
        return True

    def begin(self, isolation_level: Any = None) -> None:
        try:
            super().begin(isolation_level)
        except (pw.OperationalError, pw.InterfaceError) as e:
            if not self._reconnected():
                raise postgres_error(e, self.location) from e
            super().begin(isolation_level)
        # wait for another writer as long as SQLite would, then say who it is
        self.execute_sql(f"SET LOCAL lock_timeout = '{BUSY_TIMEOUT_MS}ms'")
        try:
            self.execute_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        except RegistryBusyError as e:
            self.cursor().execute("ROLLBACK")  # the failed BEGIN leaves nothing open
            raise RegistryBusyError(
                f"the registry {self.location} is busy: another process has held its write "
                f"lock for {BUSY_TIMEOUT_MS // 1000} s{self._lock_holders()}; wait for it to "
                "finish, or stop it (ls, show and runs do not wait on writers)"
            ) from e
        self.execute_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")

    def _lock_holders(self) -> str:
        """', held by pid 123 on host (user alice, lamin_magic pid 456 on laptop)'."""
        try:
            rows = self.execute_sql(
                "SELECT a.pid, a.usename, host(a.client_addr), a.application_name"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.classid = %s AND l.objid = %s",
                (WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF),
            ).fetchall()
        except InstanceError:
            return ""
        found = [
            f"server pid {pid} (user {user}, from {addr or 'a local socket'}, {app or 'no name'})"
            for pid, user, addr, app in rows
        ]
        return printable(f"; held by {', '.join(found)}") if found else ""

    def schema_version(self) -> int:
        """Kept in the comment on the `file` table ('lamin_magic schema 5'); 0 where there
        is no `file` table yet."""
        row = self.execute_sql(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = 'file' AND c.relkind = 'r' AND n.nspname = current_schema()"
        ).fetchone()
        if row is None:
            return 0
        match = re.fullmatch(r"lamin_magic schema (-?[0-9]+)", row[0] or "")
        if match is None:
            raise InstanceError(
                f"the database {self.location} has a table 'file' that lamin_magic did not "
                "create; use another database (or schema) for the registry"
            )
        return int(match.group(1))

    def set_schema_version(self, version: int) -> None:
        self.execute_sql(f"COMMENT ON TABLE \"file\" IS 'lamin_magic schema {int(version)}'")

    def columns_of(self, table: str) -> set[str]:
        # the catalog, not information_schema: that one hides what the user may not read
        rows = self.execute_sql(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(%s))"
            " AND attnum > 0 AND NOT attisdropped",
            (table,),
        ).fetchall()
        return {r[0] for r in rows}

    def audit(self, expected: dict[str, set[str]]) -> None:
        """Also: the user may read and write every table (a member's rights are the
        database owner's to grant; without them, every save would fail half-way)."""
        denied = [
            table
            for table in expected
            if not self.execute_sql(
                "SELECT to_regclass(quote_ident(%s)) IS NULL OR has_table_privilege("
                "to_regclass(quote_ident(%s)), 'SELECT, INSERT, UPDATE, DELETE')",
                (table, table),
            ).fetchone()[0]
        ]
        if denied:
            raise InstanceError(
                f"cannot use the registry {self.location}: permission denied on its tables "
                f"({', '.join(sorted(denied))}); ask the database's owner: GRANT SELECT, "
                "INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO USER"
            )
        super().audit(expected)

    @contextmanager
    def write_transaction(self, to_disk: bool) -> Iterator[None]:
        with self.atomic():
            if not to_disk:  # SET LOCAL ends with the transaction
                self.execute_sql("SET LOCAL synchronous_commit = off")
            yield

    def write_one(self, sql: str, params: Any) -> None:
        self.execute_sql(self.sql(sql), params)  # autocommit: one statement, one commit

    def write_quickly(self, sql: str, params: Any) -> bool:
        """One statement on its own (it needs no read-then-write, so not the instance's
        write lock, which a save may hold): a cell never waits for another member's save."""
        try:
            self.write_one(sql, params)
            return True
        except InstanceError:
            return False


def glob_regex(pattern: str) -> str:
    """SQLite's GLOB as a POSIX regular expression (`*`, `?`, `[...]`, `[^...]`), anchored."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and "]" in pattern[i + 2 :] + pattern[i + 1 : i + 2]:
            end = pattern.index("]", i + 2 if pattern[i + 1 : i + 2] in ("]", "^") else i + 1)
            inner = pattern[i + 1 : end]
            negate = inner.startswith("^")
            inner = inner[1:] if negate else inner
            out.append("[" + ("^" if negate else "") + inner.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c) if not c.isalnum() else c)
        i += 1
    return "".join(out) + "$"


UNKNOWN_HOST = ("could not translate host name", "name or service not known", "failed to resolve")
UNREACHABLE = ("connection refused", "timeout expired", "could not connect", "connection to server")


def postgres_error(error: Exception, where: str) -> Exception:
    """One line saying what is wrong with a PostgreSQL registry and how to fix it."""
    if isinstance(error, InstanceError):
        return error
    text = " ".join(str(error).split())
    lowered = text.lower()
    if "password authentication failed" in lowered:
        why = "the password was refused; set the right one in PGPASSWORD or ~/.pgpass"
    elif "no password supplied" in lowered or "fe_sendauth" in lowered:
        why = "the server asks for a password; set it in PGPASSWORD or ~/.pgpass"
    elif "database" in lowered and "does not exist" in lowered:
        why = "that database does not exist; create it (createdb NAME) or fix the URL"
    elif "role" in lowered and "does not exist" in lowered:
        why = "that user does not exist on the server; fix the user in the URL"
    elif "permission denied" in lowered or "must be owner" in lowered:
        why = (
            "permission denied: the user may not create, read or write the registry's "
            "tables; ask the database's owner to grant it (init: GRANT CREATE ON SCHEMA "
            "public TO USER; members: GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN "
            "SCHEMA public TO USER), or use another user"
        )
    elif "lock timeout" in lowered or "canceling statement due to lock" in lowered:
        return RegistryBusyError(f"the registry {where} is busy: another writer holds its lock")
    elif any(s in lowered for s in UNKNOWN_HOST):
        why = "the host name is unknown; fix the host in the URL"
    elif any(s in lowered for s in UNREACHABLE) or isinstance(error, pw.InterfaceError):
        why = "the server does not answer; start it, or fix the host and port in the URL"
    else:
        why = printable(text[:200])
    return InstanceError(f"cannot use the registry {where}: {why}")


def write_alone_postgres(url: str, statements: list[tuple[str, Any]], timeout: float) -> None:
    """Statements in one transaction on a connection of their own, under the write lock."""
    import psycopg

    connecting = psycopg.connect(url, connect_timeout=max(1, int(timeout) + 1))
    with connecting as con, con.transaction():
        con.execute(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
        con.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        for sql, params in statements:
            con.execute(postgres_sql(sql), params)


def write_alone(location: str, statements: list[tuple[str, Any]], timeout: float = 2) -> None:
    """Statements in one transaction on a connection of their own (a thread, or at exit),
    waiting at most `timeout` seconds for another writer."""
    write = write_alone_postgres if is_database_url(location) else write_alone_sqlite
    write(location, statements, timeout)
