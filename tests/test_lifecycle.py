"""Trash, restore and garbage collection; queries beyond equality; `ls` filters."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
from conftest import RegistrySQL, cli, downgrade, stored_objects, where
from IPython.core.error import UsageError

import lamin_magic as lm
from lamin_magic import instance, registry, tracking
from lamin_magic.errors import InvalidArgumentError, NotFoundError
from lamin_magic.integrity import check


def frame(*values: int) -> pd.DataFrame:
    return pd.DataFrame({"x": list(values)})


def versions(name: str) -> list[int]:
    return [f.version for f in lm.select(lm.File, name=name, trashed=None, order_by="version")]


# --- the trash --------------------------------------------------------------------------------


def test_a_trashed_version_is_hidden_and_comes_back(inst):
    for i in (1, 2, 3):
        lm.add(lm.File(frame(i), name="iris"))
    moved = lm.delete("iris@3")
    assert [f.version for f in moved] == [3]
    assert lm.load("iris").x.tolist() == [2]  # the latest version outside the trash
    assert [f.version for f in lm.select(lm.File, name="iris")] == [2, 1]
    with pytest.raises(NotFoundError, match=r"iris@3 is in the trash; lm.restore\('iris@3'\)"):
        lm.load("iris@3")
    from lamin_magic import views

    assert "iris" in str(views.list_files()) and "2 " in str(views.list_files())
    assert [r[:2] for r in views.list_files(trash=True).rows] == [["iris", 3]]
    assert "(in the trash)" in str(views.show_file("iris@3"))
    lm.restore("iris@3")
    assert lm.load("iris").x.tolist() == [3]
    lm.delete("iris")  # every version
    with pytest.raises(NotFoundError, match=r"every version of 'iris' is in the trash"):
        lm.load("iris")
    with pytest.raises(NotFoundError, match="already in the trash"):
        lm.delete("iris")
    assert lm.select(lm.File).all() == [] and len(lm.select(lm.File, trashed=True)) == 3
    lm.restore("iris")
    assert versions("iris") == [1, 2, 3] and lm.load("iris").x.tolist() == [3]
    with pytest.raises(NotFoundError, match="not in the trash"):
        lm.restore("iris@2")
    assert check().ok  # trashed bytes are still checked and kept


def test_version_numbers_are_never_given_twice(inst):
    for i in (1, 2, 3):
        lm.add(lm.File(frame(i), name="iris"))
    lm.delete("iris@3")
    assert lm.add(lm.File(frame(4), name="iris")).version == 4
    lm.delete("iris@4")
    report = lm.gc()
    assert sorted(report.deleted) == ["iris@3"] and report.tombstones == ["iris@4"]
    assert lm.add(lm.File(frame(5), name="iris")).version == 5
    lm.delete("iris")
    lm.gc()
    assert lm.add(lm.File(frame(6), name="iris")).version == 6
    # the same content as a trashed version is a new version, not "unchanged"
    lm.delete("iris@6")
    again = lm.add(lm.File(frame(6), name="iris"))
    assert again.version == 7 and lm.load("iris").x.tolist() == [6]
    assert check().ok


def test_gc_never_removes_bytes_a_live_record_uses(inst):
    a = lm.add(lm.File(frame(1, 2), name="a"))
    b = lm.add(lm.File(frame(1, 2), name="b"))  # dedup: b shares a's bytes
    assert a.key == b.key
    lm.delete("a")
    dry = lm.gc(dry_run=True)
    assert dry.removed == [] and dry.deleted == [] and dry.tombstones == ["a@1"]
    report = lm.gc()
    assert report.removed == [] and report.freed == 0
    assert lm.load("b").x.tolist() == [1, 2]
    lm.delete("b")
    dry = lm.gc(dry_run=True)
    assert dry.removed == [a.key] and dry.freed == a.size
    assert stored_objects(inst.root) == [a.key]  # a dry run removes nothing
    report = lm.gc()
    assert report.removed == [a.key] and report.freed == a.size
    assert stored_objects(inst.root) == []
    with pytest.raises(NotFoundError, match="deleted for good by gc"):
        lm.restore("b")
    assert check().ok and "delete 0 trashed records, keep 0" in str(lm.gc())  # nothing to do


def test_a_trashed_file_a_run_read_stays_as_a_tombstone(inst):
    lm.track()
    made = lm.add(lm.File(frame(1), name="x"))
    first_run = tracking.context.run
    lm.track(new_run=True)
    assert lm.load("x").x.tolist() == [1]  # another run reads it
    lm.add(lm.File(frame(2), name="x"))  # x@2: x@1 is no longer the latest
    lm.delete("x@1")
    report = lm.gc()
    assert report.tombstones == ["x@1"] and report.deleted == []
    tomb = lm.select(lm.File, id=made.id, trashed=None).one()
    assert tomb.purged_at is not None and tomb.run_id == first_run.id
    readers = registry.RunInput.select().where(registry.RunInput.file == made.id)
    assert [r.run_id for r in readers] == [tracking.context.run.id]
    from lamin_magic import views

    assert "deleted for good by gc" in str(views.show_file("x@1"))
    assert not made.path.exists() and check().ok


def test_the_magics_and_the_cli(ip, capsys, tmp_path):
    ip.user_ns["df"] = frame(1)
    ip.run_line_magic("lamin", "save df name=iris")
    ip.user_ns["df"] = frame(2)
    ip.run_line_magic("lamin", "save df name=iris")
    ip.run_line_magic("lamin", "rm iris@2")
    out = capsys.readouterr().out
    assert "moved iris@2 to the trash (%lamin restore iris@2 brings it back)" in out
    with pytest.raises(UsageError, match="iris@2 is in the trash; %lamin restore iris@2"):
        ip.run_line_magic("lamin", "load iris@2")
    listing = ip.run_line_magic("lamin", "ls trash")
    assert [r[:2] for r in listing.rows] == [["iris", 2]]
    ip.run_line_magic("lamin", "restore iris@2")
    assert "restored iris@2 from the trash" in capsys.readouterr().out
    ip.run_line_magic("lamin", "rm iris")
    dry = str(ip.run_line_magic("lamin", "gc dry-run"))
    assert "gc would: delete 1 trashed records, keep 1 as tombstones" in dry
    root = str(instance.current().root)
    out = cli("--root", root, "ls", "--trash")
    assert out.returncode == 0 and out.stdout.count("iris") == 2, out.stderr
    assert cli("--root", root, "restore", "iris@1").stdout == "restored iris@1 from the trash\n"
    out = cli("--root", root, "rm", "iris@1")
    assert "moved iris@1 to the trash (lamin-magic restore iris@1 brings it back)" in out.stdout
    out = cli("--root", root, "gc")
    assert out.returncode == 0 and "gc did: delete 1 trashed records" in out.stdout, out.stderr
    out = cli("--root", root, "restore", "iris@1")
    assert out.returncode == 2 and "deleted for good by gc" in out.stderr
    for line, message in [
        ("rm", "write %lamin rm NAME[@VERSION]"),
        ("rm nothing", "no file named 'nothing'"),
        ("gc now", "write %lamin gc, or %lamin gc dry-run"),
        ("ls trash colour=red", "has no option colour="),
        ("ls trash since=2026-01-01", "takes a PATTERN and page= only"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            ip.run_line_magic("lamin", line)


# --- crashes and concurrency ------------------------------------------------------------------

KILLED_GC = """
import os, signal, sys
import lamin_magic as lm
from lamin_magic import integrity
from lamin_magic.storage import objects

