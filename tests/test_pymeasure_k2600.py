"""pymeasure's own ``Keithley2600`` driver (0.16, unmodified) against the 2612A
emulator, in process (SimAdapter) and over TCP (``labpcu sim serve``'s server, pyvisa
``@py``): every property and method it has that applies to a 2612A/B, then the
trigger model and the status model through its ``write``/``ask``.

The device under the probes is diode D1 of S01 (site Q1): smua (row 1) on S01.WL,
smub (row 2) on S01.CL1. pymeasure never touches smub's off-mode, so smub stays in the
2600's normal off-mode (0 V, 1 mA limit) and the diode current flows into it, as on
the instrument.
"""

from __future__ import annotations

import warnings

import pytest
from pymeasure.instruments.keithley import Keithley2600
from pymeasure.instruments.keithley import keithley2600 as pm_k2600

from labpcu.sim.rig import SimRig

A, B = "k2612a.smua", "k2612a.smub"


@pytest.fixture(params=["in-process", "tcp"])
def setup(request):
    rig = SimRig.default(seed=0, site="Q1")
    server = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pymeasure: "not known whether ... SCPI"
        if request.param == "in-process":
            k = Keithley2600(rig.adapter("k2612a"))
        else:
            server = rig.server().start()
            k = Keithley2600(server.resources()["k2612a"], visa_library="@py", read_termination="\n",
                             write_termination="\n", timeout=5000)
    rig["k3706a"].write('channel.close("1101,1203")')  # smua -> S01.WL, smub -> S01.CL1
    try:
        yield rig, k
    finally:
        k.adapter.close()
        if server is not None:
            server.stop()


def sent(rig) -> list[str]:
    return rig["k2612a"].messages_in()


def test_identity_and_error_queue(setup):
    rig, k = setup
    assert k.id.startswith("Keithley Instruments Inc., Model 2612A, ")
    assert k.check_errors() == []
    k.write("smua.source.levelv = = 1")
    code, message = k.next_error
    assert code == -285 and "Syntax" in message
    assert k.next_error == (0, "Queue Is Empty")
    # the error also latched the execution-error bit of the standard event register
    assert int(k.ask("*ESR?")) & 16


@pytest.mark.parametrize("name", ["ChA", "ChB"])
def test_every_control_reads_back(setup, name):
    rig, k = setup
    ch = getattr(k, name)
    tsp = "smua" if name == "ChA" else "smub"
    checks = [
        ("source_mode", "current"), ("source_current", 2e-6), ("compliance_voltage", 1.5),
        ("source_current_range", 1e-5), ("current_range", 1e-4),
        ("source_mode", "voltage"), ("source_voltage", 0.25), ("compliance_current", 0.01),
        ("source_voltage_range", 2.0), ("voltage_range", 20.0),
        ("wires_mode", "4"), ("wires_mode", "2"),
        ("source_output", "ON"), ("source_output", "OFF"),
    ]
    for prop, value in checks:
        setattr(ch, prop, value)
        got = getattr(ch, prop)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), prop
    assert k.check_errors() == []
    assert f"{tsp}.source.limitv=1.500000" in sent(rig)
    # the off-state the instrument keeps while pymeasure has the output off
    assert k.ask(f"print({tsp}.source.offmode, {tsp}.source.offfunc, {tsp}.source.offlimiti, "
                 f"{tsp}.source.offlimitv)") == "0.00000e+00\t1.00000e+00\t1.00000e-03\t4.00000e+01"


def test_measure_nplc_sends_the_index_not_the_value(setup):
    # pymeasure maps measure_nplc through values=[0.001, 25] (the known trap): 25 PLC
    # goes out as index 1, and 0.001 PLC as index 0, which the instrument refuses
    rig, k = setup
    k.ChA.measure_nplc = 25
    assert k.ask("print(smua.measure.nplc)") == "1.00000e+00"
    assert sent(rig)[-2] == "smua.measure.nplc=1.000000"
    assert k.ChA.measure_nplc == 25  # read back through the same mapping
    k.ChA.measure_nplc = 0.001
    (code, message), = k.check_errors()  # a query: over TCP the write has been handled
    assert code == -222 and "nplc" in message
    assert "smua.measure.nplc=0.000000" in sent(rig)
    assert int(k.ask("*ESR?")) & 16  # an execution error, latched in the standard event register
    with pytest.raises(ValueError):
        k.ChA.measure_nplc = 1  # neither end of the list


