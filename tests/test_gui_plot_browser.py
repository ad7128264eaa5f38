"""The GUI's live plot, data browser, codebook viewer and log panel (issue 13), driven
offscreen with pytest-qt: a real run on the simulated bench plotted live, 100,000
points in blocks with the event loop watched, the browser listing, filtering, opening,
overlaying and exporting runs (and never changing a run being written), a codebook's
quantile bands, and a log record from another thread.

Each test grabs its widget to a PNG: in ``$LABPCU_GUI_SHOTS`` if set (to look at them),
else in the test's temporary folder.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QObject, QTimer, pyqtSignal  # noqa: E402
from PyQt5.QtGui import QImage  # noqa: E402

from labpcu.data.columns import Column  # noqa: E402
from labpcu.data.ideal import evaluate  # noqa: E402
from labpcu.data.store import Store  # noqa: E402
from labpcu.gui.codebook_viewer import PROGRAMMING, WEIGHT_NOISE, CodebookViewer  # noqa: E402
from labpcu.gui.data_browser import DataBrowser  # noqa: E402
from labpcu.gui.live_plot import EventBatcher, LivePlot  # noqa: E402
from labpcu.gui.log_panel import LogPanel  # noqa: E402
from labpcu.runner import Points, RunStarted, StatusChanged  # noqa: E402


# ====================================================================== helpers
class Relay(QObject):
    """Carries runner events from the runner's thread to the GUI thread (as the
    worker's ``event`` signal does)."""

    event = pyqtSignal(object)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LABPCU_GUI_SHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def grab(widget, path: Path) -> Path:
    from PyQt5.QtWidgets import QApplication

    for _ in range(3):  # pyqtgraph lays its axes out on posted events: let them run first
        QApplication.processEvents()
    assert widget.grab().save(str(path)), f"could not write {path}"
    return path


def run_in_thread(fn) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


