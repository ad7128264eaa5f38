"""The HDF5 run store: what goes in comes out (columns, dtypes, units, metadata,
results), the documented layout is readable with plain h5py, listing and filters,
schema checks, rejected blocks, crash recovery and flush timing."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import labpcu
from labpcu.data.columns import COLUMN_DTYPES, Column, ColumnError
from labpcu.data.store import SCHEMA_VERSION, SchemaError, Store, StoreBusyError, StoreError

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT_RANGE = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}
PY_TYPE = {"float64": float, "float32": float, "int64": int, "int32": int, "bool": bool}

# ---------------------------------------------------------------------- strategies
#: text HDF5 can hold: any Unicode (UTF-8 encodable, so no lone surrogates) except NUL
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12) | st.sampled_from(
    ["", "😀", "𝄞 µΩ", "\U0010ffff", "a\u200bb", " "])
#: HDF5 object names: no "/" or NUL, not "." or ".."
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=10).filter(
    lambda s: s not in (".", "..")) | st.sampled_from(["😀", "𝄞", " ", "...", ".x", "I (A)"])


def _ints(dtype: str) -> st.SearchStrategy[int]:
    lo, hi = INT_RANGE[dtype]
    return st.integers(lo, hi) | st.sampled_from([lo, hi, lo + 1, hi - 1, 0, -1])


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float64": st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, -2.5e-310, 1.7976931348623157e308]),
    "float32": st.floats(width=32) | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, float(np.float32(1e-45)),
                                                       float(np.finfo(np.float32).max)]),
    "int64": _ints("int64"),
    "int32": _ints("int32"),
    "bool": st.booleans(),
    "str": TEXT,
}


@st.composite
def run_plans(draw: st.DrawFn) -> dict[str, Any]:
    """Columns, their data, and how to feed it: per-point appends (Python or numpy
    scalars), blocks as arrays or lists, empty blocks; buffer size 1-6 rows so blocks
    straddle buffer boundaries."""
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    cols = [Column(n, draw(TEXT), draw(st.sampled_from(COLUMN_DTYPES))) for n in names]
    n_rows = draw(st.integers(0, 24))
    data = {c.name: draw(st.lists(VALUES[c.dtype], min_size=n_rows, max_size=n_rows)) for c in cols}
    steps: list[tuple[int, int, str]] = []
    i = 0
    for size in draw(st.lists(st.integers(0, 7), max_size=8)):
        size = min(size, n_rows - i)
        kinds = ["point", "numpy point", "array", "list"] if size == 1 else ["array", "list"]
        steps.append((i, i + size, draw(st.sampled_from(kinds))))
        i += size
    if i < n_rows:
        steps.append((i, n_rows, draw(st.sampled_from(["array", "list"]))))
    return {"columns": cols, "data": data, "n_rows": n_rows, "steps": steps, "block_rows": draw(st.integers(1, 6))}


def _block(cols: list[Column], data: dict[str, list], start: int, stop: int, kind: str) -> dict[str, Any]:
    """One append's mapping, in the form ``kind`` says (keys in reverse order: order must not matter)."""
    out = {}
    for c in reversed(cols):
        vals = data[c.name][start:stop]
        if kind == "point":
            out[c.name] = vals[0] if c.dtype == "str" else PY_TYPE[c.dtype](vals[0])
        elif kind == "numpy point":
            out[c.name] = vals[0] if c.dtype == "str" else np.dtype(c.dtype).type(vals[0])
        elif kind == "array":
            out[c.name] = np.array(vals, dtype=c.numpy_dtype)
        else:
            out[c.name] = list(vals)
    return out


#: JSON text may hold NUL (it is escaped), so any UTF-8 encodable text
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=12,
)
RESULT_ARRAYS = hnp.arrays(
    st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_]),
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=4),
)
RESULT_LEAVES = (
    st.none() | st.booleans() | st.integers(*INT_RANGE["int64"]) | st.floats() | TEXT | RESULT_ARRAYS
    | st.lists(st.floats(), max_size=4) | st.lists(TEXT, min_size=1, max_size=4)
    | st.tuples(st.integers(-5, 5), st.integers(-5, 5))
)
RESULTS = st.dictionaries(
    NAMES, st.recursive(RESULT_LEAVES, lambda inner: st.dictionaries(NAMES, inner, max_size=3), max_leaves=8), max_size=5)


