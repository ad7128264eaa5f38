"""The Keithley 2612A emulator against the real simulated bench."""

from __future__ import annotations

import math
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labpcu.sim.bench import SimBench
from labpcu.sim.physics import Physics
from labpcu.sim.tsp.k2600 import MODELS, K2612AEmulator
from simhelpers import pin_of

BENCH_PHYSICS = Physics().without("instrument_accuracy", "capacitance", "series_resistance", "relay_leakage")

A, B = "k2612a.smua", "k2612a.smub"


@pytest.fixture
def bench() -> SimBench:
    # the emulator against the DC bench: exact readings (the reading accuracy is tested in
    # test_sim_instrument_accuracy), no transients or parasitic paths (tested with the parasitics)
    return SimBench(seed=0, physics=BENCH_PHYSICS)


@pytest.fixture
def emu(bench: SimBench) -> K2612AEmulator:
    return K2612AEmulator(bench)


def ask(emu: K2612AEmulator, message: str) -> str:
    emu.write(message)
    return emu.take_output().decode("latin-1").rstrip("\n")


def values(emu: K2612AEmulator, message: str) -> list[float]:
    text = ask(emu, message)
    return [float(x) for x in text.replace("\t", ",").split(",") if x.strip()]


def errors(emu: K2612AEmulator) -> list[tuple[int, str]]:
    out = [(e.code, e.message) for e in emu.errors]
    emu.errors.clear()
    return out


def connect_device(bench: SimBench) -> None:
    """smua → WL1, smub → BL1 of the array under the probes (smub then holds 0 V), with
    the cell's M2 formed, so that WL1→BL1 is a forward-biased cell (D1, M1, M2 in LRS).

    A pristine M2 forms at about 1.7 × its set voltage (m2_stochastics), ≈ 0.8 V, which a
    1 V reading does not put across it (D1 and the leaking D2 share the volt): without
    the forming step the path is D1 against D2, blocked both ways (± nA).
    """
    wl, bl = pin_of(bench, f"{bench.site.id}.WL1"), pin_of(bench, f"{bench.site.id}.BL1")
    bench.close_relays([(1, 1, wl), (1, 2, bl)])
    bench.set_source(B, output=True, mode="v", level=0.0, limit=0.01)
    bench.set_source(A, output=True, mode="v", level=2.0, limit=1e-4)  # forming, 100 µA compliance
    bench.measure(A)
    bench.set_source(A, output=False, level=0.0)
    bench.set_source(B, output=False)
    assert bench.wafer.device(bench.site.devices[0]).m2.lrs


def smub_ground(emu: K2612AEmulator) -> None:
    emu.write("smub.source.func = smub.OUTPUT_DCVOLTS smub.source.levelv = 0 smub.source.output = 1")


# ------------------------------------------------------------------ identity
def test_identity(emu: K2612AEmulator) -> None:
    assert ask(emu, "*IDN?") == f"Keithley Instruments Inc., Model 2612A, {emu.serial}, 3.3.5"
    assert ask(emu, "print(localnode.model, localnode.linefreq, localnode.revision)") == "2612A\t6.00000e+01\t3.3.5"
    assert emu.name == "k2612a" and emu.smua.terminal == A and emu.smub.terminal == B


def test_other_models_from_the_table(bench: SimBench) -> None:
    emu = K2612AEmulator(bench, "k2602", model="2602A")
    assert ask(emu, "*IDN?").startswith("Keithley Instruments Inc., Model 2602A, ")
    emu.write("smua.source.levelv = 45")
    assert errors(emu)[0][0] == -222
    emu.write("smua.source.levelv = 39")
    assert errors(emu) == []
    single = K2612AEmulator(bench, "k2611", model="2611A")
    assert ask(single, "print(smua ~= nil, smub)") == "true\tnil"
    with pytest.raises(ValueError, match="unknown 2600 model"):
        K2612AEmulator(bench, model="2400")
    assert set(MODELS) >= {"2612A", "2612B", "2602A", "2636B"}


def test_defaults(emu: K2612AEmulator) -> None:
    got = values(emu, "print(smua.source.func, smua.source.output, smua.source.levelv, smua.source.limiti, "
                      "smua.source.limitv, smua.measure.nplc, smua.measure.autozero, smua.measure.autorangei, "
                      "smua.source.offmode, smua.sense, smua.trigger.count, smua.nvbuffer1.n)")
    assert got == [1, 0, 0, 0.1, 20, 1, 2, 1, 0, 0, 1, 0]


