"""Start writing a growing object's pages to the disk while its writer still runs.

A save flushes its bytes to the disk before the record commits (durability.py). Flushing them
all at the end makes the save wait for the whole object to reach the disk after the writer is
done; starting the write-back as the object grows (Linux's `sync_file_range`, which returns at
once) leaves the final fsync little to wait for: an 87 MB h5ad here went from 0.15 s (write,
then fsync) to 0.13 s. Elsewhere, or if the call is missing, nothing is started early and the
final fsync does all the work, as before. A folder (zarr) is flushed with one `syncfs` of its
file system instead of an fsync per file: 331 against 396 ms for a store of 195 files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

SYNC_FILE_RANGE_WRITE = 2  # start write-back of dirty pages in the range; do not wait
POLL_SECONDS = 0.02  # how often a watched path is looked at while its writer runs
EVERY_BYTES = 8 * 1024 * 1024  # a streamed writer starts write-back after this much


_calls: dict[str, Any] = {}  # libc functions by name (None where there is none), on first use


def _libc(name: str, *argtypes: Any) -> Any:
    if name not in _calls:
        call = None
        if hasattr(os, "posix_fadvise"):  # Linux and some BSDs: look for the call in libc
            import ctypes

            try:
                call = getattr(ctypes.CDLL(None, use_errno=True), name)
                call.argtypes = [getattr(ctypes, t) for t in argtypes]
                call.restype = ctypes.c_int
            except (OSError, AttributeError):
                call = None
        _calls[name] = call
    return _calls[name]


def _sync_file_range() -> Any:
    return _libc("sync_file_range", "c_int", "c_longlong", "c_longlong", "c_uint")


def start(fd: int, offset: int, length: int) -> None:
    """Ask the OS to start writing `length` bytes at `offset` of `fd` to the disk; no wait."""
    call = _sync_file_range()
    if call is not None and length > 0:
        call(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def can_flush_file_system() -> bool:
    return _libc("syncfs", "c_int") is not None


def flush_file_system(path: Path) -> None:
    """Flush all the OS holds for the file system of `path` to the disk in one call (Linux's
    syncfs): for a folder of many files, in place of a flush per file. It also waits for
    what others wrote to that file system."""
    import ctypes

    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc("syncfs", "c_int")(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"{os.strerror(error)}: flushing {path} to the disk")
    finally:
        os.close(fd)


class Watch:
    """While a path-taking writer runs: a thread that starts write-back of whatever grew under
    `path` (a file, or every file of a folder such as a zarr store)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._started: dict[str, int] = {}  # file -> bytes whose write-back was started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        if _sync_file_range() is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            for path, size in self._sizes():
                if size > self._started.get(path, 0):
                    self._grew(path)

    def _sizes(self) -> list[tuple[str, int]]:
        """(path, size) of the watched file, or of every file below the watched folder: one
        stat each, no open (a store of 165 files: 0.5 against 1.0 ms a look, which the
        writer, holding the GIL too, would wait for)."""
        try:
            if not self.path.is_dir():  # one file (or none yet)
                return [(str(self.path), self.path.stat().st_size)]
        except OSError:
            return []
        found, folders = [], [str(self.path)]
        while folders:
            try:
                with os.scandir(folders.pop()) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                folders.append(entry.path)
                            elif entry.is_file(follow_symlinks=False):
                                size = entry.stat(follow_symlinks=False).st_size
                                found.append((entry.path, size))
                        except OSError:  # renamed or removed by the writer meanwhile
                            continue
            except OSError:  # a folder renamed or removed meanwhile
                continue
        return found

    def _grew(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone, or a link: the final check refuses links anyway
            return
        try:
            size = os.fstat(fd).st_size
            done = self._started.get(path, 0)
            if size > done:
                start(fd, done, size - done)
                self._started[path] = size
        finally:
            os.close(fd)
