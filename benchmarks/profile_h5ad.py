"""Where the time of saving an AnnData as .h5ad goes, step by step, against write_h5ad.

    python benchmarks/profile_h5ad.py

The steps are the ones `lm.add` takes: write (h5py, to a path), hash (BLAKE3, memory-mapped)
with fsync alongside, then the record. Medians of 5.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import make_anndata

from lamin_magic.storage.hashing import fsync_path, hash_file


def main() -> None:
    adata = make_anndata(100_000, 2_000)
    work = Path(tempfile.mkdtemp(prefix="lamin-h5ad-"))
    steps: dict[str, list[float]] = {"write_h5ad": [], "fsync": [], "hash": [], "hash+fsync": []}
    for i in range(5):
        path = work / f"a{i}.h5ad"
        t = time.perf_counter()
        adata.write_h5ad(path, convert_strings_to_categoricals=False)
        steps["write_h5ad"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fsync_path(path)
        steps["fsync"].append(time.perf_counter() - t)
        t = time.perf_counter()
        hash_file(path)
        steps["hash"].append(time.perf_counter() - t)
        again = work / f"b{i}.h5ad"
        adata.write_h5ad(again, convert_strings_to_categoricals=False)
        t = time.perf_counter()
        hash_file(again, fsync=True)
        steps["hash+fsync"].append(time.perf_counter() - t)
    size = os.path.getsize(work / "a0.h5ad") / 1e6
    base = statistics.median(steps["write_h5ad"])
    print(f"h5ad of {size:.0f} MB; medians of 5")
    for name, values in steps.items():
        m = statistics.median(values)
        print(f"  {name:12s} {m * 1000:7.1f} ms  ({m / base:.2f} of write_h5ad)")


if __name__ == "__main__":
    main()
