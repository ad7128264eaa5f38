"""Sustained append rate of the HDF5 run recorder, crash safety on, against CSV and SQLite.

The workload is one I-V sweep dataset: 200 sweeps x 1001 points, 5 columns (v, i, t as
float64, cycle int64, compliance bool), about 1 M values, generated with numpy before
any clock starts. Every writer is timed from creating its file to having closed it, so
file set-up and the final flush count. Each writer gets its input in the form it takes
natively (dicts of Python scalars, numpy blocks, tuples), built before timing, so the
baselines are not charged for conversions they would not do.

* labpcu: ``Store.begin_run`` ... ``append`` ... ``finish``. Crash safety is built in:
  SWMR mode, and the buffers reach the file at least once a second and whenever one
  fills (65536 rows). The runs here are shorter than a second, so it is the full
  buffers (3 per run) and the close that flush, not the timer.
* pymeasure 0.16: its real per-point path. A ``Procedure`` emits each point and a
  ``Worker`` hands it to its ``Recorder``, whose ``FileHandler`` formats the line with
  ``Results.formatter`` and writes and flushes it, one point at a time.
* sqlite3: one table in WAL mode, committed at least once a second (default
  ``synchronous=FULL``, so each commit is also fsynced: a stronger guarantee than the
  other two give, but with about one commit a second it costs almost nothing).

After each repetition the file is read back and checked against the source data (row
count and values), so a writer that silently drops points cannot post a good rate.

The second table is the store at lab scale (issue 16): bytes per run and time per run
as a store grows to 10,000 runs, ``Store.runs()`` and ``info() + read()`` on it. The
baseline, measured in the same run, is plain h5py writing the same runs naively in the
store's previous layout (each column a resizable dataset of 8,192-row uncompressed
chunks, attributes on each run's group, every run's group read to list them): no lock,
journal or SWMR, so its times are a floor for the write side, and its bytes are what
the store took before. The 10,000 runs are written through ``Store.begin_run`` with
``durable=False`` (no fsyncs, so making them takes minutes, not an hour); the timed
runs at 100, 1,000 and 10,000 use the default, fsynced sessions.

    python benchmarks/bench_storage.py [--only append|scale]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from pymeasure.experiment import Procedure, Results
from pymeasure.experiment.workers import Worker

from _table import best_of, report
from labpcu.data.columns import Column
from labpcu.data.store import Store

N_SWEEPS = 200
N_POINTS = 1001  # points per sweep
N_ROWS = N_SWEEPS * N_POINTS
NAMES = ("v", "i", "t", "cycle", "compliance")
N_VALUES = N_ROWS * len(NAMES)
COLUMNS = [Column("v", "V"), Column("i", "A"), Column("t", "s"),
           Column("cycle", "", "int64"), Column("compliance", "", "bool")]
REPEAT = 3
#: the labpcu block path takes ~15 ms, where one disk write-back or scheduler hiccup
#: doubles a time, so it gets more (still cheap) repetitions
REPEAT_FAST = 10
#: the goal for the labpcu block path
GOAL_RATE = 2e6  # values/s
GOAL_VS_CSV = 10.0
#: SQLite commits at least this often (s), like the recorder's flush interval
COMMIT_INTERVAL = 1.0
SQL_CREATE = "CREATE TABLE iv (v REAL, i REAL, t REAL, cycle INTEGER, compliance INTEGER)"
SQL_INSERT = "INSERT INTO iv VALUES (?, ?, ?, ?, ?)"


# ---------------------------------------------------------------------- workload
@dataclass(frozen=True)
class Workload:
    """The same sweep data in each writer's native input form."""

    arrays: dict[str, np.ndarray]  # whole columns, for checking what was written
    points: list[dict[str, Any]]  # one dict of Python scalars per point
    sweeps: list[dict[str, np.ndarray]]  # one dict of 1-D arrays (views) per sweep
    tuples: list[tuple[Any, ...]]  # one row tuple per point (sqlite)
    sweep_tuples: list[list[tuple[Any, ...]]]  # the row tuples of each sweep


