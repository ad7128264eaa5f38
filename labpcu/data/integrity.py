"""Crash safety below the run store: the writer lock, the undo journal, the superblock's
consistency flags, and the crash-injection hook the tests use.

Why each piece exists:

* **The writer lock** (``<store>.lock``, ``fcntl.flock``). One labpcu writer at a time,
  held from the start of a run to its final status, so a second writer waits (bounded)
  or is refused with one line, and so "is this ``running`` run alive?" has an exact
  answer: its writer holds the lock. HDF5's own file locks are *not* used (``locking=False``
  everywhere): they let any reader (a GUI polling the file) block a writer's open,
  which is how readers used to change a run's outcome.
* **The undo journal** (``<store>.journal``). Outside SWMR, HDF5 rewrites metadata in
  place (the superblock, the ``/runs`` group's index, object headers) when a file
  closes; a kill in the middle leaves a torn, unopenable file. Every non-SWMR write
  session goes through :class:`JournaledFile` (h5py's ``fileobj`` driver), which keeps
  the session's writes in memory and applies them at the end, after saving the old
  value of every pre-existing byte they overwrite to the journal (fsynced). A crash
  at any instant leaves the file either as it was before the session (nothing
  applied yet, or roll the journal back) or as after it (the journal says
  ``committed``). Bytes past the old end of file need no journal: rolling back
  truncates them away.
* **The consistency flags.** A killed SWMR writer leaves the superblock marked "open
  for write", and plain readers (h5py without ``swmr=True``, pandas, xarray, HDFView)
  refuse the file. :func:`clear_flags` clears them in place, as ``h5clear -s`` does:
  no copy of a large file.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import signal
import socket
import struct
import time
import uuid as uuidlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labpcu.data.errors import StoreBusyError, StoreError

_HOST = socket.gethostname()


# --------------------------------------------------------------- crash injection
_crash_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here if ``$LABPCU_CRASH_AT`` is ``name`` or
    ``name:n`` (the n-th time this point is reached). A no-op otherwise: it lets the
    tests crash the store deterministically inside each write window, not by sleeping."""
    spec = os.environ.get("LABPCU_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    hits = _crash_hits[name] = _crash_hits.get(name, 0) + 1
    if hits == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# -------------------------------------------------------------------- the lock
def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def journal_path(store: Path) -> Path:
    return store.with_name(store.name + ".journal")


@dataclass(frozen=True)
class LockState:
    """What a probe of the writer lock saw. ``token`` changes at every acquisition, so
    two probes with the same token bracket a span in which no writer started."""

    held: bool
    token: str = ""
    run_uuid: str = ""
    pid: int = -1
    host: str = ""

    def describe(self) -> str:
        what = f"run {self.run_uuid}" if self.run_uuid else "a write session"
        return f"process {self.pid} on {self.host} ({what})"


def _parse_lock(text: str, held: bool) -> LockState:
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    try:
        pid = int(fields.get("pid", "-1"))
    except ValueError:
        pid = -1
    return LockState(held, fields.get("token", ""), fields.get("run", ""), pid, fields.get("host", ""))


def probe_lock(store: Path) -> LockState:
    """Is a writer holding the store's lock (and which)? Takes a shared lock for a few
    microseconds at most; never waits, never creates the lock file."""
    try:
        fd = os.open(lock_path(store), os.O_RDONLY)
    except FileNotFoundError:
        return LockState(False)
    except OSError:
        return LockState(False)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if not held:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return _parse_lock(text, held)
    finally:
        os.close(fd)


class StoreLock:
    """The exclusive writer lock of one store (an ``flock`` on ``<store>.lock``). Held
    by one open file description, so two writers in one process exclude each other
    too. Released by :meth:`release`, or by the kernel when the process dies."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = lock_path(store)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, run_uuid: str = "") -> bool:
        """Take the lock if it is free; never waits."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        text = f"token={uuidlib.uuid4().hex} pid={os.getpid()} host={_HOST} run={run_uuid}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        self._fd = fd
        return True

    def acquire(self, run_uuid: str = "", timeout: float = 5.0) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for another writer to end;
        then :class:`StoreBusyError` naming it."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not self._try(run_uuid):
            if time.monotonic() >= deadline:
                state = probe_lock(self.store)
                who = state.describe() if state.held else "another process"
                raise StoreBusyError(f"{self.store} is being written by {who}; waited {timeout:g} s: "
                                     "wait for it or use another file")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _try(self, run_uuid: str) -> bool:
        try:
            return self.try_acquire(run_uuid)
        except OSError as exc:
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __del__(self) -> None:  # an abandoned writer must not keep the store locked
        with contextlib.suppress(Exception):
            self.release()


# ------------------------------------------------------------ the session gate
#: bytes of the lock file locked by the session gate (OFD byte-range locks, which are
#: independent of the whole-file flock of the writer lock)
_GATE_BYTE, _RW_BYTE = 1, 2
#: how long a session waits for readers in flight before writing anyway (a reader must
#: never be able to stop a run from ending)
SESSION_WAIT_S = 30.0
#: how long a reader waits for a session to end before reading anyway (and retrying)
READ_WAIT_S = 10.0


def _range_lock(fd: int, kind: int, byte: int) -> bool:
    """Take an open-file-description lock on one byte; False if it conflicts."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", kind, os.SEEK_SET, byte, 1, 0))
    except (BlockingIOError, PermissionError):
        return False
    return True


def _wait_range_lock(fd: int, kind: int, byte: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not _range_lock(fd, kind, byte):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(2 * delay, 0.02)
    return True


_HAS_OFD = hasattr(fcntl, "F_OFD_SETLK")


@contextlib.contextmanager
def reading_gate(store: Path) -> Iterator[None]:
    """Held by a reader while it has the file open: no non-SWMR session writes
    meanwhile (HDF5 reading metadata that is being rewritten in place can fail, hang or
    crash). A reader holds it only while reading; a session waits for readers in
    flight, and new readers wait behind a waiting session (the gate byte), so readers
    cannot starve a writer. Readers never wait more than READ_WAIT_S."""
    fd = _open_lock_file(store, for_write=False)
    if fd is None:
        yield
        return
    try:
        if _wait_range_lock(fd, fcntl.F_RDLCK, _GATE_BYTE, READ_WAIT_S):
            _wait_range_lock(fd, fcntl.F_RDLCK, _RW_BYTE, READ_WAIT_S)
            _range_lock(fd, fcntl.F_UNLCK, _GATE_BYTE)
        yield
    finally:
        os.close(fd)  # drops this description's locks


@contextlib.contextmanager
def session_gate(store: Path) -> Iterator[None]:
    """Held by a writer during a non-SWMR session: waits (up to SESSION_WAIT_S) for the
    readers in flight, and keeps new ones out until the session is committed."""
    fd = _open_lock_file(store, for_write=True)
    if fd is None:
        yield
        return
    try:
        _wait_range_lock(fd, fcntl.F_WRLCK, _GATE_BYTE, SESSION_WAIT_S)
        _wait_range_lock(fd, fcntl.F_WRLCK, _RW_BYTE, SESSION_WAIT_S)
        yield
    finally:
        os.close(fd)


def _open_lock_file(store: Path, *, for_write: bool) -> int | None:
    if not _HAS_OFD:
        return None
    path = lock_path(store)
    with contextlib.suppress(OSError):
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666) if for_write else os.open(path, os.O_RDONLY)
    if not for_write:  # no lock file yet (a store no labpcu writer has opened): make it if we may
        with contextlib.suppress(OSError):
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    return None


# ---------------------------------------------------------------- superblock
M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & M32


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5's v2+ metadata
    (``H5_checksum_lookup3``)."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & M32
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & M32
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & M32
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & M32
        a = (a - c) & M32; a ^= _rot(c, 4); c = (c + b) & M32  # noqa: E702 - the published mix
        b = (b - a) & M32; b ^= _rot(a, 6); a = (a + c) & M32  # noqa: E702
        c = (c - b) & M32; c ^= _rot(b, 8); b = (b + a) & M32  # noqa: E702
        a = (a - c) & M32; a ^= _rot(c, 16); c = (c + b) & M32  # noqa: E702
        b = (b - a) & M32; b ^= _rot(a, 19); a = (a + c) & M32  # noqa: E702
        c = (c - b) & M32; c ^= _rot(b, 4); b = (b + a) & M32  # noqa: E702
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:i + length] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & M32
    b = (b + int.from_bytes(tail[4:8], "little")) & M32
    c = (c + int.from_bytes(tail[8:12], "little")) & M32
    c ^= b; c = (c - _rot(b, 14)) & M32  # noqa: E702 - the published final
    a ^= c; a = (a - _rot(c, 11)) & M32  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & M32  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & M32  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & M32  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & M32  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & M32  # noqa: E702
    return c


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class Superblock:
    """The fields of a version 2/3 superblock at offset 0 that crash repair needs.
    Layout (HDF5 file format spec, "Superblock version 2 and 3"): signature (8),
    version (1), size of offsets (1), size of lengths (1), consistency flags (1), base
    address, extension address, end-of-file address, root object header address (each
    size-of-offsets bytes), then a lookup3 checksum of all the preceding bytes (4)."""

    version: int
    sizeof_offsets: int
    flags: int
    eof: int
    checksum_ok: bool
    raw: bytes

    @property
    def size(self) -> int:
        return 12 + 4 * self.sizeof_offsets + 4


def read_superblock(path: Path) -> Superblock | None:
    """The superblock, or None if the file does not start with a v2/v3 superblock
    (older versions have no flags that block readers; a user block is not used here)."""
    with open(path, "rb") as fh:
        head = fh.read(12 + 4 * 8 + 4)
    if len(head) < 12 or head[:8] != _SIGNATURE or head[8] not in (2, 3):
        return None
    so = head[9]
    if so not in (2, 4, 8) or len(head) < 12 + 4 * so + 4:
        return None
    n = 12 + 4 * so
    eof = int.from_bytes(head[12 + 2 * so:12 + 3 * so], "little")
    stored = struct.unpack("<I", head[n:n + 4])[0]
    return Superblock(head[8], so, head[11], eof, stored == lookup3(head[:n]), head[:n + 4])


def clear_flags(path: Path) -> bool:
    """Clear the superblock's consistency flags in place (``h5clear -s``): one write of
    the superblock's own bytes, with its checksum recomputed. Returns whether anything
    was changed. Raises StoreError if the superblock is not one this can fix (then the
    copy route is left)."""
    sb = read_superblock(path)
    if sb is None:
        raise StoreError(f"{path} has no version 2/3 superblock at its start; its flags cannot be cleared in place")
    if not sb.checksum_ok:
        raise StoreError(f"{path}: the superblock's checksum is wrong; it is not a flag that can be cleared")
    if sb.flags == 0:
        return False
    new = bytearray(sb.raw)
    n = sb.size - 4
    new[11] = 0
    new[n:n + 4] = struct.pack("<I", lookup3(bytes(new[:n])))
    fd = os.open(path, os.O_RDWR)
    try:
        crash_point("repair.flags")
        if os.pwrite(fd, bytes(new), 0) != len(new):
            raise StoreError(f"{path}: short write clearing the superblock flags")
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


# -------------------------------------------------------------------- journal
_MAGIC = b"LABPCUJ1"
_HEAD = struct.Struct("<8sQ")       # magic, the file's size when the session began
_REC = struct.Struct("<cQQ")        # b"R", offset, length; then the bytes and a crc32
_COMMIT = b"C"


class JournaledFile(io.RawIOBase):
    """A file h5py writes through (``driver="fileobj"``): the session's writes are
    kept in memory (reads see them) and reach the file only at :meth:`commit`, which
    first saves the old value of every pre-existing byte they overwrite to the undo
    journal. So a kill before the commit leaves the file untouched, and a kill during
    it is undone by :func:`rollback`. Four fsyncs per session, whatever HDF5 writes."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        super().__init__()
        self.path = path
        self.journal = journal_path(path)
        self.durable = durable
        self._fd: int | None = os.open(path, os.O_RDWR)
        self._size0 = os.fstat(self._fd).st_size  # the file on disk, untouched until commit
        self._size = self._size0                  # the file as HDF5 sees it
        self._zero_from = self._size0             # bytes from here on were truncated away
        self._writes: list[tuple[int, bytes]] = []
        self._pos = 0

    # io.RawIOBase
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = pos
        elif whence == 1:
            self._pos += pos
        else:
            self._pos = self._size + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        pos = self._pos
        n = max(0, min(len(buf), self._size - pos))
        data = bytearray(n)
        disk_end = min(pos + n, self._zero_from)
        if disk_end > pos:
            chunk = os.pread(self._fd, disk_end - pos, pos)  # type: ignore[arg-type]
            data[:len(chunk)] = chunk
        for off, w in self._writes:  # in order: later writes win
            lo, hi = max(off, pos), min(off + len(w), pos + n)
            if lo < hi:
                data[lo - pos:hi - pos] = w[lo - off:hi - off]
        memoryview(buf).cast("B")[:n] = data
        self._pos += n
        return n

    def write(self, buf: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(buf)
        self._writes.append((self._pos, data))
        self._pos += len(data)
        self._size = max(self._size, self._pos)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size < self._size:
            self._zero_from = min(self._zero_from, size)
            self._writes = [(off, w[:max(0, size - off)]) for off, w in self._writes if off < size]
        self._size = size
        return size

    def flush(self) -> None:
        pass  # nothing reaches the file before commit

    # the journal
    def _old_ranges(self) -> list[tuple[int, int]]:
        """The pre-existing byte ranges the commit overwrites or cuts, merged."""
        spans = [(off, min(off + len(w), self._size0)) for off, w in self._writes if off < self._size0]
        if self._zero_from < self._size0:
            spans.append((self._zero_from, self._size0))
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(s for s in spans if s[0] < s[1]):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return merged

    def commit(self) -> None:
        """Write the session to the file, all or nothing: the old bytes to the journal
        (fsynced), then the new ones to the file (fsynced), then drop the journal."""
        fd = self._fd
        assert fd is not None
        if not self._writes and self._size == self._size0:
            self._close_fds()
            return
        records = [_HEAD.pack(_MAGIC, self._size0)]
        for lo, hi in self._old_ranges():
            old = os.pread(fd, hi - lo, lo)
            head = _REC.pack(b"R", lo, len(old))
            records.append(head + old + struct.pack("<I", zlib.crc32(head + old)))
        jfd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(jfd, b"".join(records))
            if self.durable:
                os.fsync(jfd)
                _fsync_dir(self.path.parent)
            crash_point("journal.saved")
            if self._zero_from < self._size0:
                os.ftruncate(fd, self._zero_from)
            for off, data in self._writes:
                os.pwrite(fd, data, off)
                crash_point("journal.write")
            if os.fstat(fd).st_size != self._size:
                os.ftruncate(fd, self._size)
            if self.durable:
                os.fsync(fd)
            crash_point("journal.before_commit")
            os.write(jfd, _COMMIT)
            crash_point("journal.committed")
        finally:
            os.close(jfd)
        self._close_fds()
        os.unlink(self.journal)
        if self.durable:
            _fsync_dir(self.path.parent)

    def abandon(self) -> None:
        """Drop the session: nothing of it reached the file."""
        self._writes = []
        self._close_fds()

    def _close_fds(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._close_fds()
        super().close()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def journal_pending(store: Path) -> bool:
    return journal_path(store).exists()


def rollback(store: Path) -> str:
    """Apply a left-over journal: restore every saved byte (newest record first, so the
    oldest value wins) and cut the file back to its size before the session; or, for a
    committed journal, just drop it. Idempotent: a crash during a rollback is finished
    by the next one. Returns what was done ("" when there was no journal)."""
    jpath = journal_path(store)
    try:
        data = jpath.read_bytes()
    except FileNotFoundError:
        return ""
    if len(data) < _HEAD.size or data[:8] != _MAGIC:  # died writing the header: the file was not touched
        jpath.unlink()
        return "dropped an empty journal"
    size0 = _HEAD.unpack_from(data)[1]
    records: list[tuple[int, bytes]] = []
    pos = _HEAD.size
    committed = False
    while pos < len(data):
        if data[pos:pos + 1] == _COMMIT:
            committed = True
            break
        if pos + _REC.size > len(data):
            break
        kind, offset, length = _REC.unpack_from(data, pos)
        end = pos + _REC.size + length + 4
        if kind != b"R" or end > len(data):
            break  # torn last record: its write to the file never happened
        body = data[pos:pos + _REC.size + length]
        if struct.unpack_from("<I", data, pos + _REC.size + length)[0] != zlib.crc32(body):
            break
        records.append((offset, data[pos + _REC.size:pos + _REC.size + length]))
        pos = end
    if committed:
        jpath.unlink()
        return "dropped a committed journal"
    fd = os.open(store, os.O_RDWR)
    try:
        for k, (offset, old) in enumerate(reversed(records)):
            os.pwrite(fd, old, offset)
            if k == 0:
                crash_point("repair.rollback")
        os.ftruncate(fd, size0)
        os.fsync(fd)
    finally:
        os.close(fd)
    jpath.unlink()
    _fsync_dir(store.parent)
    return f"rolled back an unfinished write ({len(records)} blocks restored, cut to {size0} bytes)"
