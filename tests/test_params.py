"""Quantities with SI prefixes (labpcu.units) and protocol parameters (Params): parsing
what an operator types, types, NaN, limits, choices, cross-field checks, the help text,
and that every in-range value survives being shown and typed back."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labpcu.protocols.params import ParameterError, Params, ParamSpec, param
from labpcu.units import format_quantity, parse_quantity

HYPOTHESIS = settings(max_examples=200, deadline=None)
INF, NAN = math.inf, math.nan
PREFIX_EXP = {"f": -15, "p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9}


# ---------------------------------------------------------------------- parameter sets
@dataclass(frozen=True)
class PulseParams(Params):
    """One field of every kind a protocol may declare."""

    width: float = param(20e-3, unit="s", limits=(1e-6, 1.0), help="pulse width")
    amplitude: float = param(1.5, unit="V", limits=(-5, 5), help="pulse height")
    repeat_count: int = param(10, limits=(1, 1000), help="pulses per level")
    seed: int = param(0, help="random seed")
    verbose: bool = param(False, help="log every pulse")
    mode: str = param("linear", choices=("linear", "log"), help="level spacing")
    label: str = param("", help="free text")
    levels: tuple[float, ...] = param((0.1, 0.2), unit="V", limits=(-2, 2), help="read levels")
    tags: tuple[str, ...] = param((), help="labels")
    compliance: float | None = param(None, unit="A", limits=(0, 0.1), help="current limit")
    settle: float = param(0.0, limits=(None, 5), help="settling time factor")


@dataclass(frozen=True)
class WindowParams(Params):
    """A cross-field rule: the window must not be empty."""

    start: float = param(0.0, unit="V", help="first voltage")
    stop: float = param(1.0, unit="V", help="last voltage")

    def check(self) -> None:
        if not self.start < self.stop:
            raise ParameterError(f"start ({self.start:g} V) must be below stop ({self.stop:g} V)")


SPECS = {s.name: s for s in PulseParams.specs()}


def error_of(make: Any) -> str:
    """The one-line message of the ParameterError ``make()`` raises."""
    with pytest.raises(ParameterError) as err:
        make()
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------- units
@pytest.mark.parametrize("text, unit, value", [
    ("20 ms", "s", 20e-3), ("20ms", "s", 20e-3), ("20 m", "s", 20e-3), ("20", "s", 20.0), ("1.5u", "", 1.5e-6),
    ("10 µA", "A", 10e-6), ("10 μA", "A", 10e-6), ("10 uA", "A", 10e-6), ("2 kOhm", "Ohm", 2e3),
    ("4.7MOhm", "Ohm", 4.7e6), ("3 G", "", 3e9), ("7 pF", "F", 7e-12), ("1f", "", 1e-15), ("5 nA", "A", 5e-9),
    ("-2.5e-3 V", "V", -2.5e-3), ("-2.5 mV", "V", -2.5e-3), (".5", "", 0.5), ("5.", "", 5.0), ("+3", "", 3.0),
    ("  42  ", "", 42.0), ("1e3k", "", 1e6), ("0 V", "V", 0.0),
])
def test_parse_quantity_reads_si_prefixes(text: str, unit: str, value: float) -> None:
    """A prefix scales the number (the unit may be left out) exactly as the
    corresponding decimal exponent would."""
    assert parse_quantity(text, unit) == value


@pytest.mark.parametrize("text, unit, needle", [
    ("20 mA", "V", "'V'"), ("20 V", "", "no unit"), ("5 Ohms", "Ohm", "'Ohm'"), ("3 kV", "A", "'A'"),
])
def test_parse_quantity_refuses_another_unit(text: str, unit: str, needle: str) -> None:
    """A unit other than the expected one is an error saying what was expected."""
    with pytest.raises(ValueError, match=needle):
        parse_quantity(text, unit)


@pytest.mark.parametrize("text", ["", "abc", "V", "1..2", "--1", "1 2", "1,5", "1e", "e3", "k", "0x10", "½"])
def test_parse_quantity_refuses_non_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_parse_quantity_reads_infinities_and_nan() -> None:
    assert parse_quantity("inf") == INF and parse_quantity("+inf") == INF
    assert parse_quantity("-inf V", "V") == -INF
    assert math.isnan(parse_quantity("nan")) and math.isnan(parse_quantity("nan A", "A"))


@pytest.mark.parametrize("value, unit, text", [
    (0.02, "s", "20 ms"), (1.5e-6, "A", "1.5 µA"), (-0.003, "V", "-3 mV"), (2e3, "Ohm", "2 kOhm"),
    (12345678, "Ohm", "12.35 MOhm"), (1e-15, "F", "1 fF"), (3e9, "Hz", "3 GHz"), (1, "V", "1 V"), (0, "V", "0 V"),
    (INF, "V", "inf V"), (-INF, "V", "-inf V"), (NAN, "V", "nan V"), (0.5, "", "0.5"), (1234.5678, "", "1235"),
])
def test_format_quantity_uses_si_prefixes(value: float, unit: str, text: str) -> None:
    """Engineering notation with a prefix, 4 significant digits; no prefix without a unit."""
    assert format_quantity(value, unit) == text


@HYPOTHESIS
@given(magnitude=st.floats(1e-290, 1e290), negative=st.booleans(), unit=st.sampled_from(["V", "A", "s", "Ohm", "S", ""]))
def test_format_then_parse_keeps_four_digits(magnitude: float, negative: bool, unit: str) -> None:
    """What is shown reads back to within the 4 significant digits shown, and within
    the prefixes' range the number shown is between 1 and 1000."""
    value = -magnitude if negative else magnitude
    text = format_quantity(value, unit)
    assert math.isclose(parse_quantity(text, unit), value, rel_tol=6e-4)
    if unit and 1e-15 <= magnitude < 1e12:
        number, prefix = re.fullmatch(rf"(\S+) (\S?){re.escape(unit)}", text).groups()
        assert 1 <= abs(float(number)) <= 1000 and prefix in PREFIX_EXP