# ---------------------------------------------------------------------- helpers
def assert_same(actual: Any, expected: Any, where: str = "value") -> None:
    """Deep equality that is strict about types and dtypes, NaN equal to NaN, and
    floats compared bit for bit otherwise (so -0.0 and subnormals must survive)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not a dict"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for k in expected:
            assert_same(actual[k], expected[k], f"{where}[{k!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for k, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{k}]")
    elif isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{where}: {actual!r} is not an array"
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, \
            f"{where}: {actual.dtype}{actual.shape} != {expected.dtype}{expected.shape}"
        if expected.dtype == object:
            assert all(type(v) is str for v in actual.ravel()), f"{where}: not all str"
            assert actual.tolist() == expected.tolist(), f"{where}: {actual!r} != {expected!r}"
        else:
            assert_array_same(actual, expected, where)
    elif isinstance(expected, float):
        assert type(actual) is float, f"{where}: {actual!r} is {type(actual).__name__}, not float"
        assert_array_same(np.array([actual]), np.array([expected]), where)
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_array_same(actual: np.ndarray, expected: np.ndarray, where: str = "array") -> None:
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype.kind == "f":
        nan = np.isnan(expected)
        assert np.array_equal(np.isnan(actual), nan), f"{where}: NaNs at other places: {actual!r} vs {expected!r}"
        assert actual[~nan].tobytes() == expected[~nan].tobytes(), f"{where}: {actual!r} != {expected!r}"
    else:
        assert np.array_equal(actual, expected), f"{where}: {actual!r} != {expected!r}"


def expected_result(value: Any) -> Any:
    """What a results tree reads back as: sequences become arrays (str ones of dtype
    object), numpy scalars plain Python ones."""
    if isinstance(value, dict):
        return {k: expected_result(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return np.array(value, dtype=object)
        return np.asarray(value)
    return value


def raw_attrs(path: Path, run_id: str) -> dict[str, Any]:
    """A run's attributes read with plain h5py (what the file really says)."""
    with h5py.File(path, "r", swmr=True) as f:
        return dict(f["runs"][run_id].attrs)


def simulate_death(rec: Any) -> None:
    """What a dead writer leaves, in-process: the flusher stopped, the SWMR handle
    closed without ``finish``, and the store's writer lock given up (as the kernel
    does when a process dies)."""
    rec._stop.set()
    rec._flusher.join()
    rec._file.close()
    rec._release()


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.h5")


def finished_run(store: Store, protocol: str = "iv", n: int = 3, **kwargs: Any) -> str:
    """A completed run with columns v (V, float64), i (A, float64), label (str)."""
    rec = store.begin_run(protocol, [Column("v", "V"), Column("i", "A"), Column("label", dtype="str")], **kwargs)
    rec.append({"v": np.arange(n, dtype=float), "i": np.arange(n) * 1e-6, "label": [f"p{k}" for k in range(n)]})
    rec.finish("completed")
    return rec.run_id


