"""The two memristors of a PCU.

M1 (FTO/Spiro-TTB/MAPbI3/Au) stores a weight as a continuously tunable conductance by
charge trapping at the MAPbI3/Au interface. M2 (FTO/MAPbI3/Ag) switches between a
high- and a low-resistance state by forming and rupturing an Ag filament.

Both are *model* choices where pcu.md leaves the physics open; every constant is a
per-device parameter drawn by :mod:`labpcu.sim.wafer`, so the numbers below are only
the means of the default wafer.

Mechanisms a lab meets, each switched by the bench (:mod:`labpcu.sim.physics`), which
passes the switch in; the device classes only hold the state:

* ``m1_kinetics``: each pulse also moves mobile ions that drift back by diffusion; a
  volatile conductance (a few % of the pulse's effect) relaxes with two time constants
  (~20 ms and ~2 s), in closed form in time.
* ``m1_read_disturb``: below the switching threshold the ion hopping rate falls off
  exponentially (one e-fold per ~10 mV), so 0.1–0.2 V reads move the state slowly and
  +0.01 V reads do not.
* ``m1_nonohmic``: I = g·v_nl·sinh(V/v_nl) (hopping conduction; the circuit solver
  takes v_nl, :meth:`MultiStateMemristor.current` gives the law).
* ``m2_stochastics``: each set and reset voltage and each filament's strength drawn
  anew cycle to cycle; a fresh cell forms at a higher voltage; after its endurance the
  cell sticks in one state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class M1Params:
    """Multi-state memristor parameters (SI units)."""

    g_min: float = 2e-6  # S, fully depressed
    g_max: float = 1e-3  # S, fully potentiated: the LRS (1 kΩ), well below softplus mode's programmed 10 kΩ
    v_th_p: float = 0.15  # V, potentiation threshold (n1 positive w.r.t. n2)
    v_th_d: float = 0.15  # V, depression threshold magnitude
    v0: float = 0.08  # V, exponential slope of the switching rate above threshold
    rate: float = 0.088  # 1/s, fraction of the range per second at |V| = v_th + v0·ln 2 (≈ 87 µS/s)
    c2c_sigma: float = 0.12  # relative spread of each pulse's effect (cycle to cycle)
    read_noise: float = 0.0012  # relative conductance fluctuation per reading
    drift_nu: float = 0.003  # fractional loss per decade of time since programming
    drift_tau: float = 1.0  # s, onset of drift after a pulse
    # m1_kinetics: volatile conductance per unit of a pulse's non-volatile change, and
    # how it relaxes (share in the fast component; the rest relaxes with tau_slow)
    vol_fraction: float = 0.03
    vol_fast_share: float = 0.6
    tau_fast: float = 0.02  # s
    tau_slow: float = 2.0  # s
    # m1_read_disturb: normalized-state rate at the threshold, falling by e per rd_slope below it
    rd_rate: float = 2e-4  # 1/s: ~10^-6 /s at 0.1 V, ~10^-10 /s at 0.01 V
    rd_slope: float = 0.01  # V
    # m1_nonohmic: I = g·v_nl·sinh(V/v_nl); 0.3 V gives +1.9 % apparent conductance at 0.1 V
    v_nl: float = 0.3  # V

    @property
    def g_range(self) -> float:
        return self.g_max - self.g_min


#: read disturb is folded into the state once it adds up to this much of the range:
#: the rate at +0.01 V (~10^-9 /s) then never touches a state a test or a retention
#: read would see, and the circuit is not solved again for nothing
DISTURB_QUANTUM = 1e-6


def _kept(dt: float, tau: float) -> float:
    """Share of a volatile part built up evenly over ``dt`` still there at its end."""
    u = dt / tau
    return 1.0 if u < 1e-9 else -math.expm1(-u) / u


@dataclass(slots=True)
class MultiStateMemristor:
    """M1: conductance moved by voltage pulses, saturating at its range, drifting slowly,
    with a volatile part on top that relaxes after each pulse.

    The programmed (non-volatile) conductance ``g_prog`` relaxes after each pulse as
    ``g_prog·(1 − ν·log10(1 + (t − t_prog)/τ))`` (detrapping). The volatile part is two
    exponentials, amplitudes ``vol_fast``/``vol_slow`` at time ``t_vol``. Both are closed
    forms in time: no cost while nothing is biased.
    """

    p: M1Params
    g_prog: float
    t_prog: float = 0.0
    vol_fast: float = 0.0  # S, fast volatile amplitude at t_vol
    vol_slow: float = 0.0  # S, slow volatile amplitude at t_vol
    t_vol: float = 0.0  # s
    rd_pending: float = 0.0  # read-disturb exponent not yet folded in (see DISTURB_QUANTUM)

    def _drift_factor(self, t: float) -> float:
        age = max(t - self.t_prog, 0.0)
        return 1.0 - self.p.drift_nu * math.log10(1.0 + age / self.p.drift_tau)

    def nonvolatile(self, t: float) -> float:
        """The stored conductance at ``t`` (drift included, volatile part excluded)."""
        return min(max(self.g_prog * self._drift_factor(t), self.p.g_min), self.p.g_max)

    def volatile(self, t: float) -> float:
        """The volatile conductance still present at ``t`` (S, signed)."""
        if not (self.vol_fast or self.vol_slow):
            return 0.0
        age = max(t - self.t_vol, 0.0)
        return self.vol_fast * math.exp(-age / self.p.tau_fast) + self.vol_slow * math.exp(-age / self.p.tau_slow)

    def conductance(self, t: float) -> float:
        """Noise-free conductance at time ``t`` (small-signal, at 0 V): :meth:`nonvolatile`
        plus :meth:`volatile`, written out in one body (the simulated bench evaluates
        every M1 at every solve and reading)."""
        p = self.p
        age = t - self.t_prog
        g = self.g_prog * (1.0 - p.drift_nu * math.log10(1.0 + age / p.drift_tau)) if age > 0 else self.g_prog
        g = min(max(g, p.g_min), p.g_max)
        if self.vol_fast or self.vol_slow:
            age = t - self.t_vol
            if age < 0:
                age = 0.0
            g += self.vol_fast * math.exp(-age / p.tau_fast) + self.vol_slow * math.exp(-age / p.tau_slow)
        return min(max(g, p.g_min), p.g_max)

    def current(self, v: float, t: float, nonohmic: bool = True) -> float:
        """Current at voltage ``v``: g·v_nl·sinh(v/v_nl), or g·v when ``nonohmic`` is off."""
        g = self.conductance(t)
        if not nonohmic:
            return g * v
        return g * self.p.v_nl * math.sinh(v / self.p.v_nl)

    def drive_rate(self, v: float) -> float:
        """Signed rate of change of the normalized state (1/s) at voltage ``v``,
        before the saturation window; zero below threshold (read disturb, the slow
        sub-threshold motion, is :meth:`disturb_rate`)."""
        p = self.p
        if v > p.v_th_p:
            return p.rate * (math.exp((v - p.v_th_p) / p.v0) - 1.0)
        if v < -p.v_th_d:
            return -p.rate * (math.exp((-v - p.v_th_d) / p.v0) - 1.0)
        return 0.0

    def disturb_rate(self, v: float) -> float:
        """Signed sub-threshold rate (1/s) at ``v``: thermally assisted ion hopping,
        ``rd_rate·exp((|v| − v_th)/rd_slope)`` below the threshold, ``rd_rate`` above."""
        if v == 0.0:
            return 0.0
        p = self.p
        th = p.v_th_p if v > 0 else p.v_th_d
        return math.copysign(p.rd_rate * math.exp((min(abs(v), th) - th) / p.rd_slope), v)

    def draw_spread(self, rng: np.random.Generator) -> float:
        """Cycle-to-cycle factor on the effect of one pulse (drawn once per pulse)."""
        return max(0.0, 1.0 + self.p.c2c_sigma * float(rng.standard_normal()))

    def _state(self, t: float) -> float:
        return (self.nonvolatile(t) - self.p.g_min) / self.p.g_range

    @staticmethod
    def _window(x: float, k: float) -> float:
        """Exact solution of dx/dt = r·(1 − x) (r > 0) or r·x (r < 0) for ∫r dt = ``k``."""
        return 1.0 - (1.0 - x) * math.exp(-k) if k > 0 else x * math.exp(k)

    def apply(self, v: float, dt: float, t: float, spread: float = 1.0, kinetics: bool = True) -> float:
        """Apply voltage ``v`` (n1 minus n2) from ``t`` for ``dt`` seconds.

        ``spread`` is the pulse's cycle-to-cycle factor (:meth:`draw_spread`). Returns
        the change in normalized (non-volatile) state. Saturation: potentiation slows
        as the conductance nears g_max, depression as it nears g_min (window on the
        state). With ``kinetics`` the pulse also leaves a volatile part,
        ``vol_fraction`` of its non-volatile change, that relaxes afterwards.
        """
        r = self.drive_rate(v)
        if r == 0.0 or dt <= 0.0:
            return 0.0
        p = self.p
        x = self._state(t)
        x_new = self._window(x, r * dt * spread)
        self.g_prog = p.g_min + x_new * p.g_range
        self.t_prog = t + dt
        if kinetics:
            self._add_volatile((x_new - x) * p.g_range * p.vol_fraction, t, dt)
        return x_new - x

    def _add_volatile(self, dg: float, t: float, dt: float = 0.0) -> None:
        """Add ``dg`` of volatile conductance, built up evenly over [t, t+dt]: what was
        built early relaxes while the pulse lasts, so at t+dt a component with time
        constant τ holds dg·(1 − e^(−dt/τ))·τ/dt of it (exact for an even build-up, so
        the result does not depend on how many integration steps a pulse is cut into)."""
        end = t + dt
        age = max(end - self.t_vol, 0.0)
        p = self.p
        fast = self.vol_fast * math.exp(-age / p.tau_fast) + p.vol_fast_share * dg * _kept(dt, p.tau_fast)
        slow = self.vol_slow * math.exp(-age / p.tau_slow) + (1.0 - p.vol_fast_share) * dg * _kept(dt, p.tau_slow)
        self.vol_fast, self.vol_slow, self.t_vol = fast, slow, end

    def disturb(self, v: float, dt: float, t: float) -> float:
        """Let ``dt`` seconds of sub-threshold motion at ``v`` act from ``t``; returns the
        change in normalized state folded in now (0 while it is below
        :data:`DISTURB_QUANTUM`). The drift clock is kept: a read does not reprogram."""
        self.rd_pending += self.disturb_rate(v) * dt
        if abs(self.rd_pending) < DISTURB_QUANTUM:
            return 0.0
        k, self.rd_pending = self.rd_pending, 0.0
        p = self.p
        x = self._state(t + dt)
        x_new = self._window(x, k)
        factor = self._drift_factor(t + dt)
        self.g_prog += (x_new - x) * p.g_range / factor
        return x_new - x

    def dynamic_state(self) -> list[float]:
        """What measurements change beyond (g_prog, t_prog), for saving a wafer."""
        return [self.vol_fast, self.vol_slow, self.t_vol, self.rd_pending]

    def set_dynamic_state(self, state: list[float]) -> None:
        self.vol_fast, self.vol_slow, self.t_vol, self.rd_pending = (float(x) for x in state)


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
    # m2_stochastics: relative σ of each cycle's set and reset voltage, log σ of each
    # filament's resistance; the first set (forming) of a fresh cell; the set/reset
    # cycles before it sticks, and in which state
    v_set_c2c: float = 0.10
    v_reset_c2c: float = 0.12
    r_on_c2c: float = 0.15
    form_ratio: float = 1.6  # forming voltage / v_set
    endurance: int = 1500  # cycles
    stuck_lrs: bool = True  # worn out: the filament no longer ruptures (else it no longer forms)


#: cycle-to-cycle draws are cut at this many σ (a threshold never crosses 0 V or a read)
C2C_CUT = 3.0


@dataclass(slots=True)
class BinaryMemristor:
    """M2: HRS or LRS; the LRS resistance is set by the compliance current at forming.

    With stochastics (the bench passes an rng to :meth:`set`/:meth:`reset` and
    ``stochastic=True`` to :meth:`wants_switch`): the next threshold is drawn at each
    switch (``v_set_now``/``v_reset_now``), a filament's strength scatters
    (``r_on_factor``), a fresh cell (``formed`` False) sets only at ``form_ratio·v_set``, and after
    ``endurance`` cycles it no longer leaves its stuck state. Without, the cell switches
    at its mean thresholds as if formed and never wears out.
    """

    p: M2Params
    lrs: bool = False
    r_on: float = 200.0
    t_set: float = 0.0
    switch_count: int = field(default=0)
    formed: bool = False
    v_set_now: float | None = None  # V, this cycle's set voltage (None: the mean)
    v_reset_now: float | None = None  # V, this cycle's reset voltage (None: the mean)
    r_on_factor: float = 1.0  # this filament's strength scatter

    def resistance(self, t: float) -> float:
        if not self.lrs:
            return self.p.r_off
        age = max(t - self.t_set, 0.0)
        return self.r_on * (1.0 + age / self.p.filament_tau)

    @property
    def cycles(self) -> int:
        """Completed set/reset cycles (a set and the reset after it)."""
        return self.switch_count // 2

    @property
    def worn_out(self) -> bool:
        return self.cycles >= self.p.endurance

    def set_threshold(self, stochastic: bool = False) -> float:
        """The voltage that sets the cell now (forming for a fresh cell)."""
        if not stochastic:
            return self.p.v_set
        if not self.formed:
            return self.p.form_ratio * self.p.v_set
        return self.p.v_set if self.v_set_now is None else self.v_set_now

    def reset_threshold(self, stochastic: bool = False) -> float:
        if not stochastic or self.v_reset_now is None:
            return self.p.v_reset
        return self.v_reset_now

    def wants_switch(self, v: float, stochastic: bool = False) -> bool:
        """True if voltage ``v`` (n2 minus BL) switches the present state."""
        if not self.lrs:
            if stochastic and self.worn_out and not self.p.stuck_lrs:
                return False
            return v >= self.set_threshold(stochastic)
        if stochastic and self.worn_out and self.p.stuck_lrs:
            return False
        return v <= self.reset_threshold(stochastic)

    def set(self, t: float, rng: np.random.Generator | None = None) -> None:
        """Form the filament; the strength is fixed afterwards by :meth:`fix_strength`.
        With ``rng`` (stochastics) this filament's scatter and the next reset voltage
        are drawn."""
        self.lrs = True
        self.r_on = self.p.r_on_min
        self.t_set = t
        self.switch_count += 1
        self.formed = True
        if rng is not None:
            z = rng.standard_normal(2)
            self.r_on_factor = math.exp(self.p.r_on_c2c * _cut(z[0]))
            self.v_reset_now = self.p.v_reset * (1.0 + self.p.v_reset_c2c * _cut(z[1]))
        else:
            self.r_on_factor = 1.0

    def fix_strength(self, forming_current: float) -> None:
        """A filament grows until the current is limited: R_on ≈ k_on / I_forming."""
        i = abs(forming_current)
        r = self.p.k_on / i * self.r_on_factor if i > 0 else self.p.r_on_max
        self.r_on = min(max(r, self.p.r_on_min), self.p.r_on_max)

    def reset(self, rng: np.random.Generator | None = None) -> None:
        """Rupture the filament; with ``rng`` the next set voltage is drawn."""
        self.lrs = False
        self.switch_count += 1
        if rng is not None:
            self.v_set_now = self.p.v_set * (1.0 + self.p.v_set_c2c * _cut(float(rng.standard_normal())))

    def dynamic_state(self) -> list[float | bool | None]:
        """What measurements change beyond (lrs, r_on, t_set, switch_count)."""
        return [self.formed, self.v_set_now, self.v_reset_now, self.r_on_factor]

    def set_dynamic_state(self, state: list[float | bool | None]) -> None:
        formed, v_set, v_reset, factor = state
        self.formed = bool(formed)
        self.v_set_now = None if v_set is None else float(v_set)
        self.v_reset_now = None if v_reset is None else float(v_reset)
        self.r_on_factor = float(factor)  # type: ignore[arg-type]


def _cut(z: float) -> float:
    return min(max(float(z), -C2C_CUT), C2C_CUT)
