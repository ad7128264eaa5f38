"""The element guard's bounds are computed vectorized over the instants
(``_Structure.bounds``, run before every level a protocol sets); they must equal the
plain loops they replace (``_Structure._bounds_reference``) for every kind of terminal
state: fixed levels, ranges, current sources pushing or drawing, outputs that are off
(held at 0 V or floating), one or several nets per terminal, with and without the
paths' I·R."""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.benchfile import Limits
from labpcu.device_limits import ElementGuard, site_elements
from labpcu.instruments.roles import OFF, TerminalState
from labpcu.sim.bench import SimBench

TERMINALS = ["k2612a.smua", "k2612a.smub", "b1500a.1", "b1500a.2"]
LIMITS = {"diode": Limits(2.0, 1e-2), "m1": Limits(1.5, 1e-3), "m2": Limits(2.0, 1e-2)}


def _state(rng: np.random.Generator) -> TerminalState:
    kind = rng.integers(0, 5)
    if kind == 0:
        v = float(rng.choice([0.0, 0.5, -0.5, rng.uniform(-2, 2)]))
        return TerminalState.voltage(v, v, 10 ** rng.uniform(-6, -2))
    if kind == 1:
        return TerminalState.voltage(rng.uniform(-2, 0), rng.uniform(0, 2), 10 ** rng.uniform(-6, -2))
    if kind == 2:
        return TerminalState.current_source(float(rng.choice([-1, 1, 0])) * 10 ** rng.uniform(-7, -3), rng.uniform(0.1, 2))
    if kind == 3:
        return TerminalState(floating=True)
    return OFF


@pytest.mark.parametrize("site", ["Q1", "A5"])
def test_vectorized_bounds_equal_the_loops(site):
    bench = SimBench(seed=0, site=site)
    elements = site_elements(bench.wafer, bench.site)
    nets = sorted({n for e in elements for n in (e.a, e.b)})
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(150):
        k = int(rng.integers(1, 5))
        connections = {t: set(rng.choice(nets, size=int(rng.integers(1, 3)), replace=False)) for t in TERMINALS[:k]}
        guard = ElementGuard(elements, LIMITS, connections)
        states = {t: _state(rng) for t in connections}
        structure = guard.structure(guard._driving(states))
        for r in (None, 0.0, 1e3):
            fast = structure.bounds(states, path_resistance=r)
            ref = structure._bounds_reference(states, path_resistance=r)
            assert fast.keys() == ref.keys()
            for label, (v, i) in ref.items():
                assert fast[label][0] == pytest.approx(v, abs=1e-12)
                assert fast[label][1] == pytest.approx(i, rel=1e-12, abs=1e-18)
            checked += any(v > 0 for v, _ in ref.values())
    assert checked > 50  # most draws put some voltage on some element
