"""What every labpcu driver shares: transport failures turned into one exception type,
and (for TSP instruments) the error-queue discipline.

Keeping this in one place means the runner sees the same
:class:`~labpcu.instruments.errors.InstrumentCommunicationError` whether a 2612A timed
out over GPIB or a B1500A's socket was reset, with the action that failed in the text.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyvisa.errors
from pymeasure.instruments import Instrument
from pyvisa import constants as visa_constants
from pyvisa.constants import StatusCode

from labpcu.instruments.errors import DataFormatError, InstrumentCommunicationError, InstrumentError

log = logging.getLogger(__name__)

#: what a transport raises when the link fails (pyvisa-py raises plain OSErrors on a reset socket)
COMM_ERRORS = (pyvisa.errors.Error, OSError)


def is_timeout(exc: BaseException | None) -> bool:
    if isinstance(exc, pyvisa.errors.VisaIOError):
        return exc.error_code == StatusCode.error_timeout
    return isinstance(exc, TimeoutError)


def enable_tcp_nodelay(adapter: Any) -> bool:
    """Switch Nagle's algorithm off on a raw-socket VISA resource
    (``TCPIP::host::port::SOCKET``); True if the socket now sends at once.

    A TSP or FLEX exchange is a short write and, often at once, a short query: with
    Nagle on, the second small segment waits for the peer's delayed ACK (~40 ms on
    Linux), which turned a 6.6 ms host-loop ISPP step into 312 ms over TCP
    (``benchmarks/bench_ispp.py``). VISA's own attribute ``VI_ATTR_TCPIP_NODELAY`` is
    tried first (NI-VISA and others honour it); pyvisa-py lists it but refuses to set
    it, so its session's socket is set directly. Other resources (GPIB, USB, VXI-11,
    the simulator's in-process adapter) are left alone.
    """
    conn = getattr(adapter, "connection", None)
    name = str(getattr(conn, "resource_name", "") or "")
    if conn is None or not name.upper().startswith("TCPIP") or not name.upper().endswith("::SOCKET"):
        return False
    try:
        conn.set_visa_attribute(visa_constants.VI_ATTR_TCPIP_NODELAY, visa_constants.VI_TRUE)
        if conn.get_visa_attribute(visa_constants.VI_ATTR_TCPIP_NODELAY) == visa_constants.VI_TRUE:
            return True
    except Exception:  # noqa: BLE001 - pyvisa-py raises its own UnknownAttribute
        pass
    session = getattr(getattr(conn, "visalib", None), "sessions", {}).get(getattr(conn, "session", None))
    sock = getattr(session, "interface", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return True
        except OSError as exc:
            log.warning("%s: could not set TCP_NODELAY: %s", name, exc)
            return False
    log.warning("%s: TCP_NODELAY not set (the VISA library refuses it and exposes no socket); "
                "each query may wait ~40 ms for a delayed ACK", name)
    return False


class PlainAttributes:
    """Attribute reads at C speed. pymeasure's ``CommonBase.__getattribute__`` runs
    Python code on every read of every attribute (to refuse reads of the reserved
    names its dynamic properties keep their per-instance values under): about 1 µs a
    read, ~5 % of a simulated characterization. Writes keep pymeasure's ``__setattr__``
    (which stores those values under their reserved names), and no labpcu code reads a
    reserved name. Put first among the bases of every driver and channel class."""

    __getattribute__ = object.__getattribute__


def _link_error(name: str, doing: str, exc: BaseException) -> InstrumentCommunicationError:
    """A transport failure as the one exception drivers raise, naming what failed."""
    kind = "no reply within the timeout" if is_timeout(exc) else "connection failed"
    return InstrumentCommunicationError(f"{name}: {kind} while {doing}: {exc}")


class GuardedInstrument(PlainAttributes, Instrument):
    """A pymeasure Instrument whose I/O raises only InstrumentCommunicationError on a
    transport failure, naming what it was doing (the instrument's state is unknown)."""

    def __init__(self, adapter: Any, name: str, **kwargs: Any) -> None:
        super().__init__(adapter, name, **kwargs)
        enable_tcp_nodelay(self.adapter)  # before the subclass's first query

    #: True once an exchange timed out or the link failed: a late reply may still
    #: arrive and answer the next query, so nothing read on this link can be trusted
    #: until it is reopened (:meth:`labpcu.bench.Bench.safe_state` does that first)
    out_of_step = False

    @staticmethod
    @contextmanager
    def _link(doing: str, name: str) -> Iterator[None]:
        try:
            yield
        except COMM_ERRORS as exc:
            raise _link_error(name, doing, exc) from exc

    def _failed(self, doing: str, exc: BaseException) -> InstrumentCommunicationError:
        """The error :meth:`_link` raises, for this instrument's own link, which a
        failure marks out of step. Written out in each I/O method rather than as a
        context manager: this runs on every message, and a generator-based ``with``
        plus the eagerly formatted description cost more than the in-process transfer
        itself."""
        self.out_of_step = True
        return _link_error(self.name, doing, exc)

    def write(self, command: str, **kwargs: Any) -> None:
        try:
            super().write(command, **kwargs)
        except COMM_ERRORS as exc:
            raise self._failed(f"sending {command[:80]!r}", exc) from exc

    def write_bytes(self, content: bytes, **kwargs: Any) -> None:
        try:
            super().write_bytes(content, **kwargs)
        except COMM_ERRORS as exc:
            raise self._failed(f"sending {len(content)} bytes", exc) from exc

    def read(self, **kwargs: Any) -> str:
        try:
            return super().read(**kwargs)
        except COMM_ERRORS as exc:
            raise self._failed("reading a reply", exc) from exc

    def read_bytes(self, count: int, **kwargs: Any) -> bytes:
        try:
            return super().read_bytes(count, **kwargs)
        except COMM_ERRORS as exc:
            raise self._failed(f"reading {count} bytes", exc) from exc


class TspInstrument(GuardedInstrument):
    """A Keithley TSP instrument: queries are ``print(...)``; errors sit in
    ``errorqueue`` and are read after every configuration step."""

    #: True while a silent query is being diagnosed (no second diagnosis inside it)
    _diagnosing = False

    def ask(self, command: str, query_delay: float | None = None) -> str:
        """Send a query and read its reply.

        A TSP runtime error inside ``print(...)`` makes the instrument print nothing,
        so the read times out. The error queue is then read once: its errors are raised
        as :class:`InstrumentError` (the real cause); otherwise the timeout stands.
        """
        self.write(command)
        self.wait_for(query_delay)
        try:
            return self.adapter.read()
        except COMM_ERRORS as exc:
            failure = self._failed(f"reading the reply to {command[:80]!r}", exc)
            if not is_timeout(exc) or self._diagnosing:
                raise failure from exc
            failure.__cause__ = exc
            timeout = failure
        self._diagnosing = True
        try:
            errors = self.check_errors()
        except InstrumentCommunicationError:
            errors = []
        finally:
            self._diagnosing = False
        if errors:
            raise self._error(errors) from timeout
        raise timeout

    def check_errors(self) -> list[tuple[int, str]]:
        """Drain the error queue; returns ``[(code, message), ...]`` (empty if none).

        Reads ``print(errorqueue.count)`` first, so an empty queue costs one query.
        """
        count = self._number(self.ask("print(errorqueue.count)"), "print(errorqueue.count)")
        return self._drain(count)

    def _drain(self, count: float) -> list[tuple[int, str]]:
        """Read ``count`` errors (``print(errorqueue.next())``), logging each."""
        errors: list[tuple[int, str]] = []
        for _ in range(int(count)):
            reply = self.ask("print(errorqueue.next())")
            fields = reply.split("\t")
            code = int(self._number(fields[0], "print(errorqueue.next())"))
            message = fields[1] if len(fields) > 1 else ""
            if code == 0:  # the queue emptied meanwhile
                break
            log.error("%s: error %d: %s", self.name, code, message)
            errors.append((code, message))
        return errors

    def drain_errors(self) -> list[tuple[int, str]]:
        """Empty the error queue and return what was there (no raise)."""
        return self.check_errors()

    def check_set_errors(self) -> list[tuple[int, str]]:
        """After a configuration write: raise :class:`InstrumentError` if the queue holds
        anything (the instrument's first error; later ones are appended)."""
        errors = self.check_errors()
        if errors:
            raise self._error(errors)
        return errors

    def write_checked(self, chunk: str) -> None:
        """Send one TSP chunk with its error check at its end, as one query
        (``<chunk> print(errorqueue.count)``): one round trip where a write and
        :meth:`check_set_errors` take two. Raises :class:`InstrumentError` as that does.

        A parameter error does not stop a chunk, so the count comes back and the queue
        is drained as usual; a Lua runtime error does stop it, the print never runs and
        :meth:`ask` reads the queue after the timeout and raises the error it finds.
        """
        query = f"{chunk} print(errorqueue.count)"
        errors = self._drain(self._number(self.ask(query), query))
        if errors:
            raise self._error(errors)

    def check_get_errors(self) -> list[tuple[int, str]]:
        return self.check_set_errors()

    def _error(self, errors: list[tuple[int, str]]) -> InstrumentError:
        code, message = errors[0]
        if len(errors) > 1:
            message += " (then: " + "; ".join(f"{c}: {m}" for c, m in errors[1:]) + ")"
        return InstrumentError(self.name, code, message)

    def clear_errors(self) -> None:
        """Empty the error queue without reading it (``errorqueue.clear()``)."""
        self.write("errorqueue.clear()")

    def _number(self, reply: str, query: str) -> float:
        try:
            return float(reply)
        except ValueError:
            raise DataFormatError(f"{self.name}: unexpected reply {reply!r} to {query!r}") from None
