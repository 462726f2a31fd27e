"""SIGKILL at random moments of a save; many processes and kernels saving to one instance."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from kernels import clean_env, first_cell, kernel, run_code

import lamin_magic as lm
from lamin_magic import instance
from lamin_magic.integrity import check

pytestmark = pytest.mark.slow

# The child saves in a loop: new names, new versions, dedup hits. It prints a line when each
# phase begins (the real functions run; the wrappers only tell the parent where it is).
SAVER = textwrap.dedent(
    """
    import random, sys
    import numpy as np, pandas as pd
    import lamin_magic as lm
    from lamin_magic import registry
    from lamin_magic.storage import objects

    root, seed = sys.argv[1], int(sys.argv[2])
    lm.init(root)
    lm.track()

    def mark(phase):
        print(phase, flush=True)

    real_write, real_move = objects.write_temp, objects.move_into_place
    real_commit = registry.db.obj.commit  # the instance's database, behind the proxy

    def write_temp(*args):
        mark("writing")
        return real_write(*args)

    def move_into_place(*args):
        mark("renaming")
        real_move(*args)
        mark("renamed")

    def commit():
        mark("committing")
        real_commit()
        mark("committed")

    objects.write_temp, objects.move_into_place = write_temp, move_into_place
    registry.db.obj.commit = commit
    rng = random.Random(seed)
    last = {}
    for i in range(1000):
        action = rng.choice(["new name", "new version", "dedup"])
        name = f"n{rng.randrange(4)}" if action != "new name" else f"s{seed}-{i}"
        if action == "dedup" and name in last:
            df = last[name]
        else:
            rows = rng.randrange(10_000, 200_000)
            df = pd.DataFrame({"x": np.arange(rows) * rng.random(), "seed": seed, "i": i})
        lm.add(lm.File(df, name=name))
        last[name] = df
        mark("saved")
    """
)

PHASES = ["writing", "renaming", "renamed", "committing"]


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    root = tmp_path / "inst"
    lm.init(root)
    instance.reset()
    rng = random.Random(1234)
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    killed_in: dict[str, int] = {}
    leftovers: dict[str, int] = {}
    kills = 36
    for k in range(kills):
        phase = PHASES[k % len(PHASES)]
        nth = rng.randrange(1, 4)  # the nth time the child reaches that phase
        delay = rng.choice([0, 0, 0.001, 0.005, 0.02])
        child = subprocess.Popen(
            [sys.executable, str(script), str(root), str(k)],
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        seen = 0
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == phase:
                seen += 1
                if seen == nth:
                    time.sleep(delay)
                    break
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        killed_in[phase] = killed_in.get(phase, 0) + 1
        # after every kill: no record without its bytes, no partial object under a final name
        lm.init(root)
        report = check()
        bad = [p for p in report.problems if p.kind in ("missing", "mismatch")]
        assert bad == [], f"kill {k} in {phase}: {bad}"
        assert all(p.kind in ("orphan", "temporary") for p in report.problems), report
        for p in report.problems:
            leftovers[p.kind] = leftovers.get(p.kind, 0) + 1
        check(repair=True)
        assert check().problems == []
        # and the instance keeps working
        probe = pd.DataFrame({"kill": [k]})
        assert lm.add(lm.File(probe, name=f"probe-{k}")).version == 1
        pd.testing.assert_frame_equal(lm.load(f"probe-{k}"), probe)
        instance.reset()
    assert sum(killed_in.values()) == kills and set(killed_in) == set(PHASES)
    # the kills did land mid-write and between rename and commit, and repair cleaned up after
    assert leftovers.get("temporary", 0) > 0 and leftovers.get("orphan", 0) > 0, leftovers
    lm.init(root)
    con = sqlite3.connect(instance.current().registry_path)
    versions = con.execute(
        "SELECT name, GROUP_CONCAT(version) FROM (SELECT name, version FROM file ORDER BY version) "
        "GROUP BY name"
    ).fetchall()
    con.close()
    for name, joined in versions:
        got = [int(v) for v in joined.split(",")]
        assert got == list(range(1, len(got) + 1)), name  # versions without gaps
    for file in lm.select(lm.File).all()[:20]:
        file.load(verify=True)


WRITER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    import lamin_magic as lm
    root, who, saves, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    lm.init(root)
    lm.track()
    while time.time() < start:
        time.sleep(0.001)
    for i in range(saves):
        df = pd.DataFrame({"who": [who] * 1000, "i": i, "v": range(1000)})
        df["total"] = df.v.sum() + who + i  # a loader can tell a complete frame
        lm.add(lm.File(df, name="shared" if i % 2 else f"w{who}-{i}"))
    print("done")
    """
)

