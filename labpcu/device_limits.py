"""Limits across each device element, given every source the relays connect.

A per-terminal limit is not enough: +1.5 V on CL1 and −1.5 V on CL2 put 3 V across M1
while each level is within M1's 1.5 V. The Bench therefore bounds what every element
(D1, M1, M2 of each PCU under the probes) can see, from the levels of *all* terminals
the matrix joins to the site, without knowing any device state:

* **Voltage.** The elements are passive and monotone (more voltage, more current, zero
  at zero), so a node no source drives sits between the lowest and highest level of
  the sources it reaches through undriven nodes (the maximum principle). Each net gets
  an interval, and an element between nets ``a`` and ``b`` sees at most
  ``max(hi_a − lo_b, hi_b − lo_a)``. A connected source whose output is off counts as
  0 V if it holds 0 V when off (a 2600 in its normal off-mode) and as absent if its
  output relay opens (a B1500A): its net then floats between the other sources, and
  taking it for 0 V would under-estimate (found by the fuzz test: M1 saw 1.87 V
  between +1 V on CL1 and a BL pulled to −1 V, with an off B1500A on CL2).
* **Current.** Passive elements make no circulating currents and current only flows
  downhill, so the current through an element is part of the total flow from the
  terminals that source current to those that sink it. That flow is at most half the
  sum of every terminal's capability (compliance in voltage mode, the level in
  current mode, the off-state limit of an output that is off), and at any instant at
  most what the terminals above the lowest level can push, and what those below the
  highest can take.
  Nothing flows when every terminal sits at one voltage, nor through a dead end (a
  branch that reaches a single driven net). The bound is applied to elements between
  driven nets and in the series chain of one PCU between them; through sneak paths
  that cross several PCUs of an array (undriven nets spanning several devices) only
  the voltage bound is applied, since the compliances alone would forbid every array
  measurement.

* **Series resistance.** Each terminal reaches its pads through a path (cables, the
  3730's relay, the probe contact), so a pad is not at its terminal's level but off by
  the I·R of the path. The voltage bound therefore widens each terminal's level by
  :data:`PATH_RESISTANCE` × the most current its path can carry at that instant (its
  capability, what the other terminals can take or give, and the component's flow
  bound below; the flow bound alone for a terminal on several nets, whose paths can
  carry current from one pad to another), clipped to
  the lowest and highest level of the component: every node of a passive network lies
  between its sources (the terminal at the top only pushes current out, so its pad
  sits below its level; the bottom one's above), so only terminals in between widen.

Terminals with a range (a sweep, a program-and-verify loop, a current source within
its voltage compliance) are examined at every instant where the order of the levels
can change; current sources pushing current in are never all that sits at the lowest
level (that current would flow uphill). Both bounds are checked for each element against the bench file's limit for its type,
before a level is sent (:meth:`ElementGuard.check`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import product

import numpy as np

from labpcu.benchfile import Limits
from labpcu.instruments.errors import LimitError
from labpcu.instruments.roles import OFF, TerminalState
from labpcu.unionfind import UnionFind
from labpcu.sim.pcu import ELEMENTS
from labpcu.sim.wafer import Site, Wafer
from labpcu.sim.wiring import net_label

#: Ω, the most resistance between a terminal and a pad it reaches: the 3730 relay path
#: (< 1 Ω, data sheet), 3 m of cable (0.3 Ω), a probe tip on a gold pad (1–10 Ω depending
#: on force and wear; the upper end, so that a worn tip is still covered). The simulated
#: bench's typical path is 6.3 Ω (labpcu.sim.parasitics, not imported: the guard is
#: bench-level and must hold for a real bench).
PATH_RESISTANCE = 1.0 + 0.3 + 10.0
#: relative slack on a limit (rounding of levels sent as text)
_SLACK = 1e-9
#: most instants examined per check (beyond, ranged terminals are taken at their ends)
_MAX_INSTANTS = 4096


@dataclass(frozen=True, slots=True)
class Element:
    """One device element under the probes: which PCU, which element, its type and
    the two circuit nets it joins."""

    device: str
    name: str  # D1, M1, M2
    kind: str  # diode, m1, m2: the bench file's device types
    a: str
    b: str

    @property
    def label(self) -> str:
        return f"{self.device}.{self.name}"




def site_elements(wafer: Wafer, site: Site) -> list[Element]:
    """Every element of every PCU at ``site``, with the nets it joins."""
    out = []
    for did in site.devices:
        for el in ELEMENTS:
            out.append(Element(did, el.name, el.kind, net_label(wafer, did, el.a), net_label(wafer, did, el.b)))
    return out


#: envelopes of proven-safe states an :class:`ElementGuard` keeps per kind of states
_ENVELOPES_KEPT = 16


def _within(state: Mapping[str, TerminalState], envelope: Mapping[str, TerminalState]) -> bool:
    """True if every terminal's interval lies in the envelope's and its current is no
    larger (the kinds, live/push/floating, are equal by construction)."""
    for t, s in state.items():
        e = envelope[t]
        if s.v_lo < e.v_lo or s.v_hi > e.v_hi or s.current > e.current:
            return False
    return True


def _union(s: TerminalState, e: TerminalState) -> TerminalState:
    """The smallest state of this kind covering both."""
    return TerminalState(min(s.v_lo, e.v_lo), max(s.v_hi, e.v_hi), max(s.current, e.current), s.live, s.push,
                         s.floating)


class ElementGuard:
    """The element limits of one site and one set of connections.

    Built when the relays change (:meth:`Bench.connect`); :meth:`check` runs before
    every level, output or sweep, with the state of every connected terminal. Which
    terminals drive their nets depends on the states: an output that opens its relay
    when off (a B1500A) leaves its net floating, between whatever the other sources
    put around it, so the nets and regions are worked out per set of driving
    terminals (kept, since that set changes only when an output turns on or off).
    """

    def __init__(self, elements: Iterable[Element], limits: Mapping[str, Limits],
                 connections: Mapping[str, Iterable[str]], path_resistance: float = PATH_RESISTANCE) -> None:
        """``connections``: terminal → the nets its pads reach; ``path_resistance`` (Ω):
        the most series resistance between a terminal and each pad (see the module
        docstring)."""
        self.limits = dict(limits)
        self.all_elements = list(elements)
        self.terminal_nets = {t: frozenset(nets) for t, nets in connections.items()}
        self.path_resistance = float(path_resistance)
        self._structures: dict[frozenset[str], _Structure] = {}
        #: per kind of states, envelopes proven safe (and whether each may still widen)
        self._envelopes: dict[tuple, list[tuple[dict[str, TerminalState], bool]]] = {}

    @property
    def terminals(self) -> frozenset[str]:
        return frozenset(self.terminal_nets)

    def structure(self, driving: frozenset[str]) -> _Structure:
        found = self._structures.get(driving)
        if found is None:
            nets = {t: n for t, n in self.terminal_nets.items() if t in driving}
            found = self._structures[driving] = _Structure(self.all_elements, self.limits, nets, self.path_resistance)
        return found

    def _driving(self, states: Mapping[str, TerminalState]) -> frozenset[str]:
        return frozenset(t for t in self.terminal_nets if not states.get(t, OFF).floating)

    def bounds(self, states: Mapping[str, TerminalState]) -> dict[str, tuple[float, float]]:
        """Element label → (largest |V| across it, largest |I| through it); elements
        no driving terminal reaches see nothing."""
        found = self.structure(self._driving(states)).bounds(states)
        return {e.label: found.get(e.label, (0.0, 0.0)) for e in self.all_elements}

    def check(self, states: Mapping[str, TerminalState], changing: str = "") -> None:
        """Raise :class:`LimitError` (one line) if any element could see more than its
        type's limit with these terminal states.

        What was proven safe is remembered, since this runs before every level a
        protocol sets. The bounds only grow as a terminal's voltage interval widens or
        the current it can drive rises (a ranged state is checked at every instant it
        allows), so states are proven in *envelopes*: per kind of states (which
        terminals are live, push current, float), the union of the intervals and the
        largest currents seen, widened as new states come. A state inside an envelope
        is safe without a check; a protocol's many levels cost a few checks."""
        shape = tuple(sorted((t, s.live, s.push, s.floating) for t, s in states.items()))
        envelopes = self._envelopes.setdefault(shape, [])
        if any(_within(states, e) for e, _ in envelopes):
            return
        if envelopes and envelopes[-1][1]:  # try to widen the newest envelope to this state
            wide = {t: _union(s, envelopes[-1][0][t]) for t, s in states.items()}
            try:
                self._check_now(wide, changing)
            except LimitError:
                envelopes[-1] = (envelopes[-1][0], False)  # it cannot widen: leave it
            else:
                envelopes[-1] = (wide, True)
                return
        self._check_now(states, changing)  # the state alone (raises if unsafe)
        if len(envelopes) >= _ENVELOPES_KEPT:
            envelopes.pop(0)
        envelopes.append((dict(states), True))

    def _check_now(self, states: Mapping[str, TerminalState], changing: str) -> None:
        self.structure(self._driving(states)).check(states, changing)

    def addressed_kinds(self) -> set[str]:
        """The element types the connection addresses (every connected terminal driving)."""
        return self.structure(frozenset(self.terminal_nets)).addressed_kinds()


