"""Instrument accuracy, noise and settling of the 2612A and B1500A emulators, judged
against the data-sheet tables of :mod:`labpcu.sim.accuracy`.

The instruments measure a known resistor (:class:`ResistorBench`), so the true value of
every reading is Ohm's law; everything is driven by raw TSP and FLEX strings as a
programmer writes them from the manuals, not by labpcu's drivers.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from labpcu.clock import VirtualClock
from labpcu.sim.accuracy import DRAW_CLIP, DRAW_SIGMA, b1500_table, k2600_table
from labpcu.sim.b1500 import B1500AEmulator
from labpcu.sim.physics import Physics
from labpcu.sim.tsp.k2600 import K2612AEmulator

ACCURACY_ONLY = Physics().only("instrument_accuracy")
NOISE_ONLY = Physics().only("instrument_noise")
BOTH = Physics().only("instrument_accuracy", "instrument_noise")
NEITHER = Physics.ideal()
LINE = 60.0  # the 2612A emulator's line frequency
K2612 = k2600_table("2612A")
HRSMU = b1500_table("B1517A")


@dataclass
class _Reading:
    i: float
    v: float
    compliance: bool


@dataclass
class _State:
    output: bool = False
    mode: str = "v"
    level: float = 0.0
    limit: float = 1e-3
    v_step: float = 0.0  # voltage step of the last change, for the capacitor's current
    t_step: float = -1e9


@dataclass
class ResistorBench:
    """Every terminal drives ``ohms`` to ground, with ``farads`` across it charged
    through ``r_source``: right after a voltage step the displacement current
    C·ΔV/τ·e^(−t/τ), τ = r_source·C, adds to V/R (a single-pole transient)."""

    ohms: float
    physics: Physics
    seed: int = 0
    farads: float = 0.0
    r_source: float = 1e6
    states: dict[str, _State] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clock = VirtualClock()
        self.lock = threading.RLock()
        self.rng = np.random.default_rng(self.seed)

    def source(self, name: str) -> _State:
        return self.states.setdefault(name, _State())

    def set_source(self, name: str, output: bool | None = None, mode: str | None = None, level: float | None = None,
                   limit: float | None = None, off_mode: str | None = None, off_limit: float | None = None) -> None:
        s = self.source(name)
        before = self._volts(s)
        for key, value in (("output", output), ("mode", mode), ("level", level), ("limit", limit)):
            if value is not None:
                setattr(s, key, value)
        if self._volts(s) != before:
            s.v_step, s.t_step = self._volts(s) - before, self.clock.now()

    def _volts(self, s: _State) -> float:
        if not s.output:
            return 0.0
        return s.level if s.mode == "v" else s.level * self.ohms

    def settle(self) -> None:
        pass

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def measure(self, name: str, duration: float = 0.0) -> _Reading:
        s = self.source(name)
        if not s.output:
            reading = _Reading(0.0, 0.0, False)
        elif s.mode == "v":
            i = s.level / self.ohms
            if self.farads:
                tau = self.r_source * self.farads
                i += self.farads * s.v_step / tau * math.exp(-(self.clock.now() - s.t_step) / tau)
            reading = _Reading(i, s.level, False)
        else:
            reading = _Reading(s.level, s.level * self.ohms, False)
        self.clock.advance(duration)
        return reading


# ------------------------------------------------------------------ helpers
def k2612(bench: ResistorBench, name: str = "k2612a") -> K2612AEmulator:
    emu = K2612AEmulator(bench, name)
    emu.write("format.asciiprecision = 12")
    return emu


def tsp_values(emu: K2612AEmulator, chunk: str) -> list[float]:
    emu.write(chunk)
    text = emu.take_output().decode("latin-1").strip()
    assert not list(emu.errors), [e.message for e in emu.errors]
    return [float(x) for x in text.replace("\t", ",").split(",") if x.strip()]


def k2612_current_readings(emu: K2612AEmulator, volts: float, n: int, nplc: float = 1.0,
                           rangei: float = 1e-7) -> np.ndarray:
    """Source ``volts``, read the current ``n`` times on a fixed range into a buffer."""
    emu.write("smua.reset() "
              "smua.source.func = smua.OUTPUT_DCVOLTS "
              f"smua.source.levelv = {volts} "
              "smua.measure.autorangei = smua.AUTORANGE_OFF "
              f"smua.measure.rangei = {rangei} "
              f"smua.measure.nplc = {nplc} "
              f"smua.measure.count = {n} "
              "smua.nvbuffer1.clear() "
              "smua.source.output = smua.OUTPUT_ON "
              "smua.measure.i(smua.nvbuffer1) "
              "smua.source.output = smua.OUTPUT_OFF")
    return np.array(tsp_values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)"))


def k2612_voltage_readings(emu: K2612AEmulator, amps: float, n: int) -> np.ndarray:
    """Source ``amps`` into the resistor, read the voltage ``n`` times (2 V range)."""
    emu.write("smua.reset() "
              "smua.source.func = smua.OUTPUT_DCAMPS "
              f"smua.source.leveli = {amps} smua.source.limitv = 2 "
              "smua.measure.autorangev = smua.AUTORANGE_OFF smua.measure.rangev = 2 "
              f"smua.measure.count = {n} smua.nvbuffer1.clear() "
              "smua.source.output = smua.OUTPUT_ON "
              "smua.measure.v(smua.nvbuffer1) "
              "smua.source.output = smua.OUTPUT_OFF")
    return np.array(tsp_values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)"))


def b1500(bench: ResistorBench, name: str = "b1500a") -> B1500AEmulator:
    return B1500AEmulator(bench, name)


def flex(emu: B1500AEmulator, *messages: str) -> str:
    out = ""
    for m in messages:
        emu.write(m)
        out += emu.take_output().decode("latin-1")
    emu.write("ERRX?")
    assert emu.take_output().decode("latin-1").strip() == '+0,"No Error."'
    return out.strip()


def b1500_current_readings(emu: B1500AEmulator, volts: float, n: int, range_code: int) -> np.ndarray:
    """``DV`` on slot 1, then ``n`` high-speed spot current readings (``TI``) on a fixed
    range, in the 13-digit format (FMT 12: the 12-digit one rounds below the noise)."""
    flex(emu, "*RST", "FMT 12", "CN 1", f"DV 1,0,{volts},1E-6")
    return np.array([float(flex(emu, f"TI 1,-{range_code}")) for _ in range(n)])


# ------------------------------------------------- 2612A: readings of a resistor
@pytest.mark.parametrize(("volts", "ohms", "rangei"), [(1.0, 2e7, 1e-7), (1.0, 2e5, 1e-5)])
def test_2612a_current_readings_stay_within_the_data_sheet_accuracy(volts: float, ohms: float,
                                                                    rangei: float) -> None:
    """Over 200 instruments (bench seeds), every current reading is within the data
    sheet's ±(% reading + offset) of V/R, and the instruments' offsets spread as the
    data sheet's offset term says (100 pA class on 100 nA), not a pA noise floor."""
    true = volts / ohms
    row = K2612.at("i", rangei)
    errors = []
    for seed in range(200):
        emu = k2612(ResistorBench(ohms, BOTH, seed=seed))
        readings = k2612_current_readings(emu, volts, 5, rangei=rangei)
        assert np.all(np.abs(readings - true) <= row.measure_bound(true)), (seed, readings, true)
        errors.append(readings.mean() - true)
    spread = float(np.std(errors))
    expected = DRAW_SIGMA * math.hypot(row.measure_offset, row.measure_gain * true)
    assert 0.7 * expected < spread < 1.3 * expected, (spread, expected)
    assert max(abs(e) for e in errors) <= DRAW_CLIP * row.measure_bound(true) + 5 * row.noise_rms


