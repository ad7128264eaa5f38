"""The run store: one HDF5 file holding many measurement runs (DESIGN.md, "HDF5 layout").

::

    /                      attrs: schema="labpcu", schema_version, created, labpcu_version
    /runs/<run_id>/        attrs: protocol, parameters (JSON), parameter_units (JSON),
                                  devices (JSON), bench (JSON), labpcu_version, started,
                                  finished, status, error, n_points, pid, host, uuid,
                                  bench_time_start, bench_time_end
    /runs/<run_id>/data/<column>   chunked, resizable 1-D datasets of equal length;
                                   attrs: units, description; dimension: point
    /runs/<run_id>/point           the columns' netCDF dimension scale (no data of its own)
    /runs/<run_id>/results         attributes and small datasets (see labpcu.data.tree)
    /index/<field>                 the run index, one row per run (see _index_append)

Why the file is opened the way it is (the crash-safety pieces are in
:mod:`labpcu.data.integrity`):

* A run is written in SWMR mode (single writer, multiple readers): HDF5 keeps the file
  consistent on disk at every flush, so the GUI can watch it and a killed process loses
  at most the points not yet flushed. SWMR forbids creating objects or attributes, so
  the run's groups, datasets and metadata are made first, SWMR is switched on for the
  appends, and the final status and results are written after reopening.
* Everything written outside SWMR (making a run, its end, re-analysis, codebooks,
  repairs) is a *session* whose bytes go through an undo journal: a kill at any instant
  leaves the file as before the session or as after it, never torn.
* One writer at a time: a writer holds ``<store>.lock`` (``flock``) from the start of a
  run to its final status. A second writer waits ``lock_timeout`` seconds, then gets a
  one-line StoreBusyError. A run marked ``running`` is alive exactly while its writer
  holds that lock, otherwise it reads as ``interrupted``.
* Readers only read: HDF5 file locking off (a reader never blocks a writer), ``swmr=True``
  (works on a file being written). The one exception is the read-side crash repair:
  if no writer holds the lock, a reader takes it, rolls back a dead writer's unfinished
  session and clears the "open for write" flags (in place, as ``h5clear -s``) so plain
  HDF5 readers open the file again. It never changes a run's status; the next writer
  (or ``labpcu store repair``) marks dead runs ``interrupted``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import stat
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
import pandas as pd

from labpcu import __version__
from labpcu.data.columns import Column, ColumnError, check_columns, check_name, check_text
from labpcu.data.errors import SchemaError, StoreBusyError, StoreError  # noqa: F401 - re-exported
from labpcu.data.integrity import (
    JournaledFile,
    StoreLock,
    clear_flags,
    crash_point,
    journal_pending,
    probe_lock,
    read_superblock,
    reading_gate,
    rollback,
    session_gate,
)
from labpcu.data.recorder import FlushListener, RunRecorder
from labpcu.data.tree import from_json, read_tree, to_json, write_tree

T = TypeVar("T")

SCHEMA = "labpcu"
SCHEMA_VERSION = 1
#: schema versions this code reads (older ones would need an upgrade step here)
READABLE_VERSIONS = frozenset({1})
#: run statuses; ``interrupted`` means the writing process died mid-run
STATUSES = ("running", "completed", "aborted", "failed", "interrupted")
#: oldest HDF5 file format that has SWMR; files stay readable by HDF5 1.10 and later
LIBVER = ("v110", "v110")
_STR = h5py.string_dtype()
#: rows per chunk of a run's columns (1 KB of float64). Not compressed: under SWMR a
#: chunk flushed again (a slow run's last, partial chunk, once a second) keeps its place
#: only if its size does not change, and HDF5 never reuses space a SWMR writer frees (a
#: reader may still be reading it), so a compressed chunk would leave a copy behind at
#: every flush (measured: 1.7x to 50x the raw size, flushing every 1,000 to 10 rows). A
#: small chunk keeps the last, partly filled one cheap: an 11-point run takes 1 KB per
#: column, a long run its raw size plus < 1 KB per column and its chunk index (~3 %)
_CHUNK_ROWS = 128
#: attributes kept in the object header (compact) up to this many, instead of a heap
#: and a B-tree of their own per group: a run's group has about 17
_MAX_COMPACT_ATTRS = 64
#: the dimension of a run's columns, for netCDF readers (xarray's h5netcdf engine): a
#: dimension scale in the run's group, beside ``data``, as netCDF-4 writes a dimension
#: that is not also a variable (no data of its own)
POINT_DIM = "point"
_NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."
#: the run index: one row per run, so that listing, numbering and claiming runs read a
#: few small datasets instead of every run's group (see :func:`_index_append`)
INDEX = "index"
_INDEX_STR = ("run_id", "protocol", "status", "started", "finished", "devices", "error", "uuid", "metadata")
_INDEX_COLUMNS = (*_INDEX_STR, "n_points")
_INDEX_CHUNK = 256
#: how long a reader retries a file a writer is updating before giving up
READ_RETRY_S = 3.0
_HOST = socket.gethostname()


@dataclass(frozen=True)
class RunInfo:
    """A run's metadata and results, as stored."""

    run_id: str
    protocol: str
    status: str
    error: str
    devices: tuple[str, ...]
    parameters: dict[str, Any]
    parameter_units: dict[str, str]
    bench: dict[str, Any]
    started: str
    finished: str
    n_points: int
    columns: dict[str, str]  # name -> units
    results: dict[str, Any] = field(default_factory=dict)
    labpcu_version: str = ""
    uuid: str = ""
    bench_time_start: float = float("nan")
    bench_time_end: float = float("nan")
    metadata: dict[str, Any] = field(default_factory=dict)  # sample, operator, note, campaign task


