"""`%load_ext lamin_magic`: register `%lamin`, track this notebook, never break the kernel.

At kernel start VS Code has not yet set `__vsc_ipynb_file__`, so a `pre_run_cell` hook looks
for the notebook again before the first cell runs, and removes itself. The title is read in a
thread so that start-up does not wait on a large notebook; the first cell's end records it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

from . import tracking
from .errors import printable

FIX = "%lamin track path/to/notebook.ipynb, or set LAMIN_MAGIC_NOTEBOOK before the kernel starts"


class TitleReader:
    """Reads a notebook's title in a thread, and for a Transform new to the instance the hash
    of its content (outputs stripped: was it renamed while no kernel ran?); `result()` waits."""

    def __init__(self, path: Path, digest: bool = False) -> None:
        self.path, self.want_digest = path, digest
        self.title: str | None = None
        self.digest: str | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        nb = tracking.read_notebook(self.path)  # never raises: None when unreadable
        self.title = tracking.title_of(nb)
        if nb is not None and self.want_digest:
            with contextlib.suppress(Exception):
                self.digest = tracking.content_hash(tracking.stripped_notebook(nb))

    def result(self, timeout: float = 10.0) -> str | None:
        self._thread.join(timeout)
        return self.title


class Extension:
    """The state of one loaded extension: its magics and event hooks."""

    def __init__(self, ip: Any) -> None:
        self.ip = ip
        self.magics: Any = None
        self.title_reader: TitleReader | None = None
        self.explicit = False  # the user tracked explicitly: start-up detection stands aside
        # loaded by the start-up file: Jupyter shows nothing printed then, so the first cell
        # says what is tracked
        self.announce = bool(getattr(ip, "_lamin_magic_autoload", False))

    def load(self) -> None:
        from .magics import LaminMagics

        self.magics = LaminMagics(shell=self.ip, extension=self)
        self.ip.register_magics(self.magics)
        self.ip.events.register("pre_run_cell", self.find_notebook_before_first_cell)
        self.ip.events.register("pre_run_cell", self.start_cell)
        self.ip.events.register("post_run_cell", self.post_run_cell)
        try:
            self.track_at_start()
        except Exception as e:  # a broken instance must not break the kernel
            warn(f"lamin_magic could not track this session: {e}")

    def track_at_start(self) -> None:
        run = tracking.track(read_title=False)
        transform = tracking.context.transform
        if transform.type == "notebook" and transform.key:
            self.title_reader = TitleReader(Path(transform.key), tracking.context.new_transform)
        if not self.announce:  # autoloaded: the first cell's own line says it
            print(summary(run))

    def unload(self) -> None:
        hooks = (
            ("pre_run_cell", self.find_notebook_before_first_cell),
            ("pre_run_cell", self.start_cell),
            ("post_run_cell", self.post_run_cell),
        )
        for event, hook in hooks:
            with contextlib.suppress(ValueError):
                self.ip.events.unregister(event, hook)
        manager = self.ip.magics_manager
        for kind in ("line", "cell"):
            manager.magics[kind].pop("lamin", None)
        manager.registry.pop("LaminMagics", None)

    def find_notebook_before_first_cell(self, info: Any) -> None:
        """Look for the notebook once more before the first cell, then remove this hook; say
        in the first cell's output what is tracked when start-up output was not shown."""
        try:
            self.ip.events.unregister("pre_run_cell", self.find_notebook_before_first_cell)
            self.find_notebook_again()
            if self.announce and tracking.context.run is not None:
                print(first_cell_line(tracking.context.run))
        except Exception as e:
            warn(f"lamin_magic could not look for the notebook: {e}")

    def find_notebook_again(self) -> None:
        """VS Code sets __vsc_ipynb_file__ after start-up: re-point the run at the notebook."""
        context = tracking.context
        if self.explicit or context.run is None:
            return
        if context.transform is not None and context.transform.type == "notebook":
            return
        path, how = tracking.detect_notebook_path(self.ip)
        if path is None:
            if tracking.in_kernel(self.ip):
                warn(f"lamin_magic could not tell which notebook this kernel runs; {FIX}")
            return
        tracking.retarget_run(path, how)
        self.title_reader = TitleReader(path, tracking.context.new_transform)

    def start_cell(self, info: Any) -> None:
        """Record the code of each cell the user runs, before it runs (silent and inner
        executions, which keep no history, are not the user's cells)."""
        if not getattr(info, "store_history", False):
            return
        try:
            # IPython counts the cell before it triggers pre_run_cell: its In [N] is one less
            count = self.ip.execution_count - 1
            tracking.start_cell(count, getattr(info, "raw_cell", "") or "")
        except Exception as e:
            warn(f"lamin_magic could not record this cell: {e}")

    def post_run_cell(self, result: Any) -> None:
        """After each cell: its end; after the first: the title read in the background, and
        a new Transform joined to the one of the notebook it was renamed from."""
        count = getattr(getattr(result, "info", None), "store_history", False) and getattr(
            result, "execution_count", None
        )
        try:
            if count:
                tracking.finish_cell(count)
        except Exception as e:
            warn(f"lamin_magic could not record the end of this cell: {e}")
        try:
            reader, self.title_reader = self.title_reader, None
            if reader is not None:
                title = reader.result()
                if title:
                    tracking.set_title(title)
                tracking.adopt_renamed(reader.digest)
        except Exception as e:
            warn(f"lamin_magic could not record the notebook's title: {e}")


def summary(run: Any) -> str:
    from . import instance

    current = instance.current()
    t = tracking.context.transform
    if t.type == "ipython":
        what = "an IPython session (no notebook found)"
    else:
        what = f"{t.type} {t.name!r}"
    user = instance.current_user_handle()
    where = printable(str(current.root))
    if current.team:
        where = f"team instance {where}, registry {current.registry_shown}"
    else:
        where = f"instance {where}"
    return (
        f"lamin_magic: {where} ({current.how}), "
        f"user {printable(user)}\nlamin_magic: tracking {printable(what)}, run {run.id}"
    )


def first_cell_line(run: Any) -> str:
    """One short line: what is tracked, its run, and where the data goes."""
    from . import instance

    t = tracking.context.transform
    what = "this IPython session" if t.type == "ipython" else f"{t.type} {t.name!r}"
    root = instance.current().root
    return printable(f"lamin_magic: tracking {what} (run {run.id}) in {root}")


def warn(message: str) -> None:
    """One line on stderr (red in Jupyter): no source line, no traceback, kernel unharmed."""
    print(f"Warning: {message}", file=sys.stderr, flush=True)


_loaded: dict[int, Extension] = {}


def load(ip: Any) -> None:
    try:
        if id(ip) in _loaded:
            return
        ext = Extension(ip)
        _loaded[id(ip)] = ext
        ext.load()
    except Exception as e:  # loading must never break a kernel
        warn(f"lamin_magic did not load: {e}")


def load_before_first_cell(ip: Any, info: Any) -> None:
    """The start-up file's hook, run before a kernel's first cell: load the extension, then do
    for this cell what its own hooks do (they were registered during this very event, so
    IPython does not call them for it)."""
    ip.extension_manager.load_extension("lamin_magic")
    ext = _loaded.get(id(ip))
    if ext is not None:
        ext.find_notebook_before_first_cell(info)
        ext.start_cell(info)


def unload(ip: Any) -> None:
    ext = _loaded.pop(id(ip), None)
    if ext is not None:
        ext.unload()
