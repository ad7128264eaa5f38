"""The TSP engine: sandbox, budget, memory, number formats, errors, scripts, clock.

Uses a minimal :class:`TspEmulator` subclass with no bench, so that these tests say
nothing about any instrument model.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labpcu.sim.tsp.stdlib import StdlibEmulator
from labpcu.sim.tsp.runtime import (
    BUDGET_MESSAGE,
    TspEmulator,
    TspError,
    TspObject,
    TspParameterError,
    TspTable,
    as_number,
    check_range,
)


class Gadget(TspObject):
    """A tiny instrument object exercising every way of exposing Python to Lua."""

    lua_static = frozenset({"MODE_A", "child"})
    lua_get = frozenset({"level", "calls"})
    lua_set = frozenset({"level"})
    lua_call = frozenset({"double", "pair", "fail", "work", "echo"})
    MODE_A = 7

    def __init__(self, emu: TspEmulator) -> None:
        super().__init__("gadget")
        self._emu = emu
        self._level = 1.0
        self._secret = "hidden"
        self.calls = 0
        self.child = TspTable("gadget.child", fields={"x": 3.0})

    @property
    def level(self) -> float:
        return self._level

    @level.setter
    def level(self, value: Any) -> None:
        self._level = check_range(as_number(value, "gadget.level"), -10, 10, "gadget.level")

    def double(self, x: Any = None) -> float:
        self.calls += 1
        return 2 * as_number(x, "gadget.double")

    def pair(self) -> tuple[float, str]:
        return 1.5, "two"

    def fail(self) -> None:
        raise TspError("gadget failed on purpose")

    def work(self) -> None:
        self._emu.charge(1_000_000)

    def echo(self, x: Any = None) -> Any:
        return x


class Column(TspObject):
    """A printable buffer column."""

    def __init__(self, path: str, values: list[float]) -> None:
        super().__init__(path)
        self.values = values

    def print_values(self, start: int, stop: int) -> list[float]:
        if stop > len(self.values):
            raise TspError(f"index {stop} out of range")
        return self.values[start - 1 : stop]

    def lua_item(self, index: Any) -> Any:
        k = int(index)
        return self.values[k - 1] if 1 <= k <= len(self.values) else None

    def lua_length(self) -> int:
        return len(self.values)


class DemoEmulator(StdlibEmulator):
    model = "DEMO1"
    firmware = "9.9.9"
    description = "demo TSP instrument"
    lua_prelude = "function triple(x) return 3 * x end"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(None, "demo", **kwargs)
        self.gadget = Gadget(self)
        self.col1 = Column("col1", [1.0, 2.0, 3.0])
        self.col2 = Column("col2", [10.0, 20.0, 30.0])
        self.resets = 0

    def lua_globals(self) -> dict[str, Any]:
        return {**super().lua_globals(), "gadget": self.gadget, "col1": self.col1, "col2": self.col2,
                "answer": 42, "hello": lambda name=None: f"hello {name}"}

    def reset(self) -> None:
        super().reset()
        self.resets += 1


@pytest.fixture
def emu() -> DemoEmulator:
    return DemoEmulator()


def ask(emu: TspEmulator, message: str) -> str:
    emu.write(message)
    return emu.take_output().decode("latin-1")


def errors(emu: TspEmulator) -> list[tuple[int, str]]:
    out = [(e.code, e.message) for e in emu.errors]
    emu.errors.clear()
    return out


# ------------------------------------------------------------------ IEEE common
def test_idn_and_common_commands(emu: DemoEmulator) -> None:
    assert ask(emu, "*IDN?") == f"Keithley Instruments Inc., Model DEMO1, {emu.serial}, 9.9.9\n"
    assert ask(emu, "*OPC?") == "1\n"
    assert ask(emu, "*TRG") == ""
    emu.write("format.asciiprecision = 9")
    n = emu.resets
    emu.write("*RST")
    assert emu.resets == n + 1
    assert ask(emu, "print(format.asciiprecision)") == "6.00000e+00\n"
    emu.write("*FOO")
    assert errors(emu) == [(-113, "Undefined header; *FOO")]
    emu.inject_error(-100, "x")
    emu.write("*CLS")
    assert len(emu.errors) == 0


def test_opc_and_waitcomplete_sync(emu: DemoEmulator) -> None:
    assert ask(emu, "opc() waitcomplete() print([[1]])") == "1\n"
    assert errors(emu) == []


# ------------------------------------------------------------------ print formats
@pytest.mark.parametrize(
    ("chunk", "reply"),
    [
        ("print(1)", "1.00000e+00"),
        ("print(2.5)", "2.50000e+00"),
        ("print(-0.00123)", "-1.23000e-03"),
        ("print(1e100)", "1.00000e+100"),
        ("print(2.5, nil, true, false, 'abc')", "2.50000e+00\tnil\ttrue\tfalse\tabc"),
        ("print()", ""),
        ("print(tostring(10/2), tostring(0.1))", "5\t0.1"),
        ("format.asciiprecision = 10 print(math.pi)", "3.141592654e+00"),
        ("format.asciiprecision = 1 print(3.4)", "3e+00"),
        ("print(answer, triple(2), hello('bob'))", "4.20000e+01\t6.00000e+00\thello bob"),
    ],
)
def test_print_formats_like_the_instrument(emu: DemoEmulator, chunk: str, reply: str) -> None:
    assert ask(emu, chunk) == reply + "\n"
    assert errors(emu) == []


def test_printnumber_ascii_and_binary(emu: DemoEmulator) -> None:
    assert ask(emu, "printnumber(1, 2.5)") == "1.00000e+00, 2.50000e+00\n"
    out = emu.take_output()
    assert out == b""
    emu.write("format.data = format.REAL32 printnumber(1, 2.5)")
    raw = emu.take_output()
    assert raw[:2] == b"#0" and raw[-1:] == b"\n"
    assert struct.unpack("<2f", raw[2:-1]) == (1.0, 2.5)  # default byte order SWAPPED
    emu.write("format.data = format.REAL64 format.byteorder = format.NORMAL printnumber(-3.25)")
    raw = emu.take_output()
    assert struct.unpack(">d", raw[2:-1]) == (-3.25,)


def test_printbuffer_interleaves_and_packs(emu: DemoEmulator) -> None:
    assert ask(emu, "printbuffer(1, 3, col1)") == "1.00000e+00, 2.00000e+00, 3.00000e+00\n"
    assert ask(emu, "printbuffer(2, 3, col1, col2)") == "2.00000e+00, 2.00000e+01, 3.00000e+00, 3.00000e+01\n"
    assert ask(emu, "print(#col1, col2[2], col2[9])") == "3.00000e+00\t2.00000e+01\tnil\n"
    emu.write("format.data = format.REAL32 printbuffer(1, 3, col2)")
    raw = emu.take_output()
    # QCoDeS: strip 2 leading bytes and the trailing newline, unpack little-endian floats
    assert struct.unpack("<3f", raw[2:-1]) == (10.0, 20.0, 30.0)
    emu.write("format.data = format.ASCII printbuffer(1, 9, col1)")
    assert emu.take_output() == b""
    (code, msg), = errors(emu)
    assert code == -286 and "out of range" in msg
    emu.write("printbuffer(1, 2, 5)")
    (code, msg), = errors(emu)
    assert code == -286 and "buffer expected" in msg


# ------------------------------------------------------------------ globals, calls
def test_globals_persist_between_messages(emu: DemoEmulator) -> None:
    emu.write("x = 5")
    emu.write("function f(a) return a * x end")
    assert ask(emu, "print(f(2))") == "1.00000e+01\n"


def test_exposed_objects(emu: DemoEmulator) -> None:
    assert ask(emu, "print(gadget.MODE_A, gadget.level, gadget.child.x)") == "7.00000e+00\t1.00000e+00\t3.00000e+00\n"
    emu.write("gadget.level = 4")
    assert emu.gadget.level == 4.0
    assert ask(emu, "print(gadget.double(3), gadget.pair())") == "6.00000e+00\t1.50000e+00\ttwo\n"
    assert ask(emu, "print(gadget.echo(gadget) == gadget, gadget.echo(nil), 1)") == "true\tnil\t1.00000e+00\n"
    assert ask(emu, "print(gadget.echo(nil))") == "\n"  # a function returning nothing
    assert ask(emu, "print(gadget.nothing)") == "nil\n"
    assert errors(emu) == []


def test_parameter_error_keeps_value_and_continues(emu: DemoEmulator) -> None:
    assert ask(emu, "gadget.level = 99 print(gadget.level)") == "1.00000e+00\n"
    assert errors(emu) == [(-222, "Parameter data out of range; gadget.level 99")]


@pytest.mark.parametrize(
    ("chunk", "fragment"),
    [
        ("gadget.levl = 1", "no such attribute"),
        ("gadget.calls = 1", "read-only"),
        ("gadget.MODE_A = 1", "read-only"),
        ("gadget.level = 'high'", "number expected, got string"),
        ("gadget.fail()", "gadget failed on purpose"),
        ("gadget.double()", "number expected, got nil"),
        ("gadget.pair(1, 2, 3)", "bad arguments"),
    ],
)
def test_bad_use_is_a_runtime_error(emu: DemoEmulator, chunk: str, fragment: str) -> None:
    assert ask(emu, chunk + " print('not reached')") == ""
    (code, msg), = errors(emu)
    assert code == -286
    assert msg.startswith("TSP Runtime error at line 1: ")
    assert fragment in msg
    assert emu.internal_errors == []


# ------------------------------------------------------------------ sandbox
FORBIDDEN = ["os", "io", "python", "require", "load", "loadstring", "dofile", "loadfile", "package",
             "debug", "coroutine", "string.dump", "('').dump", "_G.os", "_G.debug",
             "getmetatable('')", "_ENV", "getfenv", "setfenv", "newproxy", "module", "_G._G.load"]


@pytest.mark.parametrize("name", FORBIDDEN)
def test_forbidden_names_unreachable(emu: DemoEmulator, name: str) -> None:
    assert ask(emu, f"print({name} == nil)") == "true\n"
    assert errors(emu) == []


def test_safe_std_library_available(emu: DemoEmulator) -> None:
    chunk = ("print(string.format('%d', 7), math.floor(2.5), table.concat({'a','b'}, ','), "
             "select('#', unpack({1, 2, 3})), type(pairs), type(ipairs), type(next), tonumber('3'), "
             "pcall(error, 'e'), rawget({q = 1}, 'q'), type(setmetatable({}, {})), ('x'):rep(3))")
    assert ask(emu, chunk) == ("7\t2.00000e+00\ta,b\t3.00000e+00\tfunction\tfunction\tfunction\t3.00000e+00\t"
                               "false\t1.00000e+00\ttable\txxx\n")
    assert errors(emu) == []


def test_no_python_attribute_escape(emu: DemoEmulator) -> None:
    # instrument objects are Lua tables: Python names read as nil, metatables are locked
    chunk = ("print(gadget.__class__, gadget._secret, gadget._emu, gadget.__dict__, "
             "getmetatable(gadget), rawget(gadget, 'level'), type(gadget), type(gadget.double))")
    assert ask(emu, chunk) == "nil\tnil\tnil\tnil\tfalse\tnil\ttable\tfunction\n"
    emu.write("setmetatable(gadget, {})")
    (code, msg), = errors(emu)
    assert code == -286 and "protected metatable" in msg
    # and a raw Python object that leaked into the sandbox exposes no attribute at all
    emu.runtime.env["leak"] = emu.gadget
    assert ask(emu, "print(type(leak), getmetatable(leak))") == "userdata\tnil\n"
    for attr in ("__class__", "_secret", "level", "__init__", "__globals__"):
        assert ask(emu, f"print(pcall(function() return leak.{attr} end))").startswith("false\t")
        emu.write(f"x = leak.{attr}")
        (code, msg), = errors(emu)
        assert code == -286, attr
    assert emu.gadget._secret == "hidden"


def test_gc_metamethods_refused(emu: DemoEmulator) -> None:
    emu.write("setmetatable({}, {__gc = function() while true do end end})")
    (code, msg), = errors(emu)
    assert code == -286 and "__gc" in msg


def test_user_metamethods_never_run_outside_the_budget(emu: DemoEmulator) -> None:
    """Trusted code (script registration, memory recovery) runs without the hook: it
    must not trigger metamethods that user code put on reachable tables."""
    loop = "function() while true do end end"
    emu.write(f"setmetatable(_G, {{__newindex = {loop}, __index = {loop}}})")
    emu.write(f"script.anonymous = nil setmetatable(script, {{__newindex = {loop}}})")
    emu.write(f"setmetatable(script.user.scripts, {{__newindex = {loop}}})")
    assert errors(emu) == []
    done = threading.Event()

    def work() -> None:
        emu.write("loadscript named\nprint('named ran')\nendscript")
        emu.write("loadandrunscript\nprint('anonymous ran')\nendscript")
        emu.write("named()")
        done.set()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert done.is_set(), "trusted code ran a user metamethod without the budget hook"
    assert emu.take_output() == b"anonymous ran\nnamed ran\n"
    assert errors(emu) == []
    emu.write("print(undefined_global)")  # the looping __index runs under the budget
    (code, msg), = errors(emu)
    assert code == -286 and BUDGET_MESSAGE in msg


# ------------------------------------------------------------------ budget
RUNAWAY = [
    "while true do end",
    "while true do pcall(function() while true do end end) end",
    "while true do xpcall(function() while true do end end, function() while true do end end) end",
    "xpcall(function() error('x') end, function() while true do end end)",
    "local function f() return f() end f()",
    "local t = setmetatable({}, {__index = function(t, k) return k end}) while true do local _ = t.x end",
    "local t = {} for i = 1, 1e9 do table.insert(t, 1, i) end",
    "while true do gadget.level = 1 end",
    "for i = 1, 1e9 do local s = tostring(i) end",
]


@pytest.mark.parametrize("chunk", RUNAWAY)
def test_runaway_code_ends_with_budget_error(emu: DemoEmulator, chunk: str) -> None:
    t0 = time.perf_counter()
    emu.write(chunk)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0
    errs = errors(emu)
    assert errs and errs[0][0] == -286
    assert BUDGET_MESSAGE in errs[0][1]
    assert "at line 1" in errs[0][1]
    assert ask(emu, "print(1 + 1)") == "2.00000e+00\n"
    assert errors(emu) == []


def test_budget_is_per_message_and_configurable() -> None:
    emu = DemoEmulator(instruction_budget=10_000)
    emu.write("for i = 1, 100 do end")  # well inside
    assert errors(emu) == []
    emu.write("for i = 1, 100000 do end")
    (code, msg), = errors(emu)
    assert code == -286 and "10000 instructions" in msg


def test_python_work_is_charged(emu: DemoEmulator) -> None:
    emu.write("for i = 1, 100 do gadget.work() end")
    (code, msg), = errors(emu)
    assert code == -286 and BUDGET_MESSAGE in msg
    emu.write("for i = 1, 3 do gadget.work() end")
    assert errors(emu) == []


def test_pcall_cannot_swallow_python_side_budget(emu: DemoEmulator) -> None:
    emu.write("while true do pcall(gadget.work) end")
    (code, msg), = errors(emu)
    assert code == -286 and BUDGET_MESSAGE in msg


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize(
    "chunk",
    [
        "s = 'x' while true do s = s .. s end",
        "t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1e5) .. i end",
        "x = string.rep('x', 1e9)",
        "t = {} for i = 1, 1e9 do t[i] = {i, i, i} end",
    ],
)
def test_memory_bomb_is_contained(chunk: str) -> None:
    emu = DemoEmulator(max_memory=8 * 1024 * 1024)
    emu.write("keep = 1")
    t0 = time.perf_counter()
    emu.write(chunk)
    assert time.perf_counter() - t0 < 10.0
    errs = errors(emu)
    assert errs and errs[0][0] == -286
    assert "memory" in errs[0][1] or "too large" in errs[0][1]
    assert ask(emu, "print(1 + 1)") == "2.00000e+00\n"
    assert emu.runtime.lua.get_memory_used() < 0.6 * emu.max_memory


def test_pattern_bomb_refused(emu: DemoEmulator) -> None:
    t0 = time.perf_counter()
    emu.write("print(string.find(string.rep('a', 100000), '.-.-.-.-b'))")
    assert time.perf_counter() - t0 < 2.0
    (code, msg), = errors(emu)
    assert code == -286 and "pattern too complex" in msg
    assert ask(emu, "print(string.find('abc', 'b'), ('a,b'):match('(%a),(%a)'))") == "2.00000e+00\ta\tb\n"


# ------------------------------------------------------------------ errors
def test_syntax_and_runtime_errors_never_raise(emu: DemoEmulator) -> None:
    emu.write("x = = 1")
    emu.write("foo()")
    emu.write("error('custom')")
    emu.write("error({})")
    errs = errors(emu)
    assert errs[0] == (-285, "TSP Syntax error at line 1: unexpected symbol near '='")
    assert errs[1] == (-286, "TSP Runtime error at line 1: attempt to call global 'foo' (a nil value)")
    assert errs[2] == (-286, "TSP Runtime error at line 1: custom")
    assert errs[3][0] == -286 and "table value" in errs[3][1]


def test_error_queue_lua_api(emu: DemoEmulator) -> None:
    assert ask(emu, "print(errorqueue.count)") == "0.00000e+00\n"
    assert ask(emu, "print(errorqueue.next())") == "0.00000e+00\tQueue Is Empty\t0.00000e+00\t1.00000e+00\n"
    emu.inject_error(-410, "Query INTERRUPTED")
    emu.write("nope()")
    assert ask(emu, "print(errorqueue.count)") == "2.00000e+00\n"
    assert ask(emu, "code, msg, sev, node = errorqueue.next() print(code, msg, sev, node)") == (
        "-4.10000e+02\tQuery INTERRUPTED\t3.00000e+01\t1.00000e+00\n"
    )
    emu.write("errorqueue.clear()")
    assert ask(emu, "print(errorqueue.count)") == "0.00000e+00\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=60))
def test_any_message_leaves_a_working_session(emu: DemoEmulator, text: str) -> None:
    emu.write(text)  # must not raise, whatever it is
    emu.clear_output()
    emu.write("endscript")  # leave script-collection mode if the text entered it
    emu.errors.clear()
    emu.write("print(7)")
    assert emu.take_output().endswith(b"7.00000e+00\n")
    assert emu.internal_errors == []


# ------------------------------------------------------------------ scripts
def test_named_script(emu: DemoEmulator) -> None:
    for line in ["loadscript greet", "count = (count or 0) + 1", "print('hi', count)", "endscript"]:
        emu.write(line)
    assert ask(emu, "x = 1") == ""  # loading did not run it
    assert ask(emu, "greet()") == "hi\t1.00000e+00\n"
    assert ask(emu, "greet.run()") == "hi\t2.00000e+00\n"
    assert ask(emu, "greet.save() print(greet.source)") == "count = (count or 0) + 1\nprint('hi', count)\n"
    assert ask(emu, "print(script.user.scripts.greet == greet)") == "true\n"
    assert errors(emu) == []


def test_loadandrunscript_single_write_qcodes_style(emu: DemoEmulator) -> None:
    assert ask(emu, "loadandrunscript\r\nfunction sq(x) return x * x end\r\nprint(sq(3))\r\nendscript") == "9.00000e+00\n"
    assert ask(emu, "script.anonymous()") == "9.00000e+00\n"
    assert ask(emu, "script.anonymous.run()") == "9.00000e+00\n"
    assert errors(emu) == []


def test_script_errors_report_script_lines(emu: DemoEmulator) -> None:
    emu.write("loadscript broken\nx = 1\ny = = 2\nendscript")
    (code, msg), = errors(emu)
    assert (code, msg) == (-285, "TSP Syntax error at line 2: unexpected symbol near '='")
    assert ask(emu, "print(broken)") == "nil\n"
    emu.write("loadandrunscript bad\nx = 1\n\nundefined_call()\nendscript")
    (code, msg), = errors(emu)
    assert code == -286 and msg.startswith("TSP Runtime error at line 3: attempt to call global 'undefined_call'")


def test_script_new(emu: DemoEmulator) -> None:
    assert ask(emu, "s = script.new('print(40 + 2)', 'answerer') answerer() s.run()") == "4.20000e+01\n" * 2


def test_script_runs_under_budget(emu: DemoEmulator) -> None:
    emu.write("loadandrunscript spin\nwhile true do end\nendscript")
    (code, msg), = errors(emu)
    assert code == -286 and BUDGET_MESSAGE in msg
    emu.write("spin()")
    (code, msg), = errors(emu)
    assert code == -286 and BUDGET_MESSAGE in msg


def test_multiline_message_is_split(emu: DemoEmulator) -> None:
    assert ask(emu, "a = 1\nb = 2\r\nprint(a + b)") == "3.00000e+00\n"


# ------------------------------------------------------------------ clock, node
def test_delay_advances_the_virtual_clock(emu: DemoEmulator) -> None:
    t0 = time.perf_counter()
    emu.write("timer.reset() delay(1000) delay(2.5)")
    assert time.perf_counter() - t0 < 1.0
    assert emu.clock.now() == pytest.approx(1002.5)
    assert ask(emu, "print(timer.measure.t())") == "1.00250e+03\n"
    emu.write("delay(-1)")
    emu.write("delay(2e5)")
    assert [c for c, _ in errors(emu)] == [-222, -222]
    assert emu.clock.now() == pytest.approx(1002.5)


def test_localnode(emu: DemoEmulator) -> None:
    reply = ask(emu, "print(localnode.model, localnode.linefreq, localnode.serialno, localnode.revision, "
                     "localnode.description)")
    assert reply == f"DEMO1\t6.00000e+01\t{emu.serial}\t9.9.9\tdemo TSP instrument\n"
    emu.write("localnode.linefreq = 55")
    assert errors(emu)[0][0] == -222
    emu.write("localnode.linefreq = 50 localnode.prompts = 0 localnode.showerrors = 0")
    assert errors(emu) == []
    assert emu.linefreq == 50.0


def test_power_cycle_forgets_globals(emu: DemoEmulator) -> None:
    emu.write("x = 3")
    emu.power_cycle()
    assert ask(emu, "print(x, answer)") == "nil\t4.20000e+01\n"


def test_tsp_helpers(emu: DemoEmulator) -> None:
    assert ask(emu, "print(bit.bitand(12, 10), bit.bitor(12, 10), bit.test(4, 3))") == (
        "8.00000e+00\t1.40000e+01\ttrue\n"
    )
    assert ask(emu, "g = makegetter(gadget, 'level') s = makesetter(gadget, 'level') s(2) print(g())") == (
        "2.00000e+00\n"
    )


def test_set_command_throughput(emu: DemoEmulator) -> None:
    emu.log_enabled = True
    n = 20_000
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            emu.write("gadget.level = 0.1")
        best = min(best, time.perf_counter() - t0)
    rate = n / best
    print(f"\nTSP runtime set commands: {rate:,.0f} messages/s")
    assert rate > 20_000
    assert emu.gadget.level == 0.1
    assert errors(emu) == []


def test_parameter_error_class_defaults() -> None:
    e = TspParameterError()
    assert (e.code, e.message) == (-222, "Parameter data out of range")
