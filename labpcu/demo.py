"""``labpcu demo``: a characterization tour of the simulated wafer, no hardware needed.

It drives the three emulated instruments with the very messages a real bench would
receive (TSP to the 2612A and 3706A, FLEX to the B1500A), through the in-process
pymeasure adapter, and checks the single-device figures of pcu.md:

* diode D1: two-way B1500A staircase sweep, rectification at ±1 V, Shockley fit;
* M2: set and reset with the 2612A, on/off ratio at +0.1 V, and 1,000 s of +0.1 V reads
  run as a TSP script on the instrument;
* M1: Incremental Step Pulse with Verify run on the instrument (±0.2 V start, 0.1 V
  steps, 20 ms pulses, +0.01 V reads) to three levels, then 600 s of reads per level.

Until the driver layer lands, the messages are written here directly; the protocols
will replace this tour with the full characterization (issue "Analog operators …").
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pymeasure.instruments import Instrument
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from scipy.optimize import curve_fit

from labpcu.sim.diode import DiodeParams, diode_current
from labpcu.sim.rig import SimRig

SITE = "Q1"  # S01 (diode), S02 (M2), S03 (M1) sit on pins 1-4, 5-8, 9-12
ISPP_SCRIPT = """loadscript ispp
function ispp_program(target, tol, maxpulses)
  local amp, dir, n = 0.2, 0, 0
  smua.source.levelv = 0.01
  local g = smua.measure.i() / 0.01
  while math.abs(g - target) > tol and n < maxpulses do
    local d = 1
    if g > target then d = -1 end
    if d ~= dir then amp = 0.2; dir = d end
    smua.source.levelv = d * amp
    delay(0.02)
    smua.source.levelv = 0.01
    amp = math.min(amp + 0.1, 1.5)
    n = n + 1
    g = smua.measure.i() / 0.01
  end
  print(g, n)
