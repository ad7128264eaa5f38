"""The two transports between clients and emulators: SimAdapter and SimServer.

A tiny echo instrument stands in for the real emulators, so these tests pin the
transport contract alone: message framing, terminations, faults, threads, sockets.
"""

from __future__ import annotations

import _thread
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import pyvisa
from pymeasure.instruments import Instrument
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

from labpcu.sim.adapter import SimAdapter
from labpcu.sim.emulator import Emulator
from labpcu.sim.server import SimServer

IDN = "LABPCU,ECHO,0,1.0"


class EchoEmulator(Emulator):
    """Test-only instrument: *IDN?, ECHO? x, TWO? (two replies), SYST:ERR?."""

    model = "echo"

    def handle(self, message: str) -> None:
        if message == "*IDN?":
            self.reply(IDN)
        elif message.startswith("ECHO? "):
            self.reply(message[len("ECHO? "):])
        elif message == "TWO?":
            self.reply("a")
            self.reply("b")
        elif message == "SYST:ERR?":
            err = self.errors.pop()
            self.reply('0,"No error"' if err is None else f'{err.code},"{err.message}"')
        elif message:
            self.errors.push(-113, "Undefined header")


class FlexEmulator(EchoEmulator):
    """The same, framed like the B1500 FLEX interface (CR LF both ways)."""

    model = "flex"
    reply_termination = b"\r\n"
    write_termination = b"\r\n"


class SlowOutputEmulator(EchoEmulator):
    """Widens the gap between a message and the collection of its reply, as a busy
    machine would, so that replies crossing between clients would show up."""

    def take_output(self, count: int = -1, until: bytes | None = None) -> bytes:
        time.sleep(0.001)
        return super().take_output(count, until)


def sim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("labpcu-sim")]


# ---------------------------------------------------------------------------
# SimAdapter (in process)
# ---------------------------------------------------------------------------
@pytest.fixture
def emu() -> EchoEmulator:
    return EchoEmulator()


@pytest.fixture
def adapter(emu: EchoEmulator) -> Iterator[SimAdapter]:
    a = SimAdapter(emu, timeout=1.0)
    yield a
    a.close()


def test_instrument_ask_and_values(emu: EchoEmulator, adapter: SimAdapter) -> None:
    inst = Instrument(adapter, "echo", includeSCPI=False)
    assert inst.ask("*IDN?") == IDN
    assert inst.values("ECHO? 1.5,2.5") == [1.5, 2.5]
    assert emu.messages_in() == ["*IDN?", "ECHO? 1.5,2.5"]
    assert emu.pending_output() == 0


def test_error_queue_reaches_client(adapter: SimAdapter) -> None:
    adapter.write("BOGUS")
    adapter.write("SYST:ERR?")
    assert adapter.read() == '-113,"Undefined header"'
    adapter.write("SYST:ERR?")
    assert adapter.read() == '0,"No error"'


def test_one_string_is_one_message_and_lines_are_split(
    emu: EchoEmulator, adapter: SimAdapter
) -> None:
    adapter.write("ECHO? a;b c")
    adapter.write("ECHO? x\nECHO? y\r\nECHO? z\n")  # several lines, one trailing line end
    assert emu.messages_in() == ["ECHO? a;b c", "ECHO? x", "ECHO? y", "ECHO? z"]
    assert [adapter.read() for _ in range(4)] == ["a;b c", "x", "y", "z"]


def test_write_bytes_delivers_only_complete_lines(emu: EchoEmulator, adapter: SimAdapter) -> None:
    adapter.write_bytes(b"ECHO? ab")
    assert emu.messages_in() == []  # no line feed yet: still on the wire
    adapter.write_bytes(b"c\nECHO? d\n")
    assert emu.messages_in() == ["ECHO? abc", "ECHO? d"]
    adapter.write_bytes(b"ECHO? ")
    adapter.write("e")  # a write() finishes the message in transit
    assert emu.messages_in()[-1] == "ECHO? e"


