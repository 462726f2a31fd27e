"""What is running: the notebook, script or IPython session (a Transform); this process (a Run).

Where the notebook is, first hit wins: an explicit path; env `LAMIN_MAGIC_NOTEBOOK`; VS Code's
`__vsc_ipynb_file__`; `JPY_SESSION_NAME` / `__session__` naming an `.ipynb`; the running Jupyter
servers' sessions matched by kernel id.
"""

from __future__ import annotations

import atexit
import json
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import instance as inst
from .errors import InvalidArgumentError, printable, redact


@dataclass
class Context:
    """The Transform and Run of this process; None until tracked."""

    transform: Any = None
    run: Any = None
    instance_root: Path | str | None = None
    how: str = ""  # how the notebook was found, or why not
    cell: int | None = None  # the execution count of the cell running now
    registry: str | None = None  # the registry the run is in: a path or a database URL
    new_transform: bool = False  # this process created the Transform (a renamed notebook?)
    rename_checked: float = 0.0  # when the server was last asked for the notebook's path
    inputs: set[tuple[str, str]] = field(default_factory=set)  # (run, file) recorded here
    # environments still to record, each (its wake-up, its thread), finished at exit
    recorders: list[tuple[threading.Event, threading.Thread]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Context(transform={self.transform!r}, run={self.run!r})"


context = Context()


def ipython_shell() -> Any:
    """The running IPython shell, or None (not imported, so a script stays light)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def in_kernel(shell: Any) -> bool:
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _ipynb(value: Any) -> Path | None:
    if isinstance(value, (str, os.PathLike)) and str(value).endswith(".ipynb"):
        return Path(value)
    return None


def detect_notebook_path(shell: Any = None) -> tuple[Path | None, str]:
    """(notebook path, how it was found) or (None, why not)."""
    env = os.environ.get("LAMIN_MAGIC_NOTEBOOK")
    if env:
        return Path(env).expanduser(), "LAMIN_MAGIC_NOTEBOOK"
    ns = getattr(shell, "user_ns", {}) if shell is not None else {}
    found = _ipynb(ns.get("__vsc_ipynb_file__"))
    if found:
        return found, "VS Code"
    found = _ipynb(os.environ.get("JPY_SESSION_NAME"))
    if found:
        return found, "JPY_SESSION_NAME"
    found = _ipynb(ns.get("__session__"))
    if found:
        return found, "__session__"
    if in_kernel(shell):
        from .servers import notebook_from_servers

        found = notebook_from_servers()
        if found:
            return found, "the Jupyter server's sessions"
    return None, "no notebook found"


MAX_SOURCE_BYTES = 64 * 2**20  # a larger notebook (outputs full of images) is not read whole


def read_source_file(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_SOURCE_BYTES (a FIFO would block forever);
    OSError or ValueError saying why not."""
    # O_NONBLOCK: opening a FIFO for reading would wait for a writer
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if info.st_size > MAX_SOURCE_BYTES:
            raise ValueError(f"{path} is larger than {MAX_SOURCE_BYTES >> 20} MiB")
        return f.read(MAX_SOURCE_BYTES + 1)


def read_notebook(path: Path) -> dict[str, Any] | None:
    """The notebook's JSON, or None when unreadable. Read with json: nbformat takes 1.8 s to
    import where jupyter_server is installed."""
    try:
        nb = json.loads(read_source_file(path))
    except (OSError, ValueError):
        return None
    return nb if isinstance(nb, dict) else None


def title_of(nb: dict[str, Any] | None) -> str | None:
    """The first markdown line that starts with '# '."""
    cells = nb.get("cells", []) if nb is not None else []
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].strip() or None
    return None


def notebook_title(path: Path) -> str | None:
    return title_of(read_notebook(path))


# what changes each time a notebook runs, not when it is edited (as nbstripout removes)
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")


