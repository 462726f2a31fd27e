"""The code that ran: every cell a run executes, as it ran, and the cell that saved each file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import cli
from kernels import clean_env, kernel, run_code

import lamin_magic as lm
from lamin_magic import tracking, views


def cell(ip, source: str) -> None:
    result = ip.run_cell(source, store_history=True)
    assert result.success, result.error_in_exec


def test_cells_are_recorded_as_they_ran(ip):
    ip.user_ns["pd"] = pd
    start = ip.execution_count
    cell(ip, "df = pd.DataFrame({'x': [1]})")
    cell(ip, "%lamin save df")
    cell(ip, "df = pd.DataFrame({'x': [2]})")  # the same code again, out of order
    cell(ip, "%lamin save df")
    ip.run_cell("silent = 1", store_history=False)  # not a cell of the user's history
    shown = str(views.run_source())
    assert shown.count("In [") == 4 and "no end" not in shown
    blocks = [b.splitlines() for b in shown.split("\n\n")]
    assert [b[0].split("]")[0] for b in blocks] == [f"In [{start + i}" for i in range(4)]
    assert [b[1] for b in blocks] == [
        "df = pd.DataFrame({'x': [1]})",
        "%lamin save df",
        "df = pd.DataFrame({'x': [2]})",
        "%lamin save df",
    ]
    assert "silent" not in shown
    assert [f.cell for f in lm.select(lm.File, order_by="version")] == [start + 1, start + 3]
    saved = str(views.show_file("df@2"))
    assert f"saved by cell [{start + 3}]\n%lamin save df" in saved
    cells = ip.run_line_magic("lamin", "source")
    assert "%lamin save df" in cells._repr_html_() and "<pre>" in cells._repr_html_()


def test_a_cell_is_kept_when_the_kernel_dies_in_it(tmp_path):
    root = tmp_path / "inst"
    with kernel(clean_env(LAMIN_MAGIC_ROOT=str(root)), tmp_path) as (km, client):
        run_code(client, "import pandas as pd\ndf = pd.DataFrame({'x': [1, 2]})")
        run_code(client, "%lamin save df name=frame")
        run_code(client, "df['y'] = df.x * 2")
        run_code(client, "df['y'] = df.x * 2")  # run twice
        run_id = run_code(
            client, "print(get_ipython().run_line_magic('lamin', 'info').rows[6][1])"
        )["stdout"].strip()
        client.execute("import os; os._exit(1)")  # the kernel dies in this cell
        for _ in range(100):
            if not km.is_alive():
                break
            time.sleep(0.1)
    con = sqlite3.connect(root / "inst.lndb")
    rows = con.execute(
        "SELECT execution_count, source, finished_at IS NOT NULL FROM cell WHERE run_id = ?"
        " ORDER BY execution_count",
        (run_id,),
    ).fetchall()
    con.close()
    sources = [r[1] for r in rows]
    assert sources[1] == "%lamin save df name=frame"
    assert sources[2] == sources[3] == "df['y'] = df.x * 2"
    assert sources[-1] == "import os; os._exit(1)" and rows[-1][2] == 0  # begun, never ended
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    out = cli("--root", str(root), "source", run_id)
    assert out.returncode == 0 and "In [2]" in out.stdout and "os._exit(1)" in out.stdout
    assert "(no end: still running, or stopped)" in out.stdout
    shown = cli("--root", str(root), "show", "frame").stdout
    assert "saved by cell [2]\n%lamin save df name=frame" in shown


def test_source_of_an_unknown_run_is_one_line(inst):
    from lamin_magic.errors import NotFoundError

    tracking.track()
    with pytest.raises(NotFoundError, match="no run 'nothing'; lamin-magic runs lists them"):
        views.run_source("nothing")
    assert "no cell recorded" in str(views.run_source())


def test_each_run_records_its_environment_once(tmp_path):
    root = tmp_path / "inst"
    code = "import lamin_magic as lm\nlm.init({root!r})\nprint(lm.track().id)"
    runs = []
    for extra in ("", "import json"):  # two runs of the same environment
        out = subprocess.run(
            [sys.executable, "-c", extra + "\n" + code.format(root=str(root))],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        runs.append(out.stdout.strip())
    con = sqlite3.connect(root / "inst.lndb")
    envs = con.execute("SELECT environment FROM run ORDER BY created_at").fetchall()
    count = con.execute("SELECT COUNT(*) FROM environment").fetchone()[0]
    con.close()
    assert envs[0] == envs[1] and envs[0][0] and count == 1  # stored once
    out = cli("--root", str(root), "env", runs[0])
    lines = out.stdout.splitlines()
    assert lines[0] == f"python=={sys.version.split()[0]}"
    assert f"pandas=={pd.__version__}" in lines and "lamin-magic==0.1.0" in lines
    assert cli("--root", str(root), "env", runs[1], "--diff", runs[0]).stdout == (
        "the same environment\n"
    )
    # another environment: one distribution more, one changed
    con = sqlite3.connect(root / "inst.lndb")
    python, packages = con.execute("SELECT python, packages FROM environment").fetchone()
    changed = packages.replace(f"pandas=={pd.__version__}", "pandas==1.0") + "\nzzz-extra==1"
    con.execute("INSERT INTO environment VALUES ('other', ?, ?, '2026-01-01')", (python, changed))
    con.execute("UPDATE run SET environment = 'other' WHERE id = ?", (runs[1],))
    con.commit()
    con.close()
    diff = cli("--root", str(root), "env", runs[1], "--diff", runs[0]).stdout.splitlines()
    assert diff == [f"~ pandas=={pd.__version__} -> 1.0", "+ zzz-extra==1"]
    bad = cli("--root", str(root), "env", "nothing")
    assert bad.returncode == 2 and "no run 'nothing'" in bad.stderr


def notebooks(tmp_path, *names: str) -> list:
    found = []
    for name in names:
        path = tmp_path / f"{name}.ipynb"
        path.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
        found.append(path)
    return found


def test_lineage_across_two_notebooks(inst, tmp_path, ip):
    from lamin_magic.graph import lineage

    a, b, c = notebooks(tmp_path, "A", "B", "C")
    lm.track(a, new_run=True)
    lm.add(lm.File(pd.DataFrame({"x": [1]}), name="x"))
    lm.track(b, new_run=True)
    lm.load("x")
    lm.add(lm.File(pd.DataFrame({"y": [2]}), name="y"))
    lm.track(c, new_run=True)
    lm.load("y")
    lm.add(lm.File(pd.DataFrame({"z": [3]}), name="z"))
    graph = lineage("y")
    text = str(graph).splitlines()
    assert text[0] == "lineage of y@1 (depth 3)"
    edges = {line.strip() for line in text[1:]}
    run_of = {n.label.split(" (")[0]: n.label for n in graph.nodes.values() if n.kind == "run"}
    assert edges == {
        f"{run_of['A']} --made--> x@1",
        f"x@1 --read by--> {run_of['B']}",
        f"{run_of['B']} --made--> y@1",
        f"y@1 --read by--> {run_of['C']}",
        f"{run_of['C']} --made--> z@1",
    }
    # a step is a run and its files: one step from x reaches y, not z
    near = [n.label for n in lineage("x", depth=1).nodes.values() if n.kind == "file"]
    assert sorted(near) == ["x@1", "y@1"]
    mermaid = graph.mermaid()
    assert mermaid.startswith("flowchart LR") and '["x@1"]' in mermaid and "-->" in mermaid
    assert graph.dot().startswith("digraph lineage {") and 'label="z@1", shape=box' in graph.dot()
    # in Jupyter: Markdown holding a Mermaid block (JupyterLab 4.1+ and Notebook 7 draw it)
    shown = ip.run_line_magic("lamin", "lineage y depth=2")
    assert shown._repr_markdown_().startswith("```mermaid\nflowchart LR")
    assert repr(shown).startswith("lineage of y@1 (depth 2)")
    out = cli("--root", str(inst.root), "lineage", "y", "--format", "mermaid")
    assert out.returncode == 0 and out.stdout.startswith("flowchart LR"), out.stderr
    assert "z@1" not in cli("--root", str(inst.root), "lineage", "x", "--depth", "1").stdout


def test_lineage_of_a_file_nobody_read_and_bad_depths(inst):
    from lamin_magic.errors import InvalidArgumentError
    from lamin_magic.graph import lineage

    lm.add(lm.File(pd.DataFrame({"x": [1]}), name="alone"))
    text = str(lineage("alone"))
    assert "--made-->" in text and "read by" not in text
    for depth in (0, 21, "3", True):
        with pytest.raises(InvalidArgumentError, match="depth must be a whole number"):
            lineage("alone", depth=depth)


def test_lineage_is_the_function_after_its_module_is_imported(inst):
    import importlib

    importlib.import_module("lamin_magic.graph")
    assert callable(lm.lineage)


def test_mermaid_labels_show_as_they_are():
    from lamin_magic.graph import mermaid_text

    hostile = '<img src=x onerror=alert(1)> x&amp;y a #35; b tab%%{init}%% "q"'
    text = mermaid_text(hostile)
    assert not any(c in text.replace("#", "").replace(";", "") for c in '"&<>%')
    assert text.startswith("#60;img src=x onerror=alert(1)#62; x#38;amp;y a #35;35;")


# --- snapshots of the notebook or script, at exit ----------------------------------------------


def notebook_with_outputs(path, *sources: str, output: str = "42"):
    """A notebook as Jupyter saves it after running: outputs, counts and times in it."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Snapshot me")]
    for i, source in enumerate(sources, 1):
        cell = nbformat.v4.new_code_cell(source, execution_count=i)
        cell.outputs = [nbformat.v4.new_output("stream", text=output)]
        cell.metadata["execution"] = {"iopub.execute_input": f"2026-11-29T10:0{i}:00Z"}
        nb.cells.append(cell)
    nb.metadata["widgets"] = {"state": {"big": "x" * 100}}
    nbformat.write(nb, path)
    return path


