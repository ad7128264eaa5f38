"""HOW a campaign runs: tasks one after the other on one Bench into one store, its
progress kept in the store itself, pause/resume between tasks, and resume after a
crash (Bluesky's RunEngine to the plans of :mod:`labpcu.campaign.plan`).

Progress is not a separate record: every run of a campaign carries its task in its
metadata (campaign, step, task key, the step's fingerprint). A task is done when a run
of it is ``completed``, or ended ``failed`` in a step that continues on failure. A
resumed campaign (after kill -9, Ctrl-C, power loss or a failed instrument) therefore
needs nothing but its file and its store: it skips the done tasks and measures the
others, the interrupted one again (its run stays in the store, ``interrupted``). A
measurement that completed is never repeated: programming a device twice changes it.

The simulated wafer's state (every device, the bench clock, the random streams) is
stored with every run's end, in the same write as its status, and restored when the
campaign resumes, so a simulated campaign killed anywhere and resumed yields the data
an uninterrupted one does, bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labpcu.campaign.plan import Campaign, Selection, Step, Task, tasks_of
from labpcu.campaign.select import SelectionError, device_values, matches
from labpcu.campaign.validate import candidate_devices, together
from labpcu.protocols.screen import SCREEN_PROTOCOL, WORKING
from labpcu.protocols import registry
from labpcu.sim_state import restore_wafer, wafer_documents

log = logging.getLogger(__name__)

#: statuses a task's run can end with that leave the task to be measured again
REDO = ("interrupted", "aborted", "running")


class CampaignRefused(RuntimeError):
    """The campaign cannot go on as asked (a changed file touching completed steps, a
    store made with another wafer); one line."""


# ------------------------------------------------------------------------ events
@dataclass(frozen=True)
class TaskStarted:
    campaign: str
    number: int  # 1-based among the campaign's tasks known so far
    total: int
    task: str
    step: str
    protocol: str
    devices: tuple[str, ...]
    estimate: float | None  # s of bench time


@dataclass(frozen=True)
class TaskFinished:
    campaign: str
    task: str
    status: str
    run_id: str
    error: str = ""


@dataclass(frozen=True)
class DevicesExcluded:
    """Candidates a step leaves out, each with the reason (a screening found it
    defective, a selection did not pick it, it is a spare)."""

    campaign: str
    step: str
    excluded: dict[str, str]


@dataclass(frozen=True)
class CampaignState:
    campaign: str
    state: str  # running, paused, completed, stopped, aborted
    reason: str = ""


@dataclass
class TaskRecord:
    """The latest run of a task, as stored."""

    task: str
    step: str
    devices: tuple[str, ...]
    run_id: str
    status: str
    fingerprint: str
    on_fail: str

    @property
    def done(self) -> bool:
        return self.status == "completed" or (self.status == "failed" and self.on_fail == "continue")


@dataclass
class CampaignOutcome:
    """How a campaign run ended: ``completed`` (every task done), ``stopped`` (a task
    failed in a step that stops), ``aborted``; the runs it made this time."""

    state: str
    reason: str = ""
    runs: list[str] = field(default_factory=list)
    skipped: int = 0  # tasks found done in the store
    results: list[tuple[Task, Any]] = field(default_factory=list)  # (task, RunOutcome) of this session
    #: step -> {device: why it was left out} (not working, not selected, a spare)
    excluded: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "completed"


# ------------------------------------------------------------------ progress
def campaign_runs(campaign: Campaign, store: Any) -> dict[str, TaskRecord]:
    """Task key → the latest run of that task in ``store``."""
    records: dict[str, TaskRecord] = {}
    if not store.path.exists():
        return records
    df = store.runs()
    if "metadata" not in df.columns:
        return records
    for run_id, row in df.iterrows():
        meta = row["metadata"] or {}
        info = meta.get("campaign") if isinstance(meta, Mapping) else None
        if not isinstance(info, Mapping) or info.get("name") != campaign.name:
            continue
        records[str(info.get("task"))] = TaskRecord(
            task=str(info.get("task")), step=str(info.get("step")), devices=tuple(info.get("devices", ())),
            run_id=str(run_id), status=str(row["status"]), fingerprint=str(info.get("fingerprint", "")),
            on_fail=str(info.get("on_fail", "stop")))
    return records


class CampaignControl:
    """Pause, resume or abort a running campaign from another process (the GUI, a
    second terminal): a small command file beside the store, read between tasks."""

    def __init__(self, store_path: str | Path) -> None:
        self.path = Path(str(store_path) + ".control")

    def _write(self, command: str) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"command": command, "pid": os.getpid(), "at": time.time()}))
        os.replace(tmp, self.path)

    def pause(self) -> None:
        self._write("pause")

    def resume(self) -> None:
        self._write("resume")

    def abort(self, reason: str = "aborted from another process") -> None:
        self._write(f"abort:{reason}")

    def read(self) -> str | None:
        try:
            return str(json.loads(self.path.read_text()).get("command") or "") or None
        except (OSError, ValueError):
            return None

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------- engine
class CampaignEngine:
    """Runs a :class:`Campaign` on a bench into a store, resuming where the store says."""

    def __init__(self, campaign: Campaign, bench: Any, store: Any, *, force: bool = False,
                 fresh_wafer: bool = False, handle_sigint: bool = True,
                 metadata: Mapping[str, Any] | None = None, runner: Any = None) -> None:
        from labpcu.runner import Runner

        self.campaign = campaign
        self.bench = bench
        self.store = store
        self.force = force
        self.fresh_wafer = fresh_wafer
        self.metadata = dict(metadata or {})
        self.runner = runner if runner is not None else Runner(bench, store, handle_sigint=handle_sigint)
        self.runner.documents_at_finish = lambda: wafer_documents(bench)  # with each run's end, atomically
        self.control = CampaignControl(store.path)
        self._subscribers: list[Callable[[Any], None]] = []
        self.runner.subscribe(self._emit)
        self._pause = threading.Event()
        self._abort_reason = ""
        self._wake = threading.Event()

    # -- subscribers and control ------------------------------------------------
    def subscribe(self, subscriber: Callable[[Any], None]) -> Callable[[], None]:
        """Every runner event and the campaign's own (:class:`TaskStarted`,
        :class:`TaskFinished`, :class:`DevicesExcluded`, :class:`CampaignState`)."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def _emit(self, event: Any) -> None:
        for sub in list(self._subscribers):
            try:
                sub(event)
            except Exception:  # a broken display must not stop a campaign
                log.exception("campaign subscriber %r failed", sub)

    def pause(self) -> None:
        """Stop before the next task (the one running finishes)."""
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()
        self._wake.set()

    def abort(self, reason: str = "aborted by the operator") -> None:
        """Abort the running task (safe state within one protocol step) and stop."""
        self._abort_reason = reason
        self.runner.abort(reason)
        self._wake.set()

    # -- running ------------------------------------------------------------------
    def run(self) -> CampaignOutcome:
        """Run every task not yet done; returns how it ended."""
        done = campaign_runs(self.campaign, self.store)
        self._check_unchanged(done)
        self._restore_wafer()
        self.control.clear()
        outcome = CampaignOutcome("running", skipped=sum(r.done for r in done.values()))
        self._emit(CampaignState(self.campaign.name, "running"))
        number = 0
        planned = [len(list(tasks_of(s, i, candidate_devices(self.campaign, s, self.bench), together(s))))
                   for i, s in enumerate(self.campaign.steps)]
        for index, step in enumerate(self.campaign.steps):
            devices, excluded = step_selection(self.campaign, step, done, self.store, self.bench)
            if excluded:
                outcome.excluded[step.name] = excluded
                self._emit(DevicesExcluded(self.campaign.name, step.name, dict(excluded)))
            if not devices:
                reason = f"step {step.name!r}: no device qualifies (all {len(excluded)} candidates left out)"
                log.warning("%s", reason)
                if step.on_fail == "stop":
                    return self._end(outcome, "stopped", reason)
                continue
            tasks = list(tasks_of(step, index, devices, together(step)))
            planned[index] = len(tasks)  # a selection is known now: the total shrinks to it
            for task in tasks:
                number += 1
                record = done.get(task.key)
                if record is not None and record.done:
                    continue
                state = self._between_tasks()
                if state is not None:
                    return self._end(outcome, "aborted", state)
                run = self._run_task(task, step, number, sum(planned), excluded)
                outcome.runs.append(run.run_id)
                outcome.results.append((task, run))
                done[task.key] = TaskRecord(task.key, step.name, task.devices, run.run_id, run.status,
                                            step.fingerprint(), step.on_fail)
                if run.status == "aborted":
                    return self._end(outcome, "aborted", run.error or self._abort_reason)
                if not run.ok and step.on_fail == "stop":
                    return self._end(outcome, "stopped", f"{task.key}: {run.status}: {run.error}")
        return self._end(outcome, "completed", "")

    def _end(self, outcome: CampaignOutcome, state: str, reason: str) -> CampaignOutcome:
        outcome.state, outcome.reason = state, reason
        self._emit(CampaignState(self.campaign.name, state, reason))
        return outcome

    def _between_tasks(self) -> str | None:
        """Honour pause and abort, from this process or another; the abort reason, or None."""
        while True:
            command = self.control.read()
            if command == "pause":
                self._pause.set()
            elif command == "resume":
                self._pause.clear()
                self.control.clear()
            elif command and command.startswith("abort"):
                self.control.clear()
                return command.partition(":")[2] or "aborted from another process"
            if self._abort_reason:
                return self._abort_reason
            if not self._pause.is_set():
                return None
            self._emit(CampaignState(self.campaign.name, "paused"))
            self._wake.wait(0.2)
            self._wake.clear()

    def _run_task(self, task: Task, step: Step, number: int, total: int,
                  excluded: Mapping[str, str] | None = None) -> Any:
        proto = registry.get(task.protocol)()
        estimate = proto.estimate(_params_of(proto, task), task.devices)
        self._emit(TaskStarted(self.campaign.name, number, total, task.key, step.name, task.protocol,
                               task.devices, estimate))
        meta = {**self.metadata, "sample": {**self.campaign.sample, **self.metadata.get("sample", {})},
                "campaign": {"name": self.campaign.name, "file": self.campaign.source, "step": step.name,
                             "step_index": task.step_index, "task": task.key, "devices": list(task.devices),
                             "repeat": task.repeat, "grid": dict(task.grid_point),
                             "fingerprint": step.fingerprint(), "on_fail": step.on_fail,
                             **({"excluded": dict(excluded)} if excluded else {})}}
        outcome = self.runner.run(task.protocol, task.params, task.devices, metadata=meta)
        self._emit(TaskFinished(self.campaign.name, task.key, outcome.status, outcome.run_id, outcome.error))
        return outcome

    # -- resume checks and the simulated wafer --------------------------------------
    def _check_unchanged(self, done: Mapping[str, TaskRecord]) -> None:
        """A completed task measured with another definition of its step: refuse,
        naming the step, unless ``force``."""
        if self.force:
            return
        steps = {s.name: s for s in self.campaign.steps}
        for record in done.values():
            if not record.done:
                continue
            step = steps.get(record.step)
            if step is None:
                raise CampaignRefused(f"step {record.step!r} has completed runs in {self.store.path} but is no longer "
                                      f"in the campaign file; use --force to go on anyway")
            if step.fingerprint() != record.fingerprint:
                raise CampaignRefused(f"step {record.step!r} changed since its completed runs (e.g. "
                                      f"{record.run_id}); use --force to go on anyway")

    def _restore_wafer(self) -> None:
        restore_wafer(self.bench, self.store, fresh=self.fresh_wafer)


