"""The run store at lab scale (issue 16): bytes per run, the work a run does as the
store grows, listing through the run index, and netCDF dimensions for xarray.

Timings (time per run at 100, 1,000 and 10,000 runs, ``runs()``, ``info()+read()``) are
benchmarks (benchmarks/bench_storage.py), not tests: here the work done is asserted
instead (which HDF5 objects a run and a listing open).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from labpcu.data.columns import Column
from labpcu.data.store import Store, check_store, repair_store

#: the columns of an iv_sweep run (labpcu.protocols.characterization)
IV_COLUMNS = [Column("v_source", "V"), Column("v", "V"), Column("i", "A"), Column("compliance", "", "bool"),
              Column("index", "", "int64"), Column("branch", "", "int64")]
N_IV = 11


def iv_block(k: int) -> dict[str, Any]:
    v = np.linspace(0.0, 1.0, N_IV) + k
    return {"v_source": v, "v": v, "i": v * 1e-4, "compliance": np.zeros(N_IV, bool),
            "index": np.arange(N_IV), "branch": np.zeros(N_IV, np.int64)}


def small_run(store: Store, k: int) -> str:
    rec = store.begin_run("iv_sweep", IV_COLUMNS, parameters={"stop": 1.0, "points": N_IV}, devices=["S01"],
                          bench={"name": "sim"}, metadata={"sample": {"wafer": "W1"}})
    rec.append(iv_block(k))
    rec.finish("completed", results={"r_on": 1e4 + k})
    return rec.run_id


# ------------------------------------------------------------------ disk
def test_a_small_run_costs_under_16_kb_and_a_large_one_under_1_2x_its_raw_size(tmp_path: Path) -> None:
    """An 11-point I-V run adds less than 16 KB to the store (it added ~470 KB when
    every column took a whole 8,192-row chunk); a large run flushed often (every
    1,000 rows, as a slow run flushes each second) takes less than 1.2x its raw data."""
    store = Store(tmp_path / "day.h5", durable=False)
    for k in range(20):
        small_run(store, k)
    before = store.path.stat().st_size
    for k in range(100):
        small_run(store, k)
    per_run = (store.path.stat().st_size - before) / 100
    assert per_run < 16_000, per_run

    rows, cols = 100_000, [Column("t", "s"), Column("i", "A"), Column("n", dtype="int64")]
    rng = np.random.default_rng(0)
    data = {"t": np.arange(rows) * 1e-3, "i": rng.standard_normal(rows) * 1e-6, "n": np.arange(rows)}
    raw = sum(a.nbytes for a in data.values())
    before = store.path.stat().st_size
    rec = store.begin_run("retention", cols)
    for lo in range(0, rows, 1000):
        rec.append({n: a[lo:lo + 1000] for n, a in data.items()})
        rec.flush()
    rec.finish("completed")
    ratio = (store.path.stat().st_size - before) / raw
    assert ratio < 1.2, ratio
    df = store.read(rec.run_id)
    assert all(np.array_equal(df[n].to_numpy(), a) for n, a in data.items())


# ------------------------------------------------------------------ the index
class GroupOpens:
    """Counts the run groups h5py opens (``Group._get``, behind ``[]``, ``get`` and
    ``items`` alike, on ``/runs``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        original = h5py.Group._get

        def get(group: h5py.Group, name: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(name, (str, bytes)) and group.name == "/runs":
                self.names.append(name if isinstance(name, str) else name.decode())
            return original(group, name, *args, **kwargs)

        monkeypatch.setattr(h5py.Group, "_get", get)


def test_making_and_ending_a_run_touches_no_other_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The work behind a run's cost not growing with the store: numbering a new run,
    claiming the store (marking dead runs interrupted) and storing its end read the
    index's newest rows; no walk over ``/runs`` (it listed every run's name twice per
    run), and no other run's group is opened."""
    store = Store(tmp_path / "day.h5", durable=False)
    for k in range(20):
        small_run(store, k)
    opens = GroupOpens(monkeypatch)
    walked: list[str] = []
    original_iter = h5py.Group.__iter__

    def walk(group: h5py.Group) -> Any:
        walked.append(group.name)
        return original_iter(group)

    monkeypatch.setattr(h5py.Group, "__iter__", walk)
    run_id = small_run(store, 20)
    assert run_id == "00021-iv_sweep"
    assert "/runs" not in walked, walked
    assert set(opens.names) <= {run_id}, opens.names


def test_runs_reads_the_index_not_every_run_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``runs()`` and ``run_ids()`` read the index (one row per run, kept in the session
    that makes a run and the one that ends it): no run group is opened, except a run
    still being written, whose rows so far only its group knows."""
    store = Store(tmp_path / "day.h5", durable=False)
    ids = [small_run(store, k) for k in range(30)]
    live = store.begin_run("iv_sweep", IV_COLUMNS, devices=["S02"])
    live.append(iv_block(99))
    live.flush()
    opens = GroupOpens(monkeypatch)
    df = store.runs()
    assert opens.names == [live.run_id]
    assert list(df.index) == [*ids, live.run_id]
    assert (df["status"].iloc[:-1] == "completed").all() and df["status"].iloc[-1] == "running"
    assert (df["n_points"] == N_IV).all()
    assert df["metadata"].iloc[0] == {"sample": {"wafer": "W1"}} and df["devices"].iloc[-1] == "S02"
    assert store.run_ids() == [*ids, live.run_id] and opens.names == [live.run_id]
    monkeypatch.undo()
    live.finish("aborted", error="stopped")
    with h5py.File(store.path, "r") as f:
        ix = f["index"]
        assert ix["run_id"].asstr()[:].tolist() == [*ids, live.run_id]
        assert ix["status"].asstr()[-1] == "aborted" and ix["error"].asstr()[-1] == "stopped"
        assert ix["n_points"][:].tolist() == [N_IV] * 31
    assert check_store(store.path).clean


def test_a_store_without_an_index_or_with_a_stale_one_is_read_and_repaired(tmp_path: Path) -> None:
    """A store written before the index (or by a labpcu that does not keep it) is
    listed by its run groups and gets its index at the next write; an index that
    disagrees with the runs is reported by check and rebuilt by repair."""
    store = Store(tmp_path / "day.h5", durable=False)
    ids = [small_run(store, k) for k in range(5)]
    expected = store.runs()
    with h5py.File(store.path, "a") as f:
        del f["index"]
    assert store.runs().equals(expected) and check_store(store.path).clean
    ids.append(small_run(store, 5))  # the next write builds the index
    with h5py.File(store.path, "r") as f:
        assert f["index/run_id"].asstr()[:].tolist() == ids
    with h5py.File(store.path, "a") as f:  # an old labpcu finishing a run behind the index's back
        f["runs"][ids[2]].attrs["status"] = "failed"
    report = check_store(store.path)
    assert not report.clean and any("index" in p for p in report.problems), report.problems
    _, actions, after = repair_store(store.path)
    assert after.clean and any("rebuilt the run index" in a for a in actions), actions
    assert store.runs().loc[ids[2], "status"] == "failed"


# ------------------------------------------------------------------ xarray
def test_open_datatree_shows_point_dimensions_and_units(tmp_path: Path) -> None:
    """xarray (h5netcdf engine) opens a whole store without a warning: each run's
    data is a dataset over a real ``point`` dimension (no ``phony_dim``), with the
    columns' units as attributes; one run's data group opens on its own too; the
    index is a dataset over ``run_id``."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    store = Store(tmp_path / "day.h5", durable=False)
    a = small_run(store, 0)
    rec = store.begin_run("hysteresis", [Column("cycle", dtype="int64"), Column("phase", dtype="str"),
                                         Column("g", "S")])
    rec.append({"cycle": [0, 1, 1], "phase": ["reset", "set", "read_set"], "g": [1e-6, 2e-6, 3e-6]})
    rec.finish("completed", results={"on_off": 2.0})
    b = rec.run_id
    empty = store.begin_run("iv_sweep", [Column("point", dtype="int64"), Column("v", "V")])
    empty.append({"point": [0, 1], "v": [0.5, 1.0]})  # a column named point is the dimension itself
    empty.finish("completed")
    c = empty.run_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = xr.open_datatree(store.path, engine="h5netcdf")
        one = xr.open_dataset(store.path, group=f"runs/{a}/data", engine="h5netcdf")
    try:
        runs = tree["runs"]
        for run_id, n, units in ((a, N_IV, {"v": "V", "i": "A", "compliance": ""}), (b, 3, {"g": "S", "phase": ""}),
                                 (c, 2, {"v": "V"})):
            data = runs[run_id]["data"].to_dataset()
            assert dict(data.sizes) == {"point": n}, (run_id, dict(data.sizes))
            for name, unit in units.items():
                assert data[name].dims == ("point",) and data[name].attrs["units"] == unit
        assert runs[b]["data"]["phase"].values.tolist() == ["reset", "set", "read_set"]
        assert runs[c]["data"]["point"].values.tolist() == [0, 1]
        assert dict(one.sizes) == {"point": N_IV} and one["i"].attrs["units"] == "A"
        assert one["v"].values.tolist() == iv_block(0)["v"].tolist()
        index = tree["index"].to_dataset()
        assert index["run_id"].values.tolist() == [a, b, c] and index["status"].values.tolist() == ["completed"] * 3
    finally:
        one.close()
        tree.close()
