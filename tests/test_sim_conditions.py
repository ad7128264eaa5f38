"""Bench conditions on the simulated wafer: stage temperature, lamp light, and the
bench file's ``[conditions]`` and ``[sim]`` tables. Each physics test measures through
the simulated circuit and compares with the physics it should obey."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from labpcu.bench import Bench
from labpcu.benchfile import BenchFileError, default_sim_bench_path, parse_bench
from labpcu.sim.bench import SimBench
from labpcu.sim.diode import diode_current
from labpcu.sim.physics import MECHANISMS, Physics, PhysicsError
from labpcu.sim.stage import StageTemperature
from simhelpers import A, apply, wire

QUAD = "Q1"
#: a stage that holds its set point exactly, and DC wiring: these tests read the device,
#: not the cables (capacitance, series paths and relay leakage have tests of their own)
STILL = Physics(temperature_wander_K=0.0).without("capacitance", "series_resistance", "relay_leakage", "defects")


def d1_bench(physics: Physics) -> SimBench:
    """S01's D1 between smua (WL) and smub (CL1, at 0 V)."""
    bench = SimBench(seed=3, site=QUAD, physics=physics)
    wire(bench, "S01.WL", "S01.CL1")
    return bench


def forward_voltage(bench: SimBench, amps: float) -> float:
    bench.set_source(A, output=True, mode="i", level=amps, limit=2.0)
    return bench.measure(A).v


def test_forward_voltage_falls_about_2_mV_per_kelvin_at_constant_current():
    volts = {t: forward_voltage(d1_bench(STILL.with_conditions(temperature_K=t)), 1e-6) for t in (288.15, 308.15)}
    slope = (volts[308.15] - volts[288.15]) / 20.0
    assert -3.0e-3 < slope < -1.5e-3, f"dV/dT = {slope * 1e3:.2f} mV/K"


def test_current_at_constant_voltage_rises_a_few_percent_per_kelvin():
    cold = d1_bench(STILL)
    v = forward_voltage(cold, 1e-6)
    warm = d1_bench(STILL.with_conditions(temperature_K=STILL.temperature_K + 1.0))
    i = apply(warm, v)
    assert 0.03 < i / 1e-6 - 1.0 < 0.07


def test_photocurrent_is_proportional_to_light_and_flows_against_the_forward_current():
    currents = {}
    for lux in (0.0, 1000.0, 2000.0):
        bench = d1_bench(STILL.with_conditions(light_lux=lux))
        currents[lux] = apply(bench, 0.0)  # short circuit: only the photocurrent flows
    assert abs(currents[0.0]) < 1e-12
    assert currents[1000.0] < 0  # out of the anode terminal: against the forward direction
    assert currents[2000.0] / currents[1000.0] == pytest.approx(2.0, rel=1e-3)
    # a microscope lamp gives currents comparable to the operators' (50 nA - 3 µA)
    assert 2e-8 < -currents[1000.0] < 1e-6


def test_dark_diode_rectifies_about_ten_thousand_and_saturates_in_reverse():
    bench = d1_bench(STILL)
    forward, reverse = apply(bench, 1.0), apply(bench, -1.0)
    assert 1e3 < forward / -reverse < 1e6
    # the junction saturates: without the soft leakage (diode_leakage, tested below) the
    # reverse current from -0.15 V to -1 V is the plateau I0 (1 - e^(-|V|/nVt) ≥ 0.97 here)
    junction = d1_bench(STILL.without("diode_leakage"))
    p = junction.wafer.device("S01").d1
    i0, _ = p.at(p.temperature)
    for v in (-0.15, -0.25, -0.5, -1.0):
        assert -apply(junction, v) == pytest.approx(i0, rel=0.05), v
    # with the leakage on, the back-to-back pair's plateau (-0.15 to -0.25 V) is still I0:
    # the v2 diodes' I0 ≈ 50 pA (issue 15; was 0.5 pA) against i_leak·sinh(|V|/v_leak) ≈ 7 pA
    # at -0.25 V; at -1 V the leakage dominates and sets the ≈ 10^4 rectification above
    for v in (-0.15, -0.25):
        assert -apply(bench, v) == pytest.approx(i0, rel=0.2), v