def step_devices(campaign: Campaign, step: Step, done: Mapping[str, TaskRecord], store: Any, bench: Any) -> list[str]:
    """The devices a step runs on (:func:`step_selection` without the exclusions)."""
    return step_selection(campaign, step, done, store, bench)[0]


def step_selection(campaign: Campaign, step: Step, done: Mapping[str, TaskRecord], store: Any,
                   bench: Any) -> tuple[list[str], dict[str, str]]:
    """The devices a step runs on, and every candidate it leaves out with the reason.

    Candidates are the step's list, or those of the step it selects from. A device
    stays when it passes the selection's ``where`` (if any) and, with
    ``working_only``, when the latest ``screen`` step before this one classified it
    ``working``. Protocols that take units of several PCUs (an operator unit, a
    crossbar column) keep or leave whole units: one defective PCU leaves its unit out,
    and a unit sharing a PCU with one already kept is a spare variant of it (a list may
    offer S13 S14 S15, then S16 S14 S15 should S13 be defective). ``count`` then takes the first ``count`` units (devices); the rest are spares.
    ``bench`` only needs its layout: an offline bench serves ``labpcu campaign status``."""
    candidates = candidate_devices(campaign, step, bench)
    why: dict[str, str] = {}
    if isinstance(step.devices, Selection):
        chosen = _selected(campaign, step, done, store)
        why.update({d: f"not selected by {step.devices.where!r} in step {step.devices.from_step!r}"
                    for d in candidates if d not in chosen})
    if step.working_only:
        screen, classes = screened_classes(campaign, step, done, store)
        for d in candidates:
            if d not in why and classes.get(d) != WORKING:
                why[d] = f"screened {classes[d]} in step {screen!r}" if d in classes else \
                    f"not screened working in step {screen!r}" if screen else "no screen step before this one"
    size = unit_size(step)
    units = [candidates[k:k + size] for k in range(0, len(candidates), size)]
    kept: list[list[str]] = []
    excluded: dict[str, str] = {}
    for unit in units:
        bad = [d for d in unit if d in why]
        taken = {d for u in kept for d in u}
        if not bad and not taken & set(unit):  # a list may offer variants of a unit: the first that works
            kept.append(unit)
            continue
        for d in unit:
            if d in taken:
                continue
            excluded[d] = why[d] if d in why else f"its unit has {bad[0]} ({why[bad[0]]})" if bad else \
                "a spare: its unit overlaps one already taken"
    if step.count is not None:
        used = {d for unit in kept[:step.count] for d in unit}
        for unit in kept[step.count:]:
            excluded.update({d: "a spare: the first working ones were enough" for d in unit if d not in used})
        if len(kept) < step.count:
            log.warning("step %r: only %d of the %d %s it asks for qualify", step.name, len(kept), step.count,
                        "units" if size > 1 else "devices")
        kept = kept[:step.count]
    chosen = [d for unit in kept for d in unit]
    return chosen, {d: r for d, r in excluded.items() if d not in chosen}


