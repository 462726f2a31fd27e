"""How far a save is flushed before it returns: to the disk (the default) or to the OS.

"disk": the stored bytes, their folder entry and the record are each flushed to the disk
before a save returns, so a power cut loses no save that returned (three flushes: about
11 ms per save on this project's machines, more than writing a small frame takes).
"os": the save returns once the operating system holds everything; it survives the kernel,
Python or Jupyter dying, but a power cut or an OS crash may lose the saves of the last
seconds, or leave a record whose bytes are gone, which `check` then lists. Chosen with the
environment variable LAMIN_MAGIC_DURABILITY.
"""

from __future__ import annotations

import os

from .errors import InvalidArgumentError

ENV = "LAMIN_MAGIC_DURABILITY"
LEVELS = ("disk", "os")


def level() -> str:
    value = os.environ.get(ENV, "").strip().lower() or LEVELS[0]
    if value not in LEVELS:
        raise InvalidArgumentError(
            f"{ENV}={value!r} is not a durability level; use disk (the default: every save "
            "is on the disk before it returns) or os (faster for many small saves; a power "
            "cut may lose the last ones)"
        )
    return value


def to_disk() -> bool:
    """Whether saves flush to the disk before they return."""
    return level() == "disk"