def stripped_notebook(nb: dict[str, Any]) -> str:
    """The notebook without outputs, execution counts and times, or widget state, as nbformat
    writes it (indent 1, sorted keys): what was written, not what running it showed."""
    if not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook: it has no list of cells")
    cells = []
    for cell in nb["cells"]:
        if isinstance(cell, dict):
            cell = dict(cell)
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
            if isinstance(cell.get("metadata"), dict):
                meta = cell["metadata"].items()
                cell["metadata"] = {k: v for k, v in meta if k not in VOLATILE_CELL_METADATA}
        cells.append(cell)
    stripped = {**nb, "cells": cells}
    if isinstance(nb.get("metadata"), dict):
        stripped["metadata"] = {k: v for k, v in nb["metadata"].items() if k != "widgets"}
    return json.dumps(stripped, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def source_snapshot(path: Path, kind: str) -> tuple[str, str]:
    """(hash, content) of a notebook (outputs stripped) or script as it is on disk now."""
    raw = read_source_file(path)
    if kind == "notebook":
        nb = json.loads(raw)
        if not isinstance(nb, dict):
            raise ValueError("not a notebook")
        content = stripped_notebook(nb)
    else:
        content = raw.decode("utf-8", errors="replace")
    content = redact(content)  # a password typed in a cell is not kept in the registry
    return content_hash(content), content


def _script_path() -> Path | None:
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    return Path(file) if file and os.path.isfile(file) else None


def _what_runs(path: str | os.PathLike[str] | None, shell: Any) -> tuple[str, Path | None, str]:
    """(type, path, how) of what is running."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InvalidArgumentError(f"no file at {p}; give the path of the notebook or script")
        return ("notebook" if p.suffix == ".ipynb" else "script"), p, "given explicitly"
    if shell is not None:
        nb, how = detect_notebook_path(shell)
        if nb is not None:
            return "notebook", nb, how
        return "ipython", None, how
    # a script first: one started from a notebook cell inherits that kernel's environment
    script = _script_path()
    if script is not None:
        return "script", script, "the running script"
    nb, how = detect_notebook_path(None)
    if nb is not None:
        return "notebook", nb, how
    return "ipython", None, "an interactive session"


def track(
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    *,
    new_run: bool = False,
    read_title: bool = True,
) -> Any:
    """Record what is running as a Transform and this process as a Run; returns the Run.

    Tracking the same notebook again in the same process keeps its Run, unless `new_run`.
    """
    from . import registry as reg
    from .ids import new_id

    instance = inst.current()
    kind, found, how = _what_runs(path, ipython_shell())
    if found is not None:
        found = found.absolute()
        key = str(found)
        name = found.stem
        if title is None and kind == "notebook" and read_title:
            title = notebook_title(found)
    else:
        key, name = "ipython", "ipython"
    tracked = context.transform
    if (
        not new_run
        and tracked is not None
        and context.instance_root == instance.root
        and (tracked.key, tracked.type) == (key, kind)
    ):
        if title is not None:
            set_title(title)
        return context.run
    with reg.db.atomic():
        transform, created = _transform_for(kind, key, name, title)
        _finish(context.run)
        run = reg.Run.create(id=new_id("run"), transform=transform, created_by=instance.user_id)
    context.transform, context.run, context.new_transform = transform, run, created
    context.instance_root, context.how = instance.root, how
    context.registry, context.rename_checked = instance.registry, time.monotonic()
    record_environment_later(run.id, instance.registry)
    return run


ENVIRONMENT_DELAY = 2.0  # seconds: after a kernel's start, not competing with it for the GIL


def record_environment_later(run_id: str, registry: str) -> None:
    """Record the run's Python version and installed distributions a little later, in a
    thread (reading every distribution's metadata takes ~100 ms of Python, which would slow
    a kernel's start even from a thread); a process that ends sooner records it at exit."""
    wake = threading.Event()

    def later() -> None:
        wake.wait(ENVIRONMENT_DELAY)
        record_environment(run_id, registry)

    thread = threading.Thread(target=later, daemon=True, name="lamin-magic-env")
    context.recorders.append((wake, thread))
    thread.start()


def finish_recorders() -> None:
    """At exit: environments not recorded yet are recorded now."""
    for wake, thread in context.recorders:
        wake.set()
        thread.join(timeout=5)
    context.recorders.clear()


def record_environment(run_id: str, registry: str) -> None:
    """In a thread, on a connection of its own to the registry the run is in."""
    from . import registry as reg

    try:
        python, packages = describe_environment()
        digest = environment_hash(python, packages)
        from .databases import write_alone

        write_alone(
            registry,
            [
                (
                    "INSERT INTO environment (hash, python, packages, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (digest, python, packages, reg.utcnow().isoformat()),
                ),
                ("UPDATE run SET environment = ? WHERE id = ?", (digest, run_id)),
            ],
        )
    except Exception:  # a thread has no one to tell; the run simply has no environment
        pass


def describe_environment() -> tuple[str, str]:
    """(python version, sorted name==version lines of the installed distributions).

    Read from the names of the `*.dist-info` / `*.egg-info` entries on `sys.path`
    (`pandas-2.3.3.dist-info`), not from each one's METADATA: ~5 ms instead of ~100 ms of
    Python that would hold the GIL while the user's cells run.
    """
    found = set()
    for folder in sys.path:
        try:
            entries = os.listdir(folder or ".")
        except OSError:
            continue
        for entry in entries:
            stem, dot, kind = entry.rpartition(".")
            if dot and kind in ("dist-info", "egg-info") and "-" in stem:
                name, _, version = stem.partition("-")
                version = version.split("-")[0].removesuffix(".py")  # egg-info: -py3.11
                found.add(f"{name.lower().replace('_', '-')}=={version}")
    return sys.version.split()[0], "\n".join(sorted(found))


def environment_hash(python: str, packages: str) -> str:
    return content_hash(f"python=={python}\n{packages}")


def content_hash(text: str) -> str:
    """22 url-safe base64 characters of a BLAKE2b digest (hashlib: a thread still running
    at interpreter shutdown cannot import what the BLAKE3 file hashing uses)."""
    import base64
    import hashlib

    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _transform_for(kind: str, key: str, name: str, title: str | None) -> tuple[Any, bool]:
    """The Transform of `key` and whether it was created now; inside a transaction."""
    from . import registry as reg
    from .ids import new_id

    transform = reg.Transform.get_or_none(reg.Transform.key == key, reg.Transform.type == kind)
    created = transform is None
    if transform is None:
        transform = reg.Transform.create(
            id=new_id("transform"),
            name=name,
            title=title,
            type=kind,
            key=key,
            created_by=inst.current().user_id,
        )
    elif title is not None and transform.title != title:
        transform.title = title
        transform.save()
    return transform, created


def retarget_run(path: Path, how: str) -> Any:
    """Point the current Run at the notebook found after it started (VS Code)."""
    from . import registry as reg

    path = path.absolute()
    with reg.db.atomic():
        transform, created = _transform_for("notebook", str(path), path.stem, None)
        # one column: saving the whole record would write over what a thread recorded since
        reg.Run.update(transform=transform).where(reg.Run.id == context.run.id).execute()
        context.run.transform = transform
    context.transform, context.how, context.new_transform = transform, how, created
    return context.run


def set_title(title: str) -> None:
    """Record the current notebook's title (read after start-up)."""
    transform = context.transform
    if transform is not None and transform.title != title:
        transform.title = title
        transform.save()


def start_cell(execution_count: int, source: str) -> None:
    """Record a cell before it runs, so that it is kept even if it kills the kernel."""
    from . import registry as reg

    context.cell = execution_count
    if context.run is None:
        return
    reg.write_quickly(
        "INSERT INTO cell (run_id, execution_count, source, started_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (run_id, execution_count) DO UPDATE SET source = excluded.source,"
        " started_at = excluded.started_at, finished_at = NULL",
        (context.run.id, execution_count, redact(source), reg.utcnow().isoformat()),
    )


def finish_cell(execution_count: int) -> None:
    from . import registry as reg

    context.cell = None
    if context.run is None:
        return
    reg.write_quickly(
        "UPDATE cell SET finished_at = ? WHERE run_id = ? AND execution_count = ?",
        (reg.utcnow().isoformat(), context.run.id, execution_count),
    )
    follow_rename()


def ensure_run() -> Any:
    """The current Run, tracking first if nothing is tracked in the current instance."""
    instance = inst.current()
    if context.run is None or context.instance_root != instance.root:
        track()
    else:
        follow_rename()
    return context.run


# --- a notebook renamed -------------------------------------------------------------------

RENAME_CHECK_SECONDS = 5.0  # the server is asked at most this often, when something is recorded
RENAME_TIMEOUT = 0.25  # seconds for all servers together
# how the notebook was found when the Jupyter server may know it by another path since
FOLLOWED = ("JPY_SESSION_NAME", "__session__", "the Jupyter server's sessions")


def follow_rename(force: bool = False) -> None:
    """A notebook renamed while its kernel runs: Jupyter's session changes its path, but
    JPY_SESSION_NAME keeps the old one. Ask the server for this kernel's session (at most every
    RENAME_CHECK_SECONDS) and let the Transform follow the file. Never raises."""
    t = context.transform
    if t is None or t.type != "notebook" or context.how not in FOLLOWED:
        return
    now = time.monotonic()
    if not force and now - context.rename_checked < RENAME_CHECK_SECONDS:
        return
    context.rename_checked = now
    try:
        if not in_kernel(ipython_shell()) or inst.current().root != context.instance_root:
            return
        from .servers import notebook_from_servers

        found = notebook_from_servers(timeout=RENAME_TIMEOUT)
        if found is not None and str(found.absolute()) != t.key:
            move_transform(t, found.absolute())
    except Exception as e:  # the data is recorded all the same, under the former path
        print(f"Warning: lamin_magic could not follow the notebook's rename: {e}", file=sys.stderr)


def move_transform(transform: Any, path: Path) -> None:
    """The Transform follows its notebook to `path`; its former path goes to transform_path.
    A notebook Transform that had `path` (its file was replaced) keeps it only in its history."""
    from . import registry as reg

    key, title = str(path), notebook_title(path)
    now = reg.utcnow()
    with reg.db.atomic():
        others = reg.Transform.select().where(
            reg.Transform.key == key,
            reg.Transform.type == "notebook",
            reg.Transform.id != transform.id,
        )
        for other in others:
            reg.TransformPath.insert(transform=other.id, path=key, until=now).execute()
            reg.Transform.update(key=None).where(reg.Transform.id == other.id).execute()
        if transform.key:
            reg.TransformPath.insert(
                transform=transform.id, path=transform.key, until=now
            ).execute()
        changes = {"key": key, "name": path.stem, "title": title or transform.title}
        reg.Transform.update(**changes).where(reg.Transform.id == transform.id).execute()
    for field_name, value in changes.items():
        setattr(transform, field_name, value)


def adopt_renamed(digest: str | None) -> bool:
    """A notebook renamed while no kernel ran got a new Transform at start: when its content
    (outputs stripped) is the last snapshot of exactly one notebook Transform whose file is
    gone, and no other run uses the new Transform, the run moves to that Transform, which
    follows the file; the new one is removed. True when it did."""
    from . import registry as reg

    t, run = context.transform, context.run
    if not digest or t is None or run is None or t.type != "notebook" or not context.new_transform:
        return False
    context.new_transform = False  # asked once per Transform created

    def last_snapshot(transform_id: str) -> str | None:
        row = (
            reg.Run.select(reg.Run.snapshot)
            .where(reg.Run.transform == transform_id, reg.Run.snapshot.is_null(False))
            .order_by(reg.Run.created_at.desc())
            .tuples()
            .first()
        )
        return row[0] if row else None

    with_it = reg.Run.select(reg.Run.transform).where(reg.Run.snapshot == digest).distinct()
    candidates = [
        c
        for c in reg.Transform.select().where(
            reg.Transform.id.in_(with_it),
            reg.Transform.type == "notebook",
            reg.Transform.id != t.id,
        )
        # a path from the registry is only tested for existence, never read
        if c.key and not os.path.lexists(c.key) and last_snapshot(c.id) == digest
    ]
    if len(candidates) != 1:
        return False
    old = candidates[0]
    with reg.db.atomic():
        if reg.Run.select().where(reg.Run.transform == t.id, reg.Run.id != run.id).exists():
            return False  # another kernel runs the new notebook too: leave both as they are
        reg.Run.update(transform=old.id).where(reg.Run.id == run.id).execute()
        reg.Transform.delete().where(reg.Transform.id == t.id).execute()
        move_transform(old, Path(t.key))
    context.transform = old
    run.transform = old
    return True


# --- at exit --------------------------------------------------------------------------------

EXIT_LOCK_TIMEOUT = 1.0  # seconds a shutdown waits for another writer, at most


def snapshot_statements() -> list[tuple[str, Any]]:
    """What records the tracked notebook (outputs stripped) or script as it is on disk now,
    once per distinct content, and points the run at it. Raises when it cannot be read."""
    from . import registry as reg

    t, run = context.transform, context.run
    if t is None or run is None or t.type not in ("notebook", "script") or not t.key:
        return []
    if t.type == "notebook" and not os.path.exists(t.key):
        follow_rename(force=True)  # renamed since the server was last asked
    digest, content = source_snapshot(Path(t.key), t.type)
    return [
        (
            "INSERT INTO source (hash, kind, content, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (digest, t.type, content, reg.utcnow().isoformat()),
        ),
        ("UPDATE run SET snapshot = ? WHERE id = ?", (digest, run.id)),
    ]


def finish_at_exit() -> None:
    """The run's end and its snapshot, in one transaction that waits at most
    EXIT_LOCK_TIMEOUT for another writer: a shutdown stays short. One line on stderr when
    something was not recorded (a script's user sees it; a kernel's goes to the server log)."""
    from . import registry as reg

    run = context.run
    if run is None or context.registry is None:
        return
    statements: list[tuple[str, Any]] = []
    problem = ""
    try:
        statements = snapshot_statements()
    except Exception as e:
        problem = f"no snapshot of the {context.transform.type} was recorded: {e}"
    finish = "UPDATE run SET finished_at = ? WHERE id = ? AND finished_at IS NULL"
    try:
        from .databases import write_alone

        write_alone(
            context.registry,
            [(finish, (reg.utcnow().isoformat(), run.id)), *statements],
            timeout=EXIT_LOCK_TIMEOUT,
        )
    except Exception as e:
        problem = f"the end of run {run.id} was not recorded: {e}"
    if problem:  # a path or an error may hold anything
        print(f"lamin_magic: {printable(problem)}", file=sys.stderr)


def _finish(run: Any) -> None:
    from . import registry as reg

    if run is not None and context.instance_root == inst.current().root:
        reg.Run.update(finished_at=reg.utcnow()).where(
            reg.Run.id == run.id, reg.Run.finished_at.is_null()
        ).execute()


@atexit.register
def _finish_at_exit() -> None:
    finish_recorders()
    finish_at_exit()
