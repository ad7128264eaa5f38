"""``vmm``: vector-matrix multiply on a 1×3 crossbar (one column of a 3×3 array).

The weights live in M1 of the three cells of a column (``vmm`` mode: M2 in LRS, D1 the
cell selector); the inputs drive the word lines and the bit line, held at 0 V by the
analyzer, sums the cell currents (Kirchhoff). Output = Σ_i I_i·x_i.

Inputs are encoded in time, as diode-selected crossbars are driven: each input is a
pulse of fixed amplitude ``v_read`` whose width is proportional to x. With x quantized
to ``input_bits`` bits, the pulse train is applied bit-plane by bit-plane (plane k lasts
2^k time units; a row is on in plane k when bit k of its input is set), and the charge
is Σ_k 2^k·I_k. The amplitude is fixed, so each cell sits at one operating point of its
exponential selector and the product is linear in x, which amplitude coding through a
diode is not (the D1 knee bends I(V) by tens of percent over any useful range).

Calibration, before the inputs (and stored with the run's results): the bit-line offset
with every row at 0 V, and each row's current at ``v_read`` alone (``cal_reads``
averaged readings). Expected output = Σ_i I_cal,i·x_i; outputs are normalized by
Σ_i I_cal,i so that x = 1 on every row gives 1. The error then measures the analog
multiply–accumulate (read noise, drift since calibration, input quantization), not the
programming error, which ``weight_statistics`` measures.

What the calibration hides, measured and stored too (results ``effective_weight`` and
``weights``): D1 in series with each M1 makes a row's current at ``v_read`` far from
proportional to its programmed conductance (the diode takes most of the pulse), so the
weight a network gets differs from the one it asked for. The **effective-weight map**
programs every cell of the column to each of ``map_levels`` in turn (ISPP, as
``configure`` does) and reads each row alone at ``v_read``, before any calibration;
weights are fractions of the top level (requested w = G/G_ref, effective
w_eff = I/I_ref with I_ref/G_ref the mean I/G of the cells at the top level, so a
full-scale weight is 1 on both sides), and the gain w_eff/w is what
:mod:`labpcu.data.codebook` hands trainers. The VMM's own cells get the same
comparison in the VMM's normalization (G_i/ΣG vs I_i/ΣI), and the VMM error is also
given before calibration (the expected output from the programmed weights).

Input quantization: the expected output uses the unquantized inputs, so the VMM
figure includes the ``input_bits`` rounding. The first ``compare_vectors`` vectors of
the largest matrix are applied again at each of ``compare_bits`` (column ``bits``), and
the analysis also states the error against the quantized inputs (no rounding error).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.protocols.base import Block, PlotSpec, Protocol
from labpcu.protocols.common import connect_component
from labpcu.protocols.configure import configure_device
from labpcu.protocols.operator_units import (
    COMMON_COLUMNS,
    OperatorUnit,
    check_operator_levels,
    check_unit_layout,
    codebook_spec,
    idle,
    operator_terminals,
    relative_error,
    summarize_errors,
)
from labpcu.protocols.params import ParameterError, Params, param
from labpcu.protocols.programming import IsppScheme, program_conductance, resolve_terminals
from labpcu.protocols.registry import register

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.instruments.roles import SourceMeasureUnit
    from labpcu.protocols.context import RunContext

ROWS = 3
#: bins of the column transfer (ideal → measured) in the codebook
TRANSFER_BINS = 19


@dataclass(frozen=True)
class VmmParams(Params):
    # a quarter, a half and four fifths of M1's 2 µS – 1 mS range, programmed to 3 % of it
    weights: tuple[float, ...] = param((250e-6, 500e-6, 800e-6), unit="S",
                                       help="M1 conductance of each row's cell (programmed by ISPP in vmm mode)")
    tolerance: float = param(30e-6, unit="S", limits=(1e-9, 1e-3), help="ISPP verify tolerance of the weights")
    input_sets: tuple[int, ...] = param((20, 1000), help="input matrices to apply, by column count (3×20, 3×1000)")
    x_min: float = param(0.25, limits=(0.0, 1.0), help="smallest input (small dot products magnify the relative error)")
    x_max: float = param(1.0, limits=(0.0, 1.0), help="largest input (1 = the full pulse)")
    input_bits: int = param(5, limits=(1, 16), help="input resolution: bit-planes of the pulse-width code")
    compare_bits: tuple[int, ...] = param((6,), help="other input resolutions applied to the first compare_vectors "
                                                     "vectors of the largest matrix (what quantization costs)")
    compare_vectors: int = param(200, limits=(1, 100_000), help="vectors applied again at each compare_bits")
    map_levels: tuple[float, ...] = param((100e-6, 250e-6, 400e-6, 550e-6, 700e-6, 850e-6), unit="S",
                                          help="M1 conductances programmed on every cell in turn for the "
                                               "effective-weight map; the last is full scale (empty: no map)")
    input_seed: int = param(0, limits=(0, 2**32 - 1), help="seed of the random input matrices")
    v_read: float = param(0.55, unit="V", limits=(0.01, 3.0),
                          help="word-line pulse amplitude: above the D1 knee, M1 below its threshold (at 0.55 V an "
                               "M1 of 25 µS or more sees ≤ 0.1 V; at 0.85 V it saw 0.3-0.4 V and the reads "
                               "reprogrammed it)")
    cal_reads: int = param(4, limits=(1, 100), help="readings averaged per calibration point")
    i_compliance: float = param(5e-4, unit="A", limits=(1e-12, 1.0),
                                help="current compliance of every terminal (they share M1's current limit: see the bench)")
    op_time: float = param(20e-3, unit="s", limits=(1e-9, 10.0),
                           help="length of the whole pulse window of one input vector, for energy")
    configure: bool = param(True, help="program the weights first (off: already programmed; no effective-weight map)")
    terminals: tuple[str, ...] = param((), help="row 1-3 and bit-line terminals (default: the analyzer's SMUs)")

    def check(self) -> None:
        if len(self.weights) != ROWS:
            raise ParameterError(f"weights needs {ROWS} values (one per row), got {len(self.weights)}")
        if any(not w > 0 for w in self.weights):
            raise ParameterError("weights must be positive conductances")
        if not self.input_sets or any(n < 1 or n > 100_000 for n in self.input_sets):
            raise ParameterError("input_sets must list matrix column counts between 1 and 100000")
        if self.x_min >= self.x_max:
            raise ParameterError(f"x_min ({self.x_min:g}) must be below x_max ({self.x_max:g})")
        if any(not 1 <= b <= 16 or b == self.input_bits for b in self.compare_bits):
            raise ParameterError(f"compare_bits must be 1-16 and differ from input_bits ({self.input_bits}), "
                                 f"got {self.compare_bits}")
        levels = self.map_levels
        if levels and (len(levels) < 2 or any(not g > 0 for g in levels)
                       or any(b <= a for a, b in zip(levels, levels[1:]))):
            raise ParameterError("map_levels must be at least 2 increasing positive conductances (or empty)")


def input_matrices(p: VmmParams) -> list[tuple[int, np.ndarray]]:
    """The input matrices (3 × n each), uniform in [x_min, x_max], from ``input_seed``."""
    rng = np.random.default_rng(p.input_seed)
    return [(n, rng.uniform(p.x_min, p.x_max, size=(ROWS, n))) for n in p.input_sets]


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Input codes 0 … 2^bits − 1 for x in [0, 1]."""
    return np.rint(np.clip(x, 0.0, 1.0) * (2**bits - 1)).astype(np.int64)


