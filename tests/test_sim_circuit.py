"""The circuit solver against hand calculations, and the bench's circuits."""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.clock import VirtualClock
from labpcu.sim.bench import SimBench
from labpcu.sim.circuit import Netlist, SolverError, solve
from labpcu.sim.diode import DiodeParams, diode_current
from labpcu.sim.physics import Physics
from simhelpers import A, B, apply, pin_of, wire


def test_voltage_divider_is_exact():
    net = Netlist(3)
    net.add_resistor(1, 2, 1 / 1000.0)
    net.add_resistor(2, 0, 1 / 3000.0)
    net.add_source(1, True, 2.0, 1.0)
    sol = solve(net)
    assert sol.v[2] == pytest.approx(1.5, rel=1e-9)
    assert sol.src_current[0] == pytest.approx(2.0 / 4000.0, rel=1e-9)
    assert not sol.src_in_limit[0]


def test_wheatstone_bridge_matches_nodal_hand_solution():
    # 1 -R1- 2 -R3- 0 ; 1 -R2- 3 -R4- 0 ; 2 -R5- 3 ; V1 = 10 V
    r1, r2, r3, r4, r5 = 100.0, 200.0, 300.0, 400.0, 500.0
    net = Netlist(4)
    for a, b, r in ((1, 2, r1), (1, 3, r2), (2, 0, r3), (3, 0, r4), (2, 3, r5)):
        net.add_resistor(a, b, 1 / r)
    net.add_source(1, True, 10.0)
    sol = solve(net)
    # hand: KCL at nodes 2 and 3
    G = np.array([[1 / r1 + 1 / r3 + 1 / r5, -1 / r5], [-1 / r5, 1 / r2 + 1 / r4 + 1 / r5]])
    rhs = np.array([10 / r1, 10 / r2])
    v2, v3 = np.linalg.solve(G, rhs)
    assert sol.v[2] == pytest.approx(v2, rel=1e-9)
    assert sol.v[3] == pytest.approx(v3, rel=1e-9)
    assert sol.src_current[0] == pytest.approx((10 - v2) / r1 + (10 - v3) / r2, rel=1e-9)


def test_voltage_source_goes_into_current_compliance():
    net = Netlist(2)
    net.add_resistor(1, 0, 1e-3)  # 1 kΩ
    net.add_source(1, True, 5.0, 1e-3)  # 5 V would need 5 mA
    sol = solve(net)
    assert sol.src_in_limit[0]
    assert sol.src_current[0] == pytest.approx(1e-3, rel=1e-9)
    assert sol.v[1] == pytest.approx(1.0, rel=1e-9)
    net.src_level[0] = -5.0
    sol = solve(net)
    assert sol.src_current[0] == pytest.approx(-1e-3, rel=1e-9) and sol.v[1] == pytest.approx(-1.0)


def test_current_source_into_open_circuit_stops_at_its_voltage_limit():
    net = Netlist(3)
    net.add_resistor(1, 2, 1e-6)  # leads to a floating node
    net.add_source(1, False, 1e-6, 3.0)
    sol = solve(net)
    assert sol.src_in_limit[0]
    assert sol.v[1] == pytest.approx(3.0)
    net.add_resistor(2, 0, 1e-3)  # now a path: 1 µA through ~1 MΩ+1 kΩ needs 1.001 V
    sol = solve(net)
    assert not sol.src_in_limit[0]
    assert sol.v[1] == pytest.approx(1e-6 * (1e6 + 1e3), rel=1e-6)


def test_two_voltage_sources_on_one_node_the_weaker_limits():
    net = Netlist(2)
    net.add_resistor(1, 0, 1e-3)
    net.add_source(1, True, 1.0, 0.1)
    net.add_source(1, True, 2.0, 1e-3)
    sol = solve(net)
    assert sol.v[1] == pytest.approx(1.0)
    assert sol.src_in_limit[1] and sol.src_current[1] == pytest.approx(1e-3)
    assert sol.src_current[0] + sol.src_current[1] == pytest.approx(1e-3, rel=1e-9)


def test_diode_with_resistor_obeys_kcl():
    p = DiodeParams(5e-13, 1.8, 300.0, 5e11)
    for v_src in (-3.0, 0.3, 0.7, 1.0, 5.0, 20.0):
        net = Netlist(3)
        net.add_diode(1, 2, p.i0, p.nvt, p.rs, 1 / p.rsh)
        net.add_resistor(2, 0, 1e-4)
        net.add_source(1, True, v_src)
        sol = solve(net)
        i_d = float(diode_current(sol.v[1] - sol.v[2], p))
        assert i_d == pytest.approx(sol.v[2] * 1e-4, rel=1e-7, abs=1e-20)
        assert sol.src_current[0] == pytest.approx(i_d, rel=1e-7, abs=1e-20)


