"""The simulated bench: one circuit that every instrument emulator shares.

What an SMU measures depends on which crosspoints are closed and which pads of which
PCUs the matrix columns reach under the probes. The bench owns that state (wafer,
probe site, relays, source terminals, virtual clock) and answers the emulators'
questions ("what current flows out of this terminal now?") by solving the circuit.

Time: device state evolves only when the virtual clock advances. Each interval is
integrated under the bias present during it (pulses move M1, drift runs in closed
form, nothing is solved while every output is off), so a 1,000 s retention test costs
milliseconds. Switching of M2 is instantaneous when its threshold is crossed.

Emulators must hold :attr:`SimBench.lock` around every call (``Emulator.write`` does).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from labpcu.clock import VirtualClock
from labpcu.sim.circuit import GMIN, Netlist, Solution, conductance_response, solve
from labpcu.sim.diode import DiodeParams, saturation_current, thermal_voltage
from labpcu.sim.parasitics import (COLUMN_PATH_CAPACITANCE, NEGLIGIBLE_CURRENT, PATH_RESISTANCE,
                                   RELAY_ISOLATION_OHM, SMU_CABLE_CAPACITANCE, GroupBoundary, ParasiticNetwork,
                                   Step, StepPlan, offset_current, terminal_capacitance)
from labpcu.sim.pcu import ELEMENTS, PCU
from labpcu.sim.physics import DEFAULT_PHYSICS, T_REF_K, Physics
from labpcu.sim.stage import StageTemperature
from labpcu.sim.wafer import Site, Wafer, make_wafer
from labpcu.sim.wiring import MATRIX_COLUMNS, MATRIX_ROWS, Crosspoint, SimWiring, net_label, site_pins
from labpcu.unionfind import UnionFind

DEFAULT_SEED = 0
#: K: the stage temperature the diodes are evaluated at is rounded to this
STAGE_RESOLUTION_K = 1e-3
#: ``m1_series`` off (an error-budget switch): an M1 in its LRS with M2 in LRS (the exp
#: mode of the log-domain operators) conducts this much better, so that its drop in
#: series with the diodes vanishes. Applied in the circuit only, to the upper half of
#: M1's range: programming and weights below it are untouched, and the range a
#: configure measures and the LRS it verifies are seen alike
M1_SERIES_OFF_FACTOR = 100.0
M1_SERIES_OFF_STATE = 0.5


def m1_series_factor(dev: PCU, t: float) -> float:
    """The factor ``m1_series`` off gives this PCU's M1 conductance at ``t``."""
    p = dev.m1.p
    upper = dev.m1.conductance(t) - p.g_min >= M1_SERIES_OFF_STATE * p.g_range
    return M1_SERIES_OFF_FACTOR if upper and dev.m2.lrs else 1.0


#: solutions a simulated bench keeps as starting points (per topology)
SOLUTIONS_KEPT = 4096

#: a reading solves the circuit again once a conductance has moved this much (relative)
#: since the last settle; below it the change is carried to first order, an error of
#: ~1e-6 of the reading (the read noise, ~1e-3, is carried the same way)
RESOLVE_AFTER = 1e-3

#: upper bound on the change of an M1 state (fraction of its range) per integration step
MAX_STATE_STEP = 0.03
MAX_SUBSTEPS = 64
#: V: a substep across which no M1 voltage moved more than this doubles the next one
#: (the switching rate then moved by < 1/80 of itself, e^(1 mV/v0) with v0 = 80 mV)
SUBSTEP_STEADY_V = 1e-3


#: what an SMU output that is off does to its terminal
OFF_HIGH_Z = "z"  # the output relay is open: the terminal is disconnected
OFF_ZERO_V = "v0"  # a voltage source at 0 V, current limited to ``off_limit`` A
OFF_ZERO_I = "i0"  # a current source at 0 A, voltage limited to ``off_limit`` V
OFF_MODES = (OFF_HIGH_Z, OFF_ZERO_V, OFF_ZERO_I)


@dataclass(slots=True)
class SourceState:
    """What one SMU channel applies. ``limit`` is the compliance: A in voltage mode,
    V in current mode.

    With ``output=False`` the terminal is in its off state ``off_mode``: open
    (:data:`OFF_HIGH_Z`, the default, and what a B1500A channel that is off does), or
    held at 0 V up to ``off_limit`` A (:data:`OFF_ZERO_V`: a Keithley 2600 in its
    normal or zero off-mode), or fed 0 A up to ``off_limit`` V (:data:`OFF_ZERO_I`).
    Such a terminal is part of the circuit but it is not *live*: :meth:`live` (and
    :meth:`SimBench.live_outputs`) mean the output is on."""

    output: bool = False
    mode: str = "v"
    level: float = 0.0
    limit: float = 1e-4
    off_mode: str = OFF_HIGH_Z
    off_limit: float = 1e-3

    @property
    def live(self) -> bool:
        return self.output

    @property
    def in_circuit(self) -> bool:
        """True if the terminal drives its node now (on, or off but held at 0)."""
        return self.output or self.off_mode != OFF_HIGH_Z

    def applied(self) -> tuple[bool, float, float]:
        """(voltage mode?, level, limit) as the circuit sees the terminal now."""
        if self.output:
            return self.mode == "v", self.level, self.limit
        return self.off_mode == OFF_ZERO_V, 0.0, self.off_limit