# ---------------------------------------------------------------------- 1. round trips
@HYPOTHESIS
@given(plans=st.lists(run_plans(), min_size=1, max_size=2))
def test_columns_round_trip(plans: list[dict[str, Any]]) -> None:
    """Whatever columns are declared and however the data are appended (points, array
    and list blocks, empty blocks, buffer-straddling blocks), ``read`` returns the same
    columns in the same order with the declared dtypes, the same values bit for bit
    (NaN payloads aside), and the declared units."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.h5"
        written = []
        for plan in plans:
            st_ = Store(path, block_rows=plan["block_rows"])
            rec = st_.begin_run("fuzz", plan["columns"])
            for start, stop, kind in plan["steps"]:
                assert rec.append(_block(plan["columns"], plan["data"], start, stop, kind)) == stop - start
            assert rec.finish("completed") == ("completed", "")
            assert rec.rows_on_disk == plan["n_rows"]
            written.append((rec.run_id, plan))
        store = Store(path)
        assert store.run_ids() == sorted(r for r, _ in written)
        for run_id, plan in written:
            cols, data = plan["columns"], plan["data"]
            df = store.read(run_id)
            assert list(df.columns) == [c.name for c in cols]
            assert len(df) == plan["n_rows"]
            assert df.attrs["units"] == {c.name: c.unit for c in cols}
            assert df.attrs["run_id"] == run_id
            for c in cols:
                got = df[c.name].to_numpy()
                if c.dtype == "str":
                    assert df[c.name].dtype == object
                    assert all(type(v) is str for v in got)
                    assert got.tolist() == data[c.name], c.name
                else:
                    assert df[c.name].dtype == np.dtype(c.dtype), c.name
                    assert_array_same(got, np.array(data[c.name], dtype=c.dtype), repr(c.name))
            info = store.info(run_id)
            assert info.n_points == plan["n_rows"] and info.status == "completed"
            assert list(info.columns.items()) == [(c.name, c.unit) for c in cols]


@HYPOTHESIS
@given(parameters=st.dictionaries(ANY_TEXT, JSON, max_size=5),
       units=st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=4),
       devices=st.lists(ANY_TEXT, max_size=4),
       bench=st.dictionaries(ANY_TEXT, JSON, max_size=3),
       results=RESULTS)
def test_metadata_and_results_round_trip(parameters, units, devices, bench, results) -> None:
    """Parameters, parameter units, devices and bench (JSON, NaN/inf and any unicode
    allowed) and results (nested dicts, arrays, None, text, bools, ints, floats) come
    back from ``info`` as they were given (sequences in results as arrays)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "runs.h5")
        rec = store.begin_run("meta", [Column("x")], parameters=parameters, parameter_units=units,
                              devices=devices, bench=bench, bench_time_start=1.25)
        rec.finish("completed", results=results, bench_time_end=2.5)
        info = store.info(rec.run_id)
        assert_same(info.parameters, parameters, "parameters")
        assert_same(info.parameter_units, units, "parameter_units")
        assert_same(info.bench, bench, "bench")
        assert info.devices == tuple(devices)
        assert_same(info.results, expected_result(results), "results")
        assert (info.bench_time_start, info.bench_time_end) == (1.25, 2.5)
        assert store.results(rec.run_id).keys() == info.results.keys()


def test_block_scalars_repeat_along_the_block(store: Store) -> None:
    """A scalar in a block is repeated for every row of the block's arrays."""
    rec = store.begin_run("iv", [Column("v", "V"), Column("device", dtype="str"), Column("n", dtype="int32")])
    rec.append({"v": [0.5, 1.5, 2.5], "device": "A1", "n": 7})
    rec.finish("completed")
    df = store.read(rec.run_id)
    assert df["v"].tolist() == [0.5, 1.5, 2.5]
    assert df["device"].tolist() == ["A1"] * 3 and df["n"].tolist() == [7] * 3


def test_read_selected_columns(store: Store) -> None:
    """``read(columns=...)`` gives those columns in the order asked; an unknown name
    is a StoreError naming it."""
    run_id = finished_run(store)
    df = store.read(run_id, columns=["label", "v"])
    assert list(df.columns) == ["label", "v"] and df.attrs["units"] == {"label": "", "v": "V"}
    with pytest.raises(StoreError, match="'nope'"):
        store.read(run_id, columns=["nope"])
    with pytest.raises(StoreError, match="no run"):
        store.read("00099-nothing")


