"""PyTorch modules for hardware-aware fine-tuning with a codebook (optional: needs torch).

:class:`CodebookOperator` returns ``y = codebook(x) + f(x) − f(x).detach()``: the forward
value is what the hardware gave (the table, as :class:`labpcu.data.lookup.Lookup`
computes it), the gradient is the ideal function's (the straight-through "bypass").
``bypass=False`` returns the table alone, detached: the paper's ablation without the
gradient bypass. For transfer tables (softmax, vmm) the input is the ideal output and
``f`` is the identity. :class:`WeightNoise` adds programming error to weights, drawn
once and kept until :meth:`WeightNoise.reprogram`. :class:`EffectiveWeight` turns
programmed weights into what the VMM crossbar gives (the codebook's effective-weight
map; apply it after the weight noise).

The tables live in buffers, so ``.to(device)`` moves them; lookups run in the input's
dtype on the input's device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - exercised only without torch
    raise ImportError("PyTorch is not installed: pip install 'labpcu[torch]'") from None

from labpcu.data.codebook import PAPER_WEIGHT_SIGMA, Codebook, EffectiveWeightMap, OperatorTable
from labpcu.data.codebook import WeightNoise as WeightNoiseSpec
from labpcu.data.ideal import get_ideal
from labpcu.data.lookup import EFFECTIVE_MODES, MODES, effective_weight_map, weight_noise_sigma

Tensor = torch.Tensor


# ---------------------------------------------------------------------- ideal functions
def _softplus(x: Tensor, beta: float) -> Tensor:
    # logaddexp, not F.softplus: no linear cut-off, so the gradient is sigmoid(beta·x) everywhere
    return torch.logaddexp(torch.zeros_like(x), beta * x) / beta


TORCH_IDEAL: dict[str, Callable[..., Tensor]] = {
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "softplus": _softplus,
    "sigmoid": lambda x: torch.sigmoid(x),
    "gelu": lambda x, k: x * torch.sigmoid(k * x),
    "exp": lambda x: torch.exp(x),
    "identity": lambda x: x,
}


def torch_ideal(name: str, params: Mapping[str, float] | None = None) -> Callable[..., Tensor]:
    """The torch twin of :func:`labpcu.data.ideal.get_ideal` (same names, same params)."""
    spec = get_ideal(name)  # unknown names fail here, with the list
    kwargs = spec.params(params)
    fn = TORCH_IDEAL[name]
    return lambda *xs: fn(*xs, **kwargs)


# ---------------------------------------------------------------------- the operator
class CodebookOperator(nn.Module):
    """One operator's codebook as a module: ``forward(x)`` or ``forward(x1, x2)``.

    ``mode``: mean, gaussian (mean + noise_scale·std·N(0,1)) or quantile (inverse-CDF
    sampling); ``noise_scale`` defaults to the table's; ``generator`` makes draws
    reproducible. Per-device tables keep their draws until :meth:`reprogram`.
    """

    def __init__(self, table: OperatorTable, mode: str = "mean", noise_scale: float | None = None, *,
                 bypass: bool = True, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if table.ndim not in (1, 2):
            raise ValueError(f"operator {table.name!r}: only 1-D and 2-D tables, not {table.ndim}-D")
        self.name = table.name
        self.kind = table.kind
        self.mode = mode
        self.noise_scale = float(table.noise_scale if noise_scale is None else noise_scale)
        self.bypass = bool(bypass)
        self.noise_scope = table.noise_scope
        self.generator = generator
        self.ndim = table.ndim
        self.ideal = torch_ideal("identity") if table.is_transfer else torch_ideal(table.ideal, table.ideal_params)
        for j, axis in enumerate(table.axes):
            self.register_buffer(f"axis{j}", torch.as_tensor(axis, dtype=torch.float64))
        self.register_buffer("mean", torch.as_tensor(table.mean, dtype=torch.float64))
        self.register_buffer("std", torch.as_tensor(table.std, dtype=torch.float64))
        self.register_buffer("quantiles", torch.as_tensor(table.quantiles, dtype=torch.float64))
        self.register_buffer("levels", torch.as_tensor(table.quantile_levels, dtype=torch.float64))
        self._kept: dict[tuple[str, tuple[int, ...], str], Tensor] = {}

    def extra_repr(self) -> str:
        return f"{self.name!r}, kind={self.kind}, mode={self.mode}, noise_scale={self.noise_scale}, bypass={self.bypass}"

    def reprogram(self) -> None:
        """Forget kept per-device draws."""
        self._kept.clear()

    def forward(self, *xs: Tensor) -> Tensor:
        if len(xs) != self.ndim:
            raise ValueError(f"operator {self.name!r} takes {self.ndim} input tensor(s), got {len(xs)}")
        xs = torch.broadcast_tensors(*xs)
        with torch.no_grad():
            y = self.lookup(*xs)
        if not self.bypass:
            return y
        f = self.ideal(*xs)
        return y + (f - f.detach())

    # ------------------------------------------------------------------ lookup
    def lookup(self, *xs: Tensor) -> Tensor:
        """The table at ``xs`` (no straight-through term), in the inputs' dtype."""
        dtype = xs[0].dtype if xs[0].is_floating_point() else torch.get_default_dtype()
        located = [self._locate(getattr(self, f"axis{j}").to(dtype), x.to(dtype)) for j, x in enumerate(xs)]
        mean = self.mean.to(dtype).reshape(-1)
        if self.mode == "quantile":
            u = self._draw("u", xs[0], lambda: torch.rand(xs[0].shape, generator=self.generator, dtype=dtype,
                                                          device=xs[0].device))
            return self._interpolate(self._quantile_getter(u, dtype), located)
        y = self._interpolate(lambda f: mean[f], located)
        if self.mode == "gaussian":
            std = self.std.to(dtype).reshape(-1)
            z = self._draw("z", xs[0], lambda: torch.randn(xs[0].shape, generator=self.generator, dtype=dtype,
                                                           device=xs[0].device))
            y = y + self.noise_scale * self._interpolate(lambda f: std[f], located) * z
        return y

    @staticmethod
    def _locate(axis: Tensor, x: Tensor) -> tuple[Tensor, Tensor, int]:
        n = axis.numel()
        xc = x.clamp(axis[0], axis[-1]).contiguous()
        i = (torch.searchsorted(axis, xc, right=True) - 1).clamp(0, n - 2)
        a0 = axis[i]
        w = (xc - a0) / (axis[i + 1] - a0)
        return i, w, n

    def _interpolate(self, get: Callable[[Tensor], Tensor], located: list[tuple[Tensor, Tensor, int]]) -> Tensor:
        if len(located) == 1:
            i, w, _ = located[0]
            v0 = get(i)
            return v0 + w * (get(i + 1) - v0)
        (i1, w1, _), (i2, w2, n2) = located
        f = i1 * n2 + i2
        v00, v01, v10, v11 = get(f), get(f + 1), get(f + n2), get(f + n2 + 1)
        top = v00 + w2 * (v01 - v00)
        return top + w1 * ((v10 + w2 * (v11 - v10)) - top)

    def _quantile_getter(self, u: Tensor, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
        levels = self.levels.to(dtype)
        n_q = levels.numel()
        q = self.quantiles.to(dtype).reshape(-1)
        k = (torch.searchsorted(levels, u.contiguous(), right=True) - 1).clamp(0, n_q - 2)
        lk = levels[k]
        frac = (u - lk) / (levels[k + 1] - lk)

        def get(f: Tensor) -> Tensor:
            v0 = q[f * n_q + k]
            return v0 + frac * (q[f * n_q + k + 1] - v0)

        return get

    def _draw(self, kind: str, like: Tensor, draw: Callable[[], Tensor]) -> Tensor:
        if self.noise_scope != "per_device":
            return draw()
        key = (kind, tuple(like.shape), str(like.device))
        kept = self._kept.get(key)
        if kept is None or kept.dtype != like.dtype:
            kept = self._kept[key] = draw()
        return kept


def codebook_operators(codebook: Codebook, mode: str = "mean", **kwargs: Any) -> nn.ModuleDict:
    """A :class:`CodebookOperator` for every 1-D and 2-D operator of ``codebook``, by name."""
    return nn.ModuleDict({name: CodebookOperator(t, mode, **kwargs)
                          for name, t in codebook.operators.items() if t.ndim in (1, 2)})


# ---------------------------------------------------------------------- weight noise
class WeightNoise(nn.Module):
    """``w + sigma · noise_scale · reference · z``, ``z ~ N(0, 1)`` drawn on the first
    call and kept (a programmed device keeps its error) until :meth:`reprogram`.

    ``sigma``: a number or the codebook's weight noise; ``reference``: what σ is
    relative to, in weight units (a number, 1.0 when weights are fractions of the
    conductance range), or ``"max_abs"`` / ``"range"`` of the weights. The gradient
    with respect to ``w`` is 1 (the noise is a constant offset).
    """

    def __init__(self, sigma: float | WeightNoiseSpec = PAPER_WEIGHT_SIGMA, reference: float | str = 1.0,
                 noise_scale: float = 1.0, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = weight_noise_sigma(sigma, reference, "a number, 'max_abs' or 'range'")
        self.reference = reference
        self.noise_scale = float(noise_scale)
        self.generator = generator
        self.register_buffer("z", None, persistent=False)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, reference={self.reference!r}, noise_scale={self.noise_scale}"

    def reprogram(self) -> None:
        """Draw new errors on the next call."""
        self.z = None

    def forward(self, w: Tensor) -> Tensor:
        if self.z is None:
            self.z = torch.randn(w.shape, generator=self.generator, dtype=w.dtype, device=w.device)
        elif self.z.shape != w.shape:
            raise ValueError(f"weights changed shape from {tuple(self.z.shape)} to {tuple(w.shape)}; "
                             f"call reprogram() first")
        w_const = w.detach()
        if self.reference == "max_abs":
            ref: Tensor | float = w_const.abs().max()
        elif self.reference == "range":
            ref = w_const.max() - w_const.min()
        else:
            ref = float(self.reference)
        return w + (self.sigma * self.noise_scale) * ref * self.z.to(w.dtype)


# ---------------------------------------------------------------------- effective weights
class EffectiveWeight(nn.Module):
    """``w · gain(|w|)``: the weight the crossbar gives (see
    :class:`labpcu.data.lookup.EffectiveWeight`, which this matches on the same map).

    ``bypass=True`` (default): forward the effective weight, gradient 1 (the ideal
    weight's, as the codebook operators do); ``bypass=False``: the gradient goes through
    ``w · gain`` with the gain held constant. ``mode="gaussian"`` adds each cell's
    deviation (``noise_scale · gain_std · z``, z drawn once, kept until :meth:`reprogram`).
    """

    def __init__(self, source: OperatorTable | EffectiveWeightMap, mode: str = "mean", noise_scale: float = 1.0, *,
                 bypass: bool = True, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if mode not in EFFECTIVE_MODES:
            raise ValueError(f"mode must be one of {', '.join(EFFECTIVE_MODES)}, not {mode!r}")
        m = effective_weight_map(source)
        ok = torch.isfinite(torch.as_tensor(m.gain_mean, dtype=torch.float64))
        self.register_buffer("axis", torch.as_tensor(m.requested, dtype=torch.float64)[ok])
        self.register_buffer("gain_mean", torch.as_tensor(m.gain_mean, dtype=torch.float64)[ok])
        self.register_buffer("gain_std", torch.nan_to_num(torch.as_tensor(m.gain_std, dtype=torch.float64)[ok]))
        self.mode = mode
        self.noise_scale = float(noise_scale)
        self.bypass = bool(bypass)
        self.generator = generator
        self.register_buffer("z", None, persistent=False)

    def extra_repr(self) -> str:
        return f"levels={self.axis.numel()}, mode={self.mode}, noise_scale={self.noise_scale}, bypass={self.bypass}"

    def reprogram(self) -> None:
        """Draw new per-cell deviations on the next call."""
        self.z = None

    def _interp(self, table: Tensor, a: Tensor) -> Tensor:
        """np.interp on |w| (clipped to the levels), in ``a``'s dtype."""
        axis = self.axis.to(a.dtype)
        values = table.to(a.dtype)
        if axis.numel() == 1:
            return values.expand_as(a).clone()
        x = a.clamp(axis[0], axis[-1]).contiguous()
        i = (torch.searchsorted(axis, x, right=True) - 1).clamp(0, axis.numel() - 2)
        t = (x - axis[i]) / (axis[i + 1] - axis[i])
        return values[i] + t * (values[i + 1] - values[i])

    def gain(self, w: Tensor) -> Tensor:
        """The mean gain at |w| (no noise, no gradient)."""
        with torch.no_grad():
            return self._interp(self.gain_mean, w.detach().abs())

    def forward(self, w: Tensor) -> Tensor:
        g = self.gain(w)
        if self.mode == "gaussian":
            if self.z is None:
                self.z = torch.randn(w.shape, generator=self.generator, dtype=w.dtype, device=w.device)
            elif self.z.shape != w.shape:
                raise ValueError(f"weights changed shape from {tuple(self.z.shape)} to {tuple(w.shape)}; "
                                 f"call reprogram() first")
            with torch.no_grad():
                g = g + self.noise_scale * self._interp(self.gain_std, w.detach().abs()) * self.z.to(w.dtype)
        if self.bypass:
            return (w * g).detach() + (w - w.detach())
        return w * g
