"""TSP's Lua 5.0 dialect and the instrument-generic TSP tables.

Scripts here are written as the Keithley manuals write them (2600A/B and 3700
reference manuals, "TSP command reference"; Lua 5.0 reference manual), and the
expected replies are what the manuals show the instrument printing.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import lupa.lua51
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labpcu.sim.tsp.dialect import DialectError, transform
from labpcu.sim.tsp.k2600 import K2612AEmulator
from labpcu.sim.tsp.k3706 import K3706AEmulator
from labpcu.sim.tsp.stdlib import StdlibEmulator
from labpcu.sim.tsp.runtime import BUDGET_MESSAGE, TspEmulator


class PlainTsp(StdlibEmulator):
    """A TSP instrument with nothing but the runtime's own tables."""

    model = "PLAIN"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(None, "plain", **kwargs)


@pytest.fixture
def emu() -> PlainTsp:
    return PlainTsp()


def ask(emu: TspEmulator, message: str) -> str:
    emu.write(message)
    return emu.take_output().decode("latin-1")


def errors(emu: TspEmulator) -> list[tuple[int, str]]:
    out = [(e.code, e.message) for e in emu.errors]
    emu.errors.clear()
    return out


# ------------------------------------------------------------------ Lua 5.0 dialect
DIALECT_SCRIPTS = [
    # implicit pairs (Lua 5.0: "for k, v in t do" iterates a table)
    ("t = {10, 20, 30} sum = 0 for k, v in t do sum = sum + v end print(sum)", "6.00000e+01"),
    ("n = 0 for k in {a = 1, b = 2} do n = n + 1 end print(n)", "2.00000e+00"),
    # a function literal with its own do/end inside the expression list
    ("for k, v in (function() local r = {} for i = 1, 2 do r[i] = i * i end return r end)() do "
     "print(k, v) end", "1.00000e+00\t1.00000e+00\n2.00000e+00\t4.00000e+00"),
    # iterator functions still work
    ("for k, v in ipairs({5}) do print(k, v) end", "1.00000e+00\t5.00000e+00"),
    ("for w in string.gfind('one two', '%a+') do print(w) end", "one\ntwo"),
    # table.getn / table.setn with Lua 5.0's rules (n field, setn size, first nil)
    ("print(table.getn({1, 2, 3}), table.getn({n = 7}), table.getn({1, nil, 3}))",
     "3.00000e+00\t7.00000e+00\t1.00000e+00"),
    ("t = {} table.setn(t, 4) table.insert(t, 'x') print(table.getn(t), t[5])", "5.00000e+00\tx"),
    ("t = {n = 2, 'a', 'b'} table.setn(t, 1) print(t.n, table.remove(t), table.getn(t))",
     "1.00000e+00\ta\t0.00000e+00"),
    # arg in vararg functions (Lua 5.0 has no ... in expressions)
    ("function count(...) return arg.n end print(count(1, nil, 3), count())", "3.00000e+00\t0.00000e+00"),
    ("function second(...) return arg[2] end print(second('a', 'b'))", "b"),
    ("print(math.mod(7, 3), math.pow(2, 10), string.len('abc'), unpack({1, 2}))",
     "1.00000e+00\t1.02400e+03\t3.00000e+00\t1.00000e+00\t2.00000e+00"),
    # print uses format.asciiprecision for every number (2600B: print(6) -> 6.00000e+00)
    ("print(10 / 2, tostring(10 / 2), table.getn({}))", "5.00000e+00\t5\t0.00000e+00"),
]


@pytest.mark.parametrize(("chunk", "reply"), DIALECT_SCRIPTS)
def test_lua50_dialect_runs(emu: PlainTsp, chunk: str, reply: str) -> None:
    assert ask(emu, chunk) == reply + "\n"
    assert errors(emu) == []


def test_lua50_script_loaded_as_on_the_instrument(emu: PlainTsp) -> None:
    lines = [
        "loadscript Stats",
        "function average(...)",
        "  local sum = 0",
        "  for i = 1, arg.n do sum = sum + arg[i] end",
        "  return sum / arg.n",
        "end",
        "readings = {1.5, 2.5, 3.5}",
        "total = 0",
        "for i, r in readings do total = total + r end",
        "print(average(1, 2, 3), total, table.getn(readings), math.mod(total, 2))",
        "endscript",
    ]
    for line in lines:
        emu.write(line)
    assert ask(emu, "Stats()") == "2.00000e+00\t7.50000e+00\t3.00000e+00\t1.50000e+00\n"
    assert errors(emu) == []


