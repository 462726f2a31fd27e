"""A notebook renamed: while its kernel runs (the Transform follows the file, through a real
Jupyter server), and while no kernel runs (joined by the content of its last snapshot)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import nbformat
import pytest
from kernels import Server, clean_env, kernel, run_code

pytestmark = pytest.mark.slow


def write_notebook(path: Path, title: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), nbformat.v4.new_code_cell("1")]
    nbformat.write(nb, path)
    return path


def rows(registry: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(registry)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def tracked(client) -> list[str]:
    code = "import lamin_magic as lm\nt = lm.context.transform\nprint(t.id, t.name, t.key, sep='|')"
    return run_code(client, code)["stdout"].strip().splitlines()[-1].split("|")


def test_the_transform_follows_a_notebook_renamed_while_its_kernel_runs(tmp_path):
    root_dir = tmp_path / "root"
    root_dir.mkdir()
    write_notebook(root_dir / "draft.ipynb", "A draft")
    instance = tmp_path / "inst"
    home = tmp_path / "jupyter"
    (home / "runtime").mkdir(parents=True)
    server = Server(root_dir, home, clean_env(LAMIN_MAGIC_ROOT=str(instance))).start()
    try:
        # as JupyterLab opens a notebook: its name too, so the kernel gets JPY_SESSION_NAME
        body = {"path": "draft.ipynb", "name": "draft.ipynb", "type": "notebook"}
        session = server.request("POST", "/api/sessions", {**body, "kernel": {"name": "python3"}})
        client = server.client_for(session["kernel"]["id"])
        try:
            run_code(client, "import pandas as pd\nx = pd.DataFrame({'a': [1]})")
            before = tracked(client)
            assert before[1:] == ["draft", str(root_dir / "draft.ipynb")]
            # what JupyterLab does on a rename: the file through the contents API, then the session
            nbformat.write(  # a new title too, saved before the rename
                nbformat.reads(
                    (root_dir / "draft.ipynb").read_text().replace("A draft", "Final"), 4
                ),
                root_dir / "draft.ipynb",
            )
            server.request("PATCH", "/api/contents/draft.ipynb", {"path": "final.ipynb"})
            server.request("PATCH", f"/api/sessions/{session['id']}", {"path": "final.ipynb"})
            got = run_code(client, "import os\nprint(os.environ['JPY_SESSION_NAME'])")
            assert got["stdout"].strip() == str(root_dir / "draft.ipynb")  # unchanged
            # the server is asked at most every 5 s, when something is recorded: a cell's end
            run_code(client, "import time\ntime.sleep(5.2)")
            run_code(client, "%lamin save x")
            after = tracked(client)
        finally:
            client.stop_channels()
        server.request("DELETE", f"/api/sessions/{session['id']}")  # the kernel shuts down
        # the next kernel of the renamed notebook finds the same Transform
        again = server.new_session("final.ipynb")
        client = server.client_for(again["kernel"]["id"])
        try:
            next_kernel = tracked(client)
        finally:
            client.stop_channels()
    finally:
        server.stop()
    assert after == [before[0], "final", str(root_dir / "final.ipynb")]
    assert next_kernel == after
    registry = instance / "inst.lndb"
    assert rows(registry, "SELECT id, name, title, key FROM transform") == [
        (before[0], "final", "Final", str(root_dir / "final.ipynb"))
    ]
    assert rows(registry, "SELECT transform_id, path FROM transform_path") == [
        (before[0], str(root_dir / "draft.ipynb"))
    ]
    # the first kernel's snapshot at shutdown was read from the file's new path; the second
    # kernel's is the same content, stored once
    snap = rows(
        registry, "SELECT DISTINCT s.content FROM run r JOIN source s ON r.snapshot = s.hash"
    )
    assert len(snap) == 1 and "# Final" in snap[0][0]
    assert rows(registry, "SELECT transform_id, COUNT(*) FROM run GROUP BY transform_id") == [
        (before[0], 2)
    ]


def run_kernel(notebook: Path, instance: Path, cwd: Path) -> list[str]:
    """A kernel of `notebook` runs two cells (the first's end joins a renamed notebook)."""
    env = clean_env(LAMIN_MAGIC_ROOT=str(instance), JPY_SESSION_NAME=str(notebook))
    with kernel(env, cwd) as (_, client):
        run_code(client, "1")
        return tracked(client)


def test_a_notebook_renamed_while_no_kernel_ran_keeps_its_transform(tmp_path):
    instance = tmp_path / "inst"
    first = write_notebook(tmp_path / "old name.ipynb", "Kept")
    old = run_kernel(first, instance, tmp_path)
    renamed = tmp_path / "new name.ipynb"
    first.rename(renamed)
    new = run_kernel(renamed, instance, tmp_path)
    assert new == [old[0], "new name", str(renamed)]
    registry = instance / "inst.lndb"
    assert rows(registry, "SELECT COUNT(*) FROM transform") == [(1,)]
    assert rows(registry, "SELECT path FROM transform_path") == [(str(first),)]
    # a copy is another notebook: the file it came from is still there
    copy = tmp_path / "copy.ipynb"
    shutil.copy(renamed, copy)
    other = run_kernel(copy, instance, tmp_path)
    assert other[0] != old[0] and other[1:] == ["copy", str(copy)]
    # edited after its last run, then renamed: not told apart safely, a new Transform
    edited = tmp_path / "edited.ipynb"
    nb = nbformat.read(copy, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("2"))
    nbformat.write(nb, copy)
    copy.rename(edited)
    assert run_kernel(edited, instance, tmp_path)[0] not in (old[0], other[0])
    assert rows(registry, "SELECT COUNT(*) FROM transform") == [(3,)]
