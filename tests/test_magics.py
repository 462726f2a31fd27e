"""Every %lamin subcommand and every user-facing message, in an in-process IPython shell."""

from __future__ import annotations

import sqlite3

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

import lamin_magic as lm
from lamin_magic import instance, tracking
from lamin_magic.magics import LaminMagics
from lamin_magic.views import human_size


def lamin(ip, line):
    """`%lamin LINE`; a load runs as a statement, as in a cell, so it binds its variable
    (a caller that uses the magic's value gets the object back instead)."""
    if line.startswith("load"):
        ip.run_line_magic("lamin", line)
        return None
    return ip.run_line_magic("lamin", line)


def cell(ip, source):
    """Run a cell as a user would; returns the error raised in it, if any."""
    result = ip.run_cell(source)
    return result.error_in_exec


def test_load_ext_prints_the_instance_user_and_what_it_tracks(shell, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(tmp_path / "inst"))
    shell.run_line_magic("load_ext", "lamin_magic")
    try:
        out = capsys.readouterr().out
        assert f"lamin_magic: instance {tmp_path / 'inst'} (from LAMIN_MAGIC_ROOT), user " in out
        assert "lamin_magic: tracking an IPython session (no notebook found), run " in out
        assert lm.context.run.id in out
    finally:
        shell.run_line_magic("unload_ext", "lamin_magic")


def test_load_ext_with_a_notebook_path_records_name_and_title(shell, tmp_path, monkeypatch, capsys):
    nb = tmp_path / "my analysis.ipynb"
    nb.write_text(
        '{"cells": [{"cell_type": "markdown", "source": ["Intro\\n", "# My analysis\\n"]}], '
        '"metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(tmp_path / "inst"))
    monkeypatch.setenv("LAMIN_MAGIC_NOTEBOOK", str(nb))
    shell.run_line_magic("load_ext", "lamin_magic")
    try:
        assert "tracking notebook 'my analysis'" in capsys.readouterr().out
        shell.run_cell("1 + 1")  # the first cell's end records the title read in the background
        t = lm.context.transform
        t = lm.Transform.get_by_id(t.id)
        assert (t.name, t.title, t.type, t.key) == (
            "my analysis",
            "My analysis",
            "notebook",
            str(nb),
        )
    finally:
        shell.run_line_magic("unload_ext", "lamin_magic")


def test_save_and_load_a_dataframe(ip, capsys):
    ip.user_ns["df"] = pd.DataFrame({"a": [1, 2, 3]})
    lamin(ip, "save df name=iris description='three rows'")
    out = capsys.readouterr().out
    file = lm.select(lm.File, name="iris").one()
    size = human_size(file.size)
    assert size.endswith(" KB")
    assert out == f"saved df as iris@1 (.parquet, {size}, id {file.id})\n"
    assert file.description == "three rows"
    lamin(ip, "save df name=iris")
    assert capsys.readouterr().out == f"iris@1 is unchanged: df has the same content ({size})\n"
    del ip.user_ns["df"]
    lamin(ip, "load iris")
    assert capsys.readouterr().out == "loaded iris@1 into iris (DataFrame 3 x 1)\n"
    pd.testing.assert_frame_equal(ip.user_ns["iris"], pd.DataFrame({"a": [1, 2, 3]}))


def test_name_defaults_to_the_variable_and_several_variables_save_at_once(ip, capsys):
    ip.user_ns["a"] = pd.DataFrame({"x": [1]})
    ip.user_ns["b"] = pd.DataFrame({"x": [2]})
    lamin(ip, "save a b")
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in out] == ["saved a as a@1", "saved b as b@1"]


def test_new_content_is_a_new_version_and_versions_load(ip, capsys):
    ip.user_ns["df"] = pd.DataFrame({"x": [1]})
    lamin(ip, "save df")
    ip.user_ns["df"] = pd.DataFrame({"x": [1, 2]})
    lamin(ip, "save df")
    assert "saved df as df@2" in capsys.readouterr().out
    lamin(ip, "load df@1 as first")
    assert capsys.readouterr().out == "loaded df@1 into first (DataFrame 1 x 1)\n"
    assert len(ip.user_ns["first"]) == 1


