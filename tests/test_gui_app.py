"""The operator's window end to end, offscreen (pytest-qt): select a device on the
map, fill the ISPP form, queue, run on the simulated bench, see the live plot receive
points and the browser show the completed run; abort mid-run and check in the
simulator that every output is off and every relay open within one protocol step;
``labpcu gui --screenshot``."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("pytestqt")

from PyQt5.QtCore import Qt  # noqa: E402

from labpcu.cli import main  # noqa: E402
from labpcu.gui.app import MainWindow  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def window(qtbot, tmp_path):
    win = MainWindow(tmp_path / "gui.h5", seed=0)
    qtbot.addWidget(win.window)
    with qtbot.waitSignal(win.worker.bench_state, timeout=20000, check_params_cb=lambda s: s.connected):
        pass
    yield win
    win.shutdown()


def test_select_fill_queue_run_plot_and_browse(window, qtbot):
    window.wafer_map.select(["S03"])
    window.form.set_devices(window.wafer_map.selected())
    window.form.set_protocol("ispp")
    window.form.set_text("targets", "50u")
    assert window.form.is_valid(), window.form.message_text()
    window.form.queue()  # queued into the queue panel through the wiring
    assert [s.protocol for s in window.queue.campaign().steps] == ["ispp"]
    points = []
    window.worker.run_event.connect(lambda e: type(e).__name__ == "Points" and points.append(e))
    with qtbot.waitSignal(window.worker.queue_finished, timeout=60000) as done:
        window.queue.run()
    assert done.args[0].state == "completed"
    assert points, "the live plot's source got no points"
    plotted = lambda: sum(len(window.live_plot.data(y, g)[1]) for g, y in window.live_plot.traces())  # noqa: E731
    qtbot.waitUntil(lambda: plotted() > 0, timeout=5000)
    window.browser.refresh(wait=True)
    assert any(r.endswith("-ispp") for r in window.browser.run_ids())
    assert "completed" in window.state_label.text() or "queue" in window.state_label.text()


def test_abort_mid_run_ends_safe_within_one_step(window, qtbot):
    from labpcu.campaign.plan import Step

    window.queue.add_step(Step("hold", "retention", ("S05",), {"component": "m1", "duration": 1e5, "interval": 10.0}))
    stamps: list[float] = []  # when the runner emitted each point, in the worker's thread
    pressed: list[float] = []

    def press_all_safe(event):  # in the GUI thread, as an operator would
        if type(event).__name__ == "Points" and len(stamps) >= 5 and not pressed:
            pressed.append(time.monotonic())
            window.bench_panel.all_safe()

    window.worker.run_event.connect(lambda e: type(e).__name__ == "Points" and stamps.append(time.monotonic()),
                                    Qt.DirectConnection)
    window.worker.run_event.connect(press_all_safe)
    with qtbot.waitSignal(window.worker.queue_finished, timeout=60000) as done:
        window.queue.run()
    assert done.args[0].state == "aborted" and pressed
    assert sum(t > pressed[0] for t in stamps) <= 1  # the run stopped within one protocol step of the press
    assert len(stamps) < 10_000  # far from the 10,000 reads it would have taken
    qtbot.wait(300)  # the worker's own safe state after the abort
    sim = window.worker.bench.sim.bench
    assert sim.live_outputs() == [] and sim.physically_closed() == set()
    assert [e for e in sim.relay_events if e.any_live] == []


def test_screenshot_writes_the_window(tmp_path, qtbot):
    from labpcu.bench import Bench
    from labpcu.runner import Runner

    store = tmp_path / "day.h5"
    with Bench.from_file(seed=0) as bench:
        Runner(bench, store, handle_sigint=False).run("iv_sweep", {"points": 11}, ["S01", "S02"])
    png = tmp_path / "window.png"
    assert main(["gui", "--store", str(store), "--screenshot", str(png)]) == 0
    assert png.stat().st_size > 20_000  # a real picture of the whole window, not an empty frame
