"""lamin_magic against the raw libraries doing the same work, in one run: a table of ratios.

    python benchmarks/run.py            # the full run (~1 GiB frame; about 10 minutes here)
    python benchmarks/run.py --quick    # small sizes, same code paths, under 2 minutes

Each timed sample runs in a fresh process, the two sides interleaved (raw, ours, raw, ours ...),
so neither side inherits the other's warm caches or memory pools; medians of 3 samples (5 for
AnnData). Dirty pages are flushed before each sample (os.sync), so what one side left to write
back never slows the other.
`--quick` asserts nothing about timings: CI runs it to keep this script working.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# --- sizes ---------------------------------------------------------------------------------


@dataclass
class Sizes:
    rows: int  # DataFrame rows (10 M: ~1.08 GiB in memory)
    obs: int  # AnnData cells
    vars: int  # AnnData genes
    registry_names: int  # File rows = names x versions
    registry_versions: int
    processes: int
    saves: int  # per process
    repeats: int
    kernels: int
    small_frames: int = 300  # frames of SMALL_ROWS rows saved one by one (~33 KB each)


FULL = Sizes(10_000_000, 100_000, 2_000, 10_000, 100, 8, 100, 3, 5)
QUICK = Sizes(200_000, 2_000, 200, 1_000, 10, 4, 10, 1, 1, small_frames=10)
SMALL_ROWS = 1_000


# --- what runs in a worker process ---------------------------------------------------------


def make_frame(rows: int) -> Any:
    """Floats, ints, a categorical and a column of unique strings."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "f1": rng.normal(size=rows),
            "f2": rng.normal(size=rows),
            "i1": rng.integers(0, 1 << 40, rows),
            "i2": np.arange(rows),
            "cat": pd.Categorical(rng.choice(["T cell", "B cell", "NK", "monocyte"], rows)),
            "s": np.char.add("cell_", np.arange(rows).astype(str)).astype(object),
        }
    )


