"""The ideal network functions an analog operator stands in for, by name.

A codebook names its operator's ideal function (``"softplus"``, ``"multiply"``...) rather
than storing code, so a file stays framework-free; this registry turns the name back into
a numpy function and its analytic partial derivatives. The torch twin of each function
lives in :mod:`labpcu.data.codebook_torch`, and the tests check both against these.

Every function takes its inputs as arrays (broadcast together) and a ``params`` mapping
of optional constants (``{"k": 1.702}`` for GELU, ``{"beta": 2.0}`` for softplus);
unknown parameters are refused, missing ones take the defaults below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray
Params = Mapping[str, float]


@dataclass(frozen=True)
class IdealFunction:
    """One ideal function: ``value(*xs, **params)`` and ``grad(*xs, **params)``, which
    returns one partial derivative per input (same broadcast shape)."""

    name: str
    arity: int
    value: Callable[..., Array]
    grad: Callable[..., tuple[Array, ...]]
    defaults: dict[str, float] = field(default_factory=dict)
    formula: str = ""

    def params(self, params: Params | None) -> dict[str, float]:
        """``params`` merged over the defaults; an unknown key is a one-line error."""
        given = dict(params or {})
        unknown = set(given) - set(self.defaults)
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"ideal function {self.name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
                             f"it takes: {allowed}")
        return {**self.defaults, **{k: float(v) for k, v in given.items()}}

    def __call__(self, *xs: Any, params: Params | None = None) -> Array:
        return self.value(*self._inputs(xs), **self.params(params))

    def derivative(self, *xs: Any, params: Params | None = None) -> tuple[Array, ...]:
        """∂f/∂x_i for each input, broadcast to the output's shape."""
        arrays = self._inputs(xs)
        grads = self.grad(*arrays, **self.params(params))
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        return tuple(np.broadcast_to(g, shape) for g in grads)

    def _inputs(self, xs: tuple[Any, ...]) -> list[Array]:
        if len(xs) != self.arity:
            raise ValueError(f"ideal function {self.name!r} takes {self.arity} input(s), got {len(xs)}")
        return [np.asarray(x, dtype=np.result_type(np.asarray(x).dtype, np.float32)) for x in xs]


# ---------------------------------------------------------------------- the functions
def _sigmoid(x: Array) -> Array:
    # e^-|x| never overflows, and e/(1+e) keeps full relative precision for very negative x
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def _softplus(x: Array, beta: float) -> Array:
    # logaddexp(0, z) = ln(1 + e^z) without overflow for large z nor loss for very negative z
    return np.logaddexp(0.0, beta * x) / beta


def _gelu(x: Array, k: float) -> Array:
    return x * _sigmoid(k * x)


def _gelu_grad(x: Array, k: float) -> tuple[Array]:
    s = _sigmoid(k * x)
    return (s + k * x * s * (1.0 - s),)


def _divide_grad(x1: Array, x2: Array) -> tuple[Array, Array]:
    inv = 1.0 / x2
    return inv, -x1 * inv * inv


def _one(x: Array) -> tuple[Array]:
    return (np.ones_like(x),)


_FUNCTIONS = (
    IdealFunction("multiply", 2, lambda a, b: a * b, lambda a, b: (b, a), formula="x1·x2"),
    IdealFunction("divide", 2, lambda a, b: a / b, _divide_grad, formula="x1/x2"),
    IdealFunction("softplus", 1, _softplus, lambda x, beta: (_sigmoid(beta * x),), {"beta": 1.0},
                  "ln(1 + e^(beta·x)) / beta"),
    IdealFunction("sigmoid", 1, _sigmoid, lambda x: (_sigmoid(x) * (1.0 - _sigmoid(x)),), formula="1/(1 + e^-x)"),
    IdealFunction("gelu", 1, _gelu, _gelu_grad, {"k": 1.702}, "x·sigmoid(k·x) (the paper's GELU approximation)"),
    IdealFunction("exp", 1, np.exp, lambda x: (np.exp(x),), formula="e^x"),
    IdealFunction("identity", 1, lambda x: x, _one, formula="x"),
)
IDEAL_FUNCTIONS: dict[str, IdealFunction] = {f.name: f for f in _FUNCTIONS}


def get_ideal(name: str) -> IdealFunction:
    """The ideal function called ``name``; a one-line error lists the known names."""
    try:
        return IDEAL_FUNCTIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ideal function {name!r}; known: {', '.join(IDEAL_FUNCTIONS)}") from None


def evaluate(name: str, *xs: Any, params: Params | None = None) -> Array:
    """``f(*xs)`` for the ideal function ``name``."""
    return get_ideal(name)(*xs, params=params)


def derivative(name: str, *xs: Any, params: Params | None = None) -> tuple[Array, ...]:
    """The partial derivatives of the ideal function ``name`` at ``xs``."""
    return get_ideal(name).derivative(*xs, params=params)
