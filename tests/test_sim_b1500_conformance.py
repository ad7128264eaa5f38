"""The B1500A emulator against FLEX as standard clients use it.

* FLEX scripts in the shape of the Programming Guide's examples (spot, staircase
  sweep, pulsed spot), message by message, with the data formats they choose.
* Replies pinned per command family: ``*LRN?`` of every emulated type, the status
  byte and event register, ``FMT`` element layouts, ``LOP?``, ``TSQ``, ``RMD?``,
  ``ACH``, self-test and diagnostics.
* The host-loop ISPP of ``benchmarks/bench_ispp.py`` over TCP with TCP_NODELAY:
  every target reached in a bounded number of pulses, every pulse as long as asked
  on the simulated bench, and the same pulse counts on a second run (no dependence
  on socket timing).
"""

from __future__ import annotations

import re
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from labpcu.sim.b1500 import B1500AEmulator
from labpcu.sim.physics import Physics
from labpcu.sim.rig import SimRig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


#: guide-style scripts against the DC bench: exact readings (the reading accuracy is tested in
#: test_sim_instrument_accuracy), no transients or parasitic paths (tested with the parasitics)
BENCH_PHYSICS = Physics().without("instrument_accuracy", "capacitance", "series_resistance", "relay_leakage")


def rig_and_emulator() -> tuple[SimRig, B1500AEmulator]:
    rig = SimRig.default(seed=0, site="Q1", physics=BENCH_PHYSICS)
    emu = rig["b1500a"]
    assert isinstance(emu, B1500AEmulator)
    return rig, emu


def ask(emu: B1500AEmulator, message: str) -> str:
    """Send one message and return what came back, without the final CR/LF."""
    emu.write(message)
    out = emu.take_output().decode("latin-1")
    assert out.endswith("\r\n"), out
    return out[:-2]


def send(emu: B1500AEmulator, *messages: str) -> None:
    for m in messages:
        emu.write(m)
    assert emu.pending_output() == 0
    assert ask(emu, "ERRX?") == '+0,"No Error."'


# ------------------------------------------------------------ guide-style scripts
ELEMENT_11 = re.compile(r"^([NCTVXWE])([A-JZ])([IVT])([+-]\d{3}\.\d{4}E[+-]\d{2})$")
ELEMENT_21 = re.compile(r"^(\d{3})([A-JZ])([IVTiv])([+-]\d{3}\.\d{4}E[+-]\d{2})$")


def test_script_spot_measurement_fmt11_with_time_stamp() -> None:
    """Spot measurement: outputs on, 13-digit ASCII with header, time stamps, high-speed
    ADC averaging, current and voltage of channel 1 (force 0.5 V), channel 2 at 0 V."""
    _, emu = rig_and_emulator()
    send(emu, "*RST", "FMT 11,0", "TSC 1", "AV 10,1", "CN 1,2", "DV 2,0,0,0.1", "DV 1,0,0.5,1E-3",
         "CMM 1,4", "RI 1,0", "MM 1,1", "TSR")
    data = ask(emu, "XE").split(",")
    parts = [ELEMENT_11.match(e) for e in data]
    assert all(parts), data
    assert [(p[1], p[2], p[3]) for p in parts] == [("N", "A", "T"), ("N", "A", "I"), ("N", "A", "V")]
    t, i, v = (float(p[4]) for p in parts)
    assert 0.0 <= t < 0.1 and abs(i) < 1e-9 and v == pytest.approx(0.5, abs=1e-3)
    assert ask(emu, "NUB?") == "0"
    assert ask(emu, "*LRN? 31") == "TM1;AV10,1;CM1;FMT11,0;MM1,1"
    send(emu, "DZ", "CL")
    assert ask(emu, "*LRN? 0") == "CL"


