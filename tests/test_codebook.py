"""Operator codebooks: built from synthetic operator runs written with the Store API,
exact binning and statistics (checked against numpy per bin), the HDF5 and npz files
read with h5py or numpy alone, round trips, the numpy lookup, weight noise, and
one-line refusals of bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labpcu.data.codebook import (
    PAPER_WEIGHT_SIGMA,
    QUANTILE_LEVELS,
    SCHEMA,
    SCHEMA_VERSION,
    Codebook,
    OperatorTable,
    bin_statistics,
    build_codebook,
    build_table,
    file_sha256,
)
from labpcu.data.codebook_io import (
    export_codebook,
    list_codebooks,
    load_codebook,
    save_hdf5,
    save_npz,
    save_to_store,
)
from labpcu.data.columns import Column
from labpcu.data.errors import SchemaError, StoreError
from labpcu.data.ideal import IDEAL_FUNCTIONS, derivative, evaluate, get_ideal
from labpcu.data.lookup import Lookup, WeightNoiseSampler, lookup
from labpcu.data.store import Store

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEVICES = ("U01", "U02")
REPEATS = 3
MUL_X1 = np.linspace(-1.0, 1.0, 5)
MUL_X2 = np.linspace(-1.0, 1.0, 3)
ACT_X = np.array([-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0])  # not uniform: the searchsorted path
SOFTMAX_BINS = np.linspace(0.0, 1.0, 11)


# ====================================================================== synthetic runs
def _columns(*inputs: str, extra: tuple[Column, ...] = ()) -> list[Column]:
    return [Column("device", dtype="str"), Column("repeat", dtype="int64"), Column("t", "s"),
            *(Column(n) for n in inputs), *extra, Column("y"), Column("y_ideal"), Column("energy", "J")]


def _write(store: Store, protocol: str, columns: list[Column], rows: dict[str, Any], results: dict[str, Any] | None,
           status: str = "completed") -> str:
    rec = store.begin_run(protocol, columns, devices=list(DEVICES), parameters={"temperature": 295.0},
                          bench={"simulated": True, "seed": 0, "name": "sim"})
    rec.append(rows)
    rec.finish(status, results=results)
    return rec.run_id


def _grid_rows(rng: np.random.Generator, *axes: np.ndarray) -> dict[str, np.ndarray]:
    """Every grid point, for every device and repeat (device-major, as a run records)."""
    mesh = [m.ravel() for m in np.meshgrid(*axes, indexing="ij")]
    per = len(mesh[0])
    n_dev, n_rep = len(DEVICES), REPEATS
    device = np.repeat(np.array(DEVICES, dtype=object), n_rep * per)
    repeat = np.tile(np.repeat(np.arange(n_rep), per), n_dev)
    xs = [np.tile(m, n_dev * n_rep) for m in mesh]
    gain = np.repeat([1.0, 1.05], n_rep * per)  # U02 reads 5 % high
    return {"device": device, "repeat": repeat, "t": np.arange(len(device)) * 1e-3, "xs": xs, "gain": gain,
            "noise": rng.standard_normal(len(device))}


def multiplier_spec() -> dict[str, Any]:
    return {"kind": "elementwise2d", "ideal": "multiply", "ideal_params": {}, "inputs": ["x1", "x2"],
            "output": "y", "ideal_column": "y_ideal", "grid": {"x1": MUL_X1, "x2": MUL_X2},
            "input_units": ["V", "V"], "output_unit": "A", "input_scale": [0.5, 0.5], "input_offset": [0.0, 0.1],
            "output_scale": 1e-6, "output_offset": 0.0, "clip": [[-1.0, 1.0], [-1.0, 1.0]],
            "noise_scope": "per_call", "notes": "log-domain multiplier, 3 PCUs"}


def activation_spec(function: str) -> dict[str, Any]:
    return {"kind": "elementwise1d", "ideal": function, "ideal_params": {"k": 1.702} if function == "gelu" else {},
            "inputs": ["x"], "output": "y", "ideal_column": "y_ideal", "grid": {"x": ACT_X},
            "where": {"function": function}, "input_units": ["V"], "output_unit": "A", "input_scale": [0.25],
            "input_offset": [0.0], "output_scale": 1e-5, "output_offset": 0.0, "clip": [[-4.0, 4.0]],
            "noise_scope": "per_call", "notes": ""}


def softmax_spec() -> dict[str, Any]:
    return {"kind": "vector", "ideal": "softmax", "ideal_params": {}, "inputs": ["x"], "output": "y",
            "ideal_column": "y_ideal", "grid": {"y_ideal": SOFTMAX_BINS}, "input_units": ["V"], "output_unit": "A",
            "input_scale": [1.0], "input_offset": [0.0], "output_scale": 1e-6, "output_offset": 0.0,
            "noise_scope": "per_call", "notes": "transfer curve over the ideal output"}


def write_multiplier(store: Store, rng: np.random.Generator, status: str = "completed",
                     results: bool = True) -> str:
    r = _grid_rows(rng, MUL_X1, MUL_X2)
    x1, x2 = r["xs"]
    ideal = x1 * x2
    rows = {"device": r["device"], "repeat": r["repeat"], "t": r["t"], "x1": x1, "x2": x2,
            "y": ideal * r["gain"] + 0.02 * r["noise"], "y_ideal": ideal, "energy": np.full(len(x1), 2e-12)}
    return _write(store, "multiplier", _columns("x1", "x2"), rows,
                  {"codebook": {"multiplier": multiplier_spec()}, "mean_relative_error": 0.06} if results else {},
                  status)


def write_activation(store: Store, rng: np.random.Generator) -> str:
    parts = []
    for function in ("sigmoid", "softplus"):
        r = _grid_rows(rng, ACT_X)
        (x,) = r["xs"]
        ideal = evaluate(function, x)
        parts.append({"device": r["device"], "repeat": r["repeat"], "t": r["t"], "x": x,
                      "function": np.array([function] * len(x), dtype=object),
                      "y": ideal * r["gain"] + 0.01 * r["noise"], "y_ideal": ideal, "energy": np.full(len(x), 1e-12)})
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cols = _columns("x", extra=(Column("function", dtype="str"),))
    return _write(store, "activation", cols, rows,
                  {"codebook": {f: activation_spec(f) for f in ("sigmoid", "softplus")}})


def write_softmax(store: Store, rng: np.random.Generator, n_vectors: int = 40, d: int = 4) -> str:
    n = n_vectors * d
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("device", "repeat", "t", "x", "vector", "element", "y",
                                                          "y_ideal", "energy")}
    for k, dev in enumerate(DEVICES):
        for rep in range(REPEATS):
            x = rng.normal(0.0, 1.5, (n_vectors, d))
            e = np.exp(x - x.max(axis=1, keepdims=True))
            ideal = (e / e.sum(axis=1, keepdims=True)).ravel()
            rows["device"].append(np.array([dev] * n, dtype=object))
            rows["repeat"].append(np.full(n, rep))
            rows["t"].append(np.arange(n) * 1e-3)
            rows["x"].append(x.ravel())
            rows["vector"].append(np.repeat(np.arange(n_vectors), d))
            rows["element"].append(np.tile(np.arange(d), n_vectors))
            rows["y"].append(ideal * (1.0 + 0.02 * rng.standard_normal(n)) + 0.01 * k)
            rows["y_ideal"].append(ideal)
            rows["energy"].append(np.full(n, 5e-12))
    cols = _columns("x", extra=(Column("vector", dtype="int64"), Column("element", dtype="int64")))
    return _write(store, "softmax", cols, {k: np.concatenate(v) for k, v in rows.items()},
                  {"codebook": {"softmax": softmax_spec()}})


def write_weights(store: Store, rng: np.random.Generator, sigma: float = 0.027) -> str:
    levels = 6
    fractions = np.linspace(0.1, 0.9, levels)
    rows: dict[str, list[Any]] = {k: [] for k in ("device", "repeat", "level", "fraction", "target", "achieved",
                                                   "final", "pulses", "status", "g_min", "g_max", "t")}
    for dev in DEVICES:
        g_min, g_max = 1e-6 * rng.uniform(1, 2), 1e-4 * rng.uniform(1, 2)
        for rep in range(4):
            target = g_min + fractions * (g_max - g_min)
            achieved = target + sigma * (g_max - g_min) * rng.standard_normal(levels)
            for key, value in (("device", np.array([dev] * levels, dtype=object)), ("repeat", np.full(levels, rep)),
                               ("level", np.arange(levels)), ("fraction", fractions), ("target", target),
                               ("achieved", achieved), ("final", achieved), ("pulses", np.full(levels, 5)),
                               ("status", np.array(["reached"] * levels, dtype=object)),
                               ("g_min", np.full(levels, g_min)), ("g_max", np.full(levels, g_max)),
                               ("t", np.arange(levels) * 10.0)):
                rows[key].append(value)
    data = {k: np.concatenate(v) for k, v in rows.items()}
    rel = (data["achieved"] - data["target"]) / (data["g_max"] - data["g_min"])
    cols = [Column("device", dtype="str"), Column("repeat", dtype="int64"), Column("level", dtype="int64"),
            Column("fraction"), Column("target", "S"), Column("achieved", "S"), Column("final", "S"),
            Column("pulses", dtype="int64"), Column("status", dtype="str"), Column("g_min", "S"),
            Column("g_max", "S"), Column("t", "s")]
    return _write(store, "weight_statistics", cols, data, {"sigma_rel_range": float(np.std(rel, ddof=1))})


def make_operator_store(path: Path, seed: int = 0) -> dict[str, str]:
    """A store with multiplier, activation (sigmoid, softplus), softmax and
    weight_statistics runs, plus runs a codebook must not use. Returns their ids."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    ids = {"multiplier": write_multiplier(store, rng), "activation": write_activation(store, rng),
           "softmax": write_softmax(store, rng), "weights": write_weights(store, rng)}
    rec = store.begin_run("iv_sweep", [Column("v", "V"), Column("i", "A")])
    rec.append({"v": np.arange(3.0), "i": np.arange(3.0) * 1e-6})
    rec.finish("completed")
    ids["iv"] = rec.run_id
    ids["aborted"] = write_multiplier(store, rng, status="aborted")
    ids["no_codebook"] = write_multiplier(store, rng, results=False)
    return ids


