"""Error budget of the analog operators on the simulated wafer: which physics sets each
headline figure.

An operator's error is measured once with every mechanism on (the baseline) and again
with one mechanism switched off at a time, on a fresh copy of the same simulated wafer
(same seed, same devices, same inputs). The drop from the baseline is what that
mechanism costs; mechanisms interact, so the drops need not add up to the baseline.
Only the simulator can do this: a real wafer's physics has no switch. Input
quantization is the one entry that is not physics: it is the protocol's DAC resolution
(the VMM's pulse-width code), switched off by giving it 16 bits.

``labpcu demo --budget`` runs it after the characterization and the report shows it;
``labpcu budget`` runs it alone.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labpcu.sim.physics import Physics

#: the budget's entries: a name a device engineer reads, and the mechanisms switched off
#: (``None``: not a physics switch, see :data:`PARAMETER_ENTRIES`)
ENTRIES: dict[str, tuple[str, ...] | None] = {
    "ideality spread": ("ideality_spread",),
    "M1 series drop": ("m1_series",),
    "read noise": ("read_noise", "instrument_noise"),
    "instrument accuracy": ("instrument_accuracy",),
    "input quantization": None,
    "drift": ("drift",),
    "M1 kinetics": ("m1_kinetics",),
    "temperature": ("temperature",),
    "diode leakage": ("diode_leakage",),
    "M1 non-ohmic": ("m1_nonohmic",),
    "capacitance": ("capacitance",),
    "series resistance": ("series_resistance",),
    "relay leakage": ("relay_leakage",),
}
#: entries that are protocol parameters, per protocol: the parameters that switch them off
PARAMETER_ENTRIES: dict[str, dict[str, dict[str, Any]]] = {
    "input quantization": {"vmm": {"input_bits": 16, "compare_bits": ()}},
}
#: entries that do not apply to a protocol (the VMM's weight *is* M1's conductance)
NOT_APPLICABLE: dict[str, tuple[str, ...]] = {"vmm": ("M1 series drop",)}
#: the figure each operator's budget explains (results summary key)
FIGURE_KEY = "mean_relative_error"
OPERATORS = ("vmm", "multiplier", "divider", "softmax")
#: the name of the store document the budget is kept in
DOCUMENT = "error_budget"


@dataclass
class BudgetRow:
    """One operator's error with each entry switched off (NaN: not applicable/failed)."""

    operator: str
    baseline: float
    without: dict[str, float] = field(default_factory=dict)

    def share(self, entry: str) -> float:
        """How much of the baseline error the entry accounts for (baseline − without)."""
        return self.baseline - self.without.get(entry, math.nan)

    def largest(self) -> str | None:
        """The entry whose removal lowers the error most."""
        shares = {e: self.share(e) for e in self.without if math.isfinite(self.share(e))}
        return max(shares, key=shares.__getitem__) if shares else None


@dataclass
class Budget:
    seed: int
    rows: list[BudgetRow]
    devices: dict[str, list[str]]
    params: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "figure": FIGURE_KEY, "entries": list(ENTRIES),
                "mechanisms": {k: list(v) if v else None for k, v in ENTRIES.items()},
                "rows": [{"operator": r.operator, "baseline": r.baseline, "without": r.without} for r in self.rows],
                "devices": self.devices, "params": self.params,
                "method": "each entry: the figure on a fresh copy of the same simulated wafer (same seed, devices and "
                          "inputs) with that entry's mechanisms switched off; the drop from the baseline is its share"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        rows = [BudgetRow(r["operator"], float(r["baseline"]), {k: float(v) for k, v in r["without"].items()})
                for r in data["rows"]]
        return cls(int(data["seed"]), rows, dict(data.get("devices", {})), dict(data.get("params", {})))


#: the quick budget's share of the demo's work: three units, one pass (the baseline is
#: measured with the same settings, so the drops are comparable within the budget)
QUICK_BUDGET_UNITS = 3


