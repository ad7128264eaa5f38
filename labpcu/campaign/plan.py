"""A campaign as data: an ordered list of steps, each a protocol, its devices and its
parameters, and how each step expands into tasks (one run each).

Plans are plain data, like Bluesky's: nothing here opens an instrument or a store.
:mod:`labpcu.campaign.loader` builds a :class:`Campaign` from a TOML file (or write
one in Python), :mod:`labpcu.campaign.engine` runs it.

A **task** is one run: a step's protocol on one device (or on all the step's devices
together, for protocols that measure them together: operator units, weight
statistics), for one repeat and one point of the step's parameter grid. Its
:attr:`Task.key` names it in the store, so a resumed campaign knows which tasks are
done.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ON_FAIL = ("stop", "continue")


@dataclass(frozen=True)
class Selection:
    """Devices chosen from an earlier step's results, e.g. only those whose
    rectification passed: ``where`` is evaluated per device (see
    :mod:`labpcu.campaign.select`)."""

    from_step: str
    where: str = "status == 'completed'"


@dataclass(frozen=True)
class Step:
    """One step: a protocol, its devices (a list, or a :class:`Selection`), its
    parameters, a grid of parameter values to expand it over, repeats, and what a
    failed run does to the campaign. ``working_only`` and ``count`` narrow the devices
    to those a screening found working, and to the first ``count`` of them (the others
    are spares): see :func:`labpcu.campaign.engine.step_selection`."""

    name: str
    protocol: str
    devices: tuple[str, ...] | Selection
    params: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    repeat: int = 1
    on_fail: str = "stop"
    together: bool | None = None  # None: the protocol decides (several devices per run if it needs them)
    #: only devices the campaign's latest earlier ``screen`` step classified working
    #: (for protocols that take units of several PCUs: only units whose PCUs all are)
    working_only: bool = False
    #: use the first ``count`` devices (units) that qualify; the rest of the list are spares
    count: int | None = None
    line: int = 0  # where the step starts in its file, for messages
    key_lines: Mapping[str, int] = field(default_factory=dict)  # key -> its line ("params", "grid", ...)

    def line_of(self, message: str) -> int:
        """The line a validation message is about: the key it names (a parameter in
        ``params`` or ``grid``), else the step's first line."""
        for key, where in (("params", self.params), ("grid", self.grid)):
            if any(f"'{name}'" in message or f" {name} " in message for name in where):
                return self.key_lines.get(key, self.line)
        if "device" in message:
            return self.key_lines.get("devices", self.line)
        return self.line

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values (one empty point without a grid)."""
        if not self.grid:
            return [{}]
        names = list(self.grid)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.grid[n] for n in names))]

    def fingerprint(self) -> str:
        """What a completed task of this step was measured with: a resumed campaign
        whose file changes it refuses to go on (``--force`` accepts)."""
        spec = {
            "protocol": self.protocol,
            "devices": list(self.devices) if isinstance(self.devices, tuple) else
            {"from": self.devices.from_step, "where": self.devices.where},
            "params": _jsonable(self.params),
            "grid": _jsonable(self.grid),
            "repeat": self.repeat,
            "together": self.together,
        }
        if self.working_only or self.count is not None:  # absent when unset: older stores keep their fingerprints
            spec.update(working_only=self.working_only, count=self.count)
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    """One run of a step."""

    step_index: int
    step: str
    protocol: str
    devices: tuple[str, ...]
    params: Mapping[str, Any]
    repeat: int = 0
    grid_point: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Names the task among the campaign's runs: step, devices, repeat, grid point."""
        parts = [self.step, "+".join(self.devices)]
        if self.repeat:
            parts.append(f"r{self.repeat + 1}")
        if self.grid_point:
            parts.append(",".join(f"{k}={_short(v)}" for k, v in sorted(self.grid_point.items())))
        return "/".join(parts)


@dataclass(frozen=True)
class Campaign:
    """A whole campaign: its name, where it stores (relative to its file), which bench
    (None: the simulated bench), the sample description stored on every run, and
    its steps."""

    name: str
    steps: tuple[Step, ...]
    store: str | None = None
    bench: str | None = None
    seed: int | None = None
    sample: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it came from ("" when built in Python)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def store_path(self, default: str | Path | None = None) -> Path | None:
        """The store, relative to the campaign's file."""
        if self.store is None:
            return Path(default) if default is not None else None
        path = Path(self.store).expanduser()
        if not path.is_absolute() and self.source:
            path = Path(self.source).resolve().parent / path
        return path

    def bench_path(self) -> Path | None:
        if self.bench is None:
            return None
        path = Path(self.bench).expanduser()
        if not path.is_absolute() and self.source:
            path = Path(self.source).resolve().parent / path
        return path

    def fingerprint(self) -> str:
        """Identifies the campaign in the store: its name."""
        return self.name


def tasks_of(step: Step, index: int, devices: Sequence[str], together: bool) -> Iterator[Task]:
    """The tasks of ``step`` on ``devices``: one per device (or one for all together),
    per grid point, per repeat."""
    groups = [tuple(devices)] if together else [(d,) for d in devices]
    for point in step.grid_points():
        params = {**step.params, **point}
        for repeat in range(step.repeat):
            for group in groups:
                yield Task(index, step.name, step.protocol, group, params, repeat, point)


def _short(value: Any) -> str:
    text = json.dumps(_jsonable(value), sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else hashlib.sha256(text.encode()).hexdigest()[:10]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
