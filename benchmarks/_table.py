"""Printing and saving benchmark results: one table on stdout, one JSON file."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def report(title: str, rows: list[dict], filename: str) -> Path:
    """Print ``rows`` (dicts with the same keys) as a table and write them as JSON."""
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="right" if key not in ("case", "goal", "verdict") else "left")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    Console(width=160).print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / filename
    meta = {"python": platform.python_version(), "machine": platform.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.write_text(json.dumps({"title": title, "meta": meta, "rows": rows}, indent=2))
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def best_of(fn, repeat: int = 5) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