@HYPOTHESIS
@given(number=st.decimals(-1e6, 1e6, allow_nan=False, places=3), prefix=st.sampled_from(sorted(PREFIX_EXP)),
       space=st.sampled_from(["", " "]))
def test_parse_quantity_scales_by_the_prefix(number: Any, prefix: str, space: str) -> None:
    """``"<n> <prefix>V"`` is n times the prefix's power of ten."""
    expected = float(number) * 10.0 ** PREFIX_EXP[prefix]
    assert math.isclose(parse_quantity(f"{number}{space}{prefix}V", "V"), expected, rel_tol=1e-15, abs_tol=0)


# ---------------------------------------------------------------------- Params: values
def test_defaults() -> None:
    """With no values, every parameter has its declared default (lists as tuples)."""
    p = PulseParams()
    assert (p.width, p.amplitude, p.repeat_count, p.seed, p.verbose) == (0.02, 1.5, 10, 0, False)
    assert (p.mode, p.label, p.levels, p.tags, p.compliance) == ("linear", "", (0.1, 0.2), (), None)
    assert PulseParams.from_mapping() == p and PulseParams.from_mapping({}) == p


def test_from_mapping_parses_text() -> None:
    """Text is parsed per parameter type: quantities with prefixes, comma lists, yes/no,
    ``none``; dashes in names stand for underscores; text parameters stay text."""
    p = PulseParams.from_mapping({
        "width": "20 ms", "amplitude": "-500 mV", "repeat-count": "1k", "seed": "9223372036854775807",
        "verbose": "true", "mode": "log", "label": " 1,2 ", "levels": "1, -0.5,2", "tags": "a, b c",
        "compliance": "10 mA", "settle": "-3",
    })
    assert (p.width, p.amplitude, p.repeat_count, p.seed) == (20e-3, -0.5, 1000, 2**63 - 1)
    assert (p.verbose, p.mode, p.label) == (True, "log", " 1,2 ")
    assert p.levels == (1.0, -0.5, 2.0) and p.tags == ("a", "b c")
    assert p.compliance == 10e-3 and p.settle == -3.0
    assert PulseParams.from_mapping({"compliance": "none"}).compliance is None
    assert PulseParams.from_mapping({"levels": ""}).levels == ()