def test_2612a_voltage_readings_stay_within_the_data_sheet_accuracy() -> None:
    true = 1e-6 * 1e6  # 1 µA into 1 MΩ: 1 V on the 2 V range
    row = K2612.at("v", 2.0)
    for seed in range(100):
        emu = k2612(ResistorBench(1e6, BOTH, seed=seed))
        readings = k2612_voltage_readings(emu, 1e-6, 3)
        assert np.all(np.abs(readings - true) <= row.measure_bound(true)), (seed, readings)


def test_2612a_noise_matches_the_data_sheet_and_scales_with_nplc() -> None:
    """Accuracy off: the spread of 2,000 readings is the 100 nA range's noise (5 pA p-p
    = 6σ, data sheet) at 1 PLC, and √100 = 10× that at 0.01 PLC."""
    emu = k2612(ResistorBench(2e7, NOISE_ONLY))
    sigma = {nplc: float(np.std(k2612_current_readings(emu, 1.0, 2000, nplc=nplc))) for nplc in (1.0, 0.01)}
    row = K2612.at("i", 1e-7)
    assert row.noise_rms == pytest.approx(5e-12 / 6)
    assert sigma[1.0] == pytest.approx(row.noise_rms, rel=0.1)
    assert sigma[0.01] / sigma[1.0] == pytest.approx(10.0, rel=0.1)


