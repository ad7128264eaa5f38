"""The Bench: which instrument plays which role, how they are wired, the limits, the
clock, and the probe.

Built from a bench file (:mod:`labpcu.benchfile`). Protocols use only what this class
hands out: source-measure units by terminal name, the switch matrix, the multi-channel
analyzer, :meth:`Bench.connect` to route pads to terminals, and :attr:`Bench.clock`.

Safety rules enforced here (DESIGN.md, issue "drivers, bench file, device safety"):

* everything a call needs is validated before any instrument I/O (pads under the
  probes, terminals wired, crosspoints not forbidden, levels within the limits of the
  device type being addressed);
* relays switch only with every output off (each live output is brought to 0 V and
  turned off first), and :meth:`connect` closes exactly the crosspoints asked for, with
  the matrix's break-before-make rule;
* on any error inside :meth:`guard` the bench goes to its safe state (levels 0 V,
  outputs off, relays open); a lost connection is reopened once to get there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labpcu import __version__
from labpcu.benchfile import BenchConfig, Limits, load_bench
from labpcu.clock import Clock, WallClock
from labpcu.device_limits import ElementGuard, site_elements
from labpcu.instruments.errors import InstrumentCommunicationError, LimitError
from labpcu.instruments.roles import (
    B1500Analyzer,
    K2600Smu,
    K3706AMatrix,
    MultiChannelAnalyzer,
    SourceMeasureUnit,
    SwitchMatrix,
)
from labpcu.sim.physics import Physics
from labpcu.sim.wafer import Site, Wafer, make_wafer
from labpcu.sim.wiring import site_pins

log = logging.getLogger(__name__)

Crosspoint = tuple[int, int, int]
class SafeStateError(RuntimeError):
    """The bench could not be proven safe; the message says what is still unknown."""


@dataclass(frozen=True)
class Pad:
    """A pad under the probes: its name, the probe pin that touches it, its kind."""

    name: str  # e.g. "A1.WL2", "A1-R2C3.CL1", "S05.BL"
    pin: int
    kind: str  # WL, BL, CL1 or CL2
    net: str = ""  # the circuit net the pad touches (array lines are shared)


class Bench:
    """A connected bench. Build it with :meth:`from_file`; close it (or use ``with``)."""

    def __init__(
        self,
        config: BenchConfig,
        drivers: dict[str, Any],
        clock: Clock,
        layout: Wafer,
        sim: Any = None,
        prober: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.drivers = drivers
        self.clock = clock
        self.layout = layout
        self.sim = sim  # the SimRig behind a simulated bench, else None
        from labpcu.probers import as_prober

        self._prober = as_prober(prober, sim)  # a ProberHandle: the kind, the site it last reached
        self._site = layout.sites[next(iter(layout.sites))] if sim is None else sim.bench.site
        self._elements: ElementGuard | None = None  # element limits of the present connection
        self._to_verify: set[Crosspoint] = set()  # closed since the last welded-relay check
        self.welded: set[Crosspoint] = set()  # relays found conducting while commanded open
        self._held_errors: list[str] = []  # queued errors the safe state set aside (drain_errors)
        self.smus: dict[str, SourceMeasureUnit] = {}
        self.matrix: SwitchMatrix | None = None
        self.analyzer: MultiChannelAnalyzer | None = None
        for name in self.drivers:
            self._build_roles(name)

    # ------------------------------------------------------------------ opening
    @classmethod
    def from_file(
        cls,
        path: str | Path | None = None,
        *,
        seed: int | None = None,
        prober: Callable[[str], None] | Any = None,
        operator: Callable[[Any], bool] | None = None,
        physics: Physics | None = None,
    ) -> Bench:
        """Load a bench file (default: the simulated bench), open every instrument, and
        put the bench in its safe state. ``seed`` overrides the file's wafer seed.

        The probes move as the file's ``[prober]`` table says (:mod:`labpcu.probers`);
        a manual prober sends each :class:`~labpcu.probers.ProberRequest` to
        ``operator`` (True: the probes are there; False: abort). ``prober`` (a
        callable taking a site id, or an object with ``move_to``) replaces the
        file's prober. The prober is built before any instrument is opened.
        ``physics`` replaces the simulated wafer's physics (the file's ``[sim]`` and
        ``[conditions]`` tables); a real bench refuses it."""
        from labpcu.probers import make_prober

        config = load_bench(path)
        if physics is not None and not config.simulated:
            raise LimitError("physics settings apply to a simulated bench only; this bench file is real")
        sim = None
        if any(i.simulated for i in config.instruments.values()):
            if not config.simulated:
                raise LimitError("a bench is either all simulated (address \"sim\") or all real; this file mixes both")
            sim = _make_sim_rig(config, config.seed if seed is None else seed,
                                physics if physics is not None else config.physics())
        layout = sim.bench.wafer if sim is not None else make_wafer(0)  # the standard 101-PCU layout
        probe = make_prober(config, layout.sites, sim, operator=operator) if prober is None else prober
        if sim is not None and getattr(probe, "site", None) not in (None, sim.bench.site.id):
            sim.bench.move_to(probe.site)  # a fixed site: the simulated wafer sits there
        # one process owns a bench: every address is locked before anything is sent,
        # or BenchBusyError names the holder (the safe state below would cut its run)
        from labpcu.instruments.lock import BenchLock

        lock = BenchLock.acquire_all({name: spec.address for name, spec in config.instruments.items()})
        drivers: dict[str, Any] = {}
        try:
            for name, spec in config.instruments.items():
                drivers[name] = _open_driver(spec, sim)
            clock: Clock = sim.bench.clock if sim is not None else WallClock()
            bench = cls(config, drivers, clock, layout, sim, probe)
            if bench._prober is not None and bench._prober.site in layout.sites:
                bench._site = layout.sites[bench._prober.site]  # where a prober that knows says it is
            bench._lock = lock  # released by close(), after the connections
            bench.safe_state()
            if config.matrix.forbidden:  # the instrument refuses them too: defence in depth
                drivers[config.matrix.instrument].set_forbidden(sorted(config.matrix.forbidden))
        except BaseException:
            for driver in drivers.values():  # an instrument's one session must not stay held
                try:
                    driver.adapter.close()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
            lock.release()
            raise
        return bench

    @classmethod
    def offline(cls, path: str | Path | None = None, *, seed: int | None = None) -> Bench:
        """The bench as its file describes it, with no instrument opened: enough to
        validate a request (devices, wiring, limits) before anything is sent. A
        fixed-site prober is the only one it has (it moves nothing); see
        :func:`labpcu.probers.check_reachable` for the devices it reaches."""
        from labpcu.probers import FixedProber, ProberHandle

        config = load_bench(path)
        layout = make_wafer(config.seed if seed is None else seed) if config.simulated else make_wafer(0)
        spec = config.prober_spec
        fixed = spec.site if spec.kind == "fixed" else None
        bench = cls(config, {}, WallClock(), layout, None,
                    ProberHandle(FixedProber(fixed), "fixed", fixed) if fixed else None)
        if fixed:
            bench._site = layout.sites[fixed]
        return bench

    @property
    def connected(self) -> bool:
        return bool(self.drivers)

    def _build_roles(self, name: str) -> None:
        """The roles of one instrument (again after a reconnect: the old ones talk to
        a closed link); the others keep theirs."""
        driver = self.drivers[name]
        spec = self.config.instruments[name]
        role = spec.info.role
        for key in [k for k in self.smus if k.partition(".")[0] == name]:
            del self.smus[key]
        fresh: list[SourceMeasureUnit] = []
        if role == "smu":
            fresh = [K2600Smu(f"{name}.smu{ch.id}", ch) for ch in driver.smus.values()]
        elif role == "switch":
            self.matrix = K3706AMatrix(name, driver)
        elif role == "analyzer":
            self.analyzer = B1500Analyzer(name, driver)
            fresh = list(self.analyzer.smus.values())
        for smu in fresh:  # the bench file's caps below an instrument's range
            smu.max_voltage = min(smu.max_voltage, spec.max_voltage or smu.max_voltage)
            smu.max_current = min(smu.max_current, spec.max_current or smu.max_current)
            smu.set_limits(None, None)
            smu.element_check = self._check_elements
            smu.clock = self.clock
            self.smus[smu.name] = smu

    def close(self) -> None:
        """Safe state, then release every connection, then the bench lock (last, so
        the next owner never finds our connections still open)."""
        try:
            self.safe_state()
        finally:
            try:
                for driver in self.drivers.values():
                    try:
                        driver.adapter.close()
                    except Exception as exc:  # noqa: BLE001 - closing must go on
                        log.warning("closing %s: %s", driver.name, exc)
            finally:
                lock = getattr(self, "_lock", None)  # only from_file() takes one
                if lock is not None:
                    lock.release()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------- roles
    def smu(self, terminal: str) -> SourceMeasureUnit:
        try:
            return self.smus[terminal]
        except KeyError:
            raise LimitError(f"no source-measure unit {terminal!r}; have {', '.join(self.smus)}") from None

    # -------------------------------------------------------------------- probe
    @property
    def site(self) -> Site:
        return self._site

    def move_to(self, site_or_device: str) -> Site:
        """Put the probes on a site (``A1``…``A9``, ``Q1``…``Q5``) or on the site of a
        device, through the bench's prober (:mod:`labpcu.probers`). Relays open and
        outputs off first: pads must never lift under bias. Until the prober has
        reached a site (a manual one: the operator confirmed), the bench does not
        know where the probes are, so the first move always goes to the prober. A
        simulated wafer follows the site the prober reached."""
        if site_or_device in self.layout.sites:
            site = self.layout.sites[site_or_device]
        elif site_or_device in self.layout.devices:
            site = self.layout.site_of(site_or_device)
        else:
            raise LimitError(f"no site or device {site_or_device!r} on the wafer")
        probe = self._prober
        if site.id == self._site.id and (probe is None or probe.site == site.id):
            return site
        if probe is None:
            raise LimitError(f"move the probes to site {site.id}: this bench has no prober; give the bench file a "
                             f"[prober] table, or pass prober= to Bench.from_file")
        if not probe.reaches(site.id):  # before anything moves
            fixed = getattr(probe.prober, "site", None) if probe.kind == "fixed" else None
            raise LimitError(f"site {site.id} cannot be reached by this bench's {probe.kind} prober"
                             + (f": the probes are fixed on site {fixed}" if fixed else ""))
        self.disconnect()
        probe.move_to(site.id)
        if self.sim is not None and self.sim.bench.site.id != site.id:
            self.sim.bench.move_to(site.id)
        self._site = site
        return site

    def pads(self) -> dict[str, Pad]:
        """Every pad under the probes, by name."""
        fx = self.config.fixture
        pins = site_pins(self.layout, self._site, fx.array, fx.quad)
        return {name: Pad(name, pin, kind, net) for pin, (name, kind, net) in pins.items()}

    def pad(self, device_id: str, kind: str) -> str:
        """The pad name of a device's WL, BL, CL1 or CL2 (array lines are shared)."""
        dev = self.layout.device(device_id)
        if kind not in ("WL", "BL", "CL1", "CL2"):
            raise LimitError(f"pad kind must be WL, BL, CL1 or CL2, not {kind!r}")
        if dev.array is not None and kind == "WL":
            return f"{dev.array}.WL{dev.row}"
        if dev.array is not None and kind == "BL":
            return f"{dev.array}.BL{dev.col}"
        return f"{device_id}.{kind}"

    # ------------------------------------------------------------------ routing
    def route(self, connections: Mapping[str, str | Sequence[str]]) -> list[Crosspoint]:
        """The crosspoints joining each terminal to its pad(s); validates, sends nothing."""
        pads = self.pads()
        matrix = self.config.matrix
        cps: list[Crosspoint] = []
        used_pins: dict[int, str] = {}
        for terminal, wanted in connections.items():
            if terminal not in self.smus:
                raise LimitError(f"no source-measure unit {terminal!r}; have {', '.join(self.smus)}")
            try:
                row = matrix.row_of(terminal)
            except KeyError:
                raise LimitError(f"{terminal} is on no matrix row of this bench") from None
            for name in [wanted] if isinstance(wanted, str) else list(wanted):
                pad = pads.get(name)
                if pad is None:
                    raise LimitError(f"pad {name!r} is not under the probes (site {self._site.id}); "
                                     f"move_to() its site first")
                if pad.pin in used_pins and used_pins[pad.pin] != terminal:
                    raise LimitError(f"pad {name} asked for both {used_pins[pad.pin]} and {terminal}")
                used_pins[pad.pin] = terminal
                slot, col = matrix.column_of_pin(pad.pin)
                cp = (slot, row, col)
                if cp in matrix.forbidden:
                    raise LimitError(f"crosspoint {slot}{row}{col:02d} ({terminal} to {name}) is forbidden in the bench file")
                cps.append(cp)
        return cps

    def limits_for(self, connections: Mapping[str, str | Sequence[str]], device_type: str | None = None,
                   guard: ElementGuard | None = None) -> Limits | None:
        """The per-terminal caps of a connection: the strictest limits of the element
        types it addresses (CL2 and BL reach M2 and, in parallel, D2). ``device_type``
        declares what is under test and is checked against the pads (M1 pads cannot be
        declared a diode); it never loosens a cap. The limits across each element are
        checked on top of these (:mod:`labpcu.device_limits`); ``guard``: the connection's
        :class:`ElementGuard` if the caller already built it."""
        lims = self.config.limits
        if device_type is not None and device_type not in lims:
            raise LimitError(f"no limits for device type {device_type!r} in the bench file; have {', '.join(lims)}")
        reached = (guard or self._element_guard(connections)).addressed_kinds() & set(lims)
        if device_type is not None and reached and device_type not in reached:
            raise LimitError(f"these pads reach {' and '.join(sorted(reached))}, not a {device_type}: "
                             f"device_type must name what the pads connect")
        kinds = reached or set(lims)
        if not kinds:
            return None
        return Limits(min(lims[k].voltage for k in kinds), min(lims[k].current for k in kinds))

    def _element_guard(self, connections: Mapping[str, str | Sequence[str]]) -> ElementGuard:
        pads = self.pads()
        nets = {t: [pads[p].net for p in _names(w) if p in pads] for t, w in connections.items()}
        return ElementGuard(site_elements(self.layout, self._site), self.config.limits, nets)

    def connect(self, connections: Mapping[str, str | Sequence[str]], device_type: str | None = None) -> list[Crosspoint]:
        """Join terminals to pads, e.g. ``{"k2612a.smua": "S01.CL1", "k2612a.smub": "S01.CL2"}``.

        Validates everything first; then every live output goes to 0 V and off, the
        matrix closes exactly these crosspoints (break before make), each connected
        SMU gets the limits of the device type reached (others their full range), and
        from then on every level is checked against the limits across each element.
        """
        cps = self.route(connections)
        guard = self._element_guard(connections)
        limits = self.limits_for(connections, device_type, guard)
        if self.matrix is None:
            raise LimitError("this bench has no switch matrix")
        if self.welded:
            raise LimitError(f"relay {_cp_text(self.welded)} is welded (it conducts while open): the matrix must "
                             f"be serviced before anything is connected")
        with self.guard():
            self._outputs_off()
            self._elements = None
            self._to_verify.update(cps)
            self.matrix.connect(cps)
            self._elements = guard
            for name, smu in self.smus.items():
                if name in connections and limits is not None:
                    smu.set_limits(min(limits.voltage, smu.max_voltage), min(limits.current, smu.max_current))
                else:
                    smu.set_limits(None, None)
        return cps

    def disconnect(self) -> None:
        """Every output off (proven), then every relay open."""
        with self.guard():
            self._outputs_off()
            if self.matrix is not None:
                self._elements = None
                self.matrix.open_all()

    def _outputs_off(self) -> None:
        """Every source instrument to 0 V and off, whoever turned its outputs on (a
        driver-level call such as program-and-verify leaves them on at 0 V), and
        read back: relays must not move until every output is proven off."""
        for name in self._source_instruments():
            self._safe_instrument(name)
            self._verify_off(name)

    def _check_elements(self, proposed: Mapping[str, Any]) -> None:
        """The roles' hook: would these terminal states, with every other connected
        terminal as it is, keep each device element within its limits?"""
        guard = self._elements
        if guard is None or not any(t in guard.terminals for t in proposed):
            return
        states = {t: self.smus[t].state for t in guard.terminals if t in self.smus}
        states.update({t: s for t, s in proposed.items() if t in guard.terminals})
        guard.check(states, changing=", ".join(proposed))

    # ------------------------------------------------------------------- safety
    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block; on any exception put the bench in its safe state, then re-raise."""
        try:
            yield
        except BaseException as exc:
            try:
                self.safe_state()
            except SafeStateError as safe_exc:
                log.critical("bench not safe after %r: %s", exc, safe_exc)
                exc.add_note(f"and the safe state failed: {safe_exc}")
            raise

    def _source_instruments(self) -> list[str]:
        return [n for n in self.drivers if self.config.instruments[n].info.role != "switch"]

    def safe_state(self) -> None:
        """The safe state, always in this order: every source of every instrument to
        0 V and off, read back; then the relays open; then the relays closed since
        the last check are tested for welding.

        Each instrument is tried even when another fails, and a lost connection is
        reopened once. While a source that cannot be proven off reaches the site
        through a closed relay, no relay moves: opening a relay under a live output
        arcs its contacts, and the device stays where it was. Raises
        :class:`SafeStateError` naming what is unproven.
        """
        failures: list[str] = []
        unproven: set[str] = set()  # instruments whose outputs may still be live
        for name in self._source_instruments():
            try:
                self._with_reconnect(name, lambda n=name: (self._safe_instrument(n), self._verify_off(n)))
            except Exception as exc:  # noqa: BLE001 - keep going with the others
                failures.append(_named(name, exc))
                unproven.add(name)
        self._set_aside_errors(unproven)
        if self.matrix is not None and self.config.matrix.instrument in self.drivers:
            try:
                self._with_reconnect(self.config.matrix.instrument, lambda: self._open_relays(unproven))
            except Exception as exc:  # noqa: BLE001
                failures.append(_named(self.config.matrix.instrument, exc))
            else:
                if not unproven and self._to_verify:
                    try:
                        self._check_welded()
                    except Exception as exc:  # noqa: BLE001
                        failures.append(_first_line(exc))
        if failures:
            raise SafeStateError("; ".join(failures))

    def _set_aside_errors(self, skip: set[str]) -> None:
        """Empty the error queues of the instruments that answer, keeping their errors
        for :meth:`drain_errors`: an error queued before the safe state belongs to the
        run, and must not stop the relays from opening or the welded-relay test
        (whose settings are checked) from running. Sources are already off."""
        for name, driver in self.drivers.items():
            if name in skip:
                continue
            try:
                self._held_errors += _queued_errors(name, driver)
            except Exception as exc:  # noqa: BLE001 - the steps below meet that link again
                log.warning("could not read the error queue of %s: %s", name, _first_line(exc))

    def _with_reconnect(self, name: str, action: Callable[[], Any]) -> None:
        try:
            if getattr(self.drivers[name], "out_of_step", False):
                # a timed-out reply may still arrive and answer the read-back: a fresh
                # link first, or an old reading could prove an output off (or keep it on)
                self._reopen(name)
            action()
        except InstrumentCommunicationError as exc:
            try:
                self._reopen(name)
                action()
            except Exception as exc2:
                raise type(exc2)(f"{_first_line(exc2)} (after reconnecting; first: {_first_line(exc)})") from exc2

    def _open_relays(self, unproven: set[str]) -> None:
        """Open every relay, unless a source that could not be proven off reaches the
        site through a closed relay of its rows: then none moves. Its current may
        flow through any closed relay (through the device into another source's row:
        a 2600 output that is off holds 0 V), so opening any of them would switch
        under load and change what the live output drives."""
        assert self.matrix is not None
        self._elements = None
        rows = {r for r, t in self.config.matrix.rows.items() if t.partition(".")[0] in unproven}
        closed = self.matrix.closed() if rows else set()
        if any(cp[1] in rows for cp in closed):
            raise SafeStateError(f"relays {_cp_text(closed)} left closed: a source ({', '.join(sorted(unproven))}) "
                                 f"could not be proven off")
        self.matrix.open_all()
        if self.matrix.closed():
            raise SafeStateError(f"relays {_cp_text(self.matrix.closed())} still report closed after open-all")

    def _safe_instrument(self, name: str) -> None:
        role = self.config.instruments[name].info.role
        driver = self.drivers[name]
        if role == "smu":
            for smu in self.smus.values():
                if smu.name.startswith(f"{name}."):
                    smu.safe_off()
        elif role == "analyzer" and self.analyzer is not None:
            self.analyzer.safe_off()
        elif role == "switch":
            driver.open_all()

    def _verify_off(self, name: str) -> None:
        """Read each output of a source instrument back; raise if one is still on."""
        role = self.config.instruments[name].info.role
        if role == "smu":
            on = [f"{name}.smu{ch}" for ch in sorted(self.drivers[name].outputs_on())]
        elif role == "analyzer" and self.analyzer is not None:
            on = sorted(self.analyzer.outputs_on())  # type: ignore[attr-defined]
        else:
            on = []
        if on:
            raise SafeStateError(f"output {', '.join(on)} still on after being switched off")

    def _reopen(self, name: str) -> None:
        log.warning("reopening the connection to %s", name)
        spec = self.config.instruments[name]
        try:
            self.drivers[name].adapter.close()
        except Exception:  # noqa: BLE001 - the old link is already broken
            pass
        self.drivers[name] = _open_driver(spec, self.sim)
        self._build_roles(name)

    # ------------------------------------------------------------ welded relays
    def _check_welded(self) -> None:
        """Test the relays closed since the last check: each is open now, so its row
        must be isolated from its column. With every output off, a reference row is
        joined to those columns and held at 0 V, and a small current is forced into
        each tested row: an isolated row floats up to the 50 mV compliance, a row with
        a welded relay is held at 0 V through it. Levels stay at 50 mV and 100 nA,
        harmless to any element; relays switch only with every output off. Rows are
        tested together; a conducting row's relays are then tested one by one."""
        rows_term = {r: t for r, t in self.config.matrix.rows.items() if t in self.smus}
        by_row: dict[int, set[tuple[int, int]]] = {}
        for slot, row, col in self._to_verify:
            if row in rows_term:
                by_row.setdefault(row, set()).add((slot, col))
        self._to_verify.clear()
        if len(rows_term) < 2 or not by_row:
            return
        ref = next((r for r in sorted(rows_term) if r not in by_row), min(rows_term))
        passes = [(ref, [r for r in sorted(by_row) if r != ref])]
        if ref in by_row:
            passes.append((next(r for r in sorted(rows_term) if r != ref), [ref]))
        welded: set[Crosspoint] = set()
        for reference, rows in passes:
            if not rows:
                continue
            cols = set().union(*(by_row[r] for r in rows))
            for row in self._rows_conducting(rows, reference, cols):
                suspects = by_row[row]
                if len(suspects) > 1:
                    suspects = {c for c in suspects if self._rows_conducting([row], reference, {c})}
                welded.update((s, row, c) for s, c in suspects)
        if welded:
            self.welded |= welded
            raise SafeStateError(f"relay {_cp_text(welded)} is welded: its row conducts with the relay open; "
                                 f"service the matrix card before the next connection")

    def _rows_conducting(self, rows: Sequence[int], ref: int, cols: set[tuple[int, int]]) -> list[int]:
        """Which of ``rows`` reach the reference row's columns ``cols`` (see
        :meth:`_check_welded`)."""
        assert self.matrix is not None
        terminal = self.config.matrix.rows
        held = self.smus[terminal[ref]]
        probes = [self.smus[terminal[r]] for r in rows]
        self.matrix.connect([(s, ref, c) for s, c in sorted(cols)])
        try:
            held.source_voltage(0.0, 1e-6)
            held.output_on()
            for probe in probes:
                probe.source_current(1e-7, 0.05)
                probe.output_on()
            readings = [probe.measure() for probe in probes]
        finally:
            self._outputs_off()
            self.matrix.open_all()
        return [r for r, reading in zip(rows, readings) if abs(reading.voltage) < 0.025 and not reading.compliance]


    # ------------------------------------------------------------------- errors
    def drain_errors(self) -> list[str]:
        """Empty every instrument's error queue; one line per error found. A run asks
        before it ends, so an error raised during a read phase (where no setting is
        checked) fails that run, not the next one. Errors the safe state set aside
        come first."""
        found, self._held_errors = self._held_errors, []
        try:
            for name, driver in self.drivers.items():
                found += _queued_errors(name, driver)
        except BaseException:
            self._held_errors = found + self._held_errors  # kept for the next ask
            raise
        return found

    # ----------------------------------------------------------------- metadata
    def conditions(self) -> dict[str, float | None]:
        """Stage temperature (K) and light (lux) the devices sit in, stored with every
        run: a simulated bench's own; a real bench's as its file states them (None:
        not stated). The simulated stage reports its temperature now, wander included."""
        if self.sim is not None:
            sb = self.sim.bench
            return {"temperature_K": round(sb.stage_temperature(), 4), "light_lux": sb.physics.light_lux}
        return self.config.conditions.to_dict()

    def snapshot(self) -> dict[str, Any]:
        """Identities and wiring, for a run's metadata."""
        instruments = {}
        for name, spec in self.config.instruments.items():
            try:
                identity = self.drivers[name].ask("*IDN?").strip()
            except Exception as exc:  # noqa: BLE001 - a snapshot reports, it does not fail
                identity = f"unavailable: {exc}"
            instruments[name] = {"model": spec.model, "address": spec.address, "identity": identity}
        m = self.config.matrix
        return {
            "name": self.config.name,
            "bench_file": self.config.source,
            "labpcu": __version__,
            "simulated": self.sim is not None,
            "seed": self.sim.bench.seed if self.sim is not None else None,
            "conditions": self.conditions(),
            "physics": self.sim.bench.physics.to_dict() if self.sim is not None else None,
            "site": self._site.id,
            "instruments": instruments,
            "matrix_rows": {str(k): v for k, v in m.rows.items()},
            "limits": {k: {"voltage": v.voltage, "current": v.current} for k, v in self.config.limits.items()},
            "closed": sorted(f"{s}{r}{c:02d}" for s, r, c in (self.matrix.closed() if self.matrix else set())),
        }


