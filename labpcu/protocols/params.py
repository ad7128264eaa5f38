"""Protocol parameters: frozen dataclasses whose fields carry units, limits and help.

The CLI flags and the GUI form are generated from the same declarations, and the
runner validates against them before any instrument I/O::

    @dataclass(frozen=True)
    class SweepParams(Params):
        stop: float = param(1.0, unit="V", limits=(-20, 20), help="last voltage")
        points: int = param(101, limits=(2, 100_000), help="points per branch")
        mode: str = param("linear", choices=("linear", "log", "list"), help="spacing")
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from labpcu.units import format_quantity, parse_quantity


class ParameterError(ValueError):
    """A parameter value that is missing, unknown, of the wrong type, or out of range."""


#: how much of a value an error message shows (a pasted list of 10,000 values must not
#: become a 20 kB error line; the operator needs to recognize it, not read it back)
SHOW_ITEMS, SHOW_CHARS = 4, 60


def show_value(value: Any, items: int = SHOW_ITEMS, chars: int = SHOW_CHARS) -> str:
    """``repr``-like text of a value for an error message, capped: a long list shows
    its first ``items`` and ``… (N values)``, a long text its start and its length."""
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= chars else f"{text[:chars]}… ({len(value)} characters)"
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and hasattr(value, "__getitem__")
                                            and not isinstance(value, Mapping)):
        try:
            seq = list(value)
        except TypeError:
            seq = None
        if seq is not None:
            head = ", ".join(show_value(v, items, chars) for v in seq[:items])
            if len(seq) <= items:
                return f"({head})" if isinstance(value, tuple) else f"[{head}]"
            return f"[{head}, … ({len(seq)} values)]"
    text = repr(value)
    return text if len(text) <= chars else f"{text[:chars]}… ({len(text)} characters)"


def show_list(values: Sequence[Any], items: int = SHOW_ITEMS) -> str:
    """Comma-joined names for a message (``a, b, c, … (N values)``), capped like
    :func:`show_value`."""
    names = [str(v) if len(str(v)) <= SHOW_CHARS else str(v)[:SHOW_CHARS] + "…" for v in list(values)[:items]]
    rest = len(values) - items
    return ", ".join(names) + (f", … ({len(values)} values)" if rest > 0 else "")


def param(
    default: Any,
    *,
    help: str,  # noqa: A002 - the word users know from argparse
    unit: str = "",
    limits: tuple[float | None, float | None] | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A parameter field. ``limits`` bound every number (inclusive; None = open);
    ``choices`` lists the allowed values. Tuples default via a factory."""
    meta = {"help": help, "unit": unit, "limits": limits, "choices": tuple(choices) if choices else None}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return dataclasses.field(default_factory=lambda: value, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """What a form or a flag needs to know about one parameter."""

    name: str
    kind: type  # float, int, bool, str
    is_list: bool  # a tuple of ``kind``
    optional: bool  # None allowed
    default: Any
    unit: str
    limits: tuple[float | None, float | None] | None
    choices: tuple[Any, ...] | None
    help: str

    def describe(self) -> str:
        """Help text with units, limits and default, e.g. for ``--help``."""
        bits = [self.help.rstrip(".")]
        if self.unit:
            bits.append(f"in {self.unit}")
        if self.limits:
            lo, hi = self.limits
            bits.append(f"{_fmt(lo, self.unit) if lo is not None else '-inf'} to {_fmt(hi, self.unit) if hi is not None else 'inf'}")
        if self.choices:
            bits.append("one of " + ", ".join(map(str, self.choices)))
        empty = self.is_list and self.default is not None and len(self.default) == 0
        bits.append(f"default {'empty' if empty else self.format(self.default)}")
        return "; ".join(bits)

    def format(self, value: Any) -> str:
        if value is None:
            return "none"
        if self.is_list:
            return ",".join(self._format_one(v) for v in value)
        return self._format_one(value)

    def _format_one(self, value: Any) -> str:
        if self.kind is float and self.unit:
            return format_quantity(float(value), self.unit)
        return str(value)

    def parse(self, text: str) -> Any:
        """Text from a command line or a form field to a typed value (not yet checked
        against limits)."""
        text = text.strip()
        if self.optional and text.lower() in ("none", ""):
            return None
        if self.is_list:
            return tuple(self._parse_one(t) for t in text.split(",") if t.strip())
        return self._parse_one(text)

    def _parse_one(self, text: str) -> Any:
        text = text.strip()
        try:
            if self.kind is bool:
                low = text.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(f"{text!r} is not true/false")
            if self.kind is int:
                if re.fullmatch(r"[+-]?\d+", text):  # exactly (a float holds only 53 bits)
                    return int(text)
                value = parse_quantity(text, self.unit)
                if not value.is_integer():
                    raise ValueError(f"{text!r} is not a whole number")
                return int(value)
            if self.kind is float:
                return parse_quantity(text, self.unit)
            return text
        except ValueError as exc:
            raise ParameterError(f"parameter {self.name!r}: {_capped(str(exc))}") from None


class _ParamsDoc:
    """A ``Params`` subclass's ``__doc__``: its own docstring, then one line per
    parameter with its type, unit, limits, choices and default (``help(IVSweepParams)``
    shows them). Made from the declarations the first time it is read once the class
    is a dataclass, and kept."""

    def __init__(self, text: str | None) -> None:
        self.text = text
        self.made: dict[type, str] = {}

    def __get__(self, obj: Any, owner: type | None = None) -> str:
        cls = owner if owner is not None else type(obj)
        if cls in self.made:
            return self.made[cls]
        if "__dataclass_fields__" not in cls.__dict__:  # not yet decorated: nothing to list
            return self.text or f"{cls.__name__}: protocol parameters."
        try:
            doc = describe_params(cls, self.text)
        except (TypeError, NameError):  # an annotation specs() refuses: it says so when used
            return self.text or f"{cls.__name__}: protocol parameters."
        self.made[cls] = doc
        return doc


def describe_params(cls: type[Params], text: str | None = None) -> str:
    """The docstring of a parameter class: ``text`` (its own docstring, dedented), then
    a Google-style ``Parameters:`` section, one line per field."""
    head = inspect.cleandoc(text) if text else f"Parameters of a protocol ({cls.__name__})."
    lines = [head, "", "Parameters:"]
    for s in cls.specs():
        kind = f"tuple[{s.kind.__name__}, ...]" if s.is_list else s.kind.__name__
        lines.append(f"    {s.name} ({kind}{' | None' if s.optional else ''}): {s.describe()}.")
    return "\n".join(lines)


@dataclass(frozen=True)
class Params:
    """Base of every protocol's parameters. Construction validates: an instance is a
    checked set of values. Override :meth:`check` for rules across fields.

    Each subclass describes itself: its ``__doc__`` (and so ``help()``) lists every
    parameter with its unit, limits, choices and default, and its ``repr`` shows the
    values with their units (``IVSweepParams(component='d1', stop=1 V, points=101, …)``).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__doc__ = _ParamsDoc(cls.__dict__.get("__doc__"))  # type: ignore[assignment]
        if "__repr__" not in cls.__dict__:  # @dataclass keeps a __repr__ the class has
            cls.__repr__ = Params.__repr__  # type: ignore[method-assign]

    def __repr__(self) -> str:
        shown = []
        for s in self.specs():
            value = getattr(self, s.name)
            if value is not None and s.kind is float and s.unit:  # 20 ms, (100 mV,200 mV)
                text = f"({s.format(value)})" if s.is_list else s.format(value)
            else:
                text = repr(value)
            shown.append(f"{s.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __post_init__(self) -> None:
        for spec in self.specs():
            object.__setattr__(self, spec.name, _checked(spec, getattr(self, spec.name)))
        self.check()

    def check(self) -> None:
        """Cross-field rules; raise :class:`ParameterError` with one line."""

    @classmethod
    def specs(cls) -> list[ParamSpec]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            kind, is_list, optional = _kind(hints[f.name], f"{cls.__name__}.{f.name}")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            m = f.metadata
            out.append(ParamSpec(f.name, kind, is_list, optional, default, m.get("unit", ""), m.get("limits"),
                                 m.get("choices"), m.get("help", "")))
        return out

    @classmethod
    def spec(cls, name: str) -> ParamSpec:
        for s in cls.specs():
            if s.name == name:
                return s
        raise ParameterError(f"no parameter {name!r}; have {', '.join(s.name for s in cls.specs())}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> Self:
        """Build from names to values; strings are parsed (``"20 ms"``), unknown names
        are refused, missing ones take their defaults."""
        values = dict(values or {})
        known = {s.name: s for s in cls.specs()}
        kwargs = {}
        for name, value in values.items():
            key = name.replace("-", "_")
            if key not in known:
                raise ParameterError(f"no parameter {show_value(name)}; have {', '.join(known)}")
            spec = known[key]
            parse = isinstance(value, str) and (spec.kind is not str or spec.is_list)
            kwargs[key] = spec.parse(value) if parse else value
        try:
            return cls(**kwargs)
        except ParameterError:
            raise
        except TypeError as exc:
            raise ParameterError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return {s.name: (list(v) if isinstance(v := getattr(self, s.name), tuple) else v) for s in self.specs()}

    @classmethod
    def units(cls) -> dict[str, str]:
        return {s.name: s.unit for s in cls.specs() if s.unit}


def _kind(hint: Any, where: str) -> tuple[type, bool, bool]:
    """(element type, is a tuple, may be None) from a field's annotation."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"{where}: a parameter has one type (optionally | None), not {hint}")
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis or args[0] not in (float, int, str, bool):
            raise TypeError(f"{where}: list parameters are tuple[float | int | str | bool, ...], not {hint}")
        return args[0], True, optional
    if hint not in (float, int, str, bool):
        raise TypeError(f"{where}: parameter types are float, int, str, bool or tuples of them, not {hint}")
    return hint, False, optional


def _checked(spec: ParamSpec, value: Any) -> Any:
    """Type-check and range-check one value; ints are accepted for floats."""
    label = f"parameter {spec.name!r}"
    if value is None:
        if spec.optional:
            return None
        raise ParameterError(f"{label} is required")
    if spec.is_list:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ParameterError(f"{label} must be a list of {spec.kind.__name__}, not {show_value(value)}")
        return tuple(_checked_one(label, spec, v) for v in value)
    return _checked_one(label, spec, value)


def _checked_one(label: str, spec: ParamSpec, value: Any) -> Any:
    kind = spec.kind
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        if math.isnan(value):
            raise ParameterError(f"{label} is NaN")
    elif kind is int and hasattr(value, "__index__") and not isinstance(value, bool):
        value = int(value)
    elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ParameterError(f"{label} must be {kind.__name__}, not {type(value).__name__} {show_value(value)}")
    if spec.choices is not None and value not in spec.choices:
        raise ParameterError(f"{label} = {show_value(value)} is not one of {', '.join(map(str, spec.choices))}")
    if spec.limits is not None and kind in (int, float):
        lo, hi = spec.limits
        if lo is not None and value < lo:
            raise ParameterError(f"{label} = {_fmt_pair(value, lo, spec.unit)} is below its limit {_fmt(lo, spec.unit)}")
        if hi is not None and value > hi:
            raise ParameterError(f"{label} = {_fmt_pair(value, hi, spec.unit)} is above its limit {_fmt(hi, spec.unit)}")
    return value


def _capped(message: str, chars: int = 4 * SHOW_CHARS) -> str:
    """A message quoting text we did not write (a parser's) cut to ``chars``."""
    return message if len(message) <= chars else f"{message[:chars]}… ({len(message)} characters)"


def _fmt(value: float, unit: str) -> str:
    return format_quantity(float(value), unit) if unit else f"{value:g}"


def _fmt_pair(value: float, limit: float, unit: str) -> str:
    """The value as shown next to its limit: full precision when 4 digits would make
    the two look equal ("1.0000001 s is above its limit 1 s")."""
    shown = _fmt(value, unit)
    return shown if shown != _fmt(limit, unit) else f"{value!r}{' ' + unit if unit else ''}"
