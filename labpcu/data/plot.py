"""A run's standard plot as an image file (``labpcu show RUN --plot out.png``).

Drawn with matplotlib's Agg backend, so it needs no screen; the GUI draws the same
:class:`~labpcu.protocols.base.PlotSpec` live with pyqtgraph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from labpcu.protocols.base import PlotSpec

#: more groups than this and the legend would hide the data
MAX_LEGEND = 10


def axis_label(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def render_plot(df: pd.DataFrame, spec: PlotSpec, path: str | Path, title: str = "", dpi: int = 120) -> Path:
    """Draw ``spec`` from ``df`` (a run as :meth:`Store.read` returns it) into ``path``
    (.png, .svg or .pdf by its suffix)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    for col in (spec.x, *spec.y, *([spec.group] if spec.group else [])):
        if col not in df.columns:
            raise ValueError(f"the run has no column {col!r} for its plot")
    units = df.attrs.get("units", {})
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    groups = [(None, df)] if spec.group is None else list(df.groupby(spec.group, sort=False))
    for key, part in groups:
        x = part[spec.x].to_numpy(dtype=float)
        for ycol in spec.y:
            y = part[ycol].to_numpy(dtype=float)
            if spec.abs_y:
                y = np.abs(y)
            label = " ".join(str(s) for s in (key if key is not None else "", ycol if len(spec.y) > 1 else "") if s != "")
            if spec.kind == "scatter":
                ax.scatter(x, y, s=8, label=label or None)
            else:
                ax.plot(x, y, marker=".", markersize=3, linewidth=1, label=label or None)
    ax.set_xscale(spec.xscale)
    ax.set_yscale(spec.yscale)
    ax.set_xlabel(axis_label(spec.x, units.get(spec.x, "")))
    ylabel = ", ".join(spec.y) if len(spec.y) > 1 else spec.y[0]
    yunit = units.get(spec.y[0], "")
    ax.set_ylabel(axis_label(f"|{ylabel}|" if spec.abs_y else ylabel, yunit))
    ax.set_title(title or spec.title)
    ax.grid(True, which="both", alpha=0.3)
    if 1 < len(groups) * len(spec.y) <= MAX_LEGEND:
        ax.legend(fontsize="small", title=spec.group)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
