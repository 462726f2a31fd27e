"""Which instance: resolution order, `init`, the storage record and the current user.

First hit wins: `init(PATH)`; env `LAMIN_MAGIC_ROOT`; the `LaminMagics.root` traitlet
(passed in through `configure_root`); the nearest instance in the working directory or its
parents; else a default per-user instance, created on first use.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InstanceError

REGISTRY_SUFFIX = ".lndb"
TEMP_DIR_NAME = ".lamin-tmp"


@dataclass
class Instance:
    root: Path
    registry_path: Path
    storage_id: str
    user_id: str
    how: str  # why this instance was chosen, for the message printed on load

    @property
    def name(self) -> str:
        return self.registry_path.stem

    @property
    def temp_dir(self) -> Path:
        return self.root / TEMP_DIR_NAME

    def path_of(self, key: str) -> Path:
        return self.root / key


_explicit_root: Path | None = None
_configured_root: Path | None = None
_current: Instance | None = None


def default_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "lamin-magic" / "default"


def find_registry(folder: Path) -> Path | None:
    """The registry file in `folder`, if it holds exactly one."""
    try:
        found = sorted(p for p in folder.glob(f"*{REGISTRY_SUFFIX}") if p.is_file())
    except OSError:
        return None
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InstanceError(f"{folder} holds more than one registry ({names}); keep one")
    return found[0] if found else None


def nearest_instance(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        if find_registry(folder) is not None:
            return folder
    return None


def _chosen_root() -> tuple[Path, str] | None:
    """The root named by init, LAMIN_MAGIC_ROOT or the traitlet, if any names one."""
    if _explicit_root is not None:
        return _explicit_root, "chosen with init"
    env = os.environ.get("LAMIN_MAGIC_ROOT")
    if env:
        return Path(env).expanduser(), "from LAMIN_MAGIC_ROOT"
    if _configured_root is not None:
        return _configured_root, "from LaminMagics.root"
    return None


def resolve_root() -> tuple[Path, str]:
    """The instance folder to use and why, without opening it."""
    chosen = _chosen_root()
    if chosen is not None:
        return chosen
    near = nearest_instance(Path.cwd())
    if near is not None:
        return near, "found in the working directory or a parent"
    return default_root(), "the default per-user instance"


def configure_root(root: str | os.PathLike[str] | None) -> None:
    """Set the traitlet-level root (below `init` and LAMIN_MAGIC_ROOT); None clears it."""
    global _configured_root
    _configured_root = Path(root).expanduser() if root else None


def current_user_handle() -> str:
    handle = os.environ.get("LAMIN_MAGIC_USER")
    if handle:
        return handle
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def open_instance(root: Path, how: str) -> Instance:
    """Create the instance folder and registry if needed, then bind the registry to it."""
    from . import registry as reg
    from .ids import new_id

    root = root.expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise InstanceError(f"{root} is a file, not a folder; give init a folder path")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InstanceError(f"cannot create the instance folder {root}: {e.strerror}") from e
    if not os.access(root, os.W_OK):
        raise InstanceError(
            f"the instance folder {root} is read-only; lamin_magic writes its registry and "
            "objects there: get write access, or copy the folder somewhere writable"
        )
    registry_path = find_registry(root) or root / f"{root.name or 'lamin'}{REGISTRY_SUFFIX}"
    reg.open_registry(registry_path)
    handle = current_user_handle()
    with reg.db.atomic():
        storage = reg.Storage.select().order_by(reg.Storage.created_at).first()
        if storage is None:
            storage = reg.Storage.create(id=new_id("storage"), root=str(root), type="local")
        user = reg.User.get_or_none(reg.User.handle == handle) or reg.new_user(handle)
    return Instance(root, registry_path, storage.id, user.id, how)


def init(path: str | os.PathLike[str], *, allow_pickle: bool | None = None) -> Instance:
    """Use (or create) the instance at `path` for the rest of this process.

    `allow_pickle=True` lets this instance store any object with pickle, and load such objects:
    unpickling runs code, so allow it only for instances whose writers you trust.
    `allow_pickle=False` turns it off again; None leaves the instance's setting as it is.
    """
    global _explicit_root, _current
    if not str(path).strip():
        raise InstanceError("init needs a folder path, e.g. lm.init('./mydata')")
    instance = open_instance(Path(path), "chosen with init")
    _explicit_root, _current = instance.root, instance
    if allow_pickle is not None:
        from . import registry as reg

        reg.set_setting("allow_pickle", "true" if allow_pickle else "false")
    return instance


def pickle_allowed() -> bool:
    """Whether the current instance lets objects be pickled and unpickled."""
    from . import registry as reg

    current()
    return reg.get_setting("allow_pickle") == "true"


def current() -> Instance:
    """The instance in use, opened on first use by the resolution order above.

    A root named by init, the environment or the traitlet is checked on every call; the
    search of the working directory runs only while no instance is open.
    """
    global _current
    chosen = _chosen_root()
    if chosen is None:
        if _current is not None:
            return _current
        chosen = resolve_root()
    root, how = chosen
    if _current is None or _current.root != root.expanduser().absolute():
        _current = open_instance(root, how)
    return _current


def reset() -> None:
    """Forget the chosen instance (tests, `%reload_ext`)."""
    global _explicit_root, _configured_root, _current
    from . import registry as reg

    reg.close_registry()
    _explicit_root = _configured_root = _current = None