def test_script_staircase_sweep_fmt21_with_source_data() -> None:
    """Staircase sweep: 4155-compatible format with the sweep source, 11 steps 0-1 V,
    voltage read back, auto abort off, output back to start."""
    rig, emu = rig_and_emulator()
    send(emu, "*RST", "FMT 21,1", "CN 1", "WT 0,0.001", "WM 1,1", "WV 1,1,0,0,1,11,1E-3", "CMM 1,2",
         "MM 2,1")
    assert ask(emu, "*LRN? 33") == (
        "WM1,1;WT0.0,0.001,0.0,0.0,0.0;WV1,1,20,+00.0000E+00,+01.0000E+00,11,+001.000E-03"
    )
    data = ask(emu, "XE").split(",")
    assert len(data) == 22 and all(len(e) == 18 for e in data)  # 19 bytes with the separator
    parts = [ELEMENT_21.match(e) for e in data]
    assert all(parts), data
    meas, src = parts[0::2], parts[1::2]
    assert [p[1] for p in meas] == ["000"] * 11
    assert [p[1] for p in src] == ["000"] * 10 + ["128"]  # end of data on the last step
    assert {p[3] for p in meas} == {"V"} and {p[3] for p in src} == {"v"}
    assert [float(p[4]) for p in src] == pytest.approx([k / 10 for k in range(11)])
    assert [float(p[4]) for p in meas] == pytest.approx([k / 10 for k in range(11)], abs=2e-3)
    assert rig.bench.source("b1500a.1").level == 0.0  # WM post 1: back to start
    assert ask(emu, "TSQ").startswith("000ZT+")  # time data, channel Z
    send(emu, "DZ", "CL")


def test_script_pulsed_spot_fmt12() -> None:
    """Pulsed spot: 10 ms pulse to 1 V from 0 V in a 20 ms period, voltage read at the
    end of the pulse, 13-digit data without header."""
    rig, emu = rig_and_emulator()
    send(emu, "*RST", "FMT 12,0", "CN 1", "PT 0,0.01,0.02", "PV 1,0,0,1,1E-3", "CMM 1,2", "MM 3,1")
    assert ask(emu, "*LRN? 34") == "PT0.0,0.01,0.02,0.0;PV1,20,+00.0000E+00,+01.0000E+00,+001.000E-03"
    t0 = rig.bench.clock.now()
    value = ask(emu, "XE")
    assert re.fullmatch(r"[+-]\d{3}\.\d{4}E[+-]\d{2}", value)
    assert float(value) == pytest.approx(1.0, abs=2e-3)
    assert rig.bench.clock.now() - t0 == pytest.approx(0.02)
    assert rig.bench.source("b1500a.1").level == 0.0  # back at base
    send(emu, "DZ", "CL")


# ------------------------------------------------------------------------ *LRN?
def test_learn_every_type_after_reset() -> None:
    _, emu = rig_and_emulator()
    expected = {
        0: "CL",
        1: "CL1",
        30: "FL0",
        31: "TM1;AV1,0;CM1;FMT1,0",
        32: "RI1,0;RV1,0;RI2,0;RV2,0;RI3,0;RV3,0;RI4,0;RV4,0",
        33: "WM2,1;WT0.0,0.0,0.0,0.0,0.0",
        34: "PT0.0,0.001,0.0,0.0",
        46: "CMM1,0;CMM2,0;CMM3,0;CMM4,0",
        53: "SSR1,0;SSR2,0;SSR3,0;SSR4,0",
        54: "RM1,1,50;RM2,1,50;RM3,1,50;RM4,1,50",
        55: "AAD1,0;AAD1,2;;AAD2,0;AAD2,2;;AAD3,0;AAD3,2;;AAD4,0;AAD4,2;",
        56: "AIT0,0,1;AIT1,0,6;AIT2,3,0.001;AZ1",
        57: "WAT1,1.0,0.0000;WAT2,1.0,0.0000",
        60: "TSC0",
        110: "PAD0",
    }
    for kind, reply in expected.items():
        assert ask(emu, f"*LRN? {kind}") == reply, kind


