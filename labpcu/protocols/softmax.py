"""``softmax``: softmax of vectors through exp, sum and divide, 3 PCUs per unit.

softmax(x)_i = e^{z_i} / Σ_j e^{z_j} with z = x/√d_k (pcu.md). A unit is one array
column in ``exp`` mode: row 1 the log PCU (a), row 2 the exponential PCU (e), row 3 the
antilog PCU (c)::

    exp:     I_i = current of e at V_e,ref + s_e·(z_i − max z)   (≤ I_u, no overflow)
    sum:     S = Σ_i I_i                                         (the summing node)
    divide:  V = V_c,ref + s_c·(V_a(I_i) − V_a(S)) / s_a  →  y_i = I_c / I_u

Unlike the multiplier, the exp stage must know its slope s = n·Vt to turn an input into
a voltage, so every PCU of a softmax unit is calibrated at two currents (reference and
slope); that is why its error is several times smaller than the divider's (pcu.md:
1.31 % against 5.66 %). Subtracting the largest input is what every softmax does to
keep exponentials in range; the bench does it on the inputs it applies.

The same unit computes sigmoid(x) = softmax((x, 0))_0, which the ``activation``
protocol uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.protocols.base import Block, DeviceFailure, PlotSpec
from labpcu.protocols.logdomain import (
    LogAntilogUnit,
    configure_unit,
    connect_unit,
    refine_exp_calibration,
    voltage_for_current,
)
from labpcu.protocols.operator_units import (
    COMMON_COLUMNS,
    EnergyMeter,
    OperatorUnit,
    UnitParams,
    UnitProtocol,
    codebook_spec,
    force_voltage,
    idle,
    relative_error,
    summarize_errors,
)
from labpcu.protocols.params import Params, param
from labpcu.protocols.registry import register

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.instruments.roles import SourceMeasureUnit
    from labpcu.protocols.context import RunContext

TRANSFER_BINS = 19


class SoftmaxUnit:
    """Exp, sum and log-domain divide on one calibrated unit (log a, exp e, antilog c)."""

    def __init__(self, smus: Sequence[Any], i_unit: float, v_compliance: float, i_compliance: float,
                 slope_ratio: float) -> None:
        log_a, exp_e, antilog, ground = smus
        self.exp_smu = exp_e
        self.i_compliance = i_compliance
        # the divider: log a twice (numerator, denominator), antilog c
        self.div = LogAntilogUnit(log_a, log_a, antilog, ground, i_unit, v_compliance, i_compliance)
        self.cal = self.div.calibrate("slope", slope_ratio)
        # the exp stage is calibrated as the antilog is, starting from its values
        d = self.div
        v_ref = voltage_for_current(exp_e, i_unit, d.ref_c, d.slope_c, i_compliance)
        self.ref_e, self.slope_e = refine_exp_calibration(exp_e, i_unit, slope_ratio, v_ref, d.slope_c, i_compliance)
        self.cal.update(ref_e=self.ref_e, slope_e=self.slope_e)
        self.i_unit = i_unit

    def exp(self, z: float, meter: EnergyMeter) -> float:
        """I_u·e^z for z ≤ 0."""
        r = meter.add(force_voltage(self.exp_smu, self.ref_e + self.slope_e * z, self.i_compliance))
        if not r.current > 0:
            raise DeviceFailure(f"exp PCU draws {r.current:.3g} A: not a forward diode")
        return r.current

    def divide(self, num: float, den: float, meter: EnergyMeter) -> float:
        """num/den (both currents) in network units, through log a and antilog c."""
        d = self.div
        v_num = d.log(d.log_a, num, meter)
        v_den = d.log(d.log_a, den, meter)
        v = d.ref_c + d.slope_c * (v_num - v_den) / d.slope_a
        return d.exp(v, meter) / self.i_unit

    def softmax(self, z: np.ndarray, meter: EnergyMeter) -> np.ndarray:
        shifted = z - np.max(z)
        currents = np.array([self.exp(float(s), meter) for s in shifted])
        total = float(currents.sum())
        return np.array([self.divide(float(i), total, meter) for i in currents])


def open_softmax_unit(bench: Bench, unit: OperatorUnit, terminals: Sequence[str],
                      p: UnitParams) -> tuple[SoftmaxUnit, list[SourceMeasureUnit]]:
    smus = connect_unit(bench, unit, terminals, p.i_compliance)
    try:
        return SoftmaxUnit(smus, p.i_unit, p.v_compliance, p.i_compliance, p.slope_ratio), smus
    except BaseException:
        idle(smus)
        raise


def softmax_ideal(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z))
    return e / e.sum()


@dataclass(frozen=True)
class SoftmaxParams(UnitParams):
    # smaller than the log-domain operators' 1 µA: the log PCU carries the sum of the
    # vector (up to length × I_u), whose drop across the series resistance does not
    # cancel between e_i and the sum; 0.2 µA keeps e^(−2)·I_u ≈ 27 nA well above I0
    i_unit: float = param(200e-9, unit="A", limits=(1e-12, 1e-3), help="unit current: the network value 1 (e^0)")
    # the slopes from I_u/2 to I_u, where the exponentials and their sums lie (0.14 to
    # 4 × I_u): a second point at 0.1·I_u reaches into I0's bend and costs 0.4–0.7 pp
    slope_ratio: float = param(0.5, limits=(1e-3, 0.9),
                               help="second calibration current, as a fraction of i_unit (slope calibration)")
    length: int = param(4, limits=(2, 64), help="vector length")
    vectors: int = param(25, limits=(1, 100_000), help="vectors per unit")
    x_scale: float = param(2.0, limits=(0.01, 100.0), help="inputs are uniform in ±x_scale before the 1/√d_k")
    d_k: int = param(0, limits=(0, 4096), help="key dimension of the 1/√d_k scaling (0: the vector length)")
    input_seed: int = param(0, limits=(0, 2**32 - 1), help="seed of the random input vectors")
    configure: bool = param(True, help="configure every PCU in exp mode first")


@register
class Softmax(UnitProtocol):
    name = "softmax"
    bench_seconds_per_device = 5.3  # s, measured by `labpcu demo`
    title = "Softmax through exp, sum and divide (3 PCUs per unit)"
    Params = SoftmaxParams
    columns = COMMON_COLUMNS + (
        Column("vector", "", "int64", "input vector"),
        Column("element", "", "int64", "element of the vector"),
        Column("x", "", "float64", "input before the 1/√d_k scaling"),
    )
    plot = PlotSpec(x="y_ideal", y=("y",), group="device", kind="scatter", title="softmax: measured vs ideal")

    @staticmethod
    def inputs(p: SoftmaxParams) -> np.ndarray:
        """The input vectors (the same for every unit), uniform in ±x_scale."""
        return np.random.default_rng(p.input_seed).uniform(-p.x_scale, p.x_scale, size=(p.vectors, p.length))

    def measure_unit(self, ctx: RunContext, params: Params, unit: OperatorUnit,
                     terminals: Sequence[str]) -> Iterator[Block]:
        p: SoftmaxParams = params  # type: ignore[assignment]
        scale = 1.0 / math.sqrt(p.d_k or p.length)
        if p.configure:
            configure_unit(ctx.bench, ctx.clock, unit, "exp")
        su, smus = open_softmax_unit(ctx.bench, unit, terminals, p)
        self.calibrations[unit.id] = {**su.cal, "pcus": ",".join(unit.pcus)}
        try:
            meter = EnergyMeter(p.op_time)
            for j, x in enumerate(self.inputs(p)):
                ctx.check()
                z = x * scale
                y = su.softmax(z, meter)
                ideal = softmax_ideal(z)
                n = len(x)
                yield {"repeat": np.zeros(n, np.int64), "t": np.full(n, ctx.clock.now()), "y": y,
                       "y_ideal": ideal, "rel_error": relative_error(y, ideal),
                       "energy": np.full(n, meter.take()), "vector": np.full(n, j, np.int64),
                       "element": np.arange(n, dtype=np.int64), "x": x}
        finally:
            idle(smus)

    def analyze(self, data: pd.DataFrame, params: Params) -> dict[str, Any]:
        p: SoftmaxParams = params  # type: ignore[assignment]
        if not len(data):
            return {"summary": {"units": 0}}
        summary = summarize_errors(data)
        # energy is stored per element row, once per vector: count it per vector
        summary["energy_per_op"] = float(data.groupby(["device", "vector"])["energy"].first().mean())
        summary.update(length=p.length, d_k=p.d_k or p.length)
        results: dict[str, Any] = {"summary": summary}
        if getattr(self, "calibrations", None):
            results["calibration"] = self.calibrations
        centres = np.linspace(0.0, 1.0, TRANSFER_BINS + 2)[1:-1]
        results["codebook"] = {"softmax": codebook_spec(
            "vector", "softmax", ("y_ideal",), {"y_ideal": centres}, input_units=("",), output_unit="",
            input_scale=(1.0,), output_scale=1.0, clip=[[0.0, 1.0]],
            ideal_params={"length": p.length, "d_k": p.d_k or p.length},
            notes="element transfer: ideal softmax output -> measured, vectors of length "
                  f"{p.length}, inputs scaled by 1/sqrt(d_k)")}
        return results
