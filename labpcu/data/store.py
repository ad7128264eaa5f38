"""The run store: one HDF5 file holding many measurement runs (DESIGN.md, "HDF5 layout").

::

    /                      attrs: schema="labpcu", schema_version, created, labpcu_version
    /runs/<run_id>/        attrs: protocol, parameters (JSON), parameter_units (JSON),
                                  devices (JSON), bench (JSON), labpcu_version, started,
                                  finished, status, error, n_points, pid, host, uuid,
                                  bench_time_start, bench_time_end
    /runs/<run_id>/data/<column>   chunked, resizable 1-D datasets of equal length;
                                   attrs: units, description
    /runs/<run_id>/results         attributes and small datasets (see labpcu.data.tree)

Why the file is opened the way it is:

* A run is written in SWMR mode (single writer, multiple readers): HDF5 keeps the file
  consistent on disk at every flush, so the GUI can watch it and a killed process loses
  at most the points not yet flushed. SWMR forbids creating objects or attributes, so
  the run's groups, datasets and metadata are made first, SWMR is switched on for the
  appends, and the final status and results are written after reopening.
* Between runs the file is closed, so other processes can read or write it.
* Readers always open with ``swmr=True``: that works on a file being written and on
  one a crash left marked "open for write".
* A crash leaves that mark; the next writer copies the file into a clean one (no
  ``h5clear`` needed) and marks the dead runs ``interrupted``. A run whose status is
  still ``running`` but whose writing process is gone reads as ``interrupted`` too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid as uuidlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd

from labpcu import __version__
from labpcu.data.columns import Column, ColumnError, check_columns, check_name, check_text
from labpcu.data.errors import SchemaError, StoreBusyError, StoreError
from labpcu.data.tree import from_json, read_tree, to_json, write_tree

if TYPE_CHECKING:
    from labpcu.data.recorder import FlushListener, RunRecorder

SCHEMA = "labpcu"
SCHEMA_VERSION = 1
#: schema versions this code reads (older ones would need an upgrade step here)
READABLE_VERSIONS = frozenset({1})
#: run statuses; ``interrupted`` means the writing process died mid-run
STATUSES = ("running", "completed", "aborted", "failed", "interrupted")
#: oldest HDF5 file format that has SWMR; files stay readable by HDF5 1.10 and later
LIBVER = ("v110", "v110")
_STR = h5py.string_dtype()
_CHUNK_ROWS = 8192
#: uuids of the runs this process is writing (a run of our own pid not in here is dead)
_ACTIVE_UUIDS: set[str] = set()
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


def now_iso() -> str:
    """Local time with its UTC offset, to the microsecond."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="microseconds")


