"""Nothing unpickled unless allowed; names never choose paths; SQL by parameters; no overwrites."""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
from conftest import Payload, cli, downgrade

import lamin_magic as lm
from lamin_magic import instance, registry
from lamin_magic.errors import UnsupportedTypeError


def test_pickle_is_refused_until_the_instance_allows_it(tmp_path):
    lm.init(tmp_path / "inst")
    with pytest.raises(UnsupportedTypeError, match="cannot store a dict; supported types"):
        lm.File({"a": 1}, name="d")
    with pytest.raises(UnsupportedTypeError, match=r"do not allow pickle in this instance; if you"):
        lm.File({"a": 1}, name="d", format="pickle")
    lm.init(tmp_path / "inst", allow_pickle=True)
    file = lm.add(lm.File({"a": [1, 2]}, name="d"))
    assert file.suffix == ".pkl" and lm.load("d") == {"a": [1, 2]}
    # a DataFrame still goes to parquet: pickle is only the last resort
    assert lm.add(lm.File(pd.DataFrame({"a": [1]}), name="f")).suffix == ".parquet"
    lm.init(tmp_path / "inst", allow_pickle=False)
    with pytest.raises(UnsupportedTypeError, match=r"do not allow unpickling \.pkl files"):
        lm.load("d")
    assert lm.load("d", allow_pickle=True) == {"a": [1, 2]}  # one load, on the caller's word


def test_a_planted_pickle_never_runs(tmp_path):
    """Someone put a malicious .pkl and its record into a shared instance."""
    inst = lm.init(tmp_path / "inst")
    marker = tmp_path / "pwned"
    key = "AAAAAAAAAAAAAAAAAAAA.pkl"
    (inst.root / key).write_bytes(pickle.dumps(Payload(str(marker))))
    con = sqlite3.connect(inst.registry_path)
    with con:
        con.execute(
            "INSERT INTO file (id, name, version, suffix, size, key, created_at) "
            "VALUES ('AAAAAAAAAAAAAAAAAAAA', 'evil', 1, '.pkl', 1, ?, '2026-01-01T00:00:00+00:00')",
            (key,),
        )
    con.close()
    with pytest.raises(UnsupportedTypeError, match="do not allow unpickling"):
        lm.load("evil")
    assert not marker.exists()
    assert not marker.exists()


def test_names_are_data_never_sql(inst):
    df = pd.DataFrame({"a": [1]})
    evil = "x'); DROP TABLE file; --"
    file = lm.add(lm.File(df, name=evil))
    assert lm.load(evil).a.tolist() == [1]
    assert [f.name for f in lm.select(lm.File, name=evil)] == [evil]
    from lamin_magic import views

    assert [r[0] for r in views.list_files(evil).rows] == [evil]
    assert file.key == f"{file.id}.parquet"
    con = sqlite3.connect(inst.registry_path)
    assert con.execute("SELECT COUNT(*) FROM file").fetchone()[0] == 1
    con.close()


def test_stored_bytes_are_never_overwritten(inst):
    v1 = lm.add(lm.File(pd.DataFrame({"a": [1]}), name="a"))
    before = (v1.path.stat().st_ino, v1.path.stat().st_mtime_ns, v1.path.read_bytes())
    lm.add(lm.File(pd.DataFrame({"a": [2]}), name="a"))
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="a"))  # back to v1's content: shares its bytes
    after = (v1.path.stat().st_ino, v1.path.stat().st_mtime_ns, v1.path.read_bytes())
    assert before == after
    from lamin_magic.storage.objects import move_into_place

    other = inst.root / "other"
    other.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="never overwritten"):
        move_into_place(other, v1.path)
    assert v1.path.read_bytes() == before[2]


def test_a_version_1_registry_is_upgraded_in_place(tmp_path):
    inst = lm.init(tmp_path / "inst")
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="kept"))
    instance.reset()
    downgrade(inst.registry_path, 1)
    lm.init(tmp_path / "inst", allow_pickle=True)
    assert lm.load("kept").a.tolist() == [1]
    con = sqlite3.connect(inst.registry_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == registry.SCHEMA_VERSION
    assert con.execute("SELECT count(*) FROM setting").fetchone() == (0,)  # trust is not here
    con.close()
    assert instance.pickle_allowed()  # but in the local user's list


def test_cli_init_ls_show_runs_info_and_pickle_flag(tmp_path):
    root = tmp_path / "cli inst"

    out = cli("init", str(root), "--allow-pickle")
    assert out.returncode == 0 and "(pickle allowed)" in out.stdout, out.stderr
    lm.init(root)
    lm.track()
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="iris"))
    instance.reset()
    assert "iris" in cli("--root", str(root), "ls").stdout
    shown = cli("--root", str(root), "show", "iris@1").stdout
    assert "iris@1" in shown and "made by" in shown
    assert "files made" in cli("--root", str(root), "runs").stdout
    assert "pickle             allowed" in cli("--root", str(root), "info").stdout
    bad = cli("--root", str(root), "show", "nothing")
    assert (
        bad.returncode == 2
        and bad.stderr
        == "lamin-magic: error: no file named 'nothing'; lamin-magic ls lists what is stored\n"
    )
    assert cli("init", str(root), "--no-pickle").stdout.endswith("(pickle off)\n")
    # found from the working directory, as a user in the instance folder would
    env_run = subprocess.run(
        [sys.executable, "-m", "lamin_magic.cli", "ls"],
        capture_output=True,
        text=True,
        cwd=root,
        env={k: v for k, v in os.environ.items() if not k.startswith("LAMIN_MAGIC")},
    )
    assert "iris" in env_run.stdout


def test_every_cli_command_has_help():
    from lamin_magic.cli import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    choices = actions[0].choices
    assert set(choices) == {
        *(
            "init",
            "ls",
            "show",
            "runs",
            "info",
            "check",
            "rm",
            "restore",
            "gc",
            "source",
            "env",
            "lineage",
            "cache",
        )
    }
    for name, sub in choices.items():
        assert sub.format_help().strip(), name
    helps = {a.dest: a.help for a in actions[0]._choices_actions}
    assert all(helps[name] for name in choices)