# ------------------------------------------------------------------ source
def test_source_settings_reach_the_bench(emu: K2612AEmulator, bench: SimBench) -> None:
    emu.write("smua.source.levelv = 0.3 smua.source.limiti = 1e-3 smua.source.output = smua.OUTPUT_ON")
    s = bench.source(A)
    assert (s.output, s.mode, s.level, s.limit) == (True, "v", 0.3, 1e-3)
    emu.write("smua.source.func = smua.OUTPUT_DCAMPS smua.source.leveli = 1e-6 smua.source.limitv = 5")
    s = bench.source(A)
    assert (s.output, s.mode, s.level, s.limit) == (True, "i", 1e-6, 5.0)
    emu.write("smua.source.output = smua.OUTPUT_OFF")
    assert bench.source(A).output is False
    assert bench.source(B).output is False
    assert errors(emu) == []


@pytest.mark.parametrize(
    ("setting", "bad"),
    [
        ("smua.source.levelv", "300"),
        ("smua.source.leveli", "2"),
        ("smua.source.limiti", "5"),
        ("smua.source.limiti", "1e-12"),
        ("smua.source.limitv", "1000"),
        ("smua.source.rangev", "500"),
        ("smua.source.rangei", "3"),
        ("smua.source.func", "3"),
        ("smua.source.output", "5"),
        ("smua.source.offmode", "7"),
        ("smua.measure.nplc", "30"),
        ("smua.measure.nplc", "0.0001"),
        ("smua.measure.autozero", "3"),
        ("smua.measure.rangei", "5"),
        ("smua.measure.interval", "2"),
        ("smua.measure.count", "0"),
        ("smua.sense", "2"),
        ("smua.trigger.count", "-1"),
        ("trigger.timer[1].delay", "0"),
        ("smub.source.levelv", "0/0"),
    ],
)
def test_out_of_range_setting_queues_222_and_keeps_value(emu: K2612AEmulator, setting: str, bad: str) -> None:
    before = ask(emu, f"print({setting})")
    assert ask(emu, f"{setting} = {bad} print({setting})") == before  # the chunk goes on
    (code, msg), = errors(emu)
    assert code == -222 and msg.startswith("Parameter data out of range")


def test_range_selection(emu: K2612AEmulator) -> None:
    assert values(emu, "smua.source.rangev = 1 print(smua.source.rangev, smua.source.autorangev)") == [2.0, 0.0]
    assert values(emu, "smua.measure.rangei = 3e-6 print(smua.measure.rangei, smua.measure.autorangei)") == [1e-5, 0]
    assert values(emu, "smua.source.autorangev = 1 smua.source.levelv = 15 print(smua.source.rangev)") == [20.0]
    # with autorange off a level must fit the fixed range
    emu.write("smua.source.autorangev = 0 smua.source.rangev = 2 smua.source.levelv = 5")
    (code, msg), = errors(emu)
    assert code == -222 and "exceeds rangev" in msg
    assert values(emu, "print(smua.source.levelv)") == [15.0]


def test_wrong_types_are_runtime_errors(emu: K2612AEmulator) -> None:
    emu.write("smua.source.levelv = 'one'")
    emu.write("smua.measure.i(5)")
    emu.write("smua.source.bogus = 1")
    errs = errors(emu)
    assert [c for c, _ in errs] == [-286, -286, -286]
    assert "number expected" in errs[0][1] and "reading buffer expected" in errs[1][1]
    assert "no such attribute" in errs[2][1]


# ------------------------------------------------------------------ measure
def test_open_circuit_reads_about_zero(emu: K2612AEmulator) -> None:
    i, v = values(emu, "smua.source.levelv = 1 smua.source.output = 1 print(smua.measure.iv())")
    assert abs(i) < 1e-10
    assert v == pytest.approx(1.0, abs=1e-3)


