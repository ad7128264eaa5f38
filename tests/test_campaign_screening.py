"""Campaigns that screen first and then use only working devices: ``working_only``
and ``count`` in campaign files, whole units for unit protocols, spares, and the
devices left out reported with the reason (labpcu.campaign, labpcu.characterize)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labpcu.bench import Bench
from labpcu.campaign.engine import CampaignEngine, DevicesExcluded, campaign_runs, step_selection
from labpcu.campaign.loader import CampaignError, parse_campaign
from labpcu.campaign.validate import validate
from labpcu.characterize import ACTIVATION_POOL, STEPS, as_campaign
from labpcu.data.store import Store

# seed 1 draws S18 open and A5-R1C1 stuck off (tests/test_screen.py checks the screen finds them)
SCREEN_THEN_USE = """\
[campaign]
name = "screen then use"
store = "w.h5"
seed = 1

[[step]]
name = "screen"
protocol = "screen"
devices = ["S17", "S18", "S19", "S20", "A5"]

[[step]]
name = "diodes"
protocol = "iv_sweep"
devices = ["S17", "S18", "S19", "S20"]
params = { points = 11 }
working_only = true
count = 2

[[step]]
name = "crossbar"
protocol = "vmm"
devices = ["A5-R1C1", "A5-R2C1", "A5-R3C1", "A5-R1C2", "A5-R2C2", "A5-R3C2", "A5-R1C3", "A5-R2C3", "A5-R3C3"]
working_only = true
count = 1
"""


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """The campaign run up to (and with) its diode step; the crossbar is left for the
    selection tests (a VMM run is long)."""
    tmp = tmp_path_factory.mktemp("screened")
    path = tmp / "c.toml"
    path.write_text(SCREEN_THEN_USE)
    full = parse_campaign(SCREEN_THEN_USE, str(path))
    c = parse_campaign(SCREEN_THEN_USE.split("[[step]]\nname = \"crossbar\"")[0], str(path))
    events: list = []
    with Bench.from_file(seed=1) as bench:
        engine = CampaignEngine(c, bench, Store(c.store_path()), handle_sigint=False)
        engine.subscribe(events.append)
        out = engine.run()
    return full, out, events, Store(c.store_path())


def test_a_step_takes_only_the_first_working_devices(screened):
    c, out, _, store = screened
    assert out.ok, out.reason
    done = campaign_runs(c, store)
    assert sorted(k for k in done if k.startswith("diodes/")) == ["diodes/S17", "diodes/S19"]
    assert out.excluded["diodes"]["S18"].startswith("screened open")
    assert out.excluded["diodes"]["S20"].startswith("a spare")


def test_the_devices_left_out_are_reported_and_stored(screened):
    c, out, events, store = screened
    ev = [e for e in events if isinstance(e, DevicesExcluded) and e.step == "diodes"]
    assert len(ev) == 1 and set(ev[0].excluded) == {"S18", "S20"}
    info = store.info(campaign_runs(c, store)["diodes/S17"].run_id)
    assert info.metadata["campaign"]["excluded"]["S18"].startswith("screened open")


def test_a_unit_protocol_leaves_out_whole_units(screened):
    c, _, _, store = screened
    with Bench.offline() as offline:
        devices, excluded = step_selection(c, c.step("crossbar"), campaign_runs(c, store), store, offline)
    assert devices == ["A5-R1C2", "A5-R2C2", "A5-R3C2"]  # column 1 has A5-R1C1 stuck off
    assert excluded["A5-R1C1"].startswith("screened m1_stuck_off")
    assert "A5-R1C1" in excluded["A5-R2C1"]  # left out with its unit
    assert all(excluded[d].startswith("a spare") for d in ("A5-R1C3", "A5-R2C3", "A5-R3C3"))


def test_without_working_only_every_listed_device_is_used(screened):
    c, _, _, store = screened
    step = c.step("diodes")
    plain = type(step)(**{**step.__dict__, "working_only": False, "count": None})
    with Bench.offline() as offline:
        devices, excluded = step_selection(c, plain, campaign_runs(c, store), store, offline)
    assert devices == ["S17", "S18", "S19", "S20"] and excluded == {}


def _problems(text: str) -> list[str]:
    with pytest.raises(CampaignError) as err:
        parse_campaign(text, "c.toml")
    return err.value.problems


def test_working_only_needs_a_screen_step_before_it():
    text = SCREEN_THEN_USE.replace('protocol = "screen"', 'protocol = "iv_sweep"')
    problems = _problems(text)
    assert any("c.toml:16:" in p and "working_only needs an earlier step with protocol \"screen\"" in p
               for p in problems), problems


@pytest.mark.parametrize("value", ["0", "1.5", "\"two\"", "true"])
def test_count_must_be_a_positive_whole_number(value):
    problems = _problems(SCREEN_THEN_USE.replace("count = 2", f"count = {value}"))
    assert any("c.toml:17:" in p and "count must be a whole number >= 1" in p for p in problems), problems


def test_working_only_must_be_a_boolean():
    problems = _problems(SCREEN_THEN_USE.replace("working_only = true\ncount = 2", "working_only = 1\ncount = 2"))
    assert any("working_only must be true or false" in p for p in problems), problems


def test_a_count_beyond_the_list_is_refused_offline(tmp_path):
    c = parse_campaign(SCREEN_THEN_USE.replace("count = 1", "count = 4"), str(tmp_path / "c.toml"))
    with Bench.offline() as offline, pytest.raises(CampaignError) as err:
        validate(c, offline)
    assert any("count = 4 but the list has only 3 units" in p for p in err.value.problems), err.value.problems


def test_the_characterization_screens_every_pool_first_and_validates():
    plan = as_campaign()
    assert plan.steps[0].protocol == "screen" and not plan.steps[0].working_only
    screened = set(plan.steps[0].devices)
    for step in plan.steps[1:]:
        assert step.working_only and step.count is not None, step.name
        assert set(step.devices) <= screened, step.name
    # each pool holds more than it needs: a defect costs a spare
    for s in STEPS[1:]:
        per = 3 if s.protocol in ("vmm", "multiplier", "divider", "softmax", "activation") else 1
        assert len(s.devices) // per > s.count, s.label
    with Bench.offline() as offline:
        validate(plan, offline)


def test_activation_spares_keep_each_unit_in_its_quad():
    units = [ACTIVATION_POOL[k:k + 3] for k in range(0, len(ACTIVATION_POOL), 3)]
    for unit in units:
        quads = {(int(d[1:]) - 1) // 4 for d in unit}
        assert len(quads) == 1 and len(set(unit)) == 3, unit


def test_example_campaign_files_use_the_screening(tmp_path):
    source = Path(__file__).resolve().parent.parent / "examples" / "campaigns"
    for name in ("screening.toml", "program_and_retention.toml"):
        c = parse_campaign((source / name).read_text(), str(tmp_path / name))
        assert c.steps[0].protocol == "screen", name
        with Bench.offline() as offline:
            validate(c, offline)
