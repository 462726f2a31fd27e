"""lm.open against lm.load: two columns and about 1 % of the rows of a large DataFrame.

    python benchmarks/open_cost.py            # 10 M rows (~1.08 GiB in memory), 3 samples
    python benchmarks/open_cost.py --quick    # 200 k rows, 1 sample: a few seconds
    python benchmarks/open_cost.py --only polars,duckdb
    python benchmarks/run.py --only open      # the same rows inside run.py's table

The frame of benchmarks/run.py is saved once; then each sample, in a fresh process, reads the
columns f1 and s of the rows where f1 > 2.3263 (1 % of a normal distribution) into a pandas
DataFrame: through `lm.open(engine=...)` and that engine's lazy query, or through `lm.load`
and pandas filtering (the baseline). Both verify the stored bytes first, as by default; one
more row opens with `verify=False` to show what the hash costs. Libraries are imported and the
instance opened before the clock starts. Extra peak memory is the process's peak resident set
(`getrusage(RUSAGE_SELF).ru_maxrss`, which sees arrow's and polars' own allocations, unlike
tracemalloc) minus its resident set just before the work. The sides are interleaved (load,
pyarrow, polars, ...; again), dirty pages flushed before each (os.sync); the stored file is in
the page cache for all of them. Medians. The machine is shared and has 2 cores: compare ratios
within one run, not times across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Report, Row, make_frame  # noqa: E402  (run.py's frame and table)

FULL_ROWS, QUICK_ROWS = 10_000_000, 200_000
THRESHOLD = 2.3263  # P(normal > this) = 1 %
COLUMNS = ["f1", "s"]
# what each sample does, and the library it imports before the clock starts
OPS = {
    "load": "pandas",
    "pyarrow": "pyarrow.dataset",
    "pyarrow_unverified": "pyarrow.dataset",
    "polars": "polars",
    "duckdb": "duckdb",
}
ENGINES = ("pyarrow", "polars", "duckdb")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read_two_columns(op: str) -> Any:
    """The 1 % of rows and two columns, as a pandas DataFrame, the way `op` gets them."""
    import lamin_magic as lm

    if op == "load":
        df = lm.load("big")
        return df.loc[df["f1"] > THRESHOLD, COLUMNS]
    if op.startswith("pyarrow"):
        import pyarrow.dataset as ds

        dataset = lm.open("big", verify=op == "pyarrow")
        return dataset.to_table(columns=COLUMNS, filter=ds.field("f1") > THRESHOLD).to_pandas()
    if op == "polars":
        import polars as pl

        lazy = lm.open("big", engine="polars")
        return lazy.filter(pl.col("f1") > THRESHOLD).select(COLUMNS).collect().to_pandas()
    if op == "duckdb":
        relation = lm.open("big", engine="duckdb")
        return relation.filter(f"f1 > {THRESHOLD}").project(", ".join(COLUMNS)).df()
    raise SystemExit(f"unknown op {op}")


def worker(op: str, work: Path, rows: int) -> dict[str, Any]:
    import importlib

    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import lamin_magic as lm
    from lamin_magic import tracking

    with contextlib.redirect_stdout(io.StringIO()):
        lm.init(work / "instance")
        if op == "setup":
            lm.add(lm.File(make_frame(rows), name="big"))
            return {}
        tracking.track()
    importlib.import_module(OPS[op])
    os.sync()
    before = rss()
    t0 = time.perf_counter()
    result = read_two_columns(op)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"seconds": seconds, "extra_bytes": peak - before, "shape": list(result.shape)}


def run_worker(op: str, work: Path, rows: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--worker", op, "--work", str(work)]
    out = subprocess.run([*cmd, "--rows", str(rows)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_open(report: Report, work: Path, quick: bool, engines: tuple[str, ...] = ENGINES) -> None:
    rows, repeats = (QUICK_ROWS, 1) if quick else (FULL_ROWS, 3)
    run_worker("setup", work, rows)
    ops = ["load", *engines] + (["pyarrow_unverified"] if "pyarrow" in engines else [])
    samples: dict[str, list[dict[str, Any]]] = {op: [] for op in ops}
    for _ in range(repeats):
        for op in ops:
            samples[op].append(run_worker(op, work, rows))
    shapes = {tuple(s["shape"]) for runs in samples.values() for s in runs}
    assert len(shapes) == 1, f"the engines read different rows: {shapes}"
    (shape,) = shapes

    def med(op: str, key: str) -> float:
        return median(s[key] for s in samples[op])

    load_s, load_mib = med("load", "seconds"), med("load", "extra_bytes") / 2**20
    what = f"{shape[0]:,} of {rows:,} rows, 2 columns"
    for op in ops[1:]:
        engine = op.removesuffix("_unverified")
        label = f"lm.open(engine={engine!r}{', verify=False' if op != engine else ''})"
        seconds, mib = med(op, "seconds"), med(op, "extra_bytes") / 2**20
        report.add(
            Row(
                f"{label} then {what} / lm.load then pandas filter",
                seconds,
                load_s,
                "s",
                "< 1",
                None if quick else seconds < load_s,
            )
        )
        report.add(
            Row(
                f"extra peak memory, {label} / lm.load",
                mib,
                load_mib,
                "MiB",
                "< 0.10",
                None if quick else mib < 0.10 * load_mib,
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 k rows, 1 sample; no targets")
    parser.add_argument("--only", help=f"comma-separated engines: {','.join(ENGINES)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.work, args.rows)))
        return 0
    engines = tuple(args.only.split(",")) if args.only else ENGINES
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; use {','.join(ENGINES)}")
    work = Path(tempfile.mkdtemp(prefix="lamin-bench-open-"))
    os.environ["XDG_DATA_HOME"] = str(work / "xdg")  # never touch the user's default instance
    print("| measure | lm.open | lm.load | ratio | target | met | note |")
    print("|---|---|---|---|---|---|---|")
    report = Report()
    try:
        bench_open(report, work, args.quick, engines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    missed = [r.measure for r in report.rows if r.ok is False]
    if not args.quick:
        print(f"\n{len(missed)} targets missed" + (": " + "; ".join(missed) if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
