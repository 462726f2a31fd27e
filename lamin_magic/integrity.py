"""The integrity check: every record has its bytes, with the recorded size and hash; every stored
object has a record; leftover temporaries are listed. `repair` removes only what no record needs:
temporaries, and objects lamin_magic named that no record points at (a save interrupted after its
rename, before its commit). It never touches a record, nor a file it did not name.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import instance as inst
from . import registry as reg

# what lamin_magic names a stored object: a 20-character file id and a suffix
STORED_NAME = re.compile(r"^[0-9A-Za-z]{20}\.[0-9A-Za-z]+$")

# The kinds of problem: missing (a record whose bytes are gone), mismatch (bytes that differ
# from their record), orphan (a stored object no record points at), temporary (left by an
# interrupted save), stranger (a file lamin_magic did not write), writing (the temporary of a
# save in progress).
HARMLESS = ("stranger", "writing")  # listed, left alone, not counted as problems


@dataclass
class Problem:
    kind: str  # missing, mismatch, orphan, temporary, stranger or writing
    path: str
    detail: str
    file_id: str | None = None
    name: str | None = None
    version: int | None = None
    repaired: bool = False

    def __str__(self) -> str:
        what = f" ({self.name}@{self.version}, {self.file_id})" if self.file_id else ""
        fixed = " [removed]" if self.repaired else ""
        return f"{self.kind}: {self.path}{what}: {self.detail}{fixed}"


@dataclass(repr=False)
class Report:
    instance: str
    records: int = 0
    objects: int = 0
    bytes_hashed: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing left to worry about (repaired problems do not count)."""
        return all(p.repaired or p.kind in HARMLESS for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def __str__(self) -> str:
        lines = [
            f"checked {self.records} records and {self.objects} stored objects in {self.instance}"
        ]
        lines += [f"  {p}" for p in self.problems]
        open_problems = [p for p in self.problems if not p.repaired and p.kind not in HARMLESS]
        if not open_problems:
            lines.append("ok: every record has its bytes, every stored object has a record")
        else:
            fixable = [p for p in open_problems if p.kind in ("orphan", "temporary")]
            lines.append(
                f"{len(open_problems)} problems"
                + (f"; {len(fixable)} removable with --repair" if fixable else "")
            )
        return "\n".join(lines)

    __repr__ = __str__


def _progress(total: int, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="checking",
        disable=enabled is False,
        leave=False,
    )


def check(repair: bool = False, verify_hashes: bool = True, progress: bool | None = None) -> Report:
    """Check the current instance; with `repair`, remove temporaries and unnamed orphans.

    `progress=None` shows a bar on a terminal or in Jupyter when there is much to hash.
    """
    from .storage.hashing import hash_path
    from .storage.objects import remove_path

    instance = inst.current()
    root = instance.root
    report = Report(str(root))
    columns = "id, name, version, key, size, hash, hash_type"
    records: list[Any] = reg.db.execute_sql(f"SELECT {columns} FROM file").fetchall()
    report.records = len(records)
    total = sum(r[4] or 0 for r in records) if verify_hashes else 0
    show = progress if progress is not None else (None if total > 256 * 2**20 else False)
    hashed: dict[str, tuple[int, str, str]] = {}  # a key shared by several records: hash once
    with _progress(total, show) as bar:
        for file_id, name, version, key, size, digest, hash_type in records:
            path = root / key if key else None
            if path is None or not path.exists():
                report.problems.append(
                    Problem(
                        "missing",
                        str(path or "(no key)"),
                        "no bytes at this path",
                        file_id,
                        name,
                        version,
                    )
                )
                continue
            if not verify_hashes:
                continue
            if key not in hashed:
                hashed[key] = hash_path(path)
                report.bytes_hashed += hashed[key][0]
            got = hashed[key]
            bar.update(size or 0)
            if got != (size, digest, hash_type):
                report.problems.append(
                    Problem(
                        "mismatch",
                        str(path),
                        f"recorded size {size} hash {digest}, found size {got[0]} hash {got[1]}",
                        file_id,
                        name,
                        version,
                    )
                )
    # Under the registry's write lock no save is between its rename and its commit, so what
    # no record points at now is a true orphan; the keys are read again under the lock.
    with reg.db.atomic():
        rows = reg.db.execute_sql("SELECT DISTINCT key FROM file WHERE key IS NOT NULL")
        keys = {key for (key,) in rows.fetchall()}
        _scan_folder(instance, keys, report)
        if repair:
            for problem in report.problems:
                if problem.kind in ("orphan", "temporary"):
                    remove_path(Path(problem.path))
                    problem.repaired = True
    return report


def writer_alive(temp: Path) -> bool:
    """Whether the process that writes this temporary (its name starts with its pid) runs."""
    import os

    pid = temp.name.split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _scan_folder(instance: inst.Instance, keys: set[str], report: Report) -> None:
    from .storage.objects import TEMP_SUFFIX

    root = instance.root
    registry_names = {instance.registry_path.name}
    registry_names |= {instance.registry_path.name + s for s in ("-wal", "-shm", "-journal")}
    for entry in sorted(root.iterdir()):
        if entry.name in registry_names or entry.name == inst.TEMP_DIR_NAME:
            continue
        report.objects += 1
        if entry.name in keys:
            continue
        if STORED_NAME.match(entry.name):
            report.problems.append(
                Problem("orphan", str(entry), "no record points at it; an interrupted save")
            )
        else:
            report.problems.append(
                Problem("stranger", str(entry), "not written by lamin_magic; left alone")
            )
    temp_dir = instance.temp_dir
    if temp_dir.exists():
        for entry in sorted(temp_dir.iterdir()):
            if writer_alive(entry):
                report.problems.append(Problem("writing", str(entry), "a save in progress"))
                continue
            detail = "an interrupted save" if entry.name.endswith(TEMP_SUFFIX) else "unknown"
            report.problems.append(Problem("temporary", str(entry), detail))