def test_read_bytes_like_visa_adapter(emu: EchoEmulator, adapter: SimAdapter) -> None:
    adapter.write("TWO?")
    assert adapter.read_bytes(-1) == b"a\nb\n"
    assert adapter.read_bytes(-1) == b""  # VISAAdapter returns what came: nothing
    adapter.write("TWO?")
    assert adapter.read_bytes(10, break_on_termchar=True) == b"a\n"
    assert adapter.read_bytes(1) == b"b"
    assert adapter.read_bytes(1) == b"\n"
    adapter.write("ECHO? abc")
    with pytest.raises(VisaIOError) as err:
        adapter.read_bytes(10)  # 4 bytes will never become 10
    assert err.value.error_code == StatusCode.error_timeout
    assert emu.pending_output() == 0


def test_read_with_nothing_pending_times_out_at_once(adapter: SimAdapter) -> None:
    t0 = time.perf_counter()
    with pytest.raises(VisaIOError) as err:
        adapter.read()
    assert err.value.error_code == StatusCode.error_timeout
    assert time.perf_counter() - t0 < 0.5


def test_late_reply_times_out_without_sleeping(emu: EchoEmulator, adapter: SimAdapter) -> None:
    inst = Instrument(adapter, "echo", includeSCPI=False)
    emu.faults.delay_replies(5.0)  # adapter timeout is 1 s
    t0 = time.perf_counter()
    with pytest.raises(VisaIOError) as err:
        inst.ask("ECHO? late")
    assert err.value.error_code == StatusCode.error_timeout
    assert time.perf_counter() - t0 < 0.5
    assert emu.pending_output() == 0  # the late reply is gone
    assert inst.ask("ECHO? next") == "next"  # count=1: only one reply was late


def test_delay_within_timeout_is_delivered(emu: EchoEmulator, adapter: SimAdapter) -> None:
    emu.faults.delay_replies(0.5, count=None)
    t0 = time.perf_counter()
    adapter.write("*IDN?")
    assert adapter.read() == IDN
    assert time.perf_counter() - t0 < 0.4
    adapter.timeout = 0.2
    adapter.write("*IDN?")
    with pytest.raises(VisaIOError):
        adapter.read()
    adapter.timeout = None  # wait forever: nothing is ever late
    adapter.write("*IDN?")
    assert adapter.read() == IDN


def test_delay_applies_once_per_reply(emu: EchoEmulator, adapter: SimAdapter) -> None:
    adapter.write("ECHO? abc")
    assert adapter.read_bytes(1) == b"a"
    emu.faults.delay_replies(10.0)
    # the rest of a reply already under way is not delayed again ...
    assert adapter.read_bytes(-1, break_on_termchar=True) == b"bc\n"
    # ... but the next reply is
    adapter.write("ECHO? d")
    with pytest.raises(VisaIOError):
        adapter.read()


def test_drop_on_write_kills_the_link(emu: EchoEmulator, adapter: SimAdapter) -> None:
    emu.faults.drop_connection()
    with pytest.raises(VisaIOError) as err:
        adapter.write("*IDN?")
    assert err.value.error_code == StatusCode.error_connection_lost
    assert emu.messages_in() == []  # never arrived
    assert adapter.closed
    emu.faults.clear()
    for io in (lambda: adapter.write("*IDN?"), adapter.read, lambda: adapter.read_bytes(-1)):
        with pytest.raises(VisaIOError) as err:
            io()
        assert err.value.error_code == StatusCode.error_connection_lost


def test_drop_on_read(emu: EchoEmulator, adapter: SimAdapter) -> None:
    adapter.write("*IDN?")
    emu.faults.drop_connection()
    with pytest.raises(VisaIOError) as err:
        adapter.read()
    assert err.value.error_code == StatusCode.error_connection_lost


def test_close_flush_and_connection_shape(emu: EchoEmulator, adapter: SimAdapter) -> None:
    adapter.connection.timeout = 250  # drivers written for pyvisa set milliseconds
    assert adapter.timeout == pytest.approx(0.25)
    assert adapter.connection.read_termination == "\n"
    with pytest.raises(ValueError):
        adapter.timeout = -1
    adapter.write("TWO?")
    adapter.flush_read_buffer()
    assert emu.pending_output() == 0
    with pytest.raises(TypeError):
        adapter.read(encoding="ascii")
    adapter.close()
    adapter.close()  # idempotent
    with pytest.raises(VisaIOError) as err:
        adapter.write("*IDN?")
    assert err.value.error_code == StatusCode.error_invalid_object
    assert emu.messages_in() == ["TWO?"]


