"""The 2600 emulator against the Series 2600B Reference Manual, for clients we did not
write: the trigger model in bench time (initiate returns at once; *TRG, arm.set(),
timers, blenders; waitcomplete/*OPC? wait by advancing the bench clock; abort), the
output-off modes in the circuit, the status model with SRQ, getmetatable/node/localnode,
the KIPulse configured pulse trains, and the 2600B model table.

The TSP here follows the manual's examples (DC sweep with the trigger model, a pulse
train with timers, an SRQ at the end of a sweep); every test exercises behaviour the
emulator did not have before issue 14.
"""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.sim.bench import SimBench
from labpcu.sim.physics import Physics
from labpcu.sim.tsp.k2600 import K2612AEmulator
from simhelpers import pin_of

BENCH_PHYSICS = Physics().without("instrument_accuracy", "capacitance", "series_resistance", "relay_leakage")

A, B = "k2612a.smua", "k2612a.smub"


@pytest.fixture
def bench() -> SimBench:
    # the emulator against the DC bench: exact readings (the reading accuracy is tested in
    # test_sim_instrument_accuracy), no transients or parasitic paths (tested with the parasitics)
    return SimBench(seed=0, site="Q1", physics=BENCH_PHYSICS)


@pytest.fixture
def emu(bench: SimBench) -> K2612AEmulator:
    return K2612AEmulator(bench)


def ask(emu: K2612AEmulator, message: str) -> str:
    emu.write(message)
    return emu.take_output().decode("latin-1").rstrip("\n")


def num(emu: K2612AEmulator, expr: str) -> list[float]:
    return [float(x) for x in ask(emu, f"print({expr})").split("\t")]


def errors(emu: K2612AEmulator) -> list[tuple[int, str]]:
    out = [(e.code, e.message) for e in emu.errors]
    emu.errors.clear()
    return out


def diode_d1(bench: SimBench) -> None:
    """smua (row 1) on S01.WL, smub (row 2) on S01.CL1: diode D1, anode at smua."""
    bench.close_relays([(1, 1, pin_of(bench, "S01.WL")), (1, 2, pin_of(bench, "S01.CL1"))])


LINEAR_SWEEP = """
reset()
smua.source.func = smua.OUTPUT_DCVOLTS
smua.source.limiti = 0.01
smua.measure.nplc = 1
smua.measure.autozero = smua.AUTOZERO_ONCE
smua.nvbuffer1.clear()
smua.nvbuffer1.collectsourcevalues = 1
smua.nvbuffer2.clear()
smua.trigger.source.linearv(0, 0.8, {n})
smua.trigger.source.limiti = 0.01
smua.trigger.measure.action = smua.ENABLE
smua.trigger.measure.iv(smua.nvbuffer1, smua.nvbuffer2)
smua.trigger.endpulse.action = smua.SOURCE_HOLD
smua.trigger.endsweep.action = smua.SOURCE_IDLE
smua.trigger.count = {n}
smua.trigger.source.action = smua.ENABLE
smua.source.output = smua.OUTPUT_ON
"""


def load(emu: K2612AEmulator, script: str) -> None:
    for line in script.strip().splitlines():
        emu.write(line)
    assert errors(emu) == []


# --------------------------------------------------------------- trigger model
def test_initiate_returns_at_once_and_the_sweep_runs_in_bench_time(emu: K2612AEmulator, bench: SimBench) -> None:
    n = 9
    load(emu, LINEAR_SWEEP.format(n=n))
    emu.write("status.operation.sweeping.enable = status.operation.sweeping.SMUA")
    t0 = bench.clock.now()
    emu.write("smua.trigger.initiate()")
    # the instrument is sweeping: the sweeping registers say so, the buffer fills later
    assert num(emu, "status.operation.sweeping.condition") == [2.0]
    assert num(emu, "status.operation.instrument.smua.condition") == [8.0]
    assert num(emu, "bit.bitand(status.operation.condition, status.operation.SWEEPING)") == [8.0]
    assert num(emu, "smua.nvbuffer1.n")[0] < n
    assert bench.clock.now() - t0 < 0.05
    emu.write("waitcomplete()")
    assert num(emu, "status.operation.sweeping.condition, smua.nvbuffer1.n") == [0.0, float(n)]
    # n readings of 1 PLC at 60 Hz took n/60 s of bench time
    assert bench.clock.now() - t0 == pytest.approx(n / 60.0, rel=1e-6)
    src = [float(x) for x in ask(emu, f"printbuffer(1, {n}, smua.nvbuffer1.sourcevalues)").split(",")]
    assert src == pytest.approx(np.linspace(0, 0.8, n))
    assert errors(emu) == []


