"""Team instances (PostgreSQL registry, objects in an S3 bucket) against the raw libraries doing
the same work, in one run: a table of ratios.

    python benchmarks/team.py            # 1 GiB frame, 1 M registry rows, 8 x 100 saves (~5 min)
    python benchmarks/team.py --quick    # small sizes, same code paths, well under a minute
    python benchmarks/team.py --only save,load   # a part again: save,load,registry,concurrency

A throwaway PostgreSQL 15 and a SeaweedFS S3 server (tests/servers.py) run on 127.0.0.1, on the
same cores as the client. Each timed sample of a save or a load runs in a fresh process, with
pandas, pyarrow, obstore and s3fs imported, the instance joined and the run recorded before the
clock starts; the sides are interleaved and their order rotated each round; medians of 3
samples. Dirty pages are flushed (os.sync) before each sample. "Cold" means an empty
lamin_magic cache (a fresh cache folder), not a dropped page cache. Below the table: where a
save's and a load's time went (lamin_magic's steps, timed by wrapping them in the worker).

1. save of a DataFrame (full: run.py's 10 M-row frame, 1.08 GiB in memory) with `lm.add`,
   against `df.to_parquet("s3://...")` (pandas through fsspec/s3fs) and against the raw client:
   `df.to_parquet(local file)` then obstore's `put` of that file (tests/s3_adapters.py); and,
   for comparison, what overlapping the write and the upload could give (`stream_save`);
2. its load: cold against `pd.read_parquet("s3://...")` and obstore's `get` to a local file +
   `pd.read_parquet`; warm (a cache hit) against `pd.read_parquet` of a local copy;
3. the registry part of a load, `files.get_file(name)`, among 1 M File rows, against one raw
   psycopg SELECT on an open connection (per-call medians);
4. 8 processes x 100 saves of small distinct frames into one instance, every other save a new
   version of one shared name: saves/s against 1 process saving as many alone, errors, gaps.

`--quick` asserts nothing about timings: it keeps this script working.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# this checkout's lamin_magic, not an installed one (a git worktree beside an editable install),
# here and in every process started below (PYTHONPATH, set in main)
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(HERE)]

from run import (  # noqa: E402
    PeakRSS,
    Report,
    Row,
    concurrent_saves,
    make_frame,
    worker_arguments,
)
from s3_adapters import CLIENTS  # noqa: E402
from s3_clients import versions_line as s3_versions_line  # noqa: E402
from servers import S3, create_database, postgres_server, s3_server  # noqa: E402

BUCKET = "bench"


@dataclass
class Sizes:
    rows: int  # the large DataFrame (10 M: ~1.08 GiB in memory, ~323 MiB parquet)
    registry_names: int  # File rows = names x versions
    registry_versions: int
    registry_calls: int  # timed lookups per process
    processes: int
    saves: int  # per process
    repeats: int


FULL = Sizes(10_000_000, 10_000, 100, 1_000, 8, 100, 3)
QUICK = Sizes(200_000, 1_000, 10, 100, 4, 10, 1)

SAVE_SIDES = ("pandas_save", "raw_save", "stream_save", "lm_save")
COLD_SIDES = ("pandas_cold", "raw_cold", "lm_cold")
WARM_SIDES = ("raw_warm", "lm_warm")


# --- what runs in a worker process ---------------------------------------------------------


def server_of(info: dict[str, Any]) -> S3:
    s3 = info["s3"]
    return S3(**s3 | {"folder": Path(s3["folder"]), "ports": tuple(s3["ports"])})


def s3_url(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


@contextlib.contextmanager
def timed_steps(steps: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in lamin_magic's steps of a save or a load to `steps`, by
    wrapping them (a clock read each: nothing measurable beside seconds of work)."""
    from lamin_magic import registry
    from lamin_magic.storage import backends, objects, objectstore

    def wrap(owner: Any, name: str, step: str) -> Callable[..., Any]:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                steps[step] = steps.get(step, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)
        return original

    originals = [
        (objects, "write_temp", wrap(objects, "write_temp", "write + hash + fsync")),
        (objectstore.ObjectStore, "stat", wrap(objectstore.ObjectStore, "stat", "HEAD/LIST")),
        (objectstore.ObjectStore, "upload", wrap(objectstore.ObjectStore, "upload", "upload")),
        (backends.Bucket, "keep", wrap(backends.Bucket, "keep", "into the cache")),
        (objectstore.ObjectStore, "download", wrap(objectstore.ObjectStore, "download", "GET")),
        (backends.Bucket, "local", wrap(backends.Bucket, "local", "cache fetch (GET + hash)")),
    ]
    original_transaction = registry.transaction

    @contextlib.contextmanager
    def transaction(to_disk: bool = True) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            with original_transaction(to_disk):
                yield
        finally:
            steps["registry transaction"] = (
                steps.get("registry transaction", 0.0) + time.perf_counter() - t0
            )

    registry.transaction = transaction  # type: ignore[assignment]
    try:
        yield
    finally:
        registry.transaction = original_transaction  # type: ignore[assignment]
        for owner, name, original in originals:
            setattr(owner, name, original)