@pytest.fixture(scope="module")
def store_ids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("codebook") / "runs.h5"
    return path, make_operator_store(path)


@pytest.fixture(scope="module")
def codebook(store_ids: tuple[Path, dict[str, str]]) -> Codebook:
    path, _ = store_ids
    return build_codebook(path)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, f"not one line: {text!r}"
    return text


def table_1d(x: np.ndarray, y: np.ndarray, grid: np.ndarray, ideal: str = "identity", **spec: Any) -> OperatorTable:
    return build_table("op", {"kind": "elementwise1d", "ideal": ideal, "inputs": ["x"], "grid": {"x": grid}, **spec},
                       x, y, np.array(["U01"] * len(x), dtype=object), np.zeros(len(x), np.int64), np.zeros(len(x)))


# ====================================================================== building from the store
def test_default_build_takes_completed_operator_runs_and_the_weight_run(store_ids, codebook) -> None:
    path, ids = store_ids
    assert list(codebook.operators) == ["multiplier", "sigmoid", "softmax", "softplus"]
    assert {s["run_id"] for s in codebook.source_runs} == {ids["multiplier"], ids["activation"], ids["softmax"],
                                                          ids["weights"]}
    assert all(s["sha256"] == file_sha256(path) for s in codebook.source_runs)
    assert codebook.devices == DEVICES
    assert codebook.temperature == 295.0
    assert codebook.wafer == "simulated wafer, seed 0"
    mul = codebook["multiplier"]
    assert (mul.kind, mul.ideal, mul.inputs, mul.axis_names) == ("elementwise2d", "multiply", ("x1", "x2"), ("x1", "x2"))
    assert mul.input_units == ("V", "V") and mul.output_unit == "A" and mul.output_scale == 1e-6
    np.testing.assert_array_equal(mul.input_offset, [0.0, 0.1])
    np.testing.assert_array_equal(mul.clip, [[-1.0, 1.0], [-1.0, 1.0]])
    assert mul.devices == DEVICES and mul.n_devices == 2 and mul.n_repeats == REPEATS
    assert mul.energy_per_op == pytest.approx(2e-12)
    assert mul.source_run == ids["multiplier"] and mul.notes == "log-domain multiplier, 3 PCUs"
    assert codebook["sigmoid"].where == {"function": "sigmoid"}


