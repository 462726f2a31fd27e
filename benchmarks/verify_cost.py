"""What it costs to trust stored bytes: re-hash, byte comparison and stat checks against the
parquet / zarr reads and writes they would guard, in one run: a Markdown table.

    python benchmarks/verify_cost.py            # 1 GiB frame, 1,000 small frames, 100k x 2k zarr
    python benchmarks/verify_cost.py --quick    # ~20 MB frame, 200 small frames, 20k x 2k zarr:
                                                # same code paths, under a minute

Two questions: (a) should `load` re-hash a stored file before reading it, and (b) how should
dedup check that an existing stored twin's bytes are intact before reusing it? Measured:

1. `df.to_parquet` and `pd.read_parquet` (the baselines);
2. a full BLAKE3 re-hash, `lamin_magic.storage.hashing.hash_file`, warm and cold page cache;
3. a byte-for-byte comparison of the stored file against a freshly written identical file
   (8 MiB chunks, and `filecmp.cmp(shallow=False)`), the fresh file warm as after a save;
4. a stat fingerprint (size, mtime_ns, inode) against recorded values;
5. for an AnnData zarr folder, `hash_folder` against `anndata.read_zarr`.

"Cold" means after `os.sync()` and `echo 3 > /proc/sys/vm/drop_caches` (needs root); when that
fails the cold rows are left out and the header says so. Every sample of the large frame runs in
a fresh process (as in run.py), the operations interleaved round by round; the small frames and
the zarr folder run one fresh process per round. Medians of 3 samples for the large frame, 5 for
the small ones; "vs read" and "vs write" divide a row's median by the baseline read / write of
its section. These machines are noisy: compare ratios within one run, not times across runs.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from run import make_anndata, make_frame, worker_arguments  # noqa: E402  (run.py's data)

CHUNK = 8 << 20  # bytes per read in the chunked comparison


@dataclass
class Sizes:
    rows: int  # large DataFrame rows (10 M: ~1 GiB in memory, a ~490 MB parquet file)
    small_frames: int  # how many small frames
    small_rows: int  # rows of each (750: a ~33 KB parquet file)
    obs: int  # AnnData cells
    vars: int  # AnnData genes
    repeats: int  # samples of the large frame
    small_repeats: int  # samples of the small frames and the zarr folder
    stat_calls: int  # warm stat calls averaged into one sample


FULL = Sizes(10_000_000, 1_000, 750, 100_000, 2_000, 3, 5, 1_000)
QUICK = Sizes(200_000, 200, 750, 20_000, 2_000, 3, 5, 1_000)  # ~20 MB frame; under a minute


# --- helpers used in the workers -----------------------------------------------------------


def drop_caches() -> bool:
    """Flush dirty pages, then drop the page cache, dentries and inodes. False if not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def warm(*paths: Path) -> None:
    """Read files through once so their pages are in the page cache."""
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(CHUNK):
                pass


