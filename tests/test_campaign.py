"""Campaigns: files checked whole before any I/O (every mistake with its line), plans
expanded into tasks, device selection from earlier results, the engine's progress in
the store, refusals on resume, pause/resume/abort from another process, and the CLI."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labpcu.bench import Bench
from labpcu.campaign.engine import CampaignControl, CampaignEngine, CampaignRefused, CampaignState, campaign_runs
from labpcu.campaign.loader import CampaignError, parse_campaign
from labpcu.campaign.plan import tasks_of
from labpcu.campaign.select import SelectionError, matches
from labpcu.campaign.validate import check_campaign, together, validate
from labpcu.cli import main
from labpcu.data.store import Store

SCREEN_AND_PROGRAM = """\
[campaign]
name = "screen and program"
store = "w.h5"

[sample]
wafer = "W7"
operator = "ana"

[[step]]
name = "screen"
protocol = "iv_sweep"
devices = ["S01", "S02", "S03"]
params = { points = 11 }

[[step]]
name = "program"
protocol = "ispp"
devices = { from = "screen", where = "status == 'completed' and rectification_ratio > 1e3" }
params = { targets = ["50u"] }
on_fail = "continue"

[[step]]
name = "hold"
protocol = "retention"
devices = { from = "program", where = "status == 'completed'" }
params = { component = "m1", duration = "30 s" }
"""


def write(tmp_path: Path, text: str = SCREEN_AND_PROGRAM, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def offline():
    return Bench.offline()


# ------------------------------------------------------------------ files
def test_a_campaign_file_loads_and_expands_into_tasks(tmp_path, offline):
    c = parse_campaign(SCREEN_AND_PROGRAM, str(write(tmp_path)))
    assert [s.name for s in c.steps] == ["screen", "program", "hold"]
    assert c.store_path() == tmp_path / "w.h5" and c.sample == {"wafer": "W7", "operator": "ana"}
    tasks = validate(c, offline)  # the selection steps are checked on every candidate
    assert [t.key for t in tasks] == ["screen/S01", "screen/S02", "screen/S03"]
    assert c.steps[1].params["targets"] == "50u"


def test_repeats_grids_and_joint_protocols_expand(offline):
    c = parse_campaign("""
[campaign]
name = "g"
[[step]]
name = "reads"
protocol = "iv_sweep"
devices = ["S01", "S02"]
repeat = 2
grid = { points = [11, 21] }
[[step]]
name = "mul"
protocol = "multiplier"
devices = ["A1-R1C1", "A1-R2C1", "A1-R3C1"]
params = { grid_points = 3 }
""", "g.toml")
    reads, mul = c.steps
    keys = [t.key for t in tasks_of(reads, 0, ["S01", "S02"], together(reads))]
    assert len(keys) == 8 and len(set(keys)) == 8 and "reads/S02/r2/points=21" in keys
    assert together(mul) and not together(reads)
    assert len(validate(c, offline)) == 9


def test_every_mistake_is_reported_at_once_with_its_line(tmp_path, capsys):
    text = """[campaign]
name = "bad"
stor = "x.h5"

[[step]]
name = "screen"
protocol = "iv_swep"
devices = ["S01"]

