"""Wafer screening: a quick, safe classification of every PCU before it is used.

A real wafer has opens, shorts and memristors that do not switch. Measuring them as
if they worked puts a wrong number into a figure (an average over a dead device), so
a campaign screens first and later steps take only devices screened ``working``.

Per device, in order, stopping at the first defect found (a defective device is not
stressed further):

1. **D1** (WL → CL1): one read at +``v_diode`` and one at −``v_diode``, at a low
   compliance. At the compliance either way, or rectifying less than
   ``min_rectification``: ``short``. Forward current below ``i_open``: ``open``.
2. **M1** (CL1 → CL2): a read at ``v_read`` (never programs). At the compliance:
   ``short``; below ``g_open``: ``open``. Then a nudge: one pulse of +``v_nudge``, a
   read, one of −``v_nudge``, a read. If neither moved the conductance by
   ``min_move`` (relative), M1 is stuck: ``m1_stuck_on`` at or above ``g_split``,
   else ``m1_stuck_off``. A working M1 is programmed back to the conductance it had
   (ISPP with verify, the paper's scheme), so screening leaves it as it found it.
3. **M2** (CL2 → BL): a read at +0.1 V. In HRS, a set (the first one forms the
   filament) and a reset, each three coarse pulses with reads; no set:
   ``m2_stuck_off``; set but no reset: ``m2_stuck_on``. Forming cannot be undone, so a
   working M2 is left set with the filament of ``m2_compliance`` (``m2_finish``): a
   formed cell that is left reset sets later at its lower set voltage through
   whatever path reaches it first, often with a weak filament (a 5 kΩ LRS in exp mode
   instead of ≈ 200 Ω, and several times the multiplier's error).

Results: per device its class and readings, the count of each class, the yield
(working / screened), and the devices by class. The class is ``classification`` in a
campaign selection (``where = "classification == 'working'"``, or the step option
``working_only = true``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.instruments.roles import IVReading, SourceMeasureUnit
from labpcu.protocols.base import DEVICE_COLUMN, Block, PlotSpec, Protocol
from labpcu.protocols.common import check_levels, connect_component
from labpcu.protocols.params import ParameterError, Params, param
from labpcu.protocols.programming import (
    IsppScheme,
    SwitchScheme,
    program_conductance,
    read_resistance,
    resolve_terminals,
    switch_m2,
)
from labpcu.protocols.registry import register

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.clock import Clock
    from labpcu.protocols.context import RunContext

#: the protocol's name (campaigns find their screening step by it)
SCREEN_PROTOCOL = "screen"
#: the class of a device that passed every check
WORKING = "working"
#: every class a device can get, in the order of the checks
CLASSES = (WORKING, "open", "short", "m1_stuck_on", "m1_stuck_off", "m2_stuck_off", "m2_stuck_on")
NAN = float("nan")


@dataclass(frozen=True)
class ScreenParams(Params):
    v_diode: float = param(0.5, unit="V", limits=(0.05, 1.0),
                           help="D1 read level, forward and reverse (on a working diode: µA forward, sub-nA reverse)")
    i_open: float = param(3e-7, unit="A", limits=(1e-14, 1e-3),
                          help="D1 forward current below this at v_diode: the word-line path is open (a working D1 "
                               "passes µA; an open one only the matrix's leakage, ~10 nA through 10^9 Ω crosspoints)")
    min_rectification: float = param(10.0, limits=(1.0, 1e9),
                                     help="D1 forward/reverse current ratio below this: shorted")
    compliance: float = param(1e-4, unit="A", limits=(1e-9, 1e-3),
                              help="current compliance of the D1 and M1 reads (a short reads at it)")
    nudge_compliance: float = param(5e-4, unit="A", limits=(1e-9, 1e-3),
                                    help="compliance of the M1 nudges and their restore: an M1 high in its 1 mS "
                                         "range draws 0.3 mA at 0.3 V, and a pulse held at a lower compliance "
                                         "would not move it (a working device read as stuck)")
    v_read: float = param(0.01, unit="V", limits=(1e-4, 0.1), help="M1 read level (below its switching threshold)")
    g_open: float = param(2e-7, unit="S", limits=(1e-12, 1e-3), help="M1 below this conductance: open")
    v_nudge: float = param(0.3, unit="V", limits=(0.05, 1.0),
                           help="M1 nudge: one pulse of each polarity (moves a working M1 by a few per cent of its range)")
    width: float = param(0.02, unit="s", limits=(1e-4, 1.0), help="width of each nudge pulse")
    min_move: float = param(0.005, limits=(1e-4, 1.0),
                            help="relative conductance change below which M1 did not move: stuck (a pulse moves "
                                 "a fixed share of M1's 1 mS range, only ~1 % of a conductance high in it; read "
                                 "noise is ≈ 0.2 %)")
    g_split: float = param(15e-6, unit="S", limits=(1e-9, 1e-3),
                           help="a stuck M1 at or above this conductance is stuck on, below it stuck off")
    restore: bool = param(True, help="program a working M1 back to the conductance it had before the nudge")
    restore_tolerance: float = param(0.05, limits=(1e-4, 0.5),
                                     help="tolerance of the restore, relative to the conductance found")
    restore_pulses: int = param(40, limits=(1, 1000), help="most pulses the restore may take")
    check_m2: bool = param(True, help="set and reset M2 once to find one that never forms or never resets")
    m2_compliance: float = param(1e-3, unit="A", limits=(1e-9, 1e-2),
                                 help="compliance of the M2 sets (it limits the forming current, so the filament: "
                                      "1 mA gives the ≈ 200 Ω LRS the operator modes use)")
    m2_finish: str = param("set", choices=("set", "reset"),
                           help="the state a working M2 is left in. Forming cannot be undone: a formed cell later "
                                "sets at its lower set voltage, through whatever path reaches it first, often with "
                                "a weak filament; set leaves the strong one the operator modes want")
    m2_v_max: float = param(1.0, unit="V", limits=(0.1, 2.0),
                            help="largest M2 set pulse; the set tries 0.6, 0.8 and 1.0 × this, the reset −0.3, −0.5 "
                                 "and −0.7 ×")
    terminals: tuple[str, ...] = param((), help="force and ground SMUs; empty: the first source meter's two channels")

    def check(self) -> None:
        if self.v_nudge <= self.v_read:
            raise ParameterError(f"v_nudge = {self.v_nudge:g} V must exceed v_read = {self.v_read:g} V")

    def ispp(self) -> IsppScheme:
        """The restore: ISPP with verify from the paper's first pulse (0.2 V) in fine
        steps up to v_nudge, so it undoes a nudge without overshooting it."""
        return IsppScheme(v_start=min(0.2, self.v_nudge), v_step=0.02, v_max=self.v_nudge, v_read=self.v_read,
                          max_pulses=self.restore_pulses, compliance=self.nudge_compliance)

    def switch(self) -> tuple[SwitchScheme, SwitchScheme]:
        """(set, reset): three coarse steps each, not a fine ramp (the screen asks only
        whether M2 switches), at the compliances of an ordinary set and reset."""
        common = {"compliance_set": self.m2_compliance, "compliance_reset": max(10 * self.m2_compliance, 1e-2)}
        step = self.m2_v_max / 5
        return (SwitchScheme(v_start=3 * step, v_step=step, v_max=self.m2_v_max, **common),
                SwitchScheme(v_start=1.5 * step, v_step=step, v_max=3.5 * step, **common))


def _read(smu: SourceMeasureUnit, volts: float, compliance: float) -> IVReading:
    """One reading at ``volts``; the level goes back to 0 V (nothing stays biased)."""
    smu.source_voltage(volts, compliance)
    smu.output_on()
    reading = smu.measure()
    smu.source_voltage(0.0, compliance)
    return reading


def _limited(r: IVReading) -> bool:
    return bool(r.compliance or r.overflow or not math.isfinite(r.current))


@dataclass
class _Device:
    """What the screen found on one device."""

    classification: str = WORKING
    reason: str = ""
    i_d1_forward: float = NAN
    i_d1_reverse: float = NAN
    g_m1: float = NAN
    g_m1_up: float = NAN
    g_m1_down: float = NAN
    g_m1_restored: float = NAN
    r_m2: float = NAN
    m2_v_set: float = NAN

    def fail(self, classification: str, reason: str) -> _Device:
        self.classification, self.reason = classification, reason
        return self


def screen_d1(force: SourceMeasureUnit, p: ScreenParams, out: _Device) -> bool:
    """Step 1; False when D1 is open or shorted."""
    sweep = force.sweep_voltage(np.array([p.v_diode, -p.v_diode]), p.compliance, 1.0)  # one instrument-side sweep
    fwd, rev = (IVReading(float(sweep.current[k]), float(sweep.voltage[k]), bool(sweep.compliance[k]),
                          bool(sweep.overflow[k])) for k in (0, 1))
    out.i_d1_forward, out.i_d1_reverse = fwd.current, rev.current
    if _limited(fwd) or _limited(rev):
        out.fail("short", f"D1 at the {p.compliance:g} A compliance at ±{p.v_diode:g} V")
        return False
    ratio = abs(fwd.current) / max(abs(rev.current), 1e-30)
    if abs(fwd.current) < p.i_open:  # what flows is the bench's leakage, not a diode
        out.fail("open", f"D1 forward current {fwd.current:.3g} A < {p.i_open:g} A at +{p.v_diode:g} V "
                         f"(rectification {ratio:.3g})")
        return False
    if ratio < p.min_rectification:
        out.fail("short", f"D1 rectifies only {ratio:.3g}× at ±{p.v_diode:g} V")
        return False
    return True


def screen_m1(force: SourceMeasureUnit, ground: SourceMeasureUnit, clock: Clock, p: ScreenParams,
              out: _Device) -> bool:
    """Step 2; False when M1 is shorted, open or stuck. A working M1 is restored."""
    first = _read(force, p.v_read, p.compliance)
    if _limited(first):
        out.fail("short", f"M1 at the {p.compliance:g} A compliance at {p.v_read:g} V")
        return False
    g0 = out.g_m1 = first.current / p.v_read
    if g0 < p.g_open:
        out.fail("open", f"M1 reads {g0:.3g} S < {p.g_open:g} S")
        return False
    readings = []
    for volts in (p.v_nudge, -p.v_nudge):
        force.source_voltage(volts, p.nudge_compliance)
        clock.sleep(p.width)
        readings.append(_read(force, p.v_read, p.compliance).current / p.v_read)
    out.g_m1_up, out.g_m1_down = readings
    moved = max(abs(out.g_m1_up - g0), abs(out.g_m1_up - out.g_m1_down)) / g0
    if not moved >= p.min_move:
        kind = "m1_stuck_on" if g0 >= p.g_split else "m1_stuck_off"
        out.fail(kind, f"M1 moved {moved:.2%} under ±{p.v_nudge:g} V pulses (< {p.min_move:.0%}) at {g0:.3g} S")
        return False
    if p.restore and abs(out.g_m1_down - g0) > p.restore_tolerance * g0:
        res = program_conductance(force, ground, clock, g0, p.restore_tolerance * g0, p.ispp())
        out.g_m1_restored = res.conductance
    else:
        out.g_m1_restored = out.g_m1_down
    return True


def screen_m2(force: SourceMeasureUnit, clock: Clock, p: ScreenParams, out: _Device) -> bool:
    """Step 3; False when M2 never sets, or sets and never resets (left in LRS)."""
    set_scheme, reset_scheme = p.switch()
    _, r0 = read_resistance(force, set_scheme.v_read, set_scheme.compliance_read)
    out.r_m2 = r0
    force.source_voltage(0.0, set_scheme.compliance_read)
    if set_scheme.is_state(r0, "set"):
        return True  # it has a filament: it formed once; leave it as found
    sw = switch_m2(force, clock, "set", set_scheme)
    if not sw.switched:
        out.fail("m2_stuck_off", f"M2 did not set up to {set_scheme.v_max:g} V ({sw.r_after:.3g} Ω)")
        return False
    out.m2_v_set = sw.v_switch
    back = switch_m2(force, clock, "reset", reset_scheme)
    if not back.switched:
        out.fail("m2_stuck_on", f"M2 set at {sw.v_switch:+g} V but did not reset down to −{reset_scheme.v_max:g} V")
        return False
    if p.m2_finish == "set":
        switch_m2(force, clock, "set", set_scheme)
    return True


@register
class Screen(Protocol):
    """Classify each PCU: working, open, short, M1 stuck on/off, M2 stuck off/on.

    Low levels and compliances throughout (see the module docstring): the screen may
    run on every device of a wafer before anything else. A defective device is a
    result, not a failure of the run.
    """

    name = SCREEN_PROTOCOL
    bench_seconds_per_device = 1.5  # s, measured on the simulated bench
    title = "Wafer screening (working, open, short, stuck)"
    Params = ScreenParams
    columns = (
        DEVICE_COLUMN,
        Column("classification", "", "str", f"one of {', '.join(CLASSES)}"),
        Column("reason", "", "str", "why the device is not working (empty if it is)"),
        Column("x_mm", "mm", "float64", "device position on the wafer map"),
        Column("y_mm", "mm", "float64", "device position on the wafer map"),
        Column("i_d1_forward", "A", "float64", "D1 current at +v_diode"),
        Column("i_d1_reverse", "A", "float64", "D1 current at −v_diode"),
        Column("g_m1", "S", "float64", "M1 conductance found (read at v_read)"),
        Column("g_m1_up", "S", "float64", "after the +v_nudge pulse"),
        Column("g_m1_down", "S", "float64", "after the −v_nudge pulse"),
        Column("g_m1_restored", "S", "float64", "after the nudge, programmed back when it had moved by more than restore_tolerance"),
        Column("r_m2", "Ω", "float64", "M2 resistance found at +0.1 V"),
        Column("m2_v_set", "V", "float64", "pulse that set M2 in the check (NaN if none)"),
    )
    plot = PlotSpec("x_mm", ("y_mm",), group="classification", kind="scatter", title="Wafer screening: yield map")

    def validate(self, params: ScreenParams, bench: Bench, devices: Sequence[str]) -> None:  # type: ignore[override]
        super().validate(params, bench, devices)
        p = params
        terminals = resolve_terminals(bench, p.terminals, self.name)
        check_levels(bench, "d1", self.name, terminals=terminals, v_diode=p.v_diode, compliance=p.compliance)
        check_levels(bench, "m1", self.name, terminals=terminals, v_nudge=p.v_nudge, v_read=p.v_read,
                     compliance=p.compliance, compliance_nudge=p.nudge_compliance, **({"v_restore": p.ispp().v_max} if p.restore else {}))
        if p.check_m2:
            s, _ = p.switch()
            check_levels(bench, "m2", self.name, terminals=terminals, m2_v_max=p.m2_v_max,
                         compliance_set=s.compliance_set, compliance_reset=s.compliance_reset)

    def measure(self, ctx: RunContext, params: ScreenParams, device: str) -> Iterator[Block]:  # type: ignore[override]
        p = params
        terminals = resolve_terminals(ctx.bench, p.terminals, self.name)
        out = _Device()
        force, _ = connect_component(ctx.bench, device, "d1", terminals)
        if screen_d1(force, p, out):
            force, ground = connect_component(ctx.bench, device, "m1", terminals)
            if screen_m1(force, ground, ctx.clock, p, out) and p.check_m2:
                force, _ = connect_component(ctx.bench, device, "m2", terminals)
                screen_m2(force, ctx.clock, p, out)
        force.source_voltage(0.0, p.compliance)
        force.output_off()
        ctx.progress(ctx.devices.index(device) + 1, len(ctx.devices), f"{device}: {out.classification}")
        pcu = ctx.bench.layout.device(device)
        yield {**vars(out), "x_mm": pcu.x_mm, "y_mm": pcu.y_mm}

    def passed(self, results: Mapping[str, Any]) -> bool | None:
        """Screening has no pass criterion: it classifies."""
        return None

    def analyze(self, data: pd.DataFrame, params: ScreenParams) -> dict[str, Any]:  # type: ignore[override]
        return screen_results(data)


def screen_results(data: pd.DataFrame) -> dict[str, Any]:
    """Per device its class and readings; the count of each class; the yield."""
    devices: dict[str, dict[str, Any]] = {}
    for row in data.to_dict("records"):
        cls = str(row["classification"])
        info = {k: (float(v) if isinstance(v, (int, float, np.floating)) else str(v))
                for k, v in row.items() if k != "device"}
        info["working"] = cls == WORKING
        devices[str(row["device"])] = info
    counts = {c: sum(d["classification"] == c for d in devices.values()) for c in CLASSES}
    n = len(devices)
    return {
        "devices": devices,
        "screened": n,
        "working": counts[WORKING],
        "yield": counts[WORKING] / n if n else NAN,
        "counts": counts,
        "by_class": {c: [d for d, r in devices.items() if r["classification"] == c] for c in CLASSES if counts[c]},
        "method": "D1 read at ±v_diode, M1 read and a ±v_nudge pulse pair (restored), M2 set/reset once at a low "
                  "compliance; the first defect found classifies the device",
    }
