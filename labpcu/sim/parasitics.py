"""Parasitics of the simulated bench: capacitance, series resistance, relay leakage.

A real bench is not the ideal wires the DC model starts from. Three mechanisms, each
switchable through :class:`~labpcu.sim.physics.Physics`:

* ``capacitance``: every device element and every cable path stores charge, so a
  reading taken right after a bias step sees a displacement current (voltage mode) or
  a node voltage that still lags (current mode). The DC solver is kept: :class:`Step`
  records each step's transient in closed form, linearized at the new operating point
  (no transient solve per reading):

  - *current mode*: the forced node's voltage lags and charges through the node's
    chord resistance, with everything on it (cable, paths, elements): one pole.
  - *voltage mode*: the source charges its own cable and paths in microseconds (its
    settling, which the emulators model as source/measure delays), so those do not
    relax through the device. What relaxes is (a) each element between the terminal
    and another stiff node, through its own small-signal conductance (τ = C_el/g_el:
    the ionic charge follows through the device), and (b) each *internal* cluster of
    undriven nodes the terminal reaches (n1, n2 of a PCU, joined through M1): at the
    step the element capacitances share the terminal's ΔV (capacitive divider), then
    the cluster relaxes as one node, τ = C_K/g_K, C_K the capacitances of the
    elements with one end in it, g_K its small-signal conductance into the rest of
    the circuit (the terminal's own elements included). The terminal sees the
    conductive and the displacement part, I − I_dc = L(t)·(g_TK − C_TK/τ_K), with
    L the cluster's lag and g_TK, C_TK the elements between terminal and cluster
    (:class:`StepPlan`). A cluster relaxes as one node: inside it the
    conductances (M1 in LRS) are taken as much larger than those leaving it.
* ``series_resistance``: lines, the 3730's relay path and the probe contact sit
  between each SMU and the pad it reaches: a resistor per closed matrix column.
* ``relay_leakage``: an open 3730 crosspoint is not an open circuit; its isolation
  resistance joins each row (an SMU terminal) to each column (a pad); a closed path
  adds the card's offset current to what the SMU reads.

Magnitudes and where they come from
-----------------------------------
* Device capacitance per element: area 0.1 mm² (the device area the diode's
  photoresponse already assumes, :data:`labpcu.sim.wafer.DIODE_RESPONSIVITY`) ×
  (geometric + ionic). Geometric: ε0·εr/d of ~500 nm MAPbI3 with εr ≈ 30, ≈ 53 nF/cm²,
  inside the 30–250 nF/cm² range quoted for perovskite cells (εr 24–60, 200–700 nm).
  Ionic/electrode polarization: MAPbI3 stores far more charge at low frequency through
  mobile ions (Almora et al., J. Phys. Chem. Lett. 2015, 6, 1645: dark low-frequency
  capacitance of µF/cm² and above, "giant" under light); 1 µF/cm² is taken as the part
  that follows a step within the milliseconds of a reading. ≈ 1.05 nF per element.
* Cable and fixture capacitance per terminal path: low-noise triax/coax ≈ 100 pF/m
  (RG-58 82 pF/m, RG-6 68 pF/m; Keysight's guard-capacitance budgets count a 2 m
  cable as 130 pF and a probe card as ≈ 10 pF); 1.5 m SMU → matrix, 1.5 m matrix →
  probe card, the 3730's path capacitance (tens of pF class) and the probe: ≈ 360 pF.
* Series resistance per terminal path: 3730 path (contact) resistance ≈ 1 Ω class
  (data sheet: < 1 Ω initial per contact), 3 m of cable ≈ 0.3 Ω, probe tip on a gold
  pad 1–10 Ω (tungsten tips; depends on force and tip wear): 5 Ω. ≈ 6.3 Ω per path.
* Relay isolation: the 3730 data sheet gives > 10^9 Ω between paths and to common
  (the card is a general-purpose matrix, not a low-current one); each open crosspoint
  is one conductance between its row and its column, 10^11 Ω by default (the typical
  value of a clean card, two decades above the guaranteed minimum). Offset current: < 100 pA
  per path (data sheet); each crosspoint's is drawn once per bench seed, σ 20 pA,
  clipped to ±100 pA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from labpcu.sim.circuit import GMIN
from labpcu.sim.wiring import Crosspoint
from labpcu.unionfind import UnionFind

# ------------------------------------------------------------------ capacitance
#: device area (the same 0.1 mm² the diode's responsivity assumes)
DEVICE_AREA_CM2 = 1e-3
#: geometric capacitance ε0·εr/d of ~500 nm MAPbI3, εr ≈ 30
GEOMETRIC_F_PER_CM2 = 8.854e-14 * 30.0 / 500e-7
#: ionic (electrode-polarization) capacitance that follows a step within milliseconds
IONIC_F_PER_CM2 = 1e-6
#: capacitance across each device element (D1, D2, M1, M2)
ELEMENT_CAPACITANCE = DEVICE_AREA_CM2 * (GEOMETRIC_F_PER_CM2 + IONIC_F_PER_CM2)
#: low-noise triax/coax capacitance per metre
CABLE_F_PER_M = 100e-12
#: SMU output to the matrix row, once per terminal
SMU_CABLE_CAPACITANCE = 1.5 * CABLE_F_PER_M
#: per closed column: the 3730's path, 1.5 m to the probe card, the probe
COLUMN_PATH_CAPACITANCE = 50e-12 + 1.5 * CABLE_F_PER_M + 10e-12

# ------------------------------------------------------------ series resistance
MATRIX_PATH_RESISTANCE = 1.0  # Ω, 3730 relay path
CABLE_RESISTANCE = 0.3  # Ω, 3 m of cable, both runs
PROBE_CONTACT_RESISTANCE = 5.0  # Ω, probe tip on a gold pad (1–10 Ω)
#: from an SMU terminal to a pad, through one closed crosspoint
PATH_RESISTANCE = MATRIX_PATH_RESISTANCE + CABLE_RESISTANCE + PROBE_CONTACT_RESISTANCE

# ------------------------------------------------------------------ relay leakage
#: per open crosspoint, row to column: the 3730 guarantees > 1e9 Ω; a clean, dry card
#: typically shows two decades more, which is what the default wafer is measured with
#: (at the guaranteed 1e9 Ω, 30 open crosspoints at 0.1 V leak 3 nA: a lab doing
#: sub-nA work through this card would see no M2 off state and no diode plateau)
RELAY_ISOLATION_OHM = 1e11
OFFSET_CURRENT_SIGMA = 20e-12  # A, per closed path
OFFSET_CURRENT_MAX = 100e-12  # A, the data sheet's bound


def offset_current(seed: int, cp: Crosspoint) -> float:
    """The offset current (A) a closed crosspoint adds to what its row's SMU reads:
    a property of the card, fixed per bench seed and crosspoint."""
    rng = np.random.default_rng([int(seed), 0x3730, *(int(x) for x in cp)])
    return float(np.clip(OFFSET_CURRENT_SIGMA * rng.standard_normal(), -OFFSET_CURRENT_MAX, OFFSET_CURRENT_MAX))


#: a voltage step's pole is dropped once its current is below this (A)
NEGLIGIBLE_CURRENT = 1e-18


#: poles whose ln τ round to the same multiple of this are merged (τ within ≈ 5 %)
POLE_MERGE_LOG_TAU = 0.05


@dataclass(frozen=True, slots=True)
class Step:
    """The last bias step of one terminal.

    Current mode: how far its node's capacitance lagged the new DC voltage ``v_dc`` at
    ``t0`` (``lag`` V = V_dc − V_capacitor), the capacitance ``c`` (F) and time
    constant ``tau`` (s) it relaxes with. Voltage mode: ``poles``, the excess current
    out of the terminal as (amplitude A at ``t0``, τ s) terms (:class:`StepPlan`,
    with what is left of earlier steps); ``lag`` is 0 there and ``tau`` the slowest τ.
    ``topology`` ties it to the network it was taken on (a relay or probe move makes
    it void)."""

    t0: float
    lag: float
    c: float
    tau: float
    topology: object = field(repr=False, compare=False)
    v_dc: float = 0.0  # the node's DC voltage after the step
    poles: tuple[tuple[float, float], ...] = ()

    def lag_at(self, t: float) -> float:
        """The lag (V) left at bench time ``t``."""
        dt = t - self.t0
        if dt < 0 or self.tau <= 0:
            return self.lag if dt < 0 else 0.0
        x = dt / self.tau
        return 0.0 if x > 700 else self.lag * math.exp(-x)

    def current_at(self, t: float) -> float:
        """Excess current (A) out of the terminal at ``t``: the voltage step's poles,
        else the displacement current C·dV/dt still charging the node."""
        if self.poles:
            dt = t - self.t0
            if dt < 0:
                dt = 0.0
            return sum(a * math.exp(-dt / tau) for a, tau in self.poles if dt < 700 * tau)
        return self.c * self.lag_at(t) / self.tau if self.tau > 0 else 0.0

    def poles_at(self, t: float) -> list[tuple[float, float]]:
        """The poles rebased to ``t`` (what is left of them), negligible ones dropped."""
        dt = max(t - self.t0, 0.0)
        merged: dict[int, list[float]] = {}
        for a, tau in self.poles:
            x = dt / tau
            left = a * math.exp(-x) if x < 700 else 0.0
            if abs(left) > NEGLIGIBLE_CURRENT:
                # poles within a few per cent in τ decay alike: one term each (a
                # terminal stepped hundreds of times would otherwise carry hundreds)
                key = round(math.log(tau) / POLE_MERGE_LOG_TAU)
                slot = merged.setdefault(key, [0.0, tau])
                slot[0] += left
        return [(a, tau) for a, tau in merged.values() if abs(a) > NEGLIGIBLE_CURRENT]


class GroupBoundary:
    """Which conductances and diodes cross the boundary of a node group, worked out
    once for a network structure (a terminal steps many times on one topology)."""

    def __init__(self, net, group: frozenset[int] | np.ndarray) -> None:
        members = np.zeros(net.n_nodes, bool)
        members[list(group) if not isinstance(group, np.ndarray) else group] = True
        ra, rb = np.asarray(net.res_a, int), np.asarray(net.res_b, int)
        da, dk = np.asarray(net.dio_a, int), np.asarray(net.dio_k, int)
        self.res = np.flatnonzero(members[ra] ^ members[rb])
        self.dio = np.flatnonzero(members[da] ^ members[dk])
        self.size = int(members.sum())

    def conductance(self, net, v: np.ndarray, g_dio: np.ndarray | None = None) -> float:
        """The group's conductance into the rest at ``v`` (``g_dio``: every diode's
        small-signal conductance there, if already known)."""
        g = float(np.sum(np.asarray(net.res_g)[self.res])) if len(self.res) else 0.0
        if len(self.dio):
            if g_dio is None:
                da, dk = np.asarray(net.dio_a, int), np.asarray(net.dio_k, int)
                _, g_dio = net.diode_currents(v[da] - v[dk])
            g += float(np.sum(np.asarray(g_dio)[self.dio]))
        return g


@dataclass(frozen=True)
class ParasiticNetwork:
    """What the parasitics add to one topology: linear resistors between node pairs
    (``a``, ``b``, conductance ``g``), the nodes each terminal node drives through its
    series paths (``driven``), and how many closed columns each reaches (``paths``)."""

    a: np.ndarray
    b: np.ndarray
    g: np.ndarray
    driven: dict[int, frozenset[int]]
    paths: dict[int, int]


def terminal_capacitance(paths: int, group: frozenset[int], elements: list[tuple[int, int]]) -> float:
    """Capacitance (F) a terminal charges when it steps: its SMU cable, each closed
    column's path, and every device element with one end on the nodes it drives
    (``elements``: the (a, b) nodes of every element under the probes)."""
    if paths == 0:
        return 0.0
    n = sum(1 for a, b in elements if (a in group) != (b in group))
    return SMU_CABLE_CAPACITANCE + paths * COLUMN_PATH_CAPACITANCE + n * ELEMENT_CAPACITANCE


@dataclass(frozen=True)
class _Cluster:
    """An undriven cluster a stepping terminal reaches through device elements."""

    between: np.ndarray  # device elements joining the terminal to the cluster
    c_between: float  # F, their capacitance (C_TK)
    c: float  # F, every element with one end in the cluster, and cable on its nodes (C_K)
    boundary: GroupBoundary  # for g_K
    ends: np.ndarray  # the cluster's nodes on its elements' ends (for its DC change)


class StepPlan:
    """The transient of a voltage step on the nodes ``terminal`` (excess current out of
    the terminal, as (A at the step, τ) poles; see the module docstring for the model),
    its structure worked out once for one network structure, stepping terminal and set
    of stiff nodes: the clusters, the elements between the terminal and each cluster or
    stiff node, each cluster's capacitance and boundary. Only the small-signal
    conductances and voltages change from one step to the next (:meth:`poles`).

    ``net``: the network (its first ``n_device_res`` conductances and every diode are
    device elements, each with :data:`ELEMENT_CAPACITANCE`; the other conductances,
    series paths and relay leakage, only conduct). ``stiff``: nodes held by voltage
    sources (ground included). ``merged``: node groups that move as one (a terminal's
    row and the pads its series paths reach); ``extra_c``: capacitance (F) on a node
    besides the elements' (the cable of an undriven terminal)."""

    def __init__(self, net, terminal: frozenset[int], stiff: frozenset[int], n_device_res: int,
                 merged: list[frozenset[int]], extra_c: dict[int, float]) -> None:
        res_a, res_b = np.asarray(net.res_a, int), np.asarray(net.res_b, int)
        dio_a, dio_k = np.asarray(net.dio_a, int), np.asarray(net.dio_k, int)
        self.n_device_res = n_device_res
        el_a = np.concatenate([res_a[:n_device_res], dio_a])
        el_b = np.concatenate([res_b[:n_device_res], dio_k])
        # clusters: undriven nodes joined through device elements (merged groups move as one)
        sets: UnionFind[int] = UnionFind()
        for group in merged:
            if not group & stiff:
                first = min(group)
                for n in group:
                    sets.union(first, n)
        for a, b in zip(el_a.tolist(), el_b.tolist()):
            if a not in stiff and b not in stiff:
                sets.union(a, b)
        to_stiff: list[int] = []
        between: dict[int, list[int]] = {}  # cluster root -> elements, in order of first meeting
        for k, (a, b) in enumerate(zip(el_a.tolist(), el_b.tolist())):
            if (a in terminal) == (b in terminal):
                continue
            other = b if a in terminal else a
            if other in stiff:  # between two stiff nodes: the element's own charge
                to_stiff.append(k)
            else:
                between.setdefault(sets.find(other), []).append(k)
        self.to_stiff = np.array(to_stiff, int)
        self.clusters: list[_Cluster] = []
        if between:
            roots = np.array([sets.find(n) if n in sets else -1 for n in range(net.n_nodes)])
            for root, elements in between.items():
                inside = roots == root
                ina, inb = inside[el_a], inside[el_b]
                edge = ina ^ inb
                c = ELEMENT_CAPACITANCE * int(np.sum(edge)) + sum(cap for n, cap in extra_c.items() if inside[n])
                self.clusters.append(_Cluster(np.array(elements, int), ELEMENT_CAPACITANCE * len(elements), c,
                                              GroupBoundary(net, np.flatnonzero(inside)),
                                              np.concatenate([el_a[edge & ina], el_b[edge & inb]])))

    def poles(self, net, v_new: np.ndarray, v_old: np.ndarray | None, dv_terminal: float) -> list[tuple[float, float]]:
        """The poles of a step ``dv_terminal``, linearized at the new operating point
        ``v_new``. ``v_old``: the DC node voltages before the step (None: a cluster's DC
        change is taken from the small-signal divider g_TK/g_K instead)."""
        n = self.n_device_res
        res_a, res_b = np.asarray(net.res_a, int)[:n], np.asarray(net.res_b, int)[:n]
        dio_a, dio_k = np.asarray(net.dio_a, int), np.asarray(net.dio_k, int)
        if n:
            vnl = net.resistor_vnl()[:n]
            g_res = _small_signal(v_new[res_a] - v_new[res_b], np.asarray(net.res_g)[:n], vnl)
        else:
            g_res = np.zeros(0)
        g_dio = net.diode_currents(v_new[dio_a] - v_new[dio_k])[1] if len(dio_a) else np.zeros(0)
        el_g = np.concatenate([g_res, np.asarray(g_dio, float)])
        poles: list[tuple[float, float]] = []
        for g in el_g[self.to_stiff].tolist():
            if g > 0:
                poles.append((g * dv_terminal, ELEMENT_CAPACITANCE / g))  # C·ΔV/τ, τ = C/g
        compare = v_old is not None and len(v_old) == len(v_new)
        for cl in self.clusters:
            g_tk = float(np.sum(el_g[cl.between]))
            g_k = cl.boundary.conductance(net, v_new, g_dio) + GMIN * cl.boundary.size
            tau = cl.c / g_k
            if compare:
                dv_k = float(np.mean(v_new[cl.ends] - v_old[cl.ends]))
            else:
                dv_k = dv_terminal * g_tk / g_k
            lag = dv_k - dv_terminal * cl.c_between / cl.c  # what the capacitive divider left undone
            poles.append((lag * (g_tk - cl.c_between / tau), tau))
        return poles


def _small_signal(v: np.ndarray, g: np.ndarray, vnl: np.ndarray) -> np.ndarray:
    """dI/dV of conductances g (non-ohmic where ``vnl`` is finite: g·cosh(V/v_nl))."""
    return np.where(np.isinf(vnl), g, g * np.cosh(np.clip(v / np.where(np.isinf(vnl), 1.0, vnl), -700.0, 700.0)))
