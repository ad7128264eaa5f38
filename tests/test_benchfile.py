"""Bench-file loading: the shipped simulated bench, every kind of mistake with its
line, and a fuzzer that only ever gets a BenchConfig or a BenchFileError."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labpcu.benchfile import BenchConfig, BenchFileError, default_sim_bench_path, load_bench, parse_bench
from labpcu.sim.wafer import make_wafer
from labpcu.sim.wiring import SimWiring, site_pins

DEFAULT = default_sim_bench_path().read_text()


def line_of(text: str, needle: str, nth: int = 0) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[nth]


def error_of(text: str) -> BenchFileError:
    with pytest.raises(BenchFileError) as err:
        parse_bench(text, "bench.toml")
    return err.value


def test_default_sim_bench_loads():
    cfg = load_bench()
    assert cfg.simulated and cfg.seed == 0
    assert {i.model for i in cfg.instruments.values()} == {"2612A", "3706A", "B1500A"}
    assert cfg.matrix.rows[1] == "k2612a.smua" and cfg.matrix.column_of_pin(17) == (2, 1)
    assert cfg.limits["m1"].voltage == 1.5


def test_simulator_wiring_matches_the_shipped_bench_file():
    cfg = load_bench()
    wiring = SimWiring()
    assert wiring.rows == {(s, r): t for s in cfg.matrix.slots for r, t in cfg.matrix.rows.items()}
    assert wiring.columns == cfg.matrix.columns
    assert wiring.array_pins == cfg.fixture.array
    assert wiring.quad_pins == cfg.fixture.quad


def test_site_pins_follow_the_fixture():
    wafer = make_wafer(0)
    pins = site_pins(wafer, wafer.sites["A1"])
    assert pins[1] == ("A1.WL1", "WL", "A1.WL1") and pins[6] == ("A1.BL3", "BL", "A1.BL3")
    assert pins[7] == ("A1-R1C1.CL1", "CL1", "A1-R1C1.n1") and pins[24] == ("A1-R3C3.CL2", "CL2", "A1-R3C3.n2")
    swapped = {"WL": (4, 5, 6), "BL": (1, 2, 3), "CL1": tuple(range(7, 16)), "CL2": tuple(range(16, 25))}
    assert site_pins(wafer, wafer.sites["A1"], swapped)[1][0] == "A1.BL1"
    quad = site_pins(wafer, wafer.sites["Q1"])
    assert sorted(quad) == list(range(1, 17)) and quad[8] == ("S02.CL2", "CL2", "S02.n2")


def test_simulated_bench_uses_the_bench_files_fixture(tmp_path):
    """A bench file with another probe card: the simulator's pads follow the file."""
    from labpcu.bench import Bench

    text = DEFAULT.replace('WL = "1-3"', 'WL = "4-6"').replace('BL = "4-6"', 'BL = "1-3"')
    path = tmp_path / "bench.toml"
    path.write_text(text)
    with Bench.from_file(path) as bench:
        bench.move_to("A1")
        assert bench.pads()["A1.WL1"].pin == 4
        assert bench.sim.bench.pins()[4][0] == "A1.WL1"


def test_unknown_model_names_the_line():
    text = DEFAULT.replace('model = "B1500A"', 'model = "B1505X"')
    err = error_of(text)
    assert len(err.problems) == 1
    msg = str(err)
    assert msg.startswith(f"bench.toml:{line_of(text, 'B1505X')}: instruments.b1500a.model: unknown model 'B1505X'")
    assert "\n" not in msg


def test_column_wired_twice():
    text = DEFAULT.replace('slot = 2\ncolumns = "1-16"\npins = "17-32"', 'slot = 1\ncolumns = "16"\npins = [40]')
    text = text.replace('columns = "16"', "columns = [16]")
    err = error_of(text)
    assert "column 16 of slot 1 is wired twice" in str(err)
    assert err.problems[0].line == line_of(text, "columns = [16]")


def test_pin_on_two_columns():
    text = DEFAULT.replace('pins = "17-32"', 'pins = "16-31"')
    err = error_of(text)
    assert "pin 16 is on two columns" in str(err)
    assert err.problems[0].line == line_of(text, 'pins = "16-31"')


