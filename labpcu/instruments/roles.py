"""Role interfaces: all that protocols may call of an instrument.

A protocol asks for "a source-measure unit", "the switch matrix" or "the multi-channel
analyzer", never for a model. The interfaces are :class:`typing.Protocol` classes; the
adapters below give the 2600 family's channels, the B1500A's SMUs and the 3706A those
shapes, and add the bench's safety rules on top of the drivers' own checks:

* every level and compliance is checked against the present software limits
  (:meth:`set_limits`, set by the bench from the device type under test) *before*
  anything is sent;
* an output turns on only after a level *and* its compliance were given;
* ``safe_off`` brings the level to 0 and turns the output off, whatever failed before.

Optional capabilities are separate runtime-checkable protocols, so a protocol asks
``isinstance(smu, ProgramVerifier)`` and falls back to a host-side loop when the
instrument cannot run the loop itself.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from labpcu.instruments.errors import LimitError

#: ``check(proposed)``: the bench's element-limit check, given the terminal states a
#: call is about to apply (terminal name -> :class:`TerminalState`)
ElementCheck = Callable[[Mapping[str, Any]], None]

Crosspoint = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class TerminalState:
    """What one terminal may put on the net it is connected to: a voltage interval and the
    current it can drive. ``live=False``: output off, taken as 0 V."""

    v_lo: float = 0.0
    v_hi: float = 0.0
    current: float = 0.0  # A it can drive (compliance, level, or off-state limit)
    live: bool = False
    push: int = 0  # a current source: +1 pushes current into the circuit, -1 draws it
    floating: bool = False  # off with its output relay open: it does not drive its net

    @classmethod
    def voltage(cls, lo: float, hi: float, compliance: float) -> TerminalState:
        return cls(min(lo, hi), max(lo, hi), abs(compliance), True)

    @classmethod
    def current_source(cls, amps: float, v_compliance: float) -> TerminalState:
        return cls(-abs(v_compliance), abs(v_compliance), abs(amps), True, 1 if amps > 0 else -1 if amps < 0 else 0)


OFF = TerminalState()


@dataclass(frozen=True, slots=True)
class IVReading:
    """One reading of a source-measure channel."""

    current: float  # A, out of HI into the device; NaN on overflow
    voltage: float  # V
    compliance: bool  # the source sat at its limit: the value is the limit
    overflow: bool = False


@dataclass(frozen=True)
class IVSweep:
    """Per point: programmed level, measured voltage and current, and flags."""

    source: np.ndarray
    voltage: np.ndarray
    current: np.ndarray
    compliance: np.ndarray
    overflow: np.ndarray


@runtime_checkable
class SourceMeasureUnit(Protocol):
    name: str
    max_voltage: float
    max_current: float

    def set_limits(self, max_voltage: float | None, max_current: float | None) -> None: ...
    def source_voltage(self, volts: float, compliance: float) -> None: ...
    def source_current(self, amps: float, compliance: float) -> None: ...
    def output_on(self) -> None: ...
    def output_off(self) -> None: ...
    def measure(self) -> IVReading: ...
    def sweep_voltage(self, levels: Sequence[float], compliance: float, nplc: float = 1.0) -> IVSweep: ...
    def safe_off(self) -> None: ...


@dataclass(frozen=True)
class ProgramVerifyResult:
    """Outcome of one program-and-verify (ISPP) attempt, on the instrument or the host.

    ``trace`` has one row per verify read (row 0 before any pulse) and the columns
    pulse amplitude (V, 0 for row 0), read current (A) and conductance (S).
    """

    reached: bool
    status: str  # "reached", "max_pulses" or "overflow"
    pulses: int
    conductance: float  # S, from the last verify read
    target: float  # S
    tolerance: float  # S
    trace: np.ndarray = field(repr=False)
    on_instrument: bool = False


@runtime_checkable
class ProgramVerifier(Protocol):
    """An SMU that runs the whole ISPP loop itself (decisions between pulses made on
    the instrument, the trace returned at the end): no host round trip per pulse."""

    def can_program_verify(self, ground: SourceMeasureUnit | None) -> bool:
        """True if the loop can run with ``ground`` holding the other terminal at 0 V
        (``None``: the other terminal is grounded some other way)."""
        ...

    def program_and_verify(
        self,
        ground: SourceMeasureUnit | None,
        target: float,
        tolerance: float,
        *,
        v_start: float,
        v_step: float,
        v_max: float,
        width: float,
        v_read: float,
        max_pulses: int,
        compliance: float,
    ) -> ProgramVerifyResult:
        """ISPP: pulses of growing amplitude (±``v_start``, then ``v_step`` more each,
        at most ``v_max``; ``width`` s), a read at ``v_read`` after each; the polarity
        follows the sign of target − G and the amplitude restarts at ``v_start`` when it
        flips. Stops within ``tolerance`` of ``target`` or after ``max_pulses``."""
        ...


@runtime_checkable
class SwitchMatrix(Protocol):
    def connect(self, crosspoints: Iterable[Crosspoint]) -> None:
        """Make exactly these crosspoints closed (break before make)."""
        ...

    def open_all(self) -> None: ...
    def closed(self) -> set[Crosspoint]: ...


@runtime_checkable
class MultiChannelAnalyzer(Protocol):
    name: str

    @property
    def smus(self) -> dict[str, SourceMeasureUnit]: ...

    def safe_off(self) -> None: ...


# ------------------------------------------------------------------ adapters
class _SmuBase(ABC):
    """Software limits and the level-before-output rule, shared by every SMU adapter."""

    def __init__(self, name: str, max_voltage: float, max_current: float) -> None:
        self.name = name
        self.max_voltage = max_voltage
        self.max_current = max_current
        self._vlim = max_voltage
        self._ilim = max_current
        self._armed = False  # a level and its compliance have been given
        self._on = False
        self._given: TerminalState = OFF  # the level last given, applied while the output is on
        self.element_check: ElementCheck | None = None  # set by the Bench
        #: seconds to let a level settle before a reading (device and cable capacitance
        #: charge through the device: slow at low currents), timed on ``clock``
        self.settle = 0.0
        self.clock: Any = None  # set by the Bench: the bench clock
        self._changed_at: float | None = None

    #: A an output can carry while off (0: its output relay opens)
    off_current: float = 0.0
    #: an output that is off opens its relay (its net floats) rather than holding 0 V
    off_floats: bool = True

    @property
    def state(self) -> TerminalState:
        """What this terminal applies now, for the bench's element limits."""
        return self._given if self._on else TerminalState(current=self.off_current, floating=self.off_floats)

    def _propose(self, state: TerminalState, **others: TerminalState) -> None:
        """Ask the bench whether every device element stays within its limits with
        this terminal (and ``others``, by name) in the given state; raises first."""
        if self.element_check is not None:
            self.element_check({self.name: state, **others})

    def set_limits(self, max_voltage: float | None, max_current: float | None) -> None:
        """Cap levels and compliances (V, A); None restores the instrument's range."""
        for what, value, cap in (("voltage", max_voltage, self.max_voltage), ("current", max_current, self.max_current)):
            if value is not None and not (math.isfinite(value) and 0 < value <= cap):
                raise LimitError(f"{self.name}: software {what} limit {value!r} must be > 0 and <= {cap:g}")
        self._vlim = self.max_voltage if max_voltage is None else float(max_voltage)
        self._ilim = self.max_current if max_current is None else float(max_current)

    def _forget(self) -> None:
        """After a safe-off: nothing is armed or on until the next level is given."""
        self._on = False
        self._armed = False
        self._given = OFF

    @property
    def limits(self) -> tuple[float, float]:
        return self._vlim, self._ilim

    def _mark_change(self) -> None:
        if self.clock is not None:
            self._changed_at = self.clock.now()

    def _wait_settled(self) -> None:
        """Before a reading: wait what is left of ``settle`` since the last level change
        (a real bench's hold time, on the bench clock: simulated waits cost nothing)."""
        if self.settle > 0 and self.clock is not None and self._changed_at is not None:
            left = self.settle - (self.clock.now() - self._changed_at)
            if left > 0:
                self.clock.sleep(left)

    def _check(self, volts: float | None = None, amps: float | None = None) -> None:
        if volts is not None and not (math.isfinite(volts) and abs(volts) <= self._vlim):
            raise LimitError(f"{self.name}: {volts!r} V is outside the limit ±{self._vlim:g} V")
        if amps is not None and not (math.isfinite(amps) and abs(amps) <= self._ilim):
            raise LimitError(f"{self.name}: {amps!r} A is outside the limit ±{self._ilim:g} A")

    def _check_compliance(self, value: float, unit: str) -> None:
        if not (math.isfinite(value) and value > 0):
            raise LimitError(f"{self.name}: compliance must be a positive number of {unit}, not {value!r}")

    def source_voltage(self, volts: float, compliance: float) -> None:
        """Source ``volts`` with current ``compliance`` (A), both checked first."""
        self._check_compliance(compliance, "A")
        self._check(volts=volts, amps=compliance)
        state = TerminalState.voltage(volts, volts, compliance)
        if self._on:
            self._propose(state)
        self._source("v", float(volts), float(compliance))
        self._given = state
        self._armed = True
        self._mark_change()

    def source_current(self, amps: float, compliance: float) -> None:
        """Source ``amps`` with voltage ``compliance`` (V), both checked first."""
        self._check_compliance(compliance, "V")
        self._check(volts=compliance, amps=amps)
        state = TerminalState.current_source(amps, compliance)
        if self._on:
            self._propose(state)
        self._source("i", float(amps), float(compliance))
        self._given = state
        self._armed = True
        self._mark_change()

    def _sweep_levels(self, levels: Sequence[float], compliance: float) -> list[float]:
        volts = [float(v) for v in levels]
        if not volts:
            raise LimitError(f"{self.name}: a sweep needs at least one level")
        self._check_compliance(compliance, "A")
        for v in volts:
            self._check(volts=v)
        self._check(amps=compliance)
        self._propose(TerminalState.voltage(min(volts), max(volts), compliance))
        return volts

    def _stepped_sweep(self, volts: list[float], compliance: float) -> IVSweep:
        """A sweep as one level and one reading after another, from the host: each
        reading waits :attr:`settle` after its level. The output ends as it began."""
        was_on = self._on
        rows = []
        self.source_voltage(volts[0], compliance)
        if not was_on:
            self.output_on()
        try:
            for v in volts:
                self.source_voltage(v, compliance)
                rows.append(self.measure())
        finally:
            if not was_on:
                self.output_off()
        return IVSweep(
            np.array(volts),
            np.array([r.voltage for r in rows]),
            np.array([r.current for r in rows]),
            np.array([r.compliance for r in rows]),
            np.array([r.overflow for r in rows]),
        )

    @abstractmethod
    def _source(self, kind: str, level: float, compliance: float) -> None:
        """Send the level (``kind`` "v" or "i") with its compliance to the instrument."""

    @property
    def output(self) -> bool:
        return self._on

    def output_on(self) -> None:
        if not self._armed:
            raise LimitError(f"{self.name}: give a level and its compliance before turning the output on")
        self._propose(self._given)
        self._output(True)
        self._on = True
        self._mark_change()

    def output_off(self) -> None:
        self._output(False)
        self._on = False

    @abstractmethod
    def _output(self, on: bool) -> None:
        """Switch the instrument's output."""