def test_assigned_load_returns_the_object_and_binds_nothing_else(ip, capsys):
    ip.user_ns["df"] = pd.DataFrame({"x": [1, 2]})
    lamin(ip, "save df name=frame")
    assert cell(ip, "x = %lamin load frame") is None
    assert len(ip.user_ns["x"]) == 2
    assert "frame" not in ip.user_ns


def test_save_anndata_as_h5ad_and_zarr(ip, capsys):
    ip.user_ns["adata"] = ad.AnnData(np.eye(3, dtype="float32"))
    lamin(ip, "save adata")
    lamin(ip, "save adata name=adata_z format=zarr")
    out = capsys.readouterr().out
    assert "saved adata as adata@1 (.h5ad," in out and "saved adata as adata_z@1 (.zarr," in out
    lamin(ip, "load adata_z as back")
    np.testing.assert_array_equal(ip.user_ns["back"].X, np.eye(3))


def test_cell_magic_saves_what_the_cell_bound(ip, capsys):
    ip.user_ns["old"] = pd.DataFrame({"x": [0]})
    assert (
        cell(ip, "%%lamin save\nimport pandas as pd\nnew = pd.DataFrame({'y': [1]})\nn = 3") is None
    )
    out = capsys.readouterr().out
    assert "saved new as new@1" in out and "old" not in out
    assert [f.name for f in lm.select(lm.File)] == ["new"]


def test_cell_magic_with_names_and_with_nothing_bound(ip, capsys):
    assert (
        cell(ip, "%%lamin save b\nimport pandas as pd\na = pd.DataFrame({'y': [1]})\nb = a") is None
    )
    assert "saved b as b@1" in capsys.readouterr().out
    assert cell(ip, "%%lamin save\nz = 1") is None
    assert (
        "the cell bound no DataFrame, Table, AnnData or MuData; nothing to save"
        in capsys.readouterr().out
    )


def test_cell_magic_does_not_save_when_the_cell_fails(ip, capsys):
    cell(ip, "%%lamin save\nimport pandas as pd\nf = pd.DataFrame({'y': [1]})\n1 / 0")
    assert "the cell failed; nothing was saved" in capsys.readouterr().out
    assert lm.select(lm.File).first() is None


def test_ls_show_info_render_as_text_and_html(ip, capsys):
    ip.user_ns["df"] = pd.DataFrame({"x": [1]})
    lamin(ip, "save df name=iris")
    lamin(ip, "save df name=other")
    table = lamin(ip, "ls")
    assert [row[0] for row in table.rows] == ["iris", "other"]
    assert "<table>" in table._repr_html_() and "iris" in str(table)
    assert [row[0] for row in lamin(ip, "ls iri*").rows] == ["iris"]
    shown = lamin(ip, "show iris")
    text = str(shown)
    for part in ("iris@1", "made by", "versions", "read by"):
        assert part in text
    assert "<table>" in shown._repr_html_()
    info = str(lamin(ip, "info"))
    assert "instance" in info and lm.context.run.id in info


def test_ls_pages(ip):
    for i in range(55):
        lm.add(lm.File(pd.DataFrame({"x": [i]}), name=f"f{i:02d}"))
    first = lamin(ip, "ls")
    assert len(first.rows) == 50 and first.footer == "more on page 2"
    second = lamin(ip, "ls page=2")
    assert [r[0] for r in second.rows] == [f"f{i}" for i in range(50, 55)] and not second.footer


def test_show_lists_readers(ip):
    ip.user_ns["df"] = pd.DataFrame({"x": [1]})
    lamin(ip, "save df name=iris")
    lamin(ip, "track")  # a new run reads it
    lamin(ip, "load iris")
    readers = lamin(ip, "show iris").parts[3]
    assert [r[0] for r in readers.rows] == [lm.context.run.id]


