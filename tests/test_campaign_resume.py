"""Resume after kill -9: a 3-step campaign over 6 devices is killed at many points
(injected deterministically by the store's crash points, not by sleeping) and resumed
until complete. Every (step, device) then has exactly one completed run, the
interrupted runs stay in the store marked ``interrupted``, and every completed run's
data equal, bit for bit, those of the same campaign run without interruption."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labpcu.data.store import Store

CAMPAIGN = """\
[campaign]
name = "resume"
store = "w.h5"

[[step]]
name = "screen"
protocol = "iv_sweep"
devices = ["S01", "S02", "S03", "S04", "S05", "S06"]
params = { points = 11 }

[[step]]
name = "program"
protocol = "ispp"
devices = { from = "screen", where = "status == 'completed' and rectification_ratio > 1e3" }
params = { targets = ["50u"] }

[[step]]
name = "hold"
protocol = "retention"
devices = { from = "program", where = "status == 'completed'" }
params = { component = "m1", duration = "30 s" }
"""

#: crash point and how many times it is passed first: the store's write windows, in
#: several tasks of each step
KILLS = ["begin_run.created:3", "recorder.flushed:2", "recorder.flushed:9", "finish_run.results:5",
         "finish_run.committed:8", "journal.committed:30", "begin_run.swmr:14", "finish_run.committed:17"]


def _cli(*args: str, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LABPCU_CRASH_AT"}
    if crash:
        env["LABPCU_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "labpcu.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _campaign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c.toml"
    path.write_text(CAMPAIGN)
    return path


def _tasks(store: Store) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for run_id, row in store.runs().iterrows():
        out.setdefault(row["metadata"]["campaign"]["task"], []).append((str(run_id), row["status"]))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Store, dict[str, list[tuple[str, str]]]]:
    path = _campaign(tmp_path_factory.mktemp("reference"))
    done = _cli("campaign", "run", str(path), "--quiet")
    assert done.returncode == 0, done.stderr
    store = Store(path.parent / "w.h5")
    return store, _tasks(store)


@pytest.mark.slow
@pytest.mark.parametrize("crash", KILLS)
def test_a_killed_campaign_resumes_and_equals_an_uninterrupted_one(tmp_path, reference, crash):
    ref_store, ref_tasks = reference
    assert len(ref_tasks) == 18  # 6 screened, 6 programmed, 6 held
    path = _campaign(tmp_path)
    killed = _cli("campaign", "run", str(path), "--quiet", crash=crash)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-500:])
    for _ in range(3):  # one resume suffices; more would show a resume that loses its place
        resumed = _cli("campaign", "resume", str(path), "--quiet")
        if resumed.returncode == 0:
            break
    assert resumed.returncode == 0, resumed.stderr[-500:]
    store = Store(tmp_path / "w.h5")
    tasks = _tasks(store)
    assert sorted(tasks) == sorted(ref_tasks)
    for task, runs in tasks.items():
        completed = [r for r, status in runs if status == "completed"]
        assert len(completed) == 1, (task, runs)  # measured to completion exactly once
        assert all(status in ("completed", "interrupted") for _, status in runs), runs
        mine, theirs = store.read(completed[0]), ref_store.read([r for r, s in ref_tasks[task] if s == "completed"][0])
        assert list(mine.columns) == list(theirs.columns)
        for column in mine.columns:
            a, b = mine[column].to_numpy(), theirs[column].to_numpy()
            same = np.array_equal(a, b) if a.dtype == object else np.array_equal(a, b, equal_nan=True)
            assert same, (task, column)
    status = _cli("campaign", "status", str(path), "--json")
    assert status.returncode == 0 and '"complete": true' in status.stdout