@pytest.fixture(scope="module")
def run_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real runs on the simulated bench: two I–V sweeps (sample W7), a set, a retention (W8)."""
    from labpcu.bench import Bench
    from labpcu.runner import Runner

    path = tmp_path_factory.mktemp("browser") / "day.h5"
    with Bench.from_file(seed=0) as bench:
        runner = Runner(bench, path, handle_sigint=False)
        w7 = {"sample": {"name": "W7", "operator": "ana"}}
        assert runner.run("iv_sweep", {"points": 41}, ["S01", "S02"], metadata=w7).ok
        assert runner.run("iv_sweep", {"points": 41}, ["S03"], metadata=w7).ok
        assert runner.run("binary_switch", {"action": "set"}, ["S02"]).ok
        assert runner.run("retention", {"component": "m2", "duration": "100 s"}, ["S02"],
                          metadata={"sample": {"name": "W8"}}).ok
    return path
# ====================================================================== a small codebook
CB_DEVICES = ("U01", "U02")


def _write(store: Store, protocol: str, columns: list, rows: dict, results: dict) -> str:
    rec = store.begin_run(protocol, columns, devices=list(CB_DEVICES), parameters={"temperature": 295.0},
                          bench={"simulated": True, "seed": 0, "name": "sim"})
    rec.append(rows)
    rec.finish("completed", results=results)
    return rec.run_id


def _grid(rng: np.random.Generator, repeats: int, *axes: np.ndarray) -> tuple:
    mesh = [m.ravel() for m in np.meshgrid(*axes, indexing="ij")]
    per = len(mesh[0])
    n = len(CB_DEVICES) * repeats * per
    device = np.repeat(np.array(CB_DEVICES, dtype=object), repeats * per)
    repeat = np.tile(np.repeat(np.arange(repeats), per), len(CB_DEVICES))
    xs = [np.tile(m, len(CB_DEVICES) * repeats) for m in mesh]
    return device, repeat, np.arange(n) * 1e-3, xs, rng.standard_normal(n)


def make_codebook_store(path: Path, seed: int = 0) -> Path:
    """A multiplier (2-D, 6x4 grid), a GELU (1-D, 13 points) and a weight-statistics run,
    and their codebook stored in the store as /codebooks/test."""
    from labpcu.data.codebook import build_codebook
    from labpcu.data.codebook_io import save_to_store

    rng = np.random.default_rng(seed)
    store = Store(path)
    def cols(*inp: str, extra: tuple = ()) -> list[Column]:
        return [Column("device", dtype="str"), Column("repeat", dtype="int64"), Column("t", "s"),
                *(Column(n) for n in inp), *extra, Column("y"), Column("y_ideal"), Column("energy", "J")]

    x1s, x2s = np.linspace(0.2, 1.0, 6), np.linspace(0.25, 1.0, 4)
    dev, rep, t, (x1, x2), noise = _grid(rng, 8, x1s, x2s)
    ideal = x1 * x2
    _write(store, "multiplier", cols("x1", "x2"),
           {"device": dev, "repeat": rep, "t": t, "x1": x1, "x2": x2, "y": ideal * 1.04 + 0.03 * noise,
            "y_ideal": ideal, "energy": np.full(len(x1), 2e-12)},
           {"codebook": {"multiplier": {
               "kind": "elementwise2d", "ideal": "multiply", "ideal_params": {}, "inputs": ["x1", "x2"],
               "output": "y", "ideal_column": "y_ideal", "grid": {"x1": x1s, "x2": x2s}, "input_units": ["V", "V"],
               "output_unit": "A", "input_scale": [0.5, 0.5], "input_offset": [0.0, 0.0], "output_scale": 1e-6,
               "output_offset": 0.0, "clip": [[0.2, 1.0], [0.25, 1.0]], "noise_scope": "per_call", "notes": ""}}})
    xs = np.linspace(-3.0, 3.0, 13)
    dev, rep, t, (x,), noise = _grid(rng, 20, xs)
    ideal = evaluate("gelu", x, params={"k": 1.702})
    _write(store, "activation", cols("x", extra=(Column("function", dtype="str"),)),
           {"device": dev, "repeat": rep, "t": t, "x": x, "function": np.array(["gelu"] * len(x), dtype=object),
            "y": ideal + 0.05 * np.tanh(x) + 0.04 * noise, "y_ideal": ideal, "energy": np.full(len(x), 1e-12)},
           {"codebook": {"gelu": {
               "kind": "elementwise1d", "ideal": "gelu", "ideal_params": {"k": 1.702}, "inputs": ["x"],
               "output": "y", "ideal_column": "y_ideal", "grid": {"x": xs}, "where": {"function": "gelu"},
               "input_units": ["V"], "output_unit": "A", "input_scale": [0.25], "input_offset": [0.0],
               "output_scale": 1e-5, "output_offset": 0.0, "clip": [[-3.0, 3.0]], "noise_scope": "per_call",
               "notes": ""}}})
    levels, sigma = 6, 0.03
    fractions = np.linspace(0.1, 0.9, levels)
    rows = {k: [] for k in ("device", "repeat", "level", "fraction", "target", "achieved", "final", "pulses",
                            "status", "g_min", "g_max", "t")}
    for d in CB_DEVICES:
        g_min, g_max = 1e-6 * rng.uniform(1, 2), 1e-4 * rng.uniform(1, 2)
        for r in range(5):
            target = g_min + fractions * (g_max - g_min)
            achieved = target + sigma * (g_max - g_min) * rng.standard_normal(levels)
            for key, value in (("device", np.array([d] * levels, dtype=object)), ("repeat", np.full(levels, r)),
                               ("level", np.arange(levels)), ("fraction", fractions), ("target", target),
                               ("achieved", achieved), ("final", achieved), ("pulses", np.full(levels, 5)),
                               ("status", np.array(["reached"] * levels, dtype=object)),
                               ("g_min", np.full(levels, g_min)), ("g_max", np.full(levels, g_max)),
                               ("t", np.arange(levels) * 10.0)):
                rows[key].append(value)
    data = {k: np.concatenate(v) for k, v in rows.items()}
    rel = (data["achieved"] - data["target"]) / (data["g_max"] - data["g_min"])
    _write(store, "weight_statistics",
           [Column("device", dtype="str"), Column("repeat", dtype="int64"), Column("level", dtype="int64"),
            Column("fraction"), Column("target", "S"), Column("achieved", "S"), Column("final", "S"),
            Column("pulses", dtype="int64"), Column("status", dtype="str"), Column("g_min", "S"),
            Column("g_max", "S"), Column("t", "s")], data, {"sigma_rel_range": float(np.std(rel, ddof=1))})
    save_to_store(build_codebook(path), path, "test")
    return path


# ====================================================================== live plot
def test_live_plot_holds_every_point_of_a_real_run(qtbot, tmp_path, shots) -> None:
    """An I–V sweep of two devices on the simulated bench, run by a Runner in another
    thread whose events cross to the GUI thread by a Qt signal: one trace per device,
    each holding every point the store holds, |i| as the log axis needs."""
    from labpcu.bench import Bench
    from labpcu.runner import Runner

    plot = LivePlot()
    qtbot.addWidget(plot)
    plot.resize(820, 520)
    plot.show()
    relay = Relay()
    relay.event.connect(plot.on_event)
    seen: list[str] = []
    relay.event.connect(lambda e: seen.append(type(e).__name__))
    with Bench.from_file(seed=0) as bench:
        runner = Runner(bench, tmp_path / "live.h5", handle_sigint=False)
        runner.subscribe(relay.event.emit)
        thread, box = run_in_thread(lambda: runner.run("iv_sweep", {"points": 61}, ["S01", "S02"]))
        qtbot.waitUntil(lambda: not thread.is_alive(), timeout=60_000)
    assert "error" not in box, box.get("error")
    outcome = box["value"]
    assert outcome.ok, outcome.error
    qtbot.waitUntil(lambda: plot.status == "completed", timeout=5_000)
    assert plot.run_id == outcome.run_id and plot.protocol == "iv_sweep"
    assert "Points" in seen and "RunStarted" in seen

    data = Store(tmp_path / "live.h5").read(outcome.run_id)
    assert plot.points == len(data) == 122 and plot.rows == 122
    assert set(plot.traces()) == {("S01", "i"), ("S02", "i")}
    for device in ("S01", "S02"):
        part = data[data["device"] == device]
        x, y = plot.data("i", device)
        np.testing.assert_array_equal(x, part["v"].to_numpy())
        np.testing.assert_array_equal(y, np.abs(part["i"].to_numpy()))
        cx, cy = plot.traces()[(device, "i")].getOriginalDataset()  # what the curve holds
        assert len(cx) == len(part)
        np.testing.assert_array_equal(cy, y)
    item = plot.item
    assert item.ctrl.logYCheck.isChecked() and not item.ctrl.logXCheck.isChecked()
    assert item.getAxis("bottom").labelText == "v" and item.getAxis("bottom").labelUnits == "V"
    assert item.getAxis("left").labelText == "|i| (A)"
    assert 1 <= plot.redraws <= plot.points  # timer frames, not one redraw per point
    assert plot.bar.value() == plot.bar.maximum()
    grab(plot, shots / "live_plot_iv_sweep.png")


def test_100k_points_in_blocks_keep_the_event_loop_responsive(qtbot, shots) -> None:
    """A producer thread sends 100,000 points of a two-trace run in blocks of 100 (one
    every ms); a 1 ms timer records the event loop's gaps. Every point lands in the
    buffers, the plot redraws at most once per frame (not once per block), draws
    downsampled and clipped, and no gap comes near a frozen window."""
    from labpcu.protocols.base import PlotSpec

    plot = LivePlot(max_fps=30)
    qtbot.addWidget(plot)
    plot.resize(820, 520)
    plot.show()
    relay = Relay()
    relay.event.connect(plot.on_event)
    spec = PlotSpec("t", ("g",), group="device", title="retention, 100,000 points")
    plot.start_run("00001-retention", "retention", ("S01", "S02"),
                   (Column("t", "s"), Column("g", "S"), Column("device", dtype="str")), spec=spec)
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
    n_blocks, per_block = 1000, 100
    rng = np.random.default_rng(0)

    def produce() -> None:
        for k in range(n_blocks):
            t = np.arange(k * per_block, (k + 1) * per_block) * 0.01
            device = "S01" if k % 2 == 0 else "S02"
            g = 1e-4 * (1 + 0.01 * rng.standard_normal(per_block)) * (1 if device == "S01" else 0.5)
            relay.event.emit(Points("00001-retention", {"t": t, "g": g, "device": device}, (k + 1) * per_block))
            time.sleep(0.001)
        relay.event.emit(StatusChanged("00001-retention", "completed"))

    start = time.perf_counter()
    thread, box = run_in_thread(produce)
    qtbot.waitUntil(lambda: not thread.is_alive() and plot.status == "completed", timeout=60_000)
    elapsed = time.perf_counter() - start
    watch.stop()
    assert "error" not in box
    assert plot.points == n_blocks * per_block == 100_000
    for device in ("S01", "S02"):
        x, y = plot.data("g", device)
        assert len(x) == len(y) == 50_000
        assert np.all(np.diff(x) > 0)
    frames = elapsed * 1000 / plot._timer.interval() + 2
    assert plot.redraws <= frames, (plot.redraws, frames)
    assert plot.redraws < n_blocks / 5  # batched: far fewer redraws than blocks
    curve = plot.traces()[("S01", "g")]
    assert curve.opts["autoDownsample"] and curve.opts["downsampleMethod"] == "peak" and curve.opts["clipToView"]
    assert len(gaps) > 50 and max(gaps) < 1.0, max(gaps)  # generous: a 2-core CI box shares its time
    grab(plot, shots / "live_plot_100k.png")


def test_event_batcher_delivers_every_one_point_block_in_batches(qtbot) -> None:
    """20,000 one-point blocks queued from a thread through an EventBatcher reach the
    plot in order, in far fewer deliveries than events."""
    from labpcu.protocols.base import PlotSpec

    plot = LivePlot()
    qtbot.addWidget(plot)
    spec = PlotSpec("v", ("i",), group="device", yscale="log", abs_y=True)
    batcher = EventBatcher()
    batches: list[int] = []
    batcher.events.connect(lambda events: batches.append(len(events)))
    batcher.events.connect(plot.on_events)
    n = 20_000
    columns = (Column("v", "V"), Column("i", "A"), Column("device", dtype="str"))

    def produce() -> None:
        batcher(RunStarted("00007-iv_sweep", "iv_sweep", ("S01", "S02"), {}, columns))
        for k in range(n):
            batcher(Points("00007-iv_sweep", {"v": k * 1e-3, "i": -k * 1e-9, "device": f"S0{1 + k % 2}"}, k + 1))
        batcher(StatusChanged("00007-iv_sweep", "completed"))

    plot.start_run("00007-iv_sweep", "iv_sweep", ("S01", "S02"), columns, spec=spec)
    thread, box = run_in_thread(produce)
    qtbot.waitUntil(lambda: not thread.is_alive() and plot.status == "completed", timeout=30_000)
    assert plot.points == n and sum(batches) == n + 2 and len(batches) < n / 10
    x, y = plot.data("i", "S02")
    np.testing.assert_array_equal(x, np.arange(1, n, 2) * 1e-3)
    np.testing.assert_array_equal(y, np.arange(1, n, 2) * 1e-9)  # |i|
    x, y = plot.data("i", "S01")
    assert np.isnan(y[0]) and np.all(y[1:] > 0)  # |0| has no place on a log axis


# ====================================================================== data browser
def test_browser_lists_filters_opens_overlays_and_exports(qtbot, run_store, tmp_path, shots) -> None:
    browser = DataBrowser(run_store)
    qtbot.addWidget(browser)
    browser.resize(1300, 700)
    browser.show()
    qtbot.waitUntil(lambda: not browser.loading and browser.refreshes == 1, timeout=10_000)  # read in a thread
    ids = browser.run_ids()
    assert sorted(ids) == ["00001-iv_sweep", "00002-iv_sweep", "00003-binary_switch", "00004-retention"]
    assert ids[0] == "00004-retention"  # newest first
    assert [browser.protocol.itemText(k) for k in range(browser.protocol.count())] == \
        ["(all)", "binary_switch", "iv_sweep", "retention"]

    browser.set_filters(protocol="iv_sweep")
    assert sorted(browser.run_ids()) == ["00001-iv_sweep", "00002-iv_sweep"]
    browser.set_filters(device="s03")
    assert browser.run_ids() == ["00002-iv_sweep"]
    browser.set_filters(sample="w8")
    assert browser.run_ids() == ["00004-retention"]
    browser.set_filters(status="aborted")
    assert browser.run_ids() == []
    browser.set_filters()
    assert len(browser.run_ids()) == 4

    # one run: plot (its PlotSpec), table (its columns with units), parameters and results
    browser.select_runs(["00001-iv_sweep"])
    assert browser.open_ids == ["00001-iv_sweep"]
    data = Store(run_store).read("00001-iv_sweep")
    model = browser.table_model
    assert model.rowCount() == len(data) == 82 and model.columnCount() == len(data.columns)
    headers = [model.headerData(k, 1) for k in range(model.columnCount())]
    assert "v (V)" in headers and "i (A)" in headers and "device" in headers
    assert model.data(model.index(0, list(data.columns).index("device"))) == "S01"
    curves = browser.curves()
    assert len(curves) == 2  # one per device
    x, y = curves[0].getOriginalDataset()
    np.testing.assert_array_equal(y, np.abs(data.loc[data["device"] == "S01", "i"]).to_numpy())
    assert browser.item.ctrl.logYCheck.isChecked()
    top = [browser.tree.topLevelItem(k).text(0) for k in range(browser.tree.topLevelItemCount())]
    assert top[:3] == ["run", "parameters", "results"]
    params = browser.tree.topLevelItem(1)
    shown = {params.child(k).text(0): params.child(k).text(1) for k in range(params.childCount())}
    assert shown["points"] == "41" and shown["start"] == "-1 V"
    assert browser.tree.topLevelItem(2).childCount() > 0  # the fits
    grab(browser, shots / "browser_one_run.png")
    browser.tabs.setCurrentIndex(1)
    grab(browser, shots / "browser_table.png")
    browser.tabs.setCurrentIndex(2)
    grab(browser, shots / "browser_results.png")
    browser.tabs.setCurrentIndex(0)

    # exports
    csv = browser.export_csv(tmp_path / "run.csv")
    back = pd.read_csv(csv, comment="#")
    assert len(back) == 82 and "v (V)" in back.columns
    np.testing.assert_array_equal(back["i (A)"].to_numpy(), data["i"].to_numpy())
    png = browser.export_png(tmp_path / "plot.png")
    image = QImage(str(png))
    assert not image.isNull() and image.width() > 200

    # two runs overlaid
    browser.select_runs(["00001-iv_sweep", "00002-iv_sweep"])
    assert sorted(browser.open_ids) == ["00001-iv_sweep", "00002-iv_sweep"]
    names = sorted(c.name() for c in browser.curves())
    assert names == ["00001-iv_sweep device=S01", "00001-iv_sweep device=S02", "00002-iv_sweep device=S03"]
    grab(browser, shots / "browser_overlay.png")
    # a run of another protocol lacks the first one's plot columns: skipped, and said
    browser.select_runs(["00001-iv_sweep", "00004-retention"])
    assert browser.open_ids == ["00004-retention", "00001-iv_sweep"]  # the table's order: newest first
    assert browser.overlay_skipped == ["00001-iv_sweep"] and len(browser.curves()) == 1
    assert "not drawn" in browser.heading.text()


def test_browser_never_changes_a_run_being_written(qtbot, tmp_path) -> None:
    """A Runner writes 50 short runs in another thread while the browser refreshes every
    200 ms and opens the newest run each time (often one being written): every run
    ends completed, with all its points."""
    from labpcu.bench import Bench
    from labpcu.runner import Runner
    from toy_protocols import Reads

    path = tmp_path / "live.h5"
    n_runs, reads = 50, 4
    with Bench.from_file(seed=0) as bench:
        runner = Runner(bench, path, handle_sigint=False)
        assert runner.run(Reads, {"reads": 1, "every": 0.0}, ["S01"]).ok  # the file exists for the browser
        browser = DataBrowser(path)
        qtbot.addWidget(browser)
        browser.show()
        opened: list[str] = []
        browser.runs_opened.connect(lambda ids: opened.extend(ids))
        follow = QTimer()
        follow.timeout.connect(lambda: browser.select_runs(browser.run_ids()[:1]))
        follow.start(200)
        browser.set_auto_refresh(200)

        def write() -> list:
            return [runner.run(Reads, {"reads": reads, "every": 0.5}, ["S01"]) for _ in range(n_runs)]

        thread, box = run_in_thread(write)
        qtbot.waitUntil(lambda: not thread.is_alive(), timeout=180_000)
        follow.stop()
        browser.set_auto_refresh(0)
    assert "error" not in box, box.get("error")
    outcomes = box["value"]
    assert [o.status for o in outcomes] == ["completed"] * n_runs, [(o.run_id, o.error) for o in outcomes if not o.ok]
    runs = Store(path).runs()
    assert len(runs) == n_runs + 1 and (runs["status"] == "completed").all(), runs["status"].value_counts()
    assert (runs["n_points"].iloc[1:] == reads).all()
    assert browser.refreshes >= 3 and len(set(opened)) >= 2  # it really read meanwhile
    browser.refresh(wait=True)
    assert len(browser.run_ids()) == n_runs + 1


# ====================================================================== codebook viewer
def test_codebook_viewer_shows_bands_programming_and_noise(qtbot, tmp_path, shots) -> None:
    from labpcu.data.codebook_io import export_codebook, load_codebook

    path = make_codebook_store(tmp_path / "ops.h5")
    cb = load_codebook(path, "test")
    viewer = CodebookViewer(path)
    qtbot.addWidget(viewer)
    viewer.resize(1000, 660)
    viewer.show()
    assert viewer.books.count() == 1 and "test" in viewer.books.itemText(0)
    assert viewer.entry_names() == [*cb.operators, PROGRAMMING, WEIGHT_NOISE]

    viewer.show_entry("gelu")
    table = cb["gelu"]
    levels = list(np.asarray(table.quantile_levels))
    for (lo, hi), name in (((0.05, 0.95), "band 5–95 %"), ((0.25, 0.75), "band 25–75 %")):
        x, q_lo, q_hi = viewer.drawn[name]
        np.testing.assert_array_equal(x, table.axes[0])
        np.testing.assert_array_equal(q_lo, table.quantiles[:, levels.index(lo)])
        np.testing.assert_array_equal(q_hi, table.quantiles[:, levels.index(hi)])
        assert np.all(q_lo <= table.mean + 1e-12) and np.all(table.mean <= q_hi + 1e-12) or name != "band 5–95 %"
    fine, ideal = viewer.drawn["ideal"]
    np.testing.assert_allclose(ideal, evaluate("gelu", fine, params={"k": 1.702}))
    np.testing.assert_array_equal(viewer.drawn["mean"][1], table.mean)
    assert "mean relative error" in viewer.details.text()
    grab(viewer, shots / "codebook_gelu.png")

    viewer.show_entry("multiplier")
    mul = cb["multiplier"]
    slices = [k for k in viewer.drawn if k.startswith("slice")]
    assert len(slices) == mul.grid_shape[1]  # 4 values of x2, all shown
    x1, mean, _, _ = viewer.drawn["slice 0"]
    np.testing.assert_array_equal(mean, mul.mean[:, 0])
    grab(viewer, shots / "codebook_multiplier_slices.png")
    viewer.mode.setCurrentText("error map")
    np.testing.assert_allclose(viewer.drawn["error"], mul.mean - mul.ideal_values)
    grab(viewer, shots / "codebook_multiplier_error_map.png")
    viewer.mode.setCurrentText("slices")

    viewer.show_entry(PROGRAMMING)
    x, y, s = viewer.drawn["programming"]
    np.testing.assert_array_equal(x, cb.programming.target_fraction)
    np.testing.assert_array_equal(y, cb.programming.achieved_mean)
    assert "achieved G" in viewer.details.text()
    grab(viewer, shots / "codebook_programming.png")
    viewer.show_entry(WEIGHT_NOISE)
    assert viewer.drawn["weight_noise"] == pytest.approx(cb.weight_noise.sigma)
    grab(viewer, shots / "codebook_weight_noise.png")

    exported = export_codebook(cb, tmp_path / "exported.h5")[0]
    assert viewer.load(exported) is not None
    assert viewer.source == str(exported) and viewer.entry_names() == [*cb.operators, PROGRAMMING, WEIGHT_NOISE]
    assert viewer.load(tmp_path / "missing.h5") is None
    assert "cannot read the codebook" in viewer.summary.text()


# ====================================================================== log panel
def test_log_panel_shows_a_record_from_another_thread(qtbot, shots) -> None:
    panel = LogPanel(max_lines=100)
    qtbot.addWidget(panel)
    panel.resize(760, 240)
    panel.show()
    panel.attach("labpcu")
    log = logging.getLogger("labpcu.test_gui")
    try:
        def work() -> None:
            log.info("run 00001-iv_sweep started on S02")
            log.debug("not shown at level info")
            log.warning("device S03 failed: M2 did not set within 2 V")
            log.error("00002-retention failed: instrument communication: timeout")
            for k in range(300):
                log.info("reading %d", k)

        t = threading.Thread(target=work, name="not the GUI thread")
        t.start()
        t.join()
        qtbot.waitUntil(lambda: any("reading 299" in line for line in panel.lines()), timeout=5_000)
        lines = panel.lines()
        assert len(lines) == 100  # capped: the oldest went first
        assert not any("not shown" in line for line in lines)
        panel.clear()
        log.warning("device S03 failed: M2 did not set within 2 V")
        log.error("00002-retention failed: instrument communication: timeout")
        qtbot.waitUntil(lambda: len(panel.lines()) == 2, timeout=5_000)
        assert "WARNING labpcu.test_gui: device S03 failed" in panel.lines()[0]
        html = panel.text.document().toHtml()
        assert "#b26a00" in html and "#c62828" in html  # level colours
        grab(panel, shots / "log_panel.png")
    finally:
        panel.detach()
    log.warning("after detach")
    qtbot.wait(50)
    assert not any("after detach" in line for line in panel.lines())