def test_dc_sweep_stepped_by_TRG_waits_for_each_trigger(emu: K2612AEmulator) -> None:
    n = 5
    load(emu, LINEAR_SWEEP.format(n=n))
    emu.write("smua.trigger.source.stimulus = trigger.EVENT_ID")
    emu.write("smua.trigger.initiate()")
    emu.write("delay(1)")  # nothing happens without a trigger, however long we wait
    assert num(emu, "smua.nvbuffer1.n, status.operation.sweeping.condition") == [0.0, 2.0]
    for k in range(1, n + 1):
        emu.write("*TRG")
        emu.write("delay(0.1)")
        assert num(emu, "smua.nvbuffer1.n") == [float(k)]
    assert num(emu, "status.operation.sweeping.condition") == [0.0]
    src = [float(x) for x in ask(emu, f"printbuffer(1, {n}, smua.nvbuffer1.sourcevalues)").split(",")]
    assert src == pytest.approx(np.linspace(0, 0.8, n))
    assert errors(emu) == []


def test_opc_query_answers_when_the_sweep_ends(emu: K2612AEmulator, bench: SimBench) -> None:
    load(emu, LINEAR_SWEEP.format(n=4))
    emu.write("smua.trigger.arm.stimulus = trigger.EVENT_ID")
    emu.write("smua.trigger.initiate()")
    # waiting for an arm trigger that a later *TRG will bring: *OPC? has no answer yet
    assert ask(emu, "*OPC?") == ""
    t0 = bench.clock.now()
    emu.write("*TRG")
    emu.write("delay(1)")
    assert emu.take_output() == b"1\n"  # the deferred *OPC? reply, once the sweep ended
    assert ask(emu, "*OPC?") == "1"
    assert num(emu, "smua.nvbuffer1.n") == [4.0]
    assert bench.clock.now() - t0 == pytest.approx(1.0)


def test_arm_set_after_initiate_starts_a_waiting_sweep(emu: K2612AEmulator) -> None:
    load(emu, LINEAR_SWEEP.format(n=3))
    emu.write("smua.trigger.arm.stimulus = trigger.blender[1].EVENT_ID")
    emu.write("smua.trigger.arm.set()")  # initiate() clears every event detector
    emu.write("smua.trigger.initiate() waitcomplete()")
    assert num(emu, "smua.nvbuffer1.n, status.operation.sweeping.condition") == [0.0, 2.0]
    emu.write("smua.trigger.arm.set() waitcomplete()")
    assert num(emu, "smua.nvbuffer1.n, status.operation.sweeping.condition") == [3.0, 0.0]


def test_abort_stops_a_running_sweep_at_the_idle_level(emu: K2612AEmulator, bench: SimBench) -> None:
    load(emu, LINEAR_SWEEP.format(n=50))
    emu.write("smua.trigger.initiate() delay(0.1)")
    done = num(emu, "smua.nvbuffer1.n")[0]
    assert 0 < done < 50
    emu.write("smua.trigger.abort()")
    assert num(emu, "status.operation.sweeping.condition") == [0.0]
    assert bench.source(A).level == 0.0  # source.levelv, the idle level
    emu.write("delay(1)")
    assert num(emu, "smua.nvbuffer1.n") == [done]


