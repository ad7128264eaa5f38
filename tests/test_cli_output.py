"""Issue 16, scriptable output: `list` and `show` as JSON and CSV, plain text (no box
drawing, nothing cut) when stdout is not a terminal, unknown filter values as one-line
errors naming the known ones, -v/-q/--log-file before or after any subcommand, and
progress bars in a notebook but never in a pipe."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import sys

import numpy as np
import pytest
from rich.console import Console

from labpcu import cli
from labpcu.cli_runs import plain_json
from labpcu.progress import ProgressBar, TextBar, display_mode
from labpcu.protocols import registry
from labpcu.runner import DeviceFailed, Progress, RunStarted, StatusChanged
from toy_protocols import ReadParams, Reads

BOX = set("─│┌┐└┘├┤┬┴┼━┃┏┓┗┛┡┩╇╈┳┻╋═║╔╗╚╝")
SITES = "Q1,Q2,Q3"  # 12 devices: "S01, S02, ..." is 60 characters, longer than a terminal's cut


class OddResults(Reads):
    """Results a JSON writer must convert: NaN, infinities, arrays, numpy scalars."""

    name = "toy_odd_results"
    title = "toy: odd results"

    def analyze(self, data, p: ReadParams) -> dict:
        return {"nan": math.nan, "inf": -math.inf, "reads": np.int64(len(data)),
                "currents": np.array([1e-6, math.nan, 2e-6]), "nested": {"ok": True, "label": "x", "empty": np.zeros(0)}}


@pytest.fixture
def toys(monkeypatch):
    registry.protocols()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    registry.register(Reads)
    registry.register(OddResults)


@pytest.fixture
def store(toys, tmp_path, capsys):
    """Three runs: one on twelve devices, one failed, one with odd results."""
    path = tmp_path / "runs.h5"
    assert cli.main(["run", "toy_reads", "--device", SITES, "--reads", "2", "--out", str(path),
                     "--sample", "W7", "--operator", "ana"]) == 0
    assert cli.main(["run", "toy_reads", "--device", "S05", "--reads", "3", "--fail-at", "1", "--out", str(path)]) == 1
    assert cli.main(["run", "toy_odd_results", "--device", "S06", "--reads", "2", "--out", str(path)]) == 0
    capsys.readouterr()
    return path


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code, err, *words):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("labpcu: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ------------------------------------------------------------------ plain output
def test_a_piped_list_has_no_box_drawing_and_cuts_nothing(store, capsys):
    code, out, _ = run_cli(capsys, "list", "runs", "--file", str(store))
    assert code == 0
    assert not BOX & set(out) and "…" not in out
    twelve = ", ".join(f"S{k:02d}" for k in range(1, 13))
    assert twelve in out and "ZeroDivisionError: division by zero" in out
    header, *rows = out.splitlines()
    assert header.split() == ["run", "protocol", "status", "started", "points", "devices", "error"]
    assert [r.split()[0] for r in rows] == ["00001-toy_reads", "00002-toy_reads", "00003-toy_odd_results"]
    assert [header.index("status"), header.index("points") + len("points")] == \
        [rows[1].index("failed"), rows[1].index(" 1 ") + 2]  # columns aligned, numbers to the right


@pytest.mark.parametrize("what, words", [("protocols", ["toy_reads", "toy: periodic M2 reads"]),
                                         ("devices", ["A9-R3C3", "array A9 row 3 col 3", "S20"])])
def test_piped_protocols_and_devices_are_plain_too(toys, capsys, what, words):
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0 and not BOX & set(out) and "…" not in out
    for w in words:
        assert w in out


def test_a_piped_show_has_no_box_drawing_and_every_device(store, capsys):
    code, out, _ = run_cli(capsys, "show", "1", "--file", str(store))
    assert code == 0 and not BOX & set(out) and "…" not in out
    assert "devices: " + ", ".join(f"S{k:02d}" for k in range(1, 13)) in out


# ------------------------------------------------------------------------ JSON
def test_list_runs_json(store, capsys):
    code, out, _ = run_cli(capsys, "list", "runs", "--file", str(store), "--json")
    assert code == 0
    runs = json.loads(out)
    assert [r["run_id"] for r in runs] == ["00001-toy_reads", "00002-toy_reads", "00003-toy_odd_results"]
    first, failed = runs[0], runs[1]
    assert first["devices"] == [f"S{k:02d}" for k in range(1, 13)] and first["n_points"] == 24
    assert first["status"] == "completed" and first["sample"] == "W7" and first["operator"] == "ana"
    assert first["metadata"] == {"sample": {"name": "W7", "operator": "ana"}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", first["started"]) and first["duration_s"] >= 0
    assert failed["status"] == "failed" and "ZeroDivisionError" in failed["error"]


def test_list_runs_json_with_filters_and_nothing_matching(store, capsys):
    code, out, _ = run_cli(capsys, "list", "runs", "--file", str(store), "--json", "--status", "failed")
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == ["00002-toy_reads"]
    code, out, _ = run_cli(capsys, "list", "runs", "--file", str(store), "--json", "--status", "aborted")
    assert code == 0 and json.loads(out) == []  # a known status no run has: nothing, not an error


def test_list_protocols_and_devices_json(toys, capsys):
    code, out, _ = run_cli(capsys, "list", "protocols", "--json")
    protocols = {p["protocol"]: p for p in json.loads(out)}
    assert code == 0 and protocols["toy_reads"]["title"] == "toy: periodic M2 reads"
    assert {"name": "every", "unit": "s", "default": 10.0, "help": "time between reads"} in protocols["toy_reads"]["parameters"]
    code, out, _ = run_cli(capsys, "list", "devices", "--json")
    devices = {d["device"]: d for d in json.loads(out)}
    assert code == 0 and devices["A9-R3C3"]["array"] == "A9" and devices["A9-R3C3"]["row"] == 3
    assert devices["S20"]["array"] is None and isinstance(devices["S20"]["x_mm"], float)


def test_show_json_gives_metadata_parameters_results_and_columns(store, capsys):
    code, out, err = run_cli(capsys, "show", "3", "--file", str(store), "--json")
    assert code == 0, err
    run = json.loads(out)  # strict JSON: a NaN would have been written as NaN, which json.loads takes
    assert "NaN" not in out and "Infinity" not in out
    assert run["run_id"] == "00003-toy_odd_results" and run["status"] == "completed" and run["devices"] == ["S06"]
    assert run["parameters"]["every"] == 10.0 and run["parameter_units"]["every"] == "s"
    assert run["columns"] == {"index": "", "t": "s", "v": "V", "i": "A", "device": ""}
    assert run["results"]["nan"] is None and run["results"]["inf"] is None and run["results"]["reads"] == 2
    assert run["results"]["currents"] == [1e-6, None, 2e-6]
    assert run["results"]["nested"] == {"ok": True, "label": "x", "empty": []}
    assert run["n_points"] == 2 and run["bench"]["simulated"] is True and run["labpcu_version"]


def test_show_json_keeps_stdout_for_the_document(store, tmp_path, capsys):
    data = tmp_path / "data.csv"
    code, out, err = run_cli(capsys, "show", "1", "--file", str(store), "--json", "--csv", str(data))
    assert code == 0 and json.loads(out)["run_id"] == "00001-toy_reads"
    assert f"data written to {data}" in err and data.exists()


def test_plain_json_converts_numpy_and_non_finite_numbers():
    value = {"a": np.float32(1.5), "b": np.array([[1, 2], [3, 4]]), "c": (math.nan, np.inf), 3: np.bool_(True)}
    assert plain_json(value) == {"a": 1.5, "b": [[1, 2], [3, 4]], "c": [None, None], "3": True}
    json.dumps(plain_json(value), allow_nan=False)


# ------------------------------------------------------------------------- CSV
def test_list_runs_csv(store, capsys):
    code, out, _ = run_cli(capsys, "list", "runs", "--file", str(store), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["run_id"] for r in rows] == ["00001-toy_reads", "00002-toy_reads", "00003-toy_odd_results"]
    assert rows[0]["devices"] == " ".join(f"S{k:02d}" for k in range(1, 13)) and rows[0]["n_points"] == "24"
    assert rows[0]["sample"] == "W7" and rows[1]["sample"] == "" and "ZeroDivisionError" in rows[1]["error"]


@pytest.mark.parametrize("what, key, value", [("protocols", "protocol", "toy_reads"), ("devices", "device", "A9-R3C3")])
def test_list_protocols_and_devices_csv(toys, capsys, what, key, value):
    code, out, _ = run_cli(capsys, "list", what, "--csv")
    assert code == 0 and value in [r[key] for r in csv.DictReader(io.StringIO(out))]


def test_json_and_csv_together_are_refused(store, capsys):
    code, _, err = run_cli(capsys, "list", "runs", "--file", str(store), "--json", "--csv")
    one_error_line(code, err, "not allowed with argument")


# -------------------------------------------------------------- unknown filters
@pytest.mark.parametrize("flag, value, words", [
    ("--protocol", "toy_read", ["unknown protocol 'toy_read'", "did you mean 'toy_reads'?", "iv_sweep", "ispp"]),
    ("--protocol", "isp", ["unknown protocol 'isp'", "did you mean 'ispp'?"]),
    ("--status", "finishd", ["unknown status 'finishd'", "statuses: running, completed, aborted, failed, interrupted"]),
    ("--device", "S99", ["unknown device 'S99'", "S01, S02"]),
    ("--sample", "W8", ["unknown sample 'W8'", "samples in", "W7"]),
    ("--operator", "bob", ["unknown operator 'bob'", "operators in", "ana"]),
])
@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_an_unknown_filter_value_is_one_line_naming_the_known_ones(store, capsys, flag, value, words, fmt):
    code, out, err = run_cli(capsys, "list", "runs", "--file", str(store), flag, value, *fmt)
    one_error_line(code, err, *words)
    assert out == ""


@pytest.mark.parametrize("flag, value", [("--protocol", "ispp"), ("--device", "A1-R1C1"), ("--status", "aborted")])
def test_a_known_value_without_runs_is_an_empty_listing(store, capsys, flag, value):
    code, out, err = run_cli(capsys, "list", "runs", "--file", str(store), flag, value, "--json")
    assert code == 0 and json.loads(out) == [] and err == ""


# ----------------------------------------------------------------- -v -q --log-file
@pytest.fixture
def chatty(monkeypatch):
    """`labpcu list` replaced by a command that logs one record at each level."""
    import labpcu.cli_runs

    def cmd_list(args):
        log = logging.getLogger("labpcu.somewhere")
        log.debug("a debug record")
        log.info("an info record")
        log.warning("a warning record")
        log.error("an error record")
        print("the listing")
        return 0

    monkeypatch.setattr(labpcu.cli_runs, "cmd_list", cmd_list)


@pytest.mark.parametrize("flags, shown", [
    ([], ["warning", "error"]),
    (["-v"], ["info", "warning", "error"]),
    (["-vv"], ["debug", "info", "warning", "error"]),
    (["-v", "-v"], ["debug", "info", "warning", "error"]),
    (["--verbose"], ["info", "warning", "error"]),
    (["-q"], ["error"]),
    (["--quiet"], ["error"]),
    (["-v", "-q"], ["warning", "error"]),
])
@pytest.mark.parametrize("where", ["before", "after", "between"])
def test_verbosity_flags_before_or_after_the_subcommand(chatty, capsys, flags, shown, where):
    argv = {"before": [*flags, "list", "runs"], "after": ["list", "runs", *flags],
            "between": ["list", *flags, "runs"]}[where]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and out == "the listing\n"
    levels = [m.group(1) for m in re.finditer(r"^labpcu\.somewhere: (\w+): ", err, re.M)]
    assert levels == shown, err
    assert "labpcu: error" not in err  # a logged error is not the command's error line
    if "debug" in shown:
        assert "labpcu.somewhere: debug: a debug record" in err


def test_flags_at_two_levels_add_up(chatty, capsys):
    code, _, err = run_cli(capsys, "-v", "list", "runs", "-v")
    assert code == 0 and "labpcu.somewhere: debug: " in err


def test_every_subcommand_takes_the_flags():
    parser = cli.build_parser()
    for argv, expected in [
        (["store", "check", "f.h5", "-vv"], (2, None)),
        (["-q", "campaign", "run", "c.toml"], (-1, None)),
        (["campaign", "run", "c.toml", "--quiet", "--log-file", "x.log"], (-1, "x.log")),
        (["--log-file", "a.log", "run", "iv_sweep", "--device", "S01", "--log-file", "b.log", "-v"], (1, "b.log")),
        (["codebook", "show", "cb.h5", "-v"], (1, None)),
        (["sim", "sites", "-q"], (-1, None)),
        (["show", "1", "--verbose"], (1, None)),
        (["list", "runs"], (0, None)),
    ]:
        args = parser.parse_args(cli.values_may_be_negative(parser, argv))
        assert cli.log_options(args) == expected, argv


def test_the_log_file_gets_everything_with_timestamps(chatty, tmp_path, capsys):
    log = tmp_path / "labpcu.log"
    code, out, err = run_cli(capsys, "list", "runs", "-q", "--log-file", str(log))
    assert code == 0 and err == "labpcu.somewhere: error: an error record\n"
    lines = log.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    for level, text in [("DEBUG", "a debug record"), ("INFO", "an info record"), ("WARNING", "a warning record"),
                        ("ERROR", "an error record")]:
        assert any(re.match(rf"{stamp} {level} +labpcu\.somewhere: {text}$", ln) for ln in lines), lines
    run_cli(capsys, "--log-file", str(log), "list", "runs")
    assert len(log.read_text().splitlines()) > len(lines)  # appended


def test_a_log_file_that_cannot_be_written_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "list", "protocols", "--log-file", str(tmp_path))
    one_error_line(code, err, "cannot write the log file", "it is a directory")


def test_library_logs_add_no_line_to_the_error_line(monkeypatch, tmp_path, capsys):
    """At the default verbosity, what was logged before an error is not printed around
    its one line; -v shows it, and the log file keeps it with the error."""
    import labpcu.cli_runs

    def cmd_list(args):
        logging.getLogger("labpcu.bench").warning("reopening the connection to k2612a")
        logging.getLogger("labpcu.runner").error("00001 failed: lost")
        raise labpcu.cli_runs.UsageError("the store is gone")

    monkeypatch.setattr(labpcu.cli_runs, "cmd_list", cmd_list)
    code, out, err = run_cli(capsys, "list", "runs")
    assert code == 2 and err == "labpcu: error: the store is gone\n" and out == ""
    code, out, err = run_cli(capsys, "list", "runs", "-v")
    assert code == 2 and err.splitlines() == ["labpcu.bench: warning: reopening the connection to k2612a",
                                              "labpcu.runner: error: 00001 failed: lost",
                                              "labpcu: error: the store is gone"]
    log = tmp_path / "l.log"
    run_cli(capsys, "list", "runs", "--log-file", str(log))
    text = log.read_text()
    assert "reopening the connection" in text and "ERROR    labpcu.cli: the store is gone" in text


def test_main_leaves_the_labpcu_logger_as_it_found_it(chatty, tmp_path, capsys):
    logger = logging.getLogger("labpcu")
    before = (logger.level, list(logger.handlers))
    run_cli(capsys, "-vv", "list", "runs", "--log-file", str(tmp_path / "x.log"))
    assert (logger.level, list(logger.handlers)) == before


def test_quiet_runs_show_no_progress_bar(toys, tmp_path, capsys, monkeypatch):
    import labpcu.progress

    made = []
    monkeypatch.setattr(labpcu.progress.ProgressBar, "__init__",
                        lambda self, *a, **kw: made.append(1) or setattr(self, "mode", None) or None)
    monkeypatch.setattr(labpcu.progress.ProgressBar, "__call__", lambda self, event: None)
    out = tmp_path / "r.h5"
    assert cli.main(["run", "toy_reads", "--device", "S02", "--reads", "2", "--out", str(out)]) == 0
    assert made == [1]
    assert cli.main(["-q", "run", "toy_reads", "--device", "S02", "--reads", "2", "--out", str(out)]) == 0
    assert made == [1]


# ---------------------------------------------------------------- progress bars
def _feed(bar: ProgressBar, n: int = 5) -> None:
    bar(RunStarted("00001-x", "iv_sweep", ("S01",), {}, ()))
    for k in range(1, n + 1):
        bar(Progress("00001-x", k, n, "sweeping"))
    bar(DeviceFailed("00001-x", "S01", "open circuit"))
    bar(StatusChanged("00001-x", "completed"))


def test_a_pipe_gets_no_bar(monkeypatch):
    started = []
    monkeypatch.setattr("rich.progress.Progress.start", lambda self: started.append(self))
    file = io.StringIO()
    bar = ProgressBar(Console(file=file), delay=0.0)
    assert display_mode(bar.console) is None
    _feed(bar)
    assert started == [] and "\x1b" not in file.getvalue() and "━" not in file.getvalue()
    assert file.getvalue() == "device S01 failed: open circuit\n"  # lines still come, as plain text


def test_a_notebook_without_ipywidgets_gets_a_text_bar(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # find_spec raises for a None module
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "ipywidgets" else object())
    file = io.StringIO()
    bar = ProgressBar(Console(file=file, force_jupyter=True), delay=0.0)
    assert bar.mode == "jupyter-text"
    bar(RunStarted("00001-x", "iv_sweep", ("S01",), {}, ()))
    bar(Progress("00001-x", 2, 4, "sweeping"))
    assert isinstance(bar._bar, TextBar)
    text = file.getvalue()
    assert "\x1b" not in text and "\riv_sweep on S01 sweeping  [" in text and "2/4" in text
    bar(StatusChanged("00001-x", "completed"))
    assert bar._bar is None and file.getvalue().endswith("\r")


def test_a_notebook_with_ipywidgets_gets_rich_jupyter_display(monkeypatch):
    pytest.importorskip("ipywidgets")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *a, **kw: shown.append(a))
    file = io.StringIO()
    bar = ProgressBar(Console(file=file, force_jupyter=True), delay=0.0)
    assert bar.mode == "jupyter"
    bar(RunStarted("00001-x", "iv_sweep", ("S01",), {}, ()))
    bar(Progress("00001-x", 2, 4, "sweeping"))
    assert bar._bar is not None and bar._bar.live.is_started
    bar(StatusChanged("00001-x", "completed"))
    assert "\x1b" not in file.getvalue()


def test_a_terminal_gets_the_live_bar():
    bar = ProgressBar(Console(file=io.StringIO(), force_terminal=True), delay=0.0)
    assert bar.mode == "terminal"
    bar(RunStarted("00001-x", "iv_sweep", ("S01",), {}, ()))
    bar(Progress("00001-x", 1, 4, ""))
    assert bar._bar is not None
    bar.stop()


def test_a_piped_campaign_draws_no_bar(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[campaign]\nname = "c"\nstore = "w.h5"\n\n[[step]]\nname = "screen"\nprotocol = "iv_sweep"\n'
                    'devices = ["S01"]\nparams = { points = 11 }\n')
    code, out, err = run_cli(capsys, "campaign", "run", str(path))
    assert code == 0 and "campaign 'c' completed" in out
    assert not BOX & set(err) and "\x1b" not in err
