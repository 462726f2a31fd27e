"""Exceptions, and the commands their messages suggest.

Each exception also inherits a builtin, so callers can catch either kind. A message names the
fix in the words of whoever is asking: `%lamin ls` in a notebook, `lamin-magic ls` in a shell,
`lm.select(lm.File).df()` from Python (see `command` and `frontend`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class LaminMagicError(Exception):
    """Base class: a problem the user can fix; the message says how, in one line."""


class InvalidArgumentError(LaminMagicError, ValueError):
    """A malformed name, version, option or value."""


class UnsupportedTypeError(LaminMagicError, TypeError):
    """An object of a type no registered format can store."""


class NotFoundError(LaminMagicError, LookupError):
    """No record matches: an unknown name, version or id."""


class MultipleResultsError(LaminMagicError, LookupError):
    """`.one()` found more than one record."""


class InstanceError(LaminMagicError, RuntimeError):
    """The instance cannot be used: unreadable, not writable, a newer schema, a bad path."""


class RegistryBusyError(InstanceError):
    """Another process held the registry's write lock for longer than the busy timeout."""


class IntegrityError(LaminMagicError, RuntimeError):
    """Stored bytes are missing or do not match their recorded size and hash."""


class MissingLibraryError(LaminMagicError, ImportError):
    """An optional library (an engine of lm.open) is not installed; the message says how."""


# what a message suggests, as (magic, command line, Python); {} takes an argument
COMMANDS = {
    "ls": ("%lamin ls", "lamin-magic ls", "lm.select(lm.File).df()"),
    "load": ("%lamin load {}", "lm.load({}) in Python", "lm.load({})"),
    "check": ("%lamin check", "lamin-magic check", "lm.check()"),
    "repair": ("%lamin check repair", "lamin-magic check --repair", "lm.check(repair=True)"),
    "init": ("%lamin init PATH", "lamin-magic init PATH", "lm.init(PATH)"),
    "join": ("%lamin init db=URL", "lamin-magic --db URL ...", "lm.init(db=URL)"),
    "trust": (
        "lamin-magic init PATH --allow-pickle (in a shell)",
        "lamin-magic init PATH --allow-pickle",
        "lm.init(PATH, allow_pickle=True)",
    ),
    "restore": ("%lamin restore {}", "lamin-magic restore {}", "lm.restore({})"),
    "trash": ("%lamin ls trash", "lamin-magic ls --trash", "lm.select(lm.File, trashed=True)"),
    "gc": ("%lamin gc", "lamin-magic gc", "lm.gc()"),
}
FRONTENDS = ("magic", "cli", "api")
_frontend: ContextVar[str] = ContextVar("lamin_magic_frontend", default="api")


def command(what: str, arg: str | None = None) -> str:
    """How the one asking runs `what` (a key of COMMANDS), with `arg` where it takes one."""
    where = _frontend.get()
    template = COMMANDS[what][FRONTENDS.index(where)]
    if arg is None:
        return template
    import shlex

    return template.format(repr(arg) if where == "api" else shlex.quote(arg))


@contextmanager
def frontend(name: str) -> Iterator[None]:
    """Messages raised inside speak in the words of `name`: magic, cli or api."""
    token = _frontend.set(name)
    try:
        yield
    finally:
        _frontend.reset(token)


def printable(text: str) -> str:
    """`text` safe for a terminal and on one line: control, bidi and other invisible
    characters (ESC, newlines, U+202E, ...) are shown escaped, as repr() shows them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# a password inside a URL (scheme://user:PASSWORD@host) or given as a URL parameter
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:'\"]*:)([^\s@'\"/]+)(@)")
_PASSWORD_PARAM = re.compile(r"(?i)([?&;]password=)([^&\s'\"]+)")


def redact(text: str) -> str:
    """`text` with every password written in a URL replaced by `***`: what is recorded (a
    cell's source, a notebook) and shown never holds one (`%lamin init db=...` in a cell)."""
    if "://" not in text and "password=" not in text.lower():
        return text
    return _PASSWORD_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", text))