REJECTED = [
    ("x = 7 // 2", "near '/'"),
    ("x = 6 & 3", "near '&'"),
    ("x = 6 | 3", "near '|'"),
    ("x = ~0", "near '~'"),
    ("x = 1 << 2", "near '<'"),
    ("x = 1 >> 2", "near '>'"),
    ("goto done ::done::", ""),
    ("local x <const> = 1", ""),
    ("x = 0x10", "malformed number near '0x10'"),
    ("x = 0x1p4", "malformed number near '0x1p4'"),
    ("loadscript s\nx = 1\ny = 0XFF\nendscript", "line 2: malformed number near '0XFF'"),
]


@pytest.mark.parametrize(("chunk", "fragment"), REJECTED)
def test_newer_lua_syntax_is_a_tsp_syntax_error(emu: PlainTsp, chunk: str, fragment: str) -> None:
    assert ask(emu, chunk + ("" if "endscript" in chunk else " print('ran')")) == ""
    (code, msg), = errors(emu)
    assert code == -285 and msg.startswith("TSP Syntax error at line ")
    assert fragment in msg
    assert ask(emu, "print(1 + 1)") == "2.00000e+00\n"


def test_dialect_pass_keeps_lines_and_leaves_strings_alone() -> None:
    src = "s = 'for k in t do 0x10'\n--[[ for a in b do ]]\nfor k,\n v in t\n do end"
    out = transform(src)
    assert out.count("\n") == src.count("\n")
    assert "'for k in t do 0x10'" in out and "--[[ for a in b do ]]" in out
    assert "in _tsp_forin(t\n ) do end" in out
    assert transform("for i = 1, 3 do end") == "for i = 1, 3 do end"
    assert transform("n = #buf.readings + #'ab' print(select('#', 1))") == (
        "n = _tsp_len(buf.readings) + _tsp_len('ab') print(select('#', 1))"
    )
    with pytest.raises(DialectError):
        transform("\n\nx = 0x1")


_PIECES = ["for ", " in ", " do ", " end ", "#", "t", "(", ")", "[", "]", "{", "}", "'", '"', "--", "[[",
           "]]", "1", ".", ":", "m", ",", "\n", " function() ", " if ", " then ", "k", "v", " = ", "+",
           "x = ", "print(", " return ", " local ", "..", ";", "pairs(t)", " while "]
_LUA = lupa.lua51.LuaRuntime(register_eval=False)
_LOADSTRING = _LUA.eval("loadstring")


def _compiles(src: str) -> bool:
    fn = _LOADSTRING(src)
    return fn is not None and not isinstance(fn, tuple)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=16))
def test_dialect_pass_preserves_what_compiles_and_lines(pieces: list[str]) -> None:
    src = "".join(pieces)
    out = transform(src)
    assert out.count("\n") == src.count("\n")
    assert _compiles(out) == _compiles(src), (src, out)


# ------------------------------------------------------------------ sandbox and limits
def test_binary_chunks_and_environment_escapes_refused(emu: PlainTsp) -> None:
    assert ask(emu, "print(getfenv, setfenv, newproxy, loadstring, string.dump, module)") == (
        "nil\tnil\tnil\tnil\tnil\tnil\n"
    )
    emu.write("s = script.new('\\27LuaQ\\0', 'bin')")
    (code, msg), = errors(emu)
    assert code == -286 and "binary" in msg
    emu.write("\x1bLuaQ")
    (code, msg), = errors(emu)
    assert code == -285 and "binary" in msg
    # instrument objects stay tables with locked metatables
    assert ask(emu, "print(type(format), getmetatable(format), rawget(format, 'data'))") == "table\tfalse\tnil\n"