[[step]]
name = "screen"
protocol = "ispp"
devices = { from = "nowhere" }
on_fail = "maybe"
"""
    path = write(tmp_path, text)
    with pytest.raises(CampaignError) as err:
        parse_campaign(text, str(path))
    problems = err.value.problems
    assert f"{path}:3: [campaign]: unknown key 'stor' (did you mean 'store'?)" in problems
    assert any(p.startswith(f"{path}:7:") and "no protocol 'iv_swep' (did you mean 'iv_sweep'?)" in p for p in problems)
    assert any(p.startswith(f"{path}:11:") and "used by an earlier step (line 5)" in p for p in problems)
    assert any(p.startswith(f"{path}:13:") and "'from' must name an earlier step" in p for p in problems)
    assert any(p.startswith(f"{path}:14:") and "on_fail" in p for p in problems)
    assert len(problems) == 5
    assert main(["campaign", "run", str(path)]) == 2  # every line printed, nothing opened
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5 and all(ln.startswith("labpcu: error: ") for ln in lines)
    assert not (tmp_path / "x.h5").exists()


def test_protocol_and_bench_mistakes_are_found_offline_with_the_steps_line(tmp_path, offline):
    text = SCREEN_AND_PROGRAM.replace("params = { points = 11 }", "params = { points = 11, nplc = 99 }").replace(
        'params = { component = "m1", duration = "30 s" }', 'params = { component = "m1", v_read = 3.0 }')
    with pytest.raises(CampaignError) as err:
        validate(parse_campaign(text, "c.toml"), offline)
    problems = err.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("c.toml:13: step 'screen': ") and "nplc" in problems[0]  # the params line
    assert problems[1].startswith("c.toml:26: step 'hold': ") and "v_read" in problems[1]


_VALID_STEP = {"name": "s1", "protocol": "iv_sweep", "devices": ["S01"], "params": {"points": 11}}
_MISTAKES = {
    "unknown step key": ("colour", "red", "unknown key 'colour'"),
    "bad protocol": ("protocol", "nosuch", "no protocol 'nosuch'"),
    "bad device": ("devices", ["Z99"], "no device or site Z99"),
    "bad params type": ("params", 5, "params must be a table"),
    "bad param value": ("params", {"points": -3}, "points"),
    "unknown param": ("params", {"pionts": 11}, "pionts"),
    "bad repeat": ("repeat", 0, "repeat must be"),
    "bad on_fail": ("on_fail", "never", "on_fail must be"),
    "bad selection": ("devices", {"from": "s0", "where": "__import__('os')"}, "not allowed"),
    "bad grid": ("grid", {"points": []}, "grid must be"),
}


def _toml(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.lists(st.sampled_from(sorted(_MISTAKES)), min_size=1, max_size=4, unique=True), data=st.data())
def test_fuzzed_campaign_files_report_every_mistake_and_send_nothing(chosen, data, offline):
    """One valid step per mistake, each broken in its own way: every mistake is named,
    each on its step's line, and nothing is opened."""
    blocks = ['[campaign]\nname = "fuzz"\n', '[[step]]\nname = "s0"\nprotocol = "iv_sweep"\ndevices = ["S01"]\n']
    for k, kind in enumerate(chosen):
        key, value, _ = _MISTAKES[kind]
        step = {**_VALID_STEP, "name": f"s{k + 1}", key: value}
        blocks.append("[[step]]\n" + "".join(f"{kk} = {_toml(vv)}\n" for kk, vv in step.items()))
    text = "\n".join(blocks)
    path = Path(tempfile.mkdtemp()) / "f.toml"
    path.write_text(text)
    with pytest.raises(CampaignError) as err:
        check_campaign(path, offline)
    problems = err.value.problems
    for k, kind in enumerate(chosen):
        expect = _MISTAKES[kind][2]
        assert any(f"s{k + 1}" in p and expect in p and p.startswith(f"{path}:") for p in problems), (kind, problems)


def test_selection_expressions_are_data_not_code():
    values = {"status": "completed", "rectification_ratio": 5e4, "failed": False, "passed": True}
    assert matches("status == 'completed' and rectification_ratio > 1e3", values, "S01")
    assert not matches("not passed or failed", values, "S01")
    assert matches("status in ('completed', 'failed')", values, "S01")
    for bad in ("__import__('os').system('x')", "open('f')", "values.keys()", "[x for x in y]", "a if b else c"):
        with pytest.raises(SelectionError):
            matches(bad, values, "S01")
    with pytest.raises(SelectionError, match="no 'r_on' for device S01; it has"):
        matches("r_on < 1e3", values, "S01")


# ------------------------------------------------------------------ engine
def _engine(tmp_path: Path, text: str = SCREEN_AND_PROGRAM, **kw):
    c = parse_campaign(text, str(write(tmp_path, text)))
    bench = Bench.from_file(seed=0)
    return c, bench, CampaignEngine(c, bench, Store(c.store_path()), handle_sigint=False, **kw)


def test_a_campaign_runs_its_tasks_once_and_keeps_its_progress_in_the_store(tmp_path):
    c, bench, engine = _engine(tmp_path)
    events = []
    engine.subscribe(events.append)
    with bench:
        out = engine.run()
        again = CampaignEngine(c, bench, Store(c.store_path()), handle_sigint=False).run()
    assert out.ok and len(out.runs) == 9 and again.ok and again.runs == [] and again.skipped == 9
    done = campaign_runs(c, Store(c.store_path()))
    assert sorted(done) == sorted(f"{s}/S0{k}" for s in ("screen", "program", "hold") for k in (1, 2, 3))
    info = Store(c.store_path()).info(done["hold/S02"].run_id)
    assert info.metadata["sample"] == {"wafer": "W7", "operator": "ana"}
    assert info.metadata["campaign"]["step"] == "hold" and info.protocol == "retention"
    # the retention reads the M1 the ispp step programmed on the same wafer: ≈ 50 µS
    g = Store(c.store_path()).read(done["hold/S02"].run_id)
    assert "g" in g.columns and 40e-6 < float(g["g"].iloc[0]) < 60e-6
    assert Store(c.store_path()).read_document("sim_state")["seed"] == 0
    assert [e.state for e in events if isinstance(e, CampaignState)] == ["running", "completed"]


def test_a_changed_step_with_completed_runs_is_refused_unless_forced(tmp_path):
    c, bench, engine = _engine(tmp_path)
    with bench:
        assert engine.run().ok
        changed = SCREEN_AND_PROGRAM.replace("points = 11", "points = 21")
        c2 = parse_campaign(changed, str(write(tmp_path, changed)))
        with pytest.raises(CampaignRefused, match="step 'screen' changed since its completed runs"):
            CampaignEngine(c2, bench, Store(c2.store_path()), handle_sigint=False).run()
        assert CampaignEngine(c2, bench, Store(c2.store_path()), handle_sigint=False, force=True).run().ok


