"""What a protocol's generator is handed: the interface of a run's context.

Protocols are typed against this :class:`typing.Protocol`, not against the runner's
class, so the protocols package does not depend on the runner that executes it
(WHAT to measure stays apart from HOW a run executes; the runner's ``RunContext``
implements this).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from labpcu.protocol_bench import ProtocolBench


class Clock(Protocol):
    """The bench clock as a protocol sees it (never the wall clock's ``time.sleep``)."""

    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RunContext(Protocol):
    """The bench (its protocol view), the clock, the devices, and progress reports."""

    run_id: str
    bench: ProtocolBench
    clock: Clock
    devices: tuple[str, ...]
    failed_devices: dict[str, str]
    device: str | None

    def check(self) -> None:
        """Raise if an abort was asked for."""
        ...

    def progress(self, done: float, total: float | None = None, message: str = "") -> None: ...

    def device_scope(self, device: str) -> AbstractContextManager[None]:
        """Measure one device (or operator unit) of several; a device failure is
        recorded and the run goes on."""
        ...


__all__ = ["Clock", "RunContext"]
