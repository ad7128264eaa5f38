"""Programming protocols: ISPP for M1, set/reset for M2, and weight statistics.

Protocols
---------
``ispp``               program M1 to target conductances by Incremental Step Pulse
                       programming with verify (pcu.md: first pulse ±0.2 V, step ±0.1 V,
                       20 ms pulses, +0.01 V verify reads)
``binary_switch``      set or reset M2 with a ramped amplitude and a compliance, verified
                       by +0.1 V reads
``weight_statistics``  program many devices to many levels within each device's
                       measured range and report the programming-error distribution

Reusable pieces (the configure protocol and the operator protocols build on them)::

    force, ground = connect_component(bench, device, "m1")
    rng = find_m1_range(force, clock, IsppScheme())          # G_min, G_max; ends at G_max
    res = program_conductance(force, ground, clock, rng.at(0.5), 0.05 * rng.g_range)
    force, _ = connect_component(bench, device, "m2")
    sw = switch_m2(force, clock, "set", SwitchScheme())

Where the ISPP loop runs: a source meter that runs the loop itself (the role
capability :class:`~labpcu.instruments.roles.ProgramVerifier`, the 2600's TSP script)
is used when it can drive both terminals; otherwise the same algorithm runs on the
host, one pulse and one verify read at a time, the pulse width timed by the bench
clock. Both follow :func:`next_pulse`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.data.columns import Column
from labpcu.instruments.roles import ProgramVerifier, ProgramVerifyResult, SourceMeasureUnit
from labpcu.protocols.base import DEVICE_COLUMN, DeviceFailure, PlotSpec, Protocol
from labpcu.protocols.common import check_levels, connect_component, default_terminals, settling
from labpcu.protocols.params import ParameterError, Params, param
from labpcu.protocols.registry import register
from labpcu.units import format_quantity

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.clock import Clock
    from labpcu.protocols.context import RunContext

LOOPS = ("auto", "instrument", "host")

#: pcu.md's goal for ISPP: at least this fraction of attempts reach their target
ISPP_GOAL = 0.99
#: pcu.md's band for the programmed-weight error σ relative to the conductance range
WEIGHT_SIGMA_BAND = (0.020, 0.035)
#: quantile levels reported for the weight error distribution
QUANTILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


# =========================================================================== schemes
@dataclass(frozen=True)
class IsppScheme:
    """The pulse scheme of ISPP with verify; defaults are the paper's (pcu.md)."""

    v_start: float = 0.2  # V, first pulse magnitude (sign follows target − G)
    v_step: float = 0.1  # V, added to the magnitude at each pulse of the same sign
    v_max: float = 1.0  # V, largest magnitude (also the range-finding amplitude)
    width: float = 0.02  # s
    v_read: float = 0.01  # V, verify read (below the switching threshold)
    max_pulses: int = 100  # the bound on pulses per attempt
    compliance: float = 1e-3  # A

    @classmethod
    def from_params(cls, p: Any) -> IsppScheme:
        """The scheme from a Params object with the same field names."""
        return cls(**{f.name: getattr(p, f.name) for f in fields(cls)})

    def levels(self) -> dict[str, float]:
        """The levels to check against the bench limits of M1."""
        return {"v_max": self.v_max, "v_start": self.v_start, "v_read": self.v_read, "compliance": self.compliance}


@dataclass(frozen=True)
class SwitchScheme:
    """How M2 is switched: a ramp of pulses, each followed by a +``v_read`` read."""

    v_start: float = 0.15  # V, magnitude of the first pulse (set: +, reset: −)
    v_step: float = 0.05  # V
    v_max: float = 1.0  # V, give up above this magnitude
    v_form: float | None = None  # V, a set not done by v_max goes on up to here (forming a fresh cell); None: no
    width: float = 0.01  # s
    v_read: float = 0.1  # V (pcu.md's M2 read)
    compliance_set: float = 1e-3  # A; sets the LRS resistance (R_on ≈ k/I)
    compliance_reset: float = 1e-2  # A; the LRS must be able to carry the reset current
    r_lrs_max: float = 1e4  # Ω, at most this is LRS
    r_hrs_min: float = 1e6  # Ω, at least this is HRS
    #: s a read waits after its level is set: right after a pulse the cell's capacitance
    #: still discharges through the HRS (a reset read too early looks ~4× leakier)
    read_settle: float = 2.0

    @classmethod
    def from_params(cls, p: Any) -> SwitchScheme:
        return cls(**{f.name: getattr(p, f.name, f.default) for f in fields(cls)})

    @property
    def compliance_read(self) -> float:
        """Reads use the larger compliance: a strong filament must not clip the read."""
        return max(self.compliance_set, self.compliance_reset)

    def is_state(self, resistance: float, action: str) -> bool:
        """True if ``resistance`` is the state ``action`` ("set"/"reset") leads to."""
        return resistance <= self.r_lrs_max if action == "set" else resistance >= self.r_hrs_min