def test_a_store_of_another_wafer_is_refused(tmp_path, capsys):
    path = write(tmp_path, SCREEN_AND_PROGRAM.split("[[step]]\nname = \"program\"")[0])
    assert main(["campaign", "run", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["campaign", "resume", str(path), "--seed", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds the simulated wafer of seed 0, not 1" in err


def test_pause_and_abort_from_another_process_act_between_tasks(tmp_path):
    c, bench, engine = _engine(tmp_path)
    control = CampaignControl(c.store_path())
    states: list[str] = []
    finished: list[str] = []

    def watch(event):
        if isinstance(event, CampaignState):
            states.append(event.state)
        elif type(event).__name__ == "TaskFinished":
            finished.append(event.task)
            if len(finished) == 2:
                control.pause()  # as `labpcu campaign pause FILE` does, from elsewhere

    engine.subscribe(watch)
    with bench:
        worker = threading.Thread(target=engine.run)
        worker.start()
        for _ in range(200):
            if "paused" in states:
                break
            threading.Event().wait(0.05)
        assert "paused" in states and len(finished) == 2
        control.abort("stopped by the test")
        worker.join(10)
    assert not worker.is_alive() and states[-1] == "aborted" and len(finished) == 2
    resumed, bench2, engine2 = _engine(tmp_path)
    with bench2:
        out = engine2.run()
    assert out.ok and out.skipped == 2 and len(out.runs) == 7


def test_status_json_names_every_step_and_device(tmp_path, capsys):
    path = write(tmp_path)
    assert main(["campaign", "validate", str(path)]) == 0
    assert main(["campaign", "status", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert doc["campaign"] == "screen and program" and doc["complete"] is False
    assert doc["steps"][0]["devices"]["S01"] == {"status": "pending", "run": None}
    assert main(["campaign", "run", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["campaign", "status", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["complete"] is True and [s["name"] for s in doc["steps"]] == ["screen", "program", "hold"]
    assert all(d["status"] == "completed" and d["run"] for s in doc["steps"] for d in s["devices"].values())
    assert main(["campaign", "run", str(path), "--quiet"]) == 2  # started already: resume it
    assert "labpcu campaign resume" in capsys.readouterr().err


def test_json_events_stream_one_object_per_line(tmp_path, capsys):
    path = write(tmp_path, SCREEN_AND_PROGRAM.split("[[step]]\nname = \"program\"")[0])
    assert main(["campaign", "run", str(path), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "CampaignState" and kinds[-1] == "CampaignState" and events[-1]["state"] == "completed"
    assert kinds.count("TaskStarted") == 3 and kinds.count("RunStarted") == 3 and "Points" in kinds


@pytest.mark.slow
@pytest.mark.parametrize("name", ["screening.toml", "program_and_retention.toml"])
def test_the_example_campaigns_run_as_written(tmp_path, name, capsys):
    source = Path(__file__).resolve().parent.parent / "examples" / "campaigns" / name
    path = tmp_path / name
    path.write_text(source.read_text())  # its store lands beside the copy
    assert main(["campaign", "run", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["campaign", "status", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["complete"] and all(s["devices"] for s in doc["steps"])


def test_ispp_then_retention_as_two_commands_read_the_programmed_state(tmp_path, capsys):
    """The simulated wafer remembers between commands on one store (the README's
    program-then-read example): retention reads the 50 µS ispp programmed."""
    store = str(tmp_path / "day.h5")
    assert main(["run", "ispp", "--device", "S03", "--targets", "50u", "--out", store, "--sample", "W7"]) == 0
    assert main(["run", "retention", "--device", "S03", "--component", "m1", "--duration", "60 s",
                 "--out", store]) == 0
    capsys.readouterr()
    runs = Store(store).runs(sample="W7")
    assert list(runs["protocol"]) == ["ispp"]
    data = Store(store).read(Store(store).run_ids()[1])
    assert 45e-6 < float(data["g"].iloc[0]) < 55e-6  # a fresh wafer's M1 would read its own state
    assert main(["run", "retention", "--device", "S03", "--component", "m1", "--duration", "60 s",
                 "--out", store, "--fresh-wafer"]) == 0
    fresh = Store(store).read(Store(store).run_ids()[2])
    assert abs(float(fresh["g"].iloc[0]) - 50e-6) > 5e-6


def test_a_fixed_site_bench_refuses_a_campaign_step_on_another_site_offline(tmp_path, capsys):
    from labpcu.benchfile import default_sim_bench_path

    bench = tmp_path / "bench.toml"
    bench.write_text(default_sim_bench_path().read_text() + '\n[prober]\nkind = "fixed"\nsite = "Q1"\n')
    text = SCREEN_AND_PROGRAM.replace('store = "w.h5"', 'store = "w.h5"\nbench = "bench.toml"').replace(
        '["S01", "S02", "S03"]', '["S01", "S05"]')
    path = write(tmp_path, text)
    assert main(["campaign", "run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "step 'screen'" in err and "S05 is on site Q2" in err and f"{path}:13:" in err  # its devices line
    assert not (tmp_path / "w.h5").exists()
