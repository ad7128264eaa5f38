"""Parasitics of the simulated bench (issue 15): capacitance and settling, series
resistance, relay leakage. Each mechanism is checked against its physics (R·C decay,
I·R drop, N·V/R_iso) on a bench where it is the only mechanism on, and switched off it
must leave the DC model exactly as it was.

The circuit: quad site Q5, PCU S17. 2612A channel a drives the word line (slot 1,
column 1); channel b holds configure line 1 (column 3, node n1) at 0 V, so D1 sits
alone between the two terminals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from labpcu.sim.circuit import I_TOL, V_TOL

from labpcu.benchfile import Limits
from labpcu.device_limits import ElementGuard, site_elements
from labpcu.instruments.roles import TerminalState
from labpcu.sim.bench import SimBench
from labpcu.sim.diode import thermal_voltage
from labpcu.sim.parasitics import (
    COLUMN_PATH_CAPACITANCE,
    ELEMENT_CAPACITANCE,
    OFFSET_CURRENT_MAX,
    PATH_RESISTANCE,
    RELAY_ISOLATION_OHM,
    SMU_CABLE_CAPACITANCE,
    offset_current,
)
from labpcu.sim.physics import Physics

A, B = "k2612a.smua", "k2612a.smub"
WL_PATH, CL1_PATH = (1, 1, 1), (1, 2, 3)  # (slot, row, column): smua → S17.WL, smub → S17.n1
#: what smua charges on that path: its cable, one column path, D1
C_WL = SMU_CABLE_CAPACITANCE + COLUMN_PATH_CAPACITANCE + ELEMENT_CAPACITANCE


def d1_bench(*mechanisms: str) -> SimBench:
    """D1 of S17 between smua (WL) and smub (n1 at 0 V), only ``mechanisms`` on."""
    b = SimBench(seed=0, physics=Physics.ideal().only(*mechanisms))
    b.track_stress = True
    b.move_to("Q5")
    b.close_relays([WL_PATH, CL1_PATH])
    b.set_source(B, output=True, mode="v", level=0.0, limit=0.1)
    return b


def voltage_for(current: float) -> float:
    """The DC word-line voltage that drives ``current`` through D1 (ideal bench)."""
    b = d1_bench()
    b.set_source(A, output=True, mode="i", level=current, limit=2.0)
    return b.measure(A).v


def d1_small_signal_resistance(bench: SimBench, current: float) -> float:
    """dV/dI of D1 at ``current`` from the Shockley equation with series resistance."""
    p = bench.wafer.device("S17").d1
    return p.n * thermal_voltage(p.temperature) / (current + p.i0) + p.rs


# ------------------------------------------------------------------ capacitance
def test_a_voltage_step_at_50nA_draws_C_dV_over_tau_decaying_with_RC():
    """D1 between two voltage sources: the sources charge their cables at once; D1's
    own charge relaxes through D1, τ = R_D1·C_element, about a millisecond at 50 nA."""
    v50 = voltage_for(50e-9)
    b = d1_bench("capacitance")
    b.set_source(A, output=True, mode="v", level=0.0, limit=1e-3)
    b.advance(1.0)
    t0 = b.clock.now()
    b.set_source(A, level=v50)
    i_dc = 50e-9
    tau = d1_small_signal_resistance(b, i_dc) * ELEMENT_CAPACITANCE  # ≈ 1 MΩ · 1.05 nF
    excess = []
    for t in (0.0, tau, 3 * tau):
        b.advance(t0 + t - b.clock.now())
        excess.append(b.measure(A).i - i_dc)
    assert excess[0] == pytest.approx(ELEMENT_CAPACITANCE * v50 / tau, rel=0.02)  # C·ΔV/τ
    assert excess[1] / excess[0] == pytest.approx(math.exp(-1), rel=0.02)  # decays with R·C
    assert excess[2] / excess[0] == pytest.approx(math.exp(-3), rel=0.02)
    assert 0.5e-3 < tau < 2e-3


def b2b_bench(*mechanisms: str) -> SimBench:
    """S17 in sigmoid mode (M1 in LRS, M2 in HRS): D1 and D2 back to back between smua
    (WL) and smub (BL, 0 V), only ``mechanisms`` on."""
    b = SimBench(seed=0, physics=Physics.ideal().only(*mechanisms))
    b.move_to("Q5")
    dev = b.wafer.device("S17")
    dev.m1.g_prog = dev.m1.p.g_max
    assert not dev.m2.lrs
    b.close_relays([WL_PATH, (1, 2, 2)])  # smub → S17.BL
    b.set_source(B, output=True, mode="v", level=0.0, limit=0.1)
    return b


def midpoint_tau(plain: SimBench) -> float:
    """The physical τ of the node between the diodes (n1 and n2, joined by M1 in LRS) at
    the DC operating point: the capacitance of the three elements that leave it (D1,
    D2, M2) over its small-signal conductance g_D1 + g_D2 + 1/R_M2, each diode's
    g = I0·exp(V_j/(n·Vt))/(n·Vt) + 1/R_sh from the Shockley equation (Rs negligible
    at nanoamperes)."""
    sol = plain.settle()
    node = plain.topology.node_of_label
    v = {n: float(sol.v[node[f"N:S17.{n}"]]) for n in ("WL", "BL", "n1", "n2")}
    dev = plain.wafer.device("S17")
    g = 1.0 / dev.m2.resistance(plain.clock.now())
    for p, vj in ((dev.d1, v["WL"] - v["n1"]), (dev.d2, v["BL"] - v["n2"])):
        nvt = p.n * thermal_voltage(p.temperature)
        g += p.i0 * math.exp(vj / nvt) / nvt + 1.0 / p.rsh
    return 3 * ELEMENT_CAPACITANCE / g


@pytest.mark.parametrize("level", [0.35, -0.35])
def test_back_to_back_diodes_settle_with_the_midpoints_tau(level):
    """A sigmoid sweep point at the plateau (≈ 0.2 nA): the reverse-biased diode makes
    the terminal's own resistance ≈ 10 GΩ, but what relaxes is the midpoint, through the
    forward diode: τ = C/g ≈ 0.4 s. Within 1 % of DC after 5 τ."""
    plain, cap = b2b_bench(), b2b_bench("capacitance")
    for b in (plain, cap):
        b.set_source(A, output=True, mode="v", level=level * 6 / 7, limit=1e-6)  # the point before
        b.advance(30.0)
        b.set_source(A, level=level)
    i_dc = plain.measure(A).i
    tau = midpoint_tau(plain)
    assert 0.5 < tau < 3.0  # C·n·Vt/(2·I0) with I0 ≈ 50 pA
    assert 2e-11 < abs(i_dc) < 1e-9  # the plateau, ≈ I0
    t0 = cap.clock.now()
    excess = []
    for t in (0.0, tau, 5 * tau):
        cap.advance(t0 + t - cap.clock.now())
        excess.append(cap.measure(A).i - i_dc)
    assert abs(excess[0]) > 0.1 * abs(i_dc)  # the transient is real
    assert excess[1] / excess[0] == pytest.approx(math.exp(-1), rel=0.05)  # with the midpoint's τ
    assert abs(excess[2]) < 0.01 * abs(i_dc)


def test_a_second_step_adds_to_what_is_left_of_the_first():
    """Voltage steps superpose: the transient after the second step is what is left of
    the first plus the second's own (same operating point, so exactly)."""
    v50 = voltage_for(50e-9)
    plain = d1_bench()
    plain.set_source(A, output=True, mode="v", level=v50, limit=1e-3)
    i50 = plain.measure(A).i
    plain.set_source(A, level=v50 + 0.02)
    i70 = plain.measure(A).i

    def excess(first: bool, second: bool) -> float:
        b = d1_bench("capacitance")
        b.set_source(A, output=True, mode="v", level=0.0 if first else v50, limit=1e-3)
        b.advance(1.0)
        b.set_source(A, level=v50)
        b.advance(1e-3)
        if second:
            b.set_source(A, level=v50 + 0.02)
        return b.measure(A).i - (i70 if second else i50)

    both, first, second = excess(True, True), excess(True, False), excess(False, True)
    assert first > 0 and second > 0
    assert both == pytest.approx(first + second, rel=1e-6)


