"""The Bench as a protocol sees it: roles that cannot lift a limit or switch a relay
behind the Bench's back.

A protocol gets a :class:`ProtocolBench` (``ctx.bench``). It can route pads through
:meth:`Bench.connect` (validated, outputs off first, element limits armed), source and
measure through its SMUs, move the probes and ask for the safe state. It cannot reach
the switch matrix (no raw ``connect``/``open_all``), the drivers, or ``set_limits``:
those stay with the Bench, which owns the safety rules (DESIGN.md, "Safety model").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from labpcu.instruments.roles import IVReading, IVSweep, ProgramVerifyResult, TerminalState

if TYPE_CHECKING:
    from labpcu.bench import Bench, Crosspoint, Pad
    from labpcu.benchfile import BenchConfig, Limits
    from labpcu.instruments.roles import SourceMeasureUnit
    from labpcu.sim.wafer import Site, Wafer


class ProtocolSmu:
    """A source-measure unit without ``set_limits``: levels, outputs, readings."""

    def __init__(self, role: SourceMeasureUnit) -> None:
        self._role = role

    def __repr__(self) -> str:
        return f"<SMU {self.name}>"

    @property
    def name(self) -> str:
        return self._role.name

    @property
    def max_voltage(self) -> float:
        return self._role.max_voltage

    @property
    def max_current(self) -> float:
        return self._role.max_current

    @property
    def limits(self) -> tuple[float, float]:
        """The present per-terminal caps (V, A), set by the Bench for the connection."""
        return self._role.limits  # type: ignore[attr-defined, no-any-return]

    @property
    def output(self) -> bool:
        return bool(self._role.output)  # type: ignore[attr-defined]

    @property
    def state(self) -> TerminalState:
        return self._role.state  # type: ignore[attr-defined, no-any-return]

    @property
    def settle(self) -> float:
        """Seconds a level settles before each reading (device and cable capacitance)."""
        return float(getattr(self._role, "settle", 0.0))

    @settle.setter
    def settle(self, seconds: float) -> None:
        if not (seconds >= 0 and seconds < float("inf")):
            raise ValueError(f"{self.name}: settle time must be >= 0 s, not {seconds!r}")
        self._role.settle = float(seconds)  # type: ignore[attr-defined]

    def source_voltage(self, volts: float, compliance: float) -> None:
        self._role.source_voltage(volts, compliance)

    def source_current(self, amps: float, compliance: float) -> None:
        self._role.source_current(amps, compliance)

    def output_on(self) -> None:
        self._role.output_on()

    def output_off(self) -> None:
        self._role.output_off()

    def measure(self) -> IVReading:
        return self._role.measure()

    def sweep_voltage(self, levels: Sequence[float], compliance: float, nplc: float = 1.0) -> IVSweep:
        return self._role.sweep_voltage(levels, compliance, nplc)

    def safe_off(self) -> None:
        self._role.safe_off()


class ProtocolVerifierSmu(ProtocolSmu):
    """A :class:`ProtocolSmu` whose instrument runs the program-and-verify loop."""

    def can_program_verify(self, ground: Any) -> bool:
        return self._role.can_program_verify(_unwrap(ground))  # type: ignore[attr-defined, no-any-return]

    def program_and_verify(self, ground: Any, target: float, tolerance: float, **kwargs: Any) -> ProgramVerifyResult:
        return self._role.program_and_verify(_unwrap(ground), target, tolerance, **kwargs)  # type: ignore[attr-defined, no-any-return]


def _unwrap(smu: Any) -> Any:
    return smu._role if isinstance(smu, ProtocolSmu) else smu


class ProtocolBench:
    """What a protocol may use of a :class:`~labpcu.bench.Bench`."""

    def __init__(self, bench: Bench) -> None:
        self._bench = bench
        self._wrapped: dict[int, ProtocolSmu] = {}

    # -- read-only facts ---------------------------------------------------------
    @property
    def config(self) -> BenchConfig:
        return self._bench.config

    @property
    def layout(self) -> Wafer:
        return self._bench.layout

    @property
    def clock(self) -> Any:
        return self._bench.clock

    @property
    def site(self) -> Site:
        return self._bench.site

    @property
    def connected(self) -> bool:
        return self._bench.connected

    def pads(self) -> dict[str, Pad]:
        return self._bench.pads()

    def pad(self, device_id: str, kind: str) -> str:
        return self._bench.pad(device_id, kind)

    def route(self, connections: Mapping[str, str | Sequence[str]]) -> list[Crosspoint]:
        return self._bench.route(connections)

    def limits_for(self, connections: Mapping[str, str | Sequence[str]], device_type: str | None = None) -> Limits | None:
        return self._bench.limits_for(connections, device_type)

    # -- roles ---------------------------------------------------------------------
    @property
    def smus(self) -> dict[str, ProtocolSmu]:
        return {name: self._wrap(role) for name, role in self._bench.smus.items()}

    def smu(self, terminal: str) -> ProtocolSmu:
        return self._wrap(self._bench.smu(terminal))

    def _wrap(self, role: SourceMeasureUnit) -> ProtocolSmu:
        # keyed by the role object: after a reconnect the Bench builds new roles
        wrapped = self._wrapped.get(id(role))
        if wrapped is None or wrapped._role is not role:
            cls = ProtocolVerifierSmu if hasattr(role, "program_and_verify") else ProtocolSmu
            wrapped = self._wrapped[id(role)] = cls(role)
        return wrapped

    # -- actions the Bench validates -------------------------------------------------
    def move_to(self, site_or_device: str) -> Site:
        return self._bench.move_to(site_or_device)

    def connect(self, connections: Mapping[str, str | Sequence[str]], device_type: str | None = None) -> list[Crosspoint]:
        return self._bench.connect(connections, device_type)

    def disconnect(self) -> None:
        self._bench.disconnect()

    def safe_state(self) -> None:
        self._bench.safe_state()

    def guard(self) -> AbstractContextManager[None]:
        return self._bench.guard()