class K2600Smu(_SmuBase):
    """A channel of a Keithley 2600A/B as a :class:`SourceMeasureUnit`."""

    #: in the normal off-mode the channel holds 0 V up to ``offlimiti`` (1 mA at reset)
    off_current = 1e-3
    off_floats = False

    def __init__(self, name: str, channel) -> None:  # channel: keithley2600.SMUChannel
        spec = channel.parent.spec
        super().__init__(name, spec.v_max, spec.i_max)
        self.channel = channel

    def _source(self, kind: str, level: float, compliance: float) -> None:
        if kind == "v":
            self.channel.source_voltage(level, compliance)
        else:
            self.channel.source_current(level, compliance)

    def _output(self, on: bool) -> None:
        self.channel.output = on

    def measure(self) -> IVReading:
        self._wait_settled()
        r, at_limit = self.channel.measure_iv_compliance()  # one query, not two
        return IVReading(r.current, r.voltage, at_limit, r.overflow)

    def sweep_voltage(self, levels: Sequence[float], compliance: float, nplc: float = 1.0) -> IVSweep:
        """A list sweep run by the instrument; with a :attr:`settle` time, one level and
        reading at a time from the host instead (the list sweep has no per-point wait)."""
        volts = self._sweep_levels(levels, compliance)
        if self.settle > 0:
            return self._stepped_sweep(volts, compliance)
        try:
            res = self.channel.sweep_voltage_list(volts, compliance, nplc)
        finally:
            self._on = False  # the sweep ends with the output off
        at_limit = np.abs(np.nan_to_num(res.current)) >= 0.999 * compliance
        return IVSweep(res.source, res.voltage, res.current, at_limit, res.overflow)

    def safe_off(self) -> None:
        self._forget()
        self.channel.parent.safe_off(self.channel)


    # -- ProgramVerifier: the driver's TSP script -----------------------------------
    def can_program_verify(self, ground: SourceMeasureUnit | None) -> bool:
        """The script drives two channels of one mainframe: ground must be the other
        channel of this instrument (or None)."""
        if ground is None:
            return True
        return isinstance(ground, K2600Smu) and ground is not self and ground.channel.parent is self.channel.parent

    def program_and_verify(
        self,
        ground: SourceMeasureUnit | None,
        target: float,
        tolerance: float,
        *,
        v_start: float = 0.2,
        v_step: float = 0.1,
        v_max: float = 1.0,
        width: float = 0.02,
        v_read: float = 0.01,
        max_pulses: int = 100,
        compliance: float = 1e-3,
    ) -> ProgramVerifyResult:
        """ISPP run on the instrument (one message, one reply); software limits are
        checked first. Both channels end at 0 V with their outputs on."""
        if not self.can_program_verify(ground):
            other = getattr(ground, "name", repr(ground))
            raise LimitError(f"{self.name}: on-instrument ISPP needs ground on the other channel of the same "
                             f"instrument, not {other}")
        other = ground if isinstance(ground, K2600Smu) else None
        self._check_compliance(compliance, "A")
        for volts in (v_start, v_max, -v_max, v_read):
            self._check(volts=volts)
        self._check(amps=compliance)
        if other is not None:
            other._check(amps=compliance)
        held = TerminalState.voltage(0.0, 0.0, compliance)
        self._propose(TerminalState.voltage(-abs(v_max), abs(v_max), compliance),
                      **({other.name: held} if other is not None else {}))
        res = self.channel.parent.program_and_verify(
            target, tolerance, channel=self.channel.id, ground=None if other is None else other.channel.id,
            v_start=v_start, v_step=v_step, v_max=v_max, width=width, v_read=v_read,
            max_pulses=max_pulses, compliance=compliance)
        for smu in (self, other):
            if smu is not None:  # the script leaves both at 0 V, outputs on
                smu._armed = smu._on = True
                smu._given = held
        return ProgramVerifyResult(res.reached, res.status, res.pulses, res.conductance, res.target,
                                   res.tolerance, res.trace, on_instrument=True)


