"""What `ls`, `show`, `runs` and `info` show, as tables that print as text and render as HTML.

The magics and the CLI both call these; neither formats records itself.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from typing import Any

from . import files, tracking
from . import instance as inst
from . import registry as reg
from .errors import printable
from .orm import pw

PAGE_SIZE = 50


MAX_CELL = 80  # characters of one cell in text; HTML shows all of it


def _cell(value: Any) -> str:
    """A value as one safe line: names and descriptions come from others' registries, so
    escape sequences and newlines are shown escaped, never sent to the terminal."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return printable(str(value))


def _short(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    if not isinstance(size, int) or size < 0:  # a registry edited by hand
        return str(size)
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(size)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    footer: str = ""
    empty: str = ""  # said instead of the column headers when there are no rows

    def __str__(self) -> str:
        cells = [[_short(_cell(v)) for v in row] for row in self.rows]
        widths = [len(c) for c in self.columns]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(values: list[str]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

        lines = [printable(self.title)] if self.title else []
        if not self.rows and self.empty:
            return "\n".join([*lines, self.empty])
        lines.append(line(self.columns))
        lines.extend(line(row) for row in cells)
        if not self.rows:
            lines.append("(none)")
        if self.footer:
            lines.append(printable(self.footer))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.rows and self.empty:
            title = f"<b>{html.escape(printable(self.title))}</b>: " if self.title else ""
            return f"<p>{title}{html.escape(self.empty)}</p>"
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td style='text-align:left'>{html.escape(_cell(v))}</td>" for v in row)
            + "</tr>"
            for row in self.rows
        )
        title = f"<b>{html.escape(printable(self.title))}</b>" if self.title else ""
        foot = f"<p>{html.escape(printable(self.footer))}</p>" if self.footer else ""
        return f"{title}<table><tr>{head}</tr>{body}</table>{foot}"

    def __repr__(self) -> str:
        return str(self)


@dataclass
class Code:
    """Code under a title: printed as it is, line by line (each line made safe), and as
    <pre> in HTML."""

    title: str
    text: str

    def __str__(self) -> str:
        lines = [printable(self.title)] if self.title else []
        return "\n".join([*lines, *(printable(x) for x in self.text.splitlines())])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        code = "\n".join(printable(x) for x in self.text.splitlines())
        return f"<b>{html.escape(printable(self.title))}</b><pre>{html.escape(code)}</pre>"


@dataclass
class Sections:
    """Several tables shown one after another."""

    parts: list[Table | Code] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n\n".join(str(p) for p in self.parts)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return "".join(p._repr_html_() for p in self.parts)


LS_FILTERS = {
    "notebook": "made by a notebook or script of this name (file stem)",
    "run": "made by this run (its id)",
    "type": "of this suffix: parquet, h5ad, zarr, ...",
    "larger": "of at least this size: 10MB, 1.5GB, 500",
    "smaller": "of less than this size",
    "since": "saved on or after this date or time: 2026-11-01, 2026-11-01T14:30",
    "until": "saved before this date or time",
}
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def parse_size(text: str, option: str) -> int:
    import re

    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?B?)", text.strip(), re.IGNORECASE)
    if match is None or match.group(2).upper() not in SIZE_UNITS:
        raise files.InvalidArgumentError(f"{option}={text} is not a size; write e.g. 10MB, 1.5GB")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


def file_conditions(filters: dict[str, str]) -> tuple[str, list[Any]]:
    """SQL on `file` (unqualified columns) for `ls` filters, and its parameters. A `+` keeps
    SQLite on the index of names, which `ls` hops along, instead of a filter's own index
    (that would rescan every match at every hop)."""
    from .query import as_utc

    sql, params = "", list[Any]()
    for option, text in filters.items():
        if option == "notebook":
            # the runs first, as values: a subquery here would run again at every hop
            runs = reg.db.execute_sql(
                reg.sql(
                    "SELECT r.id FROM run r JOIN transform t ON t.id = r.transform_id"
                    " WHERE t.name = ?"
                ),
                (text,),
            ).fetchall()
            sql += f" AND +run_id IN ({', '.join('?' * len(runs))})" if runs else " AND 1=0"
            params += [r for (r,) in runs]
        elif option == "run":
            sql += " AND +run_id = ?"
            params.append(text)
        elif option == "type":
            sql += " AND +suffix = ?"
            params.append("." + text.removeprefix("."))
        elif option in ("larger", "smaller"):
            sql += " AND +size >= ?" if option == "larger" else " AND +size < ?"
            params.append(parse_size(text, option))
        elif option in ("since", "until"):
            sql += " AND +created_at >= ?" if option == "since" else " AND +created_at < ?"
            params.append(reg.UTCDateTimeField().db_value(as_utc(text, option)))
        else:
            known = ", ".join(f"{k}=" for k in LS_FILTERS)
            raise files.InvalidArgumentError(f"ls has no filter {option}=; its filters: {known}")
    return sql, params


