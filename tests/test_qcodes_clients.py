"""Third-party clients against the emulators: QCoDeS's Keithley 2600 and 3706A drivers,
unmodified, over TCP (a SimRig server, pyvisa-py), as a lab would run them.

What these prove, and what they found in QCoDeS (README, "Emulator conformance"):

* QCoDeS's 2600 driver refuses a 2612A by its model string, so a lab runs it against a
  2612B or 2636B identity; the emulator answers every query and command it sends at
  connect and in use (source/measure with the compliance status, ranges, limits, NPLC,
  output, sense, the on-instrument Lua fast sweep read back as REAL32, the time trace,
  resets) with an empty error queue;
* QCoDeS's 3706A driver connects (IDN, cards, interlocks), reads and sets the comm/gpib
  tables, the LAN address, the connect rule, delays, backplane and forbidden lists,
  saves setups, and switches relays that the shared circuit sees;
* its row/column helpers are swapped: ``connect_row_to_columns`` *opens* the crosspoints
  and ``disconnect_row_from_columns`` *closes* them (the manual: ``channel.close``
  connects a row to a column), and ``load_setup(n)`` quotes the number, which the
  manual reads as a file name on a USB drive.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

qcodes = pytest.importorskip("qcodes")
from qcodes.dataset import LinSweep  # noqa: E402
from qcodes.instrument_drivers.Keithley import (  # noqa: E402
    Keithley2612B,
    Keithley2636B,
    Keithley3706A,
    Keithley3706AInvalidValue,
)
from qcodes.instrument_drivers.Keithley._Keithley_2600 import Keithley2600MeasurementStatus  # noqa: E402

from labpcu.sim.rig import SimRig, make_emulator  # noqa: E402

SMU_MODEL_CLASSES = {"2612B": Keithley2612B, "2636B": Keithley2636B}


def sync(*instruments) -> None:
    """Wait until every message sent so far was handled: over TCP a write returns
    before the emulator has acted on it, and ``*OPC?`` answers only after."""
    for inst in instruments:
        assert inst.ask_raw("*OPC?") == "1"


def relays(rig, m) -> set:
    sync(m)
    return rig.bench.closed_relays()


def queued_errors(emu) -> list[tuple[int, str]]:
    out = []
    while (e := emu.errors.pop()) is not None:
        out.append((e.code, e.message))
    return out


@pytest.fixture(scope="module", params=sorted(SMU_MODEL_CLASSES))
def smu_rig(request):
    """A simulated bench whose SMU is the given 2600B model, served on TCP, with
    QCoDeS's drivers for it and for the 3706A connected."""
    rig = SimRig.default(seed=0, site="Q1")
    rig.emulators["k2612a"] = make_emulator(request.param, rig.bench, "k2612a")
    server = rig.server().start()
    res = server.resources()
    smu = SMU_MODEL_CLASSES[request.param](f"qc_smu_{request.param}", res["k2612a"], visalib="@py", timeout=5)
    mtx = Keithley3706A(f"qc_mtx_{request.param}", res["k3706a"], visalib="@py", timeout=5)
    try:
        yield rig, smu, mtx
    finally:
        smu.close()
        mtx.close()
        server.stop()


@pytest.fixture
def smu(smu_rig):
    rig, smu, mtx = smu_rig
    smu.reset()
    mtx.write("reset()")
    queued_errors(rig["k2612a"])
    queued_errors(rig["k3706a"])
    yield rig, smu, mtx
    sync(smu, mtx)
    assert queued_errors(rig["k2612a"]) == []
    assert queued_errors(rig["k3706a"]) == []


@pytest.fixture(scope="module")
def mtx_rig():
    rig = SimRig.default(seed=0, site="Q1")
    server = rig.server().start()
    mtx = Keithley3706A("qc_mtx", server.resources()["k3706a"], visalib="@py", timeout=5)
    try:
        yield rig, mtx
    finally:
        mtx.close()
        server.stop()


