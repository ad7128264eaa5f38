"""Codebook build time from 10 M raw samples and numpy lookup throughput, each against
a naive baseline measured in the same run.

Build workload: a multiplier measured on a 51 x 51 input grid, 10 devices, repeats, so
10,000,000 samples (x1, x2, y, t as float64, repeat int64, device ids as a Python-str
object column, as ``Store.read`` returns them), generated before any clock starts.
Timed: :func:`labpcu.data.codebook.build_table` (binning with the exact-grid check,
mean/std/count, 11 quantiles per grid point, device codes, raw samples kept), against
pandas: ``groupby([x1, x2])`` with ``agg(mean, std, count)`` plus ``groupby.quantile``
(pandas' own vectorized per-group quantiles), and against the textbook loop of one
``np.quantile`` per group. The outputs are compared, so a fast wrong answer fails.

"vs baseline" is against the faster of the two baselines.

Lookup workload: 10 M uniform random inputs over a 1-D table of 81 points (and a 2-D
51 x 51 table), mean mode. Baselines: ``np.interp`` (1-D) and scipy's
``RegularGridInterpolator`` (2-D). Noisy modes are timed for information.

    python benchmarks/bench_codebook.py
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import RegularGridInterpolator

from _table import best_of, report
from labpcu.data.codebook import QUANTILE_LEVELS, build_table
from labpcu.data.lookup import Lookup

N_SAMPLES = 10_000_000
GRID = np.linspace(-1.0, 1.0, 51)
N_DEVICES = 10
GOAL_BUILD_S = 2.0
GOAL_LOOKUP_RATE = 50e6  # values/s, mean mode, 1-D
N_LOOKUP = 10_000_000
SPEC = {"kind": "elementwise2d", "ideal": "multiply", "inputs": ["x1", "x2"], "grid": {"x1": GRID, "x2": GRID}}


def make_samples(seed: int = 0) -> dict[str, Any]:
    """Every grid point measured the same number of times per device, in random order
    within a device (as an interleaved sweep would), devices one after the other."""
    rng = np.random.default_rng(seed)
    n_points = len(GRID) ** 2
    per_device = N_SAMPLES // N_DEVICES
    point = np.concatenate([rng.permutation(np.arange(per_device) % n_points) for _ in range(N_DEVICES)])
    x1, x2 = GRID[point // len(GRID)], GRID[point % len(GRID)]
    gain = np.repeat(rng.normal(1.0, 0.03, N_DEVICES), per_device)
    y = x1 * x2 * gain + 0.01 * rng.standard_normal(N_SAMPLES)
    names = np.array([f"U{k:02d}" for k in range(N_DEVICES)], dtype=object)
    device = np.repeat(names, per_device)
    repeat = np.concatenate([np.arange(per_device) // n_points for _ in range(N_DEVICES)])
    return {"x1": x1, "x2": x2, "y": y, "device": device, "repeat": repeat,
            "t": np.arange(N_SAMPLES) * 1e-4, "point": point}


def labpcu_build(s: dict[str, Any]) -> Any:
    return build_table("multiplier", SPEC, [s["x1"], s["x2"]], s["y"], s["device"], s["repeat"], s["t"])


def pandas_build(s: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame({"x1": s["x1"], "x2": s["x2"], "y": s["y"]})
    g = df.groupby(["x1", "x2"])["y"]
    stats = g.agg(["mean", "std", "count"])
    q = g.quantile(list(QUANTILE_LEVELS)).unstack()
    return stats.join(q)


def naive_build(s: dict[str, Any]) -> dict[tuple[float, float], np.ndarray]:
    """pandas groupby, then one np.quantile (and mean, std) per group."""
    df = pd.DataFrame({"x1": s["x1"], "x2": s["x2"], "y": s["y"]})
    out = {}
    for key, y in df.groupby(["x1", "x2"])["y"]:
        v = y.to_numpy()
        out[key] = np.concatenate(([v.mean(), v.std(ddof=1), len(v)], np.quantile(v, QUANTILE_LEVELS)))
    return out


def check_build(table: Any, ref: pd.DataFrame) -> None:
    """The labpcu table must equal pandas' statistics at every grid point."""
    mean = ref["mean"].to_numpy().reshape(len(GRID), len(GRID))
    if not np.allclose(table.mean, mean, rtol=1e-9, atol=1e-12):
        raise AssertionError("build: mean differs from pandas")
    if not np.allclose(table.std, ref["std"].to_numpy().reshape(mean.shape), rtol=1e-7):
        raise AssertionError("build: std differs from pandas")
    if not np.array_equal(table.count, ref["count"].to_numpy().reshape(mean.shape)):
        raise AssertionError("build: count differs from pandas")
    q = ref[list(QUANTILE_LEVELS)].to_numpy().reshape(table.quantiles.shape)
    if not np.allclose(table.quantiles, q, rtol=1e-12, atol=1e-15):
        raise AssertionError("build: quantiles differ from pandas")


def one_d_table() -> Any:
    rng = np.random.default_rng(1)
    grid = np.linspace(-4.0, 4.0, 81)
    x = np.repeat(grid, 20)
    y = np.logaddexp(0.0, x) + 0.01 * rng.standard_normal(len(x))
    return build_table("softplus", {"kind": "elementwise1d", "ideal": "softplus", "inputs": ["x"],
                                    "grid": {"x": grid}}, x, y)


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    """Best wall time and the last result."""
    last: list[Any] = [None]

    def once() -> None:
        last[0] = None  # free the previous result first
        last[0] = fn()

    return best_of(once, repeat=repeat), last[0]


