"""The element guard with series resistance (labpcu/device_limits.py): a driven pad sits
off its terminal's level by the I·R of its path, so the guard widens each terminal's
level by PATH_RESISTANCE × the current its path can carry. Judged by the simulator:
what each element saw (``SimBench.stress``) with ``series_resistance`` on.

The circuit (as tests/test_sim_parasitics.py): quad site Q5, PCU S17; smua on WL,
smub on n1 (CL1) at 0 V with 100 mA compliance, b1500a.1 on BL at −0.5 V drawing up to
1 mA out of n1 through smub's path, so D1 sees more than WL − n1's levels.
"""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.benchfile import Limits
from labpcu.device_limits import PATH_RESISTANCE, ElementGuard, site_elements
from labpcu.instruments.errors import LimitError
from labpcu.instruments.roles import TerminalState
from labpcu.sim.bench import SimBench
from labpcu.sim.circuit import V_TOL
from labpcu.sim.parasitics import PATH_RESISTANCE as SIM_PATH_RESISTANCE
from labpcu.sim.physics import Physics

A, B, C = "k2612a.smua", "k2612a.smub", "b1500a.1"
NETS = {A: {"S17.WL"}, B: {"S17.n1"}, C: {"S17.BL"}}


def three_terminal_bench(physics: Physics) -> SimBench:
    b = SimBench(seed=0, physics=physics)
    b.track_stress = True
    b.move_to("Q5")
    b.close_relays([(1, 1, 1), (1, 2, 3), (1, 3, 2)])  # smua → WL, smub → n1, b1500a.1 → BL
    b.set_source(B, output=True, mode="v", level=0.0, limit=0.1)
    b.set_source(C, output=True, mode="v", level=-0.5, limit=1e-3)
    return b


def states(level: float, compliance: float = 1e-3) -> dict[str, TerminalState]:
    return {A: TerminalState.voltage(level, level, compliance), B: TerminalState.voltage(0.0, 0.0, 0.1),
            C: TerminalState.voltage(-0.5, -0.5, 1e-3)}


def seen(b: SimBench, level: float, compliance: float = 1e-3) -> dict[str, float]:
    """The largest |V| across each element with smua at ``level``."""
    b.stress.clear()
    b.set_source(A, output=True, mode="v", level=level, limit=compliance)
    b.measure(A)
    return {label: v for label, (v, _) in b.stress.items()}


def guard(limit_diode: float = 10.0, path_resistance: float = PATH_RESISTANCE) -> ElementGuard:
    b = SimBench(seed=0)
    b.move_to("Q5")
    limits = {"diode": Limits(limit_diode, 1.0), "m1": Limits(10.0, 1.0), "m2": Limits(10.0, 1.0)}
    return ElementGuard(site_elements(b.wafer, b.site), limits, NETS, path_resistance)


def test_the_guard_resistance_covers_the_simulated_path():
    assert PATH_RESISTANCE >= SIM_PATH_RESISTANCE


@pytest.mark.parametrize("physics", [Physics.ideal().only("series_resistance", "m1_series"), Physics()],
                         ids=["series_resistance", "default"])
def test_every_element_stays_within_the_guards_bound(physics):
    b = three_terminal_bench(physics)
    g, levels_only = guard(), guard(path_resistance=0.0)
    gap = 0.0
    for level in np.linspace(-1.0, 1.0, 9):
        v = seen(b, float(level))
        bound, plain = g.bounds(states(level)), levels_only.bounds(states(level))
        for label, x in v.items():
            # slack: the solver's voltage tolerance (an unreached PCU floats at ~V_TOL)
            assert x <= bound[label][0] + V_TOL, (level, label, x, bound[label])
            gap = max(gap, x - plain[label][0])
    # the paths' I·R is real: bounding from the levels alone misses what b1500a.1 draws
    # out of n1 through smub's path times that path's resistance (6.3 Ω per mA: 6.3 mV)
    drawn = abs(b.measure(C).i)
    assert drawn > 1e-5 and gap >= 0.8 * SIM_PATH_RESISTANCE * drawn
    if physics.off == Physics.ideal().only("series_resistance", "m1_series").off:  # nothing else moves the pads
        assert gap == pytest.approx(SIM_PATH_RESISTANCE * drawn, rel=0.2)


def test_a_combination_the_guard_accepts_keeps_every_element_within_its_limit():
    """Diode limit 0.53 V: WL at 0.53 V against n1 at 0 V is within it by the levels,
    but b1500a.1 draws ≈ 1 mA through smub's path and D1 sees ≈ 6 mV more. The guard
    refuses it (saying why); whatever it accepts stays within the limit."""
    limit = 0.53
    b = three_terminal_bench(Physics.ideal().only("series_resistance", "m1_series"))
    assert seen(b, limit)["S17.D1"] > limit  # what the levels-only guard would have let through
    guard(limit, path_resistance=0.0).check(states(limit))
    g = guard(limit)
    with pytest.raises(LimitError, match=r"S17\.D1 \(diode\) could see 0\.53 V across it .* plus up to .* of I·R"):
        g.check(states(limit))
    accepted = refused = 0
    for level in np.linspace(0.45, limit, 17):
        for compliance in (1e-4, 1e-3):
            try:
                g.check(states(float(level), compliance))
            except LimitError:
                refused += 1
                continue
            accepted += 1
            assert max(seen(b, float(level), compliance).values()) <= limit
    assert accepted and refused