def worker(op: str, sizes: Sizes, work: Path, sample: int) -> dict[str, Any]:
    """One sample of one operation: seconds, extra peak memory, and its steps."""
    # every side starts with the libraries imported: the timings are of the work, not imports
    import obstore  # noqa: F401
    import pandas as pd
    import pyarrow.parquet  # noqa: F401
    import s3fs  # noqa: F401  (what pandas' s3:// goes through)

    import lamin_magic as lm

    assert Path(lm.__file__).parent == REPO / "lamin_magic", lm.__file__  # this checkout's
    info = json.loads((work / "info.json").read_text())
    server = server_of(info)
    load = os.getloadavg()[0]
    if op == "registry":
        return registry_worker(sizes, info) | {"load": load}
    steps: dict[str, float] = {}
    df = None
    if op.endswith("_save"):
        df = make_frame(sizes.rows)
        df.iloc[0, 3] = sample  # new content every sample: a real write, never a dedup hit
    # the raw client is made before the clock
    raw = CLIENTS["obstore"](server) if op.startswith(("raw", "stream")) else None
    if op.startswith("lm"):
        lm.init(db=info["db"]["frame"])
        lm.track()  # the run a save records exists already, as in a kernel with the extension
    big = info.get("big", {})
    local = work / f"{op}-{sample}.parquet"
    key = f"{op}/{sample}.parquet"
    os.sync()
    timing = timed_steps(steps) if op.startswith("lm") else contextlib.nullcontext()
    with PeakRSS() as mem, timing:
        t0 = time.perf_counter()
        if op == "lm_save":
            lm.add(lm.File(df, name="big"))
        elif op == "pandas_save":
            assert df is not None
            df.to_parquet(s3_url(key), storage_options=server.storage_options())
        elif op == "raw_save":
            assert df is not None and raw is not None
            df.to_parquet(local)
            steps["to_parquet"] = time.perf_counter() - t0
            raw.upload_file(local, key)
            steps["put"] = time.perf_counter() - t0 - steps["to_parquet"]
        elif op == "stream_save":
            assert df is not None and raw is not None
            stream_save(df, local, raw.store, key)
        elif op in ("lm_cold", "lm_warm"):
            out = lm.load("big")
        elif op == "pandas_cold":
            out = pd.read_parquet(s3_url(big["key"]), storage_options=server.storage_options())
        elif op == "raw_cold":
            assert raw is not None
            raw.download_file(big["key"], local)
            steps["get"] = time.perf_counter() - t0
            out = pd.read_parquet(local)
        elif op == "raw_warm":
            out = pd.read_parquet(work / "frame.parquet")
        else:
            raise SystemExit(f"unknown op {op}")
        seconds = time.perf_counter() - t0
    if op.endswith(("_cold", "_warm")):
        assert len(out) == sizes.rows, len(out)
    local.unlink(missing_ok=True)
    if op in ("pandas_save", "raw_save", "stream_save"):  # the bytes are there, then gone
        check = CLIENTS["obstore"](server)
        assert check.list(key) == [key], check.list(key)
        check.delete(key)
    return {"seconds": seconds, "extra": mem.extra, "steps": steps, "load": load}