def _selected(campaign: Campaign, step: Step, done: Mapping[str, TaskRecord], store: Any) -> set[str]:
    """The devices of the step a :class:`Selection` names whose results pass its ``where``."""
    sel = step.devices
    assert isinstance(sel, Selection)
    source = campaign.step(sel.from_step)
    chosen: set[str] = set()
    for record in done.values():
        if record.step != source.name:
            continue
        info = store.info(record.run_id)
        proto = registry.get(info.protocol)()
        passed = proto.passed(info.results) if info.status == "completed" else None
        failed = info.results.get("failed_devices", {}) if isinstance(info.results, Mapping) else {}
        for device in record.devices:
            values = device_values(device, info.status, info.results, device in failed, passed)
            try:
                if matches(sel.where, values, device):
                    chosen.add(device)
            except SelectionError as exc:
                raise CampaignRefused(f"step {step.name!r}: {exc}") from None
    return chosen


def unit_size(step: Step) -> int:
    """PCUs per unit of the step's protocol when it measures them together (an operator
    unit, a crossbar column), else 1."""
    cls = registry.get(step.protocol)
    return cls.min_devices if together(step) and cls.min_devices > 1 else 1


def screen_step(campaign: Campaign, step: Step) -> Step | None:
    """The latest ``screen`` step before ``step`` (None if there is none)."""
    names = [s.name for s in campaign.steps]
    before = campaign.steps[: names.index(step.name)] if step.name in names else campaign.steps
    return next((s for s in reversed(before) if s.protocol == SCREEN_PROTOCOL), None)