# ============================================================ shared building blocks
def resolve_terminals(bench: Bench, terminals: Sequence[str], protocol: str) -> tuple[str, str]:
    """(force, ground) from a parameter: empty means the bench's default pair."""
    if not terminals:
        return default_terminals(bench)
    if len(terminals) != 2:
        raise ParameterError(f"{protocol}: terminals takes two SMUs (force, ground), not {len(terminals)}")
    force, ground = terminals
    # the bench file's matrix rows, not the opened drivers: an offline bench (the
    # check before any I/O) has no drivers, and only a wired SMU can reach a pad
    wired = [bench.config.matrix.rows[r] for r in sorted(bench.config.matrix.rows)]
    for t in terminals:
        if t not in wired:
            raise ParameterError(f"{protocol}: no source-measure unit {t!r} on the matrix; have {', '.join(wired)}")
    if force == ground:
        raise ParameterError(f"{protocol}: force and ground are both {force}")
    return force, ground


def check_loop(bench: Bench, terminals: tuple[str, str], loop: str, protocol: str) -> None:
    """Refuse ``loop="instrument"`` (before any I/O) when the force SMU cannot run ISPP
    itself with this ground."""
    if loop != "instrument":
        return
    if not bench.connected:  # offline: only a source meter's two channels run the loop together
        inst = {t.partition(".")[0] for t in terminals}
        spec = bench.config.instruments.get(next(iter(inst)))
        able = len(inst) == 1 and spec is not None and spec.info.role == "smu"
    else:
        force, ground = bench.smu(terminals[0]), bench.smu(terminals[1])
        able = isinstance(force, ProgramVerifier) and force.can_program_verify(ground)
    if not able:
        raise ParameterError(f"{protocol}: {terminals[0]} cannot run ISPP on the instrument with ground "
                             f"{terminals[1]}; use loop=host or auto")


def next_pulse(g: float, target: float, last: float | None, scheme: IsppScheme) -> float:
    """The signed amplitude of the next pulse after a verify read of ``g`` (S).

    The instrument script's rule: the polarity follows the sign of target − G; the
    magnitude starts at ``v_start``, grows by ``v_step`` per pulse of the same polarity
    (at most ``v_max``) and restarts at ``v_start`` when the polarity flips, because a
    flip means the last pulse overshot and a large opposite pulse would overshoot back.
    ``last`` is the previous pulse (None before the first).
    """
    direction = 1.0 if g < target else -1.0
    if last is None or math.copysign(1.0, last) != direction:
        return direction * scheme.v_start
    return direction * min(round(abs(last) + scheme.v_step, 9), scheme.v_max)  # 1 nV grid: no 0.30000000000000004 V


def read_current(smu: SourceMeasureUnit, volts: float, compliance: float) -> float:
    """Source ``volts`` and read the current (A); NaN on overflow."""
    smu.source_voltage(volts, compliance)
    return smu.measure().current


def _pulse(smu: SourceMeasureUnit, clock: Clock, volts: float, width: float, compliance: float) -> None:
    """One host-timed pulse; the level stays until the caller's next one (a read)."""
    smu.source_voltage(volts, compliance)
    clock.sleep(width)


def host_program(
    force: SourceMeasureUnit, clock: Clock, target: float, tolerance: float, scheme: IsppScheme
) -> ProgramVerifyResult:
    """ISPP decided on the host: the fallback for SMUs that cannot run the loop.

    Same semantics as the instrument script (:func:`next_pulse`); the read level stays
    on between reads (it is below the threshold, so it does not program) and the
    force terminal ends at 0 V, output on.
    """
    s = scheme
    force.source_voltage(s.v_read, s.compliance)
    force.output_on()
    rows = [(0.0, force.measure().current)]
    amp: float | None = None
    while True:
        g = rows[-1][1] / s.v_read
        if not math.isfinite(g):
            status = "overflow"
            break
        if abs(g - target) <= tolerance:
            status = "reached"
            break
        if len(rows) > s.max_pulses:
            status = "max_pulses"
            break
        amp = next_pulse(g, target, amp, s)
        _pulse(force, clock, amp, s.width, s.compliance)
        rows.append((amp, read_current(force, s.v_read, s.compliance)))
    force.source_voltage(0.0, s.compliance)
    trace = np.array([(a, i, i / s.v_read) for a, i in rows], dtype=float)
    return ProgramVerifyResult(status == "reached", status, len(rows) - 1, float(trace[-1, 2]), target,
                               tolerance, trace, on_instrument=False)


