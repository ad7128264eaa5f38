"""The 3706A emulator against the manual, beyond switching: the IEEE-488.2 status
model, the comm/gpib/lan/localnode tables drivers read at connect, stateful setups,
channel.getstate. Message by message, in process (the QCoDeS driver drives the same
tables over TCP in tests/test_qcodes_clients.py)."""

from __future__ import annotations

import pytest

from labpcu.sim.bench import SimBench
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


# ------------------------------------------------------------------- status model
def test_power_on_latches_pon_and_esr_read_clears_it(rig):
    _, emu = rig
    assert ask(emu, "*ESR?") == "128"  # PON: the instrument was just switched on
    assert ask(emu, "*ESR?") == "0"  # reading cleared it
    assert ask(emu, "*STB?") == "0"


def test_an_error_sets_eav_and_its_class_bit_until_read_or_cleared(rig):
    _, emu = rig
    ask(emu, "*ESR?")
    emu.write("channel.close(")  # TSP syntax error: -285, an execution error
    assert int(ask(emu, "*STB?")) & 4  # EAV: the queue holds an error
    assert ask(emu, "*ESR?") == "16"  # EXE
    assert int(ask(emu, "*STB?")) == 4  # the event was read; the error is still queued
    errors(emu)
    assert ask(emu, "*STB?") == "0"
    emu.write("gpib.address = 99")
    emu.write("*CLS")  # clears the queue and the event registers
    assert ask(emu, "*STB?") == "0" and ask(emu, "*ESR?") == "0"
    assert errors(emu) == []


@pytest.mark.parametrize(("code", "bit"), [(-113, 32), (-222, 16), (-350, 8), (-410, 4), (1101, 8)])
def test_each_error_class_latches_its_standard_event_bit(rig, code, bit):
    _, emu = rig
    ask(emu, "*ESR?")
    emu.inject_error(code, "injected")
    assert ask(emu, "*ESR?") == str(bit)


def test_ese_and_sre_summarise_into_esb_and_mss(rig):
    _, emu = rig
    ask(emu, "*ESR?")
    emu.write("*ESE 16")  # EXE reported in the status byte's ESB
    emu.write("*SRE 32")  # and ESB requests service
    assert (ask(emu, "*ESE?"), ask(emu, "*SRE?")) == ("16", "32")
    emu.write("bogus(")
    assert int(ask(emu, "*STB?")) == 4 | 32 | 64  # EAV, ESB, MSS
    assert float(ask(emu, "print(status.condition)")) == 4 | 32 | 64  # the TSP view of the same byte
    emu.write("*ESE 300")  # out of range: refused, the old mask stays
    assert ask(emu, "*ESE?") == "16"
    assert (-222.0, "Parameter data out of range; *ESE '300'") in errors(emu)


def test_opc_sets_the_operation_complete_bit(rig):
    _, emu = rig
    ask(emu, "*ESR?")
    emu.write("*OPC")
    assert ask(emu, "*ESR?") == "1"
    assert ask(emu, "*OPC?") == "1"


def test_mav_is_set_while_a_reply_waits_to_be_read(rig):
    _, emu = rig
    emu.write("print(1)")
    emu.write("*STB?")
    first, stb = emu.take_output().decode().split("\n")[:2]
    assert float(first) == 1 and int(stb) & 16


def test_tsp_status_registers(rig):
    _, emu = rig
    ask(emu, "*ESR?")
    emu.write("status.standard.enable = status.standard.EXE")
    emu.write("status.request_enable = status.ESB")
    assert float(ask(emu, "print(status.standard.enable)")) == 16
    assert float(ask(emu, "print(status.request_enable)")) == 32
    emu.write("x = = 1")
    assert float(ask(emu, "print(status.standard.event)")) == 16
    assert float(ask(emu, "print(status.standard.event)")) == 0  # reading the event register cleared it
    for reg in ("operation", "operation.user", "questionable", "measurement", "system"):
        assert [float(v) for v in ask(emu, f"print(status.{reg}.condition, status.{reg}.event)").split("\t")] == [0, 0]
    emu.write("status.operation.enable = 24")
    assert float(ask(emu, "print(status.operation.enable)")) == 24
    emu.write("status.reset()")
    assert [float(v) for v in ask(emu, "print(status.standard.enable, status.request_enable, "
                                       "status.operation.enable)").split("\t")] == [0, 0, 0]
    assert float(ask(emu, "print(status.MSS, status.EAV)").split("\t")[0]) == 64


# ------------------------------------------------------------ comm, gpib, lan
def test_comm_enable_states_are_booleans_and_persist(rig):
    _, emu = rig
    assert ask(emu, "print(comm.gpib.enable, comm.lan.enable)") == "true\ttrue"
    assert ask(emu, "print(comm.lan.rawsockets.enable, comm.lan.telnet.enable, comm.lan.vxi11.enable, "
                    "comm.lan.web.enable)") == "true\ttrue\ttrue\ttrue"
    emu.write("comm.gpib.enable = false")
    emu.write("comm.lan.web.enable = 0")
    assert ask(emu, "print(comm.gpib.enable, comm.lan.web.enable)") == "false\tfalse"
    emu.write("reset()")  # communication settings are not part of a reset
    assert ask(emu, "print(comm.gpib.enable)") == "false"
    assert errors(emu) == []


def test_gpib_address(rig):
    _, emu = rig
    assert float(ask(emu, "print(gpib.address)")) == 16
    emu.write("gpib.address = 11")
    assert float(ask(emu, "print(gpib.address)")) == 11
    emu.write("gpib.address = 31")
    assert float(ask(emu, "print(gpib.address)")) == 11  # refused, the old value stays
    assert [c for c, _ in errors(emu)] == [-222]


