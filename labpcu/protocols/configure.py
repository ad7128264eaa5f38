"""``configure``: put a PCU in an operating mode, verified by reads.

The modes (pcu.md, configurations table, *model* of the paper's Table S1):

==========  =====================  =====  =============================================
mode        M1                     M2     the WL→BL path computes
==========  =====================  =====  =============================================
``vmm``     programmed weight      LRS    current ∝ G_M1 above the diode knee
``softplus`` ≈ 10 kΩ               LRS    diode + series resistor: A·softplus(K·x)
``sigmoid`` LRS (saturated up)     HRS    D1 and D2 back to back: 2·sigmoid(K·x) − 1
``exp``     LRS (saturated up)     LRS    the exponential diode
==========  =====================  =====  =============================================

M1's range is measured first (:func:`~labpcu.protocols.programming.find_m1_range`):
a real bench does not know it, and it decides whether the mode is reachable at all. A
mode the device cannot reach (a weight outside its range, a G_max below the ≈ 10 kΩ
softplus needs) fails that device with a one-line reason before M2 is touched.

Operator protocols reuse :func:`configure_device` (or :func:`configure_steps`, which
also yields the measured rows for recording)::

    result = configure_device(ctx.bench, ctx.clock, "A1-R1C1", "vmm", weight=40e-6)
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.protocols.base import DEVICE_COLUMN, DeviceFailure, PlotSpec, Protocol
from labpcu.protocols.common import check_levels, connect_component
from labpcu.protocols.params import ParameterError, Params, param
from labpcu.protocols.programming import (
    LOOPS,
    IsppScheme,
    M1Range,
    SwitchScheme,
    check_loop,
    find_m1_range,
    program_conductance,
    read_current,
    read_resistance,
    resolve_terminals,
    switch_m2,
)
from labpcu.protocols.registry import register
from labpcu.units import format_quantity

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.clock import Clock
    from labpcu.instruments.roles import ProgramVerifyResult, SourceMeasureUnit
    from labpcu.protocols.context import RunContext

Block = dict[str, Any]


@dataclass(frozen=True)
class ModeSpec:
    """What a mode asks of the two memristors."""

    m1: str  # "weight", "softplus" or "lrs"
    m2: str  # "set" (LRS) or "reset" (HRS)


MODES: dict[str, ModeSpec] = {
    "vmm": ModeSpec("weight", "set"),
    "softplus": ModeSpec("softplus", "set"),
    "sigmoid": ModeSpec("lrs", "reset"),
    "exp": ModeSpec("lrs", "set"),
}


#: V, the largest set pulse for a fresh M2: its first set (forming) needs up to ~2× its
#: later set voltage, so a set not done by v_max goes on up to here
M2_V_FORM = 1.3


@dataclass(frozen=True)
class ConfigureOptions:
    """Everything :func:`configure_device` may be told; defaults follow pcu.md."""

    weight: float = 50e-6  # S, M1 in vmm mode
    tolerance: float = 5e-6  # S, M1 verify tolerance in vmm mode
    r_softplus: float = 10e3  # Ω, M1 in softplus mode
    softplus_tolerance: float = 0.1  # relative: "≈ 10 kΩ"
    lrs_fraction: float = 0.9  # M1 counts as LRS at >= this × its measured G_max
    verify_slack: float = 0.25  # the verify read may miss the tolerance by this fraction (drift, read noise)
    ispp: IsppScheme = field(default_factory=IsppScheme)
    switch: SwitchScheme = field(default_factory=lambda: SwitchScheme(v_form=M2_V_FORM))
    terminals: tuple[str, str] | None = None  # (force, ground); None: the bench's default pair
    loop: str = "auto"

    def __post_init__(self) -> None:
        if self.loop not in LOOPS:
            raise ParameterError(f"loop must be one of {', '.join(LOOPS)}, not {self.loop!r}")
        for name in ("weight", "tolerance", "r_softplus", "softplus_tolerance", "lrs_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ParameterError(f"configure: {name} must be a positive number, not {value!r}")


def check_configure_levels(bench: Bench, protocol: str, options: ConfigureOptions | None = None) -> None:
    """Refuse, before any I/O, programming levels :func:`configure_device` would use
    beyond the bench limits of M1 and M2 (or the range of the instruments it drives):
    operator protocols configure their PCUs first, and a refused pulse half-way
    through programming would leave a unit half configured."""
    o = options or ConfigureOptions()
    terminals = o.terminals or resolve_terminals(bench, (), protocol)
    check_levels(bench, "m1", protocol, terminals=terminals, **o.ispp.levels())
    sw = o.switch
    check_levels(bench, "m2", protocol, terminals=terminals, m2_v_max=sw.v_max, m2_v_form=sw.v_form,
                 m2_v_read=sw.v_read,
                 compliance_set=sw.compliance_set, compliance_reset=sw.compliance_reset)


@dataclass(frozen=True)
class M1Goal:
    """What M1 must become: the ISPP target and tolerance (None: stay saturated up),
    and the window the verify read must fall in."""

    target: float | None  # S
    tolerance: float  # S
    low: float  # S
    high: float  # S


@dataclass(frozen=True)
class ConfigureResult:
    """A configured PCU, as verified by the last reads."""

    device: str
    mode: str
    g_m1: float  # S, M1 read at the ISPP read voltage
    r_m2: float  # Ω, M2 read at the switch read voltage
    m1_range: M1Range
    m1_goal: M1Goal
    m2_state: str  # "LRS" or "HRS"


def _row(phase: str, component: str, amplitude: float, v_read: float, current: float) -> Block:
    g = current / v_read
    return {"component": component, "phase": phase, "amplitude": amplitude, "voltage": v_read, "current": current,
            "conductance": g, "resistance": 1.0 / g if g > 0 else math.inf}


def _rows(rows: list[Block]) -> Block:
    """Rows (dicts of scalars) as one block of columns."""
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _m1_goal(device: str, mode: str, rng: M1Range, o: ConfigureOptions) -> M1Goal:
    """M1's goal in ``mode``; DeviceFailure if the measured range cannot give it."""
    kind = MODES[mode].m1
    if kind == "lrs":
        return M1Goal(None, 0.0, o.lrs_fraction * rng.g_max, math.inf)
    if kind == "weight":
        w, tol = o.weight, o.tolerance
        if not rng.g_min - tol <= w <= rng.g_max + tol:
            raise DeviceFailure(f"vmm weight {format_quantity(w, 'S')} is outside {device}'s measured M1 range "
                                f"{rng.describe()}")
        slack = tol * (1.0 + o.verify_slack)
        return M1Goal(w, tol, w - slack, w + slack)
    g = 1.0 / o.r_softplus
    accept = o.softplus_tolerance * g
    if rng.g_max < g - accept:
        raise DeviceFailure(f"softplus needs M1 ≈ {format_quantity(o.r_softplus, 'Ω')} ({format_quantity(g, 'S')} "
                            f"± {o.softplus_tolerance:.0%}); {device}'s M1 reaches at most {format_quantity(rng.g_max, 'S')} "
                            f"({format_quantity(1.0 / rng.g_max, 'Ω')})")
    if rng.g_min > g + accept:
        raise DeviceFailure(f"softplus needs M1 ≈ {format_quantity(o.r_softplus, 'Ω')}; {device}'s M1 goes no lower than "
                            f"{format_quantity(rng.g_min, 'S')} ({format_quantity(1.0 / rng.g_min, 'Ω')})")
    # aim at the nominal value (or the nearest the device has), accept the "≈" window
    return M1Goal(min(max(g, rng.g_min), rng.g_max), min(o.tolerance, accept), g - accept, g + accept)