@dataclass(frozen=True, slots=True)
class Reading:
    """A device-level reading of one terminal (no instrument noise)."""

    i: float  # A, out of the terminal's HI into the circuit
    v: float  # V, terminal to ground
    compliance: bool


@dataclass(frozen=True, slots=True)
class RelayEvent:
    """One relay operation, with the outputs that were live on its row at that moment."""

    t: float
    action: str  # "close" or "open"
    crosspoint: Crosspoint
    live_outputs: tuple[str, ...]
    any_live: tuple[str, ...] = ()  # every output live anywhere on the bench at that moment


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a``, no longer writeable (see :func:`labpcu.sim.circuit._by_identity`)."""
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class _Elements:
    """The conductances of one topology as the solver takes them: the device elements
    (M1s, then M2s; their values change with time) and the parasitics after them
    (static). ``vnl``: M1's non-ohmic voltage scale (empty: all ohmic); ``sigma``: each
    device element's read noise (None: off)."""

    a: np.ndarray
    b: np.ndarray
    g_static: np.ndarray  # the parasitics' conductances, zeros where a device goes
    vnl: np.ndarray
    sigma: np.ndarray | None
    n_devices: int


@dataclass
class _Topology:
    """The network for the present site and relay state (rebuilt when they change)."""

    n_nodes: int
    node_of_label: dict[str, int]
    m1: list[tuple[PCU, int, int]]  # device, node n1, node n2
    m2: list[tuple[PCU, int, int]]  # device, node n2, node BL
    dio: Netlist  # diodes only, at the reference temperature (static per topology)
    terminal_node: dict[str, int]
    device_nodes: frozenset[int] = frozenset()  # nodes that some device element touches
    dio_labels: tuple[str, ...] = ()  # "S01.D1", in the order of the diode arrays
    dio_params: tuple[DiodeParams, ...] = ()
    _dio_at: tuple[tuple[float, float, bool], Netlist] | None = None
    _dio_const: tuple[np.ndarray, ...] | None = None
    elements: _Elements | None = None  # built on first solve (SimBench._elements)
    # worked out once per topology (SimBench._step_plan, _record_step, _offset_current):
    #: a voltage step's structure per (stepping nodes, stiff nodes)
    step_plans: dict[tuple[frozenset[int], frozenset[int]], StepPlan] = field(default_factory=dict)
    #: the boundary of a current-forced terminal's nodes
    boundaries: dict[frozenset[int], GroupBoundary] = field(default_factory=dict)
    #: the capacitance each terminal charges (F), and the closed paths' offset current (A)
    capacitance: dict[str, float] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)
    # parasitics (labpcu.sim.parasitics): linear resistors static per topology (series
    # paths, relay leakage), and per terminal node the nodes it drives through its
    # series paths and how many closed columns it reaches (its cable capacitance)
    par_a: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    par_b: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    par_g: np.ndarray = field(default_factory=lambda: np.zeros(0))
    driven: dict[int, frozenset[int]] = field(default_factory=dict)
    paths: dict[int, int] = field(default_factory=dict)

    def diodes_at(self, temperature: float, lux: float, leak: bool) -> Netlist:
        """The diodes at stage temperature ``temperature`` (K) under ``lux`` of lamp
        light, with or without their soft leakage. Cached per :data:`STAGE_RESOLUTION_K`:
        the stage wanders continuously, and a diode's current moves only ≈ 5 % per kelvin,
        so a millikelvin step is far below the read noise."""
        temperature = round(temperature / STAGE_RESOLUTION_K) * STAGE_RESOLUTION_K
        key = (temperature, lux, leak)
        if self._dio_at is not None and self._dio_at[0] == key:
            return self._dio_at[1]
        d, ps = self.dio, self.dio_params
        if self._dio_const is None:  # per-diode constants, once per topology
            self._dio_const = tuple(np.array([getattr(p, f) for p in ps], float)
                                    for f in ("i0", "n", "ea", "responsivity", "i_leak", "v_leak"))
        i0, n, ea, resp, i_leak, v_leak = self._dio_const
        net = Netlist(self.n_nodes)
        net.dio_a, net.dio_k, net.dio_rs, net.dio_gsh = d.dio_a, d.dio_k, d.dio_rs, d.dio_gsh
        net.dio_i0 = saturation_current(i0, n, ea, ps[0].temperature if ps else T_REF_K, temperature)
        net.dio_nvt = n * thermal_voltage(temperature)
        net.dio_iph = resp * lux
        net.dio_ileak = i_leak if leak else np.zeros(len(ps))
        net.dio_vleak = v_leak
        # read-only: the solver then knows these arrays by identity (no hashing per solve)
        for name in ("dio_a", "dio_k", "dio_rs", "dio_gsh", "dio_i0", "dio_nvt", "dio_iph", "dio_ileak", "dio_vleak"):
            setattr(net, name, _read_only(np.asarray(getattr(net, name))))
        self._dio_at = (key, net)
        return net