def test_virtual_clock_tells_listeners_before_moving():
    clock = VirtualClock()
    seen = []
    clock.add_listener(lambda t0, dt: seen.append((t0, dt, clock.now())))
    clock.advance(2.5)
    clock.sleep(1.0)
    assert seen == [(0.0, 2.5, 0.0), (2.5, 1.0, 2.5)] and clock.now() == 3.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.advance(float("nan"))


# ---------------------------------------------------------- bench circuits

#: the bench's circuit without the parasitics that add currents of their own (relay
#: leakage through open crosspoints, capacitive transients): these tests judge which
#: paths the relays make; tests/test_sim_parasitics.py judges the parasitics
CIRCUIT = Physics().without("relay_leakage", "capacitance")


def test_no_closed_relay_means_no_current():
    bench = SimBench(seed=0, site="Q1", physics=CIRCUIT)
    bench.set_source(A, output=True, level=1.0, limit=0.01)
    r = bench.measure(A)
    assert abs(r.i) < 1e-15


def test_current_depends_on_which_crosspoint_is_closed():
    bench = SimBench(seed=0, site="Q1", physics=CIRCUIT)
    wire(bench, "S01.WL", "S01.CL1")  # D1 forward
    i_d1 = apply(bench, 0.8)
    bench.open_relays([(1, 2, pin_of(bench, "S01.CL1"))])
    i_open = apply(bench, 0.8)
    assert i_d1 > 1e-6 and abs(i_open) < 1e-12


def _vmm_ready_array(seed: int) -> SimBench:
    """Array A5 with every M2 in LRS (D2 shorted), as in vmm mode."""
    bench = SimBench(seed=seed, site="A5", physics=CIRCUIT)
    for did in bench.site.devices:
        m2 = bench.wafer.device(did).m2
        m2.set(0.0)
        m2.fix_strength(1e-3)
    return bench


def _connect(bench, row_pads: dict[int, list[str]]):
    bench.set_source(A, output=False)
    bench.set_source(B, output=False)
    bench.open_all_relays()
    cps = []
    for row, pads in row_pads.items():
        for pad in pads:
            p = pin_of(bench, pad)
            cps.append((1, row, p) if p <= 16 else (2, row, p - 16))
    bench.close_relays(cps)


def test_array_selector_diodes_suppress_sneak_paths(seed):
    bench = _vmm_ready_array(seed)
    _connect(bench, {1: ["A5.WL1"], 2: ["A5.BL1"]})
    bench.set_source(B, output=True, level=0.0, limit=0.1)
    i_selected = apply(bench, 1.0)
    # the same cell alone: a fresh bench on which the other cells are isolated
    # (every other cell's M1 set to its minimum and its D1 reverse path is all that is left)
    alone = Netlist(4)
    dev = bench.wafer.device("A5-R1C1")
    p = dev.d1
    alone.add_diode(1, 2, p.i0, p.nvt, p.rs, 1 / p.rsh)
    alone.add_resistor(2, 3, dev.m1.conductance(bench.clock.now()), dev.m1.p.v_nl)  # m1_nonohmic
    alone.add_resistor(3, 0, 1 / dev.m2.resistance(bench.clock.now()))
    p2 = dev.d2
    alone.add_diode(0, 3, p2.i0, p2.nvt, p2.rs, 1 / p2.rsh)
    alone.add_source(1, True, 1.0)
    i_alone = solve(alone).src_current[0]
    assert i_selected == pytest.approx(i_alone, rel=0.01)  # read noise ~0.1 %, sneak < 1 %


def test_array_cells_on_one_bit_line_add(seed):
    bench = _vmm_ready_array(seed)
    _connect(bench, {2: ["A5.BL1"], 1: ["A5.WL1"]})
    bench.set_source(B, output=True, level=0.0, limit=0.1)
    i1 = apply(bench, 1.0)
    _connect(bench, {2: ["A5.BL1"], 1: ["A5.WL2"]})
    bench.set_source(B, output=True, level=0.0, limit=0.1)
    i2 = apply(bench, 1.0)
    _connect(bench, {2: ["A5.BL1"], 1: ["A5.WL1", "A5.WL2"]})
    bench.set_source(B, output=True, level=0.0, limit=0.1)
    i12 = apply(bench, 1.0)
    assert i12 == pytest.approx(i1 + i2, rel=0.01)
    # the bit-line SMU sees the sum too (KCL across the whole array)
    assert bench.measure(B).i == pytest.approx(-i12, rel=0.01)


