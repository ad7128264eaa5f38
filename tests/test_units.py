"""Issue 16, units: every spelling an operator types (and labpcu prints) parses, in
one parser (labpcu.units) that parameters, the command line and campaign files share;
anything else is one line naming the unit expected and how to write it."""

from __future__ import annotations

import math

import pytest

from labpcu import cli
from labpcu.protocols import registry
from labpcu.protocols.params import ParameterError
from labpcu.units import format_quantity, parse_quantity


@pytest.mark.parametrize("text, unit, value", [
    # the list
    ("1 h", "s", 3600.0), ("60 min", "s", 3600.0), ("1.5 hours", "s", 5400.0), ("3 ms", "s", 3e-3),
    ("20 µs", "s", 20e-6), ("20 μs", "s", 20e-6), ("20 us", "s", 20e-6), ("10 kΩ", "Ohm", 10e3),
    ("10 kΩ", "Ohm", 10e3), ("10 kohm", "Ohm", 10e3), ("10 kOhm", "Ohm", 10e3), ("1e-3 A", "A", 1e-3),
    ("50 µS", "S", 50e-6), ("50uS", "S", 50e-6), ("2 mV", "V", 2e-3), ("1 kV", "V", 1e3),
    # more spellings of the same units
    ("2 hr", "s", 7200.0), ("90 s", "s", 90.0), ("5 sec", "s", 5.0), ("1 minute", "s", 60.0), ("2 days", "s", 172800.0),
    ("1 MΩ", "Ohm", 1e6), ("470 Ω", "Ohm", 470.0), ("470 ohm", "Ohm", 470.0), ("3 volts", "V", 3.0),
    ("3 mA", "A", 3e-3), ("1 mS", "S", 1e-3), ("5 siemens", "S", 5.0), ("300 K", "K", 300.0), ("5 %", "%", 5.0),
    ("-500mV", "V", -0.5), ("20m", "s", 20e-3), ("1e3k", "", 1e6),
])
def test_every_spelling_parses(text, unit, value):
    assert parse_quantity(text, unit) == value  # exactly: a prefix divides by a power of ten


def test_what_labpcu_prints_reads_back():
    """Resistances shown as kΩ (reports, messages) or kOhm (format_quantity) are accepted."""
    for value in (10e3, 4.7e6, 470.0):
        for text in (format_quantity(value, "Ohm"), format_quantity(value, "Ohm").replace("Ohm", "Ω")):
            assert math.isclose(parse_quantity(text, "Ohm"), value, rel_tol=1e-12), text


@pytest.mark.parametrize("text, unit, words", [
    ("20 parsecs", "s", ["'20 parsecs': unknown unit 'parsecs' for a time in 's'", "use s, ms, µs, min, h"]),
    ("3 A", "s", ["expected unit 's' (a time), got 'A' (a current)"]),
    ("10 kΩ", "V", ["expected unit 'V' (a voltage), got 'kΩ' (a resistance)", "use V, mV, µV, kV"]),
    ("1 h", "V", ["got 'h' (a time)"]),
    ("50 ms", "S", ["expected unit 'S' (a conductance), got 'ms' (a time)"]),  # case matters: ms is not mS
    ("2 MS", "s", ["got 'MS' (a conductance)"]),
    ("1 kohms", "Ohm", ["unknown unit 'kohms' for a resistance", "kΩ"]),
    ("20 V", "", ["expected no unit, got 'V' (a voltage)"]),
    ("1e", "", ["is not a number"]), ("1,5", "V", ["is not a number"]), ("1 2", "s", ["is not a number"]),
])
def test_other_units_are_one_line_naming_what_to_type(text, unit, words):
    with pytest.raises(ValueError) as exc:
        parse_quantity(text, unit)
    message = str(exc.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("protocol, values, name, value", [
    ("configure", {"r_softplus": "10 kΩ"}, "r_softplus", 10e3),
    ("configure", {"r_softplus": "10 kohm"}, "r_softplus", 10e3),
    ("retention", {"duration": "1 h", "interval": "1 min"}, "duration", 3600.0),
    ("retention", {"duration": "1.5 hours"}, "duration", 5400.0),
])
def test_protocol_parameters_use_the_parser(protocol, values, name, value):
    """Parameters (the command line, campaign files and the GUI build them with
    from_mapping) accept the same spellings."""
    params = registry.get(protocol).Params.from_mapping(values)
    assert getattr(params, name) == value


def test_a_parameter_in_an_unknown_unit_is_one_line():
    with pytest.raises(ParameterError, match=r"parameter 'duration': '20 parsecs': unknown unit 'parsecs'"):
        registry.get("retention").Params.from_mapping({"duration": "20 parsecs"})


def test_the_command_line_takes_hours_and_refuses_parsecs_in_one_line(capsys):
    code = cli.main(["run", "retention", "--device", "S02", "--interval", "20 parsecs"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "unknown unit 'parsecs' for a time in 's'; use s, ms, µs, min, h" in lines[0]
    parser = cli.build_parser()
    args = parser.parse_args(["run", "retention", "--device", "S02", "--duration", "1.5 hours"])
    assert registry.get("retention").Params.from_mapping({"duration": args.duration}).duration == 5400.0
