"""Nodal circuit solver for the simulated bench.

The network has linear conductances (memristors, relays already merged into nodes),
diodes (Shockley with series and shunt resistance), and source-measure units connected
between a node and ground (every SMU's LO is the common ground). A voltage-mode source
fixes its node unless its current limit is reached, then it becomes a current source
at the limit (compliance); a current-mode source likewise switches to its voltage limit.

Method: Newton iteration on the free node voltages with a damped step (the diode
junction voltage moves by at most :data:`MAX_DIODE_STEP` per iteration), nested in an
active-set loop over the sources' compliance states. Linear networks converge in one
Newton step, so they are solved exactly. A tiny conductance to ground on every node
(:data:`GMIN`, as in SPICE) keeps floating islands well posed without measurably
disturbing currents through even a 10 GΩ device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labpcu.sim.diode import diode_iv

GMIN = 1e-15  # S, from every node to ground
MAX_DIODE_STEP = 0.25  # V per Newton iteration on any diode
MAX_ITER = 400
V_TOL = 1e-11  # V, Newton converged when every update is below this (plus relative part)
I_TOL = 1e-17  # A, ... or when every node's KCL residual is below this (floating islands)
RUNAWAY = 10.0  # a current source's node this many times past its voltage limit is running away


class SolverError(RuntimeError):
    """The network could not be solved (should not happen for physical networks)."""


@dataclass
class Netlist:
    """A network on nodes 0..n_nodes-1; node 0 is ground and is not solved for."""

    n_nodes: int
    # linear conductances
    res_a: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    res_b: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    res_g: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # diodes: anode, cathode, I0 (A), n·Vt (V), Rs (Ω), shunt conductance (S)
    dio_a: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    dio_k: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    dio_i0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dio_nvt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dio_rs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dio_gsh: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # photocurrent (A), soft leakage prefactor (A) and voltage scale (V); see diode_iv
    dio_iph: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dio_ileak: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dio_vleak: np.ndarray = field(default_factory=lambda: np.ones(0))
    # sources to ground: node, voltage mode?, level (V or A), limit (A or V)
    src_node: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    src_is_v: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    src_level: np.ndarray = field(default_factory=lambda: np.zeros(0))
    src_limit: np.ndarray = field(default_factory=lambda: np.full(0, np.inf))

    def add_resistor(self, a: int, b: int, g: float) -> None:
        self.res_a = np.append(self.res_a, a)
        self.res_b = np.append(self.res_b, b)
        self.res_g = np.append(self.res_g, g)

    def add_diode(self, a: int, k: int, i0: float, nvt: float, rs: float, gsh: float,
                  iph: float = 0.0, i_leak: float = 0.0, v_leak: float = 1.0) -> None:
        self.dio_a = np.append(self.dio_a, a)
        self.dio_k = np.append(self.dio_k, k)
        self.dio_i0 = np.append(self.dio_i0, i0)
        self.dio_nvt = np.append(self.dio_nvt, nvt)
        self.dio_rs = np.append(self.dio_rs, rs)
        self.dio_gsh = np.append(self.dio_gsh, gsh)
        self.dio_iph = np.append(self.dio_iph, iph)
        self.dio_ileak = np.append(self.dio_ileak, i_leak)
        self.dio_vleak = np.append(self.dio_vleak, v_leak)

    def diode_currents(self, vd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Current and conductance of every diode at junction-terminal voltages ``vd``."""
        return diode_iv(vd, self.dio_i0, self.dio_nvt, self.dio_rs, self.dio_gsh,
                        self.dio_iph, self.dio_ileak, self.dio_vleak)

    def add_source(self, node: int, voltage_mode: bool, level: float, limit: float = np.inf) -> int:
        self.src_node = np.append(self.src_node, node)
        self.src_is_v = np.append(self.src_is_v, voltage_mode)
        self.src_level = np.append(self.src_level, float(level))
        self.src_limit = np.append(self.src_limit, float(limit))
        return len(self.src_node) - 1


@dataclass
class Solution:
    """Node voltages and, per source, the current it delivers into the circuit."""

    v: np.ndarray  # node voltages, v[0] = 0
    src_current: np.ndarray  # A, out of the source's HI terminal into the network
    src_voltage: np.ndarray  # V at the source's node
    src_in_limit: np.ndarray  # bool: the source sits at its compliance limit
    iterations: int

    def element_voltage(self, a: int, b: int) -> float:
        return float(self.v[a] - self.v[b])


def _conductance_matrix(net: Netlist) -> np.ndarray:
    n = net.n_nodes
    G = np.zeros((n, n))
    a, b, g = net.res_a, net.res_b, net.res_g
    np.add.at(G, (a, a), g)
    np.add.at(G, (b, b), g)
    np.add.at(G, (a, b), -g)
    np.add.at(G, (b, a), -g)
    G[np.arange(n), np.arange(n)] += GMIN
    return G


