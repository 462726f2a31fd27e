"""The kernel's namespace stays usable; saves are all or nothing; every mistake and every library
failure is one line; the command line's exit status means something; reads never wait on a
writer.
"""

from __future__ import annotations

import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import cli, stored_objects, temporaries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

import lamin_magic as lm
from lamin_magic import instance, registry
from lamin_magic.errors import IntegrityError, RegistryBusyError
from lamin_magic.integrity import check


def usage_error(ip, line: str) -> str:
    with pytest.raises(UsageError) as raised:
        ip.run_line_magic("lamin", line)
    assert type(raised.value) is UsageError
    text = str(raised.value)
    assert "\n" not in text, text
    return text


def kernel_still_works(ip) -> None:
    assert ip.run_cell("len([1, 2]) + 40").result == 42
    assert ip.run_cell("get_ipython() is not None").result is True
    assert ip.run_cell("%lamin info").success


# --- 4. the kernel's namespace stays usable -------------------------------------------------

KERNEL_NAMES = [
    "get_ipython",
    "__builtins__",
    "__name__",
    "len",
    "print",
    "In",
    "Out",
    "_",
    "__",
    "_i",
    "_i1",
    "_7",
    "_oh",
    "exit",
    "for",
    "class",
]


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_loading_never_binds_over_names_the_kernel_needs(ip, name):
    lm.add(lm.File(pd.DataFrame({"x": [1]}), name=name))
    held = ip.user_ns.get(name)
    text = usage_error(ip, f"load {name}")
    assert f"load it under another name: %lamin load {name} as VAR" in text
    assert ip.user_ns.get(name) is held
    kernel_still_works(ip)
    ip.run_line_magic("lamin", f"load {name} as safe")
    assert ip.user_ns["safe"].x.tolist() == [1]
    assert "kernel needs" in usage_error(ip, f"load {name} as print")


def test_binding_over_a_user_variable_says_so(ip, capsys):
    lm.add(lm.File(pd.DataFrame({"x": [1]}), name="iris"))
    ip.user_ns["iris"] = 5
    ip.run_line_magic("lamin", "load iris")
    assert (
        "loaded iris@1 into iris (DataFrame 1 x 1; it replaced the int)" in capsys.readouterr().out
    )


CELLS = {
    "assigned, then bare": ("first = %lamin load other\n%lamin load iris", {"first", "iris"}),
    "bare, then assigned": ("%lamin load iris\nfirst = %lamin load other", {"first", "iris"}),
    "bare, last line": ("x = 1\n%lamin load iris", {"x", "iris"}),
    "assigned twice": ("a = %lamin load iris\nb = %lamin load iris", {"a", "b"}),
    "in a function": ("def f():\n    y = %lamin load iris\n    return y\nz = f()", {"f", "z"}),
    "in a loop": ("for i in range(2):\n    %lamin load iris", {"i", "iris"}),
    "unpacked": ("a, b = [%lamin load iris][0].x.tolist()[:2]", set()),
}


@pytest.mark.parametrize("case", sorted(CELLS))
def test_an_assigned_load_is_told_from_a_bare_one(ip, case):
    lm.add(lm.File(pd.DataFrame({"x": [1, 2]}), name="iris"))
    lm.add(lm.File(pd.DataFrame({"x": [3, 4]}), name="other"))
    source, bound = CELLS[case]
    before = set(ip.user_ns)
    result = ip.run_cell(source)
    if case == "unpacked":  # not a magic IPython rewrites: a syntax error, said as one
        assert not result.success
        return
    assert result.success, result.error_in_exec
    assert set(ip.user_ns) - before - {"_i2", "_ii", "_iii", "_i", "_ih", "_oh", "_dh"} >= bound
    assert ("iris" in ip.user_ns) == ("iris" in bound)
    if "first" in bound:
        assert ip.user_ns["first"].x.tolist() == [3, 4]
    if case == "bare, last line":
        assert result.result is None  # bound, not shown as the cell's value


def test_a_cell_that_rebinds_a_name_is_always_seen(ip, capsys):
    ip.user_ns["pd"] = pd
    ip.user_ns["frame"] = pd.DataFrame({"a": [-1]})
    for i in range(30):
        ip.user_ns["i"] = i
        ip.run_cell("%%lamin save\ndel frame\nframe = pd.DataFrame({'a': [i]})")
        assert f"saved frame as frame@{i + 1}" in capsys.readouterr().out
    assert lm.load("frame").a.tolist() == [29]


def test_a_cell_that_binds_nothing_new_saves_nothing(ip, capsys):
    ip.user_ns["frame"] = pd.DataFrame({"a": [1]})
    ip.run_cell("%%lamin save\nframe['b'] = 2\nn = 3")
    assert "the cell bound no DataFrame, Table, AnnData or MuData" in capsys.readouterr().out


