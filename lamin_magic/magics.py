"""The `%lamin` magics: parse, call the API, display. Nothing here that the CLI needs twice."""

from __future__ import annotations

import builtins
import dis
import functools
import itertools
import keyword
import re
import shlex
import sys
import weakref
from collections.abc import Iterator
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Unicode, observe

from . import files, instance, tracking, views
from .errors import LaminMagicError, frontend, printable

SUBCOMMANDS = (
    "save",
    "load",
    "ls",
    "show",
    "source",
    "lineage",
    "rm",
    "restore",
    "gc",
    "track",
    "info",
    "init",
    "check",
    "open",
)
OPTIONS = {
    "save": {"name", "description", "format"},
    "load": {"verify"},
    "open": {"verify", "engine"},
    "ls": {"page", *views.LS_FILTERS},
    "source": set(),
    "lineage": {"depth"},
    "rm": set(),
    "restore": set(),
    "gc": set(),
    "show": set(),
    "track": {"title"},
    "info": set(),
    "init": {"db"},
    "check": set(),
}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# names IPython keeps in every namespace: its output cache, input history and helpers
IPYTHON_NAMES = re.compile(
    r"_{1,3}|_i{1,3}|_i?[0-9]+|_(ih|oh|dh|exit_code)|In|Out|get_ipython|exit|quit"
)
YES, NO = ("yes", "true", "1", "on"), ("no", "false", "0", "off")