@pytest.fixture
def mtx(mtx_rig):
    rig, mtx = mtx_rig
    mtx.write("reset()")
    mtx.write("*CLS")
    yield rig, mtx


# ------------------------------------------------------------------ 2600 family
def test_qcodes_2600_refuses_the_2612a_model_string():
    rig = SimRig.default(seed=0, site="Q1")
    with rig.server().start() as server:
        with pytest.raises(ValueError, match="Unknown model"):
            Keithley2612B("qc_2612a", server.resources()["k2612a"], visalib="@py", timeout=5)


def test_qcodes_2600_connects_with_a_2600b_identity(smu):
    rig, k, _ = smu
    idn = k.IDN()
    assert idn["model"] == rig["k2612a"].model and idn["vendor"].startswith("Keithley")
    assert idn["serial"] == rig["k2612a"].serial
    assert k.smua.linefreq() == rig["k2612a"].linefreq


def test_qcodes_2600_source_measure_with_compliance_status(smu):
    rig, k, mtx = smu
    mtx.exclusive_close("1101,1203")  # smua -> S01.WL, smub -> S01.CL1: diode D1
    k.smub.mode("voltage")
    k.smub.volt(0.0)
    k.smub.output("on")
    k.smua.mode("voltage")
    k.smua.limiti(1e-2)
    k.smua.volt(0.8)
    k.smua.output("on")
    assert k.smua.output() is True
    forward = k.smua.curr()
    assert forward > 1e-6 and k.smua.curr.measurement_status == Keithley2600MeasurementStatus.NORMAL
    assert k.smua.volt() == pytest.approx(0.8, abs=1e-3)
    k.smua.limiti(1e-7)  # below what the diode draws at 0.8 V: the source clamps
    clamped = k.smua.curr()
    assert clamped == pytest.approx(1e-7, rel=1e-2)
    assert k.smua.curr.measurement_status == Keithley2600MeasurementStatus.CURRENT_COMPLIANCE_ERROR
    assert k.smua.volt() < 0.8  # the voltage fell to what 100 nA needs
    assert k.smua.res() > 0
    k.smua.output("off")
    k.smub.output("off")
    assert k.smua.output() is False


def test_qcodes_2600_limits_ranges_sense_and_nplc(smu):
    rig, k, _ = smu
    k.smua.limitv(5.0)
    k.smua.limiti(2e-3)
    assert (k.smua.limitv(), k.smua.limiti()) == (5.0, 2e-3)
    k.smua.sourcerange_v(2)  # QCoDeS turns source autorange off first
    assert k.smua.sourcerange_v() == 2 and not k.smua.source_autorange_v_enabled()
    k.smua.measurerange_i(1e-6)
    assert k.smua.measurerange_i() == 1e-6 and not k.smua.measure_autorange_i_enabled()
    k.smua.measure_autorange_i_enabled(True)
    assert k.smua.measure_autorange_i_enabled()
    k.smua.four_wire_measurement(True)
    assert k.smua.four_wire_measurement()
    k.smua.four_wire_measurement(False)
    k.smua.nplc(0.5)
    assert k.smua.nplc() == 0.5  # a value, not an index
    k.smua.mode("voltage")
    k.smua.output("on")
    t0 = rig.bench.clock.now()
    k.smua.curr()
    assert rig.bench.clock.now() - t0 >= 0.5 / k.smua.linefreq()  # the integration took its time


def test_qcodes_2600_ranges_of_the_model(smu):
    rig, k, _ = smu
    if rig["k2612a"].model == "2636B":
        k.smub.measurerange_i(1e-9)  # the 2636B's low-current range
        assert k.smub.measurerange_i() == 1e-9
    else:
        with pytest.raises(ValueError):
            k.smub.measurerange_i(1e-9)  # QCoDeS knows the 2612B has none; nothing is sent


