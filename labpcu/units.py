"""Reading and writing quantities with SI prefixes ("20 ms", "1.5u", "10 µA", "10 kΩ").

The CLI and the GUI accept what an operator types; inside the code every value is a
plain float in SI units (DESIGN.md rule 6). This module is labpcu's one quantity
parser: protocol parameters (the command line, campaign files, the GUI) go through
:func:`parse_quantity`.

Units are a small table, not a units library: labpcu's quantities are a handful of
SI units (V, A, s, S, Ohm, F, Hz, K, %), each with its spellings ("kΩ", "kOhm",
"kohm"; "h", "hours"; "µs", "us"). A table keeps parsing exact (``"20 ms"`` is
exactly ``20e-3``: the number is divided by a power of ten, not multiplied by an
inexact 1e-3), costs nothing at import, and its errors say what to type instead.
Symbols are case-sensitive ("mS" is millisiemens, "ms" milliseconds, "M" mega).
"""

from __future__ import annotations

import math
import re

#: prefix -> power of ten
_PREFIX = {"f": -15, "p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9}
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*(.*?)\s*$", re.DOTALL)

#: unit -> (what it measures, its symbols taking SI prefixes, its other spellings with
#: their factor, the spellings an error suggests)
_UNITS: dict[str, tuple[str, tuple[str, ...], dict[str, float], str]] = {
    "s": ("a time", ("s",),
          {**dict.fromkeys(("sec", "secs", "second", "seconds"), 1.0),
           **dict.fromkeys(("min", "mins", "minute", "minutes"), 60.0),
           **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
           **dict.fromkeys(("day", "days"), 86400.0)},
          "s, ms, µs, min, h"),
    "V": ("a voltage", ("V",), dict.fromkeys(("volt", "volts"), 1.0), "V, mV, µV, kV"),
    "A": ("a current", ("A",), dict.fromkeys(("amp", "amps", "ampere", "amperes"), 1.0), "A, mA, µA, nA"),
    "S": ("a conductance", ("S",), dict.fromkeys(("siemens",), 1.0), "S, mS, µS, nS"),
    "Ohm": ("a resistance", ("Ohm", "ohm", "Ω", "\u2126"), {}, "Ω, kΩ, MΩ (or Ohm, kOhm, kohm)"),
    "F": ("a capacitance", ("F",), dict.fromkeys(("farad", "farads"), 1.0), "F, nF, pF"),
    "Hz": ("a frequency", ("Hz",), {}, "Hz, kHz, MHz"),
    "K": ("a temperature", ("K",), dict.fromkeys(("kelvin",), 1.0), "K"),
    "%": ("a percentage", (), dict.fromkeys(("%",), 1.0), "%"),
}


def _spellings(unit: str) -> dict[str, tuple[int, float]]:
    """Every way to write ``unit`` (besides a bare prefix): spelling -> (power of ten, factor)."""
    if unit not in _UNITS:  # a unit the table does not know: itself, with SI prefixes
        return {p + unit: (e, 1.0) for p, e in _PREFIX.items()}
    _, symbols, words, _ = _UNITS[unit]
    out = {p + s: (e, 1.0) for s in symbols for p, e in _PREFIX.items()}
    out.update({w: (0, f) for w, f in words.items()})
    return out


_SPELLINGS = {unit: _spellings(unit) for unit in _UNITS}
#: spelling -> the unit it belongs to (for "expected unit 'V', got 'mA' (a current)")
_OWNER = {s: unit for unit, table in _SPELLINGS.items() for s in table}


def parse_quantity(text: str, unit: str = "") -> float:
    """``"20 ms"`` with unit ``"s"`` is 0.02; so are ``"20 m"`` and ``"0.02"``. The unit
    may be omitted, or written any way the table knows (``"1.5 hours"``, ``"10 kΩ"``,
    ``"50uS"``); a prefix alone (``"20m"``) scales the number; another unit is an
    error saying which was expected and how to write it."""
    m = _QUANTITY.match(text)
    if m is None:
        raise ValueError(f"{_short(text)} is not a number")
    number, rest = m.groups()
    if rest in _PREFIX:
        exp, factor = _PREFIX[rest], 1.0
    elif unit and rest in (table := _SPELLINGS.get(unit) or _spellings(unit)):
        exp, factor = table[rest]
    else:
        raise ValueError(_unit_problem(text, rest, unit))
    value = float(number) * 10.0**exp if exp >= 0 else float(number) / 10.0**-exp  # exact: 10**-exp is exact
    return value * factor if factor != 1.0 else value


def _unit_problem(text: str, rest: str, unit: str) -> str:
    if re.search(r"[\d.,+\-\s]", rest) or re.fullmatch(r"[eE][+-]?\d*", rest):  # "1 2", "1,5", "1..2", "1e"
        return f"{_short(text)} is not a number"
    other = _OWNER.get(rest)
    if not unit:
        return f"{_short(text)}: expected no unit, got {_short(rest)}" + (f" ({_UNITS[other][0]})" if other else "")
    what, _, _, hint = _UNITS.get(unit, ("", (), {}, f"{unit}, m{unit}, k{unit}"))
    expected = f"unit {unit!r}" + (f" ({what})" if what else "")
    if other is not None:
        return f"{_short(text)}: expected {expected}, got {_short(rest)} ({_UNITS[other][0]}); use {hint}"
    return f"{_short(text)}: unknown unit {_short(rest)} for {what or 'a quantity'} in {unit!r}; use {hint}"


def _short(text: str, chars: int = 40) -> str:
    """The repr of what was typed, cut: an error line quotes it, it need not hold it all."""
    return repr(text) if len(text) <= chars else repr(text[:chars]) + f"… ({len(text)} characters)"


def format_quantity(value: float, unit: str = "", digits: int = 4) -> str:
    """``format_quantity(0.02, "s")`` is ``"20 ms"``."""
    if not unit or value == 0 or not math.isfinite(value):
        return f"{value:.{digits}g}{' ' + unit if unit else ''}"
    exp3 = max(-15, min(9, int(math.floor(math.log10(abs(value)) / 3) * 3)))
    prefix = {-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G"}[exp3]
    return f"{value / 10 ** exp3:.{digits}g} {prefix}{unit}"
