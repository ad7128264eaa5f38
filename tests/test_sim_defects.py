"""Fabrication defects of the simulated wafer: how many, where, and what each does to
the circuit (labpcu.sim.defects)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from labpcu.sim import defects
from labpcu.sim.bench import SimBench
from labpcu.sim.defects import DEFECTS, G_OPEN, R_SHORT, draw_defects, inject_defect
from labpcu.sim.physics import Physics
from labpcu.sim.wafer import WAFER_DIAMETER_MM, make_wafer
from simhelpers import apply, pulse, wire

RADIUS = WAFER_DIAMETER_MM / 2
POSITIONS = {d: (p.x_mm, p.y_mm) for d, p in make_wafer(0, Physics().without("defects")).devices.items()}
N_SEEDS = 300


def _draws(rate: float = 0.04, seeds: int = N_SEEDS) -> list[dict[str, str]]:
    return [draw_defects(POSITIONS, s, rate, RADIUS) for s in range(seeds)]


# ------------------------------------------------------------------ the draw
def test_mean_defect_fraction_is_the_rate():
    n = len(POSITIONS) * N_SEEDS
    found = sum(len(d) for d in _draws(0.04))
    sd = math.sqrt(n * 0.04 * 0.96)
    assert abs(found - 0.04 * n) < 4 * sd, f"{found} defects on {N_SEEDS} wafers, expected {0.04 * n:.0f} ± {sd:.0f}"


def test_each_kind_occurs_about_as_often_as_its_weight():
    kinds = [k for d in _draws(0.1) for k in d.values()]
    total = sum(defects.KIND_WEIGHTS.values())
    for kind, w in defects.KIND_WEIGHTS.items():
        share = kinds.count(kind) / len(kinds)
        assert abs(share - w / total) < 0.04, f"{kind}: {share:.3f} of defects, weight {w / total:.3f}"


def test_defects_are_denser_at_the_edge():
    r = {d: math.hypot(*xy) for d, xy in POSITIONS.items()}
    edge = [d for d in r if r[d] > 35]
    centre = [d for d in r if r[d] < 5]
    draws = _draws(0.1)
    rate_edge = sum(d in w for w in draws for d in edge) / (len(edge) * len(draws))
    rate_centre = sum(d in w for w in draws for d in centre) / (len(centre) * len(draws))
    assert rate_edge > 1.5 * rate_centre, (rate_edge, rate_centre)


def _neighbour_pairs(draws: list[dict[str, str]]) -> int:
    pairs = 0
    for w in draws:
        ids = list(w)
        for i, a in enumerate(ids):
            pairs += sum(math.dist(POSITIONS[a], POSITIONS[b]) <= defects.CLUSTER_RADIUS_MM for b in ids[i + 1:])
    return pairs


def test_defects_cluster(monkeypatch):
    clustered = _neighbour_pairs(_draws(0.06))
    monkeypatch.setattr(defects, "CLUSTER_SHARE", 0.0)
    scattered = _neighbour_pairs(_draws(0.06))
    assert clustered > 2 * scattered, (clustered, scattered)


def test_draw_is_seeded_and_seeds_differ():
    assert draw_defects(POSITIONS, 7, 0.04, RADIUS) == draw_defects(POSITIONS, 7, 0.04, RADIUS)
    assert len({tuple(sorted(d.items())) for d in _draws(0.04, 20)}) > 15


def test_switching_defects_off_leaves_every_other_parameter_unchanged():
    on, off = make_wafer(3), make_wafer(3, Physics().without("defects"))
    bad = {d for d, p in on.devices.items() if p.defect}
    assert bad and not any(p.defect for p in off.devices.values())
    for did, a in on.devices.items():
        b = off.devices[did]
        assert (a.d1, a.d2) == (b.d1, b.d2)  # drawn diodes are kept; the defect acts on what the circuit sees
        if did not in bad:
            assert dataclasses.asdict(a.m1) == dataclasses.asdict(b.m1)
            assert dataclasses.asdict(a.m2) == dataclasses.asdict(b.m2)


def test_rate_zero_means_no_defects():
    wafer = make_wafer(3, Physics(defect_rate=0.0))
    assert not any(p.defect for p in wafer.devices.values())


def test_unknown_kind_is_refused():
    wafer = make_wafer(0, Physics().without("defects"))
    with pytest.raises(ValueError, match="unknown defect 'cracked'"):
        inject_defect(wafer.devices["S01"], "cracked")


# ------------------------------------------------------------ in the circuit
def _bench(kind: str | None, device: str = "S01") -> SimBench:
    """Textbook physics (M1 at its own conductance) but for the injected defect: the
    element's own law is visible."""
    physics = Physics().only("m1_series")
    wafer = make_wafer(0, physics)
    if kind is not None:
        inject_defect(wafer.devices[device], kind)
    bench = SimBench(seed=0, wafer=wafer, physics=physics)
    bench.move_to_device(device)
    return bench


def test_open_d1_passes_only_its_femtosiemens():
    bench = _bench("open")
    wire(bench, "S01.WL", "S01.CL1")
    for v in (0.5, 1.0, -1.0):
        assert abs(apply(bench, v)) < 2 * G_OPEN * abs(v) + 1e-15
    good = _bench(None)
    wire(good, "S01.WL", "S01.CL1")
    assert apply(good, 0.5) > 1e-7  # a working D1 passes a forward current


def test_shorted_d1_is_ohmic_at_ten_ohms():
    bench = _bench("short")
    wire(bench, "S01.WL", "S01.CL1")
    for v in (0.05, -0.05):
        i = apply(bench, v, limit=0.1)
        # the short in parallel with the diode's own junction (off at 50 mV)
        assert i == pytest.approx(v / R_SHORT, rel=0.02)


def _m1_g(bench: SimBench) -> float:
    return apply(bench, 0.01) / 0.01


@pytest.mark.parametrize("kind", ["m1_stuck_on", "m1_stuck_off"])
def test_stuck_m1_ignores_programming_pulses(kind):
    bench = _bench(kind)
    m1 = bench.wafer.device("S01").m1
    wire(bench, "S01.CL1", "S01.CL2")
    g0 = _m1_g(bench)
    # at its end of the range (less the slow retention drift of an old state)
    assert g0 == pytest.approx(m1.p.g_max if kind == "m1_stuck_on" else m1.p.g_min, rel=0.05)
    for v in (1.0, -1.0, 1.0):
        pulse(bench, v, 0.05)
        assert _m1_g(bench) == pytest.approx(g0, rel=1e-6)
    good = _bench(None)
    wire(good, "S01.CL1", "S01.CL2")
    g = _m1_g(good)
    pulse(good, 1.0, 0.05)
    assert _m1_g(good) > 1.5 * g  # the same pulse moves a working M1


def test_m2_stuck_off_never_forms():
    bench = _bench("m2_stuck_off")
    wire(bench, "S01.CL2", "S01.BL")
    apply(bench, 1.5, limit=1e-3)
    assert not bench.wafer.device("S01").m2.lrs
    assert apply(bench, 0.1) < 1e-9  # still the off state
    good = _bench(None)
    wire(good, "S01.CL2", "S01.BL")
    apply(good, 1.5, limit=1e-3)
    assert good.wafer.device("S01").m2.lrs


def test_every_defect_kind_is_described():
    assert set(DEFECTS) == set(defects.KIND_WEIGHTS)
    assert np.isclose(sum(defects.KIND_WEIGHTS.values()), 1.0)
