"""``labpcu demo``: the full characterization of the simulated wafer, no hardware needed.

It opens the shipped simulated bench file as any bench would, runs
:data:`labpcu.characterize.STEPS` (configuration, programming, retention, every
operator on its units, the VMM) through the runner into one HDF5 file, builds the
operator codebook from those runs and exports it, and writes the figures-of-merit
report. The folder it writes::

    labpcu-demo/
      wafer.h5              every run (open it with labpcu show/list, pandas or h5py)
      codebook/codebook.h5  the operator codebook (HDF5), and codebook/npz/ its portable twin
      report/report.md      the figures table (also report.html) and the plots (*.png)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from labpcu.bench import Bench
from labpcu.characterize import STEPS, Step, characterize
from labpcu.progress import ProgressBar
from labpcu.runner import Runner

if TYPE_CHECKING:
    from labpcu.sim.physics import Physics

DEFAULT_FOLDER = "labpcu-demo"
#: the run store inside the demo folder
STORE_NAME = "wafer.h5"
#: the protocols whose runs feed the codebook
CODEBOOK_SOURCES = ("vmm", "multiplier", "divider", "softmax", "activation", "weight_statistics")


def run_demo(seed: int = 0, out: str | Path | None = None, console: Console | None = None,
             physics: Physics | None = None, budget: bool = False) -> int:
    """Characterize the simulated wafer into ``out``. Exit code 0 when every band of
    pcu.md is met, 1 otherwise. ``physics``: the simulated wafer's conditions and
    mechanisms (default: the bench file's). ``budget``: also measure each operator's
    error budget (a quick one: :func:`labpcu.budget.budget_settings`) for the report."""
    from labpcu.data.codebook import build_codebook
    from labpcu.data.codebook_io import export_codebook, save_to_store
    from labpcu.data.store import Store
    from labpcu.report import format_table, write_report

    console = console or Console()
    folder = Path(out) if out else Path(DEFAULT_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    store_path = folder / STORE_NAME
    if store_path.exists():
        store_path.unlink()  # a demo is a fresh wafer: never mix two demos' runs
    wall = time.perf_counter()

    def announce(k: int, step: Step) -> None:
        console.print(f"[{k + 1:2d}/{len(STEPS)}] {step.label}: {step.protocol} on {len(step.devices)} PCUs")

    with Bench.from_file(seed=seed, physics=physics) as bench:
        runner = Runner(bench, store_path)
        runner.subscribe(ProgressBar(console))
        campaign = characterize(runner, STEPS, announce)
        bench_time = bench.clock.now()
    store = Store(store_path)
    failed = [(s.label, o.status, o.error) for s, o in campaign.outcomes if o.status != "completed"]
    for label, status, error in failed:
        console.print(f"[red]{label}: {status}: {error}")

    sources = [o.run_id for s, o in campaign.outcomes if s.protocol in CODEBOOK_SOURCES and o.status == "completed"]
    if sources:
        codebook = build_codebook(store_path, sources)
        save_to_store(codebook, store_path, "demo")
        export_codebook(codebook, folder / "codebook", format="both", name="codebook")
    else:
        console.print("[red]no operator run completed: no codebook")
    if budget:
        from labpcu.budget import DOCUMENT, budget_settings, error_budget

        used = {s.protocol: list(store.info(o.run_id).devices) for s, o in campaign.outcomes
                if s.protocol in OPERATORS and o.status == "completed"}
        devices, params = budget_settings(devices=used or None)
        console.print("error budget: each operator again with each mechanism switched off (quick: 3 units)")
        result = error_budget(seed, devices, params, base=physics, folder=folder / "budget")
        store.write_document(DOCUMENT, result.to_dict())
    report = write_report(store, campaign.roles, folder / "report", title=f"Simulated wafer, seed {seed}", seed=seed)
    wall = time.perf_counter() - wall

    console.print(format_table(report.rows), soft_wrap=True, highlight=False, markup=False)
    console.print(f"{len(campaign.outcomes)} runs, {bench_time:,.0f} s of bench time in {wall:.0f} s of wall time")
    console.print(f"wrote {store_path}, {folder / 'codebook'}, {report.markdown}")
    return 0 if report.all_passed and not failed else 1