def _program_m1(device: str, res: ProgramVerifyResult) -> None:
    if not res.reached:
        raise DeviceFailure(f"M1 of {device} did not reach {format_quantity(res.target, 'S')} ± "
                            f"{format_quantity(res.tolerance, 'S')} in {res.pulses} pulses ({res.status}; "
                            f"last read {format_quantity(res.conductance, 'S')})")


def configure_steps(
    bench: Bench, clock: Clock, device: str, mode: str, options: ConfigureOptions | None = None
) -> Generator[Block, None, ConfigureResult]:
    """Configure ``device`` for ``mode``, yielding blocks of the reads taken (for a
    recorder); returns the :class:`ConfigureResult`. Raises DeviceFailure with a
    one-line reason when the device cannot be put in the mode."""
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    o = options or ConfigureOptions()
    terminals = o.terminals or resolve_terminals(bench, (), "configure")
    spec, s, sw = MODES[mode], o.ispp, o.switch

    # M1: its range, whether the mode is reachable, then the state
    force, ground = connect_component(bench, device, "m1", terminals)
    rng = find_m1_range(force, clock, s)
    yield _rows([_row("m1_range", "m1", -s.v_max, s.v_read, rng.g_min * s.v_read),
                 _row("m1_range", "m1", s.v_max, s.v_read, rng.g_max * s.v_read)])
    goal = _m1_goal(device, mode, rng, o)
    if goal.target is not None:  # else find_m1_range left M1 saturated up: that is the LRS
        res = program_conductance(force, ground, clock, goal.target, goal.tolerance, s, loop=o.loop)
        yield _rows([_row("m1_program", "m1", a, s.v_read, i) for a, i, _ in res.trace])
        _program_m1(device, res)

    # M2: set (LRS) or reset (HRS)
    force, _ = connect_component(bench, device, "m2", terminals)
    result = switch_m2(force, clock, spec.m2, sw)
    yield _rows([_row("m2_switch", "m2", a, sw.v_read, i) for a, _, i, _ in result.trace])
    if not result.switched:
        top = max(sw.v_max, sw.v_form) if spec.m2 == "set" and sw.v_form is not None else sw.v_max
        raise DeviceFailure(f"M2 of {device} did not {spec.m2} up to {top:g} V "
                            f"(R = {format_quantity(result.r_after, 'Ω')} at +{sw.v_read:g} V)")

    # verify both with fresh reads
    force, _ = connect_component(bench, device, "m1", terminals)
    _output_on(force, s.compliance)
    g_m1 = read_current(force, s.v_read, s.compliance) / s.v_read
    force, _ = connect_component(bench, device, "m2", terminals)
    _output_on(force, sw.compliance_read)
    i_m2, r_m2 = read_resistance(force, sw.v_read, sw.compliance_read)
    force.source_voltage(0.0, sw.compliance_read)
    yield _rows([_row("verify", "m1", 0.0, s.v_read, g_m1 * s.v_read), _row("verify", "m2", 0.0, sw.v_read, i_m2)])
    _verify(device, mode, g_m1, goal, r_m2, o.switch)
    return ConfigureResult(device, mode, g_m1, r_m2, rng, goal, "LRS" if spec.m2 == "set" else "HRS")


