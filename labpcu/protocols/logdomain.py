"""Log-domain operators: ``multiplier`` and ``divider`` (3 PCUs per unit, ``exp`` mode).

A PCU in ``exp`` mode is an exponential diode: a current I forced into its word line
takes V = n·Vt·ln(I/I0) (+ ohmic drops), a voltage V applied draws I0·exp(V/(n·Vt)).
So a unit of three computes in the log domain, division becoming subtraction::

    log a:    V_a = V(x1·I_u)          (force current, read voltage)
    log b:    V_b = V(x2·I_u)
    antilog:  V_c = V_c,ref + (V_a − V_a,ref) ± (V_b − V_b,ref)   → y = I_c / I_u

with I_u the unit current (network value 1) and V_ref each PCU's voltage at I_u.
The bench plays the summing amplifier of an integrated circuit: it reads V_a and V_b
and applies their sum to the antilog PCU.

Calibration (parameter ``calibration``):

* ``offset`` (default, the published figures): each PCU's V_ref at I_u, found on the
  log PCUs by forcing I_u and on the antilog PCU by a short voltage search. The log
  and antilog slopes n·Vt are taken as equal, so a unit's error is its devices'
  ideality mismatch (y = x1^(n_a/n_c)·x2^(n_b/n_c)) plus the series resistance at
  high current: this is what the paper's 6.61 % / 5.66 % measure.
* ``slope``: also each PCU's slope from a second current, which removes most of the
  mismatch (a better circuit than the paper's, for comparison).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.data.ideal import evaluate
from labpcu.protocols.base import Block, DeviceFailure, PlotSpec
from labpcu.protocols.configure import configure_device
from labpcu.protocols.operator_units import (
    COMMON_COLUMNS,
    EnergyMeter,
    OperatorUnit,
    UnitParams,
    UnitProtocol,
    codebook_spec,
    force_current,
    force_voltage,
    idle,
    relative_error,
    summarize_errors,
)
from labpcu.protocols.params import ParameterError, Params, param
from labpcu.protocols.registry import register

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.clock import Clock
    from labpcu.instruments.roles import SourceMeasureUnit
    from labpcu.protocols.context import RunContext

THERMAL_VOLTAGE_300K = 0.025852  # V, kT/q at 300 K
CALIBRATIONS = ("offset", "slope")
#: ideality assumed by the antilog voltage search before the slope is known
N_GUESS = 1.8
SEARCH_STEPS = 4


# ============================================================ exponential PCU search
def voltage_for_current(smu: SourceMeasureUnit, amps: float, start: float, slope: float,
                        i_compliance: float) -> float:
    """Voltage at which the exponential PCU on ``smu`` draws ``amps``: Newton steps on
    ln I with the slope (n·Vt) known or guessed. Only currents are read, so the search
    is as fine as the ammeter, not the voltmeter."""
    v = start
    for _ in range(SEARCH_STEPS):
        i = force_voltage(smu, v, i_compliance).current
        if not i > 0:
            raise DeviceFailure(f"{smu.name}: the PCU draws {i:.3g} A at {v:.3f} V: not a forward diode")
        v += slope * math.log(amps / i)
    return v


def refine_exp_calibration(smu: SourceMeasureUnit, i_unit: float, ratio: float, ref: float, slope_guess: float,
                           i_compliance: float) -> tuple[float, float]:
    """(V at i_unit, slope n·Vt) of an exponential PCU, from a first reference ``ref``
    found with ``slope_guess``: a second search at i_unit·ratio gives the slope, and the
    reference is searched again with it."""
    k = math.log(ratio)
    v_low = voltage_for_current(smu, i_unit * ratio, ref + slope_guess * k, slope_guess, i_compliance)
    slope = (v_low - ref) / k
    check_slope(smu.name, slope)
    return voltage_for_current(smu, i_unit, ref, slope, i_compliance), slope


def check_slope(name: str, slope: float) -> None:
    if not 0.5 * THERMAL_VOLTAGE_300K < slope < 5 * THERMAL_VOLTAGE_300K:
        raise DeviceFailure(f"calibration: {name} slope {slope * 1e3:.1f} mV per e-fold is not a diode's")


# ====================================================================== the unit
@dataclass
class LogAntilogUnit:
    """Two log PCUs and an antilog PCU wired to their terminals, with calibration."""

    log_a: SourceMeasureUnit
    log_b: SourceMeasureUnit
    antilog: SourceMeasureUnit
    ground: SourceMeasureUnit
    i_unit: float
    v_compliance: float
    i_compliance: float
    ref_a: float = math.nan
    ref_b: float = math.nan
    ref_c: float = math.nan
    slope_a: float = N_GUESS * THERMAL_VOLTAGE_300K
    slope_b: float = N_GUESS * THERMAL_VOLTAGE_300K
    slope_c: float = N_GUESS * THERMAL_VOLTAGE_300K

    def log(self, smu: SourceMeasureUnit, amps: float, meter: EnergyMeter | None = None) -> float:
        r = force_current(smu, amps, self.v_compliance)
        if meter is not None:
            meter.add(r)
        return r.voltage

    def exp(self, volts: float, meter: EnergyMeter | None = None) -> float:
        r = force_voltage(self.antilog, volts, self.i_compliance)
        if meter is not None:
            meter.add(r)
        return r.current

    def calibrate(self, calibration: str, ratio: float) -> dict[str, float]:
        """Measure the references at I_u (and the slopes from I_u·ratio)."""
        self.ref_a = self.log(self.log_a, self.i_unit)
        self.ref_b = self.log(self.log_b, self.i_unit)
        self.ref_c = voltage_for_current(self.antilog, self.i_unit, self.ref_a, self.slope_c, self.i_compliance)
        if calibration == "slope":
            k = math.log(ratio)
            self.slope_a = (self.log(self.log_a, self.i_unit * ratio) - self.ref_a) / k
            self.slope_b = (self.log(self.log_b, self.i_unit * ratio) - self.ref_b) / k
            check_slope(self.log_a.name, self.slope_a)
            check_slope(self.log_b.name, self.slope_b)
            self.ref_c, self.slope_c = refine_exp_calibration(self.antilog, self.i_unit, ratio, self.ref_c,
                                                              self.slope_c, self.i_compliance)
        return {"ref_a": self.ref_a, "ref_b": self.ref_b, "ref_c": self.ref_c,
                "slope_a": self.slope_a, "slope_b": self.slope_b, "slope_c": self.slope_c}

    def combine(self, v_a: float, v_b: float, sign: int) -> float:
        """The antilog voltage for log-domain a ± b."""
        la = (v_a - self.ref_a) / self.slope_a
        lb = (v_b - self.ref_b) / self.slope_b
        return self.ref_c + self.slope_c * (la + sign * lb)


def connect_unit(bench: Bench, unit: OperatorUnit, terminals: Sequence[str],
                 i_compliance: float) -> list[SourceMeasureUnit]:
    """Route each PCU's word line to its terminal and every bit line to the ground
    terminal (last), which is held at 0 V with the stages' current compliance (every
    terminal's compliance counts towards the current the bench allows through M1).
    Returns the SMUs in terminal order."""
    *drive, ground = terminals
    bench.move_to(unit.pcus[0])
    routes: dict[str, Any] = {t: bench.pad(d, "WL") for t, d in zip(drive, unit.pcus)}
    routes[ground] = sorted({bench.pad(d, "BL") for d in unit.pcus})
    bench.connect(routes, device_type=None)
    smus = [bench.smu(t) for t in terminals]
    g = smus[-1]
    g.source_voltage(0.0, i_compliance)
    g.output_on()
    return smus


def configure_unit(bench: Bench, clock: Clock, unit: OperatorUnit, mode: str) -> None:
    for pcu in unit.pcus:
        configure_device(bench, clock, pcu, mode)


# ====================================================================== protocols
@dataclass(frozen=True)
class LogDomainParams(UnitParams):
    grid_points: int = param(10, limits=(2, 200), help="input grid points per axis")
    x_min: float = param(0.1, limits=(1e-3, 1.0), help="smallest input (network units; 1 = the unit current)")
    x_max: float = param(1.0, limits=(1e-3, 10.0), help="largest input")
    repeats: int = param(3, limits=(1, 1000), help="passes over the grid")
    calibration: str = param("offset", choices=CALIBRATIONS,
                             help="offset: V_ref per PCU (the paper's figures); slope: also n·Vt per PCU")
    configure: bool = param(True, help="configure every PCU in exp mode first (off: already configured)")

    def check(self) -> None:
        if self.x_min >= self.x_max:
            raise ParameterError(f"x_min ({self.x_min:g}) must be below x_max ({self.x_max:g})")


class _LogDomainOperator(UnitProtocol):
    """Shared by multiplier and divider: the grid sweep over each unit."""

    _family = True
    sign: ClassVar[int]
    ideal: ClassVar[str]
    Params = LogDomainParams
    columns = COMMON_COLUMNS + (
        Column("x1", "", "float64", "first input, network units"),
        Column("x2", "", "float64", "second input, network units"),
        Column("v1", "V", "float64", "log a voltage"),
        Column("v2", "V", "float64", "log b voltage"),
        Column("v_out", "V", "float64", "antilog voltage applied"),
        Column("i_out", "A", "float64", "antilog current measured"),
    )
    plot = PlotSpec(x="y_ideal", y=("y",), group="device", kind="scatter", xscale="log", yscale="log",
                    title="measured vs ideal")

    def levels(self, params: Params) -> dict[str, float]:
        """The largest input current forced into a log PCU."""
        p: LogDomainParams = params  # type: ignore[assignment]
        return {"i_unit·x_max": p.i_unit * p.x_max}

    @staticmethod
    def grid(p: LogDomainParams) -> np.ndarray:
        return np.linspace(p.x_min, p.x_max, p.grid_points)

    def measure_unit(self, ctx: RunContext, params: Params, unit: OperatorUnit,
                     terminals: Sequence[str]) -> Iterator[Block]:
        p: LogDomainParams = params  # type: ignore[assignment]
        bench = ctx.bench
        if p.configure:
            configure_unit(bench, ctx.clock, unit, "exp")
        smus = connect_unit(bench, unit, terminals, p.i_compliance)
        lu = LogAntilogUnit(*smus, i_unit=p.i_unit, v_compliance=p.v_compliance, i_compliance=p.i_compliance)
        try:
            cal = lu.calibrate(p.calibration, p.slope_ratio)
            self.calibrations[unit.id] = {**cal, "pcus": ",".join(unit.pcus)}
            grid = self.grid(p)
            meter = EnergyMeter(p.op_time)
            for rep in range(p.repeats):
                for x1 in grid:
                    rows = []
                    for x2 in grid:
                        ctx.check()
                        v1 = lu.log(lu.log_a, x1 * p.i_unit, meter)
                        v2 = lu.log(lu.log_b, x2 * p.i_unit, meter)
                        v_out = lu.combine(v1, v2, self.sign)
                        i_out = lu.exp(v_out, meter)
                        rows.append((ctx.clock.now(), x1, x2, v1, v2, v_out, i_out, meter.take()))
                    yield self._block(rows, rep, p)
        finally:
            idle(smus)

    def _block(self, rows: list[tuple[float, ...]], rep: int, p: LogDomainParams) -> Block:
        t, x1, x2, v1, v2, v_out, i_out, energy = (np.array(c, float) for c in zip(*rows))
        y = i_out / p.i_unit
        y_ideal = evaluate(self.ideal, x1, x2)
        return {"repeat": np.full(len(t), rep, np.int64), "t": t, "y": y, "y_ideal": y_ideal,
                "rel_error": relative_error(y, y_ideal), "energy": energy, "x1": x1, "x2": x2,
                "v1": v1, "v2": v2, "v_out": v_out, "i_out": i_out}

    def analyze(self, data: pd.DataFrame, params: Params) -> dict[str, Any]:
        p: LogDomainParams = params  # type: ignore[assignment]
        if not len(data):
            return {"summary": {"units": 0}}
        grid = self.grid(p)
        summary = summarize_errors(data)
        summary.update(calibration=p.calibration, i_unit=p.i_unit)
        results: dict[str, Any] = {"summary": summary}
        cal = getattr(self, "calibrations", None)
        if cal:
            results["calibration"] = cal
        results["codebook"] = {self.name: codebook_spec(
            "elementwise2d", self.ideal, ("x1", "x2"), {"x1": grid, "x2": grid},
            input_units=("A", "A"), output_unit="A", input_scale=(p.i_unit, p.i_unit), output_scale=p.i_unit,
            clip=[[p.x_min, p.x_max]] * 2,
            notes=f"{self.name} units of 3 PCUs in exp mode, {p.calibration} calibration; read noise per call")}
        return results


#: the log-domain operating point (multiplier and divider): the exponential window of a
#: PCU in exp mode lies between I0 (≈ 50 pA: the "−1" of Shockley's law, and the
#: leakage) and the current at which the drop across its series resistance (Rs ≈ 300 Ω,
#: M1's 1 kΩ LRS, M2's ≈ 200 Ω filament) reaches n·Vt. At 1 µA the smallest product
#: (0.01·I_u) stays 100× above I0 and settles in ≈ 6 ms (τ = n·Vt/I·C with C ≈ 1.4 nF,
#: within ``settle``). The divider's quotients stay above 0.1·I_u, so it sits higher,
#: at 1.5 µA, where its largest quotient (15 µA) drops ≈ 20 mV. The offset calibration
#: (the paper's) then leaves the devices' ideality mismatch as the main error, with the
#: series drop second, as the error budget shows (``labpcu budget``).
LOG_DOMAIN_I_UNIT = 1e-6
DIVIDER_I_UNIT = 1.5e-6


@dataclass(frozen=True)
class MultiplierParams(LogDomainParams):
    i_unit: float = param(LOG_DOMAIN_I_UNIT, unit="A", limits=(1e-12, 1e-3), help="unit current: the network value 1")


@dataclass(frozen=True)
class DividerParams(LogDomainParams):
    i_unit: float = param(DIVIDER_I_UNIT, unit="A", limits=(1e-12, 1e-3), help="unit current: the network value 1")


@register
class Multiplier(_LogDomainOperator):
    name = "multiplier"
    bench_seconds_per_device = 11.4  # s, measured by `labpcu demo`
    title = "Log-domain multiplier: y = x1·x2 with 3 PCUs per unit"
    Params = MultiplierParams
    sign = +1
    ideal = "multiply"


@register
class Divider(_LogDomainOperator):
    name = "divider"
    bench_seconds_per_device = 10.1  # s, measured by `labpcu demo`
    title = "Log-domain divider: y = x1/x2 with 3 PCUs per unit"
    Params = DividerParams
    sign = -1
    ideal = "divide"