def test_diode_leakage_switch_removes_the_soft_reverse_leakage():
    leaky = apply(d1_bench(STILL), -1.0)
    clean = apply(d1_bench(STILL.without("diode_leakage")), -1.0)
    assert -leaky > 50 * -clean


def test_stage_wander_has_its_rms_and_switches_off():
    stage = StageTemperature(Physics(temperature_wander_K=0.1), seed=0)
    t = np.linspace(0, 20_000, 20_001)
    temps = np.array([stage.at(x) for x in t])
    assert np.sqrt(np.mean((temps - 298.15) ** 2)) == pytest.approx(0.1, rel=0.25)
    still = StageTemperature(Physics().without("temperature"), seed=0)
    assert {still.at(x) for x in (0.0, 100.0, 5000.0)} == {298.15}


def test_the_solver_agrees_with_the_closed_form_at_temperature():
    bench = d1_bench(STILL.with_conditions(temperature_K=320.0))
    p = bench.wafer.device("S01").d1
    v = forward_voltage(bench, 1e-7)
    assert float(diode_current(v, p, temperature=320.0)) == pytest.approx(1e-7, rel=1e-6)
    assert brentq(lambda x: float(diode_current(x, p)) - 1e-7, 0, 1) > v  # cooler: higher voltage


# --------------------------------------------------------------- physics settings
def test_physics_names_every_mechanism_and_refuses_unknown_ones():
    assert Physics().on("defects") and not Physics().without("defects").on("defects")
    assert all(not Physics.ideal().on(m) for m in MECHANISMS)
    with pytest.raises(PhysicsError, match="unknown mechanism.*warp_drive"):
        Physics().without("warp_drive")
    with pytest.raises(PhysicsError, match="200-400 K"):
        Physics(temperature_K=10.0)


def test_physics_round_trips_through_plain_data():
    p = Physics(light_lux=500.0).without("read_noise", "drift")
    assert Physics.from_dict(p.to_dict()) == p


def test_bench_file_conditions_reach_the_simulated_wafer_and_every_run(tmp_path):
    text = default_sim_bench_path().read_text()
    text = text.replace("temperature_K = 298.15", "temperature_K = 305.0").replace("light_lux = 0 ", "light_lux = 800 ")
    text = text.replace('off = []', 'off = ["defects", "temperature"]')
    path = tmp_path / "bench.toml"
    path.write_text(text)
    bench = Bench.from_file(path)
    try:
        phys = bench.sim.bench.physics
        assert (phys.temperature_K, phys.light_lux) == (305.0, 800.0)
        assert not phys.on("defects") and phys.on("read_noise")
        snap = bench.snapshot()
        assert snap["conditions"] == {"temperature_K": 305.0, "light_lux": 800.0}
        assert snap["physics"]["off"] == ["defects", "temperature"]
    finally:
        bench.close()


def test_bench_file_refuses_an_unknown_mechanism_with_its_table():
    text = default_sim_bench_path().read_text().replace('off = []', 'off = ["gremlins"]')
    with pytest.raises(BenchFileError, match=r"sim.*unknown mechanism.*gremlins"):
        parse_bench(text, "bench.toml")


def test_bench_file_refuses_an_impossible_stage_temperature_on_its_line():
    text = default_sim_bench_path().read_text().replace("temperature_K = 298.15", "temperature_K = 900")
    err = str(pytest.raises(BenchFileError, parse_bench, text, "bench.toml").value)
    line = next(n for n, s in enumerate(text.splitlines(), 1) if s.startswith("temperature_K = 900"))
    assert f"bench.toml:{line}" in err and "200-400 K" in err


def test_physics_override_is_refused_on_a_real_bench(tmp_path):
    text = default_sim_bench_path().read_text().replace('address = "sim"', 'address = "TCPIP0::10.0.0.9::inst0::INSTR"')
    text = text[:text.index("[sim]")] + text[text.index("[instruments"):]  # a real bench has no [sim]
    path = tmp_path / "real.toml"
    path.write_text(text)
    with pytest.raises(Exception, match="simulated bench only"):
        Bench.from_file(path, physics=Physics())