def make_workload(seed: int = 0) -> Workload:
    """Bipolar triangle sweeps 0 -> +1.5 V -> -1.5 V -> 0 over a noisy 10 kOhm device
    with a 100 uA compliance, sampled every millisecond."""
    rng = np.random.default_rng(seed)
    one = np.interp(np.linspace(0.0, 4.0, N_POINTS), [0, 1, 3, 4], [0.0, 1.5, -1.5, 0.0])
    v = np.tile(one, N_SWEEPS)
    i_raw = v / 1e4 * (1.0 + 0.05 * rng.standard_normal(N_ROWS))
    compliance = np.abs(i_raw) >= 1e-4
    i = np.clip(i_raw, -1e-4, 1e-4)
    t = np.arange(N_ROWS) * 1e-3 + rng.uniform(0.0, 1e-5, N_ROWS)
    cycle = np.repeat(np.arange(N_SWEEPS, dtype=np.int64), N_POINTS)
    arrays = {"v": v, "i": i, "t": t, "cycle": cycle, "compliance": compliance}

    lists = [arrays[n].tolist() for n in NAMES]  # Python float / int / bool
    tuples = list(zip(*lists))
    points = [dict(zip(NAMES, row)) for row in tuples]
    sweeps = [{n: arrays[n][k * N_POINTS:(k + 1) * N_POINTS] for n in NAMES} for k in range(N_SWEEPS)]
    sweep_tuples = [tuples[k * N_POINTS:(k + 1) * N_POINTS] for k in range(N_SWEEPS)]
    return Workload(arrays, points, sweeps, tuples, sweep_tuples)


# ---------------------------------------------------------------------- writers
def labpcu_per_point(path: Path, w: Workload) -> None:
    """One ``append`` per point, as a protocol measuring point by point does."""
    rec = Store(path).begin_run("iv_sweep", COLUMNS, parameters={"sweeps": N_SWEEPS}, devices=["S01"])
    append = rec.append
    for point in w.points:
        append(point)
    rec.finish("completed")


def labpcu_per_sweep(path: Path, w: Workload) -> None:
    """One ``append`` per sweep, as a protocol reading an instrument's sweep buffer does."""
    rec = Store(path).begin_run("iv_sweep", COLUMNS, parameters={"sweeps": N_SWEEPS}, devices=["S01"])
    for sweep in w.sweeps:
        rec.append(sweep)
    rec.finish("completed")


class SweepProcedure(Procedure):
    """Emits the prepared points, as a pymeasure procedure emits its measurements."""

    DATA_COLUMNS = list(NAMES)
    points: Sequence[dict[str, Any]] = ()

    def execute(self) -> None:
        emit = self.emit
        for point in self.points:
            emit("results", point)


def pymeasure_csv(path: Path, w: Workload) -> None:
    """pymeasure's own path: ``Results`` writes the header, a ``Worker`` thread runs the
    procedure, and every emitted point goes through ``Worker.emit`` -> ``Recorder``
    (a ``QueueListener``) -> ``logging.FileHandler``, which writes ``results.format(point)``
    and flushes the file for each point."""
    procedure = SweepProcedure()
    procedure.points = w.points
    worker = Worker(Results(procedure, str(path)))
    worker.start()
    # pymeasure's own Worker.join(timeout) stops the worker after the timeout, so wait
    # with the plain Thread.join, as a Manager effectively does by waiting for "finished"
    threading.Thread.join(worker)
    if procedure.status != Procedure.FINISHED:
        raise RuntimeError(f"pymeasure worker ended with status {Procedure.STATUS_STRINGS[procedure.status]}")


def _sqlite_open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"sqlite refused WAL mode (got {mode!r})")
    conn.execute(SQL_CREATE)
    conn.commit()
    return conn


def sqlite_per_row(path: Path, w: Workload) -> None:
    """One ``execute`` per point; commits once a second (checked per point, as the
    recorder checks its flush interval per append) and at the end."""
    conn = _sqlite_open(path)
    cur = conn.cursor()
    execute, monotonic = cur.execute, time.monotonic
    last = monotonic()
    for row in w.tuples:
        execute(SQL_INSERT, row)
        if monotonic() - last >= COMMIT_INTERVAL:
            conn.commit()
            last = monotonic()
    conn.commit()
    conn.close()


