"""Execute a notebook in a real kernel (nbclient) against a lamin_magic instance.

    python scripts/run_notebook.py notebooks/track-in-memory-data.ipynb --out build/demo

The executed notebook is written to OUT, the instance to OUT/mydata (or --root). The kernel
learns its notebook's path through JPY_SESSION_NAME, as Jupyter's server would tell it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any


def run_notebook(
    source: Path,
    out_dir: Path,
    root: Path,
    env: dict[str, str] | None = None,
    timeout: int = 300,
) -> Any:
    """Copy `source` (and the files beside it) to `out_dir`, execute it there, save it."""
    import nbformat
    from nbclient import NotebookClient

    out_dir.mkdir(parents=True, exist_ok=True)
    for item in source.parent.iterdir():
        if item.is_file() and item.suffix != ".ipynb":
            shutil.copy2(item, out_dir / item.name)
    target = out_dir / source.name
    shutil.copy2(source, target)  # the kernel reads its title from there while it runs
    nb = nbformat.read(source, as_version=4)
    kernel_env = {**os.environ, "LAMIN_MAGIC_ROOT": str(root.absolute())}
    kernel_env["JPY_SESSION_NAME"] = str(target.absolute())
    kernel_env.update(env or {})
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out_dir)}}
    )
    try:
        client.execute(env=kernel_env)
    finally:
        nbformat.write(nb, target)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    parser.add_argument("--root", type=Path, default=None, help="the instance (default OUT/mydata)")
    args = parser.parse_args(argv)
    root = args.root or args.out / "mydata"
    run_notebook(args.notebook, args.out, root)
    print(f"executed {args.notebook} -> {args.out / args.notebook.name}")
    print(f"instance: {root.absolute()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
