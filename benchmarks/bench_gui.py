"""The GUI under load: how many points per second the live plot ingests while the event
loop stays responsive, and how long a store of 10,000 runs takes to open in the data
browser. Offscreen Qt (QT_QPA_PLATFORM=offscreen), each against a baseline measured in
the same run.

Live plot: a producer thread sends runner ``Points`` events to the GUI thread as fast
as the GUI takes them (at most 256 events in flight, so a slow plot slows the producer
instead of piling up a queue), either one queued Qt signal per event (as the worker's
``event`` signal does today) or through :class:`labpcu.gui.live_plot.EventBatcher`
(a queue, one wake-up per batch); blocks of 100 points, and blocks of one point (as
point-by-point protocols yield them). A 1 ms QTimer records the event loop's gaps. Rate = points ingested / wall time until the last one is drawn. Goal:
>= 10,000 points/s with no gap over 50 ms. Baseline: a naive plot that appends each
point to a list and calls ``setData`` with everything on every point (fewer points:
it is quadratic).

Browser: ``DataBrowser(store)`` on a store of 10,000 runs (made once with the Store API
and kept, ~10 min; ``--store`` reuses a file): the window painted (the run list is read
in a background thread), then the list painted, with the event loop's longest gap
meanwhile. Goal: under 1 s. Baseline: ``Store.runs()`` alone, the read the browser
cannot avoid; and the browser's own work with that read answered from memory.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--store runs10k.h5]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PyQt5.QtCore import QEventLoop, QObject, QTimer, pyqtSignal  # noqa: E402
from PyQt5.QtWidgets import QApplication  # noqa: E402

from _table import report  # noqa: E402
from labpcu.data.columns import Column  # noqa: E402
from labpcu.data.store import Store  # noqa: E402
from labpcu.gui.data_browser import DataBrowser  # noqa: E402
from labpcu.gui.live_plot import EventBatcher, LivePlot  # noqa: E402
from labpcu.protocols.base import PlotSpec  # noqa: E402
from labpcu.runner import Points, RunStarted, StatusChanged  # noqa: E402

GOAL_RATE = 10_000  # points/s
GOAL_STALL = 0.050  # s
GOAL_OPEN = 1.0  # s
IN_FLIGHT = 256
N_RUNS = 10_000
DEFAULT_STORE = Path(os.environ.get("TMPDIR", "/tmp")) / "labpcu_bench_gui" / "runs10k.h5"
COLUMNS = (Column("t", "s"), Column("g", "S"), Column("device", dtype="str"))
SPEC = PlotSpec("t", ("g",), group="device", title="retention")


class Relay(QObject):
    event = pyqtSignal(object)


class NaivePlot:
    """The baseline: every point appended to lists, then setData with all of them."""

    def __init__(self) -> None:
        self.widget = pg.PlotWidget()
        self.curves: dict[str, Any] = {}
        self.xs: dict[str, list[float]] = {}
        self.ys: dict[str, list[float]] = {}
        self.status = ""
        self.points = 0
        self.redraws = 0

    def on_event(self, event: Any) -> None:
        if isinstance(event, StatusChanged):
            self.status = event.status
            return
        if not isinstance(event, Points):
            return
        b = event.block
        t, g, dev = np.atleast_1d(b["t"]), np.atleast_1d(b["g"]), b["device"]
        for x, y in zip(t, g):
            if dev not in self.curves:
                self.curves[dev] = self.widget.plot(pen=pg.intColor(len(self.curves)))
                self.xs[dev], self.ys[dev] = [], []
            self.xs[dev].append(float(x))
            self.ys[dev].append(float(y))
            self.curves[dev].setData(np.array(self.xs[dev]), np.array(self.ys[dev]))
            self.points += 1
            self.redraws += 1


def ingest(app: QApplication, plot: Any, n_points: int, block: int, batched: bool = False) -> dict[str, float]:
    """Feed ``n_points`` in blocks of ``block`` from a thread, one queued signal per
    event (as the worker's ``event`` signal) or through an :class:`EventBatcher`;
    returns the rate and the event loop's gaps."""
    sem = threading.Semaphore(IN_FLIGHT)

    def slot(event: Any) -> None:
        try:
            plot.on_event(event)
        finally:
            sem.release()

    if batched:
        batcher = EventBatcher()
        batcher.events.connect(lambda events: [slot(e) for e in events])
        emit = batcher
    else:
        relay = Relay()
        relay.event.connect(slot)
        emit = relay.event.emit
    run_id = "00001-retention"
    if isinstance(plot, LivePlot):
        plot.start_run(run_id, "retention", ("S01", "S02"), COLUMNS, spec=SPEC)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    watch = QTimer()
    watch.setInterval(1)
    watch.timeout.connect(tick)
    rng = np.random.default_rng(0)
    n_blocks = n_points // block
    data = [(np.arange(k * block, (k + 1) * block) * 0.01, 1e-4 * (1 + 0.01 * rng.standard_normal(block)))
            for k in range(n_blocks)]

    def produce() -> None:
        for k, (t, g) in enumerate(data):
            sem.acquire()
            if block == 1:
                values: dict[str, Any] = {"t": float(t[0]), "g": float(g[0])}
            else:
                values = {"t": t, "g": g}
            values["device"] = "S01" if (k // max(1, 1000 // block)) % 2 == 0 else "S02"
            emit(Points(run_id, values, (k + 1) * block))
        sem.acquire()
        emit(StatusChanged(run_id, "completed"))

    app.processEvents()
    watch.start()
    last[0] = start = time.perf_counter()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    while producer.is_alive() or plot.status != "completed":
        app.processEvents(QEventLoop.WaitForMoreEvents)  # as exec() does: sleep until an event comes
    elapsed = time.perf_counter() - start
    watch.stop()
    app.processEvents()
    assert plot.points == n_blocks * block, (plot.points, n_blocks * block)
    gaps_ms = np.array(gaps) * 1000
    return {"points": plot.points, "seconds": elapsed, "rate": plot.points / elapsed,
            "max_gap_ms": float(gaps_ms.max()) if len(gaps_ms) else elapsed * 1000,
            "p99_gap_ms": float(np.percentile(gaps_ms, 99)) if len(gaps_ms) else elapsed * 1000,
            "redraws": plot.redraws}


def make_store(path: Path, n: int = N_RUNS) -> Path:
    """A store of ``n`` short runs (4 protocols, 20 devices, 3 samples, every 10th
    aborted), through the Store API; resumed if a previous build was cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(path, durable=False)  # no fsync per run: minutes, not most of an hour
    have = len(store.run_ids())
    cols = [Column("v", "V"), Column("i", "A"), Column("device", dtype="str")]
    protocols = ("iv_sweep", "retention", "ispp", "multiplier")
    if have < n:
        print(f"making {n - have:,} runs in {path} (once; a few minutes)", flush=True)
    for k in range(have, n):
        dev = f"S{k % 20 + 1:02d}"
        rec = store.begin_run(protocols[k % 4], cols, devices=[dev], parameters={"points": 3},
                              metadata={"sample": {"name": f"W{k % 3}", "operator": "bench"}})
        rec.append({"v": np.arange(3.0), "i": np.arange(3.0) * 1e-6, "device": dev})
        rec.finish("completed" if k % 10 else "aborted", error="" if k % 10 else "aborted by the operator")
    return path


def _open(app: QApplication, path: Path) -> tuple[DataBrowser, float, float, float]:
    """(browser, seconds to the window painted, seconds to the list painted, the event
    loop's longest gap meanwhile in ms)."""
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    watch = QTimer()
    watch.setInterval(1)
    watch.timeout.connect(tick)
    watch.start()
    last[0] = t = time.perf_counter()
    browser = DataBrowser(path)
    browser.resize(1300, 700)
    browser.show()
    app.processEvents()  # the first paint
    shown = time.perf_counter() - t
    while browser.loading or browser.refreshes == 0:
        app.processEvents(QEventLoop.WaitForMoreEvents)  # as exec() does: sleep until an event comes
    app.processEvents()  # the list painted
    listed = time.perf_counter() - t
    tick()
    watch.stop()
    return browser, shown, listed, max(gaps) * 1000


def open_browser(app: QApplication, path: Path, repeat: int = 3) -> dict[str, float]:
    """Best of ``repeat``: Store.runs() alone; the browser opened (window, then list);
    the browser with Store.runs() answered from memory (its own work: model, filters,
    paint); a change of filters."""
    best = {k: float("inf") for k in ("runs_only", "shown", "listed", "gap", "own", "filter")}
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        df = Store(path).runs()
        best["runs_only"] = min(best["runs_only"], time.perf_counter() - t)
        n = len(df)
        browser, shown, listed, gap = _open(app, path)
        best["shown"], best["listed"], best["gap"] = (min(best["shown"], shown), min(best["listed"], listed),
                                                      min(best["gap"], gap))
        assert len(browser.run_ids()) >= n
        browser.close()
        browser.deleteLater()
        real_runs = Store.runs
        Store.runs = lambda self, *a, **k: df.copy()  # type: ignore[method-assign]
        try:
            browser, _, own, _ = _open(app, path)
        finally:
            Store.runs = real_runs  # type: ignore[method-assign]
        best["own"] = min(best["own"], own)
        t = time.perf_counter()
        browser.set_filters(protocol="retention", device="S02", sample="W1")
        app.processEvents()
        best["filter"] = min(best["filter"], time.perf_counter() - t)
        browser.close()
        browser.deleteLater()
        app.processEvents()
    return {"runs": n, **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="a store of 10,000 runs (made if missing)")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--naive-points", type=int, default=10_000, help="the baseline is quadratic: fewer")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    rows = []

    def verdict(rate: float, stall_ms: float) -> str:
        return "ok" if rate >= GOAL_RATE and stall_ms <= GOAL_STALL * 1000 else "MISSED"

    results = {}
    for block, batched in ((100, False), (1, False), (1, True)):
        plot = LivePlot()
        plot.resize(900, 520)
        plot.show()
        ingest(app, plot, 1_000, block, batched)  # warm up: the window is on screen before a run starts
        results[block, batched] = r = ingest(app, plot, args.points, block, batched)
        plot.close()
        how = "EventBatcher" if batched else "a signal per event"
        rows.append({"case": f"LivePlot, blocks of {block}, {how}", "points": r["points"], "points/s": r["rate"],
                     "max gap (ms)": r["max_gap_ms"], "p99 gap (ms)": r["p99_gap_ms"], "redraws": r["redraws"],
                     "goal": f">= {GOAL_RATE:,}/s, gaps <= {GOAL_STALL * 1000:.0f} ms",
                     "verdict": verdict(r["rate"], r["max_gap_ms"])})
    naive = NaivePlot()
    naive.widget.resize(900, 520)
    naive.widget.show()
    ingest(app, NaivePlot(), 100, 1)
    nr = ingest(app, naive, args.naive_points, 1)
    naive.widget.close()
    rows.append({"case": "baseline: setData on every point", "points": nr["points"], "points/s": nr["rate"],
                 "max gap (ms)": nr["max_gap_ms"], "p99 gap (ms)": nr["p99_gap_ms"], "redraws": nr["redraws"],
                 "goal": "-", "verdict": f"LivePlot x{results[1, True]['rate'] / nr['rate']:.0f} (blocks of 1, batched)"})
    report("Live plot ingestion (offscreen; producer thread -> Qt signal -> GUI thread)", rows, "bench_gui_live.json")

    path = make_store(args.store)
    b = open_browser(app, path)
    rows = [{"case": f"DataBrowser: window painted ({b['runs']:,} runs)", "seconds": b["shown"],
             "goal": f"< {GOAL_OPEN:g} s", "verdict": "ok" if b["shown"] < GOAL_OPEN else "MISSED"},
            {"case": "DataBrowser: run list painted", "seconds": b["listed"], "goal": f"< {GOAL_OPEN:g} s",
             "verdict": ("ok" if b["listed"] < GOAL_OPEN else "MISSED")
             + f" (longest event-loop gap meanwhile {b['gap']:.0f} ms)"},
            {"case": "baseline: Store.runs() alone", "seconds": b["runs_only"], "goal": "-",
             "verdict": f"{b['runs_only'] / b['listed']:.0%} of the listing"},
            {"case": "the browser's own work (Store.runs() answered from memory)", "seconds": b["own"],
             "goal": f"< {GOAL_OPEN:g} s", "verdict": "ok" if b["own"] < GOAL_OPEN else "MISSED"},
            {"case": "change the filters (protocol, device, sample)", "seconds": b["filter"], "goal": "-",
             "verdict": "no store read"}]
    report("Data browser on a large store", rows, "bench_gui_browser.json")


if __name__ == "__main__":
    main()
