"""Start writing a growing object's pages to the disk while its writer still runs.

A save flushes its bytes to the disk before the record commits (durability.py). Flushing them
all at the end makes the save wait for the whole object to reach the disk after the writer is
done; starting the write-back as the object grows (Linux's `sync_file_range`, which returns at
once) leaves the final fsync little to wait for: an 87 MB h5ad here went from 0.15 s (write,
then fsync) to 0.13 s. Elsewhere, or if the call is missing, nothing is started early and the
final fsync does all the work, as before.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

SYNC_FILE_RANGE_WRITE = 2  # start write-back of dirty pages in the range; do not wait
POLL_SECONDS = 0.02  # how often a watched path is looked at while its writer runs
EVERY_BYTES = 8 * 1024 * 1024  # a streamed writer starts write-back after this much


_found: list[Any] = []  # [the C function, or None where there is none], on first use


def _sync_file_range() -> Any:
    if not _found:
        call = None
        if hasattr(os, "posix_fadvise"):  # Linux and some BSDs: look for the call in libc
            import ctypes

            try:
                call = ctypes.CDLL(None, use_errno=True).sync_file_range
                call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
                call.restype = ctypes.c_int
            except (OSError, AttributeError):
                call = None
        _found.append(call)
    return _found[0]


def start(fd: int, offset: int, length: int) -> None:
    """Ask the OS to start writing `length` bytes at `offset` of `fd` to the disk; no wait."""
    call = _sync_file_range()
    if call is not None and length > 0:
        call(fd, offset, length, SYNC_FILE_RANGE_WRITE)


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
            for path in self._files():
                self._grew(path)

    def _files(self) -> list[str]:
        try:
            if not self.path.is_dir():
                return [str(self.path)] if self.path.exists() else []
            return [
                os.path.join(folder, name)
                for folder, _, names in os.walk(self.path)
                for name in names
            ]
        except OSError:
            return []

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
