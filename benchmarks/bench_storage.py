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

    python benchmarks/bench_storage.py
"""

from __future__ import annotations

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


def main() -> None:
    w = make_workload()
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
