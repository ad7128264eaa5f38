"""``labpcu gui``: the bench operator's window.

The panels (one module each) are wired here and nowhere else:

* the wafer map's selection feeds the protocol form; the form queues steps;
* the queue runs as a campaign in the worker thread (:mod:`labpcu.gui.worker`), whose
  events feed the live plot, the status bar, the data browser and the wafer map;
* a manual prober's request appears as a dialog; the operator's answer goes back to
  the worker;
* "All safe" is always enabled; closing the window during a run asks, then aborts to
  the safe state and waits for the bench to be closed.

``labpcu gui --screenshot FILE.png`` renders the window off screen with the store
loaded, writes the picture and exits (the README's pictures and CI use it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_STORE = "labpcu.h5"


def _qt() -> Any:
    """Import Qt only when the GUI is used (the CLI and the tests of other modules
    must not need a display)."""
    from PyQt5 import QtCore, QtWidgets

    return QtCore, QtWidgets


class MainWindow:
    """Builds the window; ``.window`` is the QMainWindow (kept as a plain class so
    that importing this module never needs Qt)."""

    def __init__(self, store: str | Path, bench_file: str | None = None, seed: int | None = None,
                 connect: bool = True) -> None:
        QtCore, QtWidgets = _qt()
        from labpcu.bench import Bench
        from labpcu.gui.bench_panel import BenchPanel
        from labpcu.gui.codebook_viewer import CodebookViewer
        from labpcu.gui.data_browser import DataBrowser
        from labpcu.gui.live_plot import LivePlot
        from labpcu.gui.log_panel import LogPanel
        from labpcu.gui.protocol_form import ProtocolForm
        from labpcu.gui.queue_panel import QueuePanel
        from labpcu.gui.wafer_map import WaferMap
        from labpcu.gui.worker import start_worker

        self.store = Path(store)
        self.bench_file = bench_file
        self.seed = seed
        self.offline = Bench.offline(bench_file, seed=seed)
        self.worker, self.thread = start_worker(self.store)
        self.busy = False

        win = self.window = _Window(self)
        win.setWindowTitle(f"labpcu — {self.offline.config.name} — {self.store}")
        win.resize(1600, 1000)

        self.bench_panel = BenchPanel(self.worker, bench_file, seed)
        self.wafer_map = WaferMap(self.offline.layout)
        self.form = ProtocolForm(self.offline)
        self.queue = QueuePanel(self.worker, self.store)
        self.live_plot = LivePlot()
        self.browser = DataBrowser(self.store)
        self.codebooks = CodebookViewer(self.store)
        self.log_panel = LogPanel()
        self.log_panel.attach("labpcu")

        left = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        left.addWidget(self.bench_panel)
        left.addWidget(self.wafer_map)
        left.setStretchFactor(1, 3)
        left.setSizes([400, 600])  # the wafer map gets the room; the bench panel scrolls its tables
        run_tab = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        run_tab.addWidget(self.form)
        run_tab.addWidget(self.queue)
        run_tab.setStretchFactor(0, 3)
        run_tab.setStretchFactor(1, 2)
        # the form's limits column stays readable: sizes set once the window has its size
        QtCore.QTimer.singleShot(0, lambda: run_tab.setSizes([3 * run_tab.width() // 5, 2 * run_tab.width() // 5]))
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(run_tab, "Run")
        self.tabs.addTab(self.live_plot, "Live plot")
        self.tabs.addTab(self.browser, "Data")
        self.tabs.addTab(self.codebooks, "Codebooks")
        right = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        right.addWidget(self.tabs)
        right.addWidget(self.log_panel)
        right.setStretchFactor(0, 4)
        right.setStretchFactor(1, 1)
        main = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(0, 2)
        main.setStretchFactor(1, 3)
        main.setSizes([640, 960])
        win.setCentralWidget(main)

        self.clock_label = QtWidgets.QLabel("bench clock —")
        self.state_label = QtWidgets.QLabel("idle")
        win.statusBar().addWidget(self.state_label, 1)
        win.statusBar().addPermanentWidget(QtWidgets.QLabel(str(self.store)))
        win.statusBar().addPermanentWidget(self.clock_label)

        self.wafer_map.selection_changed.connect(self.form.set_devices)
        self.form.queued.connect(self.queue.add_step)
        self.worker.run_event.connect(self.live_plot.on_event)
        self.worker.run_event.connect(self._on_event)
        self.worker.bench_state.connect(self._on_bench_state)
        self.worker.busy.connect(self._on_busy)
        self.worker.failed.connect(self._on_failed)
        self.worker.prober_request.connect(self._on_prober_request)
        self.worker.queue_finished.connect(self._on_queue_finished)
        if self.store.exists():
            self.wafer_map.set_store(self.store)
            self.wafer_map.refresh()
        if connect:
            self.worker.request_open(bench_file, seed)

    # ----------------------------------------------------------------- events
    def _on_event(self, event: Any) -> None:
        name = type(event).__name__
        if name == "RunStarted":
            self.state_label.setText(f"running {event.run_id} ({event.protocol} on {', '.join(event.devices[:4])})")
            self.tabs.setCurrentWidget(self.live_plot)
        elif name == "StatusChanged" and event.status != "running":
            self.state_label.setText(f"{event.run_id} {event.status}" + (f": {event.reason}" if event.reason else ""))
        elif name == "TaskFinished":
            self.browser.refresh()
            self.wafer_map.set_store(self.store)
            self.wafer_map.refresh()
        elif name == "CampaignState" and event.state == "paused":
            self.state_label.setText("paused")

    def _on_bench_state(self, state: Any) -> None:
        self.clock_label.setText(f"bench clock {state.clock:,.1f} s" if state.connected else "not connected")

    def _on_busy(self, busy: bool) -> None:
        self.busy = busy
        if not busy:
            self.state_label.setText(self.state_label.text().replace("running", "ran"))

    def _on_failed(self, message: str) -> None:
        log.error("%s", message)
        self.state_label.setText(f"error: {message}")
        if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
            _, QtWidgets = _qt()
            QtWidgets.QMessageBox.warning(self.window, "labpcu", message)

    def _on_queue_finished(self, outcome: Any) -> None:
        self.state_label.setText(f"queue {outcome.state}" + (f": {outcome.reason}" if outcome.reason else ""))
        self.browser.refresh()
        self.codebooks.refresh()

    def _on_prober_request(self, request: Any) -> None:
        """A manual prober asks the operator to move the probes: a dialog."""
        from labpcu.gui.prober_dialog import ask

        self.worker.answer_prober(ask(self.window, request))

    # ------------------------------------------------------------------ close
    def close_request(self) -> bool:
        """Closing during a run asks first; then the run aborts to the safe state and
        the window waits for the bench to be closed. True: the window may close."""
        _, QtWidgets = _qt()
        if self.busy:
            answer = QtWidgets.QMessageBox.question(
                self.window, "labpcu", "A run is going on. Abort it (the bench goes to its safe state) and quit?")
            if answer != QtWidgets.QMessageBox.Yes:
                return False
        self.shutdown()
        return True

    def shutdown(self) -> None:
        from labpcu.gui.worker import stop_worker

        self.log_panel.detach()
        stop_worker(self.worker, self.thread)


def _window_class() -> Any:
    _, QtWidgets = _qt()

    class Window(QtWidgets.QMainWindow):
        def __init__(self, owner: MainWindow) -> None:
            super().__init__()
            self.owner = owner

        def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
            if self.owner.close_request():
                event.accept()
            else:
                event.ignore()

    return Window


def _Window(owner: MainWindow) -> Any:  # noqa: N802 - a factory for the Qt class
    return _window_class()(owner)


# ------------------------------------------------------------------- command
def add_parser(sub: Any, seed_type: Any) -> None:
    gui = sub.add_parser("gui", help="the bench operator's window (the simulated bench by default)")
    gui.add_argument("--bench", default=None, help="bench file (default: the simulated bench)")
    gui.add_argument("--store", default=None, help=f"run store (default {DEFAULT_STORE} or $LABPCU_FILE)")
    gui.add_argument("--seed", type=seed_type, default=None, help="simulated wafer seed (default: the bench file's)")
    gui.add_argument("--screenshot", default=None, metavar="PNG",
                     help="render the window off screen with the store loaded, write this picture, exit")


def cmd_gui(args: argparse.Namespace) -> int:
    """Run the window (or render it to a picture with ``--screenshot``)."""
    from labpcu.cli_runs import default_file

    store = args.store or default_file()
    if args.screenshot:
        return screenshot(store, args.screenshot, args.bench, args.seed)
    QtCore, QtWidgets = _qt()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    window = MainWindow(store, args.bench, args.seed)
    window.window.show()
    return int(app.exec_())


def screenshot(store: str | Path, png: str | Path, bench_file: str | None = None, seed: int | None = None,
               settle_ms: int = 1500) -> int:
    """Render the window off screen with ``store`` loaded and the bench connected,
    write ``png``, close everything (the bench ends in its safe state)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtCore, QtWidgets = _qt()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["labpcu"])
    window = MainWindow(store, bench_file, seed)
    window.window.show()
    loop = QtCore.QEventLoop()
    window.worker.bench_state.connect(lambda state: state.connected and loop.quit())
    QtCore.QTimer.singleShot(max(settle_ms, 5000), loop.quit)  # connected, or give up waiting
    loop.exec_()
    end = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(300, end.quit)  # let the panels draw
    end.exec_()
    ok = window.window.grab().save(str(png))
    window.shutdown()
    window.window.hide()
    del app
    return 0 if ok else 1