def test_operator_group_of_three_pcus_in_parallel(seed):
    bench = SimBench(seed=seed, site="Q2", physics=CIRCUIT)
    singles = ["S05", "S06", "S07"]
    for did in singles:  # exp mode: M2 in LRS
        m2 = bench.wafer.device(did).m2
        m2.set(0.0)
        m2.fix_strength(1e-3)
    each = []
    for did in singles:
        _connect(bench, {1: [f"{did}.WL"], 2: [f"{did}.BL"]})
        bench.set_source(B, output=True, level=0.0, limit=0.1)
        each.append(apply(bench, 0.9))
    _connect(bench, {1: [f"{d}.WL" for d in singles], 2: [f"{d}.BL" for d in singles]})
    bench.set_source(B, output=True, level=0.0, limit=0.1)
    together = apply(bench, 0.9)
    assert together == pytest.approx(sum(each), rel=0.01)
    assert min(each) > 1e-7


def test_stuck_relay_conducts_although_reported_open():
    bench = SimBench(seed=0, site="Q1", physics=CIRCUIT)
    wire(bench, "S01.WL", "S01.CL1")
    cp = (1, 1, pin_of(bench, "S01.WL"))
    bench.stick_relay(cp, closed=True)
    bench.set_source(A, output=False)
    bench.open_relays([cp])
    assert cp not in bench.closed_relays()
    assert apply(bench, 0.8) > 1e-6
    bench.unstick_relay(cp)
    assert abs(apply(bench, 0.8)) < 1e-12


def test_relay_events_record_live_outputs_and_close_counts():
    bench = SimBench(seed=0, site="Q1", physics=CIRCUIT)
    cp = (1, 1, 1)
    bench.close_relays([cp])
    bench.open_relays([cp])
    bench.set_source(A, output=True, level=0.5)
    bench.close_relays([cp])
    assert bench.relay_close_count(cp) == 2
    assert [e.live_outputs for e in bench.relay_events] == [(), (), (A,)]


def test_solver_handles_bias_steps_without_warm_start():
    bench = _vmm_ready_array(0)
    _connect(bench, {1: ["A5.WL1", "A5.WL3"], 2: ["A5.BL2"]})
    bench.set_source(B, output=True, level=0.0, limit=0.1)
    currents = [apply(bench, v) for v in (0.0, 10.0, -10.0, 2.0, 0.5)]
    assert all(np.isfinite(currents)) and currents[1] > currents[3] > currents[4] > 0 > currents[2]


def test_current_source_into_a_blocked_path_stops_at_its_limit_quickly():
    """1 µA into a word line whose only way out is a 20 GΩ M2: the source must sit at
    its voltage limit (and, at 5 V, form the filament), not walk Newton to kilovolts."""
    bench = SimBench(seed=0, site="A1", physics=CIRCUIT)
    bench.close_relays([(1, 1, 1), (1, 2, 4)])  # smua -> WL1, smub -> BL1
    bench.set_source(B, output=True, mode="v", level=0.0, limit=0.1)
    bench.set_source(A, output=True, mode="i", level=1e-6, limit=0.3)
    r = bench.measure(A)
    assert r.compliance and r.v == pytest.approx(0.3) and r.i < 1e-9
    assert not bench.wafer.device("A1-R1C1").m2.lrs
    bench.set_source(A, limit=5.0)
    r = bench.measure(A)
    assert bench.wafer.device("A1-R1C1").m2.lrs  # 5 V across the pristine M2 formed it
    assert r.i == pytest.approx(1e-6) and not r.compliance


# ------------------------------------------------ non-ohmic conductors, fast engine


@pytest.mark.parametrize("fast", [True, False])
def test_sinh_conductor_across_a_voltage_source_follows_its_law(fast):
    g, v_nl = 2e-4, 0.3
    for v in (-2.0, -0.3, 0.05, 0.3, 1.5):
        net = Netlist(2)
        net.add_resistor(1, 0, g, v_nl)
        net.add_source(1, True, v)
        sol = solve(net, fast=fast)
        assert sol.src_current[0] == pytest.approx(g * v_nl * np.sinh(v / v_nl), rel=1e-12)


