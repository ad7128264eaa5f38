"""Fault injection on the real emulators: late reply, dropped connection, injected
error, stuck relay — in process and over TCP."""

from __future__ import annotations

import time

import pytest
import pyvisa
from pymeasure.instruments import Instrument
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

from labpcu.sim.rig import SimRig


@pytest.fixture
def rig():
    return SimRig.default(seed=0, site="Q1")


@pytest.mark.parametrize("name", ["k2612a", "k3706a", "b1500a"])
def test_late_reply_times_out_in_process_without_waiting(rig, name):
    inst = Instrument(rig.adapter(name, timeout=0.5), name, includeSCPI=False)
    rig[name].faults.delay_replies(5.0, count=1)
    t = time.perf_counter()
    with pytest.raises(VisaIOError) as err:
        inst.ask("*IDN?")
    assert err.value.error_code == StatusCode.error_timeout
    assert time.perf_counter() - t < 1.0
    assert inst.ask("*IDN?")  # the next reply is on time


@pytest.mark.parametrize("name", ["k2612a", "b1500a"])
def test_dropped_connection_raises_and_stays_dropped(rig, name):
    inst = Instrument(rig.adapter(name), name, includeSCPI=False)
    rig[name].faults.drop_connection()
    with pytest.raises(VisaIOError) as err:
        inst.ask("*IDN?")
    assert err.value.error_code == StatusCode.error_connection_lost
    with pytest.raises(VisaIOError):
        inst.ask("*IDN?")


def test_injected_errors_show_in_each_instruments_own_queue(rig):
    smu = Instrument(rig.adapter("k2612a"), "smu", includeSCPI=False)
    mtx = Instrument(rig.adapter("k3706a"), "mtx", includeSCPI=False)
    pa = Instrument(rig.adapter("b1500a"), "pa", includeSCPI=False)
    rig["k2612a"].inject_error(5005, "Interlock engaged")
    rig["k3706a"].inject_error(-240, "Hardware error")
    rig["b1500a"].inject_error(305, "Excess current in HPSMU.")
    code, msg = smu.ask("print(errorqueue.next())").split("\t")[:2]
    assert float(code) == 5005 and msg == "Interlock engaged"
    assert float(mtx.ask("print(errorqueue.count)")) == 1
    assert pa.ask("ERRX?").startswith("+305")


def test_tcp_late_reply_and_drop():
    rig = SimRig.default(seed=0)
    with rig.server() as server:
        rm = pyvisa.ResourceManager("@py")
        res = server.resources()
        smu = rm.open_resource(res["k2612a"], read_termination="\n", write_termination="\n", timeout=200)
        rig["k2612a"].faults.delay_replies(0.6, count=1)
        with pytest.raises(VisaIOError) as err:
            smu.query("*IDN?")
        assert err.value.error_code == StatusCode.error_timeout
        smu.close()
        pa = rm.open_resource(res["b1500a"], read_termination="\r\n", write_termination="\r\n", timeout=2000)
        rig["b1500a"].faults.drop_connection()
        with pytest.raises((VisaIOError, OSError)):
            pa.query("*IDN?")
        pa.close()
        rm.close()


def test_stuck_relay_keeps_a_path_the_matrix_reports_open(rig):
    smu = Instrument(rig.adapter("k2612a"), "smu", includeSCPI=False)
    mtx = Instrument(rig.adapter("k3706a"), "mtx", includeSCPI=False)
    mtx.write('channel.close("1101,1203")')  # smua -> S01.WL, smub -> S01.CL1
    rig.bench.stick_relay((1, 1, 1), closed=True)
    mtx.write('channel.open("allslots")')
    assert mtx.ask('print(channel.getclose("allslots"))').strip() == "nil"
    mtx.write('channel.close("1203")')
    for line in ("smua.source.limiti = 1e-2", "smua.source.levelv = 0.8", "smua.source.output = 1", "smub.source.output = 1"):
        smu.write(line)
    assert float(smu.ask("print(smua.measure.i())")) > 1e-6  # current flows through the welded relay
