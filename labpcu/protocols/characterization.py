"""Characterization protocols: I–V sweep, M2 hysteresis, retention.

========== =============================================================================
protocol   what it measures (pcu.md "Measurements and their published figures")
========== =============================================================================
iv_sweep   an I–V sweep of one component; rectification ratio and a Shockley fit (I0,
           n, Rs) of the forward branch
hysteresis bipolar sweeps of the binary memristor M2, cycle by cycle: set and reset
           voltages, LRS and HRS read at +0.1 V, on/off ratio
retention  periodic reads of M1 or M2 on the bench clock; log-time drift and a
           pass/fail against a tolerance
========== =============================================================================

Each talks only to the bench's roles and the run's clock (DESIGN.md, rule 1): the
component is routed by :func:`~labpcu.protocols.common.connect_component`, sweeps go
through the role's ``sweep_voltage`` (an instrument-side list sweep on a 2600), and
every wait is ``ctx.clock.sleep``. Results are ``{"devices": {id: {...}}, "summary":
{...}}`` with JSON-able scalars and lists; the fits live in :mod:`labpcu.data.fits`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.data.fits import FitError, find_switch, fit_log_drift, fit_shockley, rectification_ratio
from labpcu.instruments.roles import IVReading, SourceMeasureUnit
from labpcu.instruments.roles import IVSweep as SweepData
from labpcu.protocols.base import DEVICE_COLUMN, Block, DeviceFailure, PlotSpec, Protocol
from labpcu.protocols.common import COMPONENTS, check_levels, connect_component, default_terminals
from labpcu.protocols.params import ParameterError, Params, param
from labpcu.protocols.registry import register

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.protocols.context import RunContext

#: most levels one sweep may hold (the 2600's list sweeps take 60,000)
MAX_SWEEP_POINTS = 20_000
#: components whose forward branch is a diode, so a Shockley fit means something
DIODE_COMPONENTS = ("d1", "d2", "path")


# ====================================================================== helpers
def _read(smu: SourceMeasureUnit, volts: float, compliance: float) -> IVReading:
    """One reading at ``volts``, the output on only for the reading (a state read
    must not leave bias behind)."""
    smu.source_voltage(volts, compliance)
    smu.output_on()
    reading = smu.measure()
    smu.source_voltage(0.0, compliance)
    smu.output_off()
    return reading


def _sweep_columns(sweep: SweepData) -> dict[str, np.ndarray]:
    """The columns every sweep block shares."""
    return {
        "index": np.arange(len(sweep.source), dtype=np.int64),
        "v_source": np.asarray(sweep.source, float),
        "v": np.asarray(sweep.voltage, float),
        "i": np.asarray(sweep.current, float),
        "compliance": np.asarray(sweep.compliance, bool) | np.asarray(sweep.overflow, bool),
    }


def _devices(data: pd.DataFrame) -> list[str]:
    """Device ids in the order they were measured."""
    return [str(d) for d in pd.unique(data["device"])] if len(data) else []


def _finite(values: Sequence[float]) -> list[float]:
    return [float(x) for x in values if x is not None and math.isfinite(x)]


def _stat(values: Sequence[float], how: str) -> float | None:
    """min / max / mean / std of the finite values; None when there are none."""
    xs = _finite(values)
    if not xs:
        return None
    return float({"min": np.min, "max": np.max, "mean": np.mean, "std": np.std}[how](xs))


def _progress(ctx: RunContext, device: str, message: str) -> None:
    ctx.progress(ctx.devices.index(device) + 1, len(ctx.devices), f"{device}: {message}")


#: what every swept point records (iv_sweep and hysteresis)
SWEEP_COLUMNS = (
    Column("v_source", "V", "float64", "programmed level"),
    Column("v", "V", "float64", "measured voltage"),
    Column("i", "A", "float64", "measured current (NaN on overflow)"),
    Column("compliance", "", "bool", "at the current compliance or overflowed"),
    DEVICE_COLUMN,
)


def half_cycle(peak: float, step: float) -> np.ndarray:
    """0 → ``peak`` → 0 in steps of at most ``step`` (the peak is always a level)."""
    n = max(1, math.ceil(abs(peak) / step - 1e-9))
    out = np.linspace(0.0, peak, n + 1)
    return np.concatenate([out, out[-2::-1]])


# ====================================================================== I–V sweep
@dataclass(frozen=True)
class IVSweepParams(Params):
    component: str = param("d1", choices=COMPONENTS,
                           help="component of the PCU: d1, d2, m1, m2, or path (WL to BL)")
    spacing: str = param("linear", choices=("linear", "log", "list"),
                         help="linear: evenly spaced; log: geometric magnitudes (see log_min); list: the levels given")
    start: float = param(-1.0, unit="V", limits=(-200.0, 200.0), help="first level (linear and log)")
    stop: float = param(1.0, unit="V", limits=(-200.0, 200.0), help="last level (linear and log)")
    points: int = param(101, limits=(2, 10_000), help="levels from start to stop (linear and log)")
    levels: tuple[float, ...] = param((), unit="V", help="the levels, in order (spacing = list only)")
    log_min: float = param(0.01, unit="V", limits=(1e-6, 10.0),
                           help="smallest magnitude of a log sweep; an end at 0 V and the zero crossing of a "
                                "bipolar log sweep are taken as ±log_min")
    double: bool = param(False, help="sweep there and back (the return skips the turning level)")
    compliance: float | None = param(None, unit="A", limits=(1e-9, 1.5),
                                     help="current compliance; none: the bench limit of the component")
    nplc: float = param(1.0, limits=(0.001, 25.0), help="integration time per point, in power-line cycles")
    rectification_bias: float = param(1.0, unit="V", limits=(0.0, 200.0),
                                      help="rectification ratio |I(+V)|/|I(-V)| at this bias; 0: not computed")
    fit_floor: float = param(1e-11, unit="A", limits=(0.0, 1.0),
                             help="forward currents at or below this (leakage, noise) stay out of the Shockley fit")
    temperature: float = param(300.0, unit="K", limits=(1.0, 600.0), help="device temperature, for n = q/(kT·slope)")

    def check(self) -> None:
        if self.spacing == "list":
            if not self.levels:
                raise ParameterError("spacing = list needs levels")
            if len(self.levels) > MAX_SWEEP_POINTS // 2:
                raise ParameterError(f"at most {MAX_SWEEP_POINTS // 2} levels, got {len(self.levels)}")
        elif self.levels:
            raise ParameterError(f"levels are used only with spacing = list, not {self.spacing}")
        elif self.start == self.stop:
            raise ParameterError(f"start and stop are both {self.start:g} V")
        elif self.spacing == "log":
            self._check_log()
        v = self.sweep_levels()
        bias = self.rectification_bias
        if bias > 0 and (v.min() > -bias or v.max() < bias):
            raise ParameterError(f"rectification_bias = {bias:g} V needs levels reaching -{bias:g} V "
                                 f"and +{bias:g} V; set it to 0 to skip the ratio")

    def _check_log(self) -> None:
        for name in ("start", "stop"):
            value = abs(getattr(self, name))
            if 0 < value <= self.log_min:
                raise ParameterError(f"a log sweep's {name} must be 0 or beyond log_min = {self.log_min:g} V")
        if self.start * self.stop < 0 and self.points < 4:
            raise ParameterError("a bipolar log sweep needs at least 4 points (2 per polarity)")

    def sweep_levels(self) -> np.ndarray:
        """The levels sourced, in order.

        ``log``: magnitudes are geometric. Same-sign ends: ``points`` levels from start
        to stop (an end at 0 V becomes ±log_min). Ends of opposite sign (bipolar): the
        sweep is mirrored through zero without touching it — ceil(points/2) levels from
        start to ±log_min, then the rest from ∓log_min to stop — so each polarity gets
        its own decades. ``double`` appends the way back.
        """
        if self.spacing == "list":
            v = np.asarray(self.levels, float)
        elif self.spacing == "linear":
            v = np.linspace(self.start, self.stop, self.points)
        else:
            v = _log_levels(self.start, self.stop, self.points, self.log_min)
        return np.concatenate([v, v[-2::-1]]) if self.double and len(v) > 1 else v


def _log_levels(start: float, stop: float, points: int, v_min: float) -> np.ndarray:
    """Geometric levels; see :meth:`IVSweepParams.sweep_levels`."""
    if start * stop < 0:
        first = math.ceil(points / 2)
        return np.concatenate([np.geomspace(start, math.copysign(v_min, start), first),
                               np.geomspace(math.copysign(v_min, stop), stop, points - first)])
    a = start if start != 0 else math.copysign(v_min, stop)
    b = stop if stop != 0 else math.copysign(v_min, start)
    return np.geomspace(a, b, points)


@register
class IVSweep(Protocol):
    """I–V sweep of one PCU component: rectification ratio and, for a diode, a
    Shockley fit with series resistance of the forward branch.

    The force terminal drives the component's first pad (for d1 and d2 the anode, so
    positive is forward), the ground terminal holds the other at 0 V. The whole sweep
    runs as one instrument-side list sweep and is one block.

    d2 sits in parallel with M2: with M2 in LRS it is shorted, and a reverse bias
    beyond M2's set voltage sets M2. Measure d2 with M2 in HRS and a reverse range
    inside its set voltage.
    """

    name = "iv_sweep"
    bench_seconds_per_device = 5.0  # s, measured by `labpcu demo`
    title = "I–V sweep (rectification, Shockley fit)"
    Params = IVSweepParams
    columns = (
        Column("index", "", "int64", "point within the sweep"),
        Column("branch", "", "int64", "0 going, 1 coming back (double sweeps)"),
        *SWEEP_COLUMNS,
    )
    plot = PlotSpec("v", ("i",), group="device", yscale="log", abs_y=True, title="I–V sweep")

    def validate(self, params: IVSweepParams, bench: Bench, devices: Sequence[str]) -> None:  # type: ignore[override]
        super().validate(params, bench, devices)
        v = params.sweep_levels()
        check_levels(bench, params.component, self.name, terminals=default_terminals(bench), levels=[float(v.min()), float(v.max())],
                     compliance=params.compliance)

    def measure(self, ctx: RunContext, params: IVSweepParams, device: str) -> Iterator[Block]:  # type: ignore[override]
        p = params
        force, _ = connect_component(ctx.bench, device, p.component)
        compliance = p.compliance if p.compliance is not None else force.limits[1]
        levels = p.sweep_levels()
        _progress(ctx, device, f"sweeping {p.component}, {len(levels)} levels")
        sweep = force.sweep_voltage(levels, compliance, p.nplc)
        block = _sweep_columns(sweep)
        turn = len(levels) // 2 + 1 if p.double else len(levels)
        block["branch"] = (np.arange(len(levels)) >= turn).astype(np.int64)
        yield block
        if block["compliance"].all():
            raise DeviceFailure(f"{p.component} of {device} is at compliance ({compliance:g} A) at every level: a short?")

    def analyze(self, data: pd.DataFrame, params: IVSweepParams) -> dict[str, Any]:  # type: ignore[override]
        devices = {d: self._analyze_device(data[data["device"] == d], params) for d in _devices(data)}
        return {"devices": devices, "summary": self._summary(devices, params)}

    @staticmethod
    def _analyze_device(df: pd.DataFrame, p: IVSweepParams) -> dict[str, Any]:
        """Rectification at ±bias over all points; Shockley fit of the forward points
        that are not in compliance (measured voltage, so Rs sees the true bias)."""
        out: dict[str, Any] = {"component": p.component, "points": int(len(df)),
                               "compliance_points": int(df["compliance"].sum())}
        if p.rectification_bias > 0:
            try:
                ratio, fwd, rev = rectification_ratio(df["v_source"], df["i"], p.rectification_bias)
                out.update(rectification_ratio=ratio, i_forward=fwd, i_reverse=rev)
            except FitError as exc:
                out["rectification_error"] = str(exc)
        if p.component in DIODE_COMPONENTS:
            fwd_pts = df[(df["v_source"] > 0) & ~df["compliance"].astype(bool)]
            try:
                fit = fit_shockley(fwd_pts["v"], fwd_pts["i"], temperature=p.temperature, floor=p.fit_floor)
                out.update(i0=fit.i0, n=fit.n, rs=fit.rs, r2=fit.r2, fit_points=fit.points)
            except FitError as exc:
                out["fit_error"] = str(exc)
        return out

    @staticmethod
    def _summary(devices: dict[str, dict[str, Any]], p: IVSweepParams) -> dict[str, Any]:
        def col(key: str) -> list[float]:
            return [r[key] for r in devices.values() if key in r]

        return {
            "devices": len(devices),
            "component": p.component,
            "rectification_bias": p.rectification_bias,
            "rectification_min": _stat(col("rectification_ratio"), "min"),
            "r2_min": _stat(col("r2"), "min"),
            "n_mean": _stat(col("n"), "mean"),
            "n_std": _stat(col("n"), "std"),
            "i0_median": float(np.median(col("i0"))) if col("i0") else None,
            "rs_median": float(np.median(col("rs"))) if col("rs") else None,
        }


# ====================================================================== hysteresis
@dataclass(frozen=True)
class HysteresisParams(Params):
    cycles: int = param(5, limits=(1, 10_000), help="set/reset cycles")
    v_set_max: float = param(1.0, unit="V", limits=(0.01, 200.0), help="peak of the set half (0 → +V → 0)")
    v_reset_max: float = param(-0.6, unit="V", limits=(-200.0, -0.01), help="peak of the reset half (0 → −V → 0)")
    step: float = param(0.01, unit="V", limits=(1e-4, 1.0), help="voltage step of the sweeps")
    compliance_set: float = param(1e-3, unit="A", limits=(1e-9, 1.5),
                                  help="compliance of the set half; it limits the forming current, so it sets the LRS")
    compliance_reset: float = param(1e-2, unit="A", limits=(1e-9, 1.5),
                                    help="compliance of the reset half; must exceed the LRS current at the reset voltage")
    v_read: float = param(0.1, unit="V", limits=(-1.0, 1.0), help="read voltage of the LRS and HRS reads")
    compliance_read: float = param(1e-3, unit="A", limits=(1e-9, 1.5), help="compliance of the reads")
    nplc: float = param(1.0, limits=(0.001, 25.0), help="integration time per point, in power-line cycles")
    reset_first: bool = param(True, help="start with a reset half (cycle 0), so cycle 1 starts in HRS whatever "
                                         "state the device was left in")
    form: bool = param(True, help="cycle 0 forms the cell first: a set half up to v_form_max, then a reset half "
                                  "(a fresh cell's first set is higher than its later ones)")
    v_form_max: float = param(1.3, unit="V", limits=(0.01, 200.0),
                              help="peak of the forming half (0 → +V → 0; at least v_set_max)")
    jump_ratio: float = param(100.0, limits=(2.0, None),
                              help="a conductance jump by at least this factor between two points is a switch")
    min_on_off: float = param(1e6, limits=(1.0, None), help="LRS/HRS current ratio every cycle must reach to pass")

    def check(self) -> None:
        if self.v_read == 0:
            raise ParameterError("v_read must not be 0 V")
        if not (self.v_reset_max < self.v_read < self.v_set_max):
            raise ParameterError(f"v_read = {self.v_read:g} V must lie between v_reset_max and v_set_max")
        if self.step > min(self.v_set_max, -self.v_reset_max) / 2:
            raise ParameterError(f"step = {self.step:g} V is too coarse for a sweep to "
                                 f"{self.v_set_max:g} V and {self.v_reset_max:g} V")
        if len(half_cycle(max(self.v_set_max, -self.v_reset_max, self.v_form_max if self.form else 0.0),
                          self.step)) > MAX_SWEEP_POINTS:
            raise ParameterError(f"step = {self.step:g} V gives more than {MAX_SWEEP_POINTS} points per half")


@register
class Hysteresis(Protocol):
    """Bipolar I–V hysteresis of the binary memristor M2, cycle by cycle.

    Each cycle: a set half 0 → +v_set_max → 0 at ``compliance_set`` (the compliance
    limits the forming current and so fixes the LRS), a read at ``v_read``, a reset
    half 0 → v_reset_max → 0 at ``compliance_reset``, a read. The set and reset
    voltages are where the conductance jumps (:func:`~labpcu.data.fits.find_switch`);
    LRS and HRS come from the reads, not from the sweep, which is at compliance right
    after a set. No jump in a half is a device failure ("did not set/reset").

    Forming (``form``): a fresh filamentary cell sets first at a higher voltage than in
    its later cycles, so cycle 0 sweeps to ``v_form_max`` (phase ``form``) and resets;
    the forming voltage is reported apart and stays out of the set-voltage statistics.
    A cell that was formed already sets at its usual voltage in that sweep.

    M2 is driven CL2 (+) to BL; D2 conducts from BL to CL2, so the reset half also
    sees D2's forward current once M2 is in HRS.
    """

    name = "hysteresis"
    bench_seconds_per_device = 87.0  # s, measured by `labpcu demo`
    title = "M2 hysteresis (set/reset voltages, on/off ratio)"
    Params = HysteresisParams
    columns = (
        Column("cycle", "", "int64", "cycle number; 0 is the reset before cycle 1"),
        Column("phase", "", "str", "form, set, read_set, reset or read_reset"),
        Column("index", "", "int64", "point within the phase"),
        *SWEEP_COLUMNS,
    )
    plot = PlotSpec("v", ("i",), group="cycle", yscale="log", abs_y=True, title="M2 hysteresis")

    def validate(self, params: HysteresisParams, bench: Bench, devices: Sequence[str]) -> None:  # type: ignore[override]
        super().validate(params, bench, devices)
        p = params
        check_levels(bench, "m2", self.name, terminals=default_terminals(bench), v_set_max=p.v_set_max, v_reset_max=p.v_reset_max, v_read=p.v_read,
                     v_form_max=p.v_form_max if p.form else None,
                     compliance_set=p.compliance_set, compliance_reset=p.compliance_reset,
                     compliance_read=p.compliance_read)

    def measure(self, ctx: RunContext, params: HysteresisParams, device: str) -> Iterator[Block]:  # type: ignore[override]
        p = params
        force, _ = connect_component(ctx.bench, device, "m2")
        if p.reset_first:
            yield self._half(force, p, 0, "reset")
        if p.form:  # a fresh cell forms above its set voltage; a formed one just sets
            _progress(ctx, device, "forming")
            yield self._half(force, p, 0, "form")
            yield self._half(force, p, 0, "reset")
        for cycle in range(1, p.cycles + 1):
            _progress(ctx, device, f"cycle {cycle} of {p.cycles}")
            block = self._half(force, p, cycle, "set")
            yield block
            if find_switch(block["v_source"], block["i"], rising=True, min_ratio=p.jump_ratio) is None:
                raise DeviceFailure(f"M2 of {device} did not set up to {p.v_set_max:+g} V in cycle {cycle}")
            yield self._read_block(force, p, cycle, "read_set")
            block = self._half(force, p, cycle, "reset")
            yield block
            if find_switch(block["v_source"], block["i"], rising=False, min_ratio=p.jump_ratio) is None:
                raise DeviceFailure(f"M2 of {device} did not reset down to {p.v_reset_max:+g} V in cycle {cycle} "
                                    f"(is compliance_reset = {p.compliance_reset:g} A above the LRS current?)")
            yield self._read_block(force, p, cycle, "read_reset")

    @staticmethod
    def _half(force: SourceMeasureUnit, p: HysteresisParams, cycle: int, phase: str) -> dict[str, Any]:
        peak, compliance = {"set": (p.v_set_max, p.compliance_set), "form": (max(p.v_form_max, p.v_set_max), p.compliance_set),
                            "reset": (p.v_reset_max, p.compliance_reset)}[phase]
        sweep = force.sweep_voltage(half_cycle(peak, p.step), compliance, p.nplc)
        return {"cycle": cycle, "phase": phase, **_sweep_columns(sweep)}

    @staticmethod
    def _read_block(force: SourceMeasureUnit, p: HysteresisParams, cycle: int, phase: str) -> dict[str, Any]:
        r = _read(force, p.v_read, p.compliance_read)
        return {"cycle": cycle, "phase": phase, "index": 0, "v_source": p.v_read, "v": r.voltage, "i": r.current,
                "compliance": r.compliance or r.overflow}

    def analyze(self, data: pd.DataFrame, params: HysteresisParams) -> dict[str, Any]:  # type: ignore[override]
        devices = {d: self._analyze_device(data[data["device"] == d], params) for d in _devices(data)}
        return {"devices": devices, "summary": self._summary(devices, params)}

    @staticmethod
    def _cycle(df: pd.DataFrame, p: HysteresisParams) -> dict[str, float] | None:
        """Figures of one cycle, or None if it is incomplete (a failed device)."""
        parts = {ph: df[df["phase"] == ph] for ph in ("set", "read_set", "reset", "read_reset")}
        if any(part.empty for part in parts.values()):
            return None
        nan = float("nan")
        out: dict[str, float] = {}
        for phase, rising in (("set", True), ("reset", False)):
            sw = parts[phase]
            k = find_switch(sw["v_source"].to_numpy(), sw["i"].to_numpy(), rising=rising, min_ratio=p.jump_ratio)
            out[f"{phase}_voltage"] = float(sw["v_source"].iloc[k]) if k is not None else nan
        i_lrs, i_hrs = float(parts["read_set"]["i"].iloc[0]), float(parts["read_reset"]["i"].iloc[0])
        v_lrs, v_hrs = float(parts["read_set"]["v"].iloc[0]), float(parts["read_reset"]["v"].iloc[0])
        out.update(i_lrs=i_lrs, i_hrs=i_hrs,
                   r_lrs=v_lrs / i_lrs if i_lrs else nan, r_hrs=v_hrs / i_hrs if i_hrs else nan,
                   on_off=abs(i_lrs) / abs(i_hrs) if i_hrs else float("inf"))
        return out

    def _analyze_device(self, df: pd.DataFrame, p: HysteresisParams) -> dict[str, Any]:
        cycles = {int(c): self._cycle(g, p) for c, g in df[df["cycle"] >= 1].groupby("cycle", sort=True)}
        done = {c: r for c, r in cycles.items() if r is not None}
        keys = ("set_voltage", "reset_voltage", "i_lrs", "i_hrs", "r_lrs", "r_hrs", "on_off")
        form = df[df["phase"] == "form"]
        k = (find_switch(form["v_source"].to_numpy(), form["i"].to_numpy(), rising=True, min_ratio=p.jump_ratio)
             if len(form) else None)
        out: dict[str, Any] = {"cycles": len(done), "cycle": list(done),
                               "forming_voltage": float(form["v_source"].iloc[k]) if k is not None else None}
        out.update({k: [r[k] for r in done.values()] for k in keys})
        for k in ("set_voltage", "reset_voltage"):
            out[f"{k}_mean"], out[f"{k}_std"] = _stat(out[k], "mean"), _stat(out[k], "std")
        out["on_off_min"] = min(out["on_off"]) if done else None
        out["passed"] = bool(done) and len(done) == p.cycles and out["on_off_min"] >= p.min_on_off
        return out

    @staticmethod
    def _summary(devices: dict[str, dict[str, Any]], p: HysteresisParams) -> dict[str, Any]:
        def every(key: str) -> list[float]:
            return [x for r in devices.values() for x in r[key]]

        return {
            "devices": len(devices),
            "cycles": sum(r["cycles"] for r in devices.values()),
            "on_off_min": _stat(every("on_off"), "min"),
            "forming_voltage_mean": _stat([v for r in devices.values() if (v := r["forming_voltage"]) is not None],
                                          "mean"),
            "set_voltage_mean": _stat(every("set_voltage"), "mean"),
            "set_voltage_min": _stat(every("set_voltage"), "min"),
            "set_voltage_max": _stat(every("set_voltage"), "max"),
            "reset_voltage_mean": _stat(every("reset_voltage"), "mean"),
            "reset_voltage_min": _stat(every("reset_voltage"), "min"),
            "reset_voltage_max": _stat(every("reset_voltage"), "max"),
            "min_on_off": p.min_on_off,
            "passed": bool(devices) and all(r["passed"] for r in devices.values()),
        }


# ====================================================================== retention
#: per component: (read voltage, duration) of pcu.md — M1 held > 600 s read at
#: +0.01 V; M2 > 10^3 s read at +0.1 V
RETENTION_DEFAULTS: dict[str, tuple[float, float]] = {"m1": (0.01, 600.0), "m2": (0.1, 1000.0)}


@dataclass(frozen=True)
class RetentionParams(Params):
    component: str = param("m1", choices=tuple(RETENTION_DEFAULTS), help="memristor to read: m1 or m2")
    v_read: float | None = param(None, unit="V", limits=(-0.1, 0.1),
                                 help="read voltage, small enough never to program; none: the component's default "
                                      "(M1 +0.01 V, M2 +0.1 V)")
    duration: float | None = param(None, unit="s", limits=(0.0, 1e7),
                                   help="how long to read; none: the component's default (M1 600 s, M2 1000 s)")
    interval: float = param(10.0, unit="s", limits=(1e-3, 1e6), help="time between reads (bench clock)")
    compliance: float = param(1e-3, unit="A", limits=(1e-9, 1.5), help="current compliance of the reads")
    nplc: float = param(1.0, limits=(0.001, 25.0), help="integration time per read, in power-line cycles")
    hold_bias: bool = param(True, help="keep v_read applied between reads (read stress); false: 0 V, output off")
    t1: float = param(1.0, unit="s", limits=(1e-6, 1e6),
                      help="time scale of the drift law G0·(1 + nu·log10(1 + t/t1)): about the time from programming "
                           "to the first read")
    tolerance: float = param(0.02, limits=(1e-6, 1.0),
                             help="largest relative conductance change that passes (fraction, 0.02 = 2 %)")

    def check(self) -> None:
        if self.v_read == 0:
            raise ParameterError("v_read must not be 0 V")
        if self.read_duration < self.interval:
            raise ParameterError(f"duration = {self.read_duration:g} s is shorter than interval = "
                                 f"{self.interval:g} s")
        if self.read_duration / self.interval > 100_000:
            raise ParameterError("more than 100,000 reads; lengthen the interval")

    @property
    def read_voltage(self) -> float:
        """v_read, or the component's default read voltage."""
        return self.v_read if self.v_read is not None else RETENTION_DEFAULTS[self.component][0]

    @property
    def read_duration(self) -> float:
        """duration, or the component's default duration."""
        return self.duration if self.duration is not None else RETENTION_DEFAULTS[self.component][1]


