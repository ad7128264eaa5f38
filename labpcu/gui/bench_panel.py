"""The bench panel: what is connected, which outputs are live, and the All safe button.

It shows the worker's :class:`~labpcu.gui.worker.BenchState` as it comes (every
change): each instrument with its model, address, identity and connection; each
source output with its state and level (a live output in red, an off one grey); the
probe site, the bench clock, welded relays if any; and whether a queue runs.

Connect/Disconnect ask the worker to open or close the bench
(:meth:`~labpcu.gui.worker.BenchWorker.request_open` /
:meth:`~labpcu.gui.worker.BenchWorker.request_close`). **All safe** is always enabled,
connected or not, busy or not, and calls
:meth:`~labpcu.gui.worker.BenchWorker.all_safe` (abort what runs, levels to 0 V,
outputs off, relays open). Nothing here talks to an instrument.
"""

from __future__ import annotations

from typing import Any

from PyQt5.QtCore import Qt, pyqtSlot
from PyQt5.QtGui import QColor, QFont
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from labpcu.gui.worker import BenchState

LIVE = QColor("#d62728")  # an output that is on
LIVE_BG = QColor("#fde0dc")
OFF = QColor("#6b6b6b")
OK = QColor("#2ca02c")

_SAFE_STYLE = """
QPushButton#allSafe { background: #c62828; color: white; font-weight: bold; font-size: 13pt;
                      border: 2px solid #7f0000; border-radius: 6px; padding: 8px 18px; }
QPushButton#allSafe:hover { background: #e53935; }
QPushButton#allSafe:pressed { background: #8e0000; }
"""


