"""Probers: how the probes get to a site of the wafer.

The bench file's ``[prober]`` table names one (README, "The bench file"):

* ``kind = "manual"``: an operator moves the probes and confirms. The request is a
  small data object, :class:`ProberRequest` (site, devices, message); the front end
  supplies the *operator* callback that shows it and answers (the CLI:
  :func:`console_operator`, on stderr and stdin; the GUI: a dialog). The callback
  returns True once the probes are on the site, False to abort the run.
* ``kind = "fixed"``, ``site = "Q2"``: one mounted site; any other is refused, offline
  (:func:`check_reachable`) and again by :meth:`Bench.move_to`.
* any other name: a prober driver registered under the entry-point group
  ``labpcu.probers`` (``[project.entry-points."labpcu.probers"]``). The entry point is a
  class or factory called with the table's other keys as keyword arguments; it gives
  an object with ``move_to(site_id: str) -> None``. Optional: ``site`` (where it is
  now, if it knows: the first move is then skipped when it is already there),
  ``reaches(site_id) -> bool``, and for drivers of the simulated bench
  ``simulated_only = True`` and ``bind_simulator(sim_bench)``. ``sim`` (the simulated
  wafer's prober, :class:`SimulatedProber`) is one, and the default of a simulated
  bench.

A bench holds its prober as a :class:`ProberHandle`, which knows the prober's kind
and the site it last reached: until a move is confirmed the bench does not know
where the probes are, so the first :meth:`Bench.move_to` always asks.

This module imports nothing heavy: the bench-file loader consults the registry.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from labpcu.instruments.errors import LimitError

#: the entry-point group prober drivers register under
ENTRY_POINT_GROUP = "labpcu.probers"
#: kinds the bench file knows without a driver
BUILTIN_KINDS = ("fixed", "manual")
#: drivers labpcu ships; also registered as entry points in pyproject.toml. Used when
#: the installed metadata predates the registration (an editable install not redone)
_SHIPPED = {"sim": "labpcu.probers:SimulatedProber"}


class Prober(Protocol):
    """What a prober driver gives: the probes to a site, returning once they are on it."""

    def move_to(self, site_id: str) -> None: ...


@dataclass(frozen=True)
class ProberRequest:
    """An operator's task: put the probes on ``site`` (its ``devices``), then confirm.
    ``message`` is the sentence to show; a front end adds how to answer."""

    site: str
    devices: tuple[str, ...]
    message: str


#: the front end's side of a manual prober: True once the probes are on the site,
#: False to abort the run (it may also raise)
Operator = Callable[[ProberRequest], bool]


class ProberDriverError(LookupError):
    """A prober kind that names no driver, or a driver that cannot be loaded."""


def request_for(site_id: str, devices: Iterable[str]) -> ProberRequest:
    devs = tuple(devices)
    shown = ", ".join(devs) if len(devs) <= 4 else f"{devs[0]} … {devs[-1]}"
    message = f"move the probes to site {site_id}" + (f" (devices {shown})" if devs else "")
    return ProberRequest(site_id, devs, message)


def abort_run(reason: str) -> BaseException:
    """The exception that ends a run through the runner's abort path (status
    ``aborted``, the bench made safe)."""
    from labpcu.aborts import RunAborted

    return RunAborted(reason)


# ------------------------------------------------------------------ operators
def console_operator(request: ProberRequest, *, stdin: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Ask on the terminal: the request on stderr, the answer from stdin. Enter (or
    y/yes/ok) confirms; ``abort`` (or a, n, no, q, quit) aborts, and so do Ctrl-C and
    the end of input, so an unattended run never guesses; anything else asks again."""
    inp = stdin if stdin is not None else sys.stdin
    out = stderr if stderr is not None else sys.stderr
    print(f'{request.message} and press Enter (or type "abort")', file=out, flush=True)
    # Ctrl-C at the prompt aborts now: the runner's own handler only flags an abort,
    # which the read would not see until an answer came (and "confirmed" the move)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        while True:
            try:
                line = inp.readline()
            except KeyboardInterrupt:
                raise abort_run(f"interrupted from the keyboard (Ctrl-C) at the request to move the probes to site "
                                f"{request.site}") from None
            except (OSError, ValueError) as exc:  # no terminal, a closed stream
                raise abort_run(f"no operator to move the probes to site {request.site}: cannot read the "
                                f"answer ({exc})") from None
            if not line:
                raise abort_run(f"no answer from the operator (end of input) to move the probes to site {request.site}")
            answer = line.strip().lower()
            if answer in ("", "y", "yes", "ok"):
                return True
            if answer in ("abort", "a", "n", "no", "q", "quit"):
                return False
            print(f'press Enter once the probes are on site {request.site}, or type "abort"', file=out, flush=True)
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------ probers
class ManualProber:
    """An operator moves the probes: each move is a :class:`ProberRequest` to the
    ``operator`` callback, which returns once the probes are there."""

    kind = "manual"

    def __init__(self, operator: Operator | None, sites: Mapping[str, Any] | None = None, where: str = "") -> None:
        self.operator = operator
        self._sites = sites or {}
        self._where = where

    def request(self, site_id: str) -> ProberRequest:
        site = self._sites.get(site_id)
        return request_for(site_id, getattr(site, "devices", ()))

    def move_to(self, site_id: str) -> None:
        request = self.request(site_id)
        if self.operator is None:  # a script that never moves may still use the bench
            raise LimitError(f"{request.message}: {self._where}an operator moves the probes, and none was "
                             f"given: pass operator= to Bench.from_file (labpcu.probers.console_operator asks on "
                             f"the terminal), or prober=")
        if self.operator(request) is False:
            raise abort_run(f"aborted by the operator at the request to move the probes to site {site_id}")