# --- a multi-variable save is all or nothing -----------------------------------------------

BAD_FRAMES = {
    "complex numbers": pd.DataFrame({"z": [1 + 2j]}),
    "a sparse column": pd.DataFrame({"s": pd.arrays.SparseArray([0, 1, 0])}),
    "mixed types": pd.DataFrame({"m": [1, "a"]}),
}


@pytest.mark.parametrize("bad", sorted(BAD_FRAMES))
def test_a_save_of_several_variables_is_all_or_nothing(ip, bad):
    root = instance.current().root
    ip.user_ns["good"] = pd.DataFrame({"x": [1]})
    ip.user_ns["bad"] = BAD_FRAMES[bad]
    text = usage_error(ip, "save good bad")
    column = BAD_FRAMES[bad].columns[0]
    assert text.startswith(("bad: column", "cannot store bad as parquet: column")), text
    assert f"column {column!r}" in text and "df[col]" not in text, text
    assert lm.select(lm.File).all() == [] and stored_objects(root) == [] and not temporaries(root)
    kernel_still_works(ip)


def test_a_failure_while_committing_stores_nothing(ip, monkeypatch):
    root = instance.current().root
    ip.user_ns["a"] = pd.DataFrame({"x": [1]})
    ip.user_ns["b"] = pd.DataFrame({"x": [2]})
    create = registry.File.create
    calls = []

    def second_fails(**fields):
        calls.append(fields)
        if len(calls) == 2:
            raise OSError(5, "Input/output error", "registry")
        return create(**fields)

    monkeypatch.setattr(registry.File, "create", second_fails)
    usage_error(ip, "save a b")
    monkeypatch.undo()
    assert lm.select(lm.File).all() == [] and stored_objects(root) == [] and not temporaries(root)


# --- 5. every library failure is one line naming the object, with the fix ------------------


def test_objects_the_libraries_cannot_write(ip):
    root = instance.current().root
    cases = {
        "sparse": (pd.DataFrame({"s": pd.arrays.SparseArray([0.0, 1.0])}), ".sparse.to_dense()"),
        "cplx": (pd.DataFrame({"z": [1j]}), "complex numbers"),
        "intkey": (ad.AnnData(np.eye(2, dtype="float32"), uns={1: "a"}), "string keys"),
        "nested": (ad.AnnData(np.eye(2, dtype="float32"), uns={"a": {2: 1}}), "adata.uns['a']"),
        "tup": (ad.AnnData(np.eye(2, dtype="float32"), uns={"t": (1, 2)}), "is a tuple"),
    }
    for var, (obj, fix) in cases.items():
        ip.user_ns[var] = obj
        assert fix in usage_error(ip, f"save {var}")
        if isinstance(obj, ad.AnnData):
            assert fix in usage_error(ip, f"save {var} format=zarr")
    assert stored_objects(root) == [] and not temporaries(root)
    kernel_still_works(ip)


def test_a_writer_or_reader_that_fails_is_one_line(ip):
    class Odd:
        pass

    def write(obj, path):
        raise KeyError("the library's own words\nand a second line")

    lm.register_format("odd", suffix=".odd", type=Odd, write=write, load=lambda p: Odd())
    ip.user_ns["thing"] = Odd()
    text = usage_error(ip, "save thing")
    assert text.startswith("cannot store thing as odd: KeyError: \"the library's own words")
    assert text.endswith("; nothing was stored")
    root = instance.current().root
    assert stored_objects(root) == [] and not temporaries(root)

    def load(path):
        raise RuntimeError("cannot parse")

    lm.register_format(
        "odd2",
        suffix=".odd2",
        type=Odd,
        write=lambda o, p: p.write_bytes(b"x"),
        load=load,
        default=True,
    )
    ip.run_line_magic("lamin", "save thing")
    assert usage_error(ip, "load thing") == "cannot load thing@1 (odd2): RuntimeError: cannot parse"


def test_a_zeroed_parquet_is_one_line(ip):
    ip.user_ns["df"] = pd.DataFrame({"x": range(100)})
    ip.run_line_magic("lamin", "save df")
    path = lm.select(lm.File, name="df").one().path
    path.write_bytes(bytes(path.stat().st_size))
    assert "do not match their record" in usage_error(ip, "load df")
    text = usage_error(ip, "load df verify=no")
    assert text.startswith("the bytes of df@1 do not match their record"), text
    kernel_still_works(ip)


# --- hypothesis over every subcommand's line ------------------------------------------------

