"""Which instance: resolution order, `init`, the storage record, the current user, and the
local user's trust.

First hit wins: `init(PATH)` or `init(db=URL)`; env `LAMIN_MAGIC_DB` (a team instance: its
registry on PostgreSQL); env `LAMIN_MAGIC_ROOT`; the `LaminMagics.root` traitlet (passed in
through `configure_root`); the nearest instance in the working directory or its parents; else
a default per-user instance, created on first use.

A local instance is a folder holding its SQLite registry. A team instance is a PostgreSQL
database whose `storage` table names the folder (or bucket) holding its objects: whoever
knows the database's URL joins it.

Trust comes from the local user, never from the registry (which travels with the instance):
the instances whose pickles this user lets lamin_magic load are listed in a per-user file.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import registry as reg
from .databases import is_database_url, shown_url
from .errors import InstanceError, command, printable
from .ids import new_id
from .storage.backends import Storage, is_bucket_url, storage_for
from .storage.keys import TEMP_DIR_NAME, is_stored_name

if TYPE_CHECKING:
    from .storage.objectstore import ObjectStore

REGISTRY_SUFFIX = ".lndb"
# in a team instance's folder: its registry is elsewhere (a database), so no instance is
# made inside it and a local init there is refused
TEAM_MARKER = ".lamin-team"


@dataclass
class Instance:
    root: Path | str  # a folder, or (a team instance's) a bucket: s3://BUCKET/PREFIX
    # the SQLite file's path, or the PostgreSQL URL (which may hold a password: never shown;
    # `registry_shown` is what messages print)
    registry: str
    storage_id: str
    how: str  # why this instance was chosen, for the message printed on load
    _user_id: str | None = None
    _storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        """Where its objects are: a Folder or a Bucket (storage/backends.py)."""
        if self._storage is None:
            root, storage_id = self.root, self.storage_id
            verify = (lambda: check_mark(root, storage_id)) if self.team else None
            self._storage = storage_for(root, verify)
        return self._storage

    def __repr__(self) -> str:  # the registry without its password: reprs get displayed
        return (
            f"Instance(root={self.root!r}, registry={self.registry_shown!r}, "
            f"storage_id={self.storage_id!r}, how={self.how!r})"
        )

    @property
    def team(self) -> bool:
        """A registry on a database server, shared by people on several machines."""
        return is_database_url(self.registry)

    @property
    def registry_shown(self) -> str:
        return shown_url(self.registry) if self.team else self.registry

    @property
    def registry_path(self) -> Path | None:
        """The SQLite file of a local instance; None for a team instance."""
        return None if self.team else Path(self.registry)

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
        if self.team:
            return urllib.parse.urlsplit(self.registry).path.strip("/") or "postgres"
        return Path(self.registry).stem

    @property
    def temp_dir(self) -> Path:
        """Where a local instance's writers write their temporaries."""
        return Path(self.root) / TEMP_DIR_NAME

    @property
    def identity(self) -> str:
        """This instance, as the local user's trust list names it: its real folder and the
        storage id of its registry (another registry put in the same folder is not trusted)."""
        if self.team:
            return f"{self.registry_shown}#{self.storage_id}"
        assert isinstance(self.root, Path)
        return f"{os.path.realpath(self.root)}#{self.storage_id}"


@dataclass(frozen=True)
class Choice:
    """An instance named by init, the environment or a setting, and why."""

    root: Path | str | None  # None: a team instance's root is read from its registry
    db: str | None  # a PostgreSQL URL: a team instance
    how: str


_explicit: Choice | None = None
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


def _chosen() -> Choice | None:
    """The instance named by init, LAMIN_MAGIC_DB, LAMIN_MAGIC_ROOT or the traitlet."""
    if _explicit is not None:
        return _explicit
    url = os.environ.get("LAMIN_MAGIC_DB")
    if url:
        return _from_db_env(url)
    env = os.environ.get("LAMIN_MAGIC_ROOT")
    if env:
        return _from_root_env(env, os.getcwd())
    if _configured_root is not None:
        return Choice(_configured_root, None, "from LaminMagics.root")
    return None


