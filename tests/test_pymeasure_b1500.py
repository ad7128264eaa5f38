"""pymeasure's ``AgilentB1500`` driver, unmodified, against the B1500A emulator.

Every getter and query of ``pymeasure.instruments.agilent.AgilentB1500`` (pymeasure
0.16) that applies to a B1500A with B1517A HR-SMUs in slots 1-4 is driven here, in
process (``SimRig.adapter``) and over TCP (a ``SimRig`` server, pyvisa ``@py``), as a
third-party client would use the simulated bench.

Left out, because pymeasure itself cannot run them here (not emulator gaps):

* ``read_data`` calls ``DataFrame.applymap``, removed in pandas 3 (installed: 3.x);
  the tests read with ``read_channels`` instead.
* ``SMU.meas_range_current`` / ``meas_range_voltage`` getters pass the ``*LRN? 32``
  text (a ``str``) to a lookup that wants an ``int``, so they raise ``ValueError``
  whatever the reply; ``query_meas_ranges`` (which converts) is used instead.
* ``SMU.filter`` reads ``*LRN? 30`` ``FL1`` (every filter on) as "off"; the test
  uses a mixed state, which pymeasure parses correctly.
* ``query_meas_mode`` indexes the ``*LRN? 31`` dict and then calls ``.items()`` on
  the list it gets, so it raises ``AttributeError`` whatever the reply;
  ``query_meas_settings`` (same query) is used instead.
* ``SMU.ramp_source`` looks for a ``DI`` entry even when ramping a voltage and sleeps
  20 ms of wall time per step; not exercised.
* ``options`` (``*OPT?``), ``next_error`` (``SYST:ERR?``), ``io_control_mode``
  (``ERMOD``), ``set_port_connection`` (``ERSSP``), SPGU/CMU and sampling (``MV``,
  ``MI``, ``ML``, ``MT``, ``MSC``, ``*LRN? 47``) are not emulated (see
  ``labpcu/sim/b1500.py``).

``read_channels`` reads a fixed number of bytes per element; after the last element
the reply's CR is read with it and the LF stays (the real instrument ends data with
CR/LF too), so the tests read that one byte before the next query.
"""

from __future__ import annotations

import pytest
from pymeasure.instruments.agilent import AgilentB1500

from labpcu.sim.adapter import SimAdapter
from labpcu.sim.rig import SimRig

SMU_SLOTS = (1, 2, 3, 4)


@pytest.fixture(params=["in-process", "tcp"])
def setup(request):
    """(rig, AgilentB1500) on a fresh simulated bench; SMUs initialised."""
    rig = SimRig.default(seed=0, site="Q1")
    server = None
    if request.param == "in-process":
        inst = AgilentB1500(rig.adapter("b1500a", timeout=5.0))
    else:
        server = rig.server().start()
        inst = AgilentB1500(server.resources()["b1500a"], visa_library="@py", timeout=5000)
    inst.initialize_all_smus()
    yield rig, inst
    inst.adapter.close()
    if server is not None:
        server.stop()


def end_of_data(inst: AgilentB1500) -> None:
    """The LF that read_channels leaves after the last element's CR."""
    assert inst.read_bytes(1) == b"\n"


# ------------------------------------------------------------------ identity, status
def test_identity_modules_and_slot_status(setup) -> None:
    _, inst = setup
    assert "B1500A" in inst.id
    assert inst.query_modules() == {s: "HRSMU" for s in SMU_SLOTS}
    assert [smu.id for smu in inst.smus.values()] == list(SMU_SLOTS)
    smu1 = inst.smus[1]
    assert smu1.status == {"SMU1": "OFF"}  # *LRN? 1 -> CL1
    smu1.enable()
    status = smu1.status["SMU1"]  # *LRN? 1 -> DV1,...
    assert status["Source Type"] == "Constant Voltage"
    assert float(status["Voltage Output (V)"]) == 0.0
    assert float(status["Compliance Current (A)"]) == pytest.approx(1e-4)
    assert status["Voltage Range"] == "0.5 V limited auto ranging"
    assert status["Current Compliance Ranging Type"] == "100 uA limited auto ranging"
    smu1.force("VOLTAGE", "20 V", 12.5, 2e-3, "MANUAL")
    status = smu1.status["SMU1"]
    assert float(status["Voltage Output (V)"]) == 12.5
    assert float(status["Compliance Current (A)"]) == pytest.approx(2e-3)
    assert status["Voltage Range"] == "20 V limited auto ranging"
    assert "MANUAL" in status["Compliance Polarity"].upper()
    smu1.force("CURRENT", 0, 1e-6, 2.0)
    status = smu1.status["SMU1"]
    assert status["Source Type"] == "Constant Current"
    assert float(status["Current Output (A)"]) == pytest.approx(1e-6)
    assert float(status["Compliance Voltage (V)"]) == 2.0
    inst.check_errors()  # no error: returns quietly


