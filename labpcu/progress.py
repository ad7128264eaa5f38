"""A terminal progress bar for runs: a Runner subscriber drawn with rich.

The bar appears only once a run has lasted a second, so quick runs print nothing but
their summary line.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from labpcu.runner import DeviceFailed, Event, Progress as ProgressEvent, RunStarted, StatusChanged


class ProgressBar:
    """Subscribe an instance to a Runner: ``runner.subscribe(ProgressBar())``."""

    def __init__(self, console: Console | None = None, delay: float = 1.0) -> None:
        self.console = console or Console(stderr=True)
        self.delay = delay
        self._bar: Progress | None = None
        self._task: Any = None
        self._t0 = 0.0
        self._label = ""
        self._last: tuple[float, float | None, str] = (0.0, None, "")

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._t0 = time.monotonic()
            self._label = f"{event.protocol} on {', '.join(event.devices[:3])}{' …' if len(event.devices) > 3 else ''}"
        elif isinstance(event, ProgressEvent):
            self._last = (event.done, event.total, event.message)
            if self._bar is None and time.monotonic() - self._t0 >= self.delay:
                self._start()
            if self._bar is not None:
                self._bar.update(self._task, completed=event.done, total=event.total,
                                 description=f"{self._label} {event.message}".strip())
        elif isinstance(event, DeviceFailed):
            self.console.print(f"[yellow]device {event.device} failed: {event.reason}[/yellow]")
        elif isinstance(event, StatusChanged) and event.status != "running":
            self.stop()

    def _start(self) -> None:
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self._bar.start()
        done, total, message = self._last
        self._task = self._bar.add_task(f"{self._label} {message}".strip(), total=total, completed=done)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
