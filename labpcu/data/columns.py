"""Data columns: what a protocol declares it will record, and what the store keeps.

A column is a name, a unit and a dtype. Every column of a run has the same length
(one row per point), so a run reads back as a table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: dtypes a column may have; ``str`` is stored as variable-length UTF-8
COLUMN_DTYPES = ("float64", "float32", "int64", "int32", "bool", "str")


class ColumnError(ValueError):
    """A column declaration or a block of data that does not fit the declaration."""


def check_name(name: str, what: str = "column") -> str:
    """HDF5 names are paths, so ``/`` would nest and ``.`` would alias the group."""
    if not isinstance(name, str) or not name:
        raise ColumnError(f"{what} name must be a non-empty string, not {name!r}")
    if "/" in name or "\x00" in name or name in (".", ".."):
        raise ColumnError(f"{what} name {name!r} may not contain '/' or NUL, nor be '.' or '..'")
    return check_text(name, f"{what} name")


def check_text(text: object, what: str) -> str:
    """Text HDF5 can store: a string without NUL (HDF5 strings end at NUL) that UTF-8
    can encode (no lone surrogates)."""
    if not isinstance(text, str) or "\x00" in text:
        raise ColumnError(f"{what} must be a string without NUL characters, not {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ColumnError(f"{what} {text!r} is not valid Unicode (it holds a lone surrogate)") from None
    return text


@dataclass(frozen=True)
class Column:
    """One recorded quantity. ``unit`` is an SI unit ("V", "A", "s", "S", "Ohm") or ""
    for dimensionless values, counts and labels."""

    name: str
    unit: str = ""
    dtype: str = "float64"
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.dtype not in COLUMN_DTYPES:
            raise ColumnError(f"column {self.name!r}: dtype must be one of {', '.join(COLUMN_DTYPES)}, not {self.dtype!r}")
        check_text(self.unit, f"column {self.name!r}: unit")
        check_text(self.description, f"column {self.name!r}: description")

    @property
    def numpy_dtype(self) -> np.dtype:
        """The in-memory dtype (Python objects for strings)."""
        return np.dtype(object) if self.dtype == "str" else np.dtype(self.dtype)


def check_columns(columns: tuple[Column, ...] | list[Column]) -> tuple[Column, ...]:
    """A run's columns: at least one, names unique."""
    cols = tuple(columns)
    if not cols:
        raise ColumnError("a run needs at least one column")
    seen: set[str] = set()
    for col in cols:
        if not isinstance(col, Column):
            raise ColumnError(f"columns must be Column objects, not {type(col).__name__}")
        if col.name in seen:
            raise ColumnError(f"column {col.name!r} is declared twice")
        seen.add(col.name)
    return cols