def test_after_the_settling_time_the_reading_is_the_dc_value():
    v50 = voltage_for(50e-9)
    plain, cap = d1_bench(), d1_bench("capacitance")
    for b in (plain, cap):
        b.set_source(A, output=True, mode="v", level=v50, limit=1e-3)
        b.set_source(A, level=v50 + 0.05)
    dc = plain.measure(A).i
    assert cap.measure(A).i > 2 * dc  # right after the step: the transient dominates
    cap.advance(20e-3)  # > 9 τ
    assert cap.measure(A).i == pytest.approx(dc, rel=1e-4)


def test_a_current_step_leaves_the_node_voltage_lagging():
    b = d1_bench("capacitance")
    plain = d1_bench()
    for x in (b, plain):
        x.set_source(A, output=True, mode="i", level=40e-9, limit=2.0)
        x.advance(1.0)
    v40 = b.measure(A).v
    for x in (b, plain):
        x.set_source(A, level=50e-9)
    v50 = plain.measure(A).v
    assert b.measure(A).v == pytest.approx(v40, abs=1e-9)  # the capacitor has not moved yet
    # small step: the chord ΔV/ΔI is the small-signal resistance between the two points
    tau = C_WL * (v50 - v40) / 10e-9
    b.advance(tau)
    assert (v50 - b.measure(A).v) / (v50 - v40) == pytest.approx(math.exp(-1), rel=0.02)
    b.advance(10 * tau)
    assert b.measure(A).v == pytest.approx(v50, abs=1e-6)


