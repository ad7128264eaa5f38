"""The Keithley 3706A + 3730 emulator, message by message, on the shared bench."""

from __future__ import annotations

import pytest

from labpcu.sim.bench import SimBench
from labpcu.sim.physics import Physics
from labpcu.sim.tsp.k3706 import K3706AEmulator


@pytest.fixture
def rig():
    bench = SimBench(seed=0, site="Q1")
    return bench, K3706AEmulator(bench)


def ask(emu, message: str) -> str:
    emu.write(message)
    return emu.take_output().decode().rstrip("\n")


def errors(emu) -> list[tuple[float, str]]:
    out = []
    while True:
        code, msg, *_ = ask(emu, "print(errorqueue.next())").split("\t")
        if float(code) == 0:
            return out
        out.append((float(code), msg))


def test_identity_and_cards(rig):
    _, emu = rig
    assert ask(emu, "*IDN?").startswith("KEITHLEY INSTRUMENTS INC.,MODEL 3706A,")
    assert ask(emu, "print(slot[1].idn)").startswith("3730,6x16 High Density Matrix")
    assert ask(emu, "print(slot[2].idn)").startswith("3730,")
    assert ask(emu, "print(slot[5].idn)") == "Empty Slot"
    rows, cols = ask(emu, "print(slot[1].rows.matrix, slot[1].columns.matrix)").split("\t")
    assert (float(rows), float(cols)) == (6, 16)
    assert float(ask(emu, "print(slot[1].interlock.state)")) == 1
    assert ask(emu, "print(localnode.model)") == "3706A"


def test_close_reaches_the_bench_and_getclose_uses_semicolons(rig):
    bench, emu = rig
    emu.write('channel.close("1101,2316")')
    assert bench.closed_relays() == {(1, 1, 1), (2, 3, 16)}
    assert ask(emu, 'print(channel.getclose("allslots"))') == "1101;2316"
    assert ask(emu, 'print(channel.getclose("slot2"))') == "2316"
    emu.write('channel.open("1101")')
    assert bench.closed_relays() == {(2, 3, 16)}
    emu.write('channel.open("allslots")')
    assert ask(emu, 'print(channel.getclose("allslots"))') == "nil"
    assert errors(emu) == []


def test_range_closes_a_rectangle(rig):
    bench, emu = rig
    emu.write('channel.close("1201:1302")')
    assert bench.closed_relays() == {(1, 2, 1), (1, 2, 2), (1, 3, 1), (1, 3, 2)}


def test_exclusiveclose_breaks_before_it_makes(rig):
    bench, emu = rig
    emu.write('channel.close("1101,1102")')
    bench.relay_events.clear()
    emu.write('channel.exclusiveclose("1103")')
    assert [(e.action, e.crosspoint) for e in bench.relay_events] == [
        ("open", (1, 1, 1)), ("open", (1, 1, 2)), ("close", (1, 1, 3))]
    emu.write("channel.connectrule = channel.MAKE_BEFORE_BREAK")
    bench.relay_events.clear()
    emu.write('channel.exclusiveclose("1104")')
    assert [e.action for e in bench.relay_events] == ["close", "open"]
    emu.write('channel.exclusiveclose("")')
    assert bench.closed_relays() == set()


def test_exclusiveslotclose_leaves_other_slots(rig):
    bench, emu = rig
    emu.write('channel.close("1101,2101")')
    emu.write('channel.exclusiveslotclose("1202")')
    assert bench.closed_relays() == {(1, 2, 2), (2, 1, 1)}


def test_forbidden_channel_is_never_closed(rig):
    bench, emu = rig
    emu.write('channel.setforbidden("1105,1106")')
    assert ask(emu, 'print(channel.getforbidden("slot1"))') == "1105,1106"
    emu.write('channel.close("1101,1105")')
    assert bench.closed_relays() == set()  # nothing of the call is switched
    (code, msg), = errors(emu)
    assert code == -286 and "forbidden" in msg and "1105" in msg
    emu.write('channel.clearforbidden("1105")')
    emu.write('channel.close("1105")')
    assert bench.closed_relays() == {(1, 1, 5)}


def test_close_counts_count_relay_operations(rig):
    _, emu = rig
    for _ in range(3):
        emu.write('channel.close("1101")')
        emu.write('channel.open("1101")')
    emu.write('channel.close("1101")')  # already closed: not an operation
    emu.write('channel.close("1101")')
    assert ask(emu, 'print(channel.getcount("1101,1102"))') == "4,0"


def test_delay_backplane_and_reset(rig):
    bench, emu = rig
    emu.write('channel.setdelay("1101", 0.5)')
    t0 = bench.clock.now()
    emu.write('channel.close("1101")')
    assert bench.clock.now() - t0 == pytest.approx(0.5 + 0.004)
    assert float(ask(emu, 'print(channel.getdelay("1101"))')) == 0.5
    emu.write('channel.setbackplane("1101,1102", "1911,1912")')
    assert ask(emu, 'print(channel.getbackplane("1101,1102"))') == "1911,1912;1911,1912"
    emu.write('channel.setdelay("1911", 1)')
    assert "backplane" in errors(emu)[0][1]
    emu.write('channel.reset("slot1")')
    assert float(ask(emu, 'print(channel.getdelay("1101"))')) == 0.0
    emu.write("reset()")
    assert bench.closed_relays() == set()
    assert float(ask(emu, "print(channel.connectrule)")) == 1


@pytest.mark.parametrize(
    "bad",
    ['channel.close("7101")', 'channel.close("1701")', 'channel.close("1117")', 'channel.close("slot1")',
     'channel.close("allslots")', 'channel.close("11x1")', 'channel.close("1101,,1102")',
     'channel.close("1101:2102")', "channel.connectrule = 7", "channel.close(", "channel.frobnicate()"],
)
def test_bad_input_lands_in_the_error_queue_and_switches_nothing(rig, bad):
    bench, emu = rig
    emu.write(bad)
    assert bench.closed_relays() == set()
    errs = errors(emu)
    assert len(errs) == 1 and errs[0][0] in (-285, -286)
    assert emu.internal_errors == []
    emu.write('channel.close("1101")')  # still works afterwards
    assert bench.closed_relays() == {(1, 1, 1)}


def test_stuck_relay_is_invisible_to_the_card(rig):
    bench, emu = rig
    emu.write('channel.close("1103")')
    bench.stick_relay((1, 1, 3), closed=True)
    emu.write('channel.open("1103")')
    assert ask(emu, 'print(channel.getclose("slot1"))') == "nil"
    assert (1, 1, 3) in bench.physically_closed()


def test_measured_current_follows_the_crosspoints():
    # the crosspoints under test, not the matrix's leakage: with relay_leakage on, the open
    # crosspoints (1e11 Ω each) and the closed path's offset current (≤ 100 pA) carry ~100 pA
    bench = SimBench(seed=0, site="Q1", physics=Physics().without("relay_leakage"))
    emu = K3706AEmulator(bench)
    bench.set_source("k2612a.smua", output=True, mode="v", level=0.8, limit=0.01)
    bench.set_source("k2612a.smub", output=True, mode="v", level=0.0, limit=0.01)
    emu.write('channel.close("1101,1203")')  # smua -> S01.WL, smub -> S01.CL1: D1 forward
    on = bench.measure("k2612a.smua").i
    emu.write('channel.open("1203")')
    off = bench.measure("k2612a.smua").i
    assert on > 1e-6 and abs(off) < 1e-12