def test_device_current_through_closed_relays(emu: K2612AEmulator, bench: SimBench) -> None:
    connect_device(bench)
    smub_ground(emu)
    emu.write("smua.source.limiti = 1e-2 smua.source.output = 1")
    forward = values(emu, "smua.source.levelv = 1 print(smua.measure.i())")[0]
    reverse = values(emu, "smua.source.levelv = -1 print(smua.measure.i())")[0]
    assert forward > 1e-9
    assert abs(reverse) < forward / 10
    bench.open_all_relays()
    assert abs(values(emu, "smua.source.levelv = 1 print(smua.measure.i())")[0]) < 1e-10


def test_autorange_and_fixed_range_overflow(emu: K2612AEmulator, bench: SimBench) -> None:
    connect_device(bench)
    smub_ground(emu)
    emu.write("smua.nvbuffer1.clear() smua.source.levelv = 1 smua.source.output = 1 smua.measure.i(smua.nvbuffer1)")
    i, rng = values(emu, "print(smua.nvbuffer1.readings[1], smua.nvbuffer1.measureranges[1])")
    assert 1.01e-7 < i < 1e-4  # a forward-biased cell: microamps
    assert rng == min(r for r in MODELS["2612A"].i_ranges if r >= i)  # smallest range that holds it
    emu.write("smua.measure.autorangei = 0 smua.measure.rangei = 1e-7")
    assert values(emu, "print(smua.measure.i())") == [9.91e37]  # fixed range too small: overflow
    emu.write("smua.measure.rangei = 1e-4")
    fixed = values(emu, "print(smua.measure.i())")[0]
    assert 0.5 * i < fixed < 1e-4  # the device drifts a little under bias between readings


def test_compliance(emu: K2612AEmulator, bench: SimBench) -> None:
    connect_device(bench)
    smub_ground(emu)
    emu.write("smua.source.limiti = 1e-7 smua.source.levelv = 1 smua.source.output = 1")
    i, cond, comp = ask(emu, "print(smua.measure.i(), status.measurement.instrument.smua.condition, "
                             "smua.source.compliance)").split("\t")
    assert float(i) == pytest.approx(1e-7, rel=0.05)
    assert float(cond) == 2.0 and comp == "true"
    emu.write("smua.source.limiti = 0.1")
    assert ask(emu, "print(smua.measure.v(), status.measurement.instrument.smua.condition)").endswith("\t0.00000e+00")


def test_current_source_reads_back(emu: K2612AEmulator, bench: SimBench) -> None:
    connect_device(bench)
    smub_ground(emu)
    # warm start: the bench's Newton solver does not converge for a current source
    # into this cold cell (reported to the lead); one voltage-mode reading first
    emu.write("smua.source.levelv = 1 smua.source.output = 1 x = smua.measure.i()")
    emu.write("smua.source.func = smua.OUTPUT_DCAMPS smua.source.leveli = 1e-6 smua.source.limitv = 5 "
              "smua.source.output = 1")
    i, v = values(emu, "print(smua.measure.iv())")
    assert i == pytest.approx(1e-6, rel=1e-3)
    assert 0 < v < 5
    r, p = values(emu, "print(smua.measure.r(), smua.measure.p())")
    assert r == pytest.approx(v / i, rel=0.1) and p == pytest.approx(v * i, rel=0.1)


def test_instrument_noise_is_small_and_range_dependent(emu: K2612AEmulator) -> None:
    emu.write("smua.source.output = 1 smua.measure.count = 50 smua.measure.autozero = 0 "
              "smua.measure.i(smua.nvbuffer1)")
    low = np.array(values(emu, "printbuffer(1, 50, smua.nvbuffer1)"))
    assert 2e-13 < low.std() < 1e-11 and abs(low.mean()) < 2e-11
    emu.write("smua.measure.autorangei = 0 smua.measure.rangei = 1e-3 smua.measure.i(smua.nvbuffer1)")
    high = np.array(values(emu, "printbuffer(1, 50, smua.nvbuffer1)"))
    assert high.std() > 10 * low.std()