def test_2612a_offset_is_systematic_per_range_and_differs_between_instruments() -> None:
    """Noise off: one channel reads the same on one range every time (the offset is
    systematic); another range, another instrument name or another bench seed reads
    differently."""
    def reading(bench_seed: int, name: str, rangei: float) -> float:
        emu = k2612(ResistorBench(1e8, ACCURACY_ONLY, seed=bench_seed), name)
        first = k2612_current_readings(emu, 1.0, 3, rangei=rangei)
        again = k2612_current_readings(emu, 1.0, 3, rangei=rangei)
        assert len(set(first) | set(again)) == 1  # reading to reading, and after a reset
        return float(first[0])

    base = reading(0, "k2612a", 1e-7)
    assert base != 1e-8
    assert reading(0, "k2612a", 1e-7) == base  # reproducible
    assert reading(1, "k2612a", 1e-7) != base
    assert reading(0, "k2612b", 1e-7) != base
    assert reading(0, "k2612a", 1e-6) != base


def test_2612a_switched_off_the_reading_is_exact() -> None:
    emu = k2612(ResistorBench(2e7, NEITHER))
    assert list(k2612_current_readings(emu, 1.0, 20)) == pytest.approx([5e-8] * 20, rel=1e-11, abs=0)
    emu = k2612(ResistorBench(1e6, NEITHER))
    assert list(k2612_voltage_readings(emu, 1e-6, 5)) == pytest.approx([1.0] * 5, rel=1e-11, abs=0)


# ----------------------------------------------------------------- B1500A HRSMU
@pytest.mark.parametrize(("volts", "ohms", "code"), [(1.0, 2e9, 11), (0.5, 1e10, 10)])
def test_b1500a_hrsmu_low_current_readings_within_the_data_sheet(volts: float, ohms: float, code: int) -> None:
    """0.5 nA on the 1 nA range and 50 pA on the 100 pA range: every reading within
    ±(% + offset + Vo term) of the module's table, over 100 instruments."""
    true = volts / ohms
    full = {11: 1e-9, 10: 1e-10}[code]
    row = HRSMU.at("I", full)
    errors = []
    for seed in range(100):
        emu = b1500(ResistorBench(ohms, BOTH, seed=seed))
        readings = b1500_current_readings(emu, volts, 3, code)
        assert np.all(np.abs(readings - true) <= row.measure_bound(true, volts)), (seed, readings)
        errors.append(readings.mean() - true)
    assert np.std(errors) > 0.1 * row.measure_bound(true, volts)  # systematic errors of data-sheet size


def test_b1500a_noise_and_integration_time() -> None:
    """Accuracy off: the high-speed ADC's spread is the range's noise figure at its
    reference integration (1 ms: the default auto mode, one sample); manual mode with
    100 samples of 20 µs (``AIT 0,1,100``, 2 ms) lowers it by √(1 ms / 2 ms)."""
    emu = b1500(ResistorBench(1e5, NOISE_ONLY))
    row = HRSMU.at("I", 1e-5)
    fast = b1500_current_readings(emu, 1.0, 1500, 15)
    assert float(np.std(fast)) == pytest.approx(row.noise_rms, rel=0.1)
    flex(emu, "AIT 0,1,100")
    slow = np.array([float(flex(emu, "TI 1,-15")) for _ in range(1500)])
    assert float(np.std(slow)) == pytest.approx(row.noise_rms * math.sqrt(1e-3 / 2e-3), rel=0.1)


