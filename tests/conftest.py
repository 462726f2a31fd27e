from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lamin_magic as lm
from lamin_magic import instance, tracking
from lamin_magic.storage import formats

# throwaway PostgreSQL and S3 servers: fixtures, the `team` marker (tests/servers.py)
pytest_plugins = ["servers"]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

ENV_VARS = (
    "LAMIN_MAGIC_ROOT",
    "LAMIN_MAGIC_DB",
    "LAMIN_MAGIC_CACHE",
    "LAMIN_MAGIC_CACHE_LIMIT",
    "LAMIN_MAGIC_UPLOAD_GRACE",
    "LAMIN_MAGIC_NOTEBOOK",
    "LAMIN_MAGIC_USER",
    "LAMIN_MAGIC_AUTOLOAD",
    "JPY_SESSION_NAME",
)


def forget_instance() -> None:
    tracking.finish_recorders()  # environments still to record
    instance.reset()
    tracking.context.transform = tracking.context.run = None
    tracking.context.instance_root = None
    tracking.context.how = ""


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """No test sees the developer's instances, environment or working directory."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.chdir(home)
    forget_instance()
    formats._ensure_builtin()
    registered = dict(formats._formats)
    yield
    forget_instance()
    formats._formats.clear()
    formats._formats.update(registered)


@pytest.fixture(scope="session")
def shell():
    """The in-process IPython shell (one per test session, as IPython allows)."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    return start_ipython() or get_ipython()


@pytest.fixture
def ip(shell, tmp_path, monkeypatch, capsys):
    """The shell with the extension loaded on a fresh instance (from LAMIN_MAGIC_ROOT)."""
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(tmp_path / "inst"))
    shell.user_ns.clear()
    shell.init_user_ns()
    shell.run_line_magic("load_ext", "lamin_magic")
    capsys.readouterr()
    yield shell
    shell.run_line_magic("unload_ext", "lamin_magic")
    shell.user_ns.clear()
    shell.init_user_ns()


# modules whose tests run on both registry engines: each test taking `inst` runs on a local
# SQLite instance and on a team instance (PostgreSQL registry, the same folder for objects)
BOTH_ENGINES = {"test_api", "test_lifecycle", "test_check", "test_registry", "test_hostile"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rpartition(".")[2]
    if "inst" in metafunc.fixturenames and module in BOTH_ENGINES:
        engines = ["sqlite", pytest.param("postgresql", marks=pytest.mark.team)]
        metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def inst(tmp_path, engine, request):
    """A fresh instance in a temporary folder, in use for the test; where the module runs on
    both engines, also a team instance whose registry is a fresh PostgreSQL database."""
    if engine == "postgresql":
        return lm.init(tmp_path / "inst", db=request.getfixturevalue("pg_url"))
    return lm.init(tmp_path / "inst")


class RegistrySQL:
    """A plain connection to an instance's registry, SQLite or PostgreSQL, that takes SQL in
    SQLite's words (`?` parameters): what another program, or a hand, would do to it."""

    def __init__(self, inst: instance.Instance) -> None:
        self.team = inst.team
        if self.team:
            import psycopg

            self.con: Any = psycopg.connect(inst.registry, autocommit=True)
        else:
            self.con = sqlite3.connect(inst.registry_path)

    def execute(self, statement: str, params: tuple = ()) -> Any:
        if self.team:
            from lamin_magic.databases import postgres_sql

            return self.con.execute(postgres_sql(statement), params)
        return self.con.execute(statement, params)

    def commit(self) -> None:
        self.con.commit()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> RegistrySQL:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.team:
            self.con.commit()
        self.close()


def where(inst: instance.Instance) -> list[str]:
    """The `lamin-magic` options naming this instance."""
    return ["--db", inst.registry] if inst.team else ["--root", str(inst.root)]


def stored_objects(root: Path) -> list[str]:
    """What the instance folder holds besides its registry and the temporary folder."""
    ours = (instance.TEMP_DIR_NAME, instance.TEAM_MARKER)
    return sorted(p.name for p in root.iterdir() if ".lndb" not in p.name and p.name not in ours)


def temporaries(root: Path) -> list[str]:
    tmp = root / instance.TEMP_DIR_NAME
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


# what each schema upgrade added, undone: a registry as an older lamin_magic left it
DOWNGRADES = {
    5: [
        "DROP TABLE transform_path",
        "DROP TABLE source",
        "DROP INDEX run_snapshot",
        "ALTER TABLE run DROP COLUMN snapshot",
    ],
    4: [
        "DROP TABLE cell",
        "ALTER TABLE file DROP COLUMN cell",
        "DROP TABLE environment",
        "ALTER TABLE run DROP COLUMN environment",
    ],
    3: [
        "DROP INDEX file_trashed_at",
        "ALTER TABLE file DROP COLUMN trashed_at",
        "ALTER TABLE file DROP COLUMN purged_at",
    ],
    2: ["DROP TABLE setting"],
}


def downgrade(registry: Path, to: int) -> None:
    """Turn a registry of today's schema into one of schema version `to`."""
    import sqlite3

    con = sqlite3.connect(registry)
    for version in sorted(DOWNGRADES, reverse=True):
        if version > to:
            for statement in DOWNGRADES[version]:
                con.execute(statement)
    con.execute(f"PRAGMA user_version = {to}")
    con.commit()
    con.close()


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`lamin-magic ARGS` in a fresh process, with no LAMIN_MAGIC_* variable but `env`'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAMIN_MAGIC")}
    return subprocess.run(
        [sys.executable, "-m", "lamin_magic.cli", *args],
        capture_output=True,
        text=True,
        env=clean | env,
        cwd=cwd,
    )


class Payload:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
