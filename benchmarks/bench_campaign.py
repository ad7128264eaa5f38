"""Campaign overhead per step against the bare Runner, and resume time on a store of
1,000 runs, each against a baseline measured in the same run.

Overhead: the same 40 tasks (a 5-point I–V sweep on each of 4 devices, 10 grid points)
run (a) by a plain loop of ``Runner.run`` calls and (b) by the campaign engine, which
also stores each run's task, the simulated wafer's state with each run's end, reads
the pause/abort control between tasks, and asks each protocol for its estimate. Both
on a fresh simulated bench and store. Goal: under 5 ms more per step.

Resume: a store holding 1,000 runs of a campaign (made with the plain Runner and the
campaign's metadata, to build it quickly), then the time the engine takes to find its
place (read the store, check the steps, restore the wafer) and finish the one task
left; baseline: ``Store.runs()`` alone (listing the same store).

    python benchmarks/bench_campaign.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _table import report
from labpcu.bench import Bench
from labpcu.campaign.engine import CampaignEngine
from labpcu.campaign.loader import parse_campaign
from labpcu.campaign.plan import tasks_of
from labpcu.campaign.validate import together
from labpcu.data.store import Store
from labpcu.runner import Runner

DEVICES = ["S01", "S02", "S03", "S04"]
GOAL_OVERHEAD_S = 5e-3
RESUME_RUNS = 1000

CAMPAIGN = f"""
[campaign]
name = "overhead"
[[step]]
name = "sweeps"
protocol = "iv_sweep"
devices = {DEVICES!r}
params = {{ points = 5, rectification_bias = 0 }}
grid = {{ stop = [{", ".join(f"{0.5 + 0.05 * k:.2f}" for k in range(10))}] }}
""".replace("'", '"')


def bare(folder: Path) -> float:
    campaign = parse_campaign(CAMPAIGN, str(folder / "c.toml"))
    step = campaign.steps[0]
    tasks = list(tasks_of(step, 0, DEVICES, together(step)))
    with Bench.from_file(seed=0) as bench:
        runner = Runner(bench, Store(folder / "bare.h5"), handle_sigint=False)
        t = time.perf_counter()
        for task in tasks:
            runner.run(task.protocol, task.params, task.devices)
        return (time.perf_counter() - t) / len(tasks)


def engine(folder: Path) -> tuple[float, int]:
    campaign = parse_campaign(CAMPAIGN.replace('name = "overhead"', 'name = "overhead"\nstore = "engine.h5"'),
                              str(folder / "c.toml"))
    with Bench.from_file(seed=0) as bench:
        eng = CampaignEngine(campaign, bench, Store(campaign.store_path()), handle_sigint=False)
        t = time.perf_counter()
        out = eng.run()
        return (time.perf_counter() - t) / len(out.runs), len(out.runs)


def resume(folder: Path) -> tuple[float, float]:
    text = f"""
[campaign]
name = "big"
store = "big.h5"
[[step]]
name = "reads"
protocol = "iv_sweep"
devices = ["S01"]
params = {{ points = 2 }}
repeat = {RESUME_RUNS + 1}
"""
    campaign = parse_campaign(text, str(folder / "big.toml"))
    step = campaign.steps[0]
    tasks = list(tasks_of(step, 0, ["S01"], False))
    store = Store(campaign.store_path())
    with Bench.from_file(seed=0) as bench:
        runner = Runner(bench, store, handle_sigint=False)
        for task in tasks[:RESUME_RUNS]:  # the campaign's first 1,000 tasks, done
            meta = {"campaign": {"name": campaign.name, "step": step.name, "task": task.key, "devices": ["S01"],
                                 "fingerprint": step.fingerprint(), "on_fail": step.on_fail}}
            runner.run(task.protocol, task.params, task.devices, metadata=meta)
        t = time.perf_counter()
        store.runs()
        listing = time.perf_counter() - t
        t = time.perf_counter()
        out = CampaignEngine(campaign, bench, store, handle_sigint=False).run()
        resumed = time.perf_counter() - t
    assert out.ok and out.skipped == RESUME_RUNS and len(out.runs) == 1
    return resumed, listing


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        per_bare = bare(folder)
        per_engine, n = engine(folder)
        resumed, listing = resume(folder)
    overhead = per_engine - per_bare
    rows = [
        {"case": f"per step, {n} steps", "labpcu": f"{per_engine * 1e3:.2f} ms (engine)",
         "baseline": f"{per_bare * 1e3:.2f} ms (bare Runner)", "goal": f"overhead < {GOAL_OVERHEAD_S * 1e3:.0f} ms",
         "measured": f"{overhead * 1e3:.2f} ms", "verdict": "met" if overhead < GOAL_OVERHEAD_S else "missed"},
        {"case": f"resume on {RESUME_RUNS:,} runs (+1 task)", "labpcu": f"{resumed:.2f} s",
         "baseline": f"{listing:.2f} s (Store.runs)", "goal": "—", "measured": f"{resumed - listing:.2f} s more",
         "verdict": "—"},
    ]
    report("Campaign overhead and resume", rows, "bench_campaign.json")


if __name__ == "__main__":
    main()
