"""Instrument-generic TSP tables every emulated Keithley TSP instrument gets.

:class:`~labpcu.sim.tsp.runtime.TspEmulator` installs these for every subclass
(2600A/B, 3706A) without the subclass doing anything:

* ``bit.*`` (2600B manual, "bit"): ``bitand bitor bitxor clear get getfield set
  setfield test toggle``. Arguments are truncated to integers and taken modulo 2^32;
  bit indexes are 1 (LSB) … 32; a field is ``width`` bits whose LSB is at ``index``.
  ``bit.get`` returns the bit's weight (``bit.get(10, 4)`` → 8), ``bit.test`` a boolean.
  An index or width outside 1..32 is a runtime error.
* ``display.*`` (:class:`Display`): the front panel's two text rows (20 and 32
  characters) as state: ``clear()``, ``setcursor(row, col[, style])``,
  ``getcursor()``, ``settext(text)`` with the ``$N $R $B $D $F $$`` codes,
  ``gettext([embellished[, row[, col1[, col2]]]])``, ``screen``, ``locallockout``,
  ``getlastkey()`` (always 0: nobody presses keys), ``sendkey(k)`` (recorded as the
  last key). An instrument that builds its own ``display`` table (the 2600 emulator
  does, for ``display.smua.measure.func`` and the SMU constants) keeps its constants,
  sub-tables and fields: the runtime wraps it in a :class:`Display` (see
  :meth:`Display.adopt`), so text written by a script reads back either way.
* ``digio.*`` (:class:`DigIo`): 14 lines; ``readbit(n)``, ``writebit(n, v)``,
  ``readport()``, ``writeport(v)``, ``writeprotect``; nothing external drives the
  lines, so a line reads what was last written to it (power-on: all high, 0x3FFF,
  the lines have pull-ups). Write-protected lines keep their state.
  ``digio.trigger[N]`` (N = 1..14): ``mode`` (``digio.TRIG_BYPASS`` … ``TRIG_RISINGM``,
  0..8), ``pulsewidth`` (default 10 µs), ``stimulus``, ``EVENT_ID``, ``overrun``
  (false), ``assert()``, ``clear()``, ``release()``, ``reset()``, ``wait(timeout)``
  (advances the bench clock by the timeout and returns false: no edge ever arrives).
  Trigger-model wiring to the SMU trigger model is absent.
* ``userstring.add(name, value)``, ``get(name)`` (nil if absent), ``delete(name)``,
  ``catalog()`` (an iterator over the names): kept in the emulator across
  ``reset()`` and :meth:`~labpcu.sim.tsp.runtime.TspEmulator.power_cycle`
  (non-volatile on the instrument).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labpcu.sim.tsp.runtime import (
    TspEmulator,
    TspError,
    TspObject,
    TspParameterError,
    TspTable,
    as_flag,
    as_int,
    as_number,
    as_text,
)

__all__ = ["BitLib", "DigIo", "Display", "StdlibEmulator", "UserStrings"]

_MASK = 0xFFFFFFFF


# ------------------------------------------------------------------------ bit
def _word(value: Any, what: str) -> int:
    x = as_number(value, what)
    if x != x or x in (float("inf"), float("-inf")):
        raise TspError(f"{what}: finite number expected")
    return int(x) & _MASK  # int() truncates toward zero, as the manual says


def _index(value: Any, what: str) -> int:
    x = as_number(value, what)
    if x != x or x in (float("inf"), float("-inf")):
        raise TspError(f"{what}: finite number expected")
    i = int(x)
    if not 1 <= i <= 32:
        raise TspError(f"{what}: bit index {i} outside 1..32")
    return i


class BitLib(TspObject):
    """``bit``: logic on 32-bit unsigned integers (results are numbers)."""

    lua_call = frozenset({"bitand", "bitor", "bitxor", "clear", "get", "getfield",
                          "set", "setfield", "test", "toggle"})

    def __init__(self) -> None:
        super().__init__("bit")

    @staticmethod
    def bitand(a: Any = None, b: Any = None) -> int:
        return _word(a, "bit.bitand") & _word(b, "bit.bitand")

    @staticmethod
    def bitor(a: Any = None, b: Any = None) -> int:
        return _word(a, "bit.bitor") | _word(b, "bit.bitor")

    @staticmethod
    def bitxor(a: Any = None, b: Any = None) -> int:
        return _word(a, "bit.bitxor") ^ _word(b, "bit.bitxor")

    @staticmethod
    def clear(value: Any = None, index: Any = None) -> int:
        return _word(value, "bit.clear") & ~(1 << (_index(index, "bit.clear") - 1)) & _MASK

    @staticmethod
    def get(value: Any = None, index: Any = None) -> int:
        return _word(value, "bit.get") & (1 << (_index(index, "bit.get") - 1))

    @staticmethod
    def set(value: Any = None, index: Any = None) -> int:
        return _word(value, "bit.set") | (1 << (_index(index, "bit.set") - 1))

    @staticmethod
    def test(value: Any = None, index: Any = None) -> bool:
        return bool(_word(value, "bit.test") >> (_index(index, "bit.test") - 1) & 1)

    @staticmethod
    def toggle(value: Any = None, index: Any = None) -> int:
        return _word(value, "bit.toggle") ^ (1 << (_index(index, "bit.toggle") - 1))

    @staticmethod
    def _field(index: Any, width: Any, what: str) -> tuple[int, int]:
        i, w = _index(index, what), _index(width, f"{what} width")
        if i + w - 1 > 32:
            raise TspError(f"{what}: field of {w} bits at index {i} passes bit 32")
        return i - 1, (1 << w) - 1

    @classmethod
    def getfield(cls, value: Any = None, index: Any = None, width: Any = None) -> int:
        shift, mask = cls._field(index, width, "bit.getfield")
        return (_word(value, "bit.getfield") >> shift) & mask

    @classmethod
    def setfield(cls, value: Any = None, index: Any = None, width: Any = None, field: Any = None) -> int:
        shift, mask = cls._field(index, width, "bit.setfield")
        v = _word(value, "bit.setfield")
        f = _word(field, "bit.setfield fieldValue") & mask
        return (v & ~(mask << shift) & _MASK) | (f << shift)


# -------------------------------------------------------------------- display
ROW_WIDTH = {1: 20, 2: 32}
_ATTRS = "RBDF"  # normal, blink, dim, background blink


class Display(TspObject):
    """``display``: two rows of (character, attribute) cells and a cursor."""

    lua_call = frozenset({"clear", "setcursor", "getcursor", "settext", "gettext",
                          "getlastkey", "sendkey", "reset"})
    lua_get = frozenset({"screen", "locallockout"})
    lua_set = lua_get
    SCREEN_CONSTANTS = {"SMUA": 0, "SMUB": 1, "SMUA_SMUB": 2, "USER": 3}

    def __init__(self, base: TspTable | None = None) -> None:
        super().__init__("display")
        self.base = base
        self._own_fields = {"screen": 0, "locallockout": 0}
        self.reset()

    @classmethod
    def adopt(cls, table: TspTable) -> Display:
        """A stateful display around an instrument's own ``display`` table: its
        constants and sub-tables stay reachable, its fields stay its own (so the
        instrument's ``reset_fields`` still resets them)."""
        return cls(base=table)

    def lua_statics(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {"LOCK": 1, "UNLOCK": 0, **self.SCREEN_CONSTANTS}
        if self.base is not None:
            out.update(self.base.constants)
        out.update(super().lua_statics())
        return out

    def lua_getattr(self, key: Any) -> Any:
        if self.base is not None and (key in self.base.fields or key in self.base.readonly):
            return self.base.lua_getattr(key)
        if key in self._own_fields:
            return self._own_fields[key]
        if self.base is not None and key in self.base.functions:
            return None
        return None

    def lua_setattr(self, key: Any, value: Any) -> None:
        if self.base is not None and (key in self.base.fields or key in self.base.readonly):
            self.base.lua_setattr(key, value)
            return
        if key == "screen":
            v = as_int(value, "display.screen")
            if not 0 <= v <= 3:
                raise TspParameterError(f"Parameter data out of range; display.screen {v}")
            self._own_fields["screen"] = v
            return
        if key == "locallockout":
            self._own_fields["locallockout"] = 1 if as_flag(value, "display.locallockout") else 0
            return
        super().lua_setattr(key, value)

    # -- state
    def reset(self) -> None:
        """Power-on: blank rows, cursor home, cursor invisible."""
        self.rows = {r: [(" ", "R")] * w for r, w in ROW_WIDTH.items()}
        self.row, self.col, self.style = 1, 1, 0
        self.lastkey = 0
        self._own_fields = {"screen": 0, "locallockout": 0}

    def clear(self) -> None:
        self.rows = {r: [(" ", "R")] * w for r, w in ROW_WIDTH.items()}
        self.row, self.col = 1, 1

    def setcursor(self, row: Any = None, column: Any = None, style: Any = None) -> None:
        r = as_int(row, "display.setcursor row")
        if r not in ROW_WIDTH:
            raise TspParameterError(f"Parameter data out of range; display.setcursor row {r}")
        c = as_int(column, "display.setcursor column")
        self.row = r
        self.col = min(max(c, 1), ROW_WIDTH[r])
        if style is not None:
            self.style = 1 if as_flag(style, "display.setcursor style") else 0

    def getcursor(self) -> tuple[int, int, int]:
        return self.row, min(self.col, ROW_WIDTH[self.row]), self.style

    def settext(self, text: Any = None) -> None:
        s = as_text(text, "display.settext")
        attr = "R"
        i = 0
        while i < len(s):
            ch = s[i]
            if ch == "$" and i + 1 < len(s):
                code = s[i + 1].upper()
                i += 2
                if code == "N":
                    if self.row == 1:
                        self.row, self.col = 2, 1
                    continue
                if code in _ATTRS:
                    attr = code
                    continue
                if code == "$":
                    ch = "$"
                else:
                    continue  # unknown codes are dropped
            else:
                i += 1
            width = ROW_WIDTH[self.row]
            if self.col <= width:
                cells = list(self.rows[self.row])
                cells[self.col - 1] = (ch, attr)
                self.rows[self.row] = cells
                self.col += 1  # text past the end of a row is lost

    def gettext(self, embellished: Any = None, row: Any = None, first: Any = None, last: Any = None) -> str:
        emb = embellished is not None and as_flag(embellished, "display.gettext embellished")
        if row is None:
            return "$N".join(self._row_text(r, 1, ROW_WIDTH[r], emb) for r in (1, 2))
        r = as_int(row, "display.gettext row")
        if r not in ROW_WIDTH:
            raise TspParameterError(f"Parameter data out of range; display.gettext row {r}")
        c1 = 1 if first is None else as_int(first, "display.gettext columnStart")
        c2 = ROW_WIDTH[r] if last is None else as_int(last, "display.gettext columnEnd")
        return self._row_text(r, max(c1, 1), min(c2, ROW_WIDTH[r]), emb)

    def _row_text(self, r: int, c1: int, c2: int, embellished: bool) -> str:
        out: list[str] = []
        current = None
        for ch, attr in self.rows[r][c1 - 1:c2]:
            if embellished and attr != current:
                out.append("$" + attr)
                current = attr
            out.append("$$" if embellished and ch == "$" else ch)
        return "".join(out)

    def getlastkey(self) -> int:
        return self.lastkey

    def sendkey(self, key: Any = None) -> None:
        self.lastkey = as_int(key, "display.sendkey")


# ---------------------------------------------------------------------- digio
DIGIO_LINES = 14
TRIG_MODES = {"TRIG_BYPASS": 0, "TRIG_FALLING": 1, "TRIG_RISING": 2, "TRIG_EITHER": 3,
              "TRIG_SYNCHRONOUSA": 4, "TRIG_SYNCHRONOUS": 5, "TRIG_SYNCHRONOUSM": 6,
              "TRIG_RISINGA": 7, "TRIG_RISINGM": 8}
#: digio trigger event IDs are numbered from here (clear of the SMU emulator's ids)
DIGIO_EVENT_BASE = 1000


class _DigioTrigger(TspObject):
    lua_static = frozenset({"EVENT_ID"})
    lua_call = frozenset({"clear", "release", "reset", "wait"})  # and "assert", see lua_statics
    lua_get = frozenset({"mode", "pulsewidth", "stimulus", "overrun"})
    lua_set = frozenset({"mode", "pulsewidth", "stimulus"})

    def __init__(self, emu: TspEmulator, n: int) -> None:
        super().__init__(f"digio.trigger[{n}]")
        self._emu = emu
        self.EVENT_ID = DIGIO_EVENT_BASE + n
        self.asserted = 0
        self.reset()

    def reset(self) -> None:
        self._mode, self._pulsewidth, self._stimulus = 0, 10e-6, 0
        self.overrun = False

    @property
    def mode(self) -> int:
        return self._mode

    @mode.setter
    def mode(self, value: Any) -> None:
        v = as_int(value, f"{self.lua_path}.mode")
        if not 0 <= v <= 8:
            raise TspParameterError(f"Parameter data out of range; {self.lua_path}.mode {v}")
        self._mode = v

    @property
    def pulsewidth(self) -> float:
        return self._pulsewidth

    @pulsewidth.setter
    def pulsewidth(self, value: Any) -> None:
        v = as_number(value, f"{self.lua_path}.pulsewidth")
        if not 0 <= v <= 100:
            raise TspParameterError(f"Parameter data out of range; {self.lua_path}.pulsewidth {v:g}")
        self._pulsewidth = v

    @property
    def stimulus(self) -> int:
        return self._stimulus

    @stimulus.setter
    def stimulus(self, value: Any) -> None:
        self._stimulus = as_int(value, f"{self.lua_path}.stimulus")

    def assert_(self) -> None:
        self.asserted += 1

    def clear(self) -> None:
        self.overrun = False

    def release(self) -> None:
        pass

    def wait(self, timeout: Any = None) -> bool:
        t = as_number(timeout, f"{self.lua_path}.wait timeout")
        if t > 0:
            self._emu.clock.advance(min(t, 100_000.0))
        return False

    def lua_statics(self) -> dict[Any, Any]:
        out = super().lua_statics()
        out["assert"] = self.assert_
        return out


# ``assert`` is a Python keyword: the method is ``assert_`` and lua_statics maps it.
_DigioTrigger.assert_.__name__ = "assert"


class _DigioTriggers(TspObject):
    def __init__(self, triggers: list[_DigioTrigger]) -> None:
        super().__init__("digio.trigger")
        self.triggers = triggers

    def lua_item(self, index: Any) -> Any:
        if isinstance(index, (int, float)) and not isinstance(index, bool) and float(index).is_integer():
            k = int(index)
            if 1 <= k <= len(self.triggers):
                return self.triggers[k - 1]
        return None


class DigIo(TspObject):
    """``digio``: 14 lines read back what was written (nothing external drives them)."""

    lua_static = frozenset({"trigger", *TRIG_MODES})
    lua_call = frozenset({"readbit", "writebit", "readport", "writeport"})
    lua_get = frozenset({"writeprotect"})
    lua_set = lua_get

    def __init__(self, emu: TspEmulator, lines: int = DIGIO_LINES) -> None:
        super().__init__("digio")
        self.lines = lines
        self.full = (1 << lines) - 1
        self.triggers = [_DigioTrigger(emu, n) for n in range(1, lines + 1)]
        self.trigger = _DigioTriggers(self.triggers)
        for name, value in TRIG_MODES.items():
            setattr(self, name, value)
        self.reset()

    def reset(self) -> None:
        self.port = self.full
        self._writeprotect = 0
        for t in self.triggers:
            t.reset()

    def _line(self, n: Any, what: str) -> int:
        k = as_int(n, what)
        if not 1 <= k <= self.lines:
            raise TspParameterError(f"Parameter data out of range; {what} {k}")
        return k

    def readbit(self, n: Any = None) -> int:
        k = self._line(n, "digio.readbit")
        return (self.port >> (k - 1)) & 1

    def writebit(self, n: Any = None, value: Any = None) -> None:
        k = self._line(n, "digio.writebit")
        bit = 1 << (k - 1)
        if self._writeprotect & bit:
            return
        if as_number(value, "digio.writebit") != 0:
            self.port |= bit
        else:
            self.port &= ~bit

    def readport(self) -> int:
        return self.port

    def writeport(self, value: Any = None) -> None:
        v = as_int(value, "digio.writeport")
        if not 0 <= v <= self.full:
            raise TspParameterError(f"Parameter data out of range; digio.writeport {v}")
        keep = self._writeprotect
        self.port = (self.port & keep) | (v & ~keep & self.full)

    @property
    def writeprotect(self) -> int:
        return self._writeprotect

    @writeprotect.setter
    def writeprotect(self, value: Any) -> None:
        v = as_int(value, "digio.writeprotect")
        if not 0 <= v <= self.full:
            raise TspParameterError(f"Parameter data out of range; digio.writeprotect {v}")
        self._writeprotect = v


# ----------------------------------------------------------------- userstring
class UserStrings(TspObject):
    """``userstring``: name → string pairs kept across reset and power cycles."""

    lua_call = frozenset({"add", "get", "delete", "catalog"})

    def __init__(self) -> None:
        super().__init__("userstring")
        self.store: dict[str, str] = {}

    def add(self, name: Any = None, value: Any = None) -> None:
        self.store[as_text(name, "userstring.add name")] = as_text(value, "userstring.add value")

    def get(self, name: Any = None) -> str | tuple[None]:
        v = self.store.get(as_text(name, "userstring.get name"))
        return (None,) if v is None else v

    def delete(self, name: Any = None) -> None:
        self.store.pop(as_text(name, "userstring.delete name"), None)

    def catalog(self) -> Callable[..., str | None]:
        """An iterator function for ``for name in userstring.catalog() do``."""
        names = iter(sorted(self.store))

        def step(*_args: Any) -> str | None:
            return next(names, None)

        return step


def make_tables(emu: TspEmulator) -> dict[str, Any]:
    """The generic tables for one emulator (called from its constructor)."""
    return {"bit": BitLib(), "display": Display(), "digio": DigIo(emu), "userstring": UserStrings()}


class StdlibEmulator(TspEmulator):
    """A TSP instrument with the generic tables a real 2600B or 3706A has. The
    runtime only offers the hooks, so it does not import this module (one-way)."""

    def make_generic_tables(self) -> dict[str, Any]:
        return make_tables(self)

    def _stateful_display(self, table: TspTable) -> Any:
        """An instrument's own ``display`` table, made stateful (:meth:`Display.adopt`);
        one wrapper per table, so its text survives a power cycle of the Lua state."""
        wrapper = self._display_wrappers.get(id(table))
        if wrapper is None or wrapper.base is not table:
            wrapper = Display.adopt(table)
            self._display_wrappers[id(table)] = wrapper
        return wrapper
