"""The queue: what the bench will measure next. The queue **is a campaign** (DESIGN.md,
"Campaigns"): a list of :class:`~labpcu.campaign.plan.Step` that "Run" hands to the
worker as a :class:`~labpcu.campaign.plan.Campaign`, that "Save…" writes as a
campaign file (``labpcu campaign validate|run|resume FILE`` take it as it is), and
that "Load…" and "Resume interrupted…" read back.

Steps come from the protocol form (:meth:`QueuePanel.add_step`), and can be removed,
moved up and down, or dragged into another order. Before anything is sent the queue is
checked as ``labpcu campaign validate`` checks a file (its shape, every task's
parameters, devices and levels on the offline bench); every problem is listed.

While it runs, each task (one run: a step on a device) shows its state from the
worker's events (queued, running, completed, failed, aborted, interrupted) and each step
its estimated bench time (:meth:`~labpcu.protocols.base.Protocol.estimate`). Pause
waits for the running task to end; "Abort current run" stops the running task within
one protocol step, in the safe state, and ends the queue. The buttons follow the
worker's ``busy`` signal. File dialogs only pick a path: :meth:`QueuePanel.save`,
:meth:`QueuePanel.load` and :meth:`QueuePanel.resume_interrupted` do the work.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QFont
from PyQt5.QtWidgets import (QAbstractItemView, QFileDialog, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                             QLineEdit, QPlainTextEdit, QPushButton, QTreeWidget, QTreeWidgetItem,
                             QVBoxLayout, QWidget)

from labpcu.campaign.loader import CampaignError
from labpcu.campaign.plan import Campaign, Selection, Step, Task, tasks_of
from labpcu.campaign.writer import campaign_to_toml
from labpcu.gui.protocol_form import format_duration
from labpcu.protocols import registry
from labpcu.protocols.params import ParameterError

STATE_COLORS = {"queued": "#555555", "running": "#1565c0", "completed": "#2e7d32", "failed": "#c62828",
                "aborted": "#ef6c00", "interrupted": "#ef6c00", "skipped": "#2e7d32", "stopped": "#c62828",
                "paused": "#6a1b9a", "done earlier": "#2e7d32"}
COLUMNS = ("Step", "Protocol", "Devices", "Parameters", "Estimate", "State")
_ROLE = Qt.UserRole


class _QueueTree(QTreeWidget):
    """The queue's steps (top level) and their tasks (children); steps can be dragged
    into another order, never into one another."""

    reordered = pyqtSignal()

    def dropEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().dropEvent(event)
        self.reordered.emit()


class QueuePanel(QWidget):
    """The queue of steps, run as a campaign by the worker."""

    #: the Campaign just handed to the worker (Run or Resume interrupted)
    run_started = pyqtSignal(object)
    #: the queue's steps changed (added, removed, moved, loaded)
    changed = pyqtSignal()

    def __init__(self, worker: Any, store_path: str | Path, parent: QWidget | None = None, *,
                 bench_offline: Any = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.store_path = Path(store_path)
        self._bench = bench_offline
        self.steps: list[Step] = []
        self.busy = False
        self.paused = False
        self.running: Campaign | None = None
        self.task_states: dict[str, str] = {}  # task key -> state, for the campaign shown
        self.problems: list[str] = []
        self.outcome: Any = None
        self._sample: Mapping[str, Any] = {}
        self._seed: int | None = None
        self._store: str | None = None  # the store a loaded file names (relative to it)
        self._source = ""
        self._auto_name = True
        self._estimates: dict[str, tuple[float | None, int]] = {}

        self.name_edit = QLineEdit(_new_name(), self)
        self.name_edit.setObjectName("campaign_name")
        self.name_edit.setToolTip("The campaign's name: its runs carry it, and a resumed campaign is found by it")
        self.name_edit.textEdited.connect(self._name_edited)
        self.store_label = QLabel(self)
        self.store_label.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.tree = _QueueTree(self)
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QAbstractItemView.SingleSelection)
        self.tree.setDragDropMode(QAbstractItemView.InternalMove)
        self.tree.setDefaultDropAction(Qt.MoveAction)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setStretchLastSection(False)
        for col, mode in enumerate((QHeaderView.ResizeToContents, QHeaderView.ResizeToContents,
                                    QHeaderView.Interactive, QHeaderView.Stretch,
                                    QHeaderView.ResizeToContents, QHeaderView.ResizeToContents)):
            header.setSectionResizeMode(col, mode)
        self.tree.setColumnWidth(2, 150)
        self.tree.reordered.connect(self._sync_order)
        self.tree.currentItemChanged.connect(lambda *_: self._update_buttons())

        def button(text: str, tip: str, slot: Any, name: str) -> QPushButton:
            b = QPushButton(text, self)
            b.setToolTip(tip)
            b.setObjectName(name)
            b.clicked.connect(slot)
            return b

        self.up_button = button("Up", "Move the selected step earlier", lambda: self.move_selected(-1), "up")
        self.down_button = button("Down", "Move the selected step later", lambda: self.move_selected(1), "down")
        self.remove_button = button("Remove", "Remove the selected step", self.remove_selected, "remove")
        self.save_button = button("Save…", "Write the queue as a campaign file (labpcu campaign run FILE runs it)",
                                  self._save_dialog, "save")
        self.load_button = button("Load…", "Replace the queue with a campaign file", self._load_dialog, "load")
        self.run_button = button("Run", "Run the queue as a campaign on the bench", self.run, "run")
        self.pause_button = button("Pause", "Stop before the next task (the running task finishes)",
                                   self.pause, "pause")
        self.resume_button = button("Resume", "Go on after a pause", self.resume, "resume")
        self.abort_button = button("Abort current run", "Stop the running task within one protocol step, in the "
                                   "safe state, and end the queue", self.abort, "abort")
        self.abort_button.setStyleSheet("QPushButton:enabled { color: #b71c1c; font-weight: bold; }")
        self.resume_file_button = button("Resume interrupted…", "Go on with a campaign file whose run was "
                                         "interrupted: its finished tasks are not measured again",
                                         self._resume_dialog, "resume_interrupted")

        self.summary = QLabel(self)
        self.summary.setObjectName("summary")
        self.status = QLabel(self)
        self.status.setObjectName("status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.problem_box = QPlainTextEdit(self)
        self.problem_box.setObjectName("problems")
        self.problem_box.setReadOnly(True)
        self.problem_box.setMaximumHeight(150)
        self.problem_box.setStyleSheet("QPlainTextEdit { color: #c62828; }")
        self.problem_box.setVisible(False)

        head = QGridLayout()
        head.addWidget(QLabel("Campaign", self), 0, 0)
        head.addWidget(self.name_edit, 0, 1)
        head.addWidget(QLabel("Store", self), 1, 0)
        head.addWidget(self.store_label, 1, 1)
        edit_row = QHBoxLayout()
        for b in (self.up_button, self.down_button, self.remove_button):
            edit_row.addWidget(b)
        edit_row.addStretch(1)
        for b in (self.load_button, self.save_button):
            edit_row.addWidget(b)
        run_row = QHBoxLayout()
        for b in (self.run_button, self.pause_button, self.resume_button, self.abort_button):
            run_row.addWidget(b)
        run_row.addStretch(1)
        run_row.addWidget(self.resume_file_button)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.tree, 1)
        layout.addLayout(edit_row)
        layout.addWidget(self.summary)
        layout.addLayout(run_row)
        layout.addWidget(self.status)
        layout.addWidget(self.problem_box)

        worker.busy.connect(self.set_busy)
        _event_signal(worker).connect(self.on_event)
        worker.queue_finished.connect(self.on_finished)
        worker.failed.connect(self.on_failed)
        self._refresh()

    # ------------------------------------------------------------------ the queue
    @property
    def bench(self) -> Any:
        """The offline bench the queue is checked on (made when first needed)."""
        if self._bench is None:
            from labpcu.bench import Bench

            self._bench = Bench.offline()
        return self._bench

    def add_step(self, step: Step) -> Step:
        """Append ``step`` (renamed ``name-2``… if its name is taken); returns it as queued."""
        taken = {s.name for s in self.steps}
        base = step.name.replace("/", "-").strip() or step.protocol
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        if name != step.name:
            step = dataclasses.replace(step, name=name)
        self.steps.append(step)
        self._refresh()
        self.tree.setCurrentItem(self.tree.topLevelItem(len(self.steps) - 1))
        return step

    def remove_step(self, index: int) -> Step:
        step = self.steps.pop(index)
        self._refresh()
        return step

    def move_step(self, index: int, delta: int) -> int:
        """Move step ``index`` by ``delta`` places; returns its new index."""
        new = max(0, min(len(self.steps) - 1, index + delta))
        if new != index:
            self.steps.insert(new, self.steps.pop(index))
            self._refresh()
        self.tree.setCurrentItem(self.tree.topLevelItem(new))
        return new

    def clear(self) -> None:
        self.steps = []
        self._refresh()

    def selected_index(self) -> int | None:
        item = self.tree.currentItem()
        while item is not None and item.parent() is not None:
            item = item.parent()
        if item is None:
            return None
        index = self.tree.indexOfTopLevelItem(item)
        return index if index >= 0 else None

    def move_selected(self, delta: int) -> None:
        index = self.selected_index()
        if index is not None:
            self.move_step(index, delta)

    def remove_selected(self) -> None:
        index = self.selected_index()
        if index is not None:
            self.remove_step(index)
            if self.steps:
                self.tree.setCurrentItem(self.tree.topLevelItem(min(index, len(self.steps) - 1)))

    def campaign(self) -> Campaign:
        """The queue as a campaign."""
        name = self.name_edit.text().strip() or _new_name()
        return Campaign(name=name, steps=tuple(self.steps), store=self._store, seed=self._seed,
                        sample=dict(self._sample), source=self._source)

    def current_store(self, campaign: Campaign | None = None) -> Path:
        """Where the queue's runs go: the store a loaded file names, else the panel's."""
        path = (campaign or self.campaign()).store_path(self.store_path)
        return Path(path) if path is not None else self.store_path

    def check(self, campaign: Campaign | None = None) -> list[str]:
        """Every problem of the queue, as ``labpcu campaign validate`` would find them
        in its file (shape, parameters, devices, levels), without the file's lines."""
        from labpcu.campaign.loader import parse_partial
        from labpcu.campaign.validate import validate

        campaign = campaign or self.campaign()
        if not campaign.steps:
            return ["the queue is empty: queue a protocol from the form first"]
        try:
            text = campaign_to_toml(dataclasses.replace(campaign, store=None, bench=None))
        except ValueError as exc:
            return [str(exc)]
        problems: list[str] = []
        try:
            parsed, problems = parse_partial(text, "<queue>")
            validate(parsed, self.bench)
        except CampaignError as exc:
            problems = [*problems, *exc.problems]
        except (ParameterError, ValueError) as exc:
            problems = [*problems, str(exc).splitlines()[0]]
        def line(problem: str) -> int:  # in the order of the steps, as the file would list them
            m = re.match(r"<queue>:(\d+):", problem)
            return int(m.group(1)) if m else 0

        return [re.sub(r"^<queue>(:\d+)?: ", "", p) for p in sorted(problems, key=line)]

    # ------------------------------------------------------------------ running
    def run(self) -> Campaign | None:
        """Check the queue and hand it to the worker; None (problems listed) if invalid."""
        if self.busy:
            return None
        campaign = self.campaign()
        if not self._show_problems(self.check(campaign), "The queue cannot run"):
            return None
        return self._start(campaign, self.current_store(campaign), resume=False)

    def resume_interrupted(self, path: str | Path) -> Campaign | None:
        """Load the campaign file ``path`` and resume it into its store: its finished
        tasks are skipped, the interrupted one is measured again."""
        if self.busy:
            return None
        campaign = self.load(path)
        if campaign is None:
            return None
        return self._start(campaign, self.current_store(campaign), resume=True)

    def _start(self, campaign: Campaign, store: Path, resume: bool) -> Campaign:
        self.running = campaign
        self.outcome = None
        self.paused = False
        self.task_states = self._stored_states(campaign, store)
        done = sum(1 for s in self.task_states.values() if s == "done earlier")
        earlier = f" ({done} task{'s' if done != 1 else ''} done earlier: not measured again)" if done else ""
        self._set_status(f"{'Resuming' if resume else 'Starting'} {campaign.name!r} into {store}{earlier}…")
        self._refresh()
        self.worker.request_run(campaign, store, resume)
        self.run_started.emit(campaign)
        return campaign

    def pause(self) -> None:
        self.worker.pause()
        self.paused = True
        self._set_status("Pausing: the running task finishes first.")
        self._update_buttons()

    def resume(self) -> None:
        self.worker.resume()
        self.paused = False
        self._set_status("Running.")
        self._update_buttons()

    def abort(self) -> None:
        self.worker.abort("aborted by the operator")
        self._set_status("Aborting: the running task stops at its next step, in the safe state.")

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> bool:
        """Write the queue as a campaign file; its store is written relative to the
        file when it lies under the file's folder. False (problem shown) on failure."""
        path = Path(path)
        campaign = self.campaign()
        store = self.current_store(campaign).resolve()
        folder = path.resolve().parent
        store_text = str(store.relative_to(folder)) if store.is_relative_to(folder) else str(store)
        try:
            text = campaign_to_toml(dataclasses.replace(campaign, store=store_text, source=""))
            path.write_text(text, encoding="utf-8")
        except (ValueError, OSError) as exc:
            self._show_problems([f"cannot save {path}: {exc}"], "Not saved")
            return False
        self._store, self._source = store_text, str(path)
        self._show_problems([], "")
        self._set_status(f"Saved {path} (labpcu campaign run {path.name} runs it).")
        self._refresh()
        return True

    def load(self, path: str | Path) -> Campaign | None:
        """Replace the queue with the campaign file ``path``, checked whole first
        (shape and every task on the offline bench); None, every problem listed, if
        it is not valid (the queue is left as it was)."""
        from labpcu.campaign.validate import check_campaign

        if self.busy:
            return None
        try:
            campaign = check_campaign(path, self.bench)
        except CampaignError as exc:
            self._show_problems(exc.problems, f"{Path(path).name} is not a valid campaign")
            return None
        self.steps = list(campaign.steps)
        self._sample, self._seed, self._store, self._source = dict(campaign.sample), campaign.seed, \
            campaign.store, campaign.source
        self.name_edit.setText(campaign.name)
        self._auto_name = False
        self.task_states = {}
        self._show_problems([], "")
        note = f"; it names the bench {campaign.bench}: the bench open in the window is used" if campaign.bench else ""
        self._set_status(f"Loaded {path}: {len(campaign.steps)} step{'s' if len(campaign.steps) != 1 else ''}{note}.")
        self._refresh()
        return campaign

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the queue as a campaign file", self._dialog_dir(),
                                              "Campaign files (*.toml)")
        if path:
            self.save(path if path.endswith(".toml") else path + ".toml")

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a campaign file", self._dialog_dir(),
                                              "Campaign files (*.toml)")
        if path:
            self.load(path)

    def _resume_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Resume an interrupted campaign", self._dialog_dir(),
                                              "Campaign files (*.toml)")
        if path:
            self.resume_interrupted(path)

    def _dialog_dir(self) -> str:
        return str(Path(self._source).parent) if self._source else str(self.store_path.parent)

    # ------------------------------------------------------------------ worker signals
    def set_busy(self, busy: bool) -> None:
        self.busy = bool(busy)
        if not busy:
            self.paused = False
        self._update_buttons()

    def on_event(self, event: Any) -> None:
        """A worker event: task and campaign states."""
        kind = type(event).__name__
        if kind not in ("TaskStarted", "TaskFinished", "CampaignState"):
            return
        if self.running is not None and getattr(event, "campaign", None) != self.running.name:
            return
        if kind == "TaskStarted":
            self.task_states[event.task] = "running"
            self.paused = False
            eta = f", about {format_duration(event.estimate)}" if event.estimate else ""
            self._set_status(f"Task {event.number} of {event.total}: {event.task} ({event.protocol}{eta})")
        elif kind == "TaskFinished":
            self.task_states[event.task] = event.status
            if event.error and event.status != "completed":
                self._set_status(f"{event.task}: {event.status}: {event.error.splitlines()[0]}")
        elif event.state == "paused":
            if not self.paused:
                self.paused = True
            self._set_status("Paused between tasks: Resume goes on, Abort ends the queue.")
            self._update_buttons()
            return
        self._refresh()

    def on_finished(self, outcome: Any) -> None:
        """The queue ended (worker.queue_finished)."""
        self.outcome = outcome
        runs = len(outcome.runs)
        text = {"completed": "Completed", "stopped": "Stopped", "aborted": "Aborted"}.get(outcome.state,
                                                                                          outcome.state)
        reason = f": {outcome.reason}" if outcome.reason else ""
        skipped = f", {outcome.skipped} done earlier" if outcome.skipped else ""
        self._set_status(f"{text}{reason} ({runs} run{'s' if runs != 1 else ''} this time{skipped}).",
                         error=outcome.state != "completed")
        if outcome.state == "completed" and self._auto_name:
            self.name_edit.setText(_new_name())  # the next Run is a new campaign, not a resume of this one
            self.status.setText(self.status.text() + f" The next Run is a new campaign, {self.name_edit.text()!r}.")
        self._refresh()

    def on_failed(self, message: str) -> None:
        self._set_status(f"Worker: {message}", error=True)
        for key, state in self.task_states.items():
            if state == "running":
                self.task_states[key] = "interrupted"
        self._refresh()

    # ------------------------------------------------------------------ display
    def _name_edited(self, _text: str) -> None:
        self._auto_name = False

    def _sync_order(self) -> None:
        """After a drag: the steps in the order of the rows."""
        by_name = {s.name: s for s in self.steps}
        order = [self.tree.topLevelItem(i).data(0, _ROLE) for i in range(self.tree.topLevelItemCount())]
        moved = [by_name[n] for n in order if n in by_name]
        if len(moved) == len(self.steps):
            self.steps = moved
        self._refresh()

    def _refresh(self) -> None:
        current = self.selected_index()
        self.tree.clear()
        campaign = self.campaign()
        total_time, total_runs, unknown, bound = 0.0, 0, False, False
        for index, step in enumerate(self.steps):
            tasks, exact = self._tasks(campaign, step, index)
            bound = bound or not exact
            estimate, runs = self._estimate(step, tasks)
            if estimate is None:
                unknown = True
            else:
                total_time += estimate
            total_runs += runs
            keys = {t.key for t in tasks}
            if exact:
                states = [self.task_states.get(t.key, "queued") for t in tasks]
                extra = [k for k in self.task_states if k.split("/")[0] == step.name and k not in keys]
            else:  # a selection: its tasks are known once they start
                extra = [k for k in self.task_states if k.split("/")[0] == step.name]
                states = []
            states += [self.task_states[k] for k in extra]
            item = QTreeWidgetItem([step.name, step.protocol, _devices_text(step), _params_text(step),
                                    ("≤ " if not exact else "") + format_duration(estimate) if estimate else "?",
                                    _step_state(states, exact)])
            item.setData(0, _ROLE, step.name)
            item.setFlags(Qt.ItemIsSelectable | Qt.ItemIsEnabled | Qt.ItemIsDragEnabled)
            item.setToolTip(2, _devices_text(step, full=True))
            item.setToolTip(3, _params_text(step, full=True))
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
            _color(item, _step_state(states, exact).split(" ")[0])
            for task in tasks if exact else []:
                item.addChild(self._task_item(task.key, task.devices, self.task_states.get(task.key, "queued")))
            for key in extra:
                item.addChild(self._task_item(key, tuple(key.split("/")[1].split("+")), self.task_states[key]))
            self.tree.addTopLevelItem(item)
            item.setExpanded(any(s != "queued" for s in states) and len(states) <= 24)
        if current is not None and self.steps:
            self.tree.setCurrentItem(self.tree.topLevelItem(min(current, len(self.steps) - 1)))
        n = len(self.steps)
        eta = format_duration(total_time) + (" or more" if unknown else "")
        up_to = "up to " if bound else ""
        self.summary.setText(f"{n} step{'s' if n != 1 else ''}, {up_to}{total_runs} run{'s' if total_runs != 1 else ''}, "
                             f"{up_to}about {eta} of bench time" if n else "The queue is empty: queue a protocol from "
                                                                    "the form.")
        self.store_label.setText(str(self.current_store(campaign)))
        self._update_buttons()
        self.changed.emit()

    def _task_item(self, key: str, devices: tuple[str, ...], state: str) -> QTreeWidgetItem:
        rest = key.split("/", 2)[2] if key.count("/") >= 2 else ""
        child = QTreeWidgetItem(["", "", "+".join(devices), rest, "", state])
        child.setFlags(Qt.ItemIsSelectable | Qt.ItemIsEnabled)
        child.setToolTip(0, key)
        _color(child, state)
        return child

    def _tasks(self, campaign: Campaign, step: Step, index: int) -> tuple[list[Task], bool]:
        """The step's tasks (exact for a device list; for a selection, those of every
        device it could select) and whether they are exact."""
        from labpcu.campaign.validate import candidate_devices, together

        try:
            devices = candidate_devices(campaign, step, self.bench)
            return list(tasks_of(step, index, devices, together(step))), not isinstance(step.devices, Selection)
        except Exception:  # noqa: BLE001 - a step that does not check shows no tasks; Run lists why
            return [], True

    def _estimate(self, step: Step, tasks: list[Task]) -> tuple[float | None, int]:
        key = f"{step.fingerprint()}|{len(tasks)}|{','.join(t.key for t in tasks[:50])}"
        if key not in self._estimates:
            total: float | None = 0.0
            try:
                proto = registry.get(step.protocol)()
                for task in tasks:
                    value = proto.estimate(proto.Params.from_mapping(task.params), task.devices)
                    if value is None:
                        total = None
                        break
                    total += value  # type: ignore[operator]
            except Exception:  # noqa: BLE001 - an estimate is only a hint
                total = None
            self._estimates[key] = (total if tasks else None, len(tasks))
        return self._estimates[key]

    def _stored_states(self, campaign: Campaign, store: Path) -> dict[str, str]:
        """Tasks the store already holds as done (a resumed campaign skips them)."""
        from labpcu.campaign.engine import campaign_runs
        from labpcu.data.store import Store

        if not store.exists():
            return {}
        try:
            records = campaign_runs(campaign, Store(store))
        except Exception:  # noqa: BLE001 - only a display; the engine reads the store itself
            return {}
        return {key: "done earlier" for key, r in records.items() if r.done}

    def _update_buttons(self) -> None:
        selected = self.selected_index()
        idle = not self.busy
        self.up_button.setEnabled(idle and selected is not None and selected > 0)
        self.down_button.setEnabled(idle and selected is not None and selected < len(self.steps) - 1)
        self.remove_button.setEnabled(idle and selected is not None)
        self.tree.setDragEnabled(idle)
        self.run_button.setEnabled(idle and bool(self.steps))
        self.load_button.setEnabled(idle)
        self.resume_file_button.setEnabled(idle)
        self.save_button.setEnabled(bool(self.steps))
        self.name_edit.setEnabled(idle)
        self.pause_button.setEnabled(self.busy and not self.paused)
        self.resume_button.setEnabled(self.busy and self.paused)
        self.abort_button.setEnabled(self.busy)

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #c62828;" if error else "")

    def _show_problems(self, problems: list[str], title: str) -> bool:
        """List ``problems`` (True when there are none)."""
        self.problems = list(problems)
        self.problem_box.setPlainText("\n".join(problems))
        self.problem_box.setVisible(bool(problems))
        if problems:
            self._set_status(f"{title}: {len(problems)} problem{'s' if len(problems) != 1 else ''}.", error=True)
        return not problems