class B1500Smu(_SmuBase):
    """An SMU of a Keysight B1500A as a :class:`SourceMeasureUnit`.

    FLEX applies ``DV``/``DI`` at once on a connected channel, so the level is kept
    here and forced when the output is switched on (``CN`` then ``DV``).
    """

    def __init__(self, name: str, smu) -> None:  # smu: keysight_b1500a.SMU
        super().__init__(name, smu.model.v_max, smu.model.i_max)
        self.smu = smu
        self._force: tuple[str, float, float] | None = None

    def _apply(self) -> None:
        assert self._force is not None
        kind, level, comp = self._force
        if kind == "v":
            self.smu.force_voltage(level, comp)
        else:
            self.smu.force_current(level, comp)

    def _source(self, kind: str, level: float, compliance: float) -> None:
        self._force = (kind, level, compliance)
        if self._on:
            self._apply()

    def _output(self, on: bool) -> None:
        if on:
            self.smu.enable()
            self._apply()
        else:
            self.smu.zero()
            self.smu.disable()

    def measure(self) -> IVReading:
        self._wait_settled()
        r = self.smu.measure()
        return IVReading(r.current, r.voltage, r.compliance, r.overflow)

    def sweep_voltage(self, levels: Sequence[float], compliance: float, nplc: float = 1.0) -> IVSweep:
        """A spot reading per level (host-timed): FLEX staircases are linear or log only."""
        return self._stepped_sweep(self._sweep_levels(levels, compliance), compliance)

    def _forget(self) -> None:
        super()._forget()
        self._force = None

    def safe_off(self) -> None:
        self._forget()
        self.smu.zero()
        self.smu.disable()


