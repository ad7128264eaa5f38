"""What every analog-operator protocol shares: operator units, their wiring, the
paper's error metric, energy bookkeeping, and the codebook description of a run.

An *operator unit* is a group of PCUs that computes one operator together (pcu.md:
"3 PCUs per unit"). On an array the three cells of one column make a unit: they share
the bit line, which the ground terminal holds at 0 V, and each has its own word line.
Cells on a diagonal would not do: every word line would then meet a grounded bit line
through an unselected cell, and a word line at the diode's forward voltage (≈ 0.5 V)
sets that cell's M2 (half-select disturb; the simulated wafer reproduces it). Single
PCUs of a quad site work too, each with its own bit line grounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from labpcu.data.columns import Column
from labpcu.protocols.base import Block, DeviceFailure, Protocol
from labpcu.protocols.common import settling
from labpcu.protocols.params import ParameterError, Params, param, show_list, show_value

if TYPE_CHECKING:
    from collections.abc import Iterator

    from labpcu.bench import Bench
    from labpcu.instruments.roles import IVReading, SourceMeasureUnit
    from labpcu.protocols.context import RunContext

UNIT_SIZE = 3
UNIT_TERMINALS = 4  # three word lines and the bit-line ground

#: columns every operator run stores (the codebook builder relies on them)
COMMON_COLUMNS: tuple[Column, ...] = (
    Column("device", "", "str", "operator unit id (U01, U02, ...)"),
    Column("repeat", "", "int64", "repeat of the same input"),
    Column("t", "s", "float64", "bench time of the operation"),
    Column("y", "", "float64", "measured output, network units"),
    Column("y_ideal", "", "float64", "ideal output, network units"),
    Column("rel_error", "", "float64", "|y - y_ideal| / |y_ideal|"),
    Column("energy", "J", "float64", "energy of the operation: sum of |V·I| of every biased terminal × op_time"),
)

#: how "relative error" is computed, stored with every operator run's results
ERROR_METHOD = ("relative error = |measured - expected| / |expected| for every output; the figure is the "
                "mean over all outputs of all units (pcu.md)")


def relative_error(y: np.ndarray, y_ideal: np.ndarray) -> np.ndarray:
    """|y − y_ideal| / |y_ideal| elementwise (NaN where the ideal output is 0)."""
    y, y_ideal = np.asarray(y, float), np.asarray(y_ideal, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y_ideal != 0, np.abs(y - y_ideal) / np.abs(y_ideal), np.nan)


# ------------------------------------------------------------------------ units
@dataclass(frozen=True)
class OperatorUnit:
    """PCUs that compute together, in their roles' order (e.g. log a, log b, antilog)."""

    id: str
    pcus: tuple[str, ...]


def unit_id(k: int) -> str:
    return f"U{k + 1:02d}"


