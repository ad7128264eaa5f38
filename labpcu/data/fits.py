"""Analysis fits of the characterization protocols: pure numpy/scipy on arrays.

* :func:`fit_shockley` — forward diode branch, Shockley equation with series
  resistance, fitted on log10 I (the quantity that spans decades);
* :func:`rectification_ratio` — |I(+V)| / |I(−V)| from a sweep;
* :func:`find_switch` — where a memristor's conductance jumps in a sweep (set, reset);
* :func:`fit_log_drift` — retention drift linear in the logarithm of time.

Nothing here knows instruments, protocols or storage: each function takes arrays in
SI units and returns numbers, so it can be tested on synthetic data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from scipy.special import wrightomega

BOLTZMANN = 1.380649e-23  # J/K
ELEMENTARY_CHARGE = 1.602176634e-19  # C


class FitError(ValueError):
    """The data cannot support the fit (too few usable points, no forward current)."""


def thermal_voltage(temperature: float) -> float:
    """kT/q in volts at ``temperature`` kelvin."""
    return BOLTZMANN * temperature / ELEMENTARY_CHARGE


# ------------------------------------------------------------------ Shockley diode
def shockley_current(v: np.ndarray | float, i0: float, n: float, rs: float, temperature: float = 300.0) -> np.ndarray:
    """Current of I = I0·(exp((V − I·Rs)/(n·kT/q)) − 1) at terminal voltage ``v``.

    The equation is implicit in I; its closed form uses Lambert's W, whose argument
    overflows a double at a few volts, so it is written with Wright's omega
    ω(z) = W(exp(z)), which takes the argument's logarithm instead.
    """
    v = np.asarray(v, dtype=float)
    nvt = n * thermal_voltage(temperature)
    z = math.log(i0 * rs / nvt) + (v + i0 * rs) / nvt
    return (nvt / rs) * np.real(wrightomega(z)) - i0


@dataclass(frozen=True)
class ShockleyFit:
    """A fitted forward branch. ``r2`` is the coefficient of determination of
    log10 I over the ``points`` fitted (a fit of I itself would be decided by the
    top decade alone)."""

    i0: float  # A, saturation current
    n: float  # ideality factor
    rs: float  # Ω, series resistance
    r2: float  # R² of log10 I
    points: int  # points used

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_shockley(
    v: np.ndarray,
    i: np.ndarray,
    *,
    temperature: float = 300.0,
    floor: float = 0.0,
) -> ShockleyFit:
    """Fit I0, n and Rs to forward points (V > 0, I > ``floor``) of a diode sweep.

    Least squares on log10 I with parameters log10 I0, n and log10 Rs, started from a
    straight line through the lower half of the points (where Rs does not matter yet).
    Points at or below ``floor`` (leakage, noise) are left out; so must be points in
    compliance (the caller drops them). Raises :class:`FitError` below 4 points.
    """
    v, i = np.asarray(v, float), np.asarray(i, float)
    keep = np.isfinite(v) & np.isfinite(i) & (v > 0) & (i > max(floor, 0.0))
    v, i = v[keep], i[keep]
    if len(v) < 4 or np.ptp(v) <= 0:
        raise FitError(f"a Shockley fit needs at least 4 forward points above {floor:g} A at distinct voltages, got {len(v)}")
    y = np.log10(i)
    vt = thermal_voltage(temperature)
    start = _shockley_start(v, i, vt)

    def residual(x: np.ndarray) -> np.ndarray:
        model = shockley_current(v, 10.0 ** x[0], x[1], 10.0 ** x[2], temperature)
        return np.log10(np.maximum(model, 1e-300)) - y

    lower, upper = np.array([-30.0, 0.3, -3.0]), np.array([0.0, 20.0, 9.0])
    fit = least_squares(residual, np.clip(start, lower + 1e-9, upper - 1e-9), bounds=(lower, upper),
                        x_scale=np.array([1.0, 0.1, 1.0]), max_nfev=2000)
    resid = fit.fun
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / total if total > 0 else float("nan")
    return ShockleyFit(float(10.0 ** fit.x[0]), float(fit.x[1]), float(10.0 ** fit.x[2]), r2, int(len(v)))


def _shockley_start(v: np.ndarray, i: np.ndarray, vt: float) -> np.ndarray:
    """Starting point (log10 I0, n, log10 Rs): a line through ln I of the lower half of
    the currents gives I0 and n; the voltage missing at the top point gives Rs."""
    order = np.argsort(i)
    low = order[: max(2, len(order) // 2)]
    if np.ptp(v[low]) <= 0:
        low = order
    slope, intercept = np.polyfit(v[low], np.log(i[low]), 1)
    n0 = float(np.clip(1.0 / (max(slope, 1e-6) * vt), 0.5, 10.0))
    i00 = float(np.clip(math.exp(intercept), 1e-29, 1e-2))
    top = int(np.argmax(i))
    drop = v[top] - n0 * vt * math.log(i[top] / i00 + 1.0)
    rs0 = float(np.clip(drop / i[top], 1e-2, 1e8)) if drop > 0 else 1.0
    return np.array([math.log10(i00), n0, math.log10(rs0)])


# ------------------------------------------------------------------ rectification
def rectification_ratio(v: np.ndarray, i: np.ndarray, bias: float) -> tuple[float, float, float]:
    """(|I(+bias)| / |I(−bias)|, |I(+bias)|, |I(−bias)|) from a sweep.

    Repeated levels (a double sweep) are merged by the median |I|; a bias between
    levels is interpolated in log10 |I|. Raises :class:`FitError` if ±bias is outside
    the swept range.
    """
    if not bias > 0:
        raise FitError(f"rectification bias must be > 0 V, not {bias!r}")
    v, i = np.asarray(v, float), np.asarray(i, float)
    keep = np.isfinite(v) & np.isfinite(i)
    levels, inverse = np.unique(v[keep], return_inverse=True)
    if len(levels) == 0 or levels[0] > -bias or levels[-1] < bias:
        raise FitError(f"the sweep does not reach ±{bias:g} V")
    mags = np.array([np.median(np.abs(i[keep][inverse == k])) for k in range(len(levels))])
    log_mag = np.log10(np.maximum(mags, 1e-300))
    fwd, rev = (float(10.0 ** np.interp(x, levels, log_mag)) for x in (bias, -bias))
    return (fwd / rev if rev > 0 else float("inf")), fwd, rev


# ------------------------------------------------------------------ switching
def find_switch(
    v: np.ndarray,
    i: np.ndarray,
    *,
    rising: bool,
    min_ratio: float = 100.0,
    floor: float = 1e-12,
    v_min: float = 1e-6,
) -> int | None:
    """Index of the point where the conductance |I|/|V| jumps, or None.

    Looks at the outgoing part of a sweep half (up to its largest |V|), at points with
    |V| ≥ ``v_min``; currents below ``floor`` count as ``floor`` (the noise of a
    reading of nothing must not look like a switch). ``rising``: the largest rise
    between two consecutive points (a set); else the largest drop (a reset). It counts
    only if it is at least ``min_ratio``; the index is that of the first point after it.
    """
    v, i = np.asarray(v, float), np.asarray(i, float)
    if len(v) < 2:
        return None
    out = slice(0, int(np.argmax(np.abs(v))) + 1)
    idx = np.flatnonzero(np.abs(v[out]) >= v_min)
    if len(idx) < 2:
        return None
    g = np.log10(np.maximum(np.nan_to_num(np.abs(i[idx]), nan=floor), floor) / np.abs(v[idx]))
    step = np.diff(g) if rising else -np.diff(g)
    k = int(np.argmax(step))
    return int(idx[k + 1]) if step[k] >= math.log10(min_ratio) else None


# ------------------------------------------------------------------ drift
@dataclass(frozen=True)
class DriftFit:
    """G(t) = g0·(1 + nu·log10(1 + t/t1)): ``nu`` is the relative change per decade of
    (1 + t/t1), negative for a loss; ``r2`` of G (NaN for a flat, noiseless record)."""

    g0: float
    nu: float
    t1: float
    r2: float

    def at(self, t: np.ndarray | float) -> np.ndarray:
        return self.g0 * (1.0 + self.nu * np.log10(1.0 + np.asarray(t, float) / self.t1))

    def change(self, t: float) -> float:
        """Relative change of the fitted G from t = 0 to ``t``."""
        return float(self.nu * math.log10(1.0 + t / self.t1))


def fit_log_drift(t: np.ndarray, g: np.ndarray, t1: float) -> DriftFit:
    """Linear least squares of G on log10(1 + t/t1), ``t`` counted from the first
    read. The log-time law is how trapped charge and filaments relax (each decade of
    time costs about the same); ``t1`` keeps t = 0 finite. Needs 2 points."""
    if not t1 > 0:
        raise FitError(f"t1 must be > 0 s, not {t1!r}")
    t, g = np.asarray(t, float), np.asarray(g, float)
    keep = np.isfinite(t) & np.isfinite(g)
    t, g = t[keep], g[keep]
    if len(t) < 2 or np.ptp(t) <= 0:
        raise FitError(f"a drift fit needs at least 2 reads at distinct times, got {len(t)}")
    x = np.log10(1.0 + t / t1)
    slope, intercept = np.polyfit(x, g, 1)
    if intercept == 0:
        raise FitError("the fitted initial conductance is 0 S")
    resid = g - (intercept + slope * x)
    total = float(np.sum((g - g.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / total if total > 0 else float("nan")
    return DriftFit(float(intercept), float(slope / intercept), float(t1), r2)


@dataclass(frozen=True)
class ActivationFit:
    """y = a·f(k·(x − x0)) for an activation f (softplus or sigmoid), with R²."""

    a: float
    k: float
    x0: float
    r2: float


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - fitted) ** 2)) / total if total > 0 else float("nan")


def fit_activation(kind: str, x: np.ndarray, y: np.ndarray, p0: tuple[float, float, float]) -> ActivationFit:
    """Least-squares fit of pcu.md's activation forms: ``softplus`` A·ln(1 + e^{K(x−x0)})
    (a diode with a series resistor), ``sigmoid`` A·sigmoid(K(x − x0)). Needs 4 points."""
    from scipy.optimize import curve_fit

    from labpcu.data.ideal import evaluate

    forms = {name: (lambda x, a, k, x0, name=name: a * evaluate(name, k * (x - x0))) for name in ("softplus", "sigmoid")}
    if kind not in forms:
        raise FitError(f"activation fit must be one of {', '.join(forms)}, not {kind!r}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 4:
        raise FitError(f"a {kind} fit needs at least 4 points, got {len(x)}")
    f = forms[kind]
    try:
        popt, _ = curve_fit(f, x, y, p0=p0, maxfev=20_000)
    except (RuntimeError, ValueError) as exc:
        raise FitError(f"{kind} fit did not converge: {exc}") from None
    a, k, x0 = (float(v) for v in popt)
    return ActivationFit(a, k, x0, _r2(y, f(x, a, k, x0)))


# ------------------------------------------------------------- back-to-back diodes
@dataclass(frozen=True)
class BackToBackFit:
    """I(V) = a·sigmoid(k·(V − v0)) + b + g·V of two diodes in anti-series, with R².

    Two Shockley diodes back to back carry exactly a·sigmoid + b: with saturation
    currents I01 (the one reverse biased at negative V) and I02, I = (I01 + I02)·
    sigmoid((V − V0)/(n·Vt)) − I01 with V0 = n·Vt·ln(I02/I01). Equal diodes give pcu.md's
    2·sigmoid(K·V) − 1 times I0, with K = 1/(n·Vt) ≈ 21 /V; unequal ones shift it (v0)
    and offset it (b). ``g`` is the leakage in parallel (M2's off state, the diodes'
    shunts, the matrix's open crosspoints), fitted as a lab does rather than left to
    bend K: the sigmoid is what rides on it.
    """

    a: float  # A, plateau to plateau: I01 + I02
    k: float  # 1/V: 1/(n·Vt)
    v0: float  # V, centre
    b: float  # A, the negative plateau: −I01
    g: float  # S, parallel leakage
    r2: float

    def sigmoid(self, v: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measured (V, I) as network (x, s): x = K·(V − V0), s = (I − b − g·V)/a, which is
        sigmoid(x) for an ideal pair (the paper's bipolar form is 2·s − 1)."""
        v = np.asarray(v, float)
        return self.k * (v - self.v0), (np.asarray(i, float) - self.b - self.g * v) / self.a


#: 1/V: the slopes a pair of diodes can have (ideality 0.4 to 5 at room temperature)
K_BOUNDS = (7.7, 97.0)


def fit_back_to_back(v: np.ndarray, i: np.ndarray, k_guess: float = 21.0) -> BackToBackFit:
    """Fit a·sigmoid(k·(V − v0)) + b + g·V to a sweep of two diodes back to back."""
    from scipy.optimize import curve_fit

    v, i = np.asarray(v, float), np.asarray(i, float)
    keep = np.isfinite(v) & np.isfinite(i)
    v, i = v[keep], i[keep]
    if len(v) < 6 or np.ptp(i) <= 0:
        raise FitError(f"a back-to-back sigmoid fit needs at least 6 points with varying current, got {len(v)}")

    def f(x: np.ndarray, a: float, k: float, v0: float, b: float, g: float) -> np.ndarray:
        return a / (1.0 + np.exp(-np.clip(k * (x - v0), -700, 700))) + b + g * x

    unit = float(np.ptp(i))  # fit in units of the swing: the optimizer's tolerances are absolute
    y = i / unit
    lo, hi = float(np.min(y)), float(np.max(y))
    span = float(np.ptp(v))
    # bounds keep the fit a diode pair's: K between 1/(5·Vt) and 1/(0.4·Vt), the centre
    # inside the sweep; without them a sweep whose plateau sits near the leakage and
    # offset can collapse into a step (K in the thousands)
    lower = (0.0, K_BOUNDS[0], float(np.min(v)), -np.inf, -np.inf)
    upper = (np.inf, K_BOUNDS[1], float(np.max(v)), np.inf, np.inf)
    start = (hi - lo, k_guess, float(np.clip(v[np.argmin(np.abs(y - (hi + lo) / 2))], lower[2] + 1e-6 * span,
                                             upper[2] - 1e-6 * span)), lo, 0.0)
    try:
        popt, _ = curve_fit(f, v, y, p0=start, bounds=(lower, upper), maxfev=20_000)
    except (RuntimeError, ValueError) as exc:
        raise FitError(f"back-to-back sigmoid fit did not converge: {exc}") from None
    a, k, v0, b, g = (float(x) for x in popt)
    a, b, g = a * unit, b * unit, g * unit
    return BackToBackFit(a, k, v0, b, g, _r2(i, f(v, a, k, v0, b, g)))