@pytest.mark.parametrize("text, value", [(t, True) for t in ("true", "True", "yes", "on", "1", " ON ")]
                         + [(t, False) for t in ("false", "FALSE", "no", "off", "0")])
def test_bool_text(text: str, value: bool) -> None:
    assert PulseParams.from_mapping({"verbose": text}).verbose is value


def test_typed_values_are_kept_and_ints_widen_to_float() -> None:
    """Typed values pass through; an int for a float parameter becomes a float, a list a tuple."""
    p = PulseParams.from_mapping({"width": 1, "repeat_count": 3, "verbose": True, "levels": [1, 0.5]})
    assert p.width == 1.0 and type(p.width) is float and p.repeat_count == 3 and p.verbose is True
    assert p.levels == (1.0, 0.5) and all(type(v) is float for v in p.levels)


def test_unknown_parameter_is_refused() -> None:
    """An unknown name is refused with the names there are."""
    msg = error_of(lambda: PulseParams.from_mapping({"widht": "1 ms"}))
    assert "'widht'" in msg and "width" in msg and "repeat_count" in msg
    assert "'nope'" in error_of(lambda: PulseParams.spec("nope"))


@pytest.mark.parametrize("field, value", [
    ("repeat_count", True), ("repeat_count", 1.5), ("repeat_count", 2.0), ("repeat_count", "3"), ("seed", None),
    ("width", "20 ms"), ("width", True), ("width", None), ("verbose", 1), ("verbose", "true"), ("mode", 3),
    ("label", None), ("levels", "0.1"), ("levels", 0.1), ("levels", (0.1, "x")), ("levels", (0.1, None)),
    ("tags", ("a", 1)), ("compliance", "1 mA"), ("compliance", False),
])
def test_wrong_types_are_refused(field: str, value: Any) -> None:
    """Direct construction checks types: no bool for a number, no text for a number,
    no fractional value for an int, no bare value for a list."""
    assert f"'{field}'" in error_of(lambda: PulseParams(**{field: value}))


@pytest.mark.parametrize("field, text", [
    ("repeat_count", "1.5"), ("repeat_count", "2.5k"), ("repeat_count", "inf"), ("width", "fast"),
    ("width", "20 mA"), ("verbose", "maybe"), ("levels", "0.1, x"), ("seed", "1e400"),
])
def test_unparseable_text_is_refused(field: str, text: str) -> None:
    assert f"'{field}'" in error_of(lambda: PulseParams.from_mapping({field: text}))


@pytest.mark.parametrize("values", [
    {"width": NAN}, {"width": "nan"}, {"amplitude": NAN}, {"levels": (0.1, NAN)}, {"compliance": NAN},
    {"settle": NAN},
])
def test_nan_is_refused(values: dict[str, Any]) -> None:
    """NaN is no value: refused even where there are no limits."""
    name = next(iter(values))
    msg = error_of(lambda: PulseParams.from_mapping(values))
    assert f"'{name}'" in msg and "NaN" in msg


@pytest.mark.parametrize("field, value", [
    ("width", 1e-6), ("width", 1.0), ("amplitude", -5), ("amplitude", 5.0), ("repeat_count", 1),
    ("repeat_count", 1000), ("levels", (-2.0, 2.0)), ("compliance", 0.0), ("compliance", 0.1), ("settle", 5.0),
    ("settle", -1e300), ("seed", -(2**70)),
])
def test_limits_are_inclusive(field: str, value: Any) -> None:
    assert getattr(PulseParams(**{field: value}), field) == value