class Store:
    """A run store backed by one HDF5 file (created on the first run written).

    ``Store(path).runs()`` lists runs, ``.read(run_id)`` gives a run's columns as a
    DataFrame, ``.info(run_id)`` its metadata and results. Writing goes through
    :meth:`begin_run`, normally called by :class:`labpcu.runner.Runner`.
    """

    def __init__(self, path: str | Path, *, flush_interval: float = 1.0, block_rows: int = 65536) -> None:
        self.path = Path(path)
        if not flush_interval > 0:
            raise StoreError(f"flush_interval must be > 0 s, not {flush_interval!r}")
        if block_rows < 1:
            raise StoreError(f"block_rows must be >= 1, not {block_rows!r}")
        self.flush_interval = float(flush_interval)
        self.block_rows = int(block_rows)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ------------------------------------------------------------------ opening
    @contextlib.contextmanager
    def _reading(self) -> Iterator[h5py.File]:
        """Open for reading; retried briefly, since a writer may be mid-update."""
        if not self.path.exists():
            raise StoreError(f"no run store at {self.path}")
        last: Exception | None = None
        for attempt in range(5):
            try:
                f = h5py.File(self.path, "r", swmr=True)
            except OSError as exc:
                last = exc
                try:  # a plain HDF5 file without the SWMR superblock
                    f = h5py.File(self.path, "r")
                except OSError as exc2:
                    last = exc2
                    time.sleep(0.02 * (attempt + 1))
                    continue
            try:
                _check_schema(f, self.path)
                yield f
                return
            finally:
                f.close()
        raise StoreError(f"cannot open {self.path}: {_first_line(last)}")

    @contextlib.contextmanager
    def _writing(self, *, claim: bool = False) -> Iterator[h5py.File]:
        """Open for writing (creating the file), after crash recovery if needed.
        ``claim`` (a new run starts): runs left ``running`` by dead writers become
        ``interrupted`` for good."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self._open_for_write()
        try:
            if "schema" not in f.attrs and len(f) == 0:
                f.attrs["schema"] = SCHEMA
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["created"] = now_iso()
                f.attrs["labpcu_version"] = __version__
                f.create_group("runs")
            _check_schema(f, self.path)
            f.require_group("runs")
            if claim:
                _mark_dead_runs(f)
            yield f
        finally:
            f.close()

    def _open_for_write(self) -> h5py.File:
        try:
            return h5py.File(self.path, "a", libver=LIBVER)
        except OSError as exc:
            if "h5clear" not in str(exc) and "already open" not in str(exc):
                raise StoreError(f"cannot open {self.path} for writing: {_first_line(exc)}") from None
        self._recover()
        return h5py.File(self.path, "a", libver=LIBVER)

    def _recover(self) -> None:
        """The file is marked open-for-write: refuse if its writer lives, else copy
        everything into a clean file and swap it in."""
        tmp = self.path.with_name(self.path.name + ".recovering")
        with self._reading() as src:
            for run_id, grp in src.get("runs", {}).items():
                if _status(grp.attrs) == "running":
                    raise StoreBusyError(
                        f"{self.path} is being written by process {grp.attrs.get('pid')} on "
                        f"{grp.attrs.get('host')} (run {run_id}); wait for it or use another file")
            with h5py.File(tmp, "w", libver=LIBVER) as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                for name in src:
                    src.copy(src[name], dst, name=name)
                _mark_dead_runs(dst)
                dst.flush()
                os.fsync(dst.id.get_vfd_handle())
        os.replace(tmp, self.path)

    # ------------------------------------------------------------------ reading
    def writable(self) -> contextlib.AbstractContextManager[h5py.File]:
        """The file open for writing beside the runs (``/codebooks`` and other
        extensions), with the same crash recovery, busy check and schema check a run
        gets. Not for runs: use :meth:`begin_run`."""
        return self._writing()

    def run_ids(self) -> list[str]:
        """Every run id, oldest first."""
        if not self.path.exists():
            return []
        with self._reading() as f:
            return sorted(f["runs"]) if "runs" in f else []

    def runs(
        self,
        protocol: str | None = None,
        status: str | None = None,
        device: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
    ) -> pd.DataFrame:
        """One row per run (index ``run_id``), filtered by protocol, status, a device
        the run measured, and its start time (``since`` <= started < ``until``)."""
        if status is not None and status not in STATUSES:
            raise StoreError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        rows = []
        if self.path.exists():
            with self._reading() as f:
                for run_id, grp in sorted(f.get("runs", {}).items()):
                    a = grp.attrs
                    devices = tuple(from_json(a.get("devices", "[]")))
                    rows.append({
                        "run_id": run_id,
                        "protocol": _s(a.get("protocol")),
                        "status": _status(a),
                        "started": _s(a.get("started")),
                        "finished": _s(a.get("finished")),
                        "devices": ", ".join(devices),
                        "n_points": _n_points(grp),
                        "error": _s(a.get("error")),
                        "_devices": devices,
                    })
        cols = ["run_id", "protocol", "status", "started", "finished", "duration", "devices", "n_points", "error"]
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
        return df.loc[keep, cols].set_index("run_id")

    def info(self, run_id: str) -> RunInfo:
        """A run's metadata and results."""
        with self._reading() as f:
            grp = _run_group(f, run_id, self.path)
            a = grp.attrs
            data = grp.get("data", {})
            return RunInfo(
                run_id=run_id,
                protocol=_s(a.get("protocol")),
                status=_status(a),
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
                bench_time_start=float(a.get("bench_time_start", np.nan)),
                bench_time_end=float(a.get("bench_time_end", np.nan)),
            )

    def results(self, run_id: str) -> dict[str, Any]:
        return self.info(run_id).results

    def read(self, run_id: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """A run's columns as a DataFrame, trimmed to the rows every column has (a run
        being written, or cut by a crash, may hold one column a block ahead).
        ``df.attrs["units"]`` maps column to units; ``df.attrs["run_id"]`` names the run."""
        with self._reading() as f:
            grp = _run_group(f, run_id, self.path)
            ordered = _ordered(grp.get("data", {}))
            names = [n for n, _ in ordered] if columns is None else list(columns)
            by_name = dict(ordered)
            for n in names:
                if n not in by_name:
                    raise StoreError(f"run {run_id} has no column {n!r}; it has {', '.join(by_name) or 'none'}")
            n_rows = _n_points(grp)
            out: dict[str, Any] = {}
            for n in names:
                ds = by_name[n]  # _n_points refreshed it if the run is live
                if h5py.check_string_dtype(ds.dtype) is not None:
                    out[n] = pd.Series(ds.asstr()[:n_rows], dtype=object)
                else:
                    out[n] = pd.Series(ds[:n_rows])
            df = pd.DataFrame(out, columns=names)
            df.attrs["units"] = {n: _s(by_name[n].attrs.get("units")) for n in names}
            df.attrs["run_id"] = run_id
            return df

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
        on_flush: FlushListener | None = None,
    ) -> RunRecorder:
        """Create a run (status ``running``) and return its recorder, already in SWMR mode."""
        from labpcu.data.recorder import RunRecorder

        check_name(protocol, "protocol")  # it names the run's group: "/" would nest it
        cols = check_columns(columns)
        # made and checked before the run's group exists, so a refusal leaves no half-made run
        meta = {
            "parameters": to_json(dict(parameters or {})),
            "parameter_units": to_json(dict(parameter_units or {})),
            "devices": to_json(list(devices)),
            "bench": to_json(dict(bench or {})),
        }
        for key, text in meta.items():
            try:
                check_text(text, f"run {key}")
            except ColumnError as exc:
                raise StoreError(str(exc)) from None
        with self._writing(claim=True) as fw:
            runs = fw["runs"]
            number = 1 + max((int(k.split("-", 1)[0]) for k in runs if k.split("-", 1)[0].isdigit()), default=0)
            run_id = f"{number:05d}-{protocol}"
            grp = runs.create_group(run_id)
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
            a["uuid"] = run_uuid = str(uuidlib.uuid4())
            a["bench_time_start"] = float(bench_time_start)
            a["bench_time_end"] = float("nan")
            data = grp.create_group("data", track_order=True)
            for col in cols:
                ds = data.create_dataset(col.name, shape=(0,), maxshape=(None,), chunks=(_CHUNK_ROWS,),
                                         dtype=_STR if col.dtype == "str" else col.dtype)
                ds.attrs["units"] = col.unit
                ds.attrs["description"] = col.description
            grp.create_group("results")
        # reopen (not keep) so the SWMR handle is the only one: creating objects is done
        f = h5py.File(self.path, "a", libver=LIBVER)
        try:
            f.swmr_mode = True
        except Exception:
            f.close()
            raise
        _ACTIVE_UUIDS.add(run_uuid)
        return RunRecorder(self, f, run_id, cols, flush_interval=self.flush_interval,
                           block_rows=self.block_rows, on_flush=on_flush)

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        error: str = "",
        results: Mapping[str, Any] | None = None,
        n_points: int | None = None,
        bench_time_end: float = float("nan"),
    ) -> tuple[str, str]:
        """Write a run's end: results, status, reason, end time (the run's SWMR handle
        must be closed first; the recorder does that). Returns the (status, error)
        stored: ``failed`` if the results could not be stored."""
        if status not in STATUSES or status == "running":
            raise StoreError(f"a run ends as one of completed, aborted, failed, interrupted; not {status!r}")
        with self._writing() as f:
            grp = _run_group(f, run_id, self.path)
            a = grp.attrs
            if results:  # first, so a result that cannot be stored turns the status to failed
                try:
                    write_tree(grp.require_group("results"), results)
                except (TypeError, ValueError) as exc:
                    del grp["results"]
                    grp.create_group("results")
                    status = "failed"
                    error = f"{error}; " if error else ""
                    error += f"the results could not be stored: {exc}"
            a["status"] = status
            a["error"] = error
            a["finished"] = now_iso()
            a["n_points"] = _n_points(grp) if n_points is None else int(n_points)
            a["bench_time_end"] = float(bench_time_end)
            _ACTIVE_UUIDS.discard(_s(a.get("uuid")))
        return status, error

    def write_results(self, run_id: str, results: Mapping[str, Any]) -> None:
        """Replace a finished run's results (re-analysis)."""
        with self._writing() as f:
            grp = _run_group(f, run_id, self.path)
            if "results" in grp:
                del grp["results"]
            write_tree(grp.create_group("results"), results)


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


def _writer_alive(attrs: Any) -> bool:
    """Is the process that opened this run still running it?"""
    pid = int(attrs.get("pid", -1))
    host = _s(attrs.get("host"))
    if host and host != _HOST:
        return True  # another machine: cannot tell, assume it is
    if pid == os.getpid():
        return _s(attrs.get("uuid")) in _ACTIVE_UUIDS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _status(attrs: Any) -> str:
    status = _s(attrs.get("status"))
    if status == "running" and not _writer_alive(attrs):
        return "interrupted"
    return status


def _mark_dead_runs(f: h5py.File) -> None:
    """Runs still ``running`` whose writer is gone become ``interrupted``, for good."""
    for grp in f.get("runs", {}).values():
        if _s(grp.attrs.get("status")) == "running" and not _writer_alive(grp.attrs):
            grp.attrs["status"] = "interrupted"
            grp.attrs["error"] = ("the process writing this run ended without closing it (killed, crashed "
                                  "or lost power); the points flushed before then are kept")
            grp.attrs["n_points"] = _n_points(grp)
