"""Issue 11, items 6 and 10: every level is checked before the bench opens, and every
error the command line can meet is one line (``labpcu: error: ...``) with exit code 2
(bad input) or 1 (the measurement could not be made), never a traceback; problems with
the store path are found before any instrument is opened."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from labpcu import cli
from labpcu.bench import Bench, SafeStateError
from labpcu.benchfile import BenchFileError, default_sim_bench_path, parse_bench
from labpcu.data.errors import StoreError
from labpcu.instruments.errors import InstrumentCommunicationError, InstrumentOpenError, LimitError
from labpcu.paths import PathError
from labpcu.protocols import registry
from labpcu.protocols.params import ParameterError, show_value
from labpcu.runner import Runner
from simhelpers import sent

SIM_TOML = default_sim_bench_path().read_text()


@pytest.fixture
def opened(monkeypatch) -> list:
    """Count benches opened: no instrument can be reached without one."""
    calls: list = []
    real = Bench.from_file.__func__

    def counting(cls, *a, **kw):
        calls.append((a, kw))
        return real(cls, *a, **kw)

    monkeypatch.setattr(Bench, "from_file", classmethod(counting))
    return calls


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, expected: int, out: str, err: str, *words: str) -> str:
    """Exit code, exactly one stderr line starting ``labpcu: error:``, no traceback."""
    lines = err.strip().splitlines()
    assert code == expected, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("labpcu: error: "), err
    assert "Traceback" not in out + err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def bench_file(tmp_path: Path, text: str, name: str = "bench.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# =================================================== item 6: levels before any I/O
#: one out-of-limit level per protocol (sim bench: diode 3 V / 10 mA, m1 1.5 V / 1 mA,
#: m2 2 V / 20 mA; operators drive word line to bit line, where the strictest applies)
UNIT = "A1-R1C1,A1-R2C1,A1-R3C1"
OUT_OF_LIMIT = [
    ("iv_sweep", "S01", {"stop": 5.0}, "levels = 5 V exceeds the bench limit of 3 V"),
    ("hysteresis", "S02", {"v_set_max": 2.5}, "v_set_max = 2.5 V exceeds the bench limit of 2 V"),
    ("retention", "S02", {"component": "m1", "compliance": 5e-3}, "compliance = 0.005 A exceeds"),
    ("ispp", "S06", {"v_max": 2.0}, "v_max = 2 V exceeds the bench limit of 1.5 V"),
    ("binary_switch", "S07", {"v_max": 2.5}, "v_max = 2.5 V exceeds the bench limit of 2 V"),
    ("configure", "S08", {"m2_v_max": 2.5}, "m2_v_max = 2.5 V exceeds the bench limit of 2 V"),
    ("weight_statistics", "S09", {"v_max": 2.0}, "v_max = 2 V exceeds the bench limit of 1.5 V"),
    ("vmm", "A5-R1C1,A5-R2C1,A5-R3C1", {"v_read": 2.5}, "v_read = 2.5 V exceeds the bench limit of 1.5 V"),
    ("vmm", "A5-R1C1,A5-R2C1,A5-R3C1", {"i_compliance": 0.5}, "i_compliance = 0.5 A exceeds"),
    ("multiplier", UNIT, {"v_compliance": 20.0}, "v_compliance = 20 V exceeds the bench limit of 1.5 V"),
    ("divider", UNIT, {"i_compliance": 0.5}, "i_compliance = 0.5 A exceeds the bench limit of 0.001 A"),
    ("divider", UNIT, {"i_unit": 2e-4, "x_max": 10.0}, "i_unit·x_max = 0.002 A exceeds"),
    ("softmax", UNIT, {"v_compliance": 5.0}, "v_compliance = 5 V exceeds the bench limit of 1.5 V"),
    ("activation", "A6-R1C1,A6-R2C1,A6-R3C1", {"v_stop": 3.0}, "v_stop = 3 V exceeds the bench limit of 1.5 V"),
    # screen's M2 reset runs at 10× the set compliance (the filament's current): 50 mA on M2
    ("screen", "S10", {"m2_compliance": 5e-3}, "compliance_reset = 0.05 A exceeds the bench limit of 0.02 A"),
    ("activation", "A6-R1C1,A6-R2C1,A6-R3C1", {"compliance": 1e-3, "i_compliance": 1e-3, "v_start": -2.0},
     "v_start = -2 V exceeds"),
]


def test_every_protocol_has_an_out_of_limit_case():
    assert {name for name, *_ in OUT_OF_LIMIT} == set(registry.protocols())


@pytest.fixture(scope="module")
def sim_bench() -> Iterator[Bench]:
    with Bench.from_file(seed=0) as bench:
        yield bench


@pytest.mark.parametrize("protocol, devices, params, words", OUT_OF_LIMIT,
                         ids=[f"{c[0]}-{next(iter(c[2]))}" for c in OUT_OF_LIMIT])
def test_an_out_of_limit_level_is_refused_before_any_message(sim_bench, tmp_path, protocol, devices, params, words):
    store = tmp_path / "runs.h5"
    runner = Runner(sim_bench, store)
    before = sent(sim_bench)
    with pytest.raises(ParameterError, match=re.escape(words)) as exc:
        runner.run(protocol, params, devices.split(","))
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"{protocol}: ")
    assert sent(sim_bench) == before, "a message reached an instrument"
    assert not store.exists(), "a run store was written"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("protocol, devices, params, words", OUT_OF_LIMIT,
                         ids=[f"{c[0]}-{next(iter(c[2]))}" for c in OUT_OF_LIMIT])
def test_cli_refuses_an_out_of_limit_level_with_exit_2_and_opens_nothing(opened, tmp_path, capsys, protocol, devices,
                                                                         params, words):
    store = tmp_path / "runs.h5"
    argv = ["run", protocol, "--device", devices, "--out", str(store)]
    for name, value in params.items():
        argv += [_flag(name), str(value)]
    code, out, err = run_cli(capsys, *argv)
    assert_one_error_line(code, 2, out, err, words)
    assert opened == [] and not store.exists()


def test_the_range_of_the_instrument_behind_a_terminal_is_a_limit_too(tmp_path, capsys, opened):
    """b1500a capped at 1 V in the bench file: a 1.2 V read on the row it drives is
    refused, though the device limits (1.5 V) would allow it."""
    path = bench_file(tmp_path, SIM_TOML.replace("max_voltage = 20.0", "max_voltage = 1.0"))
    code, out, err = run_cli(capsys, "run", "vmm", "--device", "A5-R1C1,A5-R2C1,A5-R3C1", "--v-read", "1.2",
                             "--no-configure", "--bench", str(path),
                             "--out", str(tmp_path / "r.h5"))
    assert_one_error_line(code, 2, out, err, "v_read = 1.2 V exceeds the bench limit of 1 V of b1500a.1")
    assert opened == []


def test_operators_check_the_programming_levels_they_configure_with(tmp_path, capsys, opened):
    """An M2 limit below configure's 1 V switching ramp: refused before the weights are
    programmed, and accepted once the operator is told not to configure."""
    text = SIM_TOML.replace("[limits.m2]\nvoltage = 2.0", "[limits.m2]\nvoltage = 0.8")
    assert "voltage = 0.8" in text
    path = bench_file(tmp_path, text)
    base = ["run", "vmm", "--device", "A5-R1C1,A5-R2C1,A5-R3C1", "--v-read", "0.5", "--bench", str(path),
            "--out", str(tmp_path / "r.h5")]
    code, out, err = run_cli(capsys, *base)
    assert_one_error_line(code, 2, out, err, "m2_v_max = 1 V exceeds the bench limit of 0.8 V for m2")
    assert opened == []
    offline = Bench.offline(path)
    from labpcu.runner import prepare

    prepare("vmm", {"configure": False, "v_read": 0.5}, ["A5-R1C1", "A5-R2C1", "A5-R3C1"], offline)  # no programming, no refusal


def test_custom_terminals_and_the_instrument_loop_validate_offline(opened, tmp_path, capsys):
    """Before: an offline bench has no drivers, so --terminals was refused as 'no
    source-measure unit' and --loop instrument raised a traceback."""
    code, out, err = run_cli(capsys, "run", "ispp", "--device", "S06", "--terminals", "k2612a.smua,b1500a.1",
                             "--loop", "instrument", "--out", str(tmp_path / "r.h5"))
    assert_one_error_line(code, 2, out, err, "k2612a.smua cannot run ISPP on the instrument with ground b1500a.1")
    code, out, err = run_cli(capsys, "run", "ispp", "--device", "S06", "--terminals", "k2612a.smua,nope.1",
                             "--out", str(tmp_path / "r.h5"))
    assert_one_error_line(code, 2, out, err, "no source-measure unit 'nope.1' on the matrix")
    assert opened == []