def test_track_and_init(ip, tmp_path, capsys):
    nb = tmp_path / "nb.ipynb"
    nb.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    first = lm.context.run.id
    lamin(ip, f"track '{nb}' title='A title'")
    assert "tracking notebook 'nb'" in capsys.readouterr().out
    assert lm.context.run.id != first and lm.context.transform.title == "A title"
    lamin(ip, f"init {tmp_path / 'other'}")
    assert f"instance {tmp_path / 'other'} (chosen with init)" in capsys.readouterr().out
    assert instance.current().root == tmp_path / "other"
    assert lm.Run.get_by_id(lm.context.run.id).transform.key == str(nb)


def test_config_root_traitlet(shell, tmp_path, monkeypatch):
    shell.run_line_magic("load_ext", "lamin_magic")
    try:
        shell.run_line_magic("config", f"LaminMagics.root = {str(tmp_path / 'configured')!r}")
        assert instance.current().root == tmp_path / "configured"
    finally:
        shell.run_line_magic("unload_ext", "lamin_magic")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "%lamin needs a subcommand: save, load, ls, show, source, lineage, rm, restore, gc"),
        (
            "bogus",
            "%lamin has no subcommand 'bogus'; use one of save, load, ls, show, source, lineage",
        ),
        ("save", "%lamin save needs a variable: %lamin save df name=iris"),
        ("save nothere", "'nothere' is not defined; run the cell that creates it first"),
        ("save df.x", "'df.x' is not a variable name; write %lamin save df name=iris"),
        ("save df colour=red", "%lamin save has no option colour=; its options: description="),
        ("save df name=a name=b", "%lamin save: name= is given twice"),
        ("save df --force", "%lamin save: unknown option '--force'; options are written key=value"),
        ("save df 'name=x", "%lamin save: No closing quotation (close the quote)"),
        ("save df other name=x", "name= works with one variable; save the others one by one"),
        ("save df name=", "the name is empty; give one, e.g. name=iris"),
        ("save df name=a@b", "holds '@', which separates a name from its version"),
        ("save items", "cannot store a list; supported types: DataFrame (parquet), AnnData"),
        ("save df format=csv", "unknown format 'csv'; use one of: parquet, h5ad, zarr"),
        ("save df format=zarr", "format 'zarr' cannot store a pandas.core.frame.DataFrame"),
        ("load", "write %lamin load NAME[@VERSION] [as VAR]"),
        ("load nothing", "no file named 'nothing'; %lamin ls lists what is stored"),
        ("load df@9", "'df' has no version 9; it has versions 1"),
        ("load df@x", "version 'x' in 'df@x' is not a whole number from 1 up"),
        (
            "load df as 1x",
            "'1x' is not a variable name; load it under another name: %lamin load df as VAR",
        ),
        ("load df extra", "write %lamin load NAME[@VERSION] [as VAR]"),
        ("ls a b", "write %lamin ls [PATTERN] [page=N]"),
        ("ls page=0", "page=0 is not a whole number from 1 up; write page=1"),
        ("show", "write %lamin show NAME[@VERSION]"),
        ("show nothing", "no file named 'nothing'"),
        ("track a b", "write %lamin track [PATH] [title=TEXT]"),
        ("track /no/such.ipynb", "no file at /no/such.ipynb; give the path of the notebook"),
        ("info x", "%lamin info takes no arguments"),
        ("init", "write %lamin init PATH, e.g. %lamin init ./mydata"),
    ],
)
def test_mistakes_are_one_line_usage_errors(ip, line, message):
    ip.user_ns["df"] = pd.DataFrame({"x": [1]})
    ip.user_ns["items"] = [1, 2]
    lm.add(lm.File(ip.user_ns["df"], name="df"))
    before = set(ip.user_ns)
    with pytest.raises(UsageError) as raised:
        lamin(ip, line)
    assert type(raised.value) is UsageError  # a subclass would print a full traceback
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert set(ip.user_ns) == before
    assert ip.run_cell("1 + 1").result == 2  # the shell goes on


def test_load_of_a_name_that_is_no_identifier(ip, capsys):
    lm.add(lm.File(pd.DataFrame({"x": [1]}), name="my-data"))
    with pytest.raises(
        UsageError,
        match="'my-data' is not a variable name; load it under another name: %lamin load my-",
    ):
        lamin(ip, "load my-data")
    lamin(ip, "load my-data as d")
    assert "d" in ip.user_ns