class FixedProber:
    """One mounted site: the probes never move."""

    kind = "fixed"

    def __init__(self, site: str) -> None:
        self.site = site

    def reaches(self, site_id: str) -> bool:
        return site_id == self.site

    def move_to(self, site_id: str) -> None:
        if site_id != self.site:
            raise LimitError(f"site {site_id} cannot be reached: the probes of this bench are fixed on site {self.site}")


class SimulatedProber:
    """The simulated wafer's prober (entry point ``sim``): moves the simulated wafer
    under the probes, instantly. Only a simulated bench has one to move."""

    simulated_only = True

    def __init__(self) -> None:
        self._sim: Any = None

    def bind_simulator(self, sim_bench: Any) -> None:
        self._sim = sim_bench

    @property
    def site(self) -> str | None:
        return self._sim.site.id if self._sim is not None else None

    def move_to(self, site_id: str) -> None:
        if self._sim is None:
            raise LimitError("the sim prober moves the simulated wafer: this bench is not simulated")
        self._sim.move_to(site_id)


class ProberHandle:
    """A bench's prober: the driver (or a plain callable taking a site id), its kind,
    and the site it last reached (None: not known, so the next move asks)."""

    def __init__(self, prober: Prober | Callable[[str], None], kind: str, site: str | None = None) -> None:
        self.prober = prober
        self.kind = kind
        self.site = site

    def reaches(self, site_id: str) -> bool:
        check = getattr(self.prober, "reaches", None)
        return True if check is None else bool(check(site_id))

    def move_to(self, site_id: str) -> None:
        self.site = None  # a failed or aborted move leaves the probes anywhere
        mover = getattr(self.prober, "move_to", None)
        (mover if mover is not None else self.prober)(site_id)
        self.site = site_id

    def __repr__(self) -> str:
        return f"ProberHandle({self.kind!r}, site={self.site!r})"


def as_prober(prober: Any, sim: Any = None) -> ProberHandle | None:
    """A :class:`ProberHandle` for what a Bench is given: a handle, a prober object, a
    callable taking a site id, or None (a simulated bench then gets its own prober)."""
    if isinstance(prober, ProberHandle):
        return prober
    if prober is None:
        if sim is None:
            return None
        driver = SimulatedProber()
        driver.bind_simulator(sim.bench)
        return ProberHandle(driver, "sim", driver.site)
    if getattr(prober, "move_to", None) is None and not callable(prober):
        raise TypeError(f"a prober is a callable taking a site id or has move_to(site_id), not {prober!r}")
    return ProberHandle(prober, getattr(prober, "kind", "custom"), getattr(prober, "site", None))


