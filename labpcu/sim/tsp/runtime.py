"""The TSP engine: real Lua in a sandbox, shared by every emulated Keithley TSP
instrument.

Why real Lua: drivers and protocols send TSP *programs* (functions, loops, scripts,
the program-and-verify loop) that must behave as they do on the instrument. A parser
of a few known messages could not run them.

Dialect. The 2600A/B and 3706A run Lua 5.0; this runtime is lupa's Lua 5.1
(``lupa.lua51``), built with 5.1's 5.0-compatibility switches (the ``arg`` table in
vararg functions, ``math.mod``, ``string.gfind``, ``table.getn``). On top of it:
``table.getn/setn/insert/remove`` with 5.0's ``n`` field and ``setn`` sizes, 5.0's
``gcinfo()`` and ``collectgarbage([limit])``, ``for k, v in t do`` over a table (a
source pass, :mod:`labpcu.sim.tsp.dialect`), and ``0x`` number literals refused as 5.0
refuses them. What 5.3/5.4 added (``//``, ``&``, ``|``, ``~``, ``<<``, ``>>``,
``goto``, ``<close>``, integers) is a syntax error (-285), as on the instrument. 5.1's
own additions (``#``, ``%``, ``...`` in expressions, ``select``) are accepted.

How a message is handled (:meth:`TspEmulator.handle`):

1. a message with embedded CR/LF is split into lines, each one command message;
2. while a script is being loaded (``loadscript``/``loadandrunscript`` …
   ``endscript``), lines are collected, not executed;
3. IEEE-488.2 common commands (``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``, ``*TRG`` …) are
   answered before Lua sees them, as the instrument does;
4. anything else is one Lua chunk, compiled once (an LRU cache keyed by the text makes
   repeated set commands cheap) and run in the sandbox environment. Globals persist;
5. after each command message: with ``localnode.showerrors = 1`` the queued errors are
   sent (as ``print(errorqueue.next())`` would print them) and the queue empties; with
   ``localnode.prompts = 1`` a prompt follows: ``TSP>``, or ``TSP?`` if errors are
   still queued, or ``>>>>`` while a script is being loaded; a common command prompts
   only if ``localnode.prompts4882`` is also 1 (its default). Empty lines get none.

Errors never raise out of :meth:`handle`: a syntax error queues ``-285 TSP Syntax error
at line N: …``, a runtime error ``-286 TSP Runtime error at line N: …`` (which aborts
the chunk), and a bad parameter (``-222 Parameter data out of range; …``) leaves the
old value and lets the chunk continue, as the 2600 manual describes ("most errors do
not abort a running script").

Sandbox. User code sees only its environment table (set with ``setfenv`` on every
compiled chunk): the instrument's objects, the safe standard library (``string``
without ``dump``, ``math``, ``table``, ``pairs``, ``ipairs``, ``next``, ``select``,
``type``, ``tostring``, ``tonumber``, ``error``, ``assert``, ``pcall``, ``xpcall``,
``unpack``, ``setmetatable``, ``getmetatable``, ``rawget``, ``rawset``, ``rawequal``,
``gcinfo``, ``collectgarbage``) and TSP's built-ins. ``os``, ``io``, ``debug``,
``load``, ``loadstring``, ``dofile``, ``require``, ``module``, ``package``,
``getfenv``/``setfenv``, ``newproxy``, ``python``, ``coroutine`` … do not exist there;
precompiled (binary) chunks are refused by every compile path. Instrument objects are
Lua tables (proxies) whose locked metatables call into Python (``#obj`` reaches the
object through the dialect pass, as Lua 5.1 ignores ``__len`` on tables); user code
never holds a Python object, and the runtime's attribute handlers refuse every
attribute of one anyway.

Limits. Each message has an instruction budget (default 10 million Lua VM
instructions, plus Python-side work charged through :meth:`TspEmulator.charge`,
including each garbage collection a script asks for), enforced by a count hook
installed from the trusted side. Once the budget is spent the hook fires on every user
instruction and the sandbox's ``pcall``/``xpcall`` re-raise the budget error, so
``while true do pcall(function() while true do end end) end`` ends too. Memory is
capped by lupa's ``max_memory`` (supported by ``lupa.lua51`` as by 5.4); if user
globals still fill most of it after the error, the emulator drops them so that the
session can go on (a real instrument would need a power cycle). Lua pattern functions
refuse subject/pattern combinations whose backtracking could run for minutes inside
one C call (heuristic).

Numbers. ``print`` and ``printnumber``/``printbuffer`` (ASCII) write numbers with
``format.asciiprecision`` significant digits as ``%.{p-1}e``, lower-case ``e``
(default ``2.50000e+00``), integers included: the 2600B manual's ``bit.getfield``
example prints ``6.00000e+00``, and ``format.asciiprecision`` "specifies the precision
… for numeric data printed with the print(), printbuffer(), and printnumber()
functions", so ``print(10/2)`` gives ``5.00000e+00``, not ``5``. ``tostring`` uses
``%.14g`` like TSP's Lua (``tostring(10/2)`` is ``5``). ``printnumber`` and
``printbuffer`` follow ``format.data``: REAL32/REAL64 replies are ``#0`` + packed
bytes (``format.byteorder``, default SWAPPED = little-endian) + newline; ``print``
is always ASCII.

Generic tables (:mod:`labpcu.sim.tsp.stdlib`, through its ``StdlibEmulator``): ``bit``, ``display``, ``digio``,
``userstring`` for every instrument; an instrument's own ``display`` table is wrapped
to keep its constants and fields and gain the text state.

Time. Nothing here sleeps: ``delay(s)`` advances the bench's virtual clock.
"""

from __future__ import annotations

import re
import struct
import traceback
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import lupa.lua51 as lupa

from labpcu.clock import VirtualClock
from labpcu.sim.emulator import Emulator
from labpcu.sim.tsp.dialect import FORIN_NAME, LEN_NAME, DialectError, transform

if TYPE_CHECKING:
    from labpcu.sim.bench import SimBench

__all__ = [
    "BUDGET_MESSAGE",
    "TspEmulator",
    "TspError",
    "TspObject",
    "TspParameterError",
    "TspPrintable",
    "TspTable",
    "as_flag",
    "as_int",
    "as_number",
    "as_text",
    "lua_sequence",
]

BUDGET_MESSAGE = "emulator instruction budget exhausted"
DEFAULT_INSTRUCTION_BUDGET = 10_000_000
DEFAULT_MAX_MEMORY = 32 * 1024 * 1024
CHUNK_CACHE_SIZE = 512
#: instruction-equivalents charged for each call from Lua into Python
CALLBACK_COST = 20
#: instruction-equivalents charged for a full collection (plus 1 per KB of heap)
GC_COST = 10_000
#: what the instrument sends after a command message when ``localnode.prompts`` is 1
PROMPT_READY, PROMPT_ERRORS, PROMPT_CONTINUE = "TSP>", "TSP?", ">>>>"