def test_pulse_train_with_timers_and_a_blender(emu: K2612AEmulator, bench: SimBench) -> None:
    # the manual's pulsed sweep: timer 1 sets the period, timer 3 the width; the
    # measurement is triggered through an OR blender fed by timer 2 (measure delay)
    n, period, width = 6, 10e-3, 2e-3
    load(emu, f"""
reset()
smua.source.func = smua.OUTPUT_DCVOLTS
smua.source.levelv = 0
smua.source.limiti = 0.01
smua.measure.nplc = 0.01
smua.measure.autozero = smua.AUTOZERO_OFF
smua.measure.delay = 0
smua.nvbuffer1.clear()
smua.nvbuffer1.collecttimestamps = 1
smua.trigger.source.listv({{0.5, 0.6, 0.7, 0.8, 0.9, 1.0}})
smua.trigger.source.limiti = 0.01
smua.trigger.source.action = smua.ENABLE
smua.trigger.measure.i(smua.nvbuffer1)
smua.trigger.measure.action = smua.ENABLE
smua.trigger.endpulse.action = smua.SOURCE_IDLE
smua.trigger.endsweep.action = smua.SOURCE_IDLE
smua.trigger.count = {n}
trigger.timer[1].delay = {period}
trigger.timer[1].count = {n - 1}
trigger.timer[1].passthrough = true
trigger.timer[1].stimulus = smua.trigger.ARMED_EVENT_ID
trigger.timer[2].delay = {width - 0.5e-3}
trigger.timer[2].stimulus = trigger.timer[1].EVENT_ID
trigger.timer[3].delay = {width}
trigger.timer[3].stimulus = trigger.timer[1].EVENT_ID
trigger.blender[1].orenable = true
trigger.blender[1].stimulus[1] = trigger.timer[2].EVENT_ID
smua.trigger.source.stimulus = trigger.timer[1].EVENT_ID
smua.trigger.measure.stimulus = trigger.blender[1].EVENT_ID
smua.trigger.endpulse.stimulus = trigger.timer[3].EVENT_ID
smua.source.output = smua.OUTPUT_ON
""")
    t0 = bench.clock.now()
    emu.write("smua.trigger.initiate()")
    assert num(emu, "status.operation.sweeping.condition") == [2.0]
    emu.write("waitcomplete()")
    stamps = [float(x) for x in ask(emu, f"printbuffer(1, {n}, smua.nvbuffer1.timestamps)").split(",")]
    assert np.diff(stamps) == pytest.approx([period] * (n - 1), rel=1e-6)
    assert bench.clock.now() - t0 == pytest.approx((n - 1) * period + width, rel=1e-6)
    assert ask(emu, "print(trigger.blender[1].overrun, trigger.timer[1].overrun)") == "false\tfalse"
    assert errors(emu) == []


def test_trigger_and_timer_wait_run_on_the_bench_clock(emu: K2612AEmulator, bench: SimBench) -> None:
    t0 = bench.clock.now()
    assert ask(emu, "print(trigger.wait(0.5))") == "false"
    assert bench.clock.now() - t0 == pytest.approx(0.5)
    emu.write("*TRG")
    assert ask(emu, "print(trigger.wait(10), trigger.wait(0))") == "true\tfalse"
    emu.write("trigger.timer[4].delay = 0.25 trigger.timer[4].stimulus = trigger.generator[1].EVENT_ID")
    t1 = bench.clock.now()
    assert ask(emu, "trigger.generator[1].assert() print(trigger.timer[4].wait(1))") == "true"
    assert bench.clock.now() - t1 == pytest.approx(0.25)


# ------------------------------------------------------------------ off-modes
def test_reset_off_state_defaults(emu: K2612AEmulator) -> None:
    emu.write("reset()")
    assert num(emu, "smua.source.offmode, smua.source.offfunc, smua.source.offlimiti, smua.source.offlimitv") == \
        [0.0, 1.0, 1e-3, 40.0]