# ------------------------------------------------------------------ registry
def drivers() -> dict[str, importlib.metadata.EntryPoint]:
    """The prober drivers registered under :data:`ENTRY_POINT_GROUP`, by name."""
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name, value in _SHIPPED.items():
        found.setdefault(name, importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP))
    return found


def known_kinds() -> list[str]:
    return sorted(set(BUILTIN_KINDS) | set(drivers()))


def load_driver(kind: str) -> Callable[..., Any]:
    """The class or factory registered as ``kind``; :class:`ProberDriverError` if none."""
    eps = drivers()
    if kind not in eps:
        raise ProberDriverError(f"unknown prober kind {kind!r}; known: {', '.join(known_kinds())}")
    try:
        return eps[kind].load()
    except Exception as exc:  # noqa: BLE001 - a broken plug-in is the bench file's problem, in one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProberDriverError(f"the prober driver {kind!r} ({eps[kind].value}) cannot be loaded: {text}") from None


def check_driver(kind: str, options: Mapping[str, Any], *, simulated: bool) -> dict[str, str]:
    """Check a driver's ``[prober]`` table without building it (building may reach
    hardware). Raises :class:`ProberDriverError` for the kind itself; returns a
    problem per option key (unknown or missing)."""
    factory = load_driver(kind)
    if getattr(factory, "simulated_only", False) and not simulated:
        raise ProberDriverError(f"the {kind!r} prober moves the simulated wafer; this bench's instruments are real")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read: the driver will say
        return {}
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    problems: dict[str, str] = {}
    for key in options:
        if key not in named and not takes_any:
            takes = ", ".join(named) or "no options"
            problems[key] = f"unknown option of the {kind!r} prober; it takes {takes}"
    for name, p in named.items():
        if p.default is p.empty and name not in options:
            problems[name] = f"missing: the {kind!r} prober needs it"
    return problems


# ------------------------------------------------------------------ building
def make_prober(config: Any, sites: Mapping[str, Any], sim: Any = None, *, operator: Operator | None = None) -> ProberHandle:
    """The prober the bench file describes (``config.prober_spec``), ready to move:
    before any instrument is opened, so a missing operator or a failing driver sends
    nothing."""
    spec = config.prober_spec
    where = f"{config.source} [prober]" if spec.given else f"{config.source} (no [prober] table: kind {spec.kind!r})"
    if spec.kind == "manual":
        return ProberHandle(ManualProber(operator, sites, f"{where}: "), "manual")
    if spec.kind == "fixed":
        assert spec.site is not None
        return ProberHandle(FixedProber(spec.site), "fixed", spec.site)
    try:
        factory = load_driver(spec.kind)
    except ProberDriverError as exc:
        raise LimitError(f"{where}: {exc}") from None
    driver = factory(**spec.options)
    bind = getattr(driver, "bind_simulator", None)
    if bind is not None and sim is not None:
        bind(sim.bench)
    if getattr(driver, "move_to", None) is None:
        raise LimitError(f"{where}: the prober driver {spec.kind!r} gave {driver!r}, which has no move_to(site_id)")
    return ProberHandle(driver, spec.kind, getattr(driver, "site", None))


def check_reachable(config: Any, layout: Any, devices: Iterable[str]) -> None:
    """Can the bench's prober reach every device? Offline (nothing is built or
    opened). A fixed-site bench refuses a device of another site with one line
    (:class:`LimitError`); other kinds reach every site."""
    spec = config.prober_spec
    if spec.kind != "fixed" or spec.site is None:
        return
    for device in devices:
        site = layout.site_of(device).id
        if site != spec.site:
            reach = layout.sites[spec.site].devices
            raise LimitError(f"device {device} is on site {site}, but the probes of this bench are fixed on site "
                             f"{spec.site} ({config.source} [prober]); it reaches {', '.join(reach)}")


__all__ = [
    "ENTRY_POINT_GROUP", "FixedProber", "ManualProber", "Operator", "Prober", "ProberDriverError", "ProberHandle",
    "ProberRequest", "SimulatedProber", "abort_run", "as_prober", "check_driver", "check_reachable",
    "console_operator", "drivers", "known_kinds", "load_driver", "make_prober", "request_for",
]