@pytest.mark.parametrize(("setup", "seconds"), [
    ("smua.measure.autozero = 0", 1 / 60),
    ("smua.measure.autozero = smua.AUTOZERO_AUTO", 3 / 60),
    ("smua.measure.autozero = 0 smua.measure.nplc = 0.01", 0.01 / 60),
    ("smua.measure.autozero = 0 localnode.linefreq = 50", 1 / 50),
    ("smua.measure.autozero = 0 smua.measure.delay = 0.1", 0.1 + 1 / 60),
])
def test_integration_time_advances_the_virtual_clock(emu: K2612AEmulator, setup: str, seconds: float) -> None:
    emu.write(setup)
    t0 = emu.clock.now()
    emu.write("x = smua.measure.i()")
    assert emu.clock.now() - t0 == pytest.approx(seconds)
    assert errors(emu) == []


# ------------------------------------------------------------------ buffers
def test_buffer_members(emu: K2612AEmulator) -> None:
    emu.write("smua.measure.autozero = 0 smua.measure.count = 5 smua.measure.interval = 0.1 "
              "smua.nvbuffer1.collectsourcevalues = 1 smua.source.levelv = 0.2 smua.source.output = 1 "
              "smua.measure.v(smua.nvbuffer1)")
    assert values(emu, "print(smua.nvbuffer1.n, #smua.nvbuffer1, #smua.nvbuffer1.readings)") == [5, 5, 5]
    assert values(emu, "printbuffer(1, 5, smua.nvbuffer1.timestamps)") == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert values(emu, "printbuffer(1, 5, smua.nvbuffer1.sourcevalues)") == [0.2] * 5
    assert values(emu, "print(smua.nvbuffer1[2])")[0] == pytest.approx(0.2, abs=1e-3)
    assert ask(emu, "print(smua.nvbuffer1.readings[6], smua.nvbuffer2.sourcevalues[1])") == "nil\tnil"
    emu.write("smua.measure.count = 1 smua.measure.v(smua.nvbuffer1)")  # appendmode off: starts over
    assert values(emu, "print(smua.nvbuffer1.n)") == [1]
    emu.write("smua.nvbuffer1.appendmode = 1 smua.measure.v(smua.nvbuffer1) smua.measure.v(smua.nvbuffer1)")
    assert values(emu, "print(smua.nvbuffer1.n)") == [3]
    emu.write("smua.nvbuffer1.clear()")
    assert values(emu, "print(smua.nvbuffer1.n)") == [0]
    emu.write("smua.measure.v(smua.nvbuffer2) printbuffer(1, 1, smua.nvbuffer2.sourcevalues)")
    (code, msg), = errors(emu)
    assert code == -286 and "not collected" in msg


def test_makebuffer_fill_modes(emu: K2612AEmulator) -> None:
    emu.write("b = smua.makebuffer(3) b.collectsourcevalues = 1 smua.source.output = 1 smua.measure.count = 5")
    emu.write("smua.measure.v(b)")
    assert values(emu, "print(b.n, b.capacity)") == [3, 3]
    emu.write("b.fillmode = smua.FILL_WINDOW smua.source.levelv = 1 smua.measure.v(b)")
    assert values(emu, "print(b.n)") == [3]
    assert values(emu, "printbuffer(1, 3, b.sourcevalues)") == [1.0, 1.0, 1.0]
    emu.write("smua.makebuffer(0)")
    assert errors(emu)[0][0] == -222


def test_measure_with_two_buffers(emu: K2612AEmulator) -> None:
    emu.write("smua.source.levelv = 0.5 smua.source.output = 1 smua.measure.iv(smua.nvbuffer1, smua.nvbuffer2)")
    i, v = values(emu, "print(smua.nvbuffer1.readings[1], smua.nvbuffer2.readings[1])")
    assert abs(i) < 1e-10 and v == pytest.approx(0.5, abs=1e-3)


# ------------------------------------------------------------------ sweeps
SWEEP = """smua.nvbuffer1.clear() smua.nvbuffer1.collectsourcevalues = 1 smua.measure.autozero = 0
smua.trigger.source.{how}
smua.trigger.source.action = smua.ENABLE
smua.trigger.measure.action = smua.ENABLE
smua.trigger.measure.iv(smua.nvbuffer1, smua.nvbuffer2)
smua.trigger.endpulse.action = smua.SOURCE_HOLD
smua.trigger.endsweep.action = smua.{end}
smua.trigger.count = {n}
smua.source.levelv = 0.05
smua.source.output = smua.OUTPUT_ON
smua.trigger.initiate()
waitcomplete()"""


