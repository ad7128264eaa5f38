"""Reading and writing quantities with SI prefixes ("20 ms", "1.5u", "10 µA").

The CLI and the GUI accept what an operator types; inside the code every value is a
plain float in SI units (DESIGN.md rule 6).
"""

from __future__ import annotations

import math
import re

#: prefix -> power of ten
_PREFIX = {"f": -15, "p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9}
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([fpnuµμmkMG]?)\s*(\S*?)\s*$")


def parse_quantity(text: str, unit: str = "") -> float:
    """``"20 ms"`` with unit ``"s"`` is 0.02. The unit may be omitted; a prefix alone
    (``"20m"``) scales the number; a different unit is an error."""
    m = _QUANTITY.match(text)
    if m is None:
        raise ValueError(f"{_short(text)} is not a number")
    number, prefix, rest = m.groups()
    if rest and rest != unit:
        expected = f"unit {unit!r}" if unit else "no unit"
        raise ValueError(f"{_short(text)}: expected {expected}, got {_short(rest)}")
    exp = _PREFIX[prefix]  # dividing by 10**3 is exact where multiplying by 1e-3 is not
    return float(number) * 10.0**exp if exp >= 0 else float(number) / 10.0**-exp


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