def same_bytes(a: Path, b: Path) -> bool:
    """Byte-for-byte equality, reading both files in 8 MiB chunks."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            x = fa.read(CHUNK)
            y = fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def filecmp_deep(a: Path, b: Path) -> bool:
    filecmp.clear_cache()  # filecmp remembers earlier answers by stat signature
    return filecmp.cmp(a, b, shallow=False)


def fingerprint(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --- the workers: each is one fresh process ------------------------------------------------


def worker(op: str, sizes: Sizes, work: Path, sample: int) -> dict[str, Any]:
    """One round of one group of measures; returns {measure: seconds} (and facts)."""
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imported on both sides: times are of the work)

    from lamin_magic.storage.hashing import hash_file, hash_folder

    can_drop = (work / "can_drop").exists()
    out: dict[str, Any] = {}
    stored, twin = work / "stored.parquet", work / "twin.parquet"

    if op == "big_write":
        df = make_frame(sizes.rows)
        target = work / f"write-{sample}.parquet"
        os.sync()
        out["to_parquet"], _ = timed(lambda: df.to_parquet(target))
        out["bytes"] = target.stat().st_size

    elif op == "big_read_warm":
        warm(stored)
        out["read_parquet warm"], df = timed(lambda: pd.read_parquet(stored))
        assert len(df) == sizes.rows

    elif op == "big_read_cold":
        drop_caches()
        out["read_parquet cold"], df = timed(lambda: pd.read_parquet(stored))
        assert len(df) == sizes.rows

    elif op == "big_hash_read_cold":
        recorded = json.loads((work / "stored.json").read_text())

        def verified_load() -> Any:
            assert hash_file(stored)[1] == recorded["hash"]
            return pd.read_parquet(stored)

        drop_caches()
        out["hash_file + read_parquet cold"], df = timed(verified_load)
        assert len(df) == sizes.rows

    elif op == "big_verify":
        recorded = json.loads((work / "stored.json").read_text())
        out.update(verify_round(stored, twin, recorded, sizes, can_drop))

    elif op == "small":
        out.update(small_round(sizes, work, sample, can_drop))

    elif op == "zarr":
        import anndata as ad

        folder = work / "adata.zarr"
        recorded = json.loads((work / "zarr.json").read_text())
        adata = make_anndata(sizes.obs, sizes.vars)
        target = work / f"zarr-write-{sample}.zarr"
        os.sync()
        out["write_zarr"], _ = timed(lambda: adata.write_zarr(str(target)))
        shutil.rmtree(target)
        del adata
        warm(*(p for _, p in folder_paths(folder)))
        out["read_zarr warm"], a = timed(lambda: ad.read_zarr(str(folder)))
        assert a.shape == (sizes.obs, sizes.vars)
        out["hash_folder warm"], (_, h) = timed(lambda: hash_folder(folder))
        assert h == recorded["hash"]
        if can_drop:
            drop_caches()
            out["hash_folder cold"], (_, h) = timed(lambda: hash_folder(folder))
            assert h == recorded["hash"]
            drop_caches()
            out["read_zarr cold"], a = timed(lambda: ad.read_zarr(str(folder)))

            def verified() -> Any:
                assert hash_folder(folder)[1] == recorded["hash"]
                return ad.read_zarr(str(folder))

            drop_caches()
            out["hash_folder + read_zarr cold"], a = timed(verified)
            assert a.shape == (sizes.obs, sizes.vars)
    else:
        raise SystemExit(f"unknown op {op}")
    return out


def folder_paths(folder: Path) -> list[tuple[str, Path]]:
    from lamin_magic.storage.hashing import folder_files

    return folder_files(folder)


def verify_round(
    stored: Path, twin: Path, recorded: dict[str, Any], sizes: Sizes, can_drop: bool
) -> dict[str, float]:
    """The checks on the large file: one sample of each."""
    from lamin_magic.storage.hashing import hash_file

    out: dict[str, float] = {}
    fp = tuple(recorded["fingerprint"])

    warm(stored, twin)
    out["hash_file warm"], (_, h) = timed(lambda: hash_file(stored))
    assert h == recorded["hash"]
    out["compare 8 MiB chunks, both warm"], same = timed(lambda: same_bytes(stored, twin))
    assert same
    out["filecmp.cmp(shallow=False), both warm"], same = timed(lambda: filecmp_deep(stored, twin))
    assert same
    t0 = time.perf_counter()
    for _ in range(sizes.stat_calls):
        assert fingerprint(stored) == fp
    out["stat fingerprint warm"] = (time.perf_counter() - t0) / sizes.stat_calls
    if can_drop:
        drop_caches()
        out["hash_file cold"], (_, h) = timed(lambda: hash_file(stored))
        assert h == recorded["hash"]
        # dedup: the new copy was just written (in the cache), the stored twin is cold
        drop_caches()
        warm(twin)
        out["compare 8 MiB chunks, stored cold, new warm"], same = timed(
            lambda: same_bytes(stored, twin)
        )
        assert same
        drop_caches()
        warm(twin)
        out["filecmp.cmp(shallow=False), stored cold, new warm"], same = timed(
            lambda: filecmp_deep(stored, twin)
        )
        assert same
        drop_caches()
        out["stat fingerprint cold"], ok = timed(lambda: fingerprint(stored) == fp)
        assert ok
    return out


def small_round(sizes: Sizes, work: Path, sample: int, can_drop: bool) -> dict[str, float]:
    """One sample of every measure over all small frames; seconds per frame."""
    import pandas as pd

    from lamin_magic.storage.hashing import hash_file

    n = sizes.small_frames
    recorded = json.loads((work / "small.json").read_text())
    stored = [work / "small" / f"{i:05d}.parquet" for i in range(n)]
    twins = [work / "small-twin" / f"{i:05d}.parquet" for i in range(n)]
    frames = [small_frame(sizes, i) for i in range(n)]
    scratch = work / f"small-write-{sample}"
    scratch.mkdir()
    out: dict[str, float] = {}

    def per_frame(fn: Callable[[int], Any]) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        return (time.perf_counter() - t0) / n

    def check_hash(i: int) -> None:
        assert hash_file(stored[i])[1] == recorded["hash"][i]

    def check_stat(i: int) -> None:
        assert list(fingerprint(stored[i])) == recorded["fingerprint"][i]

    def verified_read(i: int) -> None:
        check_hash(i)
        pd.read_parquet(stored[i])

    def compare(i: int) -> None:
        assert same_bytes(stored[i], twins[i])

    def compare_filecmp(i: int) -> None:
        assert filecmp_deep(stored[i], twins[i])

    os.sync()
    out["to_parquet"] = per_frame(lambda i: frames[i].to_parquet(scratch / f"{i:05d}.parquet"))
    shutil.rmtree(scratch)
    warm(*stored, *twins)
    out["read_parquet warm"] = per_frame(lambda i: pd.read_parquet(stored[i]))
    out["hash_file warm"] = per_frame(check_hash)
    out["compare 8 MiB chunks, both warm"] = per_frame(compare)
    out["filecmp.cmp(shallow=False), both warm"] = per_frame(compare_filecmp)
    out["stat fingerprint warm"] = per_frame(check_stat)
    if can_drop:
        drop_caches()
        out["read_parquet cold"] = per_frame(lambda i: pd.read_parquet(stored[i]))
        drop_caches()
        out["hash_file cold"] = per_frame(check_hash)
        drop_caches()
        out["hash_file + read_parquet cold"] = per_frame(verified_read)
        drop_caches()
        warm(*twins)
        out["compare 8 MiB chunks, stored cold, new warm"] = per_frame(compare)
        drop_caches()
        warm(*twins)
        out["filecmp.cmp(shallow=False), stored cold, new warm"] = per_frame(compare_filecmp)
        drop_caches()
        out["stat fingerprint cold"] = per_frame(check_stat)
    return out


def small_frame(sizes: Sizes, i: int) -> Any:
    df = make_frame(sizes.small_rows)
    df.iloc[0, 3] = i  # every small frame has its own content
    return df


def setup(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Untimed: the stored files, their twins and their recorded hashes and fingerprints."""
    from lamin_magic.storage.hashing import hash_file, hash_folder

    facts: dict[str, Any] = {}
    # the large frame: stored.parquet and twin.parquet come from the first two write samples
    stored = work / "stored.parquet"
    _, h = hash_file(stored)
    _, h_twin = hash_file(work / "twin.parquet")
    assert h == h_twin, "two writes of the same frame gave different bytes"
    (work / "stored.json").write_text(json.dumps({"hash": h, "fingerprint": fingerprint(stored)}))
    facts["parquet_bytes"] = stored.stat().st_size
    # small frames
    (work / "small").mkdir()
    (work / "small-twin").mkdir()
    hashes, fps = [], []
    for i in range(sizes.small_frames):
        df = small_frame(sizes, i)
        a = work / "small" / f"{i:05d}.parquet"
        b = work / "small-twin" / f"{i:05d}.parquet"
        df.to_parquet(a)
        df.to_parquet(b)
        hashes.append(hash_file(a)[1])
        assert hash_file(b)[1] == hashes[-1]
        fps.append(fingerprint(a))
    (work / "small.json").write_text(json.dumps({"hash": hashes, "fingerprint": fps}))
    sizes_small = [os.path.getsize(work / "small" / f"{i:05d}.parquet") for i in range(len(fps))]
    facts["small_bytes"] = statistics.median(sizes_small)
    # the zarr folder
    import warnings

    folder = work / "adata.zarr"
    with warnings.catch_warnings():  # anndata announces its next default zarr format
        warnings.simplefilter("ignore", UserWarning)
        make_anndata(sizes.obs, sizes.vars).write_zarr(str(folder))
    total, h = hash_folder(folder)
    (work / "zarr.json").write_text(json.dumps({"hash": h}))
    facts["zarr_bytes"] = total
    facts["zarr_files"] = len(folder_paths(folder))
    os.sync()
    return facts