def now_iso() -> str:
    """Local time with its UTC offset, to the microsecond."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="microseconds")


class Store:
    """A run store backed by one HDF5 file (created on the first run written).

    ``Store(path).runs()`` lists runs, ``.read(run_id)`` gives a run's columns as a
    DataFrame, ``.info(run_id)`` its metadata and results. Writing goes through
    :meth:`begin_run`, normally called by :class:`labpcu.runner.Runner`.
    """

    def __init__(self, path: str | Path, *, flush_interval: float = 1.0, block_rows: int = 65536,
                 lock_timeout: float = 5.0, durable: bool = True) -> None:
        self.path = Path(path)
        if not flush_interval > 0:
            raise StoreError(f"flush_interval must be > 0 s, not {flush_interval!r}")
        if block_rows < 1:
            raise StoreError(f"block_rows must be >= 1, not {block_rows!r}")
        if not lock_timeout >= 0:
            raise StoreError(f"lock_timeout must be >= 0 s, not {lock_timeout!r}")
        self.flush_interval = float(flush_interval)
        self.block_rows = int(block_rows)
        #: how long a writer waits for another one to end before StoreBusyError
        self.lock_timeout = float(lock_timeout)
        #: fsync each write session (the journal, then the file). False skips the fsyncs
        #: (for bulk imports, tests and benchmarks): a killed process still leaves every
        #: session all or nothing, since the kernel keeps the writes' order, but a power
        #: loss or an OS crash may not
        self.durable = bool(durable)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ------------------------------------------------------------------ opening
    def _read(self, fn: Callable[[h5py.File], T]) -> T:
        """``fn(file)`` on the file open read-only. Never writes; never blocks a writer
        (HDF5 file locking off). Retried for up to ``READ_RETRY_S`` seconds, since a
        writer may be mid-update; a crash left behind is repaired first if, and only if,
        no writer holds the store's lock (:meth:`_repair_if_unlocked`)."""
        if not self.path.exists():
            raise StoreError(f"no run store at {self.path}")
        _check_hdf5_signature(self.path)
        self._repair_if_unlocked()
        deadline = time.monotonic() + READ_RETRY_S
        delay = 0.005
        while True:
            with reading_gate(self.path):
                try:
                    f = _h5open(self.path, "r", swmr=True)
                except OSError as exc:
                    last: BaseException = exc
                else:
                    try:
                        _check_schema(f, self.path)
                        return fn(f)
                    except StoreError:
                        raise
                    except (OSError, KeyError, RuntimeError, ValueError, AttributeError) as exc:  # mid-update
                        last = exc
                    finally:
                        f.close()
            if time.monotonic() >= deadline:
                raise StoreError(f"cannot read {self.path}: {_first_line(last)} "
                                 "(`labpcu store check` diagnoses it)")
            time.sleep(delay)
            delay = min(2 * delay, 0.1)
            self._repair_if_unlocked()

    def _repair_if_unlocked(self) -> None:
        """Read-side crash repair: if a dead writer left an unfinished journal or the
        "open for write" flags, and no writer holds the store's lock, roll the journal
        back and clear the flags, holding the lock so that no writer can start
        meanwhile. Run statuses are never touched here: readers do not mark."""
        try:
            sb = read_superblock(self.path)
        except OSError:
            return
        if (sb is None or sb.flags == 0) and not journal_pending(self.path):
            return
        if probe_lock(self.path).held or _hdf5_locked(self.path):
            return  # a live writer: SWMR readers manage, and its crash is not ours to judge
        lock = StoreLock(self.path)
        try:
            if not lock.try_acquire():
                return
        except OSError:  # a read-only folder: read what can be read
            return
        try:
            with session_gate(self.path):
                _repair_file(self.path)
        except (OSError, StoreError):
            pass
        finally:
            lock.release()

    def _resolved(self, fn: Callable[[h5py.File], T], running: Callable[[T], list[str]]) -> tuple[T, set[str]]:
        """``fn``'s reading, and the uuids of the runs in it still marked ``running``
        whose writer is gone. A run is alive while its writer holds the store's lock
        (the lock file names the run); the lock is probed before and after the read,
        and a run is called dead only if no writer started in between (same lock
        token), so a reader never mistakes a run that just ended for a dead one."""
        for _ in range(5):
            before = probe_lock(self.path)
            out = self._read(fn)
            after = probe_lock(self.path)
            live = {s.run_uuid for s in (before, after) if s.held}
            unsure = [u for u in running(out) if u not in live]
            if not unsure or before.token == after.token:
                return out, set(unsure)
        return out, set()  # writers kept starting: report them as running, the safe answer

    def _prepare_for_write(self) -> None:
        """Holding the lock: make the file (atomically) if missing, undo an unfinished
        write session of a dead writer, clear the flags a dead SWMR writer left."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            _create_store(self.path)
            return
        _check_hdf5_signature(self.path)
        _repair_file(self.path)

    @contextlib.contextmanager
    def _session(self, lock: StoreLock | None = None, *, claim: bool = False,
                 gated: bool = False) -> Iterator[h5py.File]:
        """The file open for a non-SWMR write session, all or nothing: HDF5 writes go
        through the undo journal, committed when the session ends, rolled back if it
        raises (or, after a crash, by the next opener). ``lock``: the writer lock the
        caller holds (else taken here, bounded wait). ``claim`` (a new run starts):
        runs left ``running`` by dead writers become ``interrupted`` for good.
        ``gated``: the caller holds the session gate already (else it is taken here)."""
        own = lock is None
        if lock is None:
            lock = StoreLock(self.path)
            lock.acquire(timeout=self.lock_timeout)
        try:
            with contextlib.ExitStack() as stack:
                if not gated:
                    stack.enter_context(session_gate(self.path))
                yield stack.enter_context(self._journaled(claim))
        finally:
            if own:
                lock.release()

    @contextlib.contextmanager
    def _journaled(self, claim: bool) -> Iterator[h5py.File]:
        """The body of :meth:`_session`, for a caller holding the lock and the gate."""
        self._prepare_for_write()
        jf = JournaledFile(self.path, durable=self.durable)
        try:
            f = h5py.File(jf, "r+", libver=LIBVER)
        except Exception as exc:
            jf.abandon()
            raise StoreError(f"cannot open {self.path} for writing: {_first_line(exc)}") from None
        ok = False
        try:
            if "schema" not in f.attrs and len(f) == 0:
                _init_root(f)
            _check_schema(f, self.path)
            f.require_group("runs")
            if claim:
                _mark_dead_runs(f, tail=CLAIM_TAIL)
            yield f
            ok = True
        finally:
            if ok:
                f.close()
                jf.commit()
            else:
                with contextlib.suppress(Exception):
                    f.close()
                jf.abandon()

    # ------------------------------------------------------------------ reading
    def writable(self) -> contextlib.AbstractContextManager[h5py.File]:
        """The file open for writing beside the runs (``/codebooks`` and other
        extensions), with the same lock, crash repair, journal and schema check a run
        gets: all of it is stored or none. Not for runs: use :meth:`begin_run`."""
        return self._session()

    def write_document(self, name: str, value: Any) -> None:
        """Keep a small JSON document beside the runs (``/documents`` attribute
        ``name``): the simulated wafer's state, a campaign's definition. Written in
        one journaled session, so a crash keeps the old document or the new one."""
        check_name(name, "document")
        text = to_json(value)
        with self.writable() as f:
            f.require_group("documents").attrs[name] = text

    def read_document(self, name: str) -> Any | None:
        """A document :meth:`write_document` kept, or None."""
        if not self.path.exists():
            return None

        def scan(f: h5py.File) -> Any | None:
            docs = f.get("documents")
            return from_json(docs.attrs[name]) if docs is not None and name in docs.attrs else None

        return self._read(scan)

    def run_ids(self) -> list[str]:
        """Every run id, oldest first."""
        if not self.path.exists():
            return []

        def scan(f: h5py.File) -> list[str]:
            ix = _index(f)
            if ix is not None:
                return sorted(ix["run_id"].asstr()[:])
            return sorted(f["runs"]) if "runs" in f else []

        return self._read(scan)

    def runs(
        self,
        protocol: str | None = None,
        status: str | None = None,
        device: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        sample: str | None = None,
        operator: str | None = None,
    ) -> pd.DataFrame:
        """One row per run (index ``run_id``), filtered by protocol, status, a device
        the run measured, its start time (``since`` <= started < ``until``), and its
        sample (any value of its ``sample`` metadata, e.g. the wafer) or operator.
        The ``metadata`` column holds each run's metadata (a dict)."""
        if status is not None and status not in STATUSES:
            raise StoreError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")

        def scan(f: h5py.File) -> list[dict[str, Any]]:
            ix = _index(f)
            if ix is not None:
                return _index_scan(f, ix)
            rows = []  # a store from before the index (or one whose index is stale): every run's group
            for run_id, grp in sorted(f.get("runs", {}).items()):
                a = grp.attrs
                devices = tuple(from_json(a.get("devices", "[]")))
                rows.append({
                    "run_id": run_id,
                    "protocol": _s(a.get("protocol")),
                    "status": _s(a.get("status")),
                    "started": _s(a.get("started")),
                    "finished": _s(a.get("finished")),
                    "devices": ", ".join(devices),
                    "n_points": _n_points(grp),
                    "error": _s(a.get("error")),
                    "_devices": devices,
                    "_uuid": _s(a.get("uuid")),
                    "metadata": from_json(a.get("metadata", "{}")),
                })
            return rows

        rows: list[dict[str, Any]] = []
        if self.path.exists():
            rows, dead = self._resolved(scan, lambda rs: [r["_uuid"] for r in rs if r["status"] == "running"])
            for r in rows:
                if r["status"] == "running" and r["_uuid"] in dead:
                    r["status"] = "interrupted"
        cols = ["run_id", "protocol", "status", "started", "finished", "duration", "devices", "n_points", "error",
                "metadata"]
        df = pd.DataFrame(rows, columns=[*cols, "_devices"])
        df["started"] = pd.to_datetime(df["started"], utc=True, format="ISO8601")
        df["finished"] = pd.to_datetime(df["finished"].replace("", None), utc=True, format="ISO8601")
        df["duration"] = (df["finished"] - df["started"]).dt.total_seconds()
        df["n_points"] = df["n_points"].astype("int64")
        keep = np.ones(len(df), dtype=bool)
        if protocol is not None:
            keep &= (df["protocol"] == protocol).to_numpy()
        if status is not None:
            keep &= (df["status"] == status).to_numpy()
        if device is not None:
            keep &= np.array([device in d for d in df["_devices"]], dtype=bool)
        if since is not None:
            keep &= (df["started"] >= _utc(since)).to_numpy()
        if until is not None:
            keep &= (df["started"] < _utc(until)).to_numpy()
        if sample is not None:
            keep &= np.array([sample in _sample_values(m) for m in df["metadata"]], dtype=bool)
        if operator is not None:
            keep &= np.array([_sample_of(m).get("operator") == operator for m in df["metadata"]], dtype=bool)
        return df.loc[keep, cols].set_index("run_id")

    def info(self, run_id: str) -> RunInfo:
        """A run's metadata and results."""

        def scan(f: h5py.File) -> RunInfo:
            grp = _run_group(f, run_id, self.path)
            a = grp.attrs
            data = grp.get("data", {})
            return RunInfo(
                run_id=run_id,
                protocol=_s(a.get("protocol")),
                status=_s(a.get("status")),
                error=_s(a.get("error")),
                devices=tuple(from_json(a.get("devices", "[]"))),
                parameters=from_json(a.get("parameters", "{}")),
                parameter_units=from_json(a.get("parameter_units", "{}")),
                bench=from_json(a.get("bench", "{}")),
                started=_s(a.get("started")),
                finished=_s(a.get("finished")),
                n_points=_n_points(grp),
                columns={name: _s(ds.attrs.get("units")) for name, ds in _ordered(data)},
                results=read_tree(grp["results"]) if "results" in grp else {},
                labpcu_version=_s(a.get("labpcu_version")),
                uuid=_s(a.get("uuid")),
                metadata=from_json(a.get("metadata", "{}")),
                bench_time_start=float(a.get("bench_time_start", np.nan)),
                bench_time_end=float(a.get("bench_time_end", np.nan)),
            )

        info, dead = self._resolved(scan, lambda i: [i.uuid] if i.status == "running" else [])
        if info.status == "running" and info.uuid in dead:
            info = dataclasses.replace(info, status="interrupted")
        return info

    def results(self, run_id: str) -> dict[str, Any]:
        return self.info(run_id).results

    def read(self, run_id: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """A run's columns as a DataFrame, trimmed to the rows every column has (a run
        being written, or cut by a crash, may hold one column a block ahead).
        ``df.attrs["units"]`` maps column to units; ``df.attrs["run_id"]`` names the run."""

        def scan(f: h5py.File) -> pd.DataFrame:
            grp = _run_group(f, run_id, self.path)
            # first: a live run's columns are refreshed here, and a handle opened before
            # another one's refresh can keep a stale chunk index (HDF5 then reads one
            # chunk's data for another once a column has several chunks)
            n_rows = _n_points(grp)
            ordered = _ordered(grp.get("data", {}))
            names = [n for n, _ in ordered] if columns is None else list(columns)
            by_name = dict(ordered)
            for n in names:
                if n not in by_name:
                    raise StoreError(f"run {run_id} has no column {n!r}; it has {', '.join(by_name) or 'none'}")
            out: dict[str, Any] = {}
            for n in names:
                ds = by_name[n]
                if h5py.check_string_dtype(ds.dtype) is not None:
                    out[n] = pd.Series(ds.asstr()[:n_rows], dtype=object)
                else:
                    out[n] = pd.Series(ds[:n_rows])
            df = pd.DataFrame(out, columns=names)
            df.attrs["units"] = {n: _s(by_name[n].attrs.get("units")) for n in names}
            df.attrs["run_id"] = run_id
            return df

        return self._read(scan)

    def read_xarray(self, run_id: str) -> Any:
        """The run as an ``xarray.Dataset`` (dimension ``point``; units and the run's
        metadata in attrs). Needs xarray (``pip install labpcu[xarray]``)."""
        try:
            import xarray as xr
        except ImportError:
            raise StoreError("read_xarray needs xarray: pip install 'labpcu[xarray]'") from None
        df = self.read(run_id)
        info = self.info(run_id)
        ds = xr.Dataset({n: ("point", df[n].to_numpy(), {"units": df.attrs["units"][n]}) for n in df.columns},
                        coords={"point": np.arange(len(df))})
        ds.attrs.update(run_id=run_id, protocol=info.protocol, status=info.status,
                        devices=to_json(info.devices), parameters=to_json(info.parameters),
                        started=info.started, finished=info.finished)
        return ds

    # ------------------------------------------------------------------ writing
    def begin_run(
        self,
        protocol: str,
        columns: Sequence[Column],
        *,
        parameters: Mapping[str, Any] | None = None,
        parameter_units: Mapping[str, str] | None = None,
        devices: Sequence[str] = (),
        bench: Mapping[str, Any] | None = None,
        bench_time_start: float = float("nan"),
        metadata: Mapping[str, Any] | None = None,
        on_flush: FlushListener | None = None,
    ) -> RunRecorder:
        """Create a run (status ``running``) and return its recorder, already in SWMR
        mode. Waits up to ``lock_timeout`` seconds for another writer, then raises
        StoreBusyError."""
        check_name(protocol, "protocol")  # it names the run's group: "/" would nest it
        cols = check_columns(columns)
        # made and checked before the run's group exists, so a refusal leaves no half-made run
        meta = {
            "parameters": to_json(dict(parameters or {})),
            "parameter_units": to_json(dict(parameter_units or {})),
            "devices": to_json(list(devices)),
            "bench": to_json(dict(bench or {})),
            "metadata": to_json(dict(metadata or {})),
        }
        for key, text in meta.items():
            try:
                check_text(text, f"run {key}")
            except ColumnError as exc:
                raise StoreError(str(exc)) from None
        run_uuid = str(uuidlib.uuid4())
        lock = StoreLock(self.path)
        lock.acquire(run_uuid, timeout=self.lock_timeout)  # held until the run's final status is stored
        try:
            crash_point("begin_run.locked")
            with session_gate(self.path):  # until SWMR is on: readers wait meanwhile
                with self._session(lock, claim=True, gated=True) as fw:
                    runs = fw["runs"]
                    ix = _writable_index(fw)
                    n_rows = ix["run_id"].shape[0]  # rows are in run order: the newest is last
                    last = ix["run_id"].asstr()[n_rows - 1] if n_rows else ""
                    run_id = f"{_run_number(last) + 1:05d}-{protocol}"
                    grp = _new_group(runs, run_id)
                    a = grp.attrs
                    a["protocol"] = protocol
                    for key, text in meta.items():
                        a[key] = text
                    a["labpcu_version"] = __version__
                    a["started"] = now_iso()
                    a["finished"] = ""
                    a["status"] = "running"
                    a["error"] = ""
                    a["n_points"] = -1  # unknown until the run closes
                    a["pid"] = os.getpid()
                    a["host"] = _HOST
                    a["uuid"] = run_uuid
                    a["bench_time_start"] = float(bench_time_start)
                    a["bench_time_end"] = float("nan")
                    _make_columns(_new_group(grp, "data", track_order=True), cols)
                    _new_group(grp, "results")
                    _index_append(ix, _index_values(grp, run_id))
                    crash_point("begin_run.created")
                crash_point("begin_run.committed")
                # a fresh handle, so SWMR's is the only one; creating objects is done
                f = _h5open(self.path, "a", libver=LIBVER)
                try:
                    crash_point("begin_run.opened")
                    f.swmr_mode = True
                except BaseException:
                    f.close()
                    raise
                crash_point("begin_run.swmr")
        except BaseException:
            lock.release()
            raise
        lease = _Lease(self, lock)
        return RunRecorder(f, run_id, cols, flush_interval=self.flush_interval, block_rows=self.block_rows,
                           on_flush=on_flush, finish=lease.finish, release=lock.release)

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        error: str = "",
        results: Mapping[str, Any] | None = None,
        n_points: int | None = None,
        bench_time_end: float = float("nan"),
        documents: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Write a run's end: results, status, reason, end time (the run's SWMR handle
        must be closed first; the recorder does that). Returns the (status, error)
        stored: ``failed`` if the results could not be stored. A run's own recorder
        finishes it under the lock it took; this call takes the lock itself.
        ``documents`` (:meth:`write_document`) are stored in the same session: a crash
        keeps both or neither (the simulated wafer's state goes with the run's end)."""
        return self._finish(None, run_id, status, error=error, results=results, n_points=n_points,
                            bench_time_end=bench_time_end, documents=documents)

    def _finish(
        self,
        lock: StoreLock | None,
        run_id: str,
        status: str,
        *,
        error: str = "",
        results: Mapping[str, Any] | None = None,
        n_points: int | None = None,
        bench_time_end: float = float("nan"),
        documents: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        if status not in STATUSES or status == "running":
            raise StoreError(f"a run ends as one of completed, aborted, failed, interrupted; not {status!r}")
        with self._session(lock) as f:
            grp = _run_group(f, run_id, self.path)
            a = grp.attrs
            # read first: this loads the newest global heap collection (the run's text
            # attributes are in it), which HDF5 then fills with this session's text
            # instead of starting a new 4 KB collection
            _s(a.get("status"))
            if results:  # first, so a result that cannot be stored turns the status to failed
                try:
                    write_tree(grp.require_group("results"), results)
                except (TypeError, ValueError) as exc:
                    del grp["results"]
                    grp.create_group("results")
                    status = "failed"
                    error = f"{error}; " if error else ""
                    error += f"the results could not be stored: {exc}"
            crash_point("finish_run.results")
            for name, value in (documents or {}).items():
                f.require_group("documents").attrs[name] = to_json(value)
            a["status"] = status
            a["error"] = error
            a["finished"] = now_iso()
            a["n_points"] = _n_points(grp) if n_points is None else int(n_points)
            a["bench_time_end"] = float(bench_time_end)
            _index_update(f, run_id, grp)
            crash_point("finish_run.status")
        crash_point("finish_run.committed")
        return status, error

    def write_results(self, run_id: str, results: Mapping[str, Any]) -> None:
        """Replace a finished run's results (re-analysis)."""
        with self._session() as f:
            grp = _run_group(f, run_id, self.path)
            if "results" in grp:
                del grp["results"]
            write_tree(grp.create_group("results"), results)