def check_page(page: int, page_size: int) -> int:
    if page < 1:
        raise files.InvalidArgumentError(f"page {page} does not exist; pages start at 1")
    if page > files.MAX_NUMBER // page_size:
        raise files.InvalidArgumentError(f"page {page} is past the last page; try page 1")
    return page_size * (page - 1)


def list_files(
    pattern: str | None = None,
    page: int = 1,
    page_size: int = PAGE_SIZE,
    trash: bool = False,
    filters: dict[str, str] | None = None,
) -> Table:
    """The latest version of each stored name (matching a glob `pattern` and the `ls`
    filters), a page at a time; with `trash`, every version in the trash instead."""
    inst.current()
    first = check_page(page, page_size)
    if trash:
        return list_trash(pattern, page, page_size, first)
    filters = filters or {}
    where, values = file_conditions(filters)
    if pattern:
        operator, value = reg.db.glob(pattern)
        where += f" AND name {operator} ?"
        values.append(value)
    where += " AND +trashed_at IS NULL"
    # Hop from name to name along the (name, version) index: each hop is one index seek, so a
    # page costs its offset in seeks, not a scan of every version of every name.
    sql = (
        "WITH RECURSIVE names(n, k) AS ("
        f" SELECT (SELECT MIN(name) FROM file WHERE 1=1{where}), 1"
        f" UNION ALL SELECT (SELECT MIN(name) FROM file WHERE name > n{where}), k + 1"
        " FROM names WHERE n IS NOT NULL AND k <= ?)"
        " SELECT f.name, f.version, f.suffix, f.size, f.created_at, f.id, f.description"
        " FROM names JOIN file f ON f.name = names.n"
        f" AND f.version = (SELECT MAX(version) FROM file WHERE name = names.n{where})"
        " WHERE names.k > ? ORDER BY names.k"
    )
    params = [*values, *values, first + page_size, *values, first]
    shown = [f"matching {pattern!r}"] if pattern else []
    shown += [f"{k}={v}" for k, v in filters.items()]
    columns = ["name", "version", "suffix", "size", "created_at", "id", "description"]
    rows = reg.db.execute_sql(reg.sql(sql), params)
    return page_of("files", shown, columns, rows, page, page_size)


def list_trash(pattern: str | None, page: int, page_size: int, first: int) -> Table:
    """Every version in the trash (gc has not removed it yet), most recently trashed first."""
    operator, value = reg.db.glob(pattern or "")
    match = f" AND name {operator} ?" if pattern else ""
    sql = (
        "SELECT name, version, suffix, size, trashed_at, id FROM file"
        f" WHERE trashed_at IS NOT NULL AND purged_at IS NULL{match}"
        " ORDER BY trashed_at DESC LIMIT ? OFFSET ?"
    )
    params: list[Any] = [value] if pattern else []
    rows = reg.db.execute_sql(reg.sql(sql), [*params, page_size + 1, first])
    shown = [f"matching {pattern!r}"] if pattern else []
    columns = ["name", "version", "suffix", "size", "trashed_at", "id"]
    return page_of("trash", shown, columns, rows, page, page_size)


def page_of(
    what: str, shown: list[str], columns: list[str], rows: Any, page: int, page_size: int
) -> Table:
    """A page of file rows (name, version, suffix, size, a time, ...); one row past the page
    tells whether there is a next one."""
    found = [list(r) for r in rows]
    for row in found[:page_size]:
        row[3] = human_size(row[3])
        row[4] = reg.UTCDateTimeField().python_value(row[4])
    title = (
        what + (" " + ", ".join(shown) if shown else "") + (f", page {page}" if page > 1 else "")
    )
    footer = f"more on page {page + 1}" if len(found) > page_size else ""
    return Table(title, columns, found[:page_size], footer)


