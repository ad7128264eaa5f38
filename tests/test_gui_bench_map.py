"""The bench panel and the wafer map, offscreen (pytest-qt)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QEvent, QPoint, QPointF, QRectF, Qt, pyqtSignal  # noqa: E402
from PyQt5.QtGui import QMouseEvent, QWheelEvent  # noqa: E402
from PyQt5.QtWidgets import QApplication  # noqa: E402

from labpcu.bench import Bench  # noqa: E402
from labpcu.gui.bench_panel import BenchPanel  # noqa: E402
from labpcu.gui.wafer_map import QUANTITIES, UNTESTED, WaferMap, map_data  # noqa: E402
from labpcu.gui.worker import BenchState, BenchWorker, OutputState, start_worker, stop_worker  # noqa: E402
from labpcu.runner import Runner  # noqa: E402
from labpcu.sim.wafer import make_wafer  # noqa: E402

SHOTS = os.environ.get("LABPCU_GUI_SHOTS")  # a folder to keep the PNGs in (else the test's tmp dir)


def _shot(widget, tmp_path, name: str) -> str:
    folder = SHOTS or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    QApplication.processEvents()  # let the layouts settle first
    assert widget.grab().save(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A store with a few runs on the simulated bench: S01, S02 measured, S03 failed
    nothing, A5 configured; the rest untested."""
    path = str(tmp_path_factory.mktemp("map") / "day.h5")
    with Bench.from_file(seed=0) as bench:
        runner = Runner(bench, path)
        runner.run("iv_sweep", {"points": 11}, ["S01", "S02"])
        runner.run("binary_switch", {"action": "set"}, ["S02"])
        runner.run("ispp", {}, ["S01"])
        runner.run("hysteresis", {}, ["S03"])
    return path


@pytest.fixture
def wmap(qtbot) -> WaferMap:
    m = WaferMap(make_wafer(0))
    qtbot.addWidget(m)
    m.resize(760, 780)
    m.show()
    qtbot.waitExposed(m)
    return m


# ------------------------------------------------------------------ wafer map: layout
def test_map_has_101_devices_at_their_wafer_positions(wmap):
    wafer = make_wafer(0)
    assert len(wmap.items) == 101
    assert set(wmap.items) == set(wafer.devices)
    for dev, pcu in wafer.devices.items():
        pos = wmap.scene_pos_of(dev)
        assert (pos.x(), -pos.y()) == pytest.approx((pcu.x_mm, pcu.y_mm))
    # arrays drawn as 3x3 arrays, singles by quad site: every site has a label
    assert set(wmap.site_labels) == set(wafer.sites) == {*(f"A{k}" for k in range(1, 10)),
                                                         *(f"Q{k}" for k in range(1, 6))}
    # the whole wafer is in view
    for dev in ("S01", "S06", "S11", "S16", "A1-R1C1", "A9-R3C3"):
        assert wmap.view.viewport().rect().contains(wmap.view_pos_of(dev))


# ------------------------------------------------------------------ wafer map: selection
def test_click_selects_one_and_shift_click_adds_and_removes(wmap, qtbot):
    vp = wmap.view.viewport()
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, wmap.view_pos_of("S05"))
    assert sig.args == [["S05"]]
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.ShiftModifier, wmap.view_pos_of("A2-R2C3"))
    assert sig.args == [["A2-R2C3", "S05"]]  # wafer order: arrays first
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.ShiftModifier, wmap.view_pos_of("S05"))
    assert sig.args == [["A2-R2C3"]]
    with qtbot.waitSignal(wmap.selection_changed) as sig:  # a plain click replaces
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, wmap.view_pos_of("A7-R1C1"))
    assert sig.args == [["A7-R1C1"]]
    assert wmap.selected() == ["A7-R1C1"]
    # a click on the background clears
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, wmap.view.mapFromScene(QPointF(-12, 12)))
    assert sig.args == [[]]


def _drag(widget, start: QPoint, end: QPoint, modifiers=Qt.NoModifier) -> None:
    """A real press, move (with the button held) and release on ``widget``."""
    for kind, pos, button, buttons in ((QEvent.MouseButtonPress, start, Qt.LeftButton, Qt.LeftButton),
                                       (QEvent.MouseMove, (start + end) / 2, Qt.NoButton, Qt.LeftButton),
                                       (QEvent.MouseMove, end, Qt.NoButton, Qt.LeftButton),
                                       (QEvent.MouseButtonRelease, end, Qt.LeftButton, Qt.NoButton)):
        QApplication.sendEvent(widget, QMouseEvent(kind, QPointF(pos), button, buttons, modifiers))