def test_weight_noise_and_programming_table_from_the_weight_run(store_ids, codebook) -> None:
    path, ids = store_ids
    df = Store(path).read(ids["weights"])
    rel = (df["achieved"] - df["target"]) / (df["g_max"] - df["g_min"])
    wn = codebook.weight_noise
    assert wn.sigma == pytest.approx(np.std(rel, ddof=1)) and wn.source_run == ids["weights"]
    assert wn.reference.startswith("conductance range") and "normal" in wn.distribution
    assert wn.attempts == len(df) and wn.n_devices == 2
    prog = codebook.programming
    np.testing.assert_array_equal(prog.level, np.arange(6))
    frac = (df["achieved"] - df["g_min"]) / (df["g_max"] - df["g_min"])
    for k in range(6):
        sel = frac[df["level"] == k]
        assert prog.achieved_mean[k] == pytest.approx(sel.mean())
        assert prog.achieved_std[k] == pytest.approx(sel.std(ddof=1))
        assert prog.count[k] == len(sel)


def test_elementwise_binning_is_exact_and_stats_equal_numpy_per_bin(store_ids, codebook) -> None:
    path, ids = store_ids
    df = Store(path).read(ids["multiplier"])
    mul = codebook["multiplier"]
    assert mul.grid_shape == (5, 3)
    assert np.all(mul.count == len(DEVICES) * REPEATS)
    for i, x1 in enumerate(MUL_X1):
        for j, x2 in enumerate(MUL_X2):
            y = df["y"][(df["x1"] == x1) & (df["x2"] == x2)].to_numpy()
            assert mul.mean[i, j] == pytest.approx(y.mean(), abs=1e-15)
            assert mul.std[i, j] == pytest.approx(y.std(ddof=1), rel=1e-12)
            np.testing.assert_array_equal(mul.quantiles[i, j], np.quantile(y, QUANTILE_LEVELS))
            assert mul.ideal_values[i, j] == x1 * x2
    assert len(mul.samples) == len(df)
    np.testing.assert_array_equal(mul.samples.x, df[["x1", "x2"]].to_numpy())
    np.testing.assert_array_equal(mul.samples.device, df["device"].to_numpy().astype(str))
    np.testing.assert_array_equal(mul.samples.repeat, df["repeat"].to_numpy())
    np.testing.assert_array_equal(mul.samples.time, df["t"].to_numpy())


def test_where_selects_rows_of_one_function(store_ids, codebook) -> None:
    path, ids = store_ids
    df = Store(path).read(ids["activation"])
    sig = df[df["function"] == "sigmoid"]
    table = codebook["sigmoid"]
    assert table.count.sum() == len(sig)
    k = 3
    assert table.mean[k] == pytest.approx(sig["y"][sig["x"] == ACT_X[k]].mean())
    np.testing.assert_allclose(table.ideal_values, evaluate("sigmoid", ACT_X))


