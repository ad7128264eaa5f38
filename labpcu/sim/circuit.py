"""Nodal circuit solver for the simulated bench.

The network has conductances (memristors, parasitic paths; relays already merged into
nodes), each linear or, with a voltage scale ``v_nl``, non-ohmic (I = g·v_nl·sinh(V/v_nl)),
diodes (Shockley with series and shunt resistance), and source-measure units connected
between a node and ground (every SMU's LO is the common ground). A voltage-mode source
fixes its node unless its current limit is reached, then it becomes a current source
at the limit (compliance); a current-mode source likewise switches to its voltage limit.

Method: Newton iteration on the free node voltages with a damped step (the diode
junction voltage moves by at most :data:`MAX_DIODE_STEP` per iteration), nested in an
active-set loop over the sources' compliance states (the damping also holds across
non-ohmic conductors). Linear networks converge in one Newton step, so they are solved
exactly. A tiny conductance to ground on every node
(:data:`GMIN`, as in SPICE) keeps floating islands well posed without measurably
disturbing currents through even a 10 GΩ device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations, product

import numpy as np

from scipy.linalg.lapack import dgesv as _dgesv
from scipy.linalg.lapack import dposv as _dposv
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dpotrs as _dpotrs
from scipy.special import wrightomega

from labpcu.sim.diode import diode_iv

GMIN = 1e-15  # S, from every node to ground
MAX_DIODE_STEP = 0.25  # V per Newton iteration on any diode
MAX_ITER = 400
V_TOL = 1e-11  # V, Newton converged when every update is below this (plus relative part)
I_TOL = 1e-17  # A, ... or when every node's KCL residual is below this (floating islands)
#: ... or below this fraction of the currents meeting at the node: the round-off floor of
#: its KCL sum (a 6 Ω series path carrying 0.1 A leaves ~1e-17 A of round-off, where
#: the steps at high-impedance nodes never drop below V_TOL)
ROUNDOFF = 1e-13
#: V: an undamped Newton step this small ends the fast engine's iteration: the next one
#: would move a node by about κ·step², κ = 1/(2·n·Vt) ≤ 13 /V for these diodes (n ≥ 1.5),
#: ≤ 1.3e-11 V, V_TOL's order; checking that would cost one more evaluation per solve
QUADRATIC_STEP = 1e-6
RUNAWAY = 10.0  # a current source's node this many times past its voltage limit is running away


class SolverError(RuntimeError):
    """The network could not be solved (should not happen for physical networks)."""


# shared read-only empties: a Netlist is built per solve, its defaults cost nothing
_NO_INT = np.zeros(0, int)
_NO_FLOAT = np.zeros(0)
_NO_BOOL = np.zeros(0, bool)
for _a in (_NO_INT, _NO_FLOAT, _NO_BOOL):
    _a.flags.writeable = False


@dataclass
class Netlist:
    """A network on nodes 0..n_nodes-1; node 0 is ground and is not solved for."""

    n_nodes: int
    # conductances: ends, g (S) and, optionally, a voltage scale v_nl (V) per element
    # making it non-ohmic, I = g·v_nl·sinh(V/v_nl) (inf, or res_vnl left empty: ohmic)
    res_a: np.ndarray = field(default_factory=lambda: _NO_INT)
    res_b: np.ndarray = field(default_factory=lambda: _NO_INT)
    res_g: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    res_vnl: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    # diodes: anode, cathode, I0 (A), n·Vt (V), Rs (Ω), shunt conductance (S)
    dio_a: np.ndarray = field(default_factory=lambda: _NO_INT)
    dio_k: np.ndarray = field(default_factory=lambda: _NO_INT)
    dio_i0: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    dio_nvt: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    dio_rs: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    dio_gsh: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    # photocurrent (A), soft leakage prefactor (A) and voltage scale (V); see diode_iv
    dio_iph: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    dio_ileak: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    dio_vleak: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    # sources to ground: node, voltage mode?, level (V or A), limit (A or V)
    src_node: np.ndarray = field(default_factory=lambda: _NO_INT)
    src_is_v: np.ndarray = field(default_factory=lambda: _NO_BOOL)
    src_level: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    src_limit: np.ndarray = field(default_factory=lambda: _NO_FLOAT)
    #: the fast engine this network's last solve built, kept for :func:`conductance_response`
    #: (a netlist is not changed once solved)
    engine: object = field(default=None, repr=False, compare=False)

    def add_resistor(self, a: int, b: int, g: float, v_nl: float = np.inf) -> None:
        """A conductance ``g`` between nodes ``a`` and ``b``; ohmic unless ``v_nl`` (V)
        is finite, then I = g·v_nl·sinh(V/v_nl)."""
        if not v_nl > 0:
            raise ValueError(f"v_nl must be > 0 (inf: ohmic), not {v_nl!r}")
        self.res_vnl = np.append(self.resistor_vnl(), v_nl)
        self.res_a = np.append(self.res_a, a)
        self.res_b = np.append(self.res_b, b)
        self.res_g = np.append(self.res_g, g)

    def resistor_vnl(self) -> np.ndarray:
        """Every conductance's v_nl (inf where ohmic; ``res_vnl`` may be left empty)."""
        if len(self.res_vnl) == len(self.res_g):
            return np.asarray(self.res_vnl, float)
        if len(self.res_vnl):
            raise ValueError(f"res_vnl has {len(self.res_vnl)} entries for {len(self.res_g)} conductances")
        return np.full(len(self.res_g), np.inf)

    def resistor_currents(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Current and conductance dI/dV of every conductance at voltages ``v`` (a − b)."""
        return _sinh_iv(np.asarray(v, float), self.res_g, self.resistor_vnl())

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
        nd = len(self.dio_a)
        iph = self.dio_iph if len(self.dio_iph) == nd else 0.0
        ileak = self.dio_ileak if len(self.dio_ileak) == nd else 0.0
        vleak = self.dio_vleak if len(self.dio_vleak) == nd else 1.0
        return diode_iv(vd, self.dio_i0, self.dio_nvt, self.dio_rs, self.dio_gsh, iph, ileak, vleak)

    def add_source(self, node: int, voltage_mode: bool, level: float, limit: float = np.inf) -> int:
        self.src_node = np.append(self.src_node, node)
        self.src_is_v = np.append(self.src_is_v, voltage_mode)
        self.src_level = np.append(self.src_level, float(level))
        self.src_limit = np.append(self.src_limit, float(limit))
        return len(self.src_node) - 1


def _sinh_iv(v: np.ndarray, g: np.ndarray, vnl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """I = g·v_nl·sinh(V/v_nl) and dI/dV = g·cosh(V/v_nl); g·V and g where v_nl is inf.
    The argument is clipped as in :func:`~labpcu.sim.diode.diode_iv` (no overflow)."""
    x = np.clip(v / vnl, -700.0, 700.0)
    ohmic = np.isinf(vnl)
    i = np.where(ohmic, g * v, g * np.where(ohmic, 1.0, vnl) * np.sinh(x))
    return i, np.where(ohmic, g, g * np.cosh(x))


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


# ------------------------------------------------------------------ reference engine
# np.add.at stamps on the full matrix per iteration: plain, slow; the fast engine below
# must agree with it (tests/test_sim_circuit.py), and benchmarks measure against it


def _conductance_matrix(net: Netlist) -> np.ndarray:
    """The ohmic conductances' nodal matrix, GMIN on the diagonal."""
    n = net.n_nodes
    G = np.zeros((n, n))
    ohmic = np.isinf(net.resistor_vnl())
    a, b, g = net.res_a[ohmic], net.res_b[ohmic], net.res_g[ohmic]
    np.add.at(G, (a, a), g)
    np.add.at(G, (b, b), g)
    np.add.at(G, (a, b), -g)
    np.add.at(G, (b, a), -g)
    G[np.arange(n), np.arange(n)] += GMIN
    return G


def _nonlinear_ends(net: Netlist) -> tuple[np.ndarray, np.ndarray]:
    """Ends of the nonlinear elements: the diodes, then the non-ohmic conductances."""
    nl = ~np.isinf(net.resistor_vnl())
    return np.concatenate([net.dio_a, net.res_a[nl]]), np.concatenate([net.dio_k, net.res_b[nl]])


def _nonlinear_iv(net: Netlist, vd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nd = len(net.dio_a)
    vnl = net.resistor_vnl()
    nl = ~np.isinf(vnl)
    i_d, g_d = net.diode_currents(vd[:nd]) if nd else (np.zeros(0), np.zeros(0))
    i_r, g_r = _sinh_iv(vd[nd:], net.res_g[nl], vnl[nl])
    return np.concatenate([i_d, i_r]), np.concatenate([g_d, g_r])


def _node_currents(net: Netlist, G: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Current leaving each node through the elements (GMIN included), and the
    nonlinear elements' currents/conductances."""
    out = G @ v
    da, dk = _nonlinear_ends(net)
    if len(da):
        i, g = _nonlinear_iv(net, v[da] - v[dk])
        np.add.at(out, da, i)
        np.add.at(out, dk, -i)
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
    da, dk = _nonlinear_ends(net)
    for it in range(1, MAX_ITER + 1):
        out, i_nl, gd = _node_currents(net, G, v)
        resid = (out - inject)[free]
        if it > 1 and float(np.abs(resid).max()) < I_TOL:
            return v, it
        if it > 1:  # at the round-off floor of each node's KCL sum
            av = np.abs(v)
            scale = np.abs(G) @ av
            if len(da):
                s = np.abs(i_nl) + gd * (av[da] + av[dk])
                np.add.at(scale, da, s)
                np.add.at(scale, dk, s)
            if np.all(np.abs(resid) <= I_TOL + ROUNDOFF * scale[free]):
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


class _ReferenceEngine:
    """The plain solver: full-matrix stamps with np.add.at, np.linalg.solve."""

    def __init__(self, net: Netlist) -> None:
        self.net = net
        self.G = _conductance_matrix(net)

    def newton(self, fixed: dict[int, float], inject: np.ndarray, v0: np.ndarray,
               vlimits: dict[int, float]) -> tuple[np.ndarray, int, np.ndarray]:
        v, it = _newton(self.net, self.G, fixed, inject, v0, vlimits)
        out, _, _ = _node_currents(self.net, self.G, v)
        return v, it, out - GMIN * v  # GMIN is a numerical aid, not a path a source current takes


# ------------------------------------------------------------------ fast engine
# The same Newton iteration on the free nodes only, with the ohmic conductances
# (memristors read at small signal, series paths, a hundred-odd relay leakages) stamped
# once per solve into a nodal matrix and the iteration left with the few nonlinear
# elements (diodes, non-ohmic M1s): their incidence is worked out once per network
# structure and reused while only conductances and levels change (the bench's next
# solve, the next pass of the active set). Diodes are evaluated with their per-solve
# constants folded; LAPACK is called directly. A converged iteration's last step is
# below V_TOL, so the element currents at its end follow from the Jacobian (error
# ~ g'·V_TOL², far below I_TOL) instead of one more diode evaluation.

_PLANS: dict[tuple, "_Plan"] = {}
_MAX_PLANS = 64


class _Plan:
    """One network structure: the ohmic conductances' stamps in the nodal matrix, the
    nonlinear elements (diodes, then non-ohmic conductances) as an incidence matrix,
    and per set of fixed nodes the free nodes (:class:`_FreeSet`)."""

    def __init__(self, n: int, lin_a: np.ndarray, lin_b: np.ndarray, nl_a: np.ndarray, nl_b: np.ndarray) -> None:
        self.n = n
        # G = bincount(g_stamp_idx, g[g_stamp_elem] * g_stamp_sign): the four stamps of each
        # ohmic conductance, flat in the n×n matrix
        k = np.arange(len(lin_a))
        self.g_idx = np.concatenate([lin_a * n + lin_a, lin_b * n + lin_b, lin_a * n + lin_b, lin_b * n + lin_a])
        self.g_elem = np.concatenate([k, k, k, k])
        self.g_sign = np.concatenate([np.ones(2 * len(k)), -np.ones(2 * len(k))])
        nn = len(nl_a)
        E = np.zeros((nn, n))  # nonlinear element voltage = E @ v
        np.add.at(E, (np.arange(nn), nl_a), 1.0)
        np.add.at(E, (np.arange(nn), nl_b), -1.0)
        self.E = E
        self.ET = np.ascontiguousarray(E.T)  # node currents = ET @ element currents
        self.ohmic = np.zeros(0, np.intp)  # which of the netlist's conductances are ohmic (_plan_of)
        self.absE = np.abs(E)
        self._free: dict[tuple[int, ...], _FreeSet] = {}

    def free_set(self, fixed: tuple[int, ...]) -> _FreeSet:
        fs = self._free.get(fixed)
        if fs is None:
            fs = self._free[fixed] = _FreeSet(self, fixed)
        return fs


class _FreeSet:
    """The free nodes for one set of fixed nodes, and the nonlinear incidence on them."""

    def __init__(self, plan: _Plan, fixed: tuple[int, ...]) -> None:
        is_free = np.ones(plan.n, bool)
        is_free[0] = False
        is_free[list(fixed)] = False
        self.free = np.flatnonzero(is_free)
        self.m = len(self.free)
        self.Ef = np.ascontiguousarray(plan.E[:, self.free])
        self.EfT = np.ascontiguousarray(self.Ef.T)
        self.absEfT = np.abs(self.EfT)
        self.diag = np.arange(self.m) * (self.m + 1)


def _cached(cache: dict, key: tuple, make):
    """``cache[key]``, made by ``make()`` when missing (the oldest entry makes room)."""
    found = cache.get(key)
    if found is None:
        if len(cache) >= _MAX_PLANS:
            cache.pop(next(iter(cache)))
        found = cache[key] = make()
    return found


def _structure_of(net: Netlist) -> tuple[_Plan, np.ndarray, np.ndarray]:
    """(plan, the non-ohmic conductances, their v_nl) of a netlist."""
    sinh, vnl = np.zeros(0, np.intp), np.zeros(0)
    if len(net.res_vnl):
        every = net.resistor_vnl()
        sinh = np.flatnonzero(np.isfinite(every))
        vnl = every[sinh]
    return _plan_of(net, sinh), sinh, vnl


def _plan_of(net: Netlist, sinh: np.ndarray) -> _Plan:
    """The plan of the network's structure (``sinh``: the non-ohmic conductances)."""
    key = (net.n_nodes, net.res_a.tobytes(), net.res_b.tobytes(), sinh.tobytes(), net.dio_a.tobytes(),
           net.dio_k.tobytes())

    def make() -> _Plan:
        ohmic = np.ones(len(net.res_a), bool)
        ohmic[sinh] = False
        a, b = np.asarray(net.res_a, np.intp), np.asarray(net.res_b, np.intp)
        plan = _Plan(net.n_nodes, a[ohmic], b[ohmic], np.concatenate([np.asarray(net.dio_a, np.intp), a[sinh]]),
                     np.concatenate([np.asarray(net.dio_k, np.intp), b[sinh]]))
        plan.ohmic = np.flatnonzero(ohmic)
        return plan
    return _cached(_PLANS, key, make)


_BANKS: dict[tuple, "_DiodeBank"] = {}

#: (ids of read-only arrays) -> (the arrays, what was made from them)
_BY_IDENTITY: dict[tuple[int, ...], tuple[tuple[np.ndarray, ...], object]] = {}


def _by_identity(arrays: tuple[np.ndarray, ...], make, size: int = 0):
    """``make()``, cached on the identity of ``arrays`` when every one is read-only.

    The simulated bench hands the solver the same per-topology arrays (marked
    read-only) for every solve; hashing their bytes each time would cost more than the
    solve's own set-up. Cached entries hold the arrays, so no other array can take
    their ids; a writeable array is never trusted by identity. ``size``: what else the
    made thing depends on (the node count: the shared empty arrays are in every netlist)."""
    if any(a.flags.writeable for a in arrays):
        return make()
    key = (size, *(id(a) for a in arrays))
    found = _BY_IDENTITY.get(key)
    if found is not None and all(x is y for x, y in zip(found[0], arrays)):
        return found[1]
    value = make()
    if len(_BY_IDENTITY) >= _MAX_PLANS:
        _BY_IDENTITY.pop(next(iter(_BY_IDENTITY)))
    _BY_IDENTITY[key] = (arrays, value)
    return value


def _bank_of(net: Netlist) -> _DiodeBank:
    """The diodes' folded constants (the bench solves many times with the same diodes)."""
    key = tuple(np.asarray(x).tobytes() for x in (net.dio_i0, net.dio_nvt, net.dio_rs, net.dio_gsh, net.dio_iph,
                                                  net.dio_ileak, net.dio_vleak))
    return _cached(_BANKS, key, lambda: _DiodeBank(net))


class _DiodeBank:
    """:func:`~labpcu.sim.diode.diode_iv` with the per-solve constants folded: the
    same closed form (Wright's omega, exact and overflow-free), a third of the numpy
    calls per Newton iteration."""

    def __init__(self, net: Netlist) -> None:
        nd = len(net.dio_a)
        # copies: a bank outlives its netlist (cached by content)
        i0, nvt, rs, gsh = (np.array(x, float) for x in (net.dio_i0, net.dio_nvt, net.dio_rs, net.dio_gsh))
        iph = np.asarray(net.dio_iph, float) if len(net.dio_iph) == nd else np.zeros(nd)
        ileak = np.array(net.dio_ileak, float) if len(net.dio_ileak) == nd else np.zeros(nd)
        vleak = np.asarray(net.dio_vleak, float) if len(net.dio_vleak) == nd else np.ones(nd)
        ish = i0 + iph
        self.inv_nvt = 1.0 / nvt
        self.z0 = np.log(i0 * rs / nvt) + ish * rs / nvt
        self.scale = nvt / rs
        self.inv_rs = 1.0 / rs
        self.ish, self.gsh = ish, gsh
        self.leaky = bool(np.any(ileak))
        self.inv_vleak, self.ileak, self.gleak = 1.0 / vleak, ileak, ileak / vleak

    def iv(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i, g = self.shockley(v)
        if self.leaky:
            x = np.minimum(np.maximum(v * self.inv_vleak, -700.0), 700.0)
            i += self.ileak * np.sinh(x)
            g += self.gleak * np.cosh(x)
        return i, g

    def shockley(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The diodes without their soft leakage (the fast engine adds it with the
        other sinh-law elements)."""
        w = wrightomega(v * self.inv_nvt + self.z0)
        return self.scale * w - self.ish + self.gsh * v, w * self.inv_rs / (1.0 + w) + self.gsh


class _FastEngine:
    """The fast solver for one netlist (see the section comment)."""

    def __init__(self, net: Netlist) -> None:
        nd = len(net.dio_a)
        g = np.asarray(net.res_g, float)
        structure = (net.res_a, net.res_b, net.res_vnl, net.dio_a, net.dio_k)
        plan, sinh, self.vnl = _by_identity(structure, lambda: _structure_of(net), net.n_nodes)
        self.plan = plan
        if len(sinh):
            self.g_nl = g[sinh]
        self.nd = nd
        self.sinh = sinh if len(sinh) else None
        n = plan.n
        ohmic_g = g[plan.ohmic] if len(sinh) else g
        self.G = np.bincount(plan.g_idx, ohmic_g[plan.g_elem] * plan.g_sign, n * n).astype(float, copy=False).reshape(n, n)
        self._absG: np.ndarray | None = None
        self.diodes = _by_identity((net.dio_i0, net.dio_nvt, net.dio_rs, net.dio_gsh, net.dio_iph, net.dio_ileak,
                                    net.dio_vleak), lambda: _bank_of(net)) if nd else None
        self.last: tuple[_FreeSet, np.ndarray, np.ndarray, np.ndarray] | None = None  # see newton
        self.linear = self.diodes is None and self.sinh is None
        # every sinh law among the nonlinear elements, a·sinh(b·V): the diodes' soft
        # leakage (i_leak, 1/v_leak) and the non-ohmic conductances (g·v_nl, 1/v_nl)
        amp, inv = [], []
        if self.diodes is not None:
            amp.append(self.diodes.ileak if self.diodes.leaky else np.zeros(nd))
            inv.append(self.diodes.inv_vleak)
        if self.sinh is not None:
            amp.append(self.g_nl * self.vnl)
            inv.append(1.0 / self.vnl)
        self.sh_a = np.concatenate(amp) if amp else np.zeros(0)
        self.sh_b = np.concatenate(inv) if inv else np.zeros(0)
        self.sh_ab = self.sh_a * self.sh_b
        self.any_sinh = bool(np.any(self.sh_a))
        self.response: _Linearized | None = None  # conductance_response's factor for one solution
        self._sub: dict[_FreeSet, tuple[np.ndarray, np.ndarray]] = {}

    def currents(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nonlinear element currents and conductances at node voltages ``v``: diodes
        first, then the non-ohmic conductances."""
        ve = self.plan.E @ v
        if self.any_sinh:
            x = np.clip(ve * self.sh_b, -700.0, 700.0)
            ie = self.sh_a * np.sinh(x)
            ge = self.sh_ab * np.cosh(x)
        else:
            ie, ge = np.zeros(len(ve)), np.zeros(len(ve))
        nd = self.nd
        if nd:
            i, g = self.diodes.shockley(ve[:nd])
            ie[:nd] += i
            ge[:nd] += g
        return ie, ge

    @property
    def absG(self) -> np.ndarray:
        if self._absG is None:
            self._absG = np.abs(self.G)
        return self._absG

    def node_currents(self, v: np.ndarray) -> np.ndarray:
        """The current leaving each node through the elements at ``v``."""
        out = self.G @ v
        if not self.linear:
            out += self.plan.ET @ self.currents(v)[0]
        return out

    def _submatrices(self, fs: _FreeSet) -> tuple[np.ndarray, np.ndarray]:
        """G's rows of the free nodes, and its free block with GMIN."""
        found = self._sub.get(fs)
        if found is None:
            rows = self.G[fs.free]
            block = rows[:, fs.free].copy()
            block.flat[fs.diag] += GMIN
            found = self._sub[fs] = (rows, block)
        return found

    def newton(self, fixed: dict[int, float], inject: np.ndarray, v0: np.ndarray,
               vlimits: dict[int, float]) -> tuple[np.ndarray, int, np.ndarray]:
        """:func:`_newton` on the free nodes; also returns the node currents at the end."""
        v = v0.copy()
        v[0] = 0.0
        for node, val in fixed.items():
            v[node] = val
        plan = self.plan
        fs = plan.free_set(tuple(sorted(fixed)))
        free, m = fs.free, fs.m
        if m == 0:
            return v, 0, self.node_currents(v)
        Gf, Jlin = self._submatrices(fs)
        inj = inject[free]
        if self.linear:  # one exact step
            x = v[free] + _solve_spd(Jlin.copy(), Gf @ v + GMIN * v[free] - inj)
            v[free] = x
            return v, 1, self.G @ v
        watch = [(node, RUNAWAY * lim) for node, lim in vlimits.items()]
        Ef, EfT, absEfT = fs.Ef, fs.EfT, fs.absEfT
        for it in range(1, MAX_ITER + 1):
            ie, ge = self.currents(v)
            vf = v[free]
            resid = Gf @ v + EfT @ ie + GMIN * vf - inj
            if it > 1:
                r = np.abs(resid)
                if float(r.max()) < I_TOL:
                    return v, it, self.G @ v + plan.ET @ ie
            if it > 3:  # at the round-off floor of each node's KCL sum (a slow case only:
                # a converging iteration ends on its step size first)
                av = np.abs(v)
                scale = self.absG[free] @ av + absEfT @ (np.abs(ie) + ge * (plan.absE @ av)) + GMIN * np.abs(vf)
                if np.all(r <= I_TOL + ROUNDOFF * scale):
                    return v, it, self.G @ v + plan.ET @ ie
            J = Jlin + (EfT * ge) @ Ef
            dx = _solve_spd(J, resid)
            self.last = (fs, J, ge, v.copy())  # for conductance_response at the solution
            dve = Ef @ dx
            biggest = float(np.max(np.abs(dve)))
            if biggest > MAX_DIODE_STEP:
                f = MAX_DIODE_STEP / biggest
                dx *= f
                dve *= f
            x = vf + dx
            v[free] = x
            if watch and any(abs(v[node]) > lim for node, lim in watch):
                return v, it, self.node_currents(v)
            step = np.abs(dx)
            if float(step.max()) <= QUADRATIC_STEP or np.all(step <= V_TOL + 1e-9 * np.abs(x)):
                return v, it, self.G @ v + plan.ET @ (ie + ge * dve)
        raise SolverError(f"Newton did not converge in {MAX_ITER} iterations")


def _solve_spd(J: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """The Newton step −J⁻¹·resid. J (conductances to ground through GMIN) is
    symmetric positive definite: Cholesky, else LU if a conductance is negative."""
    if J.shape[0] == 1:
        return -resid / J[0, 0]
    _, x, info = _dposv(J, -resid, lower=1, overwrite_b=1)
    if info == 0:
        return x
    _, _, x, info = _dgesv(J, -resid, overwrite_a=1, overwrite_b=1)
    if info != 0:  # pragma: no cover - GMIN prevents this
        raise SolverError(f"singular network (LAPACK info {info})")
    return x


def conductance_response(net: Netlist, sol: Solution, dg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-order change of the node voltages and of every source's current when the
    conductances ``net.res_g`` change by ``dg``, at the solution ``sol`` of ``net`` with
    its active set held (which sources sit at their limits).

    Why: a reading's device noise is a fluctuation of a few 10⁻³ of some conductances;
    one linear solve with the Jacobian at the settled point gives its effect to
    ~(10⁻³)² relative, where a full Newton solve would cost several. The Jacobian's
    factor is kept for the next reading of the same solution."""
    engine = net.engine if isinstance(net.engine, _FastEngine) else _FastEngine(net)
    lin = engine.response if engine.response is not None and engine.response.sol is sol else None
    if lin is None:
        lin = engine.response = _Linearized(net, engine, sol)
    n = net.n_nodes
    # the current each conductance change adds at fixed voltages (I is linear in g)
    changed = np.flatnonzero(dg)
    ra, rb = lin.res_a[changed], lin.res_b[changed]
    di, _ = _sinh_iv(sol.v[ra] - sol.v[rb], np.asarray(dg, float)[changed], lin.vnl[changed])
    d_out = np.bincount(ra, di, n) - np.bincount(rb, di, n)
    dv = np.zeros(n)
    if lin.free is not None:
        dv[lin.free] = -lin.solve(d_out[lin.free])
        d_out += engine.G @ dv
        if len(lin.ge):
            d_out += engine.plan.ET @ (lin.ge * (engine.plan.E @ dv))
    # the voltage-forcing sources on a node share its change; the others force theirs
    d_src = np.zeros(len(net.src_node))
    for node, group in lin.sharing:
        d_src[group] = d_out[node] / len(group)
    return dv, d_src


#: V: a reading's response reuses the solve's last Jacobian if it was taken this close to
#: the solution: a diode's conductance then differs by ≲ 0.3 % (0.1 mV over n·Vt), which
#: moves a 1e-3 noise response by ≲ 3e-6 of the reading
JACOBIAN_REUSE_V = 1e-4


class _Linearized:
    """A solution's Jacobian on its free nodes, factored, for :func:`conductance_response`."""

    def __init__(self, net: Netlist, engine: _FastEngine, sol: Solution) -> None:
        self.sol = sol
        primary = ~np.asarray(sol.src_in_limit, bool)
        forcing_v = np.asarray(net.src_is_v, bool) == primary
        fixed = sorted({int(node) for node, f in zip(net.src_node.tolist(), forcing_v.tolist()) if f and node != 0})
        self.res_a, self.res_b = np.asarray(net.res_a, np.intp), np.asarray(net.res_b, np.intp)
        self.vnl = net.resistor_vnl()
        sharing: dict[int, list[int]] = {}
        for k, (node, f) in enumerate(zip(net.src_node.tolist(), forcing_v.tolist())):
            if f:
                sharing.setdefault(node, []).append(k)
        self.sharing = [(node, np.array(group)) for node, group in sharing.items()]
        fs = engine.plan.free_set(tuple(fixed))
        self.free = fs.free if fs.m else None
        self.ge = np.zeros(0)
        last = engine.last
        if fs.m and last is not None and last[0] is fs and float(np.max(np.abs(last[3] - sol.v))) < JACOBIAN_REUSE_V:
            # the Jacobian of the solve's last iteration, taken close to the solution
            _, self.J, self.ge, _ = last
        elif fs.m:
            _, Jlin = engine._submatrices(fs)
            self.ge = engine.currents(sol.v)[1].copy() if len(engine.plan.E) else np.zeros(0)
            self.J = Jlin + (fs.EfT * self.ge) @ fs.Ef if len(self.ge) else Jlin.copy()
        if fs.m:
            self.factor, info = _dpotrf(self.J, lower=1)
            if info != 0:  # not positive definite (a negative conductance): LU each time
                self.factor = None

    def solve(self, b: np.ndarray) -> np.ndarray:
        """J⁻¹·b."""
        if self.factor is None:
            return -_solve_spd(self.J, b)
        x, info = _dpotrs(self.factor, b, lower=1)
        if info != 0:  # pragma: no cover - a valid factor solves
            raise SolverError(f"Cholesky solve failed (LAPACK info {info})")
        return x


# ------------------------------------------------------------------ active set

#: solve with the fast engine (False: the reference engine, for benchmarks and tests)
FAST_PATH = True


def solve(net: Netlist, v_start: np.ndarray | None = None, fast: bool | None = None,
          hint: Solution | None = None) -> Solution:
    """Solve the network, honouring every source's compliance limit.

    The active set (which sources sit at their limit) usually settles in a few passes.
    When it does not (several sources and islands clamping against each other), it is
    solved again from scratch changing one source per pass; should that cycle too, every
    combination of compliance states is tried (:func:`_solve_exhaustive`).
    ``fast`` picks the engine (default :data:`FAST_PATH`); both give the same solution,
    and a network the fast engine fails on (round-off in a nearly singular Jacobian)
    is handed to the reference engine. ``hint``: a solution of a nearby network with the
    same sources, whose compliance states the active set starts from (a source that was
    at its limit is likely still there; starting it unlimited costs a Newton solve of a
    circuit far from the answer).
    """
    kinds = [_FastEngine, _ReferenceEngine] if (FAST_PATH if fast is None else fast) else [_ReferenceEngine]
    for kind in kinds:
        engine = kind(net)
        if kind is _FastEngine:
            net.engine = engine
        try:
            return _solve(net, engine, v_start, one_change=False, hint=hint)
        except SolverError:
            pass
        try:
            return _solve(net, engine, None, one_change=True)
        except SolverError:
            pass
        try:
            return _solve_exhaustive(net, engine)
        except SolverError:
            if kind is kinds[-1]:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _solve(net: Netlist, engine: _FastEngine | _ReferenceEngine, v_start: np.ndarray | None,
           one_change: bool, hint: Solution | None = None) -> Solution:
    n = net.n_nodes
    v = np.zeros(n) if v_start is None or len(v_start) != n else np.array(v_start, float)
    ns = len(net.src_node)
    limits = [float(x) for x in net.src_limit]
    # active set: True where a source currently acts in its primary (programmed) mode
    primary = np.ones(ns, bool)
    limited_value = np.zeros(ns)  # the limit value a source sits at when not primary
    _resolve_conflicts(net, primary, limited_value)
    if hint is not None and len(hint.src_in_limit) == ns and np.any(hint.src_in_limit):
        for s in np.flatnonzero(hint.src_in_limit):
            primary[s] = False
            side = hint.src_current[s] if net.src_is_v[s] else hint.src_voltage[s]
            limited_value[s] = (1.0 if side >= 0 else -1.0) * limits[s]
    total_it = 0
    for _ in range((8 if one_change else 4) * ns + 4):
        v, it, cur = _one_pass(net, engine, v, primary, limited_value)
        total_it += it
        if not _update_active_set(net, v, cur, primary, limited_value, one_change):
            return Solution(v, cur, v[net.src_node], ~primary, total_it)
    raise SolverError("source compliance states did not settle")


def _one_pass(net: Netlist, engine: _FastEngine | _ReferenceEngine, v: np.ndarray, primary: np.ndarray,
              limited_value: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Solve with every source in the given compliance state: (node voltages, Newton
    iterations, each source's current)."""
    fixed: dict[int, float] = {}
    vlimits: dict[int, float] = {}
    inject = np.zeros(net.n_nodes)
    for s, (node, is_v, level, limit) in enumerate(zip(net.src_node.tolist(), net.src_is_v.tolist(),
                                                       net.src_level.tolist(), net.src_limit.tolist())):
        if node == 0:
            continue
        value = level if primary[s] else float(limited_value[s])
        if is_v == primary[s]:  # forces a voltage
            fixed[node] = value
        else:
            inject[node] += value
            # watch for a runaway: a current source past its voltage limit, or a
            # voltage source in current limit past its own level
            watch = limit if not is_v else max(abs(level), 1.0)
            vlimits[node] = min(vlimits.get(node, np.inf), watch)
    # every free node lies between the fixed voltages (maximum principle); an
    # iterate left far outside by the last active set would take the damped
    # Newton thousands of steps to walk back
    bounds = [0.0, *fixed.values(), *vlimits.values(), *(-x for x in vlimits.values())]
    v = np.minimum(np.maximum(v, min(bounds)), max(bounds))
    v, it, out = engine.newton(fixed, inject, v, vlimits)
    return v, it, _source_currents(net, out, primary, limited_value)


#: at most this many sources are searched exhaustively (3^n compliance states) when the
#: active-set passes cannot settle
EXHAUSTIVE_SOURCES = 6


def _solve_exhaustive(net: Netlist, engine: _FastEngine | _ReferenceEngine) -> Solution:
    """The last resort: try every compliance state of every source (at its limit on
    either side, or not), fewest limited sources first, and return the first that every
    source agrees with. The passes can cycle when sources on separate islands clamp in
    turn (found by fuzzing: a 0 A source on a pad that a 0.25 mA-limited voltage source
    pulls through M1, beside a 1 mA source into a floating pad); a consistent state
    exists, and this finds it."""
    ns = len(net.src_node)
    if ns > EXHAUSTIVE_SOURCES:
        raise SolverError("source compliance states did not settle")
    limits = net.src_limit.tolist()
    for k in range(ns + 1):
        for chosen in combinations(range(ns), k):
            for signs in product((1.0, -1.0), repeat=k):
                primary = np.ones(ns, bool)
                limited = np.zeros(ns)
                for s, sign in zip(chosen, signs):
                    primary[s] = False
                    limited[s] = sign * limits[s]
                if _forcing_conflict(net, primary, limited):
                    continue
                try:
                    v, it, cur = _one_pass(net, engine, np.zeros(net.n_nodes), primary, limited)
                except SolverError:
                    continue
                if not _update_active_set(net, v, cur, primary.copy(), limited.copy()):
                    return Solution(v, cur, v[net.src_node], ~primary, it)
    raise SolverError("no compliance states satisfy every source")


def _forcing_conflict(net: Netlist, primary: np.ndarray, limited: np.ndarray) -> bool:
    """True if two sources would force one node to different voltages."""
    forced: dict[int, float] = {}
    for s, (node, is_v) in enumerate(zip(net.src_node.tolist(), net.src_is_v.tolist())):
        if node != 0 and is_v == primary[s]:
            value = float(net.src_level[s]) if primary[s] else float(limited[s])
            if forced.setdefault(node, value) != value:
                return True
    return False


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


def _source_currents(net: Netlist, out: np.ndarray, primary: np.ndarray, limited: np.ndarray) -> np.ndarray:
    """Current each source delivers: current-forcing ones deliver what they force; the
    voltage-forcing ones on a node share the rest of that node's KCL balance (``out``:
    the current leaving each node through the elements)."""
    ns = len(net.src_node)
    cur = np.zeros(ns)
    forcing_v: dict[int, list[int]] = {}
    injected: dict[int, float] = {}
    for s in range(ns):
        node = int(net.src_node[s])
        if net.src_is_v[s] == primary[s]:
            forcing_v.setdefault(node, []).append(s)
        else:
            value = net.src_level[s] if primary[s] else limited[s]
            cur[s] = value
            injected[node] = injected.get(node, 0.0) + value
    for node, group in forcing_v.items():
        share = (out[node] - injected.get(node, 0.0)) / len(group)
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