@register
class Retention(Protocol):
    """Periodic reads of M1 or M2 over a duration of bench time: does the state hold?

    Retention only reads: it measures the state the device is in (program or set it
    first). Reads are every ``interval`` s from t = 0 to ``duration`` on the run's
    clock (instant on the simulated bench). The conductance G = I/V is fitted with
    G(t) = G0·(1 + ν·log10(1 + t/t1)) (:func:`~labpcu.data.fits.fit_log_drift`); the
    device passes if the fitted change over the duration and every read's deviation
    from G0 are within ``tolerance``. The law is that of a freshly programmed state,
    whose drift is fastest in its first seconds: start right after programming and
    keep ``t1`` near the time in between.

    A relative tolerance needs a read well above the instrument's noise: an M2 in HRS
    (pA at +0.1 V) will not pass 2 %; judge it by the on/off ratio instead.
    """

    name = "retention"
    title = "Retention (periodic reads, drift)"
    Params = RetentionParams
    columns = (
        Column("index", "", "int64", "read number"),
        Column("t", "s", "float64", "time since the first read (bench clock)"),
        Column("v", "V", "float64", "measured voltage"),
        Column("i", "A", "float64", "measured current"),
        Column("g", "S", "float64", "conductance I/V"),
        Column("compliance", "", "bool", "at the current compliance or overflowed"),
        DEVICE_COLUMN,
    )
    plot = PlotSpec("t", ("g",), group="device", title="Retention")


    def estimate(self, params: Params, devices: Sequence[str]) -> float | None:
        """Each device is read for its whole duration, one after the other."""
        return params.read_duration * max(len(devices), 1)  # type: ignore[attr-defined]
    def validate(self, params: RetentionParams, bench: Bench, devices: Sequence[str]) -> None:  # type: ignore[override]
        super().validate(params, bench, devices)
        check_levels(bench, params.component, self.name, terminals=default_terminals(bench), v_read=params.read_voltage, compliance=params.compliance)

    def measure(self, ctx: RunContext, params: RetentionParams, device: str) -> Iterator[Block]:  # type: ignore[override]
        p = params
        v = p.read_voltage
        reads = int(math.floor(p.read_duration / p.interval + 1e-9)) + 1
        force, _ = connect_component(ctx.bench, device, p.component)
        if p.hold_bias:
            force.source_voltage(v, p.compliance)
            force.output_on()
        t0 = ctx.clock.now()
        for k in range(reads):
            ctx.clock.sleep(max(0.0, t0 + k * p.interval - ctx.clock.now()))  # on schedule, whatever a read took
            t = ctx.clock.now() - t0
            r = force.measure() if p.hold_bias else _read(force, v, p.compliance)
            in_compliance = r.compliance or r.overflow
            g = r.current / r.voltage if r.voltage and math.isfinite(r.current) else float("nan")
            yield {"index": k, "t": t, "v": r.voltage, "i": r.current, "g": g, "compliance": in_compliance}
            if k % 10 == 0 or k == reads - 1:
                _progress(ctx, device, f"read {k + 1} of {reads}")
            if in_compliance:
                raise DeviceFailure(f"{p.component} of {device} reads at compliance ({p.compliance:g} A) at "
                                    f"{v:g} V: not a state retention can follow")

    def analyze(self, data: pd.DataFrame, params: RetentionParams) -> dict[str, Any]:  # type: ignore[override]
        devices = {d: self._analyze_device(data[data["device"] == d], params) for d in _devices(data)}
        return {"devices": devices, "summary": self._summary(devices, params)}

    @staticmethod
    def _analyze_device(df: pd.DataFrame, p: RetentionParams) -> dict[str, Any]:
        t, g = df["t"].to_numpy(float), df["g"].to_numpy(float)
        out: dict[str, Any] = {"component": p.component, "v_read": p.read_voltage, "reads": int(len(df)),
                               "t_end": float(t[-1]) if len(t) else 0.0,
                               "g_first": float(g[0]) if len(g) else None, "g_last": float(g[-1]) if len(g) else None}
        try:
            fit = fit_log_drift(t, g, p.t1)
        except FitError as exc:
            out.update(fit_error=str(exc), passed=False)
            return out
        deviation = float(np.nanmax(np.abs(g / fit.g0 - 1.0)))
        drift = fit.change(out["t_end"])
        out.update(g0=fit.g0, nu_per_decade=fit.nu, drift=drift, change_measured=out["g_last"] / out["g_first"] - 1.0,
                   max_deviation=deviation, passed=abs(drift) <= p.tolerance and deviation <= p.tolerance)
        return out

    @staticmethod
    def _summary(devices: dict[str, dict[str, Any]], p: RetentionParams) -> dict[str, Any]:
        def col(key: str) -> list[float]:
            return [abs(r[key]) for r in devices.values() if r.get(key) is not None]

        return {
            "devices": len(devices),
            "component": p.component,
            "v_read": p.read_voltage,
            "duration": p.read_duration,
            "tolerance": p.tolerance,
            "worst_drift": _stat(col("drift"), "max"),
            "worst_deviation": _stat(col("max_deviation"), "max"),
            "passed": bool(devices) and all(r["passed"] for r in devices.values()),
        }
