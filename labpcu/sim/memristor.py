"""The two memristors of a PCU.

M1 (FTO/Spiro-TTB/MAPbI3/Au) stores a weight as a continuously tunable conductance by
charge trapping at the MAPbI3/Au interface. M2 (FTO/MAPbI3/Ag) switches between a
high- and a low-resistance state by forming and rupturing an Ag filament.

Both are *model* choices where pcu.md leaves the physics open; every constant is a
per-device parameter drawn by :mod:`labpcu.sim.wafer`, so the numbers below are only
the means of the default wafer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class M1Params:
    """Multi-state memristor parameters (SI units)."""

    g_min: float = 2e-6  # S, fully depressed
    g_max: float = 110e-6  # S, fully potentiated
    v_th_p: float = 0.15  # V, potentiation threshold (n1 positive w.r.t. n2)
    v_th_d: float = 0.15  # V, depression threshold magnitude
    v0: float = 0.08  # V, exponential slope of the switching rate above threshold
    rate: float = 0.8  # 1/s, fraction of the range per second at |V| = v_th + v0·ln 2
    c2c_sigma: float = 0.12  # relative spread of each pulse's effect (cycle to cycle)
    read_noise: float = 0.0012  # relative conductance fluctuation per reading
    drift_nu: float = 0.003  # fractional loss per decade of time since programming
    drift_tau: float = 1.0  # s, onset of drift after a pulse

    @property
    def g_range(self) -> float:
        return self.g_max - self.g_min


@dataclass(slots=True)
class MultiStateMemristor:
    """M1: conductance moved by voltage pulses, saturating at its range, drifting slowly.

    The programmed conductance ``g_prog`` relaxes after each pulse as
    ``g_prog·(1 − ν·log10(1 + (t − t_prog)/τ))`` (detrapping), so retention is a closed
    form in time: no cost while nothing is biased.
    """

    p: M1Params
    g_prog: float
    t_prog: float = 0.0

    def conductance(self, t: float) -> float:
        """Noise-free conductance at time ``t``."""
        age = max(t - self.t_prog, 0.0)
        g = self.g_prog * (1.0 - self.p.drift_nu * math.log10(1.0 + age / self.p.drift_tau))
        return min(max(g, self.p.g_min), self.p.g_max)

    def drive_rate(self, v: float) -> float:
        """Signed rate of change of the normalized state (1/s) at voltage ``v``,
        before the saturation window; zero below threshold, so reads never disturb."""
        p = self.p
        if v > p.v_th_p:
            return p.rate * (math.exp((v - p.v_th_p) / p.v0) - 1.0)
        if v < -p.v_th_d:
            return -p.rate * (math.exp((-v - p.v_th_d) / p.v0) - 1.0)
        return 0.0

    def draw_spread(self, rng: np.random.Generator) -> float:
        """Cycle-to-cycle factor on the effect of one pulse (drawn once per pulse)."""
        return max(0.0, 1.0 + self.p.c2c_sigma * float(rng.standard_normal()))

    def apply(self, v: float, dt: float, t: float, spread: float = 1.0) -> float:
        """Apply voltage ``v`` (n1 minus n2) from ``t`` for ``dt`` seconds.

        ``spread`` is the pulse's cycle-to-cycle factor (:meth:`draw_spread`). Returns
        the change in normalized state. Saturation: potentiation slows as the
        conductance nears g_max, depression as it nears g_min (window on the state).
        """
        r = self.drive_rate(v)
        if r == 0.0 or dt <= 0.0:
            return 0.0
        p = self.p
        g = self.conductance(t)
        x = (g - p.g_min) / p.g_range  # normalized state 0..1
        # exact solution of dx/dt = r·(1 − x) (or r·x for depression) over dt
        if r > 0:
            x_new = 1.0 - (1.0 - x) * math.exp(-r * dt * spread)
        else:
            x_new = x * math.exp(r * dt * spread)
        self.g_prog = p.g_min + x_new * p.g_range
        self.t_prog = t + dt
        return x_new - x


@dataclass(slots=True)
class M2Params:
    """Binary (filamentary) memristor parameters."""

    v_set: float = 0.45  # V across M2 (n2 minus BL) that forms the filament
    v_reset: float = -0.25  # V that ruptures it
    r_off: float = 2e11  # Ω, high-resistance state: 1 pA at 0.2 V, far below D2 (sigmoid mode)
    k_on: float = 0.2  # V; LRS resistance = k_on / (current that flowed while forming)
    r_on_min: float = 50.0  # Ω, strongest filament
    r_on_max: float = 5e3  # Ω, weakest filament that still counts as LRS
    filament_tau: float = 3e8  # s, slow LRS resistance growth (filament thinning)
    read_noise: float = 0.002  # relative resistance fluctuation per reading


@dataclass(slots=True)
class BinaryMemristor:
    """M2: HRS or LRS; the LRS resistance is set by the compliance current at forming."""

    p: M2Params
    lrs: bool = False
    r_on: float = 200.0
    t_set: float = 0.0
    switch_count: int = field(default=0)

    def resistance(self, t: float) -> float:
        if not self.lrs:
            return self.p.r_off
        age = max(t - self.t_set, 0.0)
        return self.r_on * (1.0 + age / self.p.filament_tau)

    def wants_switch(self, v: float) -> bool:
        """True if voltage ``v`` (n2 minus BL) switches the present state."""
        return (not self.lrs and v >= self.p.v_set) or (self.lrs and v <= self.p.v_reset)

    def set(self, t: float) -> None:
        """Form the filament; the strength is fixed afterwards by :meth:`fix_strength`."""
        self.lrs = True
        self.r_on = self.p.r_on_min
        self.t_set = t
        self.switch_count += 1

    def fix_strength(self, forming_current: float) -> None:
        """A filament grows until the current is limited: R_on ≈ k_on / I_forming."""
        i = abs(forming_current)
        r = self.p.k_on / i if i > 0 else self.p.r_on_max
        self.r_on = min(max(r, self.p.r_on_min), self.p.r_on_max)

    def reset(self) -> None:
        self.lrs = False
        self.switch_count += 1
