"""Random base62 ids of the lengths the design gives each record type."""

from __future__ import annotations

import secrets

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

ID_LENGTHS = {"user": 8, "storage": 8, "transform": 12, "run": 20, "file": 20}


def new_id(kind: str) -> str:
    """A fresh random id for a record of `kind` (user, storage, transform, run, file)."""
    return "".join(secrets.choice(BASE62) for _ in range(ID_LENGTHS[kind]))
