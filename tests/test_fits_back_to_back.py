"""The back-to-back diode fit: two Shockley diodes in anti-series are exactly
a·sigmoid(K·(V − V0)) + b with K = 1/(n·Vt), and the fit must give K back through a
parallel leakage and an offset, or refuse data that is no such pair."""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.data.fits import FitError, fit_back_to_back
from labpcu.sim.diode import thermal_voltage


def anti_series(v: np.ndarray, i01: float, i02: float, nvt: float) -> np.ndarray:
    u = np.exp(v / nvt)
    return (u - 1.0) / (1.0 / i01 + u / i02)


@pytest.mark.parametrize("i01, i02", [(5e-11, 5e-11), (4e-11, 9e-11)])
def test_k_and_plateaus_come_back_through_leakage_and_offset(i01, i02):
    nvt = 1.8 * thermal_voltage(298.15)
    v = np.linspace(-0.35, 0.35, 41)
    i = anti_series(v, i01, i02, nvt) + 2e-10 * v + 3e-11  # 5 GΩ leakage, 30 pA offset
    fit = fit_back_to_back(v, i)
    assert fit.k == pytest.approx(1 / nvt, rel=1e-3)
    assert fit.a == pytest.approx(i01 + i02, rel=1e-3)
    assert fit.v0 == pytest.approx(nvt * np.log(i02 / i01), abs=1e-4)
    assert fit.g == pytest.approx(2e-10, rel=1e-2) and fit.r2 > 0.9999
    x, s = fit.sigmoid(v, i)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-x)), atol=1e-6)


def test_noise_does_not_collapse_the_fit_into_a_step():
    rng = np.random.default_rng(3)
    nvt = 1.8 * thermal_voltage(298.15)
    v = np.linspace(-0.35, 0.35, 41)
    i = anti_series(v, 5e-11, 5e-11, nvt) + 1.5e-10 * v + rng.normal(0, 3e-12, v.size)
    fit = fit_back_to_back(v, i)
    assert 18 < fit.k < 26


def test_too_few_points_is_a_fit_error():
    with pytest.raises(FitError, match="at least 6 points"):
        fit_back_to_back(np.array([0.0, 0.1]), np.array([0.0, 1e-10]))