class _Structure:
    """The nets, regions and bounding terminals for one set of driving terminals."""

    def __init__(self, elements: Iterable[Element], limits: Mapping[str, Limits],
                 connections: Mapping[str, Iterable[str]], path_resistance: float = PATH_RESISTANCE) -> None:
        """``connections``: driving terminal → the nets its pads reach."""
        self.limits = dict(limits)
        self.path_resistance = float(path_resistance)
        self.terminal_nets = {t: frozenset(nets) for t, nets in connections.items()}
        driven: dict[str, list[str]] = {}
        for t, nets in self.terminal_nets.items():
            for n in nets:
                driven.setdefault(n, []).append(t)
        self.driven = driven
        # only elements in a component that some terminal reaches can see anything
        all_elements = list(elements)
        comp = _components(all_elements)
        reached = {comp[n] for n in driven if n in comp}
        self.elements = [e for e in all_elements if comp[e.a] in reached]
        self.component = {e.label: comp[e.a] for e in self.elements}
        self.component_terminals: dict[str, set[str]] = {}
        for n, ts in driven.items():
            if n in comp:
                self.component_terminals.setdefault(comp[n], set()).update(ts)
        # floating nets grouped into regions joined through undriven nets; each region
        # is bounded by the terminals on the driven nets around it
        floating = [e for e in self.elements if e.a not in driven and e.b not in driven]
        region = _components(floating)
        self.boundary: dict[str, set[str]] = {}
        boundary_nets: dict[str, set[str]] = {}
        for e in self.elements:
            for x, y in ((e.a, e.b), (e.b, e.a)):
                if x not in driven and y in driven:
                    self.boundary.setdefault(region.get(x, x), set()).update(driven[y])
                    boundary_nets.setdefault(region.get(x, x), set()).add(y)
        self.region = region
        region_devices: dict[str, set[str]] = {}
        for e in self.elements:
            for n in (e.a, e.b):
                if n not in driven:
                    region_devices.setdefault(region.get(n, n), set()).add(e.device)
        # which elements the current bound applies to: not dead ends (a region bounded
        # by a single driven net carries nothing), and not sneak paths through several
        # devices, where only the voltage bound holds (see the module docstring)
        self.carries: set[str] = set()
        for e in self.elements:
            ends = {n for n in (e.a, e.b) if n in driven}
            devices: set[str] = set()
            for n in (e.a, e.b):
                if n not in driven:
                    ends |= boundary_nets.get(region.get(n, n), set())
                    devices |= region_devices[region.get(n, n)]
            if len(ends) > 1 and len(devices) <= 1:
                self.carries.add(e.label)
        # per element, the terminals that bound each of its ends (empty: floating island)
        self._ends = [(e.label, self._bounding(e.a), self._bounding(e.b)) for e in self.elements]
        self._comp_terms = {c: tuple(sorted(ts)) for c, ts in self.component_terminals.items()}
        self._term_comp = {t: c for c, ts in self._comp_terms.items() for t in ts}
        # the same in column indices of the level array :meth:`bounds` works on
        self._terms = list(self.terminal_nets)
        col = {t: k for k, t in enumerate(self._terms)}
        both = [(label, ta, tb) for label, ta, tb in self._ends if ta and tb]
        sets = sorted({ts for _, ta, tb in both for ts in (ta, tb)})
        self._set_cols = [np.array([col[t] for t in ts], int) for ts in sets]
        self._v_labels = [label for label, _, _ in both]
        self._v_a = np.array([sets.index(ta) for _, ta, _ in both], int)
        self._v_b = np.array([sets.index(tb) for _, _, tb in both], int)
        self._comp_cols = {c: np.array([col[t] for t in ts], int) for c, ts in self._comp_terms.items()}
        self._comp_multi = {c: np.array([len(self.terminal_nets[t]) > 1 for t in ts]) for c, ts in self._comp_terms.items()}

    def _bounding(self, net: str) -> tuple[str, ...]:
        ts = self.driven.get(net)
        if ts is None:
            ts = sorted(self.boundary.get(self.region.get(net, net), ()))
        return tuple(ts)

    @property
    def terminals(self) -> frozenset[str]:
        return frozenset(self.terminal_nets)

    def bounds(self, states: Mapping[str, TerminalState],
               path_resistance: float | None = None) -> dict[str, tuple[float, float]]:
        """Element label → (largest |V| across it, largest |I| through it), the worst
        over every instant the terminal states allow (:meth:`_instants`); the voltage
        includes the paths' I·R (``path_resistance``, default the guard's; 0: levels only).

        Vectorized over the instants (one row of levels each), since it runs before
        every level a protocol sets; :meth:`_bounds_reference` is the same as loops."""
        r_path = self.path_resistance if path_resistance is None else path_resistance
        terms = self._terms
        instants = self._instants(states)
        L = np.array([[lv[t] for t in terms] for lv in instants], float).reshape(len(instants), len(terms))
        caps = np.array([states[t].current if t in states else 0.0 for t in terms])
        push = np.array([s.push if (s := states.get(t)) is not None and s.live and s.push and t in self._term_comp
                         else 0 for t in terms])
        if push.any():  # current only flows downhill (:meth:`_possible`)
            keep = np.ones(len(L), bool)
            for cols in self._comp_cols.values():
                lv = L[:, cols]
                lo, hi = lv.min(axis=1, keepdims=True), lv.max(axis=1, keepdims=True)
                pc = push[cols]
                stuck = np.all((pc > 0) | (lv != lo), axis=1) | np.all((pc < 0) | (lv != hi), axis=1)
                keep &= ~((hi[:, 0] > lo[:, 0]) & stuck)
            L = L[keep]
        volts = dict.fromkeys((label for label, _, _ in self._ends), 0.0)
        flow = dict.fromkeys(self._comp_terms, 0.0)
        if len(L):
            lo_pad, hi_pad = L.copy(), L.copy()
            for c, cols in self._comp_cols.items():
                lv = L[:, cols]
                lo, hi = lv.min(axis=1, keepdims=True), lv.max(axis=1, keepdims=True)
                cap = caps[cols]
                total = float(cap.sum())
                moving = hi > lo  # else every terminal at one voltage: nothing flows
                now = np.where(moving, np.minimum(np.minimum(((lv > lo) * cap).sum(axis=1, keepdims=True),
                                                             ((lv < hi) * cap).sum(axis=1, keepdims=True)),
                                                  total / 2), 0.0)
                flow[c] = max(0.0, float(now.max()))
                # the pads: level ± I·R within the component's levels; a terminal's current
                # is at most its own capability and what the others take
                own = np.minimum(cap, total - cap)
                i_path = np.where(self._comp_multi[c], now, np.minimum(now, own))
                lo_pad[:, cols] = np.maximum(lv - r_path * i_path, lo)
                hi_pad[:, cols] = np.minimum(lv + r_path * i_path, hi)
            if self._v_labels:
                mx = np.stack([hi_pad[:, cols].max(axis=1) for cols in self._set_cols], axis=1)
                mn = np.stack([lo_pad[:, cols].min(axis=1) for cols in self._set_cols], axis=1)
                a, b = self._v_a, self._v_b
                worst = np.maximum(mx[:, a] - mn[:, b], mx[:, b] - mn[:, a]).max(axis=0)
                volts.update((label, max(0.0, float(v))) for label, v in zip(self._v_labels, worst))
        return {e.label: (volts[e.label], flow[self.component[e.label]] if e.label in self.carries else 0.0)
                for e in self.elements}

    def _bounds_reference(self, states: Mapping[str, TerminalState],
                          path_resistance: float | None = None) -> dict[str, tuple[float, float]]:
        """:meth:`bounds` as plain loops over the instants (a test compares the two)."""
        r_path = self.path_resistance if path_resistance is None else path_resistance
        volts = {label: 0.0 for label, _, _ in self._ends}
        flow = {c: 0.0 for c in self._comp_terms}
        caps = {t: s.current for t, s in states.items()}
        half_total = {c: sum(caps.get(t, 0.0) for t in ts) / 2 for c, ts in self._comp_terms.items()}
        pushers = {t: s.push for t, s in states.items() if s.live and s.push and t in self._term_comp}
        for levels in self._instants(states):
            if pushers and not self._possible(levels, pushers):
                continue
            lo_pad: dict[str, float] = {}
            hi_pad: dict[str, float] = {}
            for c, ts in self._comp_terms.items():
                lv = [levels[t] for t in ts]
                lo, hi = min(lv), max(lv)
                now = 0.0
                if hi > lo:  # else every terminal at one voltage: nothing flows
                    push = sum(caps.get(t, 0.0) for t, v in zip(ts, lv) if v > lo)
                    take = sum(caps.get(t, 0.0) for t, v in zip(ts, lv) if v < hi)
                    now = min(push, take, half_total[c])
                    flow[c] = max(flow[c], now)
                for t, v in zip(ts, lv):  # the pads: level ± I·R, within the component's levels
                    # a terminal's current is at most its own capability and what the others take
                    own = min(caps.get(t, 0.0), 2 * half_total[c] - caps.get(t, 0.0))
                    i_path = now if len(self.terminal_nets[t]) > 1 else min(now, own)
                    lo_pad[t] = max(v - r_path * i_path, lo)
                    hi_pad[t] = min(v + r_path * i_path, hi)
            for label, ta, tb in self._ends:
                if ta and tb:
                    v = max(max(hi_pad.get(t, levels[t]) for t in ta) - min(lo_pad.get(t, levels[t]) for t in tb),
                            max(hi_pad.get(t, levels[t]) for t in tb) - min(lo_pad.get(t, levels[t]) for t in ta))
                    if v > volts[label]:
                        volts[label] = v
        return {e.label: (volts[e.label], flow[self.component[e.label]] if e.label in self.carries else 0.0)
                for e in self.elements}

    def _possible(self, levels: Mapping[str, float], pushers: Mapping[str, int]) -> bool:
        """Current only flows downhill: the terminals at the lowest level cannot all be
        current sources pushing current in (their current would have to flow up), nor
        those at the highest all be drawing current out."""
        for ts in self._comp_terms.values():
            lv = [levels[t] for t in ts]
            lo, hi = min(lv), max(lv)
            if hi <= lo:
                continue
            if all(pushers.get(t, 0) > 0 for t, v in zip(ts, lv) if v == lo):
                return False
            if all(pushers.get(t, 0) < 0 for t, v in zip(ts, lv) if v == hi):
                return False
        return True

    def _instants(self, states: Mapping[str, TerminalState]) -> list[dict[str, float]]:
        """The levels worth examining. A terminal with a range (a sweep, a
        program-and-verify loop, a current source within its voltage compliance) is at
        one level at any instant, so its range is sampled where the order of the levels
        can change: its ends, the fixed levels inside it, and the points between them.
        The voltage bound is convex in the levels (its worst case is at the ends); the
        current bound depends only on their order (which terminals push, which take)."""
        terms = list(self.terminal_nets)
        base = {t: states[t].v_lo if t in states and states[t].live else 0.0 for t in terms}
        ranged = [t for t in terms if t in states and states[t].live and states[t].v_lo != states[t].v_hi]
        if not ranged:
            return [base]
        fixed = sorted({v for t, v in base.items() if t not in ranged})
        choices = []
        for t in ranged:
            lo, hi = states[t].v_lo, states[t].v_hi
            pts = sorted({lo, hi, *(v for v in fixed if lo < v < hi)})
            choices.append(pts + [(a + b) / 2 for a, b in zip(pts, pts[1:])])
        if math.prod(len(c) for c in choices) > _MAX_INSTANTS:  # many ranges: their ends only
            choices = [[states[t].v_lo, states[t].v_hi] for t in ranged]
        out = []
        for combo in product(*choices):
            levels = dict(base)
            levels.update(zip(ranged, combo))
            out.append(levels)
        return out

    def check(self, states: Mapping[str, TerminalState], changing: str = "") -> None:
        """Raise :class:`LimitError` (one line) if any element could see more than its
        type's limit with these terminal states."""
        bounds = self.bounds(states)
        for e in self.elements:
            lim = self.limits.get(e.kind)
            if lim is None:
                continue
            v, i = bounds[e.label]
            who = f"{changing}: " if changing else ""
            if v > lim.voltage * (1 + _SLACK):
                terms = self._terminals_of(e)
                plain = self.bounds(states, path_resistance=0.0)[e.label][0]
                paths = (f" plus up to {v - plain:.3g} V of I·R on the paths ({self.path_resistance:g} Ω each)"
                         if v - plain > 1e-12 else "")
                raise LimitError(
                    f"{who}{e.label} ({e.kind}) could see {plain:.4g} V across it from {describe(terms, states)}"
                    f"{paths}; its limit is {lim.voltage:g} V")
            if i > lim.current * (1 + _SLACK):
                terms = sorted(self.component_terminals.get(self.component[e.label], ()))
                raise LimitError(
                    f"{who}{e.label} ({e.kind}) could carry {i:.4g} A from {describe(terms, states)}; "
                    f"its limit is {lim.current:g} A: lower a compliance")

    def _terminals_of(self, e: Element) -> list[str]:
        ts: set[str] = set()
        for n in (e.a, e.b):
            ts.update(self.driven.get(n) or self.boundary.get(self.region.get(n, n), ()))
        return sorted(ts)

    def addressed_kinds(self) -> set[str]:
        """The element types this connection addresses: those joining two driven nets
        (CL1 and CL2 address M1), else, for a chain such as WL to BL, every type the
        connected terminals reach."""
        between = {e.kind for e in self.elements if e.a in self.driven and e.b in self.driven}
        return between or {e.kind for e in self.elements}


def describe(terminals: Iterable[str], states: Mapping[str, TerminalState]) -> str:
    parts = []
    for t in terminals:
        s = states.get(t, OFF)
        if not s.live:
            parts.append(f"{t} off (0 V)")
        elif s.v_lo == s.v_hi:
            parts.append(f"{t} at {s.v_lo:.4g} V")
        else:
            parts.append(f"{t} within {s.v_lo:.4g}..{s.v_hi:.4g} V")
    return ", ".join(parts) or "no terminal"


def _components(elements: Iterable[Element]) -> dict[str, str]:
    """Net → a representative net of its component (union-find over the elements)."""
    sets: UnionFind[str] = UnionFind()
    for e in elements:
        sets.union(e.a, e.b)
    return {n: sets.find(n) for n in sets}
