"""One process owns a bench (issue 11, item 4).

A second process opening a bench used to put every instrument in its safe state in
the middle of the first one's run. Here two real processes open one simulated bench
served over TCP, as two programs on a lab PC would; the emulators' message logs show
what each sent. Locks live in a per-test directory (``LABPCU_LOCK_DIR``) so that these
tests never meet a real bench's locks, nor each other's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labpcu.bench import Bench
from labpcu.benchfile import default_sim_bench_path
from labpcu.instruments.errors import BenchBusyError
from labpcu.instruments.lock import AddressLock, BenchLock, lock_path, normalize_address
from labpcu.sim.rig import SimRig

NAMES = ("k2612a", "k3706a", "b1500a")
READS = 8  # reads before and after the intruder, in the holder's run
DEVICE = "A1-R1C1"  # on site A1, where a real bench's probe and the simulated one start
BUSY = re.compile(
    r"^(?P<name>k2612a|k3706a|b1500a) \((?P<address>TCPIP::127\.0\.0\.1::\d+::SOCKET)\) is in use by "
    r"process (?P<pid>\d+) \((?P<command>.+), since \d\d:\d\d:\d\d\); wait for it or stop it$"
)

# The holder: opens the bench, puts 50 mV on M1 of DEVICE, reads, says READY, waits
# for a line on stdin, reads again, prints every read, and closes.
HOLDER = f"""
import json, sys
from labpcu.bench import Bench

bench = Bench.from_file(sys.argv[1])
smu, ground = bench.smu("k2612a.smua"), bench.smu("k2612a.smub")
bench.connect({{"k2612a.smua": "{DEVICE}.CL1", "k2612a.smub": "{DEVICE}.CL2"}})
ground.source_voltage(0.0, compliance=1e-3)
ground.output_on()
smu.source_voltage(0.05, compliance=1e-3)
smu.output_on()
reads = [smu.measure().current for _ in range({READS})]
print("READY", flush=True)
sys.stdin.readline()
reads += [smu.measure().current for _ in range({READS})]
print(json.dumps(reads), flush=True)
bench.close()
"""

# The intruder: opens the same bench; exit 3 with the refusal on stderr, or exit 0
# with the 2612A's model after a clean open and close.
OPENER = """
import sys
from labpcu.bench import Bench
from labpcu.instruments.errors import BenchBusyError

try:
    bench = Bench.from_file(sys.argv[1])
