"""Network transport: every simulated instrument as a raw TCP socket on loopback.

``labpcu sim serve`` uses this so that any VISA client (``pyvisa`` with ``@py``,
a vendor tool, a colleague's script) can reach the simulated bench as
``TCPIP::127.0.0.1::<port>::SOCKET``, exactly as it would reach a LAN instrument.

One client at a time per instrument, by default: an instrument's LAN raw socket
serves one session (a client that dies without closing leaves the port "hanging"
until the instrument's dead-socket port or a power cycle frees it), so a second
program can never talk to an instrument in the middle of another's run. A second
concurrent connection is reset unanswered (after waiting up to a second in case the
first is just closing), with one log line on the server; a client that disconnects
frees the instrument for the next one at once.

Threads, not asyncio: emulators are synchronous and the fault plan asks for real
wall-clock delays, which a worker thread per client expresses directly. Every
blocking call waits on the client socket *and* a shared wake-up socket, so
:meth:`SimServer.stop` ends every thread promptly, delays included.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from types import TracebackType

from labpcu.sim.emulator import Emulator

__all__ = ["SimServer"]

log = logging.getLogger(__name__)

_RECV_SIZE = 65536
#: s a new client waits for the previous one's session to end before it is refused:
#: a client that closes and at once reconnects (a driver reopening a dropped link, a
#: bench closed and opened again) can arrive before the server has read the close
_HANDOVER_GRACE = 1.0


class SimServer:
    """Serve several emulators on ``host``, one listening port per instrument.

    :param emulators: instrument name -> emulator; the names label resources.
    :param host: interface to listen on (loopback by default: the bench is not
        meant to be reachable from other machines).
    :param ports: instrument name -> port; missing names or port 0 get a free port.
    :param exclusive: one client per instrument at a time, like a real instrument's
        raw socket (the default). ``False`` lets several clients share an instrument;
        a client's message and the reply it causes are then handled atomically per
        instrument, so replies never cross clients.
    """

    def __init__(
        self,
        emulators: Mapping[str, Emulator],
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        exclusive: bool = True,
    ) -> None:
        if not emulators:
            raise ValueError("SimServer needs at least one emulator")
        for name, emulator in emulators.items():
            if not name or not isinstance(name, str):
                raise ValueError(f"instrument names must be non-empty strings, got {name!r}")
            if not isinstance(emulator, Emulator):
                raise TypeError(f"{name!r} is not an Emulator: {type(emulator).__name__}")
        ports = dict(ports or {})
        unknown = sorted(set(ports) - set(emulators))
        if unknown:
            raise ValueError(f"ports given for unknown instruments: {unknown}")
        for name, port in ports.items():
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise ValueError(f"port for {name!r} must be an int in 0..65535, got {port!r}")
        self.emulators: dict[str, Emulator] = dict(emulators)
        self.host = host
        self._requested = {name: ports.get(name, 0) for name in self.emulators}
        # one lock per emulator object, so two names for one emulator still serialize
        self._locks: dict[int, threading.Lock] = {
            id(e): threading.Lock() for e in self.emulators.values()
        }
        self.exclusive = exclusive
        # emulator id -> the connection holding its session (exclusive mode)
        self._sessions: dict[int, socket.socket] = {}
        self._session_changed = threading.Condition()
        self._listeners: dict[str, socket.socket] = {}
        self._stopping = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._threads: set[threading.Thread] = set()
        self._clients: set[socket.socket] = set()
        self._guard = threading.Lock()  # protects _threads and _clients
        self._life = threading.Lock()  # serializes start() and stop()
        self._state = "new"  # new -> running -> stopped

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> SimServer:
        """Bind every port and serve in background threads; returns at once."""
        with self._life:
            return self._start()

    def _start(self) -> SimServer:
        if self._state != "new":
            raise RuntimeError(f"SimServer can be started once (it is {self._state})")
        try:
            for name, port in self._requested.items():
                sock = socket.create_server((self.host, port))
                sock.setblocking(False)
                self._listeners[name] = sock
        except OSError:
            for sock in self._listeners.values():
                sock.close()
            self._listeners.clear()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._state = "running"
        self._spawn(self._accept_loop, "labpcu-sim-accept")
        return self

    def stop(self) -> None:
        """Close listeners and client connections and join every thread. Idempotent."""
        with self._life:
            self._stop()

    def _stop(self) -> None:
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopped"
        self._stopping.set()
        assert self._wake_w is not None and self._wake_r is not None
        self._wake_w.send(b"x")  # stays readable: wakes every present and future wait
        with self._session_changed:  # and clients waiting for a session
            self._session_changed.notify_all()
        with self._guard:
            clients = list(self._clients)
        for conn in clients:  # unblock a sendall() to a client that does not read
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        while True:
            with self._guard:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                break
            for thread in threads:
                thread.join()
            with self._guard:
                self._threads.difference_update(threads)
        for sock in self._listeners.values():
            sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> SimServer:
        if self._state == "new":
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def ports(self) -> dict[str, int]:
        """Instrument name -> port actually bound."""
        if self._state != "running":
            raise RuntimeError("SimServer is not running: call start() first")
        return {name: sock.getsockname()[1] for name, sock in self._listeners.items()}

    def resources(self) -> dict[str, str]:
        """Instrument name -> VISA resource string a client opens."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return {name: f"TCPIP::{host}::{port}::SOCKET" for name, port in self.ports.items()}

    def serve_forever_until_interrupt(self, print_fn: Callable[[str], object] = print) -> None:
        """Print one ``name  resource`` line per instrument, then serve until Ctrl-C
        (or :meth:`stop` from another thread), and stop cleanly."""
        if self._state == "new":
            self.start()
        resources = self.resources()
        width = max(len(name) for name in resources)
        for name, resource in resources.items():
            print_fn(f"{name:<{width}}  {resource}")
        try:
            while not self._stopping.wait(0.2):  # short waits keep Ctrl-C responsive
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # -- threads ------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._guard:
            # finished threads are pruned here, not by themselves: a thread that is
            # still unwinding must stay visible to stop(), which joins it
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            for name, sock in self._listeners.items():
                sel.register(sock, selectors.EVENT_READ, name)
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.data is None:
                        return
                    try:
                        conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue  # the client gave up between select and accept
                    conn.setblocking(True)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with self._guard:
                        if self._stopping.is_set():
                            conn.close()
                            return
                        self._clients.add(conn)
                    self._spawn(self._serve_client, f"labpcu-sim-{key.data}", key.data, conn)

    def _serve_client(self, name: str, conn: socket.socket) -> None:
        """Read lines, hand each to the emulator, send back what it answers."""
        emulator = self.emulators[name]
        lock = self._locks[id(emulator)]
        buf = bytearray()
        assert self._wake_r is not None
        if self.exclusive and not self._take_session(name, emulator, conn):
            return
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self._wake_r, selectors.EVENT_READ, None)
                sel.register(conn, selectors.EVENT_READ, conn)
                while True:
                    if any(key.data is None for key, _ in sel.select()):
                        return
                    chunk = conn.recv(_RECV_SIZE)
                    if not chunk:
                        return  # client closed
                    buf += chunk
                    while (end := buf.find(b"\n")) >= 0:
                        line = bytes(buf[:end]).rstrip(b"\r")
                        del buf[: end + 1]
                        if emulator.faults.take_drop():
                            self._end_session(emulator, conn)
                            _abort(conn)
                            return
                        with lock:
                            emulator.write(line)
                            out = emulator.take_output()
                        if out and not self._send_replies(conn, emulator, out):
                            return
        except OSError:
            return  # reset by the client, or shut down by stop()
        finally:
            # the session is given back before the close can reach the client, so a
            # client that has seen its connection end can reconnect at once
            self._end_session(emulator, conn)
            with self._guard:
                self._clients.discard(conn)
            conn.close()

    def _take_session(self, name: str, emulator: Emulator, conn: socket.socket) -> bool:
        """Make ``conn`` the instrument's one session, waiting a moment for a previous
        session that is ending. False (and ``conn`` closed): the instrument is busy."""
        key = id(emulator)
        with self._session_changed:
            ok = self._session_changed.wait_for(
                lambda: key not in self._sessions or self._stopping.is_set(), timeout=_HANDOVER_GRACE
            )
            if ok and not self._stopping.is_set():
                self._sessions[key] = conn
                return True
            holder = self._sessions.get(key)
        if not self._stopping.is_set():
            log.warning("%s: refused a connection from %s: %s is connected (one client at a time)",
                        name, _peer(conn), _peer(holder) if holder is not None else "another client")
        with self._guard:
            self._clients.discard(conn)
        _abort(conn)
        return False

    def _end_session(self, emulator: Emulator, conn: socket.socket) -> None:
        with self._session_changed:
            if self._sessions.get(id(emulator)) is conn:
                del self._sessions[id(emulator)]
                self._session_changed.notify_all()

    def _send_replies(self, conn: socket.socket, emulator: Emulator, out: bytes) -> bool:
        """Send reply by reply, applying the fault plan to each. False: connection over."""
        for reply in _split_after(out, emulator.reply_termination):
            delay = emulator.faults.take_reply_delay()
            if delay > 0 and self._stopping.wait(delay):
                return False
            if emulator.faults.take_drop():
                self._end_session(emulator, conn)
                _abort(conn)
                return False
            conn.sendall(reply)
        return True


def _split_after(data: bytes, sep: bytes) -> list[bytes]:
    """Split ``data`` into pieces each ending with ``sep`` (the last one may not)."""
    pieces = [p + sep for p in data.split(sep)]
    pieces[-1] = pieces[-1][: -len(sep)]
    return [p for p in pieces if p]


def _peer(conn: socket.socket) -> str:
    """``host:port`` of the other end, for a log line."""
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return "a client"
    return f"{host}:{port}"


def _abort(conn: socket.socket) -> None:
    """Close with a TCP reset, the way a crashed instrument or a pulled cable looks."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()