def test_status_byte_errors_and_clear(setup) -> None:
    _, inst = setup
    assert int(inst.status) == 16  # set ready, nothing else
    assert inst.complete == "1"
    assert inst.check_idle() == "1"
    inst.write("XX 1")  # not a FLEX command
    assert int(inst.status) & 32  # error bit
    with pytest.raises(OSError, match="100"):
        inst.check_errors()
    assert int(inst.status) == 16  # ERRX? cleared the error bit
    inst.write("DV 1,0,1")  # output switch open: error 200
    inst.clear()  # *CLS empties the error queue too
    inst.check_errors()
    assert int(inst.status) == 16
    inst.smus[1].enable()
    assert inst.query_learn(0) == {"CN": "1"}
    inst.reset()
    assert inst.ask("*LRN? 0") == "CL"  # every output switch open


# ------------------------------------------------------------------- *LRN? queries
def test_learn_queries_of_every_type(setup) -> None:
    _, inst = setup
    smu1, smu2 = inst.smus[1], inst.smus[2]
    smu1.enable()
    smu2.enable()
    assert inst.query_learn(0) == {"CN": "1,2".split(",")}
    settings = inst.query_meas_settings()  # *LRN? 31
    assert settings["Trigger Mode"] == "1"
    assert settings["Auto Calibration Mode"] is True
    assert settings["Output Data Format"] == "1"
    inst.meas_mode("SPOT", smu1, smu2)
    assert inst.query_meas_settings()["Measurement Channels"] == "SMU1, SMU2"
    assert inst.query_meas_ranges() == {
        f"SMU{i} {q} Measurement Range": "Auto Ranging" for i in SMU_SLOTS for q in ("Current", "Voltage")
    }
    assert {k: v.upper().replace(" ", "_") for k, v in inst.query_meas_op_mode().items()} == {
        f"SMU{i} Measurement Operation Mode": "COMPLIANCE_SIDE" for i in SMU_SLOTS}
    assert inst.query_series_resistor() == {f"SMU{i} Series Resistor": False for i in SMU_SLOTS}
    ranging = inst.query_meas_range_current_auto()
    assert ranging["SMU1 Ranging Mode"] == "1" and ranging["SMU1 Ranging Mode Parameter"] == "50"
    adc = inst.query_adc_setup()  # *LRN? 55 and 56
    assert adc["SMU1 ADC"].upper() == "HSADC"
    assert adc["HSADC Mode"].upper() == "AUTO" and float(adc["HSADC Parameter"]) == 1
    assert adc["HRADC Mode"].upper() == "AUTO" and float(adc["HRADC Parameter"]) == 6
    assert adc["ADC Auto Zero"] == "True"
    assert inst.query_time_stamp_setting() == {"Time Stamp": "False"}
    sweep = inst.query_staircase_sweep_settings()  # *LRN? 33 before any WV
    assert sweep["Auto Abort Status"] is True
    assert float(sweep["Hold Time (s)"]) == 0.0
    assert inst.query_learn(34)["PT"][1] == "0.001"  # pulse width default 1 ms
    assert inst.query_learn(57) == {"WAT1": ["1.0", "0.0000"], "WAT2": ["1.0", "0.0000"]}
    assert inst.query_learn(110) == {"PAD": "0"}


