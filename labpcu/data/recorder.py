"""The run recorder: appends a run's points to its HDF5 columns in blocks.

The hot path (:meth:`RunRecorder.append`) only copies values into preallocated numpy
buffers; HDF5 is touched when a buffer fills or the flush interval has passed, so the
cost per point is a few hundred nanoseconds whatever the file system. A background
thread flushes stale buffers too, so points taken before a long wait (a retention
interval, a slow instrument) reach the disk within ``flush_interval`` seconds even
when nothing else is appended.

The recorder knows nothing of the store: :meth:`Store.begin_run` hands it a ``finish``
callable that stores the run's end, so the dependency is one-way (store -> recorder).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import h5py
import numpy as np

from labpcu.data.columns import Column, ColumnError, check_text
from labpcu.data.integrity import crash_point

#: types a one-point block is made of (checked by identity: the fast path)
_SCALAR_TYPES = frozenset({float, int, bool, str, np.float64, np.float32, np.int64, np.int32, np.bool_})
#: ``on_flush(rows_on_disk)``, called after each flush (from whichever thread flushed)
FlushListener = Callable[[int], None]


class FinishRun(Protocol):
    """Stores a run's end (its results, status, reason, row count) once its SWMR handle
    is closed; returns the (status, error) stored."""

    def __call__(self, run_id: str, status: str, *, error: str, results: Mapping[str, Any] | None,
                 n_points: int, bench_time_end: float,
                 documents: Mapping[str, Any] | None = None) -> tuple[str, str]: ...


class RunRecorder:
    """Writes one run. Made by :meth:`Store.begin_run`; end it with :meth:`finish`."""

    def __init__(
        self,
        h5file: h5py.File,
        run_id: str,
        columns: tuple[Column, ...],
        *,
        flush_interval: float,
        block_rows: int,
        finish: FinishRun,
        release: Callable[[], None] = lambda: None,
        on_flush: FlushListener | None = None,
    ) -> None:
        self._finish = finish
        self._release = release  # gives up the run's hold on the store without finishing it
        self.run_id = run_id
        self.columns = columns
        self._file = h5file
        data = h5file["runs"][run_id]["data"]
        self._datasets = [data[c.name] for c in columns]
        # the run's ``point`` dimension scale (netCDF readers), unless a column is the
        # dimension itself: resized after every column, so its length is always the rows
        # every column holds (what a plain reader may read)
        scale = h5file["runs"][run_id].get("point") if "point" not in (c.name for c in columns) else None
        self._scale = scale if isinstance(scale, h5py.Dataset) else None
        self._names = [c.name for c in columns]
        self._str_columns = [i for i, c in enumerate(columns) if c.dtype == "str"]
        self._capacity = block_rows
        self._buffers = [np.empty(block_rows, dtype=c.numpy_dtype) for c in columns]
        self._pending = 0  # rows in the buffers
        self._on_disk = 0  # rows written to every column
        self._flush_interval = flush_interval
        self._last_flush = time.monotonic()
        self._on_flush = on_flush
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"flush {run_id}", daemon=True)
        self._flusher.start()

    # ------------------------------------------------------------------ appends
    @property
    def rows(self) -> int:
        """Rows appended so far (on disk or buffered)."""
        return self._on_disk + self._pending

    @property
    def rows_on_disk(self) -> int:
        return self._on_disk

    def append(self, block: Mapping[str, Any]) -> int:
        """Append one point (scalars) or a block (1-D arrays of equal length; scalars
        are repeated along it). Every declared column must be given. Returns the number
        of rows appended."""
        if self._closed:
            raise ColumnError(f"run {self.run_id} is closed; nothing more can be appended")
        if len(block) != len(self._names):
            self._check_keys(block)
        try:
            values = [block[name] for name in self._names]
        except KeyError:
            self._check_keys(block)
            raise
        scalar_row = all(type(v) in _SCALAR_TYPES for v in values)
        n = 1 if scalar_row else _block_length(values, self._names)
        for i in self._str_columns:  # checked here: at write time a bad one would fail half-way
            v = values[i]
            if type(v) is not str or not v.isascii() or "\x00" in v:
                _check_texts(self._names[i], v)
        with self._lock:
            if scalar_row and self._pending < self._capacity:  # the per-point hot path
                pos = self._pending
                for buf, v in zip(self._buffers, values):
                    buf[pos] = v
                self._pending = pos + 1
            else:
                self._append_block(values, n)
            if self._pending >= self._capacity or time.monotonic() - self._last_flush >= self._flush_interval:
                self._write()
        return n

    def _append_block(self, values: list[Any], n: int) -> None:
        start = 0
        while start < n:
            if self._pending == self._capacity:
                self._write()
            take = min(n - start, self._capacity - self._pending)
            pos = self._pending
            for buf, v in zip(self._buffers, values):
                buf[pos:pos + take] = v if np.ndim(v) == 0 else np.asarray(v)[start:start + take]
            self._pending = pos + take
            start += take

    def _check_keys(self, block: Mapping[str, Any]) -> None:
        extra = [k for k in block if k not in self._names]
        missing = [k for k in self._names if k not in block]
        if extra:
            raise ColumnError(f"run {self.run_id}: column {extra[0]!r} was not declared (declared: {', '.join(self._names)})")
        if missing:
            raise ColumnError(f"run {self.run_id}: the block lacks column {missing[0]!r}")

    # ------------------------------------------------------------------ flushing
    def flush(self) -> None:
        """Write buffered rows and flush the file (readers see them from now on)."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        n = self._pending
        if n and not self._closed:
            end = self._on_disk + n
            for k, (ds, buf) in enumerate(zip(self._datasets, self._buffers)):
                chunk = buf[:n]
                if k in self._str_columns:
                    chunk = np.array([v if isinstance(v, str) else str(v) for v in chunk], dtype=object)
                ds.resize((end,))
                ds[self._on_disk:end] = chunk
                if k == 0:
                    crash_point("recorder.write")  # one column written, the others not yet
            if self._scale is not None:
                self._scale.resize((end,))
            self._file.flush()
            self._on_disk = end
            self._pending = 0
            if self._on_flush is not None:
                self._on_flush(end)
            crash_point("recorder.flushed")
        self._last_flush = time.monotonic()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._flush_interval / 4):
            with self._lock:
                if self._pending and time.monotonic() - self._last_flush >= self._flush_interval:
                    self._write()

    # ------------------------------------------------------------------- ending
    def close(self) -> int:
        """Flush and close the SWMR handle (idempotent); returns the rows on disk."""
        self._stop.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join()
        with self._lock:
            if not self._closed:
                try:
                    self._write()
                finally:
                    self._closed = True
                    crash_point("recorder.close")
                    self._file.close()
        return self._on_disk

    def finish(
        self,
        status: str,
        *,
        error: str = "",
        results: Mapping[str, Any] | None = None,
        bench_time_end: float = float("nan"),
        documents: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Close the run with its status, reason and results (and ``documents`` kept
        beside the runs, in the same write); returns the (status, error) stored, which
        is ``failed`` if the results could not be stored."""
        try:
            n = self.close()
        except BaseException:
            self._release()
            raise
        return self._finish(self.run_id, status, error=error, results=results, n_points=n,
                            bench_time_end=bench_time_end, documents=documents)


def _block_length(values: list[Any], names: list[str]) -> int:
    """Rows in a block: the common length of its arrays, 1 if all are scalars."""
    n = 1
    seen_array = False
    for name, v in zip(names, values):
        if isinstance(v, (str, bytes)) or np.ndim(v) == 0:
            continue
        if np.ndim(v) != 1:
            raise ColumnError(f"column {name!r}: values must be scalars or 1-D, not {np.ndim(v)}-D")
        length = len(v)
        if seen_array and length != n:
            raise ColumnError(f"column {name!r} has {length} values where the block's other columns have {n}")
        n, seen_array = length, True
    return n


def _check_texts(name: str, value: Any) -> None:
    """A str column's value(s) must be text HDF5 can store (non-str values are stored
    as their ``str``)."""
    for v in [value] if isinstance(value, str) else np.asarray(value, dtype=object).ravel():
        check_text(v if isinstance(v, str) else str(v), f"column {name!r}: text")