def test_b1500a_switched_off_the_reading_is_exact_and_accuracy_is_per_channel() -> None:
    emu = b1500(ResistorBench(2e9, NEITHER))
    assert set(b1500_current_readings(emu, 1.0, 5, 11)) == {5e-10}
    emu = b1500(ResistorBench(2e10, ACCURACY_ONLY))  # 50 pA on the 100 pA range
    flex(emu, "*RST", "FMT 12", "CN 1,2", "DV 1,0,1,1E-6", "DV 2,0,1,1E-6")
    a = {float(flex(emu, "TI 1,-10")) for _ in range(3)}
    b = {float(flex(emu, "TI 2,-10")) for _ in range(3)}
    assert len(a) == 1 and len(b) == 1 and a != b and 5e-11 not in a


def test_mpsmu_has_no_low_ranges() -> None:
    """The B1511B MPSMU starts at 1 nA: a 100 pA range request measures on 1 nA."""
    emu = B1500AEmulator(ResistorBench(2e9, NEITHER), modules=("B1511B",))
    flex(emu, "*RST", "FMT 1", "CN 1", "DV 1,0,0.1,1E-6")
    assert flex(emu, "TI 1,-10").startswith("NAI") and flex(emu, "UNT?").startswith("B1511B,0")
    assert b1500_table("B1511B").current[0].full_scale == 1e-9


# --------------------------------------------------------------- settling
def clock_advance(emu: K2612AEmulator, bench: ResistorBench, chunk: str) -> float:
    t0 = bench.clock.now()
    emu.write(chunk)
    emu.take_output()
    assert not list(emu.errors), [e.message for e in emu.errors]
    return bench.clock.now() - t0


SETUP_100NA = ("smua.reset() smua.source.func = smua.OUTPUT_DCVOLTS smua.measure.autorangei = 0 "
               "smua.measure.rangei = 1e-7 smua.measure.autozero = 0 smua.measure.nplc = 1 ")


def test_2612a_measure_delay_advances_the_clock_by_the_autodelay() -> None:
    """DELAY_AUTO on the 100 nA range: 15 ms before the first reading (× delayfactor),
    then one conversion (1 PLC); a user delay is used as given; the 2612A resets to
    DELAY_OFF, the 2636B to DELAY_AUTO (manuals)."""
    bench = ResistorBench(1e8, NEITHER)
    emu = k2612(bench)
    conv = 1.0 / LINE
    autodelay = K2612.at("i", 1e-7).measure_autodelay
    assert autodelay == 15e-3
    emu.write(SETUP_100NA + "smua.source.output = 1")
    assert tsp_values(emu, "print(smua.measure.delay)") == [0.0]
    assert clock_advance(emu, bench, "print(smua.measure.i())") == pytest.approx(conv)
    emu.write("smua.measure.delay = smua.DELAY_AUTO")
    assert clock_advance(emu, bench, "print(smua.measure.i())") == pytest.approx(autodelay + conv)
    assert clock_advance(emu, bench, "print(smua.measure.v())") == pytest.approx(conv)  # voltage: none
    emu.write("smua.measure.delayfactor = 2 smua.measure.count = 3")
    assert clock_advance(emu, bench, "smua.measure.i(smua.nvbuffer1)") == pytest.approx(2 * autodelay + 3 * conv)
    emu.write("smua.measure.delay = 0.005 smua.measure.count = 1")
    assert clock_advance(emu, bench, "print(smua.measure.i())") == pytest.approx(0.005 + conv)
    emu.write("smua.measure.delay = smua.DELAY_AUTO smua.measure.delayfactor = 1 smua.measure.rangei = 1e-5")
    assert clock_advance(emu, bench, "print(smua.measure.i())") == pytest.approx(1e-3 + conv)
    low = K2612AEmulator(ResistorBench(1e8, NEITHER), "k2636", model="2636B")
    assert tsp_values(low, "print(smua.measure.delay)") == [-1.0]


