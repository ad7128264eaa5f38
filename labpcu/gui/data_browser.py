"""The data browser: the runs of a store, filtered, opened as plot, table and results.

::

    browser = DataBrowser("day.h5")
    browser.set_filters(protocol="iv_sweep", status="completed", device="S0", sample="W1")
    browser.select_runs(["00001-iv_sweep", "00004-iv_sweep"])   # overlaid on one plot
    browser.export_csv("run.csv"); browser.export_png("plot.png")

The run list is read in a background thread, so a big store (or a slow disk) never
freezes the window; opening a run reads it on the GUI thread (one run is quick).
It only reads, through the store's public API (:meth:`Store.runs`, :meth:`Store.info`,
:meth:`Store.read`), so it may watch a file a campaign is writing: refresh it (the
button, :meth:`refresh`, or :meth:`set_auto_refresh`) and a run being written grows in
the plot. The run list is one ``Store.runs()`` call; filtering is done here, in pandas,
so changing a filter does not touch the file. Tables are models over DataFrames
(:class:`DataFrameModel`): Qt asks only for the cells it shows, so 10,000 runs or a
run of 100,000 points open at once.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyqtgraph as pg
from PyQt5.QtCore import QAbstractTableModel, QItemSelection, QItemSelectionModel, QModelIndex, Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QBrush, QColor
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from labpcu.data.store import STATUSES, Store
from labpcu.gui.live_plot import (
    MAX_LEGEND,
    STATUS_COLOURS,
    configure_axes,
    new_curve,
    plot_frame,
    prepare_values,
    trace_colour,
    trace_label,
)
from labpcu.protocols.base import PlotSpec

log = logging.getLogger(__name__)

ALL = "(all)"
#: the runs table's columns: (header, DataFrame column)
RUN_COLUMNS = (("run", "run_id"), ("protocol", "protocol"), ("status", "status"), ("started", "started"),
               ("duration (s)", "duration"), ("devices", "devices"), ("points", "n_points"), ("sample", "sample"),
               ("operator", "operator"), ("error", "error"))
#: runs overlaid on one plot at most (a legend beyond this is useless)
MAX_OVERLAY = 20
#: DataFrames of opened runs kept in memory
CACHE_RUNS = 16


# ====================================================================== a table model
class DataFrameModel(QAbstractTableModel):
    """A read-only Qt model over a DataFrame. Cells are formatted when Qt asks for them
    (only the visible ones); sorting is pandas'."""

    def __init__(self, df: pd.DataFrame | None = None, headers: Sequence[str] | None = None,
                 parent: Any = None) -> None:
        super().__init__(parent)
        self._df = pd.DataFrame()
        self._headers: list[str] = []
        self._cols: list[np.ndarray] = []
        self.colour_column: int | None = None
        self.set_frame(df if df is not None else pd.DataFrame(), headers)

    def set_frame(self, df: pd.DataFrame, headers: Sequence[str] | None = None) -> None:
        self.beginResetModel()
        self._df = df
        self._headers = list(headers) if headers is not None else [str(c) for c in df.columns]
        self._cols = [df.iloc[:, j].to_numpy() for j in range(df.shape[1])]
        self.endResetModel()

    @property
    def frame(self) -> pd.DataFrame:
        return self._df

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's API
        return 0 if parent.isValid() else len(self._df)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._cols)

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid():
            return None
        value = self._cols[index.column()][index.row()]
        if role == Qt.DisplayRole or role == Qt.ToolTipRole:
            return format_cell(value)
        if role == Qt.TextAlignmentRole:
            return int(Qt.AlignRight | Qt.AlignVCenter) if _is_number(value) else int(Qt.AlignLeft | Qt.AlignVCenter)
        if role == Qt.ForegroundRole and index.column() == self.colour_column:
            colour = STATUS_COLOURS.get(str(value))
            return QBrush(QColor(colour)) if colour else None
        return None

    def headerData(self, section: int, orientation: int, role: int = Qt.DisplayRole) -> Any:  # noqa: N802
        if role != Qt.DisplayRole:
            return None
        if orientation == Qt.Horizontal:
            return self._headers[section] if section < len(self._headers) else None
        return str(section)

    def sort(self, column: int, order: int = Qt.AscendingOrder) -> None:
        if not len(self._df) or column >= self._df.shape[1]:
            return
        self.layoutAboutToBeChanged.emit()
        key = self._df.columns[column]
        try:
            df = self._df.sort_values(key, ascending=order == Qt.AscendingOrder, kind="stable", na_position="last")
        except TypeError:  # mixed types: sort as text
            df = self._df.iloc[np.argsort(self._df[key].astype(str).to_numpy(), kind="stable")]
            if order != Qt.AscendingOrder:
                df = df.iloc[::-1]
        self._df = df
        self._cols = [df.iloc[:, j].to_numpy() for j in range(df.shape[1])]
        self.layoutChanged.emit()


