"""Libraries some formats need and lamin_magic does not install: imported when used."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UnsupportedTypeError


def require(module: str, extra: str) -> ModuleType:
    """`module`, imported; or one line saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        reason = "is not installed" if e.name == module else f"cannot be imported ({e})"
        raise UnsupportedTypeError(
            f"this needs {module}, which {reason} here; install it: "
            f"pip install 'lamin_magic[{extra}]'"
        ) from e
