"""Which instance: resolution order, `init`, the storage record, the current user, and the
local user's trust.

First hit wins: `init(PATH)`; env `LAMIN_MAGIC_ROOT`; the `LaminMagics.root` traitlet
(passed in through `configure_root`); the nearest instance in the working directory or its
parents; else a default per-user instance, created on first use.

Trust comes from the local user, never from the registry (which travels with the instance):
the instances whose pickles this user lets lamin_magic load are listed in a per-user file.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import registry as reg
from .errors import InstanceError, command
from .ids import new_id
from .storage.keys import TEMP_DIR_NAME, is_stored_name

REGISTRY_SUFFIX = ".lndb"


@dataclass
class Instance:
    root: Path
    registry_path: Path
    storage_id: str
    how: str  # why this instance was chosen, for the message printed on load
    _user_id: str | None = None

    @property
    def user_id(self) -> str:
        """The current user's record, created on the first write that needs it: a colleague
        reading a shared instance for the first time takes no write lock."""
        if self._user_id is None:
            handle = current_user_handle()
            user = reg.User.get_or_none(reg.User.handle == handle)
            if user is None:
                with reg.db.atomic():
                    user = reg.User.get_or_none(reg.User.handle == handle) or reg.new_user(handle)
            self._user_id = user.id
        return self._user_id

    @property
    def name(self) -> str:
        return self.registry_path.stem

    @property
    def temp_dir(self) -> Path:
        return self.root / TEMP_DIR_NAME

    @property
    def identity(self) -> str:
        """This instance, as the local user's trust list names it: its real folder and the
        storage id of its registry (another registry put in the same folder is not trusted)."""
        return f"{os.path.realpath(self.root)}#{self.storage_id}"


_explicit_root: Path | None = None
_configured_root: Path | None = None
_current: Instance | None = None


def default_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "lamin-magic" / "default"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "lamin-magic"


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


def refuse_inside_objects(root: Path) -> None:
    """An instance never lives inside another's stored object or temporary folder: its
    registry would change those bytes, and the other's repair could remove it."""
    for parent in root.parents:
        if find_registry(parent) is None:
            continue
        first = root.relative_to(parent).parts[0]
        if first == TEMP_DIR_NAME or is_stored_name(first):
            raise InstanceError(
                f"{root} is inside {parent / first}, a stored object or temporary of the "
                f"instance {parent}; choose a folder outside it"
            )


def refuse_links(registry_path: Path) -> None:
    """The registry and its journal files are plain files inside the instance."""
    for end in ("", "-wal", "-shm", "-journal"):
        path = Path(str(registry_path) + end)
        if path.is_symlink():
            raise InstanceError(
                f"{path} is a symbolic link; lamin_magic writes its registry only inside the "
                "instance folder: replace the link with the file itself"
            )


def open_instance(root: Path, how: str, create: bool = True) -> Instance:
    """Bind the registry of the instance at `root`, creating folder and registry if asked."""
    root = root.expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise InstanceError(f"{root} is a file, not a folder; give init a folder path")
    refuse_inside_objects(root)
    registry_path = find_registry(root) if root.is_dir() else None
    if registry_path is None and not create:
        raise InstanceError(f"no instance at {root} ({how}); create one: {command('init')}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InstanceError(f"cannot create the instance folder {root}: {e.strerror}") from e
    if not os.access(root, os.W_OK):
        raise InstanceError(
            f"the instance folder {root} is read-only; lamin_magic writes its registry and "
            "objects there: get write access, or copy the folder somewhere writable"
        )
    registry_path = registry_path or root / f"{root.name or 'lamin'}{REGISTRY_SUFFIX}"
    refuse_links(registry_path)
    reg.open_registry(registry_path)
    user = reg.User.get_or_none(reg.User.handle == current_user_handle())
    return Instance(root, registry_path, _storage_id(root), how, user.id if user else None)


def _storage_id(root: Path) -> str:
    """The instance's storage record, created with the instance (under the write lock, so
    opening an instance in use never waits on a writer)."""

    def first() -> reg.Storage | None:
        return reg.Storage.select().order_by(reg.Storage.created_at).first()

    storage = first()
    if storage is None:
        with reg.db.atomic():
            storage = first() or reg.Storage.create(
                id=new_id("storage"), root=str(root), type="local"
            )
    return str(storage.id)


def init(
    path: str | os.PathLike[str],
    *,
    allow_pickle: bool | None = None,
    create: bool = True,
    how: str = "chosen with init",
) -> Instance:
    """Use (or create) the instance at `path` for the rest of this process.

    `allow_pickle=True` records, for you (the local user, not in the instance), that you trust
    this instance's writers: objects no other format stores are then pickled, and its pickles
    load. Unpickling runs code chosen by whoever wrote the file. `allow_pickle=False` takes the
    trust back; None leaves it as it is. `create=False` opens only an existing instance.
    """
    global _explicit_root, _current
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InstanceError("init needs a folder path, e.g. lm.init('./mydata')")
    instance = open_instance(Path(path), how, create=create)
    _explicit_root, _current = instance.root, instance
    if allow_pickle is not None:
        set_pickle_trust(instance, allow_pickle)
    return instance


def trust_file() -> Path:
    return config_dir() / "trusted-pickle.json"


def _trusted() -> list[str]:
    try:
        data = json.loads(trust_file().read_text())
    except (OSError, ValueError):
        return []
    return [x for x in data if isinstance(x, str)] if isinstance(data, list) else []


def set_pickle_trust(instance: Instance, allowed: bool) -> None:
    """Add or remove `instance` in the local user's list of instances trusted to unpickle."""
    trusted = [x for x in _trusted() if x != instance.identity]
    if allowed:
        trusted.append(instance.identity)
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(json.dumps(trusted, indent=1) + "\n")
    os.replace(temp, path)


def pickle_allowed() -> bool:
    """Whether the local user trusts the current instance to pickle and unpickle."""
    return current().identity in _trusted()


def current(create: bool = True) -> Instance:
    """The instance in use, opened on first use by the resolution order above.

    A root named by init, the environment or the traitlet is checked on every call; the
    search of the working directory runs only while no instance is open. `create=False`
    refuses to create one where none is.
    """
    global _current
    chosen = _chosen_root()
    if chosen is None:
        if _current is not None and reg.db.database == str(_current.registry_path):
            return _current
        chosen = resolve_root()
    root, how = chosen
    if (
        _current is None
        or _current.root != root.expanduser().absolute()
        or reg.db.database != str(_current.registry_path)  # a failed init unbound it
    ):
        _current = None
        _current = open_instance(root, how, create=create)
    return _current


def reset() -> None:
    """Forget the chosen instance (tests, `%reload_ext`)."""
    global _explicit_root, _configured_root, _current
    reg.close_registry()
    _explicit_root = _configured_root = _current = None


# any query before an instance is chosen opens the current one (lm.File.select() first)
reg.db.on_demand = current