# ---------------------------------------------------------------------- helpers
def _names(wanted: str | Sequence[str]) -> list[str]:
    return [wanted] if isinstance(wanted, str) else list(wanted)


def _cp_text(cps: Iterable[Crosspoint]) -> str:
    return ", ".join(f"{s}{r}{c:02d}" for s, r, c in sorted(cps))


def _queued_errors(name: str, driver: Any) -> list[str]:
    """Empty one instrument's error queue (every driver has ``drain_errors``); a line each."""
    return [f"{name}: error {code}: {message}" for code, message in driver.drain_errors()]


def _named(name: str, exc: BaseException) -> str:
    """The error's first line, prefixed with the instrument's name unless it has it."""
    text = _first_line(exc)
    return text if text.startswith(f"{name}:") or text.startswith(f"{name} ") else f"{name}: {text}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _make_sim_rig(config: BenchConfig, seed: int, physics: Physics | None = None):
    """A simulated bench wired exactly as the bench file says."""
    from labpcu.sim.bench import SimBench
    from labpcu.sim.rig import SimRig, make_emulator
    from labpcu.sim.wiring import SimWiring

    m = config.matrix
    wiring = SimWiring(
        rows={(s, r): t for s in m.slots for r, t in m.rows.items()},
        columns=dict(m.columns),
        slots=tuple(m.slots),
        array_pins=dict(config.fixture.array),
        quad_pins=tuple(config.fixture.quad),
    )
    rig = SimRig(SimBench(seed=seed, wiring=wiring, physics=physics if physics is not None else config.physics()))
    for name, spec in config.instruments.items():
        rig.emulators[name] = make_emulator(spec.model, rig.bench, name)
    return rig


def _open_driver(spec, sim) -> Any:
    from labpcu.instruments.keithley2600 import Keithley2600
    from labpcu.instruments.keithley3706a import Keithley3706A
    from labpcu.instruments.keysight_b1500a import KeysightB1500A

    cls = {"smu": Keithley2600, "switch": Keithley3706A, "analyzer": KeysightB1500A}[spec.info.role]
    if sim is not None:
        adapter: Any = sim.adapter(spec.name, timeout=spec.timeout)
        kwargs: dict[str, Any] = {}
    else:
        adapter = spec.address
        kwargs = {"timeout": int(spec.timeout * 1000)}
        if spec.visa_library:
            kwargs["visa_library"] = spec.visa_library
    driver = cls(adapter, spec.name, **kwargs)
    found = getattr(driver, "model", spec.model)
    if spec.info.role == "smu" and found != spec.model:
        driver.adapter.close()
        raise LimitError(f"instruments.{spec.name}: the bench file says {spec.model}, but {spec.address} is a {found}")
    return driver