def test_vendor_dc_sweep_with_the_other_channel_off_measures_through_its_0V(emu: K2612AEmulator,
                                                                           bench: SimBench) -> None:
    # the vendor's DC sweep calls reset() and leaves smub off: in its normal off-mode
    # smub holds 0 V (1 mA limit), so the diode between the two channels conducts
    diode_d1(bench)
    n = 5
    load(emu, LINEAR_SWEEP.format(n=n))
    emu.write("smua.trigger.initiate() waitcomplete()")
    i = [float(x) for x in ask(emu, f"printbuffer(1, {n}, smua.nvbuffer1.readings)").split(",")]
    assert i[-1] > 1e-6  # D1 forward at 0.8 V
    assert i[0] == pytest.approx(0.0, abs=1e-9)
    assert bench.live_outputs() == [A]  # smub is off: in the circuit at 0 V, but not live
    emu.write("smua.source.levelv = 0.8 smua.source.output = 1")
    on_normal = num(emu, "smua.measure.i(), smub.measure.i()")
    assert on_normal[0] > 1e-6 and on_normal[1] == pytest.approx(-on_normal[0], rel=1e-3)
    # relay events with smub off at 0 V do not count it as a live output
    emu.write("smua.source.output = 0")
    bench.open_relays([(1, 2, pin_of(bench, "S01.CL1"))])
    assert bench.relay_events[-1].live_outputs == () and bench.relay_events[-1].any_live == ()
    bench.close_relays([(1, 2, pin_of(bench, "S01.CL1"))])
    emu.write("smua.source.output = 1")
    # HIGH_Z: the output relay opens, nothing flows
    emu.write("smub.source.offmode = smub.OUTPUT_HIGH_Z")
    assert abs(num(emu, "smua.measure.i()")[0]) < 1e-10
    # ZERO: 0 V with the present limits
    emu.write("smub.source.offmode = smub.OUTPUT_ZERO")
    assert num(emu, "smua.measure.i()")[0] == pytest.approx(on_normal[0], rel=0.05)
    # NORMAL with a small off limit: smub's 0 V gives way at offlimiti
    emu.write("smub.source.offmode = smub.OUTPUT_NORMAL smub.source.offlimiti = 1e-7")
    assert num(emu, "smua.measure.i()")[0] == pytest.approx(1e-7, rel=0.02)
    # NORMAL with offfunc = current: 0 A, the node floats up (no current)
    emu.write("smub.source.offlimiti = 1e-3 smub.source.offfunc = smub.OUTPUT_DCAMPS")
    assert abs(num(emu, "smua.measure.i()")[0]) < 1e-9
    assert errors(emu) == []


def test_zero_off_mode_sourcing_current_limits_at_its_range(emu: K2612AEmulator, bench: SimBench) -> None:
    diode_d1(bench)
    emu.write("smub.source.func = smub.OUTPUT_DCAMPS smub.source.rangei = 1e-6 smub.source.leveli = 0 "
              "smub.source.offmode = smub.OUTPUT_ZERO")
    emu.write("smua.source.limiti = 0.01 smua.source.levelv = 0.8 smua.source.output = 1")
    # zero off-mode while sourcing current: 0 V, limit max(|leveli|, 10 % of the range)
    assert num(emu, "smua.measure.i()")[0] == pytest.approx(1e-7, rel=0.02)


# ---------------------------------------------------------------- status model
def test_srq_at_the_end_of_a_sweep(emu: K2612AEmulator) -> None:
    load(emu, LINEAR_SWEEP.format(n=5))
    load(emu, """
status.reset()
status.operation.sweeping.enable = status.operation.sweeping.SMUA
status.operation.sweeping.ptr = 0
status.operation.sweeping.ntr = status.operation.sweeping.SMUA
status.operation.enable = status.operation.SWEEPING
status.request_enable = status.OSB
""")
    requests = []
    emu.status_model.on_srq = requests.append
    emu.write("smua.trigger.initiate()")
    assert ask(emu, "*STB?") == "0" and requests == []
    emu.write("waitcomplete()")
    assert int(ask(emu, "*STB?")) == 128 | 64  # OSB and the request (MSS/RQS)
    assert len(requests) == 1 and emu.status_model.srq_count == 1
    assert num(emu, "status.operation.sweeping.event") == [2.0]  # reading clears it
    assert num(emu, "status.operation.sweeping.event, status.operation.event") == [0.0, 8.0]
    assert num(emu, "status.condition") == [0.0]
    assert emu.status_model.srq is False


def test_standard_event_register_and_common_commands(emu: K2612AEmulator) -> None:
    assert ask(emu, "*ESR?") == "128"  # power on
    assert ask(emu, "*ESR?") == "0"
    emu.write("*ESE 16")
    emu.write("*SRE 36")
    assert ask(emu, "*ESE?") == "16" and ask(emu, "*SRE?") == "36"
    emu.write("*RST")  # a reset leaves the status model's enables alone
    assert ask(emu, "*ESE?") == "16" and ask(emu, "*SRE?") == "36"
    emu.write("smua.source.levelv = = 1")  # a TSP syntax error: an execution error (-285)
    stb = int(ask(emu, "*STB?"))
    assert stb & 4 and stb & 32 and stb & 64  # EAV, ESB, MSS
    assert num(emu, "status.standard.event") == [16.0]
    emu.write("*CLS")
    assert ask(emu, "*STB?") == "0" and ask(emu, "*ESR?") == "0"
    emu.write("*OPC")
    assert ask(emu, "*ESR?") == "1"
    assert num(emu, "status.standard.OPC, status.MSB, status.OSB, status.measurement.instrument.smua.ILMT") == \
        [1.0, 1.0, 128.0, 2.0]


