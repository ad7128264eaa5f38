"""The VMM's effective weights and input quantization, measured on the simulated bench,
and the codebook that carries the effective-weight map to a trainer.

One demo-like vmm run (default weights, map levels and read pulse; smaller input
matrices) feeds every test: the physics of a diode in series with M1 (the row current
per siemens falls as the weight grows), the figures the analysis states against the
stored arrays, the quantization claim (6 bits halve the 5-bit error, and the 5-bit
error is what rounding the inputs predicts), and the codebook's map through HDF5, npz,
the numpy lookup, the spec's numpy-only loader and the torch module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from labpcu.bench import Bench
from labpcu.data.codebook import EffectiveWeightMap, build_codebook, build_effective_weight
from labpcu.data.codebook_io import load_codebook, save_hdf5, save_npz
from labpcu.data.lookup import EffectiveWeight, effective_weight
from labpcu.protocols.operator_units import relative_error
from labpcu.protocols.vmm import VmmParams, quantize
from labpcu.runner import Runner

UNIT = ["A1-R1C1", "A1-R2C1", "A1-R3C1"]
PARAMS = {"input_sets": (20, 150), "compare_vectors": 150}
LOADER = Path(__file__).resolve().parents[1] / "docs" / "examples" / "load_codebook_numpy.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vmm_ew")
    with Bench.from_file(seed=0) as bench:
        out = Runner(bench, folder / "runs.h5", handle_sigint=False).run("vmm", PARAMS, UNIT)
    assert out.ok, out.error
    return out, folder


@pytest.fixture(scope="module")
def codebook(run):
    out, _ = run
    return build_codebook(out.store.path, [out.run_id])


# ---------------------------------------------------------------------- the protocol
def test_map_programs_every_cell_to_every_level(run):
    out, _ = run
    m = out.results["effective_weight"]
    levels = np.array(VmmParams().map_levels)
    np.testing.assert_array_equal(np.unique(m["target"]), levels)
    assert len(m["target"]) == len(levels) * len(UNIT) and sorted(set(m["cell"])) == UNIT
    # ISPP verified each level within its tolerance (plus the verify slack of kinetics and read noise)
    assert np.all(np.abs(m["programmed"] - m["target"]) <= 2 * VmmParams().tolerance)


def test_the_diode_in_series_makes_the_row_current_sublinear_in_the_weight(run):
    """I = G·(v_read − V_D1(I)): the current per siemens is below v_read, and falls as
    G (and with it I and the diode's share) grows, cell by cell."""
    out, _ = run
    m = out.results["effective_weight"]
    v_read = VmmParams().v_read
    per_s = m["current"] / m["programmed"]  # = the voltage left across M1 (ohmic reading)
    assert np.all(per_s > 0) and np.all(per_s < v_read)
    cells = np.asarray(m["cell"])
    for cell in UNIT:
        mine = cells == cell
        order = np.argsort(m["target"][mine])
        assert np.all(np.diff(per_s[mine][order]) < 0), cell
    # so a small weight comes out larger than requested, relative to full scale
    small = m["target"] == m["target"].min()
    assert np.all(m["gain"][small] > 1.1)


def test_effective_weight_figures_are_what_the_arrays_say(run):
    out, _ = run
    m, s = out.results["effective_weight"], out.results["summary"]
    full = m["target"] == m["target"].max()
    np.testing.assert_allclose(m["gain"], (m["current"] / m["i_ref"]) / (m["programmed"] / m["g_ref"]), rtol=1e-12)
    assert np.isclose(np.mean(m["gain"][full]), 1.0)  # full scale is 1 on both sides, on average
    err = np.abs(m["gain"][~full] - 1.0)
    assert s["effective_weight_error_mean"] == pytest.approx(err.mean())
    assert s["effective_weight_error_max"] == pytest.approx(err.max())
    w = out.results["weights"]
    g = np.asarray(out.results["programmed"]["achieved"])
    i = np.asarray(out.results["calibration"]["row_current"])
    np.testing.assert_allclose(w["relative_difference"], (i / i.sum()) / (g / g.sum()) - 1.0, rtol=1e-12)
    assert s["column_weight_error_mean"] == pytest.approx(np.mean(np.abs(w["relative_difference"])))


def test_calibration_hides_the_weight_error(run):
    """Against the programmed weights the VMM error is several times the calibrated one."""
    out, _ = run
    s = out.results["summary"]
    data = out.store.read(out.run_id)
    main = data[(data["set"] == 150) & (data["bits"] == 5)]
    g = np.asarray(out.results["programmed"]["achieved"])
    expected = main[["x1", "x2", "x3"]].to_numpy() @ (g / g.sum())
    assert s["mean_relative_error_uncalibrated"] == pytest.approx(np.mean(relative_error(main["y"], expected)))
    assert s["mean_relative_error_uncalibrated"] > 3 * s["mean_relative_error"]


def test_the_vmm_figure_is_the_input_quantization(run):
    """The 5-bit error is what rounding the inputs alone predicts (to within the analog
    error), and the same vectors at 6 bits give about half of it."""
    out, _ = run
    s = out.results["summary"]
    data = out.store.read(out.run_id)
    five = data[(data["set"] == 150) & (data["bits"] == 5)]
    six = data[(data["set"] == 150) & (data["bits"] == 6)]
    assert len(five) == len(six) == 150
    np.testing.assert_array_equal(five["x1"].to_numpy(), six["x1"].to_numpy())  # the same vectors
    assert s["mean_relative_error_5bit"] == pytest.approx(five["rel_error"].mean())
    assert s["mean_relative_error_6bit"] == pytest.approx(six["rel_error"].mean())
    x = five[["x1", "x2", "x3"]].to_numpy()
    w = np.linalg.lstsq(x, five["y_ideal"].to_numpy(), rcond=None)[0]  # the calibrated, normalized weights
    predicted = np.mean(relative_error(quantize(x, 5) / 31 @ w, x @ w))
    analog = s["mean_relative_error_quantized_ideal"]
    assert analog < 0.3 * s["mean_relative_error_5bit"]
    assert abs(s["mean_relative_error_5bit"] - predicted) < analog
    assert 0.35 < s["mean_relative_error_6bit"] / s["mean_relative_error_5bit"] < 0.7


def test_the_main_figure_and_the_codebook_use_the_input_bits_only(run, codebook):
    out, _ = run
    data = out.store.read(out.run_id)
    own = data[data["bits"] == 5]
    assert out.results["summary"]["mean_relative_error"] == pytest.approx(own[own["set"] == 150]["rel_error"].mean())
    assert len(codebook["vmm"].samples) == len(own) < len(data)


# ---------------------------------------------------------------------- the codebook
def test_a_codebook_from_a_vmm_run_carries_the_map(run, codebook):
    out, _ = run
    m = codebook["vmm"].effective_weight
    assert isinstance(m, EffectiveWeightMap) and m.source_run == out.run_id
    levels = np.array(VmmParams().map_levels)
    np.testing.assert_allclose(m.requested, levels / levels[-1])
    assert m.requested[-1] == 1.0 and np.all(m.count == 3)
    raw = out.results["effective_weight"]
    for k in range(len(levels)):
        mine = raw["target"] == levels[k]
        assert m.gain_mean[k] == pytest.approx(np.mean(raw["gain"][mine]))
        assert m.gain_std[k] == pytest.approx(np.std(raw["gain"][mine], ddof=1))
        assert m.effective_mean[k] == pytest.approx(np.mean(raw["current"][mine]) / raw["i_ref"])
    assert m.error_mean == pytest.approx(out.results["summary"]["effective_weight_error_mean"])
    assert m.g_ref == levels[-1] and m.v_read == VmmParams().v_read


def test_the_map_survives_hdf5_and_npz_with_its_units(tmp_path, codebook):
    import h5py

    path = save_hdf5(codebook, tmp_path / "cb.h5")
    assert load_codebook(path).equals(codebook)
    save_npz(codebook, tmp_path / "npz")
    again = load_codebook(tmp_path / "npz")
    assert again["vmm"].effective_weight.equals(codebook["vmm"].effective_weight)
    with h5py.File(path, "r") as f:
        g = f["operators/vmm/effective_weight"]
        assert g["effective_mean"].attrs["physical_units"] == "A"
        assert g["effective_mean"].attrs["physical_scale"] == codebook["vmm"].effective_weight.i_ref
        assert g["requested"].attrs["physical_units"] == "S" and g["gain_mean"].attrs["units"] == "1"
        assert g["samples/current"].attrs["units"] == "A" and g.attrs["noise_scope"] == "per_device"


def test_the_lookup_applies_the_gain(codebook):
    m = codebook["vmm"].effective_weight
    ew = EffectiveWeight(codebook["vmm"])
    np.testing.assert_allclose(ew(m.requested), m.requested * m.gain_mean, rtol=1e-12)
    mid = (m.requested[:-1] + m.requested[1:]) / 2
    np.testing.assert_allclose(ew(mid), mid * (m.gain_mean[:-1] + m.gain_mean[1:]) / 2, rtol=1e-12)
    np.testing.assert_allclose(ew(-mid), -ew(mid))  # differential pairs keep the sign
    assert ew(0.0) == 0.0 and ew(np.float32(0.5)).dtype == np.float32
    np.testing.assert_allclose(effective_weight(m, [1.5]), [1.5 * m.gain_mean[-1]])  # clipped above full scale


def test_gaussian_mode_keeps_each_cells_deviation_until_reprogramming(codebook):
    ew = EffectiveWeight(codebook["vmm"], mode="gaussian", rng=3)
    w = np.linspace(0.1, 1.0, 200)
    first, second = ew(w), ew(w)
    np.testing.assert_array_equal(first, second)
    mean = EffectiveWeight(codebook["vmm"])(w)
    assert not np.allclose(first, mean)
    ew.reprogram()
    assert not np.allclose(ew(w), first)


def test_a_vmm_table_without_a_map_says_so(codebook):
    table = codebook["vmm"]
    bare = type(table)(**{**table.__dict__, "effective_weight": None})
    with pytest.raises(ValueError, match="no effective-weight map"):
        EffectiveWeight(bare)
    with pytest.raises(ValueError, match="incomplete"):
        build_effective_weight({"target": [1e-5, 2e-5]})


def test_the_specs_numpy_loader_gives_the_same_effective_weight(tmp_path, codebook):
    spec = importlib.util.spec_from_file_location("load_codebook_numpy", LOADER)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    save_npz(codebook, tmp_path / "npz")
    tables = loader.load_codebook(tmp_path / "npz")
    w = np.linspace(-1.2, 1.2, 97)
    np.testing.assert_allclose(loader.effective_weight(tables["vmm"], w), EffectiveWeight(codebook["vmm"])(w),
                               rtol=1e-12)


def test_the_torch_module_matches_the_numpy_lookup(codebook):
    torch = pytest.importorskip("torch")
    from labpcu.data.codebook_torch import EffectiveWeight as TorchEffectiveWeight

    w = torch.linspace(-1.2, 1.2, 97, dtype=torch.float64, requires_grad=True)
    module = TorchEffectiveWeight(codebook["vmm"])
    out = module(w)
    np.testing.assert_allclose(out.detach().numpy(), EffectiveWeight(codebook["vmm"])(w.detach().numpy()), rtol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 1.0)  # the bypass: the ideal weight's gradient
    w.grad = None
    through = TorchEffectiveWeight(codebook["vmm"], bypass=False)(w)
    through.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), module.gain(w).numpy(), rtol=1e-12)