def parse(line: str, subcommand: str) -> tuple[list[str], dict[str, str]]:
    """Words and key=value options of one subcommand, or a UsageError saying what is off."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise UsageError(f"%lamin {subcommand}: {e} (close the quote)") from e
    positional: list[str] = []
    options: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and IDENTIFIER.match(key):
            if key not in OPTIONS[subcommand]:
                known = ", ".join(f"{k}=" for k in sorted(OPTIONS[subcommand])) or "none"
                raise UsageError(f"%lamin {subcommand} has no option {key}=; its options: {known}")
            if key in options:
                raise UsageError(f"%lamin {subcommand}: {key}= is given twice")
            options[key] = value
        elif word.startswith("-"):
            raise UsageError(
                f"%lamin {subcommand}: unknown option {word!r}; options are written key=value"
            )
        else:
            positional.append(word)
    return positional, options


@magics_class
class LaminMagics(Magics):
    root = Unicode(
        None,
        allow_none=True,
        help="The instance folder for this kernel (below lm.init and LAMIN_MAGIC_ROOT).",
    ).tag(config=True)

    def __init__(self, shell: Any = None, extension: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.extension = extension
        if self.root:
            instance.configure_root(self.root)

    @property
    def ip(self) -> Any:
        """The shell these magics are registered in."""
        if self.shell is None:
            raise UsageError("the %lamin magics are not registered in a shell")
        return self.shell

    @observe("root")
    def _root_changed(self, change: dict[str, Any]) -> None:
        instance.configure_root(change["new"])

    @line_cell_magic
    def lamin(self, line: str, cell: str | None = None) -> Any:
        """Track this notebook and store in-memory objects in a lamin_magic instance.

        %lamin save VAR [VAR ...] [name=NAME] [description=TEXT] [format=parquet|h5ad|zarr]
            Store variables: a DataFrame as .parquet, an AnnData as .h5ad (or format=zarr); a
            polars DataFrame or pyarrow Table as .parquet (each loads back as itself), a
            MuData as .h5mu, a numpy array as .npy (never pickled). polars and mudata are
            optional: pip install 'lamin_magic[polars]' / 'lamin_magic[mudata]'.
            name= defaults to the variable's name (only with one VAR). Saving the same content
            under the same name again changes nothing (and restores its bytes if they were
            lost); new content becomes the next version. Several variables are saved all or
            nothing.

        %lamin load NAME[@VERSION] [as VAR] [verify=yes|no]
        x = %lamin load NAME[@VERSION]
            Load the latest version (or VERSION) into the variable NAME (or VAR), or return it
            when the line assigns it. The bytes are re-hashed first (verify=no skips it); a
            file changed on disk is refused. A name the kernel needs (get_ipython, len, In,
            _, keywords, dunder names) is never bound: load it as VAR. Binding over your own
            variable says what it replaced. The load is recorded as an input of this run
            (a run's load of a file it made itself is not).

        %lamin open NAME[@VERSION] [as VAR] [engine=pyarrow|polars|duckdb] [verify=yes|no]
        x = %lamin open NAME[@VERSION]
            Open it lazily, for objects too big for memory: nothing is read until you ask.
            Parquet opens as a pyarrow Dataset (engine=polars: a polars LazyFrame,
            engine=duckdb: a DuckDB relation), h5ad as a read-only backed AnnData, zarr
            through anndata's lazy reader (needs xarray and dask). The stored bytes are
            never written: writing the AnnData back fails; save a new object instead.
            Binds, verifies and is recorded as an input of this run as load does.

        %lamin ls [PATTERN] [page=N] [notebook=NAME] [run=ID] [type=parquet] [larger=SIZE]
                  [smaller=SIZE] [since=DATE] [until=DATE]
            The stored files, latest version of each name (among those that match), 50 a
            page; PATTERN is a glob (iris*). SIZE is 500, 10MB, 1.5GB; DATE is 2026-11-01 or
            2026-11-01T14:30 (UTC).

        %lamin ls trash [PATTERN] [page=N]
            What is in the trash, every version, most recently trashed first.

        %lamin source [RUN]
            The code a run (this one by default) executed, cell by cell, in the order it
            ran, with execution counts and times; recorded as each cell starts, no save of
            the notebook needed. `%lamin show NAME` shows the cell that saved a file. When
            the kernel shuts down, the notebook as saved on disk (outputs stripped) is stored
            too: `lamin-magic source RUN --notebook` prints it. A notebook renamed while the
            kernel runs is followed (the server is asked at most every 5 s).

        %lamin lineage NAME[@VERSION] [depth=N]
            The graph around a file: the run and notebook that made it and the files that run
            read (upstream), the runs that read it and what they made (downstream), N steps
            each way (3). A picture in JupyterLab and Notebook 7 (Mermaid), text elsewhere.

        %lamin rm NAME[@VERSION]
            Move one version, or every version of NAME, to the trash: hidden from ls, load
            and select; the bytes stay until gc.

        %lamin restore NAME[@VERSION]
            Bring it back from the trash.

        %lamin gc [dry-run]
            Remove the trash for good: its records, and the bytes no other record uses.
            A trashed file a run read, and the latest version of a name, stay as tombstones
            (lineage stays sound; a number is never given twice).

        %lamin show NAME[@VERSION]
            One file: its record, the run and notebook that made it, the cell that saved it,
            its versions, the runs that read it.

        %lamin track [PATH] [title=TEXT]
            Track this notebook (or PATH) and start a new run.

        %lamin info
            The instance, user, notebook and run in use.

        %lamin init PATH
            Use (or create) the instance at PATH, and track this notebook there.
        %lamin init [PATH] db=postgresql://USER@HOST:PORT/DB
            A team instance: its registry in that PostgreSQL database. With PATH, create it
            (objects go to PATH, a folder every member reaches at the same path); without,
            join it. The password comes from PGPASSWORD or ~/.pgpass, never the notebook.

        %lamin check [repair]
            Every record has its bytes (size and hash), every stored object has a record;
            leftover temporaries are listed. `repair` removes temporaries and stored objects
            that no record points at (an interrupted save); it never touches a record, a file
            lamin_magic did not name, or anything behind a symbolic link.

        %%lamin save [VAR ...] [description=TEXT] [format=...]
            Run the cell, then save the variables named, or every DataFrame (pandas, polars),
            pyarrow Table, AnnData and MuData the cell bound; numpy arrays only when named.

        The instance is, first hit wins: %lamin init; LAMIN_MAGIC_DB; LAMIN_MAGIC_ROOT;
        %config LaminMagics.root = PATH; the nearest folder with a .lndb file here or above;
        the per-user default. LAMIN_MAGIC_AUTOLOAD=0 stops the extension loading in every kernel.
        Pickle (for objects no format stores) only in instances you trust: run
        `lamin-magic init PATH --allow-pickle` in a shell; the registry cannot grant it.
        """
        try:
            return self._run(line, cell)
        except UsageError as e:  # every message one safe line, whatever the user typed
            text = str(e)
            if text.isprintable():
                raise
            raise UsageError(printable(text)) from e

    def _run(self, line: str, cell: str | None) -> Any:
        sub, _, rest = line.strip().partition(" ")
        if not sub:
            raise UsageError("%lamin needs a subcommand: " + ", ".join(SUBCOMMANDS) + " (%lamin?)")
        if sub not in SUBCOMMANDS:
            raise UsageError(
                f"%lamin has no subcommand {sub!r}; use one of {', '.join(SUBCOMMANDS)} (%lamin?)"
            )
        if cell is not None and sub != "save":
            raise UsageError(f"%%lamin works with save only, not {sub}; write %lamin {sub}")
        words, options = parse(rest, sub)
        try:
            with frontend("magic"):
                if cell is not None:
                    return self.save_cell(words, options, cell)
                return getattr(self, f"do_{sub}")(words, options)
        except LaminMagicError as e:
            raise UsageError(str(e)) from e
        except OSError as e:
            raise UsageError(f"%lamin {sub}: {e.strerror or e} ({e.filename or 'no file'})") from e

    # --- subcommands -------------------------------------------------------------------

    def _value(self, var: str) -> Any:
        if not IDENTIFIER.match(var):
            raise UsageError(f"{var!r} is not a variable name; write %lamin save df name=iris")
        ns = self.ip.user_ns
        if var not in ns:
            raise UsageError(f"{var!r} is not defined; run the cell that creates it first")
        return ns[var]

    def do_save(self, words: list[str], options: dict[str, str]) -> None:
        from .registry import File

        if not words:
            raise UsageError("%lamin save needs a variable: %lamin save df name=iris")
        if len(words) > 1 and "name" in options:
            raise UsageError("name= works with one variable; save the others one by one")
        twice = next((w for i, w in enumerate(words) if w in words[:i]), None)
        if twice is not None:
            raise UsageError(f"{twice!r} is named twice; name each variable once")
        # every variable is checked and written before any record is: all or nothing
        prepared = []
        for var in words:
            try:
                prepared.append(
                    File(
                        self._value(var),
                        name=options.get("name", var),
                        description=options.get("description"),
                        format=options.get("format"),
                    )
                )
            except LaminMagicError as e:  # say which one, when there are several
                raise type(e)(f"{var}: {e}" if len(words) > 1 else str(e)) from e
        for var, saved in zip(words, files.add_many(prepared, labels=words), strict=True):
            stored = saved.file
            size = views.human_size(stored.size)
            label = f"{stored.name}@{stored.version}"
            note = f"; {saved.note}" if saved.note else ""
            if saved.status == "unchanged":
                print(f"{label} is unchanged: {var} has the same content ({size}{note})")
            else:
                print(f"saved {var} as {label} ({stored.suffix}, {size}, id {stored.id}{note})")

    def save_cell(self, words: list[str], options: dict[str, str], cell: str) -> None:
        if "name" in options:
            raise UsageError("%%lamin save takes no name=; it saves each variable by its name")
        ns = self.ip.user_ns
        before = Holdings(ns)
        result = self.ip.run_cell(cell)
        if not result.success:
            print("lamin_magic: the cell failed; nothing was saved")
            return
        if words:
            self.do_save(words, options)
            return
        from .storage.formats import has_own_format

        # what the cell bound that a format of its own stores: never pickle every new int
        bound = [
            var
            for var in before.rebound(ns)
            if not var.startswith("_") and has_own_format(ns[var], implicit=True)
        ]
        if not bound:
            print(
                "lamin_magic: the cell bound no DataFrame, Table, AnnData or MuData; nothing to "
                "save (name arrays: %%lamin save arr)"
            )
            return
        self.do_save(bound, options)

    def do_load(self, words: list[str], options: dict[str, str]) -> Any:
        return self._bring("load", words, options)

    def do_open(self, words: list[str], options: dict[str, str]) -> Any:
        return self._bring("open", words, options)

    def _bring(self, verb: str, words: list[str], options: dict[str, str]) -> Any:
        """load or open: into the variable NAME (or VAR), or returned to `x = %lamin ...`."""
        if len(words) == 3 and words[1] == "as":
            spec, var = words[0], words[2]
        elif len(words) == 1:
            spec, var = words[0], None
        else:
            raise UsageError(f"write %lamin {verb} NAME[@VERSION] [as VAR]")
        verify = yes_or_no(options.get("verify", "yes"), "verify")
        name, version = files.parse_name_version(spec)
        target = var or name
        assigned = var is None and value_is_used()
        file = files.get_file(name, version)
        if not assigned:
            self._check_bindable(target, spec, verb)
        if verb == "open":
            obj = file.open(engine=options.get("engine"), verify=verify)
        else:
            obj = file.load(verify=verify)
        if assigned:
            return obj
        ns = self.ip.user_ns
        replaced = f"; it replaced the {describe_object(ns[target])}" if target in ns else ""
        ns[target] = obj
        lazy = ", read on demand" if verb == "open" else ""
        print(
            f"{verb}ed {name}@{file.version} into {target} ({describe_object(obj)}{lazy}{replaced})"
        )
        return None

    def _check_bindable(self, target: str, spec: str, verb: str) -> None:
        """Refuse names the kernel needs; say how to load under another name."""
        spec = shlex.quote(spec)
        fix = (
            f"{verb} it under another name: %lamin {verb} {spec} as VAR, "
            f"or x = %lamin {verb} {spec}"
        )
        if not IDENTIFIER.match(target):
            raise UsageError(f"{target!r} is not a variable name; {fix}")
        why = reserved(target, self.ip)
        if why:
            raise UsageError(f"{target!r} is {why}, which the kernel needs; {fix}")

    def do_ls(self, words: list[str], options: dict[str, str]) -> Any:
        trash = words[:1] == ["trash"]
        words = words[1:] if trash else words
        if len(words) > 1:
            raise UsageError("write %lamin ls [PATTERN] [page=N]; quote a pattern with spaces")
        text = options.pop("page", "1")
        page = files.parse_number(text, f"page={text}", "page=1, page=2, ...")
        if trash and options:
            raise UsageError("%lamin ls trash takes a PATTERN and page= only")
        pattern = words[0] if words else None
        return views.list_files(pattern, page=page, trash=trash, filters=options)

    def do_source(self, words: list[str], options: dict[str, str]) -> Any:
        if len(words) > 1:
            raise UsageError("write %lamin source [RUN]")
        return views.run_source(words[0] if words else None)

    def do_lineage(self, words: list[str], options: dict[str, str]) -> Any:
        from .graph import lineage

        if len(words) != 1:
            raise UsageError("write %lamin lineage NAME[@VERSION] [depth=N]")
        text = options.get("depth", "3")
        return lineage(words[0], files.parse_number(text, f"depth={text}", "depth=3"))

    def do_rm(self, words: list[str], options: dict[str, str]) -> None:
        from .lifecycle import delete

        if len(words) != 1:
            raise UsageError("write %lamin rm NAME[@VERSION]")
        moved = delete(words[0])
        print(trash_message("moved", moved, "to the trash", f"%lamin restore {words[0]}"))

    def do_restore(self, words: list[str], options: dict[str, str]) -> None:
        from .lifecycle import restore

        if len(words) != 1:
            raise UsageError("write %lamin restore NAME[@VERSION]")
        print(trash_message("restored", restore(words[0]), "from the trash", ""))

    def do_gc(self, words: list[str], options: dict[str, str]) -> Any:
        from .lifecycle import gc

        if words not in ([], ["dry-run"]):
            raise UsageError("write %lamin gc, or %lamin gc dry-run")
        return gc(dry_run=words == ["dry-run"])

    def do_show(self, words: list[str], options: dict[str, str]) -> Any:
        if len(words) != 1:
            raise UsageError("write %lamin show NAME[@VERSION]")
        return views.show_file(words[0])

    def do_track(self, words: list[str], options: dict[str, str]) -> None:
        if len(words) > 1:
            raise UsageError("write %lamin track [PATH] [title=TEXT]; quote a path with spaces")
        if "title" in options and not options["title"].strip():
            raise UsageError("title= is empty; write title='My analysis', or leave it out")
        run = tracking.track(words[0] if words else None, options.get("title"), new_run=True)
        if self.extension is not None:
            self.extension.explicit = bool(words)
            self.extension.title_reader = None
        from .extension import summary

        print(summary(run))

    def do_info(self, words: list[str], options: dict[str, str]) -> Any:
        if words:
            raise UsageError("%lamin info takes no arguments")
        return views.info()

    def do_check(self, words: list[str], options: dict[str, str]) -> Any:
        from .integrity import check

        if words not in ([], ["repair"]):
            raise UsageError("write %lamin check, or %lamin check repair")
        return check(repair=words == ["repair"])

    def do_init(self, words: list[str], options: dict[str, str]) -> None:
        db = options.get("db")
        if len(words) > 1 or (not words and db is None):
            raise UsageError(
                "write %lamin init PATH, e.g. %lamin init ./mydata, or join a team instance: "
                "%lamin init db=postgresql://USER@HOST/DB"
            )
        before = tracking.context.transform
        instance.init(words[0] if words else None, db=db)
        # keep tracking what was tracked, however it was found
        if before is not None and before.type in ("notebook", "script"):
            run = tracking.track(before.key, before.title)
        else:
            run = tracking.track()
        from .extension import summary

        print(summary(run))


def describe_object(obj: Any) -> str:
    try:  # a lazy object's shape may read its bytes, which may be gone
        shape = getattr(obj, "shape", None)
    except Exception:
        shape = None
    kind = type(obj).__name__
    if isinstance(shape, tuple):
        return f"{kind} {' x '.join(map(str, shape))}"
    return kind


def trash_message(verb: str, moved: list[Any], where: str, undo: str) -> str:
    from .lifecycle import names_of

    return f"{verb} {names_of(moved)} {where}" + (f" ({undo} brings it back)" if undo else "")


def yes_or_no(value: str, option: str) -> bool:
    if value.lower() in YES:
        return True
    if value.lower() in NO:
        return False
    raise UsageError(f"{option}={value} is neither yes nor no; write {option}=yes or {option}=no")


def reserved(name: str, ip: Any) -> str | None:
    """Why binding `name` would break the kernel, or None."""
    if keyword.iskeyword(name):
        return "a Python keyword"
    if name.startswith("__") and name.endswith("__"):
        return "a name Python itself uses"
    if name in getattr(ip, "user_ns_hidden", {}) or IPYTHON_NAMES.fullmatch(name):
        return "a name IPython uses"
    if hasattr(builtins, name):
        return "a Python builtin"
    return None


def value_is_used() -> bool:
    """Whether the code that called this magic uses its value (`x = %lamin load NAME`).

    IPython runs `x = %lamin load NAME` as `x = get_ipython().run_line_magic(...)`: the
    instruction after that call in the caller's code stores the value, where a bare
    `%lamin load NAME` drops it (POP_TOP) or shows it as the cell's result (PRINT_EXPR).
    """
    from IPython.core.interactiveshell import InteractiveShell

    magic_code = InteractiveShell.run_line_magic.__code__
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_code is not magic_code:
        frame = frame.f_back
    caller = frame.f_back if frame is not None else None
    if caller is None:
        return False
    return _stored_after(caller.f_code, caller.f_lasti)


@functools.lru_cache(maxsize=256)
def _stored_after(code: Any, lasti: int) -> bool:
    """Whether the instruction after the call at `lasti` in `code` keeps its value; the same
    place in the same code always answers alike (a loop of loads disassembles it once)."""
    instructions = list(dis.get_instructions(code))
    for ins, after in itertools.pairwise(instructions):
        if ins.offset <= lasti < after.offset:  # the call, with its inline caches
            dropped = after.opname in ("POP_TOP", "PRINT_EXPR") or (
                after.opname == "CALL_INTRINSIC_1" and "PRINT" in after.argrepr
            )
            return not dropped
    return False


class Holdings:
    """What each name of a namespace held, to tell afterwards which names a cell bound anew.

    Comparing `id()`s is fooled when a new object reuses a freed one's address; a weak
    reference to the old object cannot be, and keeps nothing alive. Objects without weak
    references (ints, tuples) are held strongly, so their ids cannot be reused either.
    """

    def __init__(self, ns: dict[str, Any]) -> None:
        self.held: dict[str, tuple[bool, Any]] = {}
        for name, value in ns.items():
            try:
                self.held[name] = (True, weakref.ref(value))
            except TypeError:
                self.held[name] = (False, value)

    def rebound(self, ns: dict[str, Any]) -> Iterator[str]:
        for name, value in list(ns.items()):
            if name not in self.held:
                yield name
                continue
            weak, mark = self.held[name]
            if (mark() if weak else mark) is not value:
                yield name