def sqlite_per_sweep(path: Path, w: Workload) -> None:
    """One ``executemany`` per sweep; commits once a second (checked per sweep) and at the end."""
    conn = _sqlite_open(path)
    last = time.monotonic()
    for rows in w.sweep_tuples:
        conn.executemany(SQL_INSERT, rows)
        if time.monotonic() - last >= COMMIT_INTERVAL:
            conn.commit()
            last = time.monotonic()
    conn.commit()
    conn.close()


# ---------------------------------------------------------------------- read-back checks
def _check(found: dict[str, np.ndarray], w: Workload, where: Path) -> None:
    """Raise unless ``found`` holds every row of the workload, unchanged."""
    for name in NAMES:
        got, want = np.asarray(found[name]), w.arrays[name]
        if len(got) != N_ROWS:
            raise AssertionError(f"{where.name}: column {name} has {len(got)} rows, expected {N_ROWS}")
        if not np.array_equal(got.astype(want.dtype), want):
            raise AssertionError(f"{where.name}: column {name} differs from the data written")


def check_labpcu(path: Path, w: Workload) -> None:
    store = Store(path)
    (run_id,) = store.run_ids()
    if (status := store.info(run_id).status) != "completed":
        raise AssertionError(f"{path.name}: run {run_id} is {status}")
    df = store.read(run_id)
    _check({n: df[n].to_numpy() for n in NAMES}, w, path)


def check_csv(path: Path, w: Workload) -> None:
    # pymeasure writes floats with repr() and pandas >= 3 parses them back exactly
    df = pd.read_csv(path, comment="#")
    if list(df.columns) != list(NAMES):
        raise AssertionError(f"{path.name}: columns {list(df.columns)}")
    _check({n: df[n].to_numpy() for n in NAMES}, w, path)


def check_sqlite(path: Path, w: Workload) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT v, i, t, cycle, compliance FROM iv ORDER BY rowid").fetchall()
    cols = list(zip(*rows)) if rows else [()] * len(NAMES)
    _check({n: np.array(c) for n, c in zip(NAMES, cols)}, w, path)


# ---------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class Case:
    """One writer: how it writes a fresh file and how its file is checked."""

    name: str
    suffix: str
    write: Callable[[Path, Workload], None]
    check: Callable[[Path, Workload], None]
    repeat: int = REPEAT


CASES = [
    Case("labpcu recorder, per point", ".h5", labpcu_per_point, check_labpcu),
    Case("labpcu recorder, per sweep block", ".h5", labpcu_per_sweep, check_labpcu, REPEAT_FAST),
    Case("pymeasure CSV Results, per point", ".csv", pymeasure_csv, check_csv),
    Case("sqlite3 WAL, per-row execute", ".sqlite", sqlite_per_row, check_sqlite),
    Case("sqlite3 WAL, executemany per sweep", ".sqlite", sqlite_per_sweep, check_sqlite),
]