def show_file(spec: str) -> Sections:
    """One file: its record, the run and transform that made it, its versions, its readers."""
    name, version = files.parse_name_version(spec)
    inst.current()
    file = files.get_file(name, version, include_trash=True)
    state = ""
    if file.purged_at is not None:
        state = " (deleted for good by gc: a tombstone, its bytes are gone)"
    elif file.trashed_at is not None:
        state = " (in the trash)"
    record = Table(
        f"{file.name}@{file.version}{state}",
        ["field", "value"],
        [[k, size_and_bytes(v) if k == "size" else v] for k, v in file._shown_fields()],
    )
    made = Table(
        "made by",
        ["run", "user", "transform", "type", "title", "started", "finished"],
        [],
        empty="no run recorded",
    )
    if file.run_id:
        run = reg.Run.get_or_none(reg.Run.id == file.run_id)
        if run is not None:
            t, who = run.transform, run.created_by.handle
            made.rows.append(
                [run.id, who, t.name, t.type, t.title, run.created_at, run.finished_at]
            )
            if run.snapshot:
                made.footer = (
                    f"its {t.type} as saved when the run ended: lamin-magic source {run.id} "
                    "--notebook"
                )
    versions = Table(
        "versions",
        ["version", "id", "size", "hash", "created_at"],
        [
            [f.version, f.id, human_size(f.size), f.hash, f.created_at]
            for f in files.live(reg.File.select().where(reg.File.name == file.name)).order_by(
                reg.File.version.desc()
            )
        ],
    )
    readers = Table(
        "read by",
        ["run", "user", "transform", "type", "started"],
        [
            [r.id, r.created_by.handle, r.transform.name, r.transform.type, r.created_at]
            for r in reg.Run.select(reg.Run, reg.Transform, reg.User)
            .join(reg.RunInput, on=(reg.RunInput.run == reg.Run.id))
            .switch(reg.Run)
            .join(reg.Transform)
            .switch(reg.Run)
            .join(reg.User)
            .where(reg.RunInput.file == file.id)
            .order_by(reg.Run.created_at.desc())
        ],
        empty="no run has read it yet (a run's load of its own file is not recorded)",
    )
    parts: list[Table | Code] = [record, made]
    if file.cell is not None and file.run_id:
        cell = reg.Cell.get_or_none(
            reg.Cell.run == file.run_id, reg.Cell.execution_count == file.cell
        )
        if cell is not None:
            parts.append(Code(f"saved by cell [{file.cell}]", cell.source))
    return Sections([*parts, versions, readers])


def run_source(run_id: str | None = None) -> Sections:
    """The code a run executed, cell by cell, in the order it ran (the current run's by
    default), with execution counts and times."""
    inst.current()
    run_id = run_id or (tracking.context.run.id if tracking.context.run else None)
    if run_id is None:
        raise files.InvalidArgumentError("no run is tracked here; give a run id (lamin-magic runs)")
    run = reg.Run.get_or_none(reg.Run.id == run_id)
    if run is None:
        raise files.NotFoundError(f"no run {run_id!r}; lamin-magic runs lists them")
    cells = reg.Cell.select().where(reg.Cell.run == run_id).order_by(reg.Cell.execution_count)
    parts: list[Table | Code] = [
        Code(
            f"In [{c.execution_count}] {_cell(c.started_at)}"
            + ("" if c.finished_at is not None else " (no end: still running, or stopped)"),
            c.source,
        )
        for c in cells
    ]
    if not parts:
        parts = [Table(f"run {run_id}", [], [], empty="no cell recorded")]
    return Sections(parts)


def run_snapshot(run_id: str) -> Code:
    """The notebook (outputs stripped, as .ipynb JSON) or script as saved on disk when the
    run ended; each line made safe for a terminal."""
    inst.current()
    run = reg.Run.get_or_none(reg.Run.id == run_id)
    if run is None:
        raise files.NotFoundError(f"no run {run_id!r}; lamin-magic runs lists them")
    source = reg.Source.get_or_none(reg.Source.hash == run.snapshot) if run.snapshot else None
    if source is None:
        raise files.NotFoundError(
            f"run {run_id} has no snapshot of its notebook or script (recorded when it ends; a "
            "run still going, an IPython session, or one made by an older lamin_magic has none)"
        )
    return Code("", source.content)


