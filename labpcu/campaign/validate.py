"""A whole campaign checked before any instrument is opened: every task's parameters
against its protocol, its devices against the wafer and the bench's prober (a
fixed-site bench reaches one site), every level against the bench's limits. Every mistake at once, each with its file and line.

Steps that select their devices from an earlier step's results are checked on every
device they could select (the earlier step's devices).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labpcu.campaign.loader import CampaignError
from labpcu.campaign.plan import Campaign, Selection, Step, Task, tasks_of
from labpcu.protocols import registry
from labpcu.protocols.base import Protocol
from labpcu.instruments.errors import LimitError
from labpcu.probers import check_reachable
from labpcu.protocols.params import ParameterError


def together(step: Step) -> bool:
    """Does the step measure its devices in one run? Protocols that measure devices
    together (operator units, a crossbar, weight statistics) always do; others do
    when the step says ``together = true``."""
    cls = registry.get(step.protocol)
    joint = cls.run is not Protocol.run or cls.min_devices > 1
    return True if joint else bool(step.together)


def expand_devices(items: Sequence[str], bench: Any) -> tuple[list[str], list[str]]:
    """Device ids and whole sites → device ids; the second list names the unknown ones."""
    out: list[str] = []
    unknown: list[str] = []
    for item in items:
        if item in bench.layout.devices:
            out.append(item)
        elif item in bench.layout.sites:
            out.extend(bench.layout.sites[item].devices)
        else:
            unknown.append(item)
    return out, unknown


def candidate_devices(campaign: Campaign, step: Step, bench: Any) -> list[str]:
    """The devices a step may run on: its list, or all the devices of the step it
    selects from (followed back through selections)."""
    spec = step.devices
    while isinstance(spec, Selection):
        spec = campaign.step(spec.from_step).devices
    return expand_devices(spec, bench)[0]


def check_campaign(path: str | Path, bench: Any) -> Campaign:
    """Load a campaign file and validate it on ``bench``: the file's shape and every
    task, every mistake of both at once (:class:`CampaignError`)."""
    from labpcu.campaign.loader import load_text, parse_partial

    campaign, problems = parse_partial(load_text(path), str(path))
    try:
        validate(campaign, bench)
    except CampaignError as exc:
        problems += exc.problems
    if problems:
        raise CampaignError(sorted(problems, key=_line_order))
    return campaign


def _line_order(problem: str) -> tuple[int, str]:
    parts = problem.split(":")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, problem)


def validate(campaign: Campaign, bench: Any) -> list[Task]:
    """Check every task on ``bench`` (an offline :class:`~labpcu.bench.Bench` is
    enough: nothing is sent). Returns the tasks of the steps with fixed device lists;
    raises :class:`CampaignError` listing every mistake."""
    from labpcu.runner import prepare

    problems: list[str] = []
    tasks: list[Task] = []
    source = campaign.source or "<campaign>"
    for index, step in enumerate(campaign.steps):
        where = f"{source}:{step.line}" if step.line else source
        if not isinstance(step.devices, Selection):
            _, unknown = expand_devices(step.devices, bench)
            if unknown:
                problems.append(f"{where}: step {step.name!r}: no device or site {', '.join(unknown[:5])} on the "
                                f"wafer (devices like S01, A1-R2C3; sites A1..A9, Q1..Q5)")
                continue
        try:
            devices = candidate_devices(campaign, step, bench)
        except KeyError:  # it selects from a step the file got wrong: reported there
            continue
        if not devices:
            problems.append(f"{where}: step {step.name!r}: no devices")
            continue
        try:  # a fixed-site bench reaches only the devices under its probes
            check_reachable(bench.config, bench.layout, devices)
        except LimitError as exc:
            problems.append(f"{source}:{step.key_lines.get('devices', step.line)}: step {step.name!r}: {exc}")
            continue
        joint = together(step)
        size = registry.get(step.protocol).min_devices if joint else 1
        size = size if size > 1 else 1
        if (step.count is not None or step.working_only) and len(devices) % size:
            problems.append(f"{where}: step {step.name!r}: {step.protocol} takes units of {size} PCUs; "
                            f"{len(devices)} devices do not split into whole units")
            continue
        if step.count is not None and step.count > len(devices) // size:
            line = step.key_lines.get("count", step.line)
            problems.append(f"{source}:{line}: step {step.name!r}: count = {step.count} but the list has only "
                            f"{len(devices) // size} {'units' if size > 1 else 'devices'}")
            continue
        seen: set[str] = set()
        for task in _tasks(step, index, devices, joint, size):
            try:
                prepare(step.protocol, task.params, task.devices, bench)
            except (ParameterError, LimitError) as exc:
                message = str(exc).splitlines()[0]
                line = step.line_of(message)
                text = f"{source}:{line}: step {step.name!r}: {message}" if line else f"{where}: step {step.name!r}: {message}"
                if text not in seen:  # one line per distinct mistake, not one per device
                    seen.add(text)
                    problems.append(text)
                continue
            if not isinstance(step.devices, Selection):
                tasks.append(task)
    if problems:
        raise CampaignError(problems)
    return tasks


def _tasks(step: Step, index: int, devices: list[str], joint: bool, size: int) -> list[Task]:
    """The tasks to check: with ``count``, a joint step runs some units of its list,
    not the list, so each unit is checked on its own (a crossbar step with spare
    columns is one crossbar of three rows, not one of nine; a list may offer variants
    of a unit that share PCUs)."""
    if step.count is None or not joint:
        return list(tasks_of(step, index, devices, joint))
    return [t for k in range(0, len(devices), size) for t in tasks_of(step, index, devices[k:k + size], joint)]