class SimBench:
    """The simulated wafer on the prober, the switch matrix, and the SMU terminals."""

    def __init__(
        self,
        seed: int = DEFAULT_SEED,
        wiring: SimWiring | None = None,
        site: str | None = None,
        wafer: Wafer | None = None,
        physics: Physics | None = None,
    ) -> None:
        self.seed = int(seed)
        #: conditions and switched-off mechanisms (:mod:`labpcu.sim.physics`)
        self.physics = physics if physics is not None else DEFAULT_PHYSICS
        self.wafer = wafer if wafer is not None else make_wafer(self.seed, self.physics)
        self.stage = StageTemperature(self.physics, self.seed)
        self.wiring = wiring or SimWiring()
        self.lock = threading.RLock()
        self.clock = VirtualClock()
        self.clock.add_listener(self._evolve)
        # runtime noise (read noise, cycle-to-cycle spread, instrument noise)
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5B1E]))
        self._sources: dict[str, SourceState] = {}
        self._closed: set[Crosspoint] = set()
        self._stuck: dict[Crosspoint, bool] = {}
        self._close_counts: Counter[Crosspoint] = Counter()
        self.relay_events: list[RelayEvent] = []
        self._site = self.wafer.sites[site or next(iter(self.wafer.sites))]
        self._topology: _Topology | None = None
        self._v_guess: np.ndarray | None = None
        self._settled: Solution | None = None  # noise-free solution after the last settle
        self._settled_net: Netlist | None = None  # ... and the network it solved
        #: solutions by the sources they were found with (terminal, voltage mode?, level,
        #: limit, each), for this topology
        self._solved: dict[tuple, Solution] = {}
        self.solve_count = 0
        #: record the largest |V| across and |I| through every element at each settled
        #: bias (:attr:`stress`): what safety tests judge, not what a driver sent
        self.track_stress = False
        self.stress: dict[str, tuple[float, float]] = {}
        #: capacitance: the last bias step of each terminal (relaxing; see parasitics.Step)
        self._steps: dict[str, Step] = {}
        self._offsets: dict[Crosspoint, float] = {}  # relay_leakage: offset current per crosspoint

    # ------------------------------------------------------------------ probe
    @property
    def site(self) -> Site:
        return self._site

    def move_to(self, site_id: str) -> None:
        """Move the probe card to another site (the simulated prober is instant)."""
        with self.lock:
            if site_id not in self.wafer.sites:
                raise KeyError(f"no site {site_id!r}; sites are {', '.join(self.wafer.sites)}")
            self._site = self.wafer.sites[site_id]
            self._invalidate()

    def move_to_device(self, device_id: str) -> Site:
        """Move the probe card to the site holding ``device_id``."""
        site = self.wafer.site_of(device_id)
        self.move_to(site.id)
        return site

    def pins(self) -> dict[int, tuple[str, str]]:
        """Probe pin → (pad name, net) at the present site."""
        w = self.wiring
        return {pin: (name, net) for pin, (name, _, net) in site_pins(self.wafer, self._site, w.array_pins, w.quad_pins).items()}

    # ---------------------------------------------------------------- sources
    def source(self, name: str) -> SourceState:
        """The present state of a terminal (created, off, on first use)."""
        state = self._sources.get(name)
        if state is None:
            state = self._sources[name] = SourceState()
            self._invalidate()  # a terminal no row reaches still needs a node
        return state

    def set_source(
        self,
        name: str,
        output: bool | None = None,
        mode: str | None = None,
        level: float | None = None,
        limit: float | None = None,
        off_mode: str | None = None,
        off_limit: float | None = None,
    ) -> None:
        """Change what a terminal applies; unspecified fields keep their value.
        ``off_mode``/``off_limit``: what the terminal does while the output is off
        (see :class:`SourceState`)."""
        with self.lock:
            s = self.source(name)
            was = (s.output, s.mode, s.level, s.limit, s.off_mode, s.off_limit)
            capacitive = self.physics.on("capacitance")
            if capacitive:  # where the step starts from
                before = (s.in_circuit, s.applied())
                v_before = self._dc_voltage(name)
            if off_mode is not None:
                if off_mode not in OFF_MODES:
                    raise ValueError(f"off mode must be one of {OFF_MODES}, not {off_mode!r}")
                s.off_mode = off_mode
            if off_limit is not None:
                if not off_limit > 0:
                    raise ValueError(f"off-state limit must be > 0, not {off_limit!r}")
                s.off_limit = float(off_limit)
            if mode is not None:
                if mode not in ("v", "i"):
                    raise ValueError(f"source mode must be 'v' or 'i', not {mode!r}")
                s.mode = mode
            if level is not None:
                s.level = float(level)
            if limit is not None:
                if not limit > 0:
                    raise ValueError(f"compliance limit must be > 0, not {limit!r}")
                s.limit = float(limit)
            if output is not None:
                s.output = bool(output)
            if (s.output, s.mode, s.level, s.limit, s.off_mode, s.off_limit) == was:
                return  # an instrument re-sending a setting changes nothing in the circuit
            self._settled = None
            if s.in_circuit and self.reaches_devices(name):
                # the new bias reaches the devices at once: filament switching takes
                # nanoseconds, far less than any source's settling time
                self.settle()
                if capacitive and before != (s.in_circuit, s.applied()):
                    self._record_step(name, v_before, before[1])
            elif capacitive:
                self._steps.pop(name, None)

    def _dc_voltage(self, name: str) -> float:
        """The DC voltage of a terminal's node as last settled (0 if never solved)."""
        if self._settled is not None:
            node = self.topology.terminal_node.get(name)
            if node is not None and node < len(self._settled.v):
                return float(self._settled.v[node])
        step = self._steps.get(name)
        return step.v_dc if step is not None else 0.0

    #: capacitance: (topology, DC node voltages) after the last recorded step, what the
    #: next voltage step's internal nodes start from (see :meth:`_record_step`)
    _cap_nodes: tuple[object, np.ndarray] | None = None

    def _record_step(self, name: str, v_before: float, applied_before: tuple[bool, float, float]) -> None:
        """capacitance: the terminal's node was at ``v_before`` and its DC value is now
        the settled one (see :mod:`labpcu.sim.parasitics` for the model).

        Current mode: the node lags; it relaxes with τ = R·C, C what the terminal
        charges (cable paths and the device elements on its pads), R the node's
        small-signal resistance into the circuit (a current source charging through a
        diode's knee is slower: the chord ΔV/ΔI); what is left of an earlier step adds
        to the lag. Voltage mode: the source charges its cables at once; the elements
        and the internal nodes behind them relax (:class:`~labpcu.sim.parasitics.StepPlan`), on top of
        what is left of the earlier step's poles."""
        topo, sol = self.topology, self._settled
        node = topo.terminal_node[name]
        group = topo.driven.get(node, frozenset({node}))
        c = self._terminal_capacitance(topo, name)
        before = self._cap_nodes
        if sol is not None:
            self._cap_nodes = (topo, sol.v)
        if sol is None or c <= 0:
            self._steps.pop(name, None)
            return
        t = self.clock.now()
        v_dc = float(sol.v[node])
        old = self._steps.get(name)
        dv = v_dc - v_before
        net = self._settled_net
        v_forcing, level, _ = self._sources[name].applied()
        if v_forcing:
            stiff = {0}
            for k, n in enumerate(self._in_circuit()):
                if self._sources[n].applied()[0] and not sol.src_in_limit[k] or n == name:
                    tn = topo.terminal_node[n]
                    stiff |= topo.driven.get(tn, frozenset({tn}))
            v_old = before[1] if before is not None and before[0] is topo else None
            poles = self._step_plan(topo, net, group, frozenset(stiff)).poles(net, sol.v, v_old, dv)
            if old is not None and old.topology is topo:
                poles += old.poles_at(t)
            poles = [(a, tau) for a, tau in poles if abs(a) > NEGLIGIBLE_CURRENT and tau > 0]
            slowest = max((tau for _, tau in poles), default=0.0)
            self._steps[name] = Step(t, 0.0, c, slowest, topo, v_dc, tuple(poles))
            return
        residual = old.lag_at(t) if old is not None and old.topology is topo else 0.0
        boundary = topo.boundaries.get(group)
        if boundary is None:
            boundary = topo.boundaries[group] = GroupBoundary(net, group)
        r = 1.0 / (boundary.conductance(net, sol.v) + GMIN * len(group))
        if not applied_before[0] and level != applied_before[1] and dv:
            r = max(r, abs(dv / (level - applied_before[1])))
        self._steps[name] = Step(t, residual + dv, c, r * c, topo, v_dc)

    def _terminal_capacitance(self, topo: _Topology, name: str) -> float:
        """What a terminal charges when it steps (:func:`terminal_capacitance`), per topology."""
        c = topo.capacitance.get(name)
        if c is None:
            node = topo.terminal_node[name]
            elements = [(a, b) for _, a, b in topo.m1 + topo.m2] + list(zip(topo.dio.dio_a.tolist(),
                                                                              topo.dio.dio_k.tolist()))
            c = topo.capacitance[name] = terminal_capacitance(topo.paths.get(node, 0),
                                                              topo.driven.get(node, frozenset({node})), elements)
        return c

    def _step_plan(self, topo: _Topology, net: Netlist, group: frozenset[int], stiff: frozenset[int]) -> StepPlan:
        """The structure of a voltage step of the nodes ``group`` with these nodes stiff."""
        key = (group, stiff)
        plan = topo.step_plans.get(key)
        if plan is None:
            extra = {tn: SMU_CABLE_CAPACITANCE + k * COLUMN_PATH_CAPACITANCE for tn, k in topo.paths.items()
                     if tn not in stiff and k}
            plan = topo.step_plans[key] = StepPlan(net, group, stiff, len(topo.m1) + len(topo.m2),
                                              list(topo.driven.values()), extra)
        return plan

    def reaches_devices(self, name: str) -> bool:
        """True if the terminal's net touches any device under the probes now."""
        topo = self.topology
        return topo.terminal_node.get(name) in topo.device_nodes

    def live_outputs(self) -> list[str]:
        """Terminals whose output is on (an off terminal held at 0 V is not live)."""
        return [n for n, s in self._sources.items() if s.output]

    # ----------------------------------------------------------------- matrix
    def _check_crosspoint(self, cp: Crosspoint) -> Crosspoint:
        slot, row, col = (int(x) for x in cp)
        if slot not in self.wiring.slots or not (1 <= row <= MATRIX_ROWS) or not (1 <= col <= MATRIX_COLUMNS):
            raise ValueError(f"no crosspoint slot {slot} row {row} column {col} on this matrix")
        return (slot, row, col)

    def _record(self, action: str, cp: Crosspoint) -> None:
        term = self.wiring.rows.get((cp[0], cp[1]))
        live = tuple(t for t in [term] if t is not None and self.source(t).output)
        self.relay_events.append(RelayEvent(self.clock.now(), action, cp, live, tuple(self.live_outputs())))

    def close_relays(self, crosspoints: Iterable[Crosspoint]) -> None:
        with self.lock:
            for cp in crosspoints:
                cp = self._check_crosspoint(cp)
                if cp not in self._closed:
                    self._closed.add(cp)
                    self._close_counts[cp] += 1
                    self._record("close", cp)
            self._invalidate()

    def open_relays(self, crosspoints: Iterable[Crosspoint]) -> None:
        with self.lock:
            for cp in crosspoints:
                cp = self._check_crosspoint(cp)
                if cp in self._closed:
                    self._closed.discard(cp)
                    self._record("open", cp)
            self._invalidate()

    def open_all_relays(self) -> None:
        self.open_relays(sorted(self._closed))

    def closed_relays(self) -> set[Crosspoint]:
        """What the matrix believes is closed (a stuck relay is not reported)."""
        return set(self._closed)

    def relay_close_count(self, cp: Crosspoint) -> int:
        return self._close_counts[self._check_crosspoint(cp)]

    def stick_relay(self, cp: Crosspoint, closed: bool = True) -> None:
        """Fault: the relay stays physically closed (welded) or open, whatever is commanded."""
        with self.lock:
            self._stuck[self._check_crosspoint(cp)] = bool(closed)
            self._invalidate()

    def unstick_relay(self, cp: Crosspoint) -> None:
        with self.lock:
            self._stuck.pop(self._check_crosspoint(cp), None)
            self._invalidate()

    def physically_closed(self) -> set[Crosspoint]:
        closed = set(self._closed)
        for cp, state in self._stuck.items():
            (closed.add if state else closed.discard)(cp)
        return closed

    # --------------------------------------------------------------- topology
    def _invalidate(self) -> None:
        self._topology = None
        self._v_guess = None
        self._settled = None
        self._solved = {}

    def _build(self) -> _Topology:
        uf: UnionFind[str] = UnionFind()
        for (slot, row), term in self.wiring.rows.items():
            uf.union(f"T:{term}", f"R:{slot}:{row}")
        pins = self.pins()
        closed = self.physically_closed()
        # series_resistance: a column a closed relay routes reaches its pad through the
        # path's resistance instead of merging with it (unrouted columns stay merged)
        routed = {(s, c) for s, _, c in closed} if self.physics.on("series_resistance") else set()
        series: list[tuple[str, str]] = []
        for (slot, col), pin in self.wiring.columns.items():
            if pin in pins:
                if (slot, col) in routed:
                    series.append((f"C:{slot}:{col}", f"N:{pins[pin][1]}"))
                else:
                    uf.union(f"N:{pins[pin][1]}", f"C:{slot}:{col}")
        for slot, row, col in closed:
            uf.union(f"R:{slot}:{row}", f"C:{slot}:{col}")
        node_of_root: dict[str, int] = {}

        def node(label: str) -> int:
            root = uf.find(label)
            if root not in node_of_root:
                node_of_root[root] = len(node_of_root) + 1  # 0 is ground
            return node_of_root[root]

        m1: list[tuple[PCU, int, int]] = []
        m2: list[tuple[PCU, int, int]] = []
        dio_rows: list[tuple[int, int, float, float, float, float]] = []
        dio_labels: list[str] = []
        dio_params: list[DiodeParams] = []
        for did in self._site.devices:
            dev = self.wafer.device(did)
            nodes = {n: node(f"N:{net_label(self.wafer, did, n)}") for n in ("WL", "BL", "n1", "n2")}
            for el in ELEMENTS:
                a, b = nodes[el.a], nodes[el.b]
                if el.kind == "diode":
                    p = dev.diode(el.name)
                    dio_rs = (a, b, p.i0, p.nvt, p.rs, 1.0 / p.rsh)
                    dio_rows.append(dio_rs)
                    dio_labels.append(f"{did}.{el.name}")
                    dio_params.append(p)
                elif el.kind == "m1":
                    m1.append((dev, a, b))
                else:
                    m2.append((dev, a, b))
        terminal_node = {t: node(f"T:{t}") for t in sorted(set(self.wiring.rows.values()) | set(self._sources))}
        par = self._parasitic_network(node, series, closed, pins)
        n_nodes = len(node_of_root) + 1
        dio = Netlist(n_nodes)
        if dio_rows:
            cols = list(zip(*dio_rows))
            dio.dio_a = np.array(cols[0], int)
            dio.dio_k = np.array(cols[1], int)
            dio.dio_i0, dio.dio_nvt, dio.dio_rs, dio.dio_gsh = (np.array(c, float) for c in cols[2:])
        labels = {lab: node_of_root[uf.find(lab)] for lab in uf if uf.find(lab) in node_of_root}
        device_nodes = frozenset(
            [n for _, a, b in m1 + m2 for n in (a, b)] + [int(x) for x in dio.dio_a] + [int(x) for x in dio.dio_k]
        )
        # a terminal whose series path ends on a device pad reaches the devices
        device_nodes |= frozenset(t for t, group in par.driven.items() if group & device_nodes)
        return _Topology(n_nodes, labels, m1, m2, dio, terminal_node, device_nodes, tuple(dio_labels),
                         tuple(dio_params), par_a=par.a, par_b=par.b, par_g=par.g, driven=par.driven,
                         paths=par.paths)

    def _parasitic_network(self, node: Callable[[str], int], series: list[tuple[str, str]],
                           closed: set[Crosspoint], pins: dict[int, tuple[str, str]]) -> ParasiticNetwork:
        """The series path resistors (column node to pad node) and the open crosspoints'
        leakage (row node to every column that reaches a pad), merged per node pair."""
        g_of: dict[tuple[int, int], float] = {}
        driven: dict[int, set[int]] = {}
        paths: Counter[int] = Counter()
        for col_label, pad_label in series:
            a, b = node(col_label), node(pad_label)
            driven.setdefault(a, {a}).add(b)
            paths[a] += 1
            if a != b:
                key = (min(a, b), max(a, b))
                g_of[key] = g_of.get(key, 0.0) + 1.0 / PATH_RESISTANCE
        if self.physics.on("capacitance") and not self.physics.on("series_resistance"):  # merged paths
            for slot, row, col in closed:
                if self.wiring.columns.get((slot, col)) in pins:
                    paths[node(f"R:{slot}:{row}")] += 1
        if self.physics.on("relay_leakage"):
            for slot, row in self.wiring.rows:
                r = node(f"R:{slot}:{row}")
                for (cslot, col), pin in self.wiring.columns.items():
                    if cslot != slot or pin not in pins or (slot, row, col) in closed:
                        continue
                    c = node(f"C:{slot}:{col}")
                    if c != r:
                        key = (min(r, c), max(r, c))
                        g_of[key] = g_of.get(key, 0.0) + 1.0 / RELAY_ISOLATION_OHM
        keys = list(g_of)
        return ParasiticNetwork(np.array([k[0] for k in keys], int), np.array([k[1] for k in keys], int),
                                np.array([g_of[k] for k in keys], float),
                                {t: frozenset(group) for t, group in driven.items()}, dict(paths))

    @property
    def topology(self) -> _Topology:
        if self._topology is None:
            self._topology = self._build()
        return self._topology

    # ----------------------------------------------------------------- solving
    def _elements(self, topo: _Topology) -> _Elements:
        """The memristors' and parasitics' static arrays for ``topo`` (kept with it)."""
        if topo.elements is None:
            n1, n2 = len(topo.m1), len(topo.m2)
            devices = topo.m1 + topo.m2
            nonohmic = n1 and self.physics.on("m1_nonohmic")  # M1: I = g·v_nl·sinh(V/v_nl); M2 stays ohmic
            vnl = (np.concatenate([[dev.m1.p.v_nl for dev, _, _ in topo.m1], np.full(n2 + len(topo.par_g), np.inf)])
                   if nonohmic else np.zeros(0))
            sigma = None
            if (n1 + n2) and self.physics.on("read_noise"):
                sigma = np.array([dev.m1.p.read_noise for dev, _, _ in topo.m1] +
                                 [dev.m2.p.read_noise for dev, _, _ in topo.m2])
            topo.elements = _Elements(
                _read_only(np.concatenate([np.array([x for _, x, _ in devices], int), topo.par_a]).astype(int)),
                _read_only(np.concatenate([np.array([y for _, _, y in devices], int), topo.par_b]).astype(int)),
                np.concatenate([np.zeros(n1 + n2), topo.par_g]), _read_only(vnl), sigma, n1 + n2)
        return topo.elements

    def _conductances(self, topo: _Topology, t: float) -> np.ndarray:
        """Every conductance of the network at ``t``, noise-free: M1s, M2s, parasitics."""
        el = self._elements(topo)
        g = el.g_static.copy()
        if self.physics.on("m1_series"):
            g[:len(topo.m1)] = [dev.m1.conductance(t) for dev, _, _ in topo.m1]
        else:
            g[:len(topo.m1)] = [dev.m1.conductance(t) * m1_series_factor(dev, t) for dev, _, _ in topo.m1]
        g[len(topo.m1):el.n_devices] = [1.0 / dev.m2.resistance(t) for dev, _, _ in topo.m2]
        return g

    def _read_noise(self, topo: _Topology) -> np.ndarray | None:
        """This reading's relative conductance fluctuation of each device element (None:
        read noise is off)."""
        sigma = self._elements(topo).sigma
        if sigma is None:
            return None
        return np.maximum(1.0 + sigma * self.rng.standard_normal(len(sigma)), 0.0) - 1.0

    def _netlist(self) -> tuple[Netlist, list[str]]:
        """The circuit as it is now, noise-free (a reading adds its noise to first
        order, :meth:`measure`), and the terminals in it in source order."""
        topo = self.topology
        t = self.clock.now()
        net = Netlist(topo.n_nodes)
        d = self._diodes(topo, t)
        net.dio_a, net.dio_k, net.dio_i0, net.dio_nvt, net.dio_rs, net.dio_gsh = (
            d.dio_a, d.dio_k, d.dio_i0, d.dio_nvt, d.dio_rs, d.dio_gsh,
        )
        net.dio_iph, net.dio_ileak, net.dio_vleak = d.dio_iph, d.dio_ileak, d.dio_vleak
        el = self._elements(topo)
        net.res_a, net.res_b, net.res_g, net.res_vnl = el.a, el.b, self._conductances(topo, t), el.vnl
        names = self._in_circuit()
        if names:
            applied = [self._sources[n].applied() for n in names]
            net.src_node = np.array([topo.terminal_node[n] for n in names], int)
            net.src_is_v = np.array([a[0] for a in applied], bool)
            net.src_level = np.array([a[1] for a in applied], float)
            net.src_limit = np.array([a[2] for a in applied], float)
        return net, names

    def stage_temperature(self, t: float | None = None) -> float:
        """The stage temperature (K) at bench time ``t`` (default: now)."""
        return self.stage.at(self.clock.now() if t is None else t)

    def _diodes(self, topo: _Topology, t: float) -> Netlist:
        ph = self.physics
        return topo.diodes_at(self.stage.at(t), ph.light_lux, ph.on("diode_leakage"))

    def solve(self) -> tuple[Solution, list[str]]:
        """Solve the circuit as it is now; returns the solution and the names of the
        terminals in the circuit (on, or off and held at 0: :attr:`SourceState.in_circuit`)
        in the order of ``Solution.src_current``."""
        sol, names, _ = self._solve()
        return sol, names

    def _solve(self) -> tuple[Solution, list[str], Netlist]:
        """:meth:`solve`, and the network it solved."""
        with self.lock:
            self.topology  # build first, so _netlist node numbers are stable
            net, names = self._netlist()
            guess = self._v_guess if self._v_guess is not None and len(self._v_guess) == net.n_nodes else None
            # a solution found before with every source as it is now is the best start,
            # voltages and compliance states: only the devices have moved since (an M1
            # pulse's substeps, drift), and protocols revisit source states (a VMM's
            # bit planes, an input grid)
            sources = tuple(zip(names, net.src_is_v.tolist(), net.src_level.tolist(), net.src_limit.tolist()))
            before = self._solved.get(sources)
            if before is not None:
                guess = before.v
            sol = solve(net, guess, hint=before)
            self.solve_count += 1
            self._v_guess = sol.v
            if len(self._solved) >= SOLUTIONS_KEPT:
                self._solved.clear()
            self._solved[sources] = sol
            return sol, names, net

    def settle(self) -> Solution:
        """Apply instantaneous events (M2 set/reset) caused by the present bias."""
        with self.lock:
            if self._settled is not None:
                return self._settled
            for _ in range(8):
                sol, _, net = self._solve()
                if self.track_stress:
                    self._record_stress(sol)
                if not self._switch_m2(sol):
                    break
            self._settled, self._settled_net = sol, net
            return sol

    def _settled_now(self) -> tuple[Solution, np.ndarray]:
        """The settled solution, solved again if the circuit has moved since (drift,
        relaxation, the stage temperature) by more than :data:`RESOLVE_AFTER` of any
        conductance; less is carried to first order by :meth:`measure`. Also returns
        the conductances now."""
        sol = self.settle()
        net = self._settled_net
        topo = self.topology
        t = self.clock.now()
        g = self._conductances(topo, t)
        if (net is None or self._diodes(topo, t).dio_i0 is not net.dio_i0
                or np.any(np.abs(g - net.res_g) > RESOLVE_AFTER * np.abs(net.res_g))):
            self._settled = None
            sol = self.settle()
        return sol, g

    def _record_stress(self, sol: Solution) -> None:
        """Fold the voltage across and current through each element into :attr:`stress`."""
        topo = self.topology
        t = self.clock.now()
        seen: list[tuple[str, float, float]] = []
        nonohmic = self.physics.on("m1_nonohmic")
        series_on = self.physics.on("m1_series")
        for dev, a, b in topo.m1:
            v = float(sol.v[a] - sol.v[b])
            scale = 1.0 if series_on else m1_series_factor(dev, t)
            seen.append((f"{dev.id}.M1", abs(v), abs(scale * dev.m1.current(v, t, nonohmic))))
        for dev, a, b in topo.m2:
            v = float(sol.v[a] - sol.v[b])
            seen.append((f"{dev.id}.M2", abs(v), abs(v / dev.m2.resistance(t))))
        d = self._diodes(topo, t)
        if len(d.dio_a):
            vd = sol.v[d.dio_a] - sol.v[d.dio_k]
            i, _ = d.diode_currents(vd)
            seen += [(label, abs(float(v)), abs(float(c))) for label, v, c in zip(topo.dio_labels, vd, i)]
        for label, v, i in seen:
            old_v, old_i = self.stress.get(label, (0.0, 0.0))
            if v > old_v or i > old_i:
                self.stress[label] = (max(v, old_v), max(i, old_i))

    def _switch_m2(self, sol: Solution) -> bool:
        changed = False
        t = self.clock.now()
        stochastic = self.physics.on("m2_stochastics")  # forming, c2c thresholds, endurance
        rng = self.rng if stochastic else None
        for dev, a, b in self.topology.m2:
            v = float(sol.v[a] - sol.v[b])
            if dev.m2.wants_switch(v, stochastic):
                if dev.m2.lrs:
                    dev.m2.reset(rng)
                else:
                    # form the filament, find the current the circuit lets through it
                    dev.m2.set(t, rng)
                    trial, _ = self.solve()
                    dev.m2.fix_strength((trial.v[a] - trial.v[b]) / dev.m2.resistance(t))
                changed = True
        return changed

    def in_limit(self, name: str) -> bool:
        """True if the terminal's source sits at its compliance limit now. A state of
        the source, not a reading: judged on the settled, noise-free circuit."""
        with self.lock:
            sol = self.settle()
            names = self._in_circuit()
            return name in names and bool(sol.src_in_limit[names.index(name)])

    def _in_circuit(self) -> list[str]:
        """Terminals that drive their node, in the order of ``Solution.src_current``."""
        return [n for n, s in self._sources.items() if s.in_circuit]

    def measure(self, name: str, duration: float = 0.0) -> Reading:
        """Read one terminal now (device read noise included), then let ``duration``
        seconds of integration pass under the present bias."""
        with self.lock:
            settled = self.settle()
            src = self.source(name)
            topo = self.topology
            if src.in_circuit:  # on, or off but holding its terminal at 0
                sol, g = self._settled_now()
                net = self._settled_net
                k = self._in_circuit().index(name)
                i, v = float(sol.src_current[k]), float(sol.src_voltage[k])
                # what moved since the settle, and this reading's device noise: to first order
                noise = self._read_noise(topo)
                if noise is not None:
                    g[:len(noise)] *= 1.0 + noise
                dg = g - net.res_g
                if np.any(dg):
                    dv, di = conductance_response(net, sol, dg)
                    i += float(di[k])
                    v += float(dv[topo.terminal_node[name]])
                reading = self._parasitic_reading(name, src, Reading(i, v, bool(sol.src_in_limit[k])))
            else:  # a high-Z terminal only senses its node: no need to solve again
                sol = settled
                node = topo.terminal_node.get(name)
                v = float(sol.v[node]) if node is not None and node < len(sol.v) else 0.0
                reading = Reading(0.0, v, False)
            if duration > 0:
                self.clock.advance(duration)
            return reading

    def _parasitic_reading(self, name: str, src: SourceState, reading: Reading) -> Reading:
        """What the parasitics add to a DC reading of an in-circuit terminal: the
        transient left from its last step (capacitance) and the closed paths' offset
        current (relay_leakage). A source at its limit reads its DC state."""
        v_forcing, _, limit = src.applied()
        i, v = reading.i, reading.v
        step = self._steps.get(name) if self.physics.on("capacitance") else None
        if step is not None and step.topology is self.topology and not reading.compliance:
            t = self.clock.now()
            if v_forcing:  # the displacement current still charging the node
                i = min(max(i + step.current_at(t), -limit), limit)
            else:  # the node's voltage still lags its DC value
                v -= step.lag_at(t)
        if v_forcing and self.physics.on("relay_leakage"):
            i += self._offset_current(name)
        if i == reading.i and v == reading.v:
            return reading
        return Reading(i, v, reading.compliance)

    def _offset_current(self, name: str) -> float:
        """The offset current of every closed crosspoint on the terminal's rows (A), per
        topology (the relays it depends on are the topology's)."""
        topo = self.topology
        found = topo.offsets.get(name)
        if found is None:
            found = topo.offsets[name] = self._offset_sum(name)
        return found

    def _offset_sum(self, name: str) -> float:
        total = 0.0
        for slot, row, col in self.physically_closed():
            if self.wiring.rows.get((slot, row)) == name:
                cp = (slot, row, col)
                if cp not in self._offsets:
                    self._offsets[cp] = offset_current(self.seed, cp)
                total += self._offsets[cp]
        return total

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # --------------------------------------------------------------- evolution
    def _evolve(self, t0: float, dt: float) -> None:
        """Clock listener: integrate M1 state changes under the bias held over [t0, t0+dt]."""
        with self.lock:
            if not any(s.output and s.level != 0.0 for s in self._sources.values()):
                return  # nothing biased: only closed-form drift, nothing to integrate
            sol = self.settle()
            m1 = self.topology.m1
            v = sol.v
            volts = [float(v[a] - v[b]) for _, a, b in m1]
            if self.physics.on("m1_read_disturb"):  # slow sub-threshold motion, whole interval at once
                for (dev, _, _), x in zip(m1, volts):
                    if dev.m1.disturb(x, dt, t0):
                        self._settled = None
            rates = [dev.m1.drive_rate(x) for (dev, _, _), x in zip(m1, volts)]
            if not any(rates):
                return
            kinetics = self.physics.on("m1_kinetics")
            spreads = [dev.m1.draw_spread(self.rng) if r else 0.0 for (dev, _, _), r in zip(m1, rates)]
            worst = max(abs(r) * s for r, s in zip(rates, spreads))
            n = int(min(MAX_SUBSTEPS, max(1, math.ceil(worst * dt / MAX_STATE_STEP))))
            # each substep holds the voltages found at its start; the closed form per
            # substep is exact for a constant voltage, so substeps only follow how the
            # state moves the voltages: while they barely move, the next one is doubled
            h, t, end = dt / n, t0, t0 + dt
            while True:
                h = min(h, end - t)
                for (dev, _, _), v, s in zip(m1, volts, spreads):
                    if s:
                        dev.m1.apply(v, h, t, s, kinetics)
                self._settled = None
                t += h
                if end - t <= 1e-12 * dt:
                    break
                sol = self.settle()
                now = [float(sol.v[a] - sol.v[b]) for _, a, b in m1]
                if max(abs(x - y) for x, y in zip(now, volts)) < SUBSTEP_STEADY_V:
                    h *= 2.0
                volts = now
