"""Program-and-verify (ISPP) per step: the TSP script on the instrument against the
same loop run from the host, both on the in-process 2612A emulator.

Per pulse-verify step it reports host wall time (in process, so the emulator's own
work is included equally in both), messages sent and round trips (queries that wait
for a reply). On a real instrument every round trip costs a bus latency on top; the
script's advantage is exactly the round trips it saves.

    python benchmarks/bench_program_verify.py
"""

from __future__ import annotations

import time

from _table import report
from labpcu.instruments.keithley2600 import Keithley2600
from labpcu.sim.rig import SimRig

TARGETS = (0.25, 0.5, 0.75, 0.4, 0.6)


def setup():
    rig = SimRig.default(seed=0, site="Q1")
    rig.bench.close_relays([(1, 1, 11), (1, 2, 12)])  # smua -> S03.CL1, smub -> S03.CL2
    k = Keithley2600(rig.adapter("k2612a"), "k2612a", model="2612A")
    p = rig.bench.wafer.device("S03").m1.p
    return rig, k, p


def host_loop(k: Keithley2600, target: float, tol: float, max_pulses: int = 100) -> int:
    """The same ISPP as the script, decided on the host: one query per verify read."""
    a, b = k.smua, k.smub
    b.source_voltage(0.0, 1e-3)
    b.output = True
    a.source_voltage(0.01, 1e-3)
    a.output = True
    amp, direction, n = 0.2, 0, 0
    g = a.current / 0.01
    while abs(g - target) > tol and n < max_pulses:
        d = 1 if g < target else -1
        if d != direction:
            amp, direction = 0.2, d
        k.write(f"smua.source.levelv = {d * amp:.4g}")
        k.write("delay(0.02)")
        k.write("smua.source.levelv = 0.01")
        amp = min(amp + 0.1, 1.0)
        n += 1
        g = a.current / 0.01
    a.output = False
    b.output = False
    return n


def measure(kind: str) -> dict:
    rig, k, p = setup()
    emu = rig["k2612a"]
    tol = 0.02 * p.g_range
    if kind == "script":
        k.program_and_verify(p.g_min + 0.5 * p.g_range, tol)  # upload once, outside the timing
    emu.log.clear()
    steps, t = 0, time.perf_counter()
    for frac in TARGETS:
        target = p.g_min + frac * p.g_range
        if kind == "script":
            steps += max(k.program_and_verify(target, tol).pulses, 1)
        else:
            steps += max(host_loop(k, target, tol), 1)
    wall = time.perf_counter() - t
    msgs = emu.messages_in()
    trips = sum(1 for m in msgs if m.startswith("print(") or m.endswith("?") or "printbuffer" in m)
    return {"case": f"ISPP {kind}", "steps": steps, "host_ms_per_step": 1e3 * wall / steps,
            "messages_per_step": len(msgs) / steps, "round_trips_per_step": trips / steps}


def main() -> None:
    rows = [measure("script"), measure("host loop")]
    base = rows[1]["round_trips_per_step"]
    for r in rows:
        r["round_trips vs host loop"] = r["round_trips_per_step"] / base
    report("Program-and-verify per pulse-verify step (in-process 2612A emulator)", rows, "program_verify.json")


if __name__ == "__main__":
    main()
