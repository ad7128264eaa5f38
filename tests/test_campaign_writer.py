"""labpcu.campaign.writer: a Campaign written as TOML reads back (parse_campaign) to the
same campaign, for generated campaigns and for the example files."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labpcu.campaign.loader import load_campaign, parse_campaign
from labpcu.campaign.plan import Campaign, Selection, Step
from labpcu.campaign.writer import campaign_to_toml, loaded_value, toml_value

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "campaigns"
PROTOCOLS = ("iv_sweep", "ispp", "retention", "hysteresis", "vmm")


def same(a: Campaign, b: Campaign) -> None:
    """The fields that matter: the campaign's own and each step's definition."""
    assert (a.name, a.store, a.bench, a.seed) == (b.name, b.store, b.bench, b.seed)
    assert dict(a.sample) == dict(b.sample)
    assert [s.name for s in a.steps] == [s.name for s in b.steps]
    for x, y in zip(a.steps, b.steps):
        assert (x.protocol, x.devices, x.repeat, x.on_fail, x.together) == (y.protocol, y.devices, y.repeat,
                                                                             y.on_fail, y.together)
        assert x.fingerprint() == y.fingerprint(), (x, y)
        assert dict(x.params) == dict(y.params)


# ------------------------------------------------------------------ strategies
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
names = texts.filter(lambda t: t.strip() != "" and "/" not in t)
floats = st.floats(allow_nan=False)
ints = st.integers(-(2**63), 2**63 - 1)
scalars = st.one_of(st.booleans(), ints, floats, texts)
# values in the loader's form: lists of numbers/booleans are tuples, lists of texts are one comma text
lists = st.lists(st.one_of(st.booleans(), ints, floats), max_size=4).map(tuple)
param_values = st.one_of(scalars, lists, st.lists(texts.filter(bool), min_size=1, max_size=3).map(loaded_value))
keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)
device_ids = st.lists(names.map(str.strip), min_size=1, max_size=4).map(tuple)


@st.composite
def campaigns(draw: st.DrawFn) -> Campaign:
    count = draw(st.integers(1, 4))
    step_names = draw(st.lists(names.map(str.strip).filter(bool), min_size=count, max_size=count, unique=True))
    steps = []
    for i, name in enumerate(step_names):
        if i and draw(st.booleans()):
            devices = Selection(step_names[draw(st.integers(0, i - 1))],
                                draw(st.sampled_from(["status == 'completed'", "rectification_ratio > 1e3",
                                                      "passed and not failed", 'status == "failed"'])))
        else:
            devices = draw(device_ids)
        params = draw(st.dictionaries(keys, param_values, max_size=4))
        grid_keys = draw(st.lists(keys.filter(lambda k: k not in params), max_size=2, unique=True))
        grid = {k: draw(st.lists(scalars.map(loaded_value), min_size=1, max_size=3)) for k in grid_keys}
        steps.append(Step(name, draw(st.sampled_from(PROTOCOLS)), devices, params=params, grid=grid,
                          repeat=draw(st.integers(1, 5)), on_fail=draw(st.sampled_from(["stop", "continue"])),
                          together=draw(st.sampled_from([None, True, False]))))
    return Campaign(name=draw(names), steps=tuple(steps), store=draw(st.none() | names), bench=draw(st.none() | names),
                    seed=draw(st.none() | st.integers(0, 2**63 - 1)),
                    sample=draw(st.dictionaries(keys, st.one_of(scalars, st.lists(ints, max_size=3)), max_size=4)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(campaigns())
def test_round_trip_generated(campaign: Campaign) -> None:
    text = campaign_to_toml(campaign)
    back = parse_campaign(text, "generated.toml")
    same(campaign, back)
    assert campaign_to_toml(back) == text  # and writing it again changes nothing


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_round_trip_examples(path: Path) -> None:
    campaign = load_campaign(path)
    same(campaign, parse_campaign(campaign_to_toml(campaign), str(path)))


def test_written_text_is_plain_toml() -> None:
    campaign = Campaign("screen W7", (
        Step("screen", "iv_sweep", ("S01", "Q2"), params={"points": 41, "stop": 1.2, "spacing": "log"}),
        Step("program", "ispp", Selection("screen", "rectification_ratio > 1e3"), params={"targets": "20u,50u"},
             grid={"v_read": [0.01, 0.02]}, on_fail="continue", repeat=2),
    ), store="w7.h5", sample={"wafer": "W7", "operator": "ana"})
    text = campaign_to_toml(campaign)
    doc = tomllib.loads(text)
    assert doc["campaign"] == {"name": "screen W7", "store": "w7.h5"}
    assert doc["sample"] == {"wafer": "W7", "operator": "ana"}
    assert doc["step"][0] == {"name": "screen", "protocol": "iv_sweep", "devices": ["S01", "Q2"],
                              "params": {"points": 41, "stop": 1.2, "spacing": "log"}}
    assert doc["step"][1]["devices"] == {"from": "screen", "where": "rectification_ratio > 1e3"}
    assert doc["step"][1]["grid"] == {"v_read": [0.01, 0.02]}
    assert (doc["step"][1]["repeat"], doc["step"][1]["on_fail"]) == (2, "continue")
    assert "together" not in doc["step"][0]  # defaults are left out


def test_values() -> None:
    assert toml_value(2e-05) == "2e-05" and tomllib.loads(f"x = {toml_value(2e-05)}")["x"] == 2e-05
    assert toml_value(float("-inf")) == "-inf" and math.isnan(tomllib.loads(f"x = {toml_value(math.nan)}")["x"])
    assert toml_value((1, 2.5, True)) == "[1, 2.5, true]"
    tricky = 'a "q" \\ \n\t\x7f é\x00'
    assert tomllib.loads("x = " + toml_value(tricky))["x"] == tricky
    assert toml_value({"a b": 1}) == '{ "a b" = 1 }'
    with pytest.raises(ValueError, match="no empty value"):
        toml_value(None, "step 'x' params.compliance")
    with pytest.raises(ValueError, match="64-bit"):
        toml_value(2**64)
    assert loaded_value(("20u", "50u")) == "20u,50u" and loaded_value([1, 2]) == (1, 2) and loaded_value(()) == ()