def test_diode_measured_with_the_other_channel_off(setup):
    rig, k = setup
    bench = rig.bench
    k.ChA.apply_voltage(voltage_range=2, compliance_current=0.01)
    k.ChA.measure_current(nplc=1, current=1e-3, auto_range=True)
    k.ChA.source_voltage = 0.8
    k.ChA.source_output = "ON"
    i = k.ChA.current
    # smub is off in its normal off-mode: it holds CL1 at 0 V and sinks D1's current
    assert i > 1e-6
    assert bench.live_outputs() == [A]
    assert k.ChB.current == pytest.approx(-i, rel=1e-3)
    assert k.ChA.voltage == pytest.approx(0.8, abs=1e-3)
    assert k.ChA.resistance == pytest.approx(0.8 / i, rel=0.01)
    # smub in high-Z: the relay opens and nothing flows any more
    k.write("smub.source.offmode = smub.OUTPUT_HIGH_Z")
    assert abs(k.ChA.current) < 1e-10
    assert k.check_errors() == []


def test_methods(setup, monkeypatch):
    rig, k = setup
    bench = rig.bench
    monkeypatch.setattr(pm_k2600.time, "sleep", lambda s: None)  # pymeasure ramps on the wall clock
    k.ChA.apply_current(current_range=1e-4, compliance_voltage=1.0)
    assert k.ChA.source_mode == "current" and k.ChA.compliance_voltage == pytest.approx(1.0)
    k.ChA.apply_current(compliance_voltage=1.0)  # auto range
    assert k.ask("print(smua.source.autorangei)") == "1.00000e+00"
    k.ChA.measure_voltage(nplc=1, voltage=2.0, auto_range=False)
    assert k.ChA.voltage_range == pytest.approx(2.0)
    k.ChA.apply_voltage(compliance_current=0.01)
    k.ChA.auto_range_source()
    k.ChA.source_output = "ON"
    k.ChA.ramp_to_voltage(0.6, steps=4, pause=0.0)
    assert k.ChA.source_voltage == pytest.approx(0.6)  # a query: every write before it is done
    assert bench.source(A).level == pytest.approx(0.6)
    assert k.ChA.current > 1e-8
    k.ChB.apply_current(compliance_voltage=1.0)
    k.ChB.ramp_to_current(-1e-6, steps=3, pause=0.0)
    assert k.ChB.source_current == pytest.approx(-1e-6)
    for ch in (k.ChA, k.ChB):
        ch.shutdown()
    assert k.ChA.source_output == "OFF" and k.ChB.source_output == "OFF"
    assert bench.live_outputs() == []
    assert k.check_errors() == []


def test_trigger_model_sweep_and_srq_through_pymeasure(setup):
    rig, k = setup
    n = 6
    for line in [
        "reset()", "smua.source.func = smua.OUTPUT_DCVOLTS", "smua.source.limiti = 0.01",
        "smua.nvbuffer1.clear()", "smua.nvbuffer1.collectsourcevalues = 1",
        f"smua.trigger.source.linearv(0, 0.8, {n})", "smua.trigger.source.action = smua.ENABLE",
        "smua.trigger.measure.i(smua.nvbuffer1)", "smua.trigger.measure.action = smua.ENABLE",
        f"smua.trigger.count = {n}", "smua.trigger.endsweep.action = smua.SOURCE_IDLE",
        "status.reset()", "status.operation.sweeping.enable = status.operation.sweeping.SMUA",
        "status.operation.sweeping.ptr = 0", "status.operation.sweeping.ntr = status.operation.sweeping.SMUA",
        "status.operation.enable = status.operation.SWEEPING", "status.request_enable = status.OSB",
        "smua.source.output = smua.OUTPUT_ON",
    ]:
        k.write(line)
    assert k.check_errors() == []
    k.write("smua.trigger.initiate()")
    assert float(k.ask("print(status.operation.sweeping.condition)")) == 2.0
    assert k.ask("*STB?").strip() == "0"
    assert k.ask("*OPC?").strip() == "1"  # waits for the sweep, in bench time
    assert int(k.ask("*STB?")) == 128 | 64
    assert rig["k2612a"].status_model.srq_count == 1
    currents = k.values(f"printbuffer(1, {n}, smua.nvbuffer1.readings)")
    assert len(currents) == n and currents[-1] > 1e-6 and abs(currents[0]) < 1e-9