def _index_scan(f: h5py.File, ix: h5py.Group) -> list[dict[str, Any]]:
    """:meth:`Store.runs`'s rows from the index: a few dataset reads whatever the number
    of runs. Only a run still marked running is looked up in its group (its rows so far)."""
    cols = {name: ix[name].asstr()[:] for name in _INDEX_STR}
    n_points = ix["n_points"][:]
    runs = f["runs"]
    rows = []
    for k in np.argsort(cols["run_id"], kind="stable"):
        run_id = str(cols["run_id"][k])
        status = str(cols["status"][k])
        devices = tuple(from_json(cols["devices"][k]))
        n = int(n_points[k])
        if status == "running":
            n = _n_points(runs[run_id])
        rows.append({
            "run_id": run_id, "protocol": str(cols["protocol"][k]), "status": status,
            "started": str(cols["started"][k]), "finished": str(cols["finished"][k]),
            "devices": ", ".join(devices), "n_points": n, "error": str(cols["error"][k]),
            "_devices": devices, "_uuid": str(cols["uuid"][k]), "metadata": from_json(cols["metadata"][k]),
        })
    return rows


class _Lease:
    """A running run's hold on the store: its lock, until the final status is stored.
    The recorder gets only the ``finish`` callable, so the recorder never imports the
    store (the dependency is one-way: store -> recorder)."""

    def __init__(self, store: Store, lock: StoreLock) -> None:
        self.store = store
        self.lock = lock

    def finish(self, run_id: str, status: str, *, error: str, results: Mapping[str, Any] | None,
               n_points: int, bench_time_end: float, documents: Mapping[str, Any] | None = None) -> tuple[str, str]:
        held = self.lock if self.lock.held else None  # finished before: take the lock anew
        try:
            return self.store._finish(held, run_id, status, error=error, results=results,
                                      n_points=n_points, bench_time_end=bench_time_end, documents=documents)
        finally:
            self.lock.release()