def _output_on(smu: SourceMeasureUnit, compliance: float) -> None:
    """0 V, then output on: a fresh connection leaves every output off."""
    smu.source_voltage(0.0, compliance)
    smu.output_on()


def _verify(device: str, mode: str, g_m1: float, goal: M1Goal, r_m2: float, switch: SwitchScheme) -> None:
    if not goal.low <= g_m1 <= goal.high:
        want = (f">= {format_quantity(goal.low, 'S')}" if math.isinf(goal.high)
                else f"{format_quantity(goal.low, 'S')} to {format_quantity(goal.high, 'S')}")
        raise DeviceFailure(f"{mode}: M1 of {device} reads {format_quantity(g_m1, 'S')} at verify, not {want}")
    action = MODES[mode].m2
    if not switch.is_state(r_m2, action):
        state = "LRS" if action == "set" else "HRS"
        raise DeviceFailure(f"{mode}: M2 of {device} reads {format_quantity(r_m2, 'Ω')} at verify, not {state}")


def configure_device(
    bench: Bench, clock: Clock, device: str, mode: str, options: ConfigureOptions | None = None, **overrides: Any
) -> ConfigureResult:
    """Configure ``device`` for ``mode`` (vmm, softplus, sigmoid, exp) and verify it.

    ``overrides`` replace fields of ``options`` (e.g. ``weight=40e-6``). Raises
    :class:`DeviceFailure` with a one-line reason if the device cannot reach the mode.
    """
    o = replace(options or ConfigureOptions(), **overrides) if overrides else (options or ConfigureOptions())
    steps = configure_steps(bench, clock, device, mode, o)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


