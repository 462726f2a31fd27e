"""`import lamin_magic` stays light: nothing heavy is imported until a save or load needs it."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "pandas",
    "pyarrow",
    "anndata",
    "zarr",
    "nbformat",
    "jupyter_server",
    "peewee",
    "IPython",
    "polars",
    "mudata",
    "numpy",
    "psycopg",
    "obstore",
    "s3fs",
    "boto3",
    "duckdb",
)


def test_import_loads_no_heavy_library():
    code = f"import sys, lamin_magic; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_names_resolve_lazily():
    code = (
        "import sys, lamin_magic as lm; lm.File; lm.select; lm.context; "
        "print('pandas' in sys.modules, 'pyarrow' in sys.modules, 'peewee' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_a_local_instance_never_imports_the_team_drivers(tmp_path):
    # peewee imports psycopg itself where it is installed: lamin_magic hides it until a
    # PostgreSQL registry is opened, and the user's own `import psycopg` still works
    code = (
        "import sys, lamin_magic as lm, pandas as pd; lm.init(sys.argv[1]);"
        "lm.load(lm.add(lm.File(pd.DataFrame({'a': [1]}), name='a')).name);"
        "print(' '.join(m for m in ('psycopg', 'obstore', 's3fs') if m in sys.modules));"
        "import psycopg; print(psycopg.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "inst")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split("\n")[:2] == ["", "psycopg"]


def test_unknown_attribute_is_an_attribute_error():
    import lamin_magic as lm

    try:
        lm.nothing_here  # noqa: B018
    except AttributeError as e:
        assert "nothing_here" in str(e)
    else:
        raise AssertionError("expected AttributeError")
