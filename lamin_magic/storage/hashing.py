"""Full-content hashes: sha256, kept to 128 bits and written as 22 url-safe base64 chars.

A file is hashed on its bytes as they are written (`HashingWriter`), in a second thread:
hashlib releases the GIL on large buffers, so hashing overlaps the writer's own work.
A folder (zarr) hashes its sorted relative paths, sizes and contents.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import Any, BinaryIO

HASH_TYPE_FILE = "sha256"
HASH_TYPE_FOLDER = "sha256-tree"
CHUNK = 8 * 1024 * 1024


def encode_digest(digest: bytes) -> str:
    """The first 128 bits of a digest as 22 url-safe base64 characters."""
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def hash_file(path: Path) -> tuple[int, str]:
    """(size, hash) of a file, read once in large chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, encode_digest(h.digest())


def folder_files(root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every file below `root`, sorted by relative path."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def hash_folder(root: Path, fsync: bool = False) -> tuple[int, str]:
    """(total size, hash) of a folder: each file's relative path, size and content, in order."""
    h = hashlib.sha256()
    total = 0
    for rel, path in folder_files(root):
        with open(path, "rb") as f:
            data = f.read()
            if fsync:
                os.fsync(f.fileno())
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
        total += len(data)
    return total, encode_digest(h.digest())


def hash_path(path: Path) -> tuple[int, str, str]:
    """(size, hash, hash_type) of a stored object, file or folder."""
    if path.is_dir():
        return (*hash_folder(path), HASH_TYPE_FOLDER)
    return (*hash_file(path), HASH_TYPE_FILE)


class HashingWriter:
    """A write-only binary file that hashes what passes through it, in a second thread."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()
        self.size = 0
        self.closed = False

    def _consume(self) -> None:
        while (chunk := self._queue.get()) is not None:
            try:
                self._hash.update(chunk)
            except BaseException as e:  # keep draining so the writer never blocks
                self._error = e

    def write(self, data: Any) -> int:
        # bytes are immutable, so the thread may hash them later; anything else is copied
        chunk = data if isinstance(data, bytes) else bytes(data)
        written = self._raw.write(chunk)
        self._queue.put(chunk)
        self.size += len(chunk)
        return written if written is not None else len(chunk)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        """Stop the hashing thread. The raw file stays open: its owner closes it."""
        if not self.closed:
            self.closed = True
            self._queue.put(None)
            self._thread.join()

    def digest(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        return encode_digest(self._hash.digest())

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