def format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.6g}"
    if value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is not None:
            value = value.to_pydatetime().astimezone()  # local time, as the operator reads a clock
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# ====================================================================== helpers
def sample_text(metadata: Any) -> tuple[str, str]:
    """(sample, operator) as the runs table shows them, from a run's metadata."""
    if not isinstance(metadata, Mapping):
        return "", ""
    sample = metadata.get("sample")
    operator = str(metadata.get("operator", "") or "")
    if isinstance(sample, Mapping):
        operator = str(sample.get("operator", "") or operator)
        name = sample.get("name") or sample.get("wafer")
        text = str(name) if name else ", ".join(str(v) for k, v in sample.items() if k != "operator")
        return text, operator
    return ("" if sample is None else str(sample)), operator


def _sample_haystack(metadata: Any) -> str:
    if not isinstance(metadata, Mapping):
        return ""
    sample = metadata.get("sample")
    if isinstance(sample, Mapping):
        return " ".join(str(v) for v in sample.values()).lower()
    return "" if sample is None else str(sample).lower()


def plot_spec_for(protocol: str, columns: Sequence[str]) -> PlotSpec | None:
    """The protocol's PlotSpec; else the first two numeric-looking columns."""
    from labpcu.protocols import registry

    try:
        spec = registry.get(protocol).plot
        if all(c in columns for c in (spec.x, *spec.y)) and (spec.group is None or spec.group in columns):
            return spec
    except Exception:  # noqa: BLE001 - an unknown protocol (a plug-in not installed here)
        pass
    names = [c for c in columns if c not in ("device",)]
    return PlotSpec(names[0], (names[1],)) if len(names) >= 2 else None


def describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return np.array2string(value, precision=6, separator=", ")
        head = ", ".join(format_cell(v) for v in value.ravel()[:6])
        return f"array {value.dtype} {value.shape}: [{head}, …]"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{', '.join(format_cell(v) for v in value[:6])}, …] ({len(value)} items)"
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return format_cell(value)


def fill_tree(parent: QTreeWidgetItem, mapping: Mapping[str, Any], units: Mapping[str, str] | None = None) -> None:
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            node = QTreeWidgetItem(parent, [str(key), ""])
            fill_tree(node, value)
        else:
            unit = (units or {}).get(key, "")
            text = describe_value(value)
            QTreeWidgetItem(parent, [str(key), text + (f" {unit}" if unit and text else "")])


