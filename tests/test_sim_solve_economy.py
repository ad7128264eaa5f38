"""What the simulated bench leaves unsolved, and that leaving it changes nothing a test
can measure (labpcu/sim/bench.py): a setting re-sent unchanged, a compliance state
read back, a pulse whose sub-steps grow while M1's voltage holds still, a source state
seen before. Judged on the simulator: solve counts, Newton iterations, the random
stream, the device state a pulse leaves."""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.sim import bench as simbench
from labpcu.sim.bench import SimBench
from labpcu.sim.physics import Physics
from simhelpers import A, B, apply, pulse, wire


def _m1_bench(physics: Physics | None = None) -> SimBench:
    bench = SimBench(seed=0, site="Q1", physics=physics)
    wire(bench, "S01.CL1", "S01.CL2")
    return bench


def test_a_setting_sent_again_unchanged_solves_nothing():
    bench = _m1_bench()
    apply(bench, 0.1)
    before = bench.solve_count
    for _ in range(5):  # an instrument re-sending function, limit and level
        bench.set_source(A, output=True, mode="v", level=0.1, limit=0.1)
    assert bench.solve_count == before
    bench.set_source(A, level=0.11)  # a real change is solved at once
    assert bench.solve_count > before


def test_the_compliance_state_is_read_without_a_solve_or_a_random_draw():
    bench = _m1_bench()
    apply(bench, 0.1, limit=1e-6)  # M1 at ~100 µS draws far more than 1 µA: at the limit
    state = bench.rng.bit_generator.state
    before = bench.solve_count
    assert bench.in_limit(A) and not bench.in_limit(B)
    assert bench.solve_count == before and bench.rng.bit_generator.state == state
    assert bench.measure(A).compliance


@pytest.mark.parametrize("volts", [1.0, -1.0, 0.35])
def test_growing_pulse_substeps_leave_m1_where_fixed_ones_do(volts, monkeypatch):
    """A range-finding pulse (±1 V, 20 ms: saturating) and a programming one (0.35 V):
    sub-steps that double while M1's voltage holds still end within 0.5 % of M1's range
    of the fixed sub-steps, with far fewer solves."""
    results = {}
    for steady in (0.0, simbench.SUBSTEP_STEADY_V):  # 0: never doubles
        monkeypatch.setattr(simbench, "SUBSTEP_STEADY_V", steady)
        bench = _m1_bench()
        m1 = bench.wafer.device("S01").m1
        pulse(bench, -1.0 if volts > 0 else 1.0, 0.02)  # start from the other end
        start = bench.solve_count
        pulse(bench, volts, 0.02)
        results[steady] = (m1.conductance(bench.clock.now()), bench.solve_count - start, m1.p.g_range)
    (g_fixed, n_fixed, g_range), (g_grown, n_grown, _) = results[0.0], results[simbench.SUBSTEP_STEADY_V]
    assert abs(g_grown - g_fixed) <= 0.005 * g_range
    assert n_grown <= n_fixed
    if abs(volts) == 1.0:  # a saturating pulse: its sub-steps grow
        assert n_grown < n_fixed / 2


def test_a_source_state_seen_before_starts_from_its_solution():
    """A VMM's bit planes revisit a few row patterns: a visit's solve starts from the
    last answer found with the sources as they are, voltages and compliance states, and
    converges at once where the first visit took Newton several steps across D1's
    exponential (word line to bit line, forward; the first 0.6 V visit sets M2, so the
    memory pays from the third round on)."""
    bench = SimBench(seed=0, site="Q1", physics=Physics().without("read_noise"))
    wire(bench, "S01.WL", "S01.BL")
    rounds = []
    for _ in range(3):
        rounds.append([])
        for level in (0.45, 0.6):
            reading = apply(bench, level, limit=1e-3)
            rounds[-1].append(bench._settled.iterations)
    assert max(rounds[0]) > 2 and max(rounds[2]) <= 1
    assert np.isfinite(reading) and abs(reading) > 1e-6  # D1 conducts