@dataclass
class Crossbar:
    """The column under test: one SMU per word line, one on the bit line."""

    rows: list[SourceMeasureUnit]
    bitline: SourceMeasureUnit
    v_read: float
    i_compliance: float
    state: list[bool | None] = field(default_factory=lambda: [None] * ROWS)

    def apply(self, on: Sequence[bool]) -> float:
        """Rows on at v_read (others at 0 V); the bit-line current (into the column).
        Only rows whose level changes are sent a command (half the traffic of a
        bit-serial input)."""
        for k, (smu, state) in enumerate(zip(self.rows, on)):
            if self.state[k] != state:
                smu.source_voltage(self.v_read if state else 0.0, self.i_compliance)
                self.state[k] = state
        return -self.bitline.measure().current

    def read(self, on: Sequence[bool], reads: int) -> float:
        return float(np.mean([self.apply(on) for _ in range(reads)]))

    def row_currents(self, reads: int) -> tuple[float, np.ndarray]:
        """(bit-line offset with every row at 0 V, each row's current alone at v_read
        with the offset removed), ``reads`` readings averaged each."""
        offset = self.read([False] * ROWS, reads)
        rows = [self.read([i == k for i in range(ROWS)], reads) - offset for k in range(ROWS)]
        return offset, np.array(rows)

    @property
    def smus(self) -> list[SourceMeasureUnit]:
        return [*self.rows, self.bitline]


