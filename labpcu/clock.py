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


@runtime_checkable
class TimedAgent(Protocol):
    """Something that acts at given moments of simulated time (an instrument sweeping
    on its own while others talk to the bench). :meth:`VirtualClock.advance` stops at
    each :meth:`next_due` on its way and calls :meth:`fire` there, so whatever the
    agent changes (a source level) holds for exactly the right interval."""

    def next_due(self) -> float | None:
        """When the agent next needs to act (absolute clock time), or None."""
        ...

    def fire(self, now: float) -> None:
        """Act at ``now``. Must not advance the clock itself."""
        ...


class VirtualClock:
    """Simulated time shared by the whole simulated bench.

    ``advance``/``sleep`` move time forward and tell every listener first, so device
    physics (drift, retention, pulse effects) sees each interval exactly once, in order.
    Thread-safe: emulators served over TCP advance it from their own threads.
    """

    #: at most this many agent actions at one instant (a runaway agent must not hang)
    MAX_FIRES_PER_INSTANT = 100_000

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._listeners: list[AdvanceListener] = []
        self._agents: list[TimedAgent] = []
        self._lock = threading.RLock()

    def now(self) -> float:
        return self._t

    def set_time(self, t: float) -> None:
        """Jump to ``t`` without letting listeners evolve anything: only for putting
        back a saved state, whose devices already hold what happened up to ``t``."""
        with self._lock:
            self._t = float(t)

    def add_listener(self, listener: AdvanceListener) -> None:
        self._listeners.append(listener)

    def add_agent(self, agent: TimedAgent) -> None:
        """Let ``agent`` act at its due times whenever the clock passes them."""
        with self._lock:
            if agent not in self._agents:
                self._agents.append(agent)

    def remove_agent(self, agent: TimedAgent) -> None:
        with self._lock:
            if agent in self._agents:
                self._agents.remove(agent)

    def next_due(self) -> float | None:
        """The earliest time any agent wants to act (None: no agent is waiting on time)."""
        times = [t for t in (a.next_due() for a in list(self._agents)) if t is not None]
        return min(times) if times else None

    def _step(self, dt: float) -> None:
        if dt <= 0.0:
            return
        t0 = self._t
        for listener in self._listeners:
            listener(t0, dt)
        self._t = t0 + dt

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), letting listeners evolve state.

        Agents (:meth:`add_agent`) due on the way act at their own times: the interval
        is cut there, listeners see each piece under the state that held during it."""
        seconds = float(seconds)
        if not seconds >= 0.0:  # also rejects NaN
            raise ValueError(f"cannot advance the clock by {seconds!r} s")
        with self._lock:
            target = self._t + seconds
            fires, at = 0, self._t
            while self._agents:
                due_agents = [(t, k, a) for k, a in enumerate(list(self._agents))
                              if (t := a.next_due()) is not None and t <= target]
                if not due_agents:
                    break
                t, _, agent = min(due_agents, key=lambda x: (x[0], x[1]))
                if t > self._t:
                    self._step(t - self._t)
                if self._t != at:
                    fires, at = 0, self._t
                fires += 1
                if fires > self.MAX_FIRES_PER_INSTANT:
                    raise RuntimeError(f"clock: more than {self.MAX_FIRES_PER_INSTANT} agent actions at t = {at!r} s")
                agent.fire(self._t)
            if target > self._t:
                self._step(target - self._t)

    sleep = advance
