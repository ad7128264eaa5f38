"""ISPP from the host's point of view: CPU per pulse-verify step, and a whole array.

(a) Host CPU time per pulse-verify step, goal <= 0.5 ms (the instrument itself needs
    about 40 ms per step: a 20 ms pulse plus the verify read). To leave the simulator
    out of the count, the simulated bench runs in another process (``labpcu sim
    serve``) and this process talks to it over TCP with pyvisa ``@py``, exactly as to
    LAN instruments; ``time.process_time()`` of this process is measured around
    :func:`labpcu.protocols.programming.program_conductance` (the protocol's code
    path), for the on-instrument script and for the host loop, and around whole
    ``ispp`` runs through the Runner (HDF5 recording included).

    Over TCP the bench clock cannot be the server's virtual clock, so this bench uses a
    clock whose ``sleep`` asks the 2612A ``delay(s) print(1)`` and waits for the reply
    (the server's virtual time moves, the pulse takes effect). That costs one extra
    round trip per host-loop pulse, which a wall clock's sleep would not: the host-loop
    figure is an upper bound.

    The sleep must wait for the reply. Each instrument has its own TCP connection and
    the server serves each in its own thread, so nothing orders a message on one
    connection against a message on another. A fire-and-forget ``delay()`` to the 2612A
    could be applied after the B1500A had already received the next command (the
    verify read's ``DV``): the pulse then lasted no simulated time and the delay was
    spent at the read level. Which message won depended on socket timing: with
    TCP_NODELAY the B1500A host loop reached 2 of 10 targets in 816 pulses, with
    Nagle's delays 10 of 10 but in a varying number of pulses (a timing dependence
    either way). A wall clock's sleep has no such race: the pulse is on the B1500A
    (its ``DV`` was confirmed by ``ERRX?``) for the whole sleep.

(b) Wall time to program all 81 array cells (A1–A9) to 4 levels each on the
    in-process simulated bench with ``weight_statistics`` (range finding, ISPP on the
    instrument, a settle read per level), with the pulse count.

    python benchmarks/bench_ispp.py
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _table import report

from labpcu.bench import Bench
from labpcu.benchfile import default_sim_bench_path
from labpcu.protocols.common import connect_component
from labpcu.protocols.programming import IsppScheme, find_m1_range, program_conductance
from labpcu.runner import Runner

SEED = 0
SITE = "Q1"  # singles S01-S04: the prober of the TCP bench cannot move the server's probe
DEVICE = "S03"
FRACTIONS = (0.25, 0.75, 0.5, 0.15, 0.85, 0.4, 0.6, 0.3, 0.7, 0.5)  # both directions
TOLERANCE = 0.05  # of the range: the weight_statistics default
K2612A = ("k2612a.smua", "k2612a.smub")
B1500A = ("b1500a.1", "b1500a.2")  # no on-instrument ISPP: the host loop is its only path
STEP_GOAL_MS = 0.5
INSTRUMENT_STEP_MS = 40.0


class RemoteVirtualClock:
    """The bench clock of a TCP-served simulated bench: sleeping advances the
    server's virtual time with a TSP ``delay()`` on the 2612A, and returns only once
    the server has done it (the reply to ``print(1)`` comes after the delay), so the
    next command to any instrument comes after the sleep, as with a wall clock."""

    def __init__(self, k2612a) -> None:
        self._k = k2612a
        self._t = 0.0

    def now(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        reply = self._k.ask(f"delay({seconds:.9g}) print(1)")
        try:
            ok = float(reply) == 1.0
        except ValueError:
            ok = False
        if not ok:
            raise RuntimeError(f"k2612a: unexpected reply {reply!r} to a clock delay")
        self._t += seconds


def serve(seed: int, site: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """``labpcu sim serve`` in a subprocess; returns it and the VISA resources."""
    proc = subprocess.Popen([sys.executable, "-m", "labpcu.cli", "sim", "serve", "--seed", str(seed), "--site", site],
                            stdout=subprocess.PIPE, text=True)
    resources: dict[str, str] = {}
    assert proc.stdout is not None
    while len(resources) < 3:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("labpcu sim serve ended before listing its instruments")
        m = re.match(r"^(\w+)\s+(TCPIP::\S+::SOCKET)$", line.strip())
        if m:
            resources[m.group(1)] = m.group(2)
    return proc, resources


def tcp_bench_file(resources: dict[str, str], folder: Path) -> Path:
    """The shipped simulated bench file with TCP addresses and pyvisa-py."""
    text = default_sim_bench_path().read_text()
    for name, resource in resources.items():
        text = re.sub(rf'(\[instruments\.{name}\]\nmodel = "[^"]+"[^\n]*\naddress = )"sim"',
                      rf'\1"{resource}"\nvisa_library = "@py"', text)
    path = folder / "tcp.toml"
    path.write_text(text)
    return path


def no_delay(bench: Bench) -> None:
    """TCP_NODELAY on every instrument socket. pyvisa-py leaves Nagle's algorithm on
    (and refuses VI_ATTR_TCPIP_NODELAY), so a small write followed at once by a query
    waits for the peer's delayed ACK (~40 ms), and its select loop burns CPU meanwhile."""
    for driver in bench.drivers.values():
        conn = driver.adapter.connection
        conn.visalib.sessions[conn.session].interface.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def cpu_per_step(bench: Bench, loop: str, terminals: tuple[str, str], transport: str) -> dict:
    """process_time per pulse-verify step around program_conductance."""
    force, ground = connect_component(bench, DEVICE, "m1", terminals)
    scheme = IsppScheme()
    rng = find_m1_range(force, bench.clock, scheme)
    tol = TOLERANCE * rng.g_range
    program_conductance(force, ground, bench.clock, rng.at(0.5), tol, scheme, loop=loop)  # warm up (script upload)
    cpu = wall = 0.0
    steps = reached = 0
    for frac in FRACTIONS:
        c, w = time.process_time(), time.perf_counter()
        res = program_conductance(force, ground, bench.clock, rng.at(frac), tol, scheme, loop=loop)
        cpu += time.process_time() - c
        wall += time.perf_counter() - w
        steps += max(res.pulses, 1)
        reached += res.reached
    bench.safe_state()
    return {"case": f"function, {loop} loop, {MODEL[terminals]}", "transport": transport,
            "reached": f"{reached}/{len(FRACTIONS)}", "steps": steps,
            "cpu_ms_per_step": 1e3 * cpu / steps, "wall_ms_per_step": 1e3 * wall / steps}


