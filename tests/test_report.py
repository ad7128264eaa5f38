"""The figures-of-merit report: bands as data, figures read from stored runs (results
made by the protocols' own ``analyze`` where the protocol exists, so the report reads
the real result keys), pass/fail at and around the band edges, the Markdown and HTML
outputs, the plots, and roles that were not measured."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from labpcu.bands import BANDS, POW10, Band, band, format_number
from labpcu.data.columns import Column
from labpcu.data.fits import shockley_current
from labpcu.data.store import Store
from labpcu.protocols.characterization import (
    Hysteresis,
    HysteresisParams,
    IVSweep,
    IVSweepParams,
    Retention,
    RetentionParams,
    half_cycle,
)
from labpcu.protocols.programming import Ispp, IsppParams, WeightParams, WeightStatistics
from labpcu.report import FigureRow, collect_figures, format_table, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BAND_KEYS = ("m2_on_off", "m2_retention_ratio", "m1_drift", "diode_rectification", "diode_fit_r2", "ispp_success",
             "weight_sigma", "vmm_error", "divider_error", "multiplier_error", "softmax_error", "softplus_r2",
             "sigmoid_r2", "sigmoid_b2b_k")


# ====================================================================== store helpers
def _dtype(values: np.ndarray) -> str:
    kind = values.dtype.kind
    return {"b": "bool", "i": "int64", "f": "float64"}.get(kind, "str")


def add_run(store: Store, protocol: str, data: pd.DataFrame, results: dict[str, Any],
            parameters: dict[str, Any] | None = None, status: str = "completed") -> str:
    """A finished run holding ``data`` (one column per DataFrame column) and ``results``."""
    arrays = {c: data[c].to_numpy() for c in data.columns}
    columns = [Column(c, "", _dtype(a)) for c, a in arrays.items()]
    devices = sorted({str(d) for d in arrays["device"]}) if "device" in arrays else []
    rec = store.begin_run(protocol, columns, parameters=parameters or {}, devices=devices)
    if len(data):
        rec.append({c: (a.astype(str) if _dtype(a) == "str" else a) for c, a in arrays.items()})
    rec.finish(status, results=results)
    return rec.run_id


def _frame(parts: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)


def params_dict(params: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(params).items()}


# ---------------------------------------------------------------------- per role
def diode_run(store: Store, resistor: bool = False, scatter: float = 0.0) -> str:
    """Two Shockley diodes (I0 1 pA, n 1.8, Rs 50 Ω); A2 may be a 10 kΩ resistor
    instead, and A3 a diode whose currents scatter by ``scatter`` decades (σ)."""
    v = np.linspace(-1.0, 1.0, 81)
    parts = []
    noise = 10 ** np.random.default_rng(5).normal(0.0, scatter, len(v))
    for dev in ("A1", "A2", "A3"):
        i = shockley_current(v, 1e-12, 1.8, 50.0) + v * 1e-13
        if resistor and dev == "A2":
            i = v / 1e4
        if dev == "A3":
            i = i * noise
        parts.append({"index": np.arange(len(v)), "branch": np.zeros(len(v), dtype=np.int64), "v_source": v, "v": v,
                      "i": i, "compliance": np.zeros(len(v), dtype=bool), "device": dev})
    df = _frame(parts)
    p = IVSweepParams(points=81)
    return add_run(store, "iv_sweep", df, IVSweep().analyze(df, p), params_dict(p))


def hysteresis_run(store: Store, g_lrs: float = 1e-3, g_hrs: float = 1e-10, v_read: float = 0.1) -> str:
    """Two devices, two cycles each; the set jumps at +0.5 V, the reset at −0.3 V."""
    parts = []
    up, down = half_cycle(1.0, 0.05), half_cycle(-0.6, 0.05)
    on_up = np.cumsum(up >= 0.5) > 0  # LRS from the jump on, back down too
    off_down = np.cumsum(down <= -0.3) > 0
    for dev in ("B1", "B2"):
        for cycle in (1, 2):
            for phase, v, i in (
                ("set", up, np.where(on_up, up * g_lrs, up * g_hrs)),
                ("read_set", np.array([v_read]), np.array([v_read * g_lrs])),
                ("reset", down, np.where(off_down, down * g_hrs, down * g_lrs)),
                ("read_reset", np.array([v_read]), np.array([v_read * g_hrs])),
            ):
                parts.append({"cycle": cycle, "phase": phase, "index": np.arange(len(v)), "v_source": v, "v": v,
                              "i": i, "compliance": np.zeros(len(v), dtype=bool), "device": dev})
    df = _frame(parts)
    p = HysteresisParams(cycles=2, v_read=v_read, step=0.05)
    return add_run(store, "hysteresis", df, Hysteresis().analyze(df, p), params_dict(p))


def retention_run(store: Store, component: str, states: dict[str, tuple[float, float]], duration: float | None = None,
                  g_end: dict[str, float] | None = None) -> str:
    """Devices read every 10 s: ``states`` maps device to (G0, ν) of G0·(1 + ν·log10(1 + t)).
    ``g_end`` overrides a device's last read (a state that flipped)."""
    p = RetentionParams(component=component, duration=duration)
    t = np.arange(0.0, p.read_duration + 5.0, 10.0)
    parts = []
    for dev, (g0, nu) in states.items():
        g = g0 * (1 + nu * np.log10(1 + t))
        if g_end and dev in g_end:
            g[-1] = g_end[dev]
        parts.append({"index": np.arange(len(t)), "t": t, "v": p.read_voltage, "i": g * p.read_voltage, "g": g,
                      "compliance": np.zeros(len(t), dtype=bool), "device": dev})
    df = _frame(parts)
    return add_run(store, "retention", df, Retention().analyze(df, p), params_dict(p))


