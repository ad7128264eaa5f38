"""Reference lookup of a codebook table with numpy, for trainers and for checking the
PyTorch module against.

``Lookup(table)(x)`` (or ``(x1, x2)`` for a 2-D table) interpolates the table linearly
(bilinearly in 2-D) between grid points and clips inputs to the grid (the table's
``extrapolation="clip"``). At a grid point it returns the stored value, to float
rounding. Modes:

* ``mean``: the measured mean;
* ``gaussian``: mean + noise_scale · std · N(0, 1);
* ``quantile``: inverse-CDF sampling: the quantile table, interpolated at a uniform
  random level (levels 0 and 1 are the measured min and max, so samples stay in the
  measured range; the quantile functions of neighbouring grid points are blended).

Noise follows the table's ``noise_scope``: ``per_call`` draws anew on every call,
``per_device`` draws once per input shape and keeps it until :meth:`Lookup.reprogram`
(the variation belongs to the unit, not to the read). Weight noise, drawn once per
weight and kept until reprogramming, is :class:`WeightNoiseSampler`. What a VMM
crossbar makes of a programmed weight (D1 in series: small weights come out large
relative to full scale) is :class:`EffectiveWeight`; apply it after the weight noise:
``EffectiveWeight(cb["vmm"])(WeightNoiseSampler(cb.weight_noise)(w))``.

Speed: the inputs are processed in cache-sized chunks, each a few vectorized passes
(arithmetic binning on uniform grids, ``searchsorted`` otherwise, then gathers), in
the inputs' own float precision (float32 stays float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from labpcu.data.codebook import PAPER_WEIGHT_SIGMA, EffectiveWeightMap, OperatorTable, WeightNoise

MODES = ("mean", "gaussian", "quantile")
_CHUNK = 1 << 15


def _rng(rng: Any) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class _Axis:
    """One grid axis, ready for locating inputs: (interval index, weight in [0, 1])."""

    def __init__(self, axis: np.ndarray, dtype: np.dtype) -> None:
        a = np.asarray(axis, dtype=np.float64)
        self.n = len(a)
        self.step = (a[-1] - a[0]) / (self.n - 1)
        self.uniform = bool(np.all(np.abs(np.diff(a) - self.step) <= 1e-12 * abs(self.step)))
        self.a = a.astype(dtype)
        self.lo, self.hi = self.a[0], self.a[-1]
        self.inv_step = dtype.type(1.0 / self.step)
        self.inv_dx = (1.0 / np.diff(a)).astype(dtype)

    def locate(self, x: np.ndarray, i: np.ndarray, w: np.ndarray) -> None:
        """Fill ``i`` (intp) and ``w`` (x's dtype) for the chunk ``x``."""
        if self.uniform:
            np.subtract(x, self.lo, out=w)
            w *= self.inv_step
            np.clip(w, 0, self.n - 1, out=w)
            i[...] = w  # truncation = floor, w >= 0
            np.minimum(i, self.n - 2, out=i)
            w -= i
        else:
            np.clip(x, self.lo, self.hi, out=w)
            np.subtract(np.searchsorted(self.a, w, side="right"), 1, out=i)
            np.clip(i, 0, self.n - 2, out=i)
            w -= np.take(self.a, i)
            w *= np.take(self.inv_dx, i)


class Lookup:
    """A table made ready for fast evaluation; call it with one array per grid axis.

    ``noise_scale`` defaults to the table's; ``rng`` is a seed or a numpy Generator.
    """

    def __init__(self, table: OperatorTable, *, mode: str = "mean", noise_scale: float | None = None,
                 rng: Any = None) -> None:
        _check_mode(mode)
        if table.ndim not in (1, 2):
            raise ValueError(f"operator {table.name!r}: lookup handles 1-D and 2-D tables, not {table.ndim}-D")
        self.table = table
        self.mode = mode
        self.noise_scale = float(table.noise_scale if noise_scale is None else noise_scale)
        self.rng = _rng(rng)
        self._prepared: dict[np.dtype, dict[str, Any]] = {}
        self._kept: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def reprogram(self) -> None:
        """Forget the kept per-device draws (noise_scope ``per_device``)."""
        self._kept.clear()

    def _tables(self, dtype: np.dtype) -> dict[str, Any]:
        p = self._prepared.get(dtype)
        if p is None:
            t = self.table
            mean = t.mean.astype(dtype).ravel()
            p = {
                "axes": [_Axis(a, dtype) for a in t.axes],
                "mean": mean,
                "dmean": np.diff(mean) if t.ndim == 1 else None,
                "std": t.std.astype(dtype).ravel(),
                "quantiles": t.quantiles.astype(dtype).ravel(),
                "levels": np.asarray(t.quantile_levels, dtype=dtype),
            }
            self._prepared[dtype] = p
        return p

    def __call__(self, *xs: Any, mode: str | None = None, rng: Any = None) -> np.ndarray:
        mode = self.mode if mode is None else mode
        _check_mode(mode)
        t = self.table
        if len(xs) != t.ndim:
            raise ValueError(f"operator {t.name!r} takes {t.ndim} input array(s) ({', '.join(t.axis_names)}), "
                             f"got {len(xs)}")
        arrays = [np.asarray(x) for x in xs]
        dtype = np.result_type(*arrays, np.float32)
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(np.float64)
        dtype = np.dtype(dtype)
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        flat = [np.ascontiguousarray(np.broadcast_to(a, shape), dtype=dtype).ravel() for a in arrays]
        n = flat[0].size
        out = np.empty(n, dtype=dtype)
        p = self._tables(dtype)
        gen = self.rng if rng is None else _rng(rng)
        noise = None
        if mode == "gaussian":
            noise = self._draw("z", shape, lambda: gen.standard_normal(n, dtype=dtype))
        elif mode == "quantile":
            noise = self._draw("u", shape, lambda: gen.random(n, dtype=dtype))
        scale = dtype.type(self.noise_scale)
        with np.errstate(invalid="ignore"):  # NaN inputs give NaN outputs, quietly
            for lo in range(0, n, _CHUNK):
                hi = min(n, lo + _CHUNK)
                chunk = [f[lo:hi] for f in flat]
                _evaluate(p, chunk, out[lo:hi], mode, None if noise is None else noise[lo:hi], scale)
        return out.reshape(shape)

    def _draw(self, kind: str, shape: tuple[int, ...], draw: Callable[[], np.ndarray]) -> np.ndarray:
        if self.table.noise_scope != "per_device":
            return draw()
        key = (kind, shape)
        if key not in self._kept:
            self._kept[key] = draw()
        return self._kept[key]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"lookup mode must be one of {', '.join(MODES)}, not {mode!r}")


