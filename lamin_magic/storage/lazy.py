"""Lazy readers for `lm.open`: objects that read the stored bytes on demand, never write them.

Each format's `open(engine)` returns a reader, path -> object, after checking the engine and
importing its library (so a typo or a missing library is said before any byte is hashed):

    parquet  pyarrow (default): pyarrow.dataset.Dataset    polars: polars.LazyFrame
             duckdb: a DuckDB relation (on duckdb's default connection, so duckdb.sql sees it)
    h5ad     anndata (default): a backed AnnData, mode "r"
    zarr     anndata (default): anndata.experimental.read_lazy on a read-only zarr group
             (needs xarray and dask)
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from ..errors import InvalidArgumentError, MissingLibraryError
from .formats import set_open

Reader = Callable[[Any], Any]

# characters that duckdb's and polars' readers take as a glob pattern in a path: a storage
# root holding one must not make them read other files, outside the instance or not
GLOB_CHARACTERS = frozenset("*?[]{}")


def require(module: str, purpose: str, extra: str | None = None) -> Any:
    """Import `module`, or say in one line how to install it (`extra`: lamin_magic's extra
    that brings it)."""
    try:
        return import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        also = f" (or pip install 'lamin_magic[{extra}]')" if extra else ""
        raise MissingLibraryError(
            f"{purpose} needs {top}, which is not installed here: pip install {top}{also}; "
            "or load the whole object instead"
        ) from e


def engine_reader(fmt: str, engine: str | None, readers: dict[str, Callable[[], Reader]]) -> Reader:
    """The reader of `engine` (the first of `readers` when None), or one line naming those
    there are."""
    default = next(iter(readers))
    if engine is None:
        engine = default
    if not isinstance(engine, str) or engine not in readers:
        raise InvalidArgumentError(
            f"{fmt} files have no engine {engine!r}; use one of: {', '.join(readers)} "
            f"(default {default})"
        )
    return readers[engine]()


# --- parquet -------------------------------------------------------------------------------


def _pyarrow() -> Reader:
    dataset = require("pyarrow.dataset", "engine='pyarrow'")

    # pre_buffer reads a row group's column chunks ahead in one go, for object stores; on a
    # local file a scan without it peaked about a third lower (benchmarks/open_cost.py)
    options = dataset.ParquetFragmentScanOptions(pre_buffer=False)
    parquet = dataset.ParquetFileFormat(default_fragment_scan_options=options)
    return lambda path: dataset.dataset(str(path), format=parquet)


def _polars() -> Reader:
    pl = require("polars", "engine='polars'", "polars")

    return lambda path: pl.scan_parquet(str(path), glob=False)


def _duckdb() -> Reader:
    duckdb = require("duckdb", "engine='duckdb'", "duckdb")

    def read(path: Any) -> Any:
        text = str(path)
        if GLOB_CHARACTERS.isdisjoint(text):
            return duckdb.read_parquet(text)
        # duckdb has no way to read one file by a name it would glob: scan it through arrow
        return duckdb.from_arrow(_pyarrow()(path))

    return read


def open_parquet(engine: str | None) -> Reader:
    return engine_reader(
        "parquet", engine, {"pyarrow": _pyarrow, "polars": _polars, "duckdb": _duckdb}
    )


# --- AnnData -------------------------------------------------------------------------------


def _backed_h5ad() -> Reader:
    anndata = require("anndata", "opening an h5ad file")
    h5py = require("h5py", "opening an h5ad file")

    def read(path: Any) -> Any:
        adata = anndata.read_h5ad(path, backed="r")
        # anndata's write() writes into the file an AnnData is backed by (it reopens it for
        # writing). HDF5 refuses to open a file for writing while it is open read-only in the
        # same process, so a second read-only handle, alive as long as the object, keeps every
        # write out of the stored bytes.
        adata._lamin_magic_read_only = h5py.File(path, "r")
        return adata

    return read


def open_h5ad(engine: str | None) -> Reader:
    return engine_reader("h5ad", engine, {"anndata": _backed_h5ad})


def _lazy_zarr() -> Reader:
    purpose = "opening a zarr AnnData lazily (anndata.experimental.read_lazy)"
    for module in ("xarray", "dask"):
        require(module, purpose, "lazy")
    read_lazy = getattr(require("anndata.experimental", purpose), "read_lazy", None)
    if read_lazy is None:  # anndata before 0.12
        raise MissingLibraryError(
            f"{purpose} needs anndata 0.12 or newer: pip install -U anndata; or load the whole "
            "object instead"
        )
    zarr = require("zarr", purpose)

    return lambda path: read_lazy(zarr.open_group(str(path), mode="r"))


def open_zarr(engine: str | None) -> Reader:
    return engine_reader("zarr", engine, {"anndata": _lazy_zarr})


set_open("parquet", open_parquet)
set_open("h5ad", open_h5ad)
set_open("zarr", open_zarr)
