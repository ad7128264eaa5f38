"""The acceptance bands of the simulated wafer (pcu.md, "What the simulated wafer must
reproduce"), as data.

Kept as data, not as asserts scattered through tests, so one table drives the
figures-of-merit report (:mod:`labpcu.report`), its pass/fail colouring and any test
that checks the physics model. Values are SI / plain fractions inside; ``unit`` and
``fmt`` only say how a value is shown (a relative error of 0.0078 shows as "0.78 %").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: ``fmt`` that shows a value as a power of ten ("10^6", "3.2 × 10^7")
POW10 = "pow10"


def format_number(value: float | None, fmt: str, unit: str = "", *, show_unit: bool = True) -> str:
    """``value`` as text: ``unit`` "%" scales a fraction by 100; ``fmt`` is a format
    spec or :data:`POW10`. NaN shows as "n/a" so a table never reads "nan %"."""
    if value is None or math.isnan(value):
        return "n/a"
    shown = value * 100.0 if unit == "%" else value
    if math.isinf(shown):
        text = "∞" if shown > 0 else "−∞"
    elif fmt == POW10:
        text = _pow10(shown)
    else:
        text = format(shown, fmt)
    return f"{text} {unit}" if unit and show_unit else text


def _pow10(value: float) -> str:
    """1e6 → "10^6", 3.2e7 → "3.2 × 10^7", small magnitudes plainly."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return format(value, ".3g")
    exp = math.floor(math.log10(abs(value)))
    mantissa = value / 10.0**exp
    if abs(round(mantissa, 2)) >= 10:  # 9.999e6 rounds up to the next decade
        mantissa, exp = mantissa / 10, exp + 1
    if abs(round(mantissa, 2) - 1.0) < 1e-9:
        return f"10^{exp}" if value > 0 else f"−10^{exp}"
    return f"{mantissa:.2g} × 10^{exp}"


@dataclass(frozen=True)
class Band:
    """One figure the simulated wafer must reproduce and the range it must fall in.

    ``lo``/``hi`` are None for a one-sided band; ``lo_open``/``hi_open`` make that end
    strict (pcu.md's "> 10^6" excludes 10^6, "≥ 99 %" includes 99 %, a range "0.020 –
    0.035" includes both ends).
    """

    key: str
    label: str
    published: str  # the paper's figure as pcu.md's measurement table gives it
    lo: float | None
    hi: float | None
    unit: str = ""  # how the value is shown: "" or "%" (values are fractions inside)
    fmt: str = ".4g"
    lo_open: bool = False
    hi_open: bool = False

    def __post_init__(self) -> None:
        if self.lo is None and self.hi is None:
            raise ValueError(f"band {self.key!r} needs lo, hi or both")
        if self.lo is not None and self.hi is not None and not self.lo < self.hi:
            raise ValueError(f"band {self.key!r}: lo {self.lo!r} must be below hi {self.hi!r}")

    def contains(self, value: float | None) -> bool:
        """True if ``value`` lies in the band; NaN or None (no value) never does."""
        if value is None or math.isnan(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def format(self, value: float | None) -> str:
        """A measured value as the band shows its limits."""
        return format_number(value, self.fmt, self.unit)

    @property
    def text(self) -> str:
        """The band as text: "> 10^6", "< 2 %", "≥ 99 %", "0.5 – 1.1 %"."""
        if self.lo is not None and self.hi is not None:
            return f"{format_number(self.lo, self.fmt, self.unit, show_unit=False)} – {self.format(self.hi)}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '≥'} {self.format(self.lo)}"
        assert self.hi is not None
        return f"{'<' if self.hi_open else '≤'} {self.format(self.hi)}"


BANDS: tuple[Band, ...] = (
    Band("m2_on_off", "M2 LRS/HRS current ratio at +0.1 V", "> 10^6", 1e6, None, fmt=POW10, lo_open=True),
    Band("m2_retention_ratio", "M2 LRS/HRS ratio after 1,000 s of +0.1 V reads (states unchanged)",
         "> 10^3 s", 1e6, None, fmt=POW10, lo_open=True),
    Band("m1_drift", "M1 drift of every programmed state over 600 s at +0.01 V", "each state stable > 600 s",
         None, 0.02, unit="%", fmt=".3g", hi_open=True),
    Band("diode_rectification", "Diode rectification ratio at ±1 V", "rectifying", 1e3, None, fmt=POW10,
         lo_open=True),
    Band("diode_fit_r2", "Diode Shockley fit R²", "exponential forward branch", 0.99, None, fmt=".6g",
         lo_open=True),
    Band("ispp_success", "ISPP: targets reached within a bounded pulse count", "continuous multi-level states",
         0.99, None, unit="%", fmt=".4g"),
    Band("weight_sigma", "Programmed-weight error σ relative to the conductance range", "σ = 0.027367",
         0.020, 0.035, fmt=".3g"),
    Band("vmm_error", "VMM average relative error (1×3 · 3×1000)", "0.78 %", 0.005, 0.011, unit="%", fmt=".3g"),
    Band("divider_error", "Divider average relative error (10 units)", "5.66 %", 0.040, 0.075, unit="%",
         fmt=".3g"),
    Band("multiplier_error", "Multiplier average relative error (10 units)", "6.61 %", 0.050, 0.085, unit="%",
         fmt=".3g"),
    Band("softmax_error", "Softmax average relative error (10 units)", "1.31 %", 0.009, 0.018, unit="%",
         fmt=".3g"),
    Band("softplus_r2", "Softplus fit R²", "fit of A, K", 0.99, None, fmt=".6g", lo_open=True),
    Band("sigmoid_r2", "Sigmoid fit R² (D1 and D2 back to back, the paper's circuit)", "fit of A, K", 0.99, None,
         fmt=".6g", lo_open=True),
    Band("sigmoid_b2b_k", "Sigmoid K of the back-to-back diodes, every unit (2·sigmoid(K·x) − 1)", "K ≈ 21 /V",
         15.0, 30.0, fmt=".3g"),
)

#: the bands by key
BY_KEY: dict[str, Band] = {b.key: b for b in BANDS}


def band(key: str) -> Band:
    """The band named ``key``."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"no band {key!r}; bands are {', '.join(BY_KEY)}") from None
