"""The names lamin_magic gives what it writes inside an instance, and the check that a key
read from a registry (data from others) names such an object and nothing else.

A stored object is `<20-character file id><suffix>` directly in the storage root; a
temporary is `<pid>-<32 hex><suffix>.partial` in `.lamin-tmp/`. Nothing else is ever written,
read as stored bytes, or removed by repair.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import IntegrityError

TEMP_DIR_NAME = ".lamin-tmp"
TEMP_SUFFIX = ".partial"
SUFFIX = r"(?:\.[0-9A-Za-z_-]+)+"
STORED_NAME = re.compile(rf"[0-9A-Za-z]{{20}}{SUFFIX}")
TEMP_NAME = re.compile(rf"[0-9]+-[0-9a-f]{{32}}{SUFFIX}\.partial")


def is_stored_name(name: str) -> bool:
    return STORED_NAME.fullmatch(name) is not None and not name.endswith(TEMP_SUFFIX)


def is_temp_name(name: str) -> bool:
    return TEMP_NAME.fullmatch(name) is not None


def key_problem(key: object) -> str | None:
    """Why `key` is not a name lamin_magic stores objects under, or None when it is."""
    if not isinstance(key, str) or not key:
        return "it has no key"
    if not is_stored_name(key):
        return f"its key {key!r} is not a plain name that lamin_magic gives stored objects"
    return None


def object_path(root: Path, key: object, what: str) -> Path:
    """The path of a stored object inside `root`, never outside it nor through a symlink.

    `what` names the record in the message, e.g. "iris@2".
    """
    problem = key_problem(key)
    if problem is not None:
        raise IntegrityError(
            f"the record of {what} cannot be used: {problem}; it was edited by hand or "
            "came from elsewhere"
        )
    path = root / str(key)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path  # missing bytes: the caller says so
    if stat.S_ISLNK(mode):
        raise IntegrityError(
            f"the bytes of {what} at {path} are a symbolic link; lamin_magic never writes "
            "one and does not follow it out of the instance"
        )
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise IntegrityError(
            f"the bytes of {what} at {path} are not a file or folder (a pipe, socket or "
            "device); lamin_magic never writes one and does not read it"
        )
    return path