except BenchBusyError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
print(bench.drivers["k2612a"].model)
bench.close()
"""


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "locks"
    monkeypatch.setenv("LABPCU_LOCK_DIR", str(path))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SimRig, dict[str, str], Path]]:
    """A simulated bench served on TCP, and a bench file that reaches it like hardware."""
    rig = SimRig.default(seed=0)
    server = rig.server().start()
    resources = server.resources()
    text = default_sim_bench_path().read_text()
    for name in NAMES:  # the first `address = "sim"` after each instrument's header
        head = text.index(f"[instruments.{name}]")
        at = text.index('address = "sim"', head)
        text = text[:at] + f'address = "{resources[name]}"\nvisa_library = "@py"' + text[at + len('address = "sim"'):]
    path = tmp_path / "tcp-bench.toml"
    path.write_text(text)
    try:
        yield rig, resources, path
    finally:
        server.stop()


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def start_holder(tmp_path: Path, bench_file: Path) -> subprocess.Popen[str]:
    """Start the holder and return once it has opened the bench and is mid-run."""
    proc = subprocess.Popen(
        [sys.executable, str(script(tmp_path, "holder.py", HOLDER)), str(bench_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if line.strip() != "READY":
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"the holder did not start: {line!r} {err}")
    return proc


def run_opener(tmp_path: Path, bench_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script(tmp_path, "opener.py", OPENER)), str(bench_file)],
        capture_output=True, text=True, timeout=120,
    )


def logs(rig: SimRig) -> dict[str, list[str]]:
    return {name: list(rig[name].messages_in()) for name in NAMES}


# ------------------------------------------------------------- two processes
def test_second_process_is_refused_without_disturbing_the_first(tmp_path, served):
    rig, resources, bench_file = served
    holder = start_holder(tmp_path, bench_file)
    try:
        before = logs(rig)
        source = rig.bench.source("k2612a.smua")
        relays = rig.bench.closed_relays()
        assert source.output and source.level == pytest.approx(0.05) and relays

        intruder = run_opener(tmp_path, bench_file)

        assert intruder.returncode == 3, intruder.stderr
        lines = intruder.stderr.strip().splitlines()
        assert len(lines) == 1, intruder.stderr
        m = BUSY.match(lines[0])
        assert m is not None, lines[0]
        assert int(m["pid"]) == holder.pid and "holder.py" in m["command"]
        assert m["address"] == resources[m["name"]]
        # nothing reached any instrument: no safe state, no *IDN?, not one byte
        assert logs(rig) == before
        assert source.output and source.level == pytest.approx(0.05)
        assert rig.bench.closed_relays() == relays

        out, err = holder.communicate("\n", timeout=120)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == 0, err
    reads = json.loads(out.strip().splitlines()[-1])
    assert len(reads) == 2 * READS
    first = reads[0]
    assert first > 1e-7  # M1 conducts: not an open circuit
    assert all(r == pytest.approx(first, rel=0.05) for r in reads), reads

    # the holder closed: the bench is free again
    again = run_opener(tmp_path, bench_file)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "2612A"


def test_a_killed_holder_frees_the_bench(tmp_path, served):
    rig, _, bench_file = served
    holder = start_holder(tmp_path, bench_file)
    holder.kill()  # SIGKILL: no close(), no finally, no atexit
    holder.wait(timeout=30)
    holder.stdin.close()  # type: ignore[union-attr]
    holder.stdout.close()  # type: ignore[union-attr]
    holder.stderr.close()  # type: ignore[union-attr]
    opened = run_opener(tmp_path, bench_file)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == "2612A"
    assert "*IDN?" in rig["k2612a"].messages_in()


def test_labpcu_run_on_a_busy_bench_exits_2_with_one_line(tmp_path, served):
    rig, _, bench_file = served
    holder = start_holder(tmp_path, bench_file)
    try:
        before = logs(rig)
        proc = subprocess.run(
            [sys.executable, "-m", "labpcu.cli", "run", "iv_sweep", "--device", DEVICE,
             "--bench", str(bench_file), "--out", str(tmp_path / "runs.h5")],
            capture_output=True, text=True, timeout=180,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("labpcu: error: ")
        m = BUSY.match(lines[0].removeprefix("labpcu: error: "))
        assert m is not None and int(m["pid"]) == holder.pid, lines[0]
        assert logs(rig) == before
    finally:
        holder.communicate("\n", timeout=120)


# ------------------------------------------------------------- one process
def test_close_and_with_release_the_bench(served):
    _, resources, bench_file = served
    bench = Bench.from_file(bench_file)
    with pytest.raises(BenchBusyError, match=rf"in use by process {os.getpid()} "):
        Bench.from_file(bench_file)  # a second Bench in the same process, too
    bench.close()
    with Bench.from_file(bench_file) as again:
        assert again.drivers["k2612a"].model == "2612A"
    with BenchLock(resources) as lock:  # free after `with`: we can take it all
        assert lock.held and len(lock.locks) == 3


def test_lock_is_all_or_nothing_and_taken_before_anything_is_sent(served):
    rig, resources, bench_file = served
    # hold the address that comes last in the lock order: the other two are taken first
    last = max(NAMES, key=lambda n: normalize_address(resources[n]))
    blocker = AddressLock("someone", resources[last])
    blocker.acquire()
    try:
        with pytest.raises(BenchBusyError) as err:
            Bench.from_file(bench_file)
        assert err.value.name == last and err.value.pid == os.getpid()
        assert str(err.value).startswith(f"{last} ({resources[last]}) is in use by process {os.getpid()} (")
        assert logs(rig) == {name: [] for name in NAMES}  # no instrument was even opened
        for name in NAMES:  # the two taken first were given back
            if name != last:
                probe = AddressLock(name, resources[name])
                probe.acquire()
                probe.release()
    finally:
        blocker.release()
    with Bench.from_file(bench_file) as bench:
        assert bench.connected


def test_simulated_benches_need_no_lock(lock_dir):
    with Bench.from_file(seed=0) as a, Bench.from_file(seed=0) as b:  # each has its own wafer
        assert a.sim is not b.sim
    assert not lock_dir.exists() or list(lock_dir.iterdir()) == []


def test_a_refused_lock_names_a_holder_on_another_host(tmp_path):
    address = "TCPIP0::192.0.2.7::5025::SOCKET"
    mine = AddressLock("k2612a", address)
    mine.acquire()
    try:
        # what a holder on another machine sharing LABPCU_LOCK_DIR would have written
        mine.path.write_text(json.dumps({"pid": 4242, "host": "probe-station-2", "command": "labpcu run retention",
                                         "started": time.time()}))
        with pytest.raises(BenchBusyError) as err:
            AddressLock("smu", "tcpip::192.0.2.7::5025::socket").acquire()
    finally:
        mine.release()
    assert re.fullmatch(
        r"smu \(tcpip::192\.0\.2\.7::5025::socket\) is in use by process 4242 on probe-station-2 "
        r"\(labpcu run retention, since \d\d:\d\d:\d\d\); wait for it or stop it", str(err.value)
    )
    assert mine.holder() is None  # released: the file names nobody


# ------------------------------------------------------------- the server
def test_server_refuses_a_second_concurrent_connection(caplog):
    rig = SimRig.default(seed=0)
    with rig.server() as server, caplog.at_level(logging.WARNING, logger="labpcu.sim.server"):
        port = server.ports["k2612a"]
        first = socket.create_connection(("127.0.0.1", port), timeout=5)
        first.sendall(b"*IDN?\n")
        assert b"2612A" in _reply(first)
        second = socket.create_connection(("127.0.0.1", port), timeout=5)
        second.sendall(b"smua.source.levelv = 1\n")
        assert _read_to_end(second) == b""  # closed (within the 5 s timeout), unanswered
        second.close()
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1 and "k2612a" in refusals[0].getMessage()
        assert "smua.source.levelv = 1" not in rig["k2612a"].messages_in()
        first.sendall(b"*IDN?\n")  # the first session is untouched
        assert b"2612A" in _reply(first)
        first.close()
        third = socket.create_connection(("127.0.0.1", port), timeout=5)  # at once: the slot is free
        third.sendall(b"*IDN?\n")
        assert b"2612A" in _reply(third)  # served, not refused
        third.close()
        other = socket.create_connection(("127.0.0.1", server.ports["k3706a"]), timeout=5)
        other.sendall(b"*IDN?\n")  # one session per instrument, not per server
        assert b"3706A" in _reply(other)
        other.close()
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything received until the peer closes or resets the connection."""
    data = b""
    try:
        while chunk := sock.recv(1024):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