#: store → run id → (per-device results, failed devices) of finished screen runs
_SCREENS: weakref.WeakKeyDictionary[Any, dict[str, tuple[Mapping, Mapping]]] = weakref.WeakKeyDictionary()


def _screen_results(store: Any, run_id: str) -> tuple[Mapping, Mapping]:
    """A finished screen run's per-device results and failed devices, read from the
    store once: every later step asks (a wafer's screen results are a large tree), and
    a finished run does not change."""
    try:
        cache = _SCREENS.setdefault(store, {})
    except TypeError:  # a store that cannot be weakly referenced: read each time
        cache = {}
    if run_id not in cache:
        info = store.info(run_id)
        results = info.results if isinstance(info.results, Mapping) else {}
        found = (results.get("devices", {}), results.get("failed_devices", {}))
        if info.status != "completed":
            return found  # not final: read again next time
        cache[run_id] = found
    return cache[run_id]


def screened_classes(campaign: Campaign, step: Step, done: Mapping[str, TaskRecord],
                     store: Any) -> tuple[str | None, dict[str, str]]:
    """(the screen step's name, device → class it found) for ``step``'s screening; a
    device whose screening failed is ``screen failed``, one not yet screened is absent."""
    screen = screen_step(campaign, step)
    if screen is None:
        return None, {}
    classes: dict[str, str] = {}
    for record in done.values():
        if record.step != screen.name:
            continue
        per_device, failed = _screen_results(store, record.run_id)
        for device in record.devices:
            if device in failed:
                classes[device] = "screen failed"
            elif isinstance(per_device, Mapping) and device in per_device:
                classes[device] = str(per_device[device].get("classification", "unknown"))
    return screen.name, classes


def _params_of(proto: Any, task: Task) -> Any:
    try:
        return proto.Params.from_mapping(task.params)
    except Exception:  # noqa: BLE001 - validated before; an estimate is only a hint
        return proto.Params()
