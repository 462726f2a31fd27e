"""The tutorial notebook, executed in a real kernel by nbclient, leaves the right records."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from run_notebook import run_notebook

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO / "notebooks" / "track-in-memory-data.ipynb"


def outputs(nb) -> list[str]:
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            assert out.output_type != "error", out
            texts.append(out.get("data", {}).get("text/plain", "") or out.get("text", ""))
    return texts


@pytest.mark.slow
def test_tutorial_runs_in_a_real_kernel(tmp_path):
    root = tmp_path / "mydata"
    nb = run_notebook(TUTORIAL, tmp_path / "out", root)
    texts = outputs(nb)
    assert any("[150 rows x 5 columns]" in t for t in texts)  # file.load() gave the data back
    assert any(t.startswith("File(id=") and "name='iris'" in t for t in texts)
    con = sqlite3.connect(root / "mydata.lndb")
    rows = con.execute(
        "SELECT f.name, f.version, f.suffix, t.name, t.title, t.type, t.key "
        "FROM file f JOIN run r ON f.run_id = r.id JOIN transform t ON r.transform_id = t.id"
    ).fetchall()
    assert rows == [
        (
            "iris",
            1,
            ".parquet",
            "track-in-memory-data",
            "Track in-memory data objects",
            "notebook",
            str(tmp_path / "out" / "track-in-memory-data.ipynb"),
        )
    ]
    assert con.execute("SELECT finished_at FROM run").fetchone()[0] is not None
    con.close()
    listing = next(t for t in texts if "mydata.lndb" in t)
    key = sqlite3.connect(root / "mydata.lndb").execute("SELECT key FROM file").fetchone()[0]
    assert key in listing


@pytest.mark.slow
def test_tutorial_again_reuses_the_transform_and_starts_a_new_run(tmp_path):
    root = tmp_path / "mydata"
    run_notebook(TUTORIAL, tmp_path / "out", root)
    run_notebook(TUTORIAL, tmp_path / "out", root)
    con = sqlite3.connect(root / "mydata.lndb")
    assert con.execute("SELECT COUNT(*) FROM transform WHERE type = 'notebook'").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(*) FROM run").fetchone()[0] == 2
    # the second run saved identical data: the first run's record came back, no new version
    assert con.execute("SELECT COUNT(*) FROM file").fetchone()[0] == 1
    con.close()
