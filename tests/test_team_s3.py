"""Team instances whose objects are in an S3 bucket (a real SeaweedFS server) and whose
registry is PostgreSQL (a real throwaway server): saving, loading through the cache, dedup,
versions, check and repair, gc, SIGKILL during uploads, and bad set-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import RegistrySQL, cli
from servers import free_ports, s3_request

import lamin_magic as lm
from lamin_magic import instance, registry
from lamin_magic.errors import InstanceError, IntegrityError
from lamin_magic.integrity import check


def aws_env(server) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret,
        "AWS_REGION": server.region,
    }


@pytest.fixture
def bucket_env(s3_server, monkeypatch):
    for name, value in aws_env(s3_server).items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def team(bucket_env, s3_bucket, pg_url):
    """A team instance: objects under s3://BUCKET/lab, registry in a fresh database."""
    return lm.init(f"s3://{s3_bucket}/lab", db=pg_url)


def bucket_keys(server, bucket: str, prefix: str = "lab/") -> list[str]:
    import re

    status, body = s3_request(server, "GET", "", bucket=bucket, query={"list-type": "2"})
    assert status == 200, body
    keys = re.findall(rb"<Key>([^<]+)</Key>", body)
    found = [k.decode() for k in keys if k.decode().startswith(prefix)]
    return sorted(k for k in found if not k.endswith("/.lamin-team"))  # the instance's mark


def frame(n: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "s": [f"r{i}" for i in range(n)]})


def test_save_and_load_through_the_bucket(team, bucket_env, s3_bucket, tmp_path):
    df = frame(100)
    first = lm.add(lm.File(df, name="iris"))
    assert first.storage_id == team.storage_id
    assert bucket_keys(bucket_env, s3_bucket) == [f"lab/{first.key}"]
    pd.testing.assert_frame_equal(lm.load("iris"), df)
    # same content under another name: one object; same name, new content: version 2
    twin = lm.add(lm.File(df, name="iris_copy"))
    assert twin.key == first.key and len(bucket_keys(bucket_env, s3_bucket)) == 1
    second = lm.add(lm.File(df.head(10), name="iris"))
    assert second.version == 2 and len(bucket_keys(bucket_env, s3_bucket)) == 2
    assert lm.load("iris@1").shape == (100, 2) and lm.load("iris").shape == (10, 2)
    # an AnnData as zarr: a folder of objects, all uploaded, back exactly
    adata = ad.AnnData(np.arange(12, dtype="float32").reshape(4, 3))
    adata.obs["kind"] = pd.Categorical(["a", "b", "a", "b"])
    cells = lm.add(lm.File(adata, name="cells", format="zarr"))
    objects = [k for k in bucket_keys(bucket_env, s3_bucket) if k.startswith(f"lab/{cells.key}/")]
    assert len(objects) > 10
    back = lm.load("cells")
    np.testing.assert_array_equal(back.X, adata.X)
    assert back.obs["kind"].tolist() == ["a", "b", "a", "b"]
    assert lm.open("iris").to_table().num_rows == 10  # lazily, from the cache's copy
    assert check().ok


def test_a_second_load_downloads_nothing_and_a_damaged_cache_entry_is_never_used(
    team, bucket_env, s3_bucket
):
    df = frame(50)
    stored = lm.add(lm.File(df, name="cached"))
    # the object leaves the bucket: the cache (filled by the save) still serves it
    assert s3_request(bucket_env, "DELETE", f"lab/{stored.key}", bucket=s3_bucket)[0] == 204
    pd.testing.assert_frame_equal(lm.load("cached"), df)
    pd.testing.assert_frame_equal(lm.load("cached"), df)
    entry = Path(stored.path)
    assert entry.is_file() and entry.parent.parent.name == "cache"
    # a damaged entry is noticed, and not loaded: the download it needs finds nothing
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 1
    entry.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="missing from the bucket"):
        lm.load("cached")
    assert not entry.exists()
    out = cli("cache")
    assert out.returncode == 0 and "entries" in out.stdout
    out = cli("cache", "clear")
    assert out.returncode == 0 and "cleared the cache" in out.stdout


