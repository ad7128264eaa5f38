"""The B1500A emulator, message by message.

Most tests run against :class:`FakeBench`, a resistor from each terminal to ground,
so expected currents are exact; the last group runs the same commands against the
real :class:`~labpcu.sim.bench.SimBench` (PCU memristor read through the matrix).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from labpcu.clock import VirtualClock
from labpcu.sim.b1500 import B1500AEmulator, eng_exponent, format_number
from labpcu.sim.physics import Physics

ELEMENT = re.compile(r"^([NCTVXWE])([A-J])([IVT])([+-]\d{3}\.\d{3}E[+-]\d{2})$")


# ----------------------------------------------------------------- fake bench
@dataclass
class FakeReading:
    i: float
    v: float
    compliance: bool


@dataclass
class FakeState:
    output: bool = False
    mode: str = "v"
    level: float = 0.0
    limit: float = 1e-4


@dataclass
class FakeBench:
    """Each terminal drives a resistor to ground (``None`` = open circuit)."""

    loads: dict[str, float | None] = field(default_factory=dict)
    seed: int = 1
    #: exact readings of the loads (the reading accuracy is tested in test_sim_instrument_accuracy)
    physics: Physics = field(default_factory=lambda: Physics().without("instrument_accuracy"))

    def __post_init__(self) -> None:
        self.clock = VirtualClock()
        self.lock = threading.RLock()
        self.rng = np.random.default_rng(self.seed)
        self.states: dict[str, FakeState] = {}
        self.history: list[tuple[float, str, FakeState]] = []
        self.measure_log: list[tuple[float, str, float]] = []

    def source(self, name: str) -> FakeState:
        return self.states.setdefault(name, FakeState())

    def set_source(self, name, output=None, mode=None, level=None, limit=None) -> None:
        s = self.source(name)
        assert limit is None or limit > 0
        for key, value in (("output", output), ("mode", mode), ("level", level), ("limit", limit)):
            if value is not None:
                setattr(s, key, value)
        self.history.append((self.clock.now(), name, FakeState(s.output, s.mode, s.level, s.limit)))

    def settle(self) -> None:
        pass

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def measure(self, name: str, duration: float = 0.0) -> FakeReading:
        s = self.source(name)
        r = self.loads.get(name)
        self.measure_log.append((self.clock.now(), name, s.level))
        if not s.output:
            reading = FakeReading(0.0, 0.0, False)
        elif s.mode == "v":
            i = 0.0 if r is None else s.level / r
            if abs(i) > s.limit:
                i = math.copysign(s.limit, s.level)
                reading = FakeReading(i, i * r, True)
            else:
                reading = FakeReading(i, s.level, False)
        else:
            v = math.copysign(math.inf, s.level) if r is None else s.level * r
            if abs(v) > s.limit:
                v = math.copysign(s.limit, s.level)
                reading = FakeReading(0.0 if r is None else v / r, v, True)
            else:
                reading = FakeReading(s.level, v, False)
        if duration > 0:
            self.clock.advance(duration)
        return reading


def make(loads: dict[str, float | None] | None = None) -> tuple[B1500AEmulator, FakeBench]:
    bench = FakeBench(loads or {"b1500a.1": 1e6, "b1500a.2": 1e6, "b1500a.3": 1e6, "b1500a.4": 1e6})
    return B1500AEmulator(bench), bench


def ask(emu: B1500AEmulator, message: str) -> str:
    """Write one message and return exactly one reply line (without CR/LF)."""
    assert emu.pending_output() == 0, emu.take_output()
    emu.write(message)
    data = emu.take_output(until=b"\r\n")
    assert data.endswith(b"\r\n"), data
    assert emu.pending_output() == 0, "more than one reply line"
    return data[:-2].decode()


def send(emu: B1500AEmulator, message: str) -> None:
    """Write a message that must succeed silently."""
    emu.write(message)
    assert emu.pending_output() == 0, emu.take_output()
    assert ask(emu, "ERRX?") == '+0,"No Error."', message


def elements(line: str) -> list[tuple[str, str, str, float]]:
    out = []
    for text in line.split(","):
        m = ELEMENT.match(text)
        assert m, f"bad element {text!r} in {line!r}"
        out.append((m[1], m[2], m[3], float(m[4])))
    return out


def next_error(emu: B1500AEmulator) -> int:
    return int(ask(emu, "ERRX?").split(",")[0])


# ------------------------------------------------------------------ identity
def test_identity_and_modules() -> None:
    emu, _ = make()
    assert emu.reply_termination == b"\r\n" and emu.write_termination == b"\r\n"
    idn = ask(emu, "*IDN?").split(",")
    assert idn[:2] == ["Agilent Technologies", "B1500A"] and len(idn) == 4
    expected = "B1517A,0;B1517A,0;B1517A,0;B1517A,0;0,0;0,0;0,0;0,0;0,0;0,0"
    assert ask(emu, "UNT?") == expected
    assert ask(emu, "unt? 0") == expected
    assert ask(emu, "*OPC?") == "1"
    assert ask(emu, "ERRX?") == '+0,"No Error."'
    assert ask(emu, "ERRX? 1") == "+0"
    assert ask(emu, "ERR?") == "0,0,0,0"


def test_custom_modules_and_bad_module() -> None:
    emu = B1500AEmulator(None, name="mca", modules=[None, "B1517A"])
    assert ask(emu, "UNT?") == "0,0;B1517A,0" + ";0,0" * 8
    assert emu.channels[2].terminal == "mca.2"
    with pytest.raises(ValueError, match="B9999"):
        B1500AEmulator(None, modules=["B9999"])


# ------------------------------------------------------------- number format
@pytest.mark.parametrize(
    "value, exp, text",
    [
        (5e-12, -9, "+000.005E-09"),
        (-12.345e-3, -3, "-012.345E-03"),
        (1.5, 0, "+001.500E+00"),
        (1.0e-6, -6, "+001.000E-06"),
        (1500.0, 0, "+001.500E+03"),  # mantissa must stay below 1000
        (None, -9, "+199.999E+99"),
        (-1e-20, -9, "+000.000E-09"),  # no negative zero
    ],
)
def test_format_number(value, exp, text) -> None:
    assert format_number(value, exp) == text
    assert len(text) == 12


def test_range_exponents() -> None:
    assert [eng_exponent(r) for r in (1e-9, 1e-8, 1e-7, 1e-6, 1e-4, 0.1)] == [-9, -9, -9, -6, -6, -3]
    assert [eng_exponent(r) for r in (0.5, 2.0, 20.0, 100.0)] == [-3, 0, 0, 0]


# ------------------------------------------------------------ force and spot
def test_cn_dv_ti_resistive_load() -> None:
    emu, bench = make({"b1500a.1": 1e6})
    send(emu, "CN 1")
    assert bench.source("b1500a.1") == FakeState(True, "v", 0.0, 1e-4)
    send(emu, "DV 1,0,1.0,1E-3")
    assert bench.source("b1500a.1") == FakeState(True, "v", 1.0, 1e-3)
    ((status, ch, kind, value),) = elements(ask(emu, "TI 1"))
    assert (status, ch, kind) == ("N", "A", "I")
    assert value == pytest.approx(1e-6, rel=2e-3)
    ((status, _, kind, value),) = elements(ask(emu, "tv 1"))
    assert (status, kind, value) == ("N", "V", pytest.approx(1.0, abs=1e-3))
    (i, v) = elements(ask(emu, "TIV 1"))
    assert i[2:] == ("I", pytest.approx(1e-6, rel=2e-3)) and v[2:] == ("V", pytest.approx(1.0, abs=1e-3))
    assert bench.clock.now() > 0  # integration took simulated time


def test_di_forces_current_and_reads_voltage() -> None:
    emu, bench = make({"b1500a.2": 1e3})
    send(emu, "CN 2;DI 2,0,1e-3,5")
    assert bench.source("b1500a.2") == FakeState(True, "i", 1e-3, 5.0)
    ((status, ch, kind, value),) = elements(ask(emu, "TV 2"))
    assert (status, ch, kind) == ("N", "B", "V") and value == pytest.approx(1.0, abs=1e-3)


def test_spot_current_uses_range_exponent() -> None:
    emu, _ = make({"b1500a.1": 2e11})  # 5 pA at 1 V
    send(emu, "CN 1;DV 1,0,1")
    assert ask(emu, "TI 1,-11") == "NAI+000.005E-09"  # fixed 1 nA range
    ((_, _, _, value),) = elements(ask(emu, "TI 1"))  # auto: 10 pA range
    assert value == pytest.approx(5e-12, rel=2e-3)
    assert ask(emu, "TI 1").endswith("E-12")


def test_timed_spot_gives_time_element_first() -> None:
    emu, bench = make()
    send(emu, "CN 1;DV 1,0,0.5;TSR")
    bench.advance(1.25)
    t, i = elements(ask(emu, "TTI 1"))
    assert t[:3] == ("N", "A", "T") and t[3] == pytest.approx(1.25, abs=1e-3)
    assert i[2] == "I"
    assert [e[2] for e in elements(ask(emu, "TTIV 1,0,0"))] == ["T", "I", "V"]


def test_compliance_is_status_c_and_other_channel_t() -> None:
    emu, bench = make({"b1500a.1": 1e6, "b1500a.2": 1e6})
    send(emu, "CN 1,2;DV 1,0,1,1e-7;DV 2,0,0.1,1e-3")
    ((status, _, _, value),) = elements(ask(emu, "TI 1"))
    assert status == "C" and value == pytest.approx(1e-7, rel=2e-3)
    ((status, _, _, value),) = elements(ask(emu, "TI 2"))
    assert status == "T" and value == pytest.approx(1e-7, rel=2e-3)
    send(emu, "MM 1,1,2")
    emu.write("XE")
    line = emu.take_output().decode()
    assert line.endswith("\r\n")
    assert [e[0] for e in elements(line.strip())] == ["C", "T"]
    send(emu, "CL 1")  # compliance gone with the channel
    assert elements(ask(emu, "TI 2"))[0][0] == "N"


def test_overflow_is_status_v() -> None:
    emu, _ = make({"b1500a.1": 1e6})
    send(emu, "CN 1;DV 1,0,1,1e-3;RI 1,-11")  # 1 µA on a fixed 1 nA range
    assert ask(emu, "TI 1") == "VAI+199.999E+99"
    assert ask(emu, "TI 1,0").startswith("NAI")  # auto range holds it
    send(emu, "RI 1,14")  # limited auto from 1 µA
    assert elements(ask(emu, "TI 1"))[0][:3] == ("N", "A", "I")


def test_noise_scales_with_range() -> None:
    emu, _ = make({"b1500a.1": 1e4})  # 100 µA
    send(emu, "CN 1;DV 1,0,1,1e-3")
    fine = [elements(ask(emu, "TI 1,-16"))[0][3] for _ in range(200)]  # 100 µA range
    coarse = [elements(ask(emu, "TI 1,-19"))[0][3] for _ in range(200)]  # 100 mA range
    assert np.mean(fine) == pytest.approx(1e-4, rel=1e-4)
    sigma_fine = 5e-5 * 1e-4 + 10e-15
    assert 0.5 * sigma_fine < np.std(fine) < 2 * sigma_fine
    sigma_coarse = 5e-5 * 0.1
    assert 0.5 * sigma_coarse < np.std(coarse) < 2 * sigma_coarse


def test_integration_time_follows_adc_settings() -> None:
    emu, bench = make()
    send(emu, "CN 1")
    t0 = bench.clock.now()
    ask(emu, "TI 1")
    fast = bench.clock.now() - t0
    send(emu, "AAD 1,1;AIT 1,2,5")  # high resolution, 5 PLC at 50 Hz, auto-zero on
    t0 = bench.clock.now()
    ask(emu, "TI 1")
    assert bench.clock.now() - t0 == pytest.approx(2 * 5 / 50)
    send(emu, "AZ 0")
    t0 = bench.clock.now()
    ask(emu, "TI 1")
    assert bench.clock.now() - t0 == pytest.approx(5 / 50)
    assert fast < 5 / 50


def test_fmt2_has_no_header_and_cmm_selects_quantity() -> None:
    emu, _ = make({"b1500a.1": 1e6})
    send(emu, "FMT 2,0;CN 1;DV 1,0,2,1e-3;MM 1,1;CMM 1,4")
    emu.write("XE")
    line = emu.take_output().decode().strip()
    parts = line.split(",")
    assert len(parts) == 2 and all(re.fullmatch(r"[+-]\d{3}\.\d{3}E[+-]\d{2}", p) for p in parts)
    assert float(parts[0]) == pytest.approx(2e-6, rel=2e-3) and float(parts[1]) == pytest.approx(2, abs=1e-3)
    send(emu, "FMT 1;CMM 1,3")  # force side of a V source is V
    emu.write("XE")
    assert elements(emu.take_output().decode().strip())[0][2] == "V"


# ----------------------------------------------------------- staircase sweep
def sweep_setup(emu: B1500AEmulator, extra: str = "") -> None:
    send(emu, "CN 1,2;WV 1,1,0,0,1,11,1e-3;WT 0.5,0.01;WM 1,1;MM 2,1" + extra)


def run_xe(emu: B1500AEmulator) -> str:
    emu.write("XE")
    data = emu.take_output().decode()
    assert data.endswith("\r\n") and data.count("\r\n") == 1, data
    return data[:-2]


def test_staircase_fmt_1_0_elements() -> None:
    emu, bench = make({"b1500a.1": 1e6})
    sweep_setup(emu)
    send(emu, "FMT 1,0")
    t0 = bench.clock.now()
    data = elements(run_xe(emu))
    assert len(data) == 11
    assert all(e[:3] == ("N", "A", "I") for e in data)
    assert [e[3] for e in data] == pytest.approx([k * 1e-7 for k in range(11)], abs=2e-10)
    elapsed = bench.clock.now() - t0
    assert 0.5 + 11 * 0.01 < elapsed < 0.5 + 11 * 0.01 + 11 * 0.01
    # hold before the first step, delay before each measurement, then the reading at the
    # middle of the 1 ms high-speed integration
    times = [t for t, name, _ in bench.measure_log if name == "b1500a.1"][-11:]
    assert times[0] == pytest.approx(t0 + 0.5 + 0.01 + 0.5e-3)
    assert bench.source("b1500a.1").level == 0.0  # WM post 1: back to start


def test_staircase_fmt_1_1_adds_source_with_w_and_e() -> None:
    emu, bench = make({"b1500a.1": 1e6, "b1500a.2": 1e6})
    sweep_setup(emu, ";MM 2,1,2;WM 1,2;FMT 1,1")
    line = run_xe(emu)
    data = elements(line)
    assert len(data) == 11 * 3
    assert [e[1] + e[2] for e in data[:3]] == ["AI", "BI", "AV"]
    sources = data[2::3]
    assert [e[0] for e in sources] == ["W"] * 10 + ["E"]
    assert line.split(",")[5] == "WAV+000.100E+00"
    assert [e[3] for e in sources] == pytest.approx([k / 10 for k in range(11)])
    assert bench.source("b1500a.1").level == 1.0  # WM post 2: stop value


def test_two_way_log_sweep_points() -> None:
    emu, _ = make({"b1500a.1": 1e6})
    send(emu, "CN 1;WV 1,4,0,0.01,1,3,1e-3;MM 2,1;FMT 1,1")
    data = elements(run_xe(emu))
    assert [e[3] for e in data[1::2]] == pytest.approx([0.01, 0.1, 1, 1, 0.1, 0.01])
    assert [e[0] for e in data[1::2]] == ["W"] * 5 + ["E"]


def test_sweep_abort_on_compliance_fills_with_overflow() -> None:
    emu, bench = make({"b1500a.1": 1e6})
    send(emu, "CN 1;WV 1,1,0,0,1,11,5e-7;MM 2,1;FMT 1,1")  # compliance from 0.6 V
    data = elements(run_xe(emu))  # WM defaults to abort on
    assert len(data) == 22
    measured = [e[0] for e in data[0::2]]
    assert measured == ["N"] * 6 + ["C"] + ["V"] * 4
    assert all(e[3] == 199.999e99 for e in data[14::2])
    assert bench.source("b1500a.1").level == 0.0  # aborted: start value
    send(emu, "WM 1")  # abort off: compliance shows and the sweep runs on
    data = elements(run_xe(emu))
    assert [e[0] for e in data[0::2]] == ["N"] * 6 + ["C"] * 5


def test_current_sweep_reads_voltage() -> None:
    emu, bench = make({"b1500a.1": 1e6})
    send(emu, "CN 1;WI 1,1,0,0,1e-6,3,5;MM 2,1;FMT 1,1")
    data = elements(run_xe(emu))
    assert [e[1] + e[2] for e in data] == ["AV", "AI"] * 3
    assert [e[3] for e in data[0::2]] == pytest.approx([0, 0.5, 1], abs=1e-3)
    assert [e[3] for e in data[1::2]] == pytest.approx([0, 0.5e-6, 1e-6])
    assert data[-1][0] == "E" and bench.source("b1500a.1").mode == "i"


def test_power_compliance_limits_each_step() -> None:
    emu, bench = make({"b1500a.1": 1e3})
    send(emu, "CN 1;WV 1,1,0,1,3,3,0.1,2e-3;WM 1;MM 2,1")  # P = V²/1 kΩ: 1, 4, 9 mW
    data = elements(run_xe(emu))
    assert [e[0] for e in data] == ["N", "C", "C"]
    assert [e[3] for e in data] == pytest.approx([1e-3, 1e-3, 2e-3 / 3], rel=2e-3)
    assert bench.source("b1500a.1").limit == 0.1  # Icomp back after the sweep


def test_pulsed_current_source() -> None:
    emu, bench = make({"b1500a.2": 1e3})
    send(emu, "CN 2;PT 0,0.001;PI 2,0,0,1e-3,5;MM 3,2")
    ((status, ch, kind, value),) = elements(run_xe(emu))
    assert (status, ch, kind) == ("N", "B", "V") and value == pytest.approx(1.0, abs=1e-3)
    assert bench.source("b1500a.2").mode == "i" and bench.source("b1500a.2").level == 0.0


def test_timestamps_in_sweep() -> None:
    emu, _ = make()
    sweep_setup(emu, ";TSC 1;TSR;FMT 1,0")
    data = elements(run_xe(emu))
    assert len(data) == 22 and [e[2] for e in data[:2]] == ["T", "I"]
    times = [e[3] for e in data[0::2]]
    assert times == sorted(times) and times[0] == pytest.approx(0.51, abs=1e-3)


# -------------------------------------------------------------- pulsed spot
def test_pulsed_spot_advances_the_clock() -> None:
    emu, bench = make({"b1500a.1": 1e6})
    send(emu, "CN 1;PT 0.1,0.01,0.05;PV 1,0,0,2,1e-3;MM 3,1")
    t0 = bench.clock.now()
    ((status, ch, kind, value),) = elements(run_xe(emu))
    assert bench.clock.now() - t0 == pytest.approx(0.15)
    assert (status, ch, kind) == ("N", "A", "I") and value == pytest.approx(2e-6, rel=2e-3)
    levels = [(t - t0, s.level) for t, name, s in bench.history if name == "b1500a.1" and t >= t0]
    assert levels[-3:] == [(0.0, 0.0), (pytest.approx(0.1), 2.0), (pytest.approx(0.11), 0.0)]
    (t_meas,) = [t - t0 for t, name, _ in bench.measure_log if t >= t0]
    assert 0.1 < t_meas < 0.11  # read inside the pulse, near its end
    assert bench.source("b1500a.1").level == 0.0


def test_pulsed_spot_auto_period() -> None:
    emu, bench = make()
    send(emu, "CN 1;PT 0,0.01;PV 1,0,0,1;MM 3,1")
    assert emu.pulse_period() == pytest.approx(0.012)
    t0 = bench.clock.now()
    run_xe(emu)
    assert bench.clock.now() - t0 == pytest.approx(0.012)


# ---------------------------------------------------------- outputs, safety
def test_cl_and_rst_turn_outputs_off() -> None:
    emu, bench = make()
    send(emu, "CN;DV 1,0,1;DV 3,0,2")
    assert all(bench.source(f"b1500a.{k}").output for k in range(1, 5))
    send(emu, "CL 1")
    assert not bench.source("b1500a.1").output and bench.source("b1500a.3").output
    send(emu, "*RST")
    assert not any(bench.source(f"b1500a.{k}").output for k in range(1, 5))
    emu.write("TI 3")
    assert next_error(emu) == 200


def test_dz_and_rz() -> None:
    emu, bench = make()
    send(emu, "CN 1,2;DV 1,0,1.5,1e-3;DI 2,0,1e-6,3")
    send(emu, "DZ")
    assert bench.source("b1500a.1").level == 0.0 and bench.source("b1500a.2") == FakeState(True, "v", 0.0, 1e-4)
    send(emu, "RZ 1")
    assert bench.source("b1500a.1") == FakeState(True, "v", 1.5, 1e-3)
    send(emu, "RZ")
    assert bench.source("b1500a.2") == FakeState(True, "i", 1e-6, 3.0)


def test_rst_keeps_error_queue_and_restores_defaults() -> None:
    emu, _ = make()
    send(emu, "FMT 2;MM 1,1")
    emu.write("BOGUS")
    emu.write("*RST")
    assert emu.pending_output() == 0
    assert next_error(emu) == 100
    assert ask(emu, "ERRX?") == '+0,"No Error."'
    emu.write("XE")  # MM forgotten
    assert next_error(emu) == 120
    send(emu, "CN 1")
    assert ask(emu, "TI 1").startswith("NAI")  # FMT back to 1 (header)


# -------------------------------------------------------------- error paths
ERROR_CASES = [
    ("FOO 1", 100),
    ("*XYZ", 100),
    ("DV 1", 103),
    ("DV 1,0,1,1e-3,0,11,7", 103),
    ("TIV 1,0", 103),
    ("DV 1,0,abc", 102),
    ("DV 1,,1", 102),
    ("DV 1,0,101", 120),
    ("DI 1,0,0.2", 120),
    ("DV 1,0,1,0.2", 123),  # 200 mA > 100 mA
    ("DV 1,0,30,0.08", 123),  # 80 mA above 20 V
    ("DV 1,0,1,0", 123),
    ("DV 1,2000,1", 124),  # 200 V range not on a B1517A
    ("DV 1,3,1", 124),
    ("RI 1,20", 124),
    ("DV 11,0,1", 121),
    ("DV 5,0,1", 126),
    ("DV 102,0,1", 126),
    ("DV 2,0,1", 200),  # channel 2 not enabled
    ("TI 2", 200),
    ("FMT 3", 120),
    ("FMT 1,7", 120),
    ("MM 4,1", 120),
    ("MM 3,1,3", 122),
    ("MM 1", 122),
    ("CN 1,1", 122),
    ("CMM 1,9", 120),
    ("WV 1,2,0,0,1,10", 120),  # log sweep through zero
    ("WV 1,1,0,0,1,1002", 120),
    ("WV 1,5,0,0,1,10", 120),
    ("WT -1,0", 120),
    ("WM 3", 120),
    ("PT 0,0.0001", 120),
    ("PT 0,0.01,0.011", 120),  # period < width + 2 ms
    ("AIT 1,3,1", 120),
    ("AIT 0,2,101", 120),
    ("UNT? 3", 120),
    ("ERRX? 2", 120),
]


@pytest.mark.parametrize("message, code", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_lands_in_errx_and_later_commands_work(message: str, code: int) -> None:
    emu, bench = make()
    send(emu, "CN 1")
    before = bench.source("b1500a.1")
    before = FakeState(before.output, before.mode, before.level, before.limit)
    emu.write(message)
    assert emu.pending_output() == 0
    reply = ask(emu, "ERRX?")
    assert int(reply.split(",")[0]) == code, reply
    assert re.fullmatch(r'[+-]\d+,"[^"]+"', reply)
    assert ask(emu, "ERRX?") == '+0,"No Error."'
    assert bench.source("b1500a.1") == before  # a failing command changes nothing
    send(emu, "DV 1,0,0.5")
    assert elements(ask(emu, "TI 1"))[0][0] == "N"


def test_xe_without_setup_is_an_error() -> None:
    emu, _ = make()
    send(emu, "CN 1;MM 2,1")
    emu.write("XE")  # no WV
    assert next_error(emu) == 120
    send(emu, "MM 3,1")
    emu.write("XE")  # no PV
    assert next_error(emu) == 120
    send(emu, "CL 1;MM 1,1")
    emu.write("XE")  # channel off
    assert ask(emu, "ERRX?") == '+200,"Channel output switch must be ON.; SLOT1"'


def test_rest_of_message_stops_after_error() -> None:
    emu, bench = make()
    emu.write("CN 1;DV 1,0,9,1e-3,7;DV 1,0,1;*IDN?")
    assert emu.pending_output() == 0  # *IDN? never ran
    assert bench.source("b1500a.1").level == 0.0  # nor the second DV
    assert bench.source("b1500a.1").output  # CN before the error did run
    assert next_error(emu) == 120
    assert next_error(emu) == 0  # exactly one error


def test_errx_code_only_and_err_query() -> None:
    emu, _ = make()
    for bad in ("XX", "DV 1", "FMT 9", "DV 7,0,0", "YY"):
        emu.write(bad)
    assert ask(emu, "ERRX? 1") == "+100"
    assert ask(emu, "ERR? 1") == "103"
    assert ask(emu, "ERR?") == "120,126,100,0"
    assert ask(emu, "ERR?") == "0,0,0,0"
    assert ask(emu, "ERRX?") == '+0,"No Error."'


def test_error_queue_holds_30() -> None:
    emu, _ = make()
    for _ in range(40):
        emu.write("NOPE")
    assert len(emu.errors) == 30
    codes = [next_error(emu) for _ in range(31)]
    assert codes[:29] == [100] * 29 and codes[29] != 100 and codes[30] == 0


def test_several_queries_in_one_message() -> None:
    emu, _ = make()
    emu.write("*IDN? ; UNT?;*OPC?")
    lines = emu.take_output().split(b"\r\n")
    assert lines[0].startswith(b"Agilent Technologies,B1500A")
    assert lines[1:] == [b"B1517A,0" + b";B1517A,0" * 3 + b";0,0" * 6, b"1", b""]


def test_nub_and_bc() -> None:
    emu, _ = make()
    send(emu, "CN 1;WV 1,1,0,0,1,5;MM 2,1;FMT 1,1")
    emu.write("XE")
    assert emu.pending_output() > 0
    emu.write("NUB?")
    out = emu.take_output()
    assert out.endswith(b"\r\n10\r\n")
    emu.write("XE")
    emu.take_output(count=16 * 3)  # a client reading element by element
    emu.write("NUB?")
    assert emu.take_output().split(b"\r\n")[-2] == b"7"
    emu.write("XE")
    send(emu, "BC")
    assert ask(emu, "NUB?") == "0"


def test_clock_not_touched_by_setup_commands() -> None:
    emu, bench = make()
    send(emu, "CN 1;DV 1,0,1;WV 1,1,0,0,1,11;WT 1,1;PT 1,0.1;PV 1,0,0,1;MM 2,1;FMT 1,1;CMM 1,0;RI 1,0")
    assert bench.clock.now() == 0.0


# ---------------------------------------------------------------- real bench
def _quad_site(bench):
    return next(s for s in bench.wafer.sites.values() if s.kind != "array")


def _wire(bench, terminal_row: int, pad: str) -> None:
    """Close the crosspoint joining a matrix row (B1500 rows are 3..6) to a pad."""
    pin = next(p for p, (name, _) in bench.pins().items() if name == pad)
    slot, col = (1, pin) if pin <= 16 else (2, pin - 16)
    bench.close_relays([(slot, terminal_row, col)])


@pytest.fixture
def real_bench():
    sim = pytest.importorskip("labpcu.sim.bench")
    bench = sim.SimBench(seed=0)
    site = _quad_site(bench)
    bench.move_to(site.id)
    return bench, site.devices[0]


def test_real_bench_reads_memristor_m1(real_bench) -> None:
    bench, device = real_bench
    emu = B1500AEmulator(bench)
    _wire(bench, 3, f"{device}.CL1")  # b1500a.1 → n1
    _wire(bench, 4, f"{device}.CL2")  # b1500a.2 → n2
    send(emu, "CN 1,2;DV 1,0,0.05,1e-3;DV 2,0,0,1e-3")
    g = bench.wafer.device(device).m1.conductance(bench.clock.now())
    ((status, ch, kind, i1),) = elements(ask(emu, "TI 1"))
    assert (status, ch, kind) == ("N", "A", "I")
    assert i1 == pytest.approx(0.05 * g, rel=0.02)
    ((_, ch, _, i2),) = elements(ask(emu, "TI 2"))
    assert ch == "B" and i2 == pytest.approx(-i1, rel=0.02)
    send(emu, "CL")
    assert not bench.source("b1500a.1").output and not bench.source("b1500a.2").output


def test_real_bench_short_shows_compliance(real_bench) -> None:
    bench, device = real_bench
    emu = B1500AEmulator(bench)
    _wire(bench, 3, f"{device}.CL1")
    _wire(bench, 4, f"{device}.CL1")  # both SMUs on one node
    send(emu, "CN 1,2;DV 1,0,0.1,1e-6;DV 2,0,0,1e-3")
    ((status, _, _, i1),) = elements(ask(emu, "TI 1"))
    assert status == "C" and i1 == pytest.approx(1e-6, rel=0.01)
    ((status, _, _, i2),) = elements(ask(emu, "TI 2"))
    assert status == "T" and i2 == pytest.approx(-1e-6, rel=0.05)
    send(emu, "*RST")
    assert not bench.source("b1500a.1").output and not bench.source("b1500a.2").output


def test_real_bench_sweep_and_pulse_run_on_virtual_time(real_bench) -> None:
    bench, device = real_bench
    emu = B1500AEmulator(bench)
    _wire(bench, 3, f"{device}.CL1")
    _wire(bench, 4, f"{device}.CL2")
    send(emu, "CN 1,2;DV 2,0,0;WV 1,3,0,0,0.1,6,1e-3;WT 0,0.001;WM 1;MM 2,1;FMT 1,1")
    data = elements(run_xe(emu))
    assert len(data) == 24 and [e[0] for e in data[0::2]] == ["N"] * 12
    currents = [e[3] for e in data[0::2]]
    assert currents[5] > currents[1] > 0 and currents[5] == pytest.approx(currents[6], rel=0.02)
    send(emu, "PT 0,0.02,0.05;PV 1,0,0,0.05,1e-3;MM 3,1")
    t0 = bench.clock.now()
    ((status, _, _, _),) = elements(run_xe(emu))
    assert status == "N" and bench.clock.now() - t0 == pytest.approx(0.05)