def _evaluate(p: dict[str, Any], xs: list[np.ndarray], out: np.ndarray, mode: str, noise: np.ndarray | None,
              scale: Any) -> None:
    """One chunk: locate on each axis, then interpolate the mode's table into ``out``."""
    axes = p["axes"]
    m = len(out)
    idx = [np.empty(m, np.intp) for _ in axes]
    w = [np.empty(m, out.dtype) for _ in axes]
    for ax, x, i, wi in zip(axes, xs, idx, w):
        ax.locate(x, i, wi)
    if len(axes) == 1:
        flat = idx[0]
    else:
        flat = idx[0] * axes[1].n
        flat += idx[1]
    if mode == "mean" and len(axes) == 1:  # the hot path: two gathers and a fused update
        np.take(p["mean"], flat, out=out, mode="clip")
        d = np.take(p["dmean"], flat, mode="clip")
        d *= w[0]
        out += d
        return
    if mode == "quantile":
        levels, q = p["levels"], p["quantiles"]
        n_q = len(levels)
        k = np.searchsorted(levels, noise, side="right") - 1
        np.clip(k, 0, n_q - 2, out=k)
        lk = np.take(levels, k)
        frac = (noise - lk) / (np.take(levels, k + 1) - lk)

        def get(f: np.ndarray) -> np.ndarray:
            base = f * n_q + k
            v0 = np.take(q, base, mode="clip")
            return v0 + frac * (np.take(q, base + 1, mode="clip") - v0)

        _interpolate(get, flat, w, axes, out)
        return
    _interpolate(lambda f: np.take(p["mean"], f, mode="clip"), flat, w, axes, out)
    if mode == "gaussian":
        s = np.empty_like(out)
        _interpolate(lambda f: np.take(p["std"], f, mode="clip"), flat, w, axes, s)
        s *= noise
        s *= scale
        out += s


