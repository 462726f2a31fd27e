"""The `%lamin` magics: parse, call the API, display. Nothing here that the CLI needs twice."""

from __future__ import annotations

import re
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Unicode, observe

from . import files, instance, tracking, views
from .errors import LaminMagicError

SUBCOMMANDS = ("save", "load", "ls", "show", "track", "info", "init", "check")
OPTIONS = {
    "save": {"name", "description", "format"},
    "load": set(),
    "ls": {"page"},
    "show": set(),
    "track": {"title"},
    "info": set(),
    "init": set(),
    "check": set(),
}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
        self.raw_cell = ""
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
            Store variables: a DataFrame as .parquet, an AnnData as .h5ad (or format=zarr).
            name= defaults to the variable's name (only with one VAR). Saving the same content
            under the same name again changes nothing; new content becomes the next version.

        %lamin load NAME[@VERSION] [as VAR]
        x = %lamin load NAME[@VERSION]
            Load the latest version (or VERSION) into the variable NAME (or VAR), or return it.
            The load is recorded as an input of this run.

        %lamin ls [PATTERN] [page=N]
            The stored files, latest version of each name, 50 a page; PATTERN is a glob
            (iris*).

        %lamin show NAME[@VERSION]
            One file: its record, the run and notebook that made it, its versions, its readers.

        %lamin track [PATH] [title=TEXT]
            Track this notebook (or PATH) and start a new run.

        %lamin info
            The instance, user, notebook and run in use.

        %lamin init PATH
            Use (or create) the instance at PATH, and track this notebook there.

        %lamin check [repair]
            Every record has its bytes (size and hash), every stored object has a record;
            leftover temporaries are listed. `repair` removes temporaries and stored objects
            that no record points at (an interrupted save); it never touches a record.

        %%lamin save [VAR ...] [description=TEXT] [format=...]
            Run the cell, then save the variables named, or every DataFrame and AnnData the
            cell bound.

        The instance is, first hit wins: %lamin init; LAMIN_MAGIC_ROOT;
        %config LaminMagics.root = PATH; the nearest folder with a .lndb file here or above;
        the per-user default. LAMIN_MAGIC_AUTOLOAD=0 stops the extension loading in every kernel.
        """
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
        # check every variable before storing any, so a bad one stores nothing
        prepared = [
            (
                var,
                File(
                    self._value(var),
                    name=options.get("name", var),
                    description=options.get("description"),
                    format=options.get("format"),
                ),
            )
            for var in words
        ]
        for var, file in prepared:
            stored, status = files.add_with_status(file)
            size = views.human_size(stored.size)
            label = f"{stored.name}@{stored.version}"
            if status == "unchanged":
                print(f"{label} is unchanged: {var} has the same content ({size})")
            else:
                print(f"saved {var} as {label} ({stored.suffix}, {size}, id {stored.id})")

    def save_cell(self, words: list[str], options: dict[str, str], cell: str) -> None:
        if "name" in options:
            raise UsageError("%%lamin save takes no name=; it saves each variable by its name")
        ns = self.ip.user_ns
        before = {k: id(v) for k, v in ns.items()}
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
            for var, value in list(ns.items())
            if not var.startswith("_") and before.get(var) != id(value) and has_own_format(value)
        ]
        if not bound:
            print("lamin_magic: the cell bound no DataFrame or AnnData; nothing to save")
            return
        self.do_save(bound, options)

    def do_load(self, words: list[str], options: dict[str, str]) -> Any:
        if len(words) == 3 and words[1] == "as":
            spec, var = words[0], words[2]
        elif len(words) == 1:
            spec, var = words[0], None
        else:
            raise UsageError("write %lamin load NAME[@VERSION] [as VAR]")
        if var is not None and not IDENTIFIER.match(var):
            raise UsageError(f"{var!r} is not a variable name; write %lamin load iris as df")
        name, version = files.parse_name_version(spec)
        file = files.get_file(name, version)
        obj = file.load()
        if var is None and self._assigned(line_args=" ".join(words)):
            return obj
        target = var or name
        if not IDENTIFIER.match(target):
            raise UsageError(
                f"{name!r} is not a variable name; write %lamin load {spec} as VAR, "
                f"or x = %lamin load {spec}"
            )
        self.ip.user_ns[target] = obj
        print(f"loaded {name}@{file.version} into {target} ({describe_object(obj)})")
        return None

    def _assigned(self, line_args: str) -> bool:
        """Whether the running cell assigns `%lamin load ...` to a variable."""
        pattern = r"=\s*%lamin\s+load\s+" + re.escape(line_args.split()[0])
        return re.search(pattern, self.raw_cell) is not None

    def do_ls(self, words: list[str], options: dict[str, str]) -> Any:
        if len(words) > 1:
            raise UsageError("write %lamin ls [PATTERN] [page=N]; quote a pattern with spaces")
        page = options.get("page", "1")
        if not page.isdigit() or int(page) < 1:
            raise UsageError(f"page={page} is not a page number; pages start at 1")
        return views.list_files(words[0] if words else None, page=int(page))

    def do_show(self, words: list[str], options: dict[str, str]) -> Any:
        if len(words) != 1:
            raise UsageError("write %lamin show NAME[@VERSION]")
        return views.show_file(words[0])

    def do_track(self, words: list[str], options: dict[str, str]) -> None:
        if len(words) > 1:
            raise UsageError("write %lamin track [PATH] [title=TEXT]; quote a path with spaces")
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
        if len(words) != 1:
            raise UsageError("write %lamin init PATH, e.g. %lamin init ./mydata")
        before = tracking.context.transform
        instance.init(words[0])
        # keep tracking what was tracked, however it was found
        if before is not None and before.type in ("notebook", "script"):
            run = tracking.track(before.key, before.title)
        else:
            run = tracking.track()
        from .extension import summary

        print(summary(run))


def describe_object(obj: Any) -> str:
    shape = getattr(obj, "shape", None)
    kind = type(obj).__name__
    if isinstance(shape, tuple):
        return f"{kind} {' x '.join(map(str, shape))}"
    return kind
