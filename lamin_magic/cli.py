"""`lamin-magic`: the same API as the magics, from a shell."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import InvalidArgumentError, LaminMagicError, frontend, printable


def page_number(text: str) -> int:
    from .files import parse_number

    try:
        return parse_number(text, f"page {text!r}", "--page 1, --page 2, ...")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


class Parser(argparse.ArgumentParser):
    """argparse, with a malformed command line said in one line like every other error."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} ({self.prog} --help)")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from .views import LS_FILTERS

    parser = Parser(
        prog="lamin-magic",
        description="Inspect and manage a lamin_magic instance: a folder with a SQLite "
        "registry, or a team instance whose registry is a PostgreSQL database.",
    )
    parser.add_argument("--version", action="version", version=f"lamin-magic {__version__}")
    parser.add_argument(
        "--root",
        help="the instance folder (default: LAMIN_MAGIC_ROOT, the nearest instance "
        "in this folder or its parents, else the per-user default)",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="a team instance's registry, postgresql://USER@HOST:PORT/DATABASE (default: "
        "LAMIN_MAGIC_DB); the password comes from PGPASSWORD or ~/.pgpass",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "init",
        help="create (or open) the instance at PATH; with --db URL, a team instance whose "
        "registry is that PostgreSQL database and whose objects go to PATH",
    )
    p.add_argument("path", nargs="?", help="the instance folder")
    p.add_argument(
        "--db",
        metavar="URL",
        default=argparse.SUPPRESS,  # else it would hide a --db given before `init`
        help="create (or join) a team instance: its registry in this PostgreSQL database",
    )
    pickle = p.add_mutually_exclusive_group()
    pickle.add_argument(
        "--allow-pickle",
        dest="allow_pickle",
        action="store_true",
        default=None,
        help="let this instance store any object with pickle (loading a pickle runs code: "
        "only for instances whose writers you trust)",
    )
    pickle.add_argument(
        "--no-pickle", dest="allow_pickle", action="store_false", help="turn pickle off again"
    )
    p = sub.add_parser("ls", help="the stored files, latest versions")
    p.add_argument("pattern", nargs="?", help="a glob on names, e.g. 'iris*'")
    p.add_argument("--page", type=page_number, default=1, help="page number (50 names a page)")
    p.add_argument("--trash", action="store_true", help="list what is in the trash instead")
    for option, meaning in LS_FILTERS.items():
        p.add_argument(f"--{option}", metavar=option.upper(), help=f"only files {meaning}")
    p = sub.add_parser("rm", help="move NAME[@VERSION] (or every version of NAME) to the trash")
    p.add_argument("spec", metavar="NAME[@VERSION]")
    p = sub.add_parser("restore", help="bring NAME[@VERSION] back from the trash")
    p.add_argument("spec", metavar="NAME[@VERSION]")
    p = sub.add_parser(
        "gc",
        help="remove the trash for good, and the bytes no other record uses",
        description="A trashed file a run read, and the latest version of a name, stay as "
        "tombstones without their bytes (lineage stays sound; a number is never given twice).",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be removed; remove nothing"
    )
    p = sub.add_parser("show", help="one file: its run, transform, versions and readers")
    p.add_argument("spec", metavar="NAME[@VERSION]")
    sub.add_parser("runs", help="the latest runs and the transforms they ran")
    p = sub.add_parser("lineage", help="the runs and files upstream and downstream of a file")
    p.add_argument("spec", metavar="NAME[@VERSION]")
    p.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    p.add_argument("--depth", type=int, default=3, help="steps each way (a step is a run)")
    p = sub.add_parser("env", help="a run's Python and installed distributions")
    p.add_argument("run", metavar="RUN", help="a run id (lamin-magic runs lists them)")
    p.add_argument("--diff", metavar="OTHER_RUN", help="what changed from OTHER_RUN to RUN")
    p = sub.add_parser("source", help="the code a run executed, cell by cell, as it ran")
    p.add_argument("run", metavar="RUN", help="a run id (lamin-magic runs lists them)")
    p.add_argument(
        "--notebook",
        action="store_true",
        help="the notebook (.ipynb JSON, outputs stripped) or script as saved when the run ended",
    )
    p = sub.add_parser(
        "check",
        help="every record has its bytes (size and hash); every stored object has a record",
        description="Exit status 0 when all is well, 1 when a problem is left.",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="remove leftover temporaries and stored objects no record points at",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-hash", action="store_true", help="check sizes and presence only")
    sub.add_parser("info", help="the instance and the current user")
    p = sub.add_parser(
        "cache",
        help="the local cache of objects downloaded from buckets (LAMIN_MAGIC_CACHE, "
        "LAMIN_MAGIC_CACHE_LIMIT); `cache clear` empties it",
    )
    p.add_argument("action", nargs="?", choices=["clear"], help="clear: remove every entry")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 `check` found a problem, 2 an error (one line
    on stderr; LAMIN_MAGIC_DEBUG=1 adds the traceback of an unexpected one)."""
    args = build_parser().parse_args(argv)
    try:
        with frontend("cli"):
            return run(args)
    except BrokenPipeError:  # the reader stopped reading (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (LaminMagicError, OSError) as e:
        fail(str(e) if isinstance(e, LaminMagicError) else f"{e.strerror or e} ({e.filename})")
    except Exception as e:  # a bug: still one line, and the way to see more
        if os.environ.get("LAMIN_MAGIC_DEBUG"):
            raise
        fail(f"unexpected {type(e).__name__}: {e} (LAMIN_MAGIC_DEBUG=1 shows the traceback)")
    return 2


def fail(message: str) -> None:
    print(f"lamin-magic: error: {printable(message)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from . import instance, views

    if args.command == "init":
        if args.path is None and args.db is None:
            raise InvalidArgumentError("init needs a PATH, or --db URL to join a team instance")
        if args.root is not None:
            raise InvalidArgumentError("give init the folder as PATH, not --root")
        found = instance.init(args.path, db=args.db, allow_pickle=args.allow_pickle)
        pickled = "allowed" if instance.pickle_allowed() else "off"
        where = f" (registry {found.registry_shown})" if found.team else ""
        print(printable(f"instance {found.name} at {found.root}{where} (pickle {pickled})"))
        return 0
    if args.command == "cache":
        from .views import cache_summary

        print(cache_summary(clear=args.action == "clear"))
        return 0
    # every other command works on an existing instance: a mistyped path creates nothing
    if args.db is not None:
        if args.root is not None:
            raise InvalidArgumentError("give --db or --root, not both")
        instance.init(db=args.db, create=False, how="from --db")
    elif args.root is not None:
        instance.init(args.root, create=False, how="from --root")
    else:
        instance.current(create=False)
    if args.command == "ls":
        from .views import LS_FILTERS

        filters = {k: getattr(args, k) for k in LS_FILTERS if getattr(args, k) is not None}
        if args.trash and filters:
            raise InvalidArgumentError("ls --trash takes a PATTERN and --page only")
        print(views.list_files(args.pattern, page=args.page, trash=args.trash, filters=filters))
    elif args.command in ("rm", "restore"):
        from . import lifecycle

        moved = getattr(lifecycle, "delete" if args.command == "rm" else "restore")(args.spec)
        names = lifecycle.names_of(moved)
        if args.command == "rm":
            print(f"moved {names} to the trash (lamin-magic restore {args.spec} brings it back)")
        else:
            print(f"restored {names} from the trash")
    elif args.command == "gc":
        from .lifecycle import gc

        print(gc(dry_run=args.dry_run))
    elif args.command == "show":
        print(views.show_file(args.spec))
    elif args.command == "runs":
        print(views.list_runs())
    elif args.command == "lineage":
        from .graph import lineage

        print(lineage(args.spec, args.depth).render(args.format))
    elif args.command == "env":
        print(views.run_environment(args.run, args.diff))
    elif args.command == "source":
        print(views.run_snapshot(args.run) if args.notebook else views.run_source(args.run))
    elif args.command == "info":
        print(views.info())
    elif args.command == "check":
        from .integrity import check

        report = check(repair=args.repair, verify_hashes=not args.no_hash)
        if args.json:
            import json

            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(report)
        return 0 if report.ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
