"""One process owns a bench: an OS-level advisory lock per instrument address.

Why: opening a bench puts every instrument in its safe state (0 V, outputs off, relays
open). A second process opening the same bench used to do exactly that in the middle
of another process's run, silently: the run kept "measuring" an open circuit and was
stored as completed. Now :meth:`labpcu.bench.Bench.from_file` takes one lock per
instrument address before any driver opens, all or nothing, and a second process is
refused with one line naming the holder (:class:`BenchBusyError`).

How: ``fcntl.flock`` on one file per address (``msvcrt.locking`` on Windows). The
operating system drops the lock when the holding process ends, however it ends
(``kill -9`` included), so there is never a stale lock to clean up; the file itself
stays, and its text is only information. The holder writes its pid, host, command
line and start time into the file so the refusal can name it, and clears it when it
lets go.

Where: ``$LABPCU_LOCK_DIR`` if set; else ``$XDG_RUNTIME_DIR/labpcu/locks``; else
``<temp dir>/labpcu-<uid>/locks``. The default is per user, so it sees every process
of this user on this machine. Two *users* on one machine, or two machines, share
locks only if ``LABPCU_LOCK_DIR`` names a directory they all can write (``flock``
works on a local file system and on NFSv4). A real LAN instrument serves one raw
socket session at a time anyway, as the simulated server does
(:class:`labpcu.sim.server.SimServer`).

Addresses are compared after :func:`normalize_address`, so two spellings of one VISA
resource (``TCPIP0::…`` and ``TCPIP::…``, ``GPIB0::17::INSTR`` and ``gpib::17``)
take the same lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from labpcu.instruments.errors import BenchBusyError

try:  # Linux, macOS
    import fcntl

    _msvcrt = None
except ImportError:  # pragma: no cover - Windows: not exercised by the test suite
    fcntl = None  # type: ignore[assignment]
    import msvcrt as _msvcrt  # type: ignore[no-redef]

__all__ = ["AddressLock", "BenchLock", "Holder", "lock_dir", "lock_path", "normalize_address"]

#: Windows only: the byte that is locked, far past the holder text so that the text
#: stays readable by the refused process (Windows locks are mandatory byte ranges)
_WIN_LOCK_OFFSET = 1 << 20


# ------------------------------------------------------------------ addresses
def normalize_address(address: str) -> str:
    """The canonical form of an instrument address, so that two spellings of one
    instrument take one lock.

    VISA resource strings: interface type and resource class upper case; a missing
    board number is board 0; ``INSTR`` is the default class; a TCPIP board number is
    dropped (it names the local network card, not the instrument); host names lower
    case (``localhost`` is ``127.0.0.1``); a VXI-11 device name defaults to ``inst0``;
    USB vendor and product ids compare as numbers. Anything else: trimmed and case
    folded.

    >>> normalize_address("TCPIP0::127.0.0.1::5025::SOCKET")
    'TCPIP::127.0.0.1::5025::SOCKET'
    >>> normalize_address("gpib::17")
    'GPIB0::17::INSTR'
    """
    text = address.strip()
    parts = [p.strip() for p in text.split("::")]
    m = re.fullmatch(r"(?i)(TCPIP|GPIB|USB|ASRL|VXI|GPIB-VXI|PXI)(\d*)", parts[0])
    if m is None:  # an alias, a serial device path, or not VISA at all
        return text.casefold()
    kind, board = m.group(1).upper(), int(m.group(2) or 0)
    rest = parts[1:]
    rclass = "INSTR"
    if rest and rest[-1].upper() in ("INSTR", "SOCKET", "INTFC", "BACKPLANE", "MEMACC", "SERVANT"):
        rclass = rest.pop().upper()
    if kind == "TCPIP":
        host = rest[0].lower() if rest else ""
        host = "127.0.0.1" if host == "localhost" else host
        if rclass == "SOCKET":
            port = _int_text(rest[1]) if len(rest) > 1 else ""
            return f"TCPIP::{host}::{port}::SOCKET"
        device = rest[1].lower() if len(rest) > 1 else "inst0"
        return f"TCPIP::{host}::{device}::{rclass}"
    return "::".join([f"{kind}{board}", *(_int_text(f) for f in rest), rclass])


def _int_text(field: str) -> str:
    """A numeric field as a decimal number (``0x05E6`` and ``1510`` are one vendor);
    anything else upper case (USB serial numbers are compared case-insensitively)."""
    f = field.strip()
    if f.isdigit():
        return str(int(f))
    if re.fullmatch(r"(?i)0x[0-9a-f]+", f):
        return str(int(f, 16))
    return f.upper()


# ------------------------------------------------------------------ lock files
def lock_dir() -> Path:
    """The directory of the lock files, created if missing: private to this user by
    default, open to whoever the umask allows when ``LABPCU_LOCK_DIR`` names it (a
    directory meant to be shared)."""
    configured = os.environ.get("LABPCU_LOCK_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(mode=0o777, parents=True, exist_ok=True)
        return path
    if os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"]).is_dir():
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "labpcu" / "locks"
    else:
        uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
        path = Path(tempfile.gettempdir()) / f"labpcu-{uid}" / "locks"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid") and path.parent.stat().st_uid != os.getuid():
        # in a shared temp dir someone else could have made it first, to read or
        # block our locks
        raise PermissionError(f"{path.parent} belongs to another user; set LABPCU_LOCK_DIR")
    return path


def lock_path(address: str) -> Path:
    """The lock file of an address: readable name plus a hash of the normalized
    address, so that names that sanitize alike cannot share a file."""
    key = normalize_address(address)
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", key).strip("_")[:80]
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return lock_dir() / f"{readable}-{digest}.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock, as written in its file."""

    pid: int | None
    host: str
    command: str
    started: float  # time.time() when the lock was taken

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), _command_line(), time.time())

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]), float(data["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "command": self.command, "started": self.started})

    def describe(self) -> str:
        """``process 1234 (labpcu run retention, since 12:01:02)``, with the host when
        it is another machine and the date when it is not today."""
        when = time.localtime(self.started)
        fmt = "%H:%M:%S" if time.strftime("%Y%m%d", when) == time.strftime("%Y%m%d") else "%Y-%m-%d %H:%M:%S"
        where = f" on {self.host}" if self.host != socket.gethostname() else ""
        return f"process {self.pid}{where} ({self.command}, since {time.strftime(fmt, when)})"


def _command_line(argv: list[str] | None = None, width: int = 60) -> str:
    """The command line, short: ``labpcu run retention --device S01 …``."""
    args = list(sys.argv if argv is None else argv)
    if not args or args[0] in ("", "-c", "-m"):
        head = ["python", *(args[:1] if args and args[0] else [])]
    else:
        head = [Path(args[0]).name]
    text = " ".join(head + args[1:])
    return text if len(text) <= width else text[: width - 1] + "…"


class AddressLock:
    """The lock of one instrument address, held by this process until :meth:`release`
    (or until the process ends)."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.key = normalize_address(address)
        self.path = lock_path(address)
        self._fd: int | None = None
        self._writable = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting; :class:`BenchBusyError` if another holder has it."""
        if self._fd is not None:
            return
        # a shared LABPCU_LOCK_DIR needs files the other users can open too
        mode = 0o666 if os.environ.get("LABPCU_LOCK_DIR") else 0o600
        writable = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, mode)
        except PermissionError:  # another user's file: flock works on a read-only fd
            fd, writable = os.open(self.path, os.O_RDONLY), False
        try:
            if not _try_lock(fd):
                holder = Holder.parse(_read_all(fd))
                who = holder.describe() if holder else "another process (it has not said which yet)"
                raise BenchBusyError(
                    f"{self.name} ({self.address}) is in use by {who}; wait for it or stop it",
                    name=self.name, address=self.address, pid=holder.pid if holder else None,
                )
            if writable:
                _write_holder(fd, Holder.me().dump())
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._writable = fd, writable

    def release(self) -> None:
        """Give the lock back (idempotent). The holder text is cleared first, so a
        file without a live lock never names a process as its holder."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._writable:
                _write_holder(fd, "")
            _unlock(fd)
        finally:
            os.close(fd)

    def holder(self) -> Holder | None:
        """The holder the file names: the live holder, or one that died holding the
        lock (its text stays until the next holder writes); None after a release."""
        try:
            return Holder.parse(self.path.read_text(encoding="utf-8"))
        except OSError:
            return None


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)  # pragma: no cover - Windows
    try:  # pragma: no cover
        _msvcrt.locking(fd, _msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)  # pragma: no cover - Windows
    _msvcrt.locking(fd, _msvcrt.LK_UNLCK, 1)  # pragma: no cover


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _write_holder(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())


class BenchLock:
    """The locks of every instrument of a bench, taken all or nothing.

    :param addresses: instrument name -> address. Simulated instruments (``"sim"``)
        are skipped: each process builds its own simulated wafer.
    """

    def __init__(self, addresses: Mapping[str, str]) -> None:
        by_key: dict[str, AddressLock] = {}
        for name, address in addresses.items():
            if address.strip().lower() == "sim":
                continue
            lock = AddressLock(name, address)
            by_key.setdefault(lock.key, lock)  # two names for one address: one lock
        # one order for every process, so two processes starting together cannot
        # each hold half of the bench
        self.locks: list[AddressLock] = [by_key[k] for k in sorted(by_key)]

    @classmethod
    def acquire_all(cls, addresses: Mapping[str, str]) -> BenchLock:
        lock = cls(addresses)
        lock.acquire()
        return lock

    def acquire(self) -> None:
        """Take every lock; if one is busy, give back those already taken and raise
        :class:`BenchBusyError` naming the busy one."""
        taken: list[AddressLock] = []
        try:
            for lock in self.locks:
                lock.acquire()
                taken.append(lock)
        except BaseException:
            _release_all(taken)
            raise

    def release(self) -> None:
        """Give back every lock (idempotent)."""
        _release_all(self.locks)

    @property
    def held(self) -> bool:
        return bool(self.locks) and all(lock.held for lock in self.locks)

    def __enter__(self) -> BenchLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _release_all(locks: Iterable[AddressLock]) -> None:
    errors: list[BaseException] = []
    for lock in reversed(list(locks)):
        try:
            lock.release()
        except OSError as exc:  # keep releasing the others
            errors.append(exc)
    if errors:
        raise errors[0]
