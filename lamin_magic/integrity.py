"""The integrity check: every record has its bytes, with the recorded size and hash; every stored
object has a record; leftover temporaries are listed. `repair` removes only what no record needs:
temporaries, and objects lamin_magic named that no record points at (a save interrupted after its
rename, before its commit). It never touches a record, nor a file it did not name, and never
follows a symbolic link: a link is listed as a stranger and left alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import instance as inst
from . import registry as reg
from .errors import IntegrityError, printable
from .storage.keys import TEMP_DIR_NAME, is_stored_name, is_temp_name

# The kinds of problem: missing (a record whose bytes are gone), mismatch (bytes that differ
# from their record), unsafe (a record whose key is not a name lamin_magic gives, or names a
# link: never read), orphan (a stored object no record points at), temporary (left by an
# interrupted save), stranger (a file or link lamin_magic did not write), writing (the
# temporary of a save in progress).
HARMLESS = ("stranger", "writing")  # listed, left alone, not counted as problems


@dataclass
class Problem:
    kind: str  # missing, mismatch, unsafe, orphan, temporary, stranger or writing
    path: str
    detail: str
    file_id: str | None = None
    name: str | None = None
    version: int | None = None
    repaired: bool = False

    def __str__(self) -> str:
        what = f" ({self.name}@{self.version}, {self.file_id})" if self.file_id else ""
        fixed = " [removed]" if self.repaired else ""
        return printable(f"{self.kind}: {self.path}{what}: {self.detail}{fixed}")


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
    from .storage.hashing import mismatch

    instance = inst.current()
    storage = instance.storage
    report = Report(storage.shown)
    columns = "id, name, version, key, size, hash, hash_type"
    # a tombstone (gc removed its bytes, the record stays for lineage) has no bytes to check
    records: list[Any] = reg.db.execute_sql(
        f"SELECT {columns} FROM file WHERE purged_at IS NULL"
    ).fetchall()
    report.records = len(records)
    total = sum(r[4] for r in records if isinstance(r[4], int)) if verify_hashes else 0
    show = progress if progress is not None else (None if total > 256 * 2**20 else False)
    hashed: dict[
        str, tuple[int, str, str] | IntegrityError
    ] = {}  # a key shared by several records: hash once
    with _progress(total, show) as bar:
        for file_id, name, version, key, size, digest, hash_type in records:
            recorded = (size, digest, hash_type)
            found = Problem("missing", str(key), "", file_id, name, version)
            try:
                found.path = storage.where(key, f"{name}@{version}")
            except IntegrityError as e:
                found.kind, found.detail = "unsafe", f"{e}; not read"
                report.problems.append(found)
                continue
            if not storage.exists(key):
                found.detail = "no bytes at this path"
                report.problems.append(found)
                continue
            if not verify_hashes:
                continue
            if key not in hashed:
                try:
                    hashed[key] = digested = storage.digest(key)
                    report.bytes_hashed += digested[0]
                except IntegrityError as e:  # a link or a pipe inside a stored folder
                    hashed[key] = e
            bar.update(size if isinstance(size, int) else 0)
            got = hashed[key]
            differs = str(got) if isinstance(got, Exception) else mismatch(recorded, got)
            if differs:
                found.kind, found.detail = "mismatch", differs
                report.problems.append(found)
    report.objects, problems = scan_folder(instance, repair)
    report.problems += problems
    return report


def scan_folder(instance: inst.Instance, repair: bool) -> tuple[int, list[Problem]]:
    """What the folder (or bucket) holds that no record uses; with `repair`, orphans and
    temporaries removed. Under the registry's write lock no save is between its rename and
    its commit, so what no record points at then is a true orphan; the keys are read under
    the lock. A bucket's objects are uploaded before that lock is taken: one that no record
    uses is an orphan only once it is older than the upload grace (LAMIN_MAGIC_UPLOAD_GRACE,
    an hour), else it may be the upload of a save still running."""
    from .storage.backends import Bucket
    from .storage.objects import remove_path

    storage = instance.storage
    storage.verify()  # a team's folder or prefix is this instance's: nothing of another's
    with reg.db.atomic():
        # a record's own name counts too: bytes whose record's key was edited are not orphans
        rows = reg.db.execute_sql(
            "SELECT key FROM file WHERE key IS NOT NULL AND purged_at IS NULL"
            " UNION ALL SELECT id || suffix FROM file"
            " WHERE purged_at IS NULL AND (key IS NULL OR key <> id || suffix)"
        )
        keys = {key for (key,) in rows.fetchall()}
        if isinstance(storage, Bucket):
            objects, problems = _scan_bucket(storage, keys)
        else:
            objects, problems = _scan_folder(instance, keys)
        if repair:
            for problem in problems:
                if problem.kind in ("orphan", "temporary"):
                    if isinstance(storage, Bucket):
                        storage.remove(problem.path.rpartition("/")[2])
                    else:
                        remove_path(Path(problem.path))
                    problem.repaired = True
    return objects, problems


def _scan_bucket(storage: Any, keys: set[str]) -> tuple[int, list[Problem]]:
    """(stored objects, problems) of a bucket: like `_scan_folder`, with the upload grace."""
    from .storage.backends import upload_grace

    grace = upload_grace()
    problems: list[Problem] = []
    objects = 0
    now = storage.store.server_time()  # ages by the server's clock: this one may be off
    for entry in storage.store.entries():
        objects += 1
        where = f"{storage.shown}/{entry.key}"
        if entry.key in keys:
            continue
        if not is_stored_name(entry.key):
            problems.append(Problem("stranger", where, "not written by lamin_magic; left alone"))
        elif (now - entry.modified) < grace:
            problems.append(
                Problem(
                    "writing",
                    where,
                    f"no record yet: a save uploaded it {(now - entry.modified):.0f} s ago",
                )
            )
        else:
            problems.append(
                Problem("orphan", where, "no record points at it (a save or gc interrupted)")
            )
    return objects, problems


def writer_alive(temp: Path) -> bool:
    """Whether the process that writes this temporary (its name starts with its pid) runs."""
    from .processes import pid_alive

    pid = temp.name.split("-", 1)[0]
    return pid.isdigit() and pid_alive(int(pid))


def _scan_folder(instance: inst.Instance, keys: set[str]) -> tuple[int, list[Problem]]:
    """(stored objects, problems): what the instance folder and its temporaries hold that no
    record accounts for. Only names lamin_magic gives are orphans or temporaries (removable);
    anything else, and every symbolic link, is a stranger: listed, never followed, never
    removed.
    """
    root = Path(instance.root)
    registry = instance.registry_path
    ends = ("", "-wal", "-shm", "-journal")
    registry_names = {registry.name + end for end in ends} if registry else {inst.TEAM_MARKER}
    temp_dir = instance.temp_dir
    problems: list[Problem] = []
    objects = 0
    for entry in sorted(root.iterdir()):
        if entry.name in registry_names:
            continue
        if entry.name == TEMP_DIR_NAME and entry.is_dir() and not entry.is_symlink():
            continue
        objects += 1
        if entry.name in keys and not entry.is_symlink():
            continue
        if is_stored_name(entry.name) and not entry.is_symlink():
            problems.append(
                Problem("orphan", str(entry), "no record points at it (a save or gc interrupted)")
            )
        else:
            problems.append(Problem("stranger", str(entry), _stranger(entry)))
    if not temp_dir.is_dir() or temp_dir.is_symlink():
        return objects, problems
    for entry in sorted(temp_dir.iterdir()):
        if not is_temp_name(entry.name) or entry.is_symlink():
            problems.append(Problem("stranger", str(entry), _stranger(entry)))
        elif writer_alive(entry) or (instance.team and _young(entry)):
            # a shared folder's temporaries may be written on other machines: by age there
            problems.append(Problem("writing", str(entry), "a save in progress"))
        else:
            problems.append(Problem("temporary", str(entry), "an interrupted save"))
    return objects, problems


def _young(entry: Path) -> bool:
    from .storage.backends import age, upload_grace

    try:
        return age(entry.lstat().st_mtime) < upload_grace()
    except FileNotFoundError:
        return False


def _stranger(entry: Path) -> str:
    if entry.is_symlink():
        return "a symbolic link lamin_magic did not make; not followed, left alone"
    return "not written by lamin_magic; left alone"
