"""The screen protocol: each defect injected on the simulated wafer is classified as
what it is; a wafer without defects screens 100 % working; screening leaves M1 as it
found it and M2 formed with a strong filament."""

from __future__ import annotations

import pytest

from labpcu.bench import Bench
from labpcu.protocols.params import ParameterError
from labpcu.protocols.screen import CLASSES, ScreenParams
from labpcu.runner import Runner, prepare
from labpcu.sim.defects import inject_defect
from labpcu.sim.physics import Physics
from simhelpers import assert_safe

#: device -> injected defect (None: left working); singles and array cells
INJECTED = {
    "S01": "open", "S02": "short", "S03": "m1_stuck_on", "S04": "m1_stuck_off", "S05": "m2_stuck_off",
    "S06": None,
    "A2-R1C1": "open", "A2-R1C2": "short", "A2-R2C2": "m1_stuck_on", "A2-R3C1": "m1_stuck_off",
    "A2-R3C3": "m2_stuck_off", "A2-R2C3": None,
}


def _screen(bench: Bench, tmp_path, devices, **params):
    out = Runner(bench, tmp_path / "screen.h5", handle_sigint=False).run("screen", params, list(devices))
    assert_safe(bench)
    assert out.status == "completed", out.error
    return out.results


@pytest.fixture
def clean_bench():
    b = Bench.from_file(seed=0, physics=Physics().without("defects"))
    yield b
    b.close()


def test_screen_classifies_each_injected_defect(clean_bench, tmp_path):
    sim = clean_bench.sim.bench
    for device, kind in INJECTED.items():
        if kind:
            inject_defect(sim.wafer.device(device), kind)
    sim.move_to(sim.site.id)  # rebuild the circuit with the defects
    res = _screen(clean_bench, tmp_path, INJECTED)
    got = {d: r["classification"] for d, r in res["devices"].items()}
    assert got == {d: k or "working" for d, k in INJECTED.items()}
    assert res["counts"]["working"] == 2 and res["screened"] == len(INJECTED)
    assert res["yield"] == pytest.approx(2 / len(INJECTED))
    assert sum(res["counts"].values()) == len(INJECTED) and set(res["counts"]) == set(CLASSES)
    for d, r in res["devices"].items():
        assert bool(r["reason"]) == (INJECTED[d] is not None)


def test_wafer_without_defects_screens_all_working(clean_bench, tmp_path):
    devices = [*clean_bench.layout.sites["Q3"].devices, *clean_bench.layout.sites["A5"].devices]
    res = _screen(clean_bench, tmp_path, devices)
    assert res["yield"] == 1.0 and res["working"] == len(devices)
    assert res["by_class"] == {"working": devices}


def test_screening_leaves_working_devices_as_found(clean_bench, tmp_path):
    sim = clean_bench.sim.bench
    devices = ["S09", "S10", "A3-R2C2"]
    before = {d: sim.wafer.device(d).m1.conductance(sim.clock.now()) for d in devices}
    res = _screen(clean_bench, tmp_path, devices)
    p = ScreenParams()
    for d in devices:
        r = res["devices"][d]
        assert r["classification"] == "working"
        # the nudge moved M1 (that is how a working one is told from a stuck one) ...
        assert abs(r["g_m1_up"] / r["g_m1"] - 1) >= p.min_move
        # ... and it is back within the restore tolerance
        g = sim.wafer.device(d).m1.conductance(sim.clock.now())
        assert g == pytest.approx(before[d], rel=p.restore_tolerance * 1.5)
        # M2 switched both ways in the check, and is left formed and set with the
        # filament of a 1 mA set (R_on ≈ k_on / 1 mA), as the operator modes want it
        m2 = sim.wafer.device(d).m2
        assert r["m2_v_set"] > 0 and m2.lrs and m2.formed
        assert m2.resistance(sim.clock.now()) < 2 * m2.p.k_on / p.m2_compliance


def test_drawn_defects_on_the_default_wafer_are_found(tmp_path):
    with Bench.from_file(seed=1) as bench:  # seed 1 draws A5-R1C1 stuck off and S18 open
        truth = {d: p.defect or "working" for d, p in bench.sim.bench.wafer.devices.items()}
        devices = ["A5-R1C1", "A5-R2C1", "S17", "S18"]
        assert {truth[d] for d in devices} == {"working", "m1_stuck_off", "open"}
        res = _screen(bench, tmp_path, devices)
        assert {d: r["classification"] for d, r in res["devices"].items()} == {d: truth[d] for d in devices}


def test_nudge_must_exceed_the_read():
    with Bench.from_file(seed=0) as bench, pytest.raises(ParameterError, match="v_nudge"):
        prepare("screen", {"v_nudge": 0.01, "v_read": 0.05}, ["S01"], bench)
