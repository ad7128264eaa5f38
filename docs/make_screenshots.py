"""Pictures of the operator's window and each of its panels, for the README.

Measures a small store on the simulated bench (I–V sweeps of two quad sites, an ISPP,
a multiplier unit and its codebook), opens ``labpcu gui`` on it off screen, queues
and runs one more protocol so the live plot has data, and grabs the window and each
panel into ``docs/figures/gui_*.png``.

    QT_QPA_PLATFORM=offscreen python docs/make_screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5 import QtCore, QtWidgets  # noqa: E402

from labpcu.bench import Bench  # noqa: E402
from labpcu.campaign.plan import Step  # noqa: E402
from labpcu.data.codebook import build_codebook  # noqa: E402
from labpcu.data.codebook_io import save_to_store  # noqa: E402
from labpcu.gui.app import MainWindow  # noqa: E402
from labpcu.runner import Runner  # noqa: E402

UNIT = ["A1-R1C1", "A1-R2C1", "A1-R3C1"]


def make_store(path: Path) -> None:
    with Bench.from_file(seed=0) as bench:
        runner = Runner(bench, path, handle_sigint=False)
        runner.run("iv_sweep", {"points": 41}, ["S01", "S02", "S03", "S04", "S05", "S06", "S07", "S08"])
        runner.run("ispp", {"targets": "30u,70u"}, ["S09", "S10"])
        mul = runner.run("multiplier", {"grid_points": 5, "repeats": 2}, UNIT)
    save_to_store(build_codebook(path, [mul.run_id]), path, "screenshots")


def wait(ms: int) -> None:
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(ms, loop.quit)
    loop.exec_()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["labpcu"])
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "wafer.h5"
        make_store(store)
        win = MainWindow(store, seed=0)
        win.window.resize(1600, 1000)
        win.window.show()
        for _ in range(100):  # the worker connects the simulated bench
            wait(100)
            if win.bench_panel.state is not None and win.bench_panel.state.connected:
                break
        win.wafer_map.set_quantity("rectification")
        win.wafer_map.select(["S11", "S12"])
        win.form.set_protocol("retention")
        win.form.set_devices(["S11", "S12"])
        win.form.set_text("component", "m1")
        win.form.set_text("duration", "300 s")
        win.form.queue()
        done = QtCore.QEventLoop()
        win.worker.queue_finished.connect(lambda _: done.quit())
        win.queue.run()
        done.exec_()
        wait(500)
        win.browser.refresh(wait=True)
        win.browser.open_runs([win.browser.run_ids()[0]])
        win.codebooks.refresh()
        wait(500)
        win.tabs.setCurrentWidget(win.live_plot)
        wait(300)
        shots = {
            "gui_window": win.window, "gui_bench_panel": win.bench_panel, "gui_wafer_map": win.wafer_map,
            "gui_live_plot": win.live_plot,
        }
        for name, widget in shots.items():
            widget.grab().save(str(out / f"{name}.png"))
        for name, widget in (("gui_run_tab", win.tabs.widget(0)), ("gui_data_browser", win.browser),
                             ("gui_codebooks", win.codebooks)):
            win.tabs.setCurrentWidget(widget)
            wait(400)
            widget.grab().save(str(out / f"{name}.png"))
        win.shutdown()
    del app
    print("wrote", ", ".join(sorted(p.name for p in out.glob("gui_*.png"))))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "figures")
