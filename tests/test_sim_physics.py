"""Device physics alone, against the single-device bands of pcu.md (seeds 0, 1, 2)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from labpcu.sim.bench import SimBench
from labpcu.sim.diode import DiodeParams, diode_current, diode_iv
from labpcu.sim.memristor import BinaryMemristor, M1Params, M2Params, MultiStateMemristor
from labpcu.sim.physics import Physics
from labpcu.sim.wafer import make_wafer
from simhelpers import apply, pulse, wire

#: the device laws at DC: these tests read right after each step, so the transient of the
#: device and cable capacitance (tests/test_sim_parasitics.py) is switched off
DC = Physics().without("capacitance")

# ------------------------------------------------------------------ diode


def test_diode_solves_the_implicit_shockley_equation_at_any_bias():
    p = DiodeParams(i0=5e-13, n=1.8, rs=300.0, rsh=5e11)
    v = np.array([-50.0, -5.0, -1.0, -0.1, 0.0, 0.05, 0.4, 0.8, 1.0, 3.0, 20.0, 200.0])
    i = diode_current(v, p)
    assert np.all(np.isfinite(i))
    ij = i - v / p.rsh  # junction current
    rhs = p.i0 * np.expm1((v - ij * p.rs) / p.nvt)
    np.testing.assert_allclose(ij, rhs, rtol=1e-9, atol=1e-24)
    assert np.all(np.diff(i) > 0), "I-V must be monotonic"


def test_diode_conductance_is_the_derivative():
    p = DiodeParams(i0=5e-13, n=1.8, rs=300.0, rsh=5e11)
    v = np.linspace(-2, 2, 41)
    _, g = diode_iv(v, p.i0, p.nvt, p.rs, 1 / p.rsh)
    h = 1e-6
    num = (diode_current(v + h, p) - diode_current(v - h, p)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-15)


def test_every_diode_on_the_wafer_rectifies_more_than_1e3_at_1V(seed):
    wafer = make_wafer(seed)
    ratios = []
    for dev in wafer.devices.values():
        for p in (dev.d1, dev.d2):
            fwd, rev = diode_current(np.array([1.0, -1.0]), p)
            ratios.append(fwd / abs(rev))
    assert min(ratios) > 1e3


def _shockley_log(v, log_i0, n, rs):
    """log10 of the diode current with series resistance (fit model)."""
    p = DiodeParams(10.0**log_i0, n, rs, 1e30)
    return np.log10(diode_current(v, p))


@pytest.mark.parametrize("device", ["S01", "A5-R2C2"])
def test_measured_diode_sweep_fits_shockley_with_r2_above_099(seed, device):
    bench = SimBench(seed=seed, physics=DC)
    bench.move_to_device(device)
    wire(bench, _wl_pad(bench, device), f"{device}.CL1")
    v = np.linspace(0.1, 1.0, 37)
    i = np.array([apply(bench, x, limit=0.01) for x in v])
    rev = apply(bench, -1.0, limit=0.01)
    assert i[-1] / abs(rev) > 1e3
    popt, _ = curve_fit(_shockley_log, v, np.log10(i), p0=(-12.0, 1.5, 100.0), maxfev=20000)
    pred = _shockley_log(v, *popt)
    y = np.log10(i)
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 > 0.99
    assert 1.3 < popt[1] < 2.5  # ideality factor recovered in a physical range


def _wl_pad(bench: SimBench, device: str) -> str:
    dev = bench.wafer.device(device)
    return f"{dev.array}.WL{dev.row}" if dev.array else f"{device}.WL"


def _bl_pad(bench: SimBench, device: str) -> str:
    dev = bench.wafer.device(device)
    return f"{dev.array}.BL{dev.col}" if dev.array else f"{device}.BL"


# ------------------------------------------------------------------- M2


def _m2_set(bench, device, compliance=1e-3):
    wire(bench, f"{device}.CL2", _bl_pad(bench, device))
    apply(bench, 1.0, limit=compliance)
    apply(bench, 0.0)


def _m2_reset(bench, device):
    wire(bench, f"{device}.CL2", _bl_pad(bench, device))
    apply(bench, -1.0, limit=0.02)
    apply(bench, 0.0)


@pytest.mark.parametrize("device", ["S07", "A2-R3C1"])
def test_m2_on_off_ratio_above_1e6_at_0v1(seed, device):
    bench = SimBench(seed=seed, physics=DC)
    bench.move_to_device(device)
    _m2_set(bench, device)
    assert bench.wafer.device(device).m2.lrs
    i_on = apply(bench, 0.1)
    _m2_reset(bench, device)
    assert not bench.wafer.device(device).m2.lrs
    i_off = apply(bench, 0.1)
    assert i_on / abs(i_off) > 1e6


def test_m2_lrs_resistance_follows_the_forming_compliance():
    bench = SimBench(seed=0, site="Q1", physics=DC)
    _m2_set(bench, "S01", compliance=1e-3)
    r_strong = 0.1 / apply(bench, 0.1)
    _m2_reset(bench, "S01")
    _m2_set(bench, "S01", compliance=1e-4)
    r_weak = 0.1 / apply(bench, 0.1)
    assert r_weak > 5 * r_strong  # lower compliance, thinner filament


def test_m2_state_survives_1000_s_of_0v1_reads(seed):
    bench = SimBench(seed=seed, site="Q2", physics=DC)
    _m2_reset(bench, "S06")
    _m2_set(bench, "S05")
    first = apply(bench, 0.1)
    for _ in range(100):
        last = apply(bench, 0.1, duration=0.02)
        bench.advance(10.0)
    assert bench.clock.now() >= 1000.0
    assert abs(last / first - 1) < 0.01
    wire(bench, "S06.CL2", "S06.BL")
    hrs_first = apply(bench, 0.1)
    for _ in range(100):
        hrs_last = apply(bench, 0.1, duration=0.02)
        bench.advance(10.0)
    assert not bench.wafer.device("S06").m2.lrs
    assert last / abs(hrs_last) > 1e6 and last / abs(hrs_first) > 1e6


def test_m2_needs_more_than_its_threshold_to_switch():
    m = BinaryMemristor(M2Params(v_set=0.45, v_reset=-0.25))
    assert not m.wants_switch(0.1) and not m.wants_switch(0.44) and m.wants_switch(0.46)
    m.set(0.0)
    assert not m.wants_switch(-0.2) and m.wants_switch(-0.3)


# ------------------------------------------------------------------- M1


def _read_m1(bench) -> float:
    return apply(bench, 0.01, duration=0.02) / 0.01


def _program(bench, device, target, tol, max_pulses=200):
    """A plain ISPP loop: +/-0.2 V start, 0.1 V steps, 20 ms pulses, +0.01 V reads."""
    wire(bench, f"{device}.CL1", f"{device}.CL2")
    amp, direction, pulses = 0.2, 0, 0
    g = _read_m1(bench)
    while abs(g - target) > tol and pulses < max_pulses:
        d = 1 if g < target else -1
        if d != direction:
            amp, direction = 0.2, d
        pulse(bench, d * amp, 0.02)
        amp = min(amp + 0.1, 1.5)
        pulses += 1
        g = _read_m1(bench)
    return g, pulses


def test_pulse_loop_reaches_a_target_conductance(seed):
    bench = SimBench(seed=seed, site="Q3", physics=DC)
    dev = bench.wafer.device("S09")
    p = dev.m1.p
    for frac in (0.3, 0.7, 0.5):
        target = p.g_min + frac * p.g_range
        tol = 0.02 * p.g_range
        g, pulses = _program(bench, "S09", target, tol)
        assert abs(g - target) <= tol, f"missed {target:.3e} S: {g:.3e} S after {pulses} pulses"
        assert pulses < 200


def test_reads_at_0v01_do_not_disturb_m1():
    bench = SimBench(seed=0, site="Q1", physics=DC)
    wire(bench, "S02.CL1", "S02.CL2")
    before = bench.wafer.device("S02").m1.g_prog
    for _ in range(500):
        _read_m1(bench)
    assert bench.wafer.device("S02").m1.g_prog == before


def test_m1_drift_over_600_s_below_2_percent(seed):
    # the stored state's drift: the volatile part a read 20 ms after the last pulse
    # still holds is m1_kinetics' (tests/test_sim_memristor_mechanisms.py)
    bench = SimBench(seed=seed, site="Q4", physics=DC.without("m1_kinetics"))
    for device in ("S13", "S14", "S15", "S16"):
        p = bench.wafer.device(device).m1.p
        for frac in (0.2, 0.5, 0.8):
            target = p.g_min + frac * p.g_range
            g0, _ = _program(bench, device, target, 0.02 * p.g_range)
            t0 = bench.clock.now()
            while bench.clock.now() - t0 < 600.0:
                bench.advance(10.0)
                g = _read_m1(bench)
            assert abs(g / g0 - 1) < 0.02, f"{device} at {frac:.0%}: drift {g / g0 - 1:+.2%}"


def test_m1_saturates_at_its_range_and_spreads_cycle_to_cycle():
    m = MultiStateMemristor(M1Params(), g_prog=M1Params().g_min)
    rng = np.random.default_rng(1)
    steps = [m.apply(0.3, 0.02, float(k), m.draw_spread(rng)) for k in range(500)]
    assert m.conductance(500.0) <= m.p.g_max
    assert m.conductance(500.0) > m.p.g_min + 0.9 * m.p.g_range
    early = np.array(steps[:5])
    assert np.all(early > 0) and np.std(early / (1 - np.cumsum(np.r_[0, early[:-1]]))) > 0


def test_pulse_effect_grows_with_amplitude_and_width():
    def delta(v, w):
        m = MultiStateMemristor(M1Params(c2c_sigma=0.0), g_prog=M1Params().g_min + 0.5 * M1Params().g_range)
        return m.apply(v, w, 0.0, 1.0)

    assert delta(0.1, 0.02) == 0.0  # below threshold
    assert 0 < delta(0.2, 0.02) < delta(0.3, 0.02) < delta(0.4, 0.02)
    assert delta(0.3, 0.01) < delta(0.3, 0.02)
    assert delta(-0.3, 0.02) < 0


def test_wafer_is_seeded_and_seeds_differ():
    a, b, c = make_wafer(0), make_wafer(0), make_wafer(1)
    assert len(a) == 101 and sum(s.kind == "array" for s in a.sites.values()) == 9
    assert a.device("A1-R1C1").d1 == b.device("A1-R1C1").d1
    assert a.device("A1-R1C1").d1 != c.device("A1-R1C1").d1
    i0 = np.array([d.d1.i0 for d in a.devices.values()])
    assert 0.1 < np.std(np.log(i0)) < 0.6  # device-to-device spread present, not wild