def ispp_run(store: Store, attempts: int = 100, failures: int = 1, **scheme: float) -> str:
    """``attempts`` attempts of 3 pulses; the last ``failures`` of them hit the bound."""
    p = IsppParams(**scheme)
    parts = []
    for k in range(attempts):
        failed = k >= attempts - failures
        n = p.max_pulses + 1 if failed else 4
        g = np.linspace(10e-6, 50e-6, n)
        parts.append({"device": "C1", "attempt": k, "target": 50e-6, "pulse": np.arange(n), "amplitude": 0.2,
                      "current": g * 0.01, "conductance": g if not failed else g * 0.5,
                      "status": "max_pulses" if failed else "reached", "on_instrument": True,
                      "g_min": math.nan, "g_max": math.nan})
    df = _frame(parts)
    return add_run(store, "ispp", df, Ispp().analyze(df, p), params_dict(p))


def weight_run(store: Store, sigma: float) -> str:
    """60 programmed weights whose errors have exactly ``sigma`` (relative to the range)."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal(60)
    rel = (z - z.mean()) / np.std(z, ddof=1) * sigma
    g_min, g_max = 10e-6, 110e-6
    level = np.arange(60) % 6
    fraction = 0.1 + 0.8 * level / 5
    target = g_min + fraction * (g_max - g_min)
    df = pd.DataFrame({"device": np.where(np.arange(60) < 30, "D1", "D2"), "repeat": np.arange(60) // 6,
                       "level": level, "fraction": fraction, "target": target,
                       "achieved": target + rel * (g_max - g_min), "final": target, "pulses": np.full(60, 5),
                       "status": "reached", "g_min": g_min, "g_max": g_max, "t": np.arange(60.0)})
    p = WeightParams()
    return add_run(store, "weight_statistics", df, WeightStatistics().analyze(df, p), params_dict(p))


def _errors(n: int, rel: float) -> np.ndarray:
    """Relative deviations ±rel, alternating: their mean magnitude is exactly ``rel``."""
    return rel * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


def operator_run(store: Store, role: str, rel: float, energy: float = 2e-12, method: str = "") -> str:
    """An operator run in the columns the operator protocols record."""
    n = 40
    rng = np.random.default_rng(7)
    ideal = rng.uniform(0.5, 2.0, n)
    cols: dict[str, Any] = {"device": np.where(np.arange(n) < 20, "U1", "U2")}
    if role == "vmm":
        cols.update(x1=rng.uniform(size=n), x2=rng.uniform(size=n), x3=rng.uniform(size=n))
    elif role == "softmax":
        cols.update(x=rng.uniform(size=n), vector=np.arange(n) // 4, element=np.arange(n) % 4)
    else:
        cols.update(x1=rng.uniform(size=n), x2=rng.uniform(size=n))
    cols.update(y=ideal * (1 + _errors(n, rel)), y_ideal=ideal)
    summary: dict[str, Any] = {"mean_relative_error": rel, "energy_per_op": energy}
    if method:
        summary["method"] = method
    return add_run(store, role, pd.DataFrame(cols), {"summary": summary})


def activation_run(store: Store, softplus_r2: float = 0.998, sigmoid_r2: float = 0.995,
                   sigmoid_k: tuple[float, float] = (20.1, 22.4)) -> str:
    x = np.linspace(-3, 3, 31)
    parts = []
    for fn, ideal in (("softplus", np.log1p(np.exp(x))), ("sigmoid", 2 / (1 + np.exp(-x)) - 1),
                      ("gelu", x / (1 + np.exp(-1.702 * x)))):
        parts.append({"x": x, "function": fn, "y": ideal + 0.01, "y_ideal": ideal, "device": "E1"})
    summary = {"softplus_r2": softplus_r2, "sigmoid_r2": sigmoid_r2, "softplus_a": 1.1, "softplus_k": 2.5,
               "sigmoid_a": 0.9, "sigmoid_k": 4.0, "gelu_mean_abs_error": 0.012, "energy_per_op": 5e-13,
               "sigmoid_circuit": "diodes", "sigmoid_k_min": sigmoid_k[0], "sigmoid_k_max": sigmoid_k[1]}
    return add_run(store, "activation", _frame(parts), {"summary": summary})


#: operator errors inside their bands (fractions)
GOOD_ERRORS = {"vmm": 0.008, "multiplier": 0.066, "divider": 0.057, "softmax": 0.013}


def full_store(path: Path, errors: dict[str, float] | None = None, **kw: Any) -> tuple[Store, dict[str, Any]]:
    """A store with a run for every role, every figure in its band unless overridden."""
    store = Store(path)
    err = {**GOOD_ERRORS, **(errors or {})}
    runs: dict[str, Any] = {
        "diode": diode_run(store, resistor=kw.get("resistor", False), scatter=kw.get("scatter", 0.0)),
        "hysteresis": hysteresis_run(store, g_hrs=kw.get("g_hrs", 1e-10)),
        "m2_retention": retention_run(store, "m2", {"L1": (1e-3, 0.001), "H1": (1e-10, 0.0)}),
        "m1_retention": [retention_run(store, "m1", {"S1": (20e-6, kw.get("nu", 0.002)), "S2": (50e-6, 0.004)}),
                         retention_run(store, "m1", {"S3": (80e-6, 0.003)})],
        "ispp": ispp_run(store, failures=kw.get("ispp_failures", 1)),
        "weight_statistics": weight_run(store, kw.get("sigma", 0.027)),
        **{role: operator_run(store, role, rel) for role, rel in err.items()},
        "activation": activation_run(store, softplus_r2=kw.get("softplus_r2", 0.998),
                                     sigmoid_k=kw.get("sigmoid_k", (20.1, 22.4))),
    }
    return store, runs


def by_key(rows: list[FigureRow]) -> dict[str, FigureRow]:
    return {r.key: r for r in rows}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, Any]]:
    return full_store(tmp_path_factory.mktemp("good") / "wafer.h5")


# ====================================================================== bands
def test_bands_follow_pcu_md_order_and_limits() -> None:
    assert tuple(b.key for b in BANDS) == BAND_KEYS
    limits = {b.key: (b.lo, b.hi) for b in BANDS}
    assert limits["m2_on_off"] == (1e6, None)
    assert limits["weight_sigma"] == (0.020, 0.035)
    assert limits["vmm_error"] == (0.005, 0.011)
    assert limits["divider_error"] == (0.040, 0.075)
    assert limits["multiplier_error"] == (0.050, 0.085)
    assert limits["softmax_error"] == (0.009, 0.018)
    assert limits["m1_drift"] == (None, 0.02)
    assert limits["sigmoid_b2b_k"] == (15.0, 30.0)
    assert band("vmm_error").published == "0.78 %"
    assert band("weight_sigma").published == "σ = 0.027367"


@pytest.mark.parametrize(("key", "value", "inside"), [
    ("m2_on_off", 1e6, False),  # "> 10^6" excludes its limit
    ("m2_on_off", 1.000001e6, True),
    ("m2_on_off", math.inf, True),
    ("m2_on_off", math.nan, False),
    ("m1_drift", 0.02, False),
    ("m1_drift", 0.0199, True),
    ("ispp_success", 0.99, True),  # "≥ 99 %" includes it
    ("ispp_success", 0.9899, False),
    ("weight_sigma", 0.020, True),  # a range includes both ends
    ("weight_sigma", 0.035, True),
    ("weight_sigma", 0.0199, False),
    ("weight_sigma", 0.0351, False),
    ("diode_fit_r2", 0.99, False),
    ("vmm_error", 0.0078, True),
    ("vmm_error", 0.0111, False),
])
def test_band_contains_at_the_edges(key: str, value: float, inside: bool) -> None:
    assert band(key).contains(value) is inside


def test_band_text_and_format() -> None:
    assert band("m2_on_off").text == "> 10^6"
    assert band("m1_drift").text == "< 2 %"
    assert band("ispp_success").text == "≥ 99 %"
    assert band("vmm_error").text == "0.5 – 1.1 %"
    assert band("weight_sigma").text == "0.02 – 0.035"
    assert band("vmm_error").format(0.0078) == "0.78 %"
    assert band("m2_on_off").format(3.2e7) == "3.2 × 10^7"
    assert format_number(math.nan, ".3g", "%") == "n/a"
    assert format_number(9.9999e5, POW10) == "10^6"


def test_band_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="needs lo, hi or both"):
        Band("x", "x", "", None, None)
    with pytest.raises(ValueError, match="must be below"):
        Band("x", "x", "", 2.0, 1.0)
    with pytest.raises(KeyError, match="no band 'nope'"):
        band("nope")


# ====================================================================== figures
def test_every_figure_in_band_passes(good: tuple[Store, dict[str, Any]]) -> None:
    store, runs = good
    rows = by_key(collect_figures(store, runs))
    for key in BAND_KEYS:
        assert rows[key].passed is True, (key, rows[key].measured_text, rows[key].note)
    hyst = store.results(runs["hysteresis"])
    assert rows["m2_on_off"].measured == pytest.approx(hyst["summary"]["on_off_min"])
    assert rows["m2_on_off"].measured == pytest.approx(1e7)
    iv = store.results(runs["diode"])["summary"]
    assert rows["diode_rectification"].measured == iv["rectification_min"]
    assert rows["diode_fit_r2"].measured == iv["r2_min"]
    assert rows["ispp_success"].measured == pytest.approx(0.99)
    assert rows["weight_sigma"].measured == pytest.approx(0.027)
    assert rows["vmm_error"].measured == pytest.approx(0.008)
    assert rows["vmm_error"].measured_text == "0.8 %"
    assert rows["softplus_r2"].measured == pytest.approx(0.998)
    # M2: weakest LRS at its last read over the HRS device's last read
    lrs_end = 1e-3 * (1 + 0.001 * math.log10(1001))
    assert rows["m2_retention_ratio"].measured == pytest.approx(lrs_end / 1e-10)
    # M1: the worst of the three states (S2, ν = 0.004) of two runs
    worst = max(abs(d["drift"]) for rid in runs["m1_retention"] for d in store.results(rid)["devices"].values())
    assert rows["m1_drift"].measured == pytest.approx(worst)
    assert rows["m1_drift"].measured == pytest.approx(0.004 * math.log10(601), rel=1e-3)
    assert "S2" in rows["m1_drift"].note and rows["m1_drift"].run_id == ", ".join(runs["m1_retention"])


def test_informational_rows(good: tuple[Store, dict[str, Any]]) -> None:
    store, runs = good
    rows = by_key(collect_figures(store, runs))
    assert rows["vmm_energy_per_op"].measured == pytest.approx(2e-12)
    assert rows["vmm_energy_per_op"].measured_text == "2 pJ"
    assert rows["activation_energy_per_op"].measured_text == "500 fJ"
    assert rows["softplus_k"].measured == pytest.approx(2.5)
    assert rows["sigmoid_a"].measured_text == "0.9"
    assert rows["gelu_mean_abs_error"].measured == pytest.approx(0.012)
    for key in ("vmm_energy_per_op", "softplus_a", "gelu_mean_abs_error"):
        assert rows[key].passed is None and rows[key].band_text == ""


def test_figures_outside_their_bands_fail(tmp_path: Path) -> None:
    store, runs = full_store(tmp_path / "bad.h5", errors={"vmm": 0.02, "softmax": 0.0085, "divider": 0.08},
                             g_hrs=1e-8, nu=0.01, ispp_failures=2, sigma=0.04, softplus_r2=0.98, resistor=True,
                             scatter=0.5)
    rows = by_key(collect_figures(store, runs))
    failing = {"m2_on_off", "m1_drift", "diode_rectification", "diode_fit_r2", "ispp_success", "weight_sigma",
               "vmm_error", "divider_error", "softmax_error", "softplus_r2"}
    for key in BAND_KEYS:
        assert rows[key].passed is (key not in failing), (key, rows[key].measured_text, rows[key].note)
    assert rows["m2_on_off"].measured == pytest.approx(1e5)
    assert rows["ispp_success"].measured == pytest.approx(0.98)
    assert rows["m1_drift"].measured == pytest.approx(0.01 * math.log10(601), rel=1e-3)
    assert "worst A2" in rows["diode_rectification"].note  # the resistor is the worst "diode"
    assert rows["diode_rectification"].measured == pytest.approx(1.0)
    assert "worst A3" in rows["diode_fit_r2"].note  # the scattered one
    assert rows["diode_fit_r2"].measured == min(d["r2"] for d in store.results(runs["diode"])["devices"].values())


def test_missing_roles_are_not_measured(tmp_path: Path) -> None:
    store = Store(tmp_path / "part.h5")
    runs = {"vmm": operator_run(store, "vmm", 0.007), "m1_retention": []}
    rows = by_key(collect_figures(store, runs))
    assert rows["vmm_error"].passed is True
    for key in ("m2_on_off", "m1_drift", "softmax_error", "sigmoid_r2"):
        row = rows[key]
        assert (row.measured_text, row.passed, row.run_id) == ("not measured", None, "")
        assert math.isnan(row.measured)
    assert rows["softmax_energy_per_op"].measured_text == "not measured"
    paths = write_report(store, runs, tmp_path / "out")
    assert paths.all_passed is True  # over what was measured
    assert {p.name for p in paths.pngs} == {"vmm_measured_vs_ideal.png", "vmm_relative_error.png"}
    assert "| Softmax average relative error (10 units) | 1.31 % | 0.9 – 1.8 % | not measured | not measured |" \
        in paths.markdown.read_text(encoding="utf-8")


def test_nothing_measured_is_not_a_pass(tmp_path: Path) -> None:
    paths = write_report(Store(tmp_path / "empty.h5"), {}, tmp_path / "out")
    assert paths.all_passed is False
    assert paths.pngs == []
    assert all(r.passed is None for r in paths.rows)


def test_definition_not_met_fails(tmp_path: Path) -> None:
    """Values in band, but a 300 s M1 retention, an M2 LRS that flipped, a non-paper
    ISPP scheme and a hysteresis read at +0.2 V do not meet pcu.md's definitions."""
    store = Store(tmp_path / "def.h5")
    runs = {
        "m1_retention": retention_run(store, "m1", {"S1": (20e-6, 0.001)}, duration=300.0),
        "m2_retention": retention_run(store, "m2", {"L1": (1e-3, 0.0), "H1": (1e-10, 0.0)}, g_end={"L1": 1e-4 * 0.5}),
        "ispp": ispp_run(store, failures=0, v_start=0.3),
        "hysteresis": hysteresis_run(store, v_read=0.2),
    }
    rows = by_key(collect_figures(store, runs))
    assert band("m1_drift").contains(rows["m1_drift"].measured)
    assert rows["m1_drift"].passed is False and "300 s, not 600 s" in rows["m1_drift"].note
    assert rows["m2_retention_ratio"].passed is False and "left the LRS" in rows["m2_retention_ratio"].note
    assert rows["ispp_success"].measured == 1.0 and rows["ispp_success"].passed is False
    assert "v_start = 0.3" in rows["ispp_success"].note
    assert rows["m2_on_off"].passed is False and "not +0.1 V" in rows["m2_on_off"].note


