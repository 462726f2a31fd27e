"""The bad-input catalogue: each case through the magics or the API gives its one-line message,
and the shell, its namespace and the instance are unharmed.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

import lamin_magic as lm
from lamin_magic import instance, registry
from lamin_magic.errors import LaminMagicError


class Thing:  # an instance of a class defined where the user works
    pass


Thing.__module__ = "__main__"


@dataclass
class Case:
    id: str
    line: str  # a %lamin line, or "" for an API call
    message: str
    api: Callable[[], Any] | None = None
    setup: Callable[[Any, Path], None] | None = None


def remove_bytes(ip: Any, root: Path) -> None:
    lm.select(lm.File, name="frame").first().path.unlink()


def corrupt_bytes(ip: Any, root: Path) -> None:
    path = lm.select(lm.File, name="frame").first().path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def newer_schema(ip: Any, root: Path) -> None:
    instance.reset()
    con = sqlite3.connect(root / "inst" / "inst.lndb")
    con.execute(f"PRAGMA user_version = {registry.SCHEMA_VERSION + 1}")
    con.close()


def a_file(ip: Any, root: Path) -> None:
    (root / "a file").write_text("not a folder")


CASES = [
    Case("undefined variable", "save nothere", "'nothere' is not defined; run the cell"),
    Case("a list", "save items", "cannot store a list; supported types: DataFrame (parquet)"),
    Case("a lambda", "save fn", "cannot store a function; supported types"),
    Case("a class from __main__", "save thing", "cannot store a __main__.Thing; supported types"),
    Case("a dict", "save settings", "cannot store a dict; supported types"),
    Case("an object array", "save arr", "the array holds Python objects (dtype object)"),
    Case("malformed key=value", "save df =iris", "'=iris' is not a variable name"),
    Case("an option without =", "save df name", "'name' is not defined"),
    Case("an unknown option", "save df colour=red", "%lamin save has no option colour="),
    Case("an unknown flag", "save df --force", "unknown option '--force'"),
    Case("an unclosed quote", "save df name='iris", "No closing quotation (close the quote)"),
    Case("an empty name", "save df name=", "the name is empty; give one, e.g. name=iris"),
    Case("a blank name", "save df 'name=  '", "the name is empty"),
    Case(
        "a name with NUL",
        "",
        "holds a control character",
        api=lambda: lm.File(pd.DataFrame({"a": [1]}), name="a\x00b"),
    ),
    Case(
        "a name of 10 000 characters",
        "save df name=" + "x" * 10_000,
        "the name is 10000 characters long; keep it to 200",
    ),
    Case("a name with @", "save df name=a@b", "holds '@', which separates a name from its version"),
    Case("an unknown name", "load irsi", "no file named 'irsi'; did you mean 'iris'?"),
    Case("an unknown version", "load iris@7", "'iris' has no version 7; it has versions 1"),
    Case(
        "a version that is not a whole number from 1 up",
        "load iris@latest",
        "version 'latest' in 'iris@latest' is not a whole number from 1 up",
    ),
    Case("version zero", "load iris@0", "version '0' in 'iris@0' is not a whole number from 1 up"),
    Case("an unknown subcommand", "lod iris", "%lamin has no subcommand 'lod'"),
    Case("no subcommand", "", "%lamin needs a subcommand", api=None),
    Case("load as a non-identifier", "load iris as 2x", "'2x' is not a variable name"),
    Case(
        "a wrong format",
        "save df format=zarr",
        "format 'zarr' cannot store a pandas.core.frame.DataFrame; use one of: parquet",
    ),
    Case(
        "an unknown format",
        "save df format=xlsx",
        "unknown format 'xlsx'; use one of: parquet, h5ad, zarr",
    ),
    Case("bool column names", "save intcols", "column False (bool) would come back as True"),
    Case(
        "mixed types in a column", "save mixed", "cannot keep in one column; give it one type first"
    ),
    Case(
        "bytes missing on load",
        "load frame",
        "the bytes of frame@1 are missing",
        setup=remove_bytes,
    ),
    Case(
        "bytes corrupted, load(verify=True)",
        "",
        "the bytes of frame@1 do not match their record",
        api=lambda: lm.load("frame", verify=True),
        setup=corrupt_bytes,
    ),
    Case(
        "a registry with a newer schema",
        "ls",
        f"newer than this lamin_magic understands ({registry.SCHEMA_VERSION}); upgrade: "
        "pip install -U lamin_magic",
        setup=newer_schema,
    ),
    Case(
        "an instance path that is a file",
        "init 'PATH/a file'",
        "is a file, not a folder; give init a folder path",
        setup=a_file,
    ),
    Case(
        "select on an unknown field",
        "",
        "File has no field 'colour'",
        api=lambda: lm.select(lm.File, colour="red"),
    ),
    Case(
        "add of a DataFrame",
        "",
        "lm.add takes a File, not DataFrame",
        api=lambda: lm.add(pd.DataFrame({"a": [1]})),
    ),
    Case(
        "a File without a name",
        "",
        "a File needs a name: lm.File(obj, name='iris')",
        api=lambda: lm.File(pd.DataFrame({"a": [1]})),
    ),
    Case("init with an empty path", "", "init needs a folder path", api=lambda: lm.init("  ")),
    Case(
        "a description that is not text",
        "",
        "description must be a string",
        api=lambda: lm.File(pd.DataFrame({"a": [1]}), name="x", description=3),
    ),
]


def populate(ip: Any) -> None:
    ip.user_ns.update(
        df=pd.DataFrame({"a": [1, 2]}),
        items=[1, 2],
        fn=lambda x: x,
        thing=Thing(),
        settings={"a": 1},
        arr=np.array([1, "one"], dtype=object),
        intcols=pd.DataFrame({True: [1], False: [2]}),
        mixed=pd.DataFrame({"m": [1, "one"]}),
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(shell, tmp_path, monkeypatch, case):
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(tmp_path / "inst"))
    shell.run_line_magic("load_ext", "lamin_magic")
    try:
        populate(shell)
        lm.add(lm.File(pd.DataFrame({"x": [1]}), name="iris"))
        lm.add(lm.File(pd.DataFrame({"y": [2]}), name="frame"))
        if case.setup:
            case.setup(shell, tmp_path)
        before = {k: id(v) for k, v in shell.user_ns.items() if not k.startswith("_")}
        records = len(list(Path(tmp_path / "inst").iterdir()))
        if case.api is not None:
            with pytest.raises(LaminMagicError) as raised:
                case.api()
        else:
            with pytest.raises(UsageError) as raised:
                shell.run_line_magic("lamin", case.line.replace("PATH", str(tmp_path)))
            assert type(raised.value) is UsageError
        text = str(raised.value)
        assert case.message in text and "\n" not in text, text
        after = {k: id(v) for k, v in shell.user_ns.items() if not k.startswith("_")}
        assert after == before  # the namespace is unharmed
        assert len(list(Path(tmp_path / "inst").iterdir())) == records  # nothing half-written
        assert shell.run_cell("40 + 2").result == 42  # the shell goes on
    finally:
        shell.run_line_magic("unload_ext", "lamin_magic")
        instance.reset()


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 30


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mount is not allowed here: {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a real full disk."""
    where = tmp_path / "small"
    where.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where))
    yield where
    instance.reset()
    subprocess.run(["umount", "-l", str(where)], check=True)