def program_conductance(
    force: SourceMeasureUnit,
    ground: SourceMeasureUnit | None,
    clock: Clock,
    target: float,
    tolerance: float,
    scheme: IsppScheme = IsppScheme(),
    *,
    loop: str = "auto",
) -> ProgramVerifyResult:
    """Program M1 (connected between ``force`` and ``ground``) to ``target`` S within
    ``tolerance`` S by ISPP with verify.

    ``loop``: "auto" runs the loop on the instrument when the force SMU can
    (:class:`ProgramVerifier`, one message per attempt), else on the host;
    "instrument" insists; "host" always runs it here.
    """
    if loop not in LOOPS:
        raise ParameterError(f"loop must be one of {', '.join(LOOPS)}, not {loop!r}")
    if not (target > 0 and tolerance > 0):
        raise ParameterError(f"ISPP needs a target and a tolerance > 0 S, not {target!r} and {tolerance!r}")
    if loop != "host" and isinstance(force, ProgramVerifier) and force.can_program_verify(ground):
        s = scheme
        return force.program_and_verify(
            ground, target, tolerance, v_start=s.v_start, v_step=s.v_step, v_max=s.v_max, width=s.width,
            v_read=s.v_read, max_pulses=s.max_pulses, compliance=s.compliance)
    if loop == "instrument":
        raise ParameterError(f"{force.name} cannot run ISPP on the instrument with this ground")
    return host_program(force, clock, target, tolerance, scheme)


@dataclass(frozen=True)
class M1Range:
    """The conductance range of one M1, as measured by :func:`find_m1_range`."""

    g_min: float  # S
    g_max: float  # S

    @property
    def g_range(self) -> float:
        return self.g_max - self.g_min

    def at(self, fraction: float) -> float:
        """The conductance ``fraction`` of the way from G_min to G_max."""
        return self.g_min + fraction * self.g_range

    def describe(self) -> str:
        return f"{format_quantity(self.g_min, 'S')} to {format_quantity(self.g_max, 'S')}"


def _saturate(force: SourceMeasureUnit, clock: Clock, volts: float, pulses: int, s: IsppScheme) -> float:
    for _ in range(pulses):
        _pulse(force, clock, volts, s.width, s.compliance)
    return read_current(force, s.v_read, s.compliance) / s.v_read


def find_m1_range(
    force: SourceMeasureUnit, clock: Clock, scheme: IsppScheme = IsppScheme(), pulses: int = 3, min_ratio: float = 2.0
) -> M1Range:
    """Measure M1's range: ``pulses`` pulses of −``v_max`` then a read (G_min), the
    same at +``v_max`` (G_max). A real bench does not know a device's range, and the
    range sets what "a level" or "LRS" means. Leaves M1 at G_max, the force at 0 V.

    Raises :class:`DeviceFailure` if G_max is not ``min_ratio`` times G_min (an open,
    shorted or stuck device).
    """
    force.source_voltage(0.0, scheme.compliance)
    force.output_on()
    g_min = _saturate(force, clock, -scheme.v_max, pulses, scheme)
    g_max = _saturate(force, clock, scheme.v_max, pulses, scheme)
    force.source_voltage(0.0, scheme.compliance)
    if not (math.isfinite(g_min) and math.isfinite(g_max) and g_max > 0 and g_max >= min_ratio * max(g_min, 0.0)):
        raise DeviceFailure(f"M1 does not switch: G = {format_quantity(g_min, 'S')} after −{scheme.v_max:g} V "
                            f"and {format_quantity(g_max, 'S')} after +{scheme.v_max:g} V pulses")
    return M1Range(g_min, g_max)


@dataclass(frozen=True)
class SwitchResult:
    """Outcome of :func:`switch_m2`. ``trace`` rows: pulse amplitude (V, 0 for the
    first read), current during the pulse (A, NaN for the first read), read current
    (A), resistance at ``v_read`` (Ω)."""

    action: str
    switched: bool  # M2 ends in the state asked for
    already: bool  # it was in that state before any pulse
    v_switch: float  # V, the pulse after which it read switched (NaN if none was needed or it failed)
    r_before: float  # Ω
    r_after: float  # Ω
    trace: np.ndarray


def read_resistance(smu: SourceMeasureUnit, v_read: float, compliance: float) -> tuple[float, float]:
    """(current A, resistance Ω) at ``v_read``; a current at or below zero (noise on
    an open device) reads as infinite resistance."""
    i = read_current(smu, v_read, compliance)
    return i, (v_read / i if i > 0 else math.inf)