def test_vector_kind_is_a_transfer_curve_binned_on_the_ideal_output(store_ids, codebook) -> None:
    path, ids = store_ids
    df = Store(path).read(ids["softmax"])
    sm = codebook["softmax"]
    assert sm.is_transfer and sm.axis_names == ("y_ideal",)
    np.testing.assert_array_equal(sm.ideal_values, SOFTMAX_BINS)
    nearest = np.abs(df["y_ideal"].to_numpy()[:, None] - SOFTMAX_BINS[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(sm.count, np.bincount(nearest, minlength=len(SOFTMAX_BINS)))
    for k in np.flatnonzero(sm.count > 0):
        assert sm.mean[k] == pytest.approx(df["y"].to_numpy()[nearest == k].mean())
    np.testing.assert_array_equal(sm.samples.x[:, 0], df["y_ideal"].to_numpy())


def test_vmm_transfer_and_tile_size(tmp_path) -> None:
    rng = np.random.default_rng(5)
    centres = np.linspace(0.0, 1.0, 12)[1:-1]
    n = 300
    x = rng.uniform(0, 1, (n, 3))
    ideal = x.mean(axis=1)
    rows = {"device": np.array(["U01"] * n, dtype=object), "repeat": np.zeros(n, np.int64), "t": np.arange(n) * 1.0,
            "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": ideal * 0.98, "y_ideal": ideal, "energy": np.ones(n)}
    spec = {"kind": "vmm", "ideal": "identity", "inputs": ["y_ideal"], "grid": {"y_ideal": centres},
            "input_units": ["A"], "output_unit": "A", "input_scale": [1.0], "output_scale": 1.0, "clip": [[0.0, 1.0]]}
    store = Store(tmp_path / "runs.h5")
    run_id = _write(store, "vmm", _columns("x1", "x2", "x3"), rows,
                    {"codebook": {"vmm": spec}, "summary": {"tile_rows": 3}})
    cb = build_codebook(store.path)
    assert cb.tile_size == (3, 1) and cb["vmm"].tile_size == (3, 1) and cb["vmm"].source_run == run_id
    nearest = np.abs(ideal[:, None] - centres[None, :]).argmin(axis=1)
    want = [0.98 * ideal[nearest == k].mean() for k in range(len(centres))]
    np.testing.assert_allclose(lookup(cb["vmm"], centres), want, rtol=1e-12)
    assert load_codebook(save_hdf5(cb, tmp_path / "v.h5")).equals(cb)


def test_explicit_runs_and_their_refusals(store_ids) -> None:
    path, ids = store_ids
    cb = build_codebook(path, [ids["multiplier"]])
    assert list(cb.operators) == ["multiplier"] and cb.weight_noise is None
    for key, words in (("iv", "not an operator run"), ("aborted", "aborted, not completed"),
                       ("no_codebook", "no results['codebook']")):
        with pytest.raises(StoreError) as exc:
            build_codebook(path, [ids[key]])
        assert words in one_line(exc)
    with pytest.raises(StoreError) as exc:
        build_codebook(path, ["99999-multiplier"])
    assert "no run" in one_line(exc)
    with pytest.raises(StoreError) as exc:
        build_codebook(path.with_name("missing.h5"))
    assert "no run store" in one_line(exc)


def test_the_same_operator_from_two_runs_is_refused(tmp_path) -> None:
    rng = np.random.default_rng(1)
    store = Store(tmp_path / "runs.h5")
    a, b = write_multiplier(store, rng), write_multiplier(store, rng)
    with pytest.raises(StoreError) as exc:
        build_codebook(store.path, [a, b])
    assert "in both run" in one_line(exc)
    assert build_codebook(store.path)["multiplier"].source_run == b  # default: the newest wins


# ====================================================================== build_table directly
def test_off_grid_samples_are_refused_in_one_line() -> None:
    grid = np.linspace(0.0, 1.0, 5)
    x = np.array([0.0, 0.25, 0.25 + 1e-6])
    with pytest.raises(ValueError) as exc:
        table_1d(x, x, grid)
    text = one_line(exc)
    assert "off the grid" in text and "'op'" in text
    ok = table_1d(np.array([0.0, 0.25 + 1e-12]), np.array([1.0, 2.0]), grid)  # within 1e-9 of the span
    assert ok.count.tolist() == [1, 1, 0, 0, 0]


def test_bad_specs_are_one_line_errors() -> None:
    x = np.zeros(3)
    cases = [
        ({"kind": "cubic"}, "kind must be one of"),
        ({"ideal": "tanh"}, "unknown ideal function 'tanh'; known: multiply, divide"),
        ({"ideal_params": {"q": 1.0}, "ideal": "gelu"}, "has no parameter(s) q"),
        ({"grid": {"x": [0.0, 0.0, 1.0]}}, "strictly increasing"),
        ({"grid": {"mean": [0.0, 1.0]}}, "reserved"),
        ({"noise_scope": "sometimes"}, "noise_scope must be one of"),
        ({"input_scale": [1.0, 2.0]}, "input_scale needs 1 value"),
        ({"extrapolation": "linear"}, "only interpolation='linear'"),
    ]
    for change, words in cases:
        spec = {"kind": "elementwise1d", "ideal": "identity", "inputs": ["x"], "grid": {"x": [0.0, 1.0]}, **change}
        with pytest.raises(ValueError) as exc:
            build_table("op", spec, x, x)
        assert words in one_line(exc), (change, str(exc.value))
    with pytest.raises(ValueError) as exc:
        build_table("op", {"kind": "elementwise1d", "inputs": ["x"], "grid": {"x": [0.0, 1.0]}}, x, np.zeros(4))
    assert "different lengths" in one_line(exc)


def test_empty_grid_points_are_interpolated_and_marked_by_count() -> None:
    grid = np.linspace(0.0, 4.0, 5)
    x = np.array([0.0, 0.0, 4.0, 4.0, 1.0, 1.0])
    y = np.array([0.0, 0.2, 4.0, 4.2, 1.0, 1.2])
    t = table_1d(x, y, grid)
    assert t.count.tolist() == [2, 2, 0, 0, 2]
    np.testing.assert_allclose(t.mean, [0.1, 1.1, 2.1, 3.1, 4.1])
    assert np.all(np.diff(t.quantiles, axis=-1) >= 0)
    grid2 = {"a": np.arange(3.0), "b": np.arange(3.0)}
    xs = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]])
    t2 = build_table("m", {"kind": "elementwise2d", "ideal": "multiply", "inputs": ["a", "b"], "grid": grid2},
                     xs, xs[:, 0] + xs[:, 1])
    np.testing.assert_allclose(t2.mean, np.add.outer(np.arange(3.0), np.arange(3.0)))
    assert t2.count.sum() == 4


def test_device_ids_from_strings_or_a_categorical() -> None:
    import pandas as pd

    grid = np.array([0.0, 1.0])
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.0])
    ids = ["U02", "U02", "U10", "U10", "U02"]
    spec = {"kind": "elementwise1d", "inputs": ["x"], "grid": {"x": grid}}
    for device in (np.array(ids, dtype=object), np.array(ids), pd.Categorical(ids, categories=["U99", "U10", "U02"])):
        t = build_table("op", spec, x, x, device)
        assert t.devices == ("U02", "U10")
        np.testing.assert_array_equal(t.samples.device, ids)
    with pytest.raises(ValueError) as exc:
        build_table("op", spec, x, x, ids[:2])
    assert "one id per sample (5)" in one_line(exc)


def test_non_finite_outputs_are_dropped_and_counted() -> None:
    grid = np.array([0.0, 1.0])
    t = table_1d(np.array([0.0, 0.0, 1.0]), np.array([1.0, np.nan, 2.0]), grid)
    assert t.dropped == 1 and t.count.tolist() == [1, 1] and t.std.tolist() == [0.0, 0.0]


