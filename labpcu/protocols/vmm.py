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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.protocols.base import Block, PlotSpec, Protocol
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
    weights: tuple[float, ...] = param((25e-6, 50e-6, 80e-6), unit="S",
                                       help="M1 conductance of each row's cell (programmed by ISPP in vmm mode)")
    tolerance: float = param(3e-6, unit="S", limits=(1e-9, 1e-3), help="ISPP verify tolerance of the weights")
    input_sets: tuple[int, ...] = param((20, 1000), help="input matrices to apply, by column count (3×20, 3×1000)")
    x_min: float = param(0.25, limits=(0.0, 1.0), help="smallest input (small dot products magnify the relative error)")
    x_max: float = param(1.0, limits=(0.0, 1.0), help="largest input (1 = the full pulse)")
    input_bits: int = param(5, limits=(1, 16), help="input resolution: bit-planes of the pulse-width code")
    input_seed: int = param(0, limits=(0, 2**32 - 1), help="seed of the random input matrices")
    v_read: float = param(0.85, unit="V", limits=(0.01, 3.0),
                          help="word-line pulse amplitude: above the D1 knee, M1 below its threshold")
    cal_reads: int = param(4, limits=(1, 100), help="readings averaged per calibration point")
    i_compliance: float = param(5e-4, unit="A", limits=(1e-12, 1.0),
                                help="current compliance of every terminal (they share M1's current limit: see the bench)")
    op_time: float = param(20e-3, unit="s", limits=(1e-9, 10.0),
                           help="length of the whole pulse window of one input vector, for energy")
    configure: bool = param(True, help="program the weights first (off: already programmed)")
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
        with ctx.device_scope("crossbar"):
            if p.configure:
                g = [configure_device(bench, ctx.clock, d, "vmm", weight=w, tolerance=p.tolerance).g_m1
                     for d, w in zip(cells, p.weights)]
                self.programmed = {"cells": np.array(cells, dtype=object), "target": np.array(p.weights),
                                   "achieved": np.array(g)}
            bench.move_to(cells[0])
            routes: dict[str, Any] = {t: bench.pad(d, "WL") for t, d in zip(terminals, cells)}
            routes[terminals[-1]] = bench.pad(cells[0], "BL")
            bench.connect(routes, device_type=None)
            smus = [bench.smu(t) for t in terminals]
            xbar = Crossbar(smus[:-1], smus[-1], p.v_read, p.i_compliance)
            try:
                for smu in smus:
                    smu.source_voltage(0.0, p.i_compliance)
                    smu.output_on()
                xbar.state = [False] * ROWS
                yield from self._measure(ctx, p, xbar)
            finally:
                idle(smus)

    def _calibrate(self, ctx: RunContext, p: VmmParams, xbar: Crossbar) -> dict[str, Any]:
        offset = xbar.read([False] * ROWS, p.cal_reads)
        rows = [xbar.read([i == k for i in range(ROWS)], p.cal_reads) - offset for k in range(ROWS)]
        if min(rows) <= 0:
            raise ParameterError(f"vmm: a row draws no current at v_read = {p.v_read:g} V "
                                 f"(row currents {', '.join(f'{r:.3g}' for r in rows)} A): raise v_read")
        return {"offset": offset, "row_current": np.array(rows), "t": ctx.clock.now(), "v_read": p.v_read,
                "reads": p.cal_reads}

    def _measure(self, ctx: RunContext, p: VmmParams, xbar: Crossbar) -> Iterator[Block]:
        cal = self._calibrate(ctx, p, xbar)
        self.calibration = cal
        w = cal["row_current"]
        full = 2**p.input_bits - 1
        matrices = input_matrices(p)
        total, done = sum(n for n, _ in matrices), 0
        for n, x in matrices:
            codes = quantize(x, p.input_bits)
            chunk: list[tuple[float, ...]] = []
            for j in range(n):
                ctx.check()
                charge, energy = 0.0, 0.0
                for k in reversed(range(p.input_bits)):
                    on = [bool(c >> k & 1) for c in codes[:, j]]
                    if not any(on):
                        continue  # nothing driven: the plane carries only the offset, removed below
                    i_k = xbar.apply(on) - cal["offset"]
                    charge += (1 << k) * i_k
                    energy += p.v_read * abs(i_k) * p.op_time * (1 << k) / full
                chunk.append((ctx.clock.now(), j, *x[:, j], charge / full, energy))
                if len(chunk) == 100 or j == n - 1:
                    yield self._block(chunk, n, w)
                    chunk = []
                done += 1
                if done % 100 == 0:
                    ctx.progress(done, total, f"{done}/{total} vectors")

    @staticmethod
    def _block(rows: list[tuple[float, ...]], n: int, w: np.ndarray) -> Block:
        t, j, x1, x2, x3, charge, energy = (np.array(c, float) for c in zip(*rows))
        scale = float(w.sum())
        y_ideal = (w[0] * x1 + w[1] * x2 + w[2] * x3) / scale
        y = charge / scale
        return {"device": "crossbar", "repeat": np.zeros(len(t), np.int64), "t": t, "y": y, "y_ideal": y_ideal,
                "rel_error": relative_error(y, y_ideal), "energy": energy, "set": np.full(len(t), n, np.int64),
                "vector": j.astype(np.int64), "x1": x1, "x2": x2, "x3": x3, "charge": charge}

    def analyze(self, data: pd.DataFrame, params: Params) -> dict[str, Any]:
        p: VmmParams = params  # type: ignore[assignment]
        if not len(data):
            return {"summary": {"vectors": 0}}
        per_set = {f"mean_relative_error_3x{n}": float(g["rel_error"].mean()) for n, g in data.groupby("set")}
        main = data[data["set"] == max(p.input_sets)]
        summary = summarize_errors(main)
        summary.pop("per_unit", None)
        summary.update(per_set, vectors=int(len(main)), input_bits=p.input_bits, v_read=p.v_read,
                       figure="mean relative error over the largest input matrix (3×" f"{max(p.input_sets)})")
        results: dict[str, Any] = {"summary": summary}
        cal = getattr(self, "calibration", None)
        if cal is not None:
            results["calibration"] = cal
            results["summary"]["tile_rows"] = ROWS
        if getattr(self, "programmed", None):
            results["programmed"] = self.programmed
        centres = np.linspace(0.0, 1.0, TRANSFER_BINS + 2)[1:-1]
        results["codebook"] = {"vmm": codebook_spec(
            "vmm", "identity", ("y_ideal",), {"y_ideal": centres}, input_units=("A",), output_unit="A",
            input_scale=(1.0,), output_scale=1.0, clip=[[0.0, 1.0]],
            notes=f"column transfer of a 1×{ROWS} tile: expected (calibrated weights · inputs) -> measured, "
                  f"both normalized by the sum of the row currents; {p.input_bits}-bit pulse-width inputs")}
        return results