LOADER = textwrap.dedent(
    """
    import sys, time
    import lamin_magic as lm
    from lamin_magic.errors import NotFoundError
    root, until = sys.argv[1], float(sys.argv[2])
    lm.init(root)
    loads = 0
    while time.time() < until:
        try:
            df = lm.load("shared", verify=True)
        except NotFoundError:
            continue
        who, i = int(df.who[0]), int(df.i[0])
        assert len(df) == 1000 and (df.total == df.v.sum() + who + i).all()
        loads += 1
    print(loads)
    """
)


def test_processes_saving_at_once_lose_nothing(tmp_path):
    root = tmp_path / "inst"
    lm.init(root)
    instance.reset()
    writers, saves = 4, 30
    start = time.time() + 3
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "loader.py").write_text(LOADER)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(tmp_path / "writer.py"),
                str(root),
                str(w),
                str(saves),
                str(start),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for w in range(writers)
    ]
    loader = subprocess.Popen(
        [sys.executable, str(tmp_path / "loader.py"), str(root), str(start + 8)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "done", err
    out, err = loader.communicate(timeout=300)
    assert loader.returncode == 0, err
    assert int(out) > 0  # it did load while others wrote
    lm.init(root)
    shared = [f.version for f in lm.select(lm.File, name="shared").all()]
    assert sorted(shared) == list(range(1, writers * saves // 2 + 1))  # no gaps, no duplicates
    assert len(lm.select(lm.File)) == writers * saves
    assert check().ok


def test_kernels_saving_at_once(tmp_path):
    root = tmp_path / "inst"
    code = (
        "import pandas as pd\n"
        "for i in range(15):\n"
        "    df = pd.DataFrame({'kernel': [K], 'i': [i]})\n"
        "    get_ipython().run_line_magic('lamin', 'save df name=shared')\n"
        "print('done')"
    )
    env = clean_env(LAMIN_MAGIC_ROOT=str(root))
    with (
        kernel(env, tmp_path) as (_, a),
        kernel(env, tmp_path) as (_, b),
        kernel(env, tmp_path) as (_, c),
        kernel(env, tmp_path) as (_, d),
    ):
        clients = [a, b, c, d]
        ids = [client.execute(code.replace("K", str(k))) for k, client in enumerate(clients)]
        for client, msg_id in zip(clients, ids, strict=True):
            while True:
                reply = client.get_shell_msg(timeout=120)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            assert reply["content"]["status"] == "ok", reply["content"]
        for client in clients:
            assert run_code(client, "print(1)")["stdout"] == "1\n"
    lm.init(root)
    versions = sorted(f.version for f in lm.select(lm.File, name="shared").all())
    assert versions == list(range(1, 61))
    assert len(lm.select(lm.Run)) == 4 and check().ok


def test_two_kernels_create_the_same_new_instance_at_once(tmp_path):
    root = tmp_path / "brand new"
    env = clean_env(LAMIN_MAGIC_ROOT=str(root))
    with kernel(env, tmp_path) as (_, a), kernel(env, tmp_path) as (_, b):
        for client in (a, b):
            got = run_code(client, "import lamin_magic as lm\nprint(lm.context.run is not None)")
            assert first_cell(got["stdout"], "this IPython session") == "True\n", got
    con = sqlite3.connect(root / "brand new.lndb")
    counts = [
        con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("storage", "user", "run")
    ]
    con.close()
    assert counts == [1, 1, 2]
    assert sorted(p.name for p in Path(root).iterdir() if p.suffix == ".lndb") == ["brand new.lndb"]


def test_processes_create_the_same_new_instance_at_once(tmp_path):
    root = tmp_path / "fresh"
    start = time.time() + 2
    code = (
        "import sys, time\nimport lamin_magic as lm\n"
        f"time.sleep(max(0, {start} - time.time()))\n"
        f"lm.init({str(root)!r}); print(lm.track().id)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for _ in range(6)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    con = sqlite3.connect(root / "fresh.lndb")
    assert con.execute("SELECT COUNT(*) FROM storage").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(*) FROM run").fetchone()[0] == 6
    con.close()
    assert os.path.exists(root / "fresh.lndb")
