"""The live plot: a run's standard plot (its protocol's :class:`PlotSpec`) drawn as the
points arrive.

Feed :meth:`LivePlot.on_event` with runner events on the GUI thread (connect the
worker's ``event`` signal to it: the signal crosses threads, the slot runs here)::

    plot = LivePlot()
    worker.event.connect(plot.on_event)

``RunStarted`` sets the axes from the protocol's PlotSpec (log or linear, ``|y|``,
labels with the columns' units) and clears; ``Points`` appends the block's values
(scalars or 1-D arrays; scalars repeat) to growing numpy buffers, one trace per y
column and per value of the spec's ``group`` column. Nothing is drawn per point: a
timer redraws what arrived at most ``max_fps`` times a second, and pyqtgraph draws
long runs downsampled (peak mode) and clipped to the view, so 100,000 points stay
smooth. ``Progress``/``StatusChanged``/``DeviceFailed`` update the status line.

The axis and trace helpers (:func:`configure_axes`, :func:`trace_label`,
:func:`plot_frame`) are shared with the data browser, so a stored run and a live
one look the same.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import QObject, Qt, QTimer, pyqtSignal, pyqtSlot
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from labpcu.protocols.base import PlotSpec

#: more traces than this and the legend would hide the data
MAX_LEGEND = 10
#: final statuses: the run is over
FINAL = ("completed", "aborted", "failed", "interrupted")
STATUS_COLOURS = {"running": "#1f6fb2", "completed": "#2e7d32", "aborted": "#b26a00", "failed": "#c62828",
                  "interrupted": "#c62828"}

pg.setConfigOptions(antialias=False, background="w", foreground="k")


# ====================================================================== shared helpers
def axis_label(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def trace_colour(k: int) -> Any:
    """A distinct, readable colour for the k-th trace (tab10, then hues)."""
    tab10 = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
             "#bcbd22", "#17becf")
    return pg.mkColor(tab10[k]) if k < len(tab10) else pg.intColor(k, hues=13, values=2)


def trace_label(spec: PlotSpec, group: Any, ycol: str, prefix: str = "") -> str:
    parts = [prefix] if prefix else []
    if group is not None:
        parts.append(f"{spec.group}={group}")
    if len(spec.y) > 1 or not parts:
        parts.append(ycol)
    return " ".join(parts)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


class DecadeAxis(pg.AxisItem):
    """pyqtgraph's axis, with every decade of a log axis labelled alike (10⁻⁷ ... 10³);
    pyqtgraph mixes 0.1 and 10⁻⁵ and drops labels wider than the first ones."""

    def logTickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        out = []
        for v in values:
            r = round(v)
            out.append(f"10{str(int(r)).translate(_SUPERSCRIPT)}" if abs(v - r) < 1e-9 else "")
        return out


def plot_frame() -> pg.PlotWidget:
    """A white plot with a grid, as both the live plot and the browser use."""
    w = pg.PlotWidget(axisItems={"left": DecadeAxis("left"), "bottom": DecadeAxis("bottom")})
    w.showGrid(x=True, y=True, alpha=0.25)
    w.getPlotItem().setDownsampling(auto=True, mode="peak")  # long runs stay smooth
    w.getPlotItem().setClipToView(True)
    for side in ("left", "bottom"):
        w.getAxis(side).enableAutoSIPrefix(False)  # no unit, no prefix: configure_axes turns it on with one
    w.setMinimumSize(320, 220)
    return w


def configure_axes(item: pg.PlotItem, spec: PlotSpec, units: Mapping[str, str], title: str = "") -> None:
    """Log/linear axes and labels ``name (unit)`` from ``spec``; linear axes with a unit
    get pyqtgraph's SI prefixes (``i (µA)``), log axes keep the plain unit."""
    xlog, ylog = spec.xscale == "log", spec.yscale == "log"
    item.setLogMode(x=xlog, y=ylog)
    xunit = units.get(spec.x, "")
    yname = ", ".join(spec.y)
    yname = f"|{yname}|" if spec.abs_y else yname
    yunit = units.get(spec.y[0], "")
    for side, name, unit, log in (("bottom", spec.x, xunit, xlog), ("left", yname, yunit, ylog)):
        axis = item.getAxis(side)
        if unit and not log:
            axis.enableAutoSIPrefix(True)
            item.setLabel(side, name, units=unit)
        else:
            axis.enableAutoSIPrefix(False)
            item.setLabel(side, axis_label(name, unit))
        if side == "left":
            axis.setWidth(78 if log else None)  # decade labels are wider than pyqtgraph guesses
    item.setTitle(title or spec.title or None)