class B1500Analyzer:
    """The Keysight B1500A as a :class:`MultiChannelAnalyzer`."""

    def __init__(self, name: str, driver) -> None:  # driver: KeysightB1500A
        self.name = name
        self.driver = driver
        self._smus = {f"{name}.{slot}": B1500Smu(f"{name}.{slot}", smu) for slot, smu in driver.smus.items()}

    @property
    def smus(self) -> dict[str, SourceMeasureUnit]:
        return dict(self._smus)

    def safe_off(self) -> None:
        for smu in self._smus.values():
            smu._forget()
        self.driver.safe_off()  # DZ then CL with no error check between: an old error must not keep an output on

    def outputs_on(self) -> set[str]:
        """Read back which SMUs still have their output switch closed."""
        return {f"{self.name}.{slot}" for slot in self.driver.enabled_channels()}


class K3706AMatrix:
    """The Keithley 3706A as a :class:`SwitchMatrix`."""

    def __init__(self, name: str, driver) -> None:  # driver: Keithley3706A
        self.name = name
        self.driver = driver

    def connect(self, crosspoints: Iterable[Crosspoint]) -> None:
        self.driver.exclusive_close(sorted(set(crosspoints)))

    def open_all(self) -> None:
        self.driver.open_all()

    def open(self, crosspoints: Iterable[Crosspoint]) -> None:
        cps = sorted(set(crosspoints))
        if cps:
            self.driver.open(cps)

    def closed(self) -> set[Crosspoint]:
        return self.driver.closed()