# every query asks which instance is chosen: the same variable gives the same answer
@functools.lru_cache(maxsize=8)
def _from_db_env(url: str) -> Choice:
    return Choice(None, check_url(url, "LAMIN_MAGIC_DB"), "from LAMIN_MAGIC_DB")


@functools.lru_cache(maxsize=8)
def _from_root_env(root: str, cwd: str) -> Choice:  # a relative root is the cwd's
    return Choice(Path(root).expanduser().absolute(), None, "from LAMIN_MAGIC_ROOT")


def resolve() -> Choice:
    """The instance to use and why, without opening it."""
    chosen = _chosen()
    if chosen is not None:
        return chosen
    near = nearest_instance(Path.cwd())
    if near is not None:
        return Choice(near, None, "found in the working directory or a parent")
    return Choice(default_root(), None, "the default per-user instance")


def resolve_root() -> tuple[Path | str, str]:
    """The instance folder to use and why (a team instance's, once it is open)."""
    chosen = resolve()
    if chosen.root is None:
        return current().root, chosen.how
    return chosen.root, chosen.how


def check_url(url: object, where: str) -> str:
    """A PostgreSQL URL, or a one-line error showing the form."""
    form = "postgresql://USER@HOST:PORT/DATABASE"
    if not is_database_url(url):
        raise InstanceError(f"{where} is not a PostgreSQL URL; write {form}")
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018  raises on a port that is not a number from 0 to 65535
    except ValueError as e:
        raise InstanceError(f"{where} is not a valid URL ({e}); write {form}") from e
    if parts.netloc.count("@") > 1:
        raise InstanceError(
            f"{where} holds '@' in its user or password: write it as %40, or put the "
            "password in PGPASSWORD or ~/.pgpass"
        )
    return text


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


def is_team_folder(folder: Path) -> bool:
    """Whether `folder` holds a team instance's objects (its registry is elsewhere)."""
    return (folder / TEAM_MARKER).is_file()


def refuse_inside_objects(root: Path) -> None:
    """An instance never lives inside another's stored object or temporary folder: its
    registry would change those bytes, and the other's repair could remove it."""
    for parent in root.parents:
        if find_registry(parent) is None and not is_team_folder(parent):
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
    if registry_path is None and is_team_folder(root):
        raise InstanceError(
            f"{root} holds a team instance's objects; its registry is a database: join it "
            f"with {command('join')}"
        )
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
    storage = _storage(root)
    return _opened(root, str(registry_path), str(storage.id), how)


def _opened(root: Path | str, registry: str, storage_id: str, how: str) -> Instance:
    user = reg.User.get_or_none(reg.User.handle == current_user_handle())
    return Instance(root, registry, storage_id, how, user.id if user else None)


def _first_storage() -> reg.Storage | None:
    return reg.Storage.select().order_by(reg.Storage.created_at).first()


def _storage(root: Path) -> reg.Storage:
    """A local instance's storage record, created with the instance (under the write lock, so
    opening an instance in use never waits on a writer); a team's is made by `_claim`."""
    storage = _first_storage()
    if storage is None:
        with reg.db.atomic():
            storage = _first_storage() or reg.Storage.create(
                id=new_id("storage"), root=str(root), type="local"
            )
    return storage


def open_team(url: str, root: Path | str | None, how: str, create: bool = True) -> Instance:
    """Bind the registry at `url` (PostgreSQL). With `root` (a folder, or a bucket
    s3://BUCKET/PREFIX) and `create`, an instance is created there if the database holds
    none; without `root`, the instance's storage is read from its registry (joining)."""
    if isinstance(root, str):
        root = _bucket(root).url  # one spelling of the bucket's URL
    elif root is not None:
        root = root.expanduser().absolute()
        if root.is_dir() and find_registry(root) is not None:
            raise InstanceError(
                f"{root} holds a local instance's registry; a team instance needs a folder "
                "of its own"
            )
    reg.open_registry(url, create=create and root is not None)
    try:
        storage = _first_storage()
        if storage is None and (root is None or not create):
            raise InstanceError(
                f"the registry {shown_url(url)} holds no instance yet; create one: "
                f"lamin-magic init PATH --db {shown_url(url)}"
            )
        if storage is not None and root is not None and _root_of(storage) != root:
            raise InstanceError(
                f"the registry {shown_url(url)} is the instance stored at "
                f"{printable(str(storage.root))}, not {root}; join it without a path: "
                f"{command('join')}"
            )
        if storage is None:
            assert root is not None
            if isinstance(root, str):
                _refuse_nested_bucket(root)
                _bucket(root).check()  # reachable, and ours to list, write and delete in
            else:
                _team_folder(root, create=True)
            storage = _claim(root)
        found = _root_of(storage)
        if isinstance(found, Path):
            _team_folder(found, create=False)
        check_mark(found, str(storage.id))
    except BaseException:
        reg.close_registry()
        raise
    return _opened(found, url, str(storage.id), how)


