"""The bands of pcu.md on ten simulated wafers: the demo's characterization on seeds
0–9 (or those given), one row per seed with every band figure, pass/fail and the wall
time. Seed 0 is the baseline every other seed is compared with (the same run).

    python benchmarks/bench_band_sweep.py            # seeds 0-9 (≈ 2 min each)
    python benchmarks/bench_band_sweep.py 3 7        # some seeds
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _table import report

from labpcu.bands import BANDS
from labpcu.bench import Bench
from labpcu.characterize import characterize
from labpcu.data.store import Store
from labpcu.report import collect_figures
from labpcu.runner import Runner


def sweep_one(seed: int, folder: Path) -> dict:
    store_path = folder / f"seed{seed}.h5"
    wall = time.perf_counter()
    with Bench.from_file(seed=seed) as bench:
        campaign = characterize(Runner(bench, store_path))
        bench_time = bench.clock.now()
    wall = time.perf_counter() - wall
    rows = {r.key: r for r in collect_figures(Store(store_path), campaign.roles)}
    out: dict = {"case": f"seed {seed}"}
    for band in BANDS:
        row = rows.get(band.key)
        out[band.key] = row.measured_text if row is not None else "—"
    failed = [b.key for b in BANDS if b.key not in rows or rows[b.key].passed is not True]
    out["verdict"] = "pass" if not failed else "FAIL " + ",".join(failed)
    out["wall s"] = round(wall, 1)
    out["real-time ×"] = round(bench_time / wall, 1)
    return out


def main(seeds: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="labpcu-sweep-") as tmp:
        rows = [sweep_one(s, Path(tmp)) for s in seeds]
    report(f"pcu.md bands on seeds {', '.join(map(str, seeds))}", rows, "band_sweep.json")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or list(range(10)))
