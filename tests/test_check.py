"""`check`: records with their bytes, objects with their records, temporaries; `--repair`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
from conftest import stored_objects

import lamin_magic as lm
from lamin_magic import instance
from lamin_magic.integrity import check


def cli(*args: str, root) -> subprocess.CompletedProcess[str]:
    current = instance.current()
    where = ["--db", current.registry] if current.team else ["--root", str(root)]
    return subprocess.run(
        [sys.executable, "-m", "lamin_magic.cli", *where, "check", *args],
        capture_output=True,
        text=True,
    )


def test_a_healthy_instance_is_ok(inst):
    a = lm.add(lm.File(pd.DataFrame({"a": [1]}), name="a"))
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="b"))  # shares a's bytes
    report = check()
    assert report.ok and report.problems == [] and report.records == 2 and report.objects == 1
    assert report.bytes_hashed == a.size  # the shared object is hashed once
    out = cli(root=inst.root)
    assert out.returncode == 0 and "ok: every record has its bytes" in out.stdout


def test_missing_and_changed_bytes_are_found_and_never_repaired(inst):
    a = lm.add(lm.File(pd.DataFrame({"a": [1]}), name="a"))
    b = lm.add(lm.File(pd.DataFrame({"b": [2.0]}), name="b"))
    a.path.unlink()
    data = bytearray(b.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    b.path.write_bytes(bytes(data))
    report = check(repair=True)
    kinds = sorted((p.kind, p.name) for p in report.problems)
    assert kinds == [("mismatch", "b"), ("missing", "a")]
    assert not report.ok and not any(p.repaired for p in report.problems)
    out = cli("--json", root=inst.root)
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["ok"] is False and {p["kind"] for p in data["problems"]} == {"missing", "mismatch"}


def test_sizes_only_check_skips_hashing(inst):
    b = lm.add(lm.File(pd.DataFrame({"b": [2.0]}), name="b"))
    data = bytearray(b.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    b.path.write_bytes(bytes(data))
    assert check(verify_hashes=False).ok  # same size, not hashed
    assert cli("--no-hash", root=inst.root).returncode == 0
    assert cli(root=inst.root).returncode == 1


def test_orphans_and_temporaries_are_listed_then_repaired(inst):
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="a"))
    orphan = inst.root / "ABCDEFGHIJ0123456789.parquet"
    orphan.write_bytes(b"bytes renamed into place before a crash, never committed")
    stranger = inst.root / "notes.txt"
    stranger.write_text("the user's own file")
    dead = inst.temp_dir / f"999999999-{'0123' * 8}.parquet.partial"
    dead.write_bytes(b"half")
    # two hours old: on a team's shared folder, a younger one may be another machine's save
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    writing = inst.temp_dir / f"{os.getpid()}-{'4567' * 8}.parquet.partial"
    writing.write_bytes(b"a save in progress")
    report = check()
    kinds = {p.kind: p for p in report.problems}
    assert set(kinds) == {"orphan", "stranger", "temporary", "writing"} and not report.ok
    assert "2 problems; 2 removable with --repair" in str(report)
    out = cli(root=inst.root)
    assert out.returncode == 1 and "orphan: " in out.stdout and "temporary: " in out.stdout
    out = cli("--repair", root=inst.root)
    assert out.returncode == 0, out.stdout
    assert not orphan.exists() and not dead.exists()
    assert stranger.exists() and writing.exists()  # never touched
    assert check().ok


def test_check_magic(inst, shell):
    ip = shell
    ip.run_line_magic("load_ext", "lamin_magic")
    try:
        lm.add(lm.File(pd.DataFrame({"a": [1]}), name="a"))
        (inst.root / "ABCDEFGHIJ0123456789.parquet").write_bytes(b"x")
        report = ip.run_line_magic("lamin", "check")
        assert not report.ok and "orphan" in repr(report)
        assert ip.run_line_magic("lamin", "check repair").ok
        assert stored_objects(inst.root) == [lm.select(lm.File).first().key]
    finally:
        ip.run_line_magic("unload_ext", "lamin_magic")