def test_qcodes_2600_fastsweep_runs_its_lua_script_and_reads_real32(smu):
    rig, k, mtx = smu
    mtx.exclusive_close("1101,1203")
    k.smub.mode("voltage")
    k.smub.volt(0.0)
    k.smub.output("on")
    k.smua.limiti(1e-2)
    k.smua.nplc(0.1)
    k.smua.setup_fastsweep(LinSweep(k.smua.volt, 0.0, 0.8, 9))
    data = k.smua.fastsweep()  # loadandrunscript ... endscript, printbuffer as #0 + REAL32
    assert data.shape == (9,)
    assert np.all(np.diff(data[4:]) > 0) and data[-1] > 1e-6  # a diode opening up
    assert abs(data[0]) < 1e-9
    assert k.smua.output() is True  # the script turned it on
    k.smua.output("off")
    k.smub.output("off")


def test_qcodes_2600_timetrace(smu):
    rig, k, _ = smu
    k.smua.mode("voltage")
    k.smua.volt(0.0)
    k.smua.output("on")
    k.smua.nplc(0.01)
    k.smua.timetrace_npts(20)
    k.smua.timetrace_dt(1e-3)
    k.smua.timetrace_mode("current")
    t0 = rig.bench.clock.now()
    trace = k.smua.timetrace()
    assert trace.shape == (20,)
    assert rig.bench.clock.now() - t0 >= 19e-3  # measure.interval paced the readings
    assert np.all(np.abs(trace) < 1e-9)  # nothing connected
    k.smua.output("off")


def test_qcodes_2600_channel_and_instrument_reset(smu):
    rig, k, _ = smu
    k.smua.nplc(2)
    k.smua.output("on")
    k.smua.reset()
    assert k.smua.nplc() == 1 and k.smua.output() is False
    k.smub.limitv(3)
    k.reset()
    assert k.smub.limitv() != 3


def test_qcodes_2600_display_calls(smu_rig):
    rig, k, _ = smu_rig
    queued_errors(rig["k2612a"])
    k.display_settext("labpcu")
    k.display_clear()
    k.display_normal()
    k.exit_key()
    k.smua.nplc()  # a round trip: everything before it was handled
    assert queued_errors(rig["k2612a"]) == []


# ------------------------------------------------------------------------ 3706A
def test_qcodes_3706a_connects_and_reads_cards_and_interlocks(mtx, capsys):
    rig, m = mtx
    m.connect_message()
    out = capsys.readouterr().out
    assert "3706A SYSTEM SWITCH" in out and "Slot 1- Model:3730" in out and "Slot 2- Model:3730" in out
    assert m.get_idn()["model"] == "3706A"
    assert [c["slot_no"] for c in m.get_switch_cards()] == ["1", "2"]
    assert {s["slot_no"] for s in m.get_interlock_state()} == {"1", "2"}
    assert m.get_interlock_state_by_slot(5) is None  # an empty slot answers nil
    assert len(m.get_channels()) == 2 * 96
    assert set(m.get_available_memory()) == {"System Memory  (%)", "Script Memory  (%)",
                                             "Pattern Memory (%)", "Config Memory  (%)"}


def test_qcodes_3706a_comm_gpib_and_lan_tables(mtx):
    rig, m = mtx
    assert m.gpib_enabled() is True and m.lan_enabled() is True
    assert m.gpib_address() == 16
    m.gpib_address(9)
    m.gpib_enabled("off")
    assert m.gpib_address() == 9 and m.gpib_enabled() is False
    m.gpib_enabled("on")
    m.lan_enabled("on")
    assert m.get_ip_address() == "127.0.0.1"
    m.reset_local_network()
    sync(m)
    assert len(rig["k3706a"].errors) == 0


def test_qcodes_3706a_switching_reaches_the_circuit(mtx):
    rig, m = mtx
    m.close_channel("1101")
    m.close_channel("1203")
    assert relays(rig, m) == {(1, 1, 1), (1, 2, 3)}
    assert m.get_closed_channels("allslots") == ["1101", "1203"]
    m.exclusive_close("1304")
    assert relays(rig, m) == {(1, 3, 4)}
    m.close_channel("2101")
    m.exclusive_slot_close("1305")
    assert relays(rig, m) == {(1, 3, 5), (2, 1, 1)}
    m.open_channel("allslots")
    assert m.get_closed_channels("allslots") is None and relays(rig, m) == set()
    with pytest.raises(Keithley3706AInvalidValue):
        m.close_channel("slot1")  # refused by the client, nothing sent
    sync(m)
    assert len(rig["k3706a"].errors) == 0


