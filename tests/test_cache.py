"""The local cache of downloaded objects, against a real S3 server (tests/servers.py): hits
ask nothing of the bucket, damage is repaired, tampering is refused, the limit holds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from servers import s3_request

from lamin_magic.errors import IntegrityError, InvalidArgumentError
from lamin_magic.storage.cache import Cache, default_folder, host_name, parse_size, partial_name
from lamin_magic.storage.hashing import hash_path
from lamin_magic.storage.objectstore import ObjectStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(s3_server, s3_bucket, monkeypatch, tmp_path):
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    return ObjectStore(f"s3://{s3_bucket}/p")


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache")


def put(store: ObjectStore, local: Path, key: str) -> tuple[int, str, str]:
    """Upload `local` as `key`; its record (size, hash, hash type)."""
    store.upload(local, key)
    return hash_path(local)


def a_file(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def a_folder(root: Path, files: int = 30) -> Path:
    for i in range(files):
        path = root / "c" / str(i % 4) / str(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100 + i))
    (root / ".zattrs").write_bytes(b"{}")
    return root


def same_bytes(a: Path, b: Path) -> bool:
    return hash_path(a)[:2] == hash_path(b)[:2]


def leftovers(cache: Cache) -> list[str]:
    """What besides entries is in the cache folder (downloads in progress)."""
    return sorted(n for n in os.listdir(cache.folder) if n.startswith("."))


def test_a_second_fetch_asks_nothing_of_the_bucket(store, cache, tmp_path):
    local = a_file(tmp_path, "x.parquet", os.urandom(5000))
    size, digest, kind = put(store, local, "AbcDEF0123456789abcd.parquet")
    first = cache.fetch(store, "AbcDEF0123456789abcd.parquet", size, digest, kind, ".parquet")
    assert first == cache.folder / f"blake3-{digest}.parquet"
    assert first.read_bytes() == local.read_bytes()
    store.delete("AbcDEF0123456789abcd.parquet")  # a second download would now fail
    again = cache.fetch(store, "AbcDEF0123456789abcd.parquet", size, digest, kind, ".parquet")
    assert again == first and again.read_bytes() == local.read_bytes()
    assert cache.entries()[0][:2] == (first.name, 5000) and leftovers(cache) == []


def test_a_folder_entry(store, cache, tmp_path):
    local = a_folder(tmp_path / "up")
    record = put(store, local, "AbcDEF0123456789abcd.zarr")
    path = cache.fetch(store, "AbcDEF0123456789abcd.zarr", *record, ".zarr")
    assert path.is_dir() and not path.is_symlink() and same_bytes(path, local)
    assert path.name == f"blake3-tree-{record[1]}.zarr"
    assert cache.entries() == [(path.name, record[0], path.stat().st_mtime)]
    assert cache.size() == record[0]


def test_a_damaged_entry_is_downloaded_again(store, cache, tmp_path):
    local = a_file(tmp_path, "x.bin", os.urandom(4000))
    record = put(store, local, "k.bin")
    path = cache.fetch(store, "k.bin", *record, ".bin")
    data = bytearray(path.read_bytes())
    data[1234] ^= 1
    path.write_bytes(bytes(data))
    assert cache.fetch(store, "k.bin", *record, ".bin").read_bytes() == local.read_bytes()

    folder = a_folder(tmp_path / "up")
    record = put(store, folder, "k.zarr")
    path = cache.fetch(store, "k.zarr", *record, ".zarr")
    (path / "c" / "1" / "5").write_bytes(b"flipped")
    (path / "extra").write_bytes(b"not in the record")
    again = cache.fetch(store, "k.zarr", *record, ".zarr")
    assert again == path and same_bytes(again, folder) and not (path / "extra").exists()
    assert leftovers(cache) == []


def test_a_tampered_object_is_refused_and_leaves_nothing(store, cache, tmp_path, s3_server):
    local = a_file(tmp_path, "x.bin", b"the recorded bytes")
    record = put(store, local, "k.bin")
    status, _ = s3_request(s3_server, "PUT", "p/k.bin", b"the recorded byteZ", bucket=store.bucket)
    assert status == 200
    with pytest.raises(IntegrityError) as e:
        cache.fetch(store, "k.bin", *record, ".bin")
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"the object {store.url}/k.bin in the bucket does not match its record")
    assert "nothing was cached" in text
    assert os.listdir(cache.folder) == []

    folder = a_folder(tmp_path / "up")
    record = put(store, folder, "k.zarr")
    s3_request(s3_server, "PUT", "p/k.zarr/c/0/0", b"other", bucket=store.bucket)
    with pytest.raises(IntegrityError, match="does not match its record"):
        cache.fetch(store, "k.zarr", *record, ".zarr")
    assert os.listdir(cache.folder) == []


def test_a_missing_object_is_one_line(store, cache):
    with pytest.raises(IntegrityError) as e:
        cache.fetch(store, "gone.bin", 3, "A" * 22, "blake3", ".bin")
    assert str(e.value) == f"the object {store.url}/gone.bin is missing from the bucket"
    assert os.listdir(cache.folder) == []


def test_eviction_by_limit_least_recently_used_first(store, tmp_path):
    cache = Cache(tmp_path / "cache", limit=2500)
    records = {}
    for name in ("a", "b", "c"):
        records[name] = put(store, a_file(tmp_path, name, os.urandom(1000)), f"{name}.bin")
    paths = {}
    for name in ("a", "b"):
        paths[name] = cache.fetch(store, f"{name}.bin", *records[name], ".bin")
        os.utime(paths[name], (time.time() - 100, time.time() - 100))  # used long ago
    cache.fetch(store, "a.bin", *records["a"], ".bin")  # a used again: b is the oldest now
    paths["c"] = cache.fetch(store, "c.bin", *records["c"], ".bin")
    assert sorted(n for n, _, _ in cache.entries()) == sorted([paths["a"].name, paths["c"].name])
    assert cache.size() == 2000

    tiny = Cache(tmp_path / "cache", limit=10)  # below one entry: only the newest stays
    path = tiny.fetch(store, "b.bin", *records["b"], ".bin")
    assert [n for n, _, _ in tiny.entries()] == [path.name] and path.read_bytes()


def test_clear(store, cache, tmp_path):
    for name in ("a", "b"):
        record = put(store, a_file(tmp_path, name, os.urandom(700)), f"{name}.bin")
        cache.fetch(store, f"{name}.bin", *record, ".bin")
    record = put(store, a_folder(tmp_path / "up", files=5), "z.zarr")
    cache.fetch(store, "z.zarr", *record, ".zarr")
    assert cache.clear() == 1400 + record[0]
    assert cache.entries() == [] and cache.size() == 0 and os.listdir(cache.folder) == []
    assert Cache(tmp_path / "never-made").clear() == 0


def test_a_planted_link_is_never_followed_nor_returned(store, cache, tmp_path):
    local = a_file(tmp_path, "x.bin", b"cached bytes")
    record = put(store, local, "k.bin")
    outside = a_file(tmp_path / "outside", "same.bin", b"cached bytes")
    cache.folder.mkdir(parents=True)
    planted = cache.folder / f"blake3-{record[1]}.bin"
    planted.symlink_to(outside)
    path = cache.fetch(store, "k.bin", *record, ".bin")
    assert path == planted and not path.is_symlink() and path.read_bytes() == b"cached bytes"
    assert outside.read_bytes() == b"cached bytes"

    folder = a_folder(tmp_path / "up", files=3)
    record = put(store, folder, "k.zarr")
    entry = cache.fetch(store, "k.zarr", *record, ".zarr")
    (entry / "c" / "0" / "0").unlink()
    (entry / "c" / "0" / "0").symlink_to(outside)  # a link inside the folder
    again = cache.fetch(store, "k.zarr", *record, ".zarr")
    assert not (again / "c" / "0" / "0").is_symlink() and same_bytes(again, folder)
    assert outside.read_bytes() == b"cached bytes"
    cache.clear()
    assert outside.read_bytes() == b"cached bytes"


@pytest.mark.parametrize(
    ("digest", "hash_type", "suffix"),
    [
        ("../../etc", "blake3", ".bin"),
        ("A" * 22, "../x", ".bin"),
        ("A" * 22, "blake3", "/x"),
        ("A" * 22, "blake3", ".bin/../../x"),
        ("A/B" * 8, "blake3", ""),
    ],
)
def test_a_record_that_cannot_name_an_entry_is_refused(cache, digest, hash_type, suffix):
    store = ObjectStore("s3://bucket/p")  # never asked
    with pytest.raises(IntegrityError, match="cannot name a cache entry") as e:
        cache.fetch(store, "k.bin", 3, digest, hash_type, suffix)
    assert "\n" not in str(e.value) and store._client is None


def test_threads_fetching_the_same_entries_at_once(store, cache, tmp_path):
    file_record = put(store, a_file(tmp_path, "x.bin", os.urandom(300_000)), "k.bin")
    folder = a_folder(tmp_path / "up", files=60)
    folder_record = put(store, folder, "k.zarr")
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch(key: str, record: tuple[int, str, str], suffix: str) -> None:
        try:
            results.append(cache.fetch(store, key, *record, suffix))
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=fetch, args=job)
        for job in [("k.bin", file_record, ".bin"), ("k.zarr", folder_record, ".zarr")] * 4
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 8 and len(set(results)) == 2
    assert {p.name for p in results} == {n for n, _, _ in cache.entries()}
    for path in set(results):
        assert hash_path(path) == (file_record if path.is_file() else folder_record)
    assert leftovers(cache) == []


FETCH = """
import sys
from pathlib import Path
from lamin_magic.storage.cache import Cache
from lamin_magic.storage.objectstore import ObjectStore
url, key, size, digest, kind, suffix, folder = sys.argv[1:]
print(Cache(Path(folder)).fetch(ObjectStore(url), key, int(size), digest, kind, suffix))
"""


def test_processes_fetching_the_same_folder_at_once(store, cache, tmp_path):
    record = put(store, a_folder(tmp_path / "up", files=120), "k.zarr")
    args = [store.url, "k.zarr", str(record[0]), record[1], record[2], ".zarr", str(cache.folder)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FETCH, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    paths = {out.strip() for out, _ in outputs}
    assert paths == {str(cache.folder / f"blake3-tree-{record[1]}.zarr")}
    assert hash_path(Path(paths.pop())) == record and leftovers(cache) == []


def test_a_download_left_by_an_ended_process_is_cleaned_up(store, cache, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(proc.stdout)
    cache.folder.mkdir(parents=True)
    stale = cache.folder / partial_name(dead)
    (stale / "c").mkdir(parents=True)
    (stale / "c" / "0").write_bytes(b"half")
    mine = cache.folder / partial_name()
    mine.write_bytes(b"in progress")
    elsewhere = cache.folder / partial_name(dead).replace(host_name(), "other-host", 1)
    elsewhere.write_bytes(b"another machine's download, on a shared home folder")
    assert cache.entries() == []
    cache.clear()
    assert leftovers(cache) == sorted([mine.name, elsewhere.name])


# ---------------------------------------------------------------------------------------------
# settings


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("20GB", 20 * 10**9),
        ("500MB", 500 * 10**6),
        ("1.5GB", 1_500_000_000),
        ("1073741824", 1073741824),
        (" 2 gib ", 2 * 2**30),
        ("0", 0),
        ("10k", 10_000),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "-1GB", "1.5XB", "GB", "1e9", "1,5GB", "20 G B"])
def test_bad_sizes_are_one_line(text):
    with pytest.raises(InvalidArgumentError) as e:
        parse_size(text)
    assert "\n" not in str(e.value) and "20GB" in str(e.value)


def test_folder_and_limit_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("LAMIN_MAGIC_CACHE", raising=False)
    monkeypatch.delenv("LAMIN_MAGIC_CACHE_LIMIT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_folder() == tmp_path / "xdg" / "lamin-magic"
    assert Cache().limit == 20 * 10**9
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_folder() == tmp_path / "home" / ".cache" / "lamin-magic"
    monkeypatch.setenv("LAMIN_MAGIC_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("LAMIN_MAGIC_CACHE_LIMIT", "500MB")
    cache = Cache()
    assert (cache.folder, cache.limit) == (tmp_path / "mine", 500 * 10**6)
    assert not cache.folder.exists()  # made on the first fetch only
    monkeypatch.setenv("LAMIN_MAGIC_CACHE_LIMIT", "lots")
    with pytest.raises(InvalidArgumentError, match="LAMIN_MAGIC_CACHE_LIMIT='lots'"):
        Cache()
    with pytest.raises(InvalidArgumentError, match="pass an int"):
        Cache(tmp_path, limit=-1)