def test_settings_round_trip_through_learn(setup) -> None:
    _, inst = setup
    smu1, smu3 = inst.smus[1], inst.smus[3]
    inst.auto_calibration = False
    assert inst.auto_calibration is False
    inst.parallel_meas = True
    assert inst.parallel_meas is True
    inst.adc_auto_zero = False
    assert inst.adc_auto_zero is False
    inst.time_stamp = True
    assert inst.time_stamp is True
    smu1.series_resistor = True
    assert smu1.series_resistor is True and smu3.series_resistor is False
    smu1.meas_op_mode = "VOLTAGE"
    assert smu1.meas_op_mode.name == "VOLTAGE"
    smu3.adc_type = "HRADC"
    assert smu3.adc_type.name == "HRADC" and smu1.adc_type.name == "HSADC"
    smu3.filter = True
    assert smu3.filter is True and smu1.filter is False
    inst.adc_setup("HRADC", "PLC", 2)
    inst.adc_averaging(10, "MANUAL")
    adc = inst.query_adc_setup()
    assert (adc["HRADC Mode"].upper(), float(adc["HRADC Parameter"])) == ("PLC", 2)
    assert (adc["HSADC Mode"].upper(), float(adc["HSADC Parameter"])) == ("MANUAL", 10)
    settings = inst.query_meas_settings()
    assert settings["ADC Averaging Number"] == "10" and settings["ADC Averaging Mode"].upper() == "MANUAL"
    inst.wait_time("SMU_SOURCE", 2, 0.01)
    assert inst.query_learn(57)["WAT1"] == ["2.0", "0.0100"]
    smu1.meas_range_current_auto(2, 60)
    assert inst.query_meas_range_current_auto()["SMU1 Ranging Mode Parameter"] == "60"
    smu1.meas_range_current = "1 nA range fixed"
    smu1.meas_range_voltage = "2 V"
    ranges = inst.query_meas_ranges()
    assert ranges["SMU1 Current Measurement Range"] == "1 nA range fixed"
    assert ranges["SMU1 Voltage Measurement Range"] == "2 V limited auto ranging"
    inst.sweep_timing(0.5, 0.01, 0.02)
    inst.sweep_auto_abort(False, "STOP")
    sweep = inst.query_staircase_sweep_settings()
    assert sweep["Auto Abort Status"] is False
    assert sweep["Output after Measurement"].upper() == "STOP"
    assert [float(sweep[k]) for k in ("Hold Time (s)", "Delay Time (s)", "Step Delay Time (s)")] == [0.5, 0.01, 0.02]
    inst.check_errors()


# ------------------------------------------------------------------ measurements
@pytest.mark.parametrize("fmt, size", [(1, 16), (11, 17), (21, 19)])
def test_spot_measurement_in_each_data_format(setup, fmt: int, size: int) -> None:
    _, inst = setup
    smu1 = inst.smus[1]
    smu1.enable()
    inst.data_format(fmt, 0)
    assert inst._data_format.size == size
    assert inst.query_learn(31)["FMT"] == [str(fmt), "0"]
    smu1.force("VOLTAGE", 0, 0.5, 1e-3)
    smu1.meas_op_mode = "COMPLIANCE_AND_FORCE_SIDE"  # I then V
    inst.meas_mode("SPOT", smu1)
    inst.send_trigger()
    (st_i, ch_i, name_i, current), (st_v, ch_v, name_v, volts) = inst.read_channels(2)
    end_of_data(inst)
    assert (ch_i, name_i, ch_v, name_v) == ("SMU1", "Current (A)", "SMU1", "Voltage (V)") or (
        name_i, name_v) == ("Current Measurement (A)", "Voltage Measurement (V)")
    assert st_i in ("N", "000") and st_v in ("N", "000")
    assert abs(current) < 1e-9  # nothing connected through the open matrix
    assert volts == pytest.approx(0.5, abs=1e-3)
    inst.check_errors()