def test_m2_retention_takes_the_hrs_from_hysteresis(tmp_path: Path) -> None:
    store = Store(tmp_path / "m2.h5")
    runs = {"m2_retention": retention_run(store, "m2", {"L1": (2e-3, 0.0)}),
            "hysteresis": hysteresis_run(store, g_hrs=1e-9)}
    row = by_key(collect_figures(store, runs))["m2_retention_ratio"]
    assert row.measured == pytest.approx(2e-3 / 1e-9)
    assert row.passed is True
    assert runs["hysteresis"] in row.run_id and "hysteresis" in row.note
    alone = by_key(collect_figures(store, {"m2_retention": runs["m2_retention"]}))["m2_retention_ratio"]
    assert (alone.measured_text, alone.passed) == ("no value", False)
    assert "no hysteresis run" in alone.note


def test_unusable_runs_fail_with_a_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "odd.h5")
    hyst = hysteresis_run(store)
    empty_vmm = add_run(store, "vmm", pd.DataFrame({"y": [1.0], "y_ideal": [1.0], "device": ["U1"]}),
                        {"summary": {"energy_per_op": 1e-12}})
    aborted = operator_run(store, "softmax", 0.012)
    store.write_results(aborted, {"summary": {"mean_relative_error": 0.012}})
    runs = {"diode": hyst, "vmm": empty_vmm, "divider": "99999-nope", "hysteresis": hyst}
    rows = by_key(collect_figures(store, runs))
    assert rows["diode_rectification"].passed is False
    assert "is a hysteresis run; role diode needs iv_sweep" in rows["diode_rectification"].note
    assert rows["vmm_error"].measured_text == "no value" and "summary.mean_relative_error" in rows["vmm_error"].note
    assert rows["divider_error"].passed is False and "99999-nope" in rows["divider_error"].note
    assert rows["m2_on_off"].passed is True