# ---------------------------------------------------------------------- helpers
def _first_line(exc: BaseException | None) -> str:
    return str(exc).splitlines()[0] if exc is not None and str(exc) else repr(exc)


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _utc(when: str | datetime) -> pd.Timestamp:
    """A time bound; naive times are taken as local time."""
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        ts = ts.tz_localize(datetime.now().astimezone().tzinfo)
    return ts.tz_convert("UTC")


def _check_schema(f: h5py.File, path: Path) -> None:
    schema = _s(f.attrs.get("schema"))
    if schema != SCHEMA:
        raise SchemaError(f"{path} is not a labpcu run store (its root has no schema=\"labpcu\" attribute)")
    version = int(f.attrs.get("schema_version", -1))
    if version in READABLE_VERSIONS:
        return
    writer = _s(f.attrs.get("labpcu_version")) or "an unknown version"
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{path} has schema version {version} (written by labpcu {writer}); this labpcu "
                          f"{__version__} reads versions up to {SCHEMA_VERSION}: upgrade labpcu")
    raise SchemaError(f"{path} has schema version {version} (written by labpcu {writer}), older than this "
                      f"labpcu {__version__} reads ({min(READABLE_VERSIONS)}); read it with the labpcu that wrote it")


def _sample_of(metadata: Any) -> dict[str, Any]:
    sample = metadata.get("sample") if isinstance(metadata, dict) else None
    return sample if isinstance(sample, dict) else {}