def test_full_disk(shell, small_disk, monkeypatch):
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(small_disk / "inst"))
    shell.run_line_magic("load_ext", "lamin_magic")
    try:
        shell.user_ns["big"] = pd.DataFrame({"x": np.random.default_rng(0).normal(size=1_000_000)})
        with pytest.raises(UsageError, match="%lamin save: No space left on device") as raised:
            shell.run_line_magic("lamin", "save big")
        assert "\n" not in str(raised.value)
        root = small_disk / "inst"
        assert list((root / ".lamin-tmp").iterdir()) == []  # the partial write is gone
        assert lm.select(lm.File).first() is None
        shell.user_ns["small"] = pd.DataFrame({"x": [1]})
        shell.run_line_magic("lamin", "save small")  # room enough for a small one
        assert lm.load("small").x.tolist() == [1]
    finally:
        shell.run_line_magic("unload_ext", "lamin_magic")


def test_read_only_instance(shell, tmp_path, monkeypatch, capsys):
    root = tmp_path / "inst"
    lm.init(root)
    lm.add(lm.File(pd.DataFrame({"x": [1]}), name="kept"))
    instance.reset()
    mount("--bind", str(root), str(root))
    try:
        mount("-o", "remount,ro,bind", str(root))
        monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(root))
        shell.run_line_magic("load_ext", "lamin_magic")
        err = capsys.readouterr().err
        assert err.count("\n") <= 1 and "Traceback" not in err
        shell.user_ns["df"] = pd.DataFrame({"x": [2]})
        with pytest.raises(UsageError) as raised:
            shell.run_line_magic("lamin", "save df")
        text = str(raised.value)
        assert "read-only" in text.lower() and "\n" not in text, text
        assert shell.run_cell("40 + 2").result == 42
    finally:
        shell.run_line_magic("unload_ext", "lamin_magic")
        instance.reset()
        subprocess.run(["umount", "-l", str(root)], check=True)