end
endscript"""


@dataclass
class Figure:
    """One figure of merit: what pcu.md asks for and what the tour measured."""

    name: str
    band: str
    measured: float
    unit: str
    passed: bool


def _instrument(rig: SimRig, name: str) -> Instrument:
    return Instrument(rig.adapter(name), f"{name} (simulated)", includeSCPI=False)


def _tsp(inst: Instrument, *lines: str) -> None:
    for line in lines:
        inst.write(line)


def _route(mtx: Instrument, smu: Instrument, crosspoints: str) -> None:
    """Outputs off, then break before make to the new crosspoints."""
    _tsp(smu, "smua.source.output = 0", "smub.source.output = 0")
    mtx.write(f'channel.exclusiveclose("{crosspoints}")')


def _smu_on(smu: Instrument, limit_a: float) -> None:
    _tsp(
        smu,
        "smua.source.func = smua.OUTPUT_DCVOLTS", "smub.source.func = smub.OUTPUT_DCVOLTS",
        f"smua.source.limiti = {limit_a}", "smub.source.limiti = 0.1",
        "smua.source.levelv = 0", "smub.source.levelv = 0",
        "smua.measure.nplc = 1",
        "smua.source.output = 1", "smub.source.output = 1",
    )


def _read(smu: Instrument, volts: float) -> float:
    smu.write(f"smua.source.levelv = {volts}")
    return float(smu.ask("print(smua.measure.i())"))


def _check_errors(smu: Instrument, mtx: Instrument, pa: Instrument) -> None:
    for inst in (smu, mtx):
        n = float(inst.ask("print(errorqueue.count)"))
        if n:
            raise RuntimeError(f"{inst.name}: {inst.ask('print(errorqueue.next())')}")
    err = pa.ask("ERRX?")
    if not err.startswith(("+0,", "0,")):
        raise RuntimeError(f"{pa.name}: {err}")


def _shockley_fit(v: np.ndarray, i: np.ndarray) -> tuple[float, float]:
    """Fit log10 I of the forward branch; return (ideality n, R² of log10 I)."""

    def model(x, log_i0, n, rs):
        return np.log10(diode_current(x, DiodeParams(10.0**log_i0, n, rs, 1e30)))

    y = np.log10(i)
    popt, _ = curve_fit(model, v, y, p0=(-12.0, 1.5, 100.0), maxfev=20000)
    resid = y - model(v, *popt)
    return float(popt[1]), float(1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2))


def diode_tour(rig: SimRig, smu, mtx, pa) -> list[Figure]:
    _route(mtx, smu, "1301,1403")  # B1500 ch1 -> S01.WL, ch2 -> S01.CL1
    for cmd in ("FMT 1,1", "CN 1,2", "DV 2,0,0,1e-2", "WT 0,0.001", "WM 1",
                "WV 1,3,0,-1,1,41,1e-2", "MM 2,1", "XE"):
        pa.write(cmd)
    elements = pa.read().split(",")
    pa.write("CL")
    i = np.array([float(e[3:]) for e in elements[0::2]])
    v = np.array([float(e[3:]) for e in elements[1::2]])
    i_fwd = i[np.isclose(v, 1.0)].mean()
    i_rev = abs(i[np.isclose(v, -1.0)].mean())
    forward = (v >= 0.1) & (v <= 1.0)
    n, r2 = _shockley_fit(v[forward], np.abs(i[forward]))
    return [
        Figure("diode rectification ratio at ±1 V", "> 1e3", i_fwd / i_rev, "", i_fwd / i_rev > 1e3),
        Figure(f"diode Shockley fit R² (n = {n:.2f})", "> 0.99", r2, "", r2 > 0.99),
    ]


def m2_tour(rig: SimRig, smu, mtx, pa) -> list[Figure]:
    _route(mtx, smu, "1108,1206")  # smua -> S02.CL2, smub -> S02.BL
    _smu_on(smu, 1e-3)
    _read(smu, 1.0)  # set, 1 mA compliance
    i_on = _read(smu, 0.1)
    smu.write("smua.source.limiti = 0.02")
    _read(smu, -1.0)  # reset
    i_off = abs(_read(smu, 0.1))
    smu.write("smua.source.limiti = 1e-3")
    _read(smu, 1.0)  # set again, then 1,000 s of reads on the instrument
    _read(smu, 0.1)
    _tsp(smu, "smua.nvbuffer1.clear()", "smua.nvbuffer1.appendmode = 1", "for k = 1, 100 do delay(10) smua.measure.i(smua.nvbuffer1) end")
    reads = np.array([float(x) for x in smu.ask("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)").split(",")])
    _read(smu, 0.0)
    change = abs(reads[-1] / reads[0] - 1)
    return [
        Figure("M2 LRS/HRS current ratio at +0.1 V", "> 1e6", i_on / i_off, "", i_on / i_off > 1e6),
        Figure("M2 ratio after 1,000 s of +0.1 V reads", "> 1e6", reads[-1] / i_off, "", reads[-1] / i_off > 1e6 and change < 0.01),
    ]


def m1_tour(rig: SimRig, smu, mtx, pa) -> list[Figure]:
    _route(mtx, smu, "1111,1212")  # smua -> S03.CL1, smub -> S03.CL2
    _smu_on(smu, 1e-3)
    for line in ISPP_SCRIPT.splitlines():
        smu.write(line)
    smu.write("ispp()")  # defines ispp_program
    m1 = rig.bench.wafer.device("S03").m1.p
    tol = 0.02 * m1.g_range
    reached, drifts, pulses = 0, [], []
    for frac in (0.25, 0.5, 0.75):
        target = m1.g_min + frac * m1.g_range
        g, n = (float(x) for x in smu.ask(f"ispp_program({target}, {tol}, 100)").split("\t"))
        reached += abs(g - target) <= tol
        pulses.append(n)
        smu.write("smua.source.levelv = 0.01")
        _tsp(smu, "smua.nvbuffer1.clear()", "smua.nvbuffer1.appendmode = 1", "for k = 1, 60 do delay(10) smua.measure.i(smua.nvbuffer1) end")
        reads = [float(x) for x in smu.ask("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)").split(",")]
        drifts.append(abs(reads[-1] / (g * 0.01) - 1))
    smu.write("smua.source.levelv = 0")
    return [
        Figure(f"M1 ISPP targets reached (pulses {', '.join(f'{p:.0f}' for p in pulses)})", "3 of 3", reached, "", reached == 3),
        Figure("M1 worst drift over 600 s at +0.01 V", "< 2 %", 100 * max(drifts), "%", max(drifts) < 0.02),
    ]


def run_demo(seed: int = 0, out: str | Path | None = None, console: Console | None = None) -> int:
    """Run the tour; print the figures; write ``summary.json``. Returns the exit code."""
    console = console or Console()
    folder = Path(out) if out else Path(f"labpcu-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    rig = SimRig.default(seed=seed, site=SITE)
    smu, mtx, pa = (_instrument(rig, n) for n in ("k2612a", "k3706a", "b1500a"))
    figures: list[Figure] = []
    steps = [("identify instruments", None), ("diode D1 I–V sweep (B1500A)", diode_tour),
             ("M2 switching and 1,000 s retention (2612A)", m2_tour),
             ("M1 ISPP and 600 s retention (2612A script)", m1_tour)]
    identities = {}
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("simulated bench", total=len(steps))
            for label, step in steps:
                progress.update(task, description=label)
                if step is None:
                    identities = {inst.name: inst.ask("*IDN?").strip() for inst in (smu, mtx, pa)}
                else:
                    figures += step(rig, smu, mtx, pa)
                    _check_errors(smu, mtx, pa)
                progress.advance(task)
    finally:
        _tsp(smu, "smua.source.levelv = 0", "smub.source.levelv = 0", "smua.source.output = 0", "smub.source.output = 0")
        mtx.write('channel.open("allslots")')
        pa.write("CL")
    wall = time.perf_counter() - wall

    table = Table(title=f"labpcu demo — simulated wafer, seed {seed}, site {SITE}")
    for col in ("figure", "band (pcu.md)", "measured", "result"):
        table.add_column(col)
    for f in figures:
        table.add_row(f.name, f.band, f"{f.measured:.4g} {f.unit}".strip(), "[green]pass" if f.passed else "[red]FAIL")
    console.print(table)
    sim_time = rig.bench.clock.now()
    console.print(f"{sim_time:,.0f} s of bench time in {wall:.2f} s of wall time; instruments: "
                  + "; ".join(identities.values()))
    summary = {"seed": seed, "site": SITE, "bench_time_s": sim_time, "wall_time_s": wall,
               "instruments": identities, "figures": [asdict(f) for f in figures]}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    console.print(f"wrote {folder / 'summary.json'}")
    return 0 if all(f.passed for f in figures) else 1
