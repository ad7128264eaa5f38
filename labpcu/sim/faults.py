"""Fault injection, switchable per emulated instrument.

Transports consult the plan before delivering a reply: a late reply (later than
the client's timeout) and a dropped connection are transport faults; an error in the
queue is placed by :meth:`Emulator.inject_error`; a stuck relay lives on the bench
(:meth:`SimBench.stick_relay`) because the matrix does not know it is stuck.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class FaultPlan:
    """Pending faults of one instrument. ``count=None`` means "until cleared"."""

    reply_delay_s: float = 0.0
    _delay_left: int | None = 0
    _drops_left: int | None = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def delay_replies(self, seconds: float, count: int | None = 1) -> None:
        """Make the next ``count`` replies arrive ``seconds`` late."""
        if seconds < 0:
            raise ValueError(f"reply delay must be >= 0 s, got {seconds!r}")
        with self._lock:
            self.reply_delay_s = float(seconds)
            self._delay_left = count

    def drop_connection(self, count: int | None = 1) -> None:
        """Drop the connection at the next ``count`` reads or writes."""
        with self._lock:
            self._drops_left = count

    def clear(self) -> None:
        with self._lock:
            self.reply_delay_s = 0.0
            self._delay_left = 0
            self._drops_left = 0

    def take_reply_delay(self) -> float:
        """Delay for the reply being delivered now (consumes one use)."""
        with self._lock:
            if self._delay_left is None:
                return self.reply_delay_s
            if self._delay_left > 0:
                self._delay_left -= 1
                return self.reply_delay_s
            return 0.0

    def take_drop(self) -> bool:
        """True if the connection must drop now (consumes one use)."""
        with self._lock:
            if self._drops_left is None:
                return True
            if self._drops_left > 0:
                self._drops_left -= 1
                return True
            return False