# ---------------------------------------------------------------------- helpers
def _event_signal(worker: Any) -> Any:
    """The worker's signal for runner and campaign events: ``run_event`` (``event`` in
    the first worker, a name that shadowed ``QObject.event()``)."""
    for name in ("run_event", "event"):
        signal = getattr(worker, name, None)
        if hasattr(signal, "connect"):
            return signal
    raise TypeError(f"{type(worker).__name__} has no event signal")


def _new_name() -> str:
    return "queue " + time.strftime("%Y-%m-%d %H:%M:%S")


def _devices_text(step: Step, full: bool = False) -> str:
    if isinstance(step.devices, Selection):
        return f"from {step.devices.from_step!r} where {step.devices.where}"
    if full or len(step.devices) <= 6:
        return ", ".join(step.devices)
    return ", ".join(step.devices[:5]) + f", … ({len(step.devices)})"


def _params_text(step: Step, full: bool = False) -> str:
    try:
        cls = registry.get(step.protocol).Params
    except ParameterError:
        cls = None
    bits = []
    for mapping, prefix in ((step.params, ""), (step.grid, "grid ")):
        for name, value in mapping.items():
            bits.append(f"{prefix}{name}={_value_text(cls, name, value, prefix != '')}")
    if step.repeat != 1:
        bits.append(f"repeat={step.repeat}")
    if step.on_fail != "stop":
        bits.append(f"on_fail={step.on_fail}")
    text = ", ".join(bits) or "defaults"
    return text if full or len(text) <= 90 else text[:88] + "…"


