"""Characterization protocols (iv_sweep, hysteresis, retention) end to end on the
simulated bench, checked against the bands of pcu.md on three wafers; their fits on
synthetic data with known parameters; bad input refused before any instrument I/O."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labpcu.bench import Bench, SafeStateError
from labpcu.data.fits import (
    FitError,
    find_switch,
    fit_log_drift,
    fit_shockley,
    rectification_ratio,
    shockley_current,
    thermal_voltage,
)
from labpcu.protocols import registry
from labpcu.protocols.characterization import (
    Hysteresis,
    HysteresisParams,
    IVSweep,
    IVSweepParams,
    Retention,
    RetentionParams,
    half_cycle,
)
from labpcu.protocols.common import connect_component
from labpcu.protocols.params import ParameterError
from labpcu.runner import DeviceFailed, Runner
from simhelpers import assert_safe, sent

#: diodes across the wafer: array cells (centre and corners) and single PCUs
DIODES = ("A5-R2C2", "A1-R1C1", "A9-R3C3", "S01", "S13")


@pytest.fixture
def bench(seed):
    b = Bench.from_file(seed=seed)
    yield b
    try:
        b.close()
    except SafeStateError:
        pass


@pytest.fixture
def bench0():
    b = Bench.from_file(seed=0)
    yield b
    b.close()


@pytest.fixture
def runner(bench, tmp_path):
    return Runner(bench, tmp_path / "runs.h5")


# ====================================================================== fits
@pytest.mark.parametrize("i0, n, rs", [(1e-12, 1.7, 500.0), (5e-13, 1.9, 300.0), (1e-10, 1.3, 50.0)])
def test_shockley_fit_recovers_known_parameters(i0, n, rs):
    rng = np.random.default_rng(7)
    v = np.linspace(0.05, 1.0, 60)
    i = shockley_current(v, i0, n, rs) * (1 + 0.005 * rng.standard_normal(len(v)))
    fit = fit_shockley(v, i)
    assert fit.i0 == pytest.approx(i0, rel=0.05)
    assert fit.n == pytest.approx(n, rel=0.01)
    assert fit.rs == pytest.approx(rs, rel=0.05)
    assert fit.r2 > 0.9999 and fit.points == 60


def test_shockley_current_solves_the_implicit_equation():
    v = np.linspace(-1.0, 3.0, 41)
    i = shockley_current(v, 1e-12, 1.8, 300.0, temperature=320.0)
    nvt = 1.8 * thermal_voltage(320.0)
    assert np.allclose(i, 1e-12 * (np.exp((v - i * 300.0) / nvt) - 1), rtol=1e-9, atol=1e-20)


def test_shockley_fit_leaves_out_reverse_and_sub_floor_points_and_needs_four():
    v = np.linspace(-1.0, 1.0, 41)
    i = shockley_current(v, 1e-12, 1.7, 400.0) + 1e-11  # a leakage floor
    fit = fit_shockley(v, i, floor=1e-10)
    assert fit.points < 20 and fit.n == pytest.approx(1.7, rel=0.05)
    with pytest.raises(FitError, match="at least 4 forward points"):
        fit_shockley(v, i, floor=1.0)


def test_rectification_ratio_merges_repeated_levels_and_interpolates():
    v = np.r_[np.linspace(-1, 1, 5), np.linspace(1, -1, 5)]  # double sweep
    i = np.where(v > 0, 1e-4 * v, -1e-12)
    ratio, fwd, rev = rectification_ratio(v, i, 1.0)
    assert (ratio, fwd, rev) == pytest.approx((1e8, 1e-4, 1e-12))
    ratio, fwd, _ = rectification_ratio(v, i, 0.75)  # between 0.5 and 1 V: log-interpolated
    assert fwd == pytest.approx(1e-4 * math.sqrt(0.5))
    with pytest.raises(FitError, match="does not reach"):
        rectification_ratio(v, i, 2.0)


def test_find_switch_on_synthetic_set_and_reset():
    up = half_cycle(1.0, 0.05)
    rng = np.random.default_rng(3)
    noise = 2e-12 * rng.standard_normal(len(up))
    hrs, lrs = up / 1e10 + noise, np.minimum(up / 200.0, 1e-3)
    set_i = hrs.copy()
    set_i[9:] = lrs[9:]  # set at 0.45 V, LRS to the end
    assert up[find_switch(up, set_i, rising=True)] == pytest.approx(0.45)
    assert find_switch(up, hrs, rising=True) is None  # noise on HRS is not a switch
    down = half_cycle(-0.6, 0.05)
    reset_i = np.where((np.arange(len(down)) < 6), down / 200.0, down * 1e-9)
    assert down[find_switch(down, reset_i, rising=False)] == pytest.approx(-0.3)
    assert find_switch(down, down / 200.0, rising=False) is None


def test_log_drift_fit_recovers_g0_and_nu():
    t = np.arange(0, 601, 10.0)
    g = 50e-6 * (1 - 0.004 * np.log10(1 + t / 10.0))
    fit = fit_log_drift(t, g, 10.0)
    assert fit.g0 == pytest.approx(50e-6) and fit.nu == pytest.approx(-0.004)
    assert fit.change(600.0) == pytest.approx(-0.004 * math.log10(61))
    with pytest.raises(FitError, match="at least 2 reads"):
        fit_log_drift(t[:1], g[:1], 10.0)


# ====================================================================== parameters
def test_sweep_levels_for_every_spacing():
    assert np.allclose(IVSweepParams(start=-1, stop=1, points=3).sweep_levels(), [-1, 0, 1])
    assert np.allclose(IVSweepParams(start=0, stop=1, points=3, double=True, rectification_bias=0).sweep_levels(),
                       [0, 0.5, 1, 0.5, 0])
    log = IVSweepParams(spacing="log", start=0.01, stop=1, points=3, log_min=0.001, rectification_bias=0).sweep_levels()
    assert np.allclose(log, [0.01, 0.1, 1])
    # bipolar log: mirrored through zero, each polarity down to ±log_min
    bip = IVSweepParams(spacing="log", start=-1, stop=1, points=6, log_min=0.01).sweep_levels()
    assert np.allclose(bip, [-1, -0.1, -0.01, 0.01, 0.1, 1])
    assert np.allclose(IVSweepParams(spacing="list", levels=(-1, 0.3, 1)).sweep_levels(), [-1, 0.3, 1])


@pytest.mark.parametrize("cls, values, words", [
    (IVSweepParams, {"spacing": "list"}, "needs levels"),
    (IVSweepParams, {"levels": (0.1, 0.2)}, "only with spacing = list"),
    (IVSweepParams, {"start": 0, "stop": 0.5}, "rectification_bias = 1 V needs levels"),
    (IVSweepParams, {"spacing": "log", "start": -0.005, "log_min": 0.01}, "must be 0 or beyond log_min"),
    (IVSweepParams, {"component": "d3"}, "is not one of"),
    (HysteresisParams, {"v_read": 1.5}, "above its limit"),
    (HysteresisParams, {"v_read": 0.9, "v_set_max": 0.5}, "must lie between"),
    (HysteresisParams, {"step": 0.5}, "too coarse"),
    (RetentionParams, {"component": "d1"}, "is not one of"),
    (RetentionParams, {"v_read": 0.3}, "above its limit"),
    (RetentionParams, {"duration": 5.0}, "shorter than interval"),
])
def test_params_refuse_bad_values_in_one_line(cls, values, words):
    with pytest.raises(ParameterError, match=words) as err:
        cls.from_mapping(values)
    assert "\n" not in str(err.value)


def test_retention_defaults_follow_the_component():
    m1, m2 = RetentionParams(), RetentionParams(component="m2")
    assert (m1.read_voltage, m1.read_duration) == (0.01, 600.0)
    assert (m2.read_voltage, m2.read_duration) == (0.1, 1000.0)
    assert RetentionParams(component="m2", v_read=0.05, duration=50).read_voltage == 0.05


def test_protocols_are_registered_and_every_parameter_is_described():
    for name, cls in (("iv_sweep", IVSweep), ("hysteresis", Hysteresis), ("retention", Retention)):
        assert registry.get(name) is cls
        d = cls.describe()
        assert all(p["help"] for p in d["parameters"])
        assert any(c["name"] == "device" and c["dtype"] == "str" for c in d["columns"])


# ====================================================================== iv_sweep
def test_iv_sweep_diodes_meet_the_bands(runner, bench):
    out = runner.run("iv_sweep", {}, DIODES)
    assert out.ok, out.error
    df = runner.store.read(out.run_id)
    assert df.groupby("device").size().to_dict() == {d: 101 for d in DIODES}
    for dev in DIODES:
        r = out.results["devices"][dev]
        assert r["rectification_ratio"] > 1e3, dev
        assert r["r2"] > 0.99, dev
        assert 1.0 < r["n"] < 3.0 and 1e-12 < r["i0"] < 1e-9 and 10 < r["rs"] < 5e3, (dev, r)
    s = out.results["summary"]
    assert s["devices"] == len(DIODES) and s["rectification_min"] > 1e3 and s["r2_min"] > 0.99
    assert runner.store.info(out.run_id).results["devices"]["S01"]["r2"] == pytest.approx(out.results["devices"]["S01"]["r2"])
    assert_safe(bench)


def test_iv_sweep_double_log_sweep_runs_on_the_instrument(bench0, tmp_path):
    runner = Runner(bench0, tmp_path / "runs.h5")
    before = len(bench0.sim["k2612a"].messages_in())
    out = runner.run(IVSweep, {"spacing": "log", "points": 40, "double": True}, ["S05"])
    assert out.ok, out.error
    df = runner.store.read(out.run_id)
    assert len(df) == 79 and df["branch"].tolist() == [0] * 40 + [1] * 39
    assert out.results["devices"]["S05"]["rectification_ratio"] > 1e3
    # one list sweep, not a message per point (the rest is routing and the safe state)
    sent = bench0.sim["k2612a"].messages_in()[before:]
    assert sum("listv(" in m for m in sent) == 1
    assert sum(m.startswith("print(smua.measure") or "smua.source.levelv = 0." in m for m in sent) < 5
    assert_safe(bench0)


# ====================================================================== hysteresis
def test_hysteresis_switches_every_cycle_with_on_off_above_1e6(runner, bench):
    devices = ["S02", "A5-R2C2", "A3-R1C3"]
    out = runner.run("hysteresis", {"cycles": 3}, devices)
    assert out.ok, out.error
    df = runner.store.read(out.run_id)
    assert df["cycle"].dtype.kind == "i" and set(df["cycle"]) == {0, 1, 2, 3}
    for dev in devices:
        r = out.results["devices"][dev]
        assert r["cycles"] == 3 and r["passed"]
        assert min(r["on_off"]) > 1e6, dev
        assert all(0.2 < v < 0.8 for v in r["set_voltage"]), r["set_voltage"]
        assert all(-0.5 < v < -0.1 for v in r["reset_voltage"]), r["reset_voltage"]
        # the HRS read is D2's reverse current in parallel (≈ I0 = 50 pA at 0.1 V): ≈ 10^9 Ω
        assert all(50 < x < 5e3 for x in r["r_lrs"]) and all(x > 2e8 for x in r["r_hrs"])
    assert out.results["summary"]["passed"] and out.results["summary"]["on_off_min"] > 1e6
    assert_safe(bench)


def test_a_device_that_does_not_switch_fails_alone(bench0, tmp_path):
    bench0.sim.bench.wafer.device("S03").m2.p.v_set = 5.0  # this M2 cannot set within 1 V
    runner = Runner(bench0, tmp_path / "runs.h5")
    failed = []
    runner.subscribe(lambda e: failed.append(e.device) if isinstance(e, DeviceFailed) else None)
    out = runner.run(Hysteresis, {"cycles": 2}, ["S02", "S03", "S04"])
    assert out.status == "completed"
    assert failed == ["S03"] and "did not set up to +1 V in cycle 1" in out.failed_devices["S03"]
    assert out.results["failed_devices"] == out.failed_devices
    devs = out.results["devices"]
    assert devs["S02"]["passed"] and devs["S04"]["passed"]
    assert devs["S03"]["cycles"] == 0 and not devs["S03"]["passed"]  # its data are kept, unanalysable
    assert not out.results["summary"]["passed"]
    assert_safe(bench0)


# ====================================================================== retention
def _program_m1(bench: Bench, device: str, fraction: float) -> float:
    """Test setup: ISPP on the instrument to a fraction of the (simulated) range."""
    m1 = bench.sim.bench.wafer.device(device).m1.p
    connect_component(bench, device, "m1")
    result = bench.drivers["k2612a"].program_and_verify(m1.g_min + fraction * m1.g_range, 0.02 * m1.g_range,
                                                         channel="a", ground="b")
    assert result.reached
    return result.conductance


def test_m1_retention_drifts_less_than_2_percent_over_600_s(runner, bench):
    # the fit must give back the detrapping rate: without the volatile relaxation after
    # the last pulse (m1_kinetics, tests/test_sim_memristor_mechanisms.py), which the
    # log law would take for extra drift
    bench.sim.bench.physics = bench.sim.bench.physics.without("m1_kinetics")
    for device, fraction in (("S06", 0.3), ("A2-R2C3", 0.7)):
        g = _program_m1(bench, device, fraction)
        t0 = bench.clock.now()
        out = runner.run("retention", {}, [device])  # M1, +0.01 V, 600 s by default
        assert out.ok, out.error
        r = out.results["devices"][device]
        assert bench.clock.now() - t0 >= 600.0
        assert r["reads"] == 61 and r["t_end"] == pytest.approx(600.0, abs=1.0) and r["v_read"] == 0.01
        assert r["g0"] == pytest.approx(g, rel=0.02)  # the state programmed is the state read
        assert abs(r["drift"]) < 0.02 and r["max_deviation"] < 0.02 and r["passed"], r
        nu = bench.sim.bench.wafer.device(device).m1.p.drift_nu  # the simulated detrapping rate
        assert -r["nu_per_decade"] == pytest.approx(nu, abs=0.0015)
    assert_safe(bench)


def test_m2_state_unchanged_after_1000_s(runner, bench):
    hyst = runner.run("hysteresis", {"cycles": 1}, ["S07"])  # ends in HRS: its level for the ratio
    i_hrs = hyst.results["devices"]["S07"]["i_hrs"][0]
    force, _ = connect_component(bench, "S07", "m2")  # test setup: set M2 through the role
    force.source_voltage(1.0, 1e-3)
    force.output_on()
    force.measure()
    out = runner.run("retention", {"component": "m2"}, ["S07"])
    assert out.ok, out.error
    r = out.results["devices"]["S07"]
    assert r["reads"] == 101 and r["t_end"] == pytest.approx(1000.0, abs=1.0) and r["v_read"] == 0.1
    assert r["passed"] and abs(r["drift"]) < 0.02
    i_last = r["g_last"] * 0.1
    assert i_last / abs(i_hrs) > 1e6  # still LRS: the ratio holds after 1000 s
    assert_safe(bench)


# ====================================================================== bad input
@pytest.mark.parametrize("protocol, params, devices, words", [
    ("iv_sweep", {"compliance": 0.05}, ["S01"], "compliance = 0.05 A exceeds the bench limit of 0.01 A for diode"),
    ("iv_sweep", {"stop": 5.0}, ["S01"], "levels = 5 V exceeds the bench limit of 3 V"),
    ("iv_sweep", {"component": "m1", "start": -2, "stop": 2}, ["S01"], "bench limit of 1.5 V for m1"),
    ("iv_sweep", {"spacing": "list"}, ["S01"], "needs levels"),
    ("iv_sweep", {}, ["Z99"], "no device 'Z99'"),
    ("hysteresis", {"v_set_max": 2.5}, ["S02"], "v_set_max = 2.5 V exceeds the bench limit of 2 V for m2"),
    ("hysteresis", {"compliance_reset": 0.05}, ["S02"], "compliance_reset = 0.05 A exceeds"),
    ("hysteresis", {"cycles": 0}, ["S02"], "below its limit"),
    ("retention", {"compliance": 0.005}, ["S02"], "compliance = 0.005 A exceeds the bench limit of 0.001 A for m1"),
    ("retention", {"v_read": 0.5}, ["S02"], "above its limit"),
    ("retention", {}, [], "at least 1 device"),
])
def test_bad_input_is_refused_before_any_io(bench0, tmp_path, protocol, params, devices, words):
    runner = Runner(bench0, tmp_path / "runs.h5")
    before = sent(bench0)
    with pytest.raises(ParameterError, match=words) as err:
        runner.run(protocol, params, devices)
    assert "\n" not in str(err.value)
    assert sent(bench0) == before
    assert not runner.store.path.exists()
