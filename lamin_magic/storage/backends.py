"""Where an instance keeps its stored objects: a folder (local, or shared and mounted at the
same path on every machine) or an S3-compatible bucket. One interface for both, so saving,
loading, dedup, check and gc say what they need and not how each place does it.

Writers always write to a local temporary (`staging`); `place` then renames it into the
folder (atomic, fsynced) or uploads it to the bucket (all of it, or nothing). A bucket's
objects are read through a local cache keyed by content hash (cache.py), whose entries are
re-hashed before use: what a load returns is what was saved.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import InstanceError, IntegrityError
from ..processes import pid_alive
from .keys import TEMP_DIR_NAME, TEMP_SUFFIX, is_stored_name, is_temp_name, object_path

if TYPE_CHECKING:
    from .cache import Cache
    from .objectstore import ObjectStore

Recorded = tuple[Any, Any, Any]  # (size, hash, hash_type) as a record holds them
UPLOAD_GRACE_ENV = "LAMIN_MAGIC_UPLOAD_GRACE"
UPLOAD_GRACE = 3600.0  # seconds: an unrecorded object younger than this may be a save's upload


def upload_grace() -> float:
    """How old an unrecorded object (or another machine's temporary) must be before check
    calls it an orphan: younger, it may belong to a save still running elsewhere."""
    import math

    from ..errors import InvalidArgumentError

    text = os.environ.get(UPLOAD_GRACE_ENV, "").strip()
    try:
        grace = float(text) if text else UPLOAD_GRACE
    except ValueError:
        grace = math.nan
    if not (math.isfinite(grace) and grace >= 0):
        raise InvalidArgumentError(
            f"{UPLOAD_GRACE_ENV}={text!r} is not a number of seconds from 0 up; e.g. 3600"
        )
    return grace


def is_bucket_url(root: object) -> bool:
    return isinstance(root, str) and root.startswith("s3://")


class Folder:
    """Stored objects as `<file id><suffix>` in a folder; temporaries in its `.lamin-tmp`."""

    remote = False
    kind = "local"

    def __init__(self, root: Path, verify: Callable[[], None] | None = None) -> None:
        self.root = root
        # a team's shared folder: raises unless it is this instance's (mounted, marked)
        self.verify = verify or (lambda: None)

    @property
    def shown(self) -> str:
        return str(self.root)

    def staging(self) -> Path:
        """Where a save writes its temporary; first, for a team's folder, that it is still
        there: a share unmounted since must not take saves on the local disk."""
        from .objects import temp_folder

        self.verify()
        return temp_folder(self.root / TEMP_DIR_NAME)

    def path(self, key: object, what: str) -> Path:
        """Where the object `key` is (or would be), never outside the folder."""
        return object_path(self.root, key, what)

    def place(self, temp: Path, key: str, sync: bool) -> None:
        from .objects import move_into_place

        move_into_place(temp, self.path(key, key), sync)

    def keep(self, temp: Path, recorded: Recorded, suffix: str) -> None:
        """Nothing: a folder's temporary was renamed into place."""

    def pin(self, path: Path) -> None:
        """Nothing: a folder's objects stay where they are."""

    def remove(self, key: str) -> bool:
        """Remove the object `key` (only a name lamin_magic gives, never through a link);
        whether there was one to remove."""
        from .objects import remove_path

        if not is_stored_name(key):
            return False
        try:
            path = self.path(key, key)
        except IntegrityError:  # a link or a pipe: never followed, never removed
            return False
        if not path.exists():
            return False
        remove_path(path)
        return True

    def state(self, key: object, recorded: Recorded, what: str) -> str:
        """ok, missing, damaged (not the recorded bytes) or unsafe (a key we never give)."""
        from .hashing import hash_path, mismatch

        try:
            path = self.path(key, what)
        except IntegrityError:
            return "unsafe"
        if not path.exists():
            return "missing"
        try:
            found = hash_path(path)
        except (IntegrityError, OSError):
            return "damaged"
        return "damaged" if mismatch(recorded, found) else "ok"

    def local(self, key: object, recorded: Recorded, what: str, verify: bool) -> Path:
        """A path on this machine holding the object's bytes; `verify` re-hashes them."""
        from .hashing import folder_files

        path = self.existing(key, what)
        if verify:
            verify_bytes(path, recorded, what)
        elif path.is_dir():
            folder_files(path)  # refuses links out of the folder
        return path

    def where(self, key: object, what: str) -> str:
        """The object's place as check reports it; IntegrityError for a key we never give."""
        return str(self.path(key, what))

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def digest(self, key: str) -> tuple[int, str, str]:
        """(size, hash, hash type) of the object as it is now."""
        from .hashing import hash_path

        return hash_path(self.root / key)

    def existing(self, key: object, what: str) -> Path:
        path = self.path(key, what)
        if not path.exists():
            from ..errors import command

            raise IntegrityError(
                f"the bytes of {what} are missing ({path}); {command('check')} lists what else is"
            )
        return path


class Bucket:
    """Stored objects as `<file id><suffix>` under an S3 prefix (a zarr folder as many
    objects under `<file id>.zarr/`), read through the local cache."""

    remote = True
    kind = "s3"

    def __init__(
        self, url: str, cache: Cache | None = None, verify: Callable[[], None] | None = None
    ) -> None:
        from .objectstore import ObjectStore

        self.store: ObjectStore = ObjectStore(url)
        self._cache = cache
        self.verify = verify or (lambda: None)  # raises unless the prefix is this instance's

    @property
    def root(self) -> str:
        return self.store.url

    @property
    def shown(self) -> str:
        return self.store.url

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            from .cache import Cache

            self._cache = Cache()
        return self._cache

    def staging(self) -> Path:
        """Writers write here, on this machine, beside the cache (same disk: a finished
        upload becomes a cache entry by a rename); in a folder of this host's own (a home,
        and so the cache, may be shared by the machines of a cluster), where what a killed
        save left is removed."""
        from .cache import host_name
        from .objects import remove_path

        folder = self._cache_folder() / ".staging" / host_name()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            names = os.listdir(folder)
        except OSError as e:
            raise self._cache_error(e) from e
        for name in names:
            pid = name.split("-", 1)[0]
            if is_temp_name(name) and not pid_alive(int(pid)):
                remove_path(folder / name)
        return folder

    def _cache_folder(self) -> Path:
        folder = self.cache.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._cache_error(e) from e
        return folder

    def _cache_error(self, error: OSError) -> InstanceError:
        return InstanceError(
            f"the cache folder {self.cache.folder} cannot be used ({error.strerror or error}); "
            "set LAMIN_MAGIC_CACHE to a folder you can write, or XDG_CACHE_HOME"
        )

    def pin(self, path: Path) -> None:
        """Keep this entry from this process's evictions: an object opened lazily reads it
        later (another process's `cache clear` can still remove it)."""
        self.cache.pinned.add(path.name)

    def place(self, temp: Path, key: str, sync: bool) -> None:
        """Upload a finished temporary as `key`: every byte, or nothing."""
        if self.store.stat(key) is not None:
            raise FileExistsError(f"{self.store.url}/{key} exists; stored objects stay as they are")
        self.store.upload(temp, key)

    def keep(self, temp: Path, recorded: Recorded, suffix: str) -> None:
        """After its upload, the temporary becomes the cache's entry for those bytes: a load
        right after a save downloads nothing."""
        self.cache.adopt(temp, recorded, suffix)

    def remove(self, key: str) -> bool:
        if not is_stored_name(key) or self.store.stat(key) is None:
            return False
        self.store.delete(key)
        return True

    def state(self, key: object, recorded: Recorded, what: str) -> str:
        """ok when the object is there with the recorded size (re-hashing would download it;
        `check` does that), missing, damaged (another size) or unsafe."""
        if not isinstance(key, str) or not is_stored_name(key):
            return "unsafe"
        found = self.store.stat(key)
        if found is None:
            return "missing"
        return "ok" if found[0] == recorded[0] else "damaged"

    def local(self, key: object, recorded: Recorded, what: str, verify: bool) -> Path:
        """The cache's copy, always verified (an entry is re-hashed before it is used)."""
        if not isinstance(key, str) or not is_stored_name(key):
            self._unsafe(key, what)
        size, digest, hash_type = recorded
        self._cache_folder()
        return self.cache.fetch(self.store, key, size, digest, hash_type, _suffix(key))

    def where(self, key: object, what: str) -> str:
        if not isinstance(key, str) or not is_stored_name(key):
            self._unsafe(key, what)
        return f"{self.store.url}/{key}"

    def exists(self, key: str) -> bool:
        return self.store.stat(key) is not None

    def digest(self, key: str) -> tuple[int, str, str]:
        """The object's size and hash as the bucket holds it now, not the cache: downloaded
        to a scratch copy, hashed, removed."""
        from .hashing import hash_path
        from .objects import remove_path

        scratch = self.staging() / f"{os.getpid()}-{uuid.uuid4().hex}.check{TEMP_SUFFIX}"
        try:
            self.store.download(key, scratch)
            return hash_path(scratch)
        finally:
            remove_path(scratch)

    @staticmethod
    def _unsafe(key: object, what: str) -> NoReturn:
        raise IntegrityError(
            f"the record of {what} cannot be used: its key {key!r} is not a plain name that "
            "lamin_magic gives stored objects; it was edited by hand or came from elsewhere"
        )


def _suffix(key: str) -> str:
    return key[20:]  # after the 20-character file id


def verify_bytes(path: Path, recorded: Recorded, what: str) -> None:
    """IntegrityError unless the bytes at `path` have the recorded size and hash."""
    from ..errors import command
    from .hashing import hash_path, mismatch

    differs = mismatch(recorded, hash_path(path))
    if differs:
        raise IntegrityError(
            f"the bytes of {what} do not match their record ({differs}): the bytes or "
            f"the record were changed; {command('check')} lists what else was"
        )


Storage = Folder | Bucket


def storage_for(root: Path | str, verify: Callable[[], None] | None = None) -> Storage:
    if isinstance(root, str) and is_bucket_url(root):
        return Bucket(root, verify=verify)
    return Folder(Path(root), verify=verify)


def age(modified: float) -> float:
    return time.time() - modified