@pytest.mark.parametrize(("how", "n", "expected"), [
    ("linearv(0, 1, 5)", 5, [0, 0.25, 0.5, 0.75, 1.0]),
    ("listv({0.1, -0.2, 0.3})", 3, [0.1, -0.2, 0.3]),
    ("logv(1e-3, 1, 4, 0)", 4, [1e-3, 1e-2, 1e-1, 1]),
    ("listv({0.1, 0.2})", 5, [0.1, 0.2, 0.1, 0.2, 0.1]),
])
def test_trigger_model_sweep(emu: K2612AEmulator, bench: SimBench, how: str, n: int, expected: list[float]) -> None:
    t0 = emu.clock.now()
    emu.write(SWEEP.format(how=how, n=n, end="SOURCE_IDLE"))
    assert errors(emu) == []
    assert values(emu, "print(smua.nvbuffer1.n, smua.nvbuffer2.n, status.operation.sweeping.condition)") == [n, n, 0]
    assert values(emu, f"printbuffer(1, {n}, smua.nvbuffer1.sourcevalues)") == pytest.approx(expected)
    volts = values(emu, f"printbuffer(1, {n}, smua.nvbuffer2.readings)")
    assert volts == pytest.approx(expected, abs=2e-3)
    stamps = values(emu, f"printbuffer(1, {n}, smua.nvbuffer1.timestamps)")
    assert np.diff(stamps) == pytest.approx([1 / 60] * (n - 1), rel=1e-4)
    assert emu.clock.now() - t0 == pytest.approx(n / 60)
    assert bench.source(A).level == 0.05  # SOURCE_IDLE: back to the idle level


def test_sweep_hold_keeps_last_point(emu: K2612AEmulator, bench: SimBench) -> None:
    emu.write(SWEEP.format(how="linearv(0, 1, 3)", n=3, end="SOURCE_HOLD"))
    assert bench.source(A).level == 1.0
    assert values(emu, "print(smua.source.levelv)") == [0.05]


def test_sweep_printbuffer_real32_qcodes_style(emu: K2612AEmulator) -> None:
    emu.write(SWEEP.format(how="linearv(0, 1, 5)", n=5, end="SOURCE_IDLE"))
    emu.write("format.data = format.REAL32 format.byteorder = format.LITTLEENDIAN "
              "printbuffer(1, 5, smua.nvbuffer1.sourcevalues)")
    raw = emu.take_output()
    got = struct.unpack("<5f", raw[2:-1])
    assert raw[:2] == b"#0" and got == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_sweep_list_validation(emu: K2612AEmulator) -> None:
    emu.write("smua.trigger.source.listv({0.1, 300})")
    assert errors(emu)[0][0] == -222
    emu.write("smua.trigger.source.logv(-1, 1, 5, 0)")
    assert errors(emu)[0][0] == -222
    emu.write("smua.trigger.measure.action = 1 smua.trigger.initiate()")
    (code, msg), = errors(emu)
    assert code == -286 and "no measurement configured" in msg


def level_history(bench: SimBench, terminal: str) -> list[tuple[float, float, float]]:
    """Record (t_start, dt, level-or-nan-if-off) of every clock advance."""
    log: list[tuple[float, float, float]] = []

    def listener(t0: float, dt: float) -> None:
        s = bench.source(terminal)
        log.append((t0, dt, s.level if s.output else math.nan))

    bench.clock.add_listener(listener)
    return log