def test_learn_follows_the_settings() -> None:
    _, emu = rig_and_emulator()
    send(emu, "CN 1,3", "DV 1,200,12.5,2E-3,1", "DI 3,0,-1E-6,2", "FL 1,3", "RI 1,-11", "RV 3,20",
         "CMM 3,2", "SSR 3,1", "RM 1,2,60", "AAD 3,1", "AIT 1,2,3", "AZ 0", "WAT 1,2,0.01", "TSC 1",
         "PAD 1", "CM 0", "TM 3", "FMT 2,1", "MM 2,3,1")
    assert ask(emu, "*LRN? 0") == "CN1,3"
    assert ask(emu, "*LRN? 1") == "DV1,200,+12.5000E+00,+002.000E-03,1,18"  # 2 mA needs the 10 mA range
    assert ask(emu, "*LRN? 2") == "CL2"
    assert ask(emu, "*LRN? 3") == "DI3,14,-001.000E-06,+02.0000E+00,0,20"
    assert ask(emu, "*LRN? 30") == "FL0,1,2,4;FL1,3"
    assert ask(emu, "*LRN? 31") == "TM3;AV1,0;CM0;FMT2,1;MM2,3,1"
    assert ask(emu, "*LRN? 32").startswith("RI1,-11;RV1,0;RI2,0;RV2,0;RI3,0;RV3,20")
    assert ask(emu, "*LRN? 46") == "CMM1,0;CMM2,0;CMM3,2;CMM4,0"
    assert ask(emu, "*LRN? 53") == "SSR1,0;SSR2,0;SSR3,1;SSR4,0"
    assert ask(emu, "*LRN? 54").startswith("RM1,2,60;RM2,1,50")
    assert ask(emu, "*LRN? 55").startswith("AAD1,0;AAD1,2;;AAD2,0;AAD2,2;;AAD3,1;AAD3,2;")
    assert ask(emu, "*LRN? 56") == "AIT0,0,1;AIT1,2,3;AIT2,3,0.001;AZ0"
    assert ask(emu, "*LRN? 57") == "WAT1,2.0,0.0100;WAT2,1.0,0.0000"
    assert ask(emu, "*LRN? 60") == "TSC1"
    assert ask(emu, "*LRN? 110") == "PAD1"
    emu.write("*LRN? 47")  # sampling is not emulated
    emu.write("*LRN? 5")  # empty slot
    assert ask(emu, "ERR?") == "120,126,0,0"


# ------------------------------------------------------------------ status model
def test_status_byte_and_event_register() -> None:
    _, emu = rig_and_emulator()
    assert ask(emu, "*ESR?") == "128"  # power on
    assert ask(emu, "*ESR?") == "0"
    assert ask(emu, "*STB?") == "16"  # set ready
    emu.write("XX")
    assert ask(emu, "*STB?") == "48"  # + error
    assert ask(emu, "ERRX? 1") == "+100"
    send(emu, "*SRE 32")
    assert ask(emu, "*SRE?") == "32"
    assert ask(emu, "*STB?") == "16"  # the ERRX? in send() cleared the error bit
    emu.write("DV 1,0,1")  # error 200
    assert ask(emu, "*STB?") == str(16 + 32 + 64)  # RQS: the error bit is enabled
    assert ask(emu, "*ESR?") == str(32 + 16)  # command error (XX) and execution error (200)
    emu.write("*CLS")
    assert ask(emu, "*STB?") == "16"
    assert ask(emu, "ERRX?") == '+0,"No Error."'
    send(emu, "*ESE 33", "*OPC")
    assert ask(emu, "*ESE?") == "33"
    assert ask(emu, "*ESR?") == "1"
    emu.write("XE")  # no MM: error 120
    assert ask(emu, "*STB?") == "112"
    emu.write("*RST")  # clears the error bit, keeps the error
    assert ask(emu, "*STB?") == "16"
    assert ask(emu, "ERRX? 1") == "+120"


def test_data_ready_bit_and_opc() -> None:
    _, emu = rig_and_emulator()
    send(emu, "CN 1", "MM 1,1")
    emu.write("XE")
    emu.write("*STB?")
    lines = emu.take_output().decode().split("\r\n")
    assert lines[1] == "17"  # data waiting when *STB? was read
    assert ask(emu, "*OPC?") == "1"