@pytest.mark.parametrize("field, value", [
    ("width", math.nextafter(1e-6, 0)), ("width", math.nextafter(1.0, 2)), ("width", INF),
    ("amplitude", math.nextafter(-5, -6)), ("repeat_count", 0), ("repeat_count", 1001),
    ("levels", (0.0, math.nextafter(2.0, 3))), ("compliance", -5e-324), ("settle", INF),
])
def test_just_outside_the_limits_is_refused(field: str, value: Any) -> None:
    assert f"'{field}'" in error_of(lambda: PulseParams(**{field: value}))


@pytest.mark.parametrize("values, needles", [
    ({"width": 2.0}, ["parameter 'width'", "2 s", "above", "1 s"]),
    ({"width": "100 ns"}, ["'width'", "100 ns", "below", "1 µs"]),
    ({"repeat_count": 0}, ["'repeat_count'", "below", "limit 1"]),
    ({"levels": "0.5, 2.5"}, ["'levels'", "2.5 V", "above", "2 V"]),
    ({"compliance": "-1 mA"}, ["'compliance'", "-1 mA", "below", "0 A"]),
])
def test_limit_messages_name_parameter_value_and_limit(values: dict[str, Any], needles: list[str]) -> None:
    """A value out of range says, on one line, which parameter, its value and the limit
    it broke, with units."""
    msg = error_of(lambda: PulseParams.from_mapping(values))
    assert all(n in msg for n in needles), msg


def test_choices() -> None:
    """A value not among the choices is refused with the choices; a listed one is kept."""
    assert PulseParams(mode="log").mode == "log"
    msg = error_of(lambda: PulseParams(mode="cubic"))
    assert "'mode'" in msg and "'cubic'" in msg and "linear" in msg and "log" in msg
    error_of(lambda: PulseParams.from_mapping({"mode": "LOG"}))


def test_check_adds_cross_field_rules() -> None:
    """``check`` runs after every field is validated and converted, both for direct
    construction and from text; a field's own error comes first."""
    assert WindowParams(start=-1, stop=1).start == -1.0
    assert "must be below stop" in error_of(lambda: WindowParams(start=2, stop=1))
    assert "must be below stop" in error_of(lambda: WindowParams.from_mapping({"start": "1 V", "stop": "1000 mV"}))
    assert "'start'" in error_of(lambda: WindowParams(start="2 V", stop=1.0))


def test_params_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PulseParams().width = 1.0  # type: ignore[misc]


def test_unsupported_annotations_are_refused() -> None:
    """Only float, int, bool, str, tuples of them and ``X | None`` are parameter types."""

    @dataclass(frozen=True)
    class ListParams(Params):
        values: list[float] = param((1.0,), help="values")

    @dataclass(frozen=True)
    class UnionParams(Params):
        value: int | str = param(1, help="value")

    for cls, field in ((ListParams, "values"), (UnionParams, "value")):
        with pytest.raises(TypeError, match=f"{cls.__name__}.{field}"):
            cls.specs()


# ---------------------------------------------------------------------- Params: description
def test_specs_describe_every_field() -> None:
    """``specs`` lists the fields in declaration order with type, list-ness,
    optionality, default, unit, limits, choices and help."""
    assert list(SPECS) == ["width", "amplitude", "repeat_count", "seed", "verbose", "mode", "label", "levels", "tags",
                           "compliance", "settle"]
    assert SPECS["width"] == ParamSpec("width", float, False, False, 0.02, "s", (1e-6, 1.0), None, "pulse width")
    assert SPECS["levels"] == ParamSpec("levels", float, True, False, (0.1, 0.2), "V", (-2, 2), None, "read levels")
    assert SPECS["compliance"] == ParamSpec("compliance", float, False, True, None, "A", (0, 0.1), None, "current limit")
    assert SPECS["mode"].choices == ("linear", "log") and SPECS["mode"].kind is str
    assert (SPECS["repeat_count"].kind, SPECS["verbose"].kind, SPECS["tags"].kind) == (int, bool, str)
    assert PulseParams.spec("seed") == SPECS["seed"]
    assert PulseParams.units() == {"width": "s", "amplitude": "V", "levels": "V", "compliance": "A"}