# ---------------------------------------------------------------------- 2. layout
def test_layout_is_readable_with_plain_h5py(store: Store) -> None:
    """The file holds what the store's docstring documents, readable without labpcu."""
    rec = store.begin_run("iv", [Column("v", "V", description="applied"), Column("label", dtype="str")],
                          parameters={"stop": 1.5}, parameter_units={"stop": "V"}, devices=["A1", "B2"],
                          bench={"name": "sim"}, bench_time_start=10.0)
    rec.append({"v": [0.0, 0.5, 1.0], "label": ["a", "é", "😀"]})
    rec.finish("completed", results={"fit": {"slope": 2.0, "x": [1, 2, 3]}, "note": "ok", "missing": None},
               bench_time_end=11.0)
    with h5py.File(store.path, "r") as f:
        root = f.attrs
        assert root["schema"] == "labpcu" and int(root["schema_version"]) == SCHEMA_VERSION
        assert root["labpcu_version"] == labpcu.__version__
        datetime.fromisoformat(root["created"])
        assert list(f["runs"]) == [rec.run_id]
        run = f["runs"][rec.run_id]
        a = run.attrs
        documented = {"protocol", "parameters", "parameter_units", "devices", "bench", "labpcu_version", "started",
                      "finished", "status", "error", "n_points", "pid", "host", "uuid", "bench_time_start",
                      "bench_time_end"}
        assert documented <= set(a), documented - set(a)
        assert a["protocol"] == "iv" and a["status"] == "completed" and a["error"] == ""
        assert json.loads(a["parameters"]) == {"stop": 1.5} and json.loads(a["parameter_units"]) == {"stop": "V"}
        assert json.loads(a["devices"]) == ["A1", "B2"] and json.loads(a["bench"]) == {"name": "sim"}
        assert int(a["n_points"]) == 3 and int(a["pid"]) == os.getpid() and a["host"] == socket.gethostname()
        uuid.UUID(a["uuid"])
        started, finished = datetime.fromisoformat(a["started"]), datetime.fromisoformat(a["finished"])
        assert started.tzinfo is not None and started <= finished
        assert (float(a["bench_time_start"]), float(a["bench_time_end"])) == (10.0, 11.0)

        data = run["data"]
        assert list(data) == ["v", "label"]  # declaration order
        point = run["point"]  # the columns' dimension: an empty netCDF dimension scale, as long as they are
        assert h5py.h5ds.is_scale(point.id) and point.shape == (3,) and point.maxshape == (None,)
        for name, units in (("v", "V"), ("label", "")):
            ds = data[name]
            assert ds.ndim == 1 and ds.shape == (3,) and ds.maxshape == (None,) and ds.chunks is not None
            assert ds.attrs["units"] == units and "description" in ds.attrs
            assert ds.dims[0][0] == point
        assert data["v"].attrs["description"] == "applied" and data["v"][:].tolist() == [0.0, 0.5, 1.0]
        assert h5py.check_string_dtype(data["label"].dtype).encoding == "utf-8"
        assert data["label"].asstr()[:].tolist() == ["a", "é", "😀"]

        results = run["results"]
        assert results.attrs["note"] == "ok" and isinstance(results.attrs["missing"], h5py.Empty)
        assert results["fit"].attrs["slope"] == 2.0 and results["fit"]["x"][:].tolist() == [1, 2, 3]


# ---------------------------------------------------------------------- 3. listing
def test_runs_lists_every_run_with_its_columns(store: Store) -> None:
    """``runs()`` has one row per run, indexed by run id, with status, devices, point
    count and a duration that matches the time the run took."""
    first = finished_run(store, "iv", n=4, devices=["A1", "A2"])
    rec = store.begin_run("pulse", [Column("x")], devices=["B1"])
    rec.append({"x": [1.0, 2.0]})
    time.sleep(0.2)
    rec.finish("aborted", error="stopped by the operator")
    live = store.begin_run("iv", [Column("x")], devices=["A2"])
    live.append({"x": 1.0})
    live.flush()
    try:
        df = store.runs()
        assert df.index.name == "run_id" and list(df.index) == [first, rec.run_id, live.run_id]
        assert list(df.columns) == ["protocol", "status", "started", "finished", "duration", "devices",
                                    "n_points", "error", "metadata"]
        assert df["metadata"].tolist() == [{}, {}, {}]
        assert df["protocol"].tolist() == ["iv", "pulse", "iv"]
        assert df["status"].tolist() == ["completed", "aborted", "running"]
        assert df["n_points"].tolist() == [4, 2, 1] and df["n_points"].dtype == np.int64
        assert df.loc[first, "devices"] == "A1, A2"
        assert df.loc[rec.run_id, "error"] == "stopped by the operator"
        assert 0.2 <= df.loc[rec.run_id, "duration"] < 5
        assert df.loc[rec.run_id, "duration"] == (df.loc[rec.run_id, "finished"] - df.loc[rec.run_id, "started"]).total_seconds()
        assert pd.isna(df.loc[live.run_id, "finished"]) and math.isnan(df.loc[live.run_id, "duration"])
        assert df["started"].is_monotonic_increasing
    finally:
        live.finish("completed")