@HYPOTHESIS
@given(st.integers(1, 12), st.lists(st.integers(0, 30), min_size=1, max_size=12), st.integers(0, 2**32 - 1),
       st.sampled_from(["normal", "ties", "heavy"]))
def test_bin_quantiles_equal_numpy_and_are_monotone(n_bins: int, sizes: list[int], seed: int, shape: str) -> None:
    rng = np.random.default_rng(seed)
    sizes = (sizes * n_bins)[:n_bins]
    flat = np.repeat(np.arange(n_bins), sizes)
    rng.shuffle(flat)
    y = {"normal": rng.standard_normal(len(flat)), "ties": rng.integers(0, 3, len(flat)).astype(float),
         "heavy": rng.standard_cauchy(len(flat)) * 1e6}[shape]
    levels = np.asarray(QUANTILE_LEVELS)
    mean, std, count, q = bin_statistics(flat, y, n_bins, levels)
    assert np.all(np.diff(q[count > 0], axis=1) >= 0)
    for b in range(n_bins):
        yb = y[flat == b]
        assert count[b] == len(yb)
        if len(yb) == 0:
            assert np.isnan(q[b]).all()
            continue
        np.testing.assert_allclose(q[b], np.quantile(yb, levels), rtol=1e-12, atol=0)
        assert mean[b] == pytest.approx(yb.mean(), rel=1e-9, abs=1e-9 * max(1.0, np.abs(yb).max()))
        if len(yb) > 1:
            assert std[b] == pytest.approx(yb.std(ddof=1), rel=1e-7, abs=1e-12 * max(1.0, np.abs(yb).max()))