def cpu_per_step_runner(bench: Bench, loop: str, terminals: tuple[str, str], transport: str, folder: Path) -> dict:
    """The same through Runner.run("ispp"): validation, HDF5 recording, analysis."""
    runner = Runner(bench, folder / f"ispp-{loop}-{terminals[0]}.h5", handle_sigint=False)
    params = {"targets": tuple(2e-6 + f * 105e-6 for f in FRACTIONS), "tolerance": 5e-6, "loop": loop,
              "terminals": terminals}
    runner.run("ispp", params, [DEVICE])  # warm up: imports, file creation
    c, w = time.process_time(), time.perf_counter()
    out = runner.run("ispp", params, [DEVICE])
    cpu, wall = time.process_time() - c, time.perf_counter() - w
    steps = int(np.maximum(out.results["per_attempt"]["pulses"], 1).sum())
    return {"case": f"Runner ispp, {loop} loop, {MODEL[terminals]}", "transport": transport,
            "reached": f"{out.results['reached']}/{out.results['attempts']}", "steps": steps,
            "cpu_ms_per_step": 1e3 * cpu / steps, "wall_ms_per_step": 1e3 * wall / steps}


PATHS = (("instrument", K2612A), ("host", K2612A), ("host", B1500A))
MODEL = {K2612A: "2612A", B1500A: "B1500A"}


def tcp_rows() -> list[dict]:
    proc, resources = serve(SEED, SITE)
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for transport in ("default (Nagle)", "TCP_NODELAY"):
                bench = Bench.from_file(tcp_bench_file(resources, folder), prober=lambda site: None)
                try:
                    if transport == "TCP_NODELAY":
                        no_delay(bench)
                    bench.move_to(SITE)  # the server's probe is already there
                    bench.clock = RemoteVirtualClock(bench.drivers["k2612a"])
                    rows += [cpu_per_step(bench, loop, terms, transport) for loop, terms in PATHS]
                    if transport == "TCP_NODELAY":
                        rows += [cpu_per_step_runner(bench, loop, terms, transport, folder) for loop, terms in PATHS]
                finally:
                    bench.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for r in rows:
        r["cpu_share_of_step"] = f"{r['cpu_ms_per_step'] / INSTRUMENT_STEP_MS:.1%}"
        r["verdict"] = "meets goal" if r["cpu_ms_per_step"] <= STEP_GOAL_MS else "over goal"
    return rows


def array_row() -> dict:
    """Wall time for 81 cells x 4 levels with weight_statistics, in process."""
    cells = [f"A{a}-R{r}C{c}" for a in range(1, 10) for r in (1, 2, 3) for c in (1, 2, 3)]
    with tempfile.TemporaryDirectory() as tmp, Bench.from_file(seed=SEED) as bench:
        runner = Runner(bench, Path(tmp) / "array.h5", handle_sigint=False)
        t = time.perf_counter()
        out = runner.run("weight_statistics", {"levels": 4}, cells)
        wall = time.perf_counter() - t
        data = runner.store.read(out.run_id)
        bench_time = bench.clock.now()
    res = out.results
    pulses = int(data["pulses"].sum())
    return {"case": "81 cells x 4 levels, weight_statistics", "attempts": res["attempts"],
            "reached": int(round(res["ispp_success_rate"] * res["attempts"])), "pulses": pulses,
            "wall_s": wall, "wall_ms_per_pulse": 1e3 * wall / pulses, "bench_time_s": bench_time,
            "sigma_rel_range": res["sigma_rel_range"], "status": out.status}


def main() -> None:
    rows = tcp_rows()
    report(f"ISPP host CPU per pulse-verify step, goal <= {STEP_GOAL_MS} ms (the instrument needs ~{INSTRUMENT_STEP_MS:g} ms); "
           "simulated bench served over TCP in another process, pyvisa @py", rows, "ispp_steps.json")
    report("ISPP: all 81 array cells to 4 levels (in-process simulated bench)", [array_row()], "ispp_array.json")


if __name__ == "__main__":
    main()
