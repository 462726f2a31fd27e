"""Any object -> .pkl with pickle, only where the instance allows it (`allow_pickle=True`).

Unpickling runs code chosen by whoever wrote the file, so an instance refuses both writing and
reading pickles until its owner turns them on.
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO

from .formats import register_format


def write_pickle(obj: Any, stream: BinaryIO) -> None:
    pickle.dump(obj, stream, protocol=5)


def load_pickle(path: Any) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


PICKLE = register_format(
    "pickle",
    suffix=".pkl",
    type="builtins:object",
    write=write_pickle,
    load=load_pickle,
    stream=True,
    needs_pickle=True,
)