# ====================================================================== files
def test_hdf5_export_reads_with_plain_h5py(tmp_path, codebook) -> None:
    path = save_hdf5(codebook, tmp_path / "cb.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["schema"] == SCHEMA and f.attrs["schema_version"] == SCHEMA_VERSION == 3
        assert list(f.attrs["operators"]) == list(codebook.operators)
        assert list(f.attrs["devices"]) == list(DEVICES)
        assert json.loads(f.attrs["source_runs"])[0]["sha256"] == codebook.source_runs[0]["sha256"]
        assert f.attrs["temperature"] == 295.0
        g = f["operators/multiplier"]
        assert g.attrs["kind"] == "elementwise2d" and g.attrs["ideal"] == "multiply"
        assert json.loads(g.attrs["ideal_params"]) == {} and list(g.attrs["inputs"]) == ["x1", "x2"]
        assert list(g.attrs["input_units"]) == ["V", "V"] and g.attrs["noise_scope"] == "per_call"
        assert g.attrs["n_devices"] == 2 and g.attrs["n_repeats"] == REPEATS and g.attrs["noise_scale"] == 1.0
        np.testing.assert_array_equal(g.attrs["clip"], [[-1.0, 1.0], [-1.0, 1.0]])
        mul = codebook["multiplier"]
        np.testing.assert_array_equal(g["x1"][()], MUL_X1)
        np.testing.assert_array_equal(g["mean"][()], mul.mean)
        np.testing.assert_array_equal(g["quantiles"][()], mul.quantiles)
        np.testing.assert_array_equal(g["level"][()], QUANTILE_LEVELS)
        assert g["mean"].dims[0][0].name == g["x1"].name and g["mean"].dims[1][0].name == g["x2"].name
        assert g["quantiles"].dims[2][0].name == g["level"].name
        assert g["x1"].is_scale
        s = g["samples"]
        assert s["y"].compression == "gzip" and s["x"].shape == (len(mul.samples), 2)
        assert list(s["device"].asstr()[:3]) == ["U01"] * 3
        assert f["weight_noise"].attrs["sigma"] == codebook.weight_noise.sigma
        np.testing.assert_array_equal(f["programming/achieved_mean"][()], codebook.programming.achieved_mean)


def test_hdf5_export_opens_in_xarray(tmp_path, codebook) -> None:
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path = save_hdf5(codebook, tmp_path / "cb.h5")
    with xr.open_dataset(path, group="operators/multiplier", engine="h5netcdf") as ds:
        assert ds["mean"].dims == ("x1", "x2")
        assert ds["quantiles"].dims == ("x1", "x2", "level")
        np.testing.assert_array_equal(ds["x2"].values, MUL_X2)
        assert float(ds["mean"].sel(x1=1.0, x2=-1.0)) == codebook["multiplier"].mean[4, 0]


def assert_xarray_opens_every_group(path: Path) -> Any:
    """``xr.open_datatree(path, engine="h5netcdf")`` with warnings as errors: no phony
    dimension anywhere (every array has dimension scales). Returns the tree (closed)."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = xr.open_datatree(path, engine="h5netcdf").load()
    tree.close()
    for node in tree.subtree:
        assert not [d for d in node.dims if str(d).startswith("phony_dim")], node.path
    return tree


def to_version_1(path: Path) -> None:
    """Rewrite a version-2 file in the version-1 layout: no samples dimensions, no
    units attributes (other than mean's), programming units as one group attribute."""
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 1
        for op in f["operators"].values():
            for ds in op.values():
                if isinstance(ds, h5py.Dataset):
                    for key in ("units", "physical_units", "physical_scale", "physical_offset", "long_name"):
                        if key in ds.attrs:
                            del ds.attrs[key]
            op["mean"].attrs["units"] = op.attrs["output_unit"]
            if "samples" in op:
                s = op["samples"]
                for key in ("x", "y", "device", "repeat", "time"):
                    data = s[key][()]
                    del s[key]
                    s.create_dataset(key, data=data)
                    if key == "time":
                        s[key].attrs["units"] = "s"
                del s["sample"], s["input"]
        if "programming" in f:
            pg = f["programming"]
            del pg.attrs["description"]
            pg.attrs["units"] = "fractions of each device's range (G - G_min)/(G_max - G_min); conductances in S"
            for ds in pg.values():
                del ds.attrs["units"]


def test_hdf5_export_opens_whole_in_xarray_with_dimensions_and_units(tmp_path, codebook) -> None:
    path = save_hdf5(codebook, tmp_path / "cb.h5")
    tree = assert_xarray_opens_every_group(path)
    mul = tree["operators/multiplier"]
    assert mul["mean"].dims == ("x1", "x2") and mul["quantiles"].dims == ("x1", "x2", "level")
    # network units: physical = value * scale + offset
    assert mul["x2"].attrs["units"] == "1" and mul["x2"].attrs["physical_offset"] == 0.1  # offset: see physical_*
    assert mul["x1"].attrs["units"] == "0.5 V" and mul["x1"].attrs["physical_units"] == "V"
    assert mul["mean"].attrs["units"] == "1e-06 A" and mul["std"].attrs["physical_offset"] == 0.0
    assert mul["count"].attrs["units"] == "1" and mul["level"].attrs["units"] == "1"
    samples = tree["operators/multiplier/samples"].to_dataset(inherit=False)
    n = len(codebook["multiplier"].samples)
    assert dict(samples.sizes) == {"sample": n, "input": 2}
    assert samples["x"].dims == ("sample", "input") and list(samples["input"].values) == ["x1", "x2"]
    assert samples["y"].dims == samples["device"].dims == samples["time"].dims == ("sample",)
    assert samples["time"].attrs["units"] == "s" and samples["device"].values[0] == "U01"
    np.testing.assert_array_equal(samples["x"].values, codebook["multiplier"].samples.x)
    prog = tree["programming"]
    assert prog["achieved_conductance_mean"].dims == ("level",)
    assert prog["achieved_conductance_mean"].attrs["units"] == "S" and prog["achieved_mean"].attrs["units"] == "1"
    assert tree["weight_noise"].attrs["sigma"] == codebook.weight_noise.sigma
    assert tree.attrs["schema_version"] == SCHEMA_VERSION


def test_a_store_with_runs_and_a_codebook_opens_whole_in_xarray(tmp_path, store_ids, codebook) -> None:
    store_path = tmp_path / "runs.h5"
    store_path.write_bytes(store_ids[0].read_bytes())
    save_to_store(codebook, store_path, "first")
    tree = assert_xarray_opens_every_group(store_path)
    assert tree["codebooks/first/operators/softmax"]["mean"].dims == ("y_ideal",)
    results = tree[f"runs/{store_ids[1]['multiplier']}/results"]
    assert float(results["mean_relative_error"]) == 0.06  # a scalar result is a variable, not only an attribute
    assert results.attrs["mean_relative_error"] == 0.06
    spec = tree[f"runs/{store_ids[1]['multiplier']}/results/codebook/multiplier"]
    assert spec["clip"].dims == ("inputs", "n2_1") and list(spec["inputs"].values) == ["x1", "x2"]


def test_version_1_files_still_load(tmp_path, codebook) -> None:
    path = save_hdf5(codebook, tmp_path / "cb.h5")
    to_version_1(path)
    loaded = load_codebook(path)
    assert loaded.schema_version == 1
    loaded.schema_version = SCHEMA_VERSION
    assert loaded.equals(codebook)
    folder = tmp_path / "npz"
    manifest_path = save_npz(codebook, folder)
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 1
    manifest_path.write_text(json.dumps(manifest))
    assert load_codebook(folder).schema_version == 1
    # saved again, it is written in the current layout
    again = load_codebook(save_hdf5(loaded, tmp_path / "again.h5"))
    assert again.schema_version == SCHEMA_VERSION and again.equals(codebook)


def test_npz_export_reads_with_numpy_and_json_alone(tmp_path, codebook) -> None:
    manifest_path = save_npz(codebook, tmp_path / "cb")
    manifest = json.loads(manifest_path.read_text())  # strict JSON: no NaN
    assert manifest["schema"] == SCHEMA and manifest["schema_version"] == SCHEMA_VERSION
    entries = {e["name"]: e for e in manifest["operators"]}
    assert set(entries) == set(codebook.operators)
    for name, entry in entries.items():
        file = tmp_path / "cb" / entry["file"]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == entry["sha256"]
        table = codebook[name]
        with np.load(file, allow_pickle=False) as z:
            np.testing.assert_array_equal(z["mean"], table.mean)
            np.testing.assert_array_equal(z["quantiles"], table.quantiles)
            np.testing.assert_array_equal(z[table.axis_names[0]], table.axes[0])
            assert z["samples_device"].dtype.kind == "U"
            np.testing.assert_array_equal(z["samples_device"], table.samples.device)
            assert all(z[k].dtype != object for k in z.files)
        assert entry["attrs"]["kind"] == table.kind and entry["attrs"]["inputs"] == list(table.inputs)
    assert manifest["weight_noise"]["sigma"] == codebook.weight_noise.sigma
    assert manifest["operators"][0]["attrs"]["energy_per_op"] is not None


@pytest.mark.parametrize("form", ["hdf5", "npz", "store"])
def test_round_trip(tmp_path, store_ids, codebook, form) -> None:
    if form == "hdf5":
        loaded = load_codebook(save_hdf5(codebook, tmp_path / "cb.h5"))
    elif form == "npz":
        loaded = load_codebook(save_npz(codebook, tmp_path / "cb").parent)
    else:
        store_path = tmp_path / "runs.h5"
        store_path.write_bytes(store_ids[0].read_bytes())
        save_to_store(codebook, store_path, "first")
        save_to_store(codebook, store_path, "first")  # replaced, not doubled
        assert list_codebooks(store_path) == ["first"]
        loaded = load_codebook(store_path)
        assert Store(store_path).run_ids()  # the store still reads
    assert loaded.equals(codebook)
    assert loaded["multiplier"].samples.device_index.dtype == np.int32


def test_codebook_convenience_methods(tmp_path, store_ids) -> None:
    from labpcu.data.codebook_io import export_codebook, load_codebook
    from labpcu.data.lookup import Lookup

    cb = Codebook.from_store(store_ids[0], [store_ids[1]["softmax"]])
    assert list(cb) == ["softmax"] and len(cb) == 1
    (path,) = export_codebook(cb, tmp_path / "sm.h5")
    assert load_codebook(path).equals(cb)
    (folder,) = export_codebook(cb, tmp_path / "npz", format="npz")
    assert load_codebook(folder).equals(cb)
    assert Lookup(cb["softmax"])(np.array([0.5]))[0] == pytest.approx(cb["softmax"].mean[5])
    with pytest.raises(KeyError, match="no operator 'gelu' in the codebook; it has softmax"):
        cb["gelu"]


def test_codebook_without_samples_or_weights_round_trips(tmp_path) -> None:
    t = table_1d(np.array([0.0, 1.0]), np.array([0.5, 1.5]), np.array([0.0, 1.0]))
    t.samples = None
    cb = Codebook({"op": t})
    for loaded in (load_codebook(save_hdf5(cb, tmp_path / "a.h5")), load_codebook(save_npz(cb, tmp_path / "b"))):
        assert loaded.equals(cb) and loaded["op"].samples is None and loaded.weight_noise is None


def test_npz_sha256_mismatch_is_detected(tmp_path, codebook) -> None:
    manifest_path = save_npz(codebook, tmp_path / "cb")
    file = tmp_path / "cb" / json.loads(manifest_path.read_text())["operators"][0]["file"]
    data = bytearray(file.read_bytes())
    data[-10] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(StoreError) as exc:
        load_codebook(tmp_path / "cb")
    assert "sha256" in one_line(exc) and file.name in str(exc.value)


def test_schema_version_mismatch_names_both_versions(tmp_path, codebook) -> None:
    path = save_hdf5(codebook, tmp_path / "cb.h5")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 7
    with pytest.raises(SchemaError) as exc:
        load_codebook(path)
    text = one_line(exc)
    assert "schema version 7" in text and "reads versions 1, 2, 3" in text
    folder = tmp_path / "npz"
    manifest_path = save_npz(codebook, folder)
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 4
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SchemaError) as exc:
        load_codebook(folder)
    assert "schema version 4" in one_line(exc)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["schema"] = "something"
    with pytest.raises(SchemaError) as exc:
        load_codebook(tmp_path / "other.h5")
    assert "not a labpcu codebook" in one_line(exc)


def test_load_refusals(tmp_path, store_ids) -> None:
    with pytest.raises(StoreError) as exc:
        load_codebook(tmp_path / "none.h5")
    assert "no codebook" in one_line(exc)
    with pytest.raises(StoreError) as exc:
        load_codebook(store_ids[0])  # a store without codebooks
    assert "holds 0 codebooks" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        export_codebook(Codebook({}), tmp_path / "x.h5", format="both")
    assert "give a folder" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        export_codebook(Codebook({}), tmp_path, format="zip")
    assert "format must be one of" in one_line(exc)


# ====================================================================== lookup
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lookup_at_grid_points_returns_the_stored_mean(codebook, dtype) -> None:
    for name in ("sigmoid", "softmax"):  # non-uniform and uniform axes
        t = codebook[name]
        out = Lookup(t)(t.axes[0].astype(dtype))
        assert out.dtype == dtype
        np.testing.assert_allclose(out, t.mean, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=1e-15)
    mul = codebook["multiplier"]
    a, b = np.meshgrid(*mul.axes, indexing="ij")
    out = lookup(mul, a.astype(dtype), b.astype(dtype))
    np.testing.assert_allclose(out, mul.mean, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=1e-7)


def test_lookup_interpolates_linearly_and_bilinearly_and_clips(codebook) -> None:
    t = codebook["sigmoid"]
    mid = (t.axes[0][:-1] + t.axes[0][1:]) / 2
    np.testing.assert_allclose(lookup(t, mid), (t.mean[:-1] + t.mean[1:]) / 2, rtol=1e-12)
    np.testing.assert_array_equal(lookup(t, np.array([-100.0, 100.0])), t.mean[[0, -1]])
    mul = codebook["multiplier"]
    m1 = (mul.axes[0][:-1] + mul.axes[0][1:]) / 2
    m2 = (mul.axes[1][:-1] + mul.axes[1][1:]) / 2
    a, b = np.meshgrid(m1, m2, indexing="ij")
    want = (mul.mean[:-1, :-1] + mul.mean[1:, :-1] + mul.mean[:-1, 1:] + mul.mean[1:, 1:]) / 4
    np.testing.assert_allclose(lookup(mul, a, b), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lookup(mul, 0.25, np.array([0.0, 0.5])), [  # broadcasting
        (mul.mean[2, 1] + mul.mean[3, 1]) / 2,
        (mul.mean[2, 1] + mul.mean[3, 1] + mul.mean[2, 2] + mul.mean[3, 2]) / 4], rtol=1e-12)
    assert np.isnan(lookup(t, np.array([np.nan]))).all()
    np.testing.assert_allclose(lookup(t, np.full((2, 3), ACT_X[2])), np.full((2, 3), t.mean[2]))


def test_quantile_mode_samples_stay_within_the_quantile_range(codebook) -> None:
    mul = codebook["multiplier"]
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-1, 1, 20000), rng.uniform(-1, 1, 20000)
    out = Lookup(mul, mode="quantile", rng=4)(a, b)
    qmin, qmax = mul.quantiles[..., 0], mul.quantiles[..., -1]
    lo = lookup(_with_mean(mul, qmin), a, b)
    hi = lookup(_with_mean(mul, qmax), a, b)
    assert np.all(out >= lo - 1e-12) and np.all(out <= hi + 1e-12)
    assert out.min() >= qmin.min() and out.max() <= qmax.max()
    at_point = Lookup(mul, mode="quantile", rng=5)(np.full(40000, MUL_X1[4]), np.full(40000, MUL_X2[2]))
    q = mul.quantiles[4, 2]
    assert q[0] <= at_point.min() and at_point.max() <= q[-1]
    assert np.median(at_point) == pytest.approx(q[5], abs=0.02 * (q[-1] - q[0]))


