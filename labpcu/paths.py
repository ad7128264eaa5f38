"""Checks of the files a command will write or read, made before any instrument is
opened: a run that cannot be stored must not program a single device first.

Everything here looks at the file system only (``stat`` and, for a regular file, its
first bytes); nothing opens a FIFO or a device, which would block forever.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

#: the first 8 bytes of every HDF5 file (at offset 0, or 512, 1024, ... after a user block)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_UNDEFINED = (1 << 64) - 1
#: superblock file-consistency flags: open for writing, open for SWMR writing
_WRITE_FLAGS = 0x1 | 0x4


class PathError(ValueError):
    """A path a command needs cannot be used; the message says why (one line)."""


def check_store_path(path: str | Path, *, create: bool, what: str = "run store") -> Path:
    """Refuse a run store that cannot work, before it is opened: a directory, a FIFO
    or other non-regular file (opening one blocks), a file that is not HDF5, an HDF5
    file cut short (HDF5's reader in SWMR mode retries on it for ever), a place we
    cannot create or write. ``create``: the command writes runs (a missing file is
    created), else it only reads (a missing file is an error)."""
    p = Path(path)
    st = _stat(p)
    if st is None:
        if not create:
            raise PathError(f"no {what} at {p}")
        check_creatable(p, what)
        return p
    if stat.S_ISDIR(st.st_mode):
        raise PathError(f"{p} is a directory, not a {what} (an HDF5 file)")
    if not stat.S_ISREG(st.st_mode):
        raise PathError(f"{p} is not a regular file ({_kind(st.st_mode)}); a {what} is an HDF5 file")
    if not os.access(p, os.R_OK):
        raise PathError(f"{p} is not readable (permission denied)")
    if create and not os.access(p, os.W_OK):
        raise PathError(f"{p} is not writable (permission denied)")
    if st.st_size == 0:
        raise PathError(f"{p} is empty, not an HDF5 {what}; remove it or name another file")
    problem = hdf5_problem(p, st.st_size, what)
    if problem:
        raise PathError(f"{p} {problem}")
    return p


def hdf5_problem(path: Path, size: int, what: str = "run store") -> str:
    """Why a regular file is not a whole HDF5 file ("" if it looks like one): no
    signature, or fewer bytes than its superblock's end-of-file address (truncated).
    A file a writer holds open may be ahead of its superblock, so it is not judged."""
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            f.seek(offset)
            head = f.read(96)
            if head[:8] == HDF5_SIGNATURE:
                return _truncation(head, offset, size)
            offset = 512 if offset == 0 else offset * 2
    return f"is not an HDF5 file (no HDF5 signature); a {what} is an HDF5 file written by labpcu"


def _truncation(head: bytes, offset: int, size: int) -> str:
    version = head[8] if len(head) > 8 else -1
    try:
        if version in (0, 1):
            width = head[13]
            flags = struct.unpack_from("<I", head, 20)[0]
            at = 24 if version == 0 else 28
        elif version in (2, 3):
            width = head[9]
            flags = head[11]
            at = 12
        else:
            return ""
        if width != 8:
            return ""
        base, _, eof = struct.unpack_from("<3Q", head, at)
    except (IndexError, struct.error):
        return f"is truncated ({size} bytes, not even a whole HDF5 superblock)"
    if flags & _WRITE_FLAGS or eof == _UNDEFINED or base == _UNDEFINED:
        return ""
    needed = (base or offset) + eof
    if size < needed:
        return f"is truncated: {size} bytes where its HDF5 superblock says {needed}"
    return ""


def check_creatable(path: str | Path, what: str = "file") -> Path:
    """Refuse a file we could not create: its nearest existing parent must be a
    writable directory (missing folders between are created by the writer)."""
    p = Path(path)
    parent = p.parent
    while _stat(parent) is None and parent != parent.parent:
        parent = parent.parent
    st = _stat(parent)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise PathError(f"cannot create the {what} {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f"cannot create the {what} {p}: {parent} is not writable (permission denied)")
    return p


def check_output_file(path: str | Path, what: str = "file") -> Path:
    """A file a command will (over)write: not a directory or special file, and in a
    place we can write."""
    p = Path(path)
    st = _stat(p)
    if st is None:
        return check_creatable(p, what)
    if stat.S_ISDIR(st.st_mode):
        raise PathError(f"cannot write the {what} {p}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise PathError(f"cannot write the {what} {p}: it is not a regular file ({_kind(st.st_mode)})")
    if not os.access(p, os.W_OK):
        raise PathError(f"cannot write the {what} {p}: permission denied")
    return p


def check_output_folder(path: str | Path, what: str = "folder") -> Path:
    """A folder a command will write into (created if missing): not an existing file."""
    p = Path(path)
    st = _stat(p)
    if st is None:
        return check_creatable(p, what)
    if not stat.S_ISDIR(st.st_mode):
        raise PathError(f"cannot write the {what} {p}: it exists and is not a folder; name a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise PathError(f"cannot write the {what} {p}: permission denied")
    return p


def _stat(p: Path) -> os.stat_result | None:
    try:
        return p.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise PathError(f"cannot use {p}: {exc.strerror or exc}") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"