def stream_save(df: Any, local: Path, store: Any, key: str) -> None:
    """For comparison, what overlapping the write with the upload could give: pyarrow writes
    once, and every buffer goes at once to a local file, BLAKE3 and obstore's multipart writer
    (which uploads 8 MiB parts, 12 at a time, in the background). No fsync, no fidelity checks:
    a bound, not a save."""
    import io

    import blake3
    import obstore
    import pyarrow as pa
    import pyarrow.parquet as pq

    class Tee(io.RawIOBase):
        def __init__(self, file: Any, upload: Any) -> None:
            super().__init__()
            self.file, self.upload, self.hash = file, upload, blake3.blake3()

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.file.write(data)
            self.hash.update(data)
            self.upload.write(data)
            return len(data)

    with (
        open(local, "wb") as file,
        obstore.open_writer(store, key, buffer_size=8 << 20) as upload,
        pa.output_stream(Tee(file, upload), buffer_size=2 << 20) as out,
    ):
        pq.write_table(pa.Table.from_pandas(df), out)


def registry_worker(sizes: Sizes, info: dict[str, Any]) -> dict[str, Any]:
    """Per-call seconds of `get_file(name)` and of one raw SELECT, interleaved call by call;
    then of `get_file` + `record_input` (what a load writes: the file is an input of the run)."""
    import psycopg

    import lamin_magic as lm
    from lamin_magic import files

    url = info["db"]["registry"]
    lm.init(db=url)
    lm.track()
    con = psycopg.connect(url, autocommit=True)
    query = "SELECT * FROM file WHERE name = %s ORDER BY version DESC LIMIT 1"
    n = sizes.registry_names
    step = max(1, n // sizes.registry_calls)
    names = [f"name-{i:06d}" for i in range(0, n, step)][: sizes.registry_calls]
    for name in names[:50]:  # warm up: connections, prepared statements, the index's pages
        files.get_file(name)
        con.execute(query, (name,)).fetchone()
    ours, raw, with_input = [], [], []
    for name in names:
        t0 = time.perf_counter()
        found = files.get_file(name)
        t1 = time.perf_counter()
        row = con.execute(query, (name,)).fetchone()
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        raw.append(t2 - t1)
        assert found.version == sizes.registry_versions and row is not None
        assert row[2] == found.version  # id, name, version, ...
    for name in names:
        t0 = time.perf_counter()
        files.record_input(files.get_file(name))
        with_input.append(time.perf_counter() - t0)
    con.close()
    return {
        "ours": statistics.median(ours),
        "raw": statistics.median(raw),
        "with_input": statistics.median(with_input),
        "calls": len(names),
    }


# --- the parent ------------------------------------------------------------------------------


def run_worker(
    op: str, sizes: Sizes, work: Path, sample: int, quick: bool, env: dict[str, str]
) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--worker", op, "--work", str(work)]
    cmd += ["--sample", str(sample)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rounds(
    sides: tuple[str, ...],
    sizes: Sizes,
    work: Path,
    quick: bool,
    env: Callable[[str, int], dict[str, str]],
) -> dict[str, list[dict[str, Any]]]:
    """Samples of every side, interleaved, the order rotated each round."""
    got: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for sample in range(sizes.repeats):
        k = sample % len(sides)
        for side in sides[k:] + sides[:k]:
            got[side].append(run_worker(side, sizes, work, sample, quick, env(side, sample)))
    return got


def med(samples: list[dict[str, Any]], key: str = "seconds") -> float:
    return statistics.median(s[key] for s in samples)


def listed(samples: list[dict[str, Any]]) -> str:
    return "samples " + ", ".join(f"{s['seconds']:.2f}" for s in samples) + " s"


def steps_line(samples: list[dict[str, Any]]) -> str:
    names = sorted(
        {k for s in samples for k in s["steps"]}, key=lambda k: -samples[0]["steps"].get(k, 0.0)
    )
    return ", ".join(
        f"{k} {statistics.median(s['steps'].get(k, 0.0) for s in samples):.2f} s" for k in names
    )


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, pg: Any, s3: S3) -> None:
        self.quick = args.quick
        self.sizes = QUICK if args.quick else FULL
        self.work, self.pg, self.s3 = work, pg, s3
        self.report = Report()
        self.notes: list[str] = []
        self.loads: list[float] = []
        self.info: dict[str, Any] = {
            "s3": {
                k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(s3).items()
            },
            "db": {},
        }

    def save_info(self) -> None:
        (self.work / "info.json").write_text(json.dumps(self.info))

    def new_instance(self, name: str) -> str:
        """A fresh database and prefix `name/` of the bucket, made a team instance (in a
        process of its own: this one never opens lamin_magic)."""
        url = create_database(self.pg, name)
        code = "import sys, lamin_magic as lm; lm.init(sys.argv[1], db=sys.argv[2])"
        subprocess.run(
            [sys.executable, "-c", code, s3_url(name), url], check=True, capture_output=True
        )
        self.info["db"][name] = url
        self.save_info()
        return url

    def cache_env(self, side: str, sample: int) -> dict[str, str]:
        """The lamin_magic cache a side uses: one shared folder, or a fresh one (cold)."""
        if side == "lm_cold":
            return {"LAMIN_MAGIC_CACHE": str(self.work / f"cold-cache-{sample}")}
        return {"LAMIN_MAGIC_CACHE": str(self.work / "cache")}

    def collect(self, samples: dict[str, list[dict[str, Any]]]) -> None:
        self.loads += [s["load"] for got in samples.values() for s in got]

    def add(self, row: Row) -> None:
        self.report.add(row)

    # -- 1. save ----------------------------------------------------------------------------

    def save(self) -> None:
        if "frame" not in self.info["db"]:
            self.new_instance("frame")
        s = self.sizes
        got = rounds(SAVE_SIDES, s, self.work, self.quick, self.cache_env)
        self.collect(got)
        ours, pandas, raw = med(got["lm_save"]), med(got["pandas_save"]), med(got["raw_save"])
        what = f"DataFrame {s.rows:,} rows"
        self.add(
            Row(
                f"save, {what}: lm.add / df.to_parquet('s3://...') (pandas, fsspec/s3fs)",
                ours,
                pandas,
                "s",
                "< 1",
                ours < pandas,
                f"{listed(got['lm_save'])} / {listed(got['pandas_save'])}",
            )
        )
        self.add(
            Row(
                f"save, {what}: lm.add / df.to_parquet(local) + obstore put",
                ours,
                raw,
                "s",
                "<= 1.1",
                ours / raw <= 1.1,
                f"{listed(got['raw_save'])}",
            )
        )
        stream = med(got["stream_save"])
        self.add(
            Row(
                "for comparison: pyarrow writing into a local file, BLAKE3 and obstore's "
                "multipart writer at once / df.to_parquet(local) + obstore put",
                stream,
                raw,
                "s",
                "",
                None,
                f"{listed(got['stream_save'])}; write and upload overlapped (stream_save)",
            )
        )
        mem = {k: med(v, "extra") / 2**20 for k, v in got.items()}
        self.add(
            Row(
                "extra peak memory during the save / during to_parquet(local) + put",
                mem["lm_save"],
                mem["raw_save"],
                "MiB",
                "",
                None,
                f"pandas to s3:// {mem['pandas_save']:.0f} MiB, stream_save "
                f"{mem['stream_save']:.0f} MiB",
            )
        )
        self.notes.append(f"save steps, lamin_magic (medians): {steps_line(got['lm_save'])}")
        self.notes.append(f"save steps, raw (medians): {steps_line(got['raw_save'])}")

    # -- 2. load ----------------------------------------------------------------------------

    def load(self) -> None:
        if "frame" not in self.info["db"]:
            self.save()
        import psycopg

        with psycopg.connect(self.info["db"]["frame"]) as con:
            key, size = con.execute(
                "SELECT key, size FROM file WHERE name = 'big' ORDER BY version DESC LIMIT 1"
            ).fetchone()
        self.info["big"] = {"key": f"frame/{key}", "size": size}
        self.save_info()
        # the raw warm side reads a local copy of the same bytes
        CLIENTS["obstore"](self.s3).download_file(f"frame/{key}", self.work / "frame.parquet")
        s = self.sizes
        what = f"DataFrame {s.rows:,} rows ({size / 2**20:.0f} MiB parquet)"

        got = rounds(COLD_SIDES, s, self.work, self.quick, self.cache_env)
        for sample in range(s.repeats):
            shutil.rmtree(self.work / f"cold-cache-{sample}", ignore_errors=True)
        self.collect(got)
        ours, pandas, raw = med(got["lm_cold"]), med(got["pandas_cold"]), med(got["raw_cold"])
        self.add(
            Row(
                f"cold load (empty cache), {what}: lm.load / pd.read_parquet('s3://...')",
                ours,
                pandas,
                "s",
                "",
                None,
                f"{listed(got['lm_cold'])} / {listed(got['pandas_cold'])}",
            )
        )
        self.add(
            Row(
                "cold load: lm.load / obstore get to a file + pd.read_parquet(file)",
                ours,
                raw,
                "s",
                "",
                None,
                listed(got["raw_cold"]),
            )
        )
        self.notes.append(f"cold load steps, lamin_magic (medians): {steps_line(got['lm_cold'])}")
        self.notes.append(f"cold load steps, raw (medians): {steps_line(got['raw_cold'])}")
        got = rounds(WARM_SIDES, s, self.work, self.quick, self.cache_env)
        self.collect(got)
        ours, raw = med(got["lm_warm"]), med(got["raw_warm"])
        self.add(
            Row(
                "warm load (cache hit): lm.load / pd.read_parquet(local copy)",
                ours,
                raw,
                "s",
                "",
                None,
                f"{listed(got['lm_warm'])} / {listed(got['raw_warm'])}",
            )
        )
        self.notes.append(f"warm load steps, lamin_magic (medians): {steps_line(got['lm_warm'])}")
        (self.work / "frame.parquet").unlink()

    # -- 3. registry ------------------------------------------------------------------------

    def registry(self) -> None:
        import psycopg

        s = self.sizes
        url = self.new_instance("registry")
        n = s.registry_names * s.registry_versions
        began = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as con:
            (storage,) = con.execute("SELECT id FROM storage").fetchone()
            user = con.execute('SELECT id FROM "user"').fetchone()
            con.execute(
                "INSERT INTO file (id, name, version, suffix, size, hash, hash_type, key,"
                " storage_id, created_by_id, created_at)"
                " SELECT lpad(i::text, 20, '0'), 'name-' || lpad((i / %(v)s)::text, 6, '0'),"
                " i %% %(v)s + 1, '.parquet', 1000 + i, lpad(i::text, 22, '0'), 'blake3',"
                " lpad(i::text, 20, '0') || '.parquet', %(storage)s, %(user)s, %(now)s"
                " FROM generate_series(0, %(n)s - 1) AS i",
                {
                    "v": s.registry_versions,
                    "n": n,
                    "storage": storage,
                    "user": user[0] if user else None,
                    "now": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                },
            )
            con.execute("VACUUM ANALYZE file")
        filled = time.perf_counter() - began
        samples = [
            run_worker("registry", s, self.work, i, self.quick, {}) for i in range(s.repeats)
        ]
        self.loads += [x["load"] for x in samples]
        ours, raw = med(samples, "ours") * 1000, med(samples, "raw") * 1000
        calls = samples[0]["calls"]
        self.add(
            Row(
                f"registry part of a load: files.get_file(name), {n:,} File rows / raw psycopg "
                "SELECT on an open connection",
                ours,
                raw,
                "ms",
                "",
                None,
                f"per-call medians of {calls} names x {len(samples)} processes; rows filled "
                f"in {filled:.1f} s",
            )
        )
        with_input = med(samples, "with_input") * 1000
        self.add(
            Row(
                "get_file + record_input (what a load asks and writes) / the raw SELECT",
                with_input,
                raw,
                "ms",
                "",
                None,
                "record_input: one autocommitted insert, once per run and file",
            )
        )

    # -- 4. concurrency ---------------------------------------------------------------------

    def concurrency(self) -> None:
        import psycopg

        s = self.sizes
        total = s.processes * s.saves
        spans: dict[str, tuple[float, int]] = {}
        for name, processes, saves in (("one", 1, total), ("many", s.processes, s.saves)):
            url = self.new_instance(name)
            spans[name] = self.concurrent_saves(url, processes, saves)
        one_span, one_errors = spans["one"]
        many_span, many_errors = spans["many"]
        one_rate, many_rate = total / one_span, total / many_span
        with psycopg.connect(self.info["db"]["many"]) as con:
            versions = [
                v
                for (v,) in con.execute(
                    "SELECT version FROM file WHERE name = 'shared' ORDER BY version"
                )
            ]
            (rows,) = con.execute("SELECT COUNT(*) FROM file").fetchone()
        from lamin_magic.storage.objectstore import MARKER

        # the stored objects: every key but the instance's mark (`.lamin-team`)
        keys = CLIENTS["obstore"](self.s3).list("many/")
        objects = sum(1 for key in keys if not key.endswith(MARKER))
        shared = s.processes * len(range(0, s.saves, 2))
        intact = versions == list(range(1, shared + 1)) and rows == total == objects
        errors = one_errors + many_errors
        gaps = "without gaps" if intact else "WITH GAPS OR LOSSES"
        self.add(
            Row(
                f"{s.processes} processes x {s.saves} saves of small frames into one instance "
                f"/ 1 process x {total}",
                many_rate,
                one_rate,
                "/s",
                "0 errors, no gaps",
                errors == 0 and intact,
                f"wall {many_span:.1f} s / {one_span:.1f} s; {errors} errors; versions of "
                f"'shared' 1..{len(versions)} {gaps}; {rows} records, {objects} objects",
            )
        )

    def concurrent_saves(self, url: str, processes: int, saves: int) -> tuple[float, int]:
        """Wall seconds from the first process starting its saves to the last ending; errors."""
        env = os.environ | {"LAMIN_MAGIC_CACHE": str(self.work / "cache-concurrency")}
        return concurrent_saves(
            url,
            processes,
            saves,
            every=2,
            env=env,
            when_ready=lambda: self.loads.append(os.getloadavg()[0]),
        )


def versions_line() -> str:
    names = ("lamin_magic", "pandas", "pyarrow", "obstore", "s3fs", "psycopg", "peewee")
    return s3_versions_line(names)


def lamin_magic_folder() -> str:
    """Where the processes started below import lamin_magic from (as they do)."""
    code = "import lamin_magic, os; print(os.path.dirname(lamin_magic.__file__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    return out.stdout.strip()


def postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as con:
        return str(con.execute("SHOW server_version").fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; no timing targets")
    parser.add_argument("--only", help="comma-separated: save,load,registry,concurrency")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.worker:
        print(json.dumps(worker(args.worker, sizes, args.work, args.sample)))
        return 0
    parts = args.only.split(",") if args.only else ["save", "load", "registry", "concurrency"]
    work = Path(tempfile.mkdtemp(prefix="lamin-bench-team-"))
    saved_env = dict(os.environ)
    began = time.perf_counter()
    try:
        with postgres_server() as pg, s3_server(BUCKET) as s3:
            os.environ.update(
                AWS_ENDPOINT_URL=s3.endpoint,
                AWS_ACCESS_KEY_ID=s3.key_id,
                AWS_SECRET_ACCESS_KEY=s3.secret,
                AWS_REGION=s3.region,
                XDG_DATA_HOME=str(work / "xdg"),  # never the user's default instance
                XDG_CACHE_HOME=str(work / "xdg-cache"),
                LAMIN_MAGIC_USER="bench-" + secrets.token_hex(3),
            )
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
            )
            for name in ("LAMIN_MAGIC_DB", "LAMIN_MAGIC_ROOT", "LAMIN_MAGIC_DURABILITY"):
                os.environ.pop(name, None)
            bench = Bench(args, work, pg, s3)
            bench.save_info()
            print(f"# Team instances{' (--quick: no targets)' if args.quick else ''}")
            print(
                f"machine: {platform.machine()}, {os.cpu_count()} cores, "
                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
                f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} "
                "at start"
            )
            print(f"versions: {versions_line()}, PostgreSQL {postgres_version(pg.url)}")
            print(f"lamin_magic from {lamin_magic_folder()}")
            print(
                f"servers on 127.0.0.1, on the same cores: PostgreSQL started in "
                f"{pg.started_in:.1f} s, SeaweedFS `weed mini` in {s3.started_in:.1f} s"
            )
            print(
                f"medians of {sizes.repeats} fresh-process samples per side, interleaved, order "
                "rotated each round; os.sync() before each sample\n"
            )
            print("| measure | lamin_magic | raw | ratio | target | met | note |")
            print("|---|---|---|---|---|---|---|")
            steps: dict[str, Callable[[], None]] = {
                "save": bench.save,
                "load": bench.load,
                "registry": bench.registry,
                "concurrency": bench.concurrency,
            }
            for part in parts:
                steps[part]()
            print()
            for note in bench.notes:
                print(f"- {note}")
            if bench.loads:
                print(
                    f"- load average (1 min) at sample starts: {min(bench.loads):.1f} to "
                    f"{max(bench.loads):.1f}, median {statistics.median(bench.loads):.1f}; "
                    f"{os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - began:.0f} s "
                    "in all"
                )
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(work, ignore_errors=True)
    if args.quick:
        return 0
    missed = [r.measure for r in bench.report.rows if r.ok is False]
    print(f"\n{len(missed)} targets missed" + (": " + "; ".join(missed) if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
