"""peewee, imported without the PostgreSQL driver it would import on its own.

peewee imports psycopg as it is imported, when psycopg is installed (90 ms of peewee's 130 ms
here), though only a team instance (a PostgreSQL registry) uses it: a local instance's first
query, and so a kernel's first cell and every `lamin-magic` command, would pay for it. So
psycopg is hidden while peewee loads, and handed to peewee when a PostgreSQL registry is opened
(`load_psycopg`). Where peewee was imported before lamin_magic, it is used as it is.
"""

from __future__ import annotations

import sys

_hidden = [name for name in ("psycopg", "psycopg2") if name not in sys.modules]
for _name in _hidden:
    sys.modules[_name] = None  # type: ignore[assignment]  # importing it raises ImportError
try:
    import peewee as pw
finally:
    for _name in _hidden:
        if sys.modules.get(_name, False) is None:
            del sys.modules[_name]


def load_psycopg() -> None:
    """Give peewee the psycopg 3 driver, as if it had imported it itself."""
    if pw.psycopg is not None:  # type: ignore[attr-defined]
        return
    import psycopg
    from psycopg.pq import TransactionStatus
    from psycopg.types.json import Json, Jsonb

    pw.psycopg, pw.TransactionStatus = psycopg, TransactionStatus  # type: ignore[attr-defined]
    pw.Json_pg3, pw.Jsonb_pg3 = Json, Jsonb  # type: ignore[attr-defined]
    adapter = pw.Psycopg3Adapter
    adapter.txn_idle = TransactionStatus.IDLE
    adapter.txn_inerror = TransactionStatus.INERROR
    adapter.txn_unknown = TransactionStatus.UNKNOWN


__all__ = ["load_psycopg", "pw"]
