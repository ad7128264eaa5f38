"""The log panel: labpcu's log records, from any thread, shown on the GUI thread.

::

    panel = LogPanel()
    panel.attach("labpcu")      # a logging.Handler on that logger
    ...
    panel.detach()

The handler never touches a widget: it formats the record, queues it, and (once per
batch) emits a Qt signal; the queued connection delivers it on the GUI thread, which
appends every waiting record at once. A burst of thousands of records from the worker
costs one repaint, not thousands. Lines are coloured by level and capped at
``max_lines`` (the oldest go first).
"""

from __future__ import annotations

import collections
import html
import logging
import threading

from PyQt5.QtCore import QObject, pyqtSignal
from PyQt5.QtGui import QFont
from PyQt5.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

LEVEL_COLOURS = {logging.DEBUG: "#777777", logging.INFO: "#202020", logging.WARNING: "#b26a00",
                 logging.ERROR: "#c62828", logging.CRITICAL: "#ffffff"}
LEVELS = (("debug", logging.DEBUG), ("info", logging.INFO), ("warning", logging.WARNING), ("error", logging.ERROR))
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"


class _Relay(QObject):
    """Lives on the GUI thread; its signal, emitted from any thread, arrives there."""

    wake = pyqtSignal()


class QtLogHandler(logging.Handler):
    """A logging handler that hands records to the GUI thread (thread-safe)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        self.relay = _Relay()
        self.pending: collections.deque[tuple[int, str]] = collections.deque()
        self._signalled = False
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return
        with self._guard:
            self.pending.append((record.levelno, text))
            if self._signalled:
                return
            self._signalled = True
        try:
            self.relay.wake.emit()
        except RuntimeError:  # the panel is gone
            pass

    def take(self) -> list[tuple[int, str]]:
        """Every waiting record (GUI thread)."""
        with self._guard:
            self._signalled = False
            items = list(self.pending)
            self.pending.clear()
        return items


class LogPanel(QWidget):
    """Log records as coloured lines, newest at the bottom."""

    def __init__(self, parent: QWidget | None = None, *, max_lines: int = 5000, level: int = logging.INFO) -> None:
        super().__init__(parent)
        self.max_lines = max_lines
        self.handler = QtLogHandler(level)
        self.handler.relay.wake.connect(self._drain)
        self._logger: logging.Logger | None = None
        self._old_level: int | None = None
        self.records = 0

        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(max_lines)
        self.text.setLineWrapMode(QPlainTextEdit.NoWrap)
        font = QFont("monospace")
        font.setStyleHint(QFont.TypeWriter)
        font.setPointSize(9)
        self.text.setFont(font)
        self.level = QComboBox()
        for name, value in LEVELS:
            self.level.addItem(name, value)
        self.level.setCurrentIndex([v for _, v in LEVELS].index(level) if level in dict(LEVELS).values() else 1)
        self.level.currentIndexChanged.connect(lambda _: self.handler.setLevel(self.level.currentData()))
        self.follow = QCheckBox("follow")
        self.follow.setChecked(True)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Log"))
        bar.addStretch(1)
        bar.addWidget(QLabel("level"))
        bar.addWidget(self.level)
        bar.addWidget(self.follow)
        bar.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(bar)
        lay.addWidget(self.text, 1)
        self.destroyed.connect(lambda *_: self._remove_handler())

    # -------------------------------------------------- attaching
    def attach(self, logger_name: str = "labpcu") -> QtLogHandler:
        """Show the records of ``logger_name`` (and its children) from now on."""
        self.detach()
        logger = logging.getLogger(logger_name)
        if logger.getEffectiveLevel() > self.handler.level and self.handler.level:
            self._old_level = logger.level
            logger.setLevel(self.handler.level)
        logger.addHandler(self.handler)
        self._logger = logger
        return self.handler

    def detach(self) -> None:
        self._remove_handler()

    def _remove_handler(self) -> None:
        logger, self._logger = self._logger, None
        if logger is not None:
            logger.removeHandler(self.handler)
            if self._old_level is not None:
                logger.setLevel(self._old_level)
                self._old_level = None

    # -------------------------------------------------- showing
    def _drain(self) -> None:
        items = self.handler.take()
        if not items:
            return
        items = items[-self.max_lines:]
        self.records += len(items)
        lines = []
        for levelno, text in items:
            colour = LEVEL_COLOURS.get(levelno, LEVEL_COLOURS[logging.ERROR] if levelno > logging.ERROR else "#202020")
            style = f"color:{colour};white-space:pre"
            if levelno >= logging.CRITICAL:
                style += ";background-color:#c62828;font-weight:bold"
            elif levelno >= logging.ERROR:
                style += ";font-weight:bold"
            lines.append(f"<span style='{style}'>{html.escape(text).replace(chr(10), '<br>')}</span>")
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.text.setUpdatesEnabled(False)
        for line in lines:  # one block per record: the block cap counts records
            self.text.appendHtml(line)
        self.text.setUpdatesEnabled(True)
        if self.follow.isChecked() or at_end:
            bar.setValue(bar.maximum())

    def clear(self) -> None:
        self.text.clear()

    def lines(self) -> list[str]:
        """The text shown, one entry per line."""
        return self.text.toPlainText().splitlines()
