"""Probers (issue 12, "The CLI on a real bench"): the bench file's [prober] table,
the manual prober's request through the operator callback (Python) and the terminal
(CLI, a scripted stdin), abort at the request, a fixed-site bench refused offline,
prober drivers from the ``labpcu.probers`` entry points, and bench-file mistakes in
the table with their line."""

from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

import pytest

from labpcu import cli
from labpcu.bench import Bench
from labpcu.benchfile import BenchFileError, ProberSpec, default_sim_bench_path, load_bench, parse_bench
from labpcu.data.store import Store
from labpcu.instruments.errors import LimitError
from labpcu.probers import ENTRY_POINT_GROUP, ProberRequest, console_operator
from labpcu.protocols import registry
from labpcu.runner import RunAborted, Runner
from simhelpers import assert_safe, sent
from toy_protocols import Reads

DEFAULT = default_sim_bench_path().read_text()
ROOT = Path(__file__).resolve().parents[1]


def bench_file(tmp_path: Path, prober: str, text: str = DEFAULT) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(text + "\n" + prober)
    return path


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture
def toy_registry(monkeypatch):
    registry.protocols()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    registry.register(Reads)


@pytest.fixture
def benches(monkeypatch):
    """Every Bench the CLI opens, kept to look at after the command (it is closed)."""
    opened: list[Bench] = []
    real = Bench.from_file.__func__

    def keeping(cls, *a, **kw):
        bench = real(cls, *a, **kw)
        opened.append(bench)
        return bench

    monkeypatch.setattr(Bench, "from_file", classmethod(keeping))
    return opened


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------- manual, Python
def test_manual_prober_asks_through_the_callback_and_the_simulated_wafer_follows(tmp_path):
    asked: list[ProberRequest] = []

    def operator(request: ProberRequest) -> bool:
        asked.append(request)
        return True

    path = bench_file(tmp_path, '[prober]\nkind = "manual"\n')
    with Bench.from_file(path, operator=operator) as bench:
        outcome = Runner(bench, Store(tmp_path / "r.h5")).run("iv_sweep", {}, ["S06"])
        assert outcome.status == "completed", outcome.error
        assert [r.site for r in asked] == ["Q2"]
        assert asked[0].devices == ("S05", "S06", "S07", "S08")
        assert asked[0].message == "move the probes to site Q2 (devices S05, S06, S07, S08)"
        assert bench.site.id == "Q2" and bench.sim.bench.site.id == "Q2"
        # the physics of S06's diode, measured where the operator put the probes
        assert outcome.results["devices"]["S06"]["rectification_ratio"] > 1e3
        bench.move_to("S07")  # same site, confirmed: no second request
        assert len(asked) == 1
        bench.move_to("A3")
        assert asked[-1].site == "A3" and asked[-1].message == "move the probes to site A3 (devices A3-R1C1 … A3-R3C3)"


def test_manual_prober_asks_even_for_the_site_the_bench_starts_on(tmp_path):
    """Nobody has said where the probes are: the first move always asks."""
    asked = []
    path = bench_file(tmp_path, '[prober]\nkind = "manual"\n')
    with Bench.from_file(path, operator=lambda r: asked.append(r.site) or True) as bench:
        assert bench.sim.bench.site.id == "A1"
        bench.move_to("A1-R2C2")
        bench.move_to("A1-R3C3")
    assert asked == ["A1"]


def test_manual_prober_abort_ends_the_run_aborted_with_the_bench_safe(tmp_path):
    path = bench_file(tmp_path, '[prober]\nkind = "manual"\n')
    answers = iter([True, False])  # S02 (site Q1) confirmed, A2 refused
    with Bench.from_file(path, operator=lambda r: next(answers)) as bench:
        outcome = Runner(bench, Store(tmp_path / "r.h5")).run(Reads, {"reads": 2}, ["S02", "A2-R1C1"])
        assert outcome.status == "aborted"
        assert "aborted by the operator" in outcome.error and "site A2" in outcome.error
        assert outcome.n_points == 2  # S02's reads are kept
        assert_safe(bench)
        assert bench.sim.bench.site.id == "Q1"  # the wafer did not move


