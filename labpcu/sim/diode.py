"""Perovskite diode: Shockley equation with series and shunt resistance.

I = I0·(exp(q(V − I·Rs)/(n·k·T)) − 1) + V/Rsh is implicit in I. It has the closed form
I = (n·Vt/Rs)·W(I0·Rs/(n·Vt)·exp((V + I0·Rs)/(n·Vt))) − I0 with Lambert's W. The
argument overflows a double at a few volts forward, so we use Wright's omega,
ω(z) = W(exp(z)), which takes the logarithm of that argument instead: exact and finite
at any bias of either polarity, and cheap to vectorize for the circuit solver.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import wrightomega

BOLTZMANN = 1.380649e-23  # J/K
ELEMENTARY_CHARGE = 1.602176634e-19  # C


def thermal_voltage(temperature: float) -> float:
    """kT/q in volts."""
    return BOLTZMANN * temperature / ELEMENTARY_CHARGE


@dataclass(frozen=True, slots=True)
class DiodeParams:
    """One diode's parameters (SI units), at the reference stage temperature.

    ``i_leak``/``v_leak``: field-enhanced reverse leakage I = i_leak·sinh(V/v_leak), soft
    at the sigmoid's ±0.2 V and the main reverse current at −1 V (it sets the
    rectification ratio, as on a real perovskite diode). ``ea``: activation energy of
    the saturation current, I0(T) = I0·(T/T_ref)³·exp(−ea/(n·k)·(1/T − 1/T_ref)).
    ``responsivity``: photocurrent per lux of lamp light.
    """

    i0: float  # saturation current at T_REF_K, A
    n: float  # ideality factor
    rs: float  # series resistance, Ω (> 0)
    rsh: float  # shunt (ohmic leakage) resistance, Ω
    temperature: float = 298.15  # K, the temperature the parameters hold at
    i_leak: float = 0.0  # A, soft reverse leakage prefactor
    v_leak: float = 0.08  # V, its voltage scale
    ea: float = 0.95  # eV, activation energy of I0
    responsivity: float = 0.0  # A/lux, photocurrent under the microscope lamp

    def __post_init__(self) -> None:
        if not (self.i0 > 0 and self.n > 0 and self.rs > 0 and self.rsh > 0 and self.temperature > 0
                and self.v_leak > 0 and self.i_leak >= 0 and self.ea >= 0 and self.responsivity >= 0):
            raise ValueError(f"diode parameters must all be positive: {self}")

    @property
    def nvt(self) -> float:
        return self.n * thermal_voltage(self.temperature)

    def at(self, temperature: float) -> tuple[float, float]:
        """(I0, n·Vt) at stage temperature ``temperature`` (K)."""
        return saturation_current(self.i0, self.n, self.ea, self.temperature, temperature), \
            self.n * thermal_voltage(temperature)


def saturation_current(i0_ref, n, ea, t_ref: float, t: float):
    """I0 at temperature ``t`` from its value at ``t_ref`` (vectorized over i0, n, ea)."""
    k_ev = BOLTZMANN / ELEMENTARY_CHARGE
    return i0_ref * (t / t_ref) ** 3 * np.exp(-np.asarray(ea) / (np.asarray(n) * k_ev) * (1.0 / t - 1.0 / t_ref))


def diode_iv(
    v: np.ndarray | float,
    i0: np.ndarray | float,
    nvt: np.ndarray | float,
    rs: np.ndarray | float,
    gsh: np.ndarray | float,
    iph: np.ndarray | float = 0.0,
    i_leak: np.ndarray | float = 0.0,
    v_leak: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Current and small-signal conductance dI/dV of the diode at terminal voltage ``v``.

    Vectorized over all arguments. ``gsh`` is the shunt conductance 1/Rsh and
    ``i_leak·sinh(v/v_leak)`` the soft leakage, both across the terminals. ``iph`` is
    the photocurrent, generated inside the junction (behind Rs) against the forward
    current: I + I0 + Iph = I0·exp((V − I·Rs)/(n·Vt)) keeps the same closed form.
    """
    v = np.asarray(v, dtype=float)
    ish = i0 + iph
    z = np.log(i0 * rs / nvt) + (v + ish * rs) / nvt
    w = wrightomega(z)
    x = np.clip(v / v_leak, -700.0, 700.0)
    i = (nvt / rs) * w - ish + gsh * v + i_leak * np.sinh(x)
    g = w / ((1.0 + w) * rs) + gsh + (i_leak / v_leak) * np.cosh(x)
    return i, g


#: S through an open diode (a broken contact): nothing but a femtosiemens of leakage
G_OPEN = 1e-15
#: Ω across a shorted diode (a pinhole through the perovskite)
R_SHORT = 10.0


def defective_diode(params: DiodeParams, kind: str | None) -> DiodeParams:
    """D1 as a defect leaves it: an open passes :data:`G_OPEN`, a short is :data:`R_SHORT`
    across the diode. Any other kind leaves D1 as it is."""
    if kind == "open":
        return replace(params, i0=1e-40, rsh=1.0 / G_OPEN, i_leak=0.0, responsivity=0.0)
    if kind == "short":
        return replace(params, rsh=R_SHORT)
    return params


def diode_current(v: np.ndarray | float, p: DiodeParams, temperature: float | None = None,
                  iph: float = 0.0) -> np.ndarray:
    """Terminal current of one diode at voltage(s) ``v`` (anode minus cathode), at stage
    temperature ``temperature`` (default: the parameters' own) under photocurrent ``iph``."""
    i0, nvt = p.at(p.temperature if temperature is None else temperature)
    i, _ = diode_iv(v, i0, nvt, p.rs, 1.0 / p.rsh, iph, p.i_leak, p.v_leak)
    return i