# -------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    "fmt, pattern",
    [
        (1, r"NAV[+-]\d{3}\.\d{3}E[+-]\d{2}"),
        (2, r"[+-]\d{3}\.\d{3}E[+-]\d{2}"),
        (5, r"NAV[+-]\d{3}\.\d{3}E[+-]\d{2}"),
        (11, r"NAV[+-]\d{3}\.\d{4}E[+-]\d{2}"),
        (12, r"[+-]\d{3}\.\d{4}E[+-]\d{2}"),
        (15, r"NAV[+-]\d{3}\.\d{4}E[+-]\d{2}"),
        (21, r"000AV[+-]\d{3}\.\d{4}E[+-]\d{2}"),
        (22, r"[+-]\d{3}\.\d{4}E[+-]\d{2}"),
        (25, r"000AV[+-]\d{3}\.\d{4}E[+-]\d{2}"),
    ],
)
def test_every_ascii_format(fmt: int, pattern: str) -> None:
    _, emu = rig_and_emulator()
    send(emu, f"FMT {fmt}", "CN 1", "DV 1,0,1.5,1E-3", "CMM 1,2", "MM 1,1")
    reply = ask(emu, "XE")
    assert re.fullmatch(pattern, reply), reply
    assert float(reply[-13:] if fmt >= 11 else reply[-12:]) == pytest.approx(1.5, abs=1e-3)
    assert ask(emu, "*LRN? 31").endswith(f";FMT{fmt},0;MM1,1")


def test_overflow_status_in_fmt21_and_fmt11() -> None:
    _, emu = rig_and_emulator()
    send(emu, "FMT 21", "CN 1", "DV 1,0,1.5,1E-3")
    assert ask(emu, "TV 1,-5") == "001AV+199.9990E+99"  # 1.5 V on the fixed 0.5 V range
    send(emu, "FMT 11")
    assert ask(emu, "TV 1,-5") == "VAV+199.9990E+99"
    send(emu, "FMT 1")
    assert ask(emu, "TV 1,-5") == "VAV+199.999E+99"


# -------------------------------------------------------- other query families
def test_lop_tsq_pa_and_rmd() -> None:
    rig, emu = rig_and_emulator()
    assert ask(emu, "LOP?") == "LOP" + ",".join(["00"] * 10)
    send(emu, "CN 1,2", "DV 1,0,1,1E-3", "DI 2,0,-1E-9,2")
    assert ask(emu, "LOP?") == "LOP01,11," + ",".join(["00"] * 8)  # open circuit: a current source hits its voltage compliance
    send(emu, "TSR", "PA 1.5")
    assert ask(emu, "TSQ") == "NZT+001.500E+00"
    send(emu, "FMT 2")
    assert ask(emu, "TSQ") == "+001.500E+00"
    emu.write("PA 700")  # beyond 655.35 s
    assert ask(emu, "ERRX? 1") == "+120"
    send(emu, "CL 2", "FMT 1", "CMM 1,4", "MM 1,1")
    emu.write("XE")
    assert ask(emu, "NUB?").endswith("\r\n2")  # the XE line is still unread ahead of it
    emu.clear_output()
    emu.write("XE")
    first = ask(emu, "RMD? 1")
    lines = first.split("\r\n")
    assert len(lines) == 2 and lines[0].startswith("NAI") and lines[1].startswith("NAV")
    emu.write("XE")
    assert ask(emu, "RMD?").count(",") == 1  # both elements in one reply
    assert ask(emu, "NUB?") == "0"


