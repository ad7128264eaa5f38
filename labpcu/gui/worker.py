"""The GUI's worker: the one thread that owns the Bench.

All instrument I/O happens here, never on the GUI thread, so the window never blocks.
The panels talk to the worker only through Qt signals (:attr:`BenchWorker.run_event`
carries the runs' events) and the thread-safe calls
below (``request_*``, :meth:`abort`, :meth:`pause`, :meth:`resume`); the worker runs
the queue as a campaign (:class:`~labpcu.campaign.engine.CampaignEngine`), so whatever
the GUI queues can be saved, resumed and run from the command line.

Safety: :meth:`all_safe` is callable at any time from any thread. It aborts the
running task (the runner stops at its next protocol step and puts the bench in its
safe state) and then puts the bench in its safe state again in the worker thread.
A worker that crashes reports its error (:attr:`BenchWorker.failed`) and leaves the
bench safe.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PyQt5.QtCore import QMetaObject, QObject, Qt, QThread, pyqtSignal, pyqtSlot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputState:
    terminal: str
    on: bool
    level: str  # e.g. "0.1 V (1 mA)" or "off"


@dataclass(frozen=True)
class InstrumentState:
    name: str
    model: str
    address: str
    identity: str
    connected: bool


@dataclass(frozen=True)
class BenchState:
    """What the bench panel shows: instruments, outputs, the probe site, the clock."""

    connected: bool
    instruments: tuple[InstrumentState, ...] = ()
    outputs: tuple[OutputState, ...] = ()
    site: str = ""
    clock: float = 0.0  # s of bench time
    busy: bool = False
    welded: tuple[str, ...] = ()
    note: str = ""


@dataclass
class _Answer:
    event: threading.Event = field(default_factory=threading.Event)
    value: bool = False


class BenchWorker(QObject):
    """Owns the Bench in its own thread. Create it with :func:`start_worker`."""

    #: every Runner event and campaign event (labpcu.runner.*, labpcu.campaign.engine.*);
    #: not named ``event``, which would hide QObject.event() and break the thread
    run_event = pyqtSignal(object)
    #: a :class:`BenchState` after every change
    bench_state = pyqtSignal(object)
    #: True while a queue runs
    busy = pyqtSignal(bool)
    #: a worker error, one line (the bench is put in its safe state first)
    failed = pyqtSignal(str)
    #: a manual prober's request (a labpcu.probers.ProberRequest): answer with answer_prober()
    prober_request = pyqtSignal(object)
    #: a queue ended: the CampaignOutcome
    queue_finished = pyqtSignal(object)

    # internal: requests carried to the worker thread (queued connections)
    _open = pyqtSignal(object, object)
    _close = pyqtSignal()
    _safe = pyqtSignal()
    _run = pyqtSignal(object, object, bool)

    def __init__(self, store: str | Path | None = None) -> None:
        super().__init__()
        self.store_path = Path(store) if store is not None else None
        self.bench: Any = None
        self.engine: Any = None
        self.identities: dict[str, str] = {}  # read once when the bench opens
        self._answer: _Answer | None = None
        self._open.connect(self._do_open)
        self._close.connect(self._do_close)
        self._safe.connect(self._do_safe)
        self._run.connect(self._do_run)

    # -------------------------------------------------- requests (any thread)
    def request_open(self, bench_file: str | None = None, seed: int | None = None) -> None:
        self._open.emit(bench_file, seed)

    def request_close(self) -> None:
        self._close.emit()

    def request_run(self, campaign: Any, store: str | Path, resume: bool = False) -> None:
        """Run (or resume) ``campaign`` into ``store``; events come through :attr:`event`."""
        self._run.emit(campaign, Path(store), resume)

    def all_safe(self) -> None:
        """Abort what runs (it ends in the safe state) and make the bench safe. Always
        allowed, from any thread."""
        engine = self.engine
        if engine is not None:
            engine.abort("safe state asked for by the operator")
        self._safe.emit()

    def abort(self, reason: str = "aborted by the operator") -> None:
        engine = self.engine
        if engine is not None:
            engine.abort(reason)

    def pause(self) -> None:
        if self.engine is not None:
            self.engine.pause()

    def resume(self) -> None:
        if self.engine is not None:
            self.engine.resume()

    def answer_prober(self, ok: bool) -> None:
        """The operator's answer to :attr:`prober_request` (True: the probes are there)."""
        answer = self._answer
        if answer is not None:
            answer.value = ok
            answer.event.set()

    # -------------------------------------------------- worker thread
    def _operator(self, request: Any) -> bool:
        """A manual prober's request, shown by the GUI as a dialog; waits for the answer."""
        self._answer = answer = _Answer()
        self.prober_request.emit(request)
        while not answer.event.wait(0.1):
            if self.engine is not None and self.engine._abort_reason:
                return False
        return answer.value

    @pyqtSlot(object, object)
    def _do_open(self, bench_file: str | None, seed: int | None) -> None:
        from labpcu.bench import Bench

        if self.bench is not None:
            self._do_close()
        try:
            self.bench = Bench.from_file(bench_file, seed=seed, operator=self._operator)
            self.identities = {name: str(info.get("identity", "")) for name, info in
                               self.bench.snapshot().get("instruments", {}).items()}
        except Exception as exc:  # noqa: BLE001 - shown to the operator, one line
            self.bench = None
            self.failed.emit(f"cannot open the bench: {_line(exc)}")
        self._publish()

    @pyqtSlot()
    def _do_close(self) -> None:
        bench, self.bench = self.bench, None
        if bench is not None:
            try:
                bench.close()
            except Exception as exc:  # noqa: BLE001
                self.failed.emit(f"closing the bench: {_line(exc)}")
        self._publish()

    @pyqtSlot()
    def _do_safe(self) -> None:
        if self.bench is None:
            return
        try:
            self.bench.safe_state()
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(f"the bench is not provably safe: {_line(exc)}")
        self._publish()

    @pyqtSlot(object, object, bool)
    def _do_run(self, campaign: Any, store: Path, resume: bool) -> None:
        from labpcu.campaign.engine import CampaignEngine
        from labpcu.data.store import Store

        if self.bench is None:
            self.failed.emit("connect the bench first")
            return
        self.busy.emit(True)
        outcome = None
        try:
            self.engine = CampaignEngine(campaign, self.bench, Store(store), handle_sigint=False,
                                         force=resume)
            self.engine.subscribe(self._on_event)
            outcome = self.engine.run()
        except Exception as exc:  # noqa: BLE001 - a crashed worker says why and leaves the bench safe
            log.error("worker: %s", "".join(traceback.format_exception_only(type(exc), exc)).strip())
            try:
                self.bench.safe_state()
            except Exception as safe_exc:  # noqa: BLE001
                exc.add_note(f"and the safe state failed: {safe_exc}")
            self.failed.emit(_line(exc))
        finally:
            self.engine = None
            self.busy.emit(False)
            self._publish()
        if outcome is not None:
            self.queue_finished.emit(outcome)

    def _on_event(self, event: Any) -> None:
        self.run_event.emit(event)
        name = type(event).__name__
        if name in ("StatusChanged", "TaskFinished", "TaskStarted"):
            self._publish()

    def _publish(self) -> None:
        self.bench_state.emit(bench_state(self.bench, busy=self.engine is not None, identities=self.identities))