OVERFLOW_READING = 9.91e37
_NEWLINES = re.compile(r"\r\n|\r|\n")
_POSITION = re.compile(r"^([^\n:]*):(\d+): (.*)$", re.S)
_SCRIPT_START = re.compile(r"^(loadscript|loadandrunscript)(?:\s+([A-Za-z_][A-Za-z0-9_]*))?\s*$")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- errors
class TspError(Exception):
    """Raise from Python code that Lua reached: becomes a Lua runtime error at the
    user's line (queued as -286, aborts the chunk unless caught by ``pcall``)."""


class TspParameterError(Exception):
    """Raise to queue an instrument error without aborting the chunk (the setting
    keeps its old value), as the instrument does for bad parameter values."""

    def __init__(self, message: str = "Parameter data out of range", code: int = -222) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _latin1(text: str) -> str:
    """Text that survives the trip into Lua (strings cross as latin-1 bytes)."""
    return text.encode("latin-1", "replace").decode("latin-1")


def _typename(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, TspObject):
        return "table"
    t = lupa.lua_type(value)
    return t or "userdata"


def as_number(value: Any, what: str) -> float:
    """A Lua number as a float; anything else is a runtime error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TspError(f"{what}: number expected, got {_typename(value)}")
    return float(value)


def as_int(value: Any, what: str) -> int:
    """A Lua number that must be integral (counts, indexes, enumerations)."""
    x = as_number(value, what)
    if x != x or x in (float("inf"), float("-inf")) or x != int(x):
        raise TspError(f"{what}: integer expected, got {x!r}")
    return int(x)


def as_flag(value: Any, what: str) -> bool:
    """TSP flags accept 0/1 (and the ENABLE/DISABLE constants) or booleans."""
    if isinstance(value, bool):
        return value
    return as_number(value, what) != 0.0


def as_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TspError(f"{what}: string expected, got {_typename(value)}")
    return value


#: longest list a TSP function accepts here (a sweep list cannot outgrow a buffer)
MAX_SEQUENCE = 200_000


def lua_sequence(value: Any, what: str) -> list[float]:
    """The numbers of a Lua sequence ``{v1, v2, ...}`` (1-based, up to the first nil)."""
    if lupa.lua_type(value) != "table":
        raise TspError(f"{what}: table expected, got {_typename(value)}")
    out: list[float] = []
    k = 1
    while True:
        v = value[k]
        if v is None:
            return out
        if k > MAX_SEQUENCE:
            raise TspError(f"{what}: more than {MAX_SEQUENCE} values")
        out.append(as_number(v, f"{what}[{k}]"))
        k += 1


def _member(path: str, key: Any) -> str:
    return f"{path}.{key}" if isinstance(key, str) and _IDENT.match(key) else f"{path}[{key!r}]"


def check_range(x: float, lo: float, hi: float, what: str) -> float:
    """``x`` if ``lo <= x <= hi`` else the instrument's -222 (NaN included)."""
    if not lo <= x <= hi:
        raise TspParameterError(f"Parameter data out of range; {what} {x:g}")
    return x