def test_another_user_joins_with_the_database_url_alone(team, bucket_env, pg_url, tmp_path):
    lm.add(lm.File(frame(20, seed=1), name="shared"))
    code = """
        import lamin_magic as lm
        df = lm.load("shared")
        lm.add(lm.File(df.head(3), name="shared"))
        print(lm.select(lm.File, name="shared").df().shape[0])
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMIN_MAGIC")}
    env |= aws_env(bucket_env) | {"LAMIN_MAGIC_DB": pg_url, "LAMIN_MAGIC_USER": "bob"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "bob-cache")  # another machine: an empty cache
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    latest = lm.select(lm.File, name="shared", order_by="-version").first()
    assert latest.created_by.handle == "bob"
    assert lm.load("shared").shape == (3, 2)


def test_check_finds_a_tampered_object_and_repairs_only_old_orphans(
    team, bucket_env, s3_bucket, monkeypatch
):
    stored = lm.add(lm.File(frame(30), name="t"))
    lm.add(lm.File(frame(30, seed=2), name="u"))
    status, body = s3_request(bucket_env, "GET", f"lab/{stored.key}", bucket=s3_bucket)
    assert status == 200
    tampered = bytearray(body)
    tampered[-20] ^= 1
    s3_request(bucket_env, "PUT", f"lab/{stored.key}", bytes(tampered), bucket=s3_bucket)
    report = check()
    assert [(p.kind, p.name) for p in report.problems] == [("mismatch", "t")]
    # an upload no record uses: a save in progress while young, an orphan once old
    orphan = "A" * 20 + ".parquet"
    s3_request(bucket_env, "PUT", f"lab/{orphan}", b"partial", bucket=s3_bucket)
    s3_request(bucket_env, "PUT", "lab/notes.txt", b"someone else's", bucket=s3_bucket)
    report = check(repair=True)
    kinds = {p.path.rpartition("/")[2]: (p.kind, p.repaired) for p in report.problems}
    assert kinds[orphan] == ("writing", False) and kinds["notes.txt"] == ("stranger", False)
    monkeypatch.setenv("LAMIN_MAGIC_UPLOAD_GRACE", "0")
    report = check(repair=True)
    kinds = {p.path.rpartition("/")[2]: (p.kind, p.repaired) for p in report.problems}
    assert kinds[orphan] == ("orphan", True)
    assert f"lab/{orphan}" not in bucket_keys(bucket_env, s3_bucket)
    assert "lab/notes.txt" in bucket_keys(bucket_env, s3_bucket)
    out = cli("--db", team.registry, "check", "--repair", "--json", **aws_env(bucket_env))
    assert out.returncode == 1 and '"kind": "mismatch"' in out.stdout  # never "repaired"


def test_gc_removes_the_objects_of_the_trash(team, bucket_env, s3_bucket):
    kept = lm.add(lm.File(frame(10), name="kept"))
    gone = lm.add(lm.File(frame(10, seed=3), name="gone"))
    lm.add(lm.File(frame(10, seed=4), name="gone"))
    lm.delete("gone@1")
    collected = lm.gc()
    assert gone.key in collected.removed
    keys = bucket_keys(bucket_env, s3_bucket)
    assert f"lab/{gone.key}" not in keys and f"lab/{kept.key}" in keys


def uploading(server, bucket: str) -> bool:
    status, body = s3_request(server, "GET", "", bucket=bucket, query={"uploads": ""})
    assert status == 200, body
    return b"<UploadId>" in body or bool(bucket_keys(server, bucket))


SAVE_FOREVER = """
import sys, numpy as np, pandas as pd, anndata as ad, lamin_magic as lm
kind = sys.argv[1]
if kind == "frame":
    rng = np.random.default_rng(0)
    obj = pd.DataFrame(rng.normal(size=(4_000_000, 8)), columns=list("abcdefgh"))
    fmt = None
else:
    obj = ad.AnnData(np.ones((400, 40), dtype="float32"))
    for i in range(300):
        obj.obsm[f"m{i}"] = np.full((400, 2), i, dtype="float32")
    fmt = "zarr"