def connect_crossbar(bench: Bench, cells: Sequence[str], terminals: Sequence[str], p: VmmParams) -> Crossbar:
    """Route the column (one terminal per word line, the last on the bit line), every
    terminal at 0 V with its output on."""
    bench.move_to(cells[0])
    routes: dict[str, Any] = {t: bench.pad(d, "WL") for t, d in zip(terminals, cells)}
    routes[terminals[-1]] = bench.pad(cells[0], "BL")
    bench.connect(routes, device_type=None)
    smus = [bench.smu(t) for t in terminals]
    xbar = Crossbar(smus[:-1], smus[-1], p.v_read, p.i_compliance)
    for smu in smus:
        smu.source_voltage(0.0, p.i_compliance)
        smu.output_on()
    xbar.state = [False] * ROWS
    return xbar


def effective_weight_map(target: np.ndarray, programmed: np.ndarray, current: np.ndarray) -> dict[str, Any]:
    """Requested and effective weights of map samples (arrays over cell × level, the
    last level full scale): w = G/G_ref, w_eff = I/I_ref with I_ref/G_ref = the mean
    I/G of the cells at full scale; gain = w_eff/w. The error figures leave the
    full-scale level out (its gain is 1 by construction)."""
    g_ref = float(np.max(target))
    per_s = current / programmed  # A/S: each cell's current per programmed conductance
    full = np.isclose(target, np.max(target))
    k_ref = float(np.mean(per_s[full]))
    gain = per_s / k_ref
    below = ~full & np.isfinite(gain)
    err = np.abs(gain[below] - 1.0)
    return {
        "g_ref": g_ref, "i_ref": k_ref * g_ref, "requested": programmed / g_ref, "effective": current / (k_ref * g_ref),
        "gain": gain, "target": target, "programmed": programmed, "current": current,
        "error_mean": float(err.mean()) if err.size else math.nan,
        "error_min": float(err.min()) if err.size else math.nan,
        "error_max": float(err.max()) if err.size else math.nan,
    }