@pytest.mark.parametrize(
    "chunk",
    [
        "while true do collectgarbage() end",
        "t = {1} while true do for k in t do end end",
        "t = {} while true do table.insert(t, 1, 0) table.remove(t, 1) end",
        "while true do table.getn({}) end",
    ],
)
def test_budget_stops_runaway_dialect_loops(emu: PlainTsp, chunk: str) -> None:
    t0 = time.perf_counter()
    emu.write(chunk)
    assert time.perf_counter() - t0 < 10.0
    (code, msg), = errors(emu)
    assert code == -286 and BUDGET_MESSAGE in msg
    assert ask(emu, "print(1)") == "1.00000e+00\n"


def test_memory_cap_holds_with_lua50_tables() -> None:
    emu = PlainTsp(max_memory=8 * 1024 * 1024)
    emu.write("t = {} for i = 1, 1e9 do table.insert(t, string.rep('x', 1000) .. i) end")
    (code, msg), *_ = errors(emu)
    assert code == -286 and "memory" in msg
    assert ask(emu, "print(1)") == "1.00000e+00\n"
    assert emu.runtime.lua.get_memory_used() < 0.6 * emu.max_memory


def test_gcinfo_and_collectgarbage_have_lua50_semantics(emu: PlainTsp) -> None:
    kb, threshold = (float(x) for x in ask(emu, "print(gcinfo())").split("\t"))
    assert 10 < kb < 10_000 and threshold >= kb
    emu.write("junk = {} for i = 1, 20000 do junk[i] = {i} end junk = nil")
    before = float(ask(emu, "print(gcinfo())").split("\t")[0])
    after, threshold = (float(x) for x in ask(emu, "collectgarbage() print(gcinfo())").split("\t"))
    assert after < before and threshold == pytest.approx(2 * after, abs=2)
    assert ask(emu, "collectgarbage(1e6) print(select(2, gcinfo()))") == "1.00000e+06\n"
    emu.write("collectgarbage('count')")  # a 5.1 option string is not a number in 5.0
    (code, msg), = errors(emu)
    assert code == -286 and "number expected" in msg


# ------------------------------------------------------------------ prompts, showerrors
def test_prompts_follow_each_command_message(emu: PlainTsp) -> None:
    assert ask(emu, "print(localnode.prompts, localnode.prompts4882)") == "0.00000e+00\t1.00000e+00\n"
    assert ask(emu, "localnode.prompts = 1") == "TSP>\n"
    assert ask(emu, "print(2)") == "2.00000e+00\nTSP>\n"
    assert ask(emu, "*IDN?").endswith("\nTSP>\n")
    assert ask(emu, "loadscript s") == ">>>>\n"
    assert ask(emu, "print('in s')") == ">>>>\n"
    assert ask(emu, "endscript") == "TSP>\n"
    assert ask(emu, "s()") == "in s\nTSP>\n"
    assert ask(emu, "undefined()") == "TSP?\n"  # errors still queued
    assert ask(emu, "x = 1") == "TSP?\n"
    assert ask(emu, "errorqueue.clear()") == "TSP>\n"
    emu.write("localnode.prompts4882 = 0")
    assert emu.take_output() == b"TSP>\n"
    assert ask(emu, "*OPC?") == "1\n"
    assert ask(emu, "localnode.prompts = 0") == ""
    assert ask(emu, "print(3)") == "3.00000e+00\n"
    assert ask(emu, "loadscript t") == ""


def test_showerrors_sends_errors_after_the_command(emu: PlainTsp) -> None:
    emu.write("localnode.showerrors = 1")
    reply = ask(emu, "undefined()")
    assert reply.startswith("-2.86000e+02\tTSP Runtime error at line 1: attempt to call global 'undefined'")
    assert errors(emu) == []
    emu.write("localnode.prompts = 1")
    assert emu.take_output() == b"TSP>\n"
    assert ask(emu, "x = = 1").endswith("\nTSP>\n")