def test_adapter_needs_an_emulator() -> None:
    with pytest.raises(TypeError):
        SimAdapter(object())  # type: ignore[arg-type]


def test_flex_crlf_framing_in_process() -> None:
    emu = FlexEmulator()
    adapter = SimAdapter(emu)
    try:
        inst = Instrument(adapter, "flex", includeSCPI=False)
        assert inst.ask("*IDN?") == IDN  # no stray "\r"
        adapter.write("ECHO? 1\r\nECHO? 2")
        assert emu.messages_in() == ["*IDN?", "ECHO? 1", "ECHO? 2"]
        assert adapter.read_bytes(-1) == b"1\r\n2\r\n"
    finally:
        adapter.close()


# ---------------------------------------------------------------------------
# SimServer (TCP) with plain pyvisa @py
# ---------------------------------------------------------------------------
@pytest.fixture
def rm() -> Iterator[pyvisa.ResourceManager]:
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()


@pytest.fixture
def server() -> Iterator[SimServer]:
    srv = SimServer({"echo": EchoEmulator(), "flex": FlexEmulator()}).start()
    yield srv
    srv.stop()
    assert sim_threads() == []


def open_res(rm: pyvisa.ResourceManager, resource: str, timeout_ms: int = 2000, term: str = "\n"):
    return rm.open_resource(
        resource, read_termination=term, write_termination=term, timeout=timeout_ms
    )


def test_pyvisa_query(server: SimServer, rm: pyvisa.ResourceManager) -> None:
    res = server.resources()
    assert set(res) == {"echo", "flex"}
    assert res["echo"] == f"TCPIP::127.0.0.1::{server.ports['echo']}::SOCKET"
    inst = open_res(rm, res["echo"])
    assert inst.query("*IDN?") == IDN
    assert inst.query("ECHO? hello world") == "hello world"
    inst.write("BOGUS")
    assert inst.query("SYST:ERR?") == '-113,"Undefined header"'
    assert server.emulators["echo"].messages_in() == [
        "*IDN?", "ECHO? hello world", "BOGUS", "SYST:ERR?"
    ]
    inst.close()


def test_pyvisa_flex_crlf(server: SimServer, rm: pyvisa.ResourceManager) -> None:
    inst = open_res(rm, server.resources()["flex"], term="\r\n")
    assert inst.query("*IDN?") == IDN
    inst.write("TWO?")
    assert inst.read_raw() == b"a\r\n"
    assert inst.read() == "b"
    assert server.emulators["flex"].messages_in() == ["*IDN?", "TWO?"]
    inst.close()


def test_lines_split_across_and_within_packets(server: SimServer) -> None:
    with socket.create_connection(("127.0.0.1", server.ports["echo"]), timeout=2) as s:
        s.sendall(b"*ID")
        time.sleep(0.05)
        s.sendall(b"N?\r\nECHO? a\nECHO? b\n")
        data = b""
        while data.count(b"\n") < 3:
            data += s.recv(1024)
    assert data == (IDN + "\na\nb\n").encode()


def test_pyvisa_late_reply_times_out(server: SimServer, rm: pyvisa.ResourceManager) -> None:
    emu = server.emulators["echo"]
    inst = open_res(rm, server.resources()["echo"], timeout_ms=100)
    emu.faults.delay_replies(0.3)
    t0 = time.perf_counter()
    with pytest.raises(VisaIOError) as err:
        inst.query("*IDN?")
    assert err.value.error_code == StatusCode.error_timeout
    assert time.perf_counter() - t0 >= 0.09
    # the delay was real: the reply still comes, late, as from a slow instrument
    inst.timeout = 2000
    assert inst.read() == IDN
    assert time.perf_counter() - t0 >= 0.3
    inst.close()