def switch_m2(force: SourceMeasureUnit, clock: Clock, action: str, scheme: SwitchScheme = SwitchScheme()) -> SwitchResult:
    """Set (+) or reset (−) M2, connected between ``force`` (CL2) and a grounded BL:
    read, then pulses of growing magnitude (``v_start``, ``v_step`` … ``v_max``), each
    followed by a read, until the read shows the new state. With ``v_form``, a set not
    done by ``v_max`` goes on up to ``v_form``: a fresh cell forms its first filament
    above its later set voltage.
    Does nothing if M2 already is in it. The caller decides whether not switching is
    a failure."""
    if action not in ("set", "reset"):
        raise ParameterError(f"M2 action must be 'set' or 'reset', not {action!r}")
    s = scheme
    sign, comp = (1.0, s.compliance_set) if action == "set" else (-1.0, s.compliance_reset)
    force.source_voltage(s.v_read, s.compliance_read)
    force.output_on()

    def read() -> tuple[float, float]:
        # only the reads wait: the reading of the pulse itself must end the pulse on time
        with settling([force], s.read_settle):
            return read_resistance(force, s.v_read, s.compliance_read)

    i0, r0 = read()
    rows = [(0.0, math.nan, i0, r0)]
    v_switch = math.nan
    done = s.is_state(r0, action)
    k = 0
    ceiling = max(s.v_max, s.v_form) if action == "set" and s.v_form is not None else s.v_max
    while not done:
        amp = s.v_start + k * s.v_step
        if amp > ceiling + 1e-9:
            break
        _pulse(force, clock, sign * amp, s.width, comp)
        i_pulse = force.measure().current
        i, r = read()
        rows.append((sign * amp, i_pulse, i, r))
        done = s.is_state(r, action)
        v_switch = sign * amp if done else v_switch
        k += 1
    force.source_voltage(0.0, s.compliance_read)
    trace = np.array(rows, dtype=float)
    return SwitchResult(action, done, len(rows) == 1 and done, v_switch, r0, float(trace[-1, 3]), trace)


# ================================================================ parameter pieces
def _ispp_fields() -> dict[str, Any]:
    """The scheme parameters every ISPP-using protocol declares (same names as
    :class:`IsppScheme`), with the paper's defaults."""
    return {
        "v_start": param(0.2, unit="V", limits=(0.01, 20.0), help="first pulse magnitude; the sign follows target − G"),
        "v_step": param(0.1, unit="V", limits=(0.0, 5.0), help="magnitude added at each further pulse of the same sign"),
        "v_max": param(1.0, unit="V", limits=(0.01, 20.0), help="largest pulse magnitude (also used to find the range)"),
        "width": param(0.02, unit="s", limits=(1e-4, 10.0), help="pulse width"),
        "v_read": param(0.01, unit="V", limits=(1e-4, 1.0), help="verify read voltage (must not program)"),
        "max_pulses": param(100, limits=(1, 10_000), help="pulses per attempt before giving up"),
        "compliance": param(1e-3, unit="A", limits=(1e-9, 1.0), help="current compliance of pulses and reads"),
    }


def _check_ispp_fields(p: Any) -> None:
    if not p.v_read < p.v_start <= p.v_max:
        raise ParameterError(f"need v_read < v_start <= v_max (a read must not program), got "
                             f"{p.v_read:g} V, {p.v_start:g} V, {p.v_max:g} V")


_F = _ispp_fields()
_TERMINALS_HELP = ("force and ground SMUs, e.g. b1500a.1,b1500a.2; empty: the first source meter's two channels")
_LOOP_HELP = "where the pulse-verify loop runs: auto = on the instrument when it can, else on the host"


@dataclass(frozen=True)
class IsppSchemeParams(Params):
    """The pulse scheme and where its loop runs: the fields every ISPP-using
    protocol shares (names as in :class:`IsppScheme`), with the paper's defaults."""

    v_start: float = _F["v_start"]
    v_step: float = _F["v_step"]
    v_max: float = _F["v_max"]
    width: float = _F["width"]
    v_read: float = _F["v_read"]
    max_pulses: int = _F["max_pulses"]
    compliance: float = _F["compliance"]
    loop: str = param("auto", choices=LOOPS, help=_LOOP_HELP)
    terminals: tuple[str, ...] = param((), help="force (on CL1) and ground (on CL2): " + _TERMINALS_HELP)

    def check(self) -> None:
        _check_ispp_fields(self)


# ============================================================================ ispp
@dataclass(frozen=True)
class IsppParams(IsppSchemeParams):
    targets: tuple[float, ...] = param((20e-6, 50e-6, 80e-6), unit="S", limits=(1e-9, 1e-2),
                                       help="conductances to program, in order (each starts where the last ended)")
    tolerance: float = param(5e-6, unit="S", limits=(1e-12, 1e-3),
                             help="verify tolerance: stop when |G − target| ≤ this (≈ 5 % of a typical M1 range)")
    find_range: bool = param(False, help="first saturate M1 down and up to measure G_min and G_max; "
                                         "a target outside that range fails the device")

    def check(self) -> None:
        if not self.targets:
            raise ParameterError("give at least one target conductance")
        super().check()