lm.init(sys.argv[1])
when = sys.argv[2]
if when == "after commit":  # the records are gone; the bytes not yet
    integrity.scan_folder = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
else:  # while removing bytes, after the first
    removed = []
    real = objects.remove_path

    def remove_path(path):
        if removed:
            os.kill(os.getpid(), signal.SIGKILL)
        removed.append(path)
        real(path)

    objects.remove_path = remove_path
lm.gc()
"""


@pytest.mark.parametrize("when", ["after commit", "while removing bytes"])
def test_a_killed_gc_loses_nothing_live_and_the_next_one_finishes(tmp_path, when):
    root = tmp_path / "inst"
    lm.init(root)
    kept = [lm.add(lm.File(frame(i, i), name=f"kept{i}")) for i in range(3)]
    for i in range(4):
        lm.add(lm.File(frame(100 + i), name=f"gone{i}"))
        lm.delete(f"gone{i}")
    instance.reset()
    out = subprocess.run(
        [sys.executable, "-c", KILLED_GC, str(root), when], capture_output=True, text=True
    )
    assert out.returncode == -9, out.stderr
    lm.init(root)
    report = check()
    assert [p.kind for p in report.problems if p.kind != "orphan"] == []  # nothing live lost
    assert all(lm.load(f.name).x.tolist() == [i, i] for i, f in enumerate(kept))
    lm.gc()
    assert stored_objects(root) == sorted(f.key for f in kept) and check().ok
    assert lm.select(lm.File, trashed=True).all() == []


SAVER = """
import sys
import pandas as pd
import lamin_magic as lm

lm.init(sys.argv[1])
who = sys.argv[2]
for i in range(25):
    lm.add(lm.File(pd.DataFrame({"x": [i], "who": [who]}), name=f"{who}-{i % 5}"))
    if i % 3 == 0:
        lm.delete(f"{who}-{i % 5}")
    if i % 4 == 0:
        lm.add(lm.File(pd.DataFrame({"x": [0]}), name=f"shared-{who}"))  # dedup across names
