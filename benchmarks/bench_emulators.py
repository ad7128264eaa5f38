"""Emulator throughput (commands per second) in process and over TCP, and the wall
time of a 1,000-second retention sequence on the simulated bench.

Baselines measured in the same run:
* throughput: executing the same Lua chunk in a bare lupa runtime (the floor any
  Lua-based TSP emulator pays), and, for TCP, the in-process figure;
* retention: the 1,000 s of bench time the sequence represents.
Goal: >= 20,000 commands/s in process.

    python benchmarks/bench_emulators.py
"""

from __future__ import annotations

import time

import lupa.lua54 as lupa
import pyvisa

from _table import report
from labpcu.sim.rig import SimRig

N_IN_PROCESS = 20_000
N_TCP = 2_000

CASES = {
    "k2612a": ("smua.source.levelv = 0.1", "print(smua.source.levelv)"),
    "k3706a": ("channel.connectrule = 1", "print(channel.connectrule)"),
    "b1500a": ("FMT 1,0", "*OPC?"),
}


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def in_process(rig: SimRig, name: str, command: str, query: str) -> tuple[float, float]:
    emu = rig[name]
    emu.log_enabled = False

    def ask():
        emu.write(query)
        emu.take_output()

    return rate(lambda: emu.write(command), N_IN_PROCESS), rate(ask, N_IN_PROCESS // 4)


def over_tcp(resource: str, term: str, command: str, query: str) -> tuple[float, float]:
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(resource, read_termination=term, write_termination=term, timeout=5000)
    try:
        t = time.perf_counter()
        for _ in range(N_TCP):
            inst.write(command)
        inst.query(query)  # every write has been handled once this answers
        w = N_TCP / (time.perf_counter() - t)
        q = rate(lambda: inst.query(query), N_TCP // 4)
    finally:
        inst.close()
        rm.close()
    return w, q


def bare_lua_rate() -> float:
    rt = lupa.LuaRuntime(register_eval=False)
    t = rt.eval("{source = {levelv = 0}}")
    rt.globals().smua = t
    fn = rt.eval("function() smua.source.levelv = 0.1 end")
    return rate(fn, N_IN_PROCESS)


def retention_wall_time(rig: SimRig) -> float:
    """100 reads at +0.1 V, one every 10 s, on S02's M2 through the 2612A and 3706A."""
    smu, mtx = rig.adapter("k2612a"), rig.adapter("k3706a")
    mtx.write('channel.exclusiveclose("1108,1206")')
    for line in ("smua.source.limiti = 1e-3", "smua.source.levelv = 1", "smua.source.output = 1",
                 "smub.source.output = 1", "smua.source.levelv = 0.1", "smua.nvbuffer1.clear()",
                 "smua.nvbuffer1.appendmode = 1"):
        smu.write(line)
    t0, wall = rig.bench.clock.now(), time.perf_counter()
    for _ in range(100):
        smu.write("delay(10)")
        smu.write("smua.measure.i(smua.nvbuffer1)")
    smu.write("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)")
    n = len(smu.read().split(","))
    wall = time.perf_counter() - wall
    assert n == 100 and rig.bench.clock.now() - t0 >= 1000.0
    return wall


def main() -> None:
    rig = SimRig.default(seed=0, site="Q1")
    server = rig.server().start()
    res = server.resources()
    rows = []
    try:
        lua_floor = bare_lua_rate()
        rows.append({"case": "baseline: bare lupa chunk call", "transport": "-", "writes_per_s": lua_floor, "queries_per_s": float("nan"), "goal": "-", "verdict": "-"})
        for name, (cmd, query) in CASES.items():
            w, q = in_process(rig, name, cmd, query)
            rows.append({"case": f"{name}: {cmd}", "transport": "in process", "writes_per_s": w, "queries_per_s": q,
                         "goal": ">= 20k/s", "verdict": "pass" if w >= 20_000 else "FAIL"})
        for name, (cmd, query) in CASES.items():
            term = "\r\n" if name == "b1500a" else "\n"
            w, q = over_tcp(res[name], term, cmd, query)
            rows.append({"case": f"{name}: {cmd}", "transport": "TCP (pyvisa @py)", "writes_per_s": w, "queries_per_s": q, "goal": "-", "verdict": "-"})
    finally:
        server.stop()
    report("Emulator throughput (commands per second)", rows, "emulators.json")

    wall = retention_wall_time(SimRig.default(seed=0, site="Q1"))
    report("1,000 s retention sequence (100 reads at +0.1 V via 2612A TSP)",
           [{"case": "retention sequence", "bench_time_s": 1000.0, "wall_time_s": wall,
             "speed-up vs real time": 1000.0 / wall, "goal": "wall << 1 s", "verdict": "pass" if wall < 1.0 else "FAIL"}],
           "retention.json")


if __name__ == "__main__":
    main()