def _validate_m1(proto: Protocol, p: Any, bench: Bench) -> tuple[str, str]:
    terminals = resolve_terminals(bench, p.terminals, proto.name)
    check_levels(bench, "m1", proto.name, terminals=terminals, **IsppScheme.from_params(p).levels())
    check_loop(bench, terminals, p.loop, proto.name)
    return terminals


def _device_progress(ctx: RunContext, device: str, done: int, per_device: int) -> None:
    k = ctx.devices.index(device) if device in ctx.devices else 0
    ctx.progress(k * per_device + done, len(ctx.devices) * per_device, device)


def attempt_block(res: ProgramVerifyResult, attempt: int, rng: M1Range | None) -> dict[str, Any]:
    """One ISPP attempt as rows: one per verify read."""
    n = len(res.trace)
    return {
        "attempt": attempt,
        "target": res.target,
        "pulse": np.arange(n),
        "amplitude": res.trace[:, 0],
        "current": res.trace[:, 1],
        "conductance": res.trace[:, 2],
        "status": res.status,
        "on_instrument": res.on_instrument,
        "g_min": rng.g_min if rng else math.nan,
        "g_max": rng.g_max if rng else math.nan,
    }


def _check_targets(device: str, targets: Sequence[float], tolerance: float, rng: M1Range) -> None:
    for t in targets:
        if not rng.g_min - tolerance <= t <= rng.g_max + tolerance:
            raise DeviceFailure(f"target {format_quantity(t, 'S')} is outside {device}'s measured M1 range "
                                f"{rng.describe()}")


def summarize_attempts(data: pd.DataFrame) -> pd.DataFrame:
    """One row per ISPP attempt (its last verify read): device, attempt, target,
    status, reached, pulses, conductance, error (S)."""
    last = data.groupby(["device", "attempt"], sort=False).tail(1)
    out = pd.DataFrame({
        "device": last["device"].astype(str).to_numpy(),
        "attempt": last["attempt"].to_numpy(),
        "target": last["target"].to_numpy(),
        "status": last["status"].astype(str).to_numpy(),
        "pulses": last["pulse"].to_numpy(),
        "conductance": last["conductance"].to_numpy(),
    })
    out["reached"] = out["status"] == "reached"
    out["error"] = out["conductance"] - out["target"]
    return out


@register
class Ispp(Protocol):
    """Program M1 to target conductances by ISPP with verify (CL1 forced, CL2 at 0 V).

    Each attempt starts from where the last one left the device, so potentiation and
    depression are both exercised: the polarity follows the sign of target − G.
    Every verify read is stored (pulse 0 is the read before any pulse).
    """

    name = "ispp"
    bench_seconds_per_device = 1.2  # s, measured by `labpcu demo`
    title = "M1: incremental step pulse programming with verify"
    Params = IsppParams
    columns = (
        DEVICE_COLUMN,
        Column("attempt", "", "int64", "index of the target in this device's list"),
        Column("target", "S"),
        Column("pulse", "", "int64", "pulses before this verify read"),
        Column("amplitude", "V", description="the pulse before this read (0 for the first read)"),
        Column("current", "A", description="verify read current"),
        Column("conductance", "S", description="verify read current / v_read"),
        Column("status", "", "str", "how the attempt ended: reached, max_pulses or overflow"),
        Column("on_instrument", "", "bool", "the loop ran on the instrument"),
        Column("g_min", "S", description="measured M1 range (NaN unless find_range)"),
        Column("g_max", "S"),
    )
    plot = PlotSpec("pulse", ("conductance",), group="attempt", kind="line", title="ISPP verify reads")

    def validate(self, params: IsppParams, bench: Bench, devices: Sequence[str]) -> None:
        super().validate(params, bench, devices)
        _validate_m1(self, params, bench)

    def measure(self, ctx: RunContext, p: IsppParams, device: str) -> Iterator[dict[str, Any]]:
        scheme = IsppScheme.from_params(p)
        terminals = resolve_terminals(ctx.bench, p.terminals, self.name)
        force, ground = connect_component(ctx.bench, device, "m1", terminals)
        rng = None
        if p.find_range:
            rng = find_m1_range(force, ctx.clock, scheme)
            _check_targets(device, p.targets, p.tolerance, rng)
        for k, target in enumerate(p.targets):
            res = program_conductance(force, ground, ctx.clock, target, p.tolerance, scheme, loop=p.loop)
            yield attempt_block(res, k, rng)
            _device_progress(ctx, device, k + 1, len(p.targets))

    def passed(self, results: Mapping[str, Any]) -> bool | None:
        """The pcu.md criterion: at least 99 % of attempts reach their target."""
        return bool(results["meets_goal"]) if "meets_goal" in results else None

    def analyze(self, data: pd.DataFrame, p: IsppParams) -> dict[str, Any]:
        if data.empty:
            return {"attempts": 0}
        att = summarize_attempts(data)
        reached = att[att["reached"]]
        rate = float(att["reached"].mean())
        return {
            "attempts": len(att),
            "reached": len(reached),
            "success_rate": rate,
            "goal_success_rate": ISPP_GOAL,
            "meets_goal": rate >= ISPP_GOAL,
            "pulse_bound": p.max_pulses,
            "pulses_mean": float(att["pulses"].mean()),
            "pulses_median": float(att["pulses"].median()),
            "pulses_max": int(att["pulses"].max()),
            "pulses_max_reached": int(reached["pulses"].max()) if len(reached) else -1,
            "error_rms": float(np.sqrt(np.nanmean(att["error"] ** 2))),
            "error_max_abs": float(np.nanmax(np.abs(att["error"]))),
            "on_instrument_fraction": float(data.groupby(["device", "attempt"])["on_instrument"].first().mean()),
            "per_attempt": {c: att[c].to_numpy() for c in
                            ("device", "attempt", "target", "status", "reached", "pulses", "conductance", "error")},
        }