"""

GC_LOOP = """
import sys, time
import lamin_magic as lm

lm.init(sys.argv[1])
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    lm.gc()
"""


@pytest.mark.slow
def test_saves_and_gc_at_once_lose_nothing(tmp_path):
    root = tmp_path / "inst"
    lm.init(root)
    instance.reset()
    savers = [subprocess.Popen([sys.executable, "-c", SAVER, str(root), who]) for who in ("a", "b")]
    collector = subprocess.Popen([sys.executable, "-c", GC_LOOP, str(root), "8"])
    assert [p.wait(120) for p in savers] == [0, 0]
    assert collector.wait(120) == 0
    lm.init(root)
    report = check()
    assert report.ok, report
    for file in lm.select(lm.File):
        assert isinstance(lm.load(f"{file.name}@{file.version}"), pd.DataFrame)
    for who in ("a", "b"):
        for k in range(5):
            numbers = versions(f"{who}-{k}")
            assert numbers == sorted(set(numbers))  # never a number twice


# --- queries ----------------------------------------------------------------------------------


def test_select_with_lookups_ordering_and_limit(inst):
    small = lm.add(lm.File(frame(1), name="iris_small"))
    big = lm.add(lm.File(pd.DataFrame({"x": range(10_000)}), name="iris_big"))
    other = lm.add(lm.File(frame(2), name="penguins", description="from Palmer"))

    def names(**filters):
        return sorted(f.name for f in lm.select(lm.File, **filters))

    assert names(name__startswith="iris") == ["iris_big", "iris_small"]
    assert names(name__startswith="IRIS") == []  # case-sensitive, as names are
    assert names(name__contains="_b") == ["iris_big"]
    assert names(name__in=["penguins", "iris_big", "nothing"]) == ["iris_big", "penguins"]
    assert names(size__gt=small.size) == ["iris_big"]
    assert names(size__gte=big.size) == ["iris_big"]
    assert names(size__lt=big.size, name__startswith="iris") == ["iris_small"]
    assert names(size__lte=small.size, name="iris_small") == ["iris_small"]
    assert names(description__isnull=False) == ["penguins"]
    assert names(description__exact="from Palmer") == ["penguins"]
    today = dt.datetime.now(dt.UTC).date()
    assert len(names(created_at__gte=today)) == 3
    assert names(created_at__lt=str(today)) == []
    assert names(created_at__gte=other.created_at) == ["penguins"]
    assert names(run=other.run_id, name__startswith="p") == ["penguins"]
    ordered = lm.select(lm.File, order_by="-size", limit=2).all()
    assert [f.name for f in ordered] == ["iris_big", ordered[1].name] and len(ordered) == 2
    assert len(lm.select(lm.Run, created_at__isnull=False)) == 1
    for filters, message in [
        ({"colour": 1}, "File has no field 'colour' (in colour); it has id, name"),
        ({"name__near": "x"}, "unknown lookup 'near' in name__near=; use one of exact, in"),
        ({"name__in": "iris"}, "takes a list of values"),
        ({"size__isnull": "yes"}, "takes True or False"),
        ({"created_at__gte": "yesterday"}, "is not a date or time"),
        ({"order_by": "weight"}, "File has no field 'weight' (in order_by)"),
        ({"limit": -1}, "limit must be a whole number from 0 up"),
    ]:
        with pytest.raises(InvalidArgumentError, match=re.escape(message)):
            lm.select(lm.File, **filters).all()


def test_ls_filters(inst, tmp_path):
    from lamin_magic import views

    notebook = tmp_path / "analysis.ipynb"
    notebook.write_text("{}")
    lm.track(notebook)
    lm.add(lm.File(frame(1), name="a"))
    lm.add(lm.File(pd.DataFrame({"x": range(50_000)}), name="big"))
    run = tracking.context.run
    lm.track(new_run=True)
    script = tmp_path / "other.py"
    script.write_text("")
    lm.track(script, new_run=True)
    lm.add(lm.File(frame(2), name="b"))
    import anndata as ad
    import numpy as np

    lm.add(lm.File(ad.AnnData(np.eye(2, dtype="float32")), name="cells"))

    def shown(**filters: str) -> list[str]:
        return [r[0] for r in views.list_files(filters=filters).rows]

    assert shown(notebook="analysis") == ["a", "big"]
    assert shown(notebook="other") == ["b", "cells"]
    assert shown(run=run.id) == ["a", "big"]
    assert shown(type="h5ad") == ["cells"] and shown(type=".parquet") == ["a", "b", "big"]
    assert shown(larger="100KB") == ["big"] and "big" not in shown(smaller="100KB")
    assert shown(since="2000-01-01", until="2999-01-01") == ["a", "b", "big", "cells"]
    assert shown(since="2999-01-01") == []
    with pytest.raises(InvalidArgumentError, match="larger=lots is not a size"):
        views.list_files(filters={"larger": "lots"})
    with pytest.raises(InvalidArgumentError, match="ls has no filter colour="):
        views.list_files(filters={"colour": "red"})


def test_filters_and_trash_through_the_magic(ip):
    ip.user_ns["df"] = frame(1)
    ip.run_line_magic("lamin", "save df name=kept")
    ip.run_line_magic("lamin", "save df name=gone")
    ip.run_line_magic("lamin", "rm gone")
    assert [r[0] for r in ip.run_line_magic("lamin", "ls type=parquet").rows] == ["kept"]
    assert [r[0] for r in ip.run_line_magic("lamin", "ls trash g*").rows] == ["gone"]
    assert "files matching 'k*', type=parquet" in str(
        ip.run_line_magic("lamin", "ls k* type=parquet")
    )


def test_a_schema_2_registry_is_upgraded(tmp_path):
    inst = lm.init(tmp_path / "inst")
    lm.add(lm.File(frame(1), name="kept"))
    instance.reset()
    downgrade(inst.registry_path, 2)
    lm.init(tmp_path / "inst")
    lm.delete("kept")
    lm.restore("kept")
    assert lm.load("kept").x.tolist() == [1]
    con = sqlite3.connect(inst.registry_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == registry.SCHEMA_VERSION
    indexes = {r[1] for r in con.execute("PRAGMA index_list(file)")}
    assert "file_trashed_at" in indexes
    con.close()


def test_sql_of_the_registry_stays_readable(inst):
    lm.add(lm.File(frame(1), name="a"))
    lm.delete("a")
    con = RegistrySQL(inst)
    rows = con.execute("SELECT name, version, trashed_at IS NOT NULL, purged_at FROM file")
    assert [(*r[:2], bool(r[2]), r[3]) for r in rows.fetchall()] == [("a", 1, True, None)]
    con.close()


def test_found_by_a_black_box_attempt(inst, tmp_path):
    """What a hostile tester of the trash and the queries found, each now one clear line."""
    lm.add(lm.File(frame(1), name="y"))
    lm.delete("y")
    with pytest.raises(NotFoundError, match=r"'y' has no version 9; its versions are in the trash"):
        lm.restore("y@9")
    lm.gc()
    for call in (lambda: lm.load("y"), lambda: lm.restore("y")):
        with pytest.raises(NotFoundError, match="deleted for good by gc"):
            call()
    with pytest.raises(NotFoundError, match="y@1 was deleted for good by gc"):
        lm.delete("y@1")
    with pytest.raises(NotFoundError, match="'y' has no version 9"):
        lm.load("y@9")
    lm.add(lm.File(frame(2), name="w"))
    for bad, message in [
        ({"name": ["w", "y"]}, "takes one value, not ['w', 'y']; name__in= a list"),
        ({"name__gt": ["a"]}, "takes one value"),
        ({"order_by": ["name"]}, "order_by takes a field name"),
        ({"trashed": "no"}, "trashed takes True, False or None"),
    ]:
        with pytest.raises(InvalidArgumentError, match=re.escape(message)):
            lm.select(lm.File, **bad).all()
    with pytest.raises(InvalidArgumentError, match="only files go to the trash; Run has none"):
        lm.select(lm.Run, trashed=True)
    with pytest.raises(InvalidArgumentError, match="dry_run takes True or False"):
        lm.gc(dry_run="no")
    # times with a zone compare as the instants they are
    from lamin_magic import views

    made = lm.select(lm.File, name="w").one().created_at
    east = (made + dt.timedelta(hours=5, minutes=-1)).replace(tzinfo=None).isoformat() + "+05:00"
    west = (made - dt.timedelta(hours=5, minutes=-1)).replace(tzinfo=None).isoformat() + "-05:00"
    assert [r[0] for r in views.list_files(filters={"since": east}).rows] == ["w"]
    assert [r[0] for r in views.list_files(filters={"since": west}).rows] == []
    assert [r[0] for r in views.list_files(filters={"until": west}).rows] == ["w"]
    # many versions: a summary, and a broken pipe is no error
    for i in range(30):
        lm.add(lm.File(frame(100 + i), name="many"))
    from lamin_magic.lifecycle import names_of

    assert names_of(lm.delete("many")).endswith("many@10 and 20 more")
    out = subprocess.run(
        f"{sys.executable} -m lamin_magic.cli {shlex.join(where(inst))} ls --trash | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert out.stderr == "", out.stderr
