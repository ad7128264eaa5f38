"""What a protocol is: WHAT to measure, separated from HOW a run executes.

A protocol declares its parameters (a :class:`~labpcu.protocols.params.Params`
dataclass), its data columns, and its standard plot; it implements
:meth:`Protocol.measure` as a generator of data blocks for one device, and
:meth:`Protocol.analyze` to turn the stored table into results. The runner
(:mod:`labpcu.runner`) owns validation, storage, events, abort and the safe state.

Rules (DESIGN.md): a protocol talks only to the Bench's roles and the clock it is
given (``ctx.clock``); it never imports a driver, the simulator, Qt or h5py, and never
calls ``time.sleep``.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from labpcu.data.columns import Column, check_columns
from labpcu.protocols.params import ParameterError, Params

if TYPE_CHECKING:
    import pandas as pd

    from labpcu.bench import Bench
    from labpcu.protocols.context import RunContext

#: the column that names the device of each row; the runner fills it when a block
#: leaves it out (multi-device runs measure one device at a time)
DEVICE_COLUMN = Column("device", "", "str", "device id (filled by the runner)")

#: one yielded step of data: column name -> scalar, or 1-D array (scalars repeat)
Block = Mapping[str, Any]


class DeviceFailure(RuntimeError):
    """This device could not be measured (did not switch, broke down, out of range).
    In a multi-device run the runner records it and moves to the next device."""


@dataclass(frozen=True)
class PlotSpec:
    """A protocol's standard plot, drawn the same by the GUI and ``labpcu show``.

    ``y`` may name several columns (one trace each); ``group`` splits traces by the
    values of a column (a device, a cycle); ``abs_y`` plots magnitudes, the usual
    choice for currents on a log axis.
    """

    x: str
    y: tuple[str, ...]
    group: str | None = None
    xscale: str = "linear"
    yscale: str = "linear"
    abs_y: bool = False
    kind: str = "line"  # or "scatter"
    title: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.y, str):
            object.__setattr__(self, "y", (self.y,))
        for scale in (self.xscale, self.yscale):
            if scale not in ("linear", "log"):
                raise ValueError(f"plot scale must be 'linear' or 'log', not {scale!r}")
        if self.kind not in ("line", "scatter"):
            raise ValueError(f"plot kind must be 'line' or 'scatter', not {self.kind!r}")


class Protocol(ABC):
    """Base of every protocol. Subclasses set the class attributes and implement
    :meth:`measure`; :meth:`run` (all devices) and :meth:`analyze` have defaults."""

    #: registry name, used by ``labpcu run NAME`` and the GUI list
    name: ClassVar[str]
    #: one line for lists and window titles
    title: ClassVar[str]
    #: the parameter dataclass
    Params: ClassVar[type[Params]]
    #: the data columns, in order; :data:`DEVICE_COLUMN`, if declared, is filled per device
    columns: ClassVar[tuple[Column, ...]]
    #: the standard plot
    plot: ClassVar[PlotSpec]
    #: at least this many devices per run (operator units need several PCUs)
    min_devices: ClassVar[int] = 1
    #: typical bench time per device with the default parameters (s), for estimates
    bench_seconds_per_device: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "__abstractmethods__", None) or cls.__dict__.get("_family", False):
            return  # an abstract protocol, or a family base (``_family = True``) others subclass
        for attr in ("name", "title", "Params", "columns", "plot"):
            if not hasattr(cls, attr):
                raise TypeError(f"protocol {cls.__name__} must set {attr}")
        if cls.run is Protocol.run and cls.measure is Protocol.measure:
            raise TypeError(f"protocol {cls.__name__} must implement measure() (one device) or run() (all together)")
        cls.columns = check_columns(cls.columns)
        names = {c.name for c in cls.columns}
        for col in (cls.plot.x, *cls.plot.y, *([cls.plot.group] if cls.plot.group else [])):
            if col not in names:
                raise TypeError(f"protocol {cls.name}: plot names column {col!r}, which it does not declare")

    # ------------------------------------------------------------ validation
    def validate(self, params: Params, bench: Bench, devices: Sequence[str]) -> None:
        """Checks needing the bench (limits, devices on the wafer), before any I/O.
        The default checks that every device exists; raise :class:`ParameterError`."""
        if len(devices) < self.min_devices:
            raise ParameterError(f"{self.name} needs at least {self.min_devices} device(s), got {len(devices)}")
        for dev in devices:
            if dev not in bench.layout.devices:
                raise ParameterError(f"{self.name}: no device {dev!r} on the wafer (e.g. {next(iter(bench.layout.devices))})")

    # ------------------------------------------------------------ measuring
    def run(self, ctx: RunContext, params: Params) -> Iterator[Block]:
        """All devices, one after the other; a :class:`DeviceFailure` on one device is
        reported and the run goes on. Override for protocols that measure devices
        together (an operator unit, a crossbar)."""
        for device in ctx.devices:
            with ctx.device_scope(device):
                yield from self.measure(ctx, params, device)

    def measure(self, ctx: RunContext, params: Params, device: str) -> Iterator[Block]:
        """Measure one device, yielding blocks of data (each yield is one step: the
        runner records it and checks for an abort). Protocols that measure devices
        together (an operator unit, a crossbar) override :meth:`run` instead; every
        concrete protocol overrides one of the two (checked at class creation)."""
        raise TypeError(f"protocol {self.name} measures its devices together: call run()")

    def estimate(self, params: Params, devices: Sequence[str]) -> float | None:
        """Bench time the run will take (s), for progress and ETAs; None if unknown.
        The default scales :attr:`bench_seconds_per_device` (measured on the simulated
        bench with the default parameters) by the devices; protocols whose time is a
        parameter (a retention's duration) say so exactly."""
        if self.bench_seconds_per_device is None:
            return None
        return self.bench_seconds_per_device * max(len(devices), 1)

    def analyze(self, data: pd.DataFrame, params: Params) -> dict[str, Any]:
        """Results (fits, figures of merit) from the stored table. Default: none."""
        return {}

    def passed(self, results: Mapping[str, Any]) -> bool | None:
        """Did the run meet its pass criterion? None when the protocol has none. The
        default reads ``results["passed"]``, then ``results["summary"]["passed"]``."""
        if "passed" in results:
            return bool(results["passed"])
        summary = results.get("summary")
        if isinstance(summary, Mapping) and "passed" in summary:
            return bool(summary["passed"])
        return None

    # ------------------------------------------------------------ description
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, title, parameters, columns and plot, for lists and forms."""
        return {
            "name": cls.name,
            "title": cls.title,
            "parameters": [s.__dict__ for s in cls.Params.specs()],
            "columns": [c.__dict__ for c in cls.columns],
            "plot": cls.plot.__dict__,
        }