def test_rubber_band_selects_a_rectangle(wmap, qtbot):
    view = wmap.view
    # around array A5 (centre 0, 0; cells at ±1.5 mm)
    a, b = view.mapFromScene(QPointF(-3, -3)), view.mapFromScene(QPointF(3, 3))
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        _drag(view.viewport(), a, b)
    assert sig.args == [[f"A5-R{r}C{c}" for r in range(1, 4) for c in range(1, 4)]]
    # shift-drag adds the top-right array's right column only (x = 25.5 mm)
    a, b = view.mapFromScene(QPointF(25, -27)), view.mapFromScene(QPointF(27, -21))
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        _drag(view.viewport(), a, b, Qt.ShiftModifier)
    assert set(sig.args[0]) == {f"A5-R{r}C{c}" for r in range(1, 4) for c in range(1, 4)} | {
        "A3-R1C3", "A3-R2C3", "A3-R3C3"}
    # the handler itself, in scene coordinates: a rectangle over S01 (41, 0)
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        wmap.band_select(QRectF(38, -3, 6, 6))
    assert sig.args == [["S01"]]


def _wheel(widget, pos: QPoint, notches: int) -> None:
    """Real wheel events on ``widget`` (positive: zoom in)."""
    for _ in range(abs(notches)):
        QApplication.sendEvent(widget, QWheelEvent(QPointF(pos), QPointF(widget.mapToGlobal(pos)), QPoint(),
                                                   QPoint(0, 120 if notches > 0 else -120), Qt.NoButton,
                                                   Qt.NoModifier, Qt.NoScrollPhase, False))


def test_site_label_click_and_double_click_select_a_whole_site(wmap, qtbot, tmp_path):
    vp = wmap.view.viewport()
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, wmap.site_label_view_pos("Q3"))
    assert sig.args == [["S09", "S10", "S11", "S12"]]
    with qtbot.waitSignal(wmap.selection_changed) as sig:  # shift adds a site
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.ShiftModifier, wmap.site_label_view_pos("A9"))
    assert sig.args == [[*(f"A9-R{r}C{c}" for r in range(1, 4) for c in range(1, 4)), "S09", "S10", "S11", "S12"]]
    # zoomed in, the label still sits on its site
    fitted = wmap.view.transform().m11()
    _wheel(vp, wmap.view_pos_of("A9-R2C2"), 6)
    assert wmap.view.transform().m11() == pytest.approx(fitted * 1.25**6)
    wmap.view.centerOn(wmap.scene_pos_of("A9-R1C1"))
    _shot(wmap, tmp_path, "wafer_map_zoomed.png")
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, wmap.site_label_view_pos("A9"))
    assert sig.args == [[f"A9-R{r}C{c}" for r in range(1, 4) for c in range(1, 4)]]
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, wmap.view_pos_of("A9-R1C1"))
    assert sig.args == [["A9-R1C1"]]
    assert not wmap.view.viewport().rect().contains(wmap.view_pos_of("S11"))
    wmap.fit_button.click()  # the whole wafer again
    assert all(wmap.view.viewport().rect().contains(wmap.view_pos_of(d)) for d in wmap.items)
    with qtbot.waitSignal(wmap.selection_changed) as sig:
        qtbot.mouseDClick(vp, Qt.LeftButton, Qt.NoModifier, wmap.view_pos_of("A4-R3C2"))
    assert sig.args == [[f"A4-R{r}C{c}" for r in range(1, 4) for c in range(1, 4)]]
    wmap.select(["S20", "A1-R1C1"])
    assert wmap.selected() == ["A1-R1C1", "S20"]
    with pytest.raises(KeyError):
        wmap.select(["Z99"])


