"""Which S3 client for team instances: upload and download of the same parquet file and of the
same zarr folder through each candidate, against the local SeaweedFS of tests/servers.py.

    python benchmarks/s3_clients.py            # a ~1 GiB parquet file (about 15 minutes here)
    python benchmarks/s3_clients.py --quick    # a ~20 MB parquet file; the same zarr folder
    python benchmarks/s3_clients.py --only parquet,pandas   # a part again (noisy machine)

Every sample runs in a fresh process; the clients are interleaved (and their order rotated each
round), medians of 3. Dirty pages are flushed (os.sync) before each sample. Downloads read one
reference object uploaded once (so every client reads the same bytes in the same layout);
uploads go to a new key each time and are checked (size, or file count) and deleted after.
Downloads are checked against the source's BLAKE3 hash, outside the timing.
Each library is used with its defaults for a single object; for folders, where the caller picks
the concurrency, 8 threads (boto3) or 16 tasks (obstore), pyarrow's and s3fs's own batching.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]

from run import PeakRSS, make_anndata, make_frame, worker_arguments  # noqa: E402
from s3_adapters import CLIENTS, Client, local_files  # noqa: E402
from servers import S3, s3_server  # noqa: E402

ROWS_PER_BYTE = 10_000_000 / 488e6  # make_frame's parquet: 488 MB for 10 M rows
FULL_BYTES, QUICK_BYTES = 2**30, 20e6
PANDAS_ROWS = 10_000_000  # the full run's frame for pandas: 1.08 GiB in memory, ~490 MB parquet
# (the 1 GiB file holds ~32 M rows: reading it into pandas would take ~11 GiB on a shared machine)
ANNDATA = (100_000, 2_000)  # write_zarr: ~195 files, ~24 MB
REPEATS = 3
PANDAS_WAYS = ("local", "s3fs", "pyarrow")  # where df.to_parquet / pd.read_parquet go
COLUMNS = (
    "operation", "client", "time", "rate", "extra peak RSS", "peak RSS", "import + client",
    "samples (s)",
)  # fmt: skip
OPS = {
    "parquet": ("upload parquet", "download parquet"),
    "zarr": ("upload zarr", "download zarr"),
    "pandas": ("df.to_parquet", "pd.read_parquet"),
}


def tree_hash(path: Path) -> str:
    """BLAKE3 of a file, or of a folder's sorted relative paths and contents."""
    import blake3

    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if path.is_file():
        h.update_mmap(path)
        return h.hexdigest()
    for p in local_files(path):
        h.update(str(p.relative_to(path)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


# --- a worker: one timed operation in a fresh process ----------------------------------------


def worker(op: str, way: str, sample: int, work: Path) -> dict[str, Any]:
    info = json.loads((work / "info.json").read_text())
    server = S3(**info["server"] | {"folder": Path(info["server"]["folder"])})
    began = time.perf_counter()
    client = CLIENTS[way](server) if way in CLIENTS else None  # import + construction
    setup = time.perf_counter() - began
    out = work / f"out-{way}-{sample}"
    key = f"up/{way}/{sample}"
    if op in ("df.to_parquet", "pd.read_parquet"):
        return pandas_worker(op, way, server, work, key) | {"setup": setup}
    assert client is not None
    source = work / ("data.parquet" if "parquet" in op else "data.zarr")
    os.sync()
    with PeakRSS() as mem:
        began = time.perf_counter()
        if op == "upload parquet":
            client.upload_file(source, key + "/data.parquet")
        elif op == "download parquet":
            client.download_file("ref/data.parquet", out)
        elif op == "upload zarr":
            client.upload_folder(source, key + "/data.zarr")
        else:
            client.download_folder("ref/data.zarr", out)
        seconds = time.perf_counter() - began
    peak = maxrss()  # before the checks below map or read the whole object
    if op.startswith("download"):
        assert tree_hash(out) == info["hash"][source.name], f"{way}: downloaded bytes differ"
    else:
        uploaded = client.list(key + "/")
        if source.is_file():
            assert len(client.get(uploaded[0])) == source.stat().st_size
        else:
            assert len(uploaded) == len(local_files(source)), (len(uploaded), way)
        for k in uploaded:
            client.delete(k)
    return {"seconds": seconds, "setup": setup, "extra": mem.extra, "maxrss": peak}


def pandas_worker(op: str, way: str, server: S3, work: Path, key: str) -> dict[str, Any]:
    import pandas as pd

    local = work / "frame.parquet"
    if way == "local":
        target: str = str(work / f"{key.replace('/', '-')}.parquet")
        kwargs: dict[str, Any] = {}
    else:
        target = f"s3://{server.bucket}/{key}/data.parquet"
        source = f"s3://{server.bucket}/ref/frame.parquet"
        if way == "s3fs":  # fsspec, as `s3://` URLs go by default
            kwargs = {"storage_options": server.storage_options()}
        else:  # pyarrow's own filesystem
            kwargs = {"filesystem": CLIENTS["pyarrow"](server).fs}
            target, source = target[5:], source[5:]
    df = pd.read_parquet(local) if op == "df.to_parquet" else None
    os.sync()
    with PeakRSS() as mem:
        began = time.perf_counter()
        if df is not None:
            df.to_parquet(target, **kwargs)
        else:
            df = pd.read_parquet(str(local) if way == "local" else source, **kwargs)
        seconds = time.perf_counter() - began
    if op == "df.to_parquet" and way == "local":
        Path(target).unlink()
    return {"seconds": seconds, "extra": mem.extra, "maxrss": maxrss(), "rows": len(df)}


def maxrss() -> int:
    """This process's peak resident set (VmHWM: ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# --- the parent ------------------------------------------------------------------------------


def run_worker(op: str, way: str, sample: int, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--worker", op, "--way", way]
    cmd += ["--sample", str(sample), "--work", str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{op} via {way} failed:\n{out.stderr[-3000:]}")
    shutil.rmtree(work / f"out-{way}-{sample}", ignore_errors=True)
    (work / f"out-{way}-{sample}").unlink(missing_ok=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(work: Path, server: S3, quick: bool, parts: list[str]) -> dict[str, Any]:
    """The parquet file, the zarr folder, pandas' frame; their reference copies in the bucket."""
    parquet, zarr, frame = work / "data.parquet", work / "data.zarr", work / "frame.parquet"
    wanted = QUICK_BYTES if quick else FULL_BYTES
    rows = int(wanted * ROWS_PER_BYTE)
    for _ in range(2):  # bytes per row grow with the row count (longer strings): aim twice
        make_frame(rows).to_parquet(parquet)
        if abs(parquet.stat().st_size / wanted - 1) < 0.05:
            break
        rows = int(rows * wanted / parquet.stat().st_size)
    make_anndata(*ANNDATA).write_zarr(zarr)
    if quick:
        shutil.copy(parquet, frame)
    elif "pandas" in parts:
        make_frame(PANDAS_ROWS).to_parquet(frame)
    reference: Client = CLIENTS["obstore"](server)
    for path in (parquet, frame):
        if path.exists():
            reference.upload_file(path, f"ref/{path.name}")
    reference.upload_folder(zarr, "ref/data.zarr")
    info = {
        "server": {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(server).items()
        },
        "hash": {p.name: tree_hash(p) for p in (parquet, zarr)},
        "rows": rows,
        "parquet_bytes": parquet.stat().st_size,
        "frame_bytes": frame.stat().st_size if frame.exists() else 0,
        "zarr_bytes": sum(p.stat().st_size for p in local_files(zarr)),
        "zarr_files": len(local_files(zarr)),
    }
    (work / "info.json").write_text(json.dumps(info))
    return info


def measure(work: Path, parts: list[str], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for part in parts:
        ways = list(PANDAS_WAYS if part == "pandas" else CLIENTS)
        for op in OPS[part]:
            samples: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
            for sample in range(repeats):
                order = ways[sample % len(ways) :] + ways[: sample % len(ways)]  # rotate
                for way in order:
                    samples[way].append(run_worker(op, way, sample, work))
            for way in ways:
                got = samples[way]
                row = {"op": op, "way": way}
                for k in ("seconds", "setup", "extra", "maxrss"):
                    if all(k in s for s in got):
                        row[k] = statistics.median(s[k] for s in got)
                row["all"] = [round(s["seconds"], 2) for s in got]
                rows.append(row)
                print(format_row(row, json.loads((work / "info.json").read_text())), flush=True)
    return rows


def format_row(row: dict[str, Any], info: dict[str, Any]) -> str:
    size = info["zarr_bytes" if "zarr" in row["op"] else "parquet_bytes"]
    if row["op"].startswith(("df.", "pd.")):
        size = info["frame_bytes"]
    mib_s = size / 2**20 / row["seconds"]
    setup = f"{row['setup']:.2f} s" if "setup" in row else ""
    samples = ", ".join(f"{s:.2f}" for s in row["all"])
    return (
        f"| {row['op']} | {row['way']} | {row['seconds']:.2f} s | {mib_s:.0f} MiB/s | "
        f"{row['extra'] / 2**20:.0f} MiB | {row['maxrss'] / 2**20:.0f} MiB | {setup} | {samples} |"
    )


def versions_line(
    names: tuple[str, ...] = (
        "pyarrow",
        "obstore",
        "s3fs",
        "fsspec",
        "aiobotocore",
        "boto3",
        "pandas",
    ),
) -> str:
    import importlib.metadata as md

    weed = subprocess.run(
        [str(Path(sys.executable).parent / "weed"), "version"], capture_output=True, text=True
    ).stdout.split()
    return ", ".join(f"{n} {md.version(n)}" for n in names) + f", seaweedfs {weed[2]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~20 MB parquet file")
    parser.add_argument("--only", help="comma-separated: parquet,zarr,pandas")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    worker_arguments(parser)
    parser.add_argument("--way", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.way, args.sample, args.work)))
        return 0
    parts = args.only.split(",") if args.only else list(OPS)
    work = Path(tempfile.mkdtemp(prefix="lamin-bench-s3-"))
    try:
        with s3_server("bench") as server:
            began = time.perf_counter()
            info = prepare(work, server, args.quick, parts)
            print(f"# S3 clients{' (--quick)' if args.quick else ''}")
            print(
                f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start"
            )
            print(f"versions: {versions_line()}")
            print(
                f"data: parquet {info['parquet_bytes'] / 2**20:.0f} MiB ({info['rows']:,} rows); "
                f"zarr {info['zarr_files']} files, {info['zarr_bytes'] / 2**20:.0f} MiB "
                f"(AnnData {ANNDATA[0]:,} x {ANNDATA[1]:,}); pandas' frame "
                f"{info['frame_bytes'] / 2**20:.0f} MiB of parquet; prepared in "
                f"{time.perf_counter() - began:.0f} s"
            )
            print(
                f"SeaweedFS `weed mini` started in {server.started_in:.1f} s, on the same 2 cores"
            )
            print(f"medians of {args.repeats} fresh-process samples, clients interleaved\n")
            print(f"| {' | '.join(COLUMNS)} |")
            print("|---|---|---|---|---|---|---|---|")
            measure(work, parts, args.repeats)
            print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
