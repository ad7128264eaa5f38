"""The message-level contract every instrument emulator keeps.

An emulator receives the messages a real instrument would receive (one message per
line, termination already removed by the transport) and produces the bytes the real
instrument would send back. Transports (the in-process pymeasure adapter and the TCP
server) only move bytes; drivers never know they are talking to a simulator.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from labpcu.sim.faults import FaultPlan

if TYPE_CHECKING:
    from labpcu.sim.bench import SimBench


LOG_CAPACITY = 200_000


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One message across the emulator's wire, stamped with simulated time."""

    t: float
    direction: Literal["in", "out"]
    message: str


@dataclass(slots=True)
class InstrumentError:
    code: int
    message: str
    severity: int = 30


class ErrorQueue:
    """A bounded FIFO of instrument errors; on overflow the newest entry is lost
    and the last slot reports the overflow, as SCPI-style queues do."""

    def __init__(self, capacity: int, overflow: InstrumentError) -> None:
        self.capacity = capacity
        self._overflow = overflow
        self._q: deque[InstrumentError] = deque()

    def push(self, code: int, message: str, severity: int = 30) -> None:
        if len(self._q) >= self.capacity:
            return
        if len(self._q) == self.capacity - 1:
            self._q.append(self._overflow)
            return
        self._q.append(InstrumentError(int(code), str(message), int(severity)))

    def pop(self) -> InstrumentError | None:
        return self._q.popleft() if self._q else None

    def clear(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self):
        return iter(list(self._q))


class Emulator(ABC):
    """Base class: logging, output buffer, error queue, fault plan, bench lock.

    Subclasses implement :meth:`handle` (one incoming message) and may override
    :meth:`reset`. Replies are appended with :meth:`reply`, already terminated.
    """

    #: model name as used in bench files and ``labpcu sim serve`` output
    model: str = "emulator"
    #: what the real instrument appends to each reply
    reply_termination: bytes = b"\n"
    #: what the real instrument expects at the end of each incoming message
    write_termination: bytes = b"\n"

    def __init__(self, bench: SimBench | None = None, name: str | None = None) -> None:
        self.bench = bench
        self.name = name or self.model
        #: the most recent messages both ways (bounded: a long session must not fill memory)
        self.log: deque[LogEntry] = deque(maxlen=LOG_CAPACITY)
        self.log_enabled = True
        self.faults = FaultPlan()
        self.errors = self._make_error_queue()
        self._out = bytearray()
        # one lock for all emulators of a bench: they share one circuit
        self._lock: threading.RLock = bench.lock if bench is not None else threading.RLock()

    # -- to implement -------------------------------------------------------
    @abstractmethod
    def handle(self, message: str) -> None:
        """Act on one incoming message as the instrument would (never raise)."""

    def _make_error_queue(self) -> ErrorQueue:
        return ErrorQueue(30, InstrumentError(-350, "Queue overflow"))

    def reset(self) -> None:
        """Return to power-on settings (what ``*RST``/``reset()`` does)."""

    # -- the wire -----------------------------------------------------------
    def now(self) -> float:
        return self.bench.clock.now() if self.bench is not None else 0.0

    def write(self, message: str | bytes) -> None:
        """Accept one message (without its termination). Never raises on bad input:
        a malformed message lands in the error queue, as on the real instrument."""
        if isinstance(message, (bytes, bytearray)):
            message = bytes(message).decode("latin-1")
        message = message.rstrip("\r\n")
        with self._lock:
            if self.log_enabled:
                self.log.append(LogEntry(self.now(), "in", message))
            try:
                self.handle(message)
            except Exception as exc:  # an emulator bug must not kill the session
                self.errors.push(-300, f"Device-specific error: emulator: {exc!r}")

    def reply(self, data: str | bytes, terminate: bool = True) -> None:
        """Queue one reply for the client to read."""
        if isinstance(data, str):
            data = data.encode("latin-1")
        if terminate:
            data = data + self.reply_termination
        if self.log_enabled:
            self.log.append(LogEntry(self.now(), "out", data.decode("latin-1").rstrip("\r\n")))
        self._out += data

    def pending_output(self) -> int:
        """Number of reply bytes waiting to be read."""
        return len(self._out)

    def take_output(self, count: int = -1, until: bytes | None = None) -> bytes:
        """Remove and return reply bytes: up to and including ``until`` if given and
        present, else up to ``count`` bytes (all if ``count`` < 0)."""
        with self._lock:
            end = len(self._out)
            if until is not None:
                i = self._out.find(until)
                if i >= 0:
                    end = i + len(until)
            if count >= 0:
                end = min(end, count)
            data = bytes(self._out[:end])
            del self._out[:end]
            return data

    def clear_output(self) -> None:
        with self._lock:
            self._out.clear()

    # -- faults and inspection ----------------------------------------------
    def inject_error(self, code: int, message: str) -> None:
        """Fault injection: place an error in the queue as if the instrument raised it."""
        with self._lock:
            self.errors.push(code, message)

    def messages_in(self) -> list[str]:
        """Every message received so far, oldest first (the proof of what was sent)."""
        return [e.message for e in self.log if e.direction == "in"]

    def clear_log(self) -> None:
        self.log.clear()
