"""docs/codebook-format.md's numpy-only loader (docs/examples/load_codebook_numpy.py):
it imports nothing but numpy and the standard library, is the code the spec shows, and
gives labpcu's Lookup values on an exported codebook, at grid points and between them,
in every mode (the same random draws for the same seed)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from labpcu.data.codebook import build_codebook
from labpcu.data.codebook_io import save_npz
from labpcu.data.lookup import Lookup
from test_codebook import make_operator_store

ROOT = Path(__file__).resolve().parents[1]
LOADER = ROOT / "docs" / "examples" / "load_codebook_numpy.py"
SPEC = ROOT / "docs" / "codebook-format.md"


@pytest.fixture(scope="module")
def loader():
    spec = importlib.util.spec_from_file_location("load_codebook_numpy", LOADER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("format")
    make_operator_store(folder / "runs.h5")
    cb = build_codebook(folder / "runs.h5")
    save_npz(cb, folder / "npz")
    return cb, folder / "npz"


def test_the_loader_needs_only_numpy_and_is_short() -> None:
    tree = ast.parse(LOADER.read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"json", "pathlib", "numpy"}
    code = [ln for ln in LOADER.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(code) <= 45  # about 30 lines of code, plus docstrings


def test_the_spec_shows_the_loader_verbatim() -> None:
    text = SPEC.read_text(encoding="utf-8")
    assert LOADER.read_text(encoding="utf-8").strip() in text


def points(axis: np.ndarray) -> np.ndarray:
    """Every grid point, the midpoints, points a third of the way, and outside the grid."""
    mid = (axis[:-1] + axis[1:]) / 2
    third = axis[:-1] + (axis[1:] - axis[:-1]) / 3
    span = axis[-1] - axis[0]
    return np.concatenate([axis, mid, third, [axis[0] - span, axis[-1] + 0.5 * span]])


@pytest.mark.parametrize("mode", ["mean", "gaussian", "quantile"])
def test_numpy_loader_gives_labpcus_lookup(loader, exported, mode) -> None:
    cb, folder = exported
    tables = loader.load_codebook(folder)
    assert set(tables) == set(cb.operators)
    for name, table in cb.operators.items():
        if table.ndim == 1:
            xs = (points(table.axes[0]),)
        else:
            g1, g2 = np.meshgrid(points(table.axes[0]), points(table.axes[1]), indexing="ij")
            xs = (g1, g2)
        want = Lookup(table, mode=mode, rng=7)(*xs)
        got = loader.lookup(tables[name], *xs, mode=mode, rng=7)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.nanmax(np.abs(want)), err_msg=name)
        if mode == "mean":  # at grid points: the stored means
            on_grid = tuple(x[tuple(slice(0, len(a)) for a in table.axes)] for x in xs)
            np.testing.assert_allclose(loader.lookup(tables[name], *on_grid), table.mean, rtol=1e-14, atol=0)