def test_cell_magic_takes_save_only(ip):
    with pytest.raises(UsageError, match="%%lamin works with save only, not ls"):
        ip.run_cell_magic("lamin", "ls", "x = 1")
    with pytest.raises(UsageError, match="%%lamin save takes no name="):
        ip.run_cell_magic("lamin", "save name=x", "x = 1")


def test_disk_errors_become_one_line(ip, monkeypatch):
    ip.user_ns["df"] = pd.DataFrame({"x": [1]})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "/inst/.lamin-tmp/x.parquet.partial")

    monkeypatch.setattr("lamin_magic.storage.objects.write_temp", full)
    with pytest.raises(UsageError, match="%lamin save: No space left on device"):
        lamin(ip, "save df")


def test_reload_ext_keeps_the_run_and_unload_removes_the_magic(ip):
    run = lm.context.run.id
    ip.run_line_magic("reload_ext", "lamin_magic")
    assert lm.context.run.id == run
    ip.run_line_magic("unload_ext", "lamin_magic")
    assert "lamin" not in ip.magics_manager.magics["line"]
    assert ip.run_cell("%lamin info").error_in_exec is not None
    ip.run_line_magic("load_ext", "lamin_magic")
    assert "lamin" in ip.magics_manager.magics["line"]


def test_help_documents_every_subcommand(ip):
    doc = LaminMagics.lamin.__doc__
    for sub in ("save", "load", "ls", "show", "track", "info", "init"):
        assert f"%lamin {sub}" in doc
    assert "%%lamin save" in doc and "x = %lamin load" in doc


def test_vs_code_notebook_set_after_start_is_found_before_the_first_cell(
    shell, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(tmp_path / "inst"))
    nb = tmp_path / "vscode.ipynb"
    nb.write_text(
        '{"cells": [{"cell_type": "markdown", "source": "# From VS Code"}], "metadata": {}, '
        '"nbformat": 4, "nbformat_minor": 5}'
    )
    shell.run_line_magic("load_ext", "lamin_magic")
    try:
        run = lm.context.run.id
        assert lm.context.transform.type == "ipython"
        shell.user_ns["__vsc_ipynb_file__"] = str(nb)  # what VS Code runs silently
        shell.run_cell("1 + 1")
        assert lm.context.run.id == run
        con = sqlite3.connect(instance.current().registry_path)
        row = con.execute(
            "SELECT t.name, t.title, t.type FROM run r JOIN transform t ON r.transform_id = t.id "
            "WHERE r.id = ?",
            (run,),
        ).fetchone()
        con.close()
        assert row == ("vscode", "From VS Code", "notebook")
    finally:
        shell.user_ns.pop("__vsc_ipynb_file__", None)
        shell.run_line_magic("unload_ext", "lamin_magic")


def test_a_broken_instance_gives_one_warning_and_the_magic_still_loads(
    shell, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken.lndb").write_bytes(b"not a database" * 100)
    monkeypatch.setenv("LAMIN_MAGIC_ROOT", str(folder))
    shell.run_line_magic("load_ext", "lamin_magic")
    err = capsys.readouterr().err
    assert err.startswith("Warning: lamin_magic could not track this session: cannot open")
    assert len(err.splitlines()) == 1
    try:
        assert "lamin" in shell.magics_manager.magics["line"]
        with pytest.raises(UsageError, match="cannot open the registry"):
            lamin(shell, "ls")
    finally:
        shell.run_line_magic("unload_ext", "lamin_magic")
        tracking.context.run = None


def test_cell_magic_never_pickles_what_it_was_not_asked_to(ip, capsys):
    lm.init(instance.current().root, allow_pickle=True)
    assert (
        cell(ip, "%%lamin save\nimport pandas as pd\nframe = pd.DataFrame({'y': [1]})\nn = 3")
        is None
    )
    assert [f.name for f in lm.select(lm.File)] == ["frame"]  # not n, though pickle is allowed
    lamin(ip, "save n")  # named, it may be pickled here
    assert lm.load("n") == 3