def make_anndata(obs: int, n_vars: int) -> Any:
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    # 5 % filled: one value at a random place in each block of 20 columns of every row
    # (sp.random takes tens of seconds at this size; this takes a fraction of one)
    rng = np.random.default_rng(0)
    per_row = max(1, n_vars // 20)
    block = n_vars // per_row
    indices = (np.arange(per_row) * block + rng.integers(0, block, (obs, per_row))).ravel()
    indptr = np.arange(0, obs * per_row + 1, per_row)
    data = rng.random(obs * per_row, dtype=np.float32)
    X = sp.csr_matrix((data, indices.astype(np.int32), indptr), shape=(obs, n_vars))
    return ad.AnnData(X)


class PeakRSS:
    """Samples this process's resident memory every 2 ms; `extra` is the peak above the start."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def extra(self) -> int:
        return self.peak - self.start


def shell_with_extension(root: Path) -> Any:
    """An in-process IPython shell with lamin_magic loaded on the instance at `root`."""
    os.environ["LAMIN_MAGIC_ROOT"] = str(root)
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance(history_length=0)
    ip.history_manager.enabled = False
    ip.run_line_magic("load_ext", "lamin_magic")
    return ip


def settle(memory_gib: int = 0) -> None:
    """Before a timed sample, on both sides: what a kernel does on its own soon after it starts
    is done, Python's garbage is collected, and `memory_gib` of memory is touched and freed.

    A full collection, with anndata and IPython imported, takes 50-90 ms here; left to chance
    it fell inside a timed save on either side in most samples, whichever side crossed the
    allocation threshold first. This machine is a VM whose host backs its memory lazily (and
    takes back what the guest frees): a first touch cost ~8 us a page (6 GiB in 12.4 s, then
    0.8 s), so a sample that needs GiBs took 4 to 7 s by chance. Touched just before, the
    memory the sample gets is backed."""
    import gc

    from lamin_magic import tracking

    tracking.finish_recorders()  # the run's environment, recorded 2 s after a kernel starts
    if memory_gib:
        import numpy as np

        touched = np.ones(memory_gib << 27)  # 8-byte floats
        del touched
    gc.collect()


def worker(op: str, sizes: Sizes, work: Path, sample: int) -> dict[str, Any]:
    """One sample of one operation; returns seconds and extra peak memory."""
    import contextlib
    import io

    # both sides start with the libraries imported: the timings are of the work, not imports
    # (ours too: the modules a save imports on first use, ~8 ms once per kernel)
    import anndata  # noqa: F401
    import pandas.io.parquet
    import pyarrow.parquet  # noqa: F401

    import lamin_magic.files
    import lamin_magic.storage.anndata_formats
    import lamin_magic.storage.dataframe
    import lamin_magic.storage.objects  # noqa: F401

    if op.startswith(("raw_small", "lm_small")):
        return small_frames(op, sizes, work, sample)
    if op in ("raw_save", "lm_save", "store_save"):
        obj = make_frame(sizes.rows)
        obj.iloc[0, 3] = sample  # new content every sample: a real write, never a dedup hit
    elif op in ("raw_h5ad", "lm_h5ad", "raw_zarr", "lm_zarr"):
        obj = make_anndata(sizes.obs, sizes.vars)
        obj.X[0, 0] = sample + 1.0
    quiet = contextlib.redirect_stdout(io.StringIO())
    if not op.startswith("store_"):
        # both sides run in the same kind of process, a shell with lamin_magic loaded, so the
        # only difference is the work timed below
        with quiet:
            ip = shell_with_extension(work / "instance")
    else:
        os.environ["IPYTHONDIR"] = str(work / "ipython")
        from IPython.core.interactiveshell import InteractiveShell

        ip = InteractiveShell.instance(history_length=0)
        ip.run_line_magic("load_ext", "storemagic")
    target = work / f"{op}-{sample}"
    # every sample starts with nothing dirty in the page cache: the raw side never flushes what
    # it wrote, and its leftovers would otherwise be written back during the next sample
    os.sync()
    # the 1 GiB frame's load takes +3.5 GiB, its save +0.5; an AnnData sample well under 1
    full = sizes.rows >= FULL.rows
    settle((5 if op.endswith(("_save", "_load")) else 1) if full else 0)
    with PeakRSS() as mem, quiet:
        t0 = time.perf_counter()
        if op == "raw_save":
            obj.to_parquet(target.with_suffix(".parquet"))
        elif op == "lm_save":
            ip.user_ns["df"] = obj
            ip.run_line_magic("lamin", "save df name=big")
        elif op == "store_save":
            ip.user_ns["df"] = obj
            ip.run_line_magic("store", "df")
        elif op == "raw_load":
            import pandas as pd

            pd.read_parquet(work / "frame.parquet")
        elif op == "lm_load":
            ip.run_line_magic("lamin", "load big@1 as df")
        elif op == "store_load":
            ip.run_line_magic("store", "-r df")
        elif op == "raw_h5ad":
            obj.write_h5ad(target.with_suffix(".h5ad"))
        elif op == "lm_h5ad":
            ip.user_ns["adata"] = obj
            ip.run_line_magic("lamin", "save adata name=adata_h5ad")
        elif op == "raw_zarr":
            obj.write_zarr(str(target.with_suffix(".zarr")))
        elif op == "lm_zarr":
            ip.user_ns["adata"] = obj
            ip.run_line_magic("lamin", "save adata name=adata_zarr format=zarr")
        else:
            raise SystemExit(f"unknown op {op}")
        seconds = time.perf_counter() - t0
    if op == "lm_load":
        assert len(ip.user_ns["df"]) == sizes.rows
    return {"seconds": seconds, "extra_bytes": mem.extra}


def small_frames(op: str, sizes: Sizes, work: Path, sample: int) -> dict[str, Any]:
    """Many small frames saved (or loaded) one by one: what the fixed cost of a save is."""
    import contextlib
    import io

    import pandas as pd

    frames = [make_frame(SMALL_ROWS).assign(n=i + 1000 * sample) for i in range(sizes.small_frames)]
    with contextlib.redirect_stdout(io.StringIO()):
        ip = shell_with_extension(work / "instance")
        folder = work / "small"
        folder.mkdir(exist_ok=True)
        # the first save of a process starts its run, the first load reads the registry: one
        # untimed round of each side first, so that the timing is of the steady cost
        warm = make_frame(SMALL_ROWS).assign(n=-1 - sample)
        warm.to_parquet(folder / f"warm-{op}-{sample}.parquet")
        pd.read_parquet(folder / f"warm-{op}-{sample}.parquet")
        ip.user_ns["df"] = warm
        ip.run_line_magic("lamin", f"save df name=warm{op}{sample}")
        ip.run_line_magic("lamin", f"load warm{op}{sample} as df")
        os.sync()
        settle()
        t0 = time.perf_counter()
        for i, df in enumerate(frames):
            path = folder / f"{sample}-{i}.parquet"
            if op.startswith("raw_small_save"):
                df.to_parquet(path)
            elif op.startswith("lm_small_save"):
                ip.user_ns["df"] = df
                ip.run_line_magic("lamin", f"save df name=small{sample}_{i}")
            elif op.startswith("raw_small_load"):
                pd.read_parquet(path)
            elif op.startswith("lm_small_load"):
                ip.run_line_magic("lamin", f"load small{sample}_{i} as df")
            else:
                raise SystemExit(f"unknown op {op}")
        seconds = (time.perf_counter() - t0) / len(frames)
    return {"seconds": seconds, "extra_bytes": 0}


# --- the parent: run workers, interleaved --------------------------------------------------


def run_worker(op: str, sizes: Sizes, work: Path, sample: int, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--worker", op, "--work", str(work)]
    cmd += ["--sample", str(sample)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@dataclass
class Row:
    measure: str
    ours: float
    raw: float | None
    unit: str
    target: str
    ok: bool | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours / self.raw if self.raw else None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(format_row(row), flush=True)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if unit == "/s":
        return f"{value:.1f}/s"
    return f"{value:g} {unit}"


def format_row(row: Row) -> str:
    ratio = f"{row.ratio:.3f}" if row.ratio is not None else ""
    ok = {True: "yes", False: "NO", None: ""}[row.ok]
    cells = [row.measure, fmt(row.ours, row.unit), fmt(row.raw, row.unit), ratio, row.target, ok]
    return "| " + " | ".join(cells) + (f" | {row.note} |" if row.note else " | |")


def paired(
    ops: tuple[str, str], sizes: Sizes, work: Path, quick: bool, repeats: int | None = None
) -> tuple[list, list]:
    """Interleaved samples of (raw op, our op)."""
    raw, ours = [], []
    for sample in range(repeats or sizes.repeats):
        raw.append(run_worker(ops[0], sizes, work, sample, quick))
        ours.append(run_worker(ops[1], sizes, work, sample, quick))
    return raw, ours


def median(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def bench_import(report: Report, sizes: Sizes) -> None:
    code = (
        "import time; t = time.perf_counter(); import lamin_magic; print(time.perf_counter() - t)"
    )
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(max(5, sizes.repeats))
    ]
    ms = statistics.median(times) * 1000
    report.add(Row("import lamin_magic", ms, None, "ms", "<= 50 ms", ms <= 50))


def bench_load_ext(report: Report, sizes: Sizes, work: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from kernels import clean_env, kernel, run_code

    code = (
        "import time; t = time.perf_counter(); "
        "get_ipython().run_line_magic('load_ext', 'lamin_magic'); "
        "print('SECONDS', time.perf_counter() - t)"
    )
    added = []
    for i in range(max(3, sizes.kernels)):
        env = clean_env(
            LAMIN_MAGIC_ROOT=str(work / f"kernel-instance-{i}"), LAMIN_MAGIC_AUTOLOAD="0"
        )
        with kernel(env, work) as (_, client):
            out = run_code(client, code)["stdout"]
        added.append(float(out.split("SECONDS")[1]))
    ms = statistics.median(added) * 1000
    report.add(
        Row(
            "%load_ext lamin_magic in a fresh kernel (new instance, Transform, Run)",
            ms,
            None,
            "ms",
            "<= 100 ms added",
            ms <= 100,
        )
    )


def bench_frame(report: Report, sizes: Sizes, work: Path, quick: bool) -> None:
    raw, ours = paired(("raw_save", "lm_save"), sizes, work, quick)
    r, o = median(raw, "seconds"), median(ours, "seconds")
    report.add(
        Row(
            f"%lamin save, DataFrame {sizes.rows:,} rows / df.to_parquet",
            o,
            r,
            "s",
            "<= 1.05",
            o / r <= 1.05,
        )
    )
    rm, om = median(raw, "extra_bytes") / 2**20, median(ours, "extra_bytes") / 2**20
    report.add(
        Row(
            "extra peak memory during the save / during df.to_parquet",
            om,
            rm,
            "MiB",
            "<= 1.05",
            om / rm <= 1.05 if rm else None,
        )
    )
    # the load reads what was saved: the same bytes for both sides
    inst = work / "instance"
    import sqlite3

    con = sqlite3.connect(next(inst.glob("*.lndb")))
    key = con.execute("SELECT key FROM file WHERE name = 'big' AND version = 1").fetchone()[0]
    con.close()
    shutil.copy(inst / key, work / "frame.parquet")
    raw, ours = paired(("raw_load", "lm_load"), sizes, work, quick)
    r, o = median(raw, "seconds"), median(ours, "seconds")
    report.add(Row("%lamin load of it / pd.read_parquet", o, r, "s", "<= 1.03", o / r <= 1.03))
    raw, store = paired(("raw_save", "store_save"), sizes, work, quick)
    r, s = median(raw, "seconds"), median(store, "seconds")
    report.add(
        Row("IPython %store df (pickle) / df.to_parquet, for comparison", s, r, "s", "", None)
    )
    raw, store = paired(("raw_load", "store_load"), sizes, work, quick)
    r, s = median(raw, "seconds"), median(store, "seconds")
    report.add(Row("IPython %store -r df / pd.read_parquet, for comparison", s, r, "s", "", None))


def bench_small(report: Report, sizes: Sizes, work: Path, quick: bool) -> None:
    """The fixed cost of a save and of a load, on many small frames, for each durability."""
    what = f"{sizes.small_frames} frames of {SMALL_ROWS:,} rows (~33 KB) one by one"
    for level in ("disk", "os"):
        os.environ["LAMIN_MAGIC_DURABILITY"] = level
        try:
            raw, ours = paired(("raw_small_save", "lm_small_save"), sizes, work, quick)
            r, o = median(raw, "seconds") * 1000, median(ours, "seconds") * 1000
            target = "<= 1.3" if level == "os" else ""
            report.add(
                Row(
                    f"%lamin save, {what}, durability={level} / df.to_parquet (per frame)",
                    o,
                    r,
                    "ms",
                    target,
                    o / r <= 1.3 if target else None,
                    "three fsyncs per save" if level == "disk" else "no fsync",
                )
            )
        finally:
            del os.environ["LAMIN_MAGIC_DURABILITY"]
    raw, ours = paired(("raw_small_load", "lm_small_load"), sizes, work, quick)
    r, o = median(raw, "seconds") * 1000, median(ours, "seconds") * 1000
    report.add(
        Row(
            f"%lamin load, {what} / pd.read_parquet (per frame)", o, r, "ms", "<= 1.1", o / r <= 1.1
        )
    )


def bench_anndata(report: Report, sizes: Sizes, work: Path, quick: bool) -> None:
    """Saving an AnnData against anndata's own writer, which flushes nothing to the disk: with
    the default durability (the bytes on the disk before the save returns; the goals) and with
    durability=os (no flush), which shows what the flush costs."""
    what = f"AnnData {sizes.obs:,} x {sizes.vars:,} sparse 5%"
    # a ~0.1-0.4 s sample on a noisy machine: more of them than for the big frame
    repeats = max(9, sizes.repeats) if not quick else 1
    for fmt, goal in (("zarr", 1.05), ("h5ad", 1.3)):
        for level in ("disk", "os"):
            os.environ["LAMIN_MAGIC_DURABILITY"] = level
            try:
                raw, ours = paired((f"raw_{fmt}", f"lm_{fmt}"), sizes, work, quick, repeats)
            finally:
                del os.environ["LAMIN_MAGIC_DURABILITY"]
            r, o = median(raw, "seconds"), median(ours, "seconds")
            target = f"<= {goal}" if level == "disk" else ""
            report.add(
                Row(
                    f"save {what} as {fmt}, durability={level} / adata.write_{fmt}",
                    o,
                    r,
                    "s",
                    target,
                    o / r <= goal if target else None,
                    "flushed to the disk" if level == "disk" else "no flush",
                )
            )


def filled_instance(root: Path, sizes: Sizes, trash_every: int = 0) -> tuple[Any, Any, int]:
    """(instance, run, rows): an instance whose registry holds names x versions File rows,
    inserted with sqlite3; every `trash_every`-th row in the trash (never a name's latest),
    half of them .parquet, half .h5ad."""
    import sqlite3

    import lamin_magic as lm
    from lamin_magic import registry, tracking

    inst = lm.init(root)
    run = tracking.track()
    n = sizes.registry_names * sizes.registry_versions
    con = sqlite3.connect(inst.registry_path)
    now = registry.utcnow().isoformat()
    rows = (
        (
            f"{i:020d}",
            f"name-{i // sizes.registry_versions:06d}",
            i % sizes.registry_versions + 1,
            ".parquet" if i % 2 else ".h5ad",
            1000 + i,
            f"{i:022d}",
            "blake3",
            f"{i:020d}.parquet",
            run.id,
            inst.storage_id,
            inst.user_id,
            now,
            now if trash_every and i % trash_every == 0 else None,
        )
        for i in range(n)
    )
    with con:
        con.executemany(
            "INSERT INTO file (id, name, version, suffix, size, hash, hash_type, key, run_id, "
            "storage_id, created_by_id, created_at, trashed_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    con.close()
    return inst, run, n


def bench_registry(report: Report, sizes: Sizes, work: Path) -> None:
    """The registry part of `%lamin load NAME` and `%lamin ls` among many File rows."""
    import sqlite3

    from lamin_magic import files, instance, tracking, views

    inst, _, n = filled_instance(work / "registry-instance", sizes)
    tracking.track(new_run=True)  # a reader: its loads are recorded as inputs
    names = [
        f"name-{i:06d}" for i in range(0, sizes.registry_names, max(1, sizes.registry_names // 200))
    ]
    samples = []
    for name in names:
        t0 = time.perf_counter()
        file = files.get_file(name)  # what %lamin load NAME asks the registry ...
        files.record_input(file)  # ... and writes to it
        samples.append(time.perf_counter() - t0)
    ms = statistics.median(samples) * 1000
    raw = sqlite3.connect(inst.registry_path)
    raw_samples = []
    for name in names:
        t0 = time.perf_counter()
        raw.execute(
            "SELECT * FROM file WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
        ).fetchone()
        raw_samples.append(time.perf_counter() - t0)
    raw.close()
    raw_ms = statistics.median(raw_samples) * 1000
    report.add(
        Row(
            f"registry part of %lamin load NAME, {n:,} File rows (vs a raw sqlite3 SELECT)",
            ms,
            raw_ms,
            "ms",
            "<= 1 ms",
            ms <= 1,
            "lookup + recording the input",
        )
    )
    ls = []
    for page in (1, 2, sizes.registry_names // 50):
        t0 = time.perf_counter()
        table = views.list_files(page=page)
        ls.append(time.perf_counter() - t0)
        assert len(table.rows) == 50
    ms = max(ls) * 1000
    report.add(
        Row(
            f"%lamin ls, {n:,} File rows, pages 1, 2 and last (slowest)",
            ms,
            None,
            "ms",
            "<= 50 ms",
            ms <= 50,
        )
    )
    instance.reset()


def bench_lifecycle(report: Report, sizes: Sizes, work: Path) -> None:
    """gc and filtered `ls` among many File rows, a tenth of them in the trash."""
    import sqlite3

    import lamin_magic as lm
    from lamin_magic import instance, views

    inst, run, n = filled_instance(work / "lifecycle-instance", sizes, trash_every=10)
    with sqlite3.connect(inst.registry_path) as con:
        # a run read a tenth of what is in the trash: those stay as tombstones
        con.executemany(
            "INSERT INTO run_input (run_id, file_id) VALUES (?, ?)",
            ((run.id, f"{i:020d}") for i in range(0, n, 100)),
        )
    con.close()
    trashed = n // 10
    timings = []
    for filters in ({"type": "parquet"}, {"notebook": run.transform.name}, {"larger": "1KB"}):
        for page in (1, sizes.registry_names // 50):
            t0 = time.perf_counter()
            table = views.list_files(page=page, filters=filters)
            timings.append(time.perf_counter() - t0)
            assert len(table.rows) == 50, (filters, page)
    ms = max(timings) * 1000
    report.add(
        Row(
            f"%lamin ls with a filter (type, notebook, size), {n:,} File rows, first and last "
            "page (slowest)",
            ms,
            None,
            "ms",
            "<= 200 ms",
            ms <= 200,
        )
    )
    t0 = time.perf_counter()
    trash = views.list_files(trash=True)
    ms = (time.perf_counter() - t0) * 1000
    assert len(trash.rows) == 50
    report.add(Row(f"%lamin ls trash, {trashed:,} in the trash, page 1", ms, None, "ms", "", None))
    t0 = time.perf_counter()
    collected = lm.gc()
    seconds = time.perf_counter() - t0
    assert len(collected.deleted) + len(collected.tombstones) == trashed
    assert len(collected.tombstones) == n // 100
    report.add(
        Row(
            f"lm.gc(), {n:,} File rows, {trashed:,} in the trash ({n // 100:,} read by a run)",
            seconds,
            None,
            "s",
            "<= 10 s",
            seconds <= 10,
        )
    )
    instance.reset()


SAVER = r"""
import sys, time, pandas as pd
import lamin_magic as lm
where, who, saves, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lm.init(db=where) if "://" in where else lm.init(where)
lm.track()
frames = [pd.DataFrame({"who": [who], "i": [i]}) for i in range(saves)]
print("ready", flush=True)
sys.stdin.readline()  # go
t0 = time.time()
errors = 0
for i, df in enumerate(frames):
    name = "shared" if i % every == 0 else f"p{who}-{i}"
    try:
        lm.add(lm.File(df, name=name))
    except Exception as e:
        errors += 1
        print("ERROR", repr(e), file=sys.stderr)
print(t0, time.time(), errors, flush=True)
"""


def concurrent_saves(
    where: str,
    processes: int,
    saves: int,
    every: int,
    env: dict[str, str] | None = None,
    when_ready: Callable[[], object] | None = None,
) -> tuple[float, int]:
    """`processes` processes saving `saves` one-row frames each into one instance (a folder,
    or a registry URL), every `every`th under the shared name 'shared': started together once
    each has imported, opened the instance and tracked its run. Returns the wall seconds from
    the first save to the last, and the errors (each printed)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, where, str(p), str(saves), str(every)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a saver did not start: {line}{proc.communicate()[1]}")
        if when_ready is not None:
            when_ready()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, results, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(err[-3000:])
    fields = [out.split() for out, _ in results]
    began = min(float(f[0]) for f in fields)
    ended = max(float(f[1]) for f in fields)
    for _, err in results:
        for line in err.splitlines():
            if line.startswith("ERROR"):
                print(f"    {line}", file=sys.stderr)
    return ended - began, sum(int(f[2]) for f in fields)


def bench_concurrency(report: Report, sizes: Sizes, work: Path) -> None:
    import sqlite3

    def run(processes: int, root: Path) -> tuple[float, int]:
        return concurrent_saves(str(root), processes, sizes.saves, every=5)

    import lamin_magic as lm
    from lamin_magic import instance

    for root in (work / "one", work / "many"):
        lm.init(root)
        instance.reset()
    one_span, one_errors = run(1, work / "one")
    many_span, many_errors = run(sizes.processes, work / "many")
    one_rate = sizes.saves / one_span
    many_rate = sizes.processes * sizes.saves / many_span
    con = sqlite3.connect(next((work / "many").glob("*.lndb")))
    versions = [
        v for (v,) in con.execute("SELECT version FROM file WHERE name = 'shared' ORDER BY version")
    ]
    total = con.execute("SELECT COUNT(*) FROM file").fetchone()[0]
    con.close()
    expected_shared = sizes.processes * len(range(0, sizes.saves, 5))
    intact = (
        versions == list(range(1, expected_shared + 1)) and total == sizes.processes * sizes.saves
    )
    errors = one_errors + many_errors
    gaps = "without gaps" if intact else "WITH GAPS OR LOSSES"
    report.add(
        Row(
            f"{sizes.processes} processes x {sizes.saves} saves into one instance / 1 process",
            many_rate,
            one_rate,
            "/s",
            ">= 0.8, 0 errors",
            many_rate / one_rate >= 0.8 and errors == 0 and intact,
            f"{errors} errors; versions of 'shared' 1..{len(versions)} {gaps}",
        )
    )


# --- tracking: what it adds to a kernel's start, to each cell, to a shutdown ------------------

CELLS_CODE = """
import json, os, sys, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance(history_length=0)
ip.history_manager.enabled = False
if sys.argv[1] == "lm":
    os.environ["LAMIN_MAGIC_ROOT"] = sys.argv[2]
    ip.run_line_magic("load_ext", "lamin_magic")
n = int(sys.argv[3])
for _ in range(100):  # warm up
    ip.run_cell("x = 1", store_history=True)
t = time.perf_counter()
for _ in range(n):
    ip.run_cell("x = 1", store_history=True)
print(json.dumps((time.perf_counter() - t) / n))
"""

SNAPSHOT_CODE = """
import base64, json, os, sys, time
import lamin_magic as lm
from lamin_magic import tracking
root, path, cells = sys.argv[1], sys.argv[2], int(sys.argv[3])
png = base64.b64encode(os.urandom(75_000)).decode()  # an image of 100 KB in every output
nb = {"cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": i,
       "source": f"plot({i})", "outputs": [{"output_type": "display_data", "metadata": {},
       "data": {"image/png": png, "text/plain": "<Figure>"}}]} for i in range(cells)],
      "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
with open(path, "w") as f:
    json.dump(nb, f)
lm.init(root)
lm.track(path, new_run=True)
t = time.perf_counter()
tracking.finish_at_exit()  # what a shutdown does: the end of the run and its snapshot
print(json.dumps(time.perf_counter() - t))
"""


def fresh(code: str, *args: str, env: dict[str, str] | None = None) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def kernel_ready_seconds(env: dict[str, str], cwd: Path) -> float:
    """From starting a kernel to its first reply (start-up files have run by then)."""
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    t = time.perf_counter()
    km.start_kernel(env=env, cwd=str(cwd))
    client = km.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        return time.perf_counter() - t
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=False)


def bench_tracking(report: Report, sizes: Sizes, work: Path) -> None:
    """Kernel start with and without the start-up file (an existing instance, a notebook
    found by JPY_SESSION_NAME), the cost of recording a cell, the snapshot at shutdown."""
    sys.path.insert(0, str(REPO / "tests"))
    from kernels import clean_env

    import lamin_magic as lm
    from lamin_magic import instance

    root = work / "tracking"
    lm.init(root)
    instance.reset()
    notebook = work / "tracked.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (work / "runtime").mkdir(exist_ok=True)
    base = clean_env(
        LAMIN_MAGIC_ROOT=str(root),
        JPY_SESSION_NAME=str(notebook),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),  # no other server is asked
    )
    raw, ours = [], []
    for _ in range(max(5, sizes.kernels) * 2 if sizes.kernels > 1 else 1):
        raw.append(kernel_ready_seconds({**base, "LAMIN_MAGIC_AUTOLOAD": "0"}, work))
        ours.append(kernel_ready_seconds(base, work))
    added = (statistics.median(ours) - statistics.median(raw)) * 1000
    report.add(
        Row(
            "kernel start to ready, start-up file (loads lamin_magic before the first cell)"
            " / autoload off",
            statistics.median(ours) * 1000,
            statistics.median(raw) * 1000,
            "ms",
            "<= 10 ms added",
            added <= 10,
            f"{added:.1f} ms added; medians of {len(raw)} kernels a side, interleaved",
        )
    )
    n = 200 if sizes.kernels == 1 else 3000
    raw, ours = [], []
    for _ in range(sizes.repeats * 2 - 1 if sizes.repeats > 1 else 1):
        raw.append(fresh(CELLS_CODE, "raw", str(root), str(n)))
        ours.append(fresh(CELLS_CODE, "lm", str(root), str(n)))
    per_cell = (statistics.median(ours) - statistics.median(raw)) * 1000
    report.add(
        Row(
            "a cell (x = 1) in IPython with the extension / without: recording its code and end",
            statistics.median(ours) * 1000,
            statistics.median(raw) * 1000,
            "ms",
            "<= 1 ms added",
            per_cell <= 1,
            f"{per_cell:.3f} ms added per cell; {n} cells a process",
        )
    )
    cells = 20 if sizes.kernels == 1 else 200
    times = [
        fresh(SNAPSHOT_CODE, str(root), str(work / f"big-{i}.ipynb"), str(cells))
        for i in range(max(3, sizes.repeats))
    ]
    report.add(
        Row(
            f"notebook snapshot at shutdown, {cells} cells with a 100 KB image each "
            f"({cells / 10:g} MB; outputs stripped)",
            statistics.median(times) * 1000,
            None,
            "ms",
            "<= 500 ms",
            statistics.median(times) <= 0.5,
        )
    )