# ------------------------------------------------------------- addresses
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("TCPIP0::127.0.0.1::5025::SOCKET", "TCPIP::127.0.0.1::5025::SOCKET"),
        ("TCPIP0::127.0.0.1::5025::SOCKET", "tcpip::LOCALHOST::5025::socket"),
        ("GPIB0::17::INSTR", "GPIB::17"),
        ("GPIB0::17::INSTR", "gpib0::17::instr"),
        ("TCPIP0::192.168.1.21::inst0::INSTR", "TCPIP::192.168.1.21::INSTR"),
        ("TCPIP0::Bench-SMU.lab::hislip0::INSTR", "TCPIP::bench-smu.LAB::HISLIP0::INSTR"),
        ("USB0::0x05E6::0x2612::4321::INSTR", "usb::1510::9746::4321"),
        ("  GPIB0::17::INSTR ", "GPIB0::17::INSTR"),
    ],
)
def test_spellings_of_one_address_share_a_lock(a, b):
    assert normalize_address(a) == normalize_address(b)
    assert lock_path(a) == lock_path(b)
    held = AddressLock("x", a)
    held.acquire()
    try:
        with pytest.raises(BenchBusyError):
            AddressLock("y", b).acquire()
    finally:
        held.release()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("TCPIP::127.0.0.1::5025::SOCKET", "TCPIP::127.0.0.1::5026::SOCKET"),
        ("TCPIP::192.168.1.21::5025::SOCKET", "TCPIP::192.168.1.22::5025::SOCKET"),
        ("GPIB0::17::INSTR", "GPIB1::17::INSTR"),
        ("GPIB0::17::INSTR", "GPIB0::18::INSTR"),
        ("TCPIP::192.168.1.21::inst0::INSTR", "TCPIP::192.168.1.21::inst1::INSTR"),
    ],
)
def test_different_instruments_do_not_share_a_lock(a, b):
    assert normalize_address(a) != normalize_address(b)
    assert lock_path(a) != lock_path(b)
    with BenchLock({"x": a, "y": b}) as both:
        assert both.held and len(both.locks) == 2
