"""Writing stored objects atomically: a temporary name inside the storage root, fsync, rename.

A stored object never changes after its rename, and nothing under a final name is partial.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import Format
from .hashing import (
    HASH_TYPE_FILE,
    HASH_TYPE_FOLDER,
    HashingWriter,
    fsync_path,
    hash_file,
    hash_folder,
)

TEMP_SUFFIX = ".partial"


@dataclass
class WrittenObject:
    temp_path: Path
    size: int
    hash: str
    hash_type: str


def remove_path(path: Path) -> None:
    """Remove a file or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_temp(obj: Any, fmt: Format, temp_dir: Path) -> WrittenObject:
    """Write `obj` under a fresh temporary name in `temp_dir`, synced to disk and hashed."""
    temp_dir.mkdir(exist_ok=True)
    # the pid tells `check --repair` whether the writer still runs
    temp_path = temp_dir / f"{os.getpid()}-{uuid.uuid4().hex}{fmt.suffix}{TEMP_SUFFIX}"
    try:
        if fmt.stream:
            with open(temp_path, "wb") as raw, HashingWriter(raw) as sink:
                fmt.write(obj, sink)
                raw.flush()
                os.fsync(raw.fileno())
                return WrittenObject(temp_path, sink.size, sink.digest(), HASH_TYPE_FILE)
        fmt.write(obj, temp_path)
        if fmt.folder:
            size, digest = hash_folder(temp_path, fsync=True)
            return WrittenObject(temp_path, size, digest, HASH_TYPE_FOLDER)
        size, digest = hash_file(temp_path, fsync=True)
        return WrittenObject(temp_path, size, digest, HASH_TYPE_FILE)
    except BaseException:
        remove_path(temp_path)
        raise


def move_into_place(temp_path: Path, final_path: Path) -> None:
    """Rename a finished temporary to its final name; never over an existing object."""
    if final_path.exists():
        raise FileExistsError(f"{final_path} exists; stored objects are never overwritten")
    os.rename(temp_path, final_path)
    fsync_path(final_path.parent)