# ------------------------------------------------------------------ wafer map: store
def test_quantities_colour_measured_devices_apart_from_untested(wmap, store, tmp_path):
    wmap.set_store(store)
    untested = wmap.colour_of("S10")
    for q in QUANTITIES:
        wmap.set_quantity(q)
        assert wmap.colour_of("S10") == UNTESTED, q
        assert wmap.legend.entries, q
    wmap.set_quantity("last status")
    assert {wmap.data.values[d] for d in ("S01", "S02", "S03")} == {"completed"}
    assert wmap.colour_of("S01") != untested and wmap.colour_of("S01") == wmap.colour_of("S02")
    wmap.set_quantity("rectification")
    r = wmap.data.values
    # pcu.md's band is > 10^3; the v2 diodes (I0 ≈ 50 pA, issue 15) rectify ≈ 10^4 (was > 10^6)
    assert set(r) == {"S01", "S02"} and all(v > 1e3 for v in r.values())
    assert wmap.colour_of("S01") != wmap.colour_of("S02") != UNTESTED  # the colour bar's two ends
    _shot(wmap, tmp_path, "wafer_map_rectification.png")
    wmap.set_quantity("M1 conductance")
    assert set(wmap.data.values) == {"S01"} and 1e-6 < wmap.data.values["S01"] < 2e-4
    wmap.set_quantity("M2 state")
    assert wmap.data.values == {"S02": "LRS", "S03": "HRS"}
    assert wmap.colour_of("S02") != wmap.colour_of("S03")
    # S01 was measured, but not its M2: "no value" (a dotted fill), not "untested"
    assert wmap.items["S01"].brush().style() == Qt.Dense5Pattern
    assert wmap.items["S10"].brush().style() == Qt.SolidPattern
    assert any(text.startswith("no value") for text, _ in wmap.legend.entries)
    wmap.set_quantity("yield class")
    assert {d: wmap.data.values[d] for d in ("S01", "S02", "S03")} == dict.fromkeys(("S01", "S02", "S03"), "working")
    wmap.set_quantity("failed")
    assert wmap.data.values["S01"] == "not failed"
    wmap.select(["S01", "S02", "A5-R2C2"])
    wmap.set_quantity("last status")
    _shot(wmap, tmp_path, "wafer_map_status.png")


def test_failed_devices_count_as_failed(tmp_path):
    path = str(tmp_path / "fail.h5")
    with Bench.from_file(seed=0) as bench:  # M2 cannot set below 0.2 V: S04 fails, the run completes
        outcome = Runner(bench, path).run("binary_switch", {"action": "set", "v_max": 0.2}, ["S04"])
    assert outcome.status in ("completed", "failed")
    devs = make_wafer(0).devices
    assert map_data(path, "failed", devs).values == {"S04": "failed"}
    assert map_data(path, "yield class", devs).values == {"S04": "failed"}
    assert map_data(path, "last status", devs).values == {"S04": "failed"}


def test_tooltip_names_the_runs_and_the_store_is_read_once(wmap, store):
    wmap.set_store(store)
    wmap.set_quantity("rectification")
    tip = wmap.tooltip("S02")
    assert "S02" in tip and "Q1" in tip
    for run in ("00001-iv_sweep", "00002-binary_switch"):
        assert run in tip
    assert "iv_sweep" in tip and "completed" in tip and "ispp" not in tip
    assert wmap.items["S02"].toolTip() == tip
    assert "array A5, row 2, column 2" in wmap.tooltip("A5-R2C2") and "no runs" in wmap.tooltip("A5-R2C2")
    reader = wmap._reader
    reads = reader.info_reads
    wmap.refresh()
    wmap.set_quantity("rectification")
    assert reader.info_reads == reads  # finished runs are cached
    with pytest.raises(ValueError):
        wmap.set_quantity("colour")


def test_map_without_a_store_and_with_a_bad_one(wmap, tmp_path):
    wmap.refresh()
    assert wmap.colour_of("S01") == UNTESTED
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    wmap.set_store(str(bad))
    wmap.refresh()
    assert "cannot read" in wmap.store_label.text()
    assert wmap.colour_of("S01") == UNTESTED


# ------------------------------------------------------------------ bench panel
def _worker_bug() -> str:
    """The worker's ``event`` signal shadows ``QObject.event()``: a BenchWorker moved to a
    thread then dies on its first Qt event ("native Qt signal is not callable")."""
    return "worker.py: BenchWorker.event shadows QObject.event()" if isinstance(
        vars(BenchWorker).get("event"), pyqtSignal) else ""


def _check_connected_panel(panel: BenchPanel) -> None:
    st = panel.state
    assert st.connected
    names = [panel.instruments.item(k, 1).text() for k in range(panel.instruments.rowCount())]
    assert names == ["k2612a", "k3706a", "b1500a"]
    assert all(panel.instruments.item(k, 0).text() == "●" for k in range(3))
    outs = [panel.outputs.item(k, 0).text() for k in range(panel.outputs.rowCount())]
    assert "k2612a.smua" in outs and "b1500a.1" in outs and len(outs) == len(st.outputs) >= 6
    assert all(panel.outputs.item(k, 1).text() == "off" for k in range(len(outs)))
    assert "A1" in panel.site_label.text()
    assert "Connected" in panel.status_label.text()
    assert not panel.connect_button.isEnabled() and panel.disconnect_button.isEnabled()
    assert panel.safe_button.isEnabled()