def _with_mean(t: OperatorTable, mean: np.ndarray) -> OperatorTable:
    return dataclasses.replace(t, mean=mean)


def test_gaussian_mode_has_the_table_statistics(codebook) -> None:
    t = codebook["softplus"]
    x = np.full(200_000, ACT_X[6])
    for scale in (1.0, 2.5):
        out = Lookup(t, mode="gaussian", noise_scale=scale, rng=7)(x)
        assert out.mean() == pytest.approx(t.mean[6], abs=4 * scale * t.std[6] / math.sqrt(len(x)))
        assert out.std() == pytest.approx(scale * t.std[6], rel=0.01)
    same = [Lookup(t, mode="gaussian", rng=8)(x[:10]) for _ in range(2)]
    np.testing.assert_array_equal(*same)  # a seed reproduces
    g = Lookup(t, mode="gaussian", rng=9)
    assert not np.array_equal(g(x[:10]), g(x[:10]))  # per_call: new noise every call


def test_per_device_noise_is_kept_until_reprogram(codebook) -> None:
    t = _with_mean(codebook["softplus"], codebook["softplus"].mean)
    t.noise_scope = "per_device"
    for mode in ("gaussian", "quantile"):
        look = Lookup(t, mode=mode, rng=1)
        x = np.linspace(-3, 3, 50)
        first = look(x)
        np.testing.assert_array_equal(look(x), first)
        look.reprogram()
        assert not np.array_equal(look(x), first)


