"""Perovskite diode: Shockley equation with series and shunt resistance.

I = I0·(exp(q(V − I·Rs)/(n·k·T)) − 1) + V/Rsh is implicit in I. It has the closed form
I = (n·Vt/Rs)·W(I0·Rs/(n·Vt)·exp((V + I0·Rs)/(n·Vt))) − I0 with Lambert's W. The
argument overflows a double at a few volts forward, so we use Wright's omega,
ω(z) = W(exp(z)), which takes the logarithm of that argument instead: exact and finite
at any bias of either polarity, and cheap to vectorize for the circuit solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import wrightomega

BOLTZMANN = 1.380649e-23  # J/K
ELEMENTARY_CHARGE = 1.602176634e-19  # C


def thermal_voltage(temperature: float) -> float:
    """kT/q in volts."""
    return BOLTZMANN * temperature / ELEMENTARY_CHARGE


@dataclass(frozen=True, slots=True)
class DiodeParams:
    """One diode's parameters (SI units)."""

    i0: float  # saturation current, A
    n: float  # ideality factor
    rs: float  # series resistance, Ω (> 0)
    rsh: float  # shunt (leakage) resistance, Ω
    temperature: float = 300.0  # K

    def __post_init__(self) -> None:
        if not (self.i0 > 0 and self.n > 0 and self.rs > 0 and self.rsh > 0 and self.temperature > 0):
            raise ValueError(f"diode parameters must all be positive: {self}")

    @property
    def nvt(self) -> float:
        return self.n * thermal_voltage(self.temperature)


def diode_iv(
    v: np.ndarray | float,
    i0: np.ndarray | float,
    nvt: np.ndarray | float,
    rs: np.ndarray | float,
    gsh: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Current and small-signal conductance dI/dV of the diode at terminal voltage ``v``.

    Vectorized over all arguments. ``gsh`` is the shunt conductance 1/Rsh, placed across
    the terminals (leakage around the junction).
    """
    v = np.asarray(v, dtype=float)
    z = np.log(i0 * rs / nvt) + (v + i0 * rs) / nvt
    w = wrightomega(z)
    i = (nvt / rs) * w - i0 + gsh * v
    g = w / ((1.0 + w) * rs) + gsh
    return i, g


def diode_current(v: np.ndarray | float, p: DiodeParams) -> np.ndarray:
    """Terminal current of one diode at voltage(s) ``v`` (anode minus cathode)."""
    i, _ = diode_iv(v, p.i0, p.nvt, p.rs, 1.0 / p.rsh)
    return i