@register
class Vmm(Protocol):
    name = "vmm"
    bench_seconds_per_device = 3.3  # s, measured by `labpcu demo`
    title = "Vector-matrix multiply on a 1×3 crossbar (weights in M1)"
    Params = VmmParams
    min_devices = ROWS
    columns = COMMON_COLUMNS + (
        Column("set", "", "int64", "input matrix: its column count (20, 1000)"),
        Column("vector", "", "int64", "input vector (matrix column)"),
        Column("bits", "", "int64", "input resolution of the row (input_bits, or one of compare_bits)"),
        Column("x1", "", "float64", "input of row 1, [0, 1]"),
        Column("x2", "", "float64", "input of row 2"),
        Column("x3", "", "float64", "input of row 3"),
        Column("charge", "A", "float64", "Σ_k 2^k·I_k / (2^bits − 1), offset removed: mean current over the window"),
    )
    plot = PlotSpec(x="y_ideal", y=("y",), kind="scatter", title="VMM: measured vs expected")

    def validate(self, params: Params, bench: Bench, devices: Sequence[str]) -> None:
        super().validate(params, bench, devices)
        if len(devices) != ROWS:
            raise ParameterError(f"vmm takes the {ROWS} cells of one array column, got {len(devices)}")
        check_unit_layout(bench, OperatorUnit("crossbar", tuple(devices)), self.name)
        p: VmmParams = params  # type: ignore[assignment]
        terminals = operator_terminals(bench, p.terminals, self.name, ROWS + 1)
        check_operator_levels(bench, self.name, terminals, configure=p.configure, v_read=p.v_read,
                              i_compliance=p.i_compliance)

    def run(self, ctx: RunContext, params: Params) -> Iterator[Block]:
        p: VmmParams = params  # type: ignore[assignment]
        bench, cells = ctx.bench, list(ctx.devices)
        terminals = operator_terminals(bench, p.terminals, self.name, ROWS + 1)
        self.programmed: dict[str, Any] = {}
        self.weight_map: dict[str, Any] | None = None
        with ctx.device_scope("crossbar"):
            if p.configure:
                g = [configure_device(bench, ctx.clock, d, "vmm", weight=w, tolerance=p.tolerance).g_m1
                     for d, w in zip(cells, p.weights)]
                if p.map_levels:
                    self.weight_map = self._map(ctx, p, cells, terminals)
                    g = self._program(ctx, p, cells, p.weights)  # the VMM's weights back
                self.programmed = {"cells": np.array(cells, dtype=object), "target": np.array(p.weights),
                                   "achieved": np.array(g)}
            xbar = connect_crossbar(bench, cells, terminals, p)
            try:
                yield from self._measure(ctx, p, xbar)
            finally:
                idle(xbar.smus)

    def _program(self, ctx: RunContext, p: VmmParams, cells: Sequence[str], levels: Sequence[float]) -> list[float]:
        """ISPP each cell's M1 to its level (M2 stays in the LRS configure left it in);
        the verified conductances. A level not reached keeps what was reached: the map
        is against the programmed conductance, so it stays a valid sample."""
        scheme = IsppScheme()
        pair = resolve_terminals(ctx.bench, (), self.name)
        out = []
        for d, level in zip(cells, levels):
            ctx.check()
            force, ground = connect_component(ctx.bench, d, "m1", pair)
            out.append(program_conductance(force, ground, ctx.clock, level, p.tolerance, scheme).conductance)
            idle([force, ground])
        return out

    def _map(self, ctx: RunContext, p: VmmParams, cells: Sequence[str], terminals: Sequence[str]) -> dict[str, Any]:
        """The effective-weight map: every cell at every level, each row read alone at
        v_read (no calibration involved)."""
        target, programmed, current = (np.empty((len(p.map_levels), ROWS)) for _ in range(3))
        for k, level in enumerate(p.map_levels):
            programmed[k] = self._program(ctx, p, cells, [level] * ROWS)
            target[k] = level
            xbar = connect_crossbar(ctx.bench, cells, terminals, p)
            try:
                _, current[k] = xbar.row_currents(p.cal_reads)
            finally:
                idle(xbar.smus)
            ctx.progress(k + 1, len(p.map_levels), f"effective-weight map: level {k + 1}/{len(p.map_levels)}")
        out = effective_weight_map(target.ravel(), programmed.ravel(), current.ravel())
        out.update(cell=np.array([c for _ in p.map_levels for c in cells], dtype=object), v_read=p.v_read,
                   levels=np.array(p.map_levels, float), reads=p.cal_reads)
        return out

    def _calibrate(self, ctx: RunContext, p: VmmParams, xbar: Crossbar) -> dict[str, Any]:
        offset, rows = xbar.row_currents(p.cal_reads)
        if min(rows) <= 0:
            raise ParameterError(f"vmm: a row draws no current at v_read = {p.v_read:g} V "
                                 f"(row currents {', '.join(f'{r:.3g}' for r in rows)} A): raise v_read")
        return {"offset": offset, "row_current": rows, "t": ctx.clock.now(), "v_read": p.v_read,
                "reads": p.cal_reads}

    def _measure(self, ctx: RunContext, p: VmmParams, xbar: Crossbar) -> Iterator[Block]:
        cal = self._calibrate(ctx, p, xbar)
        self.calibration = cal
        w = cal["row_current"]
        matrices = input_matrices(p)
        n_big, x_big = max(matrices, key=lambda m: m[0])
        n_cmp = min(p.compare_vectors, n_big)
        passes = [(n, x, p.input_bits) for n, x in matrices]
        passes += [(n_big, x_big[:, :n_cmp], b) for b in p.compare_bits]
        total, done = sum(x.shape[1] for _, x, _ in passes), 0
        for n, x, bits in passes:
            full = 2**bits - 1
            codes = quantize(x, bits)
            chunk: list[tuple[float, ...]] = []
            for j in range(x.shape[1]):
                ctx.check()
                charge, energy = 0.0, 0.0
                for k in reversed(range(bits)):
                    on = [bool(c >> k & 1) for c in codes[:, j]]
                    if not any(on):
                        continue  # nothing driven: the plane carries only the offset, removed below
                    i_k = xbar.apply(on) - cal["offset"]
                    charge += (1 << k) * i_k
                    energy += p.v_read * abs(i_k) * p.op_time * (1 << k) / full
                chunk.append((ctx.clock.now(), j, *x[:, j], charge / full, energy))
                if len(chunk) == 100 or j == x.shape[1] - 1:
                    yield self._block(chunk, n, bits, w)
                    chunk = []
                done += 1
                if done % 100 == 0:
                    ctx.progress(done, total, f"{done}/{total} vectors")

    @staticmethod
    def _block(rows: list[tuple[float, ...]], n: int, bits: int, w: np.ndarray) -> Block:
        t, j, x1, x2, x3, charge, energy = (np.array(c, float) for c in zip(*rows))
        scale = float(w.sum())
        y_ideal = (w[0] * x1 + w[1] * x2 + w[2] * x3) / scale
        y = charge / scale
        return {"device": "crossbar", "repeat": np.zeros(len(t), np.int64), "t": t, "y": y, "y_ideal": y_ideal,
                "rel_error": relative_error(y, y_ideal), "energy": energy, "set": np.full(len(t), n, np.int64),
                "vector": j.astype(np.int64), "bits": np.full(len(t), bits, np.int64), "x1": x1, "x2": x2, "x3": x3,
                "charge": charge}

    def analyze(self, data: pd.DataFrame, params: Params) -> dict[str, Any]:
        p: VmmParams = params  # type: ignore[assignment]
        if not len(data):
            return {"summary": {"vectors": 0}}
        if "bits" not in data:  # a run from before the column existed
            data = data.assign(bits=p.input_bits)
        own = data[data["bits"] == p.input_bits]
        per_set = {f"mean_relative_error_3x{n}": float(g["rel_error"].mean()) for n, g in own.groupby("set")}
        main = own[own["set"] == max(p.input_sets)]
        summary = summarize_errors(main)
        summary.pop("per_unit", None)
        summary.update(per_set, vectors=int(len(main)), input_bits=p.input_bits, v_read=p.v_read,
                       figure="mean relative error over the largest input matrix (3×" f"{max(p.input_sets)})")
        summary.update(quantization_figures(data, p))
        results: dict[str, Any] = {"summary": summary}
        cal = getattr(self, "calibration", None)
        if cal is not None:
            results["calibration"] = cal
            results["summary"]["tile_rows"] = ROWS
        if getattr(self, "programmed", None):
            results["programmed"] = self.programmed
            if cal is not None:
                weights = column_weights(self.programmed["achieved"], cal["row_current"])
                results["weights"] = weights
                summary.update(column_weight_error_mean=weights["error_mean"], column_weight_error_max=weights["error_max"],
                               mean_relative_error_uncalibrated=uncalibrated_error(main, self.programmed["achieved"],
                                                                                   cal["row_current"]))
        wmap = getattr(self, "weight_map", None)
        if wmap is not None:
            results["effective_weight"] = wmap
            summary.update(effective_weight_error_mean=wmap["error_mean"], effective_weight_error_min=wmap["error_min"],
                           effective_weight_error_max=wmap["error_max"], effective_weight_levels=len(wmap["levels"]))
        centres = np.linspace(0.0, 1.0, TRANSFER_BINS + 2)[1:-1]
        results["codebook"] = {"vmm": codebook_spec(
            "vmm", "identity", ("y_ideal",), {"y_ideal": centres}, input_units=("A",), output_unit="A",
            input_scale=(1.0,), output_scale=1.0, clip=[[0.0, 1.0]], where={"bits": p.input_bits},
            notes=f"column transfer of a 1×{ROWS} tile: expected (calibrated weights · inputs) -> measured, "
                  f"both normalized by the sum of the row currents; {p.input_bits}-bit pulse-width inputs"
                  + ("; effective_weight: requested -> effective weight (D1 in series), before calibration"
                     if wmap is not None else ""))}
        return results