print("writing", flush=True)
lm.add(lm.File(obj, name="big", format=fmt))
print("saved", flush=True)
"""


@pytest.mark.parametrize("kind", ["frame", "zarr"])
def test_sigkill_during_an_upload_leaves_no_record_and_repair_cleans(
    team, bucket_env, s3_bucket, pg_url, tmp_path, monkeypatch, kind
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMIN_MAGIC")}
    env |= aws_env(bucket_env) | {"LAMIN_MAGIC_DB": pg_url}
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVE_FOREVER, kind], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    # kill once the upload has begun: a multipart upload is open (a large file), or some
    # objects of a folder are in the bucket
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not uploading(bucket_env, s3_bucket):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert time.monotonic() < deadline, "the upload was never seen"
    assert lm.select(lm.File, name="big").all() == []
    monkeypatch.setenv("LAMIN_MAGIC_UPLOAD_GRACE", "0")
    report = check(repair=True)
    assert all(p.kind in ("orphan",) and p.repaired for p in report.problems), report
    assert bucket_keys(bucket_env, s3_bucket) == []
    assert check().ok


def test_every_bad_bucket_set_up_is_one_line(bucket_env, s3_bucket, pg_url, monkeypatch):
    def refused(url: str, match: str) -> None:
        began = time.monotonic()
        with pytest.raises(InstanceError) as caught:
            lm.init(url, db=pg_url)
        text = str(caught.value)
        assert "\n" not in text and match in text and bucket_env.secret not in text, text
        assert time.monotonic() - began < 15
        instance.reset()

    refused("s3://no-such-bucket/lab", "does not exist")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    refused(f"s3://{s3_bucket}/lab", "refused the secret access key")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("HOME", "/nonexistent")
    refused(f"s3://{s3_bucket}/lab", "no S3 credentials")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bucket_env.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bucket_env.secret)
    refused(f"s3://{s3_bucket}/lab", "cannot reach the S3 server")
    # the refusals made no instance: a good init makes the one
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket_env.endpoint)
    made = lm.init(f"s3://{s3_bucket}/lab/", db=pg_url)
    assert made.root == f"s3://{s3_bucket}/lab" and made.storage.remote
    assert registry.Storage.select().count() == 1
    instance.reset()
    with pytest.raises(InstanceError, match="its registry is a PostgreSQL database"):
        lm.init(f"s3://{s3_bucket}/lab")


def test_one_place_holds_one_instance(bucket_env, s3_bucket, postgres_server, pg_url):
    from servers import create_database

    lm.init(f"s3://{s3_bucket}/lab", db=pg_url)
    stored = lm.add(lm.File(frame(5), name="mine"))
    instance.reset()
    other = create_database(postgres_server, "t_other_" + str(os.getpid()))
    with pytest.raises(InstanceError, match="already holds the objects of another team instance"):
        lm.init(f"s3://{s3_bucket}/lab", db=other)
    for inside in (f"lab/{stored.key}", "lab/deeper", "lab/.lamin-tmp"):
        with pytest.raises(InstanceError, match="inside"):
            lm.init(f"s3://{s3_bucket}/{inside}", db=other)
    assert lm.init(f"s3://{s3_bucket}/elsewhere", db=other).root == f"s3://{s3_bucket}/elsewhere"
    instance.reset()
    lm.init(db=pg_url)
    assert check().ok and lm.load("mine").shape == (5, 2)


def test_the_age_of_an_upload_is_the_server_s_not_this_clock(
    team, bucket_env, s3_bucket, monkeypatch
):
    import lamin_magic.storage.backends as backends

    young = "B" * 20 + ".parquet"
    s3_request(bucket_env, "PUT", f"lab/{young}", b"an upload in progress", bucket=s3_bucket)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 7200)  # this clock is 2 h fast
    report = check(repair=True)
    assert [(p.kind, p.repaired) for p in report.problems] == [("writing", False)]
    monkeypatch.setattr(time, "time", real_time)
    # an upload that a repair elsewhere removed before the save committed: no record
    real_place = backends.Bucket.place

    def place_then_lose(self, temp, key, sync):
        real_place(self, temp, key, sync)
        assert s3_request(bucket_env, "DELETE", f"lab/{key}", bucket=s3_bucket)[0] == 204

    monkeypatch.setattr(backends.Bucket, "place", place_then_lose)
    with pytest.raises(IntegrityError, match="vanished before its record was written"):
        lm.add(lm.File(frame(7), name="lost"))
    assert lm.select(lm.File, name="lost").all() == []


def test_the_cache_and_staging_stay_tidy_and_say_what_is_wrong(
    team, bucket_env, s3_bucket, tmp_path, monkeypatch
):
    from lamin_magic.errors import InvalidArgumentError

    stored = lm.add(lm.File(frame(200), name="opened"))
    opened = lm.open("opened")
    monkeypatch.setenv("LAMIN_MAGIC_CACHE_LIMIT", "1KB")
    instance.reset()
    lm.init(db=team.registry)
    opened = lm.open("opened")  # pinned: this process's evictions leave it alone
    for i in range(5):
        lm.add(lm.File(frame(200, seed=10 + i), name=f"other{i}"))
        lm.load(f"other{i}")
    assert opened.to_table().num_rows == 200
    # what a killed save left in this host's staging folder goes with the next save
    staging = instance.current().storage.staging()
    dead = staging / f"999999999-{'ab' * 16}.parquet.partial"
    dead.write_bytes(b"left by a killed save")
    lm.add(lm.File(frame(3, seed=99), name="next"))
    assert not dead.exists()
    out = cli("cache")
    assert out.returncode == 0 and out.stdout.count("\n") >= 2 and "\\n" not in out.stdout
    # a cache folder that cannot be used is named, with the setting that moves it
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LAMIN_MAGIC_CACHE", str(blocker))
    instance.reset()
    lm.init(db=team.registry)
    with pytest.raises(InstanceError, match="LAMIN_MAGIC_CACHE"):
        lm.load("other0")
    monkeypatch.delenv("LAMIN_MAGIC_CACHE")
    instance.reset()
    lm.init(db=team.registry)
    for bad in ("-5", "nan", "1e309", "soon"):
        monkeypatch.setenv("LAMIN_MAGIC_UPLOAD_GRACE", bad)
        with pytest.raises(InvalidArgumentError, match="LAMIN_MAGIC_UPLOAD_GRACE"):
            check()
    monkeypatch.delenv("LAMIN_MAGIC_UPLOAD_GRACE")
    assert stored.key  # still stored
    assert check().ok


def test_gc_reports_only_what_it_removed(team, bucket_env, s3_bucket):
    stored = lm.add(lm.File(frame(4), name="edited"))
    lm.delete("edited")
    with RegistrySQL(instance.current()) as con:  # a key edited by hand
        con.execute("UPDATE file SET key = ? WHERE id = ?", ("../other/x.parquet", stored.id))
    assert lm.gc(dry_run=True).removed == []
    collected = lm.gc()
    assert collected.removed == [] and collected.freed == 0
