"""A local cache of objects downloaded from a bucket, named by their content hash.

An entry is `<hash type>-<hash><suffix>`: the same bytes have the same name whichever bucket,
key or instance they came from, so nothing is downloaded twice, and an entry is re-hashed
before each use, so a damaged one is downloaded again rather than loaded. A download lands
under a hidden `.partial` name in the cache folder and is renamed into place only once its
hash matches the record: a reader never sees half an entry, and two processes fetching the
same object both end with the same good one. Least recently used entries (by mtime, touched
on every use) go once the cache holds more than its limit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IntegrityError, InvalidArgumentError, printable
from ..processes import pid_alive
from .hashing import hash_path, mismatch
from .keys import SUFFIX, TEMP_SUFFIX

if TYPE_CHECKING:
    from .objectstore import ObjectStore

FOLDER_ENV = "LAMIN_MAGIC_CACHE"
LIMIT_ENV = "LAMIN_MAGIC_CACHE_LIMIT"
DEFAULT_LIMIT = 20 * 10**9  # bytes
UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")
DIGEST = re.compile(r"[A-Za-z0-9_-]{8,128}")  # url-safe base64
HASH_TYPE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# a download in progress: hidden, and names the host and process that write it (a home
# folder, and so the cache, may be shared by the machines of a cluster)
PARTIAL = re.compile(rf"\.(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{32}}{re.escape(TEMP_SUFFIX)}")
ATTEMPTS = 3  # a rename that loses a race to another process's is retried this often


def parse_size(text: str, what: str = LIMIT_ENV) -> int:
    """Bytes in '20GB', '500MB', '1.5GB', '2GiB' or '1073741824' (decimal units: GB = 10**9)."""
    found = SIZE.fullmatch(text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in UNITS:
        raise InvalidArgumentError(
            f"{what}={printable(text)!r} is not a size: write e.g. 20GB, 500MB, 1.5GB or a "
            "number of bytes"
        )
    return int(float(found.group(1)) * UNITS[unit])


def default_folder() -> Path:
    """$LAMIN_MAGIC_CACHE, else $XDG_CACHE_HOME/lamin-magic, else ~/.cache/lamin-magic."""
    if os.environ.get(FOLDER_ENV):
        return Path(os.environ[FOLDER_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lamin-magic"


def _remove(path: Path) -> None:
    """Remove a file, link or folder (never following a link); gone already is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _tree_size(path: Path) -> int:
    """Bytes in a file, or in the files below a folder; links are not followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for dirpath, _, files in os.walk(path):  # os.walk does not enter links to folders
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def host_name() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def partial_name(pid: int | None = None) -> str:
    """A fresh hidden name for a download in progress by process `pid` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f".{host_name()}-{pid}-{uuid.uuid4().hex}{TEMP_SUFFIX}"


