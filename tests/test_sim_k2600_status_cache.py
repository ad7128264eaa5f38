"""The 2600 status model skips a recomputation when nothing it reads has changed
(``StatusModel.update``). These tests run one session on two emulators, one with the
shortcut and one that recomputes every register after every message as before, and
require every observable of the status model to agree after every message: the
status byte, each register's condition and latched event, the SRQ line and count, and
every reply. A shortcut that missed an input would lose or delay a transition; the
last test shows the comparison catches exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from labpcu.sim.bench import SimBench
from labpcu.sim.physics import Physics
from labpcu.sim.tsp.k2600 import K2612AEmulator, StatusModel
from simhelpers import pin_of

BENCH_PHYSICS = Physics().without("instrument_accuracy", "capacitance", "series_resistance", "relay_leakage")

#: every register set with every bit enabled and latching both ways, so that any
#: transition shows up in an event register and in the status byte
ALL_ON = [f"{reg}.enable = 65535 {reg}.ptr = 65535 {reg}.ntr = 65535" for reg in (
    "status.operation", "status.operation.sweeping", "status.operation.user", "status.operation.instrument",
    "status.operation.instrument.smua", "status.operation.instrument.smub", "status.measurement",
    "status.measurement.current_limit", "status.measurement.voltage_limit", "status.measurement.reading_overflow",
    "status.measurement.buffer_available", "status.measurement.instrument", "status.measurement.instrument.smua",
    "status.measurement.instrument.smub", "status.standard", "status.questionable", "status.system",
)] + ["status.request_enable = 255"]

SWEEP = """reset()
smua.source.func = smua.OUTPUT_DCVOLTS
smua.source.limiti = 0.01
smua.nvbuffer1.clear()
smua.nvbuffer2.clear()
smua.trigger.source.linearv(0, 0.8, 5)
smua.trigger.source.limiti = 0.01
smua.trigger.measure.action = smua.ENABLE
smua.trigger.measure.iv(smua.nvbuffer1, smua.nvbuffer2)
smua.trigger.endsweep.action = smua.SOURCE_IDLE
smua.trigger.count = 5
smua.trigger.source.action = smua.ENABLE
smua.source.output = smua.OUTPUT_ON""".splitlines()

#: a session that moves every input of the status model: sweeps starting and ending
#: (one held by *TRG), buffers filling and clearing, a current limit reached and left,
#: a reading overflow, user conditions, errors, event reads, *CLS, resets
SESSION = [
    *SWEEP, *ALL_ON,
    "*STB?", "smua.trigger.initiate()", "*STB?", "print(status.operation.sweeping.condition)",
    "waitcomplete()", "*STB?", "print(status.operation.sweeping.event)", "print(status.operation.event)",
    "print(status.measurement.buffer_available.event)", "smua.nvbuffer1.clear()", "smua.nvbuffer2.clear()",
    "*STB?", "print(status.measurement.event)",
    "smua.trigger.source.stimulus = trigger.EVENT_ID", "smua.trigger.initiate()", "*TRG", "delay(0.1)",
    "*STB?", "*TRG", "*TRG", "*TRG", "*TRG", "delay(0.1)", "*STB?",
    "smub.source.output = 1 smua.source.limiti = 1e-6 smua.source.levelv = 1 smua.source.output = 1",
    "smua.measure.i()", "*STB?", "print(status.measurement.current_limit.condition)",
    "print(status.measurement.current_limit.event)", "smua.source.levelv = 0", "smua.measure.i()",
    "print(status.measurement.current_limit.event)", "*STB?",
    "smua.source.limiti = 0.01 smua.source.levelv = 1 smua.measure.autorangei = 0 smua.measure.rangei = 1e-7",
    "smua.measure.i()", "*STB?", "print(status.measurement.reading_overflow.event)",
    "smua.measure.autorangei = 1", "smua.measure.i()", "print(status.measurement.reading_overflow.condition)",
    "status.operation.user.condition = 5", "*STB?", "status.operation.user.condition = 0",
    "print(status.operation.user.event)", "status.operation.user.ntr = 0",
    "status.operation.user.condition = 3", "status.operation.user.condition = 0", "*STB?",
    "smua.source.levelv = = 1", "*STB?", "*ESR?", "*STB?", "print(errorqueue.count)", "errorqueue.clear()",
    "*STB?", "*OPC", "*ESR?", "*SRE 0", "*STB?", "*SRE 32", "*ESE 1", "*OPC", "*STB?", "*CLS", "*STB?",
    "status.reset()", "*STB?", *ALL_ON, "smua.measure.i()", "*STB?", "smua.reset()", "*STB?",
    "reset()", "*STB?", "print(status.condition)",
]


def _snapshot(emu: K2612AEmulator) -> tuple[Any, ...]:
    sm = emu.status_model
    regs = tuple((reg.lua_path, reg.cond, reg.ev) for top in sm.registers for reg in top.walk())
    return sm.stb, sm.srq, sm.srq_count, regs, emu.take_output()


def _session(no_shortcut: bool, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, ...]]:
    bench = SimBench(seed=0, site="Q1", physics=BENCH_PHYSICS)
    bench.close_relays([(1, 1, pin_of(bench, "S01.WL")), (1, 2, pin_of(bench, "S01.CL1"))])
    emu = K2612AEmulator(bench)
    requests: list[int] = []
    emu.status_model.on_srq = requests.append
    for message in SESSION:
        with monkeypatch.context() as m:
            if no_shortcut:  # a key equal to nothing: every update recomputes, as before
                m.setattr(StatusModel, "_inputs", lambda self: object())
            emu.write(message)
        yield (message, *_snapshot(emu), tuple(requests))


def _compare(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Run both sessions side by side; (messages compared, status byte changes)."""
    n = changes = 0
    last = None
    for fast, full in zip(_session(False, monkeypatch), _session(True, monkeypatch), strict=True):
        assert fast == full, f"after {fast[0]!r}"
        n += 1
        changes += fast[1] != last
        last = fast[1]
    return n, changes