def _interpolate(get: Callable[[np.ndarray], np.ndarray], flat: np.ndarray, w: list[np.ndarray],
                 axes: list[_Axis], out: np.ndarray) -> None:
    """Linear (1-D) or bilinear (2-D) interpolation of ``get(flat index)`` into ``out``;
    exact at grid points (a zero weight adds nothing)."""
    if len(axes) == 1:
        v0 = get(flat)
        np.subtract(get(flat + 1), v0, out=out)
        out *= w[0]
        out += v0
        return
    n2 = axes[1].n
    v00, v01, v10, v11 = get(flat), get(flat + 1), get(flat + n2), get(flat + n2 + 1)
    top = v00 + w[1] * (v01 - v00)
    bottom = v10 + w[1] * (v11 - v10)
    np.subtract(bottom, top, out=out)
    out *= w[0]
    out += top


def lookup(table: OperatorTable, *xs: Any, mode: str = "mean", noise_scale: float | None = None,
           rng: Any = None) -> np.ndarray:
    """One-off evaluation of ``table`` at ``xs`` (see :class:`Lookup`)."""
    return Lookup(table, mode=mode, noise_scale=noise_scale, rng=rng)(*xs)


def weight_noise_sigma(sigma: float | WeightNoise, reference: Any, allowed: str) -> float:
    """σ of a weight-noise spec or number, refusing a negative σ or an unknown named
    reference (numpy and torch samplers share the rule; ``allowed`` names what the
    caller takes)."""
    value = float(sigma.sigma if isinstance(sigma, WeightNoise) else sigma)
    if not value >= 0:
        raise ValueError(f"weight noise sigma must be >= 0, not {value!r}")
    if isinstance(reference, str) and reference not in ("max_abs", "range"):
        raise ValueError(f"reference must be {allowed}, not {reference!r}")
    return value


class WeightNoiseSampler:
    """Programming error of analog weights: ``w + sigma · noise_scale · reference · z``.

    ``z ~ N(0, 1)`` is drawn once per weight (per ``key``, e.g. a layer name) and kept
    across calls, as a programmed device keeps its error, until :meth:`reprogram`.
    ``reference`` is what σ is relative to, in the weights' units: a number or array
    (the weight span that maps onto a device's conductance range; 1.0 when weights are
    fractions of that range), ``"max_abs"`` (max |w|, as aihwkit) or ``"range"``
    (max w − min w), the last two taken from the weights of each call.
    """

    def __init__(self, sigma: float | WeightNoise = PAPER_WEIGHT_SIGMA, *, reference: float | np.ndarray | str = 1.0,
                 noise_scale: float = 1.0, rng: Any = None) -> None:
        self.sigma = weight_noise_sigma(sigma, reference, "a number, an array, 'max_abs' or 'range'")
        self.reference = reference
        self.noise_scale = float(noise_scale)
        self.rng = _rng(rng)
        self._z: dict[str, np.ndarray] = {}

    def noise(self, w: Any, key: str = "weights") -> np.ndarray:
        """The additive error for the weights ``w`` (drawn on first use of ``key``)."""
        w = np.asarray(w)
        dtype = w.dtype if w.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        z = self._z.get(key)
        if z is None:
            z = self._z[key] = self.rng.standard_normal(w.shape, dtype=dtype)
        elif z.shape != w.shape:
            raise ValueError(f"weights {key!r} changed shape from {z.shape} to {w.shape}; call reprogram() first")
        if isinstance(self.reference, str):
            ref = np.max(np.abs(w)) if self.reference == "max_abs" else np.ptp(w)
        else:
            ref = np.asarray(self.reference, dtype=dtype)
        return (z * (self.sigma * self.noise_scale) * ref).astype(dtype, copy=False)

    def __call__(self, w: Any, key: str = "weights") -> np.ndarray:
        w = np.asarray(w)
        return w + self.noise(w, key)

    def reprogram(self, key: str | None = None) -> None:
        """Draw new errors on next use: for ``key``, or every key."""
        if key is None:
            self._z.clear()
        else:
            self._z.pop(key, None)


