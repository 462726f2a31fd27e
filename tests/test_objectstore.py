"""ObjectStore against a real S3 server (SeaweedFS, tests/servers.py): round trips, prefix
isolation, key refusals, and one line with the fix for every bad setup."""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import S3, free_ports, s3_request

from lamin_magic.errors import InstanceError, IntegrityError, InvalidArgumentError
from lamin_magic.storage import objectstore
from lamin_magic.storage.objectstore import Entry, ObjectStore, check_key, parse_url

PREFIX = "team/proj"
# a fresh interpreter imports this checkout's lamin_magic, whatever the working directory
WORKTREE_ENV = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def aws_files(server: S3, monkeypatch: pytest.MonkeyPatch, home: Path, config: str) -> None:
    """No AWS_* variable; ~/.aws/credentials with the server's keys and ~/.aws/config."""
    clear_aws_env(monkeypatch, home)
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {server.key_id}\naws_secret_access_key = {server.secret}\n"
    )
    (home / ".aws" / "config").write_text(config)


def clear_aws_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No AWS_* variable and no ~/.aws of the developer's."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """The server's settings in the environment, as a user would export them."""
    clear_aws_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    return s3_server


@pytest.fixture
def store(s3_env, s3_bucket):
    return ObjectStore(f"s3://{s3_bucket}/{PREFIX}")


def bucket_keys(server, bucket: str) -> list[str]:
    """Every key in the bucket, read with the stdlib signer (not through ObjectStore)."""
    status, body = s3_request(server, "GET", "", bucket=bucket, query={"list-type": "2"})
    assert status == 200, body
    return sorted(re.findall(r"<Key>(.*?)</Key>", body.decode()))


def make_tree(root: Path, count: int = 200) -> dict[str, bytes]:
    """`count` small files in nested folders, names as zarr writes them and a few odd ones."""
    files = {}
    for i in range(count):
        rel = f"c/{i % 7}/{i % 3}/{i}" if i % 5 else f"g{i % 4}/.zarray-{i}"
        files[rel] = os.urandom(i * 13 % 3000)  # some empty
    files["zarr.json"] = b'{"zarr_format": 3}'
    files["odd names/ü é #%?*.bin"] = b"odd"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text and "\r" not in text, text
    return text


# ---------------------------------------------------------------------------------------------
# round trips


def test_file_round_trip_small_and_multipart(store, tmp_path, s3_env, s3_bucket):
    small, large = tmp_path / "small.parquet", tmp_path / "large.bin"
    small.write_bytes(os.urandom(1000))
    large.write_bytes(os.urandom(objectstore.PART_SIZE + 3_000_000))  # two parts
    store.upload(small, "AbcDEF0123456789abcd.parquet")
    store.upload(large, "AbcDEF0123456789abce.bin")
    assert bucket_keys(s3_env, s3_bucket) == [
        f"{PREFIX}/AbcDEF0123456789abcd.parquet",
        f"{PREFIX}/AbcDEF0123456789abce.bin",
    ]
    store.download("AbcDEF0123456789abcd.parquet", tmp_path / "small.copy")
    store.download("AbcDEF0123456789abce.bin", tmp_path / "large.copy")
    assert (tmp_path / "small.copy").read_bytes() == small.read_bytes()
    assert (tmp_path / "large.copy").read_bytes() == large.read_bytes()
    size, modified = store.stat("AbcDEF0123456789abce.bin")
    assert size == large.stat().st_size and abs(modified - time.time()) < 300
    import obstore

    # an S3 multipart ETag ends in the number of parts
    assert obstore.head(store.store, "AbcDEF0123456789abce.bin")["e_tag"].endswith('-2"')
    assert not obstore.head(store.store, "AbcDEF0123456789abcd.parquet")["e_tag"].endswith('-1"')


def test_folder_round_trip(store, tmp_path):
    files = make_tree(tmp_path / "up")
    store.upload(tmp_path / "up", "AbcDEF0123456789abcd.zarr")
    store.download("AbcDEF0123456789abcd.zarr", tmp_path / "down")
    assert read_tree(tmp_path / "down") == files
    assert store.stat("AbcDEF0123456789abcd.zarr")[0] == sum(map(len, files.values()))
    (entry,) = store.entries()
    assert entry.key == "AbcDEF0123456789abcd.zarr" and entry.folder
    assert entry.size == sum(map(len, files.values()))


def test_download_refuses_to_write_over_something(store, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    store.upload(tmp_path / "f", "k.bin")
    (tmp_path / "there").write_bytes(b"mine")
    with pytest.raises(InvalidArgumentError, match="exists"):
        store.download("k.bin", tmp_path / "there")
    assert (tmp_path / "there").read_bytes() == b"mine"


def test_missing_object_is_one_line(store, tmp_path):
    with pytest.raises(IntegrityError) as e:
        store.download("AbcDEF0123456789abcd.parquet", tmp_path / "x")
    assert one_line(e.value) == (
        f"the object {store.url}/AbcDEF0123456789abcd.parquet is missing from the bucket"
    )
    assert not (tmp_path / "x").exists()
    assert store.stat("AbcDEF0123456789abcd.parquet") is None


def test_works_inside_a_running_event_loop(store, tmp_path):
    """A Jupyter kernel runs cells inside an event loop, where asyncio.run refuses to nest."""
    (tmp_path / "f").write_bytes(b"in a loop")

    async def cell() -> bytes:
        store.upload(tmp_path / "f", "k.bin")
        store.download("k.bin", tmp_path / "g")
        return (tmp_path / "g").read_bytes()

    assert asyncio.run(cell()) == b"in a loop"


# ---------------------------------------------------------------------------------------------
# stat, entries, delete, and the prefix


def test_stat_entries_and_folder_aggregation(store, tmp_path):
    (tmp_path / "a").write_bytes(b"12345")
    (tmp_path / "z" / "sub").mkdir(parents=True)
    (tmp_path / "z" / "x").write_bytes(b"1" * 10)
    (tmp_path / "z" / "sub" / "y").write_bytes(b"2" * 20)
    store.upload(tmp_path / "a", "a.bin")
    time.sleep(1.1)  # S3 keeps modification times to the second
    store.upload(tmp_path / "z", "z.zarr")
    assert store.stat("a.bin")[0] == 5
    size, modified = store.stat("z.zarr")
    assert size == 30 and modified >= store.stat("a.bin")[1] + 1
    assert store.stat("z") is None and store.stat("z.zar") is None  # whole names only
    assert [(e.key, e.size, e.folder) for e in store.entries()] == [
        ("a.bin", 5, False),
        ("z.zarr", 30, True),
    ]
    assert all(isinstance(e, Entry) and e.modified > 0 for e in store.entries())


def test_delete_a_folder_and_an_absent_key(store, tmp_path, s3_env, s3_bucket):
    (tmp_path / "z" / "sub").mkdir(parents=True)
    (tmp_path / "z" / "sub" / "y").write_bytes(b"y")
    (tmp_path / "f").write_bytes(b"f")
    store.upload(tmp_path / "z", "k.zarr")
    store.upload(tmp_path / "z", "k.zarr2")  # shares the first characters only
    store.upload(tmp_path / "f", "k.zarr.bin")
    store.delete("k.zarr")
    store.delete("k.zarr")  # absent is fine
    store.delete("never-there")
    assert [e.key for e in store.entries()] == ["k.zarr.bin", "k.zarr2"]
    assert bucket_keys(s3_env, s3_bucket) == [
        f"{PREFIX}/k.zarr.bin",
        f"{PREFIX}/k.zarr2/sub/y",
    ]


def test_objects_of_another_prefix_are_never_listed_or_deleted(store, tmp_path, s3_env, s3_bucket):
    others = [
        "team/proj2/k.bin",  # a sibling prefix sharing the first characters
        "team/projk.bin",
        "team/k.bin",  # the parent
        "k.bin",  # the bucket's root
        "other/team/proj/k.bin",
    ]
    for key in others:
        assert s3_request(s3_env, "PUT", key, b"theirs", bucket=s3_bucket)[0] == 200
    (tmp_path / "f").write_bytes(b"ours")
    store.upload(tmp_path / "f", "k.bin")
    assert [e.key for e in store.entries()] == ["k.bin"]
    store.delete("k.bin")
    assert store.entries() == []
    assert bucket_keys(s3_env, s3_bucket) == sorted(others)
    # the parent prefix sees ours as one folder (and its own)
    (tmp_path / "g").write_bytes(b"ours")
    store.upload(tmp_path / "g", "k.bin")
    parent = ObjectStore(f"s3://{s3_bucket}/team/")
    assert parent.url == f"s3://{s3_bucket}/team"
    assert [(e.key, e.folder) for e in parent.entries()] == [
        ("k.bin", False),
        ("proj", True),
        ("proj2", True),
        ("projk.bin", False),
    ]


# ---------------------------------------------------------------------------------------------
# keys and URLs

HOSTILE_KEYS = [
    "",
    "..",
    ".",
    "../x",
    "x/..",
    "a/../b",
    "/x",
    "x/",
    "/",
    "a//b",
    ".x",
    "a/.x",
    ".lamin-magic-probe-1-00",
    "a\\b",
    "a\x00b",
    "a\nb",
    "..\\..\\x",
]


def key_is_plain(key: str) -> bool:
    """An oracle written apart from check_key: what may address an object under the prefix."""
    parts = key.split("/")
    return (
        key != ""
        and all(parts)
        and not any(p.startswith(".") for p in parts)
        and not any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in key)
    )


@pytest.mark.parametrize("key", [*HOSTILE_KEYS, None, 3])
def test_hostile_keys_are_refused_before_anything_is_asked(key, tmp_path):
    """No settings, no server: a refused key never reaches the connection."""
    store = ObjectStore("s3://bucket/prefix")
    (tmp_path / "f").write_bytes(b"x")
    calls = [
        lambda: store.upload(tmp_path / "f", key),
        lambda: store.download(key, tmp_path / "g"),
        lambda: store.stat(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(IntegrityError, match="refused to address an object") as e:
            call()
        one_line(e.value)
    assert store._client is None and not (tmp_path / "g").exists()


PART = st.sampled_from(["", ".", "..", ".x", "x", "ab.zarr", "ü", "a b", "\\", "\x00", "/"])


@given(st.lists(PART, min_size=1, max_size=5).map("/".join) | st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_keys_are_refused_exactly_when_they_could_leave_the_prefix(key):
    if key_is_plain(key):
        assert check_key(key) == key
        joined = posixpath.normpath(f"pre/fix/{key}")
        assert joined.startswith("pre/fix/") and ".." not in joined.split("/")
    else:
        with pytest.raises(IntegrityError) as e:
            check_key(key)
        one_line(e.value)


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://my.bucket-1/a/b/", ("my.bucket-1", "a/b")),
        ("s3://bucket/a b/ü", ("bucket", "a b/ü")),
    ],
)
def test_urls(url, parsed):
    assert parse_url(url) == parsed
    assert ObjectStore(url).url == "s3://" + "/".join(filter(None, parsed))


@pytest.mark.parametrize(
    "url",
    [
        "bucket",
        "s3:/bucket",
        "S3://bucket",
        "gs://bucket",
        "s3://",
        "s3://B",
        "s3://UPPER",
        "s3://a..b",
        "s3://bucket//x",
        "s3://bucket/../x",
        "s3://bucket/a/./b",
        "s3://bucket/a\\b",
        "s3://bucket/a\nb",
    ],
)
def test_bad_urls_are_one_line(url):
    with pytest.raises(InstanceError) as e:
        ObjectStore(url)
    assert "s3://BUCKET" in one_line(e.value) or "cannot be used" in str(e.value)


# ---------------------------------------------------------------------------------------------
# settings from ~/.aws and their precedence


def test_credentials_and_config_files(s3_server, s3_bucket, monkeypatch, tmp_path):
    home = tmp_path / "home"
    aws_files(
        s3_server,
        monkeypatch,
        home,
        f"[default]\nregion = {s3_server.region}\nendpoint_url = {s3_server.endpoint}\n",
    )
    store = ObjectStore(f"s3://{s3_bucket}/p")
    store.check()
    (tmp_path / "f").write_bytes(b"from files")
    store.upload(tmp_path / "f", "k.bin")
    assert store.stat("k.bin")[0] == 10
    assert s3_server.secret not in repr(store.store.config) + repr(store.store) + repr(store)
    assert s3_server.secret not in repr(store._settings)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {s3_server.key_id}\naws_secret_access_key = wrong\n"
    )
    with pytest.raises(InstanceError) as e:
        ObjectStore(f"s3://{s3_bucket}/p").check()
    assert one_line(e.value).endswith(
        f"set the right secret in profile 'default' of {home / '.aws' / 'credentials'}"
    )


def test_named_profile_in_files_elsewhere(s3_server, s3_bucket, monkeypatch, tmp_path):
    clear_aws_env(monkeypatch, tmp_path / "home")
    creds, config = tmp_path / "c.ini", tmp_path / "conf.ini"
    creds.write_text(
        "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n"
        f"[team]\naws_access_key_id = {s3_server.key_id}\n"
        f"aws_secret_access_key = {s3_server.secret}\n"
    )
    config.write_text(
        "[default]\nendpoint_url = http://127.0.0.1:1\n"
        f"[profile team]\nendpoint_url = {s3_server.endpoint}\nregion = us-east-1\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "team")
    ObjectStore(f"s3://{s3_bucket}").check()
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(InstanceError, match="names no profile") as e:
        ObjectStore(f"s3://{s3_bucket}").check()
    one_line(e.value)


def test_the_environment_wins_over_the_files(s3_server, s3_bucket, monkeypatch, tmp_path):
    aws_files(
        s3_server, monkeypatch, tmp_path / "home", "[default]\nendpoint_url = http://127.0.0.1:1\n"
    )
    (closed,) = free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)  # more specific: wins
    ObjectStore(f"s3://{s3_bucket}").check()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + s3_server.secret)
    with pytest.raises(InstanceError, match="refused the secret access key"):
        ObjectStore(f"s3://{s3_bucket}").check()
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(InstanceError) as e:
        ObjectStore(f"s3://{s3_bucket}").check()
    assert one_line(e.value) == (
        "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both, or neither"
    )


# ---------------------------------------------------------------------------------------------
# every bad setup: one line, with the fix, within seconds, never the secret


def bad_setup(store: ObjectStore, secret: str) -> str:
    began = time.monotonic()
    with pytest.raises(InstanceError) as e:
        store.check()
    assert time.monotonic() - began < 10
    text = one_line(e.value)
    cause = e.value.__cause__
    assert secret not in text and secret not in repr(cause) and secret not in str(cause)
    assert store.url in text
    return text


def test_wrong_secret(s3_env, s3_bucket, monkeypatch):
    wrong = "not-" + s3_env.secret + "-" + secrets.token_hex(4)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    text = bad_setup(ObjectStore(f"s3://{s3_bucket}/p"), wrong)
    assert s3_env.secret not in text
    assert "refused the secret access key" in text and s3_env.key_id in text
    assert "set the right secret in AWS_SECRET_ACCESS_KEY" in text


def test_unknown_key_id(s3_env, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN0000")
    text = bad_setup(ObjectStore(f"s3://{s3_bucket}/p"), s3_env.secret)
    assert "does not know the access key id 'AKIAUNKNOWN0000'" in text
    assert text.endswith("set a valid one in AWS_ACCESS_KEY_ID")


def test_missing_bucket(s3_env):
    missing = "t-" + secrets.token_hex(6)
    text = bad_setup(ObjectStore(f"s3://{missing}/p"), s3_env.secret)
    assert f"the bucket {missing!r}" in text and "does not exist" in text
    assert f"create it (aws s3 mb s3://{missing}) or fix the URL" in text
    assert s3_request(s3_env, "HEAD", "", bucket=missing)[0] == 404  # not created either


def test_endpoint_down(s3_env, s3_bucket, monkeypatch):
    (closed,) = free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    text = bad_setup(ObjectStore(f"s3://{s3_bucket}"), s3_env.secret)
    assert f"cannot reach the S3 server at http://127.0.0.1:{closed}" in text
    assert "(connection refused): start it, or set AWS_ENDPOINT_URL" in text


def test_no_credentials_at_all(s3_env, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    text = bad_setup(ObjectStore(f"s3://{s3_bucket}"), s3_env.secret)
    assert text.startswith("no S3 credentials found for")
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile 'default' in" in text


def test_an_operation_with_bad_settings_says_the_same(s3_env, s3_bucket, monkeypatch, tmp_path):
    """Not only check(): the first upload of a session meets the problem too."""
    wrong = "not-" + s3_env.secret
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    (tmp_path / "f").write_bytes(b"x")
    store = ObjectStore(f"s3://{s3_bucket}")
    for call in (
        lambda: store.upload(tmp_path / "f", "k.bin"),
        lambda: store.entries(),
        lambda: store.delete("k.bin"),
    ):
        with pytest.raises(InstanceError) as e:
            call()
        assert wrong not in one_line(e.value)
    assert bucket_keys(s3_env, s3_bucket) == []


# ---------------------------------------------------------------------------------------------
# completely or not at all


def test_an_upload_failing_midway_leaves_nothing(store, tmp_path, s3_env, s3_bucket):
    """The server refuses the last file (its key is over S3's 1024 bytes); uploads start in
    order, CONCURRENCY at a time, so at least 184 others were put before it was tried."""
    make_tree(tmp_path / "up")
    last = tmp_path / "up" / "zz" / "/".join(["d" * 250] * 5) / "last"  # 1250+ bytes
    last.parent.mkdir(parents=True)
    last.write_bytes(b"refused by the server")
    assert sorted(read_tree(tmp_path / "up"))[-1].startswith("zz/")
    (tmp_path / "f").write_bytes(b"kept")
    store.upload(tmp_path / "f", "kept.bin")
    with pytest.raises(InstanceError) as e:
        store.upload(tmp_path / "up", "AbcDEF0123456789abcd.zarr")
    assert "failed while uploading to" in one_line(e.value) and "KeyTooLong" in str(e.value)
    assert bucket_keys(s3_env, s3_bucket) == [f"{PREFIX}/kept.bin"]
    assert store.stat("AbcDEF0123456789abcd.zarr") is None


def test_what_lamin_magic_never_writes_is_not_uploaded(store, tmp_path, s3_env, s3_bucket):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a").write_bytes(b"a")
    os.mkfifo(tmp_path / "up" / "pipe")
    with pytest.raises(IntegrityError, match="not a file") as e:
        store.upload(tmp_path / "up", "k.zarr")
    one_line(e.value)
    (tmp_path / "up" / "pipe").unlink()
    (tmp_path / "up" / "link").symlink_to("/etc/hostname")
    with pytest.raises(IntegrityError, match="symbolic link"):
        store.upload(tmp_path / "up", "k.zarr")
    (tmp_path / "up" / "link").unlink()
    (tmp_path / "up" / "a\\b").write_bytes(b"a")
    with pytest.raises(IntegrityError, match="backslash"):
        store.upload(tmp_path / "up", "k.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="empty folder"):
        store.upload(tmp_path / "empty", "k.zarr")
    assert bucket_keys(s3_env, s3_bucket) == []


def test_importing_loads_no_client():
    """obstore is an extra (lamin_magic[team]): it loads when a bucket is first used."""
    code = (
        "import sys, lamin_magic.storage.objectstore, lamin_magic.storage.cache; "
        "print([m for m in ('obstore', 'blake3') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=WORKTREE_ENV
    )
    assert out.stdout.strip() == "[]"


def test_without_obstore_one_line_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['obstore'] = None\n"
        "from lamin_magic.storage.objectstore import ObjectStore\n"
        "try:\n    ObjectStore('s3://bucket/p').entries()\n"
        "except Exception as e:\n    print(type(e).__name__, e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=WORKTREE_ENV
    )
    assert out.stdout.strip() == (
        "MissingLibraryError s3://bucket/p is reached through obstore, which is not installed "
        "here; install it: pip install 'lamin_magic[team]'"
    )


def test_check_leaves_no_probe(store, s3_env, s3_bucket):
    store.check()
    assert bucket_keys(s3_env, s3_bucket) == []