# --------------------------------------------------------------------- Lua objects
class TspObject:
    """A Python object that Lua code sees as an instrument table (``smua.source``).

    Subclasses declare, by name, what Lua may touch; nothing else is reachable:

    * ``lua_static``: fixed members resolved once into the Lua table (sub-objects,
      constants such as ``OUTPUT_ON``): a member lookup costs no Python call;
    * ``lua_call``: methods Lua may call (``smua.reset()``); they receive the Lua
      arguments (numbers, strings, booleans, ``None`` for nil, other TspObjects,
      lupa tables) and may return a value or a tuple (several Lua results);
    * ``lua_get``: attributes read live on every access (Python properties);
    * ``lua_set``: attributes Lua may assign, through ``setattr`` so that a property
      setter validates (raise :class:`TspParameterError` or :class:`TspError`).

    Non-string keys (``buf.readings[3]``) go to :meth:`lua_item`; ``#obj`` calls
    :meth:`lua_length` when a subclass overrides it. Unknown names read as ``nil`` and
    refuse assignment (that catches typos in drivers). Names must be public
    identifiers: the class refuses ``_private`` names at definition time.
    """

    lua_static: ClassVar[frozenset[str]] = frozenset()
    lua_call: ClassVar[frozenset[str]] = frozenset()
    lua_get: ClassVar[frozenset[str]] = frozenset()
    lua_set: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for group in ("lua_static", "lua_call", "lua_get", "lua_set"):
            names = frozenset(getattr(cls, group))
            setattr(cls, group, names)
            bad = [n for n in names if not _IDENT.match(n)]
            if bad:
                raise TypeError(f"{cls.__name__}.{group}: not public identifiers: {bad}")

    def __init__(self, path: str) -> None:
        #: the Lua name of this object, for error messages (``smua.source``)
        self.lua_path = path
        self._lua_proxy: Any = None
        self._lua_proxy_rt: Any = None

    def lua_statics(self) -> dict[Any, Any]:
        """Fixed members (``lua_static`` and ``lua_call``) as name → value."""
        out: dict[Any, Any] = {n: getattr(self, n) for n in self.lua_static}
        out.update({n: getattr(self, n) for n in self.lua_call})
        return out

    def lua_getattr(self, key: Any) -> Any:
        if isinstance(key, str):
            return getattr(self, key) if key in self.lua_get else None
        return self.lua_item(key)

    def lua_setattr(self, key: Any, value: Any) -> None:
        if isinstance(key, str) and key in self.lua_set:
            setattr(self, key, value)
            return
        if isinstance(key, str) and (key in self.lua_get or key in self.lua_static or key in self.lua_call):
            raise TspError(f"{self.lua_path}.{key} is read-only")
        raise TspError(f"cannot assign {_member(self.lua_path, key)}: no such attribute")

    def lua_item(self, index: Any) -> Any:
        """Value for a non-string key (``obj[1]``); nil by default."""
        return None

    def lua_length(self) -> int:
        """``#obj``; only wired into Lua when a subclass overrides it."""
        raise TspError(f"attempt to get length of {self.lua_path}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.lua_path}>"


class TspTable(TspObject):
    """A table assembled at run time, for simple namespaces (``display``, ``status``,
    ``localnode``): constants and sub-objects (static), functions, read/write fields
    with optional validators, and read-only fields computed on access."""

    def __init__(
        self,
        path: str,
        *,
        constants: Mapping[str, Any] | None = None,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        fields: Mapping[str, Any] | None = None,
        validators: Mapping[str, Callable[[Any], Any]] | None = None,
        readonly: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        super().__init__(path)
        self.constants = dict(constants or {})
        self.functions = dict(functions or {})
        self.fields = dict(fields or {})
        self.defaults = dict(self.fields)
        self.validators = dict(validators or {})
        self.readonly = dict(readonly or {})
        for name in [*self.constants, *self.functions, *self.fields, *self.readonly]:
            if not isinstance(name, str) or not _IDENT.match(name):
                raise ValueError(f"{path}: {name!r} is not a public identifier")

    def lua_statics(self) -> dict[Any, Any]:
        return {**self.constants, **self.functions}

    def lua_getattr(self, key: Any) -> Any:
        if key in self.fields:
            return self.fields[key]
        getter = self.readonly.get(key)
        return getter() if getter is not None else None

    def lua_setattr(self, key: Any, value: Any) -> None:
        if key in self.fields:
            check = self.validators.get(key)
            self.fields[key] = check(value) if check is not None else value
            return
        if key in self.readonly or key in self.constants or key in self.functions:
            raise TspError(f"{self.lua_path}.{key} is read-only")
        raise TspError(f"cannot assign {_member(self.lua_path, key)}: no such attribute")

    def reset_fields(self) -> None:
        self.fields = dict(self.defaults)


@runtime_checkable
class TspPrintable(Protocol):
    """What ``printbuffer`` accepts: a reading buffer or one of its columns."""

    def print_values(self, start: int, stop: int) -> list[float]:
        """Values ``start``..``stop`` (1-based, inclusive); raise TspError if absent."""
        ...


# ------------------------------------------------------------------ trusted Lua side
# Runs once per runtime with full Lua; everything user code can reach is built here.
_BOOTSTRAP = r"""
local emit, BUDGET, seed, transform, FORIN, LEN = ...
local G = _G
local type, select, error, pcall, xpcall = type, select, error, pcall, xpcall
local setmetatable, getmetatable, rawget, rawset, pairs, ipairs, tostring, next =
      setmetatable, getmetatable, rawget, rawset, pairs, ipairs, tostring, next
local loadstring, setfenv, newproxy, tonumber = loadstring, setfenv, newproxy, tonumber
local sethook, getinfo = debug.sethook, debug.getinfo
local ssub, sformat, smatch, sgsub, sfind, sbyte =
      string.sub, string.format, string.match, string.gsub, string.find, string.byte
local tconcat = table.concat
local mlog, mfloor = math.log, math.floor

local function copy(t, skip)
  local c = {}
  for k, v in pairs(t) do if not (skip and skip[k]) then c[k] = v end end
  return c
end

local env = {}
for _, name in ipairs({"assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget",
                       "rawset", "select", "tonumber", "type", "unpack"}) do
  env[name] = G[name]
end
env.math = copy(math)      -- Lua 5.1 keeps 5.0's math.mod and math.pow
env._G = env
math.randomseed(seed)

-- Lua 5.0's table library: getn/setn with the n field and setn's size, insert and
-- remove that honour them (5.1 dropped setn and made getn the # operator).
local sizes = setmetatable({}, {__mode = "k"})
local function checktable(t, fname)
  if type(t) ~= "table" then
    error(sformat("bad argument #1 to '%s' (table expected, got %s)", fname, type(t)), 3)
  end
end
local function getn(t)
  checktable(t, "getn")
  local n = rawget(t, "n")
  if type(n) == "number" then return n end
  n = sizes[t]
  if n then return n end
  n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  return n
end
local function setn(t, n)
  checktable(t, "setn")
  n = tonumber(n)
  if not n then error("bad argument #2 to 'setn' (number expected)", 2) end
  if type(rawget(t, "n")) == "number" then rawset(t, "n", n) else sizes[t] = n end
end
local stable = copy(table)
stable.getn, stable.setn = getn, setn
stable.insert = function(t, ...)
  checktable(t, "insert")
  local n = getn(t) + 1
  local pos, v = n, ...
  if select("#", ...) >= 2 then pos, v = ... end
  setn(t, n)
  for i = n, pos + 1, -1 do t[i] = t[i - 1] end
  t[pos] = v
end
stable.remove = function(t, pos)
  checktable(t, "remove")
  local n = getn(t)
  if n <= 0 then return nil end
  pos = pos or n
  local v = t[pos]
  for i = pos, n - 1 do t[i] = t[i + 1] end
  t[n] = nil
  setn(t, n - 1)
  return v
end
env.table = stable

-- for k, v in t do (Lua 5.0): the dialect pass wraps every generic for's expression
-- list in this (labpcu.sim.tsp.dialect)
env[FORIN] = function(f, s, c)
  if type(f) == "table" then return next, f, nil end
  return f, s, c
end

-- string library without dump; strings' own metatable points at the sandbox copy and
-- is locked, so ("").dump and getmetatable("").__index lead nowhere.
local sstring = copy(string, {dump = true})
local function pattern_guard(fname, s, pat, extra)
  if type(s) == "string" and type(pat) == "string" and #s > 64 then
    local _, q = sgsub(pat, "[%*%+%-%?]", "")
    if q > 0 and (q + extra) * mlog(#s) > mlog(1e9) then
      error(sformat("%s: pattern too complex for a %d-character subject (emulator limit)", fname, #s), 3)
    end
  end
end
for _, fname in ipairs({"find", "match"}) do
  local f = string[fname]
  sstring[fname] = function(s, pat, ...) pattern_guard(fname, s, pat, 0) return f(s, pat, ...) end
end
for _, fname in ipairs({"gmatch", "gfind", "gsub"}) do
  local f = string[fname]
  sstring[fname] = function(s, pat, ...) pattern_guard(fname, s, pat, 1) return f(s, pat, ...) end
end
local string_mt = getmetatable("")
string_mt.__index = sstring
string_mt.__metatable = false
env.string = sstring

local function sandbox_tostring(v)
  if type(v) == "number" then return sformat("%.14g", v) end
  return tostring(v)
end
env.tostring = sandbox_tostring
env.getmetatable = function(o)
  if type(o) ~= "table" then return nil end
  return getmetatable(o)
end
env.setmetatable = function(t, mt)
  if type(t) ~= "table" then error("bad argument #1 to 'setmetatable' (table expected)", 2) end
  if mt ~= nil and type(mt) ~= "table" then
    error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
  end
  if mt ~= nil and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not available", 2)
  end
  local current = getmetatable(t)
  if current ~= nil and (type(current) ~= "table" or rawget(current, "__metatable") ~= nil) then
    error("cannot change a protected metatable", 2)
  end
  return setmetatable(t, mt)
end

-- instruction budget -------------------------------------------------------------
local exhausted, budget_line = false, -1
local hook
hook = function()
  if not exhausted then
    exhausted = true
    sethook(hook, "", 1)
  end
  local info = getinfo(2, "Sl")
  if info and ssub(info.source, 1, 1) == "=" then
    if budget_line < 0 then budget_line = info.currentline end
    error(BUDGET, 0)
  end
end
local function passthrough(ok, ...)
  if exhausted then error(BUDGET, 0) end
  return ok, ...
end
env.pcall = function(f, ...) return passthrough(pcall(f, ...)) end
-- A message handler runs before the stack unwinds, and when the error came from the
-- hook it runs with hooks disabled: never call user code from it once exhausted.
env.xpcall = function(f, h)
  local function guarded(m)
    if exhausted then return m end
    return h(m)
  end
  return passthrough(xpcall(f, guarded))
end

local function user_position(first)
  for level = first, 250 do
    local info = getinfo(level, "Sl")
    if not info then return nil end
    if ssub(info.source, 1, 1) == "=" and info.source ~= "=[C]" and info.currentline > 0 then
      return info.short_src, info.currentline
    end
  end
end
-- Python-side work ran out (see TspEmulator.charge): same state as a spent hook count.
local function exhaust()
  if budget_line < 0 then
    local _, line = user_position(2)
    budget_line = line or -1
  end
  if not exhausted then
    exhausted = true
    sethook(hook, "", 1)
  end
end
local function handler(msg)
  if type(msg) ~= "string" then msg = "(error object is a " .. type(msg) .. " value)" end
  local chunk, _, rest = smatch(msg, "^([^\n:]*):(%d+): (.*)$")
  if chunk and chunk ~= "tsp-runtime" then return msg end
  if chunk then msg = rest end
  local src, line = user_position(2)
  if src then return src .. ":" .. line .. ": " .. msg end
  return msg
end
local function run(fn, budget)
  exhausted, budget_line = false, -1
  if budget > 0 then sethook(hook, "", budget) end
  local ok, msg = xpcall(fn, handler)
  sethook()
  if exhausted then return false, BUDGET, budget_line end
  if ok then return true, nil, -1 end
  return false, msg, -1
end

-- print ---------------------------------------------------------------------------
local numfmt = "%.5e"
local function set_numfmt(f) numfmt = f end
env.print = function(...)
  local n = select("#", ...)
  local parts = {...}
  for i = 1, n do
    local v = parts[i]
    local t = type(v)
    if t == "number" then parts[i] = sformat(numfmt, v)
    elseif t ~= "string" then parts[i] = sandbox_tostring(v) end
  end
  emit(tconcat(parts, "\t", 1, n))
end

-- proxies for Python objects -------------------------------------------------------
local registry = setmetatable({}, {__mode = "k"})
local function finish(ok, ...)
  if ok then return ... end
  error((...), 2)
end
local function make_function(call, fn)
  return function(...) return finish(call(fn, ...)) end
end
-- A proxy is an empty table with a locked metatable (TSP objects are tables on the
-- instrument). Lua 5.1 ignores __len on tables, so the dialect pass routes every #x
-- through _tsp_len, which asks the object for its length.
local lengths = setmetatable({}, {__mode = "k"})
local function make_proxy(obj, statics, get, set, len)
  setmetatable(statics, {__index = function(_, k) return finish(get(obj, k)) end})
  local mt = {__metatable = false, __index = statics}
  mt.__newindex = function(_, k, v) return finish(set(obj, k, v)) end
  local proxy = setmetatable({}, mt)
  if len then lengths[proxy] = function() return finish(len(obj)) end end
  registry[proxy] = obj
  return proxy
end
env[LEN] = function(v)
  local len = lengths[v]
  if len then return len() end
  return #v
end
local function lookup(t) return registry[t] end

-- scripts -------------------------------------------------------------------------
-- Text only (a precompiled chunk starts with ESC); the dialect pass first.
local function compile(source, chunkname)
  if type(source) ~= "string" then return nil, chunkname .. ": source must be a string" end
  if sbyte(source, 1) == 27 then
    return nil, chunkname .. ":1: precompiled (binary) chunks are not accepted"
  end
  local text, err = transform(source, chunkname)
  if not text then return nil, err end
  local fn, err2 = loadstring(text, "=" .. chunkname)
  if not fn then return nil, err2 end
  setfenv(fn, env)
  return fn, nil
end
local user_scripts = {}
local function new_script(name, source, fn)
  local s = {name = name or "", source = source, autorun = "no"}
  s.run = function() return fn() end
  s.save = function() end
  s.list = function()
    for line in (source .. "\n"):gmatch("(.-)\r?\n") do emit(line) end
  end
  return setmetatable(s, {__call = function(_, ...) return fn(...) end})
end
local function compile_script(name, source)
  local fn, err = compile(source, name or "script")
  if not fn then return nil, err end
  return new_script(name, source, fn), nil
end
local script = {user = {scripts = user_scripts}, factory = {scripts = {}}}
script.anonymous = new_script(nil, "", function() end)
-- rawset: user code may have put metamethods on these tables, and trusted code
-- called from Python runs without the budget hook
local function register_script(name, s)
  if name == nil or name == "" then
    rawset(script, "anonymous", s)
  else
    rawset(user_scripts, name, s)
    rawset(env, name, s)
  end
end
script.new = function(source, name)
  if type(source) ~= "string" then error("bad argument #1 to 'new' (string expected)", 2) end
  if name ~= nil and (type(name) ~= "string" or not sfind(name, "^[%a_][%w_]*$")) then
    error("bad argument #2 to 'new' (script name expected)", 2)
  end
  local s, err = compile_script(name, source)
  if not s then error(err, 2) end
  if name ~= nil and name ~= "" then rawset(user_scripts, name, s); rawset(env, name, s) end
  return s
end
script.delete = function(name) user_scripts[name] = nil end
script.run = function() return script.anonymous.run() end
env.script = script

return {
  env = env, run = run, compile = compile, compile_script = compile_script,
  register_script = register_script, make_function = make_function,
  make_proxy = make_proxy, lookup = lookup, set_numfmt = set_numfmt,
  exhaust = exhaust, sethook = sethook,
}
"""

# Instrument-independent TSP built-ins written in TSP itself (run in the sandbox).
_BASE_PRELUDE = r"""
function makegetter(t, name) return function() return t[name] end end
function makesetter(t, name) return function(v) t[name] = v end end
"""


def _transform(source: str, chunkname: str) -> tuple[str | None, str | None]:
    """The dialect pass (see :mod:`labpcu.sim.tsp.dialect`), as Lua's compile sees it."""
    try:
        return transform(source), None
    except DialectError as exc:
        return None, f"{chunkname}:{exc.line}: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - never let a Python error escape into Lua
        return None, f"{chunkname}:1: emulator dialect pass failed: {type(exc).__name__}"


def _deny_attribute(obj: Any, name: Any, value: Any = None) -> Any:
    # Defense in depth: user code never holds a Python object, and if one ever
    # leaked, none of its attributes (``__class__``, ``_x`` …) would be reachable.
    raise AttributeError("Python attributes are not accessible from TSP")


class _Runtime:
    """One Lua state with its trusted API (see ``_BOOTSTRAP``)."""

    def __init__(self, max_memory: int, emit: Callable[[str], None], seed: int) -> None:
        self.lua = lupa.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            max_memory=max_memory,
            encoding="latin-1",
            attribute_handlers=(_deny_attribute, _deny_attribute),
        )
        loader = self.lua.eval("loadstring")
        boot = loader(_BOOTSTRAP, "@tsp-runtime")
        api = boot(emit, BUDGET_MESSAGE, seed, _transform, FORIN_NAME, LEN_NAME)
        self.env = api["env"]
        self.run = api["run"]
        self.compile = api["compile"]
        self.compile_script = api["compile_script"]
        self.register_script = api["register_script"]
        self.make_function = api["make_function"]
        self.make_proxy = api["make_proxy"]
        self.lookup = api["lookup"]
        self.set_numfmt = api["set_numfmt"]
        self.exhaust = api["exhaust"]
        self.sethook = api["sethook"]
        #: writes into the sandbox from Python must not trigger user metamethods
        self.rawset = self.lua.eval("rawset")
        self.chunks: OrderedDict[str, Any] = OrderedDict()
        self.base_names: set[Any] = set()


class _Collecting:
    """A script being loaded line by line."""

    def __init__(self, name: str | None, run: bool) -> None:
        self.name = name
        self.run = run
        self.lines: list[str] = []


# ------------------------------------------------------------- common TSP objects
class _Format(TspObject):
    lua_static = frozenset(
        {"ASCII", "SREAL", "REAL", "REAL32", "DREAL", "REAL64",
         "NORMAL", "BIGENDIAN", "NETWORK", "SWAPPED", "LITTLEENDIAN"}
    )
    lua_get = frozenset({"data", "byteorder", "asciiprecision"})
    lua_set = lua_get
    ASCII, SREAL, REAL32, REAL, DREAL, REAL64 = 1, 2, 2, 3, 3, 3
    NORMAL = BIGENDIAN = NETWORK = 0
    SWAPPED = LITTLEENDIAN = 1

    def __init__(self, emu: TspEmulator) -> None:
        super().__init__("format")
        self._emu = emu
        self.reset()

    def reset(self) -> None:
        self._data, self._byteorder = 1, 1
        self._precision = int(getattr(self._emu, "default_asciiprecision", 6))
        self._emu._precision_changed()

    @property
    def data(self) -> int:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        v = as_int(value, "format.data")
        if v not in (1, 2, 3):
            raise TspParameterError(f"Parameter data out of range; format.data {v}")
        self._data = v

    @property
    def byteorder(self) -> int:
        return self._byteorder

    @byteorder.setter
    def byteorder(self, value: Any) -> None:
        v = as_int(value, "format.byteorder")
        if v not in (0, 1):
            raise TspParameterError(f"Parameter data out of range; format.byteorder {v}")
        self._byteorder = v

    @property
    def asciiprecision(self) -> int:
        return self._precision

    @asciiprecision.setter
    def asciiprecision(self, value: Any) -> None:
        v = as_int(value, "format.asciiprecision")
        if not 1 <= v <= 16:
            raise TspParameterError(f"Parameter data out of range; format.asciiprecision {v}")
        self._precision = v
        self._emu._precision_changed()


class _ErrorQueue(TspObject):
    lua_get = frozenset({"count"})
    lua_call = frozenset({"clear", "next"})

    def __init__(self, emu: TspEmulator) -> None:
        super().__init__("errorqueue")
        self._emu = emu

    @property
    def count(self) -> int:
        return len(self._emu.errors)

    def clear(self) -> None:
        self._emu.errors.clear()

    def next(self) -> tuple[int, str, int, int]:
        e = self._emu.errors.pop()
        if e is None:
            return 0, "Queue Is Empty", 0, 1
        return e.code, e.message, e.severity, 1


class _Timer(TspObject):
    """The global ``timer``: ``timer.reset()``, ``timer.measure.t()`` (virtual s)."""

    lua_static = frozenset({"measure"})
    lua_call = frozenset({"reset"})

    def __init__(self, emu: TspEmulator) -> None:
        super().__init__("timer")
        self._emu = emu
        self._t0 = 0.0
        self.measure = TspTable("timer.measure", functions={"t": self.elapsed})

    def reset(self) -> None:
        self._t0 = self._emu.clock.now()

    def elapsed(self) -> float:
        return self._emu.clock.now() - self._t0


# --------------------------------------------------------------------- the emulator
class TspEmulator(Emulator):
    """Base of every emulated Keithley TSP instrument.

    Subclassing (see :class:`labpcu.sim.tsp.k2600.K2612AEmulator` for a full example):

    * set the class attributes ``model``, ``vendor``, ``firmware``, ``description``,
      ``line_frequency``; override :meth:`identity` if ``*IDN?`` differs in form;
    * build the instrument's objects (:class:`TspObject` subclasses or
      :class:`TspTable`) in ``__init__`` *after* ``super().__init__``;
    * override :meth:`lua_globals` to return ``{**super().lua_globals(), "smua": ...}``:
      values may be TspObjects (become proxy tables), Python callables (become Lua
      functions: arguments arrive as Python values, a returned tuple gives several Lua
      results, raise :class:`TspError`/:class:`TspParameterError` for instrument
      errors), numbers, strings or booleans. It is called once, when the Lua state is
      first needed (first message), so the objects must exist by then;
    * put TSP-level helpers (factory scripts, …) in the class attribute
      ``lua_prelude``: Lua source run in the sandbox after the globals are installed;
    * override :meth:`reset` (call ``super().reset()``) to restore power-on settings;
    * call :meth:`charge` for Python work that Lua cannot count (each measurement), so
      a runaway loop stays bounded; :meth:`push_error` queues instrument errors;
      advance time only with ``self.clock.advance`` (virtual; never sleep).
    """

    model = "TSP"
    vendor = "Keithley Instruments Inc."
    firmware = "1.0.0"
    description = "Keithley TSP instrument (emulated)"
    line_frequency = 60.0
    #: ``format.asciiprecision`` at power-on and reset (6 on the 2600A/B)
    default_asciiprecision: ClassVar[int] = 6
    #: Lua source run in the sandbox once, after the globals are installed
    lua_prelude: ClassVar[str] = ""

    def __init__(
        self,
        bench: SimBench | None = None,
        name: str | None = None,
        *,
        instruction_budget: int = DEFAULT_INSTRUCTION_BUDGET,
        max_memory: int = DEFAULT_MAX_MEMORY,
        serial: str | None = None,
    ) -> None:
        super().__init__(bench, name)
        #: the virtual clock everything here runs on (the bench's, or a private one)
        self.clock: VirtualClock = bench.clock if bench is not None else VirtualClock()
        self.instruction_budget = int(instruction_budget)
        self.max_memory = int(max_memory)
        self.serial = serial or str(4_000_000 + zlib.crc32(self.name.encode()) % 1_000_000)
        #: unexpected Python exceptions met while running Lua (for debugging tests)
        self.internal_errors: list[str] = []
        self._rt: _Runtime | None = None
        self._collecting: _Collecting | None = None
        self._units = 0
        self._running = False
        self.format = _Format(self)
        #: instrument-generic tables (``bit``, ``display``, ``digio``, ``userstring``):
        #: :class:`labpcu.sim.tsp.stdlib.StdlibEmulator` provides them
        self.stdlib: dict[str, Any] = self.make_generic_tables()
        self._display_wrappers: dict[int, Any] = {}
        self._gc_threshold_kb: float | None = None
        self.errorqueue = _ErrorQueue(self)
        self.timer = _Timer(self)
        self.localnode = TspTable(
            "localnode",
            fields={"linefreq": float(self.line_frequency), "prompts": 0, "prompts4882": 1,
                    "showerrors": 0, "autolinefreq": 0},
            validators={"linefreq": self._check_linefreq, "prompts": self._check_01("prompts"),
                        "showerrors": self._check_01("showerrors"),
                        "prompts4882": self._check_01("prompts4882"),
                        "autolinefreq": self._check_01("autolinefreq")},
            readonly={"model": lambda: self.model, "serialno": lambda: self.serial,
                      "revision": lambda: self.firmware, "description": lambda: self.description},
            functions={"reset": self.reset},
        )

    # ---------------------------------------------------------- subclass hooks
    def identity(self) -> str:
        """The ``*IDN?`` reply."""
        return f"{self.vendor}, Model {self.model}, {self.serial}, {self.firmware}"

    def lua_globals(self) -> dict[str, Any]:
        """Name → value installed in the sandbox (see the class docstring)."""
        return {
            "format": self.format,
            "errorqueue": self.errorqueue,
            "timer": self.timer,
            "localnode": self.localnode,
            "delay": self._delay,
            "reset": self.reset,
            "opc": self._noop,
            "waitcomplete": self._noop,
            "printnumber": self._printnumber,
            "printbuffer": self._printbuffer,
            "gcinfo": self._gcinfo,
            "collectgarbage": self._collectgarbage,
            **self.stdlib,
        }

    def reset(self) -> None:
        """``*RST`` / ``reset()``: power-on settings (user globals and scripts stay)."""
        self.format.reset()
        tables = getattr(self, "stdlib", None)
        if tables is not None:
            tables["display"].reset()
            tables["digio"].reset()
            for wrapper in self._display_wrappers.values():
                wrapper.reset()

    # ------------------------------------------------------- subclass helpers
    @property
    def linefreq(self) -> float:
        return float(self.localnode.fields["linefreq"])

    def push_error(self, code: int, message: str, severity: int = 30) -> None:
        self.errors.push(code, message, severity)

    def charge(self, units: int) -> None:
        """Count Python-side work against the message's instruction budget."""
        if not self._running or self.instruction_budget <= 0:
            return
        self._units += units
        if self._units > self.instruction_budget:
            assert self._rt is not None
            self._rt.exhaust()
            raise TspError(BUDGET_MESSAGE)

    def format_number(self, x: float) -> str:
        """A number as ``print``/``printbuffer`` write it in ASCII."""
        return f"{x:.{self.format.asciiprecision - 1}e}"

    def lua_table(self, values: Iterable[Any]) -> Any:
        """A Lua sequence of ``values`` (to return a table to Lua)."""
        return self.runtime.lua.table_from([self._to_lua(v) for v in values])

    def now(self) -> float:
        return self.clock.now()

    def power_cycle(self) -> None:
        """Forget the Lua state (user globals, scripts) and return to power-on settings."""
        with self._lock:
            self._rt = None
            self._collecting = None
            self.errors.clear()
            self.reset()

    # ----------------------------------------------------------------- runtime
    @property
    def runtime(self) -> _Runtime:
        if self._rt is None:
            self._rt = self._build_runtime()
        return self._rt

    def _build_runtime(self) -> _Runtime:
        seed = zlib.crc32(self.name.encode())
        if self.bench is not None:
            seed = int(self.bench.rng.integers(0, 2**31))
        rt = _Runtime(self.max_memory, self._emit, seed)
        self._rt = rt
        for name, value in self.lua_globals().items():
            if name == "display" and isinstance(value, TspTable):
                value = self._stateful_display(value)
            rt.rawset(rt.env, name, self._to_lua(value))
        self._precision_changed()
        for source, chunk in ((_BASE_PRELUDE, "prelude"), (self.lua_prelude, "factory")):
            if source.strip():
                fn, err = rt.compile(source, chunk)
                if fn is None:
                    raise RuntimeError(f"{type(self).__name__}: prelude does not compile: {err}")
                ok, msg, _ = rt.run(fn, 0)
                if not ok:
                    raise RuntimeError(f"{type(self).__name__}: prelude failed: {msg}")
        rt.base_names = set(rt.env.keys())
        return rt

    def make_generic_tables(self) -> dict[str, Any]:
        """Instrument-generic tables installed beside the instrument's own; none here
        (the runtime stays free of them), :class:`labpcu.sim.tsp.stdlib.StdlibEmulator`
        gives the real instruments theirs."""
        return {}

    def _stateful_display(self, table: TspTable) -> Any:
        """An instrument's own ``display`` table as scripts see it (made stateful by
        :class:`labpcu.sim.tsp.stdlib.StdlibEmulator`)."""
        return table

    def _precision_changed(self) -> None:
        if self._rt is not None:
            self._rt.set_numfmt(f"%.{self.format.asciiprecision - 1}e")

    def _to_lua(self, value: Any) -> Any:
        if isinstance(value, TspObject):
            return self._proxy(value)
        if isinstance(value, str):
            return value if value.isascii() else _latin1(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if lupa.lua_type(value) is not None:
            return value
        if isinstance(value, (list, tuple)):
            return self.runtime.lua.table_from([self._to_lua(v) for v in value])
        if callable(value):
            return self.runtime.make_function(self._lua_call, value)
        raise TypeError(f"cannot expose {type(value).__name__} to Lua")

    def _proxy(self, obj: TspObject) -> Any:
        rt = self.runtime
        if getattr(obj, "_lua_proxy_rt", None) is rt:
            return obj._lua_proxy
        statics = rt.lua.table_from({k: self._to_lua(v) for k, v in obj.lua_statics().items()})
        has_len = type(obj).lua_length is not TspObject.lua_length
        proxy = rt.make_proxy(obj, statics, self._lua_get, self._lua_set, self._lua_len if has_len else None)
        obj._lua_proxy = proxy
        obj._lua_proxy_rt = rt
        return proxy

    def _unwrap(self, value: Any) -> Any:
        if lupa.lua_type(value) in ("table", "userdata"):
            obj = self.runtime.lookup(value)
            if obj is not None:
                return obj
        return value

    # Trampolines: Lua calls these with (ok, ...) expected back; Python exceptions
    # never cross into Lua (their objects would carry Python internals).
    def _failure(self, exc: BaseException, what: str) -> tuple[Any, ...]:
        if isinstance(exc, TspParameterError):
            self.push_error(exc.code, exc.message)
            return (True,)
        if isinstance(exc, TspError):
            return (False, _latin1(str(exc)))
        if isinstance(exc, lupa.LuaError):
            return (False, _latin1(str(exc).split("\n", 1)[0]))
        if isinstance(exc, TypeError) and exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            return (False, f"bad arguments to {what}")
        self.internal_errors.append(traceback.format_exc())
        return (False, _latin1(f"emulator internal error in {what}: {type(exc).__name__}: {exc}"))

    def _tick(self) -> None:
        if self._running and self.instruction_budget > 0:
            self._units += CALLBACK_COST
            if self._units > self.instruction_budget:
                assert self._rt is not None
                self._rt.exhaust()
                raise TspError(BUDGET_MESSAGE)

    def _lua_get(self, obj: TspObject, key: Any) -> tuple[Any, ...]:
        try:
            self._tick()
            return True, self._to_lua(obj.lua_getattr(key))
        except Exception as exc:  # noqa: BLE001 - reported to Lua, see _failure
            return self._failure(exc, f"{obj.lua_path}.{key}")

    def _lua_set(self, obj: TspObject, key: Any, value: Any) -> tuple[Any, ...]:
        try:
            self._tick()
            obj.lua_setattr(key, self._unwrap(value))
            return (True,)
        except Exception as exc:  # noqa: BLE001
            return self._failure(exc, f"{obj.lua_path}.{key}")

    def _lua_len(self, obj: TspObject) -> tuple[Any, ...]:
        try:
            return True, obj.lua_length()
        except Exception as exc:  # noqa: BLE001
            return self._failure(exc, f"#{obj.lua_path}")

    def _lua_call(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
        try:
            self._tick()
            result = fn(*[self._unwrap(a) for a in args])
            if result is None:
                return (True,)
            if isinstance(result, tuple):
                return (True, *[self._to_lua(r) for r in result])
            return True, self._to_lua(result)
        except Exception as exc:  # noqa: BLE001
            owner = getattr(getattr(fn, "__self__", None), "lua_path", None)
            name = getattr(fn, "__name__", "function")
            return self._failure(exc, f"{owner}.{name}" if owner else name)

    def _emit(self, text: str) -> None:
        self.reply(text)

    # ------------------------------------------------------------ built-ins
    @staticmethod
    def _noop(*_args: Any) -> None:
        """``opc()``, ``waitcomplete()``: everything here completes synchronously."""

    def _check_linefreq(self, value: Any) -> float:
        v = as_number(value, "localnode.linefreq")
        if v not in (50.0, 60.0):
            raise TspParameterError(f"Parameter data out of range; localnode.linefreq {v:g}")
        return v

    @staticmethod
    def _check_01(what: str) -> Callable[[Any], int]:
        def check(value: Any) -> int:
            return 1 if as_flag(value, f"localnode.{what}") else 0

        return check

    def _gcinfo(self) -> tuple[int, int]:
        """Lua 5.0's ``gcinfo()``: KB in use and the collection threshold (KB)."""
        kb = self.runtime.lua.get_memory_used() / 1024.0
        threshold = self._gc_threshold_kb if self._gc_threshold_kb is not None else 2 * kb
        return int(kb), int(threshold)

    def _collectgarbage(self, limit: Any = None) -> None:
        """Lua 5.0's ``collectgarbage([limit])``: set the threshold to ``limit`` KB
        (default 0) and collect at once if the heap is above it. A collection is
        charged against the message's budget in proportion to the heap, so a loop of
        collections ends like any runaway loop."""
        if limit is None:
            lim = 0.0
        elif isinstance(limit, str):
            try:
                lim = float(limit)
            except ValueError:
                raise TspError("bad argument #1 to 'collectgarbage' (number expected, got string)") from None
        else:
            lim = as_number(limit, "collectgarbage")
        rt = self.runtime
        kb = rt.lua.get_memory_used() / 1024.0
        if lim < kb:
            self.charge(GC_COST + int(kb))
            rt.lua.gccollect()
            self._gc_threshold_kb = 2 * rt.lua.get_memory_used() / 1024.0
        else:
            self._gc_threshold_kb = lim

    def _delay(self, seconds: Any = None) -> None:
        s = as_number(seconds, "delay")
        check_range(s, 0.0, 100_000.0, "delay")
        self.clock.advance(s)

    def _pack(self, values: list[float]) -> bytes:
        order = "<" if self.format.byteorder == 1 else ">"
        code = "f" if self.format.data == 2 else "d"
        return b"#0" + struct.pack(f"{order}{len(values)}{code}", *values)

    def _send_numbers(self, values: list[float]) -> None:
        if self.format.data == 1:
            p = self.format.asciiprecision - 1
            self.reply(", ".join(f"{v:.{p}e}" for v in values))
        else:
            self.reply(self._pack(values))

    def _printnumber(self, *values: Any) -> None:
        self._send_numbers([as_number(v, "printnumber") for v in values])

    def _printbuffer(self, start: Any = None, stop: Any = None, *buffers: Any) -> None:
        i0, i1 = as_int(start, "printbuffer start"), as_int(stop, "printbuffer end")
        if not buffers:
            raise TspError("printbuffer: buffer expected")
        for b in buffers:
            if not isinstance(b, TspPrintable):
                raise TspError(f"printbuffer: reading buffer expected, got {_typename(b)}")
        if i1 < i0:
            self.reply("")
            return
        if i0 < 1:
            raise TspError(f"printbuffer: index {i0} out of range")
        self.charge((i1 - i0 + 1) * len(buffers))
        columns = [b.print_values(i0, i1) for b in buffers]
        self._send_numbers([v for row in zip(*columns) for v in row])

    # -------------------------------------------------------------- messages
    def handle(self, message: str) -> None:
        if "\n" in message or "\r" in message:
            for line in _NEWLINES.split(message):
                self._handle_line(line)
        else:
            self._handle_line(message)

    def _handle_line(self, line: str) -> None:
        kind = self._dispatch(line)
        if kind is not None:
            self._after_command(kind)

    def _dispatch(self, line: str) -> str | None:
        """Act on one command message; what kind it was, for the prompt: ``"tsp"``,
        ``"488"`` (a common command), ``"more"`` (script loading goes on) or None
        (an empty line: nothing was processed)."""
        if self._collecting is not None:
            if line.strip() == "endscript":
                self._end_script()
                return "tsp"
            self._collecting.lines.append(line)
            return "more"
        text = line.strip()
        if not text:
            return None
        if text[0] == "*":
            self._common_command(text)
            return "488"
        if text[0] == "l" and text.startswith("load"):
            m = _SCRIPT_START.match(text)
            if m:
                self._collecting = _Collecting(m.group(2), m.group(1) == "loadandrunscript")
                return "more"
        if text == "abort":  # aborts a running script; nothing runs between messages here
            return "tsp"
        if text == "endscript":
            self.push_error(-286, "TSP Runtime error: endscript without loadscript")
            return "tsp"
        self.execute(text)
        return "tsp"

    def _after_command(self, kind: str) -> None:
        """What the instrument sends once a command message is processed (2600B
        manual, ``localnode.showerrors`` / ``localnode.prompts``): with showerrors on,
        the queued errors (and the queue is cleared); with prompts on, ``TSP>`` (or
        ``TSP?`` if errors are still queued), ``>>>>`` while a script is being loaded;
        a common command prompts only if ``prompts4882`` is on too."""
        fields = self.localnode.fields
        if fields.get("showerrors") and len(self.errors):
            while True:
                e = self.errors.pop()
                if e is None:
                    break
                fmt = self.format_number
                self.reply(f"{fmt(e.code)}\t{e.message}\t{fmt(e.severity)}\t{fmt(1)}")
        if not fields.get("prompts"):
            return
        if kind == "488" and not fields.get("prompts4882"):
            return
        if kind == "more":
            self.reply(PROMPT_CONTINUE)
        else:
            self.reply(PROMPT_ERRORS if len(self.errors) else PROMPT_READY)

    def _common_command(self, text: str) -> None:
        head, _, _arg = text.partition(" ")
        cmd = head.upper()
        if cmd == "*IDN?":
            self.reply(self.identity())
        elif cmd == "*RST":
            self.reset()
        elif cmd == "*CLS":
            self.errors.clear()
        elif cmd == "*OPC?":
            self.reply("1")
        elif cmd in ("*OPC", "*WAI", "*TRG", "*ESE", "*SRE"):
            pass
        elif cmd in ("*ESR?", "*ESE?", "*SRE?", "*TST?"):
            self.reply("0")
        elif cmd == "*STB?":
            self.reply("4" if len(self.errors) else "0")  # EAV: error available
        else:
            self.push_error(-113, f"Undefined header; {head}")

    def execute(self, text: str, chunkname: str = "tsp") -> None:
        """Compile (cached) and run one chunk in the sandbox; errors go to the queue."""
        rt = self.runtime
        fn = rt.chunks.get(text) if chunkname == "tsp" else None
        if fn is None:
            try:
                fn, err = rt.compile(text, chunkname)
            except lupa.LuaMemoryError:
                self._runtime_error("not enough memory", 1)
                return
            if fn is None:
                self._syntax_error(err)
                return
            if chunkname == "tsp":  # cache only messages: scripts compile once anyway
                rt.chunks[text] = fn
                if len(rt.chunks) > CHUNK_CACHE_SIZE:
                    rt.chunks.popitem(last=False)
        else:
            rt.chunks.move_to_end(text)
        self._run(fn, default_line=1 if "\n" not in text else -1)

    def _run(self, fn: Any, default_line: int = -1) -> None:
        """Run a compiled chunk under the budget; ``default_line`` is reported when an
        error carries no position (a one-line message is always line 1)."""
        rt = self.runtime
        self._units = 0
        self._running = True
        try:
            ok, msg, line = rt.run(fn, self.instruction_budget)
        except lupa.LuaMemoryError:
            ok, msg, line = False, "not enough memory", -1
        except lupa.LuaError as exc:  # the trusted runner itself failed
            ok, msg, line = False, str(exc).split("\n", 1)[0], -1
        finally:
            self._running = False
            rt.sethook()
        if not ok:
            self._runtime_error(msg, line if line is not None and line > 0 else default_line)

    def _syntax_error(self, err: Any) -> None:
        m = _POSITION.match(str(err))
        if m:
            self.push_error(-285, f"TSP Syntax error at line {m.group(2)}: {m.group(3)}")
        else:
            self.push_error(-285, f"TSP Syntax error: {err}")

    def _runtime_error(self, msg: Any, line: int) -> None:
        text = str(msg)
        if text == BUDGET_MESSAGE:
            text = f"{BUDGET_MESSAGE} ({self.instruction_budget} instructions per message)"
        m = _POSITION.match(text)
        if m:
            line, text = int(m.group(2)), m.group(3)
        where = f" at line {line}" if line is not None and line > 0 else ""
        self.push_error(-286, f"TSP Runtime error{where}: {text}")
        if "not enough memory" in text:
            self._recover_memory()

    def _recover_memory(self) -> None:
        """After a memory error, drop user globals if they still hold most of the heap."""
        rt = self.runtime
        rt.chunks.clear()
        rt.lua.gccollect()
        if rt.lua.get_memory_used() < 0.5 * self.max_memory:
            return
        dropped = [k for k in list(rt.env.keys()) if k not in rt.base_names]
        for k in dropped:
            rt.rawset(rt.env, k, None)
        rt.lua.gccollect()
        names = ", ".join(str(k) for k in dropped[:8]) + (" ..." if len(dropped) > 8 else "")
        self.push_error(-300, f"Device-specific error; out of memory, user globals deleted: {names}")

    def _end_script(self) -> None:
        coll, self._collecting = self._collecting, None
        assert coll is not None
        source = "\n".join(coll.lines)
        rt = self.runtime
        try:
            obj, err = rt.compile_script(coll.name, source)
        except lupa.LuaMemoryError:
            self._runtime_error("not enough memory", -1)
            return
        if obj is None:
            self._syntax_error(err)
            return
        rt.register_script(coll.name, obj)
        if coll.run:
            self._run(obj["run"])
