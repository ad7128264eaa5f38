"""``activation``: softplus, sigmoid and GELU from configured PCUs, with fits of A and K.

Per unit (one array column, 3 PCUs):

* **softplus**: row 1 in ``softplus`` mode (M1 ≈ 10 kΩ, M2 in LRS), a voltage sweep of
  its WL→BL path: a diode with a series resistor, I(V) = A·softplus(K·(V − V0)). The
  current compliance keeps M1 below its switching threshold. Network units: x =
  K·(V − V0), y = I/A, against softplus(x).
* **sigmoid**, the paper's circuit (``sigmoid_circuit = "diodes"``, the default): row 2
  in ``sigmoid`` mode (M1 in LRS, M2 in HRS), so that D1 and D2 sit back to back on its
  WL→BL path. Two diodes in anti-series carry I = (I01 + I02)·sigmoid(K·(V − V0)) − I01,
  with K = 1/(n·Vt) ≈ 21 /V: pcu.md's 2·sigmoid(K·x) − 1 scaled by I0, a fraction of a
  nanoampere, so it is measured on the analyzer's SMUs (the unit's first and ground
  terminals). The fit of A, K, V0 and the offset gives the band's R² and K; network
  units x = K·(V − V0), y = (I − offset)/A against sigmoid(x) (the paper's bipolar
  form is 2y − 1).
* **sigmoid** through the softmax unit (``sigmoid_circuit = "softmax_unit"``): the unit
  in ``exp`` mode computes sigmoid(x) = e^x/(e^x + e^0), i.e. the softmax unit
  (:mod:`labpcu.protocols.softmax`) on the vector (x, 0); fit of A·sigmoid(K·(x − x0)).
* **GELU** ≈ x·sigmoid(1.702·x), from the same sigmoid circuit at 1.702·x, times x (the
  bench does that last multiplication; the multiplier unit would add its own ≈ 6 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.data.fits import BackToBackFit, FitError, fit_activation, fit_back_to_back
from labpcu.data.ideal import evaluate
from labpcu.protocols.base import Block, DeviceFailure, PlotSpec
from labpcu.protocols.common import connect_component, settling
from labpcu.protocols.configure import configure_device
from labpcu.protocols.logdomain import configure_unit
from labpcu.protocols.operator_units import (
    COMMON_COLUMNS,
    EnergyMeter,
    OperatorUnit,
    UnitParams,
    UnitProtocol,
    codebook_spec,
    idle,
    relative_error,
)
from labpcu.protocols.params import ParameterError, Params, param, show_list
from labpcu.protocols.registry import register
from labpcu.protocols.softmax import open_softmax_unit

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.protocols.context import RunContext

FUNCTIONS = ("softplus", "sigmoid", "gelu")
SIGMOID_CIRCUITS = ("diodes", "softmax_unit")
GELU_K = 1.702


@dataclass(frozen=True)
class ActivationParams(UnitParams):
    functions: tuple[str, ...] = param(FUNCTIONS, help="which functions to measure: softplus, sigmoid, gelu")
    v_start: float = param(0.3, unit="V", limits=(-3.0, 3.0), help="softplus sweep start (path voltage)")
    v_stop: float = param(1.0, unit="V", limits=(-3.0, 3.0), help="softplus sweep stop")
    points: int = param(41, limits=(8, 2001), help="points of the softplus sweep and of the sigmoid/GELU grid")
    compliance: float = param(15e-6, unit="A", limits=(1e-12, 1e-3),
                              help="softplus sweep current limit (keeps M1 under its threshold)")
    softplus_x_min: float = param(-4.0, limits=(-20.0, 20.0), help="softplus grid start (network units K·(V − V0))")
    softplus_x_max: float = param(2.5, limits=(-20.0, 20.0),
                                  help="softplus grid end (2.5: M1 stays below its switching threshold)")
    x_range: float = param(3.0, limits=(0.1, 20.0),
                           help="sigmoid and GELU inputs span ±x_range (GELU at 3 needs ±0.25 V + V0 on the diodes)")
    repeats: int = param(2, limits=(1, 100), help="passes over the softplus, sigmoid and GELU grids")
    sigmoid_circuit: str = param("diodes", choices=SIGMOID_CIRCUITS,
                                 help="diodes: D1 and D2 back to back (the paper's circuit); softmax_unit: "
                                      "e^x/(e^x + 1) from an exp-mode unit")
    sigmoid_v_range: float = param(0.35, unit="V", limits=(0.05, 0.4),
                                   help="back-to-back sweeps stay within ±this (M2 stays below its set voltage)")
    sigmoid_compliance: float = param(1e-6, unit="A", limits=(1e-12, 1e-3),
                                      help="current limit of the back-to-back sweep")
    sigmoid_settle: float = param(8.0, unit="s", limits=(0.0, 60.0),
                                  help="wait before each back-to-back reading: the node between the diodes charges "
                                       "its ≈ 3 nF through the forward diode at the plateau, τ ≈ C·n·Vt/(2·I0) ≈ 1.4 s")

    def check(self) -> None:
        bad = [f for f in self.functions if f not in FUNCTIONS]
        if bad or not self.functions:
            raise ParameterError(f"functions must be among {', '.join(FUNCTIONS)}, got {show_list(self.functions) or 'none'}")
        if self.softplus_x_min >= self.softplus_x_max:
            raise ParameterError(f"softplus_x_min ({self.softplus_x_min:g}) must be below softplus_x_max")
        if self.v_start >= self.v_stop:
            raise ParameterError(f"v_start ({self.v_start:g} V) must be below v_stop ({self.v_stop:g} V)")


@register
class Activation(UnitProtocol):
    name = "activation"
    bench_seconds_per_device = 20.3  # s, measured by `labpcu demo`
    title = "Activation functions: softplus, sigmoid and GELU from configured PCUs"
    Params = ActivationParams
    columns = COMMON_COLUMNS + (
        Column("function", "", "str", "softplus, sigmoid or gelu"),
        Column("x", "", "float64", "input, network units (softplus: K·(V − V0))"),
        Column("v", "V", "float64", "softplus: path voltage applied"),
        Column("i", "A", "float64", "softplus: path current measured"),
    )
    plot = PlotSpec(x="x", y=("y", "y_ideal"), group="function", title="activation: measured and ideal")

    def levels(self, params: Params) -> dict[str, float]:
        """The softplus sweep's ends and its compliance (the PCUs are always configured,
        so the configure levels are checked too: ``configure`` defaults to on)."""
        p: ActivationParams = params  # type: ignore[assignment]
        return {"v_start": p.v_start, "v_stop": p.v_stop, "compliance": p.compliance,
                "sigmoid_v_range": p.sigmoid_v_range, "compliance_sigmoid": p.sigmoid_compliance}

    def validate(self, params: Params, bench: Bench, devices: Sequence[str]) -> None:
        """The back-to-back sigmoid needs a PCU of its own: on an array, the cells that
        share its word and bit lines add sneak currents of the same size as its
        sub-nanoampere plateau (K falls from ≈ 21 to ≈ 14 /V)."""
        super().validate(params, bench, devices)
        p: ActivationParams = params  # type: ignore[assignment]
        if p.sigmoid_circuit == "diodes" and {"sigmoid", "gelu"} & set(p.functions):
            on_array = [d for d in devices[1::3] if bench.layout.devices[d].array]
            if on_array:
                raise ParameterError(
                    f"activation: the back-to-back sigmoid runs on each unit's second PCU, which must be a single "
                    f"PCU (quad site), not an array cell ({', '.join(on_array)}: its neighbours add sneak currents); "
                    "give single PCUs, e.g. S13 S14 S15, or sigmoid_circuit=softmax_unit")

    def measure_unit(self, ctx: RunContext, params: Params, unit: OperatorUnit,
                     terminals: Sequence[str]) -> Iterator[Block]:
        p: ActivationParams = params  # type: ignore[assignment]
        if "softplus" in p.functions:
            yield from self._softplus(ctx, p, unit.pcus[0])
        if {"sigmoid", "gelu"} & set(p.functions):
            if p.sigmoid_circuit == "diodes":
                yield from self._back_to_back(ctx, p, unit.pcus[1], (terminals[0], terminals[-1]))
            else:
                yield from self._sigmoid_gelu(ctx, p, unit, terminals)

    def _softplus(self, ctx: RunContext, p: ActivationParams, pcu: str) -> Iterator[Block]:
        """A voltage sweep fitted to A·softplus(K·(V − V0)) (rows ``softplus_sweep``),
        then ``repeats`` list sweeps at V = V0 + x/K on the fixed network grid x (rows
        ``softplus``), so that every unit's samples fall on the same grid points."""
        bench = ctx.bench
        configure_device(bench, ctx.clock, pcu, "softplus")
        force, ground = connect_component(bench, pcu, "path")
        try:
            v, i, ok = self._sweep(force, np.linspace(p.v_start, p.v_stop, p.points), p.compliance)
            try:
                fit = fit_activation("softplus", v[ok], i[ok], (float(np.max(i[ok])) / 3, 20.0, float(np.median(v))))
            except FitError as exc:
                raise DeviceFailure(f"softplus: {exc}") from None
            yield self._softplus_rows(ctx, p, "softplus_sweep", 0, fit.k * (v - fit.x0), v, i, ok, fit.a)
            xs = np.linspace(p.softplus_x_min, p.softplus_x_max, p.points)
            for rep in range(p.repeats):
                ctx.check()
                v, i, ok = self._sweep(force, fit.x0 + xs / fit.k, p.compliance)
                yield self._softplus_rows(ctx, p, "softplus", rep, xs, v, i, ok, fit.a)
        finally:
            idle([force, ground])
            bench.disconnect()

    @staticmethod
    def _sweep(force: Any, levels: np.ndarray, compliance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sweep = force.sweep_voltage(levels, compliance)
        ok = ~(np.asarray(sweep.compliance, bool) | np.asarray(sweep.overflow, bool))
        return np.asarray(sweep.source, float), np.asarray(sweep.current, float), ok

    @staticmethod
    def _softplus_rows(ctx: RunContext, p: ActivationParams, function: str, rep: int, x: np.ndarray,
                       v: np.ndarray, i: np.ndarray, ok: np.ndarray, a: float) -> Block:
        y = np.where(ok, i / a, np.nan)
        ideal = evaluate("softplus", x)
        n = len(x)
        return {"repeat": np.full(n, rep, np.int64), "t": np.full(n, ctx.clock.now()), "y": y, "y_ideal": ideal,
                "rel_error": relative_error(y, ideal), "energy": np.abs(v * i) * p.op_time,
                "function": function, "x": x, "v": v, "i": i}

    def _back_to_back(self, ctx: RunContext, p: ActivationParams, pcu: str,
                      terminals: tuple[str, str]) -> Iterator[Block]:
        """The paper's sigmoid on ``pcu`` in ``sigmoid`` mode, each reading waiting for
        the node between the diodes (``sigmoid_settle``)."""
        bench = ctx.bench
        configure_device(bench, ctx.clock, pcu, "sigmoid")
        force, ground = connect_component(bench, pcu, "path", terminals)
        try:
            with settling([force], p.sigmoid_settle):
                yield from self._back_to_back_sweeps(ctx, p, pcu, force)
        finally:
            idle([force, ground])
            bench.disconnect()

    def _back_to_back_sweeps(self, ctx: RunContext, p: ActivationParams, pcu: str, force: Any) -> Iterator[Block]:
        """A sweep of D1 and D2 back to back fitted to A·sigmoid(K·(V − V0)) + offset
        (rows ``sigmoid_sweep``), then ``repeats`` sweeps on the network grid, at
        V = V0 + x/K for sigmoid and V0 + 1.702·x/K for GELU (rows ``sigmoid``, ``gelu``)."""
        v, i, ok = self._sweep(force, np.linspace(-p.sigmoid_v_range, p.sigmoid_v_range, p.points),
                               p.sigmoid_compliance)
        try:
            fit = fit_back_to_back(v[ok], i[ok])
        except FitError as exc:
            raise DeviceFailure(f"sigmoid: {exc}") from None
        if not fit.a > 0 or not fit.k > 0:
            raise DeviceFailure(f"sigmoid: {pcu} does not saturate like two diodes back to back "
                                f"(A = {fit.a:.3g} A, K = {fit.k:.3g} /V)")
        yield self._b2b_rows(ctx, p, "sigmoid_sweep", 0, fit, v, i, ok, fit.k * (v - fit.v0))
        xs = np.linspace(-p.x_range, p.x_range, p.points)
        grids = [(fn, scale) for fn, scale in (("sigmoid", 1.0), ("gelu", GELU_K)) if fn in p.functions]
        for rep in range(p.repeats):
            for fn, scale in grids:
                ctx.check()
                volts = fit.v0 + scale * xs / fit.k
                if np.max(np.abs(volts)) > p.sigmoid_v_range * (1 + 1e-9):
                    raise DeviceFailure(f"{fn}: ±{p.x_range:g} needs up to {np.max(np.abs(volts)):.3f} V on {pcu} "
                                        f"(K = {fit.k:.1f} /V), beyond sigmoid_v_range = {p.sigmoid_v_range:g} V")
                v, i, ok = self._sweep(force, volts, p.sigmoid_compliance)
                yield self._b2b_rows(ctx, p, fn, rep, fit, v, i, ok, xs)

    @staticmethod
    def _b2b_rows(ctx: RunContext, p: ActivationParams, function: str, rep: int, fit: BackToBackFit,
                  v: np.ndarray, i: np.ndarray, ok: np.ndarray, x: np.ndarray) -> Block:
        s = np.where(ok, fit.sigmoid(v, i)[1], np.nan)  # sigmoid(K·(V − V0)) as measured
        if function == "gelu":
            y, ideal = x * s, evaluate("gelu", x, params={"k": GELU_K})
        else:
            y, ideal = s, evaluate("sigmoid", x)
        n = len(x)
        return {"repeat": np.full(n, rep, np.int64), "t": np.full(n, ctx.clock.now()), "y": y, "y_ideal": ideal,
                "rel_error": relative_error(y, ideal), "energy": np.abs(v * i) * p.op_time,
                "function": function, "x": x, "v": v, "i": i}

    def _sigmoid_gelu(self, ctx: RunContext, p: ActivationParams, unit: OperatorUnit,
                      terminals: Sequence[str]) -> Iterator[Block]:
        configure_unit(ctx.bench, ctx.clock, unit, "exp")
        su, smus = open_softmax_unit(ctx.bench, unit, terminals, p)
        xs = np.linspace(-p.x_range, p.x_range, p.points)
        meter = EnergyMeter(p.op_time)
        try:
            for rep in range(p.repeats):
                for fn in ("sigmoid", "gelu"):
                    if fn not in p.functions:
                        continue
                    ys, energy = [], []
                    for x in xs:
                        ctx.check()
                        z = GELU_K * x if fn == "gelu" else x
                        s = float(su.softmax(np.array([z, 0.0]), meter)[0])
                        ys.append(x * s if fn == "gelu" else s)
                        energy.append(meter.take())
                    ideal = evaluate(fn, xs, params={"k": GELU_K} if fn == "gelu" else None)
                    y = np.array(ys)
                    n = len(xs)
                    yield {"repeat": np.full(n, rep, np.int64), "t": np.full(n, ctx.clock.now()), "y": y,
                           "y_ideal": ideal, "rel_error": relative_error(y, ideal), "energy": np.array(energy),
                           "function": fn, "x": xs, "v": np.full(n, math.nan), "i": np.full(n, math.nan)}
        finally:
            idle(smus)

    @staticmethod
    def _softplus_fits(data: pd.DataFrame) -> dict[str, Any]:
        """pcu.md's fit of A, K on each unit's voltage sweep, in physical units (A in
        amperes, K in 1/V); the band figure is the worst unit's R²."""
        fits = []
        for _, d in data[data["function"] == "softplus_sweep"].groupby("device", sort=False):
            ok = np.isfinite(d["y"].to_numpy(float))
            v, i = d["v"].to_numpy(float)[ok], d["i"].to_numpy(float)[ok]
            try:
                fits.append(fit_activation("softplus", v, i, (float(i.max()) / 3, 20.0, float(np.median(v)))))
            except FitError:
                fits.append(None)
        good = [f for f in fits if f is not None]
        if not good:
            return {"softplus_r2": math.nan}
        return {"softplus_a": float(np.mean([f.a for f in good])), "softplus_k": float(np.mean([f.k for f in good])),
                "softplus_v0": float(np.mean([f.x0 for f in good])),
                "softplus_r2": min(f.r2 for f in good) if len(good) == len(fits) else math.nan,
                "softplus_fit_units": "A in amperes, K in 1/V, V0 in volts (mean over units); R² of the worst unit"}

    @staticmethod
    def _back_to_back_fits(data: pd.DataFrame) -> dict[str, Any]:
        """pcu.md's back-to-back sigmoid band: each unit's sweep fitted to
        A·sigmoid(K·(V − V0)) + offset; R² of the worst unit, K of every unit."""
        fits = []
        for _, d in data[data["function"] == "sigmoid_sweep"].groupby("device", sort=False):
            ok = np.isfinite(d["y"].to_numpy(float))
            try:
                fits.append(fit_back_to_back(d["v"].to_numpy(float)[ok], d["i"].to_numpy(float)[ok]))
            except FitError:
                fits.append(None)
        good = [f for f in fits if f is not None]
        if not good:
            return {"sigmoid_r2": math.nan, "sigmoid_circuit": "diodes"}
        ks = [f.k for f in good]
        return {"sigmoid_circuit": "diodes", "sigmoid_a": float(np.mean([f.a for f in good])),
                "sigmoid_k": float(np.mean(ks)), "sigmoid_k_per_volt": float(np.mean(ks)),
                "sigmoid_k_min": float(min(ks)), "sigmoid_k_max": float(max(ks)),
                "sigmoid_v0": float(np.mean([f.v0 for f in good])),
                "sigmoid_offset": float(np.mean([f.b for f in good])),
                "sigmoid_leakage": float(np.mean([f.g for f in good])),
                "sigmoid_r2": min(f.r2 for f in good) if len(good) == len(fits) else math.nan,
                "sigmoid_fit_units": "D1-D2 back to back, A·sigmoid(K·(V − V0)) + offset + leakage·V: A and "
                                     "offset in amperes, K in 1/V (mean over units; K min/max per unit), V0 in "
                                     "volts, leakage in siemens; R² of the worst unit"}

    def analyze(self, data: pd.DataFrame, params: Params) -> dict[str, Any]:
        p: ActivationParams = params  # type: ignore[assignment]
        summary: dict[str, Any] = {}
        specs: dict[str, Any] = {}
        for fn in p.functions:
            d = data[data["function"] == fn] if len(data) else data
            if not len(d):
                continue
            y, ideal, x = d["y"].to_numpy(float), d["y_ideal"].to_numpy(float), d["x"].to_numpy(float)
            summary[f"{fn}_mean_abs_error"] = float(np.nanmean(np.abs(y - ideal)))
            summary[f"{fn}_energy_per_op"] = float(np.nanmean(d["energy"]))
            if fn == "softplus":
                summary.update(self._softplus_fits(data))
                fit = None
            elif fn == "sigmoid" and p.sigmoid_circuit == "diodes":
                summary.update(self._back_to_back_fits(data))
                fit = None
            elif fn == "sigmoid":
                fit = fit_activation("sigmoid", x, y, (1.0, 1.0, 0.0))
            else:
                fit = None
            if fit is not None:
                summary.update({f"{fn}_a": fit.a, f"{fn}_k": fit.k, f"{fn}_x0": fit.x0, f"{fn}_r2": fit.r2})
            grid = (np.linspace(p.softplus_x_min, p.softplus_x_max, p.points) if fn == "softplus"
                    else np.linspace(-p.x_range, p.x_range, p.points))
            specs[fn] = codebook_spec(
                "elementwise1d", fn, ("x",), {"x": grid}, input_units=("",),
                output_unit="A" if fn == "softplus" else "", input_scale=(1.0,), output_scale=1.0,
                clip=[[float(grid.min()), float(grid.max())]], where={"function": fn},
                notes=_codebook_note(fn, p.sigmoid_circuit))
        energies = [v for k, v in summary.items() if k.endswith("_energy_per_op")]
        summary["energy_per_op"] = float(np.mean(energies)) if energies else math.nan
        return {"summary": summary, "codebook": specs}


def _codebook_note(function: str, circuit: str) -> str:
    if function == "softplus":
        return "softplus: x = K·(V − V0) and y = I/A with each unit's own fit of A, K, V0"
    if circuit == "diodes":
        return ("D1 and D2 back to back: x = K·(V − V0), sigmoid = (I − offset − leakage·V)/A with each unit's own fit; "
                "gelu = x·sigmoid(1.702x); the paper's bipolar form is 2·sigmoid − 1")
    return "exp unit: sigmoid(x) = e^x/(e^x + 1); gelu = x·sigmoid(1.702x)"
