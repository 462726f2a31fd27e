"""Where the time of saving an AnnData goes, step by step, against the raw writer.

    python benchmarks/profile_anndata.py

The steps are the ones `lm.add` takes for `.h5ad` and `.zarr`: the writer (to a path), then the
hash (BLAKE3, memory-mapped) with the fsync alongside; the record itself takes under 1 ms.
Each step runs on a copy written just before it, with nothing else dirty. Medians of 5.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import make_anndata

from lamin_magic.storage.hashing import (
    folder_files,
    fsync_path,
    hash_file,
    hash_folder,
)


def fresh(write: Callable[[Path], object], path: Path) -> float:
    """Write `path` with nothing else dirty in the page cache; returns the seconds it took."""
    os.sync()
    t = time.perf_counter()
    write(path)
    return time.perf_counter() - t


def timed(step: Callable[[], object]) -> float:
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def profile(fmt: str, adata: Any, work: Path) -> None:
    write = adata.write_h5ad if fmt == "h5ad" else adata.write_zarr
    is_folder = fmt == "zarr"
    hasher = hash_folder if is_folder else hash_file
    steps: dict[str, list[float]] = {"write": [], "fsync": [], "hash": [], "hash with fsync": []}
    for i in range(5):
        paths = [work / f"{fmt}-{i}-{k}.{fmt}" for k in range(3)]
        # each step runs right after its own fresh write, as in a save
        steps["write"].append(fresh(write, paths[0]))
        files = [f for _, f in folder_files(paths[0])] if is_folder else [paths[0]]
        steps["fsync"].append(timed(lambda files=files: [fsync_path(f) for f in files]))
        fresh(write, paths[1])
        steps["hash"].append(timed(lambda p=paths[1]: hasher(p)))
        fresh(write, paths[2])
        steps["hash with fsync"].append(timed(lambda p=paths[2]: hasher(p, fsync=True)))
        for p in paths:
            shutil.rmtree(p) if is_folder else p.unlink()
    base = statistics.median(steps["write"])
    print(f"{fmt}: medians of 5")
    for name, values in steps.items():
        m = statistics.median(values)
        print(f"  {name:16s} {m * 1000:7.1f} ms  ({m / base:.2f} of the write)")


def main() -> None:
    warnings.filterwarnings("ignore")
    adata = make_anndata(100_000, 2_000)
    work = Path(tempfile.mkdtemp(prefix="lamin-profile-"))
    try:
        for fmt in ("h5ad", "zarr"):
            profile(fmt, adata, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