@pytest.mark.parametrize("fast", [True, False])
def test_current_into_a_sinh_conductor_gives_the_inverse_law(fast):
    """A current source into one sinh conductor: V = v_nl·asinh(I/(g·v_nl)), reached by
    the damped Newton iteration from 0 V."""
    g, v_nl = 1e-4, 0.2
    for i in (1e-9, 3e-5, -2e-4, 5e-3):
        net = Netlist(2)
        net.add_resistor(1, 0, g, v_nl)
        net.add_source(1, False, i, 10.0)
        sol = solve(net, fast=fast)
        assert not sol.src_in_limit[0]
        assert sol.v[1] == pytest.approx(v_nl * np.arcsinh(i / (g * v_nl)), rel=1e-9)


def test_sinh_conductor_in_series_with_a_resistor_obeys_kcl():
    g, v_nl, r = 1e-3, 0.3, 500.0
    net = Netlist(3)
    net.add_resistor(1, 2, 1 / r)
    net.add_resistor(2, 0, g, v_nl)
    net.add_source(1, True, 2.0)
    sol = solve(net)
    i_sinh = g * v_nl * np.sinh(sol.v[2] / v_nl)
    assert (2.0 - sol.v[2]) / r == pytest.approx(i_sinh, rel=1e-9)
    assert sol.src_current[0] == pytest.approx(i_sinh, rel=1e-9)
    assert i_sinh < 2.0 / r * 0.9  # far from ohmic at these voltages: the sinh law acted


def test_ohmic_by_default_and_solved_in_one_step():
    net = Netlist(3)
    net.add_resistor(1, 2, 1e-3)
    net.add_resistor(2, 0, 1e-3)
    net.add_source(1, True, 1.0)
    assert np.all(np.isinf(net.resistor_vnl()))
    sol = solve(net)
    assert sol.iterations == 1 and sol.v[2] == pytest.approx(0.5, rel=1e-12)
    i, g = net.resistor_currents(np.array([1.0, -2.0]))
    assert np.allclose(i, [1e-3, -2e-3]) and np.allclose(g, 1e-3)
    net.res_vnl = np.array([np.inf])  # one entry for two conductances
    with pytest.raises(ValueError):
        net.resistor_vnl()
    with pytest.raises(ValueError):
        net.add_resistor(1, 0, 1e-3, v_nl=0.0)


def test_sinh_conductor_does_not_overflow():
    """sinh(V/v_nl) overflows a double past V/v_nl ≈ 710: the argument is clipped, as
    the diodes' leakage is, so a wild bias gives a finite (if absurd) current."""
    net = Netlist(2)
    net.add_resistor(1, 0, 1e-6, 0.02)
    net.add_source(1, True, 30.0)  # sinh(1500)
    with np.errstate(over="raise"):
        sol = solve(net)
        i, g = net.resistor_currents(np.array([30.0, -30.0]))
    assert np.isfinite(sol.src_current).all() and sol.src_current[0] > 1e290
    assert np.isfinite(i).all() and np.isfinite(g).all() and i[0] == -i[1]


def test_fast_diode_evaluation_matches_diode_iv():
    """The fast engine folds the diode constants per solve: same closed form as
    labpcu.sim.diode.diode_iv, finite at any bias."""
    from labpcu.sim.circuit import _DiodeBank
    from labpcu.sim.diode import diode_iv

    rng = np.random.default_rng(1)
    nd = 40
    net = Netlist(2)
    for _ in range(nd):
        net.add_diode(1, 0, 10 ** rng.uniform(-14, -8), 0.026 * rng.uniform(1, 3), 10 ** rng.uniform(0, 3),
                      10 ** rng.uniform(-13, -8), iph=rng.choice([0.0, 1e-9]), i_leak=rng.choice([0.0, 1e-11]),
                      v_leak=rng.uniform(0.05, 0.2))
    bank = _DiodeBank(net)
    for v in (np.linspace(-60, 60, nd), rng.uniform(-1, 1, nd)):
        i, g = bank.iv(v)
        i_ref, g_ref = diode_iv(v, net.dio_i0, net.dio_nvt, net.dio_rs, net.dio_gsh, net.dio_iph, net.dio_ileak,
                                net.dio_vleak)
        assert np.isfinite(i).all() and np.isfinite(g).all()
        assert np.allclose(i, i_ref, rtol=1e-12, atol=1e-24) and np.allclose(g, g_ref, rtol=1e-12, atol=1e-24)