def test_qcodes_3706a_forbidden_channels_are_refused_by_the_instrument(mtx):
    rig, m = mtx
    m.set_forbidden_channels("1105,1106")
    assert m.get_forbidden_channels("allslots") == "1105,1106"
    with pytest.warns(UserWarning, match="forbidden"):
        m.close_channel("1105")  # QCoDeS only warns and sends it; the instrument refuses
    assert relays(rig, m) == set()
    assert "forbidden" in rig["k3706a"].errors.pop().message  # (relays() synced)
    m.clear_forbidden_channels("1105")
    m.close_channel("1105")
    assert relays(rig, m) == {(1, 1, 5)}


def test_qcodes_3706a_connect_rule_orders_exclusive_close(mtx):
    rig, m = mtx
    assert m.channel_connect_rule() == "BREAK_BEFORE_MAKE"
    m.close_channel("1101")
    sync(m)
    rig.bench.relay_events.clear()
    m.exclusive_close("1102")
    sync(m)
    assert [e.action for e in rig.bench.relay_events] == ["open", "close"]
    m.channel_connect_rule("MAKE_BEFORE_BREAK")
    assert m.channel_connect_rule() == "MAKE_BEFORE_BREAK"
    sync(m)
    rig.bench.relay_events.clear()
    m.exclusive_close("1103")
    sync(m)
    assert [e.action for e in rig.bench.relay_events] == ["close", "open"]


def test_qcodes_3706a_row_helpers_are_swapped(mtx):
    """QCoDeS's connect_* helpers send channel.open and its disconnect_* helpers send
    channel.close; by the manual, closing SRCC is what joins row R to column CC."""
    rig, m = mtx
    m.close_channel("1103")
    m.connect_row_to_columns(1, 1, [3, 4])
    assert relays(rig, m) == set()  # "connect" opened 1103, left 1104 open
    m.disconnect_row_from_columns(1, 1, [3, 4])
    assert relays(rig, m) == {(1, 1, 3), (1, 1, 4)}  # "disconnect" closed both
    m.connect_column_to_rows(1, 4, [1])
    assert relays(rig, m) == {(1, 1, 3)}
    assert "channel.open('1104')" in rig["k3706a"].messages_in()[-3:]


def test_qcodes_3706a_delays_backplane_and_channel_reset(mtx):
    rig, m = mtx
    m.set_delay("1101", 0.5)
    assert m.get_delay("1101") == [0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # interlocks engaged: no warning expected
        m.set_backplane("1101", "1911")
    assert m.get_backplane("1101") == "1911"
    sync(m)
    t0 = rig.bench.clock.now()
    m.close_channel("1101")
    sync(m)
    assert rig.bench.clock.now() - t0 >= 0.5
    m.reset_channel("slot1")
    assert m.get_delay("1101") == [0.0] and m.get_backplane("1101") == ""
    sync(m)
    assert len(rig["k3706a"].errors) == 0


def test_qcodes_3706a_setups(mtx):
    rig, m = mtx
    m.close_channel("1101")
    m.save_setup()  # setup.save(): the user setup in nonvolatile memory
    m.open_channel("allslots")
    m.load_setup(1)  # sends setup.recall('1'): a file name by the manual, not id 1
    assert relays(rig, m) == set()
    assert "USB" in rig["k3706a"].errors.pop().message  # (relays() synced)
    m.write("setup.recall(1)")  # the number, as the manual has it
    assert relays(rig, m) == {(1, 1, 1)}
    sync(m)
    assert len(rig["k3706a"].errors) == 0