# --- the parent ----------------------------------------------------------------------------


def run_worker(op: str, work: Path, sample: int, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--worker", op, "--work", str(work)]
    cmd += ["--sample", str(sample)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def collect(samples: dict[str, list[float]], result: dict[str, Any]) -> None:
    for key, value in result.items():
        samples.setdefault(key, []).append(value)


def fmt_time(seconds: float, unit: str) -> str:
    value = seconds * {"s": 1, "ms": 1e3, "us": 1e6}[unit]
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def table(
    title: str,
    samples: dict[str, list[float]],
    order: list[str],
    read: str,
    write: str,
    unit: str,
    notes: dict[str, str],
) -> None:
    print(f"\n### {title}\n")
    columns = [
        "measure",
        "median",
        "min - max",
        "samples",
        "vs read warm",
        "vs read cold",
        "vs write",
        "note",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    bases = [read, read.replace("warm", "cold"), write]
    medians = [statistics.median(samples[b]) if b in samples else None for b in bases]
    for key in order:
        if key not in samples:
            continue
        m = statistics.median(samples[key])
        ratios = []
        for base in medians:
            if base is None:
                ratios.append("-")
            elif m < 0.001 * base:  # stat checks: two digits of a tiny ratio say it all
                ratios.append(f"{m / base:.2g}")
            else:
                ratios.append(f"{m / base:.3f}")
        shown = unit if m >= 1e-4 else "us"
        spread = f"{fmt_time(min(samples[key]), shown)} - {fmt_time(max(samples[key]), shown)}"
        print(
            f"| {key} | {fmt_time(m, shown)} | {spread} | {len(samples[key])} "
            f"| {' | '.join(ratios)} | {notes.get(key, '')} |"
        )


def versions_line() -> str:
    import importlib.metadata as md

    names = ["lamin_magic", "pandas", "pyarrow", "numpy", "anndata", "zarr", "blake3"]
    return ", ".join(f"{n} {md.version(n)}" for n in names)


ORDER = [
    "to_parquet",
    "read_parquet warm",
    "read_parquet cold",
    "hash_file warm",
    "hash_file cold",
    "hash_file + read_parquet cold",
    "compare 8 MiB chunks, both warm",
    "compare 8 MiB chunks, stored cold, new warm",
    "filecmp.cmp(shallow=False), both warm",
    "filecmp.cmp(shallow=False), stored cold, new warm",
    "stat fingerprint warm",
    "stat fingerprint cold",
]
NOTES = {
    "to_parquet": "baseline (vs write)",
    "read_parquet warm": "baseline (vs read)",
    "hash_file + read_parquet cold": "a verified load: the hash warms the cache for the read",
    "stat fingerprint warm": "os.stat, compare size + mtime_ns + inode",
    "stat fingerprint cold": "after dropping dentries and inodes too",
}
ZARR_ORDER = [
    "write_zarr",
    "read_zarr warm",
    "read_zarr cold",
    "hash_folder warm",
    "hash_folder cold",
    "hash_folder + read_zarr cold",
]
ZARR_NOTES = {
    "write_zarr": "baseline (vs write)",
    "read_zarr warm": "baseline (vs read)",
    "hash_folder + read_zarr cold": "a verified load",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~20 MB frame instead of 1 GiB")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.worker:
        print(json.dumps(worker(args.worker, sizes, args.work, args.sample)))
        return 0
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="lamin-verify-", dir="/tmp"))
    try:
        can_drop = drop_caches()
        if can_drop:
            (work / "can_drop").touch()
        big: dict[str, list[float]] = {}
        small: dict[str, list[float]] = {}
        zarr: dict[str, list[float]] = {}
        # the first two write samples become the stored file and its freshly written twin
        for i in range(sizes.repeats):
            collect(big, run_worker("big_write", work, i, args.quick))
            written = work / f"write-{i}.parquet"
            if i == 0:
                written.rename(work / "stored.parquet")
            elif i == 1:
                written.rename(work / "twin.parquet")
                facts = setup(sizes, work)
            else:
                written.unlink()
            if i == 0:
                continue
            for op in ("big_read_warm", "big_verify", "big_read_cold", "big_hash_read_cold"):
                if op in ("big_read_cold", "big_hash_read_cold") and not can_drop:
                    continue
                collect(big, run_worker(op, work, i, args.quick))
        # one more round of the reads and checks, so each has as many samples as the writes
        for op in ("big_read_warm", "big_verify", "big_read_cold", "big_hash_read_cold"):
            if op in ("big_read_cold", "big_hash_read_cold") and not can_drop:
                continue
            collect(big, run_worker(op, work, sizes.repeats, args.quick))
        big.pop("bytes", None)
        for i in range(sizes.small_repeats):
            collect(small, run_worker("small", work, i, args.quick))
            collect(zarr, run_worker("zarr", work, i, args.quick))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = 2**20
    print(f"# What it costs to trust stored bytes{' (--quick)' if args.quick else ''}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}"
    )
    print(f"versions: {versions_line()}")
    print(
        "cold = after os.sync() and echo 3 > /proc/sys/vm/drop_caches"
        if can_drop
        else "**could not drop the page cache (echo 3 > /proc/sys/vm/drop_caches failed): "
        "warm measures only**"
    )
    print(
        "hash_file = lamin_magic.storage.hashing.hash_file (BLAKE3, update_mmap, "
        "max_threads=AUTO); compare = the stored file against an identical, freshly written "
        "file; vs read warm / cold, vs write = median / the section's read_parquet (read_zarr) "
        "warm / cold and to_parquet (write_zarr) medians"
    )
    table(
        f"DataFrame {sizes.rows:,} rows, parquet {facts['parquet_bytes'] / mib:.0f} MiB "
        f"(medians of {sizes.repeats} samples, one fresh process each)",
        big,
        ORDER,
        "read_parquet warm",
        "to_parquet",
        "s",
        NOTES,
    )
    table(
        f"{sizes.small_frames:,} small frames of {sizes.small_rows} rows, parquet "
        f"{facts['small_bytes'] / 1000:.0f} KB each: time per frame "
        f"(medians of {sizes.small_repeats} samples, each the mean over all frames)",
        small,
        ORDER,
        "read_parquet warm",
        "to_parquet",
        "ms",
        NOTES,
    )
    table(
        f"AnnData {sizes.obs:,} x {sizes.vars:,} sparse float32 5%, zarr folder "
        f"{facts['zarr_bytes'] / mib:.0f} MiB in {facts['zarr_files']} files "
        f"(medians of {sizes.small_repeats} samples)",
        zarr,
        ZARR_ORDER,
        "read_zarr warm",
        "write_zarr",
        "s",
        ZARR_NOTES,
    )
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