def run_environment(run_id: str, other: str | None = None) -> str:
    """A run's Python and distributions as name==version lines; with `other`, what changed
    from `other` to this run (+ added, - removed, ~ changed versions)."""
    inst.current()

    def packages(rid: str) -> dict[str, str]:
        run = reg.Run.get_or_none(reg.Run.id == rid)
        if run is None:
            raise files.NotFoundError(f"no run {rid!r}; lamin-magic runs lists them")
        env = reg.Environment.get_or_none(reg.Environment.hash == run.environment)
        if env is None:
            raise files.NotFoundError(
                f"run {rid} has no environment recorded (it is recorded in a thread as a run "
                "starts; a run that ended at once, or made by an older lamin_magic, has none)"
            )
        found = {"python": env.python}
        for line in env.packages.splitlines():
            name, _, version = line.partition("==")
            found[name] = version
        return found

    mine = packages(run_id)
    if other is None:
        return "\n".join(printable(f"{k}=={v}") for k, v in mine.items())
    theirs = packages(other)
    lines = []
    for name in sorted(set(mine) | set(theirs)):
        if name not in theirs:
            lines.append(f"+ {name}=={mine[name]}")
        elif name not in mine:
            lines.append(f"- {name}=={theirs[name]}")
        elif mine[name] != theirs[name]:
            lines.append(f"~ {name}=={theirs[name]} -> {mine[name]}")
    return "\n".join(printable(x) for x in lines) or "the same environment"


def size_and_bytes(size: Any) -> str:
    return (
        f"{human_size(size)} ({size:,} bytes)" if isinstance(size, int) and size >= 0 else str(size)
    )


def list_runs(limit: int = PAGE_SIZE) -> Table:
    inst.current()
    outputs = reg.File.select(pw.fn.COUNT(reg.File.id)).where(reg.File.run == reg.Run.id)
    query = (
        reg.Run.select(reg.Run, reg.Transform, outputs.alias("n_outputs"))
        .join(reg.Transform)
        .order_by(reg.Run.created_at.desc())
        .limit(limit)
    )
    rows = [
        [r.id, r.transform.name, r.transform.type, r.created_at, r.finished_at, r.n_outputs]
        for r in query
    ]
    columns = ["run", "transform", "type", "started", "finished", "files made"]
    return Table("runs, newest first", columns, rows)


def info() -> Table:
    instance = inst.current()
    handle = inst.current_user_handle()
    user = reg.User.get_or_none(reg.User.handle == handle)
    t, run = tracking.context.transform, tracking.context.run
    rows: list[list[Any]] = [
        ["instance", str(instance.root)],
        ["chosen", instance.how],
        ["registry", instance.registry_shown],
        ["user", f"{handle} ({user.id})" if user else f"{handle} (no record yet)"],
        ["transform", f"{t.name} ({t.type}, {t.id})" if t is not None else "not tracked"],
        ["title", t.title if t is not None else None],
        ["run", run.id if run is not None else "not tracked"],
        ["notebook found by", tracking.context.how or None],
        ["pickle", "allowed" if inst.pickle_allowed() else "off"],
    ]
    return Table("lamin_magic", ["what", "value"], rows)


def cache_summary(clear: bool = False) -> str:
    """The local cache of downloaded objects: where, how full, its entries; or cleared."""
    from .storage.cache import Cache

    cache = Cache()
    if clear:
        freed = cache.clear()
        return printable(f"cleared the cache {cache.folder}: {human_size(freed)} freed")
    entries = cache.entries()
    total = sum(size for _, size, _ in entries)
    lines = [
        f"cache {cache.folder}: {len(entries)} entries, {human_size(total)} of "
        f"{human_size(cache.limit)} (LAMIN_MAGIC_CACHE_LIMIT)"
    ]
    for name, size, used in entries[:20]:
        when = dt.datetime.fromtimestamp(used, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"  {name}  {human_size(size)}  used {when}")
    if len(entries) > 20:
        lines.append(f"  ... and {len(entries) - 20} more")
    return "\n".join(printable(line) for line in lines)