def _random_netlist(rng: np.random.Generator) -> Netlist:
    """Nodes joined at random by ohmic and sinh conductors and diodes (self-loops and
    floating islands included), one to three sources of either mode."""
    n = int(rng.integers(2, 10))
    net = Netlist(n)
    for _ in range(rng.integers(0, 12)):
        a, b = rng.integers(0, n, 2)
        net.add_resistor(a, b, 10 ** rng.uniform(-11, -2), np.inf if rng.random() < 0.6 else 10 ** rng.uniform(-1, 0.3))
    for _ in range(rng.integers(0, 6)):
        a, b = rng.integers(0, n, 2)
        net.add_diode(a, b, 10 ** rng.uniform(-14, -9), 0.026 * rng.uniform(1, 2.5), 10 ** rng.uniform(1, 3),
                      10 ** rng.uniform(-13, -9), iph=rng.choice([0.0, 1e-9]), i_leak=rng.choice([0.0, 1e-10]),
                      v_leak=0.08)
    for _ in range(rng.integers(1, 4)):
        node = rng.integers(0, n)
        if rng.random() < 0.6:
            net.add_source(node, True, rng.uniform(-3, 3), 10 ** rng.uniform(-6, -1))
        else:
            net.add_source(node, False, rng.uniform(-1e-3, 1e-3), rng.uniform(0.1, 3))
    return net


def test_fast_engine_matches_the_reference_engine():
    """The fast engine (cached stamps, folded diode constants, LAPACK, the last
    step's currents from the Jacobian) solves the same networks to the same source
    currents, voltages and compliance states as the plain np.add.at engine."""
    rng = np.random.default_rng(15)
    compared = 0
    for _ in range(600):
        net = _random_netlist(rng)
        try:
            ref = solve(net, fast=False)
        except SolverError:
            continue  # the fast engine hands such networks to the reference anyway
        fast = solve(net, fast=True)
        compared += 1
        assert np.array_equal(fast.src_in_limit, ref.src_in_limit)
        assert np.allclose(fast.src_voltage, ref.src_voltage, rtol=1e-9, atol=1e-9)
        assert np.allclose(fast.src_current, ref.src_current, rtol=1e-6, atol=1e-15)
        # a warm start from the solution converges at once to the same point
        again = solve(net, fast.v)
        assert np.allclose(again.src_current, fast.src_current, rtol=1e-6, atol=1e-15)
    assert compared > 500


def test_conductance_response_is_the_first_order_change_of_a_full_solve():
    """conductance_response (how a reading carries read noise and drift without a new
    solve) against solving the perturbed network: with conductances moved by ~1e-3, what
    is left of the change is second order, whichever sources sit at their
    limits and whatever the diodes' bias: within ~1e-5 of the reading, below the read
    noise itself, and on nearly every network within 1 % of the change."""
    from dataclasses import replace

    from labpcu.sim.circuit import conductance_response

    rng = np.random.default_rng(7)
    compared = first_order = 0
    for _ in range(300):
        net = _random_netlist(rng)
        if not len(net.res_g):
            continue
        try:
            sol = solve(net)
        except SolverError:
            continue
        dg = net.res_g * 1e-3 * rng.standard_normal(len(net.res_g))
        moved = replace(net, res_g=net.res_g + dg, engine=None)
        try:
            exact = solve(moved, sol.v)
        except SolverError:
            continue
        if not np.array_equal(exact.src_in_limit, sol.src_in_limit):
            continue  # the noise pushed a source across its limit: not a first-order change
        dv, di = conductance_response(net, sol, dg)
        # what a reading returns: each source's current and its node's voltage; the
        # solver resolves a node to I_TOL over its conductance (a floating island: ~1e-9 V)
        err_i = np.abs(sol.src_current + di - exact.src_current)
        err_v = np.abs(sol.src_voltage + dv[net.src_node] - exact.src_voltage)
        assert np.all(err_i <= 1e-5 * np.abs(exact.src_current) + 1e-16)  # ~1e-5 of the reading
        assert np.all(err_v <= 1e-5 * np.abs(exact.src_voltage) + 1e-9)
        change_i = np.max(np.abs(exact.src_current - sol.src_current))
        change_v = np.max(np.abs(exact.src_voltage - sol.src_voltage))
        first_order += bool(np.all(err_i <= 1e-2 * change_i + 1e-16) and np.all(err_v <= 1e-2 * change_v + 1e-9))
        # a second reading of the same solution reuses the factor and agrees
        dv2, di2 = conductance_response(net, sol, dg)
        assert np.array_equal(di2, di) and np.array_equal(dv2, dv)
        compared += 1
    assert compared > 150
    # within 1 % of the change itself, save a few networks of sources clamped against
    # each other around nearly floating nodes, where the second order grows
    assert first_order >= 0.95 * compared