WORDS = st.sampled_from(
    [
        "df",
        "iris",
        "iris@1",
        "iris@²",
        "iris@10**20",
        "@",
        "as",
        "x",
        "name=",
        "page=²",
        "page=99999999999999999999",
        "format=zarr",
        "verify=maybe",
        "'",
        '"',
        "--x",
        "=",
        "é",
        "\u202e",
        "\x00",
        "\\",
        "*",
        "repair",
        "iris@0",
        "iris@-1",
        "title=t",
        "description=\x1b",
    ]
)
LINE = st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=5).map(" ".join)


@given(
    sub=st.sampled_from(["save", "load", "ls", "show", "check", "info", "track", "nothing", ""]),
    rest=LINE,
)
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_line_is_success_or_one_plain_usage_error(ip, sub, rest):
    ip.user_ns["df"] = pd.DataFrame({"x": [1]})
    if not lm.select(lm.File, name="iris").all():
        lm.add(lm.File(pd.DataFrame({"x": [1]}), name="iris"))
    try:
        ip.run_line_magic("lamin", f"{sub} {rest}")
    except UsageError as e:
        assert type(e) is UsageError and "\n" not in str(e) and str(e).isprintable(), repr(e)
    assert ip.user_ns["get_ipython"] is not None and "len" not in ip.user_ns
    assert ip.run_cell("1 + 1").result == 2


# --- the command line -----------------------------------------------------------------------


def test_cli_errors_exit_2_with_one_line_and_create_nothing(tmp_path):
    root = tmp_path / "R"
    lm.init(root)
    lm.add(lm.File(pd.DataFrame({"x": [1]}), name="iris"))
    instance.reset()
    cases = [
        (["--root", str(root), "show", "iris@²"], "is not a whole number"),
        (["--root", str(root), "show", "iris@99999999999999999999"], "is too large"),
        (["--root", str(root), "show", "nothing"], "lamin-magic ls lists what is stored"),
        (["--root", str(root), "ls", "--page", "99999999999999999999"], "is too large"),
        (["--root", str(root), "ls", "--page", "²"], "is not a whole number"),
        (["--root", str(tmp_path / "typo"), "ls"], "create one: lamin-magic init PATH"),
        (["--root", str(tmp_path / "typo"), "check"], "no instance at"),
        (["ls"], "no instance at"),  # nothing here, and no default instance yet
        (["--root", "", "ls"], "init needs a folder path"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["show"], "the following arguments are required: NAME[@VERSION]"),
    ]
    for args, message in cases:
        out = cli(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("lamin-magic: error: ") and message in out.stderr
        assert out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "typo").exists() and not instance.default_root().exists()
    assert cli("--root", str(root), "check", cwd=tmp_path).returncode == 0
    (root / "ABCDEFGHIJ0123456789.parquet").write_bytes(b"orphan")
    assert cli("--root", str(root), "check", cwd=tmp_path).returncode == 1
    assert cli("--root", str(root), "check", "--repair", cwd=tmp_path).returncode == 0


# --- reads never wait on a writer -----------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.slow
def test_reads_go_on_while_a_writer_holds_the_lock(tmp_path):
    root = tmp_path / "R"
    inst = lm.init(root)
    lm.track()
    lm.add(lm.File(pd.DataFrame({"x": [1]}), name="iris"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(inst.registry_path), "25"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        for args in (["ls"], ["show", "iris"], ["info"], ["runs"]):
            start = time.monotonic()
            out = cli("--root", str(root), *args, cwd=tmp_path)
            assert out.returncode == 0 and time.monotonic() - start < 5, out.stderr
        before = stored_objects(root)
        start = time.monotonic()
        with pytest.raises(RegistryBusyError) as raised:
            lm.add(lm.File(pd.DataFrame({"x": [2]}), name="iris"))
        text = str(raised.value)
        assert 9 < time.monotonic() - start < 20
        assert f"pid {holder.pid}" in text and "wait for it to finish" in text and "\n" not in text
        assert not temporaries(root) and stored_objects(root) == before
    finally:
        holder.kill()
        holder.communicate()
    saved = lm.add(lm.File(pd.DataFrame({"x": [2]}), name="iris"))
    assert saved.version == 2 and check().ok


def test_a_corrupt_load_with_verify_off_still_says_what_changed(inst):
    stored = lm.add(lm.File(pd.DataFrame({"x": range(50)}), name="t"))
    stored.path.write_bytes(bytes(stored.path.stat().st_size))
    with pytest.raises(IntegrityError, match="do not match their record"):
        lm.load("t", verify=False)


def test_a_variable_named_twice_or_an_empty_title_is_refused(ip):
    ip.user_ns["df"] = pd.DataFrame({"x": [1]})
    assert "'df' is named twice" in usage_error(ip, "save df df")
    assert "title= is empty" in usage_error(ip, "track title=")
    assert lm.select(lm.File).all() == []