def bench_state(bench: Any, busy: bool = False, identities: dict[str, str] | None = None) -> BenchState:
    """A :class:`BenchState` from the Bench's own bookkeeping (no instrument I/O: the
    roles know what they applied; the safe state reads the instruments back)."""
    if bench is None:
        return BenchState(False, note="not connected")
    instruments = tuple(
        InstrumentState(name, spec.model, spec.address, (identities or {}).get(name) or _identity(bench, name),
                        name in bench.drivers)
        for name, spec in bench.config.instruments.items())
    outputs = []
    for name, smu in sorted(bench.smus.items()):
        st = smu.state
        if not st.live:
            level = "off"
        elif st.v_lo == st.v_hi:
            level = f"{st.v_lo:.4g} V ({st.current:.3g} A)"
        else:
            level = f"{st.current:.4g} A (within ±{st.v_hi:.3g} V)"
        outputs.append(OutputState(name, st.live, level))
    welded = tuple(f"{s}{r}{c:02d}" for s, r, c in sorted(bench.welded))
    return BenchState(True, instruments, tuple(outputs), bench.site.id, bench.clock.now(), busy, welded)


def _identity(bench: Any, name: str) -> str:
    driver = bench.drivers.get(name)
    return str(getattr(driver, "identity", "") or getattr(driver, "model", "") or "")


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def start_worker(store: str | Path | None = None) -> tuple[BenchWorker, QThread]:
    """A worker in its own started thread. Stop it with ``stop_worker``."""
    thread = QThread()
    thread.setObjectName("labpcu bench worker")
    worker = BenchWorker(store)
    worker.moveToThread(thread)
    thread.start()
    return worker, thread


def stop_worker(worker: BenchWorker, thread: QThread, timeout_ms: int = 10000) -> None:
    """Abort what runs, close the bench (safe state) in its thread, stop the thread.
    Blocks until the bench is closed: the window must not go before the bench is safe."""
    worker.abort("the window is closing")
    if thread.isRunning():
        QMetaObject.invokeMethod(worker, "_do_close", Qt.BlockingQueuedConnection)
    thread.quit()
    thread.wait(timeout_ms)
