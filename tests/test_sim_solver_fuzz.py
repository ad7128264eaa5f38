"""The circuit solver converges for every network the relays can make: any pads of a
quad or an array site joined to any SMU rows, each source in voltage or current mode
at any level and compliance. Found by fuzzing: a current source into a floating pad,
two sources in series reaching equal limits at once, current sources clamping
against each other on separate islands. The parasitic paths (series resistance, relay
leakage) are part of every network; a reading may differ from the solved source current
by the closed paths' offset current (relay_leakage, at most OFFSET_CURRENT_MAX per path),
and capacitive transients are switched off (readings are taken right after each step)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labpcu.sim.bench import SimBench
from labpcu.sim.parasitics import OFFSET_CURRENT_MAX
from labpcu.sim.physics import Physics
from simhelpers import pin_of

ROWS = {"k2612a.smua": 1, "k2612a.smub": 2, "b1500a.1": 3, "b1500a.2": 4}


def _source(draw_mode: bool, level: float, limit: float) -> dict:
    if draw_mode:
        return dict(output=True, mode="v", level=level * 1.5, limit=limit * 1e-3)
    return dict(output=True, mode="i", level=level * 1e-3, limit=0.05 + limit * 1.45)


@settings(max_examples=300, deadline=None)
@given(site=st.sampled_from(["Q1", "A3"]), data=st.data())
def test_every_network_the_relays_can_make_solves(site, data):
    bench = SimBench(seed=0, site=site, physics=Physics().without("capacitance"))
    pads = sorted(name for name, _net in bench.pins().values())
    terminals = data.draw(st.lists(st.sampled_from(sorted(ROWS)), min_size=1, max_size=4, unique=True))
    chosen = data.draw(st.lists(st.sampled_from(pads), min_size=len(terminals), max_size=len(terminals), unique=True))
    for terminal, pad in zip(terminals, chosen):
        pin = pin_of(bench, pad)
        bench.close_relays([(1 if pin <= 16 else 2, ROWS[terminal], pin if pin <= 16 else pin - 16)])
    for terminal in terminals:
        kw = _source(data.draw(st.booleans()), data.draw(st.floats(-1, 1)), data.draw(st.floats(1e-3, 1)))
        bench.set_source(terminal, **kw)  # settles: solves the circuit
        reading = bench.measure(terminal)
        state = bench.source(terminal)
        assert np.isfinite(reading.i) and np.isfinite(reading.v)
        offset = OFFSET_CURRENT_MAX  # one closed path per terminal
        if state.mode == "v":  # at its level, or at its current limit
            assert abs(reading.v - state.level) < 1e-6 or abs(reading.i) >= state.limit * (1 - 1e-6) - offset
        else:  # at its current, or at its voltage limit
            assert abs(reading.i - state.level) < 1e-9 + 1e-6 * abs(state.level) or abs(reading.v) >= state.limit * (1 - 1e-6)


def test_sources_clamping_in_turn_on_two_pcus_settle():
    """Found by fuzzing: on quad Q1, a 1 mA source into S01's n1 beside a 0 A source on
    its bit line (both must clamp at 1.5 V), and a 0 A source on S02's n1 beside a
    0.25 mA-limited 0.75 V source on its n2. The active-set passes clamped and released
    these in a cycle, one change per pass too; the exhaustive search finds the one
    consistent state: S02's sources at their levels (n1 follows n2 through M1, ~0 A)."""
    bench = SimBench(seed=0, site="Q1", physics=Physics().without("capacitance"))
    for terminal, pad in zip(ROWS, ["S02.CL1", "S02.CL2", "S01.BL", "S01.CL1"]):
        pin = pin_of(bench, pad)
        bench.close_relays([(1 if pin <= 16 else 2, ROWS[terminal], pin if pin <= 16 else pin - 16)])
    bench.set_source("b1500a.1", **_source(False, 0.0, 1.0))
    bench.set_source("b1500a.2", **_source(False, 1.0, 1.0))
    assert bench.measure("b1500a.2").v == pytest.approx(1.5, rel=1e-6)  # 1 mA into a floating pad: clamped
    bench.set_source("k2612a.smua", **_source(False, 0.0, 1.0))
    bench.set_source("k2612a.smub", **_source(True, 0.5, 0.25))
    smub, smua = bench.measure("k2612a.smub"), bench.measure("k2612a.smua")
    assert smub.v == pytest.approx(0.75) and not smub.compliance and abs(smub.i) < 1e-9
    assert smua.i == 0.0 and smua.v == pytest.approx(0.75, abs=1e-3)  # n1 follows n2 through M1