def test_staircase_sweep_with_source_data(setup) -> None:
    _, inst = setup
    smu1 = inst.smus[1]
    smu1.enable()
    inst.data_format(21, 1)  # 4155-compatible: source data typed 'v', status 128 last
    smu1.meas_op_mode = "VOLTAGE"
    smu1.staircase_sweep_source("VOLTAGE", "LINEAR_SINGLE", "Auto Ranging", 0, 1, 11, 1e-3)
    inst.meas_mode("STAIRCASE_SWEEP", smu1)
    inst.sweep_timing(0, 0.001)
    inst.sweep_auto_abort(False)
    sweep = inst.query_staircase_sweep_settings()["SMU1"]
    assert sweep["Source Type"] == "Voltage Sweep Source"
    assert sweep["Sweep Mode"].upper().replace(" ", "_") == "LINEAR_SINGLE" and sweep["Number of Steps"] == "11"
    assert float(sweep["Stop Voltage (V)"]) == 1.0
    inst.send_trigger()
    rows = [inst.read_channels(2) for _ in range(11)]
    end_of_data(inst)
    for k, ((st_m, _, name_m, v_meas), (st_s, _, name_s, v_src)) in enumerate(rows):
        assert name_m == "Voltage Measurement (V)" and name_s == "Voltage Output (V)"
        assert v_src == pytest.approx(k / 10)
        assert v_meas == pytest.approx(k / 10, abs=2e-3)
        assert st_m == "000"
        assert st_s == ("128" if k == 10 else "000")
    inst.check_errors()


def test_synchronous_sweep_source(setup) -> None:
    _, inst = setup
    smu1, smu2 = inst.smus[1], inst.smus[2]
    smu1.enable()
    smu2.enable()
    inst.data_format(1, 2)  # source data of the synchronous source
    smu2.meas_op_mode = "VOLTAGE"
    smu1.staircase_sweep_source("VOLTAGE", "LINEAR_DOUBLE", 0, 0, 1, 3, 1e-3)
    smu2.synchronous_sweep_source("VOLTAGE", 0, 0, 2, 1e-3)
    inst.meas_mode("STAIRCASE_SWEEP", smu2)
    sync = inst.query_staircase_sweep_settings()["SMU2"]
    assert sync["Source Type"] == "Synchronous Voltage Sweep Source"
    assert float(sync["Stop Voltage (V)"]) == 2.0
    inst.send_trigger()
    rows = [inst.read_channels(2) for _ in range(6)]
    end_of_data(inst)
    expected = [0.0, 1.0, 2.0, 2.0, 1.0, 0.0]
    assert [r[1][3] for r in rows] == pytest.approx(expected)
    assert [r[0][3] for r in rows] == pytest.approx(expected, abs=3e-3)
    assert [r[1][0] for r in rows] == ["W"] * 5 + ["E"]


def test_timer_pause_buffer_and_zero(setup) -> None:
    rig, inst = setup
    smu1 = inst.smus[1]
    smu1.enable()
    smu1.force("VOLTAGE", 0, 1.5, 1e-3)
    # the bench is looked at directly, beside the link: *OPC? first, so that over TCP
    # the write has been served before the bench is read
    inst.force_gnd()
    assert inst.complete == "1" and rig.bench.source("b1500a.1").level == 0.0
    inst.restore_settings()
    assert inst.complete == "1" and rig.bench.source("b1500a.1").level == 1.5
    inst.clear_timer()
    t0 = rig.bench.clock.now()
    inst.pause(2)  # PA 2: the simulated clock moves 2 s
    assert inst.complete == "1" and rig.bench.clock.now() - t0 == pytest.approx(2.0)
    inst.time_stamp = True
    inst.data_format(1, 0)
    smu1.meas_op_mode = "VOLTAGE"
    inst.meas_mode("SPOT", smu1)
    if isinstance(inst.adapter, SimAdapter):
        # BC drops data still in the instrument. Over a raw socket the data leaves as
        # soon as XE has made it (as from a LAN instrument), so BC comes too late there.
        inst.send_trigger()
        inst.clear_buffer()
        assert inst.ask("NUB?") == "0"
    inst.send_trigger()
    (_, _, name_t, t), (_, _, _, v) = inst.read_channels(2)
    end_of_data(inst)
    assert name_t == "Time (s)" and t >= 2.0
    assert v == pytest.approx(1.5, abs=2e-3)
    inst.abort()
    inst.check_errors()