def test_a_run_not_completed_fails(tmp_path: Path) -> None:
    store = Store(tmp_path / "ab.h5")
    rid = add_run(store, "vmm", pd.DataFrame({"y": [1.0], "y_ideal": [1.0], "device": ["U1"]}),
                  {"summary": {"mean_relative_error": 0.008}}, status="aborted")
    row = by_key(collect_figures(store, {"vmm": rid}))["vmm_error"]
    assert row.measured == pytest.approx(0.008)
    assert row.passed is False and "aborted" in row.note


def test_bad_run_mappings_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.h5")
    with pytest.raises(ValueError, match="unknown role 'vmn'"):
        collect_figures(store, {"vmn": "1"})
    with pytest.raises(ValueError, match="role 'vmm' takes one run id, got 2"):
        collect_figures(store, {"vmm": ["1", "2"]})
    with pytest.raises(ValueError, match="non-empty strings"):
        collect_figures(store, {"vmm": [3]})  # type: ignore[list-item]


# ====================================================================== outputs
@pytest.fixture(scope="module")
def written(good: tuple[Store, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    store, runs = good
    return write_report(store, runs, tmp_path_factory.mktemp("report") / "out", title="Wafer <7> & co", seed=0)


def _md_rows(text: str, first: str = "| figure") -> dict[str, list[str]]:
    """The rows of the Markdown table whose header starts with ``first``, by their
    first cell (the figures table by default; the energy section has its own)."""
    out: dict[str, list[str]] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith(first):
            inside = True
        elif inside and not line.startswith("|"):
            break
        elif inside and line.startswith("| "):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[cells[0]] = cells
    return out


def test_markdown_table(written: Any, good: tuple[Store, dict[str, Any]]) -> None:
    text = written.markdown.read_text(encoding="utf-8")
    assert text.startswith("# Wafer <7> & co\n")
    assert "wafer seed: 0" in text
    table = _md_rows(text)
    rows = by_key(written.rows)
    assert len(table) == len(written.rows)
    for key in BAND_KEYS:
        r = rows[key]
        assert table[r.label] == [r.label, r.published, r.band_text, r.measured_text, "pass"]
    assert table["VMM average relative error (1×3 · 3×1000)"] == [
        "VMM average relative error (1×3 · 3×1000)", "0.78 %", "0.5 – 1.1 %", "0.8 %", "pass"]
    assert table["VMM energy per operation"][2:] == ["—", "2 pJ", "—"]
    for png in written.pngs:
        assert f"]({png.name})" in text
    assert "## How each figure was computed" in text and "summary.on_off_min" in text
    assert written.all_passed is True and "**PASS" in text


def test_markdown_marks_failures(tmp_path: Path) -> None:
    store = Store(tmp_path / "f.h5")
    runs = {"multiplier": operator_run(store, "multiplier", 0.09, method="mean over | 10 units")}
    paths = write_report(store, runs, tmp_path / "out")
    text = paths.markdown.read_text(encoding="utf-8")
    cells = _md_rows(text)["Multiplier average relative error (10 units)"]
    assert cells[3:] == ["9 %", "**FAIL**"]
    assert paths.all_passed is False and "**FAIL" in text


def test_html_escapes_and_colours(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.h5")
    evil = '<script>alert("x")</script> & co'
    runs = {"softmax": operator_run(store, "softmax", 0.013, method=evil),
            "divider": operator_run(store, "divider", 0.2)}
    paths = write_report(store, runs, tmp_path / "out", title="<b>PCU</b> & friends")
    page = paths.html.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>PCU</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
    assert "<title>&lt;b&gt;PCU&lt;/b&gt; &amp; friends</title>" in page
    assert '<td class="pass">pass</td>' in page and '<td class="fail">FAIL</td>' in page
    assert page.count("<img ") == len(paths.pngs) == 4
    # self-contained: every image is embedded, and nothing refers to another file
    refs = re.findall(r"""(?:src|href|data|poster)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    refs += re.findall(r"url\(([^)]*)\)", page) + re.findall(r"@import", page)
    assert len(refs) == 4 and all(r.startswith("data:image/png;base64,") for r in refs), refs
    for png in paths.pngs:
        assert png.name not in page
        assert f'<img src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in page
    assert "http" not in page.replace('lang="en"', "")  # nothing fetched from elsewhere


def test_plots_are_pngs(written: Any) -> None:
    names = {p.name for p in written.pngs}
    expected = {"diode_iv.png", "m2_hysteresis.png", "m1_retention.png", "m2_retention.png", "ispp_pulses.png",
                "weight_errors.png", "activation.png",
                *(f"{op}_{kind}.png" for op in GOOD_ERRORS for kind in ("measured_vs_ideal", "relative_error"))}
    assert names == expected
    assert written.skipped_plots == []
    for png in written.pngs:
        assert png.parent == written.markdown.parent
        assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 1000


def test_a_plot_that_cannot_be_drawn_is_skipped(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.h5")
    rid = add_run(store, "vmm", pd.DataFrame({"out": [1.0], "device": ["U1"]}),
                  {"summary": {"mean_relative_error": 0.008}})
    paths = write_report(store, {"vmm": rid}, tmp_path / "out")
    assert paths.pngs == []
    assert any(s.startswith("vmm_measured_vs_ideal.png: ") and "no column 'y'" in s for s in paths.skipped_plots)
    assert "Plots not drawn" in paths.markdown.read_text(encoding="utf-8")
    assert by_key(paths.rows)["vmm_error"].passed is True


def test_format_table_is_aligned(written: Any) -> None:
    text = format_table(written.rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(written.rows)
    head = lines[0]
    starts = [head.index(h) for h in ("published", "band", "measured", "result")]
    for row, line in zip(written.rows, lines[2:]):
        assert line.startswith(row.label)
        assert line[starts[0]:].startswith(row.published)
        assert line[starts[1]:].startswith(row.band_text or "—")
        assert line[starts[2]:].startswith(row.measured_text)
        assert line[starts[3]:].startswith(row.verdict)


@pytest.mark.parametrize(("ks", "shown", "passed"), [((20.1, 22.4), 20.1, True), ((14.2, 21.0), 14.2, False),
                                                      ((21.0, 31.5), 31.5, False)])
def test_back_to_back_k_band_judges_the_unit_farthest_out(tmp_path, ks, shown, passed) -> None:
    store, runs = full_store(tmp_path / "wafer.h5", sigmoid_k=ks)
    row = by_key(collect_figures(store, runs))["sigmoid_b2b_k"]
    assert row.measured == pytest.approx(shown) and row.passed is passed


# ====================================================================== VMM weights, energy (issue 15)
def vmm_weight_run(store: Store) -> str:
    """A vmm run whose summary states the effective-weight, uncalibrated and
    quantization figures as the vmm protocol's analysis does."""
    n = 20
    rng = np.random.default_rng(3)
    ideal = rng.uniform(0.5, 1.0, n)
    data = pd.DataFrame({"device": "crossbar", "x1": rng.uniform(size=n), "x2": rng.uniform(size=n),
                         "x3": rng.uniform(size=n), "y": ideal * (1 + _errors(n, 0.008)), "y_ideal": ideal})
    summary = {"mean_relative_error": 0.008, "energy_per_op": 3e-8, "tile_rows": 3, "input_bits": 5, "v_read": 0.55,
               "effective_weight_error_mean": 0.42, "effective_weight_error_min": 0.03,
               "effective_weight_error_max": 1.3, "effective_weight_levels": 6, "column_weight_error_mean": 0.2,
               "column_weight_error_max": 0.39, "mean_relative_error_uncalibrated": 0.033,
               "mean_relative_error_5bit": 0.0075, "mean_relative_error_6bit": 0.004,
               "mean_relative_error_quantized_ideal": 0.0008, "compare_vectors": 200}
    return add_run(store, "vmm", data, {"summary": summary}, parameters={"op_time": 0.02})


def test_vmm_weight_and_quantization_rows_state_the_measured_figures(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.h5")
    rows = by_key(collect_figures(store, {"vmm": vmm_weight_run(store)}))
    ew = rows["vmm_effective_weight_error"]
    assert ew.measured == pytest.approx(0.42) and ew.measured_text == "42 %" and ew.passed is None
    assert "3 % – 130 %" in ew.note and "max 39 %" in ew.note and "0.55 V" in ew.note
    assert rows["vmm_error_uncalibrated"].measured == pytest.approx(0.033)
    q = rows["vmm_error_6bit"]
    assert q.measured == pytest.approx(0.004) and "0.75 % at 5 bits" in q.note
    assert "set by the 5-bit input quantization" in q.note


def test_the_quantization_claim_needs_the_measurement_to_hold(tmp_path: Path) -> None:
    """When the analog error is not small next to the total, the note does not claim it."""
    store = Store(tmp_path / "v.h5")
    rid = vmm_weight_run(store)
    results = store.results(rid)
    results["summary"]["mean_relative_error_quantized_ideal"] = 0.006
    store.write_results(rid, results)
    q = by_key(collect_figures(store, {"vmm": rid}))["vmm_error_6bit"]
    assert "set by" not in q.note


def test_vmm_rows_without_the_new_results_say_what_is_missing(good: tuple[Store, dict[str, Any]]) -> None:
    store, runs = good
    row = by_key(collect_figures(store, runs))["vmm_effective_weight_error"]
    assert row.measured_text == "no value" and "effective_weight_error_mean" in row.note


def test_energy_section_rebuilds_a_block_from_measured_energies(tmp_path: Path) -> None:
    from labpcu.energy import BlockDims
    from labpcu.units import format_quantity

    store, runs = full_store(tmp_path / "e.h5")
    runs["vmm"] = vmm_weight_run(store)  # 30 nJ per 1×3 dot product
    paths = write_report(store, runs, tmp_path / "out")
    (sec,) = paths.sections
    d = BlockDims()
    n, w, h, f = d.tokens, d.width, d.heads, d.ffn
    # the synthetic runs: 2 pJ per multiply, divide and softmax vector (length 4), 0.5 pJ per activation
    want = ((4 * n * w * w + 2 * n * w * f) / 3 * 3e-8 + 2 * n * n * w * 2e-12 + h * n * n / 4 * 2e-12
            + n * f * 0.5e-12 + 2 * n * w * 2e-12)
    table = {row[0]: row for row in sec.table}
    assert table["total per block (estimate)"][-1] == format_quantity(want, "J", 3)
    assert table["paper: PCU"][-1] == "90 µJ" and table["paper: GPU"][-1] == "5.37 mJ"
    text = " ".join(sec.paragraphs)
    assert "per execution of a whole Transformer block" in text and "not in pcu.md" in text
    assert "device energies of one scalar operation" in text and "20 ms" in text
    power_time = want / 0.02  # every synthetic run's op_time is 20 ms
    assert format_quantity(90e-6 / power_time, "s", 3) in text
    md = paths.markdown.read_text(encoding="utf-8")
    assert "## Energy" in md and _md_rows(md, "| operation")["paper: memristive MAC accelerator"][-1] == "320 µJ"
    assert "<h2>Energy</h2>" in paths.html.read_text(encoding="utf-8")


def test_energy_section_without_every_operator_has_no_total(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.h5")
    paths = write_report(store, {"vmm": vmm_weight_run(store)}, tmp_path / "out")
    (sec,) = paths.sections
    table = {row[0]: row for row in sec.table}
    assert table["total per block (estimate)"][-1] == "incomplete"
    assert "no energy was measured for activation, divider, multiplier, softmax" in " ".join(sec.paragraphs)
    assert write_report(Store(tmp_path / "none.h5"), {}, tmp_path / "none").sections == []


def test_yield_row_gives_the_screening_counts_and_a_yield_map(tmp_path: Path) -> None:
    from labpcu.bench import Bench
    from labpcu.runner import Runner

    with Bench.from_file(seed=1) as bench:  # seed 1 draws S18 open
        out = Runner(bench, tmp_path / "w.h5", handle_sigint=False).run("screen", {}, ["S17", "S18", "S19", "S20"])
    store = Store(tmp_path / "w.h5")
    report = write_report(store, {"screen": out.run_id}, tmp_path / "report")
    (row,) = [r for r in report.rows if r.key == "screen_yield"]
    assert row.measured == pytest.approx(0.75) and row.passed is None  # reported, not judged
    assert "3/4" in row.measured_text and "open 1" in row.measured_text
    assert "S18" in row.note
    assert (tmp_path / "report" / "yield_map.png").exists()