# ====================================================================== the widget
class DataBrowser(QWidget):
    """Runs of a store: list, filter, open (plot, table, parameters and results),
    overlay, export. Read-only."""

    #: the run(s) now open (first is the one in the table and tree)
    runs_opened = pyqtSignal(list)
    #: the run list, read in a background thread: (DataFrame or None, error or None)
    _runs_read = pyqtSignal(object, object)

    def __init__(self, store_path: str | Path, parent: QWidget | None = None, *,
                 auto_refresh_ms: int = 0, background: bool = True) -> None:
        super().__init__(parent)
        self.store = Store(store_path)
        self.background = background
        self._loading = False
        self._again = False
        self._runs_read.connect(self._background_done, Qt.QueuedConnection)
        self.all_runs = pd.DataFrame()  # Store.runs(), unfiltered
        self.open_ids: list[str] = []
        self.open_info: Any = None
        self.open_frame: pd.DataFrame | None = None
        self.overlay_skipped: list[str] = []
        self.refreshes = 0
        self._open_state: dict[str, tuple[str, int]] = {}
        self._cache: collections.OrderedDict[tuple[str, str, int], tuple[Any, pd.DataFrame]] = \
            collections.OrderedDict()

        # ---- filters
        self.protocol = QComboBox()
        self.protocol.addItem(ALL)
        self.status = QComboBox()
        self.status.addItems([ALL, *STATUSES])
        self.device = QLineEdit()
        self.device.setPlaceholderText("device, e.g. S02")
        self.sample = QLineEdit()
        self.sample.setPlaceholderText("sample / wafer")
        for w in (self.device, self.sample):
            w.setClearButtonEnabled(True)
            w.textChanged.connect(self.apply_filters)
        self.protocol.currentIndexChanged.connect(self.apply_filters)
        self.status.currentIndexChanged.connect(self.apply_filters)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.auto = QCheckBox("auto")
        self.auto.setToolTip("refresh every 2 s (runs being written grow in the plot)")
        self.auto.toggled.connect(lambda on: self.set_auto_refresh(2000 if on else 0))
        filters = QGridLayout()
        filters.addWidget(QLabel("protocol"), 0, 0)
        filters.addWidget(self.protocol, 0, 1)
        filters.addWidget(QLabel("status"), 0, 2)
        filters.addWidget(self.status, 0, 3)
        filters.addWidget(refresh, 0, 4)
        filters.addWidget(QLabel("device"), 1, 0)
        filters.addWidget(self.device, 1, 1)
        filters.addWidget(QLabel("sample"), 1, 2)
        filters.addWidget(self.sample, 1, 3)
        filters.addWidget(self.auto, 1, 4)
        filters.setColumnStretch(1, 1)
        filters.setColumnStretch(3, 1)

        # ---- runs table
        self.runs_model = DataFrameModel()
        self.runs_model.colour_column = 2
        self.runs_view = QTableView()
        self.runs_view.setModel(self.runs_model)
        self.runs_view.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.runs_view.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.runs_view.setSortingEnabled(False)
        self.runs_view.horizontalHeader().setSectionsClickable(True)
        self.runs_view.horizontalHeader().sectionClicked.connect(self._sort_runs)
        self.runs_view.horizontalHeader().setStretchLastSection(True)
        self.runs_view.verticalHeader().setVisible(False)
        self.runs_view.verticalHeader().setDefaultSectionSize(20)
        self.runs_view.setAlternatingRowColors(True)
        self.runs_view.selectionModel().selectionChanged.connect(self._selection_changed)
        self.count = QLabel("")
        left = QWidget()
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 0, 0)
        left_lay.addLayout(filters)
        left_lay.addWidget(self.runs_view, 1)
        left_lay.addWidget(self.count)

        # ---- the open run
        self.heading = QLabel("select a run (Ctrl/Shift-click to overlay several)")
        self.heading.setTextFormat(Qt.RichText)
        self.heading.setWordWrap(True)
        self.plot = plot_frame()
        self.item = self.plot.getPlotItem()
        self.legend = self.item.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.table_model = DataFrameModel()
        self.table_view = QTableView()
        self.table_view.setModel(self.table_model)
        self.table_view.verticalHeader().setDefaultSectionSize(20)
        self.table_view.horizontalHeader().setSectionsClickable(True)
        self.table_view.horizontalHeader().sectionClicked.connect(
            lambda c: self.table_model.sort(c, _toggle(self.table_view, c)))
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["", "value"])
        self.tree.setColumnWidth(0, 220)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.plot, "Plot")
        self.tabs.addTab(self.table_view, "Table")
        self.tabs.addTab(self.tree, "Parameters && results")
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        self.png_button = QPushButton("Export PNG…")
        self.png_button.clicked.connect(lambda: self.export_png())
        for b in (self.csv_button, self.png_button):
            b.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.csv_button)
        buttons.addWidget(self.png_button)
        right = QWidget()
        right_lay = QVBoxLayout(right)
        right_lay.setContentsMargins(0, 0, 0, 0)
        right_lay.addWidget(self.heading)
        right_lay.addWidget(self.tabs, 1)
        right_lay.addLayout(buttons)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 5)
        split.setSizes([560, 700])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh)
        self._sort: tuple[int, int] = (0, Qt.DescendingOrder)  # newest first
        self.refresh()
        if auto_refresh_ms:
            self.set_auto_refresh(auto_refresh_ms)

    # -------------------------------------------------- the runs list
    def set_auto_refresh(self, ms: int) -> None:
        """Refresh every ``ms`` milliseconds (0: off)."""
        if ms > 0:
            self._timer.start(ms)
        else:
            self._timer.stop()

    @property
    def loading(self) -> bool:
        """A background read of the run list is under way."""
        return self._loading

    def refresh(self, wait: bool = False) -> None:
        """Read the run list again (one ``Store.runs()``), keep the filters and the
        selection, and reload an open run that has grown or changed status. The read
        runs in a background thread (a big store takes seconds to list, and the window
        must not freeze meanwhile) unless ``wait`` or the browser was made with
        ``background=False``; a refresh asked for during one is done after it."""
        if wait or not self.background:
            self._apply_runs(*self._read_runs())
            return
        if self._loading:
            self._again = True
            return
        self._loading = True
        if not len(self.all_runs):
            self.count.setText(f"reading {self.store.path.name}…")

        def work() -> None:
            result = self._read_runs()
            try:
                self._runs_read.emit(*result)
            except RuntimeError:  # the browser was closed meanwhile
                pass

        threading.Thread(target=work, name="labpcu browser: run list", daemon=True).start()

    def _read_runs(self) -> tuple[pd.DataFrame | None, BaseException | None]:
        try:
            return (self.store.runs() if self.store.path.exists() else None), None
        except Exception as exc:  # noqa: BLE001 - a file being written or damaged: shown, not raised
            return None, exc

    def _background_done(self, runs: pd.DataFrame | None, error: BaseException | None) -> None:
        self._loading = False
        self._apply_runs(runs, error)
        if self._again:
            self._again = False
            self.refresh()

    def _apply_runs(self, runs: pd.DataFrame | None, error: BaseException | None) -> None:
        if error is not None:  # keep what we had, and say why it is not newer
            self.count.setText(f"<span style='color:#c62828'>cannot read {self.store.path.name}: "
                               f"{_first_line(error)}</span>")
            return
        self.refreshes += 1
        if runs is None:
            self.all_runs = pd.DataFrame(columns=[c for _, c in RUN_COLUMNS]).set_index("run_id")
        else:
            meta = runs["metadata"].tolist()
            texts = [sample_text(m) for m in meta]
            runs = runs.assign(duration=runs["duration"].round(3), sample=[t[0] for t in texts],
                               operator=[t[1] for t in texts], _hay=[_sample_haystack(m) for m in meta],
                               _devices_lc=runs["devices"].str.lower())
            self.all_runs = runs
        protocols = sorted(set(self.all_runs["protocol"])) if len(self.all_runs) else []
        current = self.protocol.currentText()
        if [self.protocol.itemText(k) for k in range(1, self.protocol.count())] != protocols:
            self.protocol.blockSignals(True)
            self.protocol.clear()
            self.protocol.addItems([ALL, *protocols])
            self.protocol.setCurrentText(current if current in protocols else ALL)
            self.protocol.blockSignals(False)
        self.apply_filters()
        self._reload_changed()

    def set_filters(self, protocol: str | None = None, status: str | None = None, device: str | None = None,
                    sample: str | None = None) -> None:
        """Set the filters (None: all / empty) and apply them."""
        for w in (self.protocol, self.status, self.device, self.sample):
            w.blockSignals(True)
        self.protocol.setCurrentText(protocol or ALL)
        self.status.setCurrentText(status or ALL)
        self.device.setText(device or "")
        self.sample.setText(sample or "")
        for w in (self.protocol, self.status, self.device, self.sample):
            w.blockSignals(False)
        self.apply_filters()

    def filtered(self) -> pd.DataFrame:
        """The runs the filters let through (a DataFrame, index run_id)."""
        df = self.all_runs
        if not len(df):
            return df
        keep = np.ones(len(df), dtype=bool)
        if self.protocol.currentText() != ALL:
            keep &= (df["protocol"] == self.protocol.currentText()).to_numpy()
        if self.status.currentText() != ALL:
            keep &= (df["status"] == self.status.currentText()).to_numpy()
        device = self.device.text().strip().lower()
        if device:
            keep &= df["_devices_lc"].str.contains(device, regex=False).to_numpy(dtype=bool)
        sample = self.sample.text().strip().lower()
        if sample:
            keep &= np.fromiter((sample in h for h in df["_hay"]), dtype=bool, count=len(df))
        return df[keep]

    def apply_filters(self) -> None:
        selected = self.selected_ids()
        df = self.filtered()
        shown = df.reset_index()[[c for _, c in RUN_COLUMNS]] if len(df) else \
            pd.DataFrame(columns=[c for _, c in RUN_COLUMNS])
        self.runs_view.selectionModel().blockSignals(True)
        self.runs_model.set_frame(shown, [h for h, _ in RUN_COLUMNS])
        col, order = self._sort
        self.runs_model.sort(col, order)
        self.runs_view.horizontalHeader().setSortIndicatorShown(True)
        self.runs_view.horizontalHeader().setSortIndicator(col, order)
        if self.refreshes <= 1 and not selected:
            self._fit_columns()
        self._select_rows(selected)
        self.runs_view.selectionModel().blockSignals(False)
        total = len(self.all_runs)
        self.count.setText(f"{len(df):,} of {total:,} runs  ·  {self.store.path}")

    def _fit_columns(self) -> None:
        header = self.runs_view.horizontalHeader()
        header.setResizeContentsPrecision(50)  # measure 50 rows, not 10,000
        self.runs_view.resizeColumnsToContents()
        for k in range(self.runs_model.columnCount()):
            header.resizeSection(k, min(header.sectionSize(k), 260))

    def _sort_runs(self, column: int) -> None:
        col, order = self._sort
        order = (Qt.AscendingOrder if order == Qt.DescendingOrder else Qt.DescendingOrder) if col == column \
            else Qt.AscendingOrder
        self._sort = (column, order)
        self.apply_filters()

    def run_ids(self) -> list[str]:
        """The run ids listed now, in the table's order."""
        df = self.runs_model.frame
        return df["run_id"].tolist() if len(df) else []

    def selected_ids(self) -> list[str]:
        rows = sorted(i.row() for i in self.runs_view.selectionModel().selectedRows())
        ids = self.run_ids()
        return [ids[r] for r in rows if r < len(ids)]

    def _select_rows(self, run_ids: Sequence[str]) -> None:
        ids = self.run_ids()
        where = {r: k for k, r in enumerate(ids)}
        sel = QItemSelection()
        for run_id in run_ids:
            row = where.get(run_id)
            if row is not None:
                sel.select(self.runs_model.index(row, 0), self.runs_model.index(row, self.runs_model.columnCount() - 1))
        self.runs_view.selectionModel().select(sel, QItemSelectionModel.ClearAndSelect)

    def select_runs(self, run_ids: Sequence[str]) -> None:
        """Select (and open) these runs, as a Ctrl-click would."""
        self._select_rows(run_ids)  # emits selectionChanged -> open

    def _selection_changed(self, *_: Any) -> None:
        ids = self.selected_ids()
        if ids and ids != self.open_ids:
            self.open_runs(ids)

    # -------------------------------------------------- opening runs
    def _load(self, run_id: str) -> tuple[Any, pd.DataFrame]:
        row = self.all_runs.loc[run_id] if run_id in self.all_runs.index else None
        key = (run_id, str(row["status"]) if row is not None else "", int(row["n_points"]) if row is not None else -1)
        hit = self._cache.get(key)
        if hit is not None and key[1] not in ("running", ""):
            self._cache.move_to_end(key)
            return hit
        info = self.store.info(run_id)
        df = self.store.read(run_id)
        self._cache[key] = (info, df)
        while len(self._cache) > CACHE_RUNS:
            self._cache.popitem(last=False)
        return info, df

    def open_runs(self, run_ids: Sequence[str]) -> None:
        """Open the first run (plot, table, tree) and overlay the others on its plot."""
        run_ids = list(run_ids)[:MAX_OVERLAY]
        loaded: list[tuple[str, Any, pd.DataFrame]] = []
        errors = []
        for run_id in run_ids:
            try:
                info, df = self._load(run_id)
            except Exception as exc:  # noqa: BLE001 - a run mid-write or damaged: say which
                errors.append(f"{run_id}: {_first_line(exc)}")
                continue
            loaded.append((run_id, info, df))
        self.open_ids = [r for r, _, _ in loaded]
        self._open_state = {r: (i.status, len(d)) for r, i, d in loaded}
        if not loaded:
            self.open_info, self.open_frame = None, None
            self.heading.setText("<span style='color:#c62828'>" + "; ".join(errors) + "</span>")
            for b in (self.csv_button, self.png_button):
                b.setEnabled(False)
            return
        run_id, info, df = loaded[0]
        self.open_info, self.open_frame = info, df
        self._show_heading(info, len(loaded), errors)
        self._show_table(df, info)
        self._show_tree(info)
        self._show_plot(loaded)
        for b in (self.csv_button, self.png_button):
            b.setEnabled(True)
        self.runs_opened.emit(list(self.open_ids))

    def _reload_changed(self) -> None:
        """After a refresh: reopen the open runs if one grew or changed status."""
        if not self.open_ids:
            return
        for run_id, (status, rows) in self._open_state.items():
            if run_id in self.all_runs.index:
                row = self.all_runs.loc[run_id]
                if str(row["status"]) != status or int(row["n_points"]) != rows:
                    self.open_runs(self.open_ids)
                    return

    def _show_heading(self, info: Any, n: int, errors: list[str]) -> None:
        colour = STATUS_COLOURS.get(info.status, "#444")
        text = (f"<b>{info.run_id}</b> · {info.protocol} · {', '.join(info.devices) or 'no device'} · "
                f"<b style='color:{colour}'>{info.status}</b> · {info.n_points:,} points")
        if info.error:
            text += f"<br><span style='color:#c62828'>{_escape(info.error[:200])}</span>"
        if n > 1:
            text += f"<br>overlaying {n} runs"
            if self.overlay_skipped:
                text += f" (not drawn, other columns: {', '.join(self.overlay_skipped)})"
        if errors:
            text += "<br><span style='color:#c62828'>" + _escape("; ".join(errors)) + "</span>"
        self.heading.setText(text)

    def _show_table(self, df: pd.DataFrame, info: Any) -> None:
        units = {**df.attrs.get("units", {}), **(info.columns or {})}
        headers = [f"{c} ({units[c]})" if units.get(c) else str(c) for c in df.columns]
        self.table_model.set_frame(df, headers)
        header = self.table_view.horizontalHeader()
        header.setResizeContentsPrecision(30)
        self.table_view.resizeColumnsToContents()

    def _show_tree(self, info: Any) -> None:
        self.tree.clear()
        run = QTreeWidgetItem(self.tree, ["run", info.run_id])
        bench = info.bench or {}
        facts = {"protocol": info.protocol, "status": info.status, "error": info.error,
                 "devices": ", ".join(info.devices), "started": info.started, "finished": info.finished,
                 "points": info.n_points, "labpcu": info.labpcu_version,
                 "bench": f"{bench.get('name', '')}" + (f" (simulated, seed {bench.get('seed')})"
                                                        if bench.get("simulated") else "")}
        fill_tree(run, {k: v for k, v in facts.items() if v not in ("", None)})
        params = QTreeWidgetItem(self.tree, ["parameters", str(len(info.parameters))])
        fill_tree(params, info.parameters, info.parameter_units)
        results = QTreeWidgetItem(self.tree, ["results", "" if info.results else "none"])
        fill_tree(results, info.results)
        if info.metadata:
            meta = QTreeWidgetItem(self.tree, ["metadata", ""])
            fill_tree(meta, info.metadata)
        for node in (run, params, results):
            node.setExpanded(True)
        for k in range(results.childCount()):  # results are nested: show the second level too
            results.child(k).setExpanded(results.childCount() <= 4)
        self.tree.resizeColumnToContents(0)

    def _show_plot(self, loaded: list[tuple[str, Any, pd.DataFrame]]) -> None:
        self.item.clear()
        self.legend.clear()
        self.overlay_skipped = []
        first_id, first_info, first_df = loaded[0]
        spec = plot_spec_for(first_info.protocol, list(first_df.columns))
        if spec is None:
            self.item.setTitle("no plot: the run has fewer than two columns")
            return
        units = {**first_df.attrs.get("units", {}), **(first_info.columns or {})}
        title = spec.title or first_info.protocol
        configure_axes(self.item, spec, units, title=title if len(loaded) > 1 else f"{title} — {first_id}")
        k = 0
        multi = len(loaded) > 1
        for run_id, info, df in loaded:
            needed = [spec.x, *spec.y, *([spec.group] if spec.group else [])]
            if any(c not in df.columns for c in needed):
                self.overlay_skipped.append(run_id)
                continue
            groups = [(None, df)] if spec.group is None else list(df.groupby(spec.group, sort=False))
            for key, part in groups:
                for ycol in spec.y:
                    x, y = prepare_values(spec, part[spec.x].to_numpy(dtype=float), part[ycol].to_numpy(dtype=float))
                    label = trace_label(spec, key, ycol, prefix=run_id if multi else "")
                    curve = new_curve(self.item, spec, trace_colour(k), label if k < MAX_LEGEND else None)
                    curve.setData(x, y)
                    k += 1
        self.legend.setVisible(k > 1)
        if self.overlay_skipped:
            self._show_heading(first_info, len(loaded), [])

    def curves(self) -> list[pg.PlotDataItem]:
        """The curves on the plot now."""
        return [i for i in self.item.listDataItems() if isinstance(i, pg.PlotDataItem)]

    # -------------------------------------------------- export
    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the open run to CSV (units and parameters in a commented header)."""
        if self.open_frame is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the run as CSV", f"{self.open_info.run_id}.csv",
                                                  "CSV (*.csv)")
            if not path:
                return None
        path = Path(path)
        try:
            from labpcu.data.export import write_csv
        except ImportError:  # an older tree: the CLI's writer, else plain pandas
            try:
                from labpcu.cli_runs import write_csv  # type: ignore[attr-defined,no-redef]
            except ImportError:
                write_csv = None  # type: ignore[assignment]
        if write_csv is not None:
            write_csv(self.open_frame, self.open_info, path)
        else:
            self.open_frame.to_csv(path, index=False)
        return path

    def export_png(self, path: str | Path | None = None) -> Path | None:
        """Save the plot as a PNG, as it is on screen."""
        if not self.open_ids:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the plot as PNG", f"{self.open_ids[0]}.png",
                                                  "PNG (*.png)")
            if not path:
                return None
        path = Path(path)
        from PyQt5.QtWidgets import QApplication

        QApplication.sendPostedEvents()  # pyqtgraph lays out axes and labels on posted events
        if not self.plot.grab().save(str(path), "PNG"):
            raise OSError(f"cannot write {path}")
        return path


def _toggle(view: QTableView, column: int) -> int:
    header = view.horizontalHeader()
    order = Qt.DescendingOrder if header.sortIndicatorSection() == column and \
        header.sortIndicatorOrder() == Qt.AscendingOrder else Qt.AscendingOrder
    header.setSortIndicatorShown(True)
    header.setSortIndicator(column, order)
    return order


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _escape(text: str) -> str:
    import html

    return html.escape(text)