def test_lan_status_config_and_ports(rig):
    _, emu = rig
    ip, mac = ask(emu, "print(lan.status.ipaddress, lan.status.macaddress)").split("\t")
    assert ip == "127.0.0.1" and mac.startswith("08:00:11:")
    assert [float(p) for p in ask(emu, "print(lan.status.port.rawsocket, lan.status.port.telnet, "
                                       "lan.status.port.vxi11)").split("\t")] == [5025, 23, 1024]
    assert float(ask(emu, "print(lan.config.method)")) == 0  # lan.AUTO
    emu.write("lan.config.method = lan.MANUAL")
    emu.write('lan.config.ipaddress = "10.0.0.5"')
    assert ask(emu, "print(lan.status.ipaddress)") == "127.0.0.1"  # not applied yet
    emu.write("lan.applysettings()")
    assert ask(emu, "print(lan.status.ipaddress, lan.config.ipaddress)") == "10.0.0.5\t10.0.0.5"
    emu.write('lan.config.gateway = "10.0.0.300"')
    assert [c for c, _ in errors(emu)] == [-222]
    assert ask(emu, "print(lan.nagle)") == "false"
    emu.write("lan.restoredefaults()")
    assert ask(emu, "print(lan.status.ipaddress)") == "127.0.0.1"
    emu.write("lan.reset()")
    assert errors(emu) == []


def test_localnode_values_drivers_read(rig):
    _, emu = rig
    idn = ask(emu, "*IDN?").split(",")
    model, serial, rev, desc, freq, prompts = ask(
        emu, "print(localnode.model, localnode.serialno, localnode.revision, localnode.description, "
             "localnode.linefreq, localnode.prompts)").split("\t")
    assert (model, serial, rev) == ("3706A", idn[2], idn[3])
    assert desc == f"Keithley Instruments Inc. Model 3706A - {serial}"
    assert float(freq) in (50, 60) and float(prompts) == 0
    emu.write('localnode.description = "matrix A"')
    assert ask(emu, "print(localnode.description)") == "matrix A"
    assert errors(emu) == []


# ------------------------------------------------------------------------- setups
def test_recalled_setup_restores_relays_and_settings(rig):
    bench, emu = rig
    emu.write('channel.close("1101,1203")')
    emu.write("channel.connectrule = channel.MAKE_BEFORE_BREAK")
    emu.write('channel.setforbidden("1516")')
    emu.write('channel.setdelay("1101", 0.25)')
    emu.write("format.asciiprecision = 10")
    emu.write("setup.save()")
    emu.write("reset()")
    assert bench.closed_relays() == set()
    emu.write('channel.close("2101")')
    bench.relay_events.clear()
    emu.write("setup.recall(1)")  # a reset, then the saved setup
    assert bench.closed_relays() == {(1, 1, 1), (1, 2, 3)}
    assert [(e.action, e.crosspoint) for e in bench.relay_events] == [
        ("open", (2, 1, 1)), ("close", (1, 1, 1)), ("close", (1, 2, 3))]
    assert ask(emu, 'print(channel.getclose("allslots"))') == "1101;1203"
    rule, forbidden, delay = ask(emu, 'print(channel.connectrule, channel.getforbidden("allslots"), '
                                      'channel.getdelay("1101"))').split("\t")
    assert (float(rule), forbidden, float(delay)) == (2, "1516", 0.25)
    assert rule == "2.000000000e+00"  # the saved number format is back too
    emu.write("setup.recall(0)")  # factory defaults
    assert bench.closed_relays() == set()
    assert float(ask(emu, "print(channel.connectrule)")) == 1
    assert errors(emu) == []


def test_setup_ids_the_instrument_does_not_have_are_refused(rig):
    bench, emu = rig
    emu.write("setup.recall(1)")  # nothing saved yet
    emu.write('channel.close("1101")')
    emu.write("setup.save()")
    emu.write('channel.close("1102")')
    emu.write("setup.save(2)")  # one user setup only
    emu.write('setup.recall("1")')  # a string names a file on a USB drive: there is none
    emu.write('setup.save("/usb1/a.set")')
    assert [c for c, _ in errors(emu)] == [-286] * 4
    assert bench.closed_relays() == {(1, 1, 1), (1, 1, 2)}  # nothing was reset or switched


def test_poweron_setup_and_nonvolatile_memory_survive_a_power_cycle(rig):
    bench, emu = rig
    emu.write('channel.close("1304")')
    emu.write("setup.save()")
    emu.write("gpib.address = 7")
    emu.write("setup.poweron = 1")
    emu.power_cycle()
    assert bench.closed_relays() == {(1, 3, 4)}  # the saved setup came back at power-on
    assert float(ask(emu, "print(gpib.address)")) == 7
    assert ask(emu, "*ESR?") == "128"
    emu.write("setup.poweron = 0")
    emu.power_cycle()
    assert bench.closed_relays() == set()


# --------------------------------------------------------------- channel queries
def test_getstate_and_getcount_per_channel(rig):
    _, emu = rig
    emu.write('channel.close("1101,1103")')
    assert ask(emu, 'print(channel.getstate("1101,1102,1103"))') == "1,0,1"
    assert ask(emu, 'print(channel.getcount("1101,1102,1103"))') == "1,0,1"
    assert len(ask(emu, 'print(channel.getstate("slot1"))').split(",")) == 96
    assert float(ask(emu, "print(slot[1].rows.matrix)")) == 6
    assert ask(emu, "print(slot[4].rows.matrix)") == "nil"  # an empty slot
    assert ask(emu, "print(dmm.func)") == "dcvolts"
    assert errors(emu) == []