def _sample_values(metadata: Any) -> set[str]:
    """Every value of a run's sample description, as text (a wafer, a sample name)."""
    return {str(v) for v in _sample_of(metadata).values()}


def _run_group(f: h5py.File, run_id: str, path: Path) -> h5py.Group:
    runs = f.get("runs")
    if runs is None or run_id not in runs:
        raise StoreError(f"no run {run_id!r} in {path}")
    return runs[run_id]


def _ordered(data: Any) -> list[tuple[str, h5py.Dataset]]:
    """Columns in the order they were declared (track_order keeps it)."""
    return list(data.items()) if data else []


def _n_points(grp: h5py.Group) -> int:
    stored = int(grp.attrs.get("n_points", -1))
    if stored >= 0 and _s(grp.attrs.get("status")) != "running":
        return stored
    data = grp.get("data")
    if not data:
        return 0
    lengths = []
    for ds in data.values():
        with contextlib.suppress(Exception):
            ds.refresh()
        lengths.append(ds.shape[0])
    return min(lengths) if lengths else 0


#: runs a new run's claim looks at: only runs made since the previous claim can still be
#: ``running`` (that claim marked the older ones), and one writer at a time makes them
CLAIM_TAIL = 16


def _mark_dead_runs(f: h5py.File, tail: int | None = None) -> list[str]:
    """Runs still ``running`` become ``interrupted``, for good. Called only by a writer
    holding the store's lock: the lock is held for a run's whole life, so no other
    run can be alive. ``tail``: look only at the newest runs (a new run's claim, so
    starting a run does not cost a scan of the whole day's file); None: every run
    (repair). Returns the runs marked."""
    marked = []
    runs = f.get("runs", {})
    if tail is None:
        names = sorted(runs)
    else:  # the index's newest rows: no walk over every run's name
        ix = _writable_index(f)
        n = ix["run_id"].shape[0]
        lo = max(0, n - tail)
        names = [r for r, st in zip(ix["run_id"].asstr()[lo:n], ix["status"].asstr()[lo:n]) if st == "running"]
    for run_id in names:
        grp = runs[run_id]
        if _s(grp.attrs.get("status")) == "running":
            grp.attrs["status"] = "interrupted"
            grp.attrs["error"] = ("the process writing this run ended without closing it (killed, crashed "
                                  "or lost power); the points flushed before then are kept")
            grp.attrs["n_points"] = _n_points(grp)
            marked.append(run_id)
            if tail is not None:
                _index_update(f, run_id, grp)
    if tail is None and marked:
        _build_index(f)
    return marked