def test_runs_filters(store: Store) -> None:
    """Filters by protocol, status, device (exact name, not substring) and start time
    (``since`` inclusive, ``until`` exclusive; aware, naive-local and ISO text)."""
    a = finished_run(store, "iv", devices=["A1", "A2"])
    time.sleep(0.02)
    between = datetime.now(timezone.utc)
    time.sleep(0.02)
    rec = store.begin_run("pulse", [Column("x")], devices=["A10"])
    rec.finish("failed", error="boom")
    c = finished_run(store, "iv", devices=["A2"])
    b = rec.run_id

    def ids(**kw: Any) -> list[str]:
        return list(store.runs(**kw).index)

    assert ids(protocol="iv") == [a, c] and ids(protocol="nope") == []
    assert ids(status="failed") == [b] and ids(status="completed") == [a, c]
    assert ids(device="A2") == [a, c] and ids(device="A1") == [a] and ids(device="A") == []
    assert ids(since=between) == [b, c] and ids(until=between) == [a]
    assert ids(since=between.isoformat()) == [b, c]
    assert ids(since=between.astimezone().replace(tzinfo=None)) == [b, c]  # naive = local time
    started_b = store.runs().loc[b, "started"]
    assert ids(since=started_b) == [b, c] and ids(until=started_b) == [a]
    assert ids(protocol="iv", device="A2", since=between) == [c]
    assert ids(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    with pytest.raises(StoreError, match="'bogus'"):
        store.runs(status="bogus")


def test_runs_of_a_missing_or_empty_store(tmp_path: Path) -> None:
    """No file yet: no runs, the usual columns, and reading does not create the file;
    ``read`` and ``info`` of a missing file are a StoreError naming it."""
    store = Store(tmp_path / "none.h5")
    df = store.runs()
    assert df.empty and list(df.columns) == ["protocol", "status", "started", "finished", "duration", "devices",
                                             "n_points", "error", "metadata"]
    assert store.run_ids() == []
    for call in (lambda: store.read("00001-iv"), lambda: store.info("00001-iv")):
        with pytest.raises(StoreError, match="none.h5"):
            call()
    assert not store.path.exists()


# ---------------------------------------------------------------------- 4. schema
@pytest.mark.parametrize("version", [99, 0])
def test_other_schema_versions_are_refused(store: Store, version: int) -> None:
    """A file of a newer or older schema is refused, for reading and writing, with a
    one-line SchemaError naming its version; the file is left as it was."""
    finished_run(store)
    with h5py.File(store.path, "a") as f:
        f.attrs["schema_version"] = version
    calls = {"runs": lambda: store.runs(), "run_ids": lambda: store.run_ids(),
             "read": lambda: store.read("00001-iv"), "begin_run": lambda: store.begin_run("iv", [Column("x")])}
    for what, call in calls.items():
        with pytest.raises(SchemaError) as err:
            call()
        msg = str(err.value)
        assert f"schema version {version}" in msg and "\n" not in msg, (what, msg)
    with h5py.File(store.path, "r") as f:
        assert list(f["runs"]) == ["00001-iv"] and int(f.attrs["schema_version"]) == version


def test_a_foreign_hdf5_file_is_refused(tmp_path: Path) -> None:
    """An HDF5 file that is not a labpcu store is neither read nor written into."""
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    store = Store(path)
    for call in (store.runs, lambda: store.begin_run("iv", [Column("x")])):
        with pytest.raises(SchemaError, match="not a labpcu run store") as err:
            call()
        assert "\n" not in str(err.value)
    with h5py.File(path, "r") as f:
        assert list(f) == ["x"] and "schema" not in f.attrs


def test_a_file_that_is_not_hdf5_is_refused(tmp_path: Path) -> None:
    """A text file is a StoreError naming the file, and is not overwritten."""
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    for call in (Store(path).runs, lambda: Store(path).begin_run("iv", [Column("x")])):
        with pytest.raises(StoreError, match="notes.h5"):
            call()
    assert path.read_text() == "not hdf5"


# ---------------------------------------------------------------------- 5. bad blocks
BAD_BLOCKS = {
    "undeclared column": ({"v": 1.0, "n": 1, "s": "a", "extra": 2.0}, ["'extra'"]),
    "undeclared instead of declared": ({"v": 1.0, "n": 1, "S": "a"}, ["'S'"]),
    "missing column": ({"v": 1.0, "s": "a"}, ["'n'"]),
    "different lengths": ({"v": [1.0, 2.0], "n": [1, 2, 3], "s": "a"}, ["'n'", "3", "2"]),
    "2-D values": ({"v": np.ones((2, 2)), "n": 1, "s": "a"}, ["'v'", "2-D"]),
    "NUL in text": ({"v": 1.0, "n": 1, "s": "a\x00b"}, ["'s'", "NUL"]),
    "NUL in a text block": ({"v": [1.0, 2.0], "n": [1, 2], "s": ["ok", "x\x00"]}, ["'s'", "NUL"]),
    "lone surrogate": ({"v": 1.0, "n": 1, "s": "µ\udc80"}, ["'s'", "surrogate"]),
    "lone surrogate in a block": ({"v": [1.0, 2.0], "n": [1, 2], "s": np.array(["ok", "\ud800"], dtype=object)},
                                  ["'s'", "surrogate"]),
}


@pytest.mark.parametrize("block, needles", BAD_BLOCKS.values(), ids=BAD_BLOCKS.keys())
def test_bad_blocks_are_rejected_whole(store: Store, block: dict[str, Any], needles: list[str]) -> None:
    """A block that does not fit the declaration is a ColumnError naming the column,
    and appends nothing: the run keeps exactly the good rows before and after."""
    rec = store.begin_run("iv", [Column("v", "V"), Column("n", dtype="int32"), Column("s", dtype="str")])
    rec.append({"v": 0.0, "n": 0, "s": "before"})
    rec.append({"v": [0.5], "n": [5], "s": ["block"]})
    with pytest.raises(ColumnError) as err:
        rec.append(block)
    msg = str(err.value)
    assert all(n in msg for n in needles) and "\n" not in msg, msg
    assert rec.rows == 2
    rec.append({"v": 1.0, "n": 1, "s": "after"})
    assert rec.finish("completed") == ("completed", "") and rec.rows_on_disk == 3
    df = store.read(rec.run_id)
    assert df["s"].tolist() == ["before", "block", "after"] and df["n"].tolist() == [0, 5, 1]


def test_appending_to_a_finished_run_is_refused(store: Store) -> None:
    rec = store.begin_run("iv", [Column("x")])
    rec.finish("completed")
    with pytest.raises(ColumnError, match="closed"):
        rec.append({"x": 1.0})


@pytest.mark.parametrize("make", [
    lambda: Column("a/b"), lambda: Column(""), lambda: Column("."), lambda: Column(".."), lambda: Column("a\x00"),
    lambda: Column(3), lambda: Column("x", dtype="float16"), lambda: Column("x", dtype="object"),
    lambda: Column("x", unit="V\x00"), lambda: Column("x", unit=None), lambda: Column("x", description="a\x00b"),
    lambda: Column("\ud800"), lambda: Column("x", unit="\udcb5V"),
], ids=["slash", "empty", "dot", "dotdot", "NUL", "not str", "float16", "object", "NUL unit", "None unit",
        "NUL description", "surrogate name", "surrogate unit"])
def test_invalid_column_declarations_are_refused(make: Any) -> None:
    """Names HDF5 would nest or alias, dtypes the store does not keep, and units or
    descriptions HDF5 cannot hold are refused when the column is declared."""
    with pytest.raises(ColumnError):
        make()


@pytest.mark.parametrize("columns, needle", [
    ([], "at least one"),
    ([Column("x"), Column("x", "V")], "'x'"),
    (["x"], "Column"),
])
def test_invalid_column_lists_are_refused(store: Store, columns: list, needle: str) -> None:
    """A run needs columns, uniquely named, as Column objects; nothing is written otherwise."""
    with pytest.raises(ColumnError, match=needle):
        store.begin_run("iv", columns)
    assert not store.path.exists()


@pytest.mark.parametrize("protocol", ["a/b", "", "..", "x\x00", "\udc80"])
def test_invalid_protocol_names_are_refused(store: Store, protocol: str) -> None:
    """The protocol names the run's HDF5 group, so a name that would nest it or
    be no name is refused before anything is written."""
    with pytest.raises(ColumnError, match="protocol"):
        store.begin_run(protocol, [Column("x")])
    assert store.run_ids() == []


@pytest.mark.parametrize("kwargs, error", [
    ({"parameters": {"when": object()}}, TypeError),
    ({"bench": {"path": Path("/x")}}, TypeError),
    ({"devices": ["A\udcff"]}, StoreError),
    ({"parameters": {"name": "\ud800"}}, StoreError),
], ids=["object parameter", "Path in bench", "surrogate device", "surrogate parameter"])
def test_refused_metadata_leaves_no_half_made_run(store: Store, kwargs: dict[str, Any], error: type) -> None:
    """Metadata the file cannot hold is refused before the run's group is made, so
    the store keeps exactly the runs it had."""
    first = finished_run(store)
    with pytest.raises(error):
        store.begin_run("iv", [Column("x")], **kwargs)
    assert store.run_ids() == [first]
    assert finished_run(store) == "00002-iv"


# ---------------------------------------------------------------------- 6. crashes
def test_a_run_whose_writer_died_reads_as_interrupted(store: Store) -> None:
    """In-process: a run left ``running`` by a writer that is gone reads as
    interrupted with its flushed points; the next ``begin_run`` marks it interrupted
    in the file for good, with a reason."""
    rec = store.begin_run("iv", [Column("x", "V")])
    rec.append({"x": [1.0, 2.0, 3.0]})
    rec.flush()
    assert store.runs().loc[rec.run_id, "status"] == "running"  # its writer is alive
    simulate_death(rec)

    assert store.runs().loc[rec.run_id, "status"] == "interrupted"
    assert store.info(rec.run_id).n_points == 3 and store.read(rec.run_id)["x"].tolist() == [1.0, 2.0, 3.0]
    assert raw_attrs(store.path, rec.run_id)["status"] == "running"  # reading changed nothing

    nxt = store.begin_run("iv", [Column("y")])
    nxt.finish("completed")
    attrs = raw_attrs(store.path, rec.run_id)
    assert attrs["status"] == "interrupted" and int(attrs["n_points"]) == 3
    assert attrs["error"] and "\n" not in attrs["error"]
    assert store.info(rec.run_id).error == attrs["error"]
    assert store.read(rec.run_id)["x"].tolist() == [1.0, 2.0, 3.0]


CRASHING_WRITER = """
    import os
    import numpy as np
    from labpcu.data.store import Store
    from labpcu.data.columns import Column
    store = Store({path!r}, flush_interval=600)
    rec = store.begin_run("crashy", [Column("z", "V"), Column("a", dtype="int64"), Column("s", dtype="str")])
    rec.append({{"z": np.arange({n_block}) * 0.5, "a": np.arange({n_block}), "s": ["é😀"] * {n_block}}})
    for k in range({n_points}):
        rec.append({{"z": -1.0 * k, "a": -k, "s": "p" + str(k)}})
    rec.flush()
    rec.append({{"z": 99.0, "a": 99, "s": "never flushed"}})
    os._exit(0)  # no close: HDF5's "open for write" mark stays set, as after a kill
"""


def test_a_killed_writer_leaves_its_flushed_rows_and_the_file_usable(store: Store) -> None:
    """A child process writes and flushes rows, then dies without closing. The parent
    reads the run as interrupted with exactly the flushed rows, then begins a new run
    in the same file (repaired in place: no copy) with every old run intact."""
    before = finished_run(store, "before", n=5)
    old = store.read(before)
    n_block, n_points = 10, 4
    run_python(CRASHING_WRITER.format(path=str(store.path), n_block=n_block, n_points=n_points))
    with pytest.raises(OSError):  # the mark a kill leaves
        h5py.File(store.path, "a").close()

    crashy = "00002-crashy"
    expect = pd.DataFrame({
        "z": np.concatenate([np.arange(n_block) * 0.5, -1.0 * np.arange(n_points)]),
        "a": np.concatenate([np.arange(n_block), -np.arange(n_points)]).astype("int64"),
        "s": pd.Series(["é😀"] * n_block + [f"p{k}" for k in range(n_points)], dtype=object),
    })
    listing = store.runs()
    assert listing.loc[crashy, "status"] == "interrupted" and listing.loc[crashy, "n_points"] == n_block + n_points
    pd.testing.assert_frame_equal(store.read(crashy), expect)

    rec = store.begin_run("after", [Column("x")])
    rec.append({"x": 1.0})
    rec.finish("completed")
    assert not store.path.with_name(store.path.name + ".recovering").exists()
    assert not store.path.with_name(store.path.name + ".journal").exists()
    h5py.File(store.path, "a").close()  # clean again

    listing = store.runs()
    assert listing["status"].tolist() == ["completed", "interrupted", "completed"]
    pd.testing.assert_frame_equal(store.read(before), old)
    got = store.read(crashy)
    pd.testing.assert_frame_equal(got, expect)
    assert got.attrs["units"] == {"z": "V", "a": "", "s": ""}
    attrs = raw_attrs(store.path, crashy)
    assert attrs["status"] == "interrupted" and attrs["error"]
    assert store.read(rec.run_id)["x"].tolist() == [1.0]


LIVE_WRITER = """
    import sys, time
    from labpcu.data.store import Store
    from labpcu.data.columns import Column
    rec = Store({path!r}).begin_run("live", [Column("x")])
    rec.append({{"x": 1.0}})
    rec.flush()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    rec.finish("completed")
"""


def test_a_live_writer_in_another_process_is_not_disturbed(store: Store) -> None:
    """While another process writes a run, ``begin_run`` here is a StoreBusyError
    naming that process, and the other run goes on to complete."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LIVE_WRITER.format(path=str(store.path)))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert store.runs()["status"].tolist() == ["running"]
        with pytest.raises(StoreBusyError, match=str(proc.pid)):
            Store(store.path, lock_timeout=0.5).begin_run("iv", [Column("x")])
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert store.runs()["status"].tolist() == ["completed"]
    assert store.run_ids() == ["00001-live"]


# ---------------------------------------------------------------------- 7. flushing
READER = """
    import sys, h5py
    with h5py.File(sys.argv[1], "r", swmr=True) as f:
        print(f["runs"][sys.argv[2]]["data"]["x"][:].tolist())
"""


def test_points_reach_readers_within_the_flush_interval(store: Store) -> None:
    """With ``flush_interval=0.2``, points appended before a pause reach the file
    without further appends or an explicit flush: another reader (in this process and
    in another one) sees them, and ``on_flush`` reported them."""
    flushed: list[int] = []
    rec = Store(store.path, flush_interval=0.2).begin_run("iv", [Column("x")], on_flush=flushed.append)
    try:
        for k in range(3):
            rec.append({"x": float(k)})
        time.sleep(0.5)
        assert flushed and flushed[-1] == 3 and rec.rows_on_disk == 3
        # in the writer's own process, HDF5 wants the writer's locking setting (off) on every handle
        with h5py.File(store.path, "r", swmr=True, locking=False) as f:
            assert f["runs"][rec.run_id]["data"]["x"][:].tolist() == [0.0, 1.0, 2.0]
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(READER), str(store.path), rec.run_id],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == [0.0, 1.0, 2.0]
        assert store.read(rec.run_id)["x"].tolist() == [0.0, 1.0, 2.0]
    finally:
        rec.finish("completed")
    assert flushed == sorted(flushed) and flushed[-1] == 3


# ---------------------------------------------------------------------- 8-9. xarray, results
def test_read_xarray_keeps_units_and_metadata(store: Store) -> None:
    """``read_xarray`` gives one variable per column along ``point``, with units."""
    pytest.importorskip("xarray")
    run_id = finished_run(store, "iv", n=4, devices=["A1"], parameters={"stop": 1.0})
    ds = store.read_xarray(run_id)
    df = store.read(run_id)
    assert list(ds.data_vars) == ["v", "i", "label"] and ds["v"].dims == ("point",)
    assert {n: ds[n].attrs["units"] for n in ds.data_vars} == {"v": "V", "i": "A", "label": ""}
    for n in df.columns:
        assert ds[n].values.tolist() == df[n].tolist()
    assert ds["point"].values.tolist() == [0, 1, 2, 3]
    assert ds.attrs["run_id"] == run_id and ds.attrs["protocol"] == "iv" and ds.attrs["status"] == "completed"
    assert json.loads(ds.attrs["devices"]) == ["A1"] and json.loads(ds.attrs["parameters"]) == {"stop": 1.0}


def test_write_results_replaces_the_results(store: Store) -> None:
    """``write_results`` replaces a run's results wholesale (nothing old remains) and
    leaves its data and status alone."""
    rec = store.begin_run("iv", [Column("x")])
    rec.append({"x": [1.0, 2.0]})
    rec.finish("completed", results={"old": 1, "fit": {"slope": 2.0, "curve": [1.0, 2.0]}})
    store.write_results(rec.run_id, {"fit": {"offset": -0.5}, "label": "re-analysed"})
    assert_same(store.info(rec.run_id).results, {"fit": {"offset": -0.5}, "label": "re-analysed"})
    store.write_results(rec.run_id, {})
    info = store.info(rec.run_id)
    assert info.results == {} and info.status == "completed" and info.n_points == 2
    assert store.read(rec.run_id)["x"].tolist() == [1.0, 2.0]
