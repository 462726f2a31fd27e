"""What is running: the notebook, script or IPython session (a Transform); this process (a Run).

Where the notebook is, first hit wins: an explicit path; env `LAMIN_MAGIC_NOTEBOOK`; VS Code's
`__vsc_ipynb_file__`; `JPY_SESSION_NAME` / `__session__` naming an `.ipynb`; the running Jupyter
servers' sessions matched by kernel id.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import instance as inst
from .errors import InvalidArgumentError


@dataclass
class Context:
    """The Transform and Run of this process; None until tracked."""

    transform: Any = None
    run: Any = None
    instance_root: Path | None = None
    how: str = ""  # how the notebook was found, or why not
    cell: int | None = None  # the execution count of the cell running now
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


def notebook_title(path: Path) -> str | None:
    """The first markdown line that starts with '# '.

    Read with json: nbformat takes 1.8 s to import where jupyter_server is installed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].strip() or None
    return None


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
        transform = _transform_for(kind, key, name, title)
        _finish(context.run)
        run = reg.Run.create(id=new_id("run"), transform=transform, created_by=instance.user_id)
    context.transform, context.run = transform, run
    context.instance_root, context.how = instance.root, how
    record_environment_later(run.id, instance.registry_path)
    return run


ENVIRONMENT_DELAY = 2.0  # seconds: after a kernel's start, not competing with it for the GIL


def record_environment_later(run_id: str, registry_path: Path) -> None:
    """Record the run's Python version and installed distributions a little later, in a
    thread (reading every distribution's metadata takes ~100 ms of Python, which would slow
    a kernel's start even from a thread); a process that ends sooner records it at exit."""
    wake = threading.Event()

    def later() -> None:
        wake.wait(ENVIRONMENT_DELAY)
        record_environment(run_id, registry_path)

    thread = threading.Thread(target=later, daemon=True, name="lamin-magic-env")
    context.recorders.append((wake, thread))
    thread.start()


def finish_recorders() -> None:
    """At exit: environments not recorded yet are recorded now."""
    for wake, thread in context.recorders:
        wake.set()
        thread.join(timeout=5)
    context.recorders.clear()


def record_environment(run_id: str, registry_path: Path) -> None:
    """In a thread, on a connection of its own to the registry the run is in."""
    import sqlite3

    from . import registry as reg

    try:
        python, packages = describe_environment()
        digest = environment_hash(python, packages)
        con = sqlite3.connect(registry_path, timeout=2, isolation_level=None)
        try:
            con.execute("PRAGMA trusted_schema = 0")
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                "INSERT OR IGNORE INTO environment (hash, python, packages, created_at)"
                " VALUES (?, ?, ?, ?)",
                (digest, python, packages, reg.utcnow().isoformat()),
            )
            con.execute("UPDATE run SET environment = ? WHERE id = ?", (digest, run_id))
            con.execute("COMMIT")
        finally:
            con.close()
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
    """22 url-safe base64 characters of a BLAKE2b digest (hashlib: a thread still running
    at interpreter shutdown cannot import what the BLAKE3 file hashing uses)."""
    import base64
    import hashlib

    digest = hashlib.blake2b(f"python=={python}\n{packages}".encode(), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _transform_for(kind: str, key: str, name: str, title: str | None) -> Any:
    """The Transform of `key`, created if new; inside a transaction."""
    from . import registry as reg
    from .ids import new_id

    transform = reg.Transform.get_or_none(reg.Transform.key == key, reg.Transform.type == kind)
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
    return transform


def retarget_run(path: Path, how: str) -> Any:
    """Point the current Run at the notebook found after it started (VS Code)."""
    from . import registry as reg

    path = path.absolute()
    with reg.db.atomic():
        transform = _transform_for("notebook", str(path), path.stem, None)
        # one column: saving the whole record would write over what a thread recorded since
        reg.Run.update(transform=transform).where(reg.Run.id == context.run.id).execute()
        context.run.transform = transform
    context.transform, context.how = transform, how
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
        "INSERT OR REPLACE INTO cell (run_id, execution_count, source, started_at)"
        " VALUES (?, ?, ?, ?)",
        (context.run.id, execution_count, source, reg.utcnow().isoformat()),
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


def ensure_run() -> Any:
    """The current Run, tracking first if nothing is tracked in the current instance."""
    instance = inst.current()
    if context.run is None or context.instance_root != instance.root:
        track()
    return context.run


def _finish(run: Any) -> None:
    from . import registry as reg

    if run is not None and context.instance_root == inst.current().root:
        reg.Run.update(finished_at=reg.utcnow()).where(
            reg.Run.id == run.id, reg.Run.finished_at.is_null()
        ).execute()


@atexit.register
def _finish_at_exit() -> None:
    finish_recorders()
    try:
        if context.run is not None:
            _finish(context.run)
    except Exception:  # the process is ending; nothing to tell
        pass