# ------------------------------------------------------------------ the layout
def _new_group(parent: h5py.Group, name: str, *, track_order: bool = False) -> h5py.Group:
    """A group whose attributes stay in its object header (compact) rather than in a
    fractal heap and B-tree of their own, a few KB per run saved; ``track_order``
    keeps its links in creation order."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_attr_phase_change(_MAX_COMPACT_ATTRS, _MAX_COMPACT_ATTRS - 8)
    if track_order:
        flags = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
        gcpl.set_link_creation_order(flags)
        gcpl.set_attr_creation_order(flags)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode("utf-8"), gcpl=gcpl))


def _make_columns(data: h5py.Group, cols: Sequence[Column]) -> None:
    """A run's columns, empty and resizable, with their ``point`` dimension: a column
    named ``point`` is the dimension itself (a coordinate), otherwise an empty dimension
    scale ``point`` beside ``data`` in the run's group (netCDF-4's "dimension but not a
    variable", which netCDF readers see from the data group too; ``data`` keeps only
    columns) that the recorder keeps as long as the rows every column holds."""
    datasets = []
    for col in cols:
        ds = data.create_dataset(col.name, shape=(0,), maxshape=(None,), chunks=(_CHUNK_ROWS,),
                                 dtype=_STR if col.dtype == "str" else col.dtype)
        ds.attrs["units"] = col.unit
        ds.attrs["description"] = col.description
        datasets.append(ds)
    by_name = dict(zip((c.name for c in cols), datasets))
    if POINT_DIM in by_name:
        scale = by_name[POINT_DIM]
        scale.make_scale(POINT_DIM)
    else:
        scale = data.parent.create_dataset(POINT_DIM, shape=(0,), maxshape=(None,), chunks=(_CHUNK_ROWS,),
                                           dtype="f4")
        scale.make_scale(_NOT_A_VARIABLE)
    for ds in datasets:
        if ds is not scale:
            ds.dims[0].attach_scale(scale)


def _point_scale(grp: h5py.Group) -> h5py.Dataset | None:
    """A run's empty ``point`` dimension scale (not a column), if it has one."""
    ds = grp.get(POINT_DIM)
    if isinstance(ds, h5py.Dataset) and _s(ds.attrs.get("NAME", "")) == _NOT_A_VARIABLE:
        return ds
    return None


# ------------------------------------------------------------------ the index
def _index(f: h5py.File) -> h5py.Group | None:
    """The run index, if present and in step with ``/runs`` (one row per run: a store
    written by a labpcu without the index, or a run group deleted by hand, makes it
    stale, and then it is not used; the next write session rebuilds it)."""
    ix = f.get(INDEX)
    runs = f.get("runs")
    if not isinstance(ix, h5py.Group) or runs is None:
        return None
    try:
        n = {ix[c].shape[0] for c in _INDEX_COLUMNS}
    except KeyError:
        return None
    if len(n) != 1 or n.pop() != len(runs):
        return None
    return ix


def _index_values(grp: h5py.Group, run_id: str) -> dict[str, Any]:
    """A run's index row, from its group's attributes."""
    a = grp.attrs
    row = {k: _s(a.get(k)) for k in _INDEX_STR if k != "run_id"}
    row["run_id"] = run_id
    row["devices"] = row["devices"] or "[]"
    row["metadata"] = row["metadata"] or "{}"
    row["n_points"] = int(a.get("n_points", -1))
    return row


def _run_number(run_id: str) -> int:
    head = run_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _build_index(f: h5py.File) -> h5py.Group:
    """(Re)build the run index from the run groups (a store from before the index, or
    one whose index went stale): one pass over every run, in a write session."""
    if INDEX in f:
        del f[INDEX]
    runs = f.require_group("runs")
    ids = sorted(runs, key=lambda r: (_run_number(r), r))
    rows = [_index_values(runs[r], r) for r in ids]
    ix = f.create_group(INDEX)
    n = len(rows)
    for name in _INDEX_COLUMNS:
        if name == "n_points":
            values: Any = np.array([r[name] for r in rows], dtype=np.int64)
            ds = ix.create_dataset(name, data=values, maxshape=(None,), chunks=(_INDEX_CHUNK,))
        else:
            values = np.array([r[name] for r in rows], dtype=object) if n else np.empty(0, dtype=object)
            ds = ix.create_dataset(name, data=values, dtype=_STR, maxshape=(None,), chunks=(_INDEX_CHUNK,))
    scale = ix["run_id"]
    scale.make_scale("run_id")
    for name in _INDEX_COLUMNS:
        if name != "run_id":
            ix[name].dims[0].attach_scale(scale)
    return ix


def _writable_index(f: h5py.File) -> h5py.Group:
    """The index, in a write session: rebuilt first if missing or stale."""
    ix = _index(f)
    return ix if ix is not None else _build_index(f)


def _index_append(ix: h5py.Group, row: Mapping[str, Any]) -> None:
    """A new run's row (in the journaled session that makes the run, so the index and
    the runs agree after a crash at any instant). The index is not compressed: a row
    is written in place, where a compressed chunk would be rewritten elsewhere."""
    n = ix["run_id"].shape[0]
    for name in _INDEX_COLUMNS:
        ds = ix[name]
        ds.resize((n + 1,))
        ds[n] = row[name]