def _size(path: Path) -> int:
    """Bytes on disk, side files (SQLite's -wal/-shm, if any were left) included."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def measure(case: Case, w: Workload, tmp: Path) -> tuple[float, float]:
    """Best wall time (s) of ``case.repeat`` runs, each into a fresh file, and the file size
    (MB); every file is checked afterwards, outside the timing."""
    slug = re.sub(r"\W+", "-", case.name).strip("-")
    paths: list[Path] = []

    def once() -> None:
        path = tmp / f"{slug}-{len(paths)}{case.suffix}"
        paths.append(path)
        case.write(path, w)

    seconds = best_of(once, repeat=case.repeat)
    for path in paths:
        case.check(path, w)
    return seconds, _size(paths[-1]) / 1e6


# ---------------------------------------------------------------------- the store at scale
#: an 11-point I-V run, with iv_sweep's columns
IV_COLUMNS = [Column("v_source", "V"), Column("v", "V"), Column("i", "A"), Column("compliance", "", "bool"),
              Column("index", "", "int64"), Column("branch", "", "int64")]
IV_POINTS = 11
SCALE_RUNS = 10_000
#: store sizes at which the cost of one more run is measured, and runs timed at each
CHECKPOINTS = (100, 1_000, 10_000)
TIMED_RUNS = 30
OLD_CHUNK_ROWS = 8192
#: goals (issue 16)
GOAL_SMALL_BYTES = 16_000
GOAL_LARGE_RATIO = 1.2
GOAL_GROWTH = 1.2
GOAL_RUNS_S = 1.0
GOAL_SHOW_S = 0.2


def _iv_block(k: int) -> dict[str, np.ndarray]:
    v = np.linspace(0.0, 1.0, IV_POINTS) + 1e-3 * k
    return {"v_source": v, "v": v * 0.999, "i": v * 1e-4, "compliance": np.zeros(IV_POINTS, bool),
            "index": np.arange(IV_POINTS), "branch": np.zeros(IV_POINTS, np.int64)}


def _iv_raw_bytes() -> int:
    return sum(a.nbytes for a in _iv_block(0).values())


def labpcu_iv_run(store: Store, k: int) -> None:
    rec = store.begin_run("iv_sweep", IV_COLUMNS, parameters={"start": 0.0, "stop": 1.0, "points": IV_POINTS},
                          parameter_units={"start": "V", "stop": "V"}, devices=["S01"], bench={"name": "sim"},
                          metadata={"sample": {"wafer": "W01"}})
    rec.append(_iv_block(k))
    rec.finish("completed", results={"r_on": 1e4, "fit": {"n": 1.8, "i_s": 1e-12}})


def naive_iv_run(path: Path, k: int) -> None:
    """The same run written by plain h5py in the store's previous layout: numbered by
    the group count, one open and close, no lock, journal or SWMR."""
    with h5py.File(path, "a", libver=("v110", "v110")) as f:
        runs = f.require_group("runs")
        grp = runs.create_group(f"{len(runs) + 1:05d}-iv_sweep")
        a = grp.attrs
        for key, value in (("protocol", "iv_sweep"), ("parameters", '{"start": 0.0, "stop": 1.0, "points": 11}'),
                           ("parameter_units", '{"start": "V", "stop": "V"}'), ("devices", '["S01"]'),
                           ("bench", '{"name": "sim"}'), ("metadata", '{"sample": {"wafer": "W01"}}'),
                           ("labpcu_version", "0.1.0"), ("started", "2026-12-06T10:00:00.000000+00:00"),
                           ("finished", "2026-12-06T10:00:01.000000+00:00"), ("status", "completed"), ("error", ""),
                           ("host", "bench-pc"), ("uuid", "00000000-0000-0000-0000-000000000000")):
            a[key] = value
        a["n_points"], a["pid"], a["bench_time_start"], a["bench_time_end"] = IV_POINTS, 1, 0.0, 1.0
        data = grp.create_group("data", track_order=True)
        for col, values in zip(IV_COLUMNS, _iv_block(k).values()):
            ds = data.create_dataset(col.name, data=values, maxshape=(None,), chunks=(OLD_CHUNK_ROWS,))
            ds.attrs["units"] = col.unit
            ds.attrs["description"] = col.description
        res = grp.create_group("results")
        res.attrs["r_on"] = 1e4
        res.create_group("fit").attrs.update({"n": 1.8, "i_s": 1e-12})


def naive_runs(path: Path) -> list[dict[str, Any]]:
    """List every run as the store did before its index: every group's attributes."""
    with h5py.File(path, "r") as f:
        return [{k: grp.attrs[k] for k in ("protocol", "status", "started", "finished", "devices", "n_points",
                                           "error", "metadata")} for _, grp in sorted(f["runs"].items())]