# =================================================================== binary_switch
@dataclass(frozen=True)
class SwitchParams(Params):
    action: str = param("set", choices=("set", "reset"), help="set M2 to its low- or reset it to its high-resistance state")
    v_start: float = param(0.15, unit="V", limits=(0.01, 20.0), help="first pulse magnitude (set +, reset −)")
    v_step: float = param(0.05, unit="V", limits=(0.001, 5.0), help="magnitude added at each further pulse")
    v_max: float = param(1.0, unit="V", limits=(0.01, 20.0), help="largest pulse magnitude; not switched by then is a failure")
    v_form: float | None = param(None, unit="V", limits=(0.01, 20.0),
                                 help="a set not done by v_max goes on up to this, to form a fresh cell (its first "
                                      "set is higher); none: stop at v_max")
    width: float = param(0.01, unit="s", limits=(1e-4, 10.0), help="pulse width")
    v_read: float = param(0.1, unit="V", limits=(1e-3, 1.0), help="read voltage (below the switching thresholds)")
    compliance_set: float = param(1e-3, unit="A", limits=(1e-9, 1.0),
                                  help="current compliance while setting (it fixes the LRS resistance)")
    compliance_reset: float = param(1e-2, unit="A", limits=(1e-9, 1.0), help="current compliance while resetting")
    r_lrs_max: float = param(1e4, unit="Ohm", limits=(1.0, 1e15), help="a read at most this is the LRS")
    r_hrs_min: float = param(1e6, unit="Ohm", limits=(1.0, 1e15), help="a read at least this is the HRS")
    terminals: tuple[str, ...] = param((), help="force (on CL2) and ground (on BL): " + _TERMINALS_HELP)

    def check(self) -> None:
        if not self.v_read < self.v_start <= self.v_max:
            raise ParameterError(f"need v_read < v_start <= v_max, got {self.v_read:g} V, "
                                 f"{self.v_start:g} V, {self.v_max:g} V")
        if not self.r_lrs_max < self.r_hrs_min:
            raise ParameterError(f"r_lrs_max {self.r_lrs_max:g} Ω must be below r_hrs_min {self.r_hrs_min:g} Ω")


def switch_block(sw: SwitchResult) -> dict[str, Any]:
    """A switching run as rows: the first read, then one per pulse."""
    t = sw.trace
    return {"action": sw.action, "step": np.arange(len(t)), "amplitude": t[:, 0], "pulse_current": t[:, 1],
            "read_current": t[:, 2], "resistance": t[:, 3]}