def versions_line() -> str:
    import importlib.metadata as md

    names = [
        "lamin_magic",
        "ipython",
        "ipykernel",
        "peewee",
        "pandas",
        "pyarrow",
        "numpy",
        "anndata",
        "zarr",
        "h5py",
    ]
    return ", ".join(f"{n} {md.version(n)}" for n in names)


def bench_open(report: Report, work: Path, quick: bool) -> None:
    """lm.open with each engine against lm.load (benchmarks/open_cost.py)."""
    from open_cost import bench_open

    work.mkdir()
    bench_open(report, work, quick)


def worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden options by which a benchmark runs one sample in a fresh process of itself."""
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=int, default=0, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; no timing targets")
    parser.add_argument(
        "--only",
        help=(
            "comma-separated: import,load_ext,frame,small,anndata,registry,lifecycle,"
            "concurrency,open,tracking"
        ),
    )
    worker_arguments(parser)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.worker:
        print(json.dumps(worker(args.worker, sizes, args.work, args.sample)))
        return 0
    only = set(args.only.split(",")) if args.only else None
    work = Path(tempfile.mkdtemp(prefix="lamin-bench-"))
    os.environ["XDG_DATA_HOME"] = str(work / "xdg")  # never touch the user's default instance
    print(f"# lamin_magic benchmarks{' (--quick: no targets)' if args.quick else ''}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}"
    )
    print(f"versions: {versions_line()}")
    print(
        f"medians of {sizes.repeats} fresh-process samples per side ({max(9, sizes.repeats)} for "
        "AnnData), interleaved; the page cache is flushed (os.sync) before each sample\n"
    )
    print("| measure | lamin_magic | raw | ratio | target | met | note |")
    print("|---|---|---|---|---|---|---|")
    report = Report()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("import", lambda: bench_import(report, sizes)),
        ("load_ext", lambda: bench_load_ext(report, sizes, work)),
        ("frame", lambda: bench_frame(report, sizes, work, args.quick)),
        ("small", lambda: bench_small(report, sizes, work, args.quick)),
        ("anndata", lambda: bench_anndata(report, sizes, work, args.quick)),
        ("registry", lambda: bench_registry(report, sizes, work)),
        ("lifecycle", lambda: bench_lifecycle(report, sizes, work)),
        ("concurrency", lambda: bench_concurrency(report, sizes, work)),
        ("open", lambda: bench_open(report, work / "open", args.quick)),
        ("tracking", lambda: bench_tracking(report, sizes, work)),
    ]
    try:
        for name, step in steps:
            if only is None or name in only:
                step()
    finally:
        if "lamin_magic.tracking" in sys.modules:
            # a run this process tracked ends before its instance is removed (else its end,
            # recorded at exit, finds no registry and says so)
            from lamin_magic import tracking

            tracking.finish_recorders()
            tracking.finish_at_exit()
            tracking.context.run = None
        shutil.rmtree(work, ignore_errors=True)
    if args.quick:
        return 0
    missed = [r.measure for r in report.rows if r.ok is False]
    print(f"\n{len(missed)} targets missed" + (": " + "; ".join(missed) if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
