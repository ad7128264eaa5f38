"""The demo's characterization on the simulated bench: bench time per wall time.

Runs :data:`labpcu.characterize.STEPS` (what ``labpcu demo`` runs, every mechanism on)
through the runner into a scratch store, twice in the same process:

* ``fast``: the circuit solver's fast engine and the element guard's vectorized bounds;
* ``baseline``: the same work with both switched to their reference implementations
  (``labpcu.sim.circuit.FAST_PATH = False``, ``_Structure._bounds_reference``), which
  is what the code did before they were made fast.

Per case: bench seconds, wall and CPU seconds, the real-time factor (bench s per wall
s), circuit solves and their CPU cost. The runs of the two cases are compared column by
column (largest relative difference of the measured data, which a flipped threshold
decision — one more ISPP pulse — makes large), and the bands of pcu.md are computed
from both, so a speed-up that changed results would show. Goal (issue 15): ≥ 300× real
time, and at least the demo's bench time (≈ 12,300 s) in under 60 s.

    python benchmarks/bench_demo.py               # both cases, every step (~2 min)
    python benchmarks/bench_demo.py --only fast   # the fast case alone
    python benchmarks/bench_demo.py --steps 9,10  # a subset of the steps (indices; the
                                                  # wafer screening always runs first)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from _table import report
from labpcu import device_limits
from labpcu.bench import Bench
from labpcu.characterize import STEPS, characterize
from labpcu.data.store import Store
from labpcu.protocols.screen import SCREEN_PROTOCOL
from labpcu.report import collect_figures
from labpcu.runner import Runner
from labpcu.sim import bench as simbench
from labpcu.sim import circuit

GOAL = 300.0  # real-time factor
FLOOR_WALL_S = 60.0  # the whole characterization's bench time within a minute


@contextmanager
def reference_paths(on: bool):
    """Switch the solver and the guard to their reference implementations."""
    fast, bounds = circuit.FAST_PATH, device_limits._Structure.bounds
    if on:
        circuit.FAST_PATH = False
        device_limits._Structure.bounds = device_limits._Structure._bounds_reference
    try:
        yield
    finally:
        circuit.FAST_PATH, device_limits._Structure.bounds = fast, bounds


def run_case(name: str, steps: tuple, folder: Path) -> tuple[dict, Path, list[str], dict[str, str]]:
    store_path = folder / f"{name}.h5"
    solve_cpu = [0.0]
    solve = circuit.solve

    def timed_solve(*args, **kwargs):
        t = time.process_time()
        try:
            return solve(*args, **kwargs)
        finally:
            solve_cpu[0] += time.process_time() - t

    with reference_paths(name == "baseline"):
        bench_solve, simbench.solve = simbench.solve, timed_solve  # the simulated bench's solver
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            with Bench.from_file(seed=0) as bench:
                campaign = characterize(Runner(bench, store_path), steps)
                bench_s = bench.clock.now()
                solves = bench.sim.bench.solve_count
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            simbench.solve = bench_solve
    runs = [o.run_id for _, o in campaign.outcomes]
    done = sum(o.status == "completed" for _, o in campaign.outcomes)
    row = {"case": name, "runs completed": f"{done}/{len(runs)}", "bench_s": bench_s, "wall_s": wall,
           "cpu_s": cpu, "real-time factor": bench_s / wall, "solves": solves,
           "solve cpu_s": solve_cpu[0], "µs/solve": 1e6 * solve_cpu[0] / max(solves, 1)}
    return row, store_path, runs, campaign.roles


def largest_difference(a: Path, runs_a: list[str], b: Path, runs_b: list[str]) -> tuple[float, str]:
    """Largest relative difference of any numeric column between matching runs, and
    where (run/column)."""
    worst, where = 0.0, "-"
    sa, sb = Store(a), Store(b)
    for ra, rb in zip(runs_a, runs_b):
        da, db = sa.read(ra), sb.read(rb)
        for col in da.columns:
            if col not in db or da[col].dtype.kind not in "fi" or len(da[col]) != len(db[col]):
                continue
            x, y = da[col].to_numpy(float), db[col].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            scale = np.maximum(np.abs(x[ok]), np.abs(y[ok]))
            nz = scale > 0
            if nz.any():
                d = float(np.max(np.abs(x[ok] - y[ok])[nz] / scale[nz]))
                if d > worst:
                    worst, where = d, f"{ra}/{col}"
    return worst, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["fast", "baseline"], help="run one case")
    ap.add_argument("--steps", help="comma-separated step indices (default: every step)")
    args = ap.parse_args()
    chosen = range(len(STEPS)) if not args.steps else sorted({int(k) for k in args.steps.split(",")})
    # later steps take their devices from the screening's working ones: it always runs
    steps = tuple(s for k, s in enumerate(STEPS) if k in chosen or s.protocol == SCREEN_PROTOCOL)
    cases = [args.only] if args.only else ["fast", "baseline"]
    rows, stores, figures = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in cases:
            row, path, runs, roles = run_case(name, steps, Path(tmp))
            rows.append(row)
            stores[name] = (path, runs)
            figures[name] = collect_figures(Store(path), roles)
        title = f"labpcu demo characterization on the simulated bench ({len(steps)} steps)"
        if len(rows) == 2:
            base = rows[1]["wall_s"]
            for row in rows:
                row["speed-up"] = base / row["wall_s"]
            diff, where = largest_difference(*stores["fast"], *stores["baseline"])
            title += f"; data of the two cases differ by at most {diff:.1e} (relative, {where})"
            bands = [{"case": f.label, "band": f.band_text, "fast": f.measured_text, "baseline": b.measured_text,
                      "verdict": f"{f.verdict} / {b.verdict}"}
                     for f, b in zip(figures["fast"], figures["baseline"]) if f.band_text]
            report("pcu.md bands from the two cases' runs (verdict: fast / baseline)", bands, "demo_bands.json")
    for row in rows:
        f = row["real-time factor"]
        floor = row["bench_s"] / FLOOR_WALL_S
        row["goal"] = f"≥ {GOAL:.0f}×: " + ("met" if f >= GOAL else "floor met" if f >= floor else "missed")
    path = report(title, rows, "demo.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
