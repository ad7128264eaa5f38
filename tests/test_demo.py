"""`labpcu demo`: the full characterization of the simulated wafer, judged against every
band of pcu.md on the default seed and on two others (the acceptance test of the
physics model and of the operator protocols)."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from labpcu.bands import BANDS
from labpcu.characterize import STEPS
from labpcu.cli import main
from labpcu.data.codebook_io import load_codebook
from labpcu.data.lookup import lookup
from labpcu.data.store import Store
from labpcu.report import collect_figures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[0, 1, 2], ids=lambda s: f"seed{s}")
def demo(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"demo{request.param}")
    code = main(["demo", "--seed", str(request.param), "--out", str(out)])
    return request.param, out, code


def _rows(out):
    """The report's rows, from the demo's store: its runs are the campaign's steps, in order."""
    store = Store(out / "wafer.h5")
    run_ids = store.run_ids()
    assert [store.info(r).protocol for r in run_ids] == [s.protocol for s in STEPS]
    roles = {step.role: run_id for step, run_id in zip(STEPS, run_ids) if step.role}
    return {r.key: r for r in collect_figures(store, roles)}


def test_every_band_of_pcu_md_is_met(demo):
    seed, out, code = demo
    rows = _rows(out)
    failed = {k: (rows[k].measured_text, rows[k].note) for k in (b.key for b in BANDS) if rows[k].passed is not True}
    assert not failed, f"seed {seed}: {failed}"
    assert code == 0
    # the operator figures, in the bands the issue names (fractions)
    for key, lo, hi in (("vmm_error", 0.005, 0.011), ("divider_error", 0.040, 0.075),
                        ("multiplier_error", 0.050, 0.085), ("softmax_error", 0.009, 0.018),
                        ("weight_sigma", 0.020, 0.035)):
        assert lo <= rows[key].measured <= hi, (seed, key, rows[key].measured)


def test_demo_writes_report_and_codebook_that_load_alone(demo):
    seed, out, _ = demo
    md = (out / "report" / "report.md").read_text()
    assert "Multiplier" in md and "pass" in md and "FAIL" not in md.split("## ")[1]
    assert (out / "report" / "report.html").read_text().startswith("<!DOCTYPE html>")
    pngs = list((out / "report").glob("*.png"))
    assert len(pngs) >= 10 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with h5py.File(out / "codebook" / "codebook.h5", "r") as f:
        ops = set(f["operators"].keys())
        assert f.attrs["schema"] == "labpcu-codebook"
    assert {"multiplier", "divider", "softmax", "vmm", "sigmoid", "gelu", "softplus"} <= ops
    manifest = json.loads((out / "codebook" / "codebook" / "manifest.json").read_text())
    assert "multiplier" in json.dumps(manifest)
    np_alone = np.load(out / "codebook" / "codebook" / "op-multiplier.npz", allow_pickle=False)
    assert np_alone["mean"].shape == (10, 10)
    cb = load_codebook(out / "codebook" / "codebook.h5")
    mult = cb["multiplier"]
    grid = mult.axes
    x1, x2 = np.meshgrid(grid[0], grid[1], indexing="ij")
    np.testing.assert_allclose(lookup(mult, x1.ravel(), x2.ravel(), mode="mean"), mult.mean.ravel(), rtol=1e-12)
    assert math.isclose(cb.weight_noise.sigma, _rows(out)["weight_sigma"].measured, rel_tol=1e-9)


def test_bad_seed_is_a_one_line_usage_error(capsys):
    assert main(["demo", "--seed", "minus-one"]) == 2
    err = capsys.readouterr().err
    assert "seed must be a whole number" in err and len(err.strip().splitlines()) == 1


def test_the_screening_comes_first_and_no_defective_pcu_is_used(demo):
    from labpcu.sim.wafer import make_wafer

    seed, out, _ = demo
    store = Store(out / "wafer.h5")
    run_ids = store.run_ids()
    screen = store.info(run_ids[0])
    assert screen.protocol == "screen"
    found = {d: r["classification"] for d, r in screen.results["devices"].items()}
    truth = {d: p.defect or "working" for d, p in make_wafer(seed).devices.items()}
    assert found == {d: truth[d] for d in found}  # every drawn defect found, no working PCU condemned
    bad = {d for d, c in found.items() if c != "working"}
    for rid in run_ids[1:]:
        info = store.info(rid)
        assert not bad & set(info.devices), (rid, bad & set(info.devices))
        assert set(info.metadata["campaign"].get("excluded", {})) >= bad & set(
            next(s for s in STEPS if s.label == info.metadata["campaign"]["step"]).devices)
    assert _rows(out)["screen_yield"].measured == screen.results["yield"]
