"""lamin_magic: a Jupyter kernel that remembers what it made.

    import lamin_magic as lm
    lm.track()
    file = lm.add(lm.File(df, name="iris"))
    df = lm.select(lm.File, name="iris").first().load()

Public names load on first use, so `import lamin_magic` imports nothing heavy (not even
peewee); `%load_ext lamin_magic` registers the `%lamin` magics.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY = {
    "init": ("instance", "init"),
    "track": ("tracking", "track"),
    "context": ("tracking", "context"),
    "add": ("files", "add"),
    "load": ("files", "load"),
    "open": ("files", "open"),
    "select": ("query", "select"),
    "File": ("registry", "File"),
    "Transform": ("registry", "Transform"),
    "Run": ("registry", "Run"),
    "Storage": ("registry", "Storage"),
    "User": ("registry", "User"),
    "register_format": ("storage.formats", "register_format"),
    "errors": ("errors", None),
    "check": ("integrity", "check"),
    "delete": ("lifecycle", "delete"),
    "restore": ("lifecycle", "restore"),
    "gc": ("lifecycle", "gc"),
    "lineage": ("graph", "lineage"),
}

__all__ = [
    "File",
    "Run",
    "Storage",
    "Transform",
    "User",
    "__version__",
    "add",
    "check",
    "context",
    "delete",
    "errors",
    "gc",
    "init",
    "lineage",
    "load",
    "load_ipython_extension",
    "open",
    "register_format",
    "restore",
    "select",
    "track",
    "unload_ipython_extension",
]

if TYPE_CHECKING:
    from . import errors
    from .files import add, load, open
    from .graph import lineage
    from .instance import init
    from .integrity import check
    from .lifecycle import delete, gc, restore
    from .query import select
    from .registry import File, Run, Storage, Transform, User
    from .storage.formats import register_format
    from .tracking import context, track


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lamin_magic' has no attribute {name!r}") from None
    mod = import_module(f".{module}", __name__)
    if module == "registry":  # a model queried first (lm.File.select()) opens the instance
        import_module(".instance", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext lamin_magic`: register `%lamin` and track this notebook."""
    from .extension import load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    from .extension import unload

    unload(ip)
