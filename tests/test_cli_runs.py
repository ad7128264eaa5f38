"""`labpcu run`, `list` and `show`: flags generated from the parameter dataclasses,
exit codes, one-line errors with nothing sent to an instrument, and the plot."""

from __future__ import annotations

import pytest

from labpcu import cli
from labpcu.bench import Bench
from labpcu.data.store import Store
from labpcu.protocols import registry
from toy_protocols import Reads


@pytest.fixture
def toy_registry(monkeypatch):
    """The toy protocol registered for this test only (built-ins loaded first, so the
    restored registry still has them)."""
    registry.protocols()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    registry.register(Reads)


@pytest.fixture
def opened(monkeypatch):
    """Count benches opened: no instrument can be reached without one."""
    calls = []
    real = Bench.from_file.__func__

    def counting(cls, *a, **kw):
        calls.append((a, kw))
        return real(cls, *a, **kw)

    monkeypatch.setattr(Bench, "from_file", classmethod(counting))
    return calls


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_list_show_and_plot(toy_registry, tmp_path, capsys):
    store = tmp_path / "runs.h5"
    code, out, err = run_cli(capsys, "run", "toy_reads", "--device", "S02", "--reads", "30", "--every", "5 s",
                             "--out", str(store))
    assert code == 0, err
    assert "00001-toy_reads completed: 30 points" in out
    assert Store(store).info("00001-toy_reads").parameters["every"] == 5.0
    code, out, _ = run_cli(capsys, "list", "runs", "--file", str(store))
    assert code == 0 and "00001-toy_reads" in out and "completed" in out
    png, csv = tmp_path / "plot.png", tmp_path / "data.csv"
    code, out, _ = run_cli(capsys, "show", "1", "--file", str(store), "--plot", str(png), "--csv", str(csv))
    assert code == 0
    assert "every = 5.0 s" in out and "mean_current" in out and "columns: index, t (s), v (V), i (A), device" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert len([ln for ln in csv.read_text().splitlines() if not ln.startswith("#")]) == 31  # header + 30 rows


def test_a_failed_measurement_exits_1(toy_registry, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", "toy_reads", "--device", "S02", "--fail-at", "3", "--out", str(tmp_path / "r.h5"))
    assert code == 1 and "failed: 3 points" in out and "ZeroDivisionError" in out


@pytest.mark.parametrize("argv, words", [
    (["run", "no_such_protocol", "--device", "S02"], "invalid choice: 'no_such_protocol'"),
    (["run", "toy_reads", "--device", "S99"], "no device or site 'S99'"),
    (["run", "toy_reads", "--device", "S02", "--v-read", "3 V"], "above its limit 500 mV"),
    (["run", "toy_reads", "--device", "S02", "--reads", "many"], "'many' is not a number"),
    (["run", "toy_reads", "--device", "S02", "--reads", "2.5"], "not a whole number"),
    (["run", "toy_reads", "--device", "S02", "--every", "3 A"], "expected unit 's'"),
    (["run", "toy_reads", "--device", "S02", "--bench", "/no/such/bench.toml"], "bench file not found"),
    (["run", "toy_reads"], "--device"),
    (["run", "toy_reads", "--device", "S02", "--frobnicate", "1"], "unrecognized arguments: --frobnicate"),
    (["show", "1", "--file", "/no/such/runs.h5"], "no run store at /no/such/runs.h5"),
    (["list", "things"], "invalid choice: 'things'"),
    (["list", "devices", "--bench", "/no/such/bench.toml"], "bench file not found"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_opened(toy_registry, opened, tmp_path, capsys, argv, words):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labpcu: error:") and words in lines[0], err
    assert "Traceback" not in err + out
    assert opened == [], "an instrument connection was opened"


def test_show_unknown_run(toy_registry, tmp_path, capsys):
    store = tmp_path / "r.h5"
    assert run_cli(capsys, "run", "toy_reads", "--device", "S02", "--reads", "2", "--out", str(store))[0] == 0
    code, _, err = run_cli(capsys, "show", "7", "--file", str(store))
    assert code == 2 and "no run '7'" in err


def test_help_gives_units_limits_and_defaults(toy_registry, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "toy_reads", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--v-read V" in out and "read voltage; in V; -500 mV to 500 mV; default 100 mV" in out


def test_list_protocols_and_devices(toy_registry, capsys):
    code, out, _ = run_cli(capsys, "list", "protocols")
    assert code == 0 and "toy_reads" in out
    code, out, _ = run_cli(capsys, "list", "devices")
    assert code == 0 and "A9-R3C3" in out and "S20" in out


def test_a_site_expands_to_its_devices(toy_registry, tmp_path, capsys):
    store = tmp_path / "r.h5"
    code, out, _ = run_cli(capsys, "run", "toy_reads", "--device", "Q1", "--reads", "2", "--out", str(store))
    assert code == 0
    assert Store(store).info("00001-toy_reads").devices == ("S01", "S02", "S03", "S04")


# ------------------------------------------------------------- the real protocols
@pytest.mark.parametrize("argv, words", [
    (["run", "iv_sweep", "--device", "S01", "--stop", "4"], "exceeds the bench limit of 3 V"),
    (["run", "iv_sweep", "--device", "S01", "--spacing", "cubic"], "is not one of linear, log, list"),
    (["run", "hysteresis", "--device", "S02", "--v-set-max", "5 V"], "exceeds the bench limit of 2 V"),
    (["run", "hysteresis", "--device", "S02", "--cycles", "two"], "'two' is not a number"),
    (["run", "retention", "--device", "S02", "--component", "m3"], "is not one of m1, m2"),
    (["run", "ispp", "--device", "S06", "--targets", "1"], "above its limit 10 mS"),  # 10× M1's 1 mS top (v2 wafer)
    (["run", "binary_switch", "--device", "S07", "--action", "flip"], "is not one of set, reset"),
    (["run", "configure", "--device", "S08", "--mode", "turbo"], "is not one of vmm, softplus, sigmoid, exp"),
    (["run", "weight_statistics", "--device", "Z9"], "no device or site 'Z9'"),
])
def test_real_protocols_refuse_bad_input_before_opening_the_bench(opened, capsys, argv, words):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert opened == []


def test_real_protocol_end_to_end_and_a_missed_criterion_exits_1(tmp_path, capsys):
    store = tmp_path / "r.h5"
    code, out, _ = run_cli(capsys, "run", "iv_sweep", "--device", "S01", "--out", str(store))
    assert code == 0 and "completed" in out
    assert Store(store).info("00001-iv_sweep").results["devices"]["S01"]["rectification_ratio"] > 1e3
    # 5 mS is beyond every M1 of the wafer (the v2 wafer's M1 tops out near 1 mS, was 110 µS):
    # the run completes, the ISPP criterion fails
    code, out, _ = run_cli(capsys, "run", "ispp", "--device", "S06", "--targets", "5 mS", "--out", str(store))
    assert code == 1 and "missed its pass criterion" in out