def test_bench_panel_in_the_gui_thread(qtbot, tmp_path):
    """The panel against a real BenchWorker living in the GUI thread (direct signals)."""
    worker = BenchWorker()
    panel = BenchPanel(worker, seed=0)
    qtbot.addWidget(panel)
    panel.resize(760, 520)
    panel.show()
    assert not panel.state.connected and panel.safe_button.isEnabled()
    assert panel.connect_button.isEnabled() and not panel.disconnect_button.isEnabled()
    _shot(panel, tmp_path, "bench_panel_disconnected.png")
    panel.safe_button.click()  # disconnected: allowed, does nothing
    with qtbot.waitSignal(worker.bench_state, timeout=20000):
        panel.connect_button.click()
    _check_connected_panel(panel)
    _shot(panel, tmp_path, "bench_panel_connected.png")

    # a live output and a welded relay, as the worker would publish them while a queue runs
    worker.busy.emit(True)
    st = panel.state
    outs = tuple(OutputState(o.terminal, True, "0.5 V (1.2e-05 A)") if o.terminal == "k2612a.smua" else o
                 for o in st.outputs)
    worker.bench_state.emit(BenchState(True, st.instruments, outs, "A3", 1234.5, True, ("A1-R2C03",)))
    k = [panel.outputs.item(j, 0).text() for j in range(panel.outputs.rowCount())].index("k2612a.smua")
    assert panel.outputs.item(k, 1).text() == "ON"
    assert panel.outputs.item(k, 1).background().color() != panel.outputs.item(0, 1).background().color()
    assert "LIVE" in panel.status_label.text() and "running" in panel.status_label.text()
    assert "A1-R2C03" in panel.welded_label.text().replace("\u2011", "-")
    assert not panel.connect_button.isEnabled() and not panel.disconnect_button.isEnabled()
    assert panel.safe_button.isEnabled()  # busy: still enabled
    _shot(panel, tmp_path, "bench_panel_live.png")
    worker.busy.emit(False)

    with qtbot.waitSignal(worker.bench_state, timeout=20000):
        panel.safe_button.click()
    assert panel.state.connected and not any(o.on for o in panel.state.outputs)
    with qtbot.waitSignal(worker.bench_state, timeout=20000):
        panel.disconnect_button.click()
    assert not panel.state.connected and panel.instruments.rowCount() == 0
    assert panel.safe_button.isEnabled() and panel.connect_button.isEnabled()


def test_bench_panel_all_safe_is_always_enabled_and_calls_the_worker(qtbot):
    calls = []

    class Recorder(BenchWorker):
        def all_safe(self) -> None:
            calls.append("safe")

    worker = Recorder()
    panel = BenchPanel(worker)
    qtbot.addWidget(panel)
    for busy in (True, False):
        for connected in (True, False):
            worker.busy.emit(busy)
            worker.bench_state.emit(BenchState(connected, busy=busy))
            assert panel.safe_button.isEnabled(), (busy, connected)
            panel.safe_button.click()
    worker.failed.emit("cannot open the bench: no such file")
    assert "no such file" in panel.error_label.text()
    assert panel.safe_button.isEnabled()
    assert calls == ["safe"] * 4


@pytest.mark.skipif(bool(_worker_bug()), reason=_worker_bug())
def test_bench_panel_with_the_worker_thread(qtbot):
    worker, thread = start_worker()
    try:
        panel = BenchPanel(worker, seed=0)
        qtbot.addWidget(panel)
        with qtbot.waitSignal(worker.bench_state, timeout=20000):
            panel.connect_button.click()
        qtbot.waitUntil(lambda: panel.state.connected, timeout=5000)
        _check_connected_panel(panel)
        with qtbot.waitSignal(worker.bench_state, timeout=20000):
            panel.safe_button.click()
        with qtbot.waitSignal(worker.bench_state, timeout=20000):
            panel.disconnect_button.click()
        qtbot.waitUntil(lambda: not panel.state.connected, timeout=5000)
        assert panel.safe_button.isEnabled()
    finally:
        stop_worker(worker, thread)