def test_a_manual_bench_without_an_operator_refuses_to_move(tmp_path):
    path = bench_file(tmp_path, '[prober]\nkind = "manual"\n')
    with Bench.from_file(path) as bench:
        with pytest.raises(LimitError) as err:
            bench.move_to("S03")
        assert str(err.value).startswith("move the probes to site Q1 (devices S01, S02, S03, S04): ")
        assert "an operator moves the probes, and none was given: pass operator= to Bench.from_file" in str(err.value)
        assert bench.sim.bench.site.id == "A1"
        assert_safe(bench)


# ----------------------------------------------------------------- manual, CLI
def test_cli_manual_prober_scripted_enter_completes(toy_registry, benches, tmp_path, capsys, monkeypatch):
    path = bench_file(tmp_path, '[prober]\nkind = "manual"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, out, err = run_cli(capsys, "run", "toy_reads", "--device", "S02", "--reads", "3", "--bench", str(path),
                             "--out", str(tmp_path / "r.h5"))
    assert code == 0, err
    assert "00001-toy_reads completed: 3 points" in out
    assert 'move the probes to site Q1 (devices S01, S02, S03, S04) and press Enter (or type "abort")' in err
    assert benches[0].sim.bench.site.id == "Q1"


@pytest.mark.parametrize("answer, reason", [("abort\n", "aborted by the operator"),
                                            ("", "end of input"),
                                            ("maybe\nabort\n", "aborted by the operator")])
