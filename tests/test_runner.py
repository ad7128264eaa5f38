"""The Runner's lifecycle on the simulated bench: validation before I/O, events, abort
from another thread and from Ctrl-C, failures, the safe state on every way out (proven
by the simulated outputs and relays and the emulators' message logs), points kept,
and a kill -9 in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from labpcu.bench import Bench, SafeStateError
from labpcu.clock import WallClock
from labpcu.data.store import Store
from labpcu.protocols.params import ParameterError
from labpcu.runner import (
    AbortableClock,
    DeviceFailed,
    Points,
    Progress,
    RunAborted,
    Runner,
    RunStarted,
    StatusChanged,
)
from simhelpers import assert_safe, sent
from toy_protocols import BrokenAnalysis, FailsOnS03, Reads

HERE = Path(__file__).parent


@pytest.fixture
def bench():
    b = Bench.from_file(seed=0)
    yield b
    try:
        b.close()
    except SafeStateError:
        pass


@pytest.fixture
def runner(bench, tmp_path):
    return Runner(bench, tmp_path / "runs.h5")


def last_2612a_messages(bench: Bench, n: int = 12) -> str:
    return "\n".join(bench.sim["k2612a"].messages_in()[-n:])


# ------------------------------------------------------------------ completed runs
def test_completed_run_is_stored_with_events_and_results(runner, bench):
    events = []
    runner.subscribe(events.append)
    out = runner.run(Reads, {"reads": 25, "every": "10 s"}, ["S02"])
    assert out.status == "completed" and out.error == "" and out.n_points == 25
    df = runner.store.read(out.run_id)
    assert list(df["index"]) == list(range(25))
    assert np.allclose(np.diff(df["t"]), 10.0, atol=0.2)  # bench time, not wall time
    assert set(df["device"]) == {"S02"}
    assert out.results == {"mean_current": pytest.approx(df["i"].mean()), "reads": 25}
    info = runner.store.info(out.run_id)
    assert info.status == "completed" and info.parameters["every"] == 10.0
    assert info.parameter_units["v_read"] == "V"
    assert info.bench["instruments"]["k2612a"]["identity"].startswith("Keithley")
    assert info.bench_time_end - info.bench_time_start >= 250.0
    # events: started, running, one Points per yield, then the final status
    assert isinstance(events[0], RunStarted) and events[0].devices == ("S02",)
    statuses = [e.status for e in events if isinstance(e, StatusChanged)]
    assert statuses == ["running", "completed"]
    assert sum(isinstance(e, Points) for e in events) == 25
    assert [e.done for e in events if isinstance(e, Progress)][-1] == 25
    assert_safe(bench)


def test_a_broken_subscriber_does_not_stop_the_run(runner):
    runner.subscribe(lambda e: 1 / 0)
    assert runner.run(Reads, {"reads": 3}, ["S02"]).status == "completed"


# -------------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, devices, words", [
    ({"v_read": "2 V"}, ["S02"], "above its limit"),
    ({"reads": 1.5}, ["S02"], "must be int"),
    ({"nonsense": 1}, ["S02"], "no parameter 'nonsense'"),
    ({"every": "ten seconds"}, ["S02"], "not a number"),
    ({}, ["Z99"], "no device 'Z99'"),
    ({}, [], "at least 1 device"),
    ({}, ["S02", "S02"], "listed twice"),
])
def test_bad_input_is_refused_before_any_io_and_nothing_is_stored(runner, bench, params, devices, words):
    before = sent(bench)
    with pytest.raises(ParameterError, match=words) as err:
        runner.run(Reads, params, devices)
    assert "\n" not in str(err.value)
    assert sent(bench) == before
    assert not runner.store.path.exists()


def test_unknown_protocol_name(runner):
    with pytest.raises(ParameterError, match="no protocol 'nope'"):
        runner.run("nope", {}, ["S02"])


# ------------------------------------------------------------------------ aborts
def test_abort_from_another_thread_takes_effect_within_one_step(runner, bench):
    seen = threading.Event()
    latest = [0]

    def watch(e):
        if isinstance(e, Points):
            latest[0] = e.rows
            if e.rows == 40:
                seen.set()

    runner.subscribe(watch)
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=runner.run(Reads, {"reads": 10**6, "every": 1.0}, ["S02"])))
    worker.start()
    assert seen.wait(30)
    runner.abort("stop button")  # as a GUI button would, from this thread
    rows_when_aborted = latest[0]
    worker.join(30)
    out = result["out"]
    assert out.status == "aborted" and out.error == "stop button"
    # the step under way when abort() came may finish; no other step starts
    assert 40 <= out.n_points <= rows_when_aborted + 1
    assert len(runner.store.read(out.run_id)) == out.n_points  # every point taken is kept
    assert runner.store.info(out.run_id).status == "aborted"
    assert_safe(bench)
    assert "smua.source.output = 0" in last_2612a_messages(bench, 40)


def test_ctrl_c_in_the_main_thread_aborts_cleanly(runner, bench):
    def interrupt(e):
        if isinstance(e, Points) and e.rows == 5:
            os.kill(os.getpid(), signal.SIGINT)

    runner.subscribe(interrupt)
    out = runner.run(Reads, {"reads": 1000}, ["S02"])
    assert out.status == "aborted" and "Ctrl-C" in out.error
    assert 5 <= out.n_points <= 6
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert_safe(bench)


def test_wall_clock_sleep_ends_at_once_on_abort():
    ev = threading.Event()

    def check():
        if ev.is_set():
            raise RunAborted("stop")

    clock = AbortableClock(WallClock(), ev, check)
    threading.Timer(0.1, ev.set).start()
    t0 = time.monotonic()
    with pytest.raises(RunAborted):
        clock.sleep(30.0)
    assert time.monotonic() - t0 < 5.0


# ---------------------------------------------------------------------- failures
def test_protocol_error_fails_the_run_keeps_points_and_makes_the_bench_safe(runner, bench):
    out = runner.run(Reads, {"reads": 100, "fail_at": 30}, ["S02"])
    assert out.status == "failed" and "ZeroDivisionError" in out.error
    assert out.n_points == 30
    assert list(runner.store.read(out.run_id)["index"]) == list(range(30))
    assert runner.store.info(out.run_id).error == out.error
    assert_safe(bench)


@pytest.mark.parametrize("fault", ["instrument_error", "dropped_connection", "late_reply"])
def test_instrument_fault_mid_run(runner, bench, fault):
    emu = bench.sim["k2612a"]

    def strike(e):
        if isinstance(e, Points) and e.rows == 12:
            if fault == "instrument_error":
                emu.inject_error(-240, "Hardware error")
            elif fault == "late_reply":
                emu.faults.delay_replies(60.0, count=1)
            else:
                emu.faults.drop_connection(count=1)

    runner.subscribe(strike)
    out = runner.run(Reads, {"reads": 100}, ["S02"])
    assert out.status == "failed"
    assert ("Hardware error" in out.error) if fault == "instrument_error" else ("communication" in out.error)
    assert 12 <= out.n_points <= 13
    assert len(runner.store.read(out.run_id)) == out.n_points
    assert_safe(bench)


def test_failed_analysis_keeps_the_data(runner, bench):
    out = runner.run(BrokenAnalysis, {"reads": 7}, ["S02"])
    assert out.status == "failed" and out.error == "analysis failed: ValueError: cannot fit an empty curve"
    assert len(runner.store.read(out.run_id)) == 7


def test_results_that_cannot_be_stored_fail_the_run_and_keep_the_data(runner, monkeypatch):
    monkeypatch.setattr(Reads, "analyze", lambda self, data, p: {"good": 1.0, "bad": object(), "worse": 1j})
    out = runner.run(Reads, {"reads": 3}, ["S02"])
    assert out.status == "failed" and "the results could not be stored" in out.error
    info = runner.store.info(out.run_id)
    assert info.status == "failed" and info.results == {} and info.n_points == 3


def test_multi_device_run_goes_past_a_failed_device(runner, bench):
    failed = []
    runner.subscribe(lambda e: failed.append(e.device) if isinstance(e, DeviceFailed) else None)
    out = runner.run(FailsOnS03, {"reads": 4}, ["S02", "S03", "S04"])
    assert out.status == "completed"
    assert failed == ["S03"] and out.failed_devices == {"S03": "M2 did not set within 2 V"}
    df = runner.store.read(out.run_id)
    assert df.groupby("device").size().to_dict() == {"S02": 4, "S04": 4}
    assert runner.store.info(out.run_id).results["failed_devices"] == {"S03": "M2 did not set within 2 V"}
    assert_safe(bench)


def test_run_fails_when_every_device_fails(runner):
    out = runner.run(FailsOnS03, {"reads": 4}, ["S03"])
    assert out.status == "failed" and "every device failed" in out.error


def test_safe_state_failure_is_reported(runner, bench, monkeypatch):
    def broken():
        raise SafeStateError("k2612a: no reply")

    monkeypatch.setattr(bench, "safe_state", broken)
    out = runner.run(Reads, {"reads": 2}, ["S02"])
    assert out.status == "failed" and "safe state failed: k2612a: no reply" in out.error


# ----------------------------------------------------------------------- kill -9
def test_kill_9_mid_run_keeps_every_flushed_point(tmp_path):
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, str(HERE / "toy_protocols.py"), str(path)],
                            stdout=subprocess.PIPE, text=True, cwd=HERE)
    flushed = 0
    try:
        deadline = time.monotonic() + 60
        while flushed < 500 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("flushed"):
                flushed = int(line.split()[1])
        assert flushed >= 500, "the child never flushed"
        # a live run can be watched from another process (SWMR), as the GUI does
        live = Store(path).runs()
        assert live["status"].tolist() == ["running"] and live["n_points"].iloc[0] >= 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # drain what the child printed before it died: the last flush it reported
    for line in proc.stdout.read().splitlines():
        if line.startswith("flushed"):
            flushed = int(line.split()[1])
    store = Store(path)
    runs = store.runs()
    assert runs["status"].tolist() == ["interrupted"]
    df = store.read(runs.index[0])
    assert len(df) >= flushed
    assert (df["index"].to_numpy() == np.arange(len(df))).all()
    assert np.isfinite(df["i"]).all() and (df["device"] == "S02").all()
    with h5py.File(path, "r", swmr=True) as f:  # any HDF5 reader opens it
        assert f.attrs["schema"] == "labpcu"
    # the file takes new runs; the dead one stays interrupted, with its reason
    rec = store.begin_run("after", Reads.columns)
    rec.append({"index": 0, "t": 0.0, "v": 0.0, "i": 0.0, "device": "S02"})
    rec.finish("completed")
    info = store.info(runs.index[0])
    assert info.status == "interrupted" and "killed" in info.error
    assert info.n_points == len(df)
