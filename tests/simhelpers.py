"""Test helpers: driving the simulated bench directly (no emulator in between), and
checking what a Bench on the simulator sent and left behind."""

from __future__ import annotations

from typing import Any

from labpcu.sim.bench import SimBench

A, B = "k2612a.smua", "k2612a.smub"


def pin_of(bench: SimBench, pad: str) -> int:
    for pin, (name, _net) in bench.pins().items():
        if name == pad:
            return pin
    raise KeyError(pad)


def wire(bench: SimBench, hi_pad: str, lo_pad: str) -> None:
    """Join smua (row 1) to ``hi_pad`` and smub (row 2) to ``lo_pad``; outputs off first."""
    bench.set_source(A, output=False)
    bench.set_source(B, output=False)
    bench.open_all_relays()
    hp, lp = pin_of(bench, hi_pad), pin_of(bench, lo_pad)
    slot_h, col_h = (1, hp) if hp <= 16 else (2, hp - 16)
    slot_l, col_l = (1, lp) if lp <= 16 else (2, lp - 16)
    bench.close_relays([(slot_h, 1, col_h), (slot_l, 2, col_l)])
    bench.set_source(B, output=True, mode="v", level=0.0, limit=0.1)


def apply(bench: SimBench, volts: float, limit: float = 0.1, duration: float = 0.0) -> float:
    """Source ``volts`` on smua (smub at 0 V) and return smua's current."""
    bench.set_source(A, output=True, mode="v", level=volts, limit=limit)
    return bench.measure(A, duration).i


def pulse(bench: SimBench, volts: float, width: float, limit: float = 0.1) -> None:
    bench.set_source(A, output=True, mode="v", level=volts, limit=limit)
    bench.advance(width)
    bench.set_source(A, level=0.0)


def sent(bench: Any) -> dict[str, int]:
    """How many messages each emulator behind a simulated Bench has received so far."""
    return {name: len(emu.messages_in()) for name, emu in bench.sim.emulators.items()}


def assert_safe(bench: Any) -> None:
    """Every output off and every relay open on a simulated Bench."""
    sim = bench.sim.bench
    assert sim.live_outputs() == [], "an output is still on"
    assert sim.closed_relays() == set(), "a relay is still closed"
