"""The protocol form: choose a protocol, fill in its parameters, queue it.

The form is generated from the protocol's parameter dataclass
(:meth:`~labpcu.protocols.params.Params.specs`), as the CLI's flags are: one row per
parameter with its unit, limits, default and help (the tooltip). Values are typed as
on the command line, SI prefixes and units included (``20 ms``, ``50u``, ``-500mV``,
lists ``20u,50u``); booleans are check boxes, parameters with choices combo boxes.

Every field is checked as it is typed, with the one-line message the CLI gives
(:class:`~labpcu.protocols.params.ParameterError`), shown in red under it. The whole
request (parameters, devices, bench limits) is then checked as ``labpcu run`` checks
it, with :func:`labpcu.runner.prepare` on an offline view of the bench
(:meth:`labpcu.bench.Bench.offline`): nothing is sent to an instrument. "Queue" is
enabled only when everything is valid and devices are selected (from the wafer map,
:meth:`ProtocolForm.set_devices`); it emits :attr:`ProtocolForm.queued`, a campaign
:class:`~labpcu.campaign.plan.Step` holding only the values the operator changed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QFontMetrics
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                             QPushButton, QScrollArea, QVBoxLayout, QWidget)

from labpcu.campaign.plan import Step
from labpcu.campaign.writer import loaded_value
from labpcu.protocols import registry
from labpcu.protocols.params import ParameterError, ParamSpec
from labpcu.units import format_quantity

ERROR_COLOR = "#c62828"
HINT_COLOR = "#666666"
OK_COLOR = "#2e7d32"
_ERROR_STYLE = f"QLineEdit {{ border: 1px solid {ERROR_COLOR}; border-radius: 2px; padding: 1px; }}"


@dataclass
class FieldState:
    """One parameter's field as last checked: its parsed value, or its error."""

    value: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class ParamField:
    """The widgets of one parameter row: the editor, its unit, its limits and default,
    and its error line."""

    def __init__(self, spec: ParamSpec, params_cls: type, parent: QWidget) -> None:
        self.spec = spec
        self.params_cls = params_cls
        self.state = FieldState(spec.default)
        self.default_text = "" if spec.default is None else spec.format(spec.default)
        tip = spec.describe()
        self.label = QLabel(spec.name, parent)
        self.label.setToolTip(tip)
        bold = self.label.font()
        bold.setBold(True)  # room for the bold a changed value gets
        self.label.setMinimumWidth(QFontMetrics(bold).horizontalAdvance(spec.name) + 4)
        self.editor: QWidget
        if spec.kind is bool and not spec.is_list:
            box = QCheckBox(parent)
            box.setChecked(bool(spec.default))
            self.editor = box
        elif spec.choices and not spec.is_list:
            combo = QComboBox(parent)
            for choice in spec.choices:
                combo.addItem(str(choice), choice)
            if spec.default in spec.choices:
                combo.setCurrentIndex(list(spec.choices).index(spec.default))
            self.editor = combo
        else:
            edit = QLineEdit(self.default_text, parent)
            edit.setPlaceholderText("none" if spec.optional else ("empty list" if spec.is_list else ""))
            edit.setClearButtonEnabled(False)
            self.editor = edit
        self.editor.setToolTip(tip)
        self.editor.setObjectName(f"param_{spec.name}")
        self.unit = QLabel(spec.unit, parent)
        self.hint = QLabel(_hint(spec), parent)
        self.hint.setStyleSheet(f"color: {HINT_COLOR};")
        self.hint.setToolTip(tip)
        self.error = QLabel("", parent)
        self.error.setStyleSheet(f"color: {ERROR_COLOR};")
        self.error.setWordWrap(True)
        self.error.setVisible(False)
        self.error.setObjectName(f"error_{spec.name}")

    # -- the editor's content -------------------------------------------------------
    def text(self) -> str:
        if isinstance(self.editor, QLineEdit):
            return self.editor.text()
        if isinstance(self.editor, QCheckBox):
            return "true" if self.editor.isChecked() else "false"
        return self.editor.currentText()

    def set_text(self, text: str) -> None:
        """Type ``text`` (a check box takes true/false, a combo box one of its choices)."""
        if isinstance(self.editor, QLineEdit):
            self.editor.setText(text)
        elif isinstance(self.editor, QCheckBox):
            self.editor.setChecked(text.strip().lower() in ("1", "true", "yes", "on"))
        else:
            index = self.editor.findText(text.strip())
            if index < 0:
                raise ValueError(f"{self.spec.name}: {text!r} is not one of {', '.join(map(str, self.spec.choices or ()))}")
            self.editor.setCurrentIndex(index)

    def reset(self) -> None:
        if isinstance(self.editor, QLineEdit):
            self.editor.setText(self.default_text)
        elif isinstance(self.editor, QCheckBox):
            self.editor.setChecked(bool(self.spec.default))
        elif self.spec.default in (self.spec.choices or ()):
            self.editor.setCurrentIndex(list(self.spec.choices or ()).index(self.spec.default))

    def connect(self, slot: Any) -> None:
        if isinstance(self.editor, QLineEdit):
            self.editor.textChanged.connect(slot)
        elif isinstance(self.editor, QCheckBox):
            self.editor.toggled.connect(slot)
        else:
            self.editor.currentIndexChanged.connect(slot)

    # -- checking ------------------------------------------------------------------
    def check(self) -> FieldState:
        """Parse and check this field alone, as the CLI checks its flag."""
        spec = self.spec
        try:
            if isinstance(self.editor, QCheckBox):
                value: Any = self.editor.isChecked()
            elif isinstance(self.editor, QComboBox):
                value = self.editor.currentData()
            elif self.editor.text().strip() == self.default_text.strip():
                value = spec.default  # exactly: the shown text of a default may be rounded
            else:
                value = spec.parse(self.editor.text())
            try:  # types, choices and limits, with the dataclass's own messages
                self.params_cls.from_mapping({spec.name: value})
            except ParameterError as exc:
                if _names(str(exc), spec.name):
                    raise
                # a rule across fields: the request's message says it
            self.state = FieldState(value)
        except ParameterError as exc:
            self.state = FieldState(None, str(exc).splitlines()[0])
        self.show_state()
        return self.state

    def show_state(self, flagged: bool = False) -> None:
        self.error.setText(self.state.error)
        self.error.setVisible(bool(self.state.error))
        if isinstance(self.editor, QLineEdit):
            self.editor.setStyleSheet(_ERROR_STYLE if (self.state.error or flagged) else "")
        font = self.label.font()
        if font.bold() != self.changed:  # a changed value stands out: it is what the step will hold
            font.setBold(self.changed)
            self.label.setFont(font)

    @property
    def changed(self) -> bool:
        return self.state.ok and not _same(self.state.value, self.spec.default)


