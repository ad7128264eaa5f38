"""A run's data as a CSV file that keeps its units and parameters.

The layout follows PyMeasure's Results files: a commented header (``#`` lines) with the
procedure, the run's facts and its parameters with units, then one CSV table whose
column names carry their units, ``v (V)``. Any CSV reader that skips comment lines
reads it; pandas::

    df = pd.read_csv("run.csv", comment="#")     # columns "t (s)", "v (V)", "i (A)", ...

Text cells are quoted (a ``#`` inside a quoted cell is not a comment to pandas), and
floats are written with Python's repr, so every value reads back exactly.
:func:`read_csv` also gives back the header (parameters with units, the columns' units).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: the first line of the header, then "#Parameters:", then "#Data:"
PROCEDURE_PREFIX = "#Procedure: "
_UNIT_RE = re.compile(r"^(?P<name>.*?) \((?P<unit>[^()]*)\)$")


def column_label(name: str, unit: str) -> str:
    """``name (unit)``, or the bare name for a column without units."""
    return f"{name} ({unit})" if unit else name


def _one_line(text: Any) -> str:
    return " ".join(str(text).splitlines())


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_value_text(v) for v in np.asarray(value, dtype=object).ravel().tolist()) + "]"
    return _one_line(value)


def header_lines(info: Any) -> list[str]:
    """The commented header for a run (``info``: a :class:`labpcu.data.store.RunInfo`)."""
    lines = [f"{PROCEDURE_PREFIX}<labpcu.protocols.{info.protocol}>",
             f"#Run: {info.run_id}",
             f"#Status: {info.status}" + (f" ({_one_line(info.error)})" if info.error else ""),
             f"#Devices: {', '.join(info.devices)}",
             f"#Started: {info.started}",
             f"#Finished: {info.finished or '-'}",
             f"#labpcu: {info.labpcu_version}"]
    bench = info.bench or {}
    if bench:
        sim = f" (simulated, seed {bench.get('seed')})" if bench.get("simulated") else ""
        lines.append(f"#Bench: {_one_line(bench.get('name', '?'))}{sim}")
    for key, value in (getattr(info, "metadata", None) or {}).items():
        if isinstance(value, (str, int, float)) and key not in ("campaign",):
            lines.append(f"#{_one_line(str(key).capitalize())}: {_value_text(value)}")
    lines.append("#Parameters:")
    units = info.parameter_units or {}
    for name, value in info.parameters.items():
        unit = units.get(name, "")
        lines.append(f"#\t{name}: {_value_text(value)}{' ' + unit if unit else ''}")
    lines.append("#Data:")
    return lines


def write_csv(df: pd.DataFrame, info: Any, path: str | Path) -> Path:
    """Write ``df`` (a run's columns, as :meth:`Store.read` gives them) to ``path`` with
    the commented header of ``info``; column units come from ``info.columns`` (else
    ``df.attrs["units"]``). Raises OSError when the file cannot be written."""
    path = Path(path)
    units: Mapping[str, str] = {**(df.attrs.get("units") or {}), **(info.columns or {})}
    out = df.rename(columns={c: column_label(str(c), units.get(str(c), "") or "") for c in df.columns})
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\n".join(header_lines(info)) + "\n")
        out.to_csv(fh, index=False, quoting=csv.QUOTE_NONNUMERIC, float_format=None, lineterminator="\n")
    return path


def read_csv(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a file written by :func:`write_csv`: the data with bare column names
    (``df.attrs["units"]`` maps them to units) and the header as a dict (``procedure``,
    ``run``..., ``parameters``: name -> text as written, value and unit)."""
    header: dict[str, Any] = {"parameters": {}}
    with open(path, encoding="utf-8") as fh:
        section = ""
        for line in fh:
            if not line.startswith("#"):
                break
            text = line[1:].rstrip("\n")
            if text.startswith("\t") and section == "parameters":
                name, _, value = text[1:].partition(": ")
                header["parameters"][name] = value
            elif text in ("Parameters:", "Data:"):
                section = text[:-1].lower()
            else:
                key, _, value = text.partition(": ")
                header[key.lower()] = value
    df = pd.read_csv(path, comment="#")
    units = {}
    names = []
    for label in df.columns:
        m = _UNIT_RE.match(str(label))
        name, unit = (m["name"], m["unit"]) if m else (str(label), "")
        names.append(name)
        units[name] = unit
    df.columns = names
    df.attrs["units"] = units
    return df, header


__all__ = ["column_label", "header_lines", "read_csv", "write_csv"]
