"""HOW a run executes: validation, storage, events, abort, safe state (DESIGN.md,
"Run lifecycle").

::

    runner = Runner(bench, "day.h5")
    runner.subscribe(print)                       # events: progress, points, status
    outcome = runner.run("retention", {"duration": 600}, ["S01"])
    outcome.status, outcome.results

``run`` validates the parameters (their declared limits) and the request against the
bench (devices, bench limits) before any instrument I/O; opens a run in the store;
drives the protocol's generator, recording every yielded block and checking for an
abort between steps; analyzes the stored data; and puts the bench in its safe state on
every way out. ``abort()`` may be called from any thread (a GUI button); Ctrl-C in the
main thread does the same (press it twice to force).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labpcu.aborts import RunAborted
from labpcu.bench import Bench, SafeStateError
from labpcu.clock import WallClock
from labpcu.data.columns import Column
from labpcu.data.store import Store
from labpcu.instruments.errors import InstrumentCommunicationError
from labpcu.protocol_bench import ProtocolBench
from labpcu.protocols import registry
from labpcu.protocols.base import DEVICE_COLUMN, DeviceFailure, Protocol
from labpcu.protocols.params import ParameterError, Params

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------- events
@dataclass(frozen=True)
class RunStarted:
    run_id: str
    protocol: str
    devices: tuple[str, ...]
    parameters: dict[str, Any]
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Progress:
    run_id: str
    done: float
    total: float | None
    message: str = ""


@dataclass(frozen=True)
class Points:
    """A block just recorded (the protocol's values, as yielded) and the run's row count."""

    run_id: str
    block: Mapping[str, Any]
    rows: int


@dataclass(frozen=True)
class Flushed:
    """Rows on disk: a crash from now on keeps at least this many."""

    run_id: str
    rows: int


@dataclass(frozen=True)
class DeviceFailed:
    run_id: str
    device: str
    reason: str


@dataclass(frozen=True)
class StatusChanged:
    run_id: str
    status: str  # running, completed, aborted, failed, interrupted
    reason: str = ""


Event = RunStarted | Progress | Points | Flushed | DeviceFailed | StatusChanged
Subscriber = Callable[[Event], None]


@dataclass
class RunOutcome:
    """What a run ended as."""

    run_id: str
    status: str
    error: str
    n_points: int
    results: dict[str, Any] = field(default_factory=dict)
    failed_devices: dict[str, str] = field(default_factory=dict)
    store: Store | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"


# ---------------------------------------------------------------------- context
class AbortableClock:
    """The bench clock as a protocol sees it: a wall-clock wait ends at once on abort;
    a virtual clock moves instantly, then the abort is checked."""

    def __init__(self, clock: Any, abort_event: threading.Event, check: Callable[[], None]) -> None:
        self._clock = clock
        self._abort = abort_event
        self._check = check

    def now(self) -> float:
        return self._clock.now()

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"cannot sleep a negative time: {seconds!r} s")
        if isinstance(self._clock, WallClock):
            self._abort.wait(seconds)
        else:
            self._clock.sleep(seconds)
        self._check()


class RunContext:
    """What a protocol's generator gets: the bench (as a :class:`ProtocolBench`), the
    clock, its devices, and ways to report progress. Everything else (storage, events)
    is the runner's business."""

    def __init__(self, runner: Runner, run_id: str, bench: Bench, devices: tuple[str, ...], protocol: Protocol) -> None:
        self.run_id = run_id
        self.bench = ProtocolBench(bench)  # no raw matrix, no set_limits: the Bench keeps the rules
        self.devices = devices
        self.protocol = protocol
        self.clock = AbortableClock(bench.clock, runner._abort_event, self.check)
        self.failed_devices: dict[str, str] = {}
        self.scopes: list[str] = []  # devices (or operator units) measured one by one
        self.device: str | None = None  # the device being measured, for the ``device`` column
        self._runner = runner

    def check(self) -> None:
        """Raise :class:`RunAborted` if an abort was asked for."""
        if self._runner._abort_event.is_set():
            raise RunAborted(self._runner._abort_reason)

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        self._runner._emit(Progress(self.run_id, done, total, message))

    @contextlib.contextmanager
    def device_scope(self, device: str) -> Iterator[None]:
        """Measure one device of several: a :class:`DeviceFailure` (or a refused
        level) is recorded, the bench made safe, and the run goes on. Lost
        instruments, aborts and bugs still end the run."""
        self.device = device
        self.scopes.append(device)
        try:
            yield
        except (DeviceFailure, ParameterError) as exc:
            self.failed_devices[device] = str(exc)
            self._runner._emit(DeviceFailed(self.run_id, device, str(exc)))
            log.warning("%s: device %s failed: %s", self.run_id, device, exc)
            self.bench.safe_state()
        finally:
            self.device = None


# ----------------------------------------------------------------------- runner
class Runner:
    """Executes protocols on a bench into a store. One run at a time per runner."""

    def __init__(self, bench: Bench, store: Store | str | Path, *, handle_sigint: bool = True) -> None:
        self.bench = bench
        self.store = store if isinstance(store, Store) else Store(store)
        self.handle_sigint = handle_sigint
        self._subscribers: list[Subscriber] = []
        self._abort_event = threading.Event()
        self._abort_reason = ""
        self._running = threading.Lock()
        #: documents stored with each run's end, in the same write (the simulated
        #: wafer's state, so a resumed campaign continues exactly where the run ended)
        self.documents_at_finish: Callable[[], Mapping[str, Any]] | None = None

    # ------------------------------------------------------------ subscribers
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` for every event; returns the unsubscribe call.
        Subscribers run in the runner's thread: a GUI hands events to its own."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def _emit(self, event: Event) -> None:
        for sub in list(self._subscribers):
            try:
                sub(event)
            except Exception:  # a broken live plot must not stop a measurement
                log.exception("subscriber %r failed on %s", sub, type(event).__name__)

    # ------------------------------------------------------------ abort
    def abort(self, reason: str = "aborted by the operator") -> None:
        """Stop the current run at its next step (thread-safe)."""
        self._abort_reason = reason
        self._abort_event.set()

    @property
    def busy(self) -> bool:
        return self._running.locked()

    # ------------------------------------------------------------ running
    def prepare(
        self,
        protocol: str | Protocol | type[Protocol],
        params: Params | Mapping[str, Any] | None = None,
        devices: str | Sequence[str] = (),
    ) -> tuple[Protocol, Params, tuple[str, ...]]:
        """Validate a request on this runner's bench; see :func:`prepare`."""
        return prepare(protocol, params, devices, self.bench)

    def run(
        self,
        protocol: str | Protocol | type[Protocol],
        params: Params | Mapping[str, Any] | None = None,
        devices: str | Sequence[str] = (),
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> RunOutcome:
        """Run one protocol on its devices; returns how it ended. Bad input raises
        :class:`ParameterError` before anything is sent or stored. ``metadata`` (the
        sample, the operator, a note, the campaign task) is stored on the run."""
        proto, p, devs = self.prepare(protocol, params, devices)
        if not self._running.acquire(blocking=False):
            raise RuntimeError("this runner is already running a run")
        try:
            self._abort_event.clear()
            self._abort_reason = ""
            with self._sigint_aborts():
                return self._execute(proto, p, devs, dict(metadata or {}))
        finally:
            self._running.release()

    def _execute(self, proto: Protocol, params: Params, devices: tuple[str, ...],
                 metadata: dict[str, Any]) -> RunOutcome:
        bench = self.bench
        recorder = self.store.begin_run(
            proto.name, proto.columns, parameters=params.to_dict(), parameter_units=params.units(),
            devices=devices, bench=bench.snapshot(), bench_time_start=bench.clock.now(), metadata=metadata,
            on_flush=lambda rows: self._emit(Flushed(run_id, rows)))  # run_id is bound before any append
        run_id = recorder.run_id
        ctx = RunContext(self, run_id, bench, devices, proto)
        for stale in self._drain_errors():  # an earlier session's errors are not this run's
            log.warning("%s: error left in the queue before the run: %s", run_id, stale)
        self._emit(RunStarted(run_id, proto.name, devices, params.to_dict(), proto.columns))
        self._emit(StatusChanged(run_id, "running"))
        status, error = "completed", ""
        device_col = DEVICE_COLUMN.name
        has_device_column = any(c.name == device_col for c in proto.columns)
        blocks = proto.run(ctx, params)
        try:
            for block in blocks:
                if has_device_column and device_col not in block:
                    block = {**block, device_col: ctx.device or ""}
                recorder.append(block)
                self._emit(Points(run_id, block, recorder.rows))
                ctx.check()
            if ctx.scopes and set(ctx.scopes) <= set(ctx.failed_devices):
                what = "device" if set(ctx.scopes) <= set(devices) else "unit"
                status, error = "failed", f"every {what} failed: " + "; ".join(
                    f"{d}: {r}" for d, r in ctx.failed_devices.items())
            errors = bench.drain_errors()  # a read phase checks no error queue: look now
            if errors:
                status, error = "failed", "instrument error during the run: " + "; ".join(errors)
        except RunAborted as exc:
            status, error = "aborted", str(exc) or "aborted"
        except KeyboardInterrupt:
            status, error = "aborted", "interrupted from the keyboard (Ctrl-C)"
        except (GeneratorExit, SystemExit) as exc:
            status, error = "interrupted", f"the process is exiting ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then re-raised as a status
            status, error = "failed", _describe(exc)
            log.error("%s failed: %s", run_id, error)
        finally:
            late: list[str] = []
            try:
                blocks.close()  # a protocol stopped between steps cleans up now, and its errors are this run's
            except Exception as exc:  # noqa: BLE001
                late.append(f"the protocol's clean-up failed: {_describe(exc)}")
            safe_error = self._safe_state()
            errors = self._drain_errors()  # queued errors the safe state set aside (an aborted or failed run)
            if errors:
                late.append("instrument error during the run: " + "; ".join(errors))
            if safe_error:
                late.append(safe_error)
            if late:
                status = "interrupted" if status == "interrupted" else "failed"
                error = "; and ".join([error, *late] if error else late)
            recorder.close()
        results: dict[str, Any] = {}
        if ctx.failed_devices:
            results["failed_devices"] = dict(ctx.failed_devices)
        if status == "completed":
            try:
                data = self.store.read(run_id)
                results.update(proto.analyze(data, params))
            except Exception as exc:  # noqa: BLE001 - the data stay; the analysis can be redone
                status, error = "failed", f"analysis failed: {_describe(exc)}"
                log.exception("%s: analysis failed", run_id)
        documents = self.documents_at_finish() if self.documents_at_finish is not None else None
        status, error = recorder.finish(status, error=error, results=results, bench_time_end=bench.clock.now(),
                                        documents=documents)
        self._emit(StatusChanged(run_id, status, error))
        return RunOutcome(run_id, status, error, recorder.rows_on_disk, results, dict(ctx.failed_devices), self.store)

    def _drain_errors(self) -> list[str]:
        try:
            return self.bench.drain_errors()
        except Exception as exc:  # noqa: BLE001 - a link problem shows in the run itself
            log.warning("could not read the instruments' error queues: %s", exc)
            return []

    def _safe_state(self) -> str:
        """Put the bench in its safe state; the reason it failed, or ""."""
        try:
            self.bench.safe_state()
        except SafeStateError as exc:
            log.critical("bench not in its safe state: %s", exc)
            return f"the safe state failed: {exc}"
        return ""

    @contextlib.contextmanager
    def _sigint_aborts(self) -> Iterator[None]:
        """In the main thread, the first Ctrl-C asks for an abort; a second one raises
        KeyboardInterrupt as usual."""
        if not self.handle_sigint or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            if self._abort_event.is_set():
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.abort("interrupted from the keyboard (Ctrl-C)")

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def prepare(
    protocol: str | Protocol | type[Protocol],
    params: Params | Mapping[str, Any] | None,
    devices: str | Sequence[str],
    bench: Bench,
) -> tuple[Protocol, Params, tuple[str, ...]]:
    """Resolve the protocol, build and check its parameters, and validate the request
    against the bench (devices, bench limits) without touching an instrument: the
    bench may be :meth:`Bench.offline`. Raises :class:`ParameterError` (one line)."""
    proto = _protocol_instance(protocol)
    if isinstance(params, Params):
        if not isinstance(params, proto.Params):
            raise ParameterError(f"{proto.name} takes {proto.Params.__name__}, not {type(params).__name__}")
        p = params
    else:
        try:
            p = proto.Params.from_mapping(params)
        except ParameterError as exc:  # parameters do not know their protocol: name it here
            raise ParameterError(f"{proto.name}: {exc}") from None
    devs = (devices,) if isinstance(devices, str) else tuple(devices)
    if len(set(devs)) != len(devs):
        raise ParameterError(f"{proto.name}: a device is listed twice in {', '.join(devs)}")
    proto.validate(p, bench, devs)
    return proto, p, devs


def _protocol_instance(protocol: str | Protocol | type[Protocol]) -> Protocol:
    if isinstance(protocol, str):
        return registry.get(protocol)()
    if isinstance(protocol, type) and issubclass(protocol, Protocol):
        return protocol()
    if isinstance(protocol, Protocol):
        return protocol
    raise ParameterError(f"not a protocol: {protocol!r}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = "instrument communication" if isinstance(exc, InstrumentCommunicationError) else type(exc).__name__
    return f"{kind}: {text}" if text else kind
