"""A progress bar for runs: a Runner subscriber drawn with rich.

The bar appears only once a run has lasted a second, so quick runs print nothing but
their summary line. Where it is drawn depends on the console (:func:`display_mode`):

* a terminal: rich's live bar;
* a Jupyter notebook (no terminal): rich's Jupyter display (an ipywidgets output
  under the cell), or, without ipywidgets, a one-line text bar redrawn with ``\\r``,
  which notebooks render in place: a bar, never nothing or raw escape codes;
* anything else (a pipe, a file, a log): no bar at all; lines such as a device's
  failure are still printed, as plain text.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from labpcu.runner import DeviceFailed, Event, Progress as ProgressEvent, RunStarted, StatusChanged


def display_mode(console: Console) -> str | None:
    """``"terminal"``, ``"jupyter"`` (rich's display, ipywidgets installed),
    ``"jupyter-text"`` (a notebook without ipywidgets) or None: no bar."""
    if console.is_jupyter:
        return "jupyter" if importlib.util.find_spec("ipywidgets") is not None else "jupyter-text"
    if console.is_terminal and not console.is_dumb_terminal:
        return "terminal"
    return None


class TextBar:
    """A bar as one line of plain text, redrawn with a carriage return (a notebook
    shows the last state of the line): ``label  [#####-----]  5/10  0:00:12``."""

    WIDTH = 30

    def __init__(self, file: TextIO, transient: bool = True) -> None:
        self.file = file
        self.transient = transient
        self._t0 = time.monotonic()
        self._shown = 0

    def update(self, done: float, total: float | None, description: str) -> None:
        elapsed = int(time.monotonic() - self._t0)
        clock = f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        if total:
            filled = int(self.WIDTH * min(max(done / total, 0.0), 1.0))
            bar = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done:g}/{total:g}"
        else:
            bar = f"{done:g}"
        line = f"{description}  {bar}  {clock}"
        self.file.write("\r" + line.ljust(self._shown))
        self.file.flush()
        self._shown = len(line)

    def stop(self) -> None:
        if self._shown:
            self.file.write("\r" + " " * self._shown + "\r" if self.transient else "\n")
            self.file.flush()
            self._shown = 0


class ProgressBar:
    """Subscribe an instance to a Runner: ``runner.subscribe(ProgressBar())``."""

    def __init__(self, console: Console | None = None, delay: float = 1.0) -> None:
        self.console = console or Console(stderr=True)
        self.delay = delay
        self.mode = display_mode(self.console)
        self._bar: Progress | TextBar | None = None
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
            if self._bar is None and self.mode is not None and time.monotonic() - self._t0 >= self.delay:
                self._start()
            if isinstance(self._bar, Progress):
                self._bar.update(self._task, completed=event.done, total=event.total,
                                 description=f"{self._label} {event.message}".strip())
            elif self._bar is not None:
                self._bar.update(event.done, event.total, f"{self._label} {event.message}".strip())
        elif isinstance(event, DeviceFailed):
            if isinstance(self._bar, TextBar):
                self._bar.stop()  # the line goes above the bar, which the next update redraws
            self.console.print(f"[yellow]device {event.device} failed: {event.reason}[/yellow]")
        elif isinstance(event, StatusChanged) and event.status != "running":
            self.stop()

    def _start(self) -> None:
        done, total, message = self._last
        if self.mode == "jupyter-text":
            self._bar = TextBar(self.console.file)
            self._bar.update(done, total, f"{self._label} {message}".strip())
            return
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(f"{self._label} {message}".strip(), total=total, completed=done)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
