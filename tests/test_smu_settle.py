"""An SMU role's settle time: every reading waits it after its level, on the bench clock,
and a sweep asked to settle runs level by level from the host on either instrument
(the 2600's list sweep has no per-point wait)."""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.bench import Bench
from labpcu.protocol_bench import ProtocolBench
from labpcu.protocols.common import connect_component
from labpcu.sim.physics import Physics


@pytest.fixture()
def bench():
    with Bench.from_file(physics=Physics().without("capacitance")) as b:
        yield b


@pytest.mark.parametrize("terminals", [("k2612a.smua", "k2612a.smub"), ("b1500a.1", "b1500a.4")])
def test_a_settling_sweep_waits_at_every_level_and_reads_what_the_plain_sweep_reads(bench, terminals):
    force, _ = connect_component(bench, "S01", "d1", terminals)
    levels = np.linspace(0.2, 0.5, 4)
    plain = force.sweep_voltage(levels, 1e-4)
    force.settle = 0.5
    t0 = bench.clock.now()
    settled = force.sweep_voltage(levels, 1e-4)
    assert bench.clock.now() - t0 >= 0.5 * len(levels)
    np.testing.assert_allclose(settled.current, plain.current, rtol=0.02)
    assert not force.output  # the output ends as it began
    force.settle = 0.0
    force.source_voltage(0.3, 1e-4)
    force.output_on()
    t0 = bench.clock.now()
    force.measure()
    assert bench.clock.now() - t0 < 0.5  # no settle asked: no wait


def test_a_protocol_cannot_ask_for_a_negative_settle_time(bench):
    smu = ProtocolBench(bench).smu("k2612a.smua")
    with pytest.raises(ValueError, match="settle time must be >= 0"):
        smu.settle = -1.0
    smu.settle = 0.25
    assert bench.smu("k2612a.smua").settle == 0.25