# ------------------------------------------------------------------ bit
@pytest.mark.parametrize(
    ("chunk", "reply"),
    [
        ("print(bit.get(10, 4))", "8.00000e+00"),               # 2600A/B manual example
        ("print(bit.getfield(13, 2, 3))", "6.00000e+00"),      # 2600B manual example
        ("print(bit.setfield(15, 1, 3, 5))", "1.30000e+01"),
        ("print(bit.bitand(12, 10), bit.bitor(12, 10), bit.bitxor(12, 10))",
         "8.00000e+00\t1.40000e+01\t6.00000e+00"),
        ("print(bit.set(0, 32), bit.clear(15, 1), bit.toggle(5, 2), bit.test(4, 3), bit.test(4, 2))",
         "2.14748e+09\t1.40000e+01\t7.00000e+00\ttrue\tfalse"),
        ("print(bit.bitand(12.9, 10.2), bit.bitor(-1, 0) == 4294967295)", "8.00000e+00\ttrue"),
    ],
)
def test_bit_library(emu: PlainTsp, chunk: str, reply: str) -> None:
    assert ask(emu, chunk) == reply + "\n"
    assert errors(emu) == []


def test_bit_index_outside_1_to_32_is_an_error(emu: PlainTsp) -> None:
    emu.write("x = bit.get(1, 33)")
    emu.write("x = bit.getfield(1, 30, 5)")
    errs = errors(emu)
    assert [c for c, _ in errs] == [-286, -286]
    assert "bit index 33 outside 1..32" in errs[0][1] and "passes bit 32" in errs[1][1]


# ------------------------------------------------------------------ format
def test_format_governs_printnumber_and_printbuffer_not_print(emu: PlainTsp) -> None:
    # 2651A/2600B manual example: asciiprecision 10, printnumber in ASCII then REAL64
    emu.write("format.asciiprecision = 10 x = 3.14159265 format.data = format.ASCII printnumber(x) "
              "format.data = format.REAL64 printnumber(x)")
    out = emu.take_output()
    first, rest = out.split(b"\n", 1)
    assert first == b"3.141592650e+00"
    assert rest[:2] == b"#0" and struct.unpack("<d", rest[2:10]) == (3.14159265,)
    assert ask(emu, "print(x)") == "3.141592650e+00\n"  # print stays ASCII
    emu.write("format.byteorder = format.BIGENDIAN format.data = format.REAL32 printnumber(1.5)")
    assert struct.unpack(">f", emu.take_output()[2:6]) == (1.5,)
    emu.write("format.asciiprecision = 17")
    assert errors(emu)[0][0] == -222
    emu.write("reset()")
    assert ask(emu, "print(format.data, format.asciiprecision, format.byteorder == format.SWAPPED)") == (
        "1.00000e+00\t6.00000e+00\ttrue\n"
    )


# ------------------------------------------------------------------ display
def test_display_text_reads_back(emu: PlainTsp) -> None:
    emu.write("display.clear() display.setcursor(1, 1) display.settext('ABCDEFGHIJ$DKLMNOPQRST') "
              "display.setcursor(2, 1) display.settext('abcdefghijklm$Bnopqrstuvwxyz$F123456')")
    assert ask(emu, "print(display.gettext())") == "ABCDEFGHIJKLMNOPQRST$Nabcdefghijklmnopqrstuvwxyz123456\n"
    assert ask(emu, "print(display.gettext(true))") == (
        "$RABCDEFGHIJ$DKLMNOPQRST$N$Rabcdefghijklm$Bnopqrstuvwxyz$F123456\n"
    )
    assert ask(emu, "print(display.gettext(false, 2))") == "abcdefghijklmnopqrstuvwxyz123456\n"
    assert ask(emu, "print(display.gettext(true, 2, 9))") == "$Rijklm$Bnopqrstuvwxyz$F123456\n"
    assert ask(emu, "print(display.gettext(false, 2, 9, 10))") == "ij\n"
    emu.write("display.clear() display.setcursor(1, 3, 1) display.settext('Hi$Nthere $$5')")
    assert ask(emu, "print(display.gettext(false, 1, 1, 5), display.gettext(false, 2, 1, 8))") == (
        "  Hi \tthere $5\n"
    )
    assert ask(emu, "print(display.getcursor())") == "2.00000e+00\t9.00000e+00\t1.00000e+00\n"
    emu.write("display.screen = display.USER")
    assert ask(emu, "print(display.screen)") == "3.00000e+00\n"
    emu.write("display.setcursor(3, 1)")
    assert errors(emu)[0][0] == -222
    assert errors(emu) == []