class ProtocolForm(QWidget):
    """Choose a protocol, fill in its parameters, queue it as a campaign step."""

    #: a :class:`~labpcu.campaign.plan.Step`: name (unique in this form), protocol,
    #: devices, and params with the changed values only (parsed)
    queued = pyqtSignal(object)
    #: True when the request is valid and could be queued
    validity_changed = pyqtSignal(bool)

    def __init__(self, bench_offline: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if bench_offline is None:
            from labpcu.bench import Bench

            bench_offline = Bench.offline()
        self.bench = bench_offline
        self.devices: tuple[str, ...] = ()
        self.fields: dict[str, ParamField] = {}
        self.protocol_name = ""
        self._count = 0
        self._valid = False
        self._message = ""
        self._building = False

        self.chooser = QComboBox(self)
        self.chooser.setObjectName("protocol_chooser")
        for name, cls in registry.protocols().items():
            self.chooser.addItem(f"{name} — {cls.title}", name)
            self.chooser.setItemData(self.chooser.count() - 1, cls.title, Qt.ToolTipRole)
        self.chooser.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.chooser.setMinimumContentsLength(28)
        self.about = QLabel(self)
        self.about.setWordWrap(True)
        self.about.setStyleSheet(f"color: {HINT_COLOR};")

        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.StyledPanel)
        self._new_rows()

        self.device_label = QLabel(self)
        self.device_label.setWordWrap(True)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.message.setObjectName("request_message")
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.defaults_button = QPushButton("Defaults", self)
        self.defaults_button.setToolTip("Put every parameter back to its default")
        self.queue_button = QPushButton("Queue", self)
        self.queue_button.setObjectName("queue_button")
        self.queue_button.setToolTip("Add this protocol on the selected devices to the queue")
        self.queue_button.setDefault(True)

        top = QHBoxLayout()
        top.addWidget(QLabel("Protocol", self))
        top.addWidget(self.chooser, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.defaults_button)
        buttons.addStretch(1)
        buttons.addWidget(self.queue_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.about)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.device_label)
        layout.addWidget(self.message)
        layout.addLayout(buttons)

        self.chooser.currentIndexChanged.connect(lambda _i: self.set_protocol(self.chooser.currentData()))
        self.defaults_button.clicked.connect(self.reset)
        self.queue_button.clicked.connect(self.queue)
        first = "iv_sweep" if self.chooser.findData("iv_sweep") >= 0 else self.chooser.currentData()
        self.set_protocol(first or "")

    # ------------------------------------------------------------------ public API
    def set_protocol(self, name: str) -> None:
        """Show ``name``'s form (one row per parameter, defaults filled in)."""
        if name == self.protocol_name and self.fields:
            return
        cls = registry.get(name)
        self._building = True
        try:
            index = self.chooser.findData(name)
            if index != self.chooser.currentIndex():
                self.chooser.setCurrentIndex(index)
            self.protocol_name = name
            self._new_rows()
            row = 0
            for spec in cls.Params.specs():
                f = ParamField(spec, cls.Params, self.rows)
                self.fields[spec.name] = f
                self.grid.addWidget(f.label, row, 0, Qt.AlignRight | Qt.AlignVCenter)
                self.grid.addWidget(f.editor, row, 1)
                self.grid.addWidget(f.unit, row, 2)
                self.grid.addWidget(f.hint, row, 3)
                self.grid.addWidget(f.error, row + 1, 1, 1, 3)
                f.connect(self._edited)
                row += 2
            self.grid.setColumnStretch(1, 2)
            self.grid.setColumnStretch(3, 3)
            self.grid.setRowStretch(row, 1)
            needs = f"Needs {cls.min_devices} devices per run. " if cls.min_devices > 1 else ""
            self.about.setText(f"{needs}Values take SI prefixes and units (20 ms, 50u, -500mV; lists 20u,50u). "
                               f"Hover a name for its help.")
        finally:
            self._building = False
        self.validate()

    def set_devices(self, ids: Sequence[str]) -> None:
        """The devices to queue the protocol on (the wafer map's selection)."""
        self.devices = tuple(dict.fromkeys(str(d) for d in ids))
        self.validate()

    def field(self, name: str) -> ParamField:
        return self.fields[name]

    def set_text(self, name: str, text: str) -> None:
        """Type ``text`` into parameter ``name``'s field (as an operator would)."""
        self.fields[name].set_text(text)

    def reset(self) -> None:
        """Every parameter back to its default."""
        self._building = True
        try:
            for f in self.fields.values():
                f.reset()
        finally:
            self._building = False
        self.validate()

    def values(self) -> dict[str, Any]:
        """The parsed values the operator changed from the defaults (valid fields only)."""
        return {name: f.state.value for name, f in self.fields.items() if f.changed}

    def is_valid(self) -> bool:
        return self._valid

    def message_text(self) -> str:
        """The request's message: its error, or what is missing, or the estimate."""
        return self._message

    def step(self) -> Step | None:
        """The step "Queue" would emit, or None while anything is invalid."""
        if not self._valid:
            return None
        params = {k: loaded_value(v) for k, v in self.values().items()}
        return Step(name=f"{self.protocol_name}-{self._count + 1}", protocol=self.protocol_name,
                    devices=self.devices, params=params)

    def queue(self) -> Step | None:
        """Emit :attr:`queued` with the step (nothing while invalid)."""
        self.validate()
        step = self.step()
        if step is None:
            return None
        self._count += 1
        self.queued.emit(step)
        return step

    # ------------------------------------------------------------------ checking
    def _edited(self, *_args: Any) -> None:
        if not self._building:
            self.validate()

    def validate(self) -> bool:
        """Check every field, then the whole request on the offline bench."""
        from labpcu.campaign.validate import expand_devices
        from labpcu.instruments.errors import LimitError
        from labpcu.runner import prepare

        if not self.fields:
            return self._set_result(False, "no protocol chosen", error=True)
        bad = [f for f in self.fields.values() if not f.check().ok]
        self._show_devices()
        if bad:
            return self._set_result(False, f"{len(bad)} parameter{'s' if len(bad) > 1 else ''} to correct "
                                           f"({', '.join(f.spec.name for f in bad)})", error=True)
        cls = registry.get(self.protocol_name)
        values = self.values()
        try:  # rules across fields first: they need no device
            cls.Params.from_mapping(values)
        except ParameterError as exc:
            return self._set_result(False, f"{self.protocol_name}: {exc}".splitlines()[0], error=True)
        if not self.devices:
            return self._set_result(False, "Select devices on the wafer map to queue this protocol.")
        devices, unknown = expand_devices(self.devices, self.bench)
        if unknown:
            return self._set_result(False, f"{self.protocol_name}: no device or site {', '.join(unknown[:5])} "
                                           f"on the wafer", error=True)
        try:
            proto, params, devs = prepare(self.protocol_name, values, devices, self.bench)
        except (ParameterError, LimitError) as exc:
            return self._set_result(False, str(exc).splitlines()[0], error=True)
        except Exception as exc:  # noqa: BLE001 - a bug in a protocol's check must not close the window
            return self._set_result(False, f"{self.protocol_name}: cannot check the request: "
                                           f"{type(exc).__name__}: {exc}".splitlines()[0], error=True)
        try:
            estimate = proto.estimate(params, devs)
        except Exception:  # noqa: BLE001 - an estimate is only a hint
            estimate = None
        changed = len(values)
        what = f"{changed} value{'s' if changed != 1 else ''} changed from the defaults" if changed else "defaults"
        eta = f", about {format_duration(estimate)} of bench time" if estimate else ""
        return self._set_result(True, f"Ready: {self.protocol_name} on {len(devs)} device"
                                      f"{'s' if len(devs) != 1 else ''} ({what}{eta}).")

    def _set_result(self, valid: bool, message: str, error: bool = False) -> bool:
        self._message = message
        self.message.setText(message)
        color = ERROR_COLOR if error else (OK_COLOR if valid else HINT_COLOR)
        self.message.setStyleSheet(f"color: {color};")
        flagged = {name for name, f in self.fields.items() if error and f.changed and _names(message, name)}
        if error and not flagged:  # a level the bench refuses ("levels = 30 V exceeds ..."): the changed
            flagged = {name for name, f in self.fields.items()  # values in that unit are the suspects
                       if f.changed and f.spec.unit and re.search(rf"\d\s*[fpnuµmkMG]?{re.escape(f.spec.unit)}\b",
                                                                  message)}
        for name, f in self.fields.items():
            f.show_state(flagged=name in flagged)
        self.queue_button.setEnabled(valid)
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)
        return valid

    def _show_devices(self) -> None:
        if not self.devices:
            self.device_label.setText("<b>Devices:</b> none selected")
            return
        shown = ", ".join(self.devices[:12]) + (f", … ({len(self.devices)})" if len(self.devices) > 12 else "")
        self.device_label.setText(f"<b>Devices:</b> {shown}")

    def _new_rows(self) -> None:
        """A fresh grid of rows (the scroll area deletes the old one at once)."""
        self.fields = {}
        self.rows = QWidget()
        self.rows.setObjectName("parameter_rows")
        self.grid = QGridLayout(self.rows)
        self.grid.setContentsMargins(6, 6, 6, 6)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(2)
        self.scroll.setWidget(self.rows)


# ---------------------------------------------------------------------- helpers
def format_duration(seconds: float | None) -> str:
    """``75`` → ``1 min 15 s``; None → ``?``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _hint(spec: ParamSpec) -> str:
    bits = []
    if spec.limits:
        lo, hi = spec.limits
        bits.append(f"{_num(lo, spec.unit) if lo is not None else '−∞'} … {_num(hi, spec.unit) if hi is not None else '∞'}")
    if spec.kind is bool and not spec.is_list:
        bits.append(f"default {'on' if spec.default else 'off'}")
    else:
        bits.append(f"default {spec.format(spec.default) if spec.default not in (None, ()) else 'none'}")
    if spec.is_list:
        bits.append("list")
    return " · ".join(bits)


def _num(value: float, unit: str) -> str:
    return format_quantity(float(value), unit) if unit else f"{value:g}"


def _names(message: str, name: str) -> bool:
    """Does a one-line message speak of parameter ``name``?"""
    return f"'{name}'" in message or re.search(rf"(^|[\s(]){re.escape(name)}( =|\s|$)", message) is not None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)