def segments(log: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Merge consecutive intervals at the same level: (start, duration, level)."""
    out: list[list[float]] = []
    for t0, dt, level in log:
        if out and (out[-1][2] == level or (math.isnan(level) and math.isnan(out[-1][2]))):
            out[-1][1] += dt
        else:
            out.append([t0, dt, level])
    return [tuple(s) for s in out]  # type: ignore[misc]


PULSED = """smua.source.func = smua.OUTPUT_DCVOLTS
smua.source.levelv = 0
smua.source.limiti = 0.1
smua.measure.nplc = 0.01
smua.measure.autozero = smua.AUTOZERO_OFF
smua.measure.delay = 0
smua.nvbuffer1.clear()
smua.nvbuffer1.collectsourcevalues = 1
smua.trigger.source.linearv(0.5, 1.0, {n})
smua.trigger.source.action = smua.ENABLE
smua.trigger.measure.action = smua.ENABLE
smua.trigger.measure.i(smua.nvbuffer1)
smua.trigger.endpulse.action = smua.SOURCE_IDLE
smua.trigger.endsweep.action = smua.SOURCE_IDLE
smua.trigger.count = {n}
smua.trigger.arm.count = 1
trigger.timer[1].delay = {period}
trigger.timer[1].count = {n} - 1
trigger.timer[1].passthrough = true
trigger.timer[1].stimulus = smua.trigger.ARMED_EVENT_ID
trigger.timer[2].delay = {width} - smua.measure.nplc / localnode.linefreq - 60e-6
trigger.timer[2].count = 1
trigger.timer[2].passthrough = false
trigger.timer[2].stimulus = trigger.timer[1].EVENT_ID
trigger.timer[3].delay = {width}
trigger.timer[3].count = 1
trigger.timer[3].passthrough = false
trigger.timer[3].stimulus = trigger.timer[1].EVENT_ID
smua.trigger.source.stimulus = trigger.timer[1].EVENT_ID
smua.trigger.measure.stimulus = trigger.timer[2].EVENT_ID
smua.trigger.endpulse.stimulus = trigger.timer[3].EVENT_ID
smua.source.output = smua.OUTPUT_ON
smua.trigger.initiate()
waitcomplete()
smua.source.output = smua.OUTPUT_OFF"""


def test_pulsed_sweep_timing_comes_from_the_timers(emu: K2612AEmulator, bench: SimBench) -> None:
    n, period, width = 5, 10e-3, 1e-3
    log = level_history(bench, A)
    emu.write("loadscript pulsed\n" + PULSED.format(n=n, period=period, width=width) + "\nendscript")
    t0 = emu.clock.now()
    emu.write("pulsed()")
    assert errors(emu) == []
    assert values(emu, "print(smua.nvbuffer1.n)") == [n]
    high = [s for s in segments(log) if not math.isnan(s[2]) and s[2] != 0.0]
    assert [s[2] for s in high] == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0])
    assert [s[1] for s in high] == pytest.approx([width] * n, rel=1e-6)
    assert np.diff([s[0] for s in high]) == pytest.approx([period] * (n - 1), rel=1e-6)
    assert high[0][0] == pytest.approx(t0, abs=1e-9)
    # between pulses the output sits at the idle level (source.levelv = 0)
    idle = [s for s in segments(log) if s[2] == 0.0 and high[0][0] < s[0] < high[-1][0]]
    assert [s[1] for s in idle] == pytest.approx([period - width] * (n - 1), rel=1e-6)
    stamps = values(emu, f"printbuffer(1, {n}, smua.nvbuffer1.timestamps)")
    assert np.diff(stamps) == pytest.approx([period] * (n - 1), rel=1e-6)
    assert bench.source(A).output is False


def test_trigger_model_waiting_for_an_event_waits_until_aborted(emu: K2612AEmulator, bench: SimBench) -> None:
    # on the instrument a sweep waiting for an event nobody sends waits (the event may
    # come from a later command); waitcomplete() does not hang the emulator, and
    # smua.abort() ends the sweep at the idle level
    emu.write("smua.trigger.source.listv({1}) smua.trigger.source.action = 1 smua.trigger.measure.i(smua.nvbuffer1) "
              "smua.trigger.measure.action = 1 smua.trigger.measure.stimulus = trigger.timer[4].EVENT_ID "
              "smua.source.output = 1 smua.trigger.initiate() waitcomplete() print('after')")
    assert ask(emu, "") == "after"
    assert errors(emu) == []
    assert ask(emu, "print(status.operation.sweeping.condition, smua.nvbuffer1.n)") == "2.00000e+00\t0.00000e+00"
    assert bench.source(A).level == 1.0
    emu.write("smua.abort()")
    assert ask(emu, "print(status.operation.sweeping.condition)") == "0.00000e+00"
    assert bench.source(A).level == 0.0


def test_timer_settings(emu: K2612AEmulator) -> None:
    emu.write("trigger.timer[2].delaylist = {1e-3, 2e-3} trigger.timer[2].count = 4 trigger.timer[2].passthrough = true")
    assert ask(emu, "print(trigger.timer[2].delay, #trigger.timer[2].delaylist, trigger.timer[2].count, "
                    "trigger.timer[2].passthrough, trigger.timer[9])") == "1.00000e-03\t2.00000e+00\t4.00000e+00\ttrue\tnil"
    emu.write("reset()")
    assert values(emu, "print(trigger.timer[2].count)") == [1]


# ------------------------------------------------------------------ factory scripts
def test_sweep_factory(emu: K2612AEmulator, bench: SimBench) -> None:
    emu.write("smua.measure.autozero = 0")
    t0 = emu.clock.now()
    emu.write("SweepVLinMeasureI(smua, 0, 1, 0.01, 11)")
    assert errors(emu) == []
    assert values(emu, "print(smua.nvbuffer1.n)") == [11]
    assert values(emu, "printbuffer(1, 11, smua.nvbuffer1.sourcevalues)") == pytest.approx(np.linspace(0, 1, 11))
    assert emu.clock.now() - t0 == pytest.approx(11 * (0.01 + 1 / 60))
    assert bench.source(A).output is False
    emu.write("SweepVListMeasureI(smub, {0.1, 0.2, 0.3}, 0, 2)")
    assert values(emu, "printbuffer(1, smub.nvbuffer1.n, smub.nvbuffer1.sourcevalues)") == [0.1, 0.2]
    emu.write("SweepVLinMeasureI(smua, 0, 1, 0.01, 1)")
    emu.write("SweepVLinMeasureI(42, 0, 1, 0.01, 5)")
    assert [c for c, _ in errors(emu)] == [-286, -286]


def test_pulse_factory(emu: K2612AEmulator, bench: SimBench) -> None:
    emu.write("smua.measure.autozero = 0 smua.measure.nplc = 0.01")
    log = level_history(bench, A)
    t0 = emu.clock.now()
    emu.write("PulseVMeasureI(smua, 0, 1, 1e-3, 9e-3, 4)")
    assert errors(emu) == []
    assert values(emu, "print(smua.nvbuffer1.n)") == [4]
    assert emu.clock.now() - t0 == pytest.approx(4 * 10e-3)
    high = [s for s in segments(log) if s[2] == 1.0]
    assert [s[1] for s in high] == pytest.approx([1e-3] * 4)
    s = bench.source(A)
    assert (s.output, s.level) == (True, 0.0)  # left on at the bias level


# ------------------------------------------------------------------ reset, channels
def test_reset_turns_outputs_off(emu: K2612AEmulator, bench: SimBench) -> None:
    emu.write("smua.source.levelv = 1 smua.source.output = 1 smub.source.output = 1 smua.measure.nplc = 5")
    assert bench.source(A).output and bench.source(B).output
    emu.write("reset()")
    assert not bench.source(A).output and not bench.source(B).output
    assert values(emu, "print(smua.source.levelv, smua.measure.nplc)") == [0, 1]
    emu.write("smub.source.output = 1 *RST")
    assert not bench.source(B).output
    emu.write("smub.source.output = 1 smub.reset()")
    assert not bench.source(B).output


def test_channels_are_independent(emu: K2612AEmulator, bench: SimBench) -> None:
    emu.write("smub.source.levelv = 0.7 smub.source.output = 1")
    assert bench.source(B).level == 0.7 and not bench.source(A).output
    assert values(emu, "print(smub.measure.v(), smua.source.levelv)")[1] == 0.0


def test_display_beeper_status_accepted(emu: K2612AEmulator) -> None:
    emu.write("display.clear() display.settext('hi') display.screen = display.SMUA_SMUB "
              "display.smua.measure.func = display.MEASURE_DCAMPS beeper.beep(0.1, 2400) "
              "status.reset() status.request_enable = 0 smua.abort()")
    assert errors(emu) == []


@pytest.mark.parametrize("chunk", [
    "while true do smua.measure.i() end",
    "while true do pcall(smua.measure.i) end",
    # initiate() returns at once (the sweep runs in bench time); waiting for an
    # endless sweep is what runs away
    "smua.trigger.count = 0 smua.trigger.measure.action = 1 smua.trigger.measure.i(smua.nvbuffer1) "
    "smua.trigger.initiate() waitcomplete()",
    "trigger.timer[1].count = 0 trigger.timer[1].stimulus = smua.trigger.SWEEPING_EVENT_ID "
    "smua.trigger.measure.stimulus = 999 smua.trigger.initiate() waitcomplete()",
])
def test_runaway_measuring_is_bounded(bench: SimBench, chunk: str) -> None:
    emu = K2612AEmulator(bench, instruction_budget=1_000_000)
    emu.write("smua.source.output = 1 smua.measure.nplc = 0.001")
    t0 = time.perf_counter()
    emu.write(chunk)
    assert time.perf_counter() - t0 < 10
    (code, msg), = errors(emu)
    assert code == -286 and "instruction budget exhausted" in msg
    assert values(emu, "print(1)") == [1.0]


SETTABLE = [
    "smua.source.func", "smua.source.levelv", "smua.source.leveli", "smua.source.limitv", "smua.source.limiti",
    "smua.source.rangev", "smua.source.rangei", "smua.source.autorangev", "smua.source.output",
    "smua.source.offmode", "smua.source.delay", "smua.measure.nplc", "smua.measure.autozero",
    "smua.measure.rangei", "smua.measure.autorangei", "smua.measure.count", "smua.measure.interval",
    "smua.measure.delay", "smua.measure.filter.count", "smua.measure.filter.enable", "smua.sense",
    "smua.nvbuffer1.appendmode", "smua.nvbuffer1.fillmode", "smua.trigger.count", "smua.trigger.arm.count",
    "smua.trigger.source.action", "smua.trigger.source.limiti", "smua.trigger.measure.stimulus",
    "smua.trigger.endpulse.action", "trigger.timer[1].delay", "trigger.timer[1].count",
    "trigger.timer[1].delaylist", "format.data", "format.asciiprecision", "localnode.linefreq",
]
CALLS = [
    "smua.measure.i", "smua.measure.iv", "smua.measure.r", "smua.makebuffer", "smua.trigger.source.linearv",
    "smua.trigger.source.logv", "smua.trigger.source.listv", "smua.trigger.measure.iv", "smua.trigger.initiate",
    "printbuffer", "printnumber", "delay", "SweepVLinMeasureI", "PulseVMeasureI", "smua.nvbuffer1.clear",
]
LUA_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda x: "(0/0)" if x != x else repr(x)
                                                                  .replace("inf", "math.huge")),
    st.integers(-5, 300).map(str),
    st.sampled_from(["nil", "true", "false", "'x'", "{}", "{1, 2}", "smua", "smua.nvbuffer1",
                     "smua.nvbuffer1.readings", "-1", "0", "1e-7", "2"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from(SETTABLE), LUA_VALUES).map(lambda t: f"{t[0]} = {t[1]}"),
    st.tuples(st.sampled_from(CALLS), st.lists(LUA_VALUES, max_size=6)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
), min_size=1, max_size=4))
def test_random_commands_never_break_the_emulator(emu: K2612AEmulator, chunks: list[str]) -> None:
    for chunk in chunks:
        emu.write(chunk)
    emu.clear_output()
    emu.errors.clear()
    assert emu.internal_errors == []
    emu.write("format.data = format.ASCII format.asciiprecision = 6 print(smua.source.levelv ~= nil, errorqueue.count)")
    assert emu.take_output() == b"true\t0.00000e+00\n"


@pytest.mark.parametrize("chunk", [
    "SweepVLinMeasureI(smua, 0, 1, 0, 3.4e38)",
    "SweepVLogMeasureI(smua, 1e-3, 1, 0, math.huge)",
    "smua.trigger.source.linearv(0, 1, 3.4e38)",
    "smua.trigger.source.logv(1e-7, 1, 140001, 0)",
    "PulseVMeasureI(smua, 0, 1, 1e-3, 1e-3, 3.4e38)",
])
def test_a_huge_point_count_is_refused_not_allocated(emu: K2612AEmulator, chunk: str) -> None:
    """Found by the fuzz test on a fresh CI machine: 3.4e38 points made the emulator
    allocate until the machine ran out of memory. Now an error, as on the instrument."""
    emu.write(chunk)
    assert emu.internal_errors == []
    found = errors(emu)
    assert len(found) == 1 and "points" in found[0][1], found
    assert "140000" in found[0][1] or "integer expected, got inf" in found[0][1]