def main() -> None:
    rows: list[dict[str, Any]] = []
    s = make_samples()

    # ------------------------------------------------------------------ build
    t_build, table = timed(lambda: labpcu_build(s), repeat=3)
    t0 = time.perf_counter()
    ref = pandas_build(s)
    t_pandas = time.perf_counter() - t0
    check_build(table, ref)
    t0 = time.perf_counter()
    naive = naive_build(s)
    t_naive = time.perf_counter() - t0
    key = (GRID[3], GRID[7])
    if not np.allclose(naive[key][3:], table.quantiles[3, 7], rtol=1e-12):
        raise AssertionError("build: quantiles differ from the per-group np.quantile loop")
    t_base = min(t_pandas, t_naive)  # against the faster baseline
    for case, seconds in (("build: labpcu build_table", t_build), ("build: pandas groupby agg + quantile", t_pandas),
                          ("build: pandas groupby + np.quantile per group", t_naive)):
        rows.append({"case": case, "seconds": seconds, "M values/s": N_SAMPLES / seconds / 1e6,
                     "vs baseline": t_base / seconds, "verdict": ""})
    rows.append({"case": f"goal: build {N_SAMPLES / 1e6:g} M samples <= {GOAL_BUILD_S:g} s", "seconds": GOAL_BUILD_S,
                 "M values/s": "", "vs baseline": "",
                 "verdict": f"{'PASS' if t_build <= GOAL_BUILD_S else 'FAIL'} ({t_build:.2f} s)"})
    del s, ref, naive, table

    # ------------------------------------------------------------------ lookup
    rng = np.random.default_rng(2)
    t1 = one_d_table()
    x = rng.uniform(-5.0, 5.0, N_LOOKUP)
    x32 = x.astype(np.float32)
    look = Lookup(t1)
    grid, mean = t1.axes[0], t1.mean
    results = {}
    for label, fn, rep in (
        ("lookup 1-D mean float64: labpcu", lambda: look(x), 7),
        ("lookup 1-D mean float32: labpcu", lambda: look(x32), 7),
        ("lookup 1-D mean: np.interp", lambda: np.interp(x, grid, mean), 7),
        ("lookup 1-D gaussian: labpcu", lambda: Lookup(t1, mode="gaussian", rng=0)(x), 3),
        ("lookup 1-D quantile: labpcu", lambda: Lookup(t1, mode="quantile", rng=0)(x), 3),
    ):
        seconds, results[label] = timed(fn, rep)
        rows.append({"case": label, "seconds": seconds, "M values/s": N_LOOKUP / seconds / 1e6, "vs baseline": "",
                     "verdict": ""})
    if not np.allclose(results["lookup 1-D mean float64: labpcu"], results["lookup 1-D mean: np.interp"],
                       rtol=1e-12, atol=1e-14):
        raise AssertionError("lookup: labpcu differs from np.interp")
    base = next(r for r in rows if r["case"] == "lookup 1-D mean: np.interp")["seconds"]
    for r in rows:
        if r["case"].startswith("lookup 1-D"):
            r["vs baseline"] = base / r["seconds"]
    rate = N_LOOKUP / next(r for r in rows if r["case"] == "lookup 1-D mean float64: labpcu")["seconds"]

    # 2-D bilinear against scipy
    rng2 = np.random.default_rng(3)
    mul = build_table("m", SPEC, rng2.choice(GRID, (200_000, 2)), rng2.standard_normal(200_000))
    n2 = N_LOOKUP // 2
    a, b = rng2.uniform(-1, 1, n2), rng2.uniform(-1, 1, n2)
    look2 = Lookup(mul)
    rgi = RegularGridInterpolator(mul.axes, mul.mean)
    t_l2, y_l2 = timed(lambda: look2(a, b), 3)
    t_s2, y_s2 = timed(lambda: rgi(np.column_stack((a, b))), 1)
    if not np.allclose(y_l2, y_s2, rtol=1e-10, atol=1e-12):
        raise AssertionError("lookup 2-D: labpcu differs from scipy")
    rows.append({"case": "lookup 2-D mean: labpcu", "seconds": t_l2, "M values/s": n2 / t_l2 / 1e6,
                 "vs baseline": t_s2 / t_l2, "verdict": ""})
    rows.append({"case": "lookup 2-D mean: scipy RegularGridInterpolator", "seconds": t_s2,
                 "M values/s": n2 / t_s2 / 1e6, "vs baseline": 1.0, "verdict": ""})
    rows.append({"case": f"goal: 1-D mean lookup >= {GOAL_LOOKUP_RATE / 1e6:g} M values/s", "seconds": "",
                 "M values/s": GOAL_LOOKUP_RATE / 1e6, "vs baseline": "",
                 "verdict": f"{'PASS' if rate >= GOAL_LOOKUP_RATE else 'FAIL'} ({rate / 1e6:.0f} M/s)"})

    title = (f"Codebook: build from {N_SAMPLES:,} samples ({len(GRID)}x{len(GRID)} grid, {N_DEVICES} devices) and "
             f"lookup of {N_LOOKUP:,} values; best wall time")
    path = report(title, rows, "codebook.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
