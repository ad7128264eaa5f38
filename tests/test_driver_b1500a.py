"""Keysight B1500A driver: message by message (expected_protocol), bad input that must
send nothing, FMT 1 parsing, then the same calls against the emulator in process (real
circuit: M1 of S01 through the matrix) and over TCP with pyvisa-py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import pyvisa
from hypothesis import given
from hypothesis import strategies as st
from pymeasure.test import expected_protocol

from labpcu.instruments.errors import InstrumentCommunicationError, InstrumentError, LimitError
from labpcu.instruments.keysight_b1500a import (
    DataFormatError,
    KeysightB1500A,
    Reading,
    flex_number,
    format_fmt1_number,
    parse_data,
    parse_element,
    parse_sweep,
)
from labpcu.sim.b1500 import format_number as sim_format_number
from labpcu.sim.rig import SimRig

OK = ("ERRX?", '+0,"No Error."')  # the error check after a configuration command
FOUR = {1: "B1517A", 2: "B1517A", 3: "B1517A", 4: "B1517A"}
UNT = "B1517A,0;B1517A,0;B1517A,0;B1517A,0;0,0;0,0;0,0;0,0;0,0;0,0"
IDN = "Agilent Technologies,B1500A,0,A.06.01.2019.0807"


def protocol(pairs):
    """expected_protocol with four HR-SMUs named, so construction sends nothing."""
    return expected_protocol(KeysightB1500A, pairs, modules=FOUR)


# ================================================================ (1) message by message
def test_modules_are_discovered_from_unt():
    unt = "B1517A,0;B1517A,0;0,0;B1520A,0;B1511B,0;0,0;0,0;0,0;0,0;0,0"
    with expected_protocol(KeysightB1500A, [("UNT?", unt)]) as inst:
        assert inst.modules == {1: "B1517A", 2: "B1517A", 4: "B1520A", 5: "B1511B"}
        assert sorted(inst.smus) == [1, 2, 5]  # the CMU in slot 4 is no SMU
        assert inst.smu1.id == 1 and inst.smu5.model.model == "B1511B"
        assert inst.smus[2] is inst.smu2
        assert not hasattr(inst, "smu4")


def test_modules_given_as_a_sequence_in_slot_order():
    with expected_protocol(KeysightB1500A, [], modules=["B1517A", None, "B1517A"]) as inst:
        assert sorted(inst.smus) == [1, 3]


def test_identity_and_operation_complete():
    with protocol([("*IDN?", IDN), ("*OPC?", "1")]) as inst:
        assert inst.id == IDN
        assert inst.complete == "1"


def test_reset_then_empties_stale_errors_without_raising():
    with protocol([("*RST", None), ("ERRX?", '+120,"Incorrect parameter value."'), OK]) as inst:
        inst.reset()


def test_error_query_returns_code_and_text():
    with protocol([("ERRX?", '+305,"Excess current in HPSMU.; SLOT1"'), OK]) as inst:
        assert inst.next_error == (305, "Excess current in HPSMU.; SLOT1")
        assert inst.next_error == (0, "No Error.")


def test_configuration_error_raises_with_the_instrument_text_and_drains_the_queue():
    with protocol([
        ("CN 1", None),
        ("ERRX?", '+200,"Channel output switch must be ON.; SLOT1"'),
        ("ERRX?", '+121,"Channel number must be 1 to 10, or 101 to 1002."'),
        OK,
    ]) as inst:
        with pytest.raises(InstrumentError) as info:
            inst.smu1.enable()
    assert info.value.code == 200
    assert info.value.message == "Channel output switch must be ON.; SLOT1"


def test_malformed_error_reply_is_a_data_format_error():
    with protocol([("CN 1", None), ("ERRX?", "garbage")]) as inst:
        with pytest.raises(DataFormatError, match="ERRX"):
            inst.smu1.enable()


def test_outputs_on_off_zero():
    with protocol([
        ("CN 1,2", None), OK,
        ("CN", None), OK,
        ("CL 2", None), OK,
        ("DZ", None), OK,
        ("DZ 1", None), OK,
        ("CN 3", None), OK,
        ("CL 3", None), OK,
        ("CL", None), OK,
    ]) as inst:
        inst.enable_outputs(1, 2)
        inst.enable_outputs()
        inst.disable_outputs(2)
        inst.zero_outputs()
        inst.smu1.zero()
        inst.smu3.output_enabled = True
        inst.smu3.disable()
        inst.disable_outputs()


def test_force_voltage_sends_compliance_in_the_same_command():
    with protocol([
        ("DV 1,0,0.5,0.0001", None), OK,
        ("DV 2,20,-1.5,1e-05,0,11", None), OK,
        ("DV 3,1000,100,0.02", None), OK,
    ]) as inst:
        inst.smu1.force_voltage(0.5, 1e-4)
        inst.smu2.force_voltage(-1.5, 1e-5, output_range="2 V", compliance_range="1 nA")
        inst.smu3.force_voltage(100, 0.02, output_range=14)  # alias 14 is sent as 1000


def test_force_current():
    with protocol([("DI 2,0,1e-06,2", None), OK, ("DI 1,11,-5e-10,0.5,0,20", None), OK]) as inst:
        inst.smu2.force_current(1e-6, 2)
        inst.smu1.force_current(-5e-10, 0.5, output_range=11, compliance_range="2 V")


@pytest.mark.parametrize(
    "value, text",
    [(0.5, "0.5"), (1e-4, "0.0001"), (1e-5, "1e-05"), (100.0, "100"), (0, "0"), (-0.0, "0"),
     (-2, "-2"), (0.1 + 0.2, "0.30000000000000004"), (1.5e-11, "1.5e-11"), (np.float64(0.25), "0.25")],
)
def test_number_formatting_is_pinned(value, text):
    assert flex_number(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_number_formatting_round_trips_exactly(x):
    text = flex_number(x)
    assert float(text) == x
    assert " " not in text and "," not in text and not text.endswith(".0")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_number_formatting_refuses_non_finite(bad):
    with pytest.raises(LimitError):
        flex_number(bad)


def test_spot_current_voltage_and_both():
    with protocol([
        ("TI 1", "NAI+000.005E-09"),
        ("TI 2,-11", "NBI-012.345E-09"),
        ("TV 3", "NCV+001.000E+00"),
        ("TIV 4", "NDI+010.000E-06,NDV+000.500E+00"),
        ("TIV 1,0,-20", "NAI+001.000E-06,NAV+001.999E+00"),
    ]) as inst:
        r = inst.smu1.measure_current()
        assert isinstance(r, Reading)
        assert r.channel == 1 and r.current == pytest.approx(5e-12) and math.isnan(r.voltage)
        assert r.status == "N" and r.ok and not r.compliance and not r.overflow
        assert inst.smu2.measure_current(range="1 nA range fixed").current == pytest.approx(-12.345e-9)
        assert inst.smu3.measure_voltage().voltage == pytest.approx(1.0)
        both = inst.smu4.measure()
        assert both.current == pytest.approx(1e-5) and both.voltage == pytest.approx(0.5)
        assert inst.smu1.measure(voltage_range=-20).voltage == pytest.approx(1.999)


def test_spot_reading_of_another_channel_is_rejected():
    with protocol([("TI 1", "NBI+000.005E-09")]) as inst:
        with pytest.raises(DataFormatError, match="channel 2"):
            inst.smu1.measure_current()


def test_channel_settings():
    with protocol([
        ("CMM 1,1", None), OK,
        ("AAD 2,1", None), OK,
        ("FL 1,3", None), OK,
        ("RI 1,-11", None), OK,
        ("RV 2,-20", None), OK,  # alias -11 of the 2 V range is sent canonically
        ("RV 2,0", None), OK,
        ("AIT 1,2,1", None), OK,
        ("AIT 0,3,0.0005", None), OK,
        ("AZ 0", None), OK,
        ("TSC 1", None), OK,
    ]) as inst:
        inst.smu1.measurement_mode = "current"
        inst.smu2.adc = "high_resolution"
        inst.smu3.filter_enabled = True
        inst.smu1.current_range = -11
        inst.smu2.voltage_range = -11
        inst.smu2.voltage_range = 0
        inst.set_integration("high_resolution", "plc", 1)
        inst.set_integration("high_speed", "time", 5e-4)
        inst.auto_zero = False
        inst.timestamps = True


SWEEP_REPLY = ",".join([
    "NAI+001.000E-06,NBI-001.000E-06,WAV+010.000E-03",
    "NAI+002.000E-06,NBI-002.000E-06,WAV+020.000E-03",
    "NAI+003.000E-06,NBI-003.000E-06,EAV+030.000E-03",
])


def test_staircase_sweep_commands_and_result():
    with protocol([
        ("WV 1,1,0,0.01,0.03,3,0.001", None), OK,
        ("WT 0,0.001", None), OK,
        ("WM 2,1", None), OK,
        ("MM 2,1,2", None), OK,
        ("FMT 1,1", None), OK,
        ("XE", SWEEP_REPLY),
    ]) as inst:
        res = inst.staircase_sweep(1, 0.01, 0.03, 3, 1e-3, measure=(1, 2), delay=1e-3)
    np.testing.assert_allclose(res.source, [0.01, 0.02, 0.03])
    np.testing.assert_allclose(res.current[1], [1e-6, 2e-6, 3e-6])
    np.testing.assert_allclose(res.current[2], [-1e-6, -2e-6, -3e-6])
    assert list(res.status[1]) == ["N"] * 3 and not res.compliance.any() and res.ok.all()
    df = res.to_dataframe()
    assert list(df.columns) == ["source", "I1", "status1", "I2", "status2", "compliance", "overflow"]
    assert df.attrs == {"source_channel": 1, "source_kind": "V"}


def test_staircase_sweep_options():
    reply = ",".join(f"NCV+00{k}.000E+00,{'E' if n == 3 else 'W'}CI+00{k}.000E-06"
                     for n, k in enumerate((1, 2, 2, 1)))
    with protocol([
        ("WI 3,3,14,1e-06,2e-06,2,5,0.01", None), OK,
        ("WT 0.5,0.01,0.002", None), OK,
        ("WM 1,2", None), OK,
        ("MM 2,3", None), OK,
        ("FMT 1,1", None), OK,
        ("XE", reply),
    ]) as inst:
        res = inst.staircase_sweep(
            3, 1e-6, 2e-6, 2, 5, source="current", mode="linear_two_way", output_range="1 uA",
            power_compliance=0.01, hold=0.5, delay=0.01, step_delay=0.002,
            abort_on_compliance=False, end_at="stop",
        )
    assert res.source_kind == "I" and len(res) == 4
    np.testing.assert_allclose(res.voltage[3], [1, 2, 2, 1])
    np.testing.assert_allclose(res.source, [1e-6, 2e-6, 2e-6, 1e-6])


def test_sweep_reply_with_the_wrong_step_count_is_rejected():
    with protocol([
        ("WV 1,1,0,0.01,0.04,4,0.001", None), OK, ("WT 0,0", None), OK, ("WM 2,1", None), OK,
        ("MM 2,1,2", None), OK, ("FMT 1,1", None), OK, ("XE", SWEEP_REPLY),
    ]) as inst:
        with pytest.raises(DataFormatError, match="expected 4"):
            inst.staircase_sweep(1, 0.01, 0.04, 4, 1e-3, measure=(1, 2))


def test_pulsed_spot_commands_and_reading():
    with protocol([
        ("PT 0,0.001", None), OK,
        ("PV 1,0,0,0.5,0.001", None), OK,
        ("MM 3,1", None), OK,
        ("XE", "NAI+012.500E-06"),
        ("PT 0.1,0.01,0.05", None), OK,
        ("PI 2,0,0,1e-06,2", None), OK,
        ("MM 3,2", None), OK,
        ("XE", "CBV+002.000E+00"),
    ]) as inst:
        r = inst.pulsed_spot(1, 0, 0.5, 1e-3, 1e-3)
        assert r.current == pytest.approx(12.5e-6) and r.status == "N"
        r = inst.pulsed_spot(2, 0, 1e-6, 0.01, 2, source="current", hold=0.1, period=0.05)
        assert r.voltage == pytest.approx(2.0) and r.compliance and r.status == "C"


def test_abort_and_shutdown():
    with protocol([("AB", None), OK, ("DZ", None), ("CL", None)]) as inst:
        inst.abort()
        inst.shutdown()
        assert inst.isShutdown


# ==================================================== (2) bad input sends nothing
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda i: i.smu1.force_voltage(150, 1e-3), r"voltage 150 V is outside ±100 V"),
        (lambda i: i.smu1.force_voltage(-100.5, 1e-3), r"voltage -100.5 V"),
        (lambda i: i.smu1.force_voltage(0.5, 0), r"current compliance 0 A must be > 0"),
        (lambda i: i.smu1.force_voltage(0.5, -1e-3), r"compliance -0.001 A must be > 0"),
        (lambda i: i.smu1.force_voltage(50, 0.1), r"compliance 0.1 A exceeds the 0.02 A"),
        (lambda i: i.smu1.force_voltage(math.nan, 1e-3), r"voltage must be finite"),
        (lambda i: i.smu1.force_voltage("1", None), r"current compliance must be a number"),
        (lambda i: i.smu1.force_voltage(0.5, 1e-3, output_range="1 nA"), r"range '1 nA' is not available"),
        (lambda i: i.smu1.force_voltage(0.5, 1e-3, output_range=2), r"range 2 is not available"),
        (lambda i: i.smu1.force_current(0.2, 2), r"current 0.2 A is outside ±0.1 A"),
        (lambda i: i.smu1.force_current(1e-3, 0), r"voltage compliance 0 V must be > 0"),
        (lambda i: i.smu1.force_current(1e-3, 150), r"voltage compliance 150 V is outside"),
        (lambda i: i.smu1.force_current(0.05, 50), r"current 0.05 A exceeds the 0.02 A"),
        (lambda i: i.smu(11), r"channel 11 does not exist"),
        (lambda i: i.smu(0), r"channel 0 does not exist"),
        (lambda i: i.smu(5), r"channel 5 is not an SMU \(slot 5 holds nothing\)"),
        (lambda i: i.smu(1.0), r"channel must be an integer"),
        (lambda i: i.enable_outputs(1, 11), r"channel 11 does not exist"),
        (lambda i: i.enable_outputs(1, 1), r"name a channel twice"),
        (lambda i: i.staircase_sweep(1, 0, 0.1, 0, 1e-3), r"steps 0 is outside 1..1001: an empty"),
        (lambda i: i.staircase_sweep(1, 0, 0.1, 1002, 1e-3), r"steps 1002"),
        (lambda i: i.staircase_sweep(1, 0, 0.1, 2.5, 1e-3), r"steps must be an integer"),
        (lambda i: i.staircase_sweep(1, 0, 0.1, 5, 1e-3, measure=()), r"measure names no channel"),
        (lambda i: i.staircase_sweep(11, 0, 0.1, 5, 1e-3), r"channel 11 does not exist"),
        (lambda i: i.staircase_sweep(1, 0, 0.1, 5, 1e-3, measure=(1, 11)), r"channel 11"),
        (lambda i: i.staircase_sweep(1, 0, 150, 5, 1e-3), r"sweep stop 150 V is outside"),
        (lambda i: i.staircase_sweep(1, 0, 0.1, 5, 0), r"compliance 0 A must be > 0"),
        (lambda i: i.staircase_sweep(1, -1, 1, 5, 1e-3, mode="log"), r"log sweep"),
        (lambda i: i.staircase_sweep(1, 0, 1, 5, 1e-3, mode="spiral"), r"sweep mode must be one of"),
        (lambda i: i.staircase_sweep(1, 0, 1, 5, 1e-3, source="power"), r"source must be"),
        (lambda i: i.staircase_sweep(1, 0, 1, 5, 1e-3, hold=-1), r"hold time -1 s"),
        (lambda i: i.staircase_sweep(1, 0, 1, 5, 1e-3, delay=100), r"step delay 100 s"),
        (lambda i: i.staircase_sweep(1, 0, 1, 5, 1e-3, power_compliance=5), r"power compliance 5 W"),
        (lambda i: i.pulsed_spot(1, 0, 0.5, 1e-4, 1e-3), r"pulse width 0.0001 s"),
        (lambda i: i.pulsed_spot(1, 0, 0.5, 0.01, 1e-3, period=0.011), r"pulse period 0.011 s"),
        (lambda i: i.pulsed_spot(1, 0, 101, 0.01, 1e-3), r"pulse level 101 V"),
        (lambda i: i.pulsed_spot(1, 0, 0.5, 0.01, 0), r"compliance 0 A must be > 0"),
        (lambda i: i.pulsed_spot(1, 0, 0.5, 0.01, 1e-3, measure_channel=11), r"channel 11"),
        (lambda i: i.smu1.measure_current(range=99), r"current range 99 is not available"),
        (lambda i: i.set_integration("pulsed", "plc", 1), r"has no 'plc' mode"),
        (lambda i: i.set_integration("high_speed", "plc", 1.5), r"must be an integer"),
        (lambda i: i.set_integration("high_speed", "plc", 1000), r"integration value 1000"),
    ],
)
def test_bad_input_raises_before_anything_is_sent(call, message):
    with protocol([]) as inst:
        with pytest.raises(LimitError, match=message):
            call(inst)


@pytest.mark.parametrize(
    "prop, value",
    [("current_range", 99), ("current_range", 20), ("voltage_range", 2), ("adc", "fast"),
     ("measurement_mode", "both"), ("output_enabled", "yes")],
)
def test_bad_settings_send_nothing(prop, value):
    with protocol([]) as inst:
        with pytest.raises(ValueError, match="is not in the discrete set"):  # not the adapter's
            setattr(inst.smu1, prop, value)


def test_bad_module_table_is_rejected():
    with pytest.raises(LimitError, match="slot 11 does not exist"):
        with expected_protocol(KeysightB1500A, [], modules={11: "B1517A"}):
            pass


# ================================================================= (3) FMT 1 parsing
@pytest.mark.parametrize("status", list("NCTVWE"))
def test_every_status_letter_is_kept(status):
    e = parse_element(f"{status}AI+001.500E-06")
    assert e.status == status and e.channel == 1 and e.kind == "I"
    assert e.compliance == (status in "CT")
    assert e.is_source == (status in "WE")
    if status == "V":
        assert e.overflow and math.isnan(e.value)
    else:
        assert not e.overflow and e.value == pytest.approx(1.5e-6)


@pytest.mark.parametrize("status, compliance", [("C", True), ("T", True), ("N", False)])
def test_reading_surfaces_compliance(status, compliance):
    r = Reading.from_elements(parse_data(f"{status}CI+100.000E-06"))
    assert r.channel == 3 and r.status == status and r.compliance is compliance
    assert r.current == pytest.approx(1e-4)  # the limit, flagged, not a device response


def test_overflow_is_nan_with_status_kept():
    r = Reading.from_elements(parse_data("VAI+199.999E+99"))
    assert math.isnan(r.current) and r.status == "V" and r.overflow and not r.ok
    # an overflow number is NaN whatever the letter says
    assert math.isnan(parse_element("NAI+199.999E+99").value)
    # the worst status wins: V over C over T over N
    r = Reading.from_elements(parse_data("CAI+001.000E-06,VAV+199.999E+99"))
    assert r.status == "V" and r.compliance and r.overflow
    assert r.current == pytest.approx(1e-6) and math.isnan(r.voltage)


def test_channel_letters_and_time_elements():
    assert [parse_element(f"N{c}V+000.000E+00").channel for c in "AEJaj"] == [1, 5, 10, 102, 1002]
    r = Reading.from_elements(parse_data("NAT+000.123E+00,NAI+001.000E-09"))
    assert r.time == pytest.approx(0.123) and r.current == pytest.approx(1e-9)


@pytest.mark.parametrize(
    "text",
    ["", "NAI", "NAI+0.005E-09", "NAI+000.005E-9", "NAI+000.005e-09", "QAI+000.005E-09",
     "NKI+000.005E-09", "NVI+000.005E-09", "NAC+000.005E-09", "NAI 000.005E-09", "NAI+000.005E-09X",
     "NAI+000.005E-09,", ",NAI+000.005E-09", "NAI+000.005E-09;NBI+000.005E-09"],
)
def test_malformed_data_raises_a_clear_error(text):
    with pytest.raises(DataFormatError, match="malformed|empty|channel letter|status letter|not I, V"):
        parse_data(text)


def test_whitespace_and_line_end_are_tolerated():
    elements = parse_data(" NAI+000.005E-09 , NBI+000.006E-09\r\n")
    assert [e.channel for e in elements] == [1, 2]


def test_fmt11_sweep_with_source_values_and_abort():
    line = "CAI+001.000E-09,TBI-001.000E-09,WAV+010.000E-03," \
           "VAI+199.999E+99,VBI+199.999E+99,EAV+020.000E-03"
    res = parse_sweep(line, source_channel=1, source_kind="V", measure_channels=[1, 2], steps=2)
    np.testing.assert_allclose(res.source, [0.01, 0.02])
    assert list(res.status[1]) == ["C", "V"] and list(res.status[2]) == ["T", "V"]
    assert list(res.compliance) == [True, False] and list(res.overflow) == [False, True]
    assert res.current[1][0] == pytest.approx(1e-9) and np.isnan(res.current[1][1])
    df = res.to_dataframe()
    assert isinstance(df, pd.DataFrame) and df["status1"].tolist() == ["C", "V"]


def test_sweep_with_current_and_voltage_and_time_per_channel():
    line = ",".join(
        f"NAT+00{k}.000E+00,NAI+00{k}.000E-06,NAV+00{k}.000E+00,{'E' if k == 3 else 'W'}AV+00{k}.000E+00"
        for k in (1, 2, 3)
    )
    res = parse_sweep(line, source_channel=1, source_kind="V", steps=3)
    np.testing.assert_allclose(res.time[1], [1, 2, 3])
    np.testing.assert_allclose(res.voltage[1], [1, 2, 3])
    assert list(res.to_dataframe().columns[:5]) == ["source", "I1", "V1", "t1", "status1"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("NAI+001.000E-06,WAV+010.000E-03,NAI+001.000E-06", "after the last source"),
        ("NAI+001.000E-06,EAV+010.000E-03,NAI+001.000E-06,EAV+020.000E-03", "source status 'E'"),
        ("NAI+001.000E-06,WAV+010.000E-03,NAI+001.000E-06,WAV+020.000E-03", "source status 'W'"),
        ("NAI+001.000E-06,WAV+010.000E-03,NBI+001.000E-06,EAV+020.000E-03", "step 2 has elements"),
        ("NAI+001.000E-06,WBV+010.000E-03,NAI+001.000E-06,EBV+020.000E-03", "is not channel 1"),
        ("WAV+010.000E-03,EAV+020.000E-03", "no measured data"),
        ("NBI+001.000E-06,EAV+020.000E-03", "asked for \\[1\\]"),
        ("NAI+001.000E-06,NAI+001.000E-06,EAV+020.000E-03", "repeats"),
    ],
)
def test_out_of_step_sweep_data_is_rejected(line, message):
    with pytest.raises(DataFormatError, match=message):
        parse_sweep(line, source_channel=1, source_kind="V", measure_channels=[1])


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(st.one_of(st.just(0.0), finite.filter(lambda x: 1e-95 <= abs(x) <= 1e100)))
def test_fmt1_number_round_trips_within_its_resolution(x):
    text = format_fmt1_number(x)
    assert len(text) == 12
    e = parse_element("NAI" + text)
    exponent = int(text[-3:])
    assert abs(e.value - x) <= 0.5e-3 * 10.0**exponent * (1 + 1e-9) + 1e-300
    assert abs(e.value - x) <= 5.0001e-4 * abs(x) + 1e-300  # best exponent: relative bound


@given(finite.filter(lambda x: abs(x) < 1e3), st.sampled_from([-12, -9, -6, -3, 0]))
def test_parser_reads_the_emulators_number_format(x, exponent):
    text = sim_format_number(x, exponent)
    value = parse_element("NAI" + text).value
    assert abs(value - x) <= 0.5e-3 * 10.0 ** int(text[-3:]) * (1 + 1e-9)


def test_fmt1_number_edge_cases():
    assert format_fmt1_number(5e-12) == "+005.000E-12"
    assert format_fmt1_number(999.9999) == "+001.000E+03"
    assert format_fmt1_number(-0.5) == "-500.000E-03"
    assert format_fmt1_number(math.nan) == "+199.999E+99"
    assert format_fmt1_number(1e200) == "+199.999E+99"


# ============================================================ (4) against the emulator
def make_rig() -> SimRig:
    return SimRig.default(seed=0, site="Q1")


@pytest.fixture
def rig():
    return make_rig()


@pytest.fixture
def b1500(rig):
    return KeysightB1500A(rig.adapter("b1500a"), name="b1500a")


def wire_m1(rig) -> None:
    """B1500 ch1 (row 3) -> S01.CL1 (pin 3), ch2 (row 4) -> S01.CL2 (pin 4): M1 of S01."""
    rig.bench.close_relays([(1, 3, 3), (1, 4, 4)])


def m1_conductance(rig) -> float:
    return rig.bench.wafer.device("S01").m1.conductance(rig.bench.clock.now())


def test_emulator_identity_and_discovered_modules(rig, b1500):
    assert "B1500A" in b1500.id
    assert sorted(b1500.smus) == [1, 2, 3, 4]
    assert rig["b1500a"].messages_in()[:2] == ["UNT?", "*IDN?"]


def test_emulator_staircase_sweep_through_m1(rig, b1500):
    wire_m1(rig)
    b1500.enable_outputs(1, 2)
    b1500.smu2.force_voltage(0, 1e-3)
    res = b1500.staircase_sweep(1, 0.01, 0.05, 5, 1e-3, measure=(1, 2), delay=1e-3)
    g = m1_conductance(rig)
    assert 2e-6 < g < 110e-6
    np.testing.assert_allclose(res.source, [0.01, 0.02, 0.03, 0.04, 0.05])
    np.testing.assert_allclose(res.current[1], g * res.source, rtol=0.02)
    np.testing.assert_allclose(res.current[2], -g * res.source, rtol=0.02)  # ch2 sinks it
    assert res.ok.all() and not res.compliance.any()
    sent = rig["b1500a"].messages_in()
    assert sent[-11:] == ["WV 1,1,0,0.01,0.05,5,0.001", "ERRX?", "WT 0,0.001", "ERRX?", "WM 2,1", "ERRX?",
                          "MM 2,1,2", "ERRX?", "FMT 1,1", "ERRX?", "XE"]


def test_emulator_open_circuit_gives_no_current(rig, b1500):
    b1500.enable_outputs(1, 2)  # no relay closed: ch1 reaches nothing
    res = b1500.staircase_sweep(1, 0.01, 0.05, 5, 1e-3)
    assert np.all(np.abs(res.current[1]) < 1e-10)


def test_emulator_spot_and_compliance(rig, b1500):
    wire_m1(rig)
    b1500.enable_outputs(1, 2)
    b1500.smu2.force_voltage(0, 1e-3)
    b1500.smu1.force_voltage(0.05, 1e-3)
    r = b1500.smu1.measure_current()
    assert r.ok and r.current == pytest.approx(0.05 * m1_conductance(rig), rel=0.02)
    both = b1500.smu1.measure()
    assert both.voltage == pytest.approx(0.05, abs=1e-3)
    b1500.smu1.force_voltage(0.05, 1e-9)  # far below G·V: the channel limits
    r = b1500.smu1.measure_current()
    assert r.status == "C" and r.compliance and r.current == pytest.approx(1e-9, rel=0.05)
    assert b1500.smu2.measure_current().status == "T"  # the other channel sees it


def test_emulator_sweep_into_compliance_flags_and_aborts(rig, b1500):
    wire_m1(rig)
    b1500.enable_outputs(1, 2)
    b1500.smu2.force_voltage(0, 1e-3)
    res = b1500.staircase_sweep(1, 0.01, 0.05, 5, 1e-9, measure=(1, 2))
    assert res.status[1][0] == "C" and res.status[2][0] == "T" and res.compliance[0]
    assert np.all(res.status[1][1:] == "V") and np.all(np.isnan(res.current[1][1:]))
    np.testing.assert_allclose(res.source, [0.01, 0.02, 0.03, 0.04, 0.05])


def test_emulator_pulsed_spot(rig, b1500):
    wire_m1(rig)
    b1500.enable_outputs(1, 2)
    b1500.smu2.force_voltage(0, 1e-3)
    g = m1_conductance(rig)
    r = b1500.pulsed_spot(1, 0, 0.05, 1e-3, 1e-3)
    assert r.ok and r.current == pytest.approx(0.05 * g, rel=0.02)
    assert rig["b1500a"].messages_in()[-7:] == [
        "PT 0,0.001", "ERRX?", "PV 1,0,0,0.05,0.001", "ERRX?", "MM 3,1", "ERRX?", "XE"]


def test_emulator_injected_error_raises_with_its_text(rig, b1500):
    b1500.enable_outputs(1)
    rig["b1500a"].inject_error(305, "Excess current in HPSMU.")
    with pytest.raises(InstrumentError, match="Excess current in HPSMU.") as info:
        b1500.smu1.force_voltage(0.1, 1e-3)
    assert info.value.code == 305 and info.value.instrument == "b1500a"
    assert b1500.next_error == (0, "No Error.")  # the check emptied the queue


def test_emulator_rejects_force_on_a_disabled_output(rig, b1500):
    with pytest.raises(InstrumentError, match="Channel output switch must be ON") as info:
        b1500.smu3.force_voltage(0.1, 1e-3)
    assert info.value.code == 200


def test_emulator_measurement_that_fails_reports_the_instrument_error(rig, b1500):
    # TI on a disabled channel sends no data; the timeout is explained by ERRX?
    with pytest.raises(InstrumentError, match="SLOT3") as info:
        b1500.smu3.measure_current()
    assert info.value.code == 200
    with pytest.raises(InstrumentError, match="output switch"):  # XE fails the same way
        b1500.staircase_sweep(1, 0, 0.1, 3, 1e-3)


def test_emulator_dropped_connection(rig, b1500):
    rig["b1500a"].faults.drop_connection()
    with pytest.raises(InstrumentCommunicationError, match="connection failed while sending 'CN 1'"):
        b1500.enable_outputs(1)
    with pytest.raises(InstrumentCommunicationError):  # the session stays dead
        b1500.smu1.measure_current()


def test_emulator_late_reply_is_a_communication_error(rig, b1500):
    b1500.enable_outputs(1)
    rig["b1500a"].faults.delay_replies(10.0)
    with pytest.raises(InstrumentCommunicationError, match="no reply within the timeout"):
        b1500.smu1.measure_current()


def test_emulator_bad_input_sends_nothing(rig, b1500):
    before = list(rig["b1500a"].messages_in())
    for call in (lambda: b1500.smu1.force_voltage(150, 1e-3),
                 lambda: b1500.smu1.force_voltage(0.5, 0),
                 lambda: b1500.staircase_sweep(1, 0, 0.1, 0, 1e-3),
                 lambda: b1500.smu(11)):
        with pytest.raises(LimitError):
            call()
    assert rig["b1500a"].messages_in() == before


def test_emulator_shutdown_turns_every_output_off(rig, b1500):
    wire_m1(rig)
    b1500.enable_outputs(1, 2, 3, 4)
    b1500.smu1.force_voltage(0.05, 1e-3)
    assert rig.bench.source("b1500a.1").output is True
    b1500.shutdown()
    for ch in (1, 2, 3, 4):
        state = rig.bench.source(f"b1500a.{ch}")
        assert state.output is False and state.level == 0.0
    assert rig["b1500a"].messages_in()[-2:] == ["DZ", "CL"]
    assert b1500.isShutdown


def test_emulator_shutdown_reports_a_dead_link(rig, b1500):
    rig["b1500a"].faults.drop_connection()
    with pytest.raises(InstrumentCommunicationError):
        b1500.shutdown()
    assert b1500.isShutdown


# ===================================================================== (5) over TCP
@pytest.fixture
def tcp_b1500():
    rig = make_rig()
    server = rig.server().start()
    inst = None
    try:
        inst = KeysightB1500A(server.resources()["b1500a"], name="b1500a", visa_library="@py",
                              read_termination="\r\n", write_termination="\r\n", timeout=5000)
        yield rig, inst
    finally:
        if inst is not None:
            inst.adapter.close()
        server.stop()


def test_tcp_spot_measurement_through_m1(tcp_b1500):
    rig, inst = tcp_b1500
    assert isinstance(inst.adapter.connection, pyvisa.resources.MessageBasedResource)
    assert sorted(inst.smus) == [1, 2, 3, 4]
    wire_m1(rig)
    inst.enable_outputs(1, 2)
    inst.smu2.force_voltage(0, 1e-3)
    inst.smu1.force_voltage(0.05, 1e-3)
    r = inst.smu1.measure_current()
    assert r.ok and r.current == pytest.approx(0.05 * m1_conductance(rig), rel=0.02)
    res = inst.staircase_sweep(1, 0.01, 0.03, 3, 1e-3)
    np.testing.assert_allclose(res.current[1], m1_conductance(rig) * res.source, rtol=0.02)
    inst.shutdown()
    assert inst.next_error == (0, "No Error.")  # a reply: DZ and CL have been handled
    assert rig.bench.source("b1500a.1").output is False
    assert rig["b1500a"].messages_in()[-3:] == ["DZ", "CL", "ERRX?"]


def test_tcp_failed_measurement_is_explained_by_errx(tcp_b1500):
    _, inst = tcp_b1500
    inst.adapter.connection.timeout = 300  # ms: the failed TI sends nothing
    with pytest.raises(InstrumentError, match="SLOT3"):
        inst.smu3.measure_current()