def _node_currents(net: Netlist, G: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Current leaving each node through the elements, and the diode currents/conductances."""
    out = G @ v
    if len(net.dio_a):
        vd = v[net.dio_a] - v[net.dio_k]
        i, g = net.diode_currents(vd)
        np.add.at(out, net.dio_a, i)
        np.add.at(out, net.dio_k, -i)
    else:
        i = g = np.zeros(0)
    return out, i, g


def _newton(
    net: Netlist,
    G: np.ndarray,
    fixed: dict[int, float],
    inject: np.ndarray,
    v0: np.ndarray,
    vlimits: dict[int, float] | None = None,
) -> tuple[np.ndarray, int]:
    """Solve KCL at the free nodes (all but ground and ``fixed``) for node voltages.

    ``vlimits`` (node → voltage compliance of a current source there): once an
    iterate runs far past a limit (:data:`RUNAWAY` times it), stop early; the caller's
    active set then fixes that node at its limit instead of walking a damped Newton
    towards a kilovolt solution. Just past a limit the iteration goes on to converge:
    one overshooting step must not decide a source's compliance.
    """
    n = net.n_nodes
    v = v0.copy()
    v[0] = 0.0
    for node, val in fixed.items():
        v[node] = val
    is_free = np.ones(n, bool)
    is_free[0] = False
    for node in fixed:
        is_free[node] = False
    free = np.flatnonzero(is_free)
    if free.size == 0:
        return v, 0
    da, dk = net.dio_a, net.dio_k
    for it in range(1, MAX_ITER + 1):
        out, _, gd = _node_currents(net, G, v)
        resid = (out - inject)[free]
        if it > 1 and float(np.abs(resid).max()) < I_TOL:
            return v, it
        J = G.copy()
        if len(da):
            np.add.at(J, (da, da), gd)
            np.add.at(J, (dk, dk), gd)
            np.add.at(J, (da, dk), -gd)
            np.add.at(J, (dk, da), -gd)
        try:
            dv = np.linalg.solve(J[np.ix_(free, free)], -resid)
        except np.linalg.LinAlgError as exc:  # pragma: no cover - GMIN prevents this
            raise SolverError(f"singular network: {exc}") from exc
        step = np.zeros(n)
        step[free] = dv
        if len(da):
            dvd = np.abs(step[da] - step[dk])
            biggest = float(dvd.max()) if dvd.size else 0.0
            if biggest > MAX_DIODE_STEP:
                step *= MAX_DIODE_STEP / biggest
        v += step
        if vlimits and any(abs(v[node]) > RUNAWAY * lim for node, lim in vlimits.items()):
            return v, it
        if np.all(np.abs(step) <= V_TOL + 1e-9 * np.abs(v)):
            return v, it
        if not len(da):  # linear: one exact step
            return v, it
    raise SolverError(f"Newton did not converge in {MAX_ITER} iterations")


def solve(net: Netlist, v_start: np.ndarray | None = None) -> Solution:
    """Solve the network, honouring every source's compliance limit.

    The active set (which sources sit at their limit) usually settles in a few passes.
    When it does not (several sources and islands clamping against each other), it is
    solved again from scratch changing one source per pass, which always settles.
    """
    try:
        return _solve(net, v_start, one_change=False)
    except SolverError:
        return _solve(net, None, one_change=True)


def _solve(net: Netlist, v_start: np.ndarray | None, one_change: bool) -> Solution:
    n = net.n_nodes
    G = _conductance_matrix(net)
    v = np.zeros(n) if v_start is None or len(v_start) != n else np.asarray(v_start, float).copy()
    ns = len(net.src_node)
    # active set: True where a source currently acts in its primary (programmed) mode
    primary = np.ones(ns, bool)
    limited_value = np.zeros(ns)  # the limit value a source sits at when not primary
    _resolve_conflicts(net, primary, limited_value)
    total_it = 0
    for _ in range((8 if one_change else 4) * ns + 4):
        fixed: dict[int, float] = {}
        vlimits: dict[int, float] = {}
        inject = np.zeros(n)
        for s in range(ns):
            node = int(net.src_node[s])
            if node == 0:
                continue
            forces_v = net.src_is_v[s] == primary[s]
            value = net.src_level[s] if primary[s] else limited_value[s]
            if forces_v:
                fixed[node] = float(value)
            else:
                inject[node] += float(value)
                # watch for a runaway: a current source past its voltage limit, or a
                # voltage source in current limit past its own level
                watch = float(net.src_limit[s]) if not net.src_is_v[s] else max(abs(float(net.src_level[s])), 1.0)
                vlimits[node] = min(vlimits.get(node, np.inf), watch)
        # every free node lies between the fixed voltages (maximum principle); an
        # iterate left far outside by the last active set would take the damped
        # Newton thousands of steps to walk back
        bounds = [0.0, *fixed.values(), *vlimits.values(), *(-x for x in vlimits.values())]
        v = np.clip(v, min(bounds), max(bounds))
        v, it = _newton(net, G, fixed, inject, v, vlimits)
        total_it += it
        cur = _source_currents(net, G, v, primary, limited_value)
        if not _update_active_set(net, v, cur, primary, limited_value, one_change):
            return Solution(v, cur, v[net.src_node], ~primary, total_it)
    raise SolverError("source compliance states did not settle")


def _resolve_conflicts(net: Netlist, primary: np.ndarray, limited: np.ndarray) -> None:
    """Two voltage sources on one node: the one with the larger current limit holds the
    voltage; the others start in compliance, pushing towards their own level."""
    by_node: dict[int, list[int]] = {}
    for s in np.flatnonzero(net.src_is_v):
        by_node.setdefault(int(net.src_node[s]), []).append(int(s))
    for node, group in by_node.items():
        if len(group) < 2:
            continue
        keep = max(group, key=lambda s: net.src_limit[s])
        for s in group:
            if s != keep:
                primary[s] = False
                direction = np.sign(net.src_level[s] - net.src_level[keep]) or 1.0
                limited[s] = direction * net.src_limit[s]


def _source_currents(
    net: Netlist, G: np.ndarray, v: np.ndarray, primary: np.ndarray, limited: np.ndarray
) -> np.ndarray:
    """Current each source delivers: current-forcing ones deliver what they force; the
    voltage-forcing ones on a node share the rest of that node's KCL balance."""
    out, _, _ = _node_currents(net, G, v)
    out -= GMIN * v  # GMIN is a numerical aid, not a path a source current takes
    ns = len(net.src_node)
    cur = np.zeros(ns)
    forcing_v: dict[int, list[int]] = {}
    injected = np.zeros(net.n_nodes)
    for s in range(ns):
        node = int(net.src_node[s])
        if net.src_is_v[s] == primary[s]:
            forcing_v.setdefault(node, []).append(s)
        else:
            value = net.src_level[s] if primary[s] else limited[s]
            cur[s] = value
            injected[node] += value
    for node, group in forcing_v.items():
        share = (out[node] - injected[node]) / len(group)
        for s in group:
            cur[s] = share
    return cur


def _update_active_set(
    net: Netlist, v: np.ndarray, cur: np.ndarray, primary: np.ndarray, limited: np.ndarray,
    one_change: bool = False,
) -> bool:
    """Switch sources into or out of compliance; True if anything changed.

    At most one source enters its limit per pass, the one furthest past it: two
    voltage sources in series with equal limits would otherwise both turn into current
    sources at once, leaving the nodes between them undetermined, and two current
    sources feeding one floating island would both be clamped on the side the island's
    net current drove it, one of them wrongly (on the instrument one reaches its
    limit first; the others are then solved against it). With ``one_change`` a pass
    either clamps one source or releases one, never both: a runaway stops the Newton
    iteration before other nodes converge, and releases judged there would be wrong.
    """
    rel = 1e-9
    entering: list[tuple[float, int]] = []
    leaving: list[int] = []
    for s in range(len(net.src_node)):
        lim = net.src_limit[s]
        node = int(net.src_node[s])
        level = net.src_level[s]
        if net.src_is_v[s]:
            if primary[s]:
                if abs(cur[s]) > lim * (1 + rel):
                    entering.append((abs(cur[s]) / lim, s))
            else:
                # in current limit: give up the limit once the node would overshoot the level
                overshoot = (v[node] - level) * np.sign(limited[s])
                if overshoot > 1e-12 + rel * abs(level):
                    leaving.append(s)
        else:
            if primary[s]:
                if abs(v[node]) > lim * (1 + rel) + 1e-12:
                    entering.append((abs(v[node]) / lim, s))
            else:
                # clamped at +L it delivers f(L) <= level (forcing the level would
                # take it past L); at -L, f(-L) >= level. The network's current rises
                # with the node voltage, so once f(L) > level (or f(-L) < level) the
                # level is reachable inside the limits: force it again
                tol = 1e-15 + rel * abs(level)
                if (cur[s] - level) * np.sign(limited[s]) > tol:
                    leaving.append(s)
    if one_change and entering:
        leaving = []  # a runaway elsewhere left these nodes unconverged: decide them later
    elif one_change:
        leaving = leaving[:1]
    for s in leaving:
        primary[s] = True
    if entering:
        _, s = max(entering)
        primary[s] = False
        sign = np.sign(cur[s]) if net.src_is_v[s] else np.sign(v[int(net.src_node[s])])
        limited[s] = sign * net.src_limit[s]
    changed = bool(entering or leaving)
    return changed
