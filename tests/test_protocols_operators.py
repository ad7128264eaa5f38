"""Operator protocols on the simulated bench: small, fast configurations of each one
(the full-size bands are asserted by tests/test_demo.py), their results and codebook
descriptions, refusal of bad unit layouts before any instrument I/O, and the safe state."""

from __future__ import annotations

import numpy as np
import pytest

from labpcu.bench import Bench
from labpcu.protocols.operator_units import column_units, group_units, relative_error
from labpcu.protocols.params import ParameterError
from labpcu.runner import Runner, prepare
from simhelpers import assert_safe, sent

UNIT = ["A1-R1C1", "A1-R2C1", "A1-R3C1"]


@pytest.fixture
def bench():
    b = Bench.from_file(seed=0)
    yield b
    b.close()


@pytest.fixture
def runner(bench, tmp_path):
    return Runner(bench, tmp_path / "ops.h5", handle_sigint=False)


def test_multiplier_unit_computes_products_and_describes_its_codebook(runner, bench):
    out = runner.run("multiplier", {"grid_points": 4, "repeats": 1}, UNIT)
    assert out.ok, out.error
    data = out.store.read(out.run_id)
    assert len(data) == 16 and set(data["device"]) == {"U01"}
    np.testing.assert_allclose(data["y_ideal"], data["x1"] * data["x2"])
    s = out.results["summary"]
    assert 0 < s["mean_relative_error"] < 0.25 and s["energy_per_op"] > 0
    assert np.isclose(s["mean_relative_error"], np.nanmean(relative_error(data["y"], data["y_ideal"])))
    spec = out.results["codebook"]["multiplier"]
    assert spec["kind"] == "elementwise2d" and spec["ideal"] == "multiply"
    assert set(np.round(data["x1"], 12)) <= set(np.round(spec["grid"]["x1"], 12))
    assert set(out.results["calibration"]["U01"]) >= {"ref_a", "ref_b", "ref_c"}
    assert_safe(bench)


def test_divider_with_slope_calibration_beats_offset_calibration(bench, tmp_path):
    r = Runner(bench, tmp_path / "d.h5", handle_sigint=False)
    units = column_units(["A2"], 2)
    offset = r.run("divider", {"grid_points": 5, "repeats": 1}, units)
    slope = r.run("divider", {"grid_points": 5, "repeats": 1, "calibration": "slope", "configure": False}, units)
    assert offset.ok and slope.ok
    assert slope.results["summary"]["mean_relative_error"] < offset.results["summary"]["mean_relative_error"]


def test_softmax_outputs_sum_to_one_within_the_error(runner):
    out = runner.run("softmax", {"length": 3, "vectors": 4}, UNIT)
    assert out.ok, out.error
    data = out.store.read(out.run_id)
    sums = data.groupby("vector")["y"].sum().to_numpy()
    np.testing.assert_allclose(sums, 1.0, atol=0.05)
    assert out.results["summary"]["mean_relative_error"] < 0.05


def test_vmm_is_linear_and_stores_its_calibration(runner):
    out = runner.run("vmm", {"input_sets": (20,), "compare_bits": (), "map_levels": ()}, UNIT)
    assert out.ok, out.error
    res = out.results
    assert 0 < res["summary"]["mean_relative_error"] < 0.03
    cal = res["calibration"]
    assert len(cal["row_current"]) == 3 and (np.asarray(cal["row_current"]) > 0).all()
    np.testing.assert_allclose(res["programmed"]["achieved"], res["programmed"]["target"], rtol=0.2)
    data = out.store.read(out.run_id)
    assert len(data) == 20 and np.corrcoef(data["y"], data["y_ideal"])[0, 1] > 0.99


SINGLES = ["S13", "S14", "S15"]