@register
class BinarySwitch(Protocol):
    """Set or reset M2 (CL2 forced, BL at 0 V): a ramp of pulses with a compliance,
    each verified by a read at +0.1 V, until the resistance crosses its threshold.

    Reports the switching voltage and the resistance before and after; a device that
    does not switch by ``v_max`` fails (the run goes on with the next device).
    """

    name = "binary_switch"
    bench_seconds_per_device = 1.0  # s, measured by `labpcu demo`
    title = "M2: set / reset with verify"
    Params = SwitchParams
    columns = (
        DEVICE_COLUMN,
        Column("action", "", "str"),
        Column("step", "", "int64", "0: the read before any pulse"),
        Column("amplitude", "V", description="the pulse before this read"),
        Column("pulse_current", "A", description="current at the end of the pulse"),
        Column("read_current", "A"),
        Column("resistance", "Ohm", description="at v_read"),
    )
    plot = PlotSpec("amplitude", ("resistance",), group="device", yscale="log", kind="scatter",
                    title="M2 resistance after each pulse")

    def validate(self, params: SwitchParams, bench: Bench, devices: Sequence[str]) -> None:
        super().validate(params, bench, devices)
        check_levels(bench, "m2", self.name, terminals=resolve_terminals(bench, params.terminals, self.name),
                     v_max=params.v_max, v_form=params.v_form if params.action == "set" else None,
                     v_read=params.v_read, compliance_set=params.compliance_set,
                     compliance_reset=params.compliance_reset)

    def measure(self, ctx: RunContext, p: SwitchParams, device: str) -> Iterator[dict[str, Any]]:
        force, _ = connect_component(ctx.bench, device, "m2", resolve_terminals(ctx.bench, p.terminals, self.name))
        sw = switch_m2(force, ctx.clock, p.action, SwitchScheme.from_params(p))
        yield switch_block(sw)
        _device_progress(ctx, device, 1, 1)
        if not sw.switched:
            top = max(p.v_max, p.v_form) if p.action == "set" and p.v_form is not None else p.v_max
            raise DeviceFailure(f"M2 did not {p.action} up to {top:g} V "
                                f"(R = {format_quantity(sw.r_after, 'Ohm')} at +{p.v_read:g} V)")

    def analyze(self, data: pd.DataFrame, p: SwitchParams) -> dict[str, Any]:
        scheme = SwitchScheme.from_params(p)
        devices: list[str] = []
        switched: list[bool] = []
        already: list[bool] = []
        v_sw: list[float] = []
        r0: list[float] = []
        r1: list[float] = []
        for dev, grp in data.groupby("device", sort=False):
            in_state = [scheme.is_state(r, p.action) for r in grp["resistance"]]
            devices.append(str(dev))
            switched.append(in_state[-1])
            already.append(in_state[0])
            first = next((k for k, v in enumerate(in_state) if v), None)
            v_sw.append(float(grp["amplitude"].iloc[first]) if first else math.nan)
            r0.append(float(grp["resistance"].iloc[0]))
            r1.append(float(grp["resistance"].iloc[-1]))
        r0a, r1a = np.array(r0), np.array(r1)
        ratio = r0a / r1a if p.action == "set" else r1a / r0a  # = I_LRS / I_HRS at v_read
        ok = np.array(switched)
        moved = ok & ~np.array(already)
        return {
            "action": p.action,
            "devices": len(devices),
            "switched": int(ok.sum()),
            "v_switch_mean": float(np.nanmean(v_sw)) if np.isfinite(v_sw).any() else math.nan,
            "on_off_ratio_min": float(np.min(ratio[moved])) if moved.any() else math.nan,
            "per_device": {"device": np.array(devices, dtype=object), "switched": ok, "already": np.array(already),
                           "v_switch": np.array(v_sw), "r_before": r0a, "r_after": r1a},
        }


# =============================================================== weight_statistics
@dataclass(frozen=True)
class WeightParams(IsppSchemeParams):
    levels: int = param(6, limits=(2, 256), help="target levels per device, evenly spaced within its measured range")
    margin: float = param(0.1, limits=(0.0, 0.45),
                          help="lowest and highest level as fractions of the range from each end")
    repeats: int = param(1, limits=(1, 100), help="passes over the levels")
    tolerance_fraction: float = param(0.05, limits=(1e-4, 0.5),
                                      help="verify tolerance as a fraction of each device's measured range")
    settle: float = param(10.0, unit="s", limits=(0.0, 1e6),
                          help="wait after programming before the read that counts as achieved")

    def fractions(self) -> np.ndarray:
        """The target levels as fractions of a device's range."""
        return np.linspace(self.margin, 1.0 - self.margin, self.levels)