def test_channel_mapping_self_test_and_diagnostics() -> None:
    rig, emu = rig_and_emulator()
    send(emu, "ACH 1,7", "CN 7", "DV 7,0,0.3,1E-3")
    assert rig.bench.source("b1500a.1").level == 0.3
    assert ask(emu, "*LRN? 0") == "CN1"
    send(emu, "ACH")
    emu.write("DV 7,0,0.3")
    assert ask(emu, "ERRX? 1") == "+126"
    assert ask(emu, "*TST?") == "0"
    assert ask(emu, "*LRN? 0") == "CL"  # self-test opens the outputs
    assert ask(emu, "*CAL? 1") == "0"
    assert ask(emu, "DIAG? 1") == "0"
    send(emu, "RCV", "RCV 1", "CA", "CM 0")
    emu.write("DIAG? 2")
    assert ask(emu, "ERRX? 1") == "+120"


def test_synchronous_source_rules() -> None:
    rig, emu = rig_and_emulator()
    send(emu, "CN 1,2", "FMT 1,2", "WV 1,2,0,0.1,1,3,1E-3", "WSV 2,0,0.2,2,1E-3", "CMM 2,2", "MM 2,2", "WM 1,2")
    data = ask(emu, "XE").split(",")
    assert [e[:3] for e in data[1::2]] == ["WBV", "WBV", "EBV"]
    assert [float(e[3:]) for e in data[1::2]] == pytest.approx([0.2, 0.6324555, 2.0], rel=1e-3)
    assert rig.bench.source("b1500a.2").level == 2.0  # WM post 2: the stop value
    send(emu, "WSV 1,0,0,1")  # the sweep's own channel: refused at XE
    emu.write("XE")
    assert ask(emu, "ERRX? 1") == "+120"


# ------------------------------------------------------- ISPP over TCP_NODELAY
def _ispp_over_tcp_nodelay() -> tuple[list[tuple[bool, int]], list[tuple[float, float, float]]]:
    """Host-loop ISPP on the B1500A through a SimRig server, TCP_NODELAY on every
    client socket, the bench clock of benchmarks/bench_ispp.py. Returns (reached,
    pulses) per target and (pulse level, start, end) of every pulse on the bench."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_ispp as B
    finally:
        sys.path.remove(str(BENCHMARKS))
    from labpcu.bench import Bench
    from labpcu.protocols.common import connect_component
    from labpcu.protocols.programming import IsppScheme, find_m1_range, program_conductance

    rig = SimRig.default(seed=B.SEED, site=B.SITE)
    server = rig.server().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench.from_file(B.tcp_bench_file(server.resources(), Path(tmp)), prober=lambda site: None)
            try:
                for driver in bench.drivers.values():
                    conn = driver.adapter.connection
                    sock = conn.visalib.sessions[conn.session].interface
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                bench.move_to(B.SITE)
                bench.clock = B.RemoteVirtualClock(bench.drivers["k2612a"])
                force, ground = connect_component(bench, B.DEVICE, "m1", B.B1500A)
                scheme = IsppScheme()
                rng = find_m1_range(force, bench.clock, scheme)
                tol = B.TOLERANCE * rng.g_range
                results = [program_conductance(force, ground, bench.clock, rng.at(f), tol, scheme, loop="host")
                           for f in B.FRACTIONS]
            finally:
                bench.close()
    finally:
        server.stop()
    # every DV on channel 1, with the simulated time it was applied
    dv = [(e.t, float(e.message.split(",")[2])) for e in rig["b1500a"].log
          if e.direction == "in" and e.message.startswith("DV 1,")]
    pulses = [(level, t, t_next) for (t, level), (t_next, _) in zip(dv, dv[1:])
              if abs(level) > scheme.v_read + 1e-9]
    return [(r.reached, r.pulses) for r in results], pulses


def test_host_loop_ispp_over_tcp_nodelay_reaches_every_target() -> None:
    from labpcu.protocols.programming import IsppScheme

    width = IsppScheme().width
    outcome, pulses = _ispp_over_tcp_nodelay()
    assert all(reached for reached, _ in outcome), outcome
    assert all(1 <= n <= 25 for _, n in outcome), outcome
    assert pulses and all(end - start >= width - 1e-9 for _, start, end in pulses), [
        p for p in pulses if p[2] - p[1] < width - 1e-9][:5]
    again, _ = _ispp_over_tcp_nodelay()
    assert again == outcome  # no dependence on socket timing
