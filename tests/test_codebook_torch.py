"""The PyTorch codebook operator: forward equals the numpy lookup, the gradient is the
ideal function's analytic derivative (the straight-through bypass), bypass=False cuts
the gradient, noisy modes and weight noise behave as in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from labpcu.data.codebook import Codebook, build_table  # noqa: E402
from labpcu.data.codebook_torch import CodebookOperator, WeightNoise, codebook_operators, torch_ideal  # noqa: E402
from labpcu.data.ideal import IDEAL_FUNCTIONS, derivative, get_ideal  # noqa: E402
from labpcu.data.lookup import Lookup  # noqa: E402

GRID = np.linspace(-3.0, 3.0, 25)
GRID2 = (np.linspace(-2.0, 2.0, 9), np.array([0.5, 0.75, 1.0, 1.5, 2.0, 3.0]))  # second axis not uniform


def table_for(name: str, noise: float = 0.02, seed: int = 0, params: dict | None = None):
    """A measured-looking table of the ideal function ``name`` (5 repeats per point)."""
    rng = np.random.default_rng(seed)
    f = get_ideal(name)
    if f.arity == 1:
        x = np.repeat(GRID, 5)
        y = f(x, params=params) + noise * rng.standard_normal(len(x))
        spec = {"kind": "elementwise1d", "ideal": name, "ideal_params": params or {}, "inputs": ["x"],
                "grid": {"x": GRID}}
        return build_table(name, spec, x, y)
    a, b = (np.repeat(m.ravel(), 5) for m in np.meshgrid(*GRID2, indexing="ij"))
    y = f(a, b) + noise * rng.standard_normal(len(a))
    spec = {"kind": "elementwise2d", "ideal": name, "inputs": ["x1", "x2"], "grid": {"x1": GRID2[0], "x2": GRID2[1]}}
    return build_table(name, spec, [a, b], y)


ONE_D = [n for n, f in IDEAL_FUNCTIONS.items() if f.arity == 1]
TWO_D = [n for n, f in IDEAL_FUNCTIONS.items() if f.arity == 2]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_equals_the_numpy_lookup(dtype) -> None:
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    t = table_for("softplus")
    x = torch.linspace(-4, 4, 1001, dtype=dtype)
    out = CodebookOperator(t)(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), Lookup(t)(x.numpy()), **tol)
    t2 = table_for("multiply")
    a = torch.empty(3000, dtype=dtype).uniform_(-2.5, 2.5)
    b = torch.empty(3000, dtype=dtype).uniform_(0.25, 3.5)
    np.testing.assert_allclose(CodebookOperator(t2)(a, b).numpy(), Lookup(t2)(a.numpy(), b.numpy()), **tol)
    grid = torch.as_tensor(GRID, dtype=dtype)
    np.testing.assert_allclose(CodebookOperator(t)(grid).numpy(), t.mean, **tol)  # the stored mean at grid points


@pytest.mark.parametrize("name", ONE_D)
def test_gradient_is_the_ideal_derivative_1d(name: str) -> None:
    params = {"k": 1.5} if name == "gelu" else None
    op = CodebookOperator(table_for(name, params=params))
    x = torch.linspace(-2.9, 2.9, 301, dtype=torch.float64, requires_grad=True)
    y = op(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    (want,) = derivative(name, x.detach().numpy(), params=params)
    np.testing.assert_allclose(grad.numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(y.detach().numpy(), op.lookup(x.detach()).numpy())  # forward: the table only


@pytest.mark.parametrize("name", TWO_D)
def test_gradient_is_the_ideal_derivative_2d(name: str) -> None:
    op = CodebookOperator(table_for(name))
    a = torch.linspace(-1.9, 1.9, 40, dtype=torch.float64).repeat(5).requires_grad_()
    b = torch.linspace(0.6, 2.9, 5, dtype=torch.float64).repeat_interleave(40).requires_grad_()
    ga, gb = torch.autograd.grad(op(a, b).sum(), (a, b))
    wa, wb = derivative(name, a.detach().numpy(), b.detach().numpy())
    np.testing.assert_allclose(ga.numpy(), wa, rtol=1e-10)
    np.testing.assert_allclose(gb.numpy(), wb, rtol=1e-10)


def test_broadcast_inputs_get_summed_gradients() -> None:
    op = CodebookOperator(table_for("multiply"))
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    b = torch.linspace(0.6, 2.9, 7, dtype=torch.float64, requires_grad=True)
    ga, gb = torch.autograd.grad(op(a, b).sum(), (a, b))
    assert ga.item() == pytest.approx(b.sum().item())
    np.testing.assert_allclose(gb.numpy(), np.ones(7))


def test_without_bypass_there_is_no_gradient() -> None:
    op = CodebookOperator(table_for("sigmoid"), bypass=False)
    x = torch.linspace(-2, 2, 11, dtype=torch.float64, requires_grad=True)
    y = op(x)
    assert not y.requires_grad
    (grad,) = torch.autograd.grad((y * 1.0).sum() + 0.0 * x.sum(), x)
    assert torch.all(grad == 0)
    assert torch.autograd.grad(y.sum() + 0.0 * x.sum(), x)[0].abs().sum() == 0
    with_bypass = CodebookOperator(table_for("sigmoid"))(x)
    np.testing.assert_array_equal(y.numpy(), with_bypass.detach().numpy())  # same forward value


def test_transfer_tables_pass_the_gradient_straight_through() -> None:
    bins = np.linspace(0, 1, 11)
    rng = np.random.default_rng(0)
    ideal = rng.uniform(0, 1, 500)
    t = build_table("softmax", {"kind": "vector", "ideal": "softmax", "inputs": ["x"], "grid": {"y_ideal": bins}},
                    ideal, ideal * 1.1)
    p = torch.softmax(torch.randn(20, 4, dtype=torch.float64), dim=-1).requires_grad_()
    y = CodebookOperator(t)(p)
    (grad,) = torch.autograd.grad(y.sum(), p)
    np.testing.assert_array_equal(grad.numpy(), np.ones((20, 4)))
    np.testing.assert_allclose(y.detach().numpy(), Lookup(t)(p.detach().numpy()), rtol=1e-12)


def test_torch_ideal_functions_equal_numpy() -> None:
    x = np.linspace(-30, 30, 121)
    for name in ONE_D:
        np.testing.assert_allclose(torch_ideal(name)(torch.as_tensor(x)).numpy(), get_ideal(name)(x), rtol=1e-12)
    with pytest.raises(ValueError, match="unknown ideal function 'relu'"):
        torch_ideal("relu")


def test_noisy_modes() -> None:
    t = table_for("softplus", noise=0.1)
    x = torch.full((200_000,), float(GRID[12]), dtype=torch.float64)
    g = CodebookOperator(t, "gaussian", noise_scale=2.0, generator=torch.Generator().manual_seed(0))(x)
    assert g.mean().item() == pytest.approx(t.mean[12], abs=4 * 2 * t.std[12] / math.sqrt(len(x)))
    assert g.std().item() == pytest.approx(2.0 * t.std[12], rel=0.01)
    q = CodebookOperator(t, "quantile", generator=torch.Generator().manual_seed(1))(x)
    assert t.quantiles[12, 0] <= q.min().item() and q.max().item() <= t.quantiles[12, -1]
    assert q.median().item() == pytest.approx(t.quantiles[12, 5], abs=0.02 * (t.quantiles[12, -1] - t.quantiles[12, 0]))
    xs = torch.empty(5000, dtype=torch.float64).uniform_(-3, 3)
    qs = CodebookOperator(t, "quantile")(xs).numpy()
    lo = Lookup(_replace_mean(t, t.quantiles[:, 0]))(xs.numpy())
    hi = Lookup(_replace_mean(t, t.quantiles[:, -1]))(xs.numpy())
    assert np.all(qs >= lo - 1e-12) and np.all(qs <= hi + 1e-12)


def _replace_mean(t, mean):
    import dataclasses

    return dataclasses.replace(t, mean=mean)


def test_per_device_draws_are_kept_until_reprogram() -> None:
    t = table_for("sigmoid", noise=0.1)
    t.noise_scope = "per_device"
    op = CodebookOperator(t, "gaussian")
    x = torch.linspace(-2, 2, 50, dtype=torch.float64)
    first = op(x)
    assert torch.equal(op(x), first)
    op.reprogram()
    assert not torch.equal(op(x), first)


def test_module_buffers_follow_to() -> None:
    op = CodebookOperator(table_for("multiply"))
    names = {n for n, _ in op.named_buffers()}
    assert {"axis0", "axis1", "mean", "std", "quantiles", "levels"} <= names
    op = op.to(torch.float32)  # buffers cast; lookups still run in the input's dtype
    out = op(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert out.dtype == torch.float64
    if torch.cuda.is_available():  # pragma: no cover - no GPU on CI
        out = op.cuda()(torch.zeros(3, device="cuda"), torch.ones(3, device="cuda"))
        assert out.device.type == "cuda"


def test_codebook_operators_and_refusals() -> None:
    cb = Codebook({"softplus": table_for("softplus"), "multiply": table_for("multiply")})
    ops = codebook_operators(cb, "mean")
    assert set(ops) == {"softplus", "multiply"}
    with pytest.raises(ValueError, match="mode must be one of mean, gaussian, quantile"):
        CodebookOperator(table_for("exp"), "median")
    with pytest.raises(ValueError, match="takes 2 input tensor"):
        ops["multiply"](torch.zeros(2))


def test_weight_noise_is_kept_until_reprogram() -> None:
    wn = WeightNoise(0.027367, generator=torch.Generator().manual_seed(0))
    w = torch.empty(300, 400, dtype=torch.float64).uniform_(-1, 1).requires_grad_()
    first = wn(w)
    assert (first - w).std().item() == pytest.approx(0.027367, rel=0.02)
    assert torch.equal(wn(w), first)
    (grad,) = torch.autograd.grad(wn(w).sum(), w)
    assert torch.all(grad == 1)
    wn.reprogram()
    assert not torch.equal(wn(w), first)
    rel = WeightNoise(0.05, "max_abs")(2 * w.detach()) - 2 * w.detach()
    assert rel.std().item() == pytest.approx(0.05 * 2 * w.detach().abs().max().item(), rel=0.03)
    with pytest.raises(ValueError, match="changed shape"):
        wn(w[:10])
    with pytest.raises(ValueError, match="reference must be"):
        WeightNoise(reference="gmax")