@register
class WeightStatistics(Protocol):
    """Program every device to ``levels`` targets within its own measured range and
    report the programming-error distribution (the weight noise a trainer injects).

    How "achieved" is measured: after each ISPP attempt the device rests ``settle``
    seconds (default 10 s), then one verify read at ``v_read``: that read, with its
    read noise and the drift since the last pulse, is the achieved weight. The ISPP's
    own last read is kept too (``final``), so the settle's effect can be seen.

    Default tolerance: ±5 % of the device's range (the paper gives the scheme and
    σ = 0.027, no tolerance), for two reasons. The scheme cannot reliably do much
    better: its first pulses (0.2, 0.3, 0.4 V) move G by about 1 %, 8 % and 30 % of
    the remaining distance, so a target in a gap is jumped over back and forth; at
    ±2 % about 1–2 % of attempts on the simulated wafer hit the 100-pulse bound, at
    ±5 % none does. And the errors spread about evenly over ±t (σ ≈ t/√3 measured at
    t = 2–5 %), so the paper's σ = 0.027 implies t ≈ 0.047. A tighter tolerance gives
    a smaller σ for more pulses (and more limit cycles).

    Error references (codebook.md): σ of (achieved − target) relative to each device's
    range G_max − G_min (the headline, pcu.md band 0.020–0.035), relative to G_max
    (CrossSim), absolute (S; aihwkit works in µS) and proportional to the target.
    """

    name = "weight_statistics"
    bench_seconds_per_device = 42.0  # s, measured by `labpcu demo`
    title = "M1: weight programming error statistics"
    Params = WeightParams
    columns = (
        DEVICE_COLUMN,
        Column("repeat", "", "int64"),
        Column("level", "", "int64", "index of the target level"),
        Column("fraction", "", description="target as a fraction of the device's range"),
        Column("target", "S"),
        Column("achieved", "S", description="read after the settle time"),
        Column("final", "S", description="the ISPP's last verify read"),
        Column("pulses", "", "int64"),
        Column("status", "", "str"),
        Column("g_min", "S", description="measured M1 range"),
        Column("g_max", "S"),
        Column("t", "s", description="bench time of the achieved read"),
    )
    plot = PlotSpec("target", ("achieved",), group="device", kind="scatter", title="achieved vs target conductance")

    def validate(self, params: WeightParams, bench: Bench, devices: Sequence[str]) -> None:
        super().validate(params, bench, devices)
        _validate_m1(self, params, bench)

    def measure(self, ctx: RunContext, p: WeightParams, device: str) -> Iterator[dict[str, Any]]:
        scheme = IsppScheme.from_params(p)
        force, ground = connect_component(ctx.bench, device, "m1", resolve_terminals(ctx.bench, p.terminals, self.name))
        rng = find_m1_range(force, ctx.clock, scheme)
        fractions = p.fractions()
        total = p.repeats * len(fractions)
        for rep in range(p.repeats):
            for k, frac in enumerate(fractions):
                target = rng.at(float(frac))
                res = program_conductance(force, ground, ctx.clock, target, p.tolerance_fraction * rng.g_range,
                                          scheme, loop=p.loop)
                ctx.clock.sleep(p.settle)
                achieved = read_current(force, p.v_read, p.compliance) / p.v_read
                yield {"repeat": rep, "level": k, "fraction": float(frac), "target": target, "achieved": achieved,
                       "final": res.conductance, "pulses": res.pulses, "status": res.status,
                       "g_min": rng.g_min, "g_max": rng.g_max, "t": ctx.clock.now()}
                force.source_voltage(0.0, p.compliance)
                _device_progress(ctx, device, rep * len(fractions) + k + 1, total)

    def analyze(self, data: pd.DataFrame, p: WeightParams) -> dict[str, Any]:
        return weight_error_statistics(data)


def weight_error_statistics(data: pd.DataFrame) -> dict[str, Any]:
    """The error distribution of a weight_statistics table (see that protocol)."""
    if data.empty:
        return {"attempts": 0}
    g_range = (data["g_max"] - data["g_min"]).to_numpy()
    err = (data["achieved"] - data["target"]).to_numpy()
    rel = err / g_range
    final_rel = (data["final"] - data["target"]).to_numpy() / g_range
    ok = np.isfinite(rel)

    def sd(x: np.ndarray) -> float:
        x = x[np.isfinite(x)]
        return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan

    per_level = pd.DataFrame({"level": data["level"], "fraction": data["fraction"], "rel": rel}).groupby("level")
    reached = (data["status"] == "reached").to_numpy()
    lo, hi = WEIGHT_SIGMA_BAND
    sigma = sd(rel)
    return {
        "method": "achieved = one verify read at v_read after the settle time (drift and read noise included); "
                  "error = achieved - target; sigma = sample std (ddof=1) over all attempts and devices",
        "attempts": int(len(data)),
        "devices": int(data["device"].nunique()),
        "ispp_success_rate": float(reached.mean()),
        "pulses_mean": float(data["pulses"].mean()),
        "pulses_max": int(data["pulses"].max()),
        "sigma_rel_range": sigma,
        "sigma_band": [lo, hi],
        "in_band": bool(lo <= sigma <= hi),
        "sigma_rel_gmax": sd(err / data["g_max"].to_numpy()),
        "sigma_abs": sd(err),
        "sigma_proportional": sd(err / data["target"].to_numpy()),
        "sigma_final_rel_range": sd(final_rel),
        "mean_error_rel_range": float(np.mean(rel[ok])),
        "mean_abs_error_rel_range": float(np.mean(np.abs(rel[ok]))),
        "quantile_levels": np.array(QUANTILE_LEVELS),
        "quantiles_rel_range": np.quantile(rel[ok], QUANTILE_LEVELS),
        "per_level": {
            "fraction": per_level["fraction"].mean().to_numpy(),
            "mean_rel_range": per_level["rel"].mean().to_numpy(),
            "sigma_rel_range": per_level["rel"].std(ddof=1).to_numpy(),
            "count": per_level["rel"].count().to_numpy(),
        },
    }