def registry_rows(registry, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(registry)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_a_kernel_stores_its_notebook_once_per_content_at_shutdown(tmp_path):
    import nbformat

    root = tmp_path / "inst"
    nb_path = notebook_with_outputs(tmp_path / "analysis.ipynb", "x = 1", "print(x)")
    env = clean_env(LAMIN_MAGIC_ROOT=str(root), JPY_SESSION_NAME=str(nb_path))
    runs = []
    for output in ("42", "43", "44"):  # run 3 saved other outputs only: the same snapshot
        if output == "44":  # Jupyter saved it again after running: outputs and counts differ
            nb = nbformat.read(nb_path, as_version=4)
            for c in nb.cells[1:]:
                c.outputs[0].text, c.execution_count = "44", c.execution_count + 10
            nbformat.write(nb, nb_path)
        with kernel(env, tmp_path) as (_, client):
            runs.append(run_code(client, "import lamin_magic as lm\nprint(lm.context.run.id)"))
        if output == "42":  # edited between the first and the second run
            notebook_with_outputs(nb_path, "x = 2", "print(x)")
    ids = [r["stdout"].strip().splitlines()[-1] for r in runs]
    registry = root / "inst.lndb"
    snapshots = registry_rows(
        registry,
        "SELECT r.id, r.snapshot, r.finished_at IS NOT NULL FROM run r ORDER BY r.created_at",
    )
    assert [s[0] for s in snapshots] == ids and all(s[1] and s[2] for s in snapshots)
    assert snapshots[0][1] != snapshots[1][1] == snapshots[2][1]  # edited; then outputs only
    assert registry_rows(registry, "SELECT kind, COUNT(*) FROM source GROUP BY kind") == [
        ("notebook", 2)
    ]
    out = cli("--root", str(root), "source", ids[1], "--notebook")
    assert out.returncode == 0, out.stderr
    stored = nbformat.reads(out.stdout, as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert [c.source for c in code] == ["x = 2", "print(x)"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert all("execution" not in c.metadata for c in code) and "widgets" not in stored.metadata
    assert stored.cells[0].source == "# Snapshot me"
    shown = cli("--root", str(root), "show", "x").stderr  # no file: still one line
    assert shown.startswith("lamin-magic: error: no file named 'x'")


def test_a_script_records_its_source_and_a_failure_is_one_line(tmp_path):
    root = tmp_path / "inst"
    script = tmp_path / "job.py"
    script.write_text(
        "import pandas as pd, lamin_magic as lm\n"
        f"lm.init({str(root)!r})\n"
        "lm.add(lm.File(pd.DataFrame({'a': [1]}), name='made'))\n"
        "print(lm.context.run.id)  # caf\u00e9\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    run_id = out.stdout.strip()
    printed = cli("--root", str(root), "source", run_id, "--notebook")
    assert printed.stdout == script.read_text(), printed.stderr
    shown = cli("--root", str(root), "show", "made").stdout
    assert f"lamin-magic source {run_id} --notebook" in shown
    # a script that removes itself before it ends: one line, its exit status unchanged
    gone = tmp_path / "gone.py"
    gone.write_text(
        f"import os, lamin_magic as lm\nlm.init({str(root)!r})\nlm.track()\n"
        "os.remove(__file__)\nraise SystemExit(3)\n"
    )
    out = subprocess.run([sys.executable, str(gone)], capture_output=True, text=True)
    assert out.returncode == 3
    assert out.stderr.startswith("lamin_magic: no snapshot of the script was recorded: ")
    assert out.stderr.count("\n") == 1
    rows = registry_rows(
        root / "inst.lndb",
        "SELECT r.snapshot FROM run r JOIN transform t ON r.transform_id = t.id"
        " WHERE t.name = 'gone'",
    )
    assert rows == [(None,)]
    missing = cli("--root", str(root), "source", "nope", "--notebook")
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_what_is_not_a_plain_notebook_file_is_not_read(tmp_path, inst, monkeypatch):
    import os

    fifo = tmp_path / "pipe.ipynb"
    os.mkfifo(fifo)
    assert tracking.read_notebook(fifo) is None  # would block forever if opened plainly
    with pytest.raises(ValueError, match="not a regular file"):
        tracking.source_snapshot(fifo, "notebook")
    big = tmp_path / "big.ipynb"
    notebook_with_outputs(big, "x = 1", output="y" * 5000)
    monkeypatch.setattr(tracking, "MAX_SOURCE_BYTES", 4096)
    with pytest.raises(ValueError, match="larger than"):
        tracking.source_snapshot(big, "notebook")
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": {}}')
    with pytest.raises(ValueError, match="no list of cells"):
        tracking.source_snapshot(broken, "notebook")


def test_a_schema_4_registry_is_upgraded_and_keeps_its_provenance(tmp_path):
    from conftest import downgrade

    from lamin_magic import instance, registry

    inst = lm.init(tmp_path / "inst")
    run = tracking.track()
    lm.add(lm.File(pd.DataFrame({"a": [1]}), name="kept"))
    tracking.start_cell(1, "%lamin save kept")
    instance.reset()
    tracking.context.run = tracking.context.transform = None
    downgrade(inst.registry_path, 4)
    assert "snapshot" not in [
        r[1] for r in registry_rows(inst.registry_path, "PRAGMA table_info(run)")
    ]
    lm.init(tmp_path / "inst")
    assert lm.load("kept").a.tolist() == [1]
    assert "%lamin save kept" in str(views.run_source(run.id))
    assert registry_rows(inst.registry_path, "PRAGMA user_version") == [(registry.SCHEMA_VERSION,)]
    indexes = {r[1] for r in registry_rows(inst.registry_path, "PRAGMA index_list(run)")}
    assert "run_snapshot" in indexes
    script = tmp_path / "after.py"
    script.write_text(
        f"import lamin_magic as lm\nlm.init({str(tmp_path / 'inst')!r})\nlm.track()\n"
    )
    subprocess.run([sys.executable, str(script)], check=True)
    assert registry_rows(inst.registry_path, "SELECT kind FROM source") == [("script",)]


@pytest.mark.slow
def test_lineage_across_two_notebooks_in_real_kernels(tmp_path):
    import nbformat
    from run_notebook import run_notebook

    from lamin_magic.graph import lineage

    root = tmp_path / "inst"
    made = {}
    for name, code in (
        ("make_x", ["import pandas as pd\nx = pd.DataFrame({'a': [1, 2]})", "%lamin save x"]),
        ("use_x", ["%lamin load x", "y = x * 2", "%lamin save y", "%lamin lineage y"]),
    ):
        source = tmp_path / "src" / name / f"{name}.ipynb"
        source.parent.mkdir(parents=True)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}")]
        nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
        nbformat.write(nb, source)
        made[name] = run_notebook(source, tmp_path / "out" / name, root)
    shown = made["use_x"].cells[-1].outputs[-1]
    assert shown.data["text/markdown"].startswith("```mermaid\nflowchart LR")
    text = shown.data["text/plain"]
    runs = dict(
        registry_rows(
            root / "inst.lndb",
            "SELECT t.name, r.id FROM run r JOIN transform t ON r.transform_id = t.id",
        )
    )
    assert (
        text.splitlines()
        == [  # in the kernel of use_x: both notebooks, both runs
            "lineage of y@1 (depth 3)",
            f"  make_x (notebook) run {runs['make_x'][:8]} --made--> x@1",
            f"  use_x (notebook) run {runs['use_x'][:8]} --made--> y@1",
            f"  x@1 --read by--> use_x (notebook) run {runs['use_x'][:8]}",
        ]
    )
    lm.init(root)
    edges = {line.strip() for line in str(lineage("y")).splitlines()[1:]}
    label = {
        n.label.split(" (")[0]: n.label for n in lineage("y").nodes.values() if n.kind == "run"
    }
    assert edges == {
        f"{label['make_x']} --made--> x@1",
        f"x@1 --read by--> {label['use_x']}",
        f"{label['use_x']} --made--> y@1",
    }
    # both kernels stored their notebook when they shut down
    kinds = registry_rows(root / "inst.lndb", "SELECT r.snapshot IS NOT NULL FROM run r")
    assert kinds == [(1,), (1,)]


def test_a_held_registry_delays_an_exit_by_about_a_second_at_most(tmp_path):
    root = tmp_path / "inst"
    script = tmp_path / "job.py"
    script.write_text(
        f"import sys, lamin_magic as lm\nlm.init({str(root)!r})\nlm.track()\n"
        "print('tracked', flush=True)\nsys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "tracked\n"
    time.sleep(2.5)  # its environment is recorded (2 s after it starts)
    con = sqlite3.connect(root / "inst.lndb", isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # another writer holds the registry while it exits
    try:
        start = time.monotonic()
        _, err = proc.communicate("go\n", timeout=30)
        took = time.monotonic() - start
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert proc.returncode == 0 and took < 2.5, took
    assert err.startswith("lamin_magic: the end of run ") and "database is locked" in err, err
    assert err.count("\n") == 1