def test_cli_abort_or_end_of_input_aborts_the_run_cleanly(toy_registry, benches, tmp_path, capsys, monkeypatch,
                                                          answer, reason):
    path = bench_file(tmp_path, '[prober]\nkind = "manual"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    store = tmp_path / "r.h5"
    code, out, err = run_cli(capsys, "run", "toy_reads", "--device", "S02", "--bench", str(path), "--out", str(store))
    assert code == 1
    assert "Traceback" not in out + err
    assert "00001-toy_reads aborted: 0 points" in out and reason in out
    info = Store(store).info("00001-toy_reads")
    assert info.status == "aborted" and reason in info.error
    assert_safe(benches[0])
    if answer.startswith("maybe"):
        assert 'press Enter once the probes are on site Q1, or type "abort"' in err


def test_console_operator_answers():
    req = ProberRequest("A3", ("A3-R1C1",), "move the probes to site A3 (devices A3-R1C1)")
    err = io.StringIO()
    assert console_operator(req, stdin=io.StringIO("\n"), stderr=err) is True
    assert err.getvalue() == 'move the probes to site A3 (devices A3-R1C1) and press Enter (or type "abort")\n'
    assert console_operator(req, stdin=io.StringIO("ABORT\n"), stderr=io.StringIO()) is False

    class CtrlC:
        def readline(self):
            raise KeyboardInterrupt

    with pytest.raises(RunAborted, match="interrupted from the keyboard .Ctrl-C. at the request to move the probes"):
        console_operator(req, stdin=CtrlC(), stderr=io.StringIO())


def test_cli_on_a_real_bench_without_a_prober_table_asks_the_operator(toy_registry, tmp_path, capsys, monkeypatch):
    """The issue: a real bench file (the simulator's sockets) used to fail with "this
    bench has no prober" after opening the instruments. Now the default prober is
    manual: the operator confirms the site and the run completes."""
    from labpcu.bench import _make_sim_rig

    rig = _make_sim_rig(load_bench(None), 0)
    with rig.server() as server:
        text = DEFAULT
        for name, resource in server.resources().items():
            text = re.sub(rf'(\[instruments\.{name}\]\n(?:.*\n)*?)address = "sim"',
                          rf'\1address = "{resource}"\nvisa_library = "@py"', text, count=1)
        path = tmp_path / "real.toml"
        path.write_text(text)
        assert load_bench(path).prober_spec == ProberSpec("manual", given=False)
        monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
        code, out, err = run_cli(capsys, "run", "toy_reads", "--device", "A1-R1C1", "--reads", "2",
                                 "--every", "50 ms",  # a real bench waits on the wall clock
                                 "--bench", str(path), "--out", str(tmp_path / "r.h5"))
    assert code == 0, err
    assert "completed: 2 points" in out
    assert "move the probes to site A1 (devices A1-R1C1 … A1-R3C3)" in err


# ----------------------------------------------------------------- fixed
def test_fixed_site_bench_refuses_another_site_offline(toy_registry, benches, tmp_path, capsys):
    path = bench_file(tmp_path, '[prober]\nkind = "fixed"\nsite = "Q2"\n')
    code, out, err = run_cli(capsys, "run", "toy_reads", "--device", "S06,S01", "--bench", str(path),
                             "--out", str(tmp_path / "r.h5"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err
    assert lines[0].startswith("labpcu: error: device S01 is on site Q1, but the probes of this bench are fixed on "
                               "site Q2"), lines[0]
    assert "S05, S06, S07, S08" in lines[0]
    assert benches == [], "an instrument was opened"
    assert not (tmp_path / "r.h5").exists() or Store(tmp_path / "r.h5").run_ids() == []


def test_fixed_site_bench_measures_its_site_and_refuses_others_without_moving(tmp_path):
    path = bench_file(tmp_path, '[prober]\nkind = "fixed"\nsite = "Q2"\n')
    with Bench.from_file(path) as bench:
        assert bench.site.id == "Q2" and bench.sim.bench.site.id == "Q2"
        outcome = Runner(bench, Store(tmp_path / "r.h5")).run(Reads, {"reads": 2}, ["S06"])
        assert outcome.status == "completed", outcome.error
        before = sent(bench)
        with pytest.raises(LimitError, match="fixed on site Q2"):
            bench.move_to("S01")
        assert sent(bench) == before and bench.site.id == "Q2"
    assert Bench.offline(path).site.id == "Q2"


# ----------------------------------------------------------------- drivers
class RecordingProber:
    """A prober driver as a plug-in would register it."""

    moves: list[tuple[str, str, float]] = []

    def __init__(self, port: str, speed: float = 1.0) -> None:
        self.port, self.speed = port, speed

    def move_to(self, site_id: str) -> None:
        RecordingProber.moves.append((self.port, site_id, self.speed))


class FakeEntryPoint:
    def __init__(self, name: str, obj: object) -> None:
        self.name, self.value, self.group, self._obj = name, f"test_probers:{name}", ENTRY_POINT_GROUP, obj

    def load(self) -> object:
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


@pytest.fixture
def plugin(monkeypatch):
    """Prober drivers registered through a fake ``importlib.metadata.entry_points``."""
    import importlib.metadata

    real = importlib.metadata.entry_points
    fakes = [FakeEntryPoint("recorder", RecordingProber), FakeEntryPoint("broken", ImportError("no module serial"))]

    def entry_points(**kw):
        if kw.get("group") == ENTRY_POINT_GROUP:
            return [*real(**kw), *fakes]
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    RecordingProber.moves = []


def test_an_entry_point_prober_is_built_from_the_table_and_used(plugin, tmp_path):
    path = bench_file(tmp_path, '[prober]\nkind = "recorder"\nport = "COM3"\nspeed = 2.5\n')
    assert load_bench(path).prober == ProberSpec("recorder", options={"port": "COM3", "speed": 2.5})
    with Bench.from_file(path) as bench:
        outcome = Runner(bench, Store(tmp_path / "r.h5")).run(Reads, {"reads": 2}, ["S06", "A4-R1C2"])
        assert outcome.status == "completed", outcome.error
        assert RecordingProber.moves == [("COM3", "Q2", 2.5), ("COM3", "A4", 2.5)]
        assert bench.sim.bench.site.id == "A4"  # the simulated wafer followed the driver


def test_an_entry_point_prober_through_the_cli(plugin, toy_registry, tmp_path, capsys):
    path = bench_file(tmp_path, '[prober]\nkind = "recorder"\nport = "/dev/ttyUSB0"\n')
    code, out, err = run_cli(capsys, "run", "toy_reads", "--device", "S10", "--reads", "2", "--bench", str(path),
                             "--out", str(tmp_path / "r.h5"))
    assert code == 0, err
    assert RecordingProber.moves == [("/dev/ttyUSB0", "Q3", 1.0)]


@pytest.mark.parametrize("table, where, fragment", [
    ('kind = "nope"', "prober.kind", "unknown prober kind 'nope'; known: broken, fixed, manual, recorder, sim"),
    ('kind = "broken"', "prober.kind", "the prober driver 'broken' (test_probers:broken) cannot be loaded: no module serial"),
    ('kind = "recorder"\nport = "COM3"\nbaud = 9600', "prober.baud", "unknown option of the 'recorder' prober; it takes port, speed"),
    ('kind = "recorder"', "prober.port", "missing: the 'recorder' prober needs it"),
])
def test_driver_mistakes_are_reported_with_their_line(plugin, table, where, fragment):
    text = DEFAULT + "\n[prober]\n" + table + "\n"
    with pytest.raises(BenchFileError) as err:
        parse_bench(text, "bench.toml")
    problem = next(p for p in err.value.problems if p.where == where)
    assert fragment in problem.message, str(err.value)
    key = where.rpartition(".")[2]
    expected = line_of(text, f"{key} =") if f"\n{key} =" in text else line_of(text, "[prober]")
    assert problem.line == expected


def test_the_sim_prober_is_registered_and_the_default_of_a_simulated_bench():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"][ENTRY_POINT_GROUP]["sim"] == "labpcu.probers:SimulatedProber"
    assert load_bench().prober_spec == ProberSpec("sim", given=False)
    with Bench.from_file() as bench:  # the default bench moves with it, as before
        assert bench.move_to("S13").id == "Q4" and bench.sim.bench.site.id == "Q4"


def test_the_sim_prober_on_a_real_bench_is_a_bench_file_mistake():
    text = DEFAULT.replace('address = "sim"', 'address = "TCPIP::10.0.0.9::5025::SOCKET"') + '\n[prober]\nkind = "sim"\n'
    with pytest.raises(BenchFileError) as err:
        parse_bench(text, "bench.toml")
    assert str(err.value) == (f"bench.toml:{line_of(text, 'kind = ')}: prober.kind: the 'sim' prober moves the "
                              "simulated wafer; this bench's instruments are real")


# ----------------------------------------------------------------- table mistakes
@pytest.mark.parametrize("table, where, fragment, needle", [
    ('[prober]\nkind = 3', "prober.kind", "must be text, not a whole number 3", "kind = 3"),
    ('[prober]\nsite = "Q2"', "prober.kind", "missing", "[prober]"),
    ('[prober]\nkind = "fixed"', "prober.site", "missing", "[prober]"),
    ('[prober]\nkind = "fixed"\nsite = "Q9"', "prober.site", "no site 'Q9' on the wafer; sites are A1, A2", 'site = "Q9"'),
    ('[prober]\nkind = "fixed"\nsite = "S05"', "prober.site", "no site 'S05'", 'site = "S05"'),
    ('[prober]\nkind = "manual"\nsite = "A1"', "prober.site", "unknown field; expected one of kind", 'site = "A1"'),
    ('[prober]\nkind = "fixed"\nsite = "A1"\nspeed = 2', "prober.speed", "unknown field; expected one of kind, site",
     "speed = 2"),
    ('prober = "manual"', "prober", "must be a table", 'prober = "manual"'),
])
def test_prober_table_mistakes_name_their_line(table, where, fragment, needle):
    text = (table + "\n" + DEFAULT) if table.startswith("prober =") else (DEFAULT + "\n" + table + "\n")
    with pytest.raises(BenchFileError) as err:
        parse_bench(text, "bench.toml")
    problem = next((p for p in err.value.problems if p.where == where), None)
    assert problem is not None and fragment in problem.message, str(err.value)
    assert problem.line == line_of(text, needle)


def test_every_prober_mistake_is_reported_with_the_rest():
    text = DEFAULT.replace('model = "3706A"', 'model = "3707Z"') + '\n[prober]\nkind = "fixed"\nsite = "Q9"\nspeed = 1\n'
    with pytest.raises(BenchFileError) as err:
        parse_bench(text, "bench.toml")
    assert {"instruments.k3706a.model", "prober.site", "prober.speed"} <= {p.where for p in err.value.problems}
    assert all(re.match(r"^bench\.toml:\d+: ", line) for line in str(err.value).splitlines())
