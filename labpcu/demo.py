"""``labpcu demo``: a characterization tour of the simulated wafer, no hardware needed.

It opens the shipped simulated bench file as any bench would (:class:`labpcu.bench.Bench`)
and measures through the role interfaces and drivers, so the instruments receive the
very messages a real bench would. It checks the single-device figures of pcu.md:

* diode D1: a −1 V … +1 V sweep on a B1500A SMU, rectification at ±1 V, Shockley fit;
* M2: set and reset with the 2612A, on/off ratio at +0.1 V, and 1,000 s of +0.1 V reads
  timed by the bench clock;
* M1: Incremental Step Pulse with Verify run on the instrument (±0.2 V start, 0.1 V
  steps, 20 ms pulses, +0.01 V reads) to three levels, then 600 s of reads per level.

The protocols will replace this tour with the full characterization (issue "Analog
operators …").
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from labpcu.bench import Bench
from labpcu.data.fits import fit_shockley

A, B = "k2612a.smua", "k2612a.smub"


@dataclass
class Figure:
    """One figure of merit: what pcu.md asks for and what the tour measured."""

    name: str
    band: str
    measured: float
    unit: str
    passed: bool


def _grounded(bench: Bench, terminal: str) -> None:
    """Hold a terminal at 0 V, able to sink what the device type may carry."""
    smu = bench.smu(terminal)
    smu.source_voltage(0.0, smu.limits[1])
    smu.output_on()


def _read(bench: Bench, volts: float, compliance: float) -> float:
    smu = bench.smu(A)
    smu.source_voltage(volts, compliance)
    if not smu.output:
        smu.output_on()
    return smu.measure().current


def _reads_over(bench: Bench, seconds: float, every: float) -> np.ndarray:
    """Read smua every ``every`` s of bench time for ``seconds``."""
    out = []
    for _ in range(int(round(seconds / every))):
        bench.clock.sleep(every)
        out.append(bench.smu(A).measure().current)
    return np.array(out)


def diode_tour(bench: Bench) -> list[Figure]:
    bench.move_to("S01")
    bench.connect({"b1500a.1": "S01.WL", "b1500a.2": "S01.CL1"})
    _grounded(bench, "b1500a.2")
    sweep = bench.smu("b1500a.1").sweep_voltage(np.linspace(-1.0, 1.0, 41), 1e-2)
    v, i = sweep.source, sweep.current
    i_fwd, i_rev = i[-1], abs(i[0])
    forward = (v >= 0.1) & (v <= 1.0)
    fit = fit_shockley(v[forward], np.abs(i[forward]))
    n, r2 = fit.n, fit.r2
    return [
        Figure("diode rectification ratio at ±1 V", "> 1e3", i_fwd / i_rev, "", i_fwd / i_rev > 1e3),
        Figure(f"diode Shockley fit R² (n = {n:.2f})", "> 0.99", r2, "", r2 > 0.99),
    ]


def m2_tour(bench: Bench) -> list[Figure]:
    bench.move_to("S02")
    bench.connect({A: "S02.CL2", B: "S02.BL"})
    _grounded(bench, B)
    _read(bench, 1.0, 1e-3)  # set, 1 mA compliance
    i_on = _read(bench, 0.1, 1e-3)
    _read(bench, -1.0, 0.02)  # reset
    i_off = abs(_read(bench, 0.1, 1e-3))
    _read(bench, 1.0, 1e-3)  # set again, then 1,000 s of reads
    _read(bench, 0.1, 1e-3)
    reads = _reads_over(bench, 1000.0, 10.0)
    change = abs(reads[-1] / reads[0] - 1)
    return [
        Figure("M2 LRS/HRS current ratio at +0.1 V", "> 1e6", i_on / i_off, "", i_on / i_off > 1e6),
        Figure("M2 ratio after 1,000 s of +0.1 V reads", "> 1e6", reads[-1] / i_off, "",
               reads[-1] / i_off > 1e6 and change < 0.01),
    ]


def m1_tour(bench: Bench) -> list[Figure]:
    bench.move_to("S03")
    bench.connect({A: "S03.CL1", B: "S03.CL2"})
    # the range is known here only because the wafer is simulated; a real bench
    # would take it from a range-finding sweep
    m1 = bench.sim.bench.wafer.device("S03").m1.p
    tol = 0.02 * m1.g_range
    k2612a = bench.drivers["k2612a"]
    reached, drifts, pulses = 0, [], []
    for frac in (0.25, 0.5, 0.75):
        target = m1.g_min + frac * m1.g_range
        result = k2612a.program_and_verify(target, tol, channel="a", ground="b")
        reached += result.reached
        pulses.append(result.pulses)
        _grounded(bench, B)
        _read(bench, 0.01, 1e-3)
        reads = _reads_over(bench, 600.0, 10.0)
        drifts.append(abs(reads[-1] / (result.conductance * 0.01) - 1))
    return [
        Figure(f"M1 ISPP targets reached (pulses {', '.join(str(p) for p in pulses)})", "3 of 3", reached, "", reached == 3),
        Figure("M1 worst drift over 600 s at +0.01 V", "< 2 %", 100 * max(drifts), "%", max(drifts) < 0.02),
    ]


def run_demo(seed: int = 0, out: str | Path | None = None, console: Console | None = None) -> int:
    """Run the tour; print the figures; write ``summary.json``. Returns the exit code."""
    console = console or Console()
    folder = Path(out) if out else Path(f"labpcu-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    figures: list[Figure] = []
    steps = [("diode D1 I–V sweep (B1500A)", diode_tour),
             ("M2 switching and 1,000 s retention (2612A)", m2_tour),
             ("M1 ISPP on the instrument and 600 s retention (2612A)", m1_tour)]
    with Bench.from_file(seed=seed) as bench:
        identities = {name: inst["identity"] for name, inst in bench.snapshot()["instruments"].items()}
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("simulated bench", total=len(steps))
            for label, step in steps:
                progress.update(task, description=label)
                with bench.guard():
                    figures += step(bench)
                progress.advance(task)
        bench_time = bench.clock.now()
    wall = time.perf_counter() - wall

    table = Table(title=f"labpcu demo — simulated wafer, seed {seed}")
    for col in ("figure", "band (pcu.md)", "measured", "result"):
        table.add_column(col)
    for f in figures:
        table.add_row(f.name, f.band, f"{f.measured:.4g} {f.unit}".strip(), "[green]pass" if f.passed else "[red]FAIL")
    console.print(table)
    console.print(f"{bench_time:,.0f} s of bench time in {wall:.2f} s of wall time; instruments: "
                  + "; ".join(identities.values()))
    summary = {"seed": seed, "bench_time_s": bench_time, "wall_time_s": wall,
               "instruments": identities, "figures": [asdict(f) for f in figures]}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    console.print(f"wrote {folder / 'summary.json'}")
    return 0 if all(f.passed for f in figures) else 1