class BenchPanel(QWidget):
    """Instruments, outputs, probe site and the bench's safety buttons, from ``worker``'s
    :attr:`~labpcu.gui.worker.BenchWorker.bench_state`."""

    def __init__(self, worker: Any, bench_file: str | None = None, seed: int | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.bench_file = bench_file
        self.seed = seed
        self.state: BenchState = BenchState(False, note="not connected")
        self.is_busy = False
        self.last_error = ""

        # --- status line and buttons
        self.status_label = QLabel()
        f = QFont()
        f.setPointSizeF(11)
        f.setBold(True)
        self.status_label.setFont(f)
        self.bench_label = QLabel(self._bench_text())
        self.bench_label.setStyleSheet("color: #606060")
        self.connect_button = QPushButton("Connect")
        self.connect_button.setToolTip("open the bench (the bench file's instruments, or the simulated bench)")
        self.connect_button.clicked.connect(self.connect_bench)
        self.disconnect_button = QPushButton("Disconnect")
        self.disconnect_button.setToolTip("put the bench in its safe state and close it")
        self.disconnect_button.clicked.connect(self.disconnect_bench)
        self.safe_button = QPushButton("ALL SAFE")
        self.safe_button.setObjectName("allSafe")
        self.safe_button.setStyleSheet(_SAFE_STYLE)
        self.safe_button.setToolTip("abort what runs, every source to 0 V and off, every relay open (always allowed)")
        self.safe_button.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
        self.safe_button.clicked.connect(self.all_safe)

        # --- instruments
        self.instruments = QTableWidget(0, 5)
        self.instruments.setHorizontalHeaderLabels(["", "instrument", "model", "address", "identity"])
        _tidy(self.instruments)
        # --- outputs
        self.outputs = QTableWidget(0, 3)
        self.outputs.setHorizontalHeaderLabels(["output", "state", "level"])
        _tidy(self.outputs)
        # --- site, clock, welded relays, errors
        self.site_label = QLabel()
        self.clock_label = QLabel()
        self.live_label = QLabel()
        self.live_label.setWordWrap(True)
        self.welded_label = QLabel()
        self.welded_label.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00000")

        head = QHBoxLayout()
        words = QVBoxLayout()
        words.addWidget(self.status_label)
        words.addWidget(self.bench_label)
        head.addLayout(words, 1)
        head.addWidget(self.connect_button)
        head.addWidget(self.disconnect_button)
        head.addSpacing(12)
        head.addWidget(self.safe_button)

        inst_box = QGroupBox("Instruments")
        QVBoxLayout(inst_box).addWidget(self.instruments)
        out_box = QGroupBox("Outputs")
        QVBoxLayout(out_box).addWidget(self.outputs)
        probe_box = QGroupBox("Probe and relays")
        grid = QGridLayout(probe_box)
        grid.addWidget(QLabel("probe site"), 0, 0)
        grid.addWidget(self.site_label, 0, 1)
        grid.addWidget(QLabel("bench clock"), 1, 0)
        grid.addWidget(self.clock_label, 1, 1)
        grid.addWidget(QLabel("live outputs"), 2, 0)
        grid.addWidget(self.live_label, 2, 1)
        grid.addWidget(QLabel("welded relays"), 3, 0)
        grid.addWidget(self.welded_label, 3, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(4, 1)

        middle = QHBoxLayout()
        middle.addWidget(out_box, 3)
        middle.addWidget(probe_box, 2)

        box = QVBoxLayout(self)
        box.addLayout(head)
        box.addWidget(self.error_label)
        box.addWidget(inst_box)
        box.addLayout(middle)
        box.addStretch(1)

        worker.bench_state.connect(self.show_state)
        worker.busy.connect(self.set_busy)
        worker.failed.connect(self.show_error)
        self.show_state(self.state)

    # ------------------------------------------------------------------ actions
    @pyqtSlot()
    def connect_bench(self) -> None:
        self.error_label.clear()
        self.last_error = ""
        self.status_label.setText("Connecting…")
        self.connect_button.setEnabled(False)
        self.worker.request_open(self.bench_file, self.seed)

    @pyqtSlot()
    def disconnect_bench(self) -> None:
        self.disconnect_button.setEnabled(False)
        self.worker.request_close()

    @pyqtSlot()
    def all_safe(self) -> None:
        """Always allowed: the worker aborts what runs and makes the bench safe."""
        self.worker.all_safe()

    # ------------------------------------------------------------------ worker signals
    @pyqtSlot(object)
    def show_state(self, state: BenchState) -> None:
        self.state = state
        self.is_busy = bool(state.busy) or (self.is_busy and state.connected)
        self._fill_instruments(state)
        self._fill_outputs(state)
        live = [o.terminal for o in state.outputs if o.on]
        if state.connected:
            self.site_label.setText(f"<b>{state.site or '—'}</b>")
            self.clock_label.setText(_clock(state.clock))
            self.live_label.setText(f"<span style='color:{LIVE.name()}'><b>{len(live)} live: {', '.join(live)}"
                                    "</b></span>" if live else f"<span style='color:{OK.name()}'>none</span>")
        else:
            self.site_label.setText("—")
            self.clock_label.setText("—")
            self.live_label.setText("—")
        if state.welded:
            self.welded_label.setText(f"<span style='color:{LIVE.name()}'><b>{len(state.welded)} welded: "
                                      f"{', '.join(w.replace('-', chr(0x2011)) for w in state.welded)}</b></span> (set aside; never switched)")
        else:
            self.welded_label.setText("none" if state.connected else "—")
        self._update_status()

    @pyqtSlot(bool)
    def set_busy(self, busy: bool) -> None:
        self.is_busy = bool(busy)
        self._update_status()

    @pyqtSlot(str)
    def show_error(self, line: str) -> None:
        self.last_error = line
        self.error_label.setText(f"⚠ {line}")
        self._update_status()

    # ------------------------------------------------------------------ drawing
    def _update_status(self) -> None:
        st = self.state
        if st.connected:
            live = sum(1 for o in st.outputs if o.on)
            text = "● Connected"
            colour = LIVE if live else OK
            if self.is_busy:
                text += " — a queue is running"
            if live:
                text += f" — {live} output{'s' if live != 1 else ''} LIVE"
        else:
            text = "○ Not connected"
            colour = OFF
        self.status_label.setText(text)
        self.status_label.setStyleSheet(f"color: {colour.name()}")
        self.connect_button.setEnabled(not st.connected and not self.is_busy)
        self.disconnect_button.setEnabled(st.connected and not self.is_busy)
        self.safe_button.setEnabled(True)  # never anything else

    def _bench_text(self) -> str:
        where = self.bench_file or "the simulated bench (built-in bench file)"
        return f"bench: {where}" + (f", seed {self.seed}" if self.seed is not None else "")

    def _fill_instruments(self, state: BenchState) -> None:
        t = self.instruments
        t.setRowCount(len(state.instruments))
        for k, inst in enumerate(state.instruments):
            dot = QTableWidgetItem("●" if inst.connected else "○")
            dot.setForeground(OK if inst.connected else OFF)
            dot.setToolTip("connected" if inst.connected else "not connected")
            dot.setTextAlignment(Qt.AlignCenter)
            t.setItem(k, 0, dot)
            for j, text in enumerate((inst.name, inst.model, inst.address, inst.identity or "—"), start=1):
                item = QTableWidgetItem(text)
                if not inst.connected:
                    item.setForeground(OFF)
                t.setItem(k, j, item)
        _fit_columns(t)
        _fit_rows(t, 3)

    def _fill_outputs(self, state: BenchState) -> None:
        t = self.outputs
        t.setRowCount(len(state.outputs))
        bold = QFont()
        bold.setBold(True)
        for k, out in enumerate(state.outputs):
            cells = (QTableWidgetItem(out.terminal), QTableWidgetItem("ON" if out.on else "off"),
                     QTableWidgetItem(out.level))
            for j, item in enumerate(cells):
                if out.on:
                    item.setBackground(LIVE_BG)
                    item.setForeground(LIVE)
                    item.setFont(bold)
                else:
                    item.setForeground(OFF)
                t.setItem(k, j, item)
        _fit_columns(t)
        _fit_rows(t, 6)


def _tidy(table: QTableWidget) -> None:
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.NoSelection)
    table.setFocusPolicy(Qt.NoFocus)
    table.horizontalHeader().setStretchLastSection(True)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
    table.horizontalHeader().setSectionResizeMode(table.columnCount() - 1, QHeaderView.Stretch)
    table.setAlternatingRowColors(False)
    table.setShowGrid(False)
    table.verticalHeader().setDefaultSectionSize(22)
    table.setVerticalScrollBarPolicy(Qt.ScrollBarAsNeeded)


def _fit_columns(table: QTableWidget) -> None:
    """Every column to its contents, the last one stretched to the table's edge."""
    for j in range(table.columnCount() - 1):
        table.resizeColumnToContents(j)
    table.horizontalHeader().setSectionResizeMode(table.columnCount() - 1, QHeaderView.Stretch)


def _fit_rows(table: QTableWidget, at_least: int) -> None:
    """Tall enough for every row (and ``at_least`` rows), so nothing hides behind a scroll bar."""
    rows = max(table.rowCount(), at_least)
    h = table.horizontalHeader().sizeHint().height() + rows * table.verticalHeader().defaultSectionSize()
    table.setMinimumHeight(h + 2 * table.frameWidth() + 2)


def _clock(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h:d}:{m:02d}:{s:04.1f}"