def test_current_limit_reaches_the_measurement_summary(emu: K2612AEmulator, bench: SimBench) -> None:
    diode_d1(bench)
    emu.write("smub.source.output = 1 smua.source.limiti = 1e-6 smua.source.levelv = 1 smua.source.output = 1")
    emu.write("status.measurement.current_limit.enable = status.measurement.current_limit.SMUA "
              "status.measurement.enable = status.measurement.ILMT status.request_enable = status.MSB")
    emu.write("smua.measure.i()")
    assert num(emu, "status.measurement.current_limit.condition") == [2.0]
    assert int(ask(emu, "*STB?")) & (1 | 64) == 65


def test_metatable_node_and_localnode(emu: K2612AEmulator) -> None:
    assert ask(emu, "print(type(getmetatable(smua)))") == "table"
    assert ask(emu, "mt = getmetatable(smua) print(mt.source == smua.source, type(mt.reset), mt.OUTPUT_ON, "
                    "mt.sense)") == "true\tfunction\t1.00000e+00\t0.00000e+00"
    assert ask(emu, "n = 0 for k in pairs(getmetatable(smua.source)) do n = n + 1 end print(n > 20)") == "true"
    assert ask(emu, "print(getmetatable({}), node[1] == localnode, node[1].model, localnode.status == status)") == \
        "nil\ttrue\t2612A\ttrue"
    assert ask(emu, "print(localnode.serialno, localnode.revision, localnode.linefreq)") == \
        f"{emu.serial}\t3.3.5\t6.00000e+01"


# ---------------------------------------------------------------- factory scripts
def test_kipulse_configured_pulse_train(emu: K2612AEmulator, bench: SimBench) -> None:
    diode_d1(bench)
    emu.write("smub.source.output = 1 smua.measure.nplc = 0.01 smua.measure.autozero = 0")
    assert ask(emu, "f, msg = ConfigPulseVMeasureI(smua, 0, 0.8, 0.01, 2e-3, 8e-3, 5, smua.nvbuffer1, 7) "
                    "print(f, msg)") == "true\tOK"
    assert "ton = 0.002 s" in ask(emu, "print(QueryPulseConfig(7).tostring())")
    t0 = bench.clock.now()
    assert ask(emu, "print(InitiatePulseTest(7))") == "true\tOK"
    assert bench.clock.now() - t0 == pytest.approx(5 * 10e-3, rel=1e-6)
    i = [float(x) for x in ask(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)").split(",")]
    assert len(i) == 5 and min(i) > 1e-6
    assert bench.source(A).output and bench.source(A).level == 0.0  # left on at the bias
    # a sweep of pulses, and errors come back as false, message
    emu.write("smua.nvbuffer1.collectsourcevalues = 1")
    assert ask(emu, "print(ConfigPulseVMeasureISweepLin(smua, 0, 0.1, 0.5, 0.01, 2e-3, 8e-3, 5, "
                    "smua.nvbuffer1, 8))") == "true\tOK"
    assert ask(emu, "print(InitiatePulseTest(8))") == "true\tOK"
    src = [float(x) for x in ask(emu, "printbuffer(1, 5, smua.nvbuffer1.sourcevalues)").split(",")]
    assert src == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    f, msg = ask(emu, "print(ConfigPulseVMeasureI(smua, 0, 1, 0.01, 1e-3, 4e-3, 0, nil, 9))").split("\t")
    assert f == "false" and "points" in msg
    assert ask(emu, "print(InitiatePulseTest(99))").startswith("false\t")
    assert errors(emu) == []


# -------------------------------------------------------------------- identities
@pytest.mark.parametrize("model, low_i, fw", [("2614B", 1e-7, "4.0.4"), ("2636B", 1e-10, "4.0.4"),
                                              ("2634B", 1e-9, "4.0.4"), ("2604B", 1e-7, "4.0.4"),
                                              ("2635A", 1e-10, "3.3.5")])
def test_2600b_models(bench: SimBench, model: str, low_i: float, fw: str) -> None:
    emu = K2612AEmulator(bench, "k", model=model)
    assert ask(emu, "*IDN?") == f"Keithley Instruments Inc., Model {model}, {emu.serial}, {fw}"
    emu.write(f"smua.measure.rangei = {low_i}")
    assert errors(emu) == []
    assert num(emu, "smua.measure.rangei") == [low_i]