def test_2600_display_keeps_its_constants_and_gains_text() -> None:
    emu = K2612AEmulator()
    emu.write("display.smua.measure.func = display.MEASURE_DCVOLTS display.screen = display.SMUA_SMUB")
    emu.write("display.clear() display.settext('Vset 1V')")
    assert ask(emu, "print(display.smua.measure.func, display.screen, display.gettext(false, 1, 1, 7))") == (
        "1.00000e+00\t2.00000e+00\tVset 1V\n"
    )
    emu.write("reset()")
    assert ask(emu, "print(display.screen, display.gettext(false, 1, 1, 7))") == "0.00000e+00\t       \n"
    assert errors(emu) == []


def test_generic_tables_on_both_keithley_emulators() -> None:
    for emu in (K2612AEmulator(), K3706AEmulator()):
        reply = ask(emu, "print(bit.bitand(6, 3), digio.readbit(1), userstring.get('none'), "
                         "type(display.gettext), gcinfo() > 0)")
        assert reply == "2.00000e+00\t1.00000e+00\tnil\tfunction\ttrue\n", type(emu).__name__
        assert errors(emu) == []


# ------------------------------------------------------------------ digio
def test_digio_lines_read_back_what_was_written(emu: PlainTsp) -> None:
    assert ask(emu, "print(digio.readport())") == "1.63830e+04\n"  # 14 lines, pulled high
    emu.write("digio.writeport(0)")
    assert ask(emu, "print(digio.readport(), digio.readbit(1))") == "0.00000e+00\t0.00000e+00\n"
    emu.write("digio.writebit(3, 1) digio.writeprotect = 1 digio.writebit(1, 1) digio.writeport(16383)")
    assert ask(emu, "print(digio.readport(), digio.writeprotect)") == "1.63820e+04\t1.00000e+00\n"
    emu.write("digio.writebit(15, 1)")
    assert errors(emu)[0][0] == -222
    emu.write("reset()")
    assert ask(emu, "print(digio.readport(), digio.writeprotect)") == "1.63830e+04\t0.00000e+00\n"


def test_digio_trigger_lines(emu: PlainTsp) -> None:
    assert ask(emu, "print(digio.trigger[1].mode, digio.TRIG_FALLING, digio.TRIG_RISINGM, "
                    "digio.trigger[14].pulsewidth, digio.trigger[15])") == (
        "0.00000e+00\t1.00000e+00\t8.00000e+00\t1.00000e-05\tnil\n"
    )
    emu.write("digio.trigger[2].mode = digio.TRIG_FALLING digio.trigger[2].pulsewidth = 1e-3 "
              "digio.trigger[2].stimulus = digio.trigger[1].EVENT_ID digio.trigger[2].assert()")
    assert ask(emu, "print(digio.trigger[2].mode, digio.trigger[2].pulsewidth, "
                    "digio.trigger[2].stimulus == digio.trigger[1].EVENT_ID, digio.trigger[2].overrun)") == (
        "1.00000e+00\t1.00000e-03\ttrue\tfalse\n"
    )
    emu.write("timer.reset()")
    assert ask(emu, "print(digio.trigger[2].wait(2.5), timer.measure.t())") == "false\t2.50000e+00\n"
    emu.write("digio.trigger[2].mode = 9")
    assert errors(emu)[0][0] == -222
    emu.write("digio.trigger[2].reset()")
    assert ask(emu, "print(digio.trigger[2].mode)") == "0.00000e+00\n"


# ------------------------------------------------------------------ userstring, time
def test_userstrings_survive_reset_and_power_cycle(emu: PlainTsp) -> None:
    emu.write("userstring.add('assetnumber', '236') userstring.add('location', 'rack 3')")
    emu.write("reset()")
    emu.power_cycle()
    assert ask(emu, "for name in userstring.catalog() do print(name, userstring.get(name)) end") == (
        "assetnumber\t236\nlocation\track 3\n"
    )
    emu.write("userstring.delete('location')")
    assert ask(emu, "print(userstring.get('location'))") == "nil\n"


def test_delay_and_timer_in_bench_time(emu: PlainTsp) -> None:
    t0 = time.perf_counter()
    assert ask(emu, "timer.reset() delay(30) digio.trigger[1].wait(0.25) print(timer.measure.t())") == (
        "3.02500e+01\n"
    )
    assert time.perf_counter() - t0 < 1.0
    assert ask(emu, "print(localnode.linefreq)") == "6.00000e+01\n"