def _index_row(ix: h5py.Group, run_id: str) -> int | None:
    """The row of ``run_id``: looked for among the newest rows first (the run being
    ended is nearly always one of them)."""
    ids = ix["run_id"]
    n = ids.shape[0]
    start = max(0, n - 64)
    for lo, hi in ((start, n), (0, start)):
        if hi > lo:
            found = np.flatnonzero(ids.asstr()[lo:hi] == run_id)
            if found.size:
                return lo + int(found[-1])
    return None


def _index_update(f: h5py.File, run_id: str, grp: h5py.Group) -> None:
    """Copy a run's status, end and n_points from its group into its index row (in the
    session that changed them)."""
    ix = _writable_index(f)
    row = _index_row(ix, run_id)
    if row is None:  # cannot happen with an index in step with /runs: rebuild rather than guess
        _build_index(f)
        return
    values = _index_values(grp, run_id)
    for name in ("status", "finished", "error", "n_points"):
        ix[name][row] = values[name]


def _h5open(path: Path, mode: str, **kwargs: Any) -> h5py.File:
    """``h5py.File`` with HDF5's file locking off: a reader's lock would block a
    writer's open (the store has its own writer lock). If this process already has the
    file open with HDF5's default locking (a user's own handle), HDF5 insists on the
    same setting, so that is tried next."""
    try:
        return h5py.File(path, mode, locking=False, **kwargs)
    except OSError as exc:
        if "locking" not in str(exc):
            raise
    return h5py.File(path, mode, **kwargs)


def _check_hdf5_signature(path: Path) -> None:
    """Refuse at once a file that is not HDF5 at all (rather than retrying to read it).
    The signature is at 0, or after a user block at 512, 1024, 2048, ... bytes."""
    signature = b"\x89HDF\r\n\x1a\n"
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open for ever
            raise StoreError(f"{path} is not a regular file")
        size = st.st_size
        with open(path, "rb") as fh:
            offset = 0
            while offset + 8 <= size:
                fh.seek(offset)
                if fh.read(8) == signature:
                    return
                offset = 512 if offset == 0 else 2 * offset
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    raise StoreError(f"{path} is not an HDF5 file")


def _hdf5_locked(path: Path) -> bool:
    """Does a foreign HDF5 writer hold the file (HDF5's own exclusive lock)? Then a
    repair must wait for it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _repair_file(path: Path) -> list[str]:
    """The byte-level crash repair, for a caller holding the lock: roll back an
    unfinished write session, make the file as long as its superblock says, clear the
    "open for write" flags in place. Returns what was done."""
    done = []
    undone = rollback(path)
    if undone:
        done.append(undone)
    sb = read_superblock(path)
    if sb is not None and sb.flags:
        size = path.stat().st_size
        if size < sb.eof:  # HDF5 refuses a file shorter than its end-of-file address
            os.truncate(path, sb.eof)
            done.append(f"extended the file from {size} to {sb.eof} bytes (its end-of-file address)")
        if clear_flags(path):
            done.append("cleared the superblock's open-for-write flags")
    return done


def _init_root(f: h5py.File) -> None:
    f.attrs["schema"] = SCHEMA
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["created"] = now_iso()
    f.attrs["labpcu_version"] = __version__
    f.create_group("runs")


def _create_store(path: Path) -> None:
    """A new store appears whole or not at all: written aside, then renamed."""
    tmp = path.with_name(path.name + ".new")
    with h5py.File(tmp, "w", libver=LIBVER, locking=False) as f:
        _init_root(f)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# ------------------------------------------------------------- check and repair
@dataclass(frozen=True)
class StoreCheck:
    """What ``labpcu store check`` finds in a store: whether plain HDF5 readers open it,
    the superblock's consistency flags, an unfinished write session, runs left
    ``running`` by a dead writer, columns of unequal length, n_points that disagree."""

    path: Path
    plain_open: bool
    plain_error: str = ""
    flags: int | None = None
    journal: bool = False
    writer: str = ""  # the live writer holding the lock, if any
    dead_running: tuple[str, ...] = ()
    truncated: dict[str, dict[str, int]] = field(default_factory=dict)
    n_points_mismatch: dict[str, tuple[int, int]] = field(default_factory=dict)
    unreadable: str = ""
    index: str = ""  # how the run index disagrees with the runs ("" when it agrees or is absent)

    @property
    def problems(self) -> list[str]:
        """One line per problem; empty when the store is clean. The flags a live
        writer sets are not a problem."""
        out = []
        if self.journal:
            out.append("a writer died in the middle of a write session: its undo journal must be rolled back")
        if self.flags and not self.writer:
            out.append(f"the superblock is marked open for write (flags 0x{self.flags:02x}) by a writer that is "
                       "gone: plain HDF5 readers refuse the file")
        elif not self.plain_open and not self.writer and not self.journal:
            out.append(f"plain h5py cannot open it: {self.plain_error}")
        if self.unreadable:
            out.append(f"it cannot be read even in SWMR mode: {self.unreadable}")
        out += [f"run {r} is marked running but its writer is gone" for r in self.dead_running]
        out += [f"run {r}: columns of unequal length ({', '.join(f'{c}={n}' for c, n in lengths.items())})"
                for r, lengths in self.truncated.items()]
        out += [f"run {r}: n_points says {stored}, its columns hold {actual}"
                for r, (stored, actual) in self.n_points_mismatch.items()]
        if self.index:
            out.append(f"the run index disagrees with the runs ({self.index}): `labpcu store repair` rebuilds it")
        return out

    @property
    def clean(self) -> bool:
        return not self.problems

    def summary(self) -> list[str]:
        """The facts, one per line (the problems are listed separately)."""
        return [
            f"openable by plain h5py: {'yes' if self.plain_open else 'no'}",
            "consistency flags: " + ("none (not a v2/v3 superblock)" if self.flags is None else
                                     f"0x{self.flags:02x}" + (" (set)" if self.flags else " (clear)")),
            f"unfinished write session (journal): {'yes' if self.journal else 'no'}",
            f"live writer: {self.writer or 'none'}",
        ]


def check_store(path: str | Path, *, _holding_lock: bool = False) -> StoreCheck:
    """Diagnose a store without changing a byte (HDF5 locking off, no repair)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no run store at {path}")
    _check_hdf5_signature(path)
    state = probe_lock(path)
    live = state.held and not _holding_lock
    with reading_gate(path):  # waits out a live writer's session: a journal seen here is a dead one's
        sb = read_superblock(path)
        if journal_pending(path):  # a cut session: reading the file would show torn metadata
            return StoreCheck(path, plain_open=False, flags=None if sb is None else sb.flags, journal=True,
                              plain_error="a write session was cut; its journal must be rolled back first",
                              writer=state.describe() if live else "")
        plain_error = ""
        try:
            with h5py.File(path, "r", locking=False) as f:
                _check_schema(f, path)
        except OSError as exc:
            plain_error = _first_line(exc)
        dead, truncated, mismatch, unreadable, index = _inspect_runs(path, state.run_uuid if live else None)
    return StoreCheck(path, plain_open=not plain_error, plain_error=plain_error, flags=None if sb is None else sb.flags,
                      journal=False, writer=state.describe() if live else "",
                      dead_running=tuple(dead), truncated=truncated, n_points_mismatch=mismatch, unreadable=unreadable,
                      index=index)


