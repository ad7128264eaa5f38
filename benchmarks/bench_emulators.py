"""Emulator throughput (commands per second) in process and over TCP, and the wall
time of a 1,000-second retention sequence on the simulated bench.

Baselines measured in the same run:
* throughput: executing the same Lua chunk in a bare lupa runtime (the floor any
  Lua-based TSP emulator pays), and, for TCP, the in-process figure;
* retention: the 1,000 s of bench time the sequence represents;
* one SMU reading as the operator protocols take it (level with its compliance, then
  current, voltage and compliance) through the 2612A driver and emulator: the old
  message sequence (function, limit and level as three writes with three error
  checks, two queries to read; the status model refreshed after every message)
  against the present one, in the same run.
Goal: >= 20,000 commands/s in process.

    python benchmarks/bench_emulators.py
"""

from __future__ import annotations

import time

from collections.abc import Callable
from contextlib import ExitStack
from unittest import mock

import lupa.lua54 as lupa
import pyvisa

from _table import report
from labpcu.instruments.keithley2600 import Keithley2600, SMUChannel
from labpcu.sim.rig import SimRig
from labpcu.sim.tsp.k2600 import StatusModel

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


N_READINGS = 400


def _old_reading(ch: SMUChannel, volts: float, amps: float) -> None:
    """The sequence before: three settings, each with its error check, two queries."""
    ch.source_function = "voltage"
    ch.limiti = amps
    ch.levelv = volts
    ch.measure_iv()
    ch.in_compliance  # noqa: B018 - a query


def _new_reading(ch: SMUChannel, volts: float, amps: float) -> None:
    ch.source_voltage(volts, amps)
    ch.measure_iv_compliance()


def smu_readings(reading: Callable[[SMUChannel, float, float], None], refresh_always: bool) -> tuple[float, float]:
    """(wall µs, messages) per reading of M1 on S03 between smua and smub at 10-50 mV."""
    rig = SimRig.default(seed=0, site="Q1")
    rig.bench.close_relays([(1, 1, 11), (1, 2, 12)])
    k = Keithley2600(rig.adapter("k2612a"), name="k2612a")
    k.smub.source_voltage(0.0, 1e-3)
    k.smub.output = True
    k.smua.source_voltage(0.01, 1e-3)
    k.smua.output = True
    emu = rig["k2612a"]
    with ExitStack() as stack:
        if refresh_always:  # the status model as before: every register set after every message
            stack.enter_context(mock.patch.object(StatusModel, "_inputs", lambda self: object()))
        for j in range(50):  # warm up: chunk caches, first solves
            reading(k.smua, 0.02, 1e-3)
        n0 = len(emu.log)
        t = time.perf_counter()
        for j in range(N_READINGS):
            reading(k.smua, 0.01 + 0.0001 * (j % 400), 1e-3)
        wall = time.perf_counter() - t
    messages = sum(1 for e in list(emu.log)[n0:] if e.direction == "in")
    return wall / N_READINGS * 1e6, messages / N_READINGS


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

    cases = (("before: 3 checked writes + 2 queries, status refreshed always", _old_reading, True),
             ("status model refreshed only on change", _old_reading, False),
             ("now: 1 chunk with its check + 1 query", _new_reading, False))
    best = {case: (float("inf"), 0.0) for case, _, _ in cases}
    for _ in range(3):  # interleaved, best of three: a busy machine slows all cases alike
        for case, reading, always in cases:
            best[case] = min(best[case], smu_readings(reading, always))
    rows = [{"case": case, "messages_per_reading": msgs, "wall_us_per_reading": us}
            for case, (us, msgs) in best.items()]
    base = rows[0]["wall_us_per_reading"]
    for row in rows:
        row["speed-up"] = base / row["wall_us_per_reading"]
    report(f"One SMU reading through the 2612A driver and emulator ({N_READINGS} readings, same run)",
           rows, "smu_reading.json")

    wall = retention_wall_time(SimRig.default(seed=0, site="Q1"))
    report("1,000 s retention sequence (100 reads at +0.1 V via 2612A TSP)",
           [{"case": "retention sequence", "bench_time_s": 1000.0, "wall_time_s": wall,
             "speed-up vs real time": 1000.0 / wall, "goal": "wall << 1 s", "verdict": "pass" if wall < 1.0 else "FAIL"}],
           "retention.json")


if __name__ == "__main__":
    main()
