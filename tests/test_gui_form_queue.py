"""The protocol form and the queue panel, offscreen (pytest-qt): forms generated from
every protocol's parameters, checked as the CLI checks them; the queue as a campaign
that saves, loads, validates from the command line, and runs on the simulated bench."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest.importorskip("pytestqt")
from PyQt5.QtWidgets import QCheckBox, QComboBox, QLineEdit  # noqa: E402

from labpcu.bench import Bench  # noqa: E402
from labpcu.campaign.loader import load_campaign  # noqa: E402
from labpcu.campaign.plan import Selection, Step  # noqa: E402
from labpcu.cli import main  # noqa: E402
from labpcu.data.store import Store  # noqa: E402
from labpcu.gui.protocol_form import ProtocolForm  # noqa: E402
from labpcu.gui.queue_panel import QueuePanel  # noqa: E402
from labpcu.gui.worker import BenchWorker, start_worker, stop_worker  # noqa: E402
from labpcu.protocols import registry  # noqa: E402
from labpcu.protocols.params import ParameterError  # noqa: E402
from labpcu.runner import prepare  # noqa: E402

SHOTS = os.environ.get("LABPCU_GUI_SHOTS")  # a folder to keep the PNGs in (else the test's tmp dir)


def _shot(widget, tmp_path, name: str) -> str:
    folder = SHOTS or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    assert widget.grab().save(path)
    return path


@pytest.fixture(scope="module")
def offline() -> Bench:
    return Bench.offline()


@pytest.fixture
def form(qtbot, offline) -> ProtocolForm:
    f = ProtocolForm(offline)
    qtbot.addWidget(f)
    f.resize(720, 820)
    f.show()
    return f


@pytest.fixture
def bench_worker(qtbot):
    """A worker in its own thread with the simulated bench (seed 0) open."""
    worker, thread = start_worker()
    with qtbot.waitSignal(worker.bench_state, timeout=30000):
        worker.request_open(None, 0)
    qtbot.waitUntil(lambda: worker.bench is not None, timeout=30000)
    yield worker
    stop_worker(worker, thread)


def _cli_error(capsys, argv: list[str]) -> str:
    """The one-line error ``labpcu`` prints for ``argv`` (exit 2)."""
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------ the form
@pytest.mark.parametrize("name", registry.names())
def test_form_has_one_row_per_parameter(qtbot, offline, name):
    f = ProtocolForm(offline)
    qtbot.addWidget(f)
    f.set_protocol(name)
    cls = registry.get(name)
    assert f.chooser.currentData() == name and cls.title in f.chooser.currentText()
    specs = cls.Params.specs()
    assert list(f.fields) == [s.name for s in specs]
    for spec in specs:
        field = f.field(spec.name)
        kind = QCheckBox if spec.kind is bool and not spec.is_list else (
            QComboBox if spec.choices and not spec.is_list else QLineEdit)
        assert isinstance(field.editor, kind), spec.name
        assert field.editor.toolTip() == spec.describe()
        assert field.unit.text() == spec.unit
        assert "default" in field.hint.text()
        if spec.limits and spec.limits[0] is not None:
            assert "…" in field.hint.text()
        assert field.state.ok, (spec.name, field.state.error)  # the defaults are valid
    assert f.values() == {}  # nothing changed
    assert not f.queue_button.isEnabled() and "wafer map" in f.message_text()  # no devices yet


def test_every_protocol_in_the_chooser(form):
    assert [form.chooser.itemData(i) for i in range(form.chooser.count())] == registry.names()
    form.chooser.setCurrentIndex(form.chooser.findData("retention"))
    assert form.protocol_name == "retention" and "v_read" in form.fields


def test_si_entry_and_the_clis_message(form, capsys, tmp_path):
    form.set_protocol("ispp")
    form.set_devices(["S01"])
    form.set_text("width", "20 ms")  # the default, typed
    assert form.field("width").state.ok and form.values() == {} and form.is_valid()
    form.set_text("width", "30 ms")
    assert form.field("width").state.ok and form.values()["width"] == pytest.approx(0.03)
    assert form.is_valid() and form.queue_button.isEnabled()

    form.set_text("width", "20 parsecs")
    field = form.field("width")
    with pytest.raises(ParameterError) as exc:
        registry.get("ispp").Params.spec("width").parse("20 parsecs")
    assert field.state.error == str(exc.value)
    assert field.error.isVisibleTo(form) and field.error.text() == str(exc.value)
    assert "color: #c62828" in field.error.styleSheet()
    assert not form.queue_button.isEnabled() and not form.is_valid()
    cli = _cli_error(capsys, ["run", "ispp", "--device", "S01", "--width", "20 parsecs", "--out",
                              str(tmp_path / "x.h5")])
    assert cli.endswith(field.state.error), (cli, field.state.error)  # the same line as labpcu run
    _shot(form, tmp_path, "form_bad_unit.png")

    form.set_text("width", "50m")
    assert form.values()["width"] == pytest.approx(0.05) and form.is_valid()
    form.set_text("targets", "20u,50u")
    assert form.values()["targets"] == pytest.approx((20e-6, 50e-6))
    form.set_text("targets", "20u,5")
    assert "above its limit" in form.field("targets").state.error and not form.queue_button.isEnabled()
    form.set_text("targets", "20u,50u")
    form.set_text("find_range", "true")
    assert isinstance(form.field("find_range").editor, QCheckBox) and form.values()["find_range"] is True
    form.set_text("loop", "host")
    assert isinstance(form.field("loop").editor, QComboBox) and form.values()["loop"] == "host"

    form.set_protocol("iv_sweep")
    form.set_text("start", "-1500mV")
    assert form.values() == {"start": -1.5} and form.is_valid()
    form.set_text("start", "-500mV")  # valid alone, not with the rectification bias of 1 V
    assert form.values() == {"start": -0.5} and not form.is_valid() and "rectification_bias" in form.message_text()
    form.set_text("start", "-1 V")  # the default again: not a change
    assert form.values() == {}
    form.reset()
    assert form.values() == {} and form.is_valid()


def test_out_of_limit_level_shows_prepares_message(form, qtbot, offline, capsys, tmp_path):
    form.set_protocol("iv_sweep")
    form.set_devices(["S01"])
    form.set_text("stop", "30")
    assert form.field("stop").state.ok  # within the parameter's own limits ...
    with pytest.raises(ParameterError) as exc:
        prepare("iv_sweep", {"stop": 30.0}, ["S01"], offline)
    assert form.message_text() == str(exc.value)  # ... not the bench's
    assert "bench limit" in form.message_text() and form.message.isVisible()
    assert "border" in form.field("stop").editor.styleSheet()  # the changed level is marked
    assert form.field("start").editor.styleSheet() == ""
    assert not form.queue_button.isEnabled()
    cli = _cli_error(capsys, ["run", "iv_sweep", "--device", "S01", "--stop", "30", "--out", str(tmp_path / "x.h5")])
    assert cli.endswith(form.message_text())
    with qtbot.assertNotEmitted(form.queued):
        form.queue_button.click()
        assert form.queue() is None
    _shot(form, tmp_path, "form_bench_limit.png")

    form.set_protocol("retention")
    form.set_text("v_read", "3")
    with pytest.raises(ParameterError) as exc:
        prepare("retention", {"v_read": 3.0}, ["S01"], offline)
    assert str(exc.value) == f"retention: {form.field('v_read').state.error}"
    assert not form.queue_button.isEnabled()
    with qtbot.assertNotEmitted(form.queued):
        form.queue()


def test_devices_and_cross_checks(form):
    form.set_protocol("vmm")
    form.set_devices(["S01"])
    assert "at least 3" in form.message_text() and not form.is_valid()
    form.set_devices(["A1-R1C1", "A1-R2C1", "A1-R3C1"])
    assert form.is_valid(), form.message_text()
    form.set_protocol("iv_sweep")
    form.set_devices(["S01", "nowhere"])
    assert "nowhere" in form.message_text() and not form.is_valid()
    form.set_devices([])
    assert not form.queue_button.isEnabled()


def test_queue_emits_a_step_with_the_changed_values(form, qtbot, tmp_path):
    form.set_protocol("iv_sweep")
    form.set_devices(["S01", "S02"])
    form.set_text("points", "11")
    form.set_text("stop", "1.2 V")
    form.set_text("double", "true")
    assert form.queue_button.isEnabled()
    _shot(form, tmp_path, "form_ready.png")
    with qtbot.waitSignal(form.queued, timeout=1000) as blocker:
        form.queue_button.click()
    step = blocker.args[0]
    assert isinstance(step, Step)
    assert (step.protocol, step.devices) == ("iv_sweep", ("S01", "S02"))
    assert dict(step.params) == {"points": 11, "stop": 1.2, "double": True}
    assert type(step.params["points"]) is int
    with qtbot.waitSignal(form.queued, timeout=1000) as again:
        form.queue_button.click()
    assert again.args[0].name != step.name  # unique names

    form.set_protocol("ispp")
    form.set_devices(["S03"])
    form.set_text("targets", "30u")
    form.set_text("terminals", "k2612a.smua,k2612a.smub")
    step = form.queue()
    assert step.params == {"targets": (30e-6,), "terminals": "k2612a.smua,k2612a.smub"}  # as a campaign file gives it


# ------------------------------------------------------------------ the queue
def _panel(qtbot, worker, store: Path, offline) -> QueuePanel:
    panel = QueuePanel(worker, store, bench_offline=offline)
    qtbot.addWidget(panel)
    panel.resize(900, 480)
    panel.show()
    return panel


def _order(panel: QueuePanel) -> list[str]:
    return [panel.tree.topLevelItem(i).text(0) for i in range(panel.tree.topLevelItemCount())]


def test_queue_edits_saves_and_loads(qtbot, offline, tmp_path, capsys):
    worker = BenchWorker()  # no bench needed to edit
    panel = _panel(qtbot, worker, tmp_path / "q.h5", offline)
    assert not panel.run_button.isEnabled() and "empty" in panel.summary.text()
    a = panel.add_step(Step("screen", "iv_sweep", ("S01", "S02"), params={"points": 11}))
    b = panel.add_step(Step("program", "ispp", Selection("screen", "status == 'completed'"),
                            params={"targets": (50e-6,)}, on_fail="continue"))
    c = panel.add_step(Step("screen", "retention", ("S03",), params={"duration": 20.0, "interval": 10.0}))
    assert c.name == "screen-2" and _order(panel) == ["screen", "program", "screen-2"]
    assert panel.run_button.isEnabled() and "3 steps, up to 5 runs" in panel.summary.text()
    assert all(panel.tree.topLevelItem(i).text(4) not in ("", "?") for i in range(3))  # estimates

    panel.tree.setCurrentItem(panel.tree.topLevelItem(2))
    panel.up_button.click()
    assert _order(panel) == ["screen", "screen-2", "program"]
    assert [s.name for s in panel.steps] == _order(panel)
    panel.down_button.click()
    assert _order(panel) == ["screen", "program", "screen-2"]
    # a drag: the rows in another order, then the tree's drop signal
    item = panel.tree.takeTopLevelItem(2)
    panel.tree.insertTopLevelItem(0, item)
    panel.tree.reordered.emit()
    assert [s.name for s in panel.steps] == ["screen-2", "screen", "program"] == _order(panel)
    panel.tree.setCurrentItem(panel.tree.topLevelItem(0))
    panel.remove_button.click()
    assert [s.name for s in panel.steps] == ["screen", "program"]
    assert panel.check() == []
    _shot(panel, tmp_path, "queue_edited.png")

    path = tmp_path / "saved.toml"
    assert panel.save(path)
    assert main(["campaign", "validate", str(path)]) == 0, capsys.readouterr().err
    loaded = load_campaign(path)
    assert loaded.store_path() == (tmp_path / "q.h5").resolve()
    assert [s.fingerprint() for s in loaded.steps] == [a.fingerprint(), b.fingerprint()]

    other = _panel(qtbot, BenchWorker(), tmp_path / "elsewhere.h5", offline)
    assert other.load(path) is not None
    assert other.campaign().name == panel.campaign().name
    assert [(s.name, s.on_fail, s.fingerprint()) for s in other.steps] == \
           [(s.name, s.on_fail, s.fingerprint()) for s in panel.steps]
    assert other.current_store() == (tmp_path / "q.h5").resolve()  # the file's store

    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text().replace("points = 11", "points = 1").replace('"ispp"', '"ipsp"')
                   + '\n[[step]]\nname = "x"\nprotocol = "iv_sweep"\ndevices = ["Z9"]\n')
    assert other.load(bad) is None
    assert len(other.problems) == 3, other.problems  # every problem, each with its line
    assert all(p.startswith(f"{bad}:") for p in other.problems)
    assert other.problem_box.isVisible() and "points" in other.problem_box.toPlainText()
    assert [s.name for s in other.steps] == ["screen", "program"]  # the queue is left as it was
    _shot(other, tmp_path, "queue_load_problems.png")


def test_queue_lists_every_problem_before_running(qtbot, offline, tmp_path):
    worker = BenchWorker()
    panel = _panel(qtbot, worker, tmp_path / "q.h5", offline)
    panel.add_step(Step("a", "iv_sweep", ("S01",), params={"stop": 30.0}))
    panel.add_step(Step("b", "ispp", Selection("gone", "status == 'completed'")))
    with qtbot.assertNotEmitted(worker._run):
        assert panel.run() is None
    assert len(panel.problems) == 2 and "bench limit" in panel.problems[0] and "'gone'" in panel.problems[1]
    assert panel.problem_box.isVisible()


def test_buttons_follow_busy(qtbot, offline, tmp_path):
    worker = BenchWorker()
    panel = _panel(qtbot, worker, tmp_path / "q.h5", offline)
    panel.add_step(Step("a", "iv_sweep", ("S01",)))
    assert panel.run_button.isEnabled() and not panel.pause_button.isEnabled()
    assert not panel.abort_button.isEnabled() and panel.resume_file_button.isEnabled()
    worker.busy.emit(True)
    assert not panel.run_button.isEnabled() and not panel.load_button.isEnabled()
    assert panel.pause_button.isEnabled() and panel.abort_button.isEnabled() and not panel.resume_button.isEnabled()
    assert not panel.remove_button.isEnabled() and panel.save_button.isEnabled()
    panel.pause_button.click()
    assert panel.resume_button.isEnabled() and not panel.pause_button.isEnabled()
    panel.resume_button.click()
    assert panel.pause_button.isEnabled()
    worker.busy.emit(False)
    assert panel.run_button.isEnabled() and not panel.abort_button.isEnabled()


def test_queue_runs_on_the_simulated_bench(qtbot, bench_worker, offline, tmp_path):
    store = tmp_path / "runs.h5"
    form = ProtocolForm(offline)
    qtbot.addWidget(form)
    panel = _panel(qtbot, bench_worker, store, offline)
    form.queued.connect(panel.add_step)
    form.set_protocol("iv_sweep")
    form.set_devices(["S01"])
    form.set_text("points", "11")
    form.queue_button.click()
    assert len(panel.steps) == 1 and panel.steps[0].params == {"points": 11}
    name = panel.campaign().name
    started = []
    panel.run_started.connect(started.append)
    with qtbot.waitSignal(bench_worker.queue_finished, timeout=120000) as blocker:
        panel.run_button.click()
    outcome = blocker.args[0]
    assert outcome.state == "completed", outcome.reason
    assert started and started[0].name == name
    qtbot.waitUntil(lambda: not panel.busy and panel.run_button.isEnabled(), timeout=10000)
    key = f"{panel.steps[0].name}/S01"
    assert panel.task_states == {key: "completed"}
    assert panel.tree.topLevelItem(0).text(5) == "completed"
    assert "Completed (1 run this time)" in panel.status.text()
    _shot(panel, tmp_path, "queue_completed.png")

    runs = Store(store).runs()
    assert len(runs) == 1
    run_id = runs.index[0]
    info = Store(store).info(run_id)
    assert info.status == "completed" and info.protocol == "iv_sweep"
    meta = runs.loc[run_id, "metadata"]["campaign"]
    assert (meta["name"], meta["step"], meta["task"]) == (name, panel.steps[0].name, key)
    assert meta["fingerprint"] == panel.steps[0].fingerprint()
    assert len(Store(store).read(run_id)) == 11  # points = 11, as queued


def test_resume_interrupted_measures_only_what_is_left(qtbot, bench_worker, offline, tmp_path):
    store = tmp_path / "w.h5"
    panel = _panel(qtbot, bench_worker, store, offline)
    panel.name_edit.setText("two steps")
    panel._auto_name = False
    panel.add_step(Step("first", "iv_sweep", ("S01",), params={"points": 11}))
    panel.add_step(Step("second", "iv_sweep", ("S02",), params={"points": 11}))
    path = tmp_path / "two.toml"
    assert panel.save(path)
    # the campaign stopped after its first step (as a kill or an abort would leave it)
    panel.remove_step(1)
    with qtbot.waitSignal(bench_worker.queue_finished, timeout=120000):
        panel.run()
    assert len(Store(store).runs()) == 1
    with qtbot.waitSignal(bench_worker.queue_finished, timeout=120000) as blocker:
        assert panel.resume_interrupted(path) is not None
    outcome = blocker.args[0]
    assert outcome.state == "completed" and outcome.skipped == 1 and len(outcome.runs) == 1
    assert panel.task_states == {"first/S01": "done earlier", "second/S02": "completed"}
    runs = Store(store).runs()
    assert sorted(m["campaign"]["task"] for m in runs["metadata"]) == ["first/S01", "second/S02"]
    _shot(panel, tmp_path, "queue_resumed.png")


def test_abort_current_run(qtbot, bench_worker, offline, tmp_path):
    panel = _panel(qtbot, bench_worker, tmp_path / "a.h5", offline)
    panel.add_step(Step("long", "iv_sweep", ("S01", "S02", "S03", "S04"), params={"points": 2001}))
    with qtbot.waitSignal(bench_worker.queue_finished, timeout=120000) as blocker:
        panel.run()
        qtbot.waitUntil(lambda: "running" in panel.task_states.values(), timeout=60000)
        panel.abort_button.click()
    assert blocker.args[0].state == "aborted"
    assert "aborted" in panel.task_states.values()
    qtbot.waitUntil(lambda: not panel.busy, timeout=10000)
    assert "Aborted" in panel.status.text() and panel.run_button.isEnabled()
    _shot(panel, tmp_path, "queue_aborted.png")