def group_units(devices: Sequence[str], size: int, protocol: str) -> list[OperatorUnit]:
    """Consecutive groups of ``size`` PCUs, one unit each; refuses a remainder."""
    if len(devices) % size:
        raise ParameterError(f"{protocol} takes PCUs in groups of {size} (one unit each), got {len(devices)}")
    return [OperatorUnit(unit_id(k), tuple(devices[k * size:(k + 1) * size])) for k in range(len(devices) // size)]


def check_unit_layout(bench: Bench, unit: OperatorUnit, protocol: str) -> None:
    """A unit's PCUs sit under the probes together and, on an array, share one bit line
    with distinct word lines (see the module docstring)."""
    layout = bench.layout
    sites = {layout.devices[d].site for d in unit.pcus}
    if len(sites) != 1:
        raise ParameterError(f"{protocol}: unit {unit.id} spans sites {', '.join(sorted(sites))}; "
                             "its PCUs must be under the probes together")
    if len(set(unit.pcus)) != len(unit.pcus):
        raise ParameterError(f"{protocol}: unit {unit.id} names a PCU twice: {', '.join(unit.pcus)}")
    pads_wl = {bench.pad(d, "WL") for d in unit.pcus}
    pads_bl = {bench.pad(d, "BL") for d in unit.pcus}
    array = any(layout.devices[d].array for d in unit.pcus)
    if array and (len(pads_bl) != 1 or len(pads_wl) != len(unit.pcus)):
        raise ParameterError(f"{protocol}: unit {unit.id} ({', '.join(unit.pcus)}) must be one column of an "
                             "array (shared bit line, one word line each), e.g. A1-R1C1 A1-R2C1 A1-R3C1")


def column_units(arrays: Sequence[str], n_units: int) -> list[str]:
    """Device ids for ``n_units`` column units taken column by column from ``arrays``
    (A1 C1, A1 C2, A1 C3, A2 C1, ...): the default device list of a unit protocol."""
    out: list[str] = []
    for array in arrays:
        for col in (1, 2, 3):
            if len(out) >= 3 * n_units:
                return out
            out += [f"{array}-R{row}C{col}" for row in (1, 2, 3)]
    return out


@dataclass(frozen=True)
class UnitParams(Params):
    """The electrical parameters every unit protocol shares (its own come after)."""

    i_unit: float = param(50e-9, unit="A", limits=(1e-12, 1e-3), help="unit current: the network value 1 (e^0)")
    slope_ratio: float = param(0.1, limits=(1e-3, 0.9),
                               help="second calibration current, as a fraction of i_unit (slope calibration)")
    v_compliance: float = param(1.5, unit="V", limits=(0.01, 20.0), help="voltage compliance of the log stages")
    i_compliance: float = param(5e-4, unit="A", limits=(1e-12, 1.0),
                                help="current compliance of the exp and antilog stages")
    op_time: float = param(20e-3, unit="s", limits=(1e-9, 10.0),
                           help="duration of each stage, for energy (default: one reading of 1 PLC)")
    terminals: tuple[str, ...] = param((), help="the unit's three drive terminals (rows 1-3) and the bit-line "
                                                "ground (default: from the bench)")
    settle: float = param(0.05, unit="s", limits=(0.0, 10.0),
                          help="wait after each level before reading: device and cable capacitance (≈ 1.4 nF) "
                               "charge through the diode, τ = n·Vt/I·C ≈ 6 ms at 10 nA")


class UnitProtocol(Protocol):
    """Family base of protocols that measure operator units of three PCUs together.

    It validates the units (layout, terminals) before any I/O and runs them one by
    one, each in its own device scope: a unit that fails is recorded and the run goes
    on. Subclasses implement :meth:`measure_unit`; calibrations they put in
    ``self.calibrations[unit.id]`` are stored with the results."""

    _family = True
    min_devices = UNIT_SIZE

    def validate(self, params: Params, bench: Bench, devices: Sequence[str]) -> None:
        super().validate(params, bench, devices)
        for unit in group_units(devices, UNIT_SIZE, self.name):
            check_unit_layout(bench, unit, self.name)
        p: UnitParams = params  # type: ignore[assignment]
        terminals = operator_terminals(bench, p.terminals, self.name, UNIT_TERMINALS)
        check_operator_levels(bench, self.name, terminals, configure=getattr(p, "configure", True),
                              i_unit=p.i_unit, v_compliance=p.v_compliance, i_compliance=p.i_compliance,
                              **self.levels(p))

    def levels(self, params: Params) -> dict[str, float]:
        """Levels of the subclass's own parameters to check against the bench limits
        before any I/O (names starting ``i_`` or ``compliance`` are currents), beyond
        the unit current and the compliances every unit protocol has."""
        return {}

    def run(self, ctx: RunContext, params: Params) -> Iterator[Block]:
        units = group_units(ctx.devices, UNIT_SIZE, self.name)
        p: UnitParams = params  # type: ignore[assignment]
        terminals = operator_terminals(ctx.bench, p.terminals, self.name, UNIT_TERMINALS)
        self.calibrations: dict[str, dict[str, Any]] = {}
        with settling([ctx.bench.smu(t) for t in terminals], p.settle):
            for k, unit in enumerate(units):
                with ctx.device_scope(unit.id):
                    yield from self.measure_unit(ctx, params, unit, terminals)
                ctx.progress(k + 1, len(units), unit.id)

    def measure_unit(self, ctx: RunContext, params: Params, unit: OperatorUnit,
                     terminals: Sequence[str]) -> Iterator[Block]:
        """Measure one unit wired to ``terminals`` (three drives, then the ground)."""
        raise TypeError(f"protocol {self.name} must implement measure_unit()")


# ------------------------------------------------------------------------ levels
def check_operator_levels(bench: Bench, protocol: str, terminals: Sequence[str], *, configure: bool,
                          **levels: float) -> None:
    """Refuse, before any I/O, an operator's level above the bench limits. Operators
    drive word lines against grounded bit lines (``path``: the strictest device
    limits apply, as :meth:`Bench.connect` applies them) through ``terminals``; with
    ``configure`` the programming levels of :func:`configure_device` are checked too,
    since they are sent first (hundreds of messages before the first operation)."""
    from labpcu.protocols.common import check_levels
    from labpcu.protocols.configure import check_configure_levels

    check_levels(bench, "path", protocol, terminals=terminals, **levels)
    if "i_compliance" in levels:
        check_shared_compliance(bench, protocol, len(terminals), levels["i_compliance"])
    if configure:
        check_configure_levels(bench, protocol)


def check_shared_compliance(bench: Bench, protocol: str, n_terminals: int, i_compliance: float) -> None:
    """Every terminal of a unit reaches the same M1s: the Bench bounds the current
    through an element by half the sum of the terminals' compliances (the flow from
    those that push to those that take; :mod:`labpcu.device_limits`). Refuse offline a
    compliance the Bench would refuse at the first level, after the weights are
    programmed."""
    lims = bench.config.limits
    if not lims:
        return
    cap = min(lim.current for lim in lims.values())
    if n_terminals * i_compliance / 2 > cap * (1 + 1e-9):
        raise ParameterError(
            f"{protocol}: i_compliance = {i_compliance:g} A on {n_terminals} terminals lets {n_terminals * i_compliance / 2:g} A "
            f"through one device element, above the bench limit of {cap:g} A: use at most {2 * cap / n_terminals:g} A")


# --------------------------------------------------------------------- terminals
def operator_terminals(bench: Bench, terminals: Sequence[str], protocol: str, needed: int) -> tuple[str, ...]:
    """The terminals a unit protocol drives, in role order, the last one grounding the
    bit lines. Default: the first source meter's channels (the log stages, which need
    its 6½-digit voltmeter), then the analyzer's SMUs, the last of them as ground."""
    wired = [bench.config.matrix.rows[r] for r in sorted(bench.config.matrix.rows)]
    if terminals:
        chosen = tuple(terminals)
        unknown = [t for t in chosen if t not in wired]
        if unknown:
            raise ParameterError(f"{protocol}: terminal {show_value(unknown[0])} is not on a matrix row "
                                 f"(wired: {', '.join(wired)})")
        if len(set(chosen)) != len(chosen):
            raise ParameterError(f"{protocol}: terminals must be distinct, got {show_list(chosen)}")
        if len(chosen) != needed:
            raise ParameterError(f"{protocol}: needs {needed} terminals, got {len(chosen)}")
        return chosen
    if len(wired) < needed:
        raise ParameterError(f"{protocol}: needs {needed} source-measure units on the matrix, the bench has {len(wired)}")
    return tuple(wired[: needed - 1]) + (wired[-1],)


# ------------------------------------------------------------------------ energy
@dataclass
class EnergyMeter:
    """Adds up |V·I| of every terminal biased for one operation, times ``op_time``.

    The bench holds each stage for one reading; ``op_time`` is the time an operation
    is taken to last (a parameter), so the figure scales to the intended speed."""

    op_time: float
    power: float = 0.0

    def add(self, reading: IVReading) -> IVReading:
        p = abs(reading.voltage * reading.current)
        if math.isfinite(p):
            self.power += p
        return reading

    def take(self) -> float:
        """Energy of the operation so far (J), then start the next one."""
        e = self.power * self.op_time
        self.power = 0.0
        return e


# --------------------------------------------------------------------- readings
def force_current(smu: SourceMeasureUnit, amps: float, v_compliance: float) -> IVReading:
    """Force a current and read the voltage it takes (the log stage)."""
    smu.source_current(amps, v_compliance)
    return _read(smu, f"{amps:.3g} A needs more than the {v_compliance:g} V compliance")


def force_voltage(smu: SourceMeasureUnit, volts: float, i_compliance: float) -> IVReading:
    """Force a voltage and read the current it draws (the antilog stage)."""
    smu.source_voltage(volts, i_compliance)
    return _read(smu, f"{volts:.4g} V draws more than the {i_compliance:g} A compliance")


def _read(smu: SourceMeasureUnit, limited: str) -> IVReading:
    """One reading with the output on; a reading at the compliance limit or out of
    range is no operator output, so the unit fails with ``limited`` as its reason."""
    if not smu.output:
        smu.output_on()
    r = smu.measure()
    if r.compliance or r.overflow:
        raise DeviceFailure(f"{smu.name}: {limited}")
    return r


def idle(smus: Sequence[SourceMeasureUnit]) -> None:
    """0 V and outputs off: between units nothing stays biased."""
    for smu in smus:
        smu.source_voltage(0.0, smu.limits[1])
        smu.output_off()


# ---------------------------------------------------------------------- results
def summarize_errors(data: Any, by: str = "device") -> dict[str, Any]:
    """The paper's figure (mean relative error over all outputs) and per unit."""
    rel = data["rel_error"].to_numpy(float)
    per_unit = data.groupby(by, sort=False)["rel_error"].mean()
    energy = data["energy"].to_numpy(float)
    return {
        "mean_relative_error": float(np.nanmean(rel)) if len(rel) else math.nan,
        "median_relative_error": float(np.nanmedian(rel)) if len(rel) else math.nan,
        "max_relative_error": float(np.nanmax(rel)) if len(rel) else math.nan,
        "outputs": int(np.isfinite(rel).sum()),
        "units": int(len(per_unit)),
        "energy_per_op": float(np.nanmean(energy)) if len(energy) else math.nan,
        "error_method": ERROR_METHOD,
        "per_unit": {"unit": np.array([str(u) for u in per_unit.index], dtype=object),
                     "mean_relative_error": per_unit.to_numpy(float)},
    }


def codebook_spec(
    kind: str,
    ideal: str,
    inputs: Sequence[str],
    grid: Mapping[str, Sequence[float]],
    *,
    input_units: Sequence[str],
    output_unit: str,
    input_scale: Sequence[float],
    output_scale: float,
    input_offset: Sequence[float] | None = None,
    output_offset: float = 0.0,
    clip: Sequence[Sequence[float]] | None = None,
    where: Mapping[str, Any] | None = None,
    ideal_params: Mapping[str, Any] | None = None,
    noise_scope: str = "per_call",
    notes: str = "",
) -> dict[str, Any]:
    """How a run's table becomes a codebook table (the convention of
    :mod:`labpcu.data.codebook`): physical = network × scale + offset."""
    spec: dict[str, Any] = {
        "kind": kind,
        "ideal": ideal,
        "ideal_params": dict(ideal_params or {}),
        "inputs": list(inputs),
        "output": "y",
        "ideal_column": "y_ideal",
        "grid": {k: np.asarray(v, float) for k, v in grid.items()},
        "input_units": list(input_units),
        "output_unit": output_unit,
        "input_scale": [float(s) for s in input_scale],
        "input_offset": [float(s) for s in (input_offset or [0.0] * len(input_scale))],
        "output_scale": float(output_scale),
        "output_offset": float(output_offset),
        "noise_scope": noise_scope,
        "notes": notes,
    }
    if clip is not None:
        spec["clip"] = np.asarray(clip, float)
    if where:
        spec["where"] = dict(where)
    return spec
