"""In-process transport: a pymeasure :class:`~pymeasure.adapters.Adapter` over one emulator.

Drivers take any pymeasure adapter, so handing them a :class:`SimAdapter` instead of a
``VISAAdapter`` runs the very same driver code against the simulated bench, with no
sockets and no threads. The adapter only moves messages; it mirrors what pymeasure's
``VISAAdapter`` returns for each call (terminations stripped by ``read``, kept by
``read_bytes``; ``read_bytes(-1)`` returns what arrived instead of raising) so that a
driver cannot tell the two apart, including when things go wrong:

* the emulator answers synchronously, so a read with nothing pending can never be
  satisfied and raises the VISA timeout error at once instead of waiting;
* a reply the fault plan delays beyond :attr:`SimAdapter.timeout` raises the timeout
  error without sleeping, and its bytes are discarded (a real late reply would be
  flushed or read by nobody);
* a dropped connection raises ``VI_ERROR_CONN_LOST`` and leaves the adapter dead, as a
  lost VISA session is.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pymeasure.adapters import Adapter
from pyvisa.constants import BufferOperation, StatusCode
from pyvisa.errors import VisaIOError

from labpcu.sim.emulator import Emulator

__all__ = ["SimAdapter", "SimConnection"]


class SimConnection:
    """State of the link, shaped like the part of a pyvisa resource that drivers reach
    through ``adapter.connection`` (``timeout`` in ms, ``clear()``, ``flush()``,
    ``close()``), so such code keeps working in simulation."""

    def __init__(self, emulator: Emulator, timeout_s: float | None) -> None:
        self.emulator = emulator
        self.timeout_s = timeout_s
        #: why I/O fails from now on; ``None`` while the link is usable
        self.dead: StatusCode | None = None

    @property
    def timeout(self) -> float | None:
        """Timeout in milliseconds, ``None`` for "wait forever" (pyvisa convention)."""
        return None if self.timeout_s is None else self.timeout_s * 1000.0

    @timeout.setter
    def timeout(self, value_ms: float | None) -> None:
        self.timeout_s = None if value_ms is None else _check_timeout(value_ms / 1000.0)

    @property
    def read_termination(self) -> str:
        return self.emulator.reply_termination.decode("latin-1")

    @property
    def write_termination(self) -> str:
        return self.emulator.write_termination.decode("latin-1")

    def clear(self) -> None:
        """Device clear: the instrument forgets replies nobody has read yet."""
        self._check_alive()
        self.emulator.clear_output()

    def flush(self, mask: BufferOperation | int = BufferOperation.discard_read_buffer) -> None:
        """Discard unread reply bytes (there is no other buffer in process)."""
        self._check_alive()
        self.emulator.clear_output()

    def close(self) -> None:
        self.dead = StatusCode.error_invalid_object

    def _check_alive(self) -> None:
        if self.dead is not None:
            raise VisaIOError(self.dead)


def _check_timeout(seconds: float) -> float:
    if not (seconds >= 0):  # also rejects NaN
        raise ValueError(f"timeout must be >= 0 s or None, got {seconds!r}")
    return float(seconds)


class SimAdapter(Adapter):
    """pymeasure adapter that talks to one :class:`Emulator` in process.

    :param emulator: the instrument to talk to.
    :param timeout: read timeout in seconds (``None``: never time out). It is never
        waited for; it only decides whether a delayed reply counts as late.
    :param log: parent logger, as for every pymeasure adapter.

    One adapter per emulator: two links reading one emulator would share its single
    output buffer and steal each other's replies.
    """

    connection: SimConnection

    def __init__(
        self,
        emulator: Emulator,
        timeout: float | None = 2.0,
        log: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(log=log, **kwargs)
        if not isinstance(emulator, Emulator):
            raise TypeError(f"SimAdapter needs an Emulator, got {type(emulator).__name__}")
        self.emulator = emulator
        self.connection = SimConnection(
            emulator, None if timeout is None else _check_timeout(timeout)
        )
        # bytes from write_bytes() not yet ended by a line feed (a message in transit)
        self._partial = bytearray()
        # False while a read_bytes() has stopped inside a reply: the rest of that reply
        # is already "on the wire" and must not be delayed a second time
        self._at_reply_start = True

    # -- settings ---------------------------------------------------------------
    @property
    def timeout(self) -> float | None:
        """Read timeout in seconds; ``None`` waits forever."""
        return self.connection.timeout_s

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self.connection.timeout_s = None if seconds is None else _check_timeout(seconds)

    @property
    def closed(self) -> bool:
        return self.connection.dead is not None

    def __repr__(self) -> str:
        return f"<SimAdapter({self.emulator.name!r})>"

    # -- writing ----------------------------------------------------------------
    def _write(self, command: str, **kwargs: Any) -> None:
        """Deliver ``command`` as one message, or one message per line if it holds
        several (e.g. a TSP script body). A single trailing line end is tolerated."""
        _no_kwargs("write", kwargs)
        self._before_io()
        text = command[:-1] if command.endswith("\n") else command
        if self._partial:  # an unfinished write_bytes() message continues here
            text = self._partial.decode("latin-1") + text
            self._partial.clear()
        for line in text.split("\n"):
            self.emulator.write(line)  # the emulator strips a trailing "\r"

    def _write_bytes(self, content: bytes, **kwargs: Any) -> None:
        """Raw bytes, as on a wire: a message reaches the instrument only when its line
        feed does, so a command may be sent in several pieces."""
        _no_kwargs("write_bytes", kwargs)
        self._before_io()
        self._partial += content
        while (end := self._partial.find(b"\n")) >= 0:
            line = bytes(self._partial[:end])
            del self._partial[: end + 1]
            self.emulator.write(line)

    # -- reading ----------------------------------------------------------------
    def _read(self, **kwargs: Any) -> str:
        """One reply without its termination. An unterminated tail is returned as is,
        as pyvisa-py does on a socket when no more bytes come."""
        _no_kwargs("read", kwargs)
        term = self.emulator.reply_termination
        data = self._receive(-1, until=term)
        self._at_reply_start = True
        if data.endswith(term):
            data = data[: -len(term)]
        return data.decode("latin-1")

    def _read_bytes(self, count: int, break_on_termchar: bool = False, **kwargs: Any) -> bytes:
        """Bytes including any termination, with VISAAdapter's meaning of ``count``:
        ``-1`` = everything that arrives (empty if nothing does, no error); otherwise
        exactly ``count`` bytes (a shortfall is a timeout and the bytes are lost), or
        with ``break_on_termchar`` up to the termination or the end of what came."""
        _no_kwargs("read_bytes", kwargs)
        term = self.emulator.reply_termination
        if count == 0:
            self._check_alive()
            return b""
        if count < 0 and not break_on_termchar:
            try:
                data = self._receive(-1, until=None)
            except VisaIOError as exc:
                if exc.error_code != StatusCode.error_timeout:
                    raise
                return b""
        else:
            data = self._receive(count, until=term if break_on_termchar else None)
            if len(data) < count and not break_on_termchar:  # pyvisa keeps waiting
                self._at_reply_start = True
                raise VisaIOError(StatusCode.error_timeout)
        self._at_reply_start = data.endswith(term) or self.emulator.pending_output() == 0
        return data

    def flush_read_buffer(self) -> None:
        """Discard every reply nobody has read."""
        self.connection.flush(BufferOperation.discard_read_buffer)
        self._at_reply_start = True

    def close(self) -> None:
        """Close the link; later I/O raises ``VI_ERROR_INV_OBJECT`` like a closed session."""
        partial = getattr(self, "_partial", None)  # absent if __init__ failed
        if partial is not None:
            partial.clear()
        super().close()

    # -- internals ----------------------------------------------------------------
    def _check_alive(self) -> None:
        self.connection._check_alive()

    def _before_io(self) -> None:
        """Every read and write first checks the link and the drop fault."""
        self._check_alive()
        if self.emulator.faults.take_drop():
            self.connection.dead = StatusCode.error_connection_lost
            self._partial.clear()
            self.log.warning("%s: simulated connection drop", self.emulator.name)
            raise VisaIOError(StatusCode.error_connection_lost)

    def _receive(self, count: int, until: bytes | None) -> bytes:
        """Take reply bytes, applying the drop and late-reply faults; nothing pending
        means nothing will ever come, so time out immediately."""
        self._before_io()
        emulator = self.emulator
        if emulator.pending_output() == 0:
            raise VisaIOError(StatusCode.error_timeout)
        if self._at_reply_start:
            delay = emulator.faults.take_reply_delay()
            limit = math.inf if self.timeout is None else self.timeout
            if delay > limit:
                emulator.take_output(until=emulator.reply_termination)  # nobody reads it
                raise VisaIOError(StatusCode.error_timeout)
        return emulator.take_output(count, until)


def _no_kwargs(call: str, kwargs: dict[str, Any]) -> None:
    """Reject connection keywords loudly rather than ignore them silently."""
    if kwargs:
        raise TypeError(f"SimAdapter.{call}() takes no keyword arguments, got {sorted(kwargs)}")
