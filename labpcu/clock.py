"""Bench clocks.

Protocols never call ``time.sleep``: they ask the bench clock. On hardware that is a
:class:`WallClock`; on the simulated bench it is a :class:`VirtualClock`, whose time
only moves when somebody advances it, so a 1,000 s retention test costs milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What protocols may use of time: read it and wait on it."""

    def now(self) -> float:
        """Seconds since an arbitrary, fixed origin."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass on this clock."""
        ...


class WallClock:
    """Real time, for a bench with hardware."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"cannot sleep a negative time: {seconds!r} s")
        time.sleep(seconds)


#: Called as ``listener(t_start, dt)`` before the clock moves from ``t_start`` to
#: ``t_start + dt``; the simulated bench evolves device state under the present bias.
AdvanceListener = Callable[[float, float], None]


class VirtualClock:
    """Simulated time shared by the whole simulated bench.

    ``advance``/``sleep`` move time forward and tell every listener first, so device
    physics (drift, retention, pulse effects) sees each interval exactly once, in order.
    Thread-safe: emulators served over TCP advance it from their own threads.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._listeners: list[AdvanceListener] = []
        self._lock = threading.RLock()

    def now(self) -> float:
        return self._t

    def add_listener(self, listener: AdvanceListener) -> None:
        self._listeners.append(listener)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), letting listeners evolve state."""
        seconds = float(seconds)
        if not seconds >= 0.0:  # also rejects NaN
            raise ValueError(f"cannot advance the clock by {seconds!r} s")
        if seconds == 0.0:
            return
        with self._lock:
            t0 = self._t
            for listener in self._listeners:
                listener(t0, seconds)
            self._t = t0 + seconds

    sleep = advance
