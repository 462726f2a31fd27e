"""The throwaway servers of tests/servers.py: they start, answer, refuse, and leave nothing."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest
from s3_adapters import CLIENTS
from servers import (
    S3,
    Postgres,
    group_alive,
    postgres_server,
    s3_request,
    s3_server,
    seaweed_sockets,
)

pytestmark = pytest.mark.team

START_LIMIT = 30.0  # seconds; measured ~0.7 s (PostgreSQL) and ~1.5 s (SeaweedFS) when quiet
STOP_LIMIT = 15.0  # seconds; measured ~0.2 s and ~2.5 s


def processes_using(folder: Path) -> list[int]:
    """Processes whose working directory or command line is in `folder` (PostgreSQL renames its
    children's command lines, but they work in the data folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if cwd.startswith(str(folder)) or str(folder) in cmdline:
            found.append(int(entry.name))
    return found


def assert_gone(server: Postgres | S3) -> None:
    assert not group_alive(server.pid)
    assert not server.folder.exists()
    assert processes_using(server.folder) == []


def timed_stop(started: float) -> float:
    return time.monotonic() - started


def test_postgres_starts_answers_and_leaves_nothing():
    import psycopg

    with postgres_server() as pg:
        assert pg.started_in < START_LIMIT
        assert pg.url.startswith("postgresql://postgres@127.0.0.1:")
        assert processes_using(pg.folder)  # the server and its children work in there
        with psycopg.connect(pg.url, connect_timeout=10) as con:
            con.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
            con.execute("INSERT INTO t VALUES (1, 'iris'), (2, 'pbmc')")
            assert con.execute("SELECT name FROM t ORDER BY id").fetchall() == [
                ("iris",),
                ("pbmc",),
            ]
            assert con.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        stopping = time.monotonic()
    assert timed_stop(stopping) < STOP_LIMIT
    assert_gone(pg)


def test_s3_starts_answers_and_leaves_nothing():
    with s3_server(bucket="solo") as s3:
        assert s3.started_in < START_LIMIT
        assert s3.endpoint.startswith("http://127.0.0.1:")
        assert seaweed_sockets(s3.ports)  # weed makes its gRPC sockets outside our folder...
        assert s3_request(s3, "PUT", "k", b"v")[0] == 200
        stopping = time.monotonic()
    assert timed_stop(stopping) < STOP_LIMIT
    assert seaweed_sockets(s3.ports) == []  # ...and they are removed
    assert_gone(s3)


def test_two_servers_of_each_kind_run_at_once():
    with s3_server() as a, s3_server() as b, postgres_server() as p, postgres_server() as q:
        assert not set(a.ports) & set(b.ports)
        assert p.port != q.port
        assert a.key_id != b.key_id and a.secret != b.secret
        assert s3_request(a, "PUT", "only-in-a", b"a")[0] == 200
        assert s3_request(b, "GET", "only-in-a")[0] == 404
        assert s3_request(a, "GET", "only-in-a", secret=b.secret)[0] == 403  # b's secret
    for server in (a, b, p, q):
        assert_gone(server)


def test_postgres_fixture_gives_fresh_databases(postgres_server, pg_url):
    import psycopg

    assert pg_url != postgres_server.url
    with psycopg.connect(pg_url, connect_timeout=10) as con:
        assert con.execute("SELECT current_database()").fetchone() == (pg_url.rsplit("/", 1)[1],)
        assert con.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)


def test_raw_signed_requests(s3_server, s3_bucket):
    """The stdlib signer in servers.py, against the server's auth."""
    assert s3_request(s3_server, "PUT", "a b/ü.txt", b"x", bucket=s3_bucket)[0] == 200
    status, body = s3_request(s3_server, "GET", "", bucket=s3_bucket, query={"list-type": "2"})
    assert status == 200 and "a b/ü.txt" in body.decode()
    assert s3_request(s3_server, "GET", "a b/ü.txt", bucket=s3_bucket, secret="wrong")[0] == 403
    assert s3_request(s3_server, "PUT", "x", b"x", bucket="t-" + secrets.token_hex(6))[0] == 404


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_put_get_list_delete(name, s3_server, s3_bucket, tmp_path):
    client = CLIENTS[name](s3_server, s3_bucket)
    payload = os.urandom(100_000)
    client.put("dir/one.bin", payload)
    client.put("dir/sub/two.txt", b"two")
    client.put("other", b"3")
    assert client.get("dir/one.bin") == payload
    assert client.list("dir/") == ["dir/one.bin", "dir/sub/two.txt"]

    (tmp_path / "up" / "z").mkdir(parents=True)
    (tmp_path / "up" / "z" / "0.0").write_bytes(b"chunk")
    (tmp_path / "up" / "zarr.json").write_bytes(b"{}")
    (tmp_path / "big.bin").write_bytes(payload * 120)  # 12 MB: multipart where a client does it
    client.upload_folder(tmp_path / "up", "tree")
    client.upload_file(tmp_path / "big.bin", "big.bin")
    assert client.list("tree/") == ["tree/z/0.0", "tree/zarr.json"]
    client.download_folder("tree", tmp_path / "down")
    client.download_file("big.bin", tmp_path / "big.copy")
    assert (tmp_path / "down" / "z" / "0.0").read_bytes() == b"chunk"
    assert (tmp_path / "down" / "zarr.json").read_bytes() == b"{}"
    assert (tmp_path / "big.copy").read_bytes() == payload * 120

    for key in (
        "dir/one.bin",
        "dir/sub/two.txt",
        "other",
        "tree/z/0.0",
        "tree/zarr.json",
        "big.bin",
    ):
        client.delete(key)
    assert client.list("") == []


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_with_a_wrong_secret_is_refused(name, s3_server, s3_bucket):
    assert s3_request(s3_server, "PUT", "kept", b"secret data", bucket=s3_bucket)[0] == 200
    client = CLIENTS[name](s3_server, s3_bucket, secret="not-" + s3_server.secret)
    with pytest.raises(Exception, match=r"(?i)403|forbidden|denied|signature|permission"):
        client.get("kept")
    with pytest.raises(Exception, match=r"(?i)403|forbidden|denied|signature|permission"):
        client.put("new", b"x")
    assert s3_request(s3_server, "GET", "new", bucket=s3_bucket)[0] == 404
    assert s3_request(s3_server, "GET", "kept", bucket=s3_bucket) == (200, b"secret data")


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_writing_to_a_missing_bucket_fails_and_creates_nothing(name, s3_server):
    missing = "t-" + secrets.token_hex(6)
    client = CLIENTS[name](s3_server, missing)
    with pytest.raises(Exception, match=r"(?i)bucket|404|not found|not exist"):
        client.put("k", b"v")
    assert s3_request(s3_server, "HEAD", "", bucket=missing)[0] == 404