def test_2612a_source_autodelay_advances_the_clock_on_a_level_change() -> None:
    """source.delay = DELAY_AUTO: a level change with the output on waits the output
    settling of the ranges in use (100 nA: 20 ms, data sheet); off, or DELAY_OFF: none."""
    bench = ResistorBench(1e8, NEITHER)
    emu = k2612(bench)
    emu.write(SETUP_100NA + "smua.source.delay = smua.DELAY_AUTO")
    assert clock_advance(emu, bench, "smua.source.levelv = 0.5") == 0.0  # output off
    assert clock_advance(emu, bench, "smua.source.output = 1") == pytest.approx(20e-3)
    assert clock_advance(emu, bench, "smua.source.levelv = 1") == pytest.approx(20e-3)
    emu.write("smua.measure.rangei = 1e-3")
    assert clock_advance(emu, bench, "smua.source.levelv = 0.9") == pytest.approx(100e-6)
    emu.write("smua.source.delay = 0.003")
    assert clock_advance(emu, bench, "smua.source.levelv = 0.8") == pytest.approx(3e-3)
    emu.write("smua.source.delay = smua.DELAY_OFF")
    assert clock_advance(emu, bench, "smua.source.levelv = 0.7") == 0.0


def test_2612a_sweep_waits_the_source_autodelay_at_each_point() -> None:
    bench = ResistorBench(1e8, NEITHER)
    emu = k2612(bench)
    emu.write(SETUP_100NA + "smua.source.delay = smua.DELAY_AUTO smua.nvbuffer1.clear() "
              "smua.trigger.source.linearv(0.1, 0.5, 5) smua.trigger.source.action = smua.ENABLE "
              "smua.trigger.measure.action = smua.ENABLE smua.trigger.measure.i(smua.nvbuffer1) "
              "smua.trigger.count = 5 smua.source.output = 1")
    assert clock_advance(emu, bench, "smua.trigger.initiate() waitcomplete()") == pytest.approx(5 * (20e-3 + 1 / LINE))


def test_a_capacitive_transient_is_seen_without_delay_and_settled_by_the_autodelay() -> None:
    """100 pF charged through 10 MΩ (τ = 1 ms): a reading taken right after a 0.5 V
    step at 0.01 PLC sees the displacement current (C·ΔV/τ = 50 nA, read 0.08 ms later);
    the same reading after the source autodelay (20 ms) and the measure autodelay
    (15 ms) of the 100 nA range sees V/R within the range's data-sheet accuracy."""
    def first_reading(delays: str) -> float:
        bench = ResistorBench(1e8, NEITHER, farads=1e-10, r_source=1e7)
        emu = k2612(bench)
        emu.write(SETUP_100NA + "smua.measure.nplc = 0.01 smua.source.output = 1 " + delays)
        return tsp_values(emu, "smua.source.levelv = 0.5 print(smua.measure.i())")[0]

    true = 0.5 / 1e8
    raw = first_reading("")
    settled = first_reading("smua.source.delay = smua.DELAY_AUTO smua.measure.delay = smua.DELAY_AUTO")
    assert raw - true == pytest.approx(50e-9 * math.exp(-(0.01 / LINE / 2) / 1e-3), rel=1e-3)
    assert abs(settled - true) < K2612.at("i", 1e-7).measure_bound(true)


def test_b1500a_wt_hold_and_delay_and_integration_come_before_the_reading() -> None:
    """Staircase ``WT hold,delay``: the bench clock passes hold + delay, then half the
    integration, before the first step's reading; a transient with τ = 10 ms is
    settled by a 100 ms hold and seen without it."""
    def first_step(hold: float) -> tuple[float, float]:
        bench = ResistorBench(1e8, NEITHER, farads=1e-9, r_source=1e7)
        emu = b1500(bench)
        flex(emu, "*RST", "FMT 2", "CN 1", "MM 2,1", "WV 1,1,0,1,2,2,1E-6", f"WT {hold},0.001", "AIT 0,1,10")
        t0 = bench.clock.now()
        emu.write("XE")
        first = float(emu.take_output().decode("latin-1").split(",")[0])
        return first, t0

    raw, _ = first_step(0.0)
    settled, _ = first_step(0.1)
    assert raw - 1e-8 > 5e-9 and abs(settled - 1e-8) < 1e-11
    bench = ResistorBench(1e8, NEITHER)
    emu = b1500(bench)
    flex(emu, "*RST", "FMT 2", "CN 1", "MM 2,1", "WV 1,1,0,1,2,2,1E-6", "WT 0.25,0.01", "AIT 0,1,10")
    t0 = bench.clock.now()
    emu.write("XE")
    emu.take_output()
    step = 0.01 + 10 * 20e-6  # delay + integration of each step
    assert bench.clock.now() - t0 == pytest.approx(0.25 + 2 * step)
