"""Plain pyvisa (@py backend, TCPIP SOCKET) against the simulated bench served on TCP,
both in-process (SimRig.server) and as the `labpcu sim serve` command."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import pyvisa

from labpcu.sim.rig import SimRig


@pytest.fixture(scope="module")
def served():
    rig = SimRig.default(seed=0, site="Q1")
    server = rig.server().start()
    rm = pyvisa.ResourceManager("@py")
    res = server.resources()
    smu = rm.open_resource(res["k2612a"], read_termination="\n", write_termination="\n", timeout=5000)
    mtx = rm.open_resource(res["k3706a"], read_termination="\n", write_termination="\n", timeout=5000)
    pa = rm.open_resource(res["b1500a"], read_termination="\r\n", write_termination="\r\n", timeout=5000)
    yield rig, smu, mtx, pa
    for inst in (smu, mtx, pa):
        inst.close()
    rm.close()
    server.stop()


def test_identity_of_all_three_instruments(served):
    _, smu, mtx, pa = served
    assert "Model 2612A" in smu.query("*IDN?")
    assert "MODEL 3706A" in mtx.query("*IDN?")
    assert "B1500A" in pa.query("*IDN?")


def test_current_depends_on_a_closed_crosspoint(served):
    rig, smu, mtx, _ = served
    mtx.write('channel.open("allslots")')
    # smua (row 1) on S01.WL (pin 1), smub (row 2) on S01.CL1 (pin 3): diode D1
    smu.write("smua.source.func = smua.OUTPUT_DCVOLTS")
    smu.write("smua.source.limiti = 1e-2")
    smu.write("smua.source.levelv = 0.8")
    smu.write("smub.source.levelv = 0")
    smu.write("smua.source.output = smua.OUTPUT_ON")
    smu.write("smub.source.output = smub.OUTPUT_ON")
    open_i = float(smu.query("print(smua.measure.i())"))
    smu.write("smua.source.output = smua.OUTPUT_OFF")
    mtx.write('channel.close("1101,1203")')
    smu.write("smua.source.output = smua.OUTPUT_ON")
    closed_i = float(smu.query("print(smua.measure.i())"))
    smu.write("smua.source.output = smua.OUTPUT_OFF")
    smu.write("smub.source.output = smub.OUTPUT_OFF")
    mtx.write('channel.open("allslots")')
    assert abs(open_i) < 1e-10
    assert closed_i > 1e-6


def test_tsp_user_script_runs(served):
    _, smu, _, _ = served
    for line in ["loadscript squares", "local s = 0", "for k = 1, 10 do s = s + k * k end", "print(s)", "endscript"]:
        smu.write(line)
    assert float(smu.query("squares()")) == 385
    assert float(smu.query("squares.run()")) == 385


def test_b1500_staircase_sweep(served):
    rig, _, mtx, pa = served
    mtx.write('channel.open("allslots")')
    mtx.write('channel.close("1303,1404")')  # B1500 ch1 -> S01.CL1, ch2 -> S01.CL2: M1
    pa.write("FMT 1,1")
    pa.write("CN 1,2")
    pa.write("DV 2,0,0,1e-3")
    pa.write("WT 0,0.001")
    pa.write("WM 1")
    pa.write("WV 1,1,0,0.01,0.05,5,1e-3")
    pa.write("MM 2,1")
    pa.write("XE")
    elements = pa.read().split(",")
    pa.write("CL")
    assert len(elements) == 10  # 5 steps × (current + source value)
    currents = [float(e[3:]) for e in elements[0::2]]
    sources = [e for e in elements[1::2]]
    assert all(e.startswith("NAI") for e in elements[0::2])
    assert sources[-1].startswith("EAV") and all(s.startswith("WAV") for s in sources[:-1])
    g = rig.bench.wafer.device("S01").m1.conductance(rig.bench.clock.now())
    assert currents[-1] == pytest.approx(0.05 * g, rel=0.02)
    assert pa.query("ERRX?").startswith("+0")


def test_malformed_commands_land_in_the_error_queues(served):
    _, smu, mtx, pa = served
    smu.write("errorqueue.clear()")
    smu.write("smua.source.levelv = = 1")
    code, msg = smu.query("print(errorqueue.next())").split("\t")[:2]
    assert float(code) == -285 and "Syntax" in msg
    mtx.write("channel.close(")
    assert float(mtx.query("print(errorqueue.count)")) >= 1
    pa.write("XYZZY 1")
    assert pa.query("ERRX?").startswith("+100")
    assert "Model 2612A" in smu.query("*IDN?")  # everybody still answers


def test_labpcu_sim_serve_command_prints_resources_and_stops_on_ctrl_c():
    proc = subprocess.Popen(
        [sys.executable, "-m", "labpcu.cli", "sim", "serve", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines, resources = [], {}
        deadline = time.monotonic() + 60
        while len(resources) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.match(r"^(\S+)\s+(TCPIP::127\.0\.0\.1::\d+::SOCKET)$", line.strip())
            if m:
                resources[m.group(1)] = m.group(2)
        assert set(resources) == {"k2612a", "k3706a", "b1500a"}, lines
        rm = pyvisa.ResourceManager("@py")
        smu = rm.open_resource(resources["k2612a"], read_termination="\n", write_termination="\n", timeout=5000)
        assert "2612A" in smu.query("*IDN?")
        smu.close()
        rm.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
