"""Writing stored objects atomically: a temporary name inside the storage root, fsync, rename.

A stored object never changes after its rename, and nothing under a final name is partial.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InstanceError, LaminMagicError, UnsupportedTypeError
from . import writeback
from .formats import Format
from .hashing import (
    HASH_TYPE_FILE,
    HASH_TYPE_FOLDER,
    HashingWriter,
    fsync_path,
    hash_file,
    hash_folder,
)
from .keys import TEMP_SUFFIX


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


def temp_folder(temp_dir: Path) -> Path:
    """The instance's folder for temporaries: a real folder inside it, never a link out."""
    if temp_dir.is_symlink() or (temp_dir.exists() and not temp_dir.is_dir()):
        raise InstanceError(
            f"{temp_dir} is a symbolic link or a file, not lamin_magic's folder of temporaries; "
            f"lamin_magic writes only inside the instance: remove it (rm {temp_dir}) and save again"
        )
    temp_dir.mkdir(exist_ok=True)
    return temp_dir


def write_temp(
    obj: Any, fmt: Format, temp_dir: Path, what: str = "the object", sync: bool = True
) -> WrittenObject:
    """Write `obj` under a fresh temporary name in `temp_dir`, hashed (and synced to disk
    unless `sync` is false: see durability.py).

    A library failing to write it is one line naming `what` and the format; nothing is left.
    """
    # the pid tells `check --repair` whether the writer still runs
    name = f"{os.getpid()}-{uuid.uuid4().hex}{fmt.suffix}{TEMP_SUFFIX}"
    temp_path = temp_folder(temp_dir) / name
    try:
        if fmt.stream:
            with open(temp_path, "wb") as raw, HashingWriter(raw, writeback=sync) as sink:
                fmt.write(obj, sink)
                raw.flush()
                if sync:
                    os.fsync(raw.fileno())
                return WrittenObject(temp_path, sink.size, sink.digest(), HASH_TYPE_FILE)
        with writeback.Watch(temp_path) if sync else contextlib.nullcontext():
            fmt.write(obj, temp_path)
        if fmt.folder:
            size, digest = hash_folder(temp_path, fsync=sync, fresh=True)
            return WrittenObject(temp_path, size, digest, HASH_TYPE_FOLDER)
        size, digest = hash_file(temp_path, fsync=sync)
        return WrittenObject(temp_path, size, digest, HASH_TYPE_FILE)
    except (OSError, MemoryError):
        remove_path(temp_path)
        raise
    except Exception as e:  # the writer refused it: say so in a line
        remove_path(temp_path)
        ours = isinstance(e, LaminMagicError)
        kind = type(e) if ours else UnsupportedTypeError
        reason = str(e) if ours else library_reason(e)
        raise kind(f"cannot store {what} as {fmt.name}: {reason}; nothing was stored") from e
    except BaseException:
        remove_path(temp_path)
        raise


def library_reason(error: BaseException) -> str:
    """'TypeError: first line of the message', for a library's exception."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def move_into_place(temp_path: Path, final_path: Path, sync: bool = True) -> None:
    """Rename a finished temporary to its final name; never over an existing object."""
    if final_path.exists():
        raise FileExistsError(f"{final_path} exists; stored objects are never overwritten")
    os.rename(temp_path, final_path)
    if sync:
        fsync_path(final_path.parent)
