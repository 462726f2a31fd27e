"""Team instances: a PostgreSQL registry (a real throwaway server) and a shared folder.

The API, lifecycle, check, registry and hostile tests also run on a team instance (see
BOTH_ENGINES in conftest.py); here is what only a team has: several users and processes on
one registry, joining by URL, and every bad set-up said in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.parse

import pandas as pd
import pytest
from conftest import RegistrySQL, cli, stored_objects
from kernels import clean_env, kernel, run_code

import lamin_magic as lm
from lamin_magic import instance, registry
from lamin_magic.errors import InstanceError
from lamin_magic.integrity import check


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh process, with no LAMIN_MAGIC_* variable but `env`'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAMIN_MAGIC")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


def test_create_with_the_cli_then_join_as_another_user(pg_url, tmp_path):
    root = tmp_path / "shared"
    out = cli("init", str(root), "--db", pg_url, LAMIN_MAGIC_USER="alice")
    assert out.returncode == 0, out.stderr
    assert f"at {root} (registry {pg_url})" in out.stdout
    saved = python(
        """
        import pandas as pd, lamin_magic as lm
        lm.add(lm.File(pd.DataFrame({"a": [1, 2]}), name="shared"))
        """,
        LAMIN_MAGIC_DB=pg_url,
        LAMIN_MAGIC_USER="alice",
    )
    assert saved.returncode == 0, saved.stderr
    # bob knows the URL only: the storage folder comes from the registry
    joined = python(
        """
        import pandas as pd, lamin_magic as lm
        df = lm.load("shared")
        lm.add(lm.File(df.assign(b=df.a * 2), name="shared"))
        print(lm.context.run.id)
        """,
        LAMIN_MAGIC_DB=pg_url,
        LAMIN_MAGIC_USER="bob",
    )
    assert joined.returncode == 0, joined.stderr
    bob_run = joined.stdout.strip()
    listing = cli("--db", pg_url, "ls")
    assert listing.returncode == 0 and "shared" in listing.stdout and " 2 " in listing.stdout
    lm.init(db=pg_url)
    assert instance.current().root == root
    first, second = lm.select(lm.File, name="shared", order_by="version").all()
    assert (first.created_by.handle, second.created_by.handle) == ("alice", "bob")
    assert second.run_id == bob_run
    assert registry.RunInput.get_or_none(run=bob_run, file=first.id) is not None
    assert lm.load("shared@2").b.tolist() == [2, 4]
    assert stored_objects(root) == sorted([str(first.key), str(second.key)])
    # the password is never stored: not in the storage table, nowhere in the registry
    with RegistrySQL(instance.current()) as con:
        assert con.execute("SELECT root, type FROM storage").fetchall() == [(str(root), "local")]


def test_the_resolution_order_puts_the_database_after_init(pg_url, tmp_path, monkeypatch):
    lm.init(tmp_path / "team", db=pg_url)
    instance.reset()
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(tmp_path / "local"))
    monkeypatch.setenv("LAMIN_MAGIC_DB", pg_url)
    current = instance.current()
    assert current.team and current.how == "from LAMIN_MAGIC_DB"
    assert current.root == tmp_path / "team"
    local = lm.init(tmp_path / "local")  # an explicit init comes first
    assert not local.team and instance.current() is local
    lm.init(db=pg_url)
    assert instance.current().team


def test_magics_create_and_join(ip, pg_url, tmp_path, capsys):
    root = tmp_path / "magic-team"
    ip.run_line_magic("lamin", f"init {root} db={pg_url}")
    shown = capsys.readouterr().out
    assert f"team instance {root}, registry {pg_url} (chosen with init)" in shown
    ip.user_ns["df"] = pd.DataFrame({"x": [1.5]})
    ip.run_line_magic("lamin", "save df name=m")
    instance.reset()
    ip.run_line_magic("lamin", f"init db={pg_url}")
    ip.run_line_magic("lamin", "load m as back")
    assert ip.user_ns["back"].equals(ip.user_ns["df"])
    info = str(ip.run_line_magic("lamin", "info"))
    assert pg_url in info and str(root) in info


def test_versions_from_four_processes_and_two_users_have_no_gaps(pg_url, tmp_path):
    lm.init(tmp_path / "team", db=pg_url)
    code = """
        import sys, pandas as pd, lamin_magic as lm
        for i in range(12):
            lm.add(lm.File(pd.DataFrame({"w": [int(sys.argv[1]), i]}), name="busy"))
    """
    procs = []
    for n in range(4):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMIN_MAGIC")}
        env |= {"LAMIN_MAGIC_DB": pg_url, "LAMIN_MAGIC_USER": ("alice", "bob")[n % 2]}
        argv = [sys.executable, "-c", textwrap.dedent(code), str(n)]
        procs.append(subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    files = lm.select(lm.File, name="busy").all()
    assert sorted(f.version for f in files) == list(range(1, 49))
    assert {f.created_by.handle for f in files} == {"alice", "bob"}
    contents = {tuple(lm.load(f"busy@{f.version}").w) for f in files}
    assert len(contents) == 48  # every save kept its own bytes


def test_ls_pages_through_many_names(pg_url, tmp_path):
    lm.init(tmp_path / "team", db=pg_url)
    from lamin_magic import views

    frame = pd.DataFrame({"a": [1]})
    for i in range(45):
        lm.add(lm.File(frame.assign(a=i), name=f"n{i:03d}"))
    lm.add(lm.File(frame.assign(a=99), name="n001"))  # a second version
    seen = []
    for page in (1, 2, 3):
        seen += [(r[0], r[1]) for r in views.list_files(page=page, page_size=20).rows]
    assert [n for n, _ in seen] == [f"n{i:03d}" for i in range(45)]
    assert dict(seen)["n001"] == 2
    assert [r[0] for r in views.list_files("n00[1-3]").rows] == ["n001", "n002", "n003"]
    assert [r[0] for r in views.list_files("n04?").rows] == [f"n04{i}" for i in range(5)]
    negated = [f"n00{i}" for i in range(10)] + [f"n04{i}" for i in range(5)]
    assert [r[0] for r in views.list_files("n0[^1-3]?", page_size=50).rows] == negated
    assert lm.select(lm.File, name__startswith="n04").df().shape[0] == 5
    assert lm.select(lm.File, name__contains="01").df().shape[0] >= 2


def test_an_older_schema_is_upgraded_on_postgresql(pg_url, tmp_path):
    lm.init(tmp_path / "team", db=pg_url)
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="kept"))
    instance.reset()
    with RegistrySQL(instance.Instance(tmp_path, pg_url, "", "")) as con:
        con.execute("DROP TABLE transform_path")
        con.execute("DROP TABLE source")
        con.execute("DROP INDEX run_snapshot")
        con.execute("ALTER TABLE run DROP COLUMN snapshot")
        con.execute("COMMENT ON TABLE file IS 'lamin_magic schema 4'")
    lm.init(db=pg_url)
    assert lm.load("kept").a.tolist() == [1]
    assert registry.db.schema_version() == registry.SCHEMA_VERSION
    assert {"snapshot"} <= registry.db.columns_of("run")
    instance.reset()
    with RegistrySQL(instance.Instance(tmp_path, pg_url, "", "")) as con:
        con.execute("COMMENT ON TABLE file IS 'lamin_magic schema 99'")
    with pytest.raises(InstanceError, match="newer than this lamin_magic"):
        lm.init(db=pg_url)


def with_password(url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


def one_line_within(seconds: float, call, match: str, secret: str | None = None) -> str:
    began = time.monotonic()
    with pytest.raises(InstanceError) as caught:
        call()
    took = time.monotonic() - began
    text = str(caught.value)
    assert "\n" not in text and match in text, text
    assert secret is None or secret not in text
    assert took < seconds, (took, text)
    return text


def test_every_bad_set_up_is_one_line_with_the_fix(postgres_server, pg_url, tmp_path):
    from servers import create_database, free_ports

    closed = free_ports(1)[0]
    down = f"postgresql://postgres@127.0.0.1:{closed}/x"
    one_line_within(10, lambda: lm.init(db=down), "the server does not answer")
    parts = urllib.parse.urlsplit(pg_url)
    unknown = parts._replace(path="/no_such_db").geturl()
    one_line_within(10, lambda: lm.init(db=unknown), "does not exist; create it")
    nobody = parts._replace(netloc=f"nobody@{parts.hostname}:{parts.port}").geturl()
    one_line_within(10, lambda: lm.init(db=nobody), "user does not exist")
    one_line_within(10, lambda: lm.init(db=pg_url), "holds no lamin_magic registry")
    one_line_within(10, lambda: lm.init(db="mysql://x"), "not a PostgreSQL URL")
    # a password is asked for, and a wrong one refused, without the password in the message
    with RegistrySQL(instance.Instance(tmp_path, pg_url, "", "")) as con:
        con.execute("CREATE ROLE alice LOGIN PASSWORD 'right-pass'")
        con.execute("GRANT ALL ON SCHEMA public TO alice")
    hba = postgres_server.folder / "data" / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("host all alice 127.0.0.1/32 scram-sha-256\n" + original)
    try:
        with RegistrySQL(instance.Instance(tmp_path, postgres_server.url, "", "")) as con:
            con.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        wrong = with_password(pg_url, "alice", "wrong-secret")
        one_line_within(10, lambda: lm.init(db=wrong), "password was refused", "wrong-secret")
        bare = parts._replace(netloc=f"alice@{parts.hostname}:{parts.port}").geturl()
        env = {"PGPASSFILE": str(tmp_path / "none")}
        os.environ.update(env)
        try:
            one_line_within(10, lambda: lm.init(db=bare), "asks for a password")
        finally:
            del os.environ["PGPASSFILE"]
        right = with_password(pg_url, "alice", "right-pass")
        made = lm.init(tmp_path / "alice", db=right)
        from lamin_magic.views import info

        assert "right-pass" not in made.registry_shown and "right-pass" not in str(info())
        assert "right-pass" not in made.identity
    finally:
        hba.write_text(original)
        with RegistrySQL(instance.Instance(tmp_path, postgres_server.url, "", "")) as con:
            con.execute("SELECT pg_reload_conf()")
    # a user without the rights: to create the tables, or to read them
    with RegistrySQL(instance.Instance(tmp_path, pg_url, "", "")) as con:
        con.execute("CREATE ROLE reader LOGIN")
    reader = parts._replace(netloc=f"reader@{parts.hostname}:{parts.port}").geturl()
    instance.reset()
    empty = create_database(postgres_server, "t_empty_" + str(os.getpid()))
    empty_reader = urllib.parse.urlsplit(empty)._replace(
        netloc=urllib.parse.urlsplit(reader).netloc
    )
    one_line_within(10, lambda: lm.init(tmp_path / "r", db=empty_reader.geturl()), "GRANT CREATE")
    one_line_within(10, lambda: lm.init(db=reader), "permission denied")
    # the registry names its folder: another folder is refused, a missing one explained
    instance.reset()
    one_line_within(10, lambda: lm.init(tmp_path / "other", db=pg_url), "join it without a path")
    with RegistrySQL(instance.Instance(tmp_path, pg_url, "", "")) as con:
        con.execute("UPDATE storage SET root = ?", (str(tmp_path / "gone"),))
    one_line_within(10, lambda: lm.init(db=pg_url), "mount the shared folder at that path")
    # a team folder is not a local instance, and no instance goes inside it
    one_line_within(10, lambda: lm.init(tmp_path / "alice"), "join it with lm.init(db=URL)")
    out = cli("--db", down, "ls")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "the server does not answer" in out.stderr


def test_an_unreachable_team_instance_at_kernel_start_is_one_warning(tmp_path):
    from servers import free_ports

    down = f"postgresql://postgres@127.0.0.1:{free_ports(1)[0]}/x"
    env = clean_env(LAMIN_MAGIC_DB=down, LAMIN_MAGIC_USER="carol")
    began = time.monotonic()
    with kernel(env, tmp_path) as (_, client):
        first = run_code(client, "1 + 1")
        assert first["result"] == "2" and first["error"] is None
        warnings = [line for line in first["stderr"].splitlines() if line.strip()]
        assert len(warnings) == 1 and "the server does not answer" in warnings[0], first
        assert run_code(client, "2 + 2")["result"] == "4"
    assert time.monotonic() - began < 60


def test_a_notebook_in_a_real_kernel_saves_to_the_team(pg_url, tmp_path):
    lm.init(tmp_path / "team", db=pg_url)
    instance.reset()
    notebook = tmp_path / "analysis.ipynb"
    notebook.write_text(
        json.dumps(
            {
                "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Team work"]}],
                "metadata": {},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    env = clean_env(LAMIN_MAGIC_DB=pg_url, LAMIN_MAGIC_USER="carol")
    env["LAMIN_MAGIC_NOTEBOOK"] = str(notebook)
    with kernel(env, tmp_path) as (_, client):
        got = run_code(client, "import pandas as pd\ndf = pd.DataFrame({'k': [3, 4]})")
        assert got["error"] is None, got
        got = run_code(client, "%lamin save df name=from_kernel")
        assert got["error"] is None, got
        got = run_code(client, "x = %lamin load from_kernel\nx.k.tolist()")
        assert got["result"] == "[3, 4]", got
    lm.init(db=pg_url)
    file = lm.select(lm.File, name="from_kernel").one()
    assert file.created_by.handle == "carol"
    assert (file.run.transform.name, file.run.transform.type) == ("analysis", "notebook")
    assert file.run.transform.title == "Team work"
    assert registry.Cell.select().where(registry.Cell.run == file.run_id).count() >= 2
    run = registry.Run.get_by_id(file.run_id)  # ended at shutdown, with its environment
    assert run.finished_at is not None and run.environment is not None
    assert run.snapshot is not None  # the notebook as saved, in the team's registry
    commands = {"ls": "from_kernel", "show from_kernel": "carol", "runs": "analysis"}
    commands["lineage from_kernel"] = "analysis (notebook)"
    for command, shown in commands.items():
        out = cli("--db", pg_url, *command.split())
        assert out.returncode == 0 and shown in out.stdout, (command, out)


def test_a_kernel_keeps_working_when_the_server_drops_its_connection(pg_url, tmp_path):
    lm.init(tmp_path / "team", db=pg_url)
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="before"))
    database = urllib.parse.urlsplit(pg_url).path.strip("/")
    with RegistrySQL(instance.current()) as con:  # a restart or an idle timeout, as it looks
        killed = con.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = ? AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()[0]
    assert killed >= 1
    assert lm.load("before").a.tolist() == [1]  # reconnected
    with RegistrySQL(instance.current()) as con:
        con.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = ? AND pid <> pg_backend_pid()",
            (database,),
        )
    assert lm.add(lm.File(pd.DataFrame({"a": [2]}), name="after")).version == 1  # a write too


def test_a_shared_folder_is_one_instance_s_and_must_be_mounted(postgres_server, pg_url, tmp_path):
    from servers import create_database

    root = tmp_path / "mnt" / "lab"
    lm.init(root, db=pg_url)
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="kept"))
    instance.reset()
    other = create_database(postgres_server, "t_twin_" + str(os.getpid()))
    with pytest.raises(InstanceError, match="already holds the objects of another team"):
        lm.init(root, db=other)
    # the share is unmounted: its mount point is there, empty
    (tmp_path / "mnt").rename(tmp_path / "away")
    root.mkdir(parents=True)
    with pytest.raises(InstanceError, match="not mounted here; mount it at that path"):
        lm.init(db=pg_url)
    root.rmdir()
    (tmp_path / "mnt").rmdir()
    (tmp_path / "away").rename(tmp_path / "mnt")
    lm.init(db=pg_url)
    # unmounted while in use: a save is refused, nothing lands on the local disk
    (tmp_path / "mnt").rename(tmp_path / "away")
    root.mkdir(parents=True)
    with pytest.raises(InstanceError, match="not mounted here"):
        lm.add(lm.File(pd.DataFrame({"a": [2]}), name="lost"))
    assert list(root.iterdir()) == []
    with pytest.raises(InstanceError, match="not mounted here"):
        check(repair=True)


def test_no_password_is_shown_or_kept(ip, postgres_server, pg_url, tmp_path, capsys):
    with RegistrySQL(instance.Instance(tmp_path, pg_url, "", "")) as con:
        con.execute("CREATE ROLE keeper LOGIN PASSWORD 'pw-in-url'")
        con.execute("GRANT ALL ON SCHEMA public TO keeper")
    parts = urllib.parse.urlsplit(pg_url)
    in_url = with_password(pg_url, "keeper", "pw-in-url")
    as_param = parts._replace(
        netloc=f"keeper@{parts.hostname}:{parts.port}", query="password=pw-in-url"
    ).geturl()
    made = lm.init(tmp_path / "secret", db=in_url)
    assert "pw-in-url" not in repr(made) and "pw-in-url" not in made.registry_shown
    joined = lm.init(db=as_param)
    assert "pw-in-url" not in repr(joined) + joined.registry_shown
    # typed into a cell: the magic works, and the cell is recorded without the password
    ip.run_line_magic("lamin", f"init db={in_url}")
    ip.run_cell(f"%lamin init db={as_param}", store_history=True)
    shown = capsys.readouterr()
    assert "pw-in-url" not in shown.out + shown.err
    with RegistrySQL(instance.current()) as con:
        cells = [r[0] for r in con.execute("SELECT source FROM cell").fetchall()]
    assert cells and not any("pw-in-url" in c for c in cells)
    assert any("password=***" in c for c in cells)
    out = cli("--db", in_url, "info")
    assert out.returncode == 0 and "pw-in-url" not in out.stdout + out.stderr
    for bad in ("postgresql://u:pw-in-url@h:notaport/d", "postgresql://u:pw-in@url@h/d"):
        out = cli("--db", bad, "ls")
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert "pw-in" not in out.stderr and "Traceback" not in out.stderr


def test_a_stuck_writer_is_named_after_the_busy_timeout(pg_url, tmp_path, monkeypatch):
    from lamin_magic import databases
    from lamin_magic.errors import RegistryBusyError

    lm.init(tmp_path / "team", db=pg_url)
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="a"))
    monkeypatch.setattr(databases, "BUSY_TIMEOUT_MS", 1500)
    holder = RegistrySQL(instance.current())  # a member's process stopped inside a save
    holder.execute("SET application_name = 'stopped-save'")
    holder.execute("SELECT pg_advisory_lock(?)", (databases.WRITE_LOCK,))
    try:
        began = time.monotonic()
        with pytest.raises(RegistryBusyError, match=r"busy.*stopped-save") as caught:
            lm.add(lm.File(pd.DataFrame({"a": [2]}), name="a"))
        assert time.monotonic() - began < 10 and "\n" not in str(caught.value)
        assert lm.load("a").a.tolist() == [1]  # reads never wait
        from lamin_magic import tracking

        began = time.monotonic()  # nor does recording a cell
        tracking.start_cell(99, "x = 1")
        assert time.monotonic() - began < 1
        cell = registry.Cell.get(registry.Cell.run == lm.context.run.id)
        assert (cell.execution_count, cell.source) == (99, "x = 1")
    finally:
        holder.close()
    assert lm.add(lm.File(pd.DataFrame({"a": [2]}), name="a")).version == 2


@pytest.mark.parametrize(
    "root", ["gs://bucket/x", "S3://bucket/x", "s3:/bucket/x", "https://h/bucket/x"]
)
def test_only_folders_and_s3_buckets_are_roots(root, tmp_path):
    with pytest.raises(InstanceError, match="neither a folder nor a bucket"):
        lm.init(root)
    out = cli("init", root, "--db", "postgresql://u@127.0.0.1:1/d", cwd=tmp_path)
    assert out.returncode == 2 and "neither a folder nor a bucket" in out.stderr
    assert list(tmp_path.iterdir()) == []