def test_activation_sigmoid_through_the_papers_back_to_back_diodes(runner):
    out = runner.run("activation", {"points": 21, "repeats": 1}, SINGLES)
    assert out.ok, out.error
    s = out.results["summary"]
    assert s["sigmoid_circuit"] == "diodes"
    assert s["softplus_r2"] > 0.99 and s["sigmoid_r2"] > 0.99
    # an ideal anti-series pair: K = 1/(n·kT/q), 21.5 /V at n = 1.8
    assert 15 < s["sigmoid_k_min"] <= s["sigmoid_k_max"] < 30
    # the plateau is the diodes' saturation current: a fraction of a nanoampere
    assert 5e-11 < s["sigmoid_a"] < 5e-9
    assert s["gelu_mean_abs_error"] < 0.05
    assert set(out.results["codebook"]) == {"softplus", "sigmoid", "gelu"}
    data = out.store.read(out.run_id)
    sweep = data[data["function"] == "sigmoid_sweep"]
    assert sweep["v"].abs().max() <= 0.35 + 1e-9  # M2 stays below its set voltage


def test_activation_sigmoid_through_the_softmax_unit_is_kept_as_an_option(runner):
    out = runner.run("activation", {"points": 21, "repeats": 1, "sigmoid_circuit": "softmax_unit",
                                    "functions": ("sigmoid",)}, UNIT)
    assert out.ok, out.error
    assert out.results["summary"]["sigmoid_r2"] > 0.99


def test_back_to_back_sigmoid_refuses_array_cells_before_any_io(bench):
    before = sent(bench)
    with pytest.raises(ParameterError, match="single PCU.*A1-R2C1"):
        prepare("activation", {}, UNIT, bench)
    assert sent(bench) == before


@pytest.mark.parametrize("devices, params, message", [
    (["A1-R1C1", "A1-R2C2", "A1-R3C3"], {}, "one column of an array"),
    (["A1-R1C1", "A1-R2C1"], {}, "at least 3"),
    (UNIT + ["A1-R1C2"], {}, "groups of 3"),
    (["A1-R1C1", "A2-R2C1", "A1-R3C1"], {}, "spans sites"),
    (UNIT, {"x_min": 0.5, "x_max": 0.2}, "x_min"),
    (UNIT, {"terminals": ("k2612a.smua", "k2612a.smua", "b1500a.1", "b1500a.4")}, "distinct"),
])
def test_bad_units_are_refused_before_any_io(bench, devices, params, message):
    before = sent(bench)
    with pytest.raises(ParameterError, match=message):
        prepare("multiplier", params, devices, bench)
    assert sent(bench) == before


def test_vmm_refuses_wrong_weights_and_cells(bench):
    with pytest.raises(ParameterError, match="weights needs 3"):
        prepare("vmm", {"weights": (1e-5, 2e-5)}, UNIT, bench)
    with pytest.raises(ParameterError, match="one column"):
        prepare("vmm", {}, ["A1-R1C1", "A1-R1C2", "A1-R1C3"], bench)


def test_group_units_names_units_in_order():
    units = group_units(column_units(["A1"], 2), 3, "x")
    assert [u.id for u in units] == ["U01", "U02"] and units[1].pcus == ("A1-R1C2", "A1-R2C2", "A1-R3C2")


@pytest.mark.parametrize("protocol, params", [
    ("multiplier", {"grid_points": 6, "repeats": 2}),
    ("softmax", {"vectors": 20}),
    ("vmm", {"input_sets": (200,)}),
])
def test_abort_mid_operator_keeps_points_and_leaves_the_bench_safe(runner, bench, protocol, params):
    from labpcu.runner import Points

    seen = []

    def on_event(event):
        if isinstance(event, Points):
            seen.append(event.rows)
            if len(seen) == 2:
                runner.abort("operator pressed stop")

    runner.subscribe(on_event)
    out = runner.run(protocol, params, UNIT)
    assert out.status == "aborted" and "operator pressed stop" in out.error
    assert out.n_points >= seen[1] and len(out.store.read(out.run_id)) == out.n_points
    assert_safe(bench)


def test_a_protocol_must_measure_one_device_or_run_them_together():
    from labpcu.protocols.base import PlotSpec, Protocol
    from labpcu.protocols.operator_units import COMMON_COLUMNS
    from labpcu.protocols.logdomain import LogDomainParams

    with pytest.raises(TypeError, match="measure\\(\\) .* or run\\(\\)"):
        class Nothing(Protocol):  # noqa: F841 - the class statement is the test
            name = "nothing"
            title = "does nothing"
            Params = LogDomainParams
            columns = COMMON_COLUMNS
            plot = PlotSpec(x="y_ideal", y=("y",))