def test_limit_above_the_instrument_range():
    text = DEFAULT.replace("max_voltage = 20.0", "max_voltage = 250.0")
    err = error_of(text)
    assert "250 V is above the B1500A's range (100 V)" in str(err)
    assert err.problems[0].line == line_of(text, "max_voltage = 250.0")
    text = DEFAULT.replace("voltage = 2.0\ncurrent = 0.02", "voltage = 500.0\ncurrent = 0.02")
    assert "above every wired SMU's range" in str(error_of(text))


def test_malformed_toml_gives_the_parser_line():
    text = DEFAULT.replace('name = "Simulated PCU bench"', 'name = "Simulated PCU bench')
    err = error_of(text)
    assert err.problems[0].line == line_of(text, 'name = "Simulated PCU bench')
    assert "malformed TOML" in str(err)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(BenchFileError) as err:
        load_bench(tmp_path / "nope.toml")
    assert str(err.value).endswith("nope.toml: bench file not found")


def test_every_mistake_is_reported_at_once():
    text = (DEFAULT.replace('model = "3706A"', 'model = "3707Z"')
            .replace('3 = "b1500a.1"', '3 = "b1500a.11"')
            .replace("current = 0.001", "current = -1")
            .replace('CL1 = "7-15"', 'CL1 = "7-14"'))
    err = error_of(text)
    wheres = {p.where for p in err.problems}
    assert {"instruments.k3706a.model", "matrix.rows.3", "limits.m1.current", "fixture.array.CL1"} <= wheres
    assert all(p.line is not None for p in err.problems)


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('address = "sim"', 'address = ""', "empty"),
        ("timeout = 5.0", "timeout = -1", "positive number"),
        ("timeout = 5.0", 'timeout = "fast"', "must be a whole number or a number"),
        ('1 = "k2612a.smua"', '9 = "k2612a.smua"', "matrix rows are 1..6"),
        ('2 = "k2612a.smub"', '2 = "k2612a.smua"', "already on row 1"),
        ('1 = "k2612a.smua"', '1 = "k2612a.smuc"', "no source channel 'smuc'"),
        ('1 = "k2612a.smua"', '1 = "keithley.smua"', "no instrument 'keithley'"),
        ('instrument = "k3706a"', 'instrument = "k2612a"', "not a switch matrix"),
        ("slots = [1, 2]", "slots = [1, 7]", "slot must be a whole number 1..6"),
        ("forbidden = []", 'forbidden = ["1199"]', "not a crosspoint"),
        ('pins = "1-16"        # WL, BL', 'pins = "1-15"        # WL, BL', "16 pin numbers"),
        ("[limits.m2]", "[limits.m3]", "unknown field"),
        ("seed = 0 ", "seed = -3 ", "must be >= 0"),
    ],
)
def test_each_mistake_has_a_clear_message(old, new, fragment):
    assert old in DEFAULT, old
    err = error_of(DEFAULT.replace(old, new, 1))
    assert any(fragment in p.message for p in err.problems), str(err)
    assert all(re.match(r"^bench\.toml(:\d+)?: ", line) for line in str(err).splitlines())


# ------------------------------------------------------------------ fuzzing
toml_values = st.one_of(
    st.integers(-10, 100).map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=8).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
    st.just("true"), st.just("[]"), st.just("[1, 2]"), st.just('"1-3"'), st.just("{}"),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(line=st.integers(0, len(DEFAULT.splitlines()) - 1), value=toml_values)
def test_fuzz_replacing_any_value(line, value):
    lines = DEFAULT.splitlines()
    if "=" in lines[line] and not lines[line].lstrip().startswith("#"):
        key = lines[line].split("=", 1)[0]
        lines[line] = f"{key}= {value}"
    _load_or_clear_error("\n".join(lines))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_fuzz_arbitrary_text(text):
    _load_or_clear_error(text)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, len(DEFAULT)), junk=st.text(max_size=20))
def test_fuzz_truncated_and_spliced(cut, junk):
    _load_or_clear_error(DEFAULT[:cut] + junk)


def _load_or_clear_error(text: str) -> None:
    try:
        cfg = parse_bench(text, "fuzz.toml")
    except BenchFileError as err:
        assert err.problems
        for line in str(err).splitlines():
            assert line.startswith("fuzz.toml")
    else:
        assert isinstance(cfg, BenchConfig)
