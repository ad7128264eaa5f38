"""The wafer map: the 101 PCUs at their wafer positions, selectable, coloured from the store.

Nine 3×3 arrays (A1–A9) drawn as arrays and the 20 single PCUs (S01–S20) drawn as
singles grouped by quad site (Q1–Q5), on the 4-inch wafer outline, in millimetres
(x to the right, y up). Drawn with a ``QGraphicsScene``: vector items, crisp at any
zoom; the mouse wheel zooms, the map fits the window otherwise.

Selecting: a click selects one device, shift-click adds or removes one, a drag on the
background selects a rectangle (shift-drag adds), a click on a site label (or a
double-click on a device) selects its whole site, a click on the background clears.
Every change emits :attr:`WaferMap.selection_changed` with the device ids.

Colouring: :meth:`WaferMap.set_store` then :meth:`WaferMap.refresh` read the store
(read-only: one ``Store.runs()`` and ``Store.info()`` of the runs the chosen quantity
needs, cached while a run's status does not change) and colour every device by the
quantity chosen with :meth:`WaferMap.set_quantity` (:data:`QUANTITIES`). The per-device
numbers come from :func:`map_data`, which needs no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5.QtCore import QPoint, QPointF, QRect, QRectF, QSize, Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QTransform, QColor, QFont, QLinearGradient, QMouseEvent, QPainter, QPainterPath, QPen, QPixmap
from PyQt5.QtWidgets import (
    QComboBox,
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRubberBand,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from labpcu.sim.wafer import CELL_PITCH_MM, WAFER_DIAMETER_MM, Wafer

#: the quantities a map can be coloured by
QUANTITIES = ("last status", "rectification", "M1 conductance", "M2 state", "failed", "yield class")

CELL_MM = 1.3  # side of an array cell's square (the pitch is 1.5 mm)
SINGLE_MM = 3.0  # diameter of a single PCU's disc
_M2_LRS_MAX = 1e4  # Ω: at most this is LRS (labpcu.protocols.programming.SwitchScheme)
_M2_HRS_MIN = 1e6  # Ω: at least this is HRS

UNTESTED = QColor("#d9d9d9")
NO_VALUE = QColor("#8c8c8c")  # drawn as a dotted fill: measured, but not this quantity
#: categorical colours (colour-blind friendly where it matters: red/green pairs differ in lightness)
CATEGORY_COLOURS: dict[str, dict[str, QColor]] = {
    "last status": {"completed": QColor("#2ca02c"), "failed": QColor("#d62728"), "aborted": QColor("#ff9f1c"),
                    "interrupted": QColor("#9467bd"), "running": QColor("#1f77b4"), "untested": UNTESTED},
    "M2 state": {"LRS": QColor("#e4572e"), "HRS": QColor("#1f4e9c"), "between": QColor("#b6a3d6"),
                 "untested": UNTESTED},
    "failed": {"failed": QColor("#d62728"), "not failed": QColor("#a6d99a"), "untested": UNTESTED},
    "yield class": {"working": QColor("#2ca02c"), "failed": QColor("#d62728"), "untested": UNTESTED},
}
#: continuous quantities: (unit shown on the colour bar, stored value -> the number coloured)
CONTINUOUS: dict[str, tuple[str, Callable[[float], float]]] = {
    "rectification": ("log₁₀(I_F/I_R)", lambda v: math.log10(v) if v > 0 else math.nan),
    "M1 conductance": ("µS", lambda v: v * 1e6),
}
# viridis, 9 stops
_VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
_SELECTED_PEN = QColor("#ff00ff")


# ============================================================== the numbers (no Qt)
@dataclass(frozen=True)
class RunRef:
    """One run in a device's history."""

    run_id: str
    protocol: str
    status: str  # the run's status, or "failed" where the run reported this device failed
    started: str  # local time, to the second


@dataclass
class MapData:
    """Per-device history and the chosen quantity's value, from one store reading."""

    quantity: str
    values: dict[str, Any] = field(default_factory=dict)  # device -> category (str) or number
    history: dict[str, list[RunRef]] = field(default_factory=dict)  # device -> runs, oldest first


