"""Taking a save back: the trash, restore, and garbage collection.

`delete` moves one version, or every version of a name, to the trash: hidden from `ls`, `load`
and `select`, bytes kept. `restore` brings it back. `gc` removes for good what is in the
trash: its records, and the bytes no other record uses (dedup shares bytes between names).

Two kinds of trashed record stay as tombstones when gc runs, their bytes gone: one a run read
(lineage keeps naming what the run read) and the latest version of a name (its number is never
given again, so a new save after iris@3 was collected is iris@4). Every other trashed record is
deleted.

Crash safety: gc commits its changes to the registry first, then removes bytes that no record
outside the trash uses any more; a gc killed in between leaves only unreferenced bytes, which
the next gc (or `check --repair`) removes. Saves and gc take the same write lock, and a save
never shares bytes of a record gc has collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import files
from . import instance as inst
from . import registry as reg
from .errors import InvalidArgumentError, NotFoundError, command
from .storage.keys import is_stored_name


def _matching(spec: str, trashed: bool) -> list[reg.File]:
    """The versions `spec` names (NAME: all of them; NAME@V: that one), in or out of the trash."""
    name, version = files.parse_name_version(spec)
    inst.current()
    query = files.versions_of(name)
    if version is not None:
        query = query.where(reg.File.version == version)
    records = list(query.order_by(reg.File.version))
    if not records:
        files.get_file(name, version)  # raises with a hint (close names, known versions)
    state = [f for f in records if (f.trashed_at is not None) == trashed and not f.purged_at]
    if not state:
        if all(f.purged_at for f in records):
            raise NotFoundError(f"{spec} was deleted for good by gc")
        if trashed:
            raise NotFoundError(f"{spec} is not in the trash; {command('trash')} lists it")
        raise NotFoundError(f"{spec} is already in the trash; {command('trash')} lists it")
    return state


def names_of(records: list[reg.File], shown: int = 10) -> str:
    """'iris@1, iris@2', or the first few and how many more."""
    labels = [files.label(f) for f in records]
    more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
    return ", ".join(labels[:shown]) + more


def delete(spec: str) -> list[reg.File]:
    """Move NAME@VERSION, or every version of NAME, to the trash; returns what was moved."""
    inst.current()
    with reg.db.atomic():
        moved = _matching(spec, trashed=False)
        now = reg.UTCDateTimeField().db_value(reg.utcnow())
        ids = [f.id for f in moved]
        reg.rows_in("UPDATE file SET trashed_at = ? WHERE id IN ({})", ids, (now,))
    return moved


def restore(spec: str) -> list[reg.File]:
    """Bring NAME@VERSION, or every trashed version of NAME, back from the trash."""
    inst.current()
    with reg.db.atomic():
        back = _matching(spec, trashed=True)
        ids = [f.id for f in back]
        reg.rows_in("UPDATE file SET trashed_at = NULL WHERE id IN ({})", ids)
    return back


SHOWN = 20  # records a report names; the rest are counted


@dataclass
class Collected:
    """What gc removed (or, with dry_run, would remove)."""

    instance: str
    dry_run: bool
    deleted: list[str] = field(default_factory=list)  # name@version of records removed
    tombstones: list[str] = field(default_factory=list)  # records kept without their bytes
    removed: list[str] = field(default_factory=list)  # stored objects removed
    freed: int = 0  # bytes

    def __str__(self) -> str:
        from .errors import printable
        from .views import human_size

        verb = "would" if self.dry_run else "did"
        lines = [
            f"gc {verb}: delete {len(self.deleted)} trashed records, keep "
            f"{len(self.tombstones)} as tombstones without their bytes (read by a run, or a "
            f"name's latest number), remove {len(self.removed)} stored objects no record "
            f"uses ({human_size(self.freed)}) in {self.instance}"
        ]
        named = self.deleted + self.tombstones
        lines += [f"  {printable(x)}" for x in named[:SHOWN]]
        if len(named) > SHOWN:
            lines.append(f"  ... and {len(named) - SHOWN} more")
        return "\n".join(lines)

    __repr__ = __str__


def gc(dry_run: bool = False) -> Collected:
    """Remove for good what is in the trash, and the bytes no record outside it uses."""
    from .integrity import scan_folder

    if not isinstance(dry_run, bool):
        raise InvalidArgumentError(f"dry_run takes True or False, not {dry_run!r}")
    instance = inst.current()
    report = Collected(str(instance.root), dry_run)
    with reg.db.atomic() as transaction:
        # plain rows, not records: a trash of 100 000 files is common enough to matter
        trashed = reg.db.execute_sql(
            "SELECT id, name, version, key, size FROM file"
            " WHERE trashed_at IS NOT NULL AND purged_at IS NULL"
        ).fetchall()
        ids = sorted({r[0] for r in trashed})
        sql = "SELECT file_id FROM run_input WHERE file_id IN ({})"
        read = {r[0] for r in reg.rows_in(sql, ids)}
        names = sorted({r[1] for r in trashed})
        sql = "SELECT name, MAX(version) FROM file WHERE name IN ({}) GROUP BY name"
        tops = dict(reg.rows_in(sql, names))
        keep = [r for r in trashed if r[0] in read or tops.get(r[1]) == r[2]]
        report.tombstones = [f"{r[1]}@{r[2]}" for r in keep]
        kept = {r[0] for r in keep}
        report.deleted = [f"{r[1]}@{r[2]}" for r in trashed if r[0] not in kept]
        now = reg.UTCDateTimeField().db_value(reg.utcnow())
        reg.rows_in("UPDATE file SET purged_at = ? WHERE id IN ({})", sorted(kept), (now,))
        reg.db.execute_sql(  # the rest of the trash, in one statement along its index
            "DELETE FROM file WHERE trashed_at IS NOT NULL AND purged_at IS NULL"
        )
        sizes = {str(r[3]): r[4] for r in trashed if isinstance(r[4], int)}
        if dry_run:
            unused = {k for k in _unused_keys(set(sizes)) if is_stored_name(k)}
            report.removed = sorted(unused)
            report.freed = sum(sizes[k] for k in unused)
            transaction.rollback()
            return report
    # committed; now, under the lock again, the bytes no record outside the trash uses, and
    # any that a gc or a save killed earlier left behind
    with reg.db.atomic():
        for key in sorted(_unused_keys(set(sizes))):
            if instance.storage.remove(key):  # only what was there, and ours to remove
                report.removed.append(key)
                report.freed += sizes[key]
    _, problems = scan_folder(instance, repair=True)
    for problem in problems:
        key = problem.path.rpartition("/")[2]
        if problem.kind == "orphan" and problem.repaired and key not in report.removed:
            report.removed.append(key)
            report.freed += sizes.get(key) or 0
    return report


def _unused_keys(keys: set[str]) -> set[str]:
    """Of these keys, those no record that keeps its bytes uses."""
    sql = "SELECT key FROM file WHERE purged_at IS NULL AND key IN ({})"
    return keys - {key for (key,) in reg.rows_in(sql, sorted(keys))}