class Cache:
    """Downloaded objects in a local folder, by content hash, up to a limit in bytes."""

    def __init__(self, folder: Path | None = None, limit: int | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_folder()
        if limit is None:
            text = os.environ.get(LIMIT_ENV, "").strip()
            limit = parse_size(text) if text else DEFAULT_LIMIT
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgumentError(
                f"the cache limit {limit!r} is not a number of bytes: pass an int >= 0"
            )
        self.limit = limit
        self.pinned: set[str] = set()  # entries objects opened lazily still read: not evicted
        # an entry's size never changes (its name is its content's hash): measured once
        self._sizes: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Cache({str(self.folder)!r}, limit={self.limit})"

    def fetch(
        self, store: ObjectStore, key: str, size: int, digest: str, hash_type: str, suffix: str
    ) -> Path:
        """A local path holding exactly the bytes of the object `key` in `store`, recorded as
        (`size`, `digest`, `hash_type`): the cache's entry, downloaded when it has none."""
        name = self._entry_name(digest, hash_type, suffix, f"{store.url}/{key}")
        recorded = (size, digest, hash_type)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        for _ in range(ATTEMPTS):
            if self._good(path, recorded):
                return path
            if self._download(store, key, name, recorded):
                self.evict(keep=name)
                return path
        # another process replaced the entry each time: it keeps changing under us
        raise IntegrityError(
            f"the cache entry {path} kept changing while it was fetched (another process "
            "writes it): remove it and try again"
        )

    @staticmethod
    def _entry_name(digest: str, hash_type: str, suffix: str, what: str) -> str:
        if not (
            isinstance(digest, str)
            and DIGEST.fullmatch(digest)
            and isinstance(hash_type, str)
            and HASH_TYPE.fullmatch(hash_type)
            and isinstance(suffix, str)
            and (suffix == "" or re.fullmatch(SUFFIX, suffix))
        ):
            raise IntegrityError(
                f"the record of {printable(what)} cannot name a cache entry (hash "
                f"{printable(repr(digest))}, hash type {printable(repr(hash_type))}, suffix "
                f"{printable(repr(suffix))}); it was edited by hand or came from elsewhere"
            )
        return f"{hash_type}-{digest}{suffix}"

    def _good(self, path: Path, recorded: tuple[int, str, str]) -> bool:
        """Whether the entry at `path` holds the recorded bytes (touched if so); a damaged
        one, or anything but a plain file or folder, is removed."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a link, pipe, ...: not ours
            _remove(path)
            return False
        try:
            found = hash_path(path)
        except (OSError, IntegrityError):  # removed meanwhile, or a link inside a folder
            _remove(path)
            return False
        if mismatch(recorded, found) is not None:
            _remove(path)
            return False
        with contextlib.suppress(FileNotFoundError):
            os.utime(path, follow_symlinks=False)
        return True

    def _download(
        self, store: ObjectStore, key: str, name: str, recorded: tuple[int, str, str]
    ) -> bool:
        """Download into place; False when another process's entry is in the way (a folder
        cannot be renamed over a folder), so the caller checks that one instead."""
        temp = self.folder / partial_name()
        try:
            store.download(key, temp)
            found = hash_path(temp)
            problem = mismatch(recorded, found)
            if problem is not None:
                raise IntegrityError(
                    f"the object {store.url}/{key} in the bucket does not match its record "
                    f"({problem}); nothing was cached"
                )
            try:
                os.rename(temp, self.folder / name)  # a file replaces an identical one
            except OSError:  # a folder (or a file of that name) got there first
                if not os.path.lexists(self.folder / name):
                    raise
                return False
            with contextlib.suppress(FileNotFoundError):  # a folder's mtime is its last file's
                os.utime(self.folder / name, follow_symlinks=False)
            return True
        finally:
            _remove(temp)

    def adopt(self, temp: Path, recorded: tuple[int, str, str], suffix: str) -> None:
        """Make `temp`, bytes just written and hashed to `recorded` on the cache's disk (an
        upload's source), the entry for those bytes: a load after a save downloads nothing.
        Nothing happens when the entry exists already or `temp` is gone."""
        _, digest, hash_type = recorded
        name = self._entry_name(digest, hash_type, suffix, str(temp))
        target = self.folder / name
        if os.path.lexists(target) or not os.path.lexists(temp):
            return
        try:
            os.rename(temp, target)
        except OSError:  # another process made the entry meanwhile
            return
        with contextlib.suppress(FileNotFoundError):
            os.utime(target, follow_symlinks=False)
        self.evict(keep=name)

    def entries(self) -> list[tuple[str, int, float]]:
        """(name, size in bytes, last use as epoch seconds) of every entry, newest first."""
        found = []
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("."):  # downloads in progress
                continue
            path = self.folder / name
            try:
                mtime = os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            size = self._sizes.get(name)
            if size is None:
                size = self._sizes[name] = _tree_size(path)
            found.append((name, size, mtime))
        return sorted(found, key=lambda entry: (-entry[2], entry[0]))

    def size(self) -> int:
        """Bytes held by the entries."""
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: str | None = None) -> int:
        """Remove least recently used entries (never `keep`) until the rest fit the limit, and
        downloads left by processes that ended; returns the bytes freed."""
        self._remove_stale_partials()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        freed = 0
        for name, size, _ in reversed(entries):  # oldest first
            if total <= self.limit:
                break
            if name == keep or name in self.pinned:
                continue
            _remove(self.folder / name)
            total -= size
            freed += size
        return freed

    def clear(self) -> int:
        """Remove every entry (and downloads left by ended processes); returns bytes freed."""
        self._remove_stale_partials()
        freed = 0
        for name, size, _ in self.entries():
            _remove(self.folder / name)
            freed += size
        return freed

    def _remove_stale_partials(self) -> None:
        """Remove downloads in progress whose process, on this host, has ended."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        here = host_name()
        for name in names:
            found = PARTIAL.fullmatch(name)
            if found and found["host"] == here and not pid_alive(int(found["pid"])):
                _remove(self.folder / name)