class StoreReader:
    """Reads what the map needs from a store, read-only. ``Store.info`` results are kept
    per run while its status stays the same, so a refresh during a campaign reads only
    the runs that changed."""

    def __init__(self, path: str | Path) -> None:
        from labpcu.data.store import Store

        self.store = Store(path)
        self._info: dict[str, tuple[str, Any]] = {}  # run_id -> (status, RunInfo)
        self.info_reads = 0  # how many Store.info calls were made (for tests and benchmarks)

    def info(self, run_id: str, status: str) -> Any:
        hit = self._info.get(run_id)
        if hit is not None and hit[0] == status:
            return hit[1]
        info = self.store.info(run_id)
        self.info_reads += 1
        if status not in ("running",):
            self._info[run_id] = (status, info)
        return info

    def read(self, quantity: str, devices: Iterable[str]) -> MapData:
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}, not {quantity!r}")
        on_wafer = set(devices)
        if not self.store.path.exists():
            return MapData(quantity)
        df = self.store.runs()
        runs = []  # (run_id, protocol, status, started, devices), oldest first
        for run_id, row in df.sort_index().iterrows():
            devs = tuple(d for d in str(row["devices"]).split(", ") if d in on_wafer)
            started = row["started"]
            try:
                text = started.to_pydatetime().astimezone().strftime("%Y-%m-%d %H:%M:%S")
            except (AttributeError, ValueError):  # NaT or not a time
                text = str(started)
            runs.append((str(run_id), str(row["protocol"]), str(row["status"]), text, devs))
        data = MapData(quantity)
        for run_id, protocol, status, started, devs in runs:
            for d in devs:
                data.history.setdefault(d, []).append(RunRef(run_id, protocol, status, started))
        newest_first = runs[::-1]
        if quantity == "last status":
            self._last_status(data, newest_first)
        elif quantity == "rectification":
            self._latest(data, newest_first, ("iv_sweep",), _rectification)
        elif quantity == "M1 conductance":
            self._latest(data, newest_first, ("ispp", "retention", "configure"), _m1_conductance)
        elif quantity == "M2 state":
            self._latest(data, newest_first, ("binary_switch", "hysteresis", "configure", "retention"), _m2_state)
        else:  # "failed", "yield class": every run's own verdict on each of its devices
            failed: set[str] = set()
            completed: set[str] = set()
            for run_id, _protocol, status, _started, devs in newest_first:
                bad = self._failed_devices(run_id, status, devs)
                failed |= bad
                if status == "completed":
                    completed |= set(devs) - bad
            for d in data.history:
                if quantity == "failed":
                    data.values[d] = "failed" if d in failed else "not failed"
                else:
                    data.values[d] = "failed" if d in failed else "working" if d in completed else "untested"
        # the history's status says "failed" where a run reported that device failed
        for run_id, _p, status, _s, devs in runs:
            if status == "completed" and run_id in self._info:
                bad = set(self._info[run_id][1].results.get("failed_devices", {}) or {})
                for d in bad & set(devs):
                    data.history[d] = [RunRef(r.run_id, r.protocol, "failed (device)", r.started)
                                       if r.run_id == run_id else r for r in data.history[d]]
        return data

    def _failed_devices(self, run_id: str, status: str, devs: Sequence[str]) -> set[str]:
        if status == "failed":
            return set(devs)
        if status == "running":
            return set()
        results = self.info(run_id, status).results
        return set(results.get("failed_devices", {}) or {}) & set(devs)

    def _last_status(self, data: MapData, newest_first: list) -> None:
        todo = set(data.history)
        for run_id, _protocol, status, _started, devs in newest_first:
            mine = todo & set(devs)
            if not mine:
                continue
            bad = self._failed_devices(run_id, status, devs) if status == "completed" else set()
            for d in mine:
                data.values[d] = "failed" if d in bad else status
            todo -= mine
            if not todo:
                break

    def _latest(self, data: MapData, newest_first: list, protocols: tuple[str, ...],
                value: Callable[[Any, str], Any]) -> None:
        """Each device's value from the newest run of ``protocols`` that gives one."""
        todo = set(data.history)
        for run_id, protocol, status, _started, devs in newest_first:
            mine = todo & set(devs)
            if protocol not in protocols or not mine or status in ("running", "interrupted"):
                continue
            info = self.info(run_id, status)
            for d in mine:
                v = value(info, d)
                if v is not None:
                    data.values[d] = v
                    todo.discard(d)
            if not todo:
                break


def _per_device(results: dict, device: str) -> dict[str, Any] | None:
    """The ``per_device`` table row (columns of arrays, a ``device`` column) of ``device``."""
    table = results.get("per_device")
    if not isinstance(table, dict) or "device" not in table:
        return None
    ids = [str(x) for x in np.asarray(table["device"]).tolist()]
    if device not in ids:
        return None
    k = ids.index(device)
    return {key: np.asarray(col)[k] for key, col in table.items() if np.ndim(col) == 1 and len(col) == len(ids)}