# ---------------------------------------------------------------------- effective weights
EFFECTIVE_MODES = ("mean", "gaussian")


def effective_weight_map(source: OperatorTable | EffectiveWeightMap) -> EffectiveWeightMap:
    """The map of a VMM table (or the map itself); a clear error when there is none."""
    if isinstance(source, EffectiveWeightMap):
        return source
    if isinstance(source, OperatorTable) and source.effective_weight is not None:
        return source.effective_weight
    name = getattr(source, "name", type(source).__name__)
    raise ValueError(f"operator {name!r} has no effective-weight map (a vmm run with map_levels measures one)")


class EffectiveWeight:
    """The weight a VMM crossbar gives for a programmed weight: ``w · gain(|w|)``.

    Weights are fractions of full scale (1 = the map's top level; scale yours to it).
    ``gain`` is the measured w_eff/w, interpolated linearly between the map's levels
    and clipped to them. ``mode="gaussian"`` adds ``noise_scale · gain_std · z`` with
    ``z ~ N(0, 1)`` drawn once per weight (per ``key``) and kept until :meth:`reprogram`:
    the deviation belongs to each cell's diode, not to the read.
    """

    def __init__(self, source: OperatorTable | EffectiveWeightMap, *, mode: str = "mean", noise_scale: float = 1.0,
                 rng: Any = None) -> None:
        if mode not in EFFECTIVE_MODES:
            raise ValueError(f"effective-weight mode must be one of {', '.join(EFFECTIVE_MODES)}, not {mode!r}")
        self.map = effective_weight_map(source)
        ok = np.isfinite(self.map.gain_mean)
        if ok.sum() < 1:
            raise ValueError("the effective-weight map has no finite gain")
        self.axis = np.asarray(self.map.requested, dtype=np.float64)[ok]
        self.gain_mean = np.asarray(self.map.gain_mean, dtype=np.float64)[ok]
        self.gain_std = np.nan_to_num(np.asarray(self.map.gain_std, dtype=np.float64)[ok])
        self.mode = mode
        self.noise_scale = float(noise_scale)
        self.rng = _rng(rng)
        self._z: dict[str, np.ndarray] = {}

    def gain(self, w: Any) -> np.ndarray:
        """The mean gain at |w| (no noise)."""
        return np.interp(np.abs(np.asarray(w, dtype=np.float64)), self.axis, self.gain_mean)

    def __call__(self, w: Any, key: str = "weights") -> np.ndarray:
        w = np.asarray(w)
        dtype = w.dtype if w.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        g = self.gain(w)
        if self.mode == "gaussian":
            z = self._z.get(key)
            if z is None:
                z = self._z[key] = self.rng.standard_normal(w.shape)
            elif z.shape != w.shape:
                raise ValueError(f"weights {key!r} changed shape from {z.shape} to {w.shape}; call reprogram() first")
            g = g + self.noise_scale * np.interp(np.abs(w), self.axis, self.gain_std) * z
        return (w * g).astype(dtype, copy=False)

    def reprogram(self, key: str | None = None) -> None:
        """Draw new per-cell deviations on next use: for ``key``, or every key."""
        if key is None:
            self._z.clear()
        else:
            self._z.pop(key, None)


def effective_weight(source: OperatorTable | EffectiveWeightMap, w: Any, *, mode: str = "mean",
                     rng: Any = None) -> np.ndarray:
    """One-off: the effective weights for programmed weights ``w`` (see :class:`EffectiveWeight`)."""
    return EffectiveWeight(source, mode=mode, rng=rng)(w)