def _claim(root: Path | str) -> reg.Storage:
    """The instance's storage record, made under the registry's lock together with the mark
    that tells its folder or bucket prefix as this instance's: no second instance is made on
    the same place (its check --repair would remove this one's objects as orphans)."""
    with reg.db.atomic():
        storage = _first_storage()
        if storage is not None:
            return storage
        storage_id = new_id("storage")
        found = read_mark(root)
        if found is not None:
            raise InstanceError(
                f"{printable(str(root))} already holds the objects of another team instance "
                f"(storage {printable(found)}); join that one with its database's URL, or "
                "choose an empty folder or prefix"
            )
        try:
            if isinstance(root, str):
                _bucket(root).write_marker(storage_id)
            else:
                with open(root / TEAM_MARKER, "x") as f:  # another instance's claim wins
                    f.write(storage_id + "\n")
        except FileExistsError as e:
            raise InstanceError(
                f"{root} was just claimed by another team instance; choose another folder"
            ) from e
        return reg.Storage.create(
            id=storage_id, root=str(root), type="s3" if isinstance(root, str) else "local"
        )


def read_mark(root: Path | str) -> str | None:
    """The storage id a team instance's folder or bucket prefix is marked with, if any."""
    if isinstance(root, str):
        return _bucket(root).read_marker()
    try:
        return (root / TEAM_MARKER).read_text(errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def check_mark(root: Path | str, storage_id: str) -> None:
    """Refuse a folder or prefix that is not this instance's: a mount point with nothing
    mounted (saves would go to the local disk, and nobody else would see them), or the
    place of another instance."""
    found = read_mark(root)
    if found == storage_id:
        return
    where = printable(str(root))
    if found is None and isinstance(root, Path):
        raise InstanceError(
            f"the storage folder {where} is not this instance's (it lacks the instance's "
            f"mark {TEAM_MARKER}): the shared folder is not mounted here; mount it at that path"
        )
    if found is None:
        raise InstanceError(
            f"{where} lacks the instance's mark {TEAM_MARKER} (another bucket or endpoint, or "
            "the prefix was emptied): check the URL and AWS_ENDPOINT_URL"
        )
    raise InstanceError(
        f"{where} holds the objects of another instance (storage {printable(found)}), not "
        f"this registry's ({storage_id}); the registry or the folder was moved"
    )


def _refuse_nested_bucket(url: str) -> None:
    """No team instance inside another's prefix, stored object or temporary."""
    store = _bucket(url)
    parts = store.prefix.split("/") if store.prefix else []
    for part in parts:
        if is_stored_name(part) or part.startswith("."):
            raise InstanceError(
                f"{url} is inside a stored object or a hidden folder ({part}); choose a prefix "
                "of plain folder names"
            )
    for depth in range(len(parts)):
        outer = f"s3://{store.bucket}" + ("/" + "/".join(parts[:depth]) if depth else "")
        if _bucket(outer).read_marker() is not None:
            raise InstanceError(
                f"{url} is inside the team instance at {outer}; choose a prefix outside it"
            )


def _bucket(url: str) -> ObjectStore:
    """A bucket's client, imported only for a team instance in a bucket (with asyncio, 25 ms
    of a local instance's first cell otherwise)."""
    from .storage.objectstore import ObjectStore

    return ObjectStore(url)


def _root_of(storage: reg.Storage) -> Path | str:
    """A storage record's root: a bucket's URL as it is, a folder as a Path."""
    root = str(storage.root)
    return root if storage.type == "s3" or is_bucket_url(root) else Path(root)


def _team_folder(root: Path, create: bool) -> None:
    """A team instance's folder: created with the instance; when joining, it must be there
    (a shared folder is mounted at the same path on every machine) and writable."""
    if create:
        refuse_inside_objects(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InstanceError(f"cannot create the storage folder {root}: {e.strerror}") from e
    if not root.is_dir():
        raise InstanceError(
            f"the instance's storage folder {printable(str(root))} is not on this machine; "
            "mount the shared folder at that path"
        )
    refuse_inside_objects(root)
    if not os.access(root, os.W_OK):
        raise InstanceError(
            f"the storage folder {root} is read-only for you; get write access to it"
        )


def init(
    path: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    allow_pickle: bool | None = None,
    create: bool = True,
    how: str = "chosen with init",
) -> Instance:
    """Use (or create) the instance at `path` for the rest of this process.

    With `db` (a PostgreSQL URL: `postgresql://USER@HOST:PORT/DATABASE`), a team instance:
    `init(PATH, db=URL)` creates it (its registry in that database, its objects in PATH, a
    folder every member reaches at that path); `init(db=URL)` joins it. The password comes
    from the URL, PGPASSWORD or ~/.pgpass, and is never stored.

    `allow_pickle=True` records, for you (the local user, not in the instance), that you trust
    this instance's writers: objects no other format stores are then pickled, and its pickles
    load. Unpickling runs code chosen by whoever wrote the file. `allow_pickle=False` takes the
    trust back; None leaves it as it is. `create=False` opens only an existing instance.
    """
    global _explicit, _current
    if db is not None:
        url = check_url(db, "db=")
        text = None if path is None else _path_text(path)
        root = text if is_bucket_url(text) else None if text is None else Path(text)
        instance = open_team(url, root, how, create=create)
        _explicit, _current = Choice(None, url, how), instance
    else:
        text = _path_text(path)
        if is_bucket_url(text):
            raise InstanceError(
                "a bucket holds a team instance's objects; its registry is a PostgreSQL "
                f"database: lm.init({text!r}, db='postgresql://USER@HOST/DB')"
            )
        instance = open_instance(Path(text), how, create=create)
        _explicit, _current = Choice(instance.root, None, how), instance
    if allow_pickle is not None:
        set_pickle_trust(instance, allow_pickle)
    return instance


# a URL's scheme (two letters or more: not a drive letter)
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


def _path_text(path: object) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InstanceError(
            "init needs a folder path, e.g. lm.init('./mydata'), or a team's database: "
            "lm.init(db='postgresql://USER@HOST/DB')"
        )
    text = str(path)
    if SCHEME.match(text) and not text.startswith("s3://"):
        raise InstanceError(
            f"{printable(text)} is neither a folder nor a bucket lamin_magic can use: write a "
            "folder path, or s3://BUCKET/PREFIX for an S3-compatible bucket"
        )
    return text


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
    chosen = _chosen()
    if chosen is None:
        if _current is not None and _bound(_current):
            return _current
        chosen = resolve()
    if _current is None or not _bound(_current) or not _is(_current, chosen):
        _current = None
        if chosen.db is not None:
            _current = open_team(chosen.db, chosen.root, chosen.how, create=False)
        else:
            assert isinstance(chosen.root, Path)
            _current = open_instance(chosen.root, chosen.how, create=create)
    return _current


def _bound(instance: Instance) -> bool:
    """Whether the models are bound to this instance's registry (a failed init unbinds)."""
    database = reg.db.obj
    return database is not None and database.database == instance.registry


def _is(instance: Instance, chosen: Choice) -> bool:
    if chosen.db is not None:
        return instance.registry == chosen.db
    assert isinstance(chosen.root, Path)
    return not instance.team and instance.root == chosen.root.expanduser().absolute()


def reset() -> None:
    """Forget the chosen instance (tests, `%reload_ext`)."""
    global _explicit, _configured_root, _current
    reg.close_registry()
    _explicit = _configured_root = _current = None


# any query before an instance is chosen opens the current one (lm.File.select() first)
reg.db.on_demand = current
