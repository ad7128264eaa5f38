"""Fabrication defects of the simulated wafer: opens, shorts and stuck devices.

A real wafer never yields 100 %: a broken contact or a D1 that did not form leaves the
word-line path open, a pinhole through the thin perovskite film shorts D1, and some
memristors do not switch (M1 pinned at the top or the bottom of its range, an M2 whose
filament never forms). Defects are more frequent towards the edge (thinner films,
edge-bead, handling) and come in clusters (a particle or a scratch takes out
neighbouring devices).

:func:`apply_defects` draws them with ``physics.on("defects")``, from a random stream of
their own (wafer seed + a fixed tag): switching defects off, or changing the rate,
leaves every other device parameter as it was. Each PCU gets at most one defect,
stored as :attr:`PCU.defect`; the PCU applies it to the components it lends the
circuit (:meth:`PCU.diode`), and a stuck memristor gets parameters under which it does
not switch, so the simulated bench honours every defect without knowing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from labpcu.sim.diode import G_OPEN, R_SHORT, defective_diode  # noqa: F401 - part of the defect model's API
from labpcu.sim.physics import Physics

if TYPE_CHECKING:
    from labpcu.sim.diode import DiodeParams
    from labpcu.sim.pcu import PCU

#: every defect kind and what it is
DEFECTS: dict[str, str] = {
    "open": "the word-line path is open (broken contact, D1 did not form): D1 ≈ 1 fS",
    "short": "a pinhole shorts D1: ≈ 10 Ω from WL to CL1, no rectification",
    "m1_stuck_on": "M1 pinned at the top of its range: programming pulses do not move it",
    "m1_stuck_off": "M1 pinned at the bottom of its range: programming pulses do not move it",
    "m2_stuck_off": "M2's filament never forms: it stays in its high-resistance state",
}
#: the share of each kind among defective devices (opens and shorts dominate, as on
#: thin-film wafers)
KIND_WEIGHTS: dict[str, float] = {"open": 0.3, "short": 0.25, "m1_stuck_on": 0.15, "m1_stuck_off": 0.15,
                                  "m2_stuck_off": 0.15}
#: the random stream's tag (mixed with the wafer seed), apart from every device's own
STREAM_TAG = 0xDEFEC7
#: conductance of an open element (S) and resistance of a short (Ω)
#: a defect at the wafer edge is this many times as likely as one at the centre
EDGE_FACTOR = 4.0
#: expected share of the defects that come in clusters (particles, scratches)
CLUSTER_SHARE = 0.35
#: radius of a cluster (mm): a particle covers a few cells of an array (1.5 mm pitch)
CLUSTER_RADIUS_MM = 2.5
#: a pinned memristor: far beyond any voltage a bench applies
NEVER_V = 1e3


def radial_weight(x_mm: float, y_mm: float, radius_mm: float) -> float:
    """Relative defect density at (x, y): 1 at the centre, :data:`EDGE_FACTOR` at the edge."""
    r2 = (x_mm**2 + y_mm**2) / radius_mm**2
    return 1.0 + (EDGE_FACTOR - 1.0) * min(r2, 1.0) ** 2


def draw_defects(positions: dict[str, tuple[float, float]], seed: int, rate: float,
                 radius_mm: float) -> dict[str, str]:
    """Device id → defect kind for the defective devices among ``positions`` (mm).

    The number of defective devices is binomial(N, ``rate``), so ``rate`` is the mean
    fraction. About :data:`CLUSTER_SHARE` of them come in one or two clusters, each
    around a device drawn by the radial density, taking its neighbours within
    :data:`CLUSTER_RADIUS_MM`; the rest are placed one by one with the radial density
    (more at the edge). Kinds follow :data:`KIND_WEIGHTS`.
    """
    ids = list(positions)
    if not ids or rate <= 0:
        return {}
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_TAG]))
    xy = np.array([positions[d] for d in ids], float)
    weight = np.array([radial_weight(x, y, radius_mm) for x, y in xy])
    total = int(rng.binomial(len(ids), rate))
    in_clusters = int(rng.binomial(total, CLUSTER_SHARE))
    chosen: list[int] = []

    def pick() -> int:
        free = np.array([k for k in range(len(ids)) if k not in chosen])
        return int(rng.choice(free, p=weight[free] / weight[free].sum()))

    n_clusters = 0 if in_clusters == 0 else 1 if in_clusters <= 3 else 2
    for c in range(n_clusters):
        size = in_clusters // n_clusters + (c < in_clusters % n_clusters)
        centre = pick()
        dist = np.hypot(*(xy - xy[centre]).T)
        near = [int(k) for k in np.argsort(dist, kind="stable") if dist[k] <= CLUSTER_RADIUS_MM and k not in chosen]
        chosen += near[:size]  # the centre is its own nearest
    while len(chosen) < total:
        chosen.append(pick())
    kinds = list(KIND_WEIGHTS)
    p = np.array([KIND_WEIGHTS[k] for k in kinds])
    drawn = rng.choice(len(kinds), size=len(chosen), p=p / p.sum())
    return {ids[k]: kinds[int(j)] for k, j in zip(chosen, drawn)}


def apply_defects(devices: Mapping[str, PCU], seed: int, physics: Physics, radius_mm: float) -> dict[str, str]:
    """Give a wafer's PCUs (by id) their defects (none with ``defects`` off); returns them.

    A stuck M1 is set to the end of its range and given a switching rate of zero and
    thresholds no bench reaches; an M2 that never forms gets a set voltage no bench
    reaches. Opens and shorts act through :meth:`PCU.diode`.
    """
    if not physics.on("defects"):
        return {}
    positions = {d: (dev.x_mm, dev.y_mm) for d, dev in devices.items()}
    found = draw_defects(positions, seed, physics.defect_rate, radius_mm)
    for did, kind in found.items():
        inject_defect(devices[did], kind)
    return found


def inject_defect(pcu: PCU, kind: str) -> None:
    """Make ``pcu`` defective in the way ``kind`` says (tests inject one kind at a
    time; :func:`apply_defects` draws them). A simulated bench that has already solved
    its site must rebuild it (move the probes) to see an open or a short."""
    if kind not in DEFECTS:
        raise ValueError(f"unknown defect {kind!r}; known: {', '.join(DEFECTS)}")
    pcu.defect = kind
    if kind in ("m1_stuck_on", "m1_stuck_off"):
        m1 = pcu.m1
        m1.p = replace(m1.p, rate=0.0, v_th_p=NEVER_V, v_th_d=NEVER_V)
        m1.g_prog = m1.p.g_max if kind == "m1_stuck_on" else m1.p.g_min
    elif kind == "m2_stuck_off":
        pcu.m2.p = replace(pcu.m2.p, v_set=NEVER_V)
        pcu.m2.lrs = False