def _value_text(cls: Any, name: str, value: Any, grid: bool) -> str:
    if grid:
        return "[" + ", ".join(_value_text(cls, name, v, False) for v in value) + "]"
    try:
        spec = cls.spec(name)
        parsed = spec.parse(value) if isinstance(value, str) and (spec.kind is not str or spec.is_list) else value
        return spec.format(parsed)
    except Exception:  # noqa: BLE001 - shown as given; Run reports what is wrong with it
        return str(value)


def _step_state(states: list[str], exact: bool) -> str:
    if not states:
        return "queued"
    counts = {s: states.count(s) for s in dict.fromkeys(states)}
    n = len(states)
    if "running" in counts:
        done = sum(v for k, v in counts.items() if k in ("completed", "done earlier"))
        return f"running ({done}/{n} done)"
    if len(counts) == 1:
        only = next(iter(counts))
        return "completed" if only == "done earlier" else only
    for bad in ("failed", "aborted", "interrupted"):
        if bad in counts:
            return f"{bad} ({counts[bad]}/{n})"
    done = sum(v for k, v in counts.items() if k in ("completed", "done earlier"))
    return f"queued ({done}/{n} done)" if done else "queued"


def _color(item: QTreeWidgetItem, state: str) -> None:
    color = STATE_COLORS.get(state.split(" (")[0])
    if color:
        item.setForeground(5, QBrush(QColor(color)))
        if state.startswith(("running", "failed")):
            font = QFont(item.font(5))
            font.setBold(True)
            item.setFont(5, font)


__all__ = ["QueuePanel"]