def naive_show(path: Path, run_id: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        grp = f["runs"][run_id]
        return dict(grp.attrs), {n: ds[:] for n, ds in grp["data"].items()}


def _median_ms(times: list[float]) -> float:
    return float(np.median(times)) * 1e3


def measure_scale(tmp: Path, w: Workload) -> list[dict[str, Any]]:
    """The rows of the lab-scale table."""
    rows: list[dict[str, Any]] = []
    raw_small = _iv_raw_bytes()

    # disk: bytes per small run (the last 100 of 200), and a large run vs its raw size
    store = Store(tmp / "small.h5", durable=False)
    naive = tmp / "small-naive.h5"
    for k in range(100):
        labpcu_iv_run(store, k)
        naive_iv_run(naive, k)
    sizes = (store.path.stat().st_size, naive.stat().st_size)
    for k in range(100):
        labpcu_iv_run(store, k)
        naive_iv_run(naive, k)
    small = (store.path.stat().st_size - sizes[0]) / 100
    small_naive = (naive.stat().st_size - sizes[1]) / 100
    rows.append({"case": f"disk per small run ({IV_POINTS}-point I-V, {len(IV_COLUMNS)} columns, "
                         f"{raw_small} B raw)",
                 "labpcu": f"{small / 1e3:.1f} KB", "baseline": f"{small_naive / 1e3:.1f} KB",
                 "goal": f"< {GOAL_SMALL_BYTES / 1e3:g} KB",
                 "verdict": "PASS" if small < GOAL_SMALL_BYTES else "FAIL"})
    raw_large = sum(w.arrays[n].nbytes for n in NAMES)
    for how, flush_every in (("one flush per 65,536-row buffer", 0), ("flushed after every sweep (a slow run)", 1)):
        path = tmp / f"large-{flush_every}.h5"
        rec = Store(path).begin_run("iv_sweep", COLUMNS, devices=["S01"])
        for sweep in w.sweeps:
            rec.append(sweep)
            if flush_every:
                rec.flush()
        rec.finish("completed")
        ratio = path.stat().st_size / raw_large
        naive_path = tmp / f"large-naive-{flush_every}.h5"
        with h5py.File(naive_path, "w", libver=("v110", "v110")) as f:
            for n in NAMES:
                f.create_dataset(n, data=w.arrays[n], maxshape=(None,), chunks=(OLD_CHUNK_ROWS,))
        rows.append({"case": f"disk per large run ({N_ROWS:,} rows x {len(NAMES)} columns, {raw_large / 1e6:.1f} MB "
                             f"raw), {how}",
                     "labpcu": f"{ratio:.3f}x raw", "baseline": f"{naive_path.stat().st_size / raw_large:.3f}x raw",
                     "goal": f"< {GOAL_LARGE_RATIO:g}x", "verdict": "PASS" if ratio < GOAL_LARGE_RATIO else "FAIL"})

    # time per run as the store grows: fast runs in between, timed (fsynced) runs at each checkpoint
    path, naive = tmp / "big.h5", tmp / "big-naive.h5"
    fast, store = Store(path, durable=False), Store(path)
    per_run: dict[int, tuple[float, float]] = {}
    made = 0
    t_make = time.perf_counter()
    for checkpoint in CHECKPOINTS:
        while made < checkpoint - TIMED_RUNS:
            labpcu_iv_run(fast, made)
            naive_iv_run(naive, made)
            made += 1
        timed, timed_naive = [], []
        for _ in range(TIMED_RUNS):
            t = time.perf_counter()
            labpcu_iv_run(store, made)
            timed.append(time.perf_counter() - t)
            t = time.perf_counter()
            naive_iv_run(naive, made)
            timed_naive.append(time.perf_counter() - t)
            made += 1
        per_run[checkpoint] = (_median_ms(timed), _median_ms(timed_naive))
    t_make = time.perf_counter() - t_make
    first = per_run[CHECKPOINTS[0]][0]
    for checkpoint, (ms, naive_ms) in per_run.items():
        growth = ms / first
        rows.append({"case": f"time per run at run {checkpoint:,} (median of {TIMED_RUNS}, fsynced)",
                     "labpcu": f"{ms:.1f} ms ({growth:.2f}x run {CHECKPOINTS[0]})",
                     "baseline": f"{naive_ms:.1f} ms", "goal": f"<= {GOAL_GROWTH:g}x run {CHECKPOINTS[0]}",
                     "verdict": "PASS" if growth <= GOAL_GROWTH else "FAIL"})

    # listing and showing on the 10,000-run store
    listing: list[Any] = []
    runs_s = best_of(lambda: listing.append(Store(path).runs()), repeat=3)
    if len(listing[-1]) != SCALE_RUNS or not (listing[-1]["status"] == "completed").all():
        raise AssertionError(f"{path.name}: runs() lists {len(listing[-1])} runs")
    naive_runs_s = best_of(lambda: naive_runs(naive), repeat=3)
    rows.append({"case": f"Store.runs() on {SCALE_RUNS:,} runs (labpcu list runs)", "labpcu": f"{runs_s:.3f} s",
                 "baseline": f"{naive_runs_s:.3f} s", "goal": f"< {GOAL_RUNS_S:g} s",
                 "verdict": "PASS" if runs_s < GOAL_RUNS_S else "FAIL"})
    run_id = listing[-1].index[SCALE_RUNS // 2]

    def show() -> None:
        s = Store(path)
        info, df = s.info(run_id), s.read(run_id)
        if info.n_points != IV_POINTS or len(df) != IV_POINTS:
            raise AssertionError(f"{run_id}: {info.n_points} points")

    show_s = best_of(show, repeat=5)
    naive_show_s = best_of(lambda: naive_show(naive, run_id), repeat=5)
    rows.append({"case": f"Store.info + Store.read of one run of {SCALE_RUNS:,} (labpcu show)",
                 "labpcu": f"{show_s * 1e3:.1f} ms", "baseline": f"{naive_show_s * 1e3:.1f} ms",
                 "goal": f"< {GOAL_SHOW_S * 1e3:g} ms", "verdict": "PASS" if show_s < GOAL_SHOW_S else "FAIL"})
    rows.append({"case": f"making the {SCALE_RUNS:,}-run stores (labpcu durable=False, and the baseline)",
                 "labpcu": f"{t_make:.0f} s both", "baseline": "", "goal": "", "verdict": ""})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("append", "scale"), help="run one of the two tables")
    args = parser.parse_args()
    w = make_workload()
    if args.only != "scale":
        append_table(w)
    if args.only != "append":
        with tempfile.TemporaryDirectory() as tmp:
            rows = measure_scale(Path(tmp), w)
        path = report(f"The run store at lab scale: labpcu against plain h5py in the previous layout "
                      f"({SCALE_RUNS:,} runs)", rows, "storage_scale.json")
        print(f"wrote {path}")


def append_table(w: Workload) -> None:
    # the ~200k prepared dicts and tuples are bench scaffolding: freeze them out of the
    # cyclic GC so its full collections do not rescan them inside the timed loops
    gc.collect()
    gc.freeze()

    timed: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            timed[case.name] = measure(case, w, Path(tmp))

    csv_rate = N_VALUES / timed["pymeasure CSV Results, per point"][0]
    rows: list[dict[str, Any]] = []
    for case in CASES:
        seconds, mb = timed[case.name]
        rate = N_VALUES / seconds
        rows.append({"case": case.name, "values/s": rate, "seconds": seconds, "file MB": mb,
                     "vs CSV": rate / csv_rate, "best of": case.repeat, "verdict": ""})

    block_rate = N_VALUES / timed["labpcu recorder, per sweep block"][0]
    ok = block_rate >= GOAL_RATE and block_rate / csv_rate >= GOAL_VS_CSV
    rows.append({
        "case": f"goal: labpcu block >= {GOAL_RATE / 1e6:g} M values/s and >= {GOAL_VS_CSV:g}x CSV",
        "values/s": GOAL_RATE, "seconds": "", "file MB": "", "vs CSV": GOAL_VS_CSV, "best of": "",
        "verdict": f"{'PASS' if ok else 'FAIL'} ({block_rate / 1e6:.2f} M/s, {block_rate / csv_rate:.1f}x)",
    })
    title = (f"Append rate, crash-safe: {N_VALUES:,} values ({N_SWEEPS} sweeps x {N_POINTS} points x "
             f"{len(NAMES)} columns), best run, file creation to close")
    path = report(title, rows, "storage.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