def _inspect_runs(path: Path, live_uuid: str | None) -> tuple[list[str], dict[str, dict[str, int]],
                                                             dict[str, tuple[int, int]], str, str]:
    """Runs marked running whose writer is gone, columns of unequal length, n_points
    that disagree, how the run index disagrees with the runs; and what HDF5 tripped
    on, if it did."""
    dead: list[str] = []
    truncated: dict[str, dict[str, int]] = {}
    mismatch: dict[str, tuple[int, int]] = {}
    unreadable = ""
    index = ""
    try:
        with h5py.File(path, "r", swmr=True, locking=False) as f:
            _check_schema(f, path)
            index = _index_disagreement(f, live_uuid)
            for run_id, grp in f.get("runs", {}).items():
                a = grp.attrs
                running = _s(a.get("status")) == "running"
                if running and live_uuid is not None and _s(a.get("uuid")) == live_uuid:
                    continue  # being written: nothing to judge
                if running:
                    dead.append(run_id)
                lengths = {name: int(ds.shape[0]) for name, ds in _ordered(grp.get("data", {}))}
                if len(set(lengths.values())) > 1:
                    truncated[run_id] = lengths
                stored = int(a.get("n_points", -1))
                actual = min(lengths.values()) if lengths else 0
                if not running and stored >= 0 and stored != actual:
                    mismatch[run_id] = (stored, actual)
    except SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever HDF5 trips on is the finding
        unreadable = _first_line(exc)
    return dead, truncated, mismatch, unreadable, index


def _index_disagreement(f: h5py.File, live_uuid: str | None) -> str:
    """"" if the run index agrees with every run's group (or there is no index yet:
    the first write makes it), else what differs. A live run's row may lag its group."""
    if INDEX not in f:
        return ""
    ix = _index(f)
    if ix is None:
        n = f[INDEX]["run_id"].shape[0] if "run_id" in f[INDEX] else 0
        return f"{n} rows for {len(f.get('runs', {}))} runs"
    runs = f["runs"]
    cols = {name: ix[name].asstr()[:] for name in _INDEX_STR}
    n_points = ix["n_points"][:]
    for k, run_id in enumerate(cols["run_id"]):
        if run_id not in runs:
            return f"row {k} names run {run_id}, which is not in /runs"
        if live_uuid is not None and cols["uuid"][k] == live_uuid:
            continue
        want = _index_values(runs[run_id], run_id)
        for name in _INDEX_COLUMNS:
            got = int(n_points[k]) if name == "n_points" else cols[name][k]
            if got != want[name]:
                return f"run {run_id}'s {name} is {want[name]!r} in its group, {got!r} in the index"
    return ""


def repair_store(path: str | Path, *, timeout: float = 5.0) -> tuple[StoreCheck, list[str], StoreCheck]:
    """Fix what :func:`check_store` finds, never dropping a flushed point: roll back a
    dead writer's unfinished session, clear the superblock flags in place (copy into a
    clean file only if that is impossible), mark dead runs ``interrupted``, trim columns
    to the rows every column has (a row some columns lack was never flushed whole),
    correct n_points. Holds the writer lock throughout, so it refuses (StoreBusyError,
    after ``timeout`` s) while a writer is live. Returns (before, actions, after)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no run store at {path}")
    _check_hdf5_signature(path)
    lock = StoreLock(path)
    lock.acquire(timeout=timeout)
    try:
        before = check_store(path, _holding_lock=True)
        try:
            actions = _repair_file(path)
        except StoreError as exc:
            actions = [f"in-place repair impossible ({exc})"]
        mid = check_store(path, _holding_lock=True)
        if not mid.plain_open and not mid.unreadable:
            crash_point("repair.copy")
            _copy_clean(path)
            actions.append("copied every object into a clean file (the flags could not be cleared in place)")
            mid = check_store(path, _holding_lock=True)
        if mid.dead_running or mid.truncated or mid.n_points_mismatch or mid.index:
            with Store(path)._session(lock) as f:
                actions += [f"marked run {r} interrupted" for r in _mark_dead_runs(f)]
                for run_id, lengths in mid.truncated.items():
                    n = min(lengths.values())
                    data = f["runs"][run_id]["data"]
                    for name, ds in _ordered(data):
                        if ds.shape[0] != n:
                            ds.resize((n,))
                    scale = _point_scale(f["runs"][run_id])
                    if scale is not None and scale.shape[0] != n:
                        scale.resize((n,))
                    actions.append(f"trimmed run {run_id}'s columns to the {n} rows all of them hold")
                for run_id, (stored, actual) in mid.n_points_mismatch.items():
                    f["runs"][run_id].attrs["n_points"] = actual
                    actions.append(f"set run {run_id}'s n_points from {stored} to {actual}")
                if mid.index or mid.truncated or mid.n_points_mismatch:
                    _build_index(f)
                    actions.append(f"rebuilt the run index from the {len(f['runs'])} runs")
        after = check_store(path, _holding_lock=True)
    finally:
        lock.release()
    return before, actions, after


def _copy_clean(path: Path) -> None:
    """The fallback repair: every object copied (SWMR read) into a new file, renamed over
    the old one."""
    tmp = path.with_name(path.name + ".repairing")
    with h5py.File(path, "r", swmr=True, locking=False) as src, h5py.File(tmp, "w", libver=LIBVER,
                                                                            locking=False) as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(src[name], dst, name=name)
        dst.flush()
        os.fsync(dst.id.get_vfd_handle())
    os.replace(tmp, path)