def test_lookup_refusals(codebook) -> None:
    with pytest.raises(ValueError) as exc:
        Lookup(codebook["sigmoid"], mode="median")
    assert "mode must be one of mean, gaussian, quantile" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        lookup(codebook["multiplier"], np.zeros(3))
    assert "takes 2 input array(s) (x1, x2)" in one_line(exc)


def test_weight_noise_is_drawn_once_and_kept_until_reprogram(codebook) -> None:
    w = np.random.default_rng(0).uniform(-1, 1, (400, 500))
    sampler = WeightNoiseSampler(codebook.weight_noise, rng=11)
    first = sampler(w)
    np.testing.assert_array_equal(sampler(w), first)
    assert (first - w).std() == pytest.approx(codebook.weight_noise.sigma, rel=0.02)
    other = sampler(w[:3], key="layer2")
    np.testing.assert_array_equal(sampler(w), first)  # another key leaves this one alone
    sampler.reprogram("layer2")
    assert not np.array_equal(sampler(w[:3], key="layer2"), other)
    sampler.reprogram()
    assert not np.array_equal(sampler(w), first)
    rel = WeightNoiseSampler(reference="max_abs", rng=1)(2 * w) - 2 * w
    assert rel.std() == pytest.approx(PAPER_WEIGHT_SIGMA * 2 * np.abs(w).max(), rel=0.02)
    assert sampler(w.astype(np.float32), key="f32").dtype == np.float32
    with pytest.raises(ValueError) as exc:
        sampler(w[:2])
    assert "changed shape" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        WeightNoiseSampler(reference="gmax")
    assert "reference must be" in one_line(exc)


# ====================================================================== ideal functions
@pytest.mark.parametrize("name", sorted(IDEAL_FUNCTIONS))
def test_ideal_derivatives_match_finite_differences(name: str) -> None:
    f = get_ideal(name)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-3, 3, 50) for _ in range(f.arity)]
    if name == "divide":
        xs[1] = rng.uniform(0.5, 3, 50) * rng.choice([-1, 1], 50)
    grads = derivative(name, *xs)
    assert len(grads) == f.arity
    h = 1e-6
    for j in range(f.arity):
        up = [x + h * (k == j) for k, x in enumerate(xs)]
        down = [x - h * (k == j) for k, x in enumerate(xs)]
        np.testing.assert_allclose(grads[j], (evaluate(name, *up) - evaluate(name, *down)) / (2 * h), rtol=1e-5,
                                   atol=1e-7)


def test_ideal_functions_are_stable_and_take_params() -> None:
    big = np.array([-800.0, 0.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_allclose(evaluate("softplus", big), [0.0, math.log(2), 800.0])
        np.testing.assert_allclose(evaluate("sigmoid", big), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(evaluate("gelu", 1.0), 1.0 / (1.0 + math.exp(-1.702)))
    np.testing.assert_allclose(evaluate("gelu", 1.0, params={"k": 1.0}), 1.0 / (1.0 + math.exp(-1.0)))
    np.testing.assert_allclose(evaluate("softplus", 1.0, params={"beta": 2.0}), math.log1p(math.exp(2.0)) / 2)
    assert evaluate("identity", np.float32(2.0)).dtype == np.float32
    with pytest.raises(ValueError) as exc:
        get_ideal("relu")
    assert one_line(exc) == ("unknown ideal function 'relu'; known: multiply, divide, softplus, sigmoid, gelu, exp, "
                             "identity")
    with pytest.raises(ValueError) as exc:
        evaluate("multiply", 1.0)
    assert "takes 2 input(s)" in one_line(exc)


def test_errors_summary_uses_the_papers_relative_error(codebook) -> None:
    mul = codebook["multiplier"]
    mean_abs, mean_rel = mul.errors()
    x, y = mul.samples.x, mul.samples.y
    ideal = x[:, 0] * x[:, 1]
    assert mean_abs == pytest.approx(np.abs(y - ideal).mean())
    nz = ideal != 0
    assert mean_rel == pytest.approx((np.abs(y - ideal)[nz] / np.abs(ideal[nz])).mean())
