"""The element guard remembers what it proved (labpcu/device_limits.py): states are
proven in envelopes (the union of the terminals' intervals, the largest currents),
widened as new states come, and a state inside one passes without a check. Each
verdict must stay exactly what a fresh guard gives: a state outside every envelope is
checked, and an unsafe one is refused with the guard's own message.

The circuit: quad site Q5, PCU S17; smua on WL, smub on n1 at 0 V, b1500a.1 on BL at
−0.5 V; the diodes' limit is 1.2 V, so WL above ≈ +1.2 V or below ≈ −1.2 V is refused."""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.benchfile import Limits
from labpcu.device_limits import ElementGuard, site_elements
from labpcu.instruments.errors import LimitError
from labpcu.instruments.roles import TerminalState
from labpcu.sim.bench import SimBench

A, B, C = "k2612a.smua", "k2612a.smub", "b1500a.1"
NETS = {A: {"S17.WL"}, B: {"S17.n1"}, C: {"S17.BL"}}


def guard() -> ElementGuard:
    b = SimBench(seed=0)
    b.move_to("Q5")
    limits = {"diode": Limits(1.2, 1.0), "m1": Limits(10.0, 1.0), "m2": Limits(10.0, 1.0)}
    return ElementGuard(site_elements(b.wafer, b.site), limits, NETS)


def states(level: float, compliance: float = 1e-3) -> dict[str, TerminalState]:
    return {A: TerminalState.voltage(level, level, compliance), B: TerminalState.voltage(0.0, 0.0, 0.1),
            C: TerminalState.voltage(-0.5, -0.5, 1e-3)}


def verdict(g: ElementGuard, level: float) -> str:
    try:
        g.check(states(level), changing=A)
    except LimitError as exc:
        return str(exc)
    return "safe"


@pytest.fixture
def counted(monkeypatch):
    """A guard that counts the full checks it runs."""
    g = guard()
    calls = []
    full = g._check_now
    monkeypatch.setattr(g, "_check_now", lambda s, c: (calls.append(s[A]), full(s, c))[1])
    return g, calls


def test_levels_inside_a_proven_envelope_cost_no_check(counted):
    g, calls = counted
    levels = np.linspace(-0.5, 0.6, 23)
    for v in levels:
        g.check(states(float(v)), changing=A)
    first = len(calls)
    assert first <= 2 * len(levels)  # each new level: at most a widening and the level itself
    for v in np.random.default_rng(1).uniform(-0.5, 0.6, 200):
        g.check(states(float(v)), changing=A)
    assert len(calls) == first  # all inside the envelope proven from the ends
    assert any(s.v_lo < s.v_hi for s in calls)  # the envelope was proven as a range


def test_every_verdict_matches_a_fresh_guard():
    levels = [0.1, 0.5, -0.3, 0.9, 1.1, 2.0, 0.7, -1.5, -0.2, 1.3, 0.0, -1.0, 1.15]
    remembering = guard()
    seen = [verdict(remembering, v) for v in levels]
    assert seen == [verdict(guard(), v) for v in levels]
    assert "safe" in seen and any(x != "safe" for x in seen)  # both verdicts were exercised


def test_an_unsafe_level_beyond_the_envelope_is_refused_and_the_envelope_still_serves(counted):
    g, calls = counted
    for v in (0.0, 0.4, 0.8):
        g.check(states(v), changing=A)
    with pytest.raises(LimitError, match="S17.D1 .*could see"):
        g.check(states(3.0), changing=A)
    n = len(calls)
    g.check(states(0.6), changing=A)  # inside the envelope proven before the refusal
    assert len(calls) == n


def test_a_larger_compliance_or_another_terminal_widens_the_envelope(counted):
    g, calls = counted
    g.check(states(0.2), changing=A)
    g.check(states(0.4), changing=A)
    n = len(calls)
    g.check(states(0.3, compliance=2e-3), changing=A)  # another current: not covered
    assert len(calls) == n + 1
    other = states(0.3)
    other[C] = TerminalState.voltage(-0.4, -0.4, 1e-3)
    g.check(other, changing=A)
    assert len(calls) == n + 2


def test_a_current_source_is_covered_up_to_the_largest_current_proven(counted):
    g, calls = counted

    def forcing(amps: float) -> dict[str, TerminalState]:
        out = states(0.0)
        out[A] = TerminalState.current_source(amps, 1.0)
        return out

    for amps in (1e-6, 5e-6, 1e-5):
        g.check(forcing(amps), changing=A)
    n = len(calls)
    for amps in np.linspace(1e-7, 1e-5, 50):
        g.check(forcing(float(amps)), changing=A)
    assert len(calls) == n
    g.check(forcing(-2e-6), changing=A)  # drawing current: another kind of state
    assert len(calls) == n + 1
    with pytest.raises(LimitError, match="S17.D1 .*I·R on the paths"):
        g.check(forcing(5.0), changing=A)  # 5 A through the paths: refused, not covered