def test_pyvisa_dropped_connection(server: SimServer, rm: pyvisa.ResourceManager) -> None:
    emu = server.emulators["echo"]
    res = server.resources()["echo"]
    inst = open_res(rm, res, timeout_ms=500)
    emu.faults.drop_connection()
    with pytest.raises((VisaIOError, OSError)):  # pyvisa-py lets ConnectionResetError through
        inst.query("*IDN?")
    assert emu.messages_in() == []
    inst.close()
    again = open_res(rm, res)  # only one drop was planned
    assert again.query("*IDN?") == IDN
    again.close()


def test_clients_at_once_get_their_own_replies(rm: pyvisa.ResourceManager) -> None:
    emu = SlowOutputEmulator()
    wrong: list[tuple[str, str]] = []
    failures: list[BaseException] = []
    with SimServer({"echo": emu}, exclusive=False) as server:  # a real raw socket serves one client
        res = server.resources()["echo"]
        clients = [open_res(rm, res) for _ in range(3)]

        def work(k: int) -> None:
            try:
                for n in range(100):
                    sent = f"c{k}-{n}"
                    got = clients[k].query(f"ECHO? {sent}")
                    if got != sent:
                        wrong.append((sent, got))
            except BaseException as exc:  # surfaced below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        for c in clients:
            c.close()
    assert failures == [] and wrong == []
    assert len(emu.messages_in()) == 300
    assert sim_threads() == []


def test_stop_frees_port_and_threads_even_mid_delay(rm: pyvisa.ResourceManager) -> None:
    emu = EchoEmulator()
    srv = SimServer({"echo": emu}).start()
    port = srv.ports["echo"]
    inst = open_res(rm, srv.resources()["echo"], timeout_ms=100)
    assert inst.query("*IDN?") == IDN
    emu.faults.delay_replies(30.0)
    inst.write("*IDN?")  # the server thread now waits 30 s before replying
    time.sleep(0.05)
    assert len(sim_threads()) == 2  # acceptor + one client
    t0 = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - t0 < 2.0
    assert sim_threads() == []
    srv.stop()  # idempotent
    inst.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with SimServer({"echo": EchoEmulator()}, ports={"echo": port}) as again:
        assert again.ports == {"echo": port}
        again_inst = open_res(rm, again.resources()["echo"])
        assert again_inst.query("ECHO? back") == "back"
        again_inst.close()
    assert sim_threads() == []


def test_serve_forever_until_interrupt_prints_and_returns() -> None:
    lines: list[str] = []
    srv = SimServer({"echo": EchoEmulator(), "flex": FlexEmulator()})
    timer = threading.Timer(0.3, _thread.interrupt_main)  # Ctrl-C, as a user would
    timer.start()
    try:
        t0 = time.perf_counter()
        srv.serve_forever_until_interrupt(lines.append)
        assert time.perf_counter() - t0 < 3.0
    finally:
        timer.cancel()
        srv.stop()
    assert [line.split() for line in lines] == [
        ["echo", lines[0].split()[1]],
        ["flex", lines[1].split()[1]],
    ]
    for line in lines:
        assert line.split()[1].startswith("TCPIP::127.0.0.1::") and line.endswith("::SOCKET")
    assert not srv.running and sim_threads() == []


def test_serve_forever_returns_when_stopped_elsewhere() -> None:
    srv = SimServer({"echo": EchoEmulator()})
    runner = threading.Thread(target=srv.serve_forever_until_interrupt, args=(lambda s: None,))
    runner.start()
    deadline = time.monotonic() + 2
    while not srv.running and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.stop()
    runner.join(2)
    assert not runner.is_alive() and sim_threads() == []


def test_server_rejects_bad_setup() -> None:
    with pytest.raises(ValueError):
        SimServer({})
    with pytest.raises(ValueError):
        SimServer({"echo": EchoEmulator()}, ports={"nope": 5025})
    with pytest.raises(ValueError):
        SimServer({"echo": EchoEmulator()}, ports={"echo": 70000})
    with pytest.raises(TypeError):
        SimServer({"echo": object()})  # type: ignore[dict-item]
    srv = SimServer({"echo": EchoEmulator()})
    with pytest.raises(RuntimeError):
        srv.resources()  # not started
    with srv:
        with pytest.raises(RuntimeError):
            srv.start()  # twice
    assert sim_threads() == []