def budget_settings(full: bool = False, devices: dict[str, list[str]] | None = None,
                    ) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Devices and parameters of each operator's budget runs: the demo's own steps
    (``full``), or a quick version on the first three units with one pass."""
    from labpcu.characterize import STEPS

    steps = {s.protocol: s for s in STEPS if s.protocol in OPERATORS}
    out_devices = {op: list((devices or {}).get(op, steps[op].devices)) for op in OPERATORS}
    params = {op: {k: v for k, v in steps[op].params.items() if k != "configure"} for op in OPERATORS}
    # the steps name pools with spares: the crossbar is one column, the operators 10 units
    out_devices["vmm"] = out_devices["vmm"][:3]
    for op in ("multiplier", "divider", "softmax"):
        out_devices[op] = out_devices[op][:3 * (QUICK_BUDGET_UNITS if not full else 10)]
    if not full:
        for op in ("multiplier", "divider", "softmax"):
            params[op]["repeats" if op != "softmax" else "vectors"] = 1 if op != "softmax" else 10
        params["vmm"].update(input_sets=(20,), compare_bits=())
    return out_devices, params


Measure = Callable[[str, Physics, dict[str, Any]], float]


def measure_on_fresh_wafer(seed: int, devices: Mapping[str, Sequence[str]], folder: Path) -> Measure:
    """A measuring function: runs ``operator`` on a fresh simulated bench of ``seed``
    with ``physics`` and returns its figure (the runs go to ``folder``/budget.h5)."""
    from labpcu.bench import Bench
    from labpcu.runner import Runner

    store_path = folder / "budget.h5"

    def measure(operator: str, physics: Physics, params: dict[str, Any]) -> float:
        with Bench.from_file(seed=seed, physics=physics) as bench:
            outcome = Runner(bench, store_path).run(operator, params, list(devices[operator]))
        if outcome.status != "completed":
            return math.nan
        from labpcu.data.store import Store

        summary = Store(store_path).results(outcome.run_id).get("summary", {})
        value = summary.get(FIGURE_KEY, math.nan)
        return float(value) if value is not None else math.nan

    return measure


def error_budget(seed: int, devices: Mapping[str, Sequence[str]], params: Mapping[str, dict[str, Any]] | None = None,
                 operators: Sequence[str] = OPERATORS, entries: Sequence[str] | None = None,
                 base: Physics | None = None, measure: Measure | None = None,
                 folder: str | Path | None = None,
                 on_step: Callable[[str, str], None] | None = None) -> Budget:
    """Measure each operator's figure with every mechanism on and with each entry of
    :data:`ENTRIES` (or ``entries``) switched off in turn."""
    base = base if base is not None else Physics()
    params = {op: dict((params or {}).get(op, {})) for op in operators}
    tmp = None
    if measure is None:
        if folder is None:
            tmp = tempfile.TemporaryDirectory(prefix="labpcu-budget-")
            folder = tmp.name
        Path(folder).mkdir(parents=True, exist_ok=True)
        measure = measure_on_fresh_wafer(seed, devices, Path(folder))
    names = list(entries) if entries is not None else list(ENTRIES)
    rows = []
    try:
        for op in operators:
            if on_step:
                on_step(op, "baseline")
            row = BudgetRow(op, measure(op, base, params[op]))
            for entry in names:
                if entry in NOT_APPLICABLE.get(op, ()):
                    continue
                mechanisms = ENTRIES[entry]
                if mechanisms is None:
                    change = PARAMETER_ENTRIES.get(entry, {}).get(op)
                    if change is None:
                        continue  # e.g. the log-domain operators take analog currents: no quantization
                    if on_step:
                        on_step(op, entry)
                    row.without[entry] = measure(op, base, {**params[op], **change})
                else:
                    if on_step:
                        on_step(op, entry)
                    row.without[entry] = measure(op, base.without(*mechanisms), params[op])
            rows.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return Budget(seed, rows, {op: list(devices[op]) for op in operators}, params)


def budget_table(budget: Budget) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(header, rows): one row per operator, one column per entry (the figure with that
    entry off, and its share in percentage points), and the largest share."""
    entries = [e for e in ENTRIES if any(e in r.without for r in budget.rows)]
    head = ("operator", "all on", *(f"without {e}" for e in entries), "largest share")
    rows = []
    for r in budget.rows:
        cells = [r.operator, _pct(r.baseline)]
        cells += [f"{_pct(r.without[e])} ({_pp(r.share(e))})" if e in r.without else "n/a" for e in entries]
        cells.append(r.largest() or "—")
        rows.append(tuple(cells))
    return head, tuple(rows)


def format_budget(budget: Budget) -> list[str]:
    """The budget as markdown table lines."""
    head, rows = budget_table(budget)
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %" if math.isfinite(x) else "failed"


def _pp(x: float) -> str:
    return f"{100 * x:+.2f} pp" if math.isfinite(x) else "—"