# ======================================================================= protocol
@dataclass(frozen=True)
class ConfigureParams(Params):
    mode: str = param("vmm", choices=tuple(MODES), help="operating mode (pcu.md configurations)")
    weight: float = param(50e-6, unit="S", limits=(1e-9, 1.0), help="M1 conductance in vmm mode")
    tolerance: float = param(5e-6, unit="S", limits=(1e-12, 1.0), help="M1 verify tolerance in vmm mode")
    r_softplus: float = param(10e3, unit="Ohm", limits=(1.0, 1e12), help="M1 resistance in softplus mode")
    softplus_tolerance: float = param(0.1, limits=(1e-3, 0.9), help="relative tolerance of the softplus resistance")
    lrs_fraction: float = param(0.9, limits=(0.1, 1.0), help="M1 counts as LRS at >= this fraction of its measured G_max")
    m1_v_max: float = param(1.0, unit="V", limits=(0.01, 20.0), help="largest M1 pulse (range finding and ISPP)")
    max_pulses: int = param(100, limits=(1, 10_000), help="ISPP pulses before giving up")
    m2_v_max: float = param(1.0, unit="V", limits=(0.01, 20.0), help="largest M2 switching pulse")
    m2_v_form: float = param(M2_V_FORM, unit="V", limits=(0.01, 20.0),
                             help="a set not done by m2_v_max goes on up to this: forming a fresh M2")
    m2_compliance: float = param(1e-3, unit="A", limits=(1e-9, 1.0), help="current compliance while setting M2")
    loop: str = param("auto", choices=LOOPS, help="where the ISPP loop runs: auto = on the instrument when it can")
    terminals: tuple[str, ...] = param((), help="force and ground SMUs; empty: the first source meter's two channels")

    def options(self, terminals: tuple[str, str] | None = None) -> ConfigureOptions:
        return ConfigureOptions(
            weight=self.weight, tolerance=self.tolerance, r_softplus=self.r_softplus,
            softplus_tolerance=self.softplus_tolerance, lrs_fraction=self.lrs_fraction,
            ispp=IsppScheme(v_max=self.m1_v_max, max_pulses=self.max_pulses),
            switch=SwitchScheme(v_max=self.m2_v_max, v_form=self.m2_v_form, compliance_set=self.m2_compliance),
            terminals=terminals, loop=self.loop)


@register
class Configure(Protocol):
    """Put each PCU in a mode (vmm, softplus, sigmoid, exp): measure M1's range,
    refuse a mode the device cannot reach, program M1, switch M2, verify both."""

    name = "configure"
    bench_seconds_per_device = 2.0  # s, measured by `labpcu demo`
    title = "PCU: configure a mode"
    Params = ConfigureParams
    columns = (
        DEVICE_COLUMN,
        Column("mode", "", "str"),
        Column("component", "", "str", "m1 or m2"),
        Column("phase", "", "str", "m1_range, m1_program, m2_switch or verify"),
        Column("amplitude", "V", description="the pulse before this read (0: none)"),
        Column("voltage", "V", description="read voltage"),
        Column("current", "A"),
        Column("conductance", "S"),
        Column("resistance", "Ohm"),
    )
    plot = PlotSpec("amplitude", ("resistance",), group="phase", yscale="log", kind="scatter",
                    title="reads while configuring")

    def validate(self, params: ConfigureParams, bench: Bench, devices: Sequence[str]) -> None:
        super().validate(params, bench, devices)
        terminals = resolve_terminals(bench, params.terminals, self.name)
        check_configure_levels(bench, self.name, params.options(terminals))
        check_loop(bench, terminals, params.loop, self.name)

    def measure(self, ctx: RunContext, p: ConfigureParams, device: str) -> Iterator[Block]:
        terminals = resolve_terminals(ctx.bench, p.terminals, self.name)
        for block in configure_steps(ctx.bench, ctx.clock, device, p.mode, p.options(terminals)):
            yield {**block, "mode": p.mode}
        k = ctx.devices.index(device) if device in ctx.devices else 0
        ctx.progress(k + 1, len(ctx.devices), device)

    def analyze(self, data: pd.DataFrame, p: ConfigureParams) -> dict[str, Any]:
        verify = data[data["phase"] == "verify"]
        m1 = verify[verify["component"] == "m1"].set_index("device")
        m2 = verify[verify["component"] == "m2"].set_index("device")
        ranges = data[data["phase"] == "m1_range"].groupby("device")["conductance"]
        devices = [d for d in m1.index if d in m2.index]
        return {
            "mode": p.mode,
            "configured": len(devices),
            "per_device": {
                "device": np.array(devices, dtype=object),
                "g_m1": m1.loc[devices, "conductance"].to_numpy(dtype=float),
                "r_m2": m2.loc[devices, "resistance"].to_numpy(dtype=float),
                "g_min": ranges.min().reindex(devices).to_numpy(dtype=float),
                "g_max": ranges.max().reindex(devices).to_numpy(dtype=float),
            },
        }