def test_the_displacement_current_never_exceeds_the_compliance():
    b = d1_bench("capacitance")
    b.set_source(A, output=True, mode="v", level=0.0, limit=1e-7)
    b.set_source(A, level=0.2)  # ΔV/R ≫ 100 nA at the step
    assert abs(b.measure(A).i) <= 1e-7


# ------------------------------------------------------------ series resistance
def test_at_1mA_the_paths_drop_I_times_R_series():
    b = d1_bench("series_resistance")
    b.set_source(A, output=True, mode="v", level=1.0, limit=0.1)
    r = b.measure(A)
    assert r.i > 0.5e-3
    v_d1, i_d1 = b.stress["S17.D1"]
    assert i_d1 == pytest.approx(r.i, rel=1e-9)
    # two paths in series with D1: smua → WL and n1 → smub
    assert 1.0 - v_d1 == pytest.approx(2 * PATH_RESISTANCE * r.i, rel=1e-6)
    assert 5 <= PATH_RESISTANCE <= 20


def test_series_resistance_matters_at_mA_and_not_at_nA():
    def current(level: float, *mech: str) -> float:
        b = d1_bench(*mech)
        b.set_source(A, output=True, mode="v", level=level, limit=0.1)
        return b.measure(A).i

    assert current(1.0) / current(1.0, "series_resistance") - 1 > 1e-3
    v50 = voltage_for(50e-9)
    assert current(v50, "series_resistance") == pytest.approx(current(v50), rel=1e-5)


def test_a_column_no_relay_routes_stays_merged_with_its_pad():
    b = d1_bench("series_resistance")
    topo = b.topology
    # two routed columns: two series resistors, two extra nodes at most
    assert len(topo.par_g) == 2
    assert all(g == pytest.approx(1 / PATH_RESISTANCE) for g in topo.par_g)
    assert topo.node_of_label["C:1:5"] == topo.node_of_label["N:S18.WL"]
    assert b.reaches_devices(A) and b.reaches_devices(B)


# ----------------------------------------------------------------- relay leakage
def leakage_bench(*mechanisms: str) -> SimBench:
    """smub holds all 16 pads of the quad site at 0 V; smua, closed to nothing, at 1 V."""
    b = SimBench(seed=0, physics=Physics.ideal().only(*mechanisms))
    b.move_to("Q5")
    b.close_relays([(1, 2, c) for c in range(1, 17)])
    b.set_source(B, output=True, mode="v", level=0.0, limit=0.1)
    b.set_source(A, output=True, mode="v", level=1.0, limit=0.1)
    return b


def test_an_open_row_leaks_N_V_over_R_iso_into_the_pads():
    b = leakage_bench("relay_leakage")
    n_open = 16  # smua's slot-1 row crosses the 16 columns; slot 2's reach no pad here
    assert b.measure(A).i == pytest.approx(n_open * 1.0 / RELAY_ISOLATION_OHM, rel=1e-6)
    assert leakage_bench().measure(A).i == 0.0