def _finite(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _rectification(info: Any, device: str) -> float | None:
    per = info.results.get("devices", {})
    return _finite(per.get(device, {}).get("rectification_ratio")) if isinstance(per, dict) else None


def _m1_conductance(info: Any, device: str) -> float | None:
    r = info.results
    if info.protocol == "retention":
        d = r.get("devices", {}).get(device, {})
        return _finite(d.get("g_last")) if d.get("component") == "m1" else None
    if info.protocol == "configure":
        row = _per_device(r, device)
        return _finite(row.get("g_m1")) if row else None
    if info.protocol == "ispp":
        att = r.get("per_attempt")
        if not isinstance(att, dict) or "device" not in att:
            return None
        ids = [str(x) for x in np.asarray(att["device"]).tolist()]
        ks = [k for k, x in enumerate(ids) if x == device]
        return _finite(np.asarray(att["conductance"])[ks[-1]]) if ks else None
    return None


def _m2_class(resistance: float | None) -> str | None:
    if resistance is None or resistance <= 0:
        return None
    return "LRS" if resistance <= _M2_LRS_MAX else "HRS" if resistance >= _M2_HRS_MIN else "between"


def _m2_state(info: Any, device: str) -> str | None:
    r = info.results
    if info.protocol == "binary_switch":
        row = _per_device(r, device)
        return _m2_class(_finite(row.get("r_after"))) if row else None
    if info.protocol == "configure":
        row = _per_device(r, device)
        return _m2_class(_finite(row.get("r_m2"))) if row else None
    if info.protocol == "hysteresis":
        d = r.get("devices", {}).get(device)
        return "HRS" if d else None  # every cycle ends with its reset half
    if info.protocol == "retention":
        d = r.get("devices", {}).get(device, {})
        g = _finite(d.get("g_last")) if d.get("component") == "m2" else None
        return _m2_class(1 / g) if g else None
    return None


def map_data(store: str | Path, quantity: str, devices: Iterable[str]) -> MapData:
    """The map's numbers from ``store`` for ``devices``, without Qt (one-off reader)."""
    return StoreReader(store).read(quantity, devices)


def colour_scale(values: Iterable[float]) -> tuple[float, float]:
    xs = [v for v in values if math.isfinite(v)]
    if not xs:
        return 0.0, 1.0
    lo, hi = min(xs), max(xs)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def viridis(t: float) -> QColor:
    t = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    k = min(int(t), len(_VIRIDIS) - 2)
    a, b = QColor(_VIRIDIS[k]), QColor(_VIRIDIS[k + 1])
    f = t - k
    return QColor(round(a.red() + f * (b.red() - a.red())), round(a.green() + f * (b.green() - a.green())),
                  round(a.blue() + f * (b.blue() - a.blue())))


# ============================================================== the drawing
def _pin(item: QGraphicsItem, pos: QPointF, ax: float, ay: float) -> None:
    """Put a fixed-size (ItemIgnoresTransformations) item so that its point (ax, ay), as
    fractions of its size, sits on ``pos`` at every zoom: the offset is in pixels."""
    item.setPos(pos)
    br = item.boundingRect()
    item.setTransform(QTransform.fromTranslate(-ax * br.width(), -ay * br.height()))


class _CellItem(QGraphicsRectItem):
    def __init__(self, device_id: str, site: str, x: float, y: float) -> None:
        h = CELL_MM / 2
        super().__init__(-h, -h, CELL_MM, CELL_MM)
        self.device_id, self.site = device_id, site
        self.setPos(x, -y)  # scene y grows downwards


class _SingleItem(QGraphicsEllipseItem):
    def __init__(self, device_id: str, site: str, x: float, y: float) -> None:
        h = SINGLE_MM / 2
        super().__init__(-h, -h, SINGLE_MM, SINGLE_MM)
        self.device_id, self.site = device_id, site
        self.setPos(x, -y)


class _SiteLabel(QGraphicsSimpleTextItem):
    """A site's name; a click on it selects the site. Fixed size on screen."""

    def __init__(self, site: str, text: str | None = None) -> None:
        super().__init__(text or site)
        self.site = site
        self.setFlag(QGraphicsItem.ItemIgnoresTransformations, True)
        font = QFont()
        font.setPointSizeF(9)
        font.setBold(True)
        self.setFont(font)
        self.setBrush(QBrush(QColor("#303030")))
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip(f"site {site}: click to select the whole site")
        self.setZValue(5)


class _MapView(QGraphicsView):
    """The view: forwards mouse events to the map's handlers in scene coordinates."""

    def __init__(self, scene: QGraphicsScene, owner: WaferMap) -> None:
        super().__init__(scene)
        self._owner = owner
        self.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setDragMode(QGraphicsView.NoDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setMouseTracking(True)
        self.setBackgroundBrush(QBrush(QColor("white")))
        self.setMinimumSize(260, 260)
        self._zoom = 1.0
        self._band = QRubberBand(QRubberBand.Rectangle, self.viewport())
        self._origin: QPoint | None = None

    def fit(self) -> None:
        r = self.sceneRect()
        self.fitInView(r, Qt.KeepAspectRatio)
        if self._zoom != 1.0:
            self.scale(self._zoom, self._zoom)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt
        super().resizeEvent(event)
        self.fit()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt
        super().showEvent(event)
        self.fit()

    def wheelEvent(self, event: Any) -> None:  # noqa: N802 - Qt
        step = 1.25 if event.angleDelta().y() > 0 else 1 / 1.25
        new = min(max(self._zoom * step, 1.0), 12.0)
        if new != self._zoom:
            f = new / self._zoom
            self._zoom = new
            self.scale(f, f)

    def reset_zoom(self) -> None:
        self._zoom = 1.0
        self.fit()

    # mouse -> the map's handlers (scene coordinates)
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt
        if event.button() != Qt.LeftButton:
            return super().mousePressEvent(event)
        shift = bool(event.modifiers() & Qt.ShiftModifier)
        if not self._owner.press_at(self.mapToScene(event.pos()), shift):
            self._origin = event.pos()
            self._band.setGeometry(QRect(self._origin, QSize()))
            self._band.show()
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt
        if self._origin is not None and event.buttons() & Qt.LeftButton:
            self._band.setGeometry(QRect(self._origin, event.pos()).normalized())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt
        if self._origin is not None and event.button() == Qt.LeftButton:
            origin, self._origin = self._origin, None
            self._band.hide()
            shift = bool(event.modifiers() & Qt.ShiftModifier)
            a, b = self.mapToScene(origin), self.mapToScene(event.pos())
            self._owner.band_select(QRectF(a, b).normalized(), shift,
                                    click=(event.pos() - origin).manhattanLength() < 4)
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt
        if event.button() == Qt.LeftButton:
            self._owner.double_click_at(self.mapToScene(event.pos()),
                                        bool(event.modifiers() & Qt.ShiftModifier))
            event.accept()
            return
        super().mouseDoubleClickEvent(event)


class _Legend(QWidget):
    """Swatches of a categorical quantity, or a colour bar of a continuous one."""

    def __init__(self) -> None:
        super().__init__()
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(4, 2, 4, 2)
        self._layout.setSpacing(10)
        self.entries: list[tuple[str, QColor]] = []

    def _clear(self) -> None:
        while self._layout.count():
            w = self._layout.takeAt(0).widget()
            if w is not None:
                w.hide()
                w.setParent(None)
                w.deleteLater()
        self.entries = []

    def _swatch(self, colour: QColor, text: str, ring: bool = False) -> None:
        pm = QPixmap(14, 14)
        pm.fill(Qt.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.Antialiasing)
        p.setPen(QPen(QColor("#606060"), 1))
        p.setBrush(Qt.NoBrush if ring else QBrush(colour, Qt.Dense5Pattern) if colour == NO_VALUE
                   else QBrush(colour))
        if ring:
            p.setPen(QPen(colour, 2.5))
        p.drawRect(1, 1, 12, 12)
        p.end()
        icon = QLabel()
        icon.setPixmap(pm)
        label = QLabel(text)
        self._add(icon)
        self._add(label)
        self._layout.addSpacing(4)
        self.entries.append((text, colour))

    def _add(self, widget: QWidget) -> None:
        self._layout.addWidget(widget)
        widget.show()  # a child added to a visible widget is not shown by itself

    def show_categories(self, colours: dict[str, QColor], counts: dict[str, int]) -> None:
        self._clear()
        for name, colour in colours.items():
            self._swatch(colour, f"{name} ({counts.get(name, 0)})")
        self._swatch(_SELECTED_PEN, "selected", ring=True)
        self._layout.addStretch(1)
        self._layout.activate()

    def show_bar(self, unit: str, lo: float, hi: float, n: int, n_untested: int) -> None:
        self._clear()
        self._add(QLabel(f"{lo:.3g}"))
        pm = QPixmap(120, 14)
        p = QPainter(pm)
        grad = QLinearGradient(0, 0, 120, 0)
        for k, c in enumerate(_VIRIDIS):
            grad.setColorAt(k / (len(_VIRIDIS) - 1), QColor(c))
        p.fillRect(0, 0, 120, 14, QBrush(grad))
        p.setPen(QPen(QColor("#606060")))
        p.drawRect(0, 0, 119, 13)
        p.end()
        bar = QLabel()
        bar.setPixmap(pm)
        self._add(bar)
        self._add(QLabel(f"{hi:.3g} {unit}"))
        self._layout.addSpacing(4)
        self._add(QLabel(f"measured: {n}"))
        self._layout.addSpacing(8)
        self.entries.append((f"{lo:.3g}..{hi:.3g} {unit}", QColor(_VIRIDIS[-1])))
        self._swatch(NO_VALUE, "no value")
        self._swatch(UNTESTED, f"untested: {n_untested}")
        self._swatch(_SELECTED_PEN, "selected", ring=True)
        self._layout.addStretch(1)
        self._layout.activate()


class WaferMap(QWidget):
    """The wafer's 101 PCUs; select devices, colour them by a quantity from the store."""

    #: the selected device ids, in wafer order, after every change
    selection_changed = pyqtSignal(list)

    def __init__(self, layout: Wafer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.wafer = layout
        self._order = {d: k for k, d in enumerate(layout.devices)}
        self._selected: set[str] = set()
        self._quantity = "last status"
        self._reader: StoreReader | None = None
        self.data = MapData(self._quantity)
        self.items: dict[str, QGraphicsItem] = {}
        self.site_labels: dict[str, _SiteLabel] = {}
        self.array_frames: dict[str, QGraphicsRectItem] = {}

        self.scene = QGraphicsScene(self)
        self._build_scene()
        self.view = _MapView(self.scene, self)

        self.quantity_box = QComboBox()
        self.quantity_box.addItems(QUANTITIES)
        self.quantity_box.setToolTip("colour the devices by this quantity, from the run store")
        self.quantity_box.currentTextChanged.connect(self.set_quantity)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("read the run store again")
        self.refresh_button.clicked.connect(self.refresh)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("show the whole wafer (the mouse wheel zooms)")
        self.fit_button.clicked.connect(self.view.reset_zoom)
        self.selection_label = QLabel()
        self.store_label = QLabel("no run store")
        self.store_label.setStyleSheet("color: #606060")
        self.legend = _Legend()

        top = QHBoxLayout()
        top.addWidget(QLabel("Colour by"))
        top.addWidget(self.quantity_box)
        top.addWidget(self.refresh_button)
        top.addWidget(self.fit_button)
        top.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.selection_label)
        bottom.addWidget(self.store_label, 1)
        self.selection_label.setStyleSheet(f"color: {_SELECTED_PEN.darker(160).name()}; font-weight: bold")
        self.store_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.store_label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        box = QVBoxLayout(self)
        box.setContentsMargins(4, 4, 4, 4)
        box.addLayout(top)
        box.addWidget(self.view, 1)
        box.addWidget(self.legend)
        box.addLayout(bottom)
        self.view.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self._recolour()
        self._update_selection_label()

    # ------------------------------------------------------------- scene
    def _build_scene(self) -> None:
        r = WAFER_DIAMETER_MM / 2
        s = self.scene
        # wafer outline with its primary flat at the bottom (a 4-inch wafer's flat: 32.5 mm)
        half_flat = 32.5 / 2
        y_flat = math.sqrt(r * r - half_flat * half_flat)
        path = QPainterPath()
        path.moveTo(-half_flat, y_flat)
        path.lineTo(half_flat, y_flat)
        path.arcTo(QRectF(-r, -r, 2 * r, 2 * r), -math.degrees(math.atan2(y_flat, half_flat)),
                   360 - 2 * (90 - math.degrees(math.atan2(y_flat, half_flat))))
        outline = QGraphicsPathItem(path)
        pen = QPen(QColor("#7a7a7a"), 1.5)
        pen.setCosmetic(True)
        outline.setPen(pen)
        outline.setBrush(QBrush(QColor("#f7f4ec")))
        outline.setZValue(-10)
        s.addItem(outline)
        note = QGraphicsSimpleTextItem("Ø 100 mm (4-inch) wafer, flat at the bottom")
        note.setFlag(QGraphicsItem.ItemIgnoresTransformations, True)
        note.setBrush(QBrush(QColor("#909090")))
        f = QFont()
        f.setPointSizeF(7.5)
        note.setFont(f)
        note.setPos(-r - 3, -r - 3)
        s.addItem(note)

        thin = QPen(QColor("#505050"), 0.8)
        thin.setCosmetic(True)
        for site in self.wafer.sites.values():
            devs = [self.wafer.devices[d] for d in site.devices]
            if site.kind == "array":
                xs = [d.x_mm for d in devs]
                ys = [d.y_mm for d in devs]
                pad = CELL_PITCH_MM / 2 + 0.35
                frame = QGraphicsRectItem(QRectF(min(xs) - pad, -max(ys) - pad, max(xs) - min(xs) + 2 * pad,
                                                 max(ys) - min(ys) + 2 * pad))
                fp = QPen(QColor("#404040"), 1.2)
                fp.setCosmetic(True)
                frame.setPen(fp)
                frame.setBrush(QBrush(QColor("#ffffff")))
                frame.setZValue(-5)
                frame.setToolTip(f"array {site.id} (3×3)")
                s.addItem(frame)
                self.array_frames[site.id] = frame
                label = _SiteLabel(site.id)
                _pin(label, QPointF(min(xs) - pad, -max(ys) - pad), 0.0, 1.0)  # above the frame, at any zoom
                self.site_labels[site.id] = label
                s.addItem(label)
            else:
                # a quad site: an arc band behind its four singles, labelled outside the ring
                angles = [math.atan2(d.y_mm, d.x_mm) for d in devs]
                mean = math.atan2(sum(math.sin(a) for a in angles), sum(math.cos(a) for a in angles))
                spread = max(abs(math.atan2(math.sin(a - mean), math.cos(a - mean))) for a in angles)
                rr = math.hypot(devs[0].x_mm, devs[0].y_mm)
                band = QPainterPath()
                w = SINGLE_MM / 2 + 0.9
                outer = QRectF(-(rr + w), -(rr + w), 2 * (rr + w), 2 * (rr + w))
                inner = QRectF(-(rr - w), -(rr - w), 2 * (rr - w), 2 * (rr - w))
                start = math.degrees(mean - spread) - 3.5
                sweep = math.degrees(2 * spread) + 7
                band.arcMoveTo(outer, start)
                band.arcTo(outer, start, sweep)
                band.arcTo(inner, start + sweep, -sweep)
                band.closeSubpath()
                item = QGraphicsPathItem(band)
                item.setPen(thin)
                item.setBrush(QBrush(QColor("#ffffff")))
                item.setZValue(-5)
                item.setToolTip(f"quad site {site.id}: {', '.join(site.devices)}")
                s.addItem(item)
                # in the band, between its two middle singles
                label = _SiteLabel(site.id)
                _pin(label, QPointF(rr * math.cos(mean), -rr * math.sin(mean)), 0.5, 0.5)
                self.site_labels[site.id] = label
                s.addItem(label)
            for d in devs:
                it: QGraphicsItem
                if site.kind == "array":
                    it = _CellItem(d.id, site.id, d.x_mm, d.y_mm)
                else:
                    it = _SingleItem(d.id, site.id, d.x_mm, d.y_mm)
                    tag = QGraphicsSimpleTextItem(d.id)
                    tag.setFlag(QGraphicsItem.ItemIgnoresTransformations, True)
                    f = QFont()
                    f.setPointSizeF(7)
                    tag.setFont(f)
                    tag.setBrush(QBrush(QColor("#505050")))
                    ang = math.atan2(d.y_mm, d.x_mm)
                    tr = rr + w + 0.6
                    tx, ty = tr * math.cos(ang), -tr * math.sin(ang)
                    # the text on the side facing away from the centre
                    _pin(tag, QPointF(tx, ty), 1.0 if tx < -3 else 0.0 if tx > 3 else 0.5,
                         1.0 if ty < -3 else 0.0 if ty > 3 else 0.5)
                    tag.setZValue(4)
                    s.addItem(tag)
                it.setAcceptHoverEvents(True)
                it.setZValue(1)
                self.items[d.id] = it
                s.addItem(it)
        m = 4.0
        s.setSceneRect(QRectF(-r - m, -r - m, 2 * (r + m), 2 * (r + m)))

    # ------------------------------------------------------------- selection API
    def selected(self) -> list[str]:
        """The selected device ids, in wafer order."""
        return sorted(self._selected, key=self._order.__getitem__)

    def select(self, ids: Iterable[str]) -> None:
        """Select exactly ``ids`` (unknown ids raise KeyError)."""
        ids = set(ids)
        unknown = ids - set(self._order)
        if unknown:
            raise KeyError(f"no device {', '.join(sorted(unknown))} on the wafer")
        self._set_selection(ids)

    def select_site(self, site: str, add: bool = False) -> None:
        devs = set(self.wafer.sites[site].devices)
        self._set_selection(self._selected | devs if add else devs)

    def _set_selection(self, ids: set[str]) -> None:
        if ids == self._selected:
            return
        self._selected = set(ids)
        self._restyle()
        self._update_selection_label()
        self.selection_changed.emit(self.selected())

    def device_at(self, scene_pos: QPointF) -> str | None:
        for it in self.scene.items(scene_pos):
            dev = getattr(it, "device_id", None)
            if dev is not None:
                return dev
        return None

    def site_label_at(self, scene_pos: QPointF) -> str | None:
        for it in self.scene.items(scene_pos, Qt.IntersectsItemShape, Qt.DescendingOrder,
                                   self.view.viewportTransform()):
            if isinstance(it, _SiteLabel):
                return it.site
        return None

    # handlers (the view calls them with scene coordinates)
    def press_at(self, scene_pos: QPointF, shift: bool = False) -> bool:
        """A left press. True if it hit a device or a site label (handled here); False
        if it hit the background (the view then starts a rubber band)."""
        site = self.site_label_at(scene_pos)
        if site is not None:
            self.select_site(site, add=shift)
            return True
        dev = self.device_at(scene_pos)
        if dev is None:
            return False
        if shift:
            self._set_selection(self._selected ^ {dev})
        else:
            self._set_selection({dev})
        return True

    def band_select(self, rect: QRectF, shift: bool = False, click: bool = False) -> None:
        """A rubber band released: select the devices whose centre lies in ``rect``
        (scene coordinates), added to the selection with shift. A click on the
        background (``click``) clears the selection unless shift is held."""
        if click:
            if not shift:
                self._set_selection(set())
            return
        inside = {d for d, it in self.items.items() if rect.contains(it.pos())}
        self._set_selection(self._selected | inside if shift else inside)

    def double_click_at(self, scene_pos: QPointF, shift: bool = False) -> None:
        dev = self.device_at(scene_pos)
        if dev is not None:
            self.select_site(self.wafer.devices[dev].site, add=shift)
        else:
            site = self.site_label_at(scene_pos)
            if site is not None:
                self.select_site(site, add=shift)

    def scene_pos_of(self, device_id: str) -> QPointF:
        """Where a device is drawn (scene coordinates: x_mm, -y_mm)."""
        return self.items[device_id].pos()

    def site_label_view_pos(self, site: str) -> QPoint:
        """The centre of a site's label on the viewport (for mouse events)."""
        label = self.site_labels[site]
        br = label.boundingRect()
        t = label.transform()
        return self.view.mapFromScene(label.pos()) + QPoint(round(t.dx() + br.width() / 2),
                                                            round(t.dy() + br.height() / 2))

    def view_pos_of(self, device_id: str) -> QPoint:
        """Where a device is on the view's viewport (for mouse events)."""
        return self.view.mapFromScene(self.scene_pos_of(device_id))

    # ------------------------------------------------------------- store and colours
    def set_store(self, path: str | Path | None) -> None:
        """Read colours from the run store at ``path`` (None: none). Call :meth:`refresh`."""
        self._reader = StoreReader(path) if path is not None else None
        self.store_label.setText(f"run store: {path}" if path is not None else "no run store")

    def quantity(self) -> str:
        return self._quantity

    def set_quantity(self, name: str) -> None:
        """Colour by ``name`` (one of :data:`QUANTITIES`) and read the store again."""
        if name not in QUANTITIES:
            raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}, not {name!r}")
        self._quantity = name
        if self.quantity_box.currentText() != name:
            self.quantity_box.blockSignals(True)
            self.quantity_box.setCurrentText(name)
            self.quantity_box.blockSignals(False)
        self.refresh()

    def refresh(self) -> None:
        """Read the store (read-only) and recolour. A store that cannot be read leaves
        the map grey and says why below it."""
        if self._reader is None:
            self.data = MapData(self._quantity)
        else:
            try:
                self.data = self._reader.read(self._quantity, self.wafer.devices)
                self.store_label.setText(f"run store: {self._reader.store.path}")
                self.store_label.setStyleSheet("color: #606060")
            except Exception as exc:  # noqa: BLE001 - shown to the operator, one line
                self.data = MapData(self._quantity)
                text = str(exc).strip().splitlines()
                self.store_label.setText(f"cannot read {self._reader.store.path}: {text[0] if text else exc!r}")
                self.store_label.setStyleSheet("color: #b00000")
        self._recolour()

    def colour_of(self, device_id: str) -> QColor:
        """The fill colour a device is drawn with."""
        return self.items[device_id].brush().color()

    def _recolour(self) -> None:
        q, data = self._quantity, self.data
        self._fill: dict[str, QColor] = {}
        if q in CATEGORY_COLOURS:
            colours = CATEGORY_COLOURS[q]
            counts: dict[str, int] = {}
            for d in self.items:
                v = data.values.get(d, "no value" if d in data.history else "untested")
                counts[v] = counts.get(v, 0) + 1
                self._fill[d] = colours.get(v, NO_VALUE)
            shown = {k: c for k, c in {**colours, "no value": NO_VALUE}.items()
                     if counts.get(k) or k == "untested"}
            self.legend.show_categories(shown, counts)
        else:
            unit, f = CONTINUOUS[q]
            xs = {d: f(v) for d, v in data.values.items()}
            lo, hi = colour_scale(xs.values())
            for d in self.items:
                if d in xs and math.isfinite(xs[d]):
                    self._fill[d] = viridis((xs[d] - lo) / (hi - lo))
                elif d in data.history:
                    self._fill[d] = NO_VALUE
                else:
                    self._fill[d] = UNTESTED
            n = sum(1 for x in xs.values() if math.isfinite(x))
            self.legend.show_bar(unit, lo, hi, n, sum(1 for d in self.items if d not in data.history))
        self._restyle()
        for d, it in self.items.items():
            it.setToolTip(self.tooltip(d))

    def _restyle(self) -> None:
        fills = getattr(self, "_fill", {})
        for d, it in self.items.items():
            colour = fills.get(d, UNTESTED)
            brush = QBrush(colour, Qt.Dense5Pattern) if colour == NO_VALUE else QBrush(colour)
            it.setBrush(brush)
            if d in self._selected:  # a thinner ring on the small array cells keeps their colour visible
                pen = QPen(_SELECTED_PEN, 2.6 if isinstance(it, _SingleItem) else 1.6)
                it.setZValue(3)
            else:
                pen = QPen(QColor("#404040"), 0.8)
                it.setZValue(1)
            pen.setCosmetic(True)
            it.setPen(pen)
        # an array frame: magenta when the whole array is selected, dashed when part of it is
        for site, frame in self.array_frames.items():
            devs = set(self.wafer.sites[site].devices)
            n = len(devs & self._selected)
            if n == 0:
                pen = QPen(QColor("#404040"), 1.2)
            else:
                pen = QPen(_SELECTED_PEN, 2.2, Qt.SolidLine if n == len(devs) else Qt.DashLine)
            pen.setCosmetic(True)
            frame.setPen(pen)

    def _update_selection_label(self) -> None:
        sel = self.selected()
        if not sel:
            text = "nothing selected"
        elif len(sel) <= 3:
            text = "selected: " + ", ".join(sel)
        else:
            text = f"{len(sel)} selected: {', '.join(sel[:2])}, …"
        self.selection_label.setText(text)

    def value_text(self, device_id: str) -> str:
        v = self.data.values.get(device_id)
        if v is None:
            return "untested" if device_id not in self.data.history else "no value"
        if self._quantity == "rectification":
            return f"{v:.3g}"
        if self._quantity == "M1 conductance":
            return f"{v * 1e6:.4g} µS"
        return str(v)

    def tooltip(self, device_id: str, max_runs: int = 12) -> str:
        """The hover text of a device: id, site, the quantity, and its runs (newest first)."""
        pcu = self.wafer.devices[device_id]
        where = (f"array {pcu.site}, row {pcu.row}, column {pcu.col}" if getattr(pcu, "array", None)
                 else f"single, quad site {pcu.site}")
        lines = [f"<b>{device_id}</b> — {where}",
                 f"x = {pcu.x_mm:.1f} mm, y = {pcu.y_mm:.1f} mm",
                 f"{self._quantity}: {self.value_text(device_id)}"]
        runs = self.data.history.get(device_id, [])
        if runs:
            lines.append(f"<br><u>{len(runs)} run{'s' if len(runs) != 1 else ''}</u> (newest first):")
            for r in runs[::-1][:max_runs]:
                lines.append(f"{r.run_id} · {r.protocol} · {r.status} · {r.started}")
            if len(runs) > max_runs:
                lines.append(f"… and {len(runs) - max_runs} older")
        else:
            lines.append("no runs")
        return "<br>".join(lines)