# ========================================================= item 10: clean errors
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_bench(tmp_path: Path, addresses: dict[str, str], timeout: float = 1.0) -> Path:
    text = SIM_TOML
    for name, address in addresses.items():
        head = f"[instruments.{name}]\n"
        start = text.index(head)
        at = text.index('address = "sim"', start)
        text = (text[:at] + f'address = "{address}"\nvisa_library = "@py"\ntimeout = {timeout}' +
                text[at + len('address = "sim"'):])
    text = re.sub(r"timeout = 5\.0\s*# s\n", "", text)
    text += '\n[prober]             # the served wafer stays on site A1: a fixed site, not an operator\nkind = "fixed"\nsite = "A1"\n'
    return bench_file(tmp_path, text, "tcp.toml")


def test_tcp_server_killed_mid_run_is_one_line_exit_1(tmp_path):
    """`labpcu sim serve` killed while a run reads over TCP: the run is stored as
    failed, the bench cannot be proven safe, and the command says so in one line."""
    server = subprocess.Popen([sys.executable, "-m", "labpcu.cli", "sim", "serve", "--seed", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        resources = {}
        deadline = time.monotonic() + 30
        while len(resources) < 3 and time.monotonic() < deadline:
            line = server.stdout.readline()
            m = re.match(r"(\w+)\s+(TCPIP::\S+)", line)
            if m:
                resources[m.group(1)] = m.group(2)
        assert len(resources) == 3, resources
        bench = _tcp_bench(tmp_path, resources)
        store = tmp_path / "runs.h5"
        run = subprocess.Popen([sys.executable, "-m", "labpcu.cli", "run", "retention", "--device", "A1-R1C1",
                                "--component", "m1", "--duration", "60s", "--interval", "0.2s",
                                "--bench", str(bench), "--out", str(store)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:  # wait until reads are being stored
            if store.exists() and _stored_points(store) >= 3:
                break
            time.sleep(0.2)
        assert run.poll() is None, run.communicate()
        server.kill()
        server.wait(10)
        out, err = run.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    assert_one_error_line(run.returncode, 1, out, err, "the bench could not be put in its safe state",
                          "Connection refused")
    assert "00001-retention failed" in out, out
    from labpcu.data.store import Store

    assert Store(store).info("00001-retention").status == "failed"


def _stored_points(store: Path) -> int:
    try:
        with h5py.File(store, "r", swmr=True) as f:
            return int(max((ds.shape[0] for ds in f["runs/00001-retention/data"].values()), default=0))
    except (OSError, KeyError):
        return 0


def test_a_bench_file_mixing_sim_and_real_addresses_is_refused_before_opening(tmp_path, capsys, opened):
    text = SIM_TOML.replace('address = "sim"', 'address = "TCPIP0::192.0.2.1::inst0::INSTR"', 1)
    path = bench_file(tmp_path, text)
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", "S01", "--bench", str(path),
                             "--out", str(tmp_path / "r.h5"))
    assert_one_error_line(code, 2, out, err, "a bench is all simulated", "instruments.k3706a.address")
    assert re.search(r"bench\.toml:\d+:", err)
    assert opened == [] and not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("address, words", [
    ("TCPIP::127.0.0.1::{port}::SOCKET", "Connection refused"),
    ("NOT-A-VISA-ADDRESS::1", "cannot open the bench's instruments"),
], ids=["connection-refused", "bad-address"])
def test_an_unreachable_instrument_is_one_line_exit_1(tmp_path, capsys, address, words):
    port = _free_port()  # nobody listens there
    addr = address.format(port=port)
    path = _tcp_bench(tmp_path, {"k2612a": addr, "k3706a": addr, "b1500a": addr}, timeout=0.5)
    store = tmp_path / "r.h5"
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", "A1-R1C1", "--bench", str(path),
                             "--out", str(store))
    assert_one_error_line(code, 1, out, err, words)
    assert not store.exists()


def test_instrument_open_errors_from_the_visa_layer_are_wrapped(monkeypatch):
    """pyvisa raises ValueError or bare Exception for addresses it cannot use; the
    origin in the VISA layer, not the class, makes it an InstrumentOpenError, and a
    bug elsewhere keeps its own class (and its traceback)."""
    from labpcu import cli_runs

    code = compile("def visa_fails():\n    raise ValueError('unknown interface')\n", "/x/pyvisa/highlevel.py", "exec")
    ns: dict = {}
    exec(code, ns)
    monkeypatch.setattr(Bench, "from_file", classmethod(lambda cls, *a, **kw: ns["visa_fails"]()))
    with pytest.raises(InstrumentOpenError, match="unknown interface"):
        cli_runs.open_bench("lab.toml", None)
    monkeypatch.setattr(Bench, "from_file", classmethod(lambda cls, *a, **kw: 1 / 0))
    with pytest.raises(ZeroDivisionError):
        cli_runs.open_bench("lab.toml", None)


# ------------------------------------------------------------------ run stores
def _not_hdf5(tmp_path: Path) -> Path:
    p = tmp_path / "notes.h5"
    p.write_text("these are my notes, not an HDF5 file\n")
    return p


def _truncated(tmp_path: Path) -> Path:
    p = tmp_path / "cut.h5"
    with h5py.File(p, "w", libver="latest") as f:
        f.create_dataset("x", data=list(range(20_000)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return p


def _directory(tmp_path: Path) -> Path:
    p = tmp_path / "folder.h5"
    p.mkdir()
    return p


def _fifo(tmp_path: Path) -> Path:
    p = tmp_path / "pipe.h5"
    os.mkfifo(p)
    return p


def _other_hdf5(tmp_path: Path) -> Path:
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = [1, 2, 3]
    return p


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "plain").write_text("a file, not a folder")
    return tmp_path / "plain" / "runs.h5"


STORES = [
    (_not_hdf5, "is not an HDF5 file"),
    (_truncated, "is truncated"),
    (_directory, "is a directory"),
    (_fifo, "is not a regular file (a FIFO)"),
    (_other_hdf5, "is not a labpcu run store"),
]


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A FIFO opened for reading blocks for ever: fail the test instead."""
    def boom(signum, frame):
        raise TimeoutError("the command blocked (a FIFO opened?)")

    previous = signal.signal(signal.SIGALRM, boom)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("make, words", STORES, ids=[m.__name__.strip("_") for m, _ in STORES])
def test_a_bad_store_is_refused_before_the_bench_opens(tmp_path, capsys, opened, no_hang, make, words):
    store = make(tmp_path)
    before = store.stat().st_mtime_ns if store.exists() else None
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", "S01", "--out", str(store))
    assert_one_error_line(code, 2, out, err, words)
    assert opened == []
    assert (store.stat().st_mtime_ns if store.exists() else None) == before, "the store was touched"


@pytest.mark.parametrize("command", [["list", "runs"], ["show", "1"]])
@pytest.mark.parametrize("make, words", STORES, ids=[m.__name__.strip("_") for m, _ in STORES])
def test_list_and_show_refuse_a_bad_store_in_one_line(tmp_path, capsys, no_hang, command, make, words):
    code, out, err = run_cli(capsys, *command, "--file", str(make(tmp_path)))
    assert_one_error_line(code, 2, out, err, words)


def test_a_store_in_a_place_that_cannot_be_written_is_refused_before_the_bench_opens(tmp_path, capsys, opened):
    store = _under_a_file(tmp_path)
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", "S01", "--out", str(store))
    assert_one_error_line(code, 2, out, err, "cannot create the run store", "is not a directory")
    assert opened == []


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store") / "runs.h5"
    assert cli.main(["run", "retention", "--device", "S02", "--duration", "20s", "--interval", "10s",
                     "--out", str(store)]) == 0
    return store


@pytest.mark.parametrize("flag", ["--csv", "--plot"])
def test_show_output_in_a_place_that_cannot_be_written(tmp_path, capsys, small_store, flag):
    capsys.readouterr()
    target = _under_a_file(tmp_path).with_suffix(".png" if flag == "--plot" else ".csv")
    code, out, err = run_cli(capsys, "show", "1", "--file", str(small_store), flag, str(target))
    assert_one_error_line(code, 2, out, err, "cannot create the", "is not a directory")
    code, out, err = run_cli(capsys, "show", "1", "--file", str(small_store), flag, str(tmp_path))
    assert_one_error_line(code, 2, out, err, "it is a directory")


def test_demo_out_naming_an_existing_file_is_refused(tmp_path, capsys, opened):
    existing = tmp_path / "results"
    existing.write_text("keep me")
    code, out, err = run_cli(capsys, "demo", "--out", str(existing))
    assert_one_error_line(code, 2, out, err, "is not a folder")
    assert existing.read_text() == "keep me" and opened == []


def test_demo_refuses_a_store_that_is_a_directory_before_the_bench_opens(tmp_path, capsys, opened):
    (tmp_path / "demo" / "wafer.h5").mkdir(parents=True)
    code, out, err = run_cli(capsys, "demo", "--out", str(tmp_path / "demo"))
    assert_one_error_line(code, 2, out, err, "wafer.h5 is a directory")
    assert opened == []


# ------------------------------------------------------------- negative values
def _value_flags() -> list[tuple[str, str]]:
    """(protocol, flag) of every numeric value flag of every protocol."""
    out = []
    for name, cls in registry.protocols().items():
        for spec in cls.Params.specs():
            if spec.kind in (int, float):
                out.append((name, _flag(spec.name)))
    return out


@pytest.mark.parametrize("value", ["-500mV", "-1e-1", "-2", "-.5"])
def test_negative_values_with_units_or_exponents_parse_for_every_value_flag(value):
    parser = cli.build_parser()
    for protocol, flag in _value_flags():
        argv = ["run", protocol, "--device", "S01", flag, value]
        args = parser.parse_args(cli.values_may_be_negative(parser, argv))
        assert getattr(args, flag[2:].replace("-", "_")) == value, (protocol, flag)


def test_a_flag_where_a_value_belongs_is_still_refused(capsys):
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", "S01", "--start", "--stop", "1")
    assert_one_error_line(code, 2, out, err, "argument --start: expected one argument")


def test_start_minus_500mV_runs(tmp_path, capsys):
    store = tmp_path / "r.h5"
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", "S01", "--start", "-500mV", "--stop", "1e0",
                             "--points", "11", "--rectification-bias", "0", "--out", str(store))
    assert code == 0, err
    from labpcu.data.store import Store

    assert Store(store).info("00001-iv_sweep").parameters["start"] == -0.5


# ------------------------------------------------------------- bench-file keys
@pytest.mark.parametrize("second", ["01", '"1"', "001"])
def test_two_matrix_row_keys_naming_one_row_are_refused_at_the_second(tmp_path, capsys, second):
    text = SIM_TOML.replace('6 = "b1500a.4"', f'{second} = "b1500a.4"')
    if second == '"1"':  # TOML itself refuses the same key twice; the quoted form is that case
        text = SIM_TOML.replace('1 = "k2612a.smua"', '"01" = "k2612a.smua"').replace('6 = "b1500a.4"', '1 = "b1500a.4"')
    line = next(k for k, ln in enumerate(text.splitlines(), 1) if ln.startswith(("01 =", "001 =", "1 = \"b1500a")))
    with pytest.raises(BenchFileError) as exc:
        parse_bench(text, "bench.toml")
    assert f"bench.toml:{line}: matrix.rows." in str(exc.value) and "row 1 is already given" in str(exc.value)
    path = bench_file(tmp_path, text)
    code, out, err = run_cli(capsys, "list", "devices", "--bench", str(path))
    assert_one_error_line(code, 2, out, err, f"bench.toml:{line}:", "row 1 is already given")


# ------------------------------------------------------------- message hygiene
@pytest.mark.parametrize("argv, prefix", [
    (["run", "retention", "--device", "S01", "--component", "m1", "--v-read", "0"], "retention: v_read must not be 0 V"),
    (["run", "hysteresis", "--device", "S02", "--v-read", "0"], "hysteresis: v_read must not be 0 V"),
    (["run", "iv_sweep", "--device", "S01", "--spacing", "list"], "iv_sweep: spacing = list needs levels"),
    (["run", "iv_sweep", "--device", "S01", "--spacing", "log", "--points", "3", "--rectification-bias", "0"],
     "iv_sweep: a bipolar log sweep needs"),
    (["run", "retention", "--device", "S01", "--interval", "1ms", "--duration", "1000s"], "retention: more than"),
])
def test_error_prefixes_appear_once(capsys, opened, argv, prefix):
    code, out, err = run_cli(capsys, *argv)
    line = assert_one_error_line(code, 2, out, err, prefix)
    name = prefix.split(":")[0]
    assert line.count(f"{name}:") == 1, line


def test_a_long_bad_list_gives_a_short_line(capsys, opened):
    functions = ",".join(["softplus"] * 3000 + ["bogus"])
    code, out, err = run_cli(capsys, "run", "activation", "--device", "A6-R1C1,A6-R2C1,A6-R3C1",
                             "--functions", functions)
    line = assert_one_error_line(code, 2, out, err, "functions must be among", "(3001 values)")
    assert len(line) < 300
    sites = ",".join(["A1", "A2", "A3"] * 40)
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", sites)
    line = assert_one_error_line(code, 2, out, err, "device A1-R1C1 is given twice")
    assert len(line) < 200
    code, out, err = run_cli(capsys, "run", "iv_sweep", "--device", "S01", "--stop", "x" * 20_000)
    assert len(assert_one_error_line(code, 2, out, err, "is not a number", "(20000 characters)")) < 300


def test_show_value_caps_lists_and_text():
    assert show_value(list(range(10_000))) == "[0, 1, 2, 3, … (10000 values)]"
    assert show_value((1.5, 2.5)) == "(1.5, 2.5)"
    assert show_value("y" * 500).endswith("… (500 characters)") and len(show_value("y" * 500)) < 100


def test_error_line_caps_any_message_and_joins_lines():
    line = cli.error_line(ValueError("a" * 5000 + " the end"))
    assert len(line) < cli.MAX_ERROR_CHARS + 40 and line.endswith("the end") and line.startswith("aaa")
    assert cli.error_line(ValueError("first\nsecond\nthird")) == "first (+2 more: second; third)"


# ----------------------------------------------------------- error classes
@pytest.mark.parametrize("exc, code", [
    (ParameterError("p"), 2), (LimitError("l"), 2), (StoreError("s"), 2), (PathError("x"), 2),
    (BenchFileError("b.toml", []), 2), (InstrumentCommunicationError("lost"), 1), (InstrumentOpenError("o"), 1),
    (SafeStateError("relays unknown"), 1), (RuntimeError("a bug"), None), (KeyError("k"), None),
])
def test_every_labpcu_error_class_has_an_exit_code(exc, code):
    assert cli.error_exit_code(exc) == code


@pytest.mark.parametrize("exc, code", [(LimitError("no prober"), 2), (SafeStateError("k3706a: lost"), 1),
                                       (InstrumentCommunicationError("k2612a: timeout"), 1)])
def test_main_maps_labpcu_errors_to_one_line(monkeypatch, capsys, exc, code):
    from labpcu import cli_runs

    def fail(args):
        raise exc

    monkeypatch.setattr(cli_runs, "cmd_list", fail)
    got, out, err = run_cli(capsys, "list", "protocols")
    assert_one_error_line(got, code, out, err, str(exc))


def test_a_bug_keeps_its_traceback(monkeypatch):
    from labpcu import cli_runs

    monkeypatch.setattr(cli_runs, "cmd_list", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["list", "protocols"])


@pytest.mark.parametrize("command", [["codebook", "build"], ["codebook", "show"],
                                     ["codebook", "export", "--out", "cb.h5"]])
@pytest.mark.parametrize("make, words", [(_fifo, "is not a regular file (a FIFO)"), (_truncated, "is truncated")],
                         ids=["fifo", "truncated"])
def test_codebook_commands_refuse_a_fifo_or_a_truncated_file(tmp_path, capsys, no_hang, command, make, words):
    path = make(tmp_path)
    argv = [*command[:2], str(path), *command[2:]]
    code, out, err = run_cli(capsys, *argv)
    assert_one_error_line(code, 2, out, err, words)


def test_show_refuses_a_plot_format_matplotlib_cannot_write(tmp_path, capsys, small_store):
    capsys.readouterr()
    code, out, err = run_cli(capsys, "show", "1", "--file", str(small_store), "--plot", str(tmp_path / "x.foo"))
    assert_one_error_line(code, 2, out, err, "'foo' is not an image format")
    assert not (tmp_path / "x.foo").exists()