def test_shortcut_loses_no_transition(monkeypatch: pytest.MonkeyPatch) -> None:
    n, changes = _compare(monkeypatch)
    assert n == len(SESSION)
    assert changes >= 8  # the session does move the status byte, many times


def test_shortcut_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Levels and readings, each with a query: the register sets are refreshed only
    when a reading changes what they read, not after every message."""
    bench = SimBench(seed=0, site="Q1", physics=BENCH_PHYSICS)
    emu = K2612AEmulator(bench)
    emu.write("smua.source.limiti = 1e-3 smua.source.output = 1")
    refreshes = 0
    recompute = StatusModel._recompute

    def counting(self: StatusModel) -> int:
        nonlocal refreshes
        refreshes += 1
        return recompute(self)

    monkeypatch.setattr(StatusModel, "_recompute", counting)
    for k in range(50):
        emu.write(f"smua.source.levelv = {k * 0.01}")
        emu.write("print(smua.measure.iv())")
        emu.take_output()
        emu.write("print(errorqueue.count)")
        emu.take_output()
    assert refreshes <= 5  # 150 messages, 200 updates


@pytest.mark.parametrize("hidden", ["limit status", "version"])
def test_comparison_catches_a_missed_input(monkeypatch: pytest.MonkeyPatch, hidden: str) -> None:
    """A key blind to one input (the channels' limit status, or register writes)
    makes the sessions differ: the comparison above can fail."""
    honest = StatusModel._inputs

    def blind(self: StatusModel) -> tuple[Any, ...]:
        key = list(honest(self))
        if hidden == "version":
            key[0] = 0
        else:
            for k in range(len(self._emu.channels)):
                key[1 + 4 * k + 1] = 0
        return tuple(key)

    monkeypatch.setattr(StatusModel, "_inputs", blind)
    with pytest.raises(AssertionError, match="after"):
        _compare(monkeypatch)