@pytest.mark.parametrize("field, parts", [
    ("width", ["pulse width", "in s", "1 µs to 1 s", "default 20 ms"]),
    ("repeat_count", ["pulses per level", "1 to 1000", "default 10"]),
    ("mode", ["level spacing", "one of linear, log", "default linear"]),
    ("compliance", ["current limit", "in A", "0 A to 100 mA", "default none"]),
    ("levels", ["read levels", "in V", "-2 V to 2 V", "default 100 mV,200 mV"]),
    ("settle", ["-inf to 5", "default 0.0"]),
    ("verbose", ["log every pulse", "default False"]),
])
def test_describe_gives_units_limits_and_default(field: str, parts: list[str]) -> None:
    text = SPECS[field].describe()
    assert all(p in text for p in parts), text
    assert "\n" not in text


def test_to_dict_is_plain_json_and_reads_back() -> None:
    """``to_dict`` gives JSON-ready values (lists for tuples) that rebuild the same set."""
    p = PulseParams.from_mapping({"levels": "0.5,1", "tags": "x", "compliance": "1 mA", "seed": str(2**62 + 1)})
    d = p.to_dict()
    assert list(d) == list(SPECS)
    assert d["levels"] == [0.5, 1.0] and d["tags"] == ["x"] and d["compliance"] == 1e-3 and d["seed"] == 2**62 + 1
    assert json.loads(json.dumps(d)) == d
    assert PulseParams.from_mapping(d) == p


# ---------------------------------------------------------------------- format -> parse
STRIPPED_TEXT = st.text(st.characters(codec="utf-8"), max_size=8).map(str.strip)


def in_range(spec: ParamSpec) -> st.SearchStrategy[Any]:
    """Values a parameter accepts (text as ``parse`` leaves it: stripped, no commas in list items)."""
    lo, hi = spec.limits or (None, None)
    if spec.choices:
        one = st.sampled_from(spec.choices)
    elif spec.kind is bool:
        one = st.booleans()
    elif spec.kind is int:
        one = st.integers(lo, hi)
    elif spec.kind is float:
        one = st.floats(lo, hi, allow_nan=False, allow_infinity=lo is None or hi is None)
    else:
        one = STRIPPED_TEXT.filter(lambda s: s and "," not in s) if spec.is_list else STRIPPED_TEXT
    value = st.lists(one, max_size=4).map(tuple) if spec.is_list else one
    return st.none() | value if spec.optional else value


def same(parsed: Any, value: Any, spec: ParamSpec) -> bool:
    if spec.is_list and value is not None:
        return len(parsed) == len(value) and all(same(p, v, dataclasses.replace(spec, is_list=False))
                                                 for p, v in zip(parsed, value))
    if spec.kind is float and spec.unit and value is not None:  # shown with 4 significant digits
        return type(parsed) is float and (parsed == value or math.isclose(parsed, value, rel_tol=6e-4))
    return type(parsed) is type(value) and parsed == value


@HYPOTHESIS
@given(data=st.data(), spec=st.sampled_from(list(SPECS.values())))
def test_any_in_range_value_survives_format_then_parse(data: st.DataObject, spec: ParamSpec) -> None:
    """Every value a parameter accepts, shown with ``format`` and typed back, parses
    to the same value (within the digits shown, for quantities) and is accepted again."""
    value = data.draw(in_range(spec), label=spec.name)
    text = spec.format(value)
    parsed = spec.parse(text)
    assert same(parsed, value, spec), (text, parsed)
    assert same(getattr(PulseParams.from_mapping({spec.name: text}), spec.name), value, spec)


