"""The operators' error budget: the bookkeeping (with a stand-in measurement), then the
physics on the simulated wafer: switching the ideality spread off must remove most of
the offset-calibrated multiplier's error, as the budget claims."""

from __future__ import annotations

import math

import pytest

from labpcu.budget import (DOCUMENT, ENTRIES, Budget, BudgetRow, budget_settings, budget_table, error_budget,
                           format_budget)
from labpcu.data.store import Store
from labpcu.report import budget_section
from labpcu.sim.physics import MECHANISMS, Physics


def fake_measure(calls: list) -> callable:
    """Error 1 % plus 2 % while the ideality spread is on, 0.5 % more at 5-bit inputs."""

    def measure(operator: str, physics: Physics, params: dict) -> float:
        calls.append((operator, physics, dict(params)))
        err = 0.01 + (0.02 if physics.on("ideality_spread") else 0.0)
        if operator == "vmm" and params.get("input_bits", 5) < 16:
            err += 0.005
        return err

    return measure


def test_each_entry_switches_its_mechanisms_off_on_the_same_settings():
    calls: list = []
    budget = error_budget(3, {"multiplier": ["A1-R1C1"], "vmm": ["A5-R1C1"]}, {"multiplier": {"grid_points": 4}},
                          operators=("multiplier", "vmm"), measure=fake_measure(calls))
    mult, vmm = budget.rows
    assert mult.baseline == pytest.approx(0.03) and mult.without["ideality spread"] == pytest.approx(0.01)
    assert mult.largest() == "ideality spread" and mult.share("ideality spread") == pytest.approx(0.02)
    # the log-domain operators take analog currents: no quantization entry; the VMM's is a parameter
    assert "input quantization" not in mult.without
    assert vmm.baseline == pytest.approx(0.035) and vmm.without["input quantization"] == pytest.approx(0.03)
    assert "M1 series drop" not in vmm.without  # the VMM's weight is M1's conductance
    for op, physics, params in calls:
        if op == "multiplier":
            assert params == {"grid_points": 4}
        off = set(physics.off)
        assert off <= set(MECHANISMS)
        assert len(off) <= 2  # one entry at a time


def test_every_entry_names_real_mechanisms():
    for entry, mechanisms in ENTRIES.items():
        assert mechanisms is None or set(mechanisms) <= set(MECHANISMS), entry


def test_budget_round_trips_and_renders(tmp_path):
    budget = Budget(0, [BudgetRow("multiplier", 0.06, {"ideality spread": 0.02, "read noise": math.nan})],
                    {"multiplier": ["A1-R1C1", "A1-R2C1", "A1-R3C1"]}, {"multiplier": {}})
    again = Budget.from_dict(budget.to_dict())
    assert again.rows[0].without["ideality spread"] == 0.02 and again.seed == 0
    header, rows = budget_table(again)
    assert header[0] == "operator" and rows[0][1] == "6.00 %"
    assert "2.00 % (+4.00 pp)" in rows[0] and rows[0][-1] == "ideality spread"
    assert format_budget(again)[0].startswith("| operator")
    store = Store(tmp_path / "wafer.h5")
    assert budget_section(store) is None
    store.write_document(DOCUMENT, budget.to_dict())
    section = budget_section(store)
    assert section is not None and section.table == rows and "seed 0" in section.paragraphs[0]


@pytest.mark.slow
def test_the_ideality_spread_sets_the_offset_calibrated_multiplier(tmp_path):
    units = ["A1-R1C1", "A1-R2C1", "A1-R3C1", "A1-R1C2", "A1-R2C2", "A1-R3C2"]
    budget = error_budget(0, {"multiplier": units}, {"multiplier": {"grid_points": 5, "repeats": 1}},
                          operators=("multiplier",), entries=("ideality spread", "read noise"), folder=tmp_path)
    row = budget.rows[0]
    assert 0.01 < row.baseline < 0.2
    # the offset calibration leaves the ideality mismatch: without it most of the error goes
    assert row.without["ideality spread"] < 0.5 * row.baseline
    # read noise is not what sets it
    assert abs(row.share("read noise")) < 0.2 * row.baseline


def test_budget_settings_take_one_crossbar_and_whole_units_from_the_demo_pools():
    quick, params = budget_settings()
    full, _ = budget_settings(full=True)
    assert len(quick["vmm"]) == len(full["vmm"]) == 3
    assert {len(quick[op]) for op in ("multiplier", "divider", "softmax")} == {9}
    assert {len(full[op]) for op in ("multiplier", "divider", "softmax")} == {30}
    assert params["multiplier"]["repeats"] == 1 and params["vmm"]["compare_bits"] == ()