def column_weights(programmed: Any, row_current: Any) -> dict[str, Any]:
    """The VMM column's weights in its own normalization: requested G_i/ΣG (programmed)
    against effective I_i/ΣI (row currents at v_read, before calibration)."""
    g, i = np.asarray(programmed, float), np.asarray(row_current, float)
    requested, effective = g / g.sum(), i / i.sum()
    rel = effective / requested - 1.0
    return {"requested": requested, "effective": effective, "relative_difference": rel,
            "error_mean": float(np.mean(np.abs(rel))), "error_max": float(np.max(np.abs(rel))),
            "normalization": "requested G_i/sum(G), effective I_i/sum(I) at v_read, before calibration"}


def uncalibrated_error(main: pd.DataFrame, programmed: Any, row_current: Any) -> float:
    """The VMM error had the expected output used the programmed weights instead of the
    calibrated row currents (same output normalization by ΣI)."""
    g = np.asarray(programmed, float)
    x = main[["x1", "x2", "x3"]].to_numpy(float)
    expected = x @ (g / g.sum())
    return float(np.nanmean(relative_error(main["y"].to_numpy(float), expected))) if len(main) else math.nan


def quantization_figures(data: pd.DataFrame, p: VmmParams) -> dict[str, float]:
    """The error over the same vectors at input_bits and at each compare_bits, and the
    error at input_bits against the quantized inputs (what remains without rounding)."""
    out: dict[str, float] = {}
    big = data[data["set"] == max(p.input_sets)]
    cmp_rows = big[big["bits"] != p.input_bits]
    n_cmp = int(cmp_rows["vector"].max()) + 1 if len(cmp_rows) else 0
    if n_cmp:
        for bits, g in big[big["vector"] < n_cmp].groupby("bits"):
            out[f"mean_relative_error_{int(bits)}bit"] = float(g["rel_error"].mean())
        out["compare_vectors"] = n_cmp
    own = big[big["bits"] == p.input_bits]
    if len(own):
        x = own[["x1", "x2", "x3"]].to_numpy(float)
        xq = quantize(x, p.input_bits) / (2**p.input_bits - 1)
        w = own["y_ideal"].to_numpy(float)
        # the calibrated weights, recovered from y_ideal = x·w (exact: a least-squares solve of 3 unknowns)
        coef, *_ = np.linalg.lstsq(x, w, rcond=None)
        out["mean_relative_error_quantized_ideal"] = float(np.nanmean(relative_error(own["y"].to_numpy(float),
                                                                                      xq @ coef)))
    return out