def test_closed_paths_add_the_cards_offset_current():
    b = leakage_bench("relay_leakage")
    offsets = [offset_current(b.seed, (1, 2, c)) for c in range(1, 17)]
    assert all(abs(x) <= OFFSET_CURRENT_MAX for x in offsets)
    assert len(set(offsets)) == 16  # one per crosspoint
    leak = 16 * 1.0 / RELAY_ISOLATION_OHM
    assert b.measure(B).i == pytest.approx(-leak + sum(offsets), abs=1e-15)


def test_relay_leakage_matters_below_a_nanoampere_and_not_at_microamperes():
    def current(level: float, *mech: str) -> float:
        b = d1_bench(*mech)
        b.set_source(A, output=True, mode="v", level=level, limit=0.1)
        return b.measure(A).i

    v1u = voltage_for(1e-6)
    assert current(v1u, "relay_leakage") == pytest.approx(current(v1u), rel=1e-2)
    v_sub = voltage_for(0.2e-9)
    assert abs(current(v_sub, "relay_leakage") / current(v_sub) - 1) > 0.05


# ------------------------------------------------------------------- switched off
def test_switched_off_the_bench_is_the_plain_dc_model():
    b = d1_bench()
    b.set_source(A, output=True, mode="v", level=0.4, limit=1e-3)
    topo = b.topology
    assert len(topo.par_g) == 0 and not topo.driven
    assert topo.node_of_label["C:1:1"] == topo.node_of_label["N:S17.WL"] == topo.terminal_node[A]
    assert b._steps == {}
    sol, names = b.solve()
    r = b.measure(A)
    assert r.i == float(sol.src_current[names.index(A)])  # exactly the DC solution
    assert r.v == float(sol.src_voltage[names.index(A)])


def test_default_physics_has_every_parasitic_on():
    b = SimBench(seed=0)
    assert all(b.physics.on(m) for m in ("capacitance", "series_resistance", "relay_leakage"))


@pytest.mark.parametrize("mechanism", ["capacitance", "series_resistance", "relay_leakage"])
def test_each_parasitic_keeps_every_element_within_the_guards_bounds(mechanism):
    """What the element guard (labpcu/device_limits.py) bounds without knowing of
    parasitics still bounds what each element sees with the parasitic on: a sweep of
    the word line at 1 mA against n1 at 0 V and the bit line at −0.5 V.

    Series resistance puts a driven pad off its terminal's level by the I·R of its path
    (here b1500a.1 draws its 1 mA out of n1 through smub's path); the guard widens the
    levels by that (tests/test_guard_series_resistance.py), so it bounds this too."""
    b = d1_bench(mechanism)
    b.close_relays([(1, 3, 2)])  # b1500a.1 on S17.BL
    b.set_source("b1500a.1", output=True, mode="v", level=-0.5, limit=1e-3)
    guard = ElementGuard(site_elements(b.wafer, b.site), {k: Limits(10.0, 1.0) for k in ("diode", "m1", "m2")},
                         {A: {"S17.WL"}, B: {"S17.n1"}, "b1500a.1": {"S17.BL"}})
    worst = {}
    for level in np.linspace(-1.0, 1.0, 9):
        b.stress.clear()
        b.set_source(A, output=True, mode="v", level=float(level), limit=1e-3)
        b.measure(A)
        states = {A: TerminalState.voltage(level, level, 1e-3), B: TerminalState.voltage(0.0, 0.0, 0.1),
                  "b1500a.1": TerminalState.voltage(-0.5, -0.5, 1e-3)}
        bound = guard.bounds(states)
        for label, (v, _) in b.stress.items():
            worst[label] = max(worst.get(label, -1.0), v - bound[label][0])
    # the solver's voltage tolerance; the site's other PCUs float, held only by open
    # crosspoints' leakage, and a node there is resolved to I_TOL over the ~1 nS of a
    # diode at 0 V (the solver's current tolerance), not to V_TOL
    assert worst and max(worst.values()) <= max(V_TOL, I_TOL / 1e-9), worst
