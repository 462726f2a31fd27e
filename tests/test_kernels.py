"""Real kernels: start-up tracking, notebook detection routes, a real Jupyter server, shutdown."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from kernels import (
    add_kernel_spec,
    clean_env,
    first_cell,
    kernel,
    run_code,
    run_in_server_session,
)
from run_notebook import run_notebook

REPO = Path(__file__).resolve().parent.parent
MAGICS_DEMO = REPO / "notebooks" / "magics.ipynb"

pytestmark = pytest.mark.slow


def write_notebook(path: Path, title: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"Some text\n\n# {title}"),
        nbformat.v4.new_code_cell("1"),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def query(registry: Path, sql: str, *args: object) -> list[tuple]:
    con = sqlite3.connect(registry)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def runs_with_transforms(registry: Path) -> list[tuple]:
    return query(
        registry,
        "SELECT t.name, t.title, t.type, t.key, r.finished_at IS NOT NULL "
        "FROM run r JOIN transform t ON r.transform_id = t.id ORDER BY r.created_at",
    )


def outputs_of(nb) -> list[str]:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            texts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return texts


@pytest.mark.parametrize("route", ["JPY_SESSION_NAME", "LAMIN_MAGIC_NOTEBOOK"])
def test_magics_notebook_in_a_real_kernel(tmp_path, route):
    root = tmp_path / "inst"
    out = tmp_path / "out"
    target = out / MAGICS_DEMO.name
    env = {"JPY_SESSION_NAME": ""} if route == "LAMIN_MAGIC_NOTEBOOK" else {}
    if route == "LAMIN_MAGIC_NOTEBOOK":
        env["LAMIN_MAGIC_NOTEBOOK"] = str(target)
    nb = run_notebook(MAGICS_DEMO, out, root, env=env)
    texts = "\n".join(outputs_of(nb))
    assert f"{target.stem} (notebook, " in texts and f"notebook found by  {route}" in texts
    assert "saved df as iris@1" in texts and "saved df as iris@2" in texts
    assert "loaded iris@2 into iris" in texts and "loaded iris@1 into first" in texts
    registry = root / "inst.lndb"
    assert runs_with_transforms(registry) == [
        (target.stem, "Track data with the %lamin magics", "notebook", str(target), 1)
    ]
    assert query(registry, "SELECT name, version FROM file ORDER BY name, version") == [
        ("iris", 1),
        ("iris", 2),
        ("iris_small", 1),
    ]


def test_server_session_in_a_folder_with_spaces(tmp_path):
    root_dir = tmp_path / "server root"
    nb = write_notebook(root_dir / "my project" / "first analysis.ipynb", "First analysis")
    instance = tmp_path / "inst"
    home = tmp_path / "jupyter"
    (home / "runtime").mkdir(parents=True)
    got = run_in_server_session(
        root_dir,
        home,
        clean_env(LAMIN_MAGIC_ROOT=str(instance)),
        "my project/first analysis.ipynb",
        "import lamin_magic as lm\nprint(lm.context.transform.name)",
    )
    assert first_cell(got["stdout"], "notebook 'first analysis'").strip() == "first analysis"
    assert runs_with_transforms(instance / "inst.lndb") == [
        ("first analysis", "First analysis", "notebook", str(nb), 1)
    ]


def test_server_query_without_jpy_session_name(tmp_path):
    root_dir = tmp_path / "root"
    nb = write_notebook(root_dir / "sub dir" / "queried.ipynb", "Found by asking the server")
    instance = tmp_path / "inst"
    home = tmp_path / "jupyter"
    (home / "runtime").mkdir(parents=True)
    # a kernel spec whose launcher drops JPY_SESSION_NAME before ipykernel starts
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import os, sys\n"
        "os.environ.pop('JPY_SESSION_NAME', None)\n"
        "from ipykernel.kernelapp import launch_new_instance\n"
        "sys.exit(launch_new_instance())\n"
    )
    add_kernel_spec(
        home / "data", "nojpy", [sys.executable, str(launcher), "-f", "{connection_file}"]
    )
    got = run_in_server_session(
        root_dir,
        home,
        clean_env(LAMIN_MAGIC_ROOT=str(instance)),
        "sub dir/queried.ipynb",
        "import os, lamin_magic as lm\n"
        "print(os.environ.get('JPY_SESSION_NAME'), '__session__' in globals())\n"
        "print(lm.context.transform.name, lm.context.how)",
        kernel_name="nojpy",
    )
    own = first_cell(got["stdout"], "notebook 'queried'")
    assert own.splitlines() == ["None False", "queried the Jupyter server's sessions"], got
    assert runs_with_transforms(instance / "inst.lndb") == [
        ("queried", "Found by asking the server", "notebook", str(nb), 1)
    ]


def test_vs_code_sets_the_notebook_after_start(tmp_path):
    nb = write_notebook(tmp_path / "vs code.ipynb", "Opened in VS Code")
    instance = tmp_path / "inst"
    with kernel(clean_env(LAMIN_MAGIC_ROOT=str(instance)), tmp_path) as (_, client):
        # what VS Code does after start-up: silent code, which fires no pre_run_cell
        client.execute(f"__vsc_ipynb_file__ = {str(nb)!r}", silent=True)
        got = run_code(client, "import lamin_magic as lm\nprint(lm.context.transform.name)")
        assert first_cell(got["stdout"], "notebook 'vs code'").strip() == "vs code", got
    rows = runs_with_transforms(instance / "inst.lndb")
    assert rows == [("vs code", "Opened in VS Code", "notebook", str(nb), 1)]


def test_no_notebook_found_warns_once_and_saving_works(tmp_path):
    instance = tmp_path / "inst"
    with kernel(clean_env(LAMIN_MAGIC_ROOT=str(instance)), tmp_path) as (_, client):
        first = run_code(
            client, "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\n%lamin save df"
        )
        second = run_code(client, "%lamin load df as again\nprint(len(again))")
    assert "could not tell which notebook this kernel runs; %lamin track" in first["stderr"]
    assert "saved df as df@1" in first["stdout"]
    assert "could not tell" not in second["stderr"] and second["stdout"].endswith("1\n")
    assert runs_with_transforms(instance / "inst.lndb") == [
        ("ipython", None, "ipython", "ipython", 1)
    ]


def test_usage_error_in_a_kernel_is_one_red_line(tmp_path):
    with kernel(clean_env(LAMIN_MAGIC_ROOT=str(tmp_path / "inst")), tmp_path) as (_, client):
        got = run_code(client, "%lamin load nothing")
        reply = got["reply"]
        assert (reply["status"], reply["ename"]) == ("error", "UsageError"), got
        message = "UsageError: no file named 'nothing'; %lamin ls lists what is stored\n"
        assert got["stderr"].endswith(message)
        assert "Traceback" not in got["stderr"]
        assert run_code(client, "print(1 + 1)")["stdout"] == "2\n"  # the kernel lives on


def test_autoload_off_and_terminal_ipython_left_alone(tmp_path):
    instance = tmp_path / "inst"
    env = clean_env(LAMIN_MAGIC_ROOT=str(instance), LAMIN_MAGIC_AUTOLOAD="0")
    with kernel(env, tmp_path) as (_, client):
        got = run_code(client, "print('lamin' in get_ipython().magics_manager.magics['line'])")
        assert got["stdout"] == "False\n"
    terminal = subprocess.run(
        [
            sys.executable,
            "-m",
            "IPython",
            "--quick",
            "-c",
            "print('lamin' in get_ipython().magics_manager.magics['line'])",
        ],
        env=clean_env(LAMIN_MAGIC_ROOT=str(instance)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert terminal.stdout.strip().endswith("False")
    assert not instance.exists()  # nothing tracked anything


def test_wheel_install_tracks_every_kernel(tmp_path, monkeypatch):
    """A plain (non-editable) install of the wheel puts the start-up file where kernels run it."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
    )
    wheel = next(dist.glob("lamin_magic-*.whl"))
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    # the dependencies come from this test environment; lamin_magic only from the wheel
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "test-deps.pth").write_text(deps + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    startup = env_dir / "etc" / "ipython" / "startup" / "00-lamin-magic.py"
    assert startup.is_file()
    instance = tmp_path / "inst"
    add_kernel_spec(
        tmp_path / "specs",
        "wheelenv",
        [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "specs"))
    with kernel(clean_env(LAMIN_MAGIC_ROOT=str(instance)), tmp_path, "wheelenv") as (_, client):
        got = run_code(client, "import lamin_magic\nprint(lamin_magic.__file__)")
        # the first cell says what is tracked (start-up output reaches no cell in Jupyter)
        notice, _, printed = got["stdout"].partition("\n")
        assert notice.startswith("lamin_magic: tracking this IPython session (run "), got
        assert notice.endswith(f") in {instance}") and printed.startswith(site), got
        again = run_code(client, "print(1)")
        assert again["stdout"] == "1\n"  # once
        assert (
            "lamin"
            in run_code(client, "print(list(get_ipython().magics_manager.magics['line']))")[
                "stdout"
            ]
        )
    assert query(
        instance / "inst.lndb", "SELECT COUNT(*) FROM run WHERE finished_at IS NOT NULL"
    ) == [(1,)]