@HYPOTHESIS
@given(data=st.data(), spec=st.sampled_from([s for s in SPECS.values() if s.kind is float]))
def test_floats_typed_in_full_parse_exactly(data: st.DataObject, spec: ParamSpec) -> None:
    """A float typed with all its digits (``repr``), with or without its unit, parses
    to exactly that float (sign of zero included)."""
    value = data.draw(in_range(dataclasses.replace(spec, is_list=False, optional=False)), label=spec.name)
    texts = [repr(value)] + ([f"{value!r} {spec.unit}"] if spec.unit else [])
    for text in texts:
        parsed = spec.parse(text)
        assert repr(parsed) == repr((value,) if spec.is_list else value), text


# ---------------------------------------------------------------------- Params: self-description
def test_the_class_docstring_lists_every_parameter_with_unit_limits_and_default() -> None:
    """``__doc__`` (so ``help()``) keeps the class's own docstring and adds one line per
    parameter: name, type, help, unit, limits, choices and default."""
    doc = PulseParams.__doc__
    assert doc.startswith("One field of every kind a protocol may declare.\n\nParameters:\n")
    lines = {line.split()[0]: line for line in doc.splitlines() if line.startswith("    ")}
    assert list(lines) == list(SPECS)
    assert lines["width"] == "    width (float): pulse width; in s; 1 µs to 1 s; default 20 ms."
    assert lines["levels"].startswith("    levels (tuple[float, ...]): read levels; in V; -2 V to 2 V")
    assert "(float | None)" in lines["compliance"] and "default none" in lines["compliance"]
    assert "one of linear, log" in lines["mode"] and "(bool)" in lines["verbose"]
    assert "default empty" in lines["tags"]
    assert PulseParams().__doc__ == doc  # the instance's too


def test_help_shows_units_and_limits_of_a_real_protocol() -> None:
    """``help(IVSweepParams)`` shows the sweep's units, limits and defaults."""
    import pydoc

    from labpcu.protocols.characterization import IVSweepParams
    from labpcu.protocols.registry import protocols

    text = pydoc.render_doc(IVSweepParams, renderer=pydoc.plaintext)
    assert "stop (float): last level (linear and log); in V; -200 V to 200 V; default 1 V." in text
    assert "points (int):" in text and "2 to 10000; default 101" in text
    for name, proto in protocols().items():  # every registered protocol describes its parameters
        doc = proto.Params.__doc__
        assert "\nParameters:\n" in doc, name
        assert all(f"    {s.name} (" in doc for s in proto.Params.specs()), name


def test_a_class_without_a_docstring_gets_a_headline() -> None:
    @dataclass(frozen=True)
    class Bare(Params):
        gain: float = param(2.0, limits=(0, 10), help="gain")

    assert Bare.__doc__ == "Parameters of a protocol (Bare).\n\nParameters:\n    gain (float): gain; 0 to 10; default 2.0."


def test_repr_shows_values_with_units() -> None:
    """The repr is one line: text and flags as Python, quantities with their units."""
    p = PulseParams.from_mapping({"width": "5 ms", "levels": "0.1,0.25", "compliance": "1 mA", "mode": "log"})
    text = repr(p)
    assert text.startswith("PulseParams(width=5 ms, amplitude=1.5 V, repeat_count=10, seed=0, verbose=False, "
                           "mode='log', label='', levels=(100 mV,250 mV), tags=(), compliance=1 mA, ")
    assert text.endswith("settle=0.0)") and "\n" not in text
    assert "compliance=None" in repr(PulseParams())


def test_an_own_repr_is_kept() -> None:
    @dataclass(frozen=True)
    class Custom(Params):
        gain: float = param(2.0, help="gain")

        def __repr__(self) -> str:
            return "custom"

    assert repr(Custom()) == "custom"
