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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labpcu import __version__
from labpcu.benchfile import BenchConfig, Limits, load_bench
from labpcu.clock import Clock, WallClock
from labpcu.instruments.errors import InstrumentCommunicationError, LimitError
from labpcu.instruments.roles import (
    B1500Analyzer,
    K2600Smu,
    K3706AMatrix,
    MultiChannelAnalyzer,
    SourceMeasureUnit,
    SwitchMatrix,
)
from labpcu.sim.wafer import Site, Wafer, make_wafer
from labpcu.sim.wiring import site_pins

log = logging.getLogger(__name__)

Crosspoint = tuple[int, int, int]
#: which component two pad kinds reach, for the limits of a connection
_COMPONENT = {
    frozenset({"WL", "CL1"}): "diode",
    frozenset({"CL1", "CL2"}): "m1",
    frozenset({"CL2", "BL"}): "m2",
}


class SafeStateError(RuntimeError):
    """The bench could not be proven safe; the message says what is still unknown."""


@dataclass(frozen=True)
class Pad:
    """A pad under the probes: its name, the probe pin that touches it, its kind."""

    name: str  # e.g. "A1.WL2", "A1-R2C3.CL1", "S05.BL"
    pin: int
    kind: str  # WL, BL, CL1 or CL2


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
        self._prober = prober
        self._site = layout.sites[next(iter(layout.sites))] if sim is None else sim.bench.site
        self._build_roles()

    # ------------------------------------------------------------------ opening
    @classmethod
    def from_file(
        cls,
        path: str | Path | None = None,
        *,
        seed: int | None = None,
        prober: Callable[[str], None] | None = None,
    ) -> Bench:
        """Load a bench file (default: the simulated bench), open every instrument, and
        put the bench in its safe state. ``seed`` overrides the file's wafer seed."""
        config = load_bench(path)
        sim = None
        if any(i.simulated for i in config.instruments.values()):
            if not config.simulated:
                raise LimitError("a bench is either all simulated (address \"sim\") or all real; this file mixes both")
            sim = _make_sim_rig(config, config.seed if seed is None else seed)
        # one process owns a bench: every address is locked before anything is sent,
        # or BenchBusyError names the holder (the safe state below would cut its run)
        from labpcu.instruments.lock import BenchLock

        lock = BenchLock.acquire_all({name: spec.address for name, spec in config.instruments.items()})
        try:
            drivers = {name: _open_driver(spec, sim) for name, spec in config.instruments.items()}
            clock: Clock = sim.bench.clock if sim is not None else WallClock()
            layout = sim.bench.wafer if sim is not None else make_wafer(0)  # the standard 101-PCU layout
            bench = cls(config, drivers, clock, layout, sim, prober)
            bench._lock = lock  # released by close(), after the connections
            bench.safe_state()
            if config.matrix.forbidden:  # the instrument refuses them too: defence in depth
                drivers[config.matrix.instrument].set_forbidden(sorted(config.matrix.forbidden))
        except BaseException:
            lock.release()
            raise
        return bench

    @classmethod
    def offline(cls, path: str | Path | None = None, *, seed: int | None = None) -> Bench:
        """The bench as its file describes it, with no instrument opened: enough to
        validate a request (devices, wiring, limits) before anything is sent."""
        config = load_bench(path)
        layout = make_wafer(config.seed if seed is None else seed) if config.simulated else make_wafer(0)
        return cls(config, {}, WallClock(), layout)

    @property
    def connected(self) -> bool:
        return bool(self.drivers)

    def _build_roles(self) -> None:
        self.smus: dict[str, SourceMeasureUnit] = {}
        self.matrix: SwitchMatrix | None = None
        self.analyzer: MultiChannelAnalyzer | None = None
        for name, driver in self.drivers.items():
            role = self.config.instruments[name].info.role
            if role == "smu":
                for ch in driver.smus.values():
                    smu = K2600Smu(f"{name}.smu{ch.id}", ch)
                    self.smus[smu.name] = smu
            elif role == "switch":
                self.matrix = K3706AMatrix(name, driver)
            elif role == "analyzer":
                self.analyzer = B1500Analyzer(name, driver)
                self.smus.update(self.analyzer.smus)
        for smu in self.smus.values():  # the bench file's caps below an instrument's range
            spec = self.config.instruments[smu.name.partition(".")[0]]
            smu.max_voltage = min(smu.max_voltage, spec.max_voltage or smu.max_voltage)
            smu.max_current = min(smu.max_current, spec.max_current or smu.max_current)
            smu.set_limits(None, None)

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
        device. Relays open and outputs off first: pads must never lift under bias."""
        if site_or_device in self.layout.sites:
            site = self.layout.sites[site_or_device]
        elif site_or_device in self.layout.devices:
            site = self.layout.site_of(site_or_device)
        else:
            raise LimitError(f"no site or device {site_or_device!r} on the wafer")
        if site.id == self._site.id:
            return site
        self.disconnect()
        if self.sim is not None:
            self.sim.bench.move_to(site.id)
        elif self._prober is not None:
            self._prober(site.id)
        else:
            raise LimitError(f"move the probes to site {site.id}: this bench has no prober; pass prober= to Bench.from_file")
        self._site = site
        return site

    def pads(self) -> dict[str, Pad]:
        """Every pad under the probes, by name."""
        fx = self.config.fixture
        pins = site_pins(self.layout, self._site, fx.array, fx.quad)
        return {name: Pad(name, pin, kind) for pin, (name, kind, _net) in pins.items()}

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

    def limits_for(self, connections: Mapping[str, str | Sequence[str]], device_type: str | None = None) -> Limits | None:
        """The limits of what the connection reaches: the named device type, else the
        component the pad kinds single out, else the strictest of all types."""
        lims = self.config.limits
        if device_type is not None:
            if device_type not in lims:
                raise LimitError(f"no limits for device type {device_type!r} in the bench file; have {', '.join(lims)}")
            return lims[device_type]
        pads = self.pads()
        kinds = frozenset(pads[p].kind for w in connections.values() for p in ([w] if isinstance(w, str) else w) if p in pads)
        comp = _COMPONENT.get(kinds)
        if comp is not None and comp in lims:
            return lims[comp]
        if not lims:
            return None
        return Limits(min(l.voltage for l in lims.values()), min(l.current for l in lims.values()))

    def connect(self, connections: Mapping[str, str | Sequence[str]], device_type: str | None = None) -> list[Crosspoint]:
        """Join terminals to pads, e.g. ``{"k2612a.smua": "S01.CL1", "k2612a.smub": "S01.CL2"}``.

        Validates everything first; then every live output goes to 0 V and off, the
        matrix closes exactly these crosspoints (break before make), and each connected
        SMU gets the limits of the device type reached (others get their full range).
        """
        cps = self.route(connections)
        limits = self.limits_for(connections, device_type)
        if self.matrix is None:
            raise LimitError("this bench has no switch matrix")
        with self.guard():
            self._outputs_off()
            self.matrix.connect(cps)
            for name, smu in self.smus.items():
                if name in connections and limits is not None:
                    smu.set_limits(min(limits.voltage, smu.max_voltage), min(limits.current, smu.max_current))
                else:
                    smu.set_limits(None, None)
        return cps

    def disconnect(self) -> None:
        """Every output off, then every relay open."""
        with self.guard():
            self._outputs_off()
            if self.matrix is not None:
                self.matrix.open_all()

    def _outputs_off(self) -> None:
        """Every source instrument to 0 V and off, whoever turned its outputs on (a
        driver-level call such as program-and-verify leaves them on at 0 V)."""
        for name, spec in self.config.instruments.items():
            if spec.info.role != "switch":
                self._safe_instrument(name)

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

    def safe_state(self) -> None:
        """Levels 0 V, outputs off, relays open, on every instrument; each step is
        tried even when another fails, and a lost connection is reopened once."""
        failures: list[str] = []
        for name in self.drivers:
            try:
                self._safe_instrument(name)
            except InstrumentCommunicationError as exc:
                try:
                    self._reopen(name)
                    self._safe_instrument(name)
                except Exception as exc2:  # noqa: BLE001 - keep going with the others
                    failures.append(f"{name}: {exc2} (after {exc})")
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{name}: {exc}")
        if failures:
            raise SafeStateError("; ".join(failures))

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

    def _reopen(self, name: str) -> None:
        log.warning("reopening the connection to %s", name)
        spec = self.config.instruments[name]
        try:
            self.drivers[name].adapter.close()
        except Exception:  # noqa: BLE001 - the old link is already broken
            pass
        self.drivers[name] = _open_driver(spec, self.sim)
        self._build_roles()

    # ----------------------------------------------------------------- metadata
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
            "site": self._site.id,
            "instruments": instruments,
            "matrix_rows": {str(k): v for k, v in m.rows.items()},
            "limits": {k: {"voltage": v.voltage, "current": v.current} for k, v in self.config.limits.items()},
            "closed": sorted(f"{s}{r}{c:02d}" for s, r, c in (self.matrix.closed() if self.matrix else set())),
        }


# ---------------------------------------------------------------------- helpers
def _make_sim_rig(config: BenchConfig, seed: int):
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
    rig = SimRig(SimBench(seed=seed, wiring=wiring))
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