def curve_style(spec: PlotSpec, colour: Any) -> dict[str, Any]:
    if spec.kind == "scatter":
        return {"pen": None, "symbol": "o", "symbolSize": 4, "symbolPen": None, "symbolBrush": colour}
    return {"pen": pg.mkPen(colour, width=1), "symbol": None}  # width 1: the raster engine draws thin lines fast


def prepare_values(spec: PlotSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats as drawn: |y| when the spec says so; values a log axis cannot show as NaN."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if spec.abs_y:
        y = np.abs(y)
    if spec.yscale == "log":
        y = np.where(y > 0, y, np.nan)
    if spec.xscale == "log":
        x = np.where(x > 0, x, np.nan)
    return x, y


def new_curve(item: pg.PlotItem, spec: PlotSpec, colour: Any, name: str | None) -> pg.PlotDataItem:
    curve = pg.PlotDataItem(name=name, connect="finite", **curve_style(spec, colour))
    item.addItem(curve)  # the PlotItem hands its own downsampling to the curve here: set ours after
    curve.setDownsampling(auto=True, method="peak")
    curve.setClipToView(True)
    return curve


# ====================================================================== buffers
class _Grow:
    """A float buffer that doubles when full (amortized O(1) appends, no copies per block)."""

    __slots__ = ("data", "n")

    def __init__(self, capacity: int = 1024) -> None:
        self.data = np.empty(capacity)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            new = np.empty(max(need, 2 * len(self.data)))
            new[: self.n] = self.data[: self.n]
            self.data = new
        self.data[self.n:need] = values
        self.n = need

    def view(self) -> np.ndarray:
        return self.data[: self.n]


class _Trace:
    __slots__ = ("x", "y", "px", "py", "curve", "dirty")

    def __init__(self, curve: pg.PlotDataItem) -> None:
        self.x, self.y = _Grow(), _Grow()
        self.px: list[float] = []  # one-point blocks wait here as floats (no numpy call per point)
        self.py: list[float] = []
        self.curve = curve
        self.dirty = False

    def settle(self) -> None:
        if self.px:
            self.x.extend(np.array(self.px, dtype=float))
            self.y.extend(np.array(self.py, dtype=float))
            self.px.clear()
            self.py.clear()


def block_columns(block: Mapping[str, Any], names: Sequence[str]) -> tuple[int, dict[str, np.ndarray]]:
    """The block's rows count and each named column as a 1-D array (scalars repeated)."""
    arrays: dict[str, Any] = {}
    for name in names:
        v = block.get(name)
        arrays[name] = None if v is None else np.asarray(v)
    lengths = [a.size for a in arrays.values() if a is not None and a.ndim]
    n = max(lengths) if lengths else 1
    out = {}
    for name, a in arrays.items():
        if a is None:
            out[name] = np.full(n, np.nan)
        elif a.ndim == 0:
            out[name] = np.full(n, a.item(), dtype=object if a.dtype.kind in "OUS" else float)
        else:
            a = a.ravel()
            out[name] = a[:n] if len(a) >= n else np.concatenate([a, np.full(n - len(a), np.nan)])
    return n, out


# ====================================================================== batching
class EventBatcher(QObject):
    """Runner events from any thread, delivered to the GUI thread in batches.

    A queued Qt signal per event costs a cross-thread post and a GIL hand-over each; at
    thousands of one-point blocks a second that, not the plot, is the limit. Call the
    batcher from the producing thread (``runner.subscribe(batcher)``, or
    ``worker.event.connect(batcher, Qt.DirectConnection)``): it appends to a queue and
    wakes the GUI thread once per batch; :attr:`events` then carries lists of events,
    at most ``budget_s`` of work per turn of the event loop, so timers and paints run
    in between::

        batcher = EventBatcher()
        batcher.events.connect(plot.on_events)
        runner.subscribe(batcher)
    """

    events = pyqtSignal(list)
    _wake = pyqtSignal()

    def __init__(self, parent: QObject | None = None, *, budget_s: float = 0.008, chunk: int = 128) -> None:
        super().__init__(parent)
        self.budget_s = budget_s
        self.chunk = chunk
        self._pending: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._signalled = False
        self._wake.connect(self._drain, Qt.QueuedConnection)

    def __call__(self, event: Any) -> None:
        """Queue one event (any thread)."""
        with self._lock:
            self._pending.append(event)
            if self._signalled:
                return
            self._signalled = True
        try:
            self._wake.emit()
        except RuntimeError:  # the batcher is gone (window closed)
            pass

    def _drain(self) -> None:
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
        deadline = time.perf_counter() + self.budget_s
        done = 0
        while done < len(items):
            self.events.emit(items[done:done + self.chunk])
            done += self.chunk
            if time.perf_counter() > deadline:
                break
        with self._lock:
            if done < len(items):
                self._pending.extendleft(reversed(items[done:]))
            if self._pending:
                QTimer.singleShot(0, self._drain)  # the rest next turn, after timers and paints
            else:
                self._signalled = False


# ====================================================================== the widget
class LivePlot(QWidget):
    """A run's standard plot, live. Feed :meth:`on_event` with runner events."""

    #: the status line changed (run id, status, points) — for a window's status bar
    status_changed = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None, *, max_fps: float = 30.0) -> None:
        super().__init__(parent)
        self.spec: PlotSpec | None = None
        self.run_id = ""
        self.protocol = ""
        self.devices: tuple[str, ...] = ()
        self.status = ""
        self.reason = ""
        self.points = 0  # rows received this run
        self.rows = 0  # the runner's row count
        self.redraws = 0  # timer frames that drew something
        self.failed_devices: dict[str, str] = {}
        self.units: dict[str, str] = {}
        self._traces: dict[tuple[Any, str], _Trace] = {}
        self._progress: tuple[float, float | None, str] = (0.0, None, "")
        self._started = 0.0

        self.plot = plot_frame()
        self.item = self.plot.getPlotItem()
        self.legend = self.item.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.title = QLabel("no run yet")
        self.title.setStyleSheet("font-weight: bold")
        self.state = QLabel("")
        self.state.setTextFormat(1)  # Qt.RichText
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(220)
        self.bar.setTextVisible(True)
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.bar)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.state)
        lay.addWidget(self.plot, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(max(1, int(1000 / max_fps)))
        self._timer.timeout.connect(self._redraw)

    # -------------------------------------------------- reading back (tests, tools)
    def traces(self) -> dict[tuple[Any, str], pg.PlotDataItem]:
        """(group value or None, y column) -> its curve."""
        return {k: t.curve for k, t in self._traces.items()}

    def data(self, ycol: str | None = None, group: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Everything received for one trace (as drawn: |y|, NaN off a log axis)."""
        assert self.spec is not None, "no run"
        t = self._traces[(group, ycol or self.spec.y[0])]
        t.settle()
        return t.x.view(), t.y.view()

    # -------------------------------------------------- events
    @pyqtSlot(list)
    def on_events(self, events: list) -> None:
        """A batch of events (from an :class:`EventBatcher`)."""
        for event in events:
            self.on_event(event)

    @pyqtSlot(object)
    def on_event(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "RunStarted":
            self.start_run(event.run_id, event.protocol, event.devices, event.columns)
            return
        if getattr(event, "run_id", None) != self.run_id or not self.run_id:
            return  # another run's event (a campaign's), or none started
        if kind == "Points":
            self.add_block(event.block, event.rows)
        elif kind == "Progress":
            self._progress = (float(event.done), None if event.total is None else float(event.total), event.message)
            self._update_status()
        elif kind == "StatusChanged":
            self.status, self.reason = event.status, event.reason
            if event.status in FINAL:
                self._redraw()  # what is left, now
            self._update_status()
        elif kind == "DeviceFailed":
            self.failed_devices[event.device] = event.reason
            self._update_status()

    def start_run(self, run_id: str, protocol: str, devices: Sequence[str] = (), columns: Sequence[Any] = (),
                  spec: PlotSpec | None = None) -> None:
        """Clear and set the axes for a new run (the protocol's PlotSpec unless given)."""
        if spec is None:
            from labpcu.protocols import registry

            try:
                spec = registry.get(protocol).plot
            except Exception:  # noqa: BLE001 - an unknown protocol still shows its status
                spec = None
        self._timer.stop()
        self.item.clear()
        self.legend.clear()
        self._traces.clear()
        self.spec = spec
        self.run_id, self.protocol, self.devices = run_id, protocol, tuple(devices)
        self.status, self.reason = "running", ""
        self.points = self.rows = self.redraws = 0
        self.failed_devices = {}
        self._progress = (0.0, None, "")
        self._started = time.monotonic()
        self.units = {c.name: c.unit for c in columns}
        if spec is not None:
            configure_axes(self.item, spec, self.units)
        self.title.setText(f"{run_id}  ·  {protocol}" + (f"  ·  {', '.join(self.devices)}" if self.devices else ""))
        self._update_status()

    def add_block(self, block: Mapping[str, Any], rows: int | None = None) -> None:
        """Append one recorded block (what the runner's ``Points`` carries)."""
        spec = self.spec
        if spec is None:
            return
        names = [spec.x, *spec.y, *([spec.group] if spec.group else [])]
        if self._add_point(spec, block, rows):
            return
        n, cols = block_columns(block, names)
        self.points += n
        self.rows = rows if rows is not None else self.points
        if spec.group is None:
            parts: list[tuple[Any, Any]] = [(None, slice(None))]
        else:
            g = cols[spec.group]
            first = g[0]
            if n == 1 or (g == first).all():
                parts = [(_key(first), slice(None))]
            else:
                keys = [_key(v) for v in g]
                order: dict[Any, list[int]] = {}
                for k, key in enumerate(keys):
                    order.setdefault(key, []).append(k)
                parts = [(key, np.array(idx)) for key, idx in order.items()]
        for key, sel in parts:
            for ycol in spec.y:
                x, y = prepare_values(spec, cols[spec.x][sel], cols[ycol][sel])
                trace = self._trace(key, ycol)
                trace.x.extend(x)
                trace.y.extend(y)
                trace.dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _add_point(self, spec: PlotSpec, block: Mapping[str, Any], rows: int | None) -> bool:
        """A block of one point (plain numbers): appended as floats, no numpy. False
        when the block holds arrays (the general path)."""
        x = block.get(spec.x)
        if not isinstance(x, _SCALARS):
            return False
        ys = []
        for ycol in spec.y:
            y = block.get(ycol, _NAN)
            if not isinstance(y, _SCALARS):
                return False
            ys.append(y)
        key = None
        if spec.group is not None:
            g = block.get(spec.group)
            if isinstance(g, (np.ndarray, list, tuple)):
                return False
            key = _key(g)
        x = float(x)
        if spec.xscale == "log" and not x > 0:
            x = _NAN
        for ycol, y in zip(spec.y, ys):
            y = float(y)
            if spec.abs_y:
                y = abs(y)
            if spec.yscale == "log" and not y > 0:
                y = _NAN
            trace = self._traces.get((key, ycol)) or self._trace(key, ycol)
            trace.px.append(x)
            trace.py.append(y)
            trace.dirty = True
        self.points += 1
        self.rows = rows if rows is not None else self.points
        if not self._timer.isActive():
            self._timer.start()
        return True

    def _trace(self, group: Any, ycol: str) -> _Trace:
        trace = self._traces.get((group, ycol))
        if trace is None:
            assert self.spec is not None
            k = len(self._traces)
            name = trace_label(self.spec, group, ycol) if k < MAX_LEGEND else None
            trace = self._traces[(group, ycol)] = _Trace(new_curve(self.item, self.spec, trace_colour(k), name))
            if k == 0 and len(self.spec.y) == 1 and group is None:
                self.legend.setVisible(False)
            elif k < MAX_LEGEND:
                self.legend.setVisible(True)
        return trace

    def _redraw(self) -> None:
        """One frame: give every trace that grew its buffers (views, no copies)."""
        self._timer.stop()
        drew = False
        for t in self._traces.values():
            if t.dirty:
                t.settle()
                t.curve.setData(t.x.view(), t.y.view())
                t.dirty = False
                drew = True
        if drew:
            self.redraws += 1
            self._update_status()

    # -------------------------------------------------- status line
    def _update_status(self) -> None:
        colour = STATUS_COLOURS.get(self.status, "#444")
        text = f"<b style='color:{colour}'>{self.status or '—'}</b>  ·  {self.rows:,} points"
        if self.failed_devices:
            text += f"  ·  <span style='color:#c62828'>{len(self.failed_devices)} device(s) failed</span>"
        if self.reason:
            text += f"  ·  {self.reason[:80]}"
        self.state.setText(text)
        done, total, message = self._progress
        if self.status in FINAL:
            self.bar.setRange(0, 100)
            self.bar.setValue(100 if self.status == "completed" else self.bar.value())
            self.bar.setFormat(self.status)
        elif total:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(max(done / total, 0.0), 1.0)))
            self.bar.setFormat(message or f"{done:g} / {total:g}  (%p%)")
        else:
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
            self.bar.setFormat(message or ("running" if self.status == "running" else ""))
        self.status_changed.emit(f"{self.run_id} {self.status} {self.rows}")


_SCALARS = (int, float, np.integer, np.floating, np.bool_, bool)
_NAN = float("nan")


def _key(value: Any) -> Any:
    """A group value as a dict key (numpy scalars to Python, floats that are integers to int)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
